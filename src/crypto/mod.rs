//! Cryptography: OpenPGP ([`openpgp`]) and S/MIME ([`smime`]) certificates and, in later
//! capabilities, message encryption, decryption and recryption. Callers hand whole messages or
//! certificates here; nothing in this module does I/O.

pub mod client_sealed;
pub mod cms;
mod cms_decrypt;
pub mod cms_verify;
pub mod decrypt;
#[doc(hidden)]
pub mod fuzz;
pub mod openpgp;
pub mod recrypt;
pub mod seal;
pub mod sealbox;
pub mod shamir;
pub mod smime;
pub mod x25519;
