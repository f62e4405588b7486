//! The store role (recryption in front of the mail store, DESIGN.md): it holds one recryption
//! share per device and never a whole key. So far: the share records and how the store keeps
//! them ([`shares`]) and the private FETCH item on raw bytes with the partials it carries
//! ([`item`]); the IMAP proxy around them comes next.

#[doc(hidden)]
pub mod fuzz;
pub mod item;
pub mod shares;
