//! The IMAP proxy: Thunderbird (or any client) at localhost, the provider's IMAP server
//! upstream. Every byte is relayed as it came (commands framed by imap-codec's fragmentizer,
//! responses by [`frame`]), except what meshmail must change for a session logged in as a
//! mapped account:
//!
//! - FETCH responses of encrypted messages are answered from the decrypted view ([`view`],
//!   [`fetch`]), with ciphertext fetched by UID on a connection meshmail owns ([`owned`]);
//! - APPENDs are encrypted to the account's own key ([`append`]); SEARCH is evaluated over the
//!   decrypted messages too ([`search`]); views are indexed on disk ([`index`]), new mail as it
//!   arrives ([`indexer`]);
//! - capabilities are cut to what the proxy handles ([`caps`]).
//!
//! The session itself (`session`) is a sans-I/O core with typed states, its own tags upstream
//! and the account bound once from the server's answer to the login; see its module docs.
//! Sessions of other logins are relayed untouched and never reach a key, view, cache or index.

pub mod append;
pub mod caps;
pub mod fetch;
pub mod frame;
pub mod index;
pub mod indexer;
pub mod owned;
pub(crate) mod raw;
mod recrypt_fetch;
#[doc(hidden)]
pub use recrypt_fetch::fuzz_read as fuzz_recrypt_read;
pub mod search;
mod session;
/// Entry points for the fuzz targets (`integration/fuzz`).
#[doc(hidden)]
pub use session::fuzz;
pub mod slots;
pub mod store_client;
pub mod upstream;
pub mod view;

use crate::config::Limits;
use crate::crypto::decrypt::DecryptionKeys;
use crate::upstream::UpstreamTarget;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A mapped account as the IMAP proxy sees it.
pub struct ImapAccount {
    pub address: String,
    /// `None` while the key store is locked: encrypted messages get `NO [UNAVAILABLE]`.
    pub keys: Option<Arc<DecryptionKeys>>,
    /// The persistent index of decrypted messages (`None` while locked).
    pub index: Option<Arc<index::Index>>,
    /// meshmail's own connection for the account, shared by its sessions.
    pub owned: owned::SharedConnection,
    /// The background indexer (started by the account's first session).
    pub indexer: indexer::AccountIndexer,
    /// This proxy is a device of a split account (its name): messages open only with the
    /// partials its store gives with each one.
    pub device: Option<String>,
    /// A split account's device signs what its clients APPEND with its own signing subkey of
    /// the account (the account's primary key is not on the device).
    pub device_signer: Option<Arc<sequoia_openpgp::Cert>>,
}

/// What every IMAP session shares.
pub struct ImapContext {
    pub upstream: UpstreamTarget,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Upstream login → account.
    pub accounts: HashMap<String, Arc<ImapAccount>>,
    pub limits: Limits,
    pub connections: Arc<tokio::sync::Semaphore>,
    pub views: view::ViewCache,
    /// Mailboxes whose APPENDs are stored as the client sent them.
    pub append_plaintext: Vec<String>,
    /// What the background indexers watch.
    pub indexer: indexer::IndexerSettings,
    /// The store role: this proxy stands in front of the mail store for split accounts'
    /// devices (no account is mapped then).
    pub store: Option<Arc<crate::store::role::StoreRole>>,
}

/// Accepts IMAP clients until shutdown.
pub async fn run_listener(
    listener: TcpListener,
    ctx: Arc<ImapContext>,
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
