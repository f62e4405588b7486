//! The local policy store and keyring: other people's policies and certificates kept on disk.
//!
//! The store is a cache, not an authority: an entry older than its TTL is refreshed from DNS or
//! HTTPS, and every entry is verified again when read. It also remembers the newest `created`
//! seen for each address (one key may sign policies for several addresses), so an older policy
//! is never accepted after a newer one (no rollback), even when the newer one has since
//! expired. Entries are replaced under a lock (a file lock, so the CLI and `serve` agree) by
//! write, fsync, rename, and never by an older one: concurrent lookups cannot corrupt the file
//! or lower the floor.
//!
//! ```text
//! policies/<24 UDF characters>.<16 hex of SHA-256(address)>.json   {"jws", "fetched", "created"}
//! policies/.lock
//! keyring/*.asc|*.pgp|*.gpg                      certificates the user put there (pinned)
//! keyring/fetched/<FINGERPRINT>.pgp              certificates meshmail fetched (cache)
//! ```

use crate::address::Udf;
use crate::crypto::openpgp;
use sequoia_openpgp::Cert;
use serde::{Deserialize, Serialize};
use std::fs;
use std::path::{Path, PathBuf};
use time::OffsetDateTime;

/// Files larger than this in the store are ignored.
const MAX_FILE: u64 = 1024 * 1024;

/// A stored policy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredPolicy {
    pub jws: String,
    #[serde(with = "time::serde::rfc3339")]
    pub fetched: OffsetDateTime,
    /// `created` of the newest valid policy seen for this fingerprint (the rollback floor).
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
}

/// Policies and certificates on disk under a key store directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    policies: PathBuf,
    keyring: PathBuf,
}

impl LocalStore {
    pub fn new(home: &Path) -> LocalStore {
        LocalStore {
            policies: home.join("policies"),
            keyring: home.join("keyring"),
        }
    }

    /// The stored policy of `address` under `udf`, if any.
    pub fn load_policy(&self, udf: &Udf, address: &str) -> Option<StoredPolicy> {
        let bytes = read_limited(&self.policy_path(udf, address))?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Stores a verified policy of `address`, unless a newer one is already stored (then only
    /// that one's floor counts). Failing to write the cache is logged, never fatal.
    pub fn save_policy(&self, udf: &Udf, address: &str, stored: &StoredPolicy) {
        let result = (|| -> std::io::Result<()> {
            fs::create_dir_all(&self.policies)?;
            let lock = fs::OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(self.policies.join(".lock"))?;
            lock.lock()?;
            let path = self.policy_path(udf, address);
            if let Some(current) = self.load_policy(udf, address) {
                if current.created > stored.created {
                    return Ok(()); // never lower the rollback floor
                }
            }
            let mut unique = [0u8; 8];
            let _ = aws_lc_rs::rand::fill(&mut unique);
            let tmp =
                path.with_extension(format!("{}.tmp", data_encoding::HEXLOWER.encode(&unique)));
            let written = (|| {
                let mut f = fs::File::create(&tmp)?;
                std::io::Write::write_all(
                    &mut f,
                    &serde_json::to_vec_pretty(stored).map_err(std::io::Error::other)?,
                )?;
                f.sync_all()?;
                fs::rename(&tmp, &path)?;
                fs::File::open(&self.policies)?.sync_all()
            })();
            if written.is_err() {
                let _ = fs::remove_file(&tmp);
            }
            written
            // The lock is released when `lock` is dropped.
        })();
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot write the local policy store");
        }
    }

    /// Certificates in the keyring (pinned and fetched) whose primary fingerprint is `fpr`.
    pub fn certs_for(&self, fpr: &[u8]) -> Vec<Cert> {
        self.certs_matching(&|c: &Cert| c.fingerprint().as_bytes() == fpr)
    }

    /// Certificates in the keyring (pinned and fetched) that `wanted` accepts.
    pub fn certs_matching(&self, wanted: &dyn Fn(&Cert) -> bool) -> Vec<Cert> {
        self.certs_in(
            &[self.keyring.clone(), self.keyring.join("fetched")],
            wanted,
        )
    }

    /// Certificates the user put in the keyring (not those meshmail fetched for fingerprint
    /// addresses) that `wanted` accepts: the only local ones a plain address may use, since a
    /// fetched certificate can carry any user ID its maker liked.
    pub fn pinned_certs_matching(&self, wanted: &dyn Fn(&Cert) -> bool) -> Vec<Cert> {
        self.certs_in(std::slice::from_ref(&self.keyring), wanted)
    }

    fn certs_in(&self, dirs: &[PathBuf], wanted: &dyn Fn(&Cert) -> bool) -> Vec<Cert> {
        let mut found = Vec::new();
        for dir in dirs {
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
                if !matches!(ext, "asc" | "pgp" | "gpg") {
                    continue;
                }
                let Some(bytes) = read_limited(&path) else {
                    continue;
                };
                if let Ok(certs) = openpgp::parse_certs(&bytes) {
                    found.extend(certs.into_iter().filter(|c| wanted(c)));
                }
            }
        }
        found
    }

    /// Keeps a fetched certificate (merged with what is already there).
    pub fn save_fetched_cert(&self, cert: &Cert) {
        let dir = self.keyring.join("fetched");
        let result = (|| -> std::io::Result<()> {
            fs::create_dir_all(&dir)?;
            let path = dir.join(format!("{}.pgp", cert.fingerprint().to_hex()));
            let tmp = path.with_extension("tmp");
            fs::write(&tmp, openpgp::public_bytes(cert))?;
            fs::rename(tmp, path)
        })();
        if let Err(e) = result {
            tracing::warn!(error = %e, "cannot write the local keyring");
        }
    }

    fn policy_path(&self, udf: &Udf, address: &str) -> PathBuf {
        let digest = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            address.to_lowercase().as_bytes(),
        );
        let tag = data_encoding::HEXLOWER.encode(&digest.as_ref()[..8]);
        self.policies
            .join(format!("{}.{tag}.json", udf.dns_label()))
    }
}

fn read_limited(path: &Path) -> Option<Vec<u8>> {
    let meta = fs::metadata(path).ok()?;
    if meta.len() > MAX_FILE {
        return None;
    }
    fs::read(path).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sequoia_openpgp::cert::CertBuilder;

    fn stored(created: i64) -> StoredPolicy {
        StoredPolicy {
            jws: format!("jws-{created}"),
            fetched: OffsetDateTime::now_utc(),
            created: OffsetDateTime::from_unix_timestamp(1_700_000_000 + created).unwrap(),
        }
    }

    #[test]
    fn concurrent_saves_keep_the_newest_and_one_key_keeps_addresses_apart() {
        let home = tempfile::tempdir().unwrap();
        let store = std::sync::Arc::new(LocalStore::new(home.path()));
        let udf = Udf::of_ed25519_key(&[7u8; 32], 140);
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let store = store.clone();
                let udf = udf.clone();
                std::thread::spawn(move || {
                    for round in 0..20 {
                        store.save_policy(
                            &udf,
                            "alice@example.test",
                            &stored((i * 7 + round) % 50),
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let kept = store.load_policy(&udf, "alice@example.test").unwrap();
        assert_eq!(
            kept.created,
            stored(49).created,
            "the newest survives any interleaving"
        );
        // No temporary file is left behind.
        let names: Vec<String> = fs::read_dir(home.path().join("policies"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
        // An older policy never replaces a newer one.
        store.save_policy(&udf, "alice@example.test", &stored(3));
        assert_eq!(
            store.load_policy(&udf, "alice@example.test").unwrap().jws,
            "jws-49"
        );
        // The same key's policy for another address has its own record and floor.
        store.save_policy(&udf, "alice@other.test", &stored(1));
        assert_eq!(
            store.load_policy(&udf, "alice@other.test").unwrap().jws,
            "jws-1"
        );
        assert_eq!(
            store.load_policy(&udf, "Alice@Example.test").unwrap().jws,
            "jws-49"
        );
    }

    #[test]
    fn fetched_certificates_are_not_pinned() {
        let home = tempfile::tempdir().unwrap();
        let store = LocalStore::new(home.path());
        let (fetched, _) = CertBuilder::general_purpose(Some("bob@example.test"))
            .generate()
            .unwrap();
        store.save_fetched_cert(&fetched);
        let (pinned, _) = CertBuilder::general_purpose(Some("bob@example.test"))
            .generate()
            .unwrap();
        fs::write(
            home.path().join("keyring/bob.pgp"),
            openpgp::public_bytes(&pinned),
        )
        .unwrap();
        let all = store.certs_matching(&|_| true);
        assert_eq!(all.len(), 2);
        let only = store.pinned_certs_matching(&|_| true);
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].fingerprint(), pinned.fingerprint());
    }
}
