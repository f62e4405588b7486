//! The sizes of decrypted messages, remembered across sessions and restarts, so that `LIST`
//! and `STAT` give the octets `RETR` will serve without decrypting the maildrop.
//!
//! Keyed by the server's unique-id (UIDL) together with the server's own size for it: an
//! entry is only believed while both still match. A view's size also depends on what built it
//! (the keys, the keyring that checks signatures, the size limit, meshmail's version): the
//! book carries a digest of those, its epoch, and a book of another epoch is not read. The file is sealed (AES-256-GCM, key derived
//! from the account's secret) because sizes say something about content; it is rewritten
//! whole (write, then rename) at the end of a session that learned something, and bounded to
//! [`MAX_ENTRIES`].

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::hkdf::{Salt, HKDF_SHA256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Entries kept at most; beyond, the oldest tenth is dropped (they only cost a size estimate).
pub const MAX_ENTRIES: usize = 200_000;
/// The epoch: a SHA-256 digest.
const EPOCH: usize = 32;
/// Longest unique-id kept (RFC 1939 §7: 1 to 70 characters).
const MAX_UIDL: usize = 70;
const FILE: &str = "pop3-sizes";
const AAD: &[u8] = b"meshmail pop3 sizes v1";

/// What meshmail serves for one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Known {
    /// The size the server gave in its scan listing.
    server: u64,
    /// The octets `RETR` serves through meshmail.
    served: u64,
    /// When it was learned (a counter: the order entries are dropped in).
    seen: u64,
}

/// One account's remembered sizes.
pub struct SizeBook {
    path: PathBuf,
    epoch: [u8; EPOCH],
    key: LessSafeKey,
    state: Mutex<Book>,
    /// Held while the file is written: two sessions ending together write one after the
    /// other (they share the temporary file).
    writing: Mutex<()>,
}

#[derive(Default)]
struct Book {
    entries: HashMap<String, Known>,
    clock: u64,
    dirty: bool,
}

impl SizeBook {
    /// The book under `home` (empty when there is none, it cannot be opened, or it was written
    /// in another `epoch`: a damaged or outdated file costs estimates, never a wrong size).
    /// `epoch` is a digest of what decides the views' bytes (see [`epoch`]).
    pub fn open(home: &Path, secret: &[u8], epoch: [u8; EPOCH]) -> Option<SizeBook> {
        let prk = Salt::new(HKDF_SHA256, AAD).extract(secret);
        let okm = prk.expand(&[b"sizes key"], &AES_256_GCM).ok()?;
        let key = LessSafeKey::new(UnboundKey::from(okm));
        let path = home.join(FILE);
        let entries = std::fs::read(&path)
            .ok()
            .and_then(|sealed| open_sealed(&key, sealed))
            .and_then(|plain| {
                let body = plain.strip_prefix(epoch.as_slice())?;
                decode(body)
            })
            .unwrap_or_default();
        let clock = entries.values().map(|k| k.seen).max().unwrap_or(0);
        Some(SizeBook {
            path,
            epoch,
            key,
            state: Mutex::new(Book {
                entries,
                clock,
                dirty: false,
            }),
            writing: Mutex::new(()),
        })
    }

    /// The served size of the message with this unique-id and server size, if known.
    pub fn get(&self, uidl: &str, server: u64) -> Option<u64> {
        let book = self.state.lock().ok()?;
        book.entries
            .get(uidl)
            .filter(|k| k.server == server)
            .map(|k| k.served)
    }

    /// Remembers a served size.
    pub fn set(&self, uidl: &str, server: u64, served: u64) {
        if uidl.is_empty() || uidl.len() > MAX_UIDL {
            return;
        }
        let Ok(mut book) = self.state.lock() else {
            return;
        };
        book.clock += 1;
        let seen = book.clock;
        let known = Known {
            server,
            served,
            seen,
        };
        if book.entries.get(uidl).map(|k| (k.server, k.served)) == Some((server, served)) {
            return;
        }
        book.entries.insert(uidl.to_owned(), known);
        book.dirty = true;
        if book.entries.len() > MAX_ENTRIES {
            // A tenth at once: the sort is paid once per 20,000 new entries, not per entry.
            let mut ages: Vec<u64> = book.entries.values().map(|k| k.seen).collect();
            ages.sort_unstable();
            let cut = ages[MAX_ENTRIES / 10];
            book.entries.retain(|_, k| k.seen >= cut);
        }
    }

    /// Writes the book if it changed (blocking file I/O: call it off the reactor).
    pub fn save(&self) {
        let Ok(_writing) = self.writing.lock() else {
            return;
        };
        let plain = {
            let Ok(mut book) = self.state.lock() else {
                return;
            };
            if !book.dirty {
                return;
            }
            book.dirty = false;
            let mut plain = self.epoch.to_vec();
            plain.extend_from_slice(&encode(&book.entries));
            plain
        };
        if let Err(e) = self.write(plain) {
            tracing::warn!(error = %e, "the POP3 size book could not be written");
        }
    }

    fn write(&self, mut plain: Vec<u8>) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| std::io::Error::other("no randomness"))?;
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(AAD),
                &mut plain,
            )
            .map_err(|_| std::io::Error::other("sealing failed"))?;
        let tmp = self.path.with_extension("tmp");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&nonce)?;
        f.write_all(&plain)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}

/// The epoch of views built by this meshmail with these keys (`key_ids`: the account's
/// certificates' fingerprints), this keyring (its certificates' fingerprints) and this size
/// limit.
pub fn epoch(key_ids: &[String], keyring: &[String], max_message_size: usize) -> [u8; EPOCH] {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(env!("CARGO_PKG_VERSION").as_bytes());
    ctx.update(&(max_message_size as u64).to_be_bytes());
    for list in [key_ids, keyring] {
        let mut sorted = list.to_vec();
        sorted.sort();
        ctx.update(&(sorted.len() as u64).to_be_bytes());
        for id in sorted {
            ctx.update(&(id.len() as u64).to_be_bytes());
            ctx.update(id.as_bytes());
        }
    }
    let mut out = [0u8; EPOCH];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn open_sealed(key: &LessSafeKey, mut sealed: Vec<u8>) -> Option<Vec<u8>> {
    if sealed.len() < NONCE_LEN {
        return None;
    }
    let mut body = sealed.split_off(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(&sealed).ok()?;
    let n = key
        .open_in_place(nonce, Aad::from(AAD), &mut body)
        .ok()?
        .len();
    body.truncate(n);
    Some(body)
}

/// `(len(1) uidl server(8) served(8) seen(8))*`.
fn encode(entries: &HashMap<String, Known>) -> Vec<u8> {
    let mut out = Vec::with_capacity(entries.len() * 40);
    for (uidl, k) in entries {
        // set() keeps unique-ids to MAX_UIDL octets.
        out.push(uidl.len() as u8);
        out.extend_from_slice(uidl.as_bytes());
        out.extend_from_slice(&k.server.to_be_bytes());
        out.extend_from_slice(&k.served.to_be_bytes());
        out.extend_from_slice(&k.seen.to_be_bytes());
    }
    out
}

fn decode(mut bytes: &[u8]) -> Option<HashMap<String, Known>> {
    let mut out = HashMap::new();
    let u64_at = |b: &mut &[u8]| -> Option<u64> {
        let (head, rest) = b.split_at_checked(8)?;
        *b = rest;
        Some(u64::from_be_bytes(head.try_into().ok()?))
    };
    while let Some((&len, rest)) = bytes.split_first() {
        let (uidl, rest) = rest.split_at_checked(len as usize)?;
        let uidl = std::str::from_utf8(uidl).ok()?.to_owned();
        bytes = rest;
        let server = u64_at(&mut bytes)?;
        let served = u64_at(&mut bytes)?;
        let seen = u64_at(&mut bytes)?;
        if out.len() >= MAX_ENTRIES {
            return None;
        }
        out.insert(
            uidl,
            Known {
                server,
                served,
                seen,
            },
        );
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const E: [u8; EPOCH] = [7; EPOCH];

    #[test]
    fn sizes_survive_a_restart_and_need_the_same_server_size() {
        let home = tempfile::tempdir().expect("tempdir");
        let book = SizeBook::open(home.path(), b"secret", E).expect("book");
        book.set("00000001abc", 3000, 1800);
        assert_eq!(book.get("00000001abc", 3000), Some(1800));
        book.save();
        let again = SizeBook::open(home.path(), b"secret", E).expect("book");
        assert_eq!(again.get("00000001abc", 3000), Some(1800));
        // The same unique-id with another server size is another message.
        assert_eq!(again.get("00000001abc", 3001), None);
        // Another account's key opens nothing.
        let other = SizeBook::open(home.path(), b"other", E).expect("book");
        assert_eq!(other.get("00000001abc", 3000), None);
        // Views built with another keyring (or keys, limit, version) may differ in size.
        let later = epoch(&["k".into()], &["a new sender's key".into()], 1 << 20);
        let outdated = SizeBook::open(home.path(), b"secret", later).expect("book");
        assert_eq!(outdated.get("00000001abc", 3000), None);
    }

    #[test]
    fn a_damaged_file_is_an_empty_book() {
        let home = tempfile::tempdir().expect("tempdir");
        let book = SizeBook::open(home.path(), b"secret", E).expect("book");
        book.set("a", 1, 2);
        book.save();
        let path = home.path().join(FILE);
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        std::fs::write(&path, bytes).expect("write");
        let again = SizeBook::open(home.path(), b"secret", E).expect("book");
        assert_eq!(again.get("a", 1), None);
    }

    #[test]
    fn decode_never_panics_on_damage() {
        let mut entries = HashMap::new();
        entries.insert(
            "x".to_owned(),
            Known {
                server: 1,
                served: 2,
                seen: 3,
            },
        );
        let good = encode(&entries);
        for cut in 0..good.len() {
            let _ = decode(&good[..cut]);
        }
        assert_eq!(decode(&good), Some(entries));
    }
}
