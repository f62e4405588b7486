//! The persistent index of decrypted messages: per (mailbox, UIDVALIDITY, UID) the view's
//! size, BODYSTRUCTURE, BODY, ENVELOPE, header and search text, so that a header sync after a
//! restart (Thunderbird's `RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (…)]`) and SEARCH need no
//! decryption, and FETCHes of indexed messages need no ciphertext from the server.
//!
//! At rest every record is sealed with AES-256-GCM under a key derived (HKDF-SHA256) from the
//! account's secret S/MIME key, and bound to its mailbox and UIDVALIDITY; files are 0600 in a
//! 0700 directory. A record that does not open (another key, damage) is skipped: the message
//! is decrypted again and its record written anew.
//!
//! Memory does not grow with the mailboxes: only where each record lies in its file is kept
//! (a few bytes per message); records are read back on demand and the most recent ones kept
//! in a cache bounded in bytes.
//!
//! Records are built (search text, structure) and written by the index's own thread, when no
//! decryption is running ([`super::slots`]): a cold FETCH of a whole mailbox is answered first
//! and indexed right after. `flush` waits for the queue at shutdown; a record lost to a crash
//! only costs a decryption later.

use crate::imap::search::SearchText;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};
use dashmap::DashMap;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

/// What the index keeps of one decrypted message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IndexEntry {
    pub size: usize,
    pub bodystructure: Vec<u8>,
    pub body: Vec<u8>,
    pub envelope: Vec<u8>,
    /// The view's header section, blank line included.
    pub header: Vec<u8>,
    pub search: SearchText,
}

impl IndexEntry {
    /// Bytes held, for the cache's weight.
    pub fn weight(&self) -> usize {
        self.header.len()
            + self.bodystructure.len()
            + self.body.len()
            + self.envelope.len()
            + self.search.body.len()
            + 256
    }
}

/// Records per file at most (a mailbox larger than this is indexed in part).
const MAX_RECORDS: usize = 1_000_000;
/// A record larger than this is damage, not a record.
const MAX_RECORD: usize = 64 * 1024 * 1024;

/// Bytes of decrypted views waiting in the queue at most; beyond, records are built at once.
const MAX_QUEUED_BYTES: usize = 16 * 1024 * 1024;
/// How often the index's thread looks whether decryption has stopped.
const IDLE_POLL: Duration = Duration::from_millis(2);

/// One account's index.
pub struct Index {
    dir: PathBuf,
    key: LessSafeKey,
    mailboxes: DashMap<(String, u32), Arc<Mutex<MailboxIndex>>>,
    /// Recently read records, decoded.
    cache: moka::sync::Cache<EntryKey, Arc<IndexEntry>>,
    /// Records for the index's own thread to build and write (`None`: no thread, build at once).
    queue: Option<Sender<Job>>,
    queued_bytes: AtomicUsize,
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

/// Where a mailbox's records lie in its file: UID → (offset of the sealed record, its length).
#[derive(Default)]
struct MailboxIndex {
    records: HashMap<u32, (u64, u32)>,
}

/// Decoded records kept in memory, in bytes.
const CACHE_BYTES: u64 = 16 * 1024 * 1024;

type EntryKey = (String, u32, u32);

impl Index {
    /// The index under `home`, sealed with a key derived from `secret`, with its own thread.
    pub fn open(home: &Path, secret: &[u8]) -> Option<Arc<Index>> {
        let prk = Salt::new(HKDF_SHA256, b"meshmail imap index v1").extract(secret);
        let okm = prk.expand(&[b"record key"], &AES_256_GCM).ok()?;
        let key = LessSafeKey::new(UnboundKey::from(okm));
        let dir = home.join("imap-index");
        crate::keys::account::make_private_dir(&dir).ok()?;
        Some(Arc::new_cyclic(|me: &Weak<Index>| {
            let (tx, rx) = std::sync::mpsc::channel();
            let me = me.clone();
            let started = std::thread::Builder::new()
                .name("imap-index".into())
                .spawn(move || run_queue(me, rx));
            Index {
                dir,
                key,
                mailboxes: DashMap::new(),
                cache: moka::sync::Cache::builder()
                    .max_capacity(CACHE_BYTES)
                    .weigher(|_: &EntryKey, e: &Arc<IndexEntry>| {
                        u32::try_from(e.weight()).unwrap_or(u32::MAX)
                    })
                    .build(),
                queue: started.is_ok().then_some(tx),
                queued_bytes: AtomicUsize::new(0),
            }
        }))
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
            Some(tx) if queued + bytes <= MAX_QUEUED_BYTES => tx.send(job).err().map(|e| e.0),
            _ => Some(job),
        };
        if let Some(Job::Insert { build, .. }) = refused {
            self.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            self.insert(mailbox, uidvalidity, uid, build());
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

    fn file(&self, mailbox: &str, uidvalidity: u32) -> PathBuf {
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, mailbox.as_bytes());
        let name = data_encoding::HEXLOWER.encode(&digest.as_ref()[..12]);
        self.dir.join(format!("{name}-{uidvalidity}.idx2"))
    }

    /// What a record is bound to: its mailbox, UIDVALIDITY and UID (the UID is framed in the
    /// clear, so that loading a mailbox reads no record).
    fn aad(mailbox: &str, uidvalidity: u32, uid: u32) -> Vec<u8> {
        format!("{uidvalidity}\0{mailbox}\0{uid}").into_bytes()
    }

    fn mailbox(&self, mailbox: &str, uidvalidity: u32) -> Arc<Mutex<MailboxIndex>> {
        let key = (mailbox.to_owned(), uidvalidity);
        if let Some(m) = self.mailboxes.get(&key) {
            return m.clone();
        }
        let loaded = Arc::new(Mutex::new(self.load(mailbox, uidvalidity)));
        self.mailboxes.entry(key).or_insert(loaded).clone()
    }

    /// Reads where the file's records lie: `len(4) uid(4) nonce(12) sealed(len)` each. A file
    /// whose first record does not open (another key) is removed: it would never open.
    fn load(&self, mailbox: &str, uidvalidity: u32) -> MailboxIndex {
        let mut index = MailboxIndex::default();
        let path = self.file(mailbox, uidvalidity);
        let Ok(bytes) = std::fs::read(&path) else {
            return index;
        };
        let mut at = 0usize;
        while at + 20 <= bytes.len() && index.records.len() < MAX_RECORDS {
            let word =
                |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
            let len = word(at);
            let uid = word(at + 4);
            let end = (at + 20).saturating_add(len as usize);
            if len as usize > MAX_RECORD || end > bytes.len() {
                break;
            }
            index.records.entry(uid).or_insert((at as u64, len));
            at = end;
        }
        let first = index.records.iter().min_by_key(|(_, (o, _))| *o);
        if let Some((&uid, &(offset, len))) = first {
            if self
                .open_record(&bytes, offset, len, mailbox, uidvalidity, uid)
                .is_none()
            {
                tracing::warn!(path = %path.display(), "IMAP index sealed with another key: removed");
                let _ = std::fs::remove_file(&path);
                return MailboxIndex::default();
            }
        }
        index
    }

    /// Opens one record of `bytes` (a file, or the record alone at offset 0).
    fn open_record(
        &self,
        bytes: &[u8],
        offset: u64,
        len: u32,
        mailbox: &str,
        uidvalidity: u32,
        uid: u32,
    ) -> Option<IndexEntry> {
        let start = usize::try_from(offset).ok()?.checked_add(8)?;
        let nonce = Nonce::try_assume_unique_for_key(bytes.get(start..start + 12)?).ok()?;
        let mut sealed =
            zeroize::Zeroizing::new(bytes.get(start + 12..start + 12 + len as usize)?.to_vec());
        let aad = Self::aad(mailbox, uidvalidity, uid);
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(aad.as_slice()), &mut sealed)
            .ok()?;
        serde_json::from_slice::<IndexEntry>(plain).ok()
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

    /// True when the message has a record.
    pub fn contains(&self, mailbox: &str, uidvalidity: u32, uid: u32) -> bool {
        let m = self.mailbox(mailbox, uidvalidity);
        let contains = m.lock().is_ok_and(|g| g.records.contains_key(&uid));
        contains
    }

    /// The message's record: from memory, else read from its file (a read and a decryption).
    pub fn get(&self, mailbox: &str, uidvalidity: u32, uid: u32) -> Option<Arc<IndexEntry>> {
        let key = (mailbox.to_owned(), uidvalidity, uid);
        if let Some(e) = self.cache.get(&key) {
            return Some(e);
        }
        let (offset, len) = {
            let m = self.mailbox(mailbox, uidvalidity);
            let guard = m.lock().ok()?;
            *guard.records.get(&uid)?
        };
        let entry = blocking(|| {
            use std::os::unix::fs::FileExt;
            let file = std::fs::File::open(self.file(mailbox, uidvalidity)).ok()?;
            let mut record = zeroize::Zeroizing::new(vec![0u8; 20 + len as usize]);
            file.read_exact_at(&mut record, offset).ok()?;
            self.open_record(&record, 0, len, mailbox, uidvalidity, uid)
        })?;
        let entry = Arc::new(entry);
        self.cache.insert(key, entry.clone());
        Some(entry)
    }

    /// The UIDs indexed for this mailbox.
    pub fn uids(&self, mailbox: &str, uidvalidity: u32) -> Vec<u32> {
        let m = self.mailbox(mailbox, uidvalidity);
        let Ok(guard) = m.lock() else {
            return Vec::new();
        };
        guard.records.keys().copied().collect()
    }

    /// Adds an entry (appended to the file, and cached). Failing to write only costs a
    /// decryption later.
    pub fn insert(&self, mailbox: &str, uidvalidity: u32, uid: u32, entry: IndexEntry) {
        let m = self.mailbox(mailbox, uidvalidity);
        let Ok(mut guard) = m.lock() else {
            return;
        };
        if guard.records.contains_key(&uid) || guard.records.len() >= MAX_RECORDS {
            return;
        }
        let Ok(json) = serde_json::to_vec(&entry) else {
            return;
        };
        let mut nonce = [0u8; 12];
        if aws_lc_rs::rand::fill(&mut nonce).is_err() {
            return;
        }
        let aad = Self::aad(mailbox, uidvalidity, uid);
        let mut sealed = json;
        if self
            .key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_slice()),
                &mut sealed,
            )
            .is_err()
        {
            return;
        }
        let Ok(len) = u32::try_from(sealed.len()) else {
            return;
        };
        let mut out = Vec::with_capacity(sealed.len() + 20);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&uid.to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        let path = self.file(mailbox, uidvalidity);
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode_0600()
            .open(&path)
            .and_then(|mut f| {
                // Appends go where the file ends (one writer per mailbox: this lock).
                let offset = f.metadata()?.len();
                f.write_all(&out)?;
                Ok(offset)
            });
        match written {
            Ok(offset) => {
                guard.records.insert(uid, (offset, len));
                self.cache
                    .insert((mailbox.to_owned(), uidvalidity, uid), Arc::new(entry));
            }
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot write the IMAP index")
            }
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
                while !super::slots::idle() {
                    std::thread::sleep(IDLE_POLL);
                }
                let Some(index) = index.upgrade() else {
                    return;
                };
                if !index.contains(&mailbox, uidvalidity, uid) {
                    // A parser panic on one message must not end indexing for the account.
                    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(build)) {
                        Ok(entry) => index.insert(&mailbox, uidvalidity, uid, entry),
                        Err(_) => tracing::warn!(uid, "cannot index one message"),
                    }
                }
                index.queued_bytes.fetch_sub(bytes, Ordering::AcqRel);
            }
            Job::Flush(done) => {
                let _ = done.send(());
            }
        }
    }
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn entry(size: usize) -> IndexEntry {
        IndexEntry {
            size,
            bodystructure: b"(\"text\" \"plain\" NIL NIL NIL \"7bit\" 2 1 NIL NIL NIL NIL)"
                .to_vec(),
            body: Vec::new(),
            envelope: Vec::new(),
            header: b"Subject: secret plans\r\n\r\n".to_vec(),
            search: SearchText::default(),
        }
    }

    #[test]
    fn queued_records_are_written_sealed_and_read_back_only_with_the_key() {
        let home = tempfile::tempdir().expect("tempdir");
        let index = Index::open(home.path(), b"account secret").expect("index");
        for uid in 1..=50 {
            index.insert_later("INBOX", 7, uid, 100, move || entry(uid as usize));
        }
        assert!(index.flush(Duration::from_secs(10)));
        assert_eq!(index.get("INBOX", 7, 42).map(|e| e.size), Some(42));
        assert!(index.get("INBOX", 8, 42).is_none(), "another UIDVALIDITY");
        drop(index);

        let files: Vec<_> = std::fs::read_dir(home.path().join("imap-index"))
            .expect("dir")
            .map(|f| f.expect("entry").path())
            .collect();
        assert_eq!(files.len(), 1);
        let bytes = std::fs::read(&files[0]).expect("read");
        let mode = std::fs::metadata(&files[0])
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(
            !bytes.windows(6).any(|w| w == b"secret"),
            "plaintext at rest"
        );

        let again = Index::open(home.path(), b"account secret").expect("index");
        assert_eq!(again.uids("INBOX", 7).len(), 50);
        assert_eq!(again.get("INBOX", 7, 9).map(|e| e.size), Some(9));
        let other = Index::open(home.path(), b"another key").expect("index");
        assert!(
            other.get("INBOX", 7, 9).is_none(),
            "opened with the wrong key"
        );
    }
}
