//! Stored mail: `meshmail mailbox encrypt` re-encrypts a mailbox's plaintext messages to the
//! account's own key, in place ([`encrypt`]), resumable from its [`journal`].

pub mod encrypt;
pub mod journal;
