//! The persistent index of decrypted messages: per (mailbox, UIDVALIDITY, UID) the view's
//! size, BODYSTRUCTURE, BODY, ENVELOPE, header, search text and (up to a size) the whole view,
//! so that a header sync, a SEARCH or a first read of mail the indexer saw arrive needs no
//! decryption and no ciphertext from the server.
//!
//! At rest every record is sealed with AES-256-GCM under a key derived (HKDF-SHA256) from the
//! account's secret S/MIME key, and bound to its file (mailbox, UIDVALIDITY) and UID; files are
//! 0600 in a 0700 directory. A record that does not open (another key, damage) is forgotten:
//! the message is decrypted again and its record written anew. The file format, torn records
//! and compaction: `file`; the record bytes: `record`.
//!
//! Memory does not grow with the mailboxes: only where each record lies in its file is kept
//! (a few bytes per message); records are read back on demand and the most recent ones kept
//! in a cache bounded in bytes.
//!
//! Records of views a client session decrypted are built (search text) and written by the
//! index's own thread, when no decryption is running ([`super::slots`]); the background
//! indexer ([`super::indexer`]) writes its own at once. `flush` waits for the queue at
//! shutdown; a record lost to a crash only costs a decryption later.

mod file;
mod record;
mod status;

pub use status::{report, MailboxStatus};

use crate::imap::search::SearchText;
use aws_lc_rs::aead::{LessSafeKey, UnboundKey, AES_256_GCM};
use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};
use dashmap::DashMap;
use file::IndexFile;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use zeroize::Zeroizing;

/// What the index keeps of one decrypted message.
#[derive(Debug, Clone)]
pub struct IndexEntry {
    pub size: usize,
    pub bodystructure: Vec<u8>,
    pub body: Vec<u8>,
    pub envelope: Vec<u8>,
    /// The view's header section, blank line included.
    pub header: Vec<u8>,
    /// The whole view, for messages up to [`MESSAGE_KEPT`]: then reading the message needs
    /// neither the ciphertext nor a decryption.
    pub message: Option<Zeroizing<Vec<u8>>>,
    pub search: SearchText,
}

impl IndexEntry {
    /// Bytes held, for the cache's weight.
    pub fn weight(&self) -> usize {
        self.header.len()
            + self.message.as_ref().map_or(0, |m| m.len())
            + self.bodystructure.len()
            + self.body.len()
            + self.envelope.len()
            + self.search.body.len()
            + 256
    }
}

/// Views up to this size are kept whole in the index; larger ones keep their header,
/// structure and search text, and their body is decrypted when it is read.
pub const MESSAGE_KEPT: usize = 2 * 1024 * 1024;

/// A mailbox's index file keeps whole messages until it is this large (1 GiB).
const MAX_FILE_WITH_MESSAGES: u64 = 1 << 30;

/// How far the indexer has gone through a mailbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub mailbox: String,
    pub uidvalidity: u32,
    /// Every message up to this UID has been looked at (indexed, or not encrypted).
    pub scanned_to: u32,
    /// The server's UIDNEXT and message count when the indexer last looked.
    pub uidnext: u32,
    pub messages: u32,
    /// When (seconds since the epoch).
    pub at: u64,
}

/// Bytes of decrypted views waiting in the queue at most; beyond, records are built at once.
const MAX_QUEUED_BYTES: usize = 16 * 1024 * 1024;
/// How often the index's thread looks whether decryption has stopped.
const IDLE_POLL: Duration = Duration::from_millis(2);
/// How long decryption must have stopped before the index's thread builds records: a
/// client's FETCH of many messages keeps both cores to itself until it is answered.
const QUIET: Duration = Duration::from_millis(30);
/// Decoded records kept in memory, in bytes.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// One account's index.
pub struct Index {
    dir: PathBuf,
    key: LessSafeKey,
    mailboxes: DashMap<(String, u32), Arc<Mutex<IndexFile>>>,
    /// Recently read records, decoded.
    cache: moka::sync::Cache<EntryKey, Arc<IndexEntry>>,
    /// Records for the index's own thread to build and write (`None`: no thread, build at once).
    queue: Option<Sender<Job>>,
    queued_bytes: AtomicUsize,
    /// UIDs whose records wait in the queue: known already (their views were just built).
    queued: DashMap<(String, u32), std::collections::HashSet<u32>>,
}

type BuildEntry = Box<dyn FnOnce() -> IndexEntry + Send>;

enum Job {
    Insert {
        mailbox: String,
        uidvalidity: u32,
        uid: u32,
        bytes: usize,
        build: BuildEntry,
    },
    Flush(Sender<()>),
}

type EntryKey = (String, u32, u32);

/// The file stem of a mailbox's index: a hash of its name (names stay off the disk) and the
/// UIDVALIDITY.
fn stem(mailbox: &str, uidvalidity: u32) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, mailbox.as_bytes());
    format!(
        "{}-{uidvalidity}",
        data_encoding::HEXLOWER.encode(&digest.as_ref()[..12])
    )
}

impl Index {
    /// The index under `home`, sealed with a key derived from `secret`, with its own thread.
    pub fn open(home: &Path, secret: &[u8]) -> Option<Arc<Index>> {
        let index = Self::new(home, secret)?;
        Some(Arc::new_cyclic(|me: &Weak<Index>| {
            let (tx, rx) = std::sync::mpsc::channel();
            let me = me.clone();
            let started = std::thread::Builder::new()
                .name("imap-index".into())
                .spawn(move || run_queue(me, rx));
            Index {
                queue: started.is_ok().then_some(tx),
                ..index
            }
        }))
    }

    /// The index without a thread of its own (records are written at once): for tests.
    pub fn open_without_thread(home: &Path, secret: &[u8]) -> Option<Arc<Index>> {
        Self::new(home, secret).map(Arc::new)
    }

    fn new(home: &Path, secret: &[u8]) -> Option<Index> {
        let key = record_key(secret)?;
        let dir = home.join("imap-index");
        crate::keys::account::make_private_dir(&dir).ok()?;
        remove_old_formats(&dir);
        Some(Index {
            dir,
            key,
            mailboxes: DashMap::new(),
            cache: moka::sync::Cache::builder()
                .max_capacity(CACHE_BYTES)
                .weigher(|_: &EntryKey, e: &Arc<IndexEntry>| {
                    u32::try_from(e.weight()).unwrap_or(u32::MAX)
                })
                .build(),
            queue: None,
            queued_bytes: AtomicUsize::new(0),
            queued: DashMap::new(),
        })
    }

    /// Adds the entry `build` makes (from a view of `bytes` bytes), on the index's thread
    /// once no decryption is running; at once when the queue is full or there is no thread.
    pub fn insert_later(
        &self,
        mailbox: &str,
        uidvalidity: u32,
        uid: u32,
        bytes: usize,
        build: impl FnOnce() -> IndexEntry + Send + 'static,
    ) {
        if self.contains(mailbox, uidvalidity, uid) {
            return;
        }
        let queued = self.queued_bytes.fetch_add(bytes, Ordering::AcqRel);
        let job = Job::Insert {
            mailbox: mailbox.to_owned(),
            uidvalidity,
            uid,
            bytes,
            build: Box::new(build),
        };
        let refused = match &self.queue {
            Some(tx) if queued + bytes <= MAX_QUEUED_BYTES => {
                self.queued
                    .entry((mailbox.to_owned(), uidvalidity))
                    .or_default()
                    .insert(uid);
                tx.send(job).err().map(|e| e.0)
            }
            _ => Some(job),
        };
        if let Some(Job::Insert { build, .. }) = refused {
            self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            self.insert(mailbox, uidvalidity, uid, build());
            self.dequeued(mailbox, uidvalidity, uid);
        }
    }

    /// Waits (at most `timeout`) until every queued record is written. `false` on timeout.
    pub fn flush(&self, timeout: Duration) -> bool {
        let Some(tx) = &self.queue else {
            return true;
        };
        let (done, wait) = std::sync::mpsc::channel();
        if tx.send(Job::Flush(done)).is_err() {
            return true;
        }
        wait.recv_timeout(timeout).is_ok()
    }

    fn mailbox(&self, mailbox: &str, uidvalidity: u32) -> Arc<Mutex<IndexFile>> {
        let key = (mailbox.to_owned(), uidvalidity);
        if let Some(m) = self.mailboxes.get(&key) {
            return m.clone();
        }
        let stem = stem(mailbox, uidvalidity);
        let loaded = IndexFile::load(
            self.dir.join(format!("{stem}.idx3")),
            stem,
            &self.key,
            file::Mode::ReadWrite,
        );
        let loaded = Arc::new(Mutex::new(loaded));
        self.mailboxes.entry(key).or_insert(loaded).clone()
    }

    /// Reads the mailbox's record locations from disk unless they are in memory already (file
    /// I/O: on a runtime worker tokio is told the thread blocks). The session calls this
    /// before `get` and `uids`.
    pub fn prepare(&self, mailbox: &str, uidvalidity: u32) {
        if self
            .mailboxes
            .contains_key(&(mailbox.to_owned(), uidvalidity))
        {
            return;
        }
        blocking(|| {
            self.mailbox(mailbox, uidvalidity);
        });
    }

    /// True when the message has a record, or one waits in the queue.
    pub fn contains(&self, mailbox: &str, uidvalidity: u32, uid: u32) -> bool {
        self.is_queued(mailbox, uidvalidity, uid) || self.has_record(mailbox, uidvalidity, uid)
    }

    fn has_record(&self, mailbox: &str, uidvalidity: u32, uid: u32) -> bool {
        let m = self.mailbox(mailbox, uidvalidity);
        let contains = m.lock().is_ok_and(|g| g.contains(uid));
        contains
    }

    fn is_queued(&self, mailbox: &str, uidvalidity: u32, uid: u32) -> bool {
        self.queued
            .get(&(mailbox.to_owned(), uidvalidity))
            .is_some_and(|q| q.contains(&uid))
    }

    fn dequeued(&self, mailbox: &str, uidvalidity: u32, uid: u32) {
        let key = (mailbox.to_owned(), uidvalidity);
        if let Some(mut q) = self.queued.get_mut(&key) {
            q.remove(&uid);
        }
        self.queued.remove_if(&key, |_, q| q.is_empty());
    }

    /// The UIDs of messages meshmail knows to be encrypted in this mailbox: those with a
    /// record, and those whose record waits in the queue (their views were just built).
    pub fn known_uids(&self, mailbox: &str, uidvalidity: u32) -> Vec<u32> {
        // A session asks, on the reactor; a compaction may hold the file's lock a while.
        let mut uids = blocking(|| self.uids(mailbox, uidvalidity));
        if let Some(q) = self.queued.get(&(mailbox.to_owned(), uidvalidity)) {
            uids.extend(q.iter().copied());
        }
        uids
    }

    /// The message's record: from memory, else read from its file (a read and an AES-GCM
    /// open). `with_message`: the caller needs the whole message, which only the file holds
    /// (the cache keeps records without it, so that header syncs and searches are not pushed
    /// out by bodies).
    pub fn get(
        &self,
        mailbox: &str,
        uidvalidity: u32,
        uid: u32,
        with_message: bool,
    ) -> Option<Arc<IndexEntry>> {
        let key = (mailbox.to_owned(), uidvalidity, uid);
        if !with_message {
            if let Some(e) = self.cache.get(&key) {
                return Some(e);
            }
        }
        let m = self.mailbox(mailbox, uidvalidity);
        // The lock too is taken off the reactor: a compaction may hold it a while.
        let (entry, offset) = blocking(|| {
            let located = m.lock().ok()?.locate(uid)?;
            let entry = located
                .read(&self.key)
                .and_then(|b| record::decode_entry(&b));
            Some((entry, located.offset()))
        })?;
        let Some(mut entry) = entry else {
            if let Ok(mut g) = m.lock() {
                g.forget(uid, offset);
            }
            return None;
        };
        if with_message && entry.message.is_some() {
            // Whole messages stay out of the record cache (the view cache holds views).
            return Some(Arc::new(entry));
        }
        entry.message = None;
        let light = Arc::new(entry);
        self.cache.insert(key, light.clone());
        Some(light)
    }

    /// The UIDs indexed for this mailbox.
    pub fn uids(&self, mailbox: &str, uidvalidity: u32) -> Vec<u32> {
        let m = self.mailbox(mailbox, uidvalidity);
        let uids = m.lock().map(|g| g.uids()).unwrap_or_default();
        uids
    }

    /// Adds an entry (appended to the file, and cached). Failing to write only costs a
    /// decryption later.
    pub fn insert(&self, mailbox: &str, uidvalidity: u32, uid: u32, entry: IndexEntry) {
        let m = self.mailbox(mailbox, uidvalidity);
        let Ok(mut file) = m.lock() else {
            return;
        };
        if file.contains(uid) {
            return;
        }
        if file.checkpoint().is_none() {
            // The first record names the mailbox (for `index status`).
            file.append_checkpoint(&self.key, Checkpoint::start(mailbox, uidvalidity));
        }
        let entry = if file.bytes() > MAX_FILE_WITH_MESSAGES {
            // Past this size a mailbox's records keep what header syncs and searches need,
            // not whole messages: the index stays a fraction of the mailbox.
            IndexEntry {
                message: None,
                ..entry
            }
        } else {
            entry
        };
        file.append_entry(&self.key, uid, &record::encode_entry(&entry));
        if file.contains(uid) {
            let light = IndexEntry {
                message: None,
                ..entry
            };
            self.cache
                .insert((mailbox.to_owned(), uidvalidity, uid), Arc::new(light));
        }
    }

    /// Removes the records of expunged messages.
    pub fn remove(&self, mailbox: &str, uidvalidity: u32, uids: &[u32]) {
        let m = self.mailbox(mailbox, uidvalidity);
        if let Ok(mut file) = m.lock() {
            file.remove(uids);
        }
        for &uid in uids {
            self.cache
                .invalidate(&(mailbox.to_owned(), uidvalidity, uid));
        }
    }

    /// How far the indexer has gone through the mailbox.
    pub fn checkpoint(&self, mailbox: &str, uidvalidity: u32) -> Option<Checkpoint> {
        let m = self.mailbox(mailbox, uidvalidity);
        let c = m.lock().ok()?.checkpoint().cloned();
        c
    }

    /// Records how far the indexer has gone (after the records it covers were written).
    pub fn set_checkpoint(&self, checkpoint: Checkpoint) {
        let m = self.mailbox(&checkpoint.mailbox, checkpoint.uidvalidity);
        let mut file = match m.lock() {
            Ok(file) => file,
            Err(_) => return,
        };
        file.append_checkpoint(&self.key, checkpoint);
    }

    /// Removes the files of a mailbox's earlier UIDVALIDITYs: their UIDs name no message now.
    pub fn forget_other_validities(&self, mailbox: &str, uidvalidity: u32) {
        let keep = stem(mailbox, uidvalidity);
        let Some((prefix, _)) = keep.split_once('-') else {
            return;
        };
        let prefix = format!("{prefix}-");
        self.mailboxes
            .retain(|(m, v), _| m != mailbox || *v == uidvalidity);
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return;
        };
        for f in dir.flatten() {
            let name = f.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix) && name != format!("{keep}.idx3") {
                tracing::info!(mailbox, "IMAP index of an earlier UIDVALIDITY removed");
                let _ = std::fs::remove_file(f.path());
            }
        }
    }

    /// Every mailbox file of the index under `home`, read without changing anything (no
    /// directory made, no torn record cut off): for `meshmail index status` beside a running
    /// `serve`.
    pub fn status_at(home: &Path, secret: &[u8]) -> Vec<MailboxStatus> {
        let Some(key) = record_key(secret) else {
            return Vec::new();
        };
        status_of(&home.join("imap-index"), &key, file::Mode::ReadOnly)
    }

    /// Every mailbox file of this index.
    pub fn status(&self) -> Vec<MailboxStatus> {
        status_of(&self.dir, &self.key, file::Mode::ReadWrite)
    }
}

/// The index's record key, derived from the account's secret.
fn record_key(secret: &[u8]) -> Option<LessSafeKey> {
    let prk = Salt::new(HKDF_SHA256, b"meshmail imap index v1").extract(secret);
    let okm = prk.expand(&[b"record key"], &AES_256_GCM).ok()?;
    Some(LessSafeKey::new(UnboundKey::from(okm)))
}

fn status_of(dir: &Path, key: &LessSafeKey, mode: file::Mode) -> Vec<MailboxStatus> {
    let Ok(dir) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for f in dir.flatten() {
        let name = f.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".idx3") else {
            continue;
        };
        let Some(uidvalidity) = stem
            .rsplit_once('-')
            .and_then(|(_, v)| v.parse::<u32>().ok())
        else {
            continue;
        };
        let file = IndexFile::load(f.path(), stem.to_owned(), key, mode);
        let s = file.status();
        out.push(MailboxStatus {
            mailbox: s.checkpoint.as_ref().map(|c| c.mailbox.clone()),
            uidvalidity,
            records: s.records,
            dead_records: s.dead_records,
            bytes: s.bytes,
            dead_bytes: s.dead_bytes,
            checkpoint: s.checkpoint,
        });
    }
    out.sort_by(|a, b| a.mailbox.cmp(&b.mailbox));
    out
}

impl Checkpoint {
    /// The checkpoint of a file nothing has been scanned into yet.
    pub fn start(mailbox: &str, uidvalidity: u32) -> Checkpoint {
        Checkpoint {
            mailbox: mailbox.to_owned(),
            uidvalidity,
            scanned_to: 0,
            uidnext: 0,
            messages: 0,
            at: now(),
        }
    }
}

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Files of earlier formats are caches that no longer open: removed.
fn remove_old_formats(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for f in entries.flatten() {
        let name = f.file_name();
        let name = name.to_string_lossy();
        if name.ends_with(".idx") || name.ends_with(".idx2") || name.ends_with(".compacting") {
            let _ = std::fs::remove_file(f.path());
        }
    }
}

/// Runs file I/O; on a multi-threaded runtime's worker, tokio is told the thread blocks.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current() {
        Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(f)
        }
        _ => f(),
    }
}

/// The index's own thread: builds and writes queued records while no decryption runs. Ends
/// when the index is dropped.
fn run_queue(index: Weak<Index>, jobs: Receiver<Job>) {
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Insert {
                mailbox,
                uidvalidity,
                uid,
                bytes,
                build,
            } => {
                while !super::slots::quiet_for(QUIET) {
                    std::thread::sleep(IDLE_POLL);
                }
                let Some(index) = index.upgrade() else {
                    return;
                };
                if !index.has_record(&mailbox, uidvalidity, uid) {
                    // A parser panic on one message must not end indexing for the account.
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(build)) {
                        Ok(entry) => index.insert(&mailbox, uidvalidity, uid, entry),
                        Err(_) => tracing::warn!(uid, "cannot index one message"),
                    }
                }
                index.dequeued(&mailbox, uidvalidity, uid);
                index.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            }
            Job::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

#[cfg(test)]
mod tests;
