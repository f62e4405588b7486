//! Where the key store passphrase comes from: a file or an inherited descriptor for a headless
//! service, else a prompt on a terminal.

use super::Failure;
use meshmail::codes::Outcome;
use meshmail::keys::{Account, KeyError};
use meshmail::secret::SecretString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

/// Where a passphrase comes from without a prompt (a headless service: a file or an inherited
/// descriptor, e.g. from systemd-creds).
pub struct PassphraseSource {
    pub file: Option<PathBuf>,
    pub fd: Option<u32>,
}

impl PassphraseSource {
    pub fn read(&self) -> Result<Option<SecretString>, Failure> {
        if let Some(path) = &self.file {
            return read_passphrase_file(path).map(Some);
        }
        if let Some(fd) = self.fd {
            // /proc/self/fd avoids an unsafe from_raw_fd.
            return read_passphrase_file(Path::new(&format!("/proc/self/fd/{fd}"))).map(Some);
        }
        Ok(None)
    }

    /// The passphrase when the account needs one: from the file or descriptor, else a prompt
    /// on a terminal; with neither the store stays locked (exit 75).
    pub fn read_or_prompt(&self, account: &Account) -> Result<Option<SecretString>, Failure> {
        if !account.needs_passphrase()? {
            return Ok(None);
        }
        if let Some(p) = self.read()? {
            return Ok(Some(p));
        }
        if std::io::stdin().is_terminal() {
            let p = rpassword::prompt_password("key store passphrase: ")
                .map_err(|e| Failure::new(Outcome::Io, e))?;
            return Ok(Some(SecretString::new(p)));
        }
        Err(KeyError::Locked.into())
    }
}

pub fn read_passphrase_file(path: &Path) -> Result<SecretString, Failure> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Failure::new(
            Outcome::Config,
            format!("passphrase {}: {e}", path.display()),
        )
    })?;
    // One trailing newline is not part of the passphrase (echo adds it).
    let trimmed = text.strip_suffix('\n').unwrap_or(&text);
    let trimmed = trimmed.strip_suffix('\r').unwrap_or(trimmed).to_owned();
    let mut text = text;
    zeroize::Zeroize::zeroize(&mut text);
    Ok(SecretString::new(trimmed))
}

pub fn prompt_new_passphrase() -> Result<SecretString, Failure> {
    let first = SecretString::new(
        rpassword::prompt_password("new key store passphrase: ")
            .map_err(|e| Failure::new(Outcome::Io, e))?,
    );
    let again = SecretString::new(
        rpassword::prompt_password("again: ").map_err(|e| Failure::new(Outcome::Io, e))?,
    );
    if first != again {
        return Err(Failure::new(Outcome::BadUsage, "the passphrases differ"));
    }
    Ok(first)
}
