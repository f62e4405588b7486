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
    /// After a compromise, on the admin device: a new encryption subkey (the old one revoked),
    /// new shares for every device (updates and store records written to --out); then, with
    /// --reencrypt, stored mail moved to the new subkey (only the PKESK replaced).
    Rekey {
        #[arg(long)]
        config: PathBuf,
        /// The store's description (`meshmail store info`; default: the one `device add`
        /// kept).
        #[arg(long)]
        store: Option<PathBuf>,
        /// A new directory for the devices' updates and the store's records (default:
        /// `rekey-<time>` in the home).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Re-encrypt a mailbox's messages from the revoked subkeys to the live one.
        #[arg(long)]
        reencrypt: bool,
        #[arg(long, default_value = "INBOX")]
        mailbox: String,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
}

pub fn run(home: &Path, pass: &PassphraseSource, command: MailboxCommand) -> Result<(), Failure> {
    match command {
        MailboxCommand::Encrypt {
            config,
            mailbox,
            password_file,
        } => encrypt(home, pass, &config, &mailbox, password_file, None),
        MailboxCommand::Rekey {
            config,
            reencrypt: true,
            mailbox,
            password_file,
            ..
        } => encrypt(home, pass, &config, &mailbox, password_file, Some(())),
        MailboxCommand::Rekey {
            config, store, out, ..
        } => {
            let out = out.unwrap_or_else(|| {
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                home.join(format!("rekey-{now}"))
            });
            rekey(home, pass, &config, store.as_deref(), &out)
        }
    }
}

/// The account a configuration maps, with its passphrase.
fn account_of(
    home: &Path,
    pass: &PassphraseSource,
    config: &Config,
) -> Result<
    (
        meshmail::config::AccountConfig,
        Account,
        Option<SecretString>,
    ),
    Failure,
> {
    let account_config = meshmail::serve::account_configs(config, Some(home.to_owned()))
        .map_err(|e| Failure::new(Outcome::Config, e))?
        .into_iter()
        .next()
        .ok_or_else(|| Failure::new(Outcome::Config, "no account in the configuration"))?;
    let account = Account::open(&account_config.home)?;
    let passphrase = match meshmail::serve::read_passphrase(
        account_config.passphrase_file.as_deref(),
        account_config.passphrase_fd,
    )? {
        Some(p) => Some(p),
        None => pass.read_or_prompt(&account)?,
    };
    Ok((account_config, account, passphrase))
}

fn rekey(
    home: &Path,
    pass: &PassphraseSource,
    config: &Path,
    store: Option<&Path>,
    out: &Path,
) -> Result<(), Failure> {
    let config = Config::load(config).map_err(|e| Failure::new(Outcome::Config, e))?;
    let (_, account, passphrase) = account_of(home, pass, &config)?;
    let store = meshmail::keys::device::StoreInfo::for_admin(account.home(), store)
        .map_err(|e| Failure::new(Outcome::BadUsage, format!("--store: {e}")))?;
    if out.exists() {
        return Err(Failure::new(
            Outcome::BadUsage,
            format!("{} exists", out.display()),
        ));
    }
    let rekeyed = meshmail::keys::rekey::rekey(&account, passphrase.as_ref(), &store)?;
    meshmail::keys::account::make_private_dir(out)?;
    for (device, update, record) in &rekeyed.devices {
        let write = |name: String, text: &str| {
            meshmail::keys::account::write_new(&out.join(name), text.as_bytes(), 0o600)
        };
        write(format!("{device}.update"), update)?;
        write(format!("{device}.record"), record.as_str())?;
    }
    say!(
        "new encryption subkey {} (the old {} is revoked)",
        rekeyed.new,
        rekeyed.old
    );
    say!("updates and store records written to {}", out.display());
    for (device, _, _) in &rekeyed.devices {
        say!("{device}: `meshmail device update {device}.update` on it, `meshmail store accept {device}.record` on the store host");
    }
    for device in &rekeyed.skipped {
        say!("{device}: enrolled before devices kept a share key; enrol it again");
    }
    say!("then: `meshmail policy publish`; `meshmail mailbox rekey --reencrypt` for stored mail;");
    say!("new recovery shares (`meshmail recovery split`); after a grace period,");
    say!(
        "`meshmail store retire ACCOUNT {}` on the store host",
        rekeyed.old
    );
    Ok(())
}

fn encrypt(
    home: &Path,
    pass: &PassphraseSource,
    config: &Path,
    mailbox: &str,
    password_file: Option<PathBuf>,
    rekey: Option<()>,
) -> Result<(), Failure> {
    let config = Config::load(config).map_err(|e| Failure::new(Outcome::Config, e))?;
    let target =
        meshmail::serve::imap_upstream(&config).map_err(|e| Failure::new(Outcome::Config, e))?;
    let (account_config, account, passphrase) = account_of(home, pass, &config)?;
    if meshmail::keys::device::info(&account_config.home)?.is_some() {
        return Err(Failure::new(
            Outcome::BadUsage,
            "run this on the admin device: the copies are signed by the account's key",
        ));
    }
    let unlocked = account.unlock(passphrase.as_ref())?;
    let key = unlocked.openpgp_secret_cert()?;
    let check = Arc::new(meshmail::crypto::decrypt::DecryptionKeys::new(
        key.clone(),
        None,
        None,
        Vec::new(),
    ));
    let rewrite = match rekey {
        None => meshmail::mailbox::encrypt::Rewrite::Encrypt(Arc::new(key)),
        Some(()) => meshmail::mailbox::rekey_keys(&key).ok_or_else(|| {
            Failure::new(
                Outcome::BadUsage,
                "no revoked encryption subkey to move mail from: run `mailbox rekey --store … --out …` first",
            )
        })?,
    };
    let rewrite = Arc::new(rewrite);
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
        "meshmail: {mailbox}: every message changed is replaced by a copy with a new UID; mail \
         clients will download the mailbox again"
    );
    let ctx = EncryptContext {
        target,
        credentials: meshmail::imap::owned::Credentials::Login {
            user: account_config.upstream_user.clone(),
            password,
        },
        home: account_config.home.clone(),
        user: account_config.upstream_user.clone(),
        rewrite,
        check,
        progress: std::io::stderr().is_terminal(),
    };
    let summary = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Outcome::Io, e))?
        .block_on(encrypt_mailbox(&ctx, mailbox))
        .map_err(|e| Failure::new(Outcome::Temporary, e))?;
    say!(
        "{mailbox}: {} encrypted, {} finished from an earlier run, {} already encrypted",
        summary.encrypted,
        summary.resumed,
        summary.skipped
    );
    Ok(())
}
