//! The MTA sidecar: an after-queue content filter behind Postfix. Postfix's `meshfilter`
//! transport hands every message over LMTP (one reply per recipient); meshmail enforces signed
//! policies for fingerprint addresses on the way out, encrypts mail for local users at rest on
//! the way in, and reinjects each copy into Postfix's reinjection listener. It holds no private
//! keys: it signs nothing and sends no reports of its own (Postfix bounces).
//!
//! - [`lmtp`]: the session core (sans-I/O), [`xforward`]: the XFORWARD codec;
//! - [`session`]: the driver; [`route`]: each recipient at RCPT; [`deliver`]: end of DATA;
//! - [`reinject`]: the reinjection transaction; [`directory`]: local users' keys;
//! - [`mark`]: the "encrypted at rest" mark; [`policy_service`]: Postfix's policy delegation,
//!   so the submission server refuses a fingerprint address without a valid policy at RCPT;
//! - [`postfix_check`]: what `check-config` reads in Postfix's own configuration.

pub mod deliver;
pub mod directory;
#[doc(hidden)]
pub mod fuzz;
pub mod lmtp;
#[cfg(test)]
mod lmtp_tests;
pub mod mark;
pub mod policy_service;
pub mod postfix_check;
pub mod reinject;
pub mod route;
pub mod session;
pub mod xforward;

use crate::config::{EncryptRules, FilterConfig, FilterListen, Limits, StrongInbound};
use crate::policy::PolicyResolver;
use crate::smtp::server::InFlight;
use crate::smtp::session::io::Connection;
use crate::upstream::UpstreamTarget;
use directory::KeyDirectory;
use mark::MarkKey;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{watch, Semaphore};

/// Everything the filter's sessions share.
pub struct FilterContext {
    pub hostname: String,
    pub resolver: PolicyResolver,
    pub rules: EncryptRules,
    pub limits: Limits,
    /// Lower case.
    pub local_domains: Vec<String>,
    pub keys: KeyDirectory,
    pub mark: MarkKey,
    pub strong_inbound: StrongInbound,
    pub hide_subject: bool,
    pub reinject: UpstreamTarget,
    pub peers: Vec<IpAddr>,
    pub in_flight: InFlight,
    pub connections: Arc<Semaphore>,
}

impl FilterContext {
    pub fn is_local(&self, domain: &str) -> bool {
        let d = domain.trim_end_matches('.').to_ascii_lowercase();
        self.local_domains.contains(&d)
    }

    /// Builds the context from `[filter]`; `home` holds the mark's secret by default.
    pub fn new(
        config: &FilterConfig,
        resolver: PolicyResolver,
        rules: EncryptRules,
        limits: Limits,
        home: Option<&std::path::Path>,
    ) -> Result<FilterContext, String> {
        let hostname = config
            .hostname
            .clone()
            .unwrap_or_else(|| "localhost".into());
        let secret = config
            .mark_secret_file
            .clone()
            .or_else(|| home.map(|h| h.join("filter-mark.key")))
            .ok_or("[filter] needs mark_secret_file, or a home directory for it")?;
        let mark = MarkKey::load_or_create(&secret)
            .map_err(|e| format!("mark secret {}: {e}", secret.display()))?;
        Ok(FilterContext {
            hostname: hostname.clone(),
            resolver,
            rules,
            local_domains: config
                .local_domains
                .iter()
                .map(|d| d.trim_end_matches('.').to_ascii_lowercase())
                .collect(),
            keys: KeyDirectory::new(&config.keys_dir, config.delimiter()),
            mark,
            strong_inbound: config.strong_inbound,
            hide_subject: config.hide_subject,
            reinject: UpstreamTarget {
                address: config.reinject.clone(),
                tls: crate::upstream::UpstreamTls::None,
                tls_config: Arc::new(
                    crate::upstream::client_config(None, &[]).map_err(|e| e.to_string())?,
                ),
                timeout: Duration::from_secs(limits.upstream_timeout_secs),
                hello_name: hostname,
            },
            peers: config.allowed_peers(),
            in_flight: InFlight::new(limits.max_bytes_in_flight),
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
        })
    }
}

/// A bound filter listener.
pub enum FilterListener {
    Unix(tokio::net::UnixListener),
    Tcp(tokio::net::TcpListener),
}

impl FilterListener {
    /// Binds `[filter] listen`: a Unix socket gets its mode and group (a stale socket file is
    /// replaced), a TCP address must be loopback.
    pub fn bind(config: &FilterConfig) -> Result<FilterListener, String> {
        match &config.listen {
            FilterListen::Tcp(addr) => crate::listen::bind_tcp(*addr)
                .map(FilterListener::Tcp)
                .map_err(|e| format!("{addr}: {e}")),
            FilterListen::Unix(path) => {
                let shown = path.display();
                if let Ok(meta) = std::fs::symlink_metadata(path) {
                    use std::os::unix::fs::FileTypeExt;
                    if !meta.file_type().is_socket() {
                        return Err(format!("{shown} exists and is not a socket"));
                    }
                    std::fs::remove_file(path).map_err(|e| format!("{shown}: {e}"))?;
                }
                let listener =
                    tokio::net::UnixListener::bind(path).map_err(|e| format!("{shown}: {e}"))?;
                use std::os::unix::fs::PermissionsExt;
                let mode = config.socket_mode()?;
                std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| format!("{shown}: {e}"))?;
                if let Some(group) = &config.socket_group {
                    let gid = group_id(group)?;
                    std::os::unix::fs::chown(path, None, Some(gid))
                        .map_err(|e| format!("{shown}: chown to group {group}: {e}"))?;
                }
                Ok(FilterListener::Unix(listener))
            }
        }
    }
}

/// The numeric ID of a group, from /etc/group (or a number as it is).
fn group_id(name: &str) -> Result<u32, String> {
    if let Ok(n) = name.parse() {
        return Ok(n);
    }
    let groups = std::fs::read_to_string("/etc/group").map_err(|e| format!("/etc/group: {e}"))?;
    groups
        .lines()
        .filter_map(|l| {
            let mut f = l.split(':');
            let n = f.next()?;
            let gid = f.nth(1)?.parse().ok()?;
            (n == name).then_some(gid)
        })
        .next()
        .ok_or_else(|| format!("no group named {name}"))
}

/// Serves the filter until `shutdown`; sessions finish the transaction they are in.
pub async fn run_listener(
    listener: FilterListener,
    ctx: Arc<FilterContext>,
    shutdown: watch::Receiver<bool>,
) {
    let grace = Duration::from_secs(ctx.limits.shutdown_grace_secs);
    let connections = ctx.connections.clone();
    let idle = Duration::from_secs(ctx.limits.idle_timeout_secs);
    match listener {
        FilterListener::Unix(l) => {
            crate::listen::accept_loop(l, connections, shutdown, grace, move |s, (), _, stop| {
                let ctx = ctx.clone();
                async move {
                    let conn = Connection::new(Box::new(s), idle, false);
                    // Only processes allowed by the socket's mode reach it: Postfix.
                    session::FilterSession::new(conn, ctx, true, stop).run().await
                }
            })
            .await
        }
        FilterListener::Tcp(l) => {
            crate::listen::accept_loop(l, connections, shutdown, grace, move |s, peer, _, stop| {
                let ctx = ctx.clone();
                async move {
                    let mut conn = Connection::new(Box::new(s), idle, false);
                    if !ctx.peers.contains(&peer.ip()) {
                        tracing::warn!(%peer, "filter connection from a peer not in [filter] peers; refused");
                        let r = crate::smtp::reply::Reply::new(554, "5.7.1", "Not allowed");
                        let _ = conn.write(&r.to_wire()).await;
                        return;
                    }
                    session::FilterSession::new(conn, ctx, true, stop).run().await
                }
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[tokio::test]
    async fn a_tcp_peer_not_in_the_allow_list_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let config: FilterConfig = toml::from_str(&format!(
            "listen = \"127.0.0.1:0\"\npeers = [\"127.0.0.2\"]\nreinject = \"127.0.0.1:9\"\nlocal_domains = [\"example.test\"]\nkeys_dir = \"{}\"\n",
            dir.path().display()
        ))
        .unwrap();
        let resolver = PolicyResolver::new(&Default::default()).unwrap();
        let ctx = FilterContext::new(
            &config,
            resolver,
            EncryptRules::default(),
            Limits::default(),
            Some(dir.path()),
        )
        .unwrap();
        let FilterListener::Tcp(listener) = FilterListener::bind(&config).unwrap() else {
            panic!("a TCP listener");
        };
        let addr = listener.local_addr().unwrap();
        let (_stop, shutdown) = watch::channel(false);
        tokio::spawn(run_listener(
            FilterListener::Tcp(listener),
            Arc::new(ctx),
            shutdown,
        ));
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("554 5.7.1"), "{answer}");
    }
}
