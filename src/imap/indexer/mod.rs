//! The background indexer: one per mapped account, while `serve` runs. On meshmail's own
//! connection it catches up with every watched mailbox from the last UID it looked at (its
//! checkpoint in the index), then waits in IDLE on the first of them (INBOX by default) and
//! looks at the others every poll interval. Each new encrypted message is decrypted and
//! indexed before any client asks, so a client's first read comes from the index.
//!
//! - Watched: the configured mailboxes (INBOX, Sent, Drafts by default) and, unless turned
//!   off, every mailbox a client session of the account selects.
//! - It logs in with the newest login of the account's sessions (meshmail keeps no password
//!   of its own): it starts with the first session and keeps running after the last ends. A
//!   login the server refuses is not tried again until a session brings a newer one.
//! - It yields to clients: decryption slots are taken only while no client waits for one
//!   ([`super::slots::background_slot`]), and a message a session is decrypting right now is
//!   left to that session (whose view is indexed), never decrypted twice ([`ViewCache::claim`]).
//! - Expunged messages lose their records at the next look at the mailbox: when the server
//!   has fewer messages than the last look saw plus the new ones, `UID SEARCH ALL` is compared
//!   with the index (a look that finds only new mail costs no search).
//!
//! The IMAP conversation of one look at a mailbox is in `sync`.

mod sync;

use crate::crypto::decrypt::DecryptionKeys;
use crate::imap::index::Index;
use crate::imap::owned::Credentials;
use crate::imap::view::ViewCache;
use crate::upstream::UpstreamTarget;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// What the indexer watches and how often it looks (`[imap]` in the configuration).
#[derive(Debug, Clone)]
pub struct IndexerSettings {
    pub enabled: bool,
    /// Watched always; the first is kept in IDLE.
    pub mailboxes: Vec<String>,
    /// Mailboxes a client selects are watched too.
    pub follow_selected: bool,
    /// How often the mailboxes not in IDLE are looked at.
    pub poll: Duration,
}

impl Default for IndexerSettings {
    fn default() -> Self {
        IndexerSettings {
            enabled: true,
            mailboxes: vec!["INBOX".into(), "Sent".into(), "Drafts".into()],
            follow_selected: true,
            poll: Duration::from_secs(60),
        }
    }
}

/// Everything the indexer of one account works with.
#[derive(Clone)]
pub struct IndexerContext {
    pub target: UpstreamTarget,
    pub views: ViewCache,
    pub index: Arc<Index>,
    pub keys: Arc<DecryptionKeys>,
    /// The account's upstream login (views are keyed by it, as the sessions key them).
    pub user: String,
    pub settings: IndexerSettings,
    /// Messages larger than this are left to the sessions.
    pub max_message: usize,
    /// A split account's device (its name): messages are fetched with the store's partials.
    pub device: Option<String>,
}

enum News {
    /// A session logged in anew (its login is the one to use).
    Login,
    /// A session selected this mailbox.
    Selected(String),
}

/// The account's indexer, once started.
#[derive(Default)]
pub struct AccountIndexer {
    running: Mutex<Option<Running>>,
}

struct Running {
    credentials: Arc<Mutex<Arc<Credentials>>>,
    news: mpsc::UnboundedSender<News>,
}

impl AccountIndexer {
    /// Starts the indexer with this login, or hands the running one the newer login.
    pub fn start(
        &self,
        ctx: IndexerContext,
        credentials: Arc<Credentials>,
        shutdown: watch::Receiver<bool>,
    ) {
        if !ctx.settings.enabled {
            return;
        }
        let Ok(mut running) = self.running.lock() else {
            return;
        };
        if let Some(r) = running.as_ref() {
            if !r.news.is_closed() {
                if let Ok(mut c) = r.credentials.lock() {
                    *c = credentials;
                }
                let _ = r.news.send(News::Login);
                return;
            }
        }
        let shared = Arc::new(Mutex::new(credentials));
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(sync::run(ctx, shared.clone(), rx, shutdown));
        *running = Some(Running {
            credentials: shared,
            news: tx,
        });
    }

    /// A session selected `mailbox`: watched from now on (when the settings say so).
    pub fn selected(&self, mailbox: &str) {
        if let Ok(running) = self.running.lock() {
            if let Some(r) = running.as_ref() {
                let _ = r.news.send(News::Selected(mailbox.to_owned()));
            }
        }
    }
}
