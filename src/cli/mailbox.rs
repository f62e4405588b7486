//! `meshmail mailbox encrypt`: the command-line side of [`meshmail::mailbox`].

use super::{say, Failure, PassphraseSource};
use clap::Subcommand;
use meshmail::codes::Outcome;
use meshmail::config::Config;
use meshmail::keys::Account;
use meshmail::mailbox::encrypt::{encrypt_mailbox, EncryptContext};
use meshmail::secret::SecretString;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Subcommand)]
pub enum MailboxCommand {
    /// Re-encrypt a mailbox's plaintext messages to the account's key, in place (same flags
    /// and dates; resumable). On the admin device: the copies are signed by the account.
    Encrypt {
        #[arg(long)]
        config: PathBuf,
        #[arg(long, default_value = "INBOX")]
        mailbox: String,
        /// The mail server password of the account's login (default: asked for).
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
}

pub fn run(home: &Path, pass: &PassphraseSource, command: MailboxCommand) -> Result<(), Failure> {
    let MailboxCommand::Encrypt {
        config,
        mailbox,
        password_file,
    } = command;
    let config = Config::load(&config).map_err(|e| Failure::new(Outcome::Config, e))?;
    let account_config = meshmail::serve::account_configs(&config, Some(home.to_owned()))
        .map_err(|e| Failure::new(Outcome::Config, e))?
        .into_iter()
        .next()
        .ok_or_else(|| Failure::new(Outcome::Config, "no account in the configuration"))?;
    let target =
        meshmail::serve::imap_upstream(&config).map_err(|e| Failure::new(Outcome::Config, e))?;
    let account = Account::open(&account_config.home)?;
    if meshmail::keys::device::info(&account_config.home)?.is_some() {
        return Err(Failure::new(
            Outcome::BadUsage,
            "run this on the admin device: the copies are signed by the account's key",
        ));
    }
    let passphrase = match meshmail::serve::read_passphrase(
        account_config.passphrase_file.as_deref(),
        account_config.passphrase_fd,
    )? {
        Some(p) => Some(p),
        None => pass.read_or_prompt(&account)?,
    };
    let unlocked = account.unlock(passphrase.as_ref())?;
    let key = Arc::new(unlocked.openpgp_secret_cert()?);
    let password = match password_file {
        Some(f) => {
            let text = std::fs::read_to_string(&f)
                .map_err(|e| Failure::new(Outcome::BadUsage, format!("{}: {e}", f.display())))?;
            SecretString::new(text.trim_end_matches(['\n', '\r']).to_owned())
        }
        None if std::io::stdin().is_terminal() => SecretString::new(
            rpassword::prompt_password(format!(
                "mail server password for {}: ",
                account_config.upstream_user
            ))
            .map_err(|e| Failure::new(Outcome::Io, e))?,
        ),
        None => {
            return Err(Failure::new(
                Outcome::BadUsage,
                "the mail server password is needed: --password-file FILE",
            ))
        }
    };
    eprintln!(
        "meshmail: {mailbox}: every plaintext message is replaced by an encrypted copy with a new \
         UID; mail clients will download the mailbox again"
    );
    let ctx = EncryptContext {
        target,
        credentials: meshmail::imap::owned::Credentials::Login {
            user: account_config.upstream_user.clone(),
            password,
        },
        home: account_config.home.clone(),
        user: account_config.upstream_user.clone(),
        key,
        progress: std::io::stderr().is_terminal(),
    };
    let summary = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Outcome::Io, e))?
        .block_on(encrypt_mailbox(&ctx, &mailbox))
        .map_err(|e| Failure::new(Outcome::Temporary, e))?;
    say!(
        "{mailbox}: {} encrypted, {} finished from an earlier run, {} already encrypted",
        summary.encrypted,
        summary.resumed,
        summary.skipped
    );
    Ok(())
}
