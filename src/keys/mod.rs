//! The account's key store (`$MESHMAIL_HOME`, or `--home`).
//!
//! ```text
//! account.json              public: address, fingerprints, policy key
//! openpgp.asc               public OpenPGP certificate (armored)
//! openpgp-revocation.asc    revocation certificate, kept beside it (public, but keep it safe)
//! smime.pem                 public S/MIME certificate
//! policy.jws                the account's signed policy
//! secrets.json              0600: the three secret keys, sealed (see `sealed`)
//! recovery.json             that recovery shares exist, and when a recovery was last tried
//! policies/  keyring/       other people's policies and certificates (a cache)
//! ```
//!
//! The directory is 0700 and the secret file 0600 from the moment they are created (never
//! created open and chmod-ed later). Public files need no unlocking, so `address` and
//! `policy publish` work while the store is locked.

pub mod account;
pub mod device;
pub mod device_signing;
pub mod envelope;
pub mod export;
pub mod generate;
mod p12_gpgsm;
pub mod recovery;
pub mod rekey;
pub mod sealed;

pub use account::{Account, AccountInfo, Unlocked};

use thiserror::Error;

/// Why a key store operation failed.
#[derive(Debug, Error)]
pub enum KeyError {
    #[error("an account already exists in {0}; refusing to overwrite it")]
    AccountExists(String),
    #[error("no account in {0} (run `meshmail init --address ADDRESS`)")]
    NoAccount(String),
    #[error("the key store is locked: give the passphrase (passphrase_file / passphrase_fd)")]
    Locked,
    #[error("wrong passphrase")]
    WrongPassphrase,
    #[error("{path}: {reason}")]
    Io { path: String, reason: String },
    #[error("key store is corrupt: {0}")]
    Corrupt(String),
    #[error("cannot make keys: {0}")]
    Generate(String),
    #[error("bad address: {0}")]
    Address(String),
}

impl KeyError {
    pub(crate) fn io(path: &std::path::Path, e: impl std::fmt::Display) -> KeyError {
        KeyError::Io {
            path: path.display().to_string(),
            reason: e.to_string(),
        }
    }
}

impl From<sealed::SealError> for KeyError {
    fn from(e: sealed::SealError) -> KeyError {
        match e {
            sealed::SealError::Locked => KeyError::Locked,
            sealed::SealError::WrongPassphrase => KeyError::WrongPassphrase,
            other => KeyError::Corrupt(other.to_string()),
        }
    }
}
