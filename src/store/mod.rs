//! The store role (recryption in front of the mail store, DESIGN.md): it holds one recryption
//! share per device and never a whole key. So far: the share records and how the store keeps
//! them ([`shares`]); the IMAP proxy with the private FETCH item comes next.

pub mod shares;
