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
    },
    /// On the admin device: answer a request with the device's share, sealed to its
    /// enrolment key. Asks for the code the new device showed (or --code).
    Add {
        request: PathBuf,
        #[arg(long)]
        name: String,
        /// The store's description, from `meshmail store info` on the store host.
        #[arg(long)]
        store: PathBuf,
        #[arg(long)]
        out: PathBuf,
        /// The code the new device showed.
        #[arg(long)]
        code: Option<String>,
        /// Where the store's share record goes (default: OUT.record); give it to the store
        /// host's `meshmail store accept`.
        #[arg(long)]
        record_out: Option<PathBuf>,
    },
    /// On the new device: finish with the admin's reply. Asks for the code the admin device
    /// showed (or --code).
    Import {
        reply: PathBuf,
        #[arg(long)]
        code: Option<String>,
    },
    /// The devices this admin device enrolled, or this device itself.
    List,
    /// Revoke a device: writes a revocation signed by the account (on the admin device) or by
    /// this device, for the store host's `meshmail store revoke --signed FILE`.
    Revoke {
        name: String,
        /// Where the signed revocation goes (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub fn run(home: &Path, pass: &PassphraseSource, command: DeviceCommand) -> Result<(), Failure> {
    match command {
        DeviceCommand::Request { out } => {
            let request = device::request(home, pass.read()?.as_ref())?;
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
        } => {
            let request = DeviceRequest::parse(&read(&request)?)?;
            let store: StoreInfo = serde_json::from_str(&read(&store)?).map_err(|e| {
                Failure::new(
                    Outcome::BadUsage,
                    format!("--store: not a store description: {e}"),
                )
            })?;
            let code = code_or_prompt(code, "code shown on the new device: ")?;
            let account = Account::open(home)?;
            let unlocked = account.unlock(pass.read_or_prompt(&account)?.as_ref())?;
            let reply = device::add(&account, &unlocked, &request, &code, &name, &store)?;
            let record_out = record_out.unwrap_or_else(|| out.with_extension("record"));
            write_new(&out, reply.text())?;
            write_new(&record_out, reply.store_record().as_str())?;
            say!("reply written to {}", out.display());
            say!("store record written to {}", record_out.display());
            say!("code: {}", reply.code());
            say!("type this code into `meshmail device import` on {name}");
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
        DeviceCommand::List => {
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
        DeviceCommand::Revoke { name, out } => {
            let account = Account::open(home)?;
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
                    let unlocked = account.unlock(pass.read_or_prompt(&account)?.as_ref())?;
                    let key = unlocked.policy_signing_key()?;
                    device::mark_revoked(home, &name)?;
                    meshmail::store::shares::make_revocation(&key, account.address(), &name, "")
                }
            }
            .map_err(|e| Failure::new(Outcome::Io, e))?;
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
