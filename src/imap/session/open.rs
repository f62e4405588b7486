//! Where a view comes from, cheapest first: the in-memory cache, the persistent index (when
//! the body is not needed), else the ciphertext (given, or fetched on meshmail's connection)
//! decrypted on a blocking thread (one decryption per core at a time), then cached and
//! indexed (the index builds its record when decryption is idle).

use super::state::Mailbox;
use crate::crypto::decrypt::DecryptionKeys;
use crate::imap::fetch::Warm;
use crate::imap::index::Index;
use crate::imap::owned::{Credentials, FetchError, OwnedConnection};
use crate::imap::view::{wait_for, Claim, View, ViewCache, ViewKey};
use std::sync::Arc;

/// What the client's FETCH brought of a message: its ciphertext (a FETCH of whole messages)
/// and, at a device, the store's `X-MESH-RECRYPT` item that came with it.
#[derive(Default)]
pub(super) struct Brought {
    pub ciphertext: Option<Vec<u8>>,
    pub recrypt: Option<String>,
}

/// The session's last complete view.
pub(super) type Pinned = Arc<std::sync::Mutex<Option<(ViewKey, Arc<View>)>>>;

/// Everything needed to open the views of one selected mailbox.
#[derive(Clone)]
pub(super) struct ViewSource {
    pub views: ViewCache,
    pub index: Option<Arc<Index>>,
    pub keys: Option<Arc<DecryptionKeys>>,
    /// How meshmail's own connection logs in (`None`: it cannot).
    pub credentials: Option<Arc<Credentials>>,
    pub user: String,
    pub selected: Mailbox,
    pub max: usize,
    /// The session's last complete view (one per session at most).
    pub pinned: Pinned,
    /// A split account's device (its name): every message is fetched with its partials.
    pub device: Option<String>,
}

impl ViewSource {
    fn key(&self, uid: u32) -> ViewKey {
        ViewKey {
            user: self.user.clone(),
            mailbox: self.selected.name.clone(),
            uidvalidity: self.selected.uidvalidity.unwrap_or(0),
            uid,
        }
    }

    /// The view from the index, when the mailbox's UIDVALIDITY is known; `complete`: only
    /// when the index keeps the whole message.
    pub fn indexed(&self, uid: u32, complete: bool, warm: Warm) -> Option<View> {
        let validity = self.selected.uidvalidity?;
        let index = self.index.as_ref()?;
        index.prepare(&self.selected.name, validity);
        let entry = index.get(&self.selected.name, validity, uid, complete)?;
        let view = View::from_index(entry);
        view.warm(warm.structure, warm.sections);
        (view.is_complete() || !complete).then_some(view)
    }

    /// The view of `uid`; `complete` when the body is needed. `forged`: a message in
    /// plaintext that carries a result header of its own, shown without it (no decryption).
    pub async fn open(
        &self,
        owned: Option<&OwnedConnection>,
        uid: u32,
        brought: Brought,
        complete: bool,
        forged: bool,
        warm: Warm,
    ) -> Result<Arc<View>, OpenFailure> {
        let _opening = crate::imap::slots::Opening::start();
        let key = self.key(uid);
        if let Some(v) = self.pinned(&key) {
            return Ok(v);
        }
        // Without a UIDVALIDITY a UID names no message for sure: no cache, nothing shared.
        let shared = self.selected.uidvalidity.is_some();
        if let Some(v) = shared.then(|| self.views.get(&key)).flatten() {
            return Ok(v);
        }
        if let Some(v) = self.indexed(uid, complete, warm) {
            return Ok(Arc::new(v));
        }
        let building = if shared {
            loop {
                match self.views.claim(&key) {
                    Claim::Ready(v) => return Ok(v),
                    Claim::Wait(rx) => {
                        // Another session or the indexer decrypts it right now.
                        if let Some(v) = wait_for(rx).await {
                            self.keep(key, &v);
                            return Ok(v);
                        }
                    }
                    Claim::Build(b) => {
                        // The indexer may have written it between the look above and the
                        // claim. (Only a whole view is handed to those waiting.)
                        if let Some(v) = self.indexed(uid, complete, warm) {
                            let v = Arc::new(v);
                            b.finish(v.clone());
                            return Ok(v);
                        }
                        break Some(b);
                    }
                }
            }
        } else {
            None
        };
        let view = self.build(owned, uid, brought, forged, warm).await?;
        if let Some(b) = building {
            self.keep(key, &view);
            b.finish(view.clone());
        }
        Ok(view)
    }

    /// Fetches (unless given) and decrypts the message, and queues its index record.
    async fn build(
        &self,
        owned: Option<&OwnedConnection>,
        uid: u32,
        brought: Brought,
        forged: bool,
        warm: Warm,
    ) -> Result<Arc<View>, OpenFailure> {
        let keys = self
            .keys
            .clone()
            .ok_or(OpenFailure::Temporary("the key store is locked".into()))?;
        if let Some(device) = &self.device {
            if !forged {
                return self
                    .build_split(owned, uid, keys, device, warm, brought)
                    .await;
            }
        }
        let raw = match brought.ciphertext {
            Some(c) => c,
            None => {
                let owned = owned.ok_or(OpenFailure::Temporary(
                    "meshmail cannot log in again with this login method".into(),
                ))?;
                match owned
                    .fetch(&self.selected.name, self.selected.uidvalidity, uid)
                    .await
                {
                    Ok(raw) => raw,
                    Err(FetchError::Gone(_)) => return Err(OpenFailure::Gone),
                    Err(e) => return Err(OpenFailure::Temporary(e.to_string())),
                }
            }
        };
        let max = self.max;
        let index = self.index.clone();
        let mailbox = self.selected.name.clone();
        let validity = self.selected.uidvalidity;
        let slot = crate::imap::slots::decryption_slot().await;
        tokio::task::spawn_blocking(move || {
            let view = Arc::new(if forged {
                View::from_message(crate::imap::view::compose::without_result_fields(&raw))
            } else {
                View::build(&raw, &keys, max)
            });
            view.warm(warm.structure, warm.sections);
            drop(slot);
            // Tests count decryptions per message by these lines.
            tracing::debug!(mailbox = %mailbox, uid, by = "session", "decrypted");
            if let (Some(index), Some(validity)) = (index, validity) {
                let v = view.clone();
                index.insert_later(&mailbox, validity, uid, v.size(), move || v.index_entry());
            }
            view
        })
        .await
        .map_err(|_| OpenFailure::Temporary("decryption stopped".into()))
    }

    /// A split account's device: the message and the store's partials for it, as the
    /// client's FETCH brought them, else fetched together on meshmail's own connection
    /// (either way the store computed the partials from the bytes it sent with them).
    /// Anything but partials is temporary for the client: never a failure view it would keep.
    async fn build_split(
        &self,
        owned: Option<&OwnedConnection>,
        uid: u32,
        keys: Arc<DecryptionKeys>,
        device: &str,
        warm: Warm,
        brought: Brought,
    ) -> Result<Arc<View>, OpenFailure> {
        use crate::store::item::Answer;
        let given = match brought {
            Brought {
                ciphertext: Some(raw),
                recrypt: Some(item),
            } => crate::store::item::parse(&item, device).map(|answer| (raw, answer)),
            _ => None,
        };
        // Tests tell the two apart by this word in the decryption line.
        let partials_from = if given.is_some() { "fetch" } else { "own" };
        let (raw, answer) = match given {
            Some(found) => found,
            None => {
                let owned = owned.ok_or(OpenFailure::Temporary(
                    "meshmail cannot log in again with this login method".into(),
                ))?;
                match owned
                    .fetch_recrypt(&self.selected.name, self.selected.uidvalidity, uid, device)
                    .await
                {
                    Ok(found) => found,
                    Err(FetchError::Gone(_)) => return Err(OpenFailure::Gone),
                    Err(e) => return Err(OpenFailure::Temporary(e.to_string())),
                }
            }
        };
        let partials = match answer {
            Answer::Partials(p) if !p.is_empty() => p,
            Answer::Partials(_) | Answer::NotForAccount => {
                if !crate::imap::view::mime::parse(&raw).is_encrypted() {
                    // Plaintext needs no partial: shown as the server holds it.
                    return Ok(Arc::new(View::from_message(zeroize::Zeroizing::new(raw))));
                }
                return Err(OpenFailure::Temporary(
                    "the store has no partial for this message (not encrypted to this account)"
                        .into(),
                ));
            }
            Answer::RefusedPoint => {
                return Err(OpenFailure::Temporary(
                    "the store refused this message's key (not a usable curve point)".into(),
                ))
            }
            Answer::Revoked => {
                tracing::warn!(device, "the store says this device is revoked");
                return Err(OpenFailure::Temporary(
                    "this device has no share at the store (revoked?)".into(),
                ));
            }
        };
        let max = self.max;
        let index = self.index.clone();
        let mailbox = self.selected.name.clone();
        let validity = self.selected.uidvalidity;
        let slot = crate::imap::slots::decryption_slot().await;
        let built = tokio::task::spawn_blocking(move || {
            if !keys.split_opens(&crate::store::item::pkesks(&raw), &partials) {
                return None;
            }
            let view = Arc::new(View::build_with(&raw, &keys, Some(&partials), max));
            view.warm(warm.structure, warm.sections);
            drop(slot);
            tracing::debug!(
                mailbox = %mailbox,
                uid,
                by = "session",
                split = true,
                partials_from,
                "decrypted"
            );
            if let (Some(index), Some(validity)) = (index, validity) {
                let v = view.clone();
                index.insert_later(&mailbox, validity, uid, v.size(), move || v.index_entry());
            }
            Some(view)
        })
        .await
        .map_err(|_| OpenFailure::Temporary("decryption stopped".into()))?;
        built.ok_or_else(|| {
            tracing::warn!(
                device,
                uid,
                "the store's partials do not open the message with this device's share"
            );
            OpenFailure::Temporary(
                "the store's answer does not fit this device's share (enrolled again elsewhere?)"
                    .into(),
            )
        })
    }

    /// Caches a view, and keeps it as the session's last one: a view larger than the cache
    /// would be decrypted again for every partial read (Thunderbird reads in 64 KiB pieces).
    fn keep(&self, key: ViewKey, view: &Arc<View>) {
        if !view.is_complete() {
            return;
        }
        self.views.insert(key.clone(), view.clone());
        if let Ok(mut pinned) = self.pinned.lock() {
            *pinned = Some((key, view.clone()));
        }
    }

    /// The session's last complete view, when it is the one asked for.
    fn pinned(&self, key: &ViewKey) -> Option<Arc<View>> {
        let pinned = self.pinned.lock().ok()?;
        let (k, v) = pinned.as_ref()?;
        (k == key && self.selected.uidvalidity.is_some()).then(|| v.clone())
    }
}

/// Why a view could not be opened.
#[derive(Debug)]
pub enum OpenFailure {
    /// The message was expunged meanwhile: it is left out of the answer.
    Gone,
    /// Anything else: the client is told to try again later.
    Temporary(String),
}
