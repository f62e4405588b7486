//! `meshmail store …` on the store host: what an admin device needs to enrol devices
//! (`info`), taking a device's share record (`accept`), revoking (`revoke`), and the store's
//! state (`list`). Each works on the `[store]` section of the serve configuration; a running
//! `serve` sees the change at its next message.

use super::{say, Failure};
use clap::Subcommand;
use meshmail::codes::Outcome;
use meshmail::config::Config;
use meshmail::keys::device::StoreInfo;
use meshmail::store::role::StoreRole;
use meshmail::store::shares::ShareRecord;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum StoreCommand {
    /// Write what an admin device needs (`device add --store FILE`): the store's address,
    /// its key for share records and its certificate's pin.
    Info {
        #[arg(long)]
        config: PathBuf,
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Take a device's share record (the .record file `device add` wrote).
    Accept {
        #[arg(long)]
        config: PathBuf,
        file: PathBuf,
    },
    /// Revoke a device at once: ACCOUNT DEVICE, or --signed FILE from `device revoke`.
    Revoke {
        #[arg(long)]
        config: PathBuf,
        account: Option<String>,
        device: Option<String>,
        #[arg(long)]
        signed: Option<PathBuf>,
    },
    /// After a rekey's grace period: delete every device's share of the old subkey (its
    /// records are refused from then on).
    Retire {
        #[arg(long)]
        config: PathBuf,
        account: String,
        subkey: String,
    },
    /// The devices the store holds shares for, and those revoked.
    List {
        #[arg(long)]
        config: PathBuf,
        account: Option<String>,
    },
}

pub fn run(command: StoreCommand) -> Result<(), Failure> {
    match command {
        StoreCommand::Info { config, out } => {
            let config = load(&config)?;
            let (store, role) = open(&config)?;
            let tls = config.tls.as_ref().ok_or_else(|| {
                Failure::new(Outcome::Config, "[store] needs a [tls] certificate")
            })?;
            let cert = meshmail::tls::read_pem_certs(&tls.cert)
                .map_err(|e| Failure::new(Outcome::Config, e))?;
            let pin = cert
                .first()
                .map(meshmail::upstream::pin_of)
                .ok_or_else(|| Failure::new(Outcome::Config, "[tls] cert holds no certificate"))?;
            let info = StoreInfo {
                address: store.public_address(),
                public_key: data_encoding::BASE64.encode(&role.shares().public_key().map_err(io)?),
                cert_sha256: data_encoding::HEXUPPER.encode(&pin),
            };
            let json = serde_json::to_string_pretty(&info).map_err(io)?;
            match out {
                Some(path) => {
                    std::fs::write(&path, json + "\n").map_err(io)?;
                    say!("store description written to {}", path.display());
                }
                None => say!("{json}"),
            }
            Ok(())
        }
        StoreCommand::Accept { config, file } => {
            let (_, role) = open(&load(&config)?)?;
            let text = std::fs::read_to_string(&file)
                .map_err(|e| Failure::new(Outcome::BadUsage, format!("{}: {e}", file.display())))?;
            let device = role
                .shares()
                .accept(&ShareRecord::from_text(&text))
                .map_err(|e| Failure::new(Outcome::BadUsage, e))?;
            say!("device {device} enrolled at this store");
            Ok(())
        }
        StoreCommand::Revoke {
            config,
            account,
            device,
            signed,
        } => {
            let (_, role) = open(&load(&config)?)?;
            match (account, device, signed) {
                (None, None, Some(file)) => {
                    let text = std::fs::read_to_string(&file).map_err(|e| {
                        Failure::new(Outcome::BadUsage, format!("{}: {e}", file.display()))
                    })?;
                    let device = role
                        .shares()
                        .revoke_signed(&text)
                        .map_err(|e| Failure::new(Outcome::BadUsage, e))?;
                    say!("device {device} revoked");
                }
                (Some(account), Some(device), None) => {
                    let had = role.shares().revoke(&account, &device).map_err(io)?;
                    if had {
                        say!("device {device} of {account} revoked; its share is deleted");
                    } else {
                        say!("{account} had no share for {device}; it is refused from now on");
                    }
                }
                _ => {
                    return Err(Failure::new(
                        Outcome::BadUsage,
                        "give ACCOUNT DEVICE, or --signed FILE",
                    ))
                }
            }
            Ok(())
        }
        StoreCommand::Retire {
            config,
            account,
            subkey,
        } => {
            let (_, role) = open(&load(&config)?)?;
            let n = role
                .shares()
                .retire(&account, &subkey.to_ascii_uppercase())
                .map_err(io)?;
            say!("{account}: subkey {subkey} retired, {n} shares deleted");
            Ok(())
        }
        StoreCommand::List { config, account } => {
            let config = load(&config)?;
            let (store, role) = open(&config)?;
            let accounts: Vec<String> = match account {
                Some(a) => vec![a],
                None => store
                    .accounts
                    .iter()
                    .filter_map(|a| meshmail::keys::Account::open(&a.public_home).ok())
                    .map(|a| a.address().to_owned())
                    .collect(),
            };
            for account in accounts {
                for d in role.shares().devices(&account).map_err(io)? {
                    say!(
                        "{account}\t{}\tenrolled\tserial {}\tkey {}",
                        d.device,
                        d.serial,
                        &d.device_tls_sha256[..16.min(d.device_tls_sha256.len())]
                    );
                }
                for t in role.shares().tombstones(&account).map_err(io)? {
                    say!("{account}\t{}\trevoked", t.device);
                }
            }
            Ok(())
        }
    }
}

fn io(e: impl std::fmt::Display) -> Failure {
    Failure::new(Outcome::Io, e)
}

fn load(path: &Path) -> Result<Config, Failure> {
    Config::load(path).map_err(|e| Failure::new(Outcome::Config, e))
}

fn open(config: &Config) -> Result<(meshmail::config::store::StoreConfig, StoreRole), Failure> {
    let store = config
        .store
        .clone()
        .ok_or_else(|| Failure::new(Outcome::Config, "the configuration has no [store] section"))?;
    let role = StoreRole::open(&store).map_err(|e| Failure::new(Outcome::Config, e))?;
    Ok((store, role))
}
