//! The SMTP listeners: accept under a connection limit, TLS for the implicit-TLS port, one
//! task per session, each with its own upstream connection; stop accepting on shutdown.

use super::reply::Reply;
use super::session::io::Connection;
use super::session::{MappedAccount, Session};
use super::upstream::{Capabilities, Upstream};
use crate::config::{EncryptRules, Limits};
use crate::policy::PolicyResolver;
use crate::upstream::UpstreamTarget;
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{watch, Semaphore};

/// Encrypted copies are larger than the plaintext: base64/armor (4/3) plus headers and keys.
/// The SIZE meshmail offers is the upstream's divided by this.
pub const ENCRYPTION_GROWTH: f64 = 1.4;

/// Everything the sessions share.
pub struct SmtpContext {
    pub hostname: String,
    pub resolver: PolicyResolver,
    pub rules: EncryptRules,
    pub limits: Limits,
    pub upstream: UpstreamTarget,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Upstream logins mapped to accounts.
    pub accounts: HashMap<String, Arc<MappedAccount>>,
    pub sign: bool,
    pub in_flight: InFlight,
    pub connections: Arc<Semaphore>,
    /// Reports waiting for a later session (none without a home directory).
    pub spool: Option<Arc<super::spool::ReportSpool>>,
}

impl SmtpContext {
    /// The largest message a client may send: the configured limit, and the upstream's SIZE
    /// divided by the encryption growth.
    pub fn max_size(&self, caps: &Capabilities) -> usize {
        let upstream = caps
            .size
            .map(|s| (s as f64 / ENCRYPTION_GROWTH) as usize)
            .unwrap_or(usize::MAX);
        self.limits.max_message_size.min(upstream)
    }
}

/// A global bound on message bytes held in memory by all sessions.
#[derive(Clone)]
pub struct InFlight {
    used: Arc<AtomicUsize>,
    max: usize,
}

/// Bytes one session holds; given back on drop.
pub struct Held {
    used: Arc<AtomicUsize>,
    max: usize,
    held: usize,
}

impl InFlight {
    pub fn new(max: usize) -> InFlight {
        InFlight {
            used: Arc::new(AtomicUsize::new(0)),
            max,
        }
    }

    pub fn reserve(&self, bytes: usize) -> Held {
        let mut h = Held {
            used: self.used.clone(),
            max: self.max,
            held: 0,
        };
        h.grow_to(bytes);
        h
    }

    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

impl Held {
    /// Grows the reservation to `bytes`; false when that would pass the global bound.
    pub fn grow_to(&mut self, bytes: usize) -> bool {
        if bytes <= self.held {
            return true;
        }
        let more = bytes - self.held;
        let before = self.used.fetch_add(more, Ordering::AcqRel);
        if before + more > self.max {
            self.used.fetch_sub(more, Ordering::AcqRel);
            return false;
        }
        self.held = bytes;
        true
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.used.fetch_sub(self.held, Ordering::AcqRel);
    }
}

/// Accepts clients on `listener` until `shutdown` turns true.
pub async fn run_listener(
    listener: TcpListener,
    ctx: Arc<SmtpContext>,
    implicit_tls: bool,
    shutdown: watch::Receiver<bool>,
) {
    let connections = ctx.connections.clone();
    let grace = Duration::from_secs(ctx.limits.shutdown_grace_secs);
    crate::listen::accept_loop(
        listener,
        connections,
        shutdown,
        grace,
        move |tcp, peer, loopback, shutdown| {
            let ctx = ctx.clone();
            async move {
                let idle = Duration::from_secs(ctx.limits.idle_timeout_secs);
                let mut conn = if implicit_tls {
                    let Some(acceptor) = ctx.tls.clone() else {
                        return;
                    };
                    match tokio::time::timeout(idle, acceptor.accept(tcp)).await {
                        Ok(Ok(tls)) => Connection::new(Box::new(tls), idle, true),
                        _ => return,
                    }
                } else {
                    Connection::new(Box::new(tcp), idle, false)
                };
                let upstream = match Upstream::connect(&ctx.upstream).await {
                    Ok(u) => u,
                    Err(e) => {
                        tracing::warn!(peer = %peer, error = %e, "upstream unavailable");
                        let r = Reply::new(
                            421,
                            "4.4.0",
                            "The mail server is unavailable; try again later",
                        );
                        let _ = conn.write(&r.to_wire()).await;
                        return;
                    }
                };
                Session::new(conn, upstream, ctx, peer, loopback, shutdown)
                    .run()
                    .await;
            }
        },
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::InFlight;

    #[test]
    fn bytes_in_flight_are_bounded_and_given_back() {
        let budget = InFlight::new(100);
        let mut a = budget.reserve(60);
        assert!(a.grow_to(70));
        let mut b = budget.reserve(0);
        assert!(b.grow_to(30));
        assert!(!b.grow_to(31), "over the global bound");
        assert_eq!(budget.in_use(), 100);
        drop(a);
        assert_eq!(budget.in_use(), 30);
        assert!(b.grow_to(90));
        drop(b);
        assert_eq!(budget.in_use(), 0);
    }
}
