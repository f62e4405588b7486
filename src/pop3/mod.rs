//! The POP3 proxy, in the device role: a client (Thunderbird, fetchmail, a small device) at
//! localhost, the provider's POP3 server upstream. Commands and replies are relayed as they
//! came, except what meshmail must change for a session logged in as a mapped account: an
//! encrypted message is served as its decrypted view (the IMAP proxy's view, one code), and
//! `LIST`/`STAT` give the sizes `RETR` serves.
//!
//! - [`command`] and [`reply`]: the codec (client lines; status lines and multi-line bodies
//!   with dot-stuffing), kept apart from the session;
//! - `session`: a sans-I/O core with typed states (AUTHORIZATION → TRANSACTION → UPDATE) and
//!   the task that drives it; a login other than a mapped one is relayed byte for byte;
//! - [`upstream`]: connecting to the server (TLS, STLS);
//! - [`sizes`]: the served sizes remembered across sessions.

pub mod command;
pub mod reply;
mod session;
/// Entry points for the fuzz target (`integration/fuzz`).
#[doc(hidden)]
pub use session::fuzz;
pub mod sizes;
pub mod upstream;

use crate::config::Limits;
use crate::imap::ImapAccount;
use crate::upstream::UpstreamTarget;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A mapped account as the POP3 proxy sees it: the IMAP proxy's (keys, device) and its size
/// book.
pub struct Pop3Account {
    pub imap: Arc<ImapAccount>,
    /// `None` while the key store is locked.
    pub sizes: Option<Arc<sizes::SizeBook>>,
}

/// What every POP3 session shares.
pub struct Pop3Context {
    pub upstream: UpstreamTarget,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Upstream login → account.
    pub accounts: HashMap<String, Arc<Pop3Account>>,
    pub limits: Limits,
    pub connections: Arc<tokio::sync::Semaphore>,
    /// Decrypted views, shared with the IMAP proxy's sessions.
    pub views: crate::imap::view::ViewCache,
}

/// Accepts POP3 clients until shutdown.
pub async fn run_listener(
    listener: TcpListener,
    ctx: Arc<Pop3Context>,
    implicit_tls: bool,
    shutdown: watch::Receiver<bool>,
) {
    let connections = ctx.connections.clone();
    let grace = std::time::Duration::from_secs(ctx.limits.shutdown_grace_secs);
    crate::listen::accept_loop(
        listener,
        connections,
        shutdown,
        grace,
        move |tcp, peer, loopback, shutdown| {
            session::run(ctx.clone(), tcp, peer, loopback, implicit_tls, shutdown)
        },
    )
    .await
}
