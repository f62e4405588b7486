//! Delivery reports that could not be sent at once (the upstream was gone, or refused the
//! report for now): kept on disk until a later session of the same upstream login sends them,
//! with back-off between attempts, or until they expire (then logged as an error and counted).
//!
//! Only the upstream login that sent the message can send its report: meshmail relays AUTH and
//! holds no credentials, so a report waits for its owner's next session.
//!
//! ```text
//! <home>/spool/key                 32 random bytes, 0600
//! <home>/spool/reports/<id>.json   {"nonce", "data"}: AES-256-GCM of the entry, 0600
//! ```
//! An entry names the owner, the recipient (the sender of the message) and the report, which
//! carries only recipients and a Message-ID (and is itself encrypted to the sender's key when
//! the sender is the mapped account).

use crate::pipeline::Report;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use data_encoding::BASE64;
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use zeroize::Zeroizing;

/// Reports older than this are given up (RFC 5321 §4.5.4.1 suggests 4-5 days).
pub const MAX_AGE_SECS: i64 = 5 * 24 * 3600;
/// Entries kept at most: beyond, a report is logged as lost (a bound on disk use).
pub const MAX_ENTRIES: usize = 10_000;
/// Largest entry file read back.
const MAX_FILE: u64 = 1024 * 1024;

/// Reports given up after [`MAX_AGE_SECS`] or refused permanently (a metric).
pub static REPORTS_LOST: AtomicU64 = AtomicU64::new(0);

/// One report waiting to be sent.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Spooled {
    #[serde(skip)]
    id: String,
    /// The upstream login whose sessions may send it.
    pub owner: String,
    /// Where the report goes (the sender of the message).
    pub to: String,
    report: String,
    sealed: bool,
    /// Unix seconds.
    pub created: i64,
    pub attempts: u32,
    /// Unix seconds of the next attempt.
    pub next: i64,
}

impl Spooled {
    pub fn report(&self) -> Option<Report> {
        let bytes = BASE64.decode(self.report.as_bytes()).ok()?;
        Some(Report::from_spool(bytes, self.sealed))
    }
}

#[derive(Serialize, Deserialize)]
struct EntryFile {
    nonce: String,
    data: String,
}

/// The spool directory and its key.
pub struct ReportSpool {
    dir: PathBuf,
    key: LessSafeKey,
    /// Entries on disk, so that a session with nothing to flush does not read the directory.
    pending: AtomicUsize,
}

impl std::fmt::Debug for ReportSpool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReportSpool({})", self.dir.display())
    }
}

fn now() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Seconds before attempt `n + 1`: one minute, doubling, at most an hour.
pub fn backoff(attempts: u32) -> i64 {
    60i64.saturating_mul(1 << attempts.min(6)).min(3600)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl ReportSpool {
    /// Opens (creating) the spool under `home`.
    pub fn open(home: &Path) -> std::io::Result<ReportSpool> {
        let spool = home.join("spool");
        let dir = spool.join("reports");
        fs::create_dir_all(&dir)?;
        for d in [&spool, &dir] {
            fs::set_permissions(d, fs::Permissions::from_mode(0o700))?;
        }
        let key_path = spool.join("key");
        let key_bytes = match fs::read(&key_path) {
            Ok(k) if k.len() == 32 => Zeroizing::new(k),
            _ => {
                let mut k = Zeroizing::new(vec![0u8; 32]);
                aws_lc_rs::rand::fill(&mut k).map_err(|_| std::io::Error::other("no RNG"))?;
                write_private(&key_path, &k)?;
                k
            }
        };
        let key = UnboundKey::new(&AES_256_GCM, &key_bytes)
            .map_err(|_| std::io::Error::other("bad spool key"))?;
        let spool = ReportSpool {
            dir,
            key: LessSafeKey::new(key),
            pending: AtomicUsize::new(0),
        };
        spool.pending.store(spool.ids()?.len(), Ordering::Relaxed);
        Ok(spool)
    }

    /// Keeps `report` for `owner` to send to `to`.
    pub fn put(&self, owner: &str, to: &str, report: &Report) -> std::io::Result<()> {
        if self.ids()?.len() >= MAX_ENTRIES {
            REPORTS_LOST.fetch_add(1, Ordering::Relaxed);
            return Err(std::io::Error::other("the report spool is full"));
        }
        let mut id = [0u8; 16];
        aws_lc_rs::rand::fill(&mut id).map_err(|_| std::io::Error::other("no RNG"))?;
        let created = now();
        let entry = Spooled {
            id: data_encoding::HEXLOWER.encode(&id),
            owner: owner.to_owned(),
            to: to.to_owned(),
            report: BASE64.encode(report.bytes()),
            sealed: report.sealed,
            created,
            attempts: 0,
            next: created,
        };
        self.write(&entry)?;
        self.pending.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    fn write(&self, entry: &Spooled) -> std::io::Result<()> {
        let mut data = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| std::io::Error::other("no RNG"))?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(entry.id.as_bytes()),
                &mut data,
            )
            .map_err(|_| std::io::Error::other("cannot encrypt a spool entry"))?;
        let file = EntryFile {
            nonce: BASE64.encode(&nonce),
            data: BASE64.encode(&data),
        };
        let bytes = serde_json::to_vec(&file).map_err(std::io::Error::other)?;
        write_private(&self.path(&entry.id), &bytes)
    }

    fn path(&self, id: &str) -> PathBuf {
        self.dir.join(format!("{id}.json"))
    }

    fn ids(&self) -> std::io::Result<Vec<String>> {
        let mut ids = Vec::new();
        for e in fs::read_dir(&self.dir)?.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json") {
                if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    ids.push(id.to_owned());
                }
            }
        }
        Ok(ids)
    }

    fn read(&self, id: &str) -> Option<Spooled> {
        let path = self.path(id);
        if fs::metadata(&path).ok()?.len() > MAX_FILE {
            return None;
        }
        let file: EntryFile = serde_json::from_slice(&fs::read(&path).ok()?).ok()?;
        let nonce: [u8; NONCE_LEN] = BASE64.decode(file.nonce.as_bytes()).ok()?.try_into().ok()?;
        let mut data = BASE64.decode(file.data.as_bytes()).ok()?;
        let plain = self
            .key
            .open_in_place(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.as_bytes()),
                &mut data,
            )
            .ok()?;
        let mut entry: Spooled = serde_json::from_slice(plain).ok()?;
        entry.id = id.to_owned();
        Some(entry)
    }

    /// Entries of `owner` whose next attempt is due.
    pub fn due(&self, owner: &str) -> Vec<Spooled> {
        let t = now();
        let mut out: Vec<Spooled> = self
            .ids()
            .unwrap_or_default()
            .iter()
            .filter_map(|id| self.read(id))
            .filter(|e| e.owner == owner && e.next <= t)
            .collect();
        out.sort_by_key(|e| e.created);
        out
    }

    /// The report was sent (or refused for good, which [`ReportSpool::give_up`] logs).
    pub fn done(&self, entry: &Spooled) {
        self.remove(&entry.id);
    }

    fn remove(&self, id: &str) {
        if fs::remove_file(self.path(id)).is_ok() {
            let _ = self
                .pending
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
        }
    }

    /// True when nothing waits (without reading the directory).
    pub fn nothing_pending(&self) -> bool {
        self.pending.load(Ordering::Relaxed) == 0
    }

    /// The attempt failed for now: try again after the back-off.
    pub fn retry_later(&self, entry: &Spooled) {
        let mut e = entry.clone();
        e.attempts = e.attempts.saturating_add(1);
        e.next = now() + backoff(e.attempts);
        if let Err(err) = self.write(&e) {
            tracing::error!(error = %err, "cannot update a spooled delivery report");
        }
    }

    /// Removes an entry that will never be sent, logging it as lost.
    pub fn give_up(&self, entry: &Spooled, why: &str) {
        REPORTS_LOST.fetch_add(1, Ordering::Relaxed);
        tracing::error!(
            owner = %entry.owner,
            to = %entry.to,
            attempts = entry.attempts,
            why,
            reports_lost = REPORTS_LOST.load(Ordering::Relaxed),
            "a delivery report was given up"
        );
        self.done(entry);
    }

    /// Gives up every entry older than [`MAX_AGE_SECS`]; returns how many. Unreadable entries
    /// (another key, damage) are given up too.
    pub fn expire(&self) -> usize {
        let t = now();
        let mut n = 0;
        for id in self.ids().unwrap_or_default() {
            match self.read(&id) {
                Some(e) if t - e.created > MAX_AGE_SECS => {
                    self.give_up(&e, "expired");
                    n += 1;
                }
                Some(_) => {}
                None => {
                    REPORTS_LOST.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(id, "an unreadable delivery report was removed");
                    self.remove(&id);
                    n += 1;
                }
            }
        }
        n
    }

    /// Entries waiting, for tests and status.
    pub fn len(&self) -> usize {
        self.ids().map(|i| i.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_encrypted_at_rest_and_come_back_to_their_owner() {
        let home = tempfile::tempdir().unwrap();
        let spool = ReportSpool::open(home.path()).unwrap();
        let report = Report::from_spool(b"Final-Recipient: rfc822; bob@x\r\n".to_vec(), false);
        spool.put("alice", "alice@x", &report).unwrap();
        assert_eq!(spool.len(), 1);
        let dir = home.path().join("spool/reports");
        let file = fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
        let on_disk = fs::read_to_string(&file).unwrap();
        assert!(!on_disk.contains("bob@x") && !on_disk.contains("alice"));
        let mode = fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);

        assert!(spool.due("mallory").is_empty(), "another login's report");
        let due = spool.due("alice");
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].report().unwrap(), report);
        spool.retry_later(&due[0]);
        assert!(spool.due("alice").is_empty(), "backing off");
        // Reopened (a restart): the key is kept, the entry still reads.
        let again = ReportSpool::open(home.path()).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again.expire(), 0);

        // A damaged entry is removed and counted, not kept forever.
        fs::write(&file, b"{\"nonce\":\"AAAA\",\"data\":\"AAAA\"}").unwrap();
        let lost = REPORTS_LOST.load(Ordering::Relaxed);
        assert_eq!(again.expire(), 1);
        assert!(again.is_empty());
        assert!(REPORTS_LOST.load(Ordering::Relaxed) > lost);
    }

    #[test]
    fn backoff_doubles_up_to_an_hour() {
        assert_eq!(backoff(0), 60);
        assert_eq!(backoff(1), 120);
        assert_eq!(backoff(10), 3600);
    }
}
