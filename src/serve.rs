//! `meshmail serve`: assemble the service from the configuration (accounts, resolver, TLS,
//! upstream) and run the listeners until SIGINT or SIGTERM.

use crate::config::{AccountConfig, Config};
use crate::crypto::decrypt::DecryptionKeys;
use crate::crypto::smime::SmimeCert;
use crate::imap::ImapAccount;
use crate::keys::{Account, KeyError};
use crate::pipeline::SenderKeys;
use crate::secret::SecretString;
use crate::smtp::session::MappedAccount;
use crate::smtp::{run_listener, SmtpContext};
use crate::upstream::UpstreamTarget;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use thiserror::Error;
use tokio::net::TcpListener;

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("configuration: {0}")]
    Config(String),
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("cannot listen on {addr}: {reason}")]
    Listen { addr: String, reason: String },
}

/// Runs the configured listeners until a signal arrives.
pub async fn serve(config: Config, default_home: Option<PathBuf>) -> Result<(), ServeError> {
    if config.smtp.is_none()
        && config.imap.is_none()
        && config.pop3.is_none()
        && config.filter.is_none()
        && config.store.is_none()
    {
        return Err(ServeError::Config(
            "no [smtp], [imap], [pop3], [filter] or [store] section: nothing to serve".into(),
        ));
    }
    // The store role maps no account: it never loads a key store.
    let accounts = if config.smtp.is_some() || config.imap.is_some() || config.pop3.is_some() {
        load_accounts(&config, default_home.clone())?
    } else {
        HashMap::new()
    };
    let store_home = config
        .home
        .clone()
        .or_else(|| accounts.values().next().map(|a| a.home.clone()));
    let resolver =
        crate::policy::PolicyResolver::new(&config.resolver_settings(store_home.clone()))
            .map_err(|e| ServeError::Config(e.to_string()))?;
    let tls = match &config.tls {
        Some(t) => Some(crate::tls::acceptor(&t.cert, &t.key).map_err(ServeError::Config)?),
        None => None,
    };
    let (stop, shutdown) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    if let Some(filter) = &config.filter {
        let resolver =
            crate::policy::PolicyResolver::new(&config.resolver_settings(store_home.clone()))
                .map_err(|e| ServeError::Config(e.to_string()))?;
        let home = store_home.clone().or_else(|| default_home.clone());
        let ctx = Arc::new(
            crate::filter::FilterContext::new(
                filter,
                resolver,
                config.encrypt.clone(),
                config.limits.clone(),
                home.as_deref(),
            )
            .map_err(ServeError::Config)?,
        );
        let listener =
            crate::filter::FilterListener::bind(filter).map_err(|reason| ServeError::Listen {
                addr: format!("{:?}", filter.listen),
                reason,
            })?;
        tracing::info!(listen = ?filter.listen, reinject = %filter.reinject, "filter listening");
        tasks.push(tokio::spawn(crate::filter::run_listener(
            listener,
            ctx.clone(),
            shutdown.clone(),
        )));
        if let Some(policy) = &filter.policy_service {
            let listener = bind(policy.listen)?;
            tracing::info!(listen = %policy.listen, "policy service listening");
            tasks.push(tokio::spawn(crate::filter::policy_service::run(
                listener,
                ctx,
                shutdown.clone(),
            )));
        }
    }
    if let Some(smtp) = config.smtp.clone() {
        let upstream_tls = crate::upstream::client_config(
            smtp.upstream_ca.as_deref(),
            &crate::config::upstream_pins(smtp.upstream_fingerprint.as_deref())
                .map_err(ServeError::Config)?,
        )
        .map_err(ServeError::Config)?;
        let hostname = smtp.hostname.clone().unwrap_or_else(|| "localhost".into());
        let spool = match &store_home {
            Some(home) => Some(Arc::new(
                crate::smtp::spool::ReportSpool::open(home)
                    .map_err(|e| ServeError::Config(format!("report spool: {e}")))?,
            )),
            None => None,
        };
        if let Some(spool) = spool.clone() {
            tasks.push(tokio::spawn(expire_reports(spool, shutdown.clone())));
        }
        let ctx = Arc::new(SmtpContext {
            hostname: hostname.clone(),
            resolver,
            rules: config.encrypt.clone(),
            limits: config.limits.clone(),
            upstream: UpstreamTarget {
                address: smtp.upstream.clone(),
                tls: smtp.upstream_tls,
                tls_config: Arc::new(upstream_tls),
                timeout: Duration::from_secs(config.limits.upstream_timeout_secs),
                hello_name: hostname,
            },
            tls: tls.clone(),
            accounts: accounts
                .iter()
                .map(|(user, a)| (user.clone(), a.smtp.clone()))
                .collect(),
            sign: config.sign.unwrap_or(true),
            in_flight: crate::smtp::server::InFlight::new(config.limits.max_bytes_in_flight),
            connections: Arc::new(tokio::sync::Semaphore::new(config.limits.max_connections)),
            spool,
        });
        for (listener, addr, implicit) in
            listeners(smtp.listen, smtp.listen_implicit_tls, ctx.tls.is_some())?
        {
            tracing::info!(%addr, implicit_tls = implicit, "SMTP listening");
            tasks.push(tokio::spawn(run_listener(
                listener,
                ctx.clone(),
                implicit,
                shutdown.clone(),
            )));
        }
    }
    if let Some(store) = config.store.clone() {
        tasks.extend(serve_store(&config, &store, shutdown.clone())?);
    }
    // Decrypted views, shared by the IMAP and POP3 sessions.
    let views = crate::imap::view::ViewCache::new(
        config
            .imap
            .as_ref()
            .and_then(|i| i.cache_bytes)
            .unwrap_or(32 << 20),
    );
    if let Some(imap) = config.imap.clone() {
        let mut devices = accounts.values().filter_map(|a| a.device.as_ref());
        let device = match (devices.next(), devices.next()) {
            (Some(_), Some(_)) => {
                return Err(ServeError::Config(
                    "more than one device account: a device serves one split account".into(),
                ))
            }
            (d, _) => d,
        };
        let ctx = Arc::new(crate::imap::ImapContext {
            upstream: imap_target(&config, &imap, device)?,
            tls: tls.clone(),
            accounts: accounts
                .iter()
                .map(|(user, a)| (user.clone(), a.imap.clone()))
                .collect(),
            limits: config.limits.clone(),
            connections: Arc::new(tokio::sync::Semaphore::new(config.limits.max_connections)),
            views: views.clone(),
            append_plaintext: imap.append_plaintext.clone(),
            indexer: imap.indexer_settings(),
            store: None,
        });
        for (listener, addr, implicit) in
            listeners(imap.listen, imap.listen_implicit_tls, ctx.tls.is_some())?
        {
            tracing::info!(%addr, implicit_tls = implicit, "IMAP listening");
            tasks.push(tokio::spawn(crate::imap::run_listener(
                listener,
                ctx.clone(),
                implicit,
                shutdown.clone(),
            )));
        }
    }
    if let Some(pop3) = config.pop3.clone() {
        tasks.extend(serve_pop3(
            &config, &pop3, &accounts, &tls, &views, &shutdown,
        )?);
    }
    // Scripts wait for this line.
    {
        // A closed stdout (a script that stopped reading) must not stop the proxy.
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "meshmail: ready").and_then(|()| out.flush());
    }

    wait_for_signal().await;
    tracing::info!("shutting down");
    let _ = stop.send(true);
    for t in tasks {
        let _ = t.await;
    }
    // Records still queued for the IMAP index are written before exiting.
    let indexes: Vec<_> = accounts
        .values()
        .filter_map(|a| a.imap.index.clone())
        .collect();
    let _ = tokio::task::spawn_blocking(move || {
        for index in indexes {
            if !index.flush(Duration::from_secs(20)) {
                tracing::warn!("the IMAP index was not written completely before exit");
            }
        }
    })
    .await;
    Ok(())
}

/// Gives up spooled reports that are too old, every ten minutes until shutdown.
async fn expire_reports(
    spool: Arc<crate::smtp::spool::ReportSpool>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    loop {
        let s = spool.clone();
        let _ = tokio::task::spawn_blocking(move || s.expire()).await;
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(600)) => {}
            _ = shutdown.changed() => return,
        }
    }
}

/// The POP3 listeners, for the same mapped accounts as IMAP. A split account's device is not
/// served: it opens messages only with its store's partials, which come over IMAP.
fn serve_pop3(
    config: &Config,
    pop3: &crate::config::Pop3Config,
    accounts: &HashMap<String, LoadedAccount>,
    tls: &Option<tokio_rustls::TlsAcceptor>,
    views: &crate::imap::view::ViewCache,
    shutdown: &tokio::sync::watch::Receiver<bool>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, ServeError> {
    if accounts.values().any(|a| a.device.is_some()) {
        return Err(ServeError::Config(
            "[pop3] cannot serve a split account's device: it reads its mail over IMAP".into(),
        ));
    }
    let upstream_tls = crate::upstream::client_config(
        pop3.upstream_ca.as_deref(),
        &crate::config::upstream_pins(pop3.upstream_fingerprint.as_deref())
            .map_err(ServeError::Config)?,
    )
    .map_err(ServeError::Config)?;
    let ctx = Arc::new(crate::pop3::Pop3Context {
        upstream: UpstreamTarget {
            address: pop3.upstream.clone(),
            tls: pop3.upstream_tls,
            tls_config: Arc::new(upstream_tls),
            timeout: Duration::from_secs(config.limits.upstream_timeout_secs),
            hello_name: "localhost".into(),
        },
        tls: tls.clone(),
        accounts: accounts
            .iter()
            .map(|(user, a)| {
                let account = crate::pop3::Pop3Account {
                    imap: a.imap.clone(),
                    sizes: a.pop3_sizes.clone(),
                };
                (user.clone(), Arc::new(account))
            })
            .collect(),
        limits: config.limits.clone(),
        connections: Arc::new(tokio::sync::Semaphore::new(config.limits.max_connections)),
        views: views.clone(),
    });
    let mut tasks = Vec::new();
    for (listener, addr, implicit) in
        listeners(pop3.listen, pop3.listen_implicit_tls, ctx.tls.is_some())?
    {
        tracing::info!(%addr, implicit_tls = implicit, "POP3 listening");
        tasks.push(tokio::spawn(crate::pop3::run_listener(
            listener,
            ctx.clone(),
            implicit,
            shutdown.clone(),
        )));
    }
    Ok(tasks)
}

/// The plaintext/STARTTLS listener and, when configured, the implicit-TLS one.
fn listeners(
    listen: std::net::SocketAddr,
    implicit: Option<std::net::SocketAddr>,
    have_tls: bool,
) -> Result<Vec<(TcpListener, std::net::SocketAddr, bool)>, ServeError> {
    let mut out = vec![(bind(listen)?, listen, false)];
    if let Some(addr) = implicit {
        if !have_tls {
            return Err(ServeError::Config(
                "listen_implicit_tls needs a [tls] certificate".into(),
            ));
        }
        out.push((bind(addr)?, addr, true));
    }
    Ok(out)
}

fn bind(addr: std::net::SocketAddr) -> Result<TcpListener, ServeError> {
    crate::listen::bind_tcp(addr).map_err(|e| ServeError::Listen {
        addr: addr.to_string(),
        reason: e.to_string(),
    })
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

mod split;
pub use split::store_upstream;
use split::{imap_target, load_device, serve_store, LoadedDevice};

/// A mapped account as each listener needs it.
struct LoadedAccount {
    home: PathBuf,
    smtp: Arc<MappedAccount>,
    imap: Arc<ImapAccount>,
    /// The POP3 size book (`None` while locked).
    pop3_sizes: Option<Arc<crate::pop3::sizes::SizeBook>>,
    /// A device of a split account: what it shows its store.
    device: Option<LoadedDevice>,
}

/// Loads every mapped account (the top-level one and each `[[account]]`), unlocking its keys
/// when the passphrase is at hand. A locked account stays mapped: its sessions are told to
/// try again later rather than being relayed without its keys.
fn load_accounts(
    config: &Config,
    default_home: Option<PathBuf>,
) -> Result<HashMap<String, LoadedAccount>, ServeError> {
    let list = account_configs(config, default_home)?;
    let mut out = HashMap::new();
    for a in list {
        let account = Account::open(&a.home)?;
        let passphrase = read_passphrase(a.passphrase_file.as_deref(), a.passphrase_fd)?;
        if let Some(info) = crate::keys::device::info(&a.home)? {
            let loaded = load_device(&a, &account, info, passphrase.as_ref())?;
            out.insert(a.upstream_user.clone(), loaded);
            continue;
        }
        if let Some(w) = crate::policy::issue::expiry_warning(&account, time::Duration::days(30)) {
            tracing::warn!("{w}");
        }
        let mut index = None;
        let mut pop3_sizes = None;
        let (keys, decryption) = match account.unlock(passphrase.as_ref()) {
            Ok(unlocked) => {
                let secret = unlocked.openpgp_secret_cert()?;
                let smime = SmimeCert::from_der(&account.smime_cert_der()?).ok();
                let keyring =
                    crate::policy::store::LocalStore::new(&a.home).certs_matching(&|_| true);
                index =
                    crate::imap::index::Index::open(&a.home, unlocked.smime_key_pkcs8().expose());
                let fingerprints = |certs: &[sequoia_openpgp::Cert]| -> Vec<String> {
                    certs.iter().map(|c| c.fingerprint().to_hex()).collect()
                };
                let epoch = crate::pop3::sizes::epoch(
                    &[
                        secret.fingerprint().to_hex(),
                        smime
                            .as_ref()
                            .map(|c| data_encoding::HEXLOWER.encode(c.der()))
                            .unwrap_or_default(),
                    ],
                    &fingerprints(&keyring),
                    config.limits.max_message_size,
                );
                pop3_sizes = crate::pop3::sizes::SizeBook::open(
                    &a.home,
                    unlocked.smime_key_pkcs8().expose(),
                    epoch,
                )
                .map(Arc::new);
                let decryption = DecryptionKeys::new(
                    secret.clone(),
                    smime.clone(),
                    Some(crate::secret::Secret::new(
                        unlocked.smime_key_pkcs8().expose().clone(),
                    )),
                    keyring,
                );
                (
                    Some(SenderKeys {
                        self_openpgp: Some(account.openpgp_cert()?),
                        self_smime: smime,
                        signer: Some(secret),
                    }),
                    Some(Arc::new(decryption)),
                )
            }
            Err(KeyError::Locked) => {
                tracing::warn!(user = %a.upstream_user, "key store is locked: its sessions get 'temporarily unavailable'");
                (None, None)
            }
            Err(e) => return Err(e.into()),
        };
        out.insert(
            a.upstream_user.clone(),
            LoadedAccount {
                home: a.home.clone(),
                smtp: Arc::new(MappedAccount {
                    address: account.address().to_owned(),
                    keys,
                }),
                imap: Arc::new(ImapAccount {
                    address: account.address().to_owned(),
                    keys: decryption,
                    index,
                    owned: Default::default(),
                    indexer: Default::default(),
                    device: None,
                    device_signer: None,
                }),
                pop3_sizes,
                device: None,
            },
        );
    }
    Ok(out)
}

/// Every mapped account of the configuration: the top-level one first, then each
/// `[[account]]`.
pub fn account_configs(
    config: &Config,
    default_home: Option<PathBuf>,
) -> Result<Vec<AccountConfig>, ServeError> {
    let mut list: Vec<AccountConfig> = config.accounts.clone();
    if let Some(user) = &config.upstream_user {
        let home = config.home.clone().or(default_home).ok_or_else(|| {
            ServeError::Config("no home for the account (home, --home or MESHMAIL_HOME)".into())
        })?;
        list.insert(
            0,
            AccountConfig {
                upstream_user: user.clone(),
                home,
                passphrase_file: config.passphrase_file.clone(),
                passphrase_fd: config.passphrase_fd,
            },
        );
    }
    Ok(list)
}

/// What `meshmail index status` shows: each account's index, read without changing it (a
/// running `serve` may be writing it).
pub fn index_status(
    config: &Config,
    default_home: Option<PathBuf>,
) -> Result<Vec<(String, Vec<crate::imap::index::MailboxStatus>)>, ServeError> {
    let mut out = Vec::new();
    for a in account_configs(config, default_home)? {
        let account = Account::open(&a.home)?;
        let passphrase = read_passphrase(a.passphrase_file.as_deref(), a.passphrase_fd)?;
        let unlocked = account.unlock(passphrase.as_ref())?;
        let status =
            crate::imap::index::Index::status_at(&a.home, unlocked.smime_key_pkcs8().expose());
        out.push((a.upstream_user.clone(), status));
    }
    Ok(out)
}

/// A passphrase from a file (e.g. systemd-creds) or an inherited descriptor.
pub fn read_passphrase(
    file: Option<&Path>,
    fd: Option<u32>,
) -> Result<Option<SecretString>, KeyError> {
    let path = match (file, fd) {
        (Some(f), _) => f.to_owned(),
        (None, Some(fd)) => PathBuf::from(format!("/proc/self/fd/{fd}")),
        (None, None) => return Ok(None),
    };
    let mut text = std::fs::read_to_string(&path).map_err(|e| KeyError::io(&path, e))?;
    let trimmed = text.trim_end_matches(['\n', '\r']).to_owned();
    zeroize::Zeroize::zeroize(&mut text);
    Ok(Some(SecretString::new(trimmed)))
}

/// The `[imap]` upstream as a command-line tool reaches it (no device identity): for
/// `meshmail mailbox …` on the admin device.
pub fn imap_upstream(config: &Config) -> Result<UpstreamTarget, ServeError> {
    let imap = config
        .imap
        .as_ref()
        .ok_or_else(|| ServeError::Config("no [imap] section: no mail server to work on".into()))?;
    let tls = crate::upstream::client_config(
        imap.upstream_ca.as_deref(),
        &crate::config::upstream_pins(imap.upstream_fingerprint.as_deref())
            .map_err(ServeError::Config)?,
    )
    .map_err(ServeError::Config)?;
    Ok(UpstreamTarget {
        address: imap.upstream.clone(),
        tls: imap.upstream_tls,
        tls_config: Arc::new(tls),
        timeout: Duration::from_secs(config.limits.upstream_timeout_secs),
        hello_name: "localhost".into(),
    })
}
