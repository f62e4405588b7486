//! The one table of outcomes (DESIGN.md "Codes"), used by every front end: the CLI's exit
//! codes here, SMTP replies and IMAP responses in their modules.

/// An outcome class, as DESIGN.md's table lists them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Done,
    /// Bad usage or syntax (an address, a command).
    BadUsage,
    /// No valid policy: none, tampered, wrong key, expired.
    NoValidPolicy,
    /// A message cannot be encrypted, decrypted or verified.
    CryptoFailure,
    /// No such account or file.
    NotFound,
    /// DNS/HTTPS timeout, upstream down, key store locked: try again later.
    Temporary,
    /// The configuration is wrong.
    Config,
    /// Refusing to create something that exists (sysexits EX_CANTCREAT).
    CannotCreate,
    /// Reading or writing a file failed (sysexits EX_IOERR).
    Io,
}

impl Outcome {
    /// The command-line exit code (sysexits.h values).
    pub fn exit_code(self) -> u8 {
        match self {
            Outcome::Done => 0,
            Outcome::BadUsage => 64,
            Outcome::NoValidPolicy | Outcome::CryptoFailure => 65,
            Outcome::NotFound => 69,
            Outcome::CannotCreate => 73,
            Outcome::Io => 74,
            Outcome::Temporary => 75,
            Outcome::Config => 78,
        }
    }
}

impl From<&crate::keys::KeyError> for Outcome {
    fn from(e: &crate::keys::KeyError) -> Outcome {
        use crate::keys::KeyError::*;
        match e {
            AccountExists(_) => Outcome::CannotCreate,
            NoAccount(_) => Outcome::NotFound,
            Locked => Outcome::Temporary,
            WrongPassphrase | Address(_) => Outcome::BadUsage,
            Io { .. } => Outcome::Io,
            Corrupt(_) | Generate(_) => Outcome::CryptoFailure,
        }
    }
}

impl From<&crate::policy::ResolveFailure> for Outcome {
    fn from(e: &crate::policy::ResolveFailure) -> Outcome {
        match e {
            crate::policy::ResolveFailure::NoValidPolicy(_) => Outcome::NoValidPolicy,
            crate::policy::ResolveFailure::Temporary(_) => Outcome::Temporary,
        }
    }
}
