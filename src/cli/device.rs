//! `meshmail device …`: enrolment of a split account's devices (request on the new device,
//! add on the admin device, import on the new device), listing and revocation. The library
//! side is [`meshmail::keys::device`].

use super::{say, Failure, PassphraseSource};
use clap::Subcommand;
use meshmail::codes::Outcome;
use meshmail::keys::device::{self, DeviceReply, DeviceRequest, StoreInfo};
use meshmail::keys::Account;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum DeviceCommand {
    /// On the new device (its own --home): make its TLS, signing and enrolment keys and write
    /// an enrolment request (public keys only). Shows the code to read out to the admin.
    Request {
        #[arg(long)]
        out: PathBuf,
        /// The account's public certificate (openpgp.asc): the device then makes its own
        /// OpenPGP signing subkey, which the admin binds to the account.
        #[arg(long)]
        account_cert: Option<PathBuf>,
    },
    /// On the admin device: answer a request with the device's share, sealed to its
    /// enrolment key. Asks for the code the new device showed (or --code). With
    /// --forget-account-key (and no REQUEST), the admin device enrols itself as NAME and
    /// forgets the account key: later enrolments need --recovery with a quorum of shares.
    Add {
        #[arg(required_unless_present = "forget_account_key")]
        request: Option<PathBuf>,
        #[arg(long)]
        name: String,
        /// The store's description, from `meshmail store info` on the store host (needed
        /// once: the admin device keeps it for later enrolments and rekeys).
        #[arg(long)]
        store: Option<PathBuf>,
        #[arg(long)]
        out: PathBuf,
        /// The code the new device showed.
        #[arg(long)]
        code: Option<String>,
        /// Where the store's share record goes (default: OUT.record); give it to the store
        /// host's `meshmail store accept`.
        #[arg(long)]
        record_out: Option<PathBuf>,
        /// Recovery share files: the account key, rebuilt in memory only, on an admin device
        /// that forgot it.
        #[arg(long, num_args = 1..)]
        recovery: Vec<PathBuf>,
        /// Enrol this admin device itself and remove the account's secret key from it
        /// (refused until recovery shares exist and `recovery join --check` worked).
        #[arg(long, conflicts_with = "request")]
        forget_account_key: bool,
    },
    /// On the new device: finish with the admin's reply. Asks for the code the admin device
    /// showed (or --code).
    Import {
        reply: PathBuf,
        #[arg(long)]
        code: Option<String>,
    },
    /// On a device, after a rekey: take the new share the admin made for it.
    Update { file: PathBuf },
    /// The devices this admin device enrolled, or this device itself; with --config (a
    /// device's configuration), the store's own list.
    List {
        #[arg(long)]
        config: Option<PathBuf>,
        /// The mail server password of the account's login (default: asked for).
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
    /// Revoke a device: writes a revocation signed by the account (on the admin device) or by
    /// this device, for the store host's `meshmail store revoke --signed FILE`.
    Revoke {
        name: String,
        /// Where the signed revocation goes (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Recovery share files, on an admin device that forgot the account key: the device's
        /// signing subkey is then revoked in the account's certificate too.
        #[arg(long, num_args = 1..)]
        recovery: Vec<PathBuf>,
        /// Send the revocation to the store at once, from this device (its configuration).
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        password_file: Option<PathBuf>,
    },
}

pub fn run(home: &Path, pass: &PassphraseSource, command: DeviceCommand) -> Result<(), Failure> {
    match command {
        DeviceCommand::Request { out, account_cert } => {
            let cert = match &account_cert {
                Some(path) => Some(
                    meshmail::crypto::openpgp::parse_certs(read(path)?.as_bytes())
                        .ok()
                        .and_then(|c| c.into_iter().next())
                        .ok_or_else(|| {
                            Failure::new(Outcome::BadUsage, "--account-cert: no certificate")
                        })?,
                ),
                None => None,
            };
            let request = device::request(home, pass.read()?.as_ref(), cert.as_ref())?;
            write_new(&out, request.text())?;
            say!("request written to {}", out.display());
            say!("code: {}", request.code());
            say!("read this code to the admin; `meshmail device add` asks for it");
            Ok(())
        }
        DeviceCommand::Add {
            request,
            name,
            store,
            out,
            code,
            record_out,
            recovery,
            forget_account_key,
        } => {
            let store = StoreInfo::for_admin(home, store.as_deref())
                .map_err(|e| Failure::new(Outcome::BadUsage, format!("--store: {e}")))?;
            let account = Account::open(home)?;
            let unlocked = if !recovery.is_empty() {
                meshmail::keys::recovery::join(&recovery)
                    .map_err(|e| Failure::new(Outcome::BadUsage, e))?
                    .unlock_for(&account)?
            } else if account.holds_secrets() {
                account.unlock(pass.read_or_prompt(&account)?.as_ref())?
            } else {
                return Err(Failure::new(
                    Outcome::BadUsage,
                    "this admin device forgot the account key: give --recovery FILE FILE \
                     (a quorum of the recovery shares)",
                ));
            };
            if forget_account_key {
                let (info, record) = device::forget_account_key(
                    &account,
                    &unlocked,
                    pass.read()?.as_ref(),
                    &name,
                    &store,
                )?;
                write_new(&out, record.as_str())?;
                say!("store record written to {}", out.display());
                say!(
                    "this admin device is now the device {} and holds no account key; \
                     `meshmail device add --recovery FILE FILE` enrols the next device",
                    info.name
                );
                return Ok(());
            }
            let Some(request) = request else {
                return Err(Failure::new(Outcome::BadUsage, "REQUEST is missing"));
            };
            let request = DeviceRequest::parse(&read(&request)?)?;
            let code = code_or_prompt(code, "code shown on the new device: ")?;
            let reply = device::add(&account, &unlocked, &request, &code, &name, &store)?;
            let signing = device::enrolled(home)?
                .into_iter()
                .find(|d| d.name == name)
                .and_then(|d| d.signing_subkey);
            let record_out = record_out.unwrap_or_else(|| out.with_extension("record"));
            write_new(&out, reply.text())?;
            write_new(&record_out, reply.store_record().as_str())?;
            say!("reply written to {}", out.display());
            say!("store record written to {}", record_out.display());
            say!("code: {}", reply.code());
            say!("type this code into `meshmail device import` on {name}");
            if let Some(fpr) = signing {
                say!(
                    "{name}'s signing subkey {fpr} is now in the account's certificate: run \
                     `meshmail policy publish` again"
                );
            }
            Ok(())
        }
        DeviceCommand::Import { reply, code } => {
            let reply = DeviceReply::parse(&read(&reply)?)?;
            let code = code_or_prompt(code, "code shown on the admin device: ")?;
            let info = device::import(home, &reply, &code, pass.read()?.as_ref())?;
            say!(
                "this device is {} of {}; its store is {}",
                info.name,
                info.address,
                info.store.address
            );
            Ok(())
        }
        DeviceCommand::Update { file } => {
            let subkey =
                meshmail::keys::rekey::apply_update(home, &read(&file)?, pass.read()?.as_ref())?;
            say!("this device now holds a share of the subkey {subkey}; restart `meshmail serve`");
            Ok(())
        }
        DeviceCommand::List {
            config: Some(config),
            password_file,
        } => {
            for line in at_store(home, pass, &config, password_file, "X-MESH-DEVICES")? {
                let rest = line.trim_start_matches("* X-MESH-DEVICES ");
                say!("{}", rest.replacen(' ', "\t", 1).replace('"', ""));
            }
            Ok(())
        }
        DeviceCommand::List { config: None, .. } => {
            if let Some(info) = device::info(home)? {
                say!(
                    "this device: {} of {} (store {}, enrolled {})",
                    info.name,
                    info.address,
                    info.store.address,
                    info.enrolled.date()
                );
                return Ok(());
            }
            for d in device::enrolled(home)? {
                say!(
                    "{}\t{}\tenrolled {}\tkey {}",
                    d.name,
                    if d.revoked { "revoked" } else { "enrolled" },
                    d.enrolled.date(),
                    &d.tls_sha256[..16.min(d.tls_sha256.len())]
                );
            }
            say!("(the store's own state: `meshmail store list` on the store host)");
            Ok(())
        }
        DeviceCommand::Revoke {
            name,
            out,
            recovery,
            config,
            password_file,
        } => {
            let account = Account::open(home)?;
            // The device's signing subkey is revoked in the certificate where the account key
            // is at hand (the admin device, or its recovery shares).
            let account_key = if !recovery.is_empty() {
                Some(
                    meshmail::keys::recovery::join(&recovery)
                        .map_err(|e| Failure::new(Outcome::BadUsage, e))?
                        .unlock_for(&account)?,
                )
            } else if account.holds_secrets() {
                Some(account.unlock(pass.read_or_prompt(&account)?.as_ref())?)
            } else {
                None
            };
            let subkey = device::enrolled(home)?
                .into_iter()
                .find(|d| d.name == name)
                .and_then(|d| d.signing_subkey);
            if let (Some(unlocked), Some(fpr)) = (&account_key, &subkey) {
                let revoked = meshmail::keys::device_signing::revoke(
                    &unlocked.openpgp_secret_cert()?,
                    &account.openpgp_cert()?,
                    fpr,
                )?;
                account.replace_openpgp_cert(&revoked)?;
                // Senders check signatures against the certificate inside the policy.
                meshmail::policy::issue::refresh_account_policy(
                    &account,
                    &unlocked.policy_signing_key()?,
                    device::has_live_devices(home, Some(&name))?,
                )?;
                say!("{name}'s signing subkey is revoked: run `meshmail policy publish` again");
            }
            let text = match device::info(home)? {
                Some(info) => {
                    let secrets = device::unlock(home, pass.read()?.as_ref())?;
                    let key = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(
                        secrets.signing_key.expose(),
                    )
                    .map_err(|_| Failure::new(Outcome::Io, "the device's signing key is broken"))?;
                    meshmail::store::shares::make_revocation(
                        &key,
                        account.address(),
                        &name,
                        &info.name,
                    )
                }
                None => {
                    let unlocked = account_key.ok_or_else(|| {
                        Failure::new(Outcome::BadUsage, "the account key is needed")
                    })?;
                    let key = unlocked.policy_signing_key()?;

                    meshmail::store::shares::make_revocation(&key, account.address(), &name, "")
                }
            }
            .map_err(|e| Failure::new(Outcome::Io, e))?;
            // The admin device's own list (a forgotten admin keeps it too).
            device::mark_revoked(home, &name)?;
            if let Some(config) = config {
                let b64 = data_encoding::BASE64.encode(text.as_bytes());
                at_store(
                    home,
                    pass,
                    &config,
                    password_file,
                    &format!("X-MESH-REVOKE {b64}"),
                )?;
                say!("{name} is revoked at the store");
                return Ok(());
            }
            match out {
                Some(path) => {
                    write_new(&path, &text)?;
                    say!("revocation of {name} written to {}", path.display());
                    say!("the store applies it with `meshmail store revoke --signed FILE`");
                }
                None => say!("{}", text.trim_end()),
            }
            Ok(())
        }
    }
}

/// One of the store's own commands, from this device (its configuration and key).
fn at_store(
    home: &Path,
    pass: &PassphraseSource,
    config: &Path,
    password_file: Option<PathBuf>,
    command: &str,
) -> Result<Vec<String>, Failure> {
    let config =
        meshmail::config::Config::load(config).map_err(|e| Failure::new(Outcome::Config, e))?;
    let user = config
        .upstream_user
        .clone()
        .ok_or_else(|| Failure::new(Outcome::Config, "the configuration has no upstream_user"))?;
    let target = meshmail::serve::store_upstream(&config, home, pass.read()?.as_ref())
        .map_err(|e| Failure::new(Outcome::Config, e))?;
    let password = match password_file {
        Some(f) => read(&f)?.trim_end_matches(['\n', '\r']).to_owned(),
        None if std::io::stdin().is_terminal() => {
            rpassword::prompt_password(format!("mail server password for {user}: "))
                .map_err(|e| Failure::new(Outcome::Io, e))?
        }
        None => {
            return Err(Failure::new(
                Outcome::BadUsage,
                "the mail server password is needed: --password-file FILE",
            ))
        }
    };
    let credentials = meshmail::imap::owned::Credentials::Login {
        user,
        password: meshmail::secret::SecretString::new(password),
    };
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Outcome::Io, e))?
        .block_on(meshmail::imap::store_client::command(
            &target,
            &credentials,
            command,
        ))
        .map_err(|e| Failure::new(Outcome::Temporary, e))
}

fn read(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path)
        .map_err(|e| Failure::new(Outcome::BadUsage, format!("{}: {e}", path.display())))
}

fn write_new(path: &Path, text: &str) -> Result<(), Failure> {
    meshmail::keys::account::write_new(path, text.as_bytes(), 0o644).map_err(Failure::from)
}

/// The code given on the command line, else typed at the terminal; never skipped.
fn code_or_prompt(code: Option<String>, prompt: &str) -> Result<String, Failure> {
    if let Some(c) = code {
        return Ok(c);
    }
    if !std::io::stdin().is_terminal() {
        return Err(Failure::new(
            Outcome::BadUsage,
            "the comparison code is needed: give --code CODE as the other device shows it",
        ));
    }
    eprint!("{prompt}");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| Failure::new(Outcome::Io, e))?;
    Ok(line.trim().to_owned())
}
