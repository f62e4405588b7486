//! The decrypted view of a message: the bytes the client is shown, and everything IMAP derives
//! from them (BODYSTRUCTURE, BODY, ENVELOPE, sections), computed from those same bytes so
//! that they always agree. A view is deterministic: the same ciphertext and keys give the same
//! bytes.
//!
//! - [`compose`] decrypts and assembles the view (protected headers, result header);
//! - [`mime`] finds the parts; [`structure`] describes them as Dovecot does;
//! - [`ViewCache`] keeps recent views in memory.

pub mod address;
pub mod compose;
pub mod mime;
pub mod structure;

use crate::crypto::decrypt::DecryptionKeys;
use imap_codec::imap_types::fetch::{Part, Section};
use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use zeroize::Zeroizing;

/// How a mapped session is shown a message as the server stores it (IMAP and POP3 alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Treatment {
    /// Not encrypted: shown as stored.
    AsStored,
    /// Encrypted: shown as its view ([`View::build`]).
    Decrypt,
    /// Not encrypted, yet carrying a `Meshmail-Result` field of its own (a sender's forgery):
    /// shown without it ([`compose::without_result_fields`]).
    StripForgedResult,
}

impl Treatment {
    /// The treatment the message whose header this is gets.
    pub fn of(header: &mime::Entity) -> Treatment {
        if header.is_encrypted() {
            Treatment::Decrypt
        } else if header.field(compose::RESULT_HEADER).is_some() {
            Treatment::StripForgedResult
        } else {
            Treatment::AsStored
        }
    }
}

/// Which message a view belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ViewKey {
    pub user: String,
    pub mailbox: String,
    pub uidvalidity: u32,
    pub uid: u32,
}

/// A message as the client sees it. What IMAP derives from the bytes (the MIME tree,
/// BODYSTRUCTURE, BODY, ENVELOPE, search text) is computed on first use: a FETCH of the whole
/// message parses nothing, and [`View::warm`] computes on the blocking thread what a FETCH
/// will ask for.
pub struct View {
    /// The whole message; for a view read from the index without it, only its header.
    message: Zeroizing<Vec<u8>>,
    /// The whole message's size.
    size: usize,
    complete: bool,
    tree: OnceLock<mime::Entity>,
    bodystructure: OnceLock<Vec<u8>>,
    body: OnceLock<Vec<u8>>,
    envelope: OnceLock<Vec<u8>>,
    search: OnceLock<crate::imap::search::SearchText>,
}

impl View {
    /// Decrypts `raw` (the message as the server holds it) into its view. Permanent failures
    /// (not for this key, corrupt) give the server's message with a result header saying why.
    pub fn build(raw: &[u8], keys: &DecryptionKeys, max: usize) -> View {
        View::build_with(raw, keys, None, max)
    }

    /// [`View::build`] for a split account, with the store's partials for this message.
    pub fn build_with(
        raw: &[u8],
        keys: &DecryptionKeys,
        partials: Option<&crate::crypto::decrypt::Partials>,
        max: usize,
    ) -> View {
        let started = std::time::Instant::now();
        let view = View::from_message(compose::compose_with(raw, keys, partials, max));
        // The benchmark reads these for its decryption-time percentiles.
        tracing::debug!(
            micros = started.elapsed().as_micros() as u64,
            bytes = raw.len(),
            "view built"
        );
        view
    }

    /// The view of exactly these bytes.
    pub fn from_message(message: Zeroizing<Vec<u8>>) -> View {
        View {
            size: message.len(),
            complete: true,
            message,
            tree: OnceLock::new(),
            bodystructure: OnceLock::new(),
            body: OnceLock::new(),
            envelope: OnceLock::new(),
            search: OnceLock::new(),
        }
    }

    /// Computes now what a FETCH of these items will read, so that it is done on the
    /// calling (blocking) thread rather than while the answer is written.
    pub fn warm(&self, structure: bool, sections: bool) {
        if structure {
            let _ = (self.bodystructure(), self.body(), self.envelope());
        } else if sections {
            let _ = self.tree();
        }
    }

    fn tree(&self) -> &mime::Entity {
        self.tree.get_or_init(|| mime::parse(&self.message))
    }

    /// Decoded headers and body text for SEARCH (computed on first use).
    pub fn search_text(&self) -> &crate::imap::search::SearchText {
        self.search
            .get_or_init(|| crate::imap::search::SearchText::of(&self.message))
    }

    /// The search text is computed already (matching is then cheap).
    pub fn has_search_text(&self) -> bool {
        self.search.get().is_some()
    }

    /// The whole message (callers check [`Self::is_complete`] first).
    pub fn message(&self) -> &[u8] {
        &self.message
    }

    /// False for a view read from the index: it holds the header, the structure and the
    /// search text, not the body.
    pub fn is_complete(&self) -> bool {
        self.complete
    }

    /// RFC822.SIZE.
    pub fn size(&self) -> usize {
        self.size
    }

    /// What the persistent index keeps of this view.
    pub fn index_entry(&self) -> crate::imap::index::IndexEntry {
        crate::imap::index::IndexEntry {
            size: self.size,
            bodystructure: self.bodystructure().to_vec(),
            body: self.body().to_vec(),
            envelope: self.envelope().to_vec(),
            header: self.message[self.tree().header.clone()].to_vec(),
            message: (self.complete && self.size <= crate::imap::index::MESSAGE_KEPT)
                .then(|| self.message.clone()),
            // Not kept in the view: a cached view would grow after the cache weighed it.
            search: match self.search.get() {
                Some(text) => text.clone(),
                None => crate::imap::search::SearchText::of(&self.message),
            },
        }
    }

    /// A view from an index entry, without decrypting again: the whole view when the entry
    /// keeps the message, else enough for sizes, structure, envelope, header fields and
    /// SEARCH.
    pub fn from_index(entry: Arc<crate::imap::index::IndexEntry>) -> View {
        // The entry is usually the caller's alone (whole messages are not cached by the
        // index): its buffers move into the view instead of being copied.
        let entry = Arc::try_unwrap(entry).unwrap_or_else(|shared| (*shared).clone());
        let (message, complete) = match entry.message {
            Some(m) if m.len() == entry.size => (m, true),
            _ => (Zeroizing::new(entry.header), false),
        };
        View {
            message,
            size: entry.size,
            complete,
            tree: OnceLock::new(),
            bodystructure: OnceLock::from(entry.bodystructure),
            body: OnceLock::from(entry.body),
            envelope: OnceLock::from(entry.envelope),
            search: OnceLock::from(entry.search),
        }
    }

    pub fn bodystructure(&self) -> &[u8] {
        self.bodystructure
            .get_or_init(|| structure::bodystructure(&self.message, self.tree(), true))
    }

    pub fn body(&self) -> &[u8] {
        self.body
            .get_or_init(|| structure::bodystructure(&self.message, self.tree(), false))
    }

    pub fn envelope(&self) -> &[u8] {
        self.envelope
            .get_or_init(|| structure::envelope(&self.tree().fields))
    }

    /// Bytes held, for the cache's weight.
    pub fn weight(&self) -> usize {
        // Derived data is at most about the message again (tree, structure), plus the
        // search text once computed.
        let search = self.search.get().map(|s| s.body.len()).unwrap_or(0);
        self.message.len() * 2 + search + 1024
    }

    /// The bytes of a section (`None`: the whole message). A section that does not exist is
    /// empty, as Dovecot answers it.
    pub fn section(&self, section: Option<&Section>) -> Cow<'_, [u8]> {
        let m = &self.message[..];
        let Some(section) = section else {
            return Cow::Borrowed(m);
        };
        match section {
            Section::Part(part) => match self.entity_for_part(part) {
                // A message/rfc822 part is the whole encapsulated message.
                Some(e) => match &e.kind {
                    mime::Kind::Message(inner) => {
                        Cow::Borrowed(&m[inner.header.start..inner.body.end])
                    }
                    _ => Cow::Borrowed(&m[e.body.clone()]),
                },
                None => Cow::Borrowed(&[]),
            },
            Section::Mime(part) => match self.part(part) {
                Some(e) => Cow::Borrowed(&m[e.header.clone()]),
                None => Cow::Borrowed(&[]),
            },
            Section::Header(part) => match self.message_entity(part.as_ref()) {
                Some(e) => Cow::Borrowed(&m[e.header.clone()]),
                None => Cow::Borrowed(&[]),
            },
            Section::Text(part) => match self.message_entity(part.as_ref()) {
                Some(e) => Cow::Borrowed(&m[e.body.clone()]),
                None => Cow::Borrowed(&[]),
            },
            Section::HeaderFields(part, names) | Section::HeaderFieldsNot(part, names) => {
                let not = matches!(section, Section::HeaderFieldsNot(..));
                match self.message_entity(part.as_ref()) {
                    Some(e) => {
                        let names: Vec<&[u8]> = names.as_ref().iter().map(|n| n.as_ref()).collect();
                        Cow::Owned(structure::header_fields(&m[e.header.clone()], &names, not))
                    }
                    None => Cow::Borrowed(&[]),
                }
            }
        }
    }

    /// The entity a part number names: `1.2` is the second part of the first part; the
    /// parts of a message/rfc822 part are those of its encapsulated message.
    fn part(&self, part: &Part) -> Option<&mime::Entity> {
        let mut current = self.tree();
        // A non-multipart entity answers to one `.1` (itself), once: the top-level message's
        // part 1 is its body, and `1.1` of a leaf inside a multipart is that leaf (Dovecot).
        let mut may_self = true;
        for (depth, n) in part.0.as_ref().iter().enumerate() {
            let index = n.get() as usize - 1;
            // Step into an encapsulated message first; but the top level's part 1 is its own
            // body even when that body is a message (RFC 3501 §6.4.5; imaptest's
            // fetch-body-message-rfc822 checks it).
            if let (mime::Kind::Message(inner), true) = (&current.kind, depth > 0) {
                current = inner;
                may_self = true;
            }
            current = match &current.kind {
                mime::Kind::Multipart(children) => {
                    may_self = true;
                    children.get(index)?
                }
                _ if index == 0 && may_self => {
                    may_self = false;
                    current
                }
                _ => return None,
            };
        }
        Some(current)
    }

    /// Like [`Self::part`], for `BODY[n]`: a top-level non-multipart message's part 1 is its
    /// body.
    fn entity_for_part(&self, part: &Part) -> Option<&mime::Entity> {
        self.part(part)
    }

    /// The message a HEADER/TEXT section refers to: the top level, or the message
    /// encapsulated in a message/rfc822 part.
    fn message_entity(&self, part: Option<&Part>) -> Option<&mime::Entity> {
        match part {
            None => Some(self.tree()),
            Some(p) => match &self.part(p)?.kind {
                mime::Kind::Message(inner) => Some(inner),
                _ => None,
            },
        }
    }
}

/// Recently decrypted views, bounded in bytes, and the views being built right now. Views
/// hold plaintext: they are zeroized when evicted and never written to disk.
#[derive(Clone)]
pub struct ViewCache {
    cache: moka::sync::Cache<ViewKey, Arc<View>>,
    /// Views being built: whoever asks for one meanwhile waits for it instead of decrypting
    /// the same message again (two sessions, or a session and the indexer).
    building: Arc<dashmap::DashMap<ViewKey, tokio::sync::watch::Receiver<Option<Arc<View>>>>>,
}

/// What [`ViewCache::claim`] found.
pub enum Claim {
    /// The view is cached.
    Ready(Arc<View>),
    /// Another task builds it: wait with [`wait_for`].
    Wait(tokio::sync::watch::Receiver<Option<Arc<View>>>),
    /// The caller builds it, and hands it to those waiting with [`Building::finish`].
    Build(Building),
}

/// The right to build one view; waiters are released when it finishes or is dropped.
pub struct Building {
    key: ViewKey,
    tx: tokio::sync::watch::Sender<Option<Arc<View>>>,
    building: Arc<dashmap::DashMap<ViewKey, tokio::sync::watch::Receiver<Option<Arc<View>>>>>,
}

impl Building {
    /// Hands the view to everyone waiting for it, when it is whole; a view from the index
    /// without its body is not what a waiter may need: they build their own.
    pub fn finish(self, view: Arc<View>) {
        if view.is_complete() {
            let _ = self.tx.send(Some(view));
        }
    }
}

impl Drop for Building {
    fn drop(&mut self) {
        self.building.remove(&self.key);
    }
}

/// The view another task is building; `None` when it gave up (the caller builds it then).
pub async fn wait_for(
    mut rx: tokio::sync::watch::Receiver<Option<Arc<View>>>,
) -> Option<Arc<View>> {
    let view = rx.wait_for(|v| v.is_some()).await.ok()?.clone();
    view
}

impl ViewCache {
    pub fn new(max_bytes: u64) -> ViewCache {
        ViewCache {
            cache: moka::sync::Cache::builder()
                .max_capacity(max_bytes)
                .weigher(|_, v: &Arc<View>| v.weight().try_into().unwrap_or(u32::MAX))
                .build(),
            building: Arc::new(dashmap::DashMap::new()),
        }
    }

    pub fn get(&self, key: &ViewKey) -> Option<Arc<View>> {
        self.cache.get(key)
    }

    /// Caches a whole view (one read from the index without its body is never cached: a
    /// later FETCH of the body would be answered from the header alone).
    pub fn insert(&self, key: ViewKey, view: Arc<View>) {
        if view.is_complete() {
            self.cache.insert(key, view);
        }
    }

    /// The cached view, the one being built, or the right to build it.
    pub fn claim(&self, key: &ViewKey) -> Claim {
        if let Some(v) = self.cache.get(key) {
            return Claim::Ready(v);
        }
        match self.building.entry(key.clone()) {
            dashmap::Entry::Occupied(e) => Claim::Wait(e.get().clone()),
            dashmap::Entry::Vacant(e) => {
                let (tx, rx) = tokio::sync::watch::channel(None);
                e.insert(rx);
                Claim::Build(Building {
                    key: key.clone(),
                    tx,
                    building: self.building.clone(),
                })
            }
        }
    }
}

/// The view helpers need an unlocked account.
pub type Keys = Arc<DecryptionKeys>;

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::imap_types::core::Vec1;
    use proptest::prelude::*;
    use std::num::NonZeroU32;

    #[tokio::test]
    async fn only_whole_views_are_cached_or_handed_to_waiters() {
        let cache = ViewCache::new(1 << 20);
        let key = ViewKey {
            user: "alice".into(),
            mailbox: "INBOX".into(),
            uidvalidity: 1,
            uid: 7,
        };
        let whole = Arc::new(View::from_message(Zeroizing::new(
            b"Subject: s\r\n\r\nthe body\r\n".to_vec(),
        )));
        let header_only = Arc::new(View::from_index(Arc::new(crate::imap::index::IndexEntry {
            message: None,
            ..whole.index_entry()
        })));
        assert!(!header_only.is_complete());
        // A session that found only the header in the index does not hand it to one that
        // waits for the body, nor cache it.
        let Claim::Build(b) = cache.claim(&key) else {
            panic!("the first claim builds")
        };
        let Claim::Wait(rx) = cache.claim(&key) else {
            panic!("the second waits")
        };
        b.finish(header_only.clone());
        assert!(wait_for(rx).await.is_none(), "the waiter builds its own");
        cache.insert(key.clone(), header_only);
        assert!(cache.get(&key).is_none());
        let Claim::Build(b) = cache.claim(&key) else {
            panic!("nothing cached: build")
        };
        let Claim::Wait(rx) = cache.claim(&key) else {
            panic!("the second waits")
        };
        b.finish(whole.clone());
        assert!(wait_for(rx)
            .await
            .is_some_and(|v| v.message() == whole.message()));
        cache.insert(key.clone(), whole);
        assert!(matches!(cache.claim(&key), Claim::Ready(_)));
    }

    fn sections() -> Vec<Option<Section<'static>>> {
        let part = |v: &[u32]| {
            Part(
                Vec1::try_from(
                    v.iter()
                        .filter_map(|&n| NonZeroU32::new(n))
                        .collect::<Vec<_>>(),
                )
                .expect("non-empty"),
            )
        };
        vec![
            None,
            Some(Section::Header(None)),
            Some(Section::Text(None)),
            Some(Section::Part(part(&[1]))),
            Some(Section::Part(part(&[2, 1]))),
            Some(Section::Part(part(&[1, 1, 1]))),
            Some(Section::Mime(part(&[2]))),
            Some(Section::Header(Some(part(&[2])))),
            Some(Section::Text(Some(part(&[3, 1])))),
        ]
    }

    /// Messages shaped like MIME, with the pieces that make parsers trip.
    fn mime_like() -> impl Strategy<Value = Vec<u8>> {
        let piece = prop_oneof![
            Just(b"Content-Type: multipart/mixed; boundary=b\r\n".to_vec()),
            Just(b"Content-Type: message/rfc822\r\n".to_vec()),
            Just(b"Content-Type: text/plain; charset*0*=utf-8''%E2; charset*1=x\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"--b\r\n".to_vec()),
            Just(b"--b--\r\n".to_vec()),
            Just(b"From: \"a\\\" (b) <c@d>, g: e@f;\r\n".to_vec()),
            Just(b" folded\r\n".to_vec()),
            Just(b"\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..40),
        ];
        proptest::collection::vec(piece, 0..40).prop_map(|v| v.concat())
    }

    proptest! {
        #[test]
        fn any_bytes_give_a_view_without_panicking(m in prop_oneof![mime_like(), proptest::collection::vec(any::<u8>(), 0..400)]) {
            let view = View::from_message(Zeroizing::new(m.clone()));
            prop_assert_eq!(view.size(), m.len());
            // Balanced parentheses outside strings: a client can parse what is written.
            prop_assert!(view.bodystructure().starts_with(b"(") && view.bodystructure().ends_with(b")"));
            for s in sections() {
                let bytes = view.section(s.as_ref());
                prop_assert!(bytes.len() <= m.len() + 2);
            }
            let _ = view.search_text();
        }
    }
}
