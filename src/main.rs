//! The `meshmail` command: account set-up, keys, addresses and policies. Every subcommand
//! honours `--home` and `$MESHMAIL_HOME`; exit codes follow DESIGN.md's table
//! (64 bad usage, 65 no valid policy, 69 not found, 75 temporary, 78 configuration).

use clap::{Parser, Subcommand, ValueEnum};
use meshmail::address::{udf, Form, Label, StrongAddress};
use meshmail::codes::Outcome;
use meshmail::config::Config;
use meshmail::keys::{Account, KeyError};
use meshmail::policy::{self, PolicyResolver};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// `println!` that survives a reader going away (`meshmail … | head`): the rest of the output
/// is dropped instead of a panic; any other write error is said on stderr.
macro_rules! say {
    ($($arg:tt)*) => {
        say(format_args!($($arg)*))
    };
}

fn say(text: std::fmt::Arguments<'_>) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}") {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("meshmail: cannot write the output: {e}");
        }
    }
}

// After `say!`: the subcommand modules use it.
#[path = "cli/device.rs"]
mod device_cli;
#[path = "cli/keys.rs"]
mod keys_cli;
#[path = "cli/mailbox.rs"]
mod mailbox_cli;
#[path = "cli/passphrase.rs"]
mod passphrase;
#[path = "cli/recovery.rs"]
mod recovery_cli;
#[path = "cli/store.rs"]
mod store_cli;

use keys_cli::{export_keys, ExportArgs};
use passphrase::{prompt_new_passphrase, PassphraseSource};

#[derive(Parser)]
#[command(
    name = "meshmail",
    version,
    about = "End-to-end encryption for unchanged mail clients and servers"
)]
struct Cli {
    /// The key store (default: $MESHMAIL_HOME, else ~/.local/share/meshmail).
    #[arg(long, global = true, env = "MESHMAIL_HOME")]
    home: Option<PathBuf>,
    /// Read the key store passphrase from this file.
    #[arg(long, global = true)]
    passphrase_file: Option<PathBuf>,
    /// Read the key store passphrase from this inherited file descriptor.
    #[arg(long, global = true)]
    passphrase_fd: Option<u32>,
    /// More log output (repeat for more).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an account: policy-signing key, OpenPGP and S/MIME certificates, signed policy.
    Init {
        /// The routable address, e.g. alice@example.com.
        #[arg(long)]
        address: String,
        /// Ask for a passphrase to protect the secret keys at rest.
        #[arg(long)]
        ask_passphrase: bool,
        /// Days the first policy is valid (at most 730).
        #[arg(long, default_value_t = 365)]
        policy_days: i64,
    },
    /// Print the account's strong address.
    Address {
        #[arg(long, value_enum, default_value_t = FormArg::Suffix)]
        form: FormArg,
        #[arg(long, value_enum, default_value_t = LabelArg::Xx)]
        label: LabelArg,
        /// Fingerprint precision in bits (120..=235).
        #[arg(long, default_value_t = udf::DEFAULT_BITS)]
        bits: usize,
        /// Print the OpenPGP-fingerprint address instead of the UDF address.
        #[arg(long)]
        openpgp: bool,
    },
    /// Export keys in standard formats.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Publish, resolve and renew signed policies.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Check a configuration file and report every problem with its line.
    CheckConfig { file: PathBuf },
    /// Run the proxy (SMTP submission and IMAP) as the configuration says.
    Serve {
        #[arg(long)]
        config: PathBuf,
    },
    /// Recovery shares of the account (printable; any quorum of them recover it).
    Recovery {
        #[command(subcommand)]
        command: recovery_cli::RecoveryCommand,
    },
    /// Devices of a split account: enrolment (request, add, import), list, revoke.
    Device {
        #[command(subcommand)]
        command: device_cli::DeviceCommand,
    },
    /// The store role's shares, on the store host: info, accept, revoke, list.
    Store {
        #[command(subcommand)]
        command: store_cli::StoreCommand,
    },
    /// Stored mail: re-encrypt a mailbox's plaintext messages in place.
    Mailbox {
        #[command(subcommand)]
        command: mailbox_cli::MailboxCommand,
    },
    /// The IMAP index of decrypted messages.
    Index {
        #[command(subcommand)]
        command: IndexCommand,
    },
    /// Make a self-signed certificate for a localhost listener (cert.pem, key.pem).
    Certs {
        #[arg(long)]
        out: PathBuf,
    },
    /// Write the account prefs of a new Thunderbird profile (DIR/user.js): incoming and
    /// outgoing servers are meshmail's listeners of the configuration.
    Thunderbird {
        /// The profile directory (new, or without a user.js yet).
        #[arg(long)]
        profile: PathBuf,
        #[arg(long)]
        config: PathBuf,
        /// STARTTLS to meshmail, its [tls] certificate accepted in the profile (default:
        /// plaintext, which stays on loopback).
        #[arg(long)]
        starttls: bool,
        /// Keep downloaded (decrypted) messages on disk for offline use (default: off, so
        /// plaintext is not written to disk by Thunderbird).
        #[arg(long)]
        offline: bool,
        /// Fetch mail over meshmail's POP3 listener ([pop3]) instead of IMAP.
        #[arg(long)]
        pop3: bool,
    },
}

#[derive(Subcommand)]
enum IndexCommand {
    /// How far each account's index is: per mailbox, the messages indexed and the last UID
    /// the indexer looked at against the server's UIDNEXT then (read-only: safe beside a
    /// running `serve`).
    Status {
        #[arg(long)]
        config: PathBuf,
        /// One JSON object per account.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Write a certificate (public by default) to stdout or --out.
    Export(ExportArgs),
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Write the zone lines, the signed policy and the WKD files a domain publishes.
    Publish {
        #[arg(long)]
        out: PathBuf,
    },
    /// Discover and verify the policy of a strong address; print it as JSON.
    Resolve {
        address: String,
        /// DNS server to ask (HOST:PORT).
        #[arg(long)]
        dns: Option<std::net::SocketAddr>,
        /// Extra CA for HTTPS fetches.
        #[arg(long)]
        https_ca: Option<PathBuf>,
        /// Test only: port for HTTPS fetches.
        #[arg(long, hide = true)]
        https_port: Option<u16>,
        /// Take [policy] settings from this configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
        /// Neither read nor write the local policy store.
        #[arg(long)]
        no_store: bool,
        /// Seconds for each DNS query or HTTPS request.
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// Re-sign the account's policy with a new expiry (and, optionally, other formats).
    Renew {
        #[arg(long, default_value_t = 365)]
        days: i64,
        /// Formats senders must use, in order of preference: pgp-mime, smime, smime-gcm.
        #[arg(long, value_delimiter = ',', default_value = "pgp-mime,smime")]
        formats: Vec<String>,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum FormArg {
    Suffix,
    Prefix,
}

#[derive(Clone, Copy, ValueEnum)]
enum LabelArg {
    Xx,
    Mm,
}

/// A failure of a command: what to print and which exit code.
struct Failure {
    outcome: Outcome,
    message: String,
}

impl Failure {
    fn new(outcome: Outcome, message: impl std::fmt::Display) -> Failure {
        Failure {
            outcome,
            message: message.to_string(),
        }
    }
}

impl From<KeyError> for Failure {
    fn from(e: KeyError) -> Failure {
        Failure::new(Outcome::from(&e), e)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("meshmail: {}", f.message);
            ExitCode::from(f.outcome.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<(), Failure> {
    let home = home_dir(cli.home.as_deref())?;
    let pass = PassphraseSource {
        file: cli.passphrase_file.clone(),
        fd: cli.passphrase_fd,
    };
    match cli.command {
        Command::Init {
            address,
            ask_passphrase,
            policy_days,
        } => {
            let passphrase = if ask_passphrase {
                Some(prompt_new_passphrase()?)
            } else {
                pass.read()?
            };
            let account = Account::create(
                &home,
                &address,
                passphrase.as_ref(),
                time::Duration::days(policy_days),
            )?;
            let strong = account.strong_address(Label::Xx, Form::Suffix, udf::DEFAULT_BITS)?;
            say!(
                "created the account for {} in {}",
                account.address(),
                home.display()
            );
            say!("strong address: {strong}");
            say!("OpenPGP: {}", account.info().openpgp_fingerprint);
            say!("next: `meshmail policy publish --out DIR` and publish what it writes");
            Ok(())
        }
        Command::Address {
            form,
            label,
            bits,
            openpgp,
        } => {
            let account = Account::open(&home)?;
            let label = match label {
                LabelArg::Xx => Label::Xx,
                LabelArg::Mm => Label::Mm,
            };
            let form = match form {
                FormArg::Suffix => Form::Suffix,
                FormArg::Prefix => Form::Prefix,
            };
            if !(udf::MIN_BITS..=235).contains(&bits) {
                return Err(Failure::new(
                    Outcome::BadUsage,
                    format!("--bits must be between {} and 235", udf::MIN_BITS),
                ));
            }
            let address = if openpgp {
                account.openpgp_address(label, form)?
            } else {
                account.strong_address(label, form, bits)?
            };
            say!("{address}");
            warn_expiry(&account);
            Ok(())
        }
        Command::Keys {
            command: KeysCommand::Export(args),
        } => export_keys(&home, &pass, args),
        Command::Policy { command } => match command {
            PolicyCommand::Publish { out } => {
                let account = Account::open(&home)?;
                let publication = policy::publish::publish(&account, &out)?;
                for line in &publication.zone_lines {
                    say!("{line}");
                }
                for file in &publication.files {
                    eprintln!("wrote {}", file.display());
                }
                warn_expiry(&account);
                Ok(())
            }
            PolicyCommand::Resolve {
                address,
                dns,
                https_ca,
                https_port,
                config,
                no_store,
                timeout,
            } => {
                let config = match config {
                    Some(path) => {
                        Config::load(&path).map_err(|e| Failure::new(Outcome::Config, e))?
                    }
                    None => Config::default(),
                };
                let store_home = (!no_store && home.is_dir()).then(|| home.clone());
                let mut settings = config.resolver_settings(store_home);
                settings.dns = dns.or(settings.dns);
                settings.https_ca = https_ca.or(settings.https_ca);
                settings.https_port = https_port.or(settings.https_port);
                if let Some(t) = timeout {
                    settings.timeout = std::time::Duration::from_secs(t.clamp(1, 120));
                }
                resolve(&address, &settings)
            }
            PolicyCommand::Renew { days, formats } => {
                let formats: Vec<policy::Format> = formats
                    .iter()
                    .map(|f| {
                        policy::Format::parse(f).ok_or_else(|| {
                            Failure::new(Outcome::BadUsage, format!("unknown format {f:?}"))
                        })
                    })
                    .collect::<Result<_, _>>()?;
                let account = Account::open(&home)?;
                let mut formats = formats;
                if meshmail::keys::device::has_live_devices(&home, None)?
                    && formats.iter().any(|f| f.is_smime())
                {
                    // Devices hold shares of the OpenPGP key; nothing of theirs opens S/MIME.
                    formats.retain(|f| !f.is_smime());
                    say!("devices hold shares of the OpenPGP key only: the policy offers OpenPGP alone");
                    if formats.is_empty() {
                        formats.push(policy::Format::PgpMime);
                    }
                }
                let unlocked = account.unlock(pass.read_or_prompt(&account)?.as_ref())?;
                let key = unlocked.policy_signing_key()?;
                let jws = policy::issue::sign_account_policy_with(
                    &account,
                    &key,
                    time::Duration::days(days),
                    &formats,
                )?;
                account.replace_policy(&jws)?;
                let expires = policy::issue::account_policy_expiry(&account)?;
                say!(
                    "renewed the policy of {}; it expires {expires}",
                    account.address()
                );
                say!("publish it again: `meshmail policy publish --out DIR`");
                Ok(())
            }
        },
        Command::Serve { config } => {
            let config = Config::load(&config).map_err(|e| Failure::new(Outcome::Config, e))?;
            // Blocking work is decryption (one per core at a time), sealing and SEARCH matching:
            // a few threads do. Every extra thread would keep a malloc arena of its own.
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .max_blocking_threads(16)
                .enable_all()
                .build()
                .map_err(|e| Failure::new(Outcome::Temporary, e))?;
            let default_home = Some(home.clone());
            runtime
                .block_on(meshmail::serve::serve(config, default_home))
                .map_err(|e| match e {
                    meshmail::serve::ServeError::Key(k) => Failure::from(k),
                    meshmail::serve::ServeError::Listen { .. } => {
                        Failure::new(Outcome::Temporary, e)
                    }
                    other => Failure::new(Outcome::Config, other),
                })
        }
        Command::Thunderbird {
            profile,
            config,
            starttls,
            offline,
            pop3,
        } => {
            let config = Config::load(&config).map_err(|e| Failure::new(Outcome::Config, e))?;
            if pop3 && config.pop3.is_none() {
                return Err(Failure::new(
                    Outcome::Config,
                    "--pop3 needs a [pop3] section in the configuration",
                ));
            }
            let account_home = config.home.clone().unwrap_or(home.clone());
            let account = Account::open(&account_home)?;
            let cert = match (&config.tls, starttls) {
                (Some(t), true) => Some(
                    std::fs::read_to_string(&t.cert).map_err(|e| Failure::new(Outcome::Io, e))?,
                ),
                (None, true) => {
                    return Err(Failure::new(
                        Outcome::Config,
                        "--starttls needs a [tls] certificate in the configuration",
                    ))
                }
                _ => None,
            };
            let settings = meshmail::thunderbird::ProfileSettings::from_config(
                &config,
                account.address(),
                starttls,
                offline,
                pop3,
            );
            meshmail::thunderbird::write_profile(&profile, &settings, cert.as_deref())
                .map_err(|e| Failure::new(Outcome::Io, e))?;
            say!(
                "wrote {}/user.js: start Thunderbird with `thunderbird -profile {}`; it asks for your provider password once",
                profile.display(),
                profile.display()
            );
            if !offline {
                say!("offline copies are off: decrypted messages are not kept on disk (--offline keeps them)");
            }
            Ok(())
        }
        Command::Recovery { command } => recovery_cli::run(&home, &pass, command),
        Command::Device { command } => device_cli::run(&home, &pass, command),
        Command::Store { command } => store_cli::run(command),
        Command::Mailbox { command } => mailbox_cli::run(&home, &pass, command),
        Command::Index {
            command: IndexCommand::Status { config, json },
        } => {
            let config = Config::load(&config).map_err(|e| Failure::new(Outcome::Config, e))?;
            let accounts = meshmail::serve::index_status(&config, Some(home.clone())).map_err(
                |e| match e {
                    meshmail::serve::ServeError::Key(k) => Failure::from(k),
                    other => Failure::new(Outcome::Config, other),
                },
            )?;
            for (user, mailboxes) in accounts {
                say!(
                    "{}",
                    meshmail::imap::index::report(&user, &mailboxes, json).trim_end()
                );
            }
            Ok(())
        }
        Command::Certs { out } => {
            let (cert, key) = meshmail::tls::localhost_certificate()
                .map_err(|e| Failure::new(Outcome::CryptoFailure, e))?;
            std::fs::create_dir_all(&out).map_err(|e| Failure::new(Outcome::Io, e))?;
            meshmail::keys::account::write_new(&out.join("cert.pem"), cert.as_bytes(), 0o644)?;
            meshmail::keys::account::write_new(&out.join("key.pem"), key.as_bytes(), 0o600)?;
            say!(
                "wrote {0}/cert.pem and {0}/key.pem (localhost, 127.0.0.1)",
                out.display()
            );
            Ok(())
        }
        Command::CheckConfig { file } => {
            let (_, problems) =
                Config::check_file(&file).map_err(|e| Failure::new(Outcome::Config, e))?;
            if problems.is_empty() {
                say!("{}: ok", file.display());
                return Ok(());
            }
            for p in &problems {
                eprintln!("{p}");
            }
            Err(Failure::new(
                Outcome::Config,
                format!("{} problem(s) in {}", problems.len(), file.display()),
            ))
        }
    }
}

fn resolve(address: &str, settings: &policy::ResolverSettings) -> Result<(), Failure> {
    let strong = StrongAddress::parse(address)
        .map_err(|e| Failure::new(Outcome::BadUsage, format!("bad strong address: {e}")))?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(Outcome::Temporary, e))?;
    let resolver = PolicyResolver::new(settings).map_err(|e| Failure::new(Outcome::Config, e))?;
    match runtime.block_on(resolver.resolve(&strong)) {
        Ok(verified) => {
            let text = serde_json::to_string_pretty(&verified.to_json())
                .map_err(|e| Failure::new(Outcome::Io, e))?;
            say!("{text}");
            Ok(())
        }
        Err(e) => Err(Failure::new(Outcome::from(&e), e)),
    }
}

fn warn_expiry(account: &Account) {
    if let Some(w) = policy::issue::expiry_warning(account, time::Duration::days(30)) {
        eprintln!("warning: {w}");
    }
}

/// `--home`, else `$MESHMAIL_HOME` (clap reads it), else the user's data directory.
fn home_dir(flag: Option<&Path>) -> Result<PathBuf, Failure> {
    if let Some(h) = flag {
        return Ok(h.to_owned());
    }
    dirs::data_dir().map(|d| d.join("meshmail")).ok_or_else(|| {
        Failure::new(
            Outcome::Config,
            "no home directory: give --home or MESHMAIL_HOME",
        )
    })
}
