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

/// Records per file at most (a mailbox larger than this is indexed in part).
const MAX_RECORDS: usize = 1_000_000;
/// A record larger than this is damage, not a record.
const MAX_RECORD: usize = 64 * 1024 * 1024;

/// Bytes of decrypted views waiting in the queue at most; beyond, records are built at once.
const MAX_QUEUED_BYTES: usize = 64 * 1024 * 1024;
/// How often the index's thread looks whether decryption has stopped.
const IDLE_POLL: Duration = Duration::from_millis(2);

/// One account's index.
pub struct Index {
    dir: PathBuf,
    key: LessSafeKey,
    mailboxes: DashMap<(String, u32), Arc<Mutex<MailboxIndex>>>,
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

#[derive(Default)]
struct MailboxIndex {
    entries: HashMap<u32, Arc<IndexEntry>>,
}

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
        if self.get(mailbox, uidvalidity, uid).is_some() {
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
        self.dir.join(format!("{name}-{uidvalidity}.idx"))
    }

    fn aad(mailbox: &str, uidvalidity: u32) -> Vec<u8> {
        format!("{uidvalidity}\0{mailbox}").into_bytes()
    }

    fn mailbox(&self, mailbox: &str, uidvalidity: u32) -> Arc<Mutex<MailboxIndex>> {
        let key = (mailbox.to_owned(), uidvalidity);
        if let Some(m) = self.mailboxes.get(&key) {
            return m.clone();
        }
        let loaded = Arc::new(Mutex::new(self.load(mailbox, uidvalidity)));
        self.mailboxes.entry(key).or_insert(loaded).clone()
    }

    fn load(&self, mailbox: &str, uidvalidity: u32) -> MailboxIndex {
        let mut index = MailboxIndex::default();
        let Ok(bytes) = std::fs::read(self.file(mailbox, uidvalidity)) else {
            return index;
        };
        let aad = Self::aad(mailbox, uidvalidity);
        let mut at = 0;
        while at + 4 + 12 <= bytes.len() && index.entries.len() < MAX_RECORDS {
            let len = u32::from_be_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
                as usize;
            let start = at + 4;
            let end = start.saturating_add(12).saturating_add(len);
            if len > MAX_RECORD || end > bytes.len() {
                break;
            }
            at = end;
            let Ok(nonce) = Nonce::try_assume_unique_for_key(&bytes[start..start + 12]) else {
                continue;
            };
            let mut sealed = bytes[start + 12..end].to_vec();
            let Ok(plain) = self
                .key
                .open_in_place(nonce, Aad::from(aad.as_slice()), &mut sealed)
            else {
                continue;
            };
            if plain.len() < 4 {
                continue;
            }
            let uid = u32::from_be_bytes([plain[0], plain[1], plain[2], plain[3]]);
            if let Ok(entry) = serde_json::from_slice::<IndexEntry>(&plain[4..]) {
                index.entries.insert(uid, Arc::new(entry));
            }
            zeroize::Zeroize::zeroize(&mut sealed);
        }
        index
    }

    /// Reads the mailbox's records from disk unless they are in memory already. That first
    /// read is file I/O and a decryption per record, so on a runtime worker tokio is told the
    /// thread blocks; the session calls this before `get` and `uids`.
    pub fn prepare(&self, mailbox: &str, uidvalidity: u32) {
        if self
            .mailboxes
            .contains_key(&(mailbox.to_owned(), uidvalidity))
        {
            return;
        }
        let load = || {
            self.mailbox(mailbox, uidvalidity);
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) if h.runtime_flavor() == tokio::runtime::RuntimeFlavor::MultiThread => {
                tokio::task::block_in_place(load)
            }
            _ => load(),
        }
    }

    pub fn get(&self, mailbox: &str, uidvalidity: u32, uid: u32) -> Option<Arc<IndexEntry>> {
        let m = self.mailbox(mailbox, uidvalidity);
        let guard = m.lock().ok()?;
        guard.entries.get(&uid).cloned()
    }

    /// The UIDs indexed for this mailbox.
    pub fn uids(&self, mailbox: &str, uidvalidity: u32) -> Vec<u32> {
        let m = self.mailbox(mailbox, uidvalidity);
        let Ok(guard) = m.lock() else {
            return Vec::new();
        };
        guard.entries.keys().copied().collect()
    }

    /// Adds an entry (in memory and appended to the file). Failing to write only costs a
    /// decryption later.
    pub fn insert(&self, mailbox: &str, uidvalidity: u32, uid: u32, entry: IndexEntry) {
        let m = self.mailbox(mailbox, uidvalidity);
        let Ok(mut guard) = m.lock() else {
            return;
        };
        if guard.entries.contains_key(&uid) || guard.entries.len() >= MAX_RECORDS {
            return;
        }
        let Ok(json) = serde_json::to_vec(&entry) else {
            return;
        };
        let mut record = zeroize::Zeroizing::new(Vec::with_capacity(json.len() + 4 + 16));
        record.extend_from_slice(&uid.to_be_bytes());
        record.extend_from_slice(&json);
        let mut nonce = [0u8; 12];
        if aws_lc_rs::rand::fill(&mut nonce).is_err() {
            return;
        }
        let aad = Self::aad(mailbox, uidvalidity);
        let mut sealed = record.to_vec();
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
        let mut out = Vec::with_capacity(sealed.len() + 16);
        out.extend_from_slice(&(sealed.len() as u32).to_be_bytes());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        let path = self.file(mailbox, uidvalidity);
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode_0600()
            .open(&path)
            .and_then(|mut f| f.write_all(&out));
        if let Err(e) = written {
            tracing::warn!(path = %path.display(), error = %e, "cannot write the IMAP index");
        }
        guard.entries.insert(uid, Arc::new(entry));
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
                if index.get(&mailbox, uidvalidity, uid).is_none() {
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
