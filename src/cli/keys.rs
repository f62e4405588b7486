//! `meshmail keys export`: certificates, and secret keys in standard formats.

use super::passphrase::{read_passphrase_file, PassphraseSource};
use super::Failure;
use clap::Args;
use meshmail::codes::Outcome;
use meshmail::keys::{export, Account};
use meshmail::secret::{SecretBytes, SecretString};
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

#[derive(Args)]
pub struct ExportArgs {
    /// The OpenPGP certificate (armored).
    #[arg(long, conflicts_with = "smime", required_unless_present = "smime")]
    openpgp: bool,
    /// The S/MIME certificate (PEM; with --secret, PKCS#12).
    #[arg(long)]
    smime: bool,
    /// Include the secret key.
    #[arg(long)]
    secret: bool,
    /// Write here (mode 0600 for secrets) instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Password for the PKCS#12 file, read from this file (default: the key store passphrase,
    /// else empty).
    #[arg(long)]
    p12_passphrase_file: Option<PathBuf>,
}

pub fn export_keys(home: &Path, pass: &PassphraseSource, args: ExportArgs) -> Result<(), Failure> {
    let account = Account::open(home)?;
    let bytes: SecretBytes = match (args.openpgp, args.secret) {
        (true, false) => SecretBytes::new(export::openpgp_public(&account)?),
        (false, false) => SecretBytes::new(export::smime_public(&account)?),
        (true, true) => {
            let unlocked = account.unlock(pass.read_or_prompt(&account)?.as_ref())?;
            export::openpgp_secret(&unlocked)?
        }
        (false, true) => {
            let store_pass = pass.read_or_prompt(&account)?;
            let unlocked = account.unlock(store_pass.as_ref())?;
            let p12_pass = match &args.p12_passphrase_file {
                Some(path) => read_passphrase_file(path)?,
                None => store_pass.unwrap_or_else(|| SecretString::new(String::new())),
            };
            export::smime_pkcs12(&account, &unlocked, &p12_pass)?
        }
    };
    match &args.out {
        Some(path) => {
            let mode = if args.secret { 0o600 } else { 0o644 };
            meshmail::keys::account::write_new(path, bytes.expose(), mode)?;
            eprintln!("wrote {}", path.display());
        }
        None => {
            if args.secret && std::io::stdout().is_terminal() {
                return Err(Failure::new(
                    Outcome::BadUsage,
                    "refusing to print a secret key to a terminal; use --out FILE or a pipe",
                ));
            }
            std::io::stdout()
                .write_all(bytes.expose())
                .map_err(|e| Failure::new(Outcome::Io, e))?;
        }
    }
    Ok(())
}
