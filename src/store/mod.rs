//! The store role (recryption in front of the mail store, DESIGN.md): it holds one recryption
//! share per device and never a whole key.
//!
//! - [`shares`]: the share records a device's enrolment makes, and how the store keeps them
//!   (sealed at rest, tombstones, generations);
//! - [`item`]: the private FETCH item `X-MESH-RECRYPT` on raw bytes, and the partials it
//!   carries;
//! - [`role`]: what the IMAP session core asks of the store (binding a session to a device,
//!   answering the item), with the per-device [`audit`] log.

pub mod audit;
#[doc(hidden)]
pub mod fuzz;
pub mod item;
pub mod role;
pub mod shares;
