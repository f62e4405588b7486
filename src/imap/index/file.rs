//! One mailbox's index file (one per mailbox and UIDVALIDITY): an append-only log of sealed
//! records, each framed as
//!
//! ```text
//! len(4) uid(4) kind(1) [nonce(12) sealed(len)]
//! ```
//!
//! - `ENTRY`: a message's record (AES-256-GCM, bound to the file and the UID);
//! - `CHECKPOINT` (uid 0): the mailbox's name and how far the indexer has scanned; the first
//!   record of every file, and appended again as the indexer goes on (the last one counts);
//! - `TOMBSTONE` (len 0, nothing after): the UID was expunged.
//!
//! Only where each live record lies is kept in memory. A record cut short at the end of the
//! file (a crash mid-write) is cut off when the file is opened, so it costs that record only
//! and the next append starts on a boundary. When half of the file is dead (replaced
//! checkpoints, expunged messages) it is rewritten with the live records only.

use super::record;
use super::Checkpoint;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce};
use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::Arc;
use zeroize::Zeroizing;

const ENTRY: u8 = 1;
const CHECKPOINT: u8 = 2;
const TOMBSTONE: u8 = 3;
const HEADER: usize = 9;
const NONCE: usize = 12;

/// Records per file at most (a mailbox larger than this is indexed in part).
pub const MAX_RECORDS: usize = 1_000_000;
/// A record larger than this is damage, not a record.
const MAX_RECORD: u32 = 64 * 1024 * 1024;
/// A file smaller than this is never worth compacting.
const COMPACT_MIN: u64 = 16 * 1024;

/// Where a sealed record lies: offset of its frame, and the sealed length.
#[derive(Clone, Copy)]
struct Span {
    offset: u64,
    len: u32,
}

impl Span {
    fn total(&self) -> u64 {
        (HEADER + NONCE) as u64 + u64::from(self.len)
    }
}

/// Whether loading may repair the file (cut a torn record, remove a file of another key).
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    ReadWrite,
    /// For `index status` beside a running `serve`: nothing on disk changes.
    ReadOnly,
}

/// An open index file.
pub struct IndexFile {
    path: PathBuf,
    /// What every record is bound to besides its UID: the file's name (mailbox hash and
    /// UIDVALIDITY).
    binding: String,
    file: Option<Arc<File>>,
    /// Where the next record goes.
    end: u64,
    records: HashMap<u32, Span>,
    checkpoint: Option<(Span, Checkpoint)>,
    dead: u64,
    /// Message records replaced or expunged, seen when the file was loaded or since (for
    /// `index status`; replaced checkpoints count in `dead` only).
    dead_records: usize,
}

/// What `index status` shows of one file.
pub struct FileStatus {
    pub records: usize,
    pub dead_records: usize,
    pub bytes: u64,
    pub dead_bytes: u64,
    pub checkpoint: Option<Checkpoint>,
}

fn aad(binding: &str, kind: u8, uid: u32) -> Vec<u8> {
    format!("{kind}\0{binding}\0{uid}").into_bytes()
}

impl IndexFile {
    /// Opens (or starts) the file at `path`. A file whose checkpoint does not open (another
    /// key) is removed: it would never open.
    pub fn load(path: PathBuf, binding: String, key: &LessSafeKey, mode: Mode) -> IndexFile {
        let mut f = IndexFile::load_empty(path, binding);
        let Ok(file) = std::fs::OpenOptions::new()
            .read(true)
            .write(mode == Mode::ReadWrite)
            .open(&f.path)
        else {
            return f;
        };
        let file = Arc::new(file);
        let Ok(len) = file.metadata().map(|m| m.len()) else {
            return f;
        };
        let mut reader = std::io::BufReader::with_capacity(64 * 1024, &*file);
        let mut at = 0u64;
        let mut last_checkpoint = None;
        loop {
            let mut header = [0u8; HEADER];
            if at + HEADER as u64 > len || reader.read_exact(&mut header).is_err() {
                break;
            }
            let size = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
            let uid = u32::from_be_bytes([header[4], header[5], header[6], header[7]]);
            let kind = header[8];
            let span = Span {
                offset: at,
                len: size,
            };
            let total = match kind {
                TOMBSTONE if size == 0 => HEADER as u64,
                ENTRY | CHECKPOINT if size <= MAX_RECORD => span.total(),
                _ => break,
            };
            if at + total > len {
                break;
            }
            match kind {
                ENTRY if f.records.len() < MAX_RECORDS => {
                    if let Some(old) = f.records.insert(uid, span) {
                        f.dead += old.total();
                        f.dead_records += 1;
                    }
                }
                CHECKPOINT => {
                    if let Some(old) = last_checkpoint.replace(span) {
                        f.dead += old.total();
                    }
                }
                TOMBSTONE => {
                    f.dead += HEADER as u64;
                    if let Some(old) = f.records.remove(&uid) {
                        f.dead += old.total();
                        f.dead_records += 1;
                    }
                }
                _ => {}
            }
            if reader
                .seek_relative((total - HEADER as u64) as i64)
                .is_err()
            {
                break;
            }
            at += total;
        }
        drop(reader);
        if at < len && mode == Mode::ReadWrite {
            // A record cut short (a crash mid-write): only it is lost.
            tracing::warn!(path = %f.path.display(), kept = at, cut = len - at, "IMAP index: a torn record at the end was cut off");
            let _ = file.set_len(at);
        }
        f.end = at;
        f.file = Some(file);
        if let Some(span) = last_checkpoint {
            let opened = f
                .file
                .as_ref()
                .and_then(|file| read_sealed(file, span, &f.binding, CHECKPOINT, 0, key));
            match opened.and_then(|b| record::decode_checkpoint(&b)) {
                Some(c) => f.checkpoint = Some((span, c)),
                None if mode == Mode::ReadOnly => {}
                None => {
                    tracing::warn!(path = %f.path.display(), "IMAP index sealed with another key: removed");
                    let _ = std::fs::remove_file(&f.path);
                    return IndexFile::load_empty(f.path, f.binding);
                }
            }
        }
        f
    }

    fn load_empty(path: PathBuf, binding: String) -> IndexFile {
        IndexFile {
            path,
            binding,
            file: None,
            end: 0,
            records: HashMap::new(),
            checkpoint: None,
            dead: 0,
            dead_records: 0,
        }
    }

    pub fn contains(&self, uid: u32) -> bool {
        self.records.contains_key(&uid)
    }

    pub fn uids(&self) -> Vec<u32> {
        self.records.keys().copied().collect()
    }

    /// The file's size in bytes.
    pub fn bytes(&self) -> u64 {
        self.end
    }

    pub fn checkpoint(&self) -> Option<&Checkpoint> {
        self.checkpoint.as_ref().map(|(_, c)| c)
    }

    /// What a reader needs to read `uid`'s record without holding the file's lock.
    pub fn locate(&self, uid: u32) -> Option<Located> {
        Some(Located {
            file: self.file.clone()?,
            span: *self.records.get(&uid)?,
            binding: self.binding.clone(),
            uid,
        })
    }

    /// Forgets a record that did not open (damage): the message is decrypted and written
    /// again.
    pub fn forget(&mut self, uid: u32, offset: u64) {
        if self.records.get(&uid).is_some_and(|s| s.offset == offset) {
            if let Some(old) = self.records.remove(&uid) {
                self.dead += old.total();
                self.dead_records += 1;
            }
        }
    }

    /// Appends a message's record. Failing to write only costs a decryption later.
    pub fn append_entry(&mut self, key: &LessSafeKey, uid: u32, plain: &[u8]) {
        if self.records.contains_key(&uid) || self.records.len() >= MAX_RECORDS {
            return;
        }
        if let Some(span) = self.append_sealed(key, ENTRY, uid, plain) {
            self.records.insert(uid, span);
        }
    }

    /// Appends a checkpoint (the last one counts).
    pub fn append_checkpoint(&mut self, key: &LessSafeKey, c: Checkpoint) {
        let plain = record::encode_checkpoint(&c);
        if let Some(span) = self.append_sealed(key, CHECKPOINT, 0, &plain) {
            if let Some((old, _)) = self.checkpoint.replace((span, c)) {
                self.dead += old.total();
            }
        }
    }

    /// Marks UIDs expunged; compacts when half the file is dead.
    pub fn remove(&mut self, uids: &[u32]) {
        let mut frames = Vec::new();
        for &uid in uids {
            if let Some(old) = self.records.remove(&uid) {
                self.dead += old.total() + HEADER as u64;
                self.dead_records += 1;
                frames.extend_from_slice(&0u32.to_be_bytes());
                frames.extend_from_slice(&uid.to_be_bytes());
                frames.push(TOMBSTONE);
            }
        }
        if !frames.is_empty() {
            self.write(&frames);
        }
        self.compact_if_half_dead();
    }

    fn append_sealed(
        &mut self,
        key: &LessSafeKey,
        kind: u8,
        uid: u32,
        plain: &[u8],
    ) -> Option<Span> {
        let mut nonce = [0u8; NONCE];
        aws_lc_rs::rand::fill(&mut nonce).ok()?;
        let aad = aad(&self.binding, kind, uid);
        // The frame, then the record sealed in place behind it: one buffer.
        let mut out = Vec::with_capacity(HEADER + NONCE + plain.len() + 16);
        out.extend_from_slice(&[0u8; HEADER]);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plain);
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad.as_slice()),
                &mut out[HEADER + NONCE..],
            )
            .ok()?;
        out.extend_from_slice(tag.as_ref());
        let len = u32::try_from(out.len() - HEADER - NONCE)
            .ok()
            .filter(|l| *l <= MAX_RECORD)?;
        out[..4].copy_from_slice(&len.to_be_bytes());
        out[4..8].copy_from_slice(&uid.to_be_bytes());
        out[8] = kind;
        let offset = self.write(&out)?;
        Some(Span { offset, len })
    }

    /// Writes `bytes` where the file ends; the offset they went to.
    fn write(&mut self, bytes: &[u8]) -> Option<u64> {
        if self.file.is_none() {
            let created = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode_0600()
                .open(&self.path);
            match created {
                Ok(f) => self.file = Some(Arc::new(f)),
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), error = %e, "cannot write the IMAP index");
                    return None;
                }
            }
        }
        let file = self.file.as_ref()?;
        let offset = self.end;
        match file.write_all_at(bytes, offset) {
            Ok(()) => {
                self.end += bytes.len() as u64;
                Some(offset)
            }
            Err(e) => {
                tracing::warn!(path = %self.path.display(), error = %e, "cannot write the IMAP index");
                // What was written in part is cut off again.
                let _ = file.set_len(offset);
                None
            }
        }
    }

    fn compact_if_half_dead(&mut self) {
        if self.end < COMPACT_MIN || self.dead * 2 < self.end {
            return;
        }
        if let Err(e) = self.compact() {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot compact the IMAP index");
        }
    }

    /// Rewrites the file with its live records only (copied sealed, as they are), then puts
    /// it in place of the old one atomically.
    fn compact(&mut self) -> std::io::Result<()> {
        let Some(old) = self.file.clone() else {
            return Ok(());
        };
        let tmp = self.path.with_extension("compacting");
        let new = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .mode_0600()
            .open(&tmp)?;
        let mut at = 0u64;
        let mut copy = |span: Span| -> std::io::Result<Span> {
            let mut buf = vec![0u8; span.total() as usize];
            old.read_exact_at(&mut buf, span.offset)?;
            new.write_all_at(&buf, at)?;
            let moved = Span {
                offset: at,
                len: span.len,
            };
            at += buf.len() as u64;
            Ok(moved)
        };
        let checkpoint = match &self.checkpoint {
            Some((span, c)) => Some((copy(*span)?, c.clone())),
            None => None,
        };
        let mut records = HashMap::with_capacity(self.records.len());
        let mut live: Vec<(u32, Span)> = self.records.iter().map(|(u, s)| (*u, *s)).collect();
        live.sort_by_key(|(_, s)| s.offset);
        for (uid, span) in live {
            records.insert(uid, copy(span)?);
        }
        new.sync_all()?;
        std::fs::rename(&tmp, &self.path)?;
        tracing::info!(path = %self.path.display(), before = self.end, after = at, "IMAP index compacted");
        self.file = Some(Arc::new(new));
        self.records = records;
        self.checkpoint = checkpoint;
        self.end = at;
        self.dead = 0;
        self.dead_records = 0;
        Ok(())
    }

    pub fn status(&self) -> FileStatus {
        FileStatus {
            records: self.records.len(),
            dead_records: self.dead_records,
            bytes: self.end,
            dead_bytes: self.dead,
            checkpoint: self.checkpoint().cloned(),
        }
    }
}

/// A record found, to be read outside the file's lock.
pub struct Located {
    file: Arc<File>,
    span: Span,
    binding: String,
    uid: u32,
}

impl Located {
    /// Reads and opens the record (a read and an AES-GCM open).
    pub fn read(&self, key: &LessSafeKey) -> Option<Zeroizing<Vec<u8>>> {
        read_sealed(&self.file, self.span, &self.binding, ENTRY, self.uid, key)
    }

    pub fn offset(&self) -> u64 {
        self.span.offset
    }
}

fn read_sealed(
    file: &File,
    span: Span,
    binding: &str,
    kind: u8,
    uid: u32,
    key: &LessSafeKey,
) -> Option<Zeroizing<Vec<u8>>> {
    // Nonce and sealed record in one read, opened in place.
    let mut buf = Zeroizing::new(vec![0u8; NONCE + span.len as usize]);
    file.read_exact_at(&mut buf, span.offset + HEADER as u64)
        .ok()?;
    let nonce = Nonce::try_assume_unique_for_key(&buf[..NONCE]).ok()?;
    let aad = aad(binding, kind, uid);
    let n = key
        .open_in_place(nonce, Aad::from(aad.as_slice()), &mut buf[NONCE..])
        .ok()?
        .len();
    buf.truncate(NONCE + n);
    buf.drain(..NONCE);
    Some(buf)
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
