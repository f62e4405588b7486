//! Local users' public keys: one file per mailbox in `keys_dir`, named after the address it
//! holds the key for (`alice@example.com.asc` for OpenPGP, `alice@example.com.pem` for S/MIME).
//! A file whose certificate does not name that address is refused; so is a key that is
//! expired, revoked or cannot encrypt. Those addresses are *unusable*, never "without a key":
//! their mail is deferred (and an alarm logged) rather than stored in plaintext.
//!
//! The directory is read again when it changes (looked at no more than once a second). A
//! directory that cannot be read is an error for the caller (a 4xx), never "no key".

use crate::crypto::openpgp;
use crate::crypto::smime::SmimeCert;
use sequoia_openpgp::Cert;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

/// Key files larger than this are refused (a certificate with many signatures is well below).
const MAX_KEY_FILE: u64 = 1024 * 1024;
/// Files in the directory.
const MAX_FILES: usize = 100_000;
/// How often the directory is looked at for changes.
const RECHECK: Duration = Duration::from_secs(1);

/// A local user's key, checked when the directory was read.
#[derive(Debug, Clone)]
pub enum LocalKey {
    OpenPgp(Box<Cert>),
    Smime(SmimeCert),
}

/// What the directory says about one mailbox.
#[derive(Debug, Clone)]
pub enum Lookup {
    Key(Arc<LocalKey>),
    /// No file for this mailbox: its mail is stored as it arrives.
    NoKey,
    /// A file exists but its key cannot be used (why): the mail is deferred.
    Unusable(String),
}

/// The directory cannot be read now.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the key directory {dir} cannot be read: {reason}")]
pub struct DirectoryError {
    dir: String,
    reason: String,
}

type Stamp = Vec<(String, SystemTime, u64)>;

struct Loaded {
    stamp: Stamp,
    checked: Instant,
    keys: Arc<HashMap<String, Lookup>>,
}

/// The key directory, read on first use and again when it changes.
pub struct KeyDirectory {
    dir: PathBuf,
    delimiter: Option<char>,
    loaded: Mutex<Option<Loaded>>,
}

impl KeyDirectory {
    pub fn new(dir: &Path, delimiter: Option<char>) -> KeyDirectory {
        KeyDirectory {
            dir: dir.to_owned(),
            delimiter,
            loaded: Mutex::new(None),
        }
    }

    /// The mailbox an address is delivered to, as keys are named: lower case, the
    /// `recipient_delimiter` extension removed (`Alice+news@Example.COM` → `alice@example.com`).
    pub fn normalize(&self, address: &str) -> String {
        let lower = address.to_lowercase();
        let Some((local, domain)) = lower.rsplit_once('@') else {
            return lower;
        };
        let local = match self.delimiter {
            Some(d) => local.split_once(d).map_or(local, |(base, _)| base),
            None => local,
        };
        format!("{local}@{domain}")
    }

    /// The key of the mailbox `address` is delivered to. Blocking (reads the directory when it
    /// changed): call it off the reactor.
    pub fn lookup(&self, address: &str) -> Result<Lookup, DirectoryError> {
        let keys = self.current()?;
        Ok(keys
            .get(&self.normalize(address))
            .cloned()
            .unwrap_or(Lookup::NoKey))
    }

    /// How many mailboxes have a usable key, and how many files were refused.
    pub fn counts(&self) -> Result<(usize, usize), DirectoryError> {
        let keys = self.current()?;
        let usable = keys
            .values()
            .filter(|l| matches!(l, Lookup::Key(_)))
            .count();
        Ok((usable, keys.len() - usable))
    }

    fn current(&self) -> Result<Arc<HashMap<String, Lookup>>, DirectoryError> {
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = loaded.as_ref() {
            if l.checked.elapsed() < RECHECK {
                return Ok(l.keys.clone());
            }
        }
        let stamp = self.stamp()?;
        if let Some(l) = loaded.as_mut() {
            if l.stamp == stamp {
                l.checked = Instant::now();
                return Ok(l.keys.clone());
            }
        }
        let keys = Arc::new(self.read(&stamp));
        let (usable, refused) = (
            keys.values()
                .filter(|l| matches!(l, Lookup::Key(_)))
                .count(),
            keys.values()
                .filter(|l| matches!(l, Lookup::Unusable(_)))
                .count(),
        );
        tracing::info!(dir = %self.dir.display(), usable, refused, "key directory loaded");
        *loaded = Some(Loaded {
            stamp,
            checked: Instant::now(),
            keys: keys.clone(),
        });
        Ok(keys)
    }

    fn error(&self, reason: impl ToString) -> DirectoryError {
        DirectoryError {
            dir: self.dir.display().to_string(),
            reason: reason.to_string(),
        }
    }

    /// Names, modification times and sizes of the key files: any change means a new read.
    fn stamp(&self) -> Result<Stamp, DirectoryError> {
        let mut stamp = Vec::new();
        for entry in std::fs::read_dir(&self.dir).map_err(|e| self.error(e))? {
            let entry = entry.map_err(|e| self.error(e))?;
            let meta = entry.metadata().map_err(|e| self.error(e))?;
            if !meta.is_file() {
                continue;
            }
            if stamp.len() >= MAX_FILES {
                return Err(self.error(format!("more than {MAX_FILES} files")));
            }
            stamp.push((
                entry.file_name().to_string_lossy().into_owned(),
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                meta.len(),
            ));
        }
        stamp.sort();
        Ok(stamp)
    }

    fn read(&self, stamp: &Stamp) -> HashMap<String, Lookup> {
        let mut keys = HashMap::new();
        let now = SystemTime::now();
        for (name, _, len) in stamp {
            let Some((address, kind)) = key_file_address(name) else {
                continue;
            };
            let address = self.normalize(&address);
            let lookup = if *len > MAX_KEY_FILE {
                Lookup::Unusable(format!("{name} is larger than {MAX_KEY_FILE} bytes"))
            } else {
                match std::fs::read(self.dir.join(name)) {
                    Ok(bytes) => check(kind, &bytes, &address, now),
                    Err(e) => Lookup::Unusable(format!("{name}: {e}")),
                }
            };
            if let Lookup::Unusable(why) = &lookup {
                tracing::error!(file = %name, reason = %why, "ALARM: a local user's key cannot be used; their mail is deferred");
            }
            // Two files for one mailbox (alice.asc and alice.pem): the first usable one wins.
            match keys.get(&address) {
                Some(Lookup::Key(_)) => {}
                _ => {
                    keys.insert(address, lookup);
                }
            }
        }
        keys
    }
}

#[derive(Debug, Clone, Copy)]
enum KeyKind {
    OpenPgp,
    Smime,
}

/// The address a key file is named after, and its kind; `None` for other files.
fn key_file_address(name: &str) -> Option<(String, KeyKind)> {
    let (stem, ext) = name.rsplit_once('.')?;
    let kind = match ext.to_ascii_lowercase().as_str() {
        "asc" | "pgp" | "gpg" => KeyKind::OpenPgp,
        "pem" | "crt" | "der" => KeyKind::Smime,
        _ => return None,
    };
    let (local, domain) = stem.rsplit_once('@')?;
    (!local.is_empty() && domain.contains('.')).then(|| (stem.to_owned(), kind))
}

/// Reads one key file and checks it for `address` at `now`.
fn check(kind: KeyKind, bytes: &[u8], address: &str, now: SystemTime) -> Lookup {
    match kind {
        KeyKind::OpenPgp => {
            let certs = match openpgp::parse_certs(bytes) {
                Ok(c) => c,
                Err(e) => return Lookup::Unusable(format!("no OpenPGP certificate: {e}")),
            };
            let Some(cert) = certs
                .into_iter()
                .find(|c| openpgp::certifies_address(c, address))
            else {
                return Lookup::Unusable(format!("the certificate does not name {address}"));
            };
            match openpgp::check_encryptable(&cert, now) {
                Ok(()) => Lookup::Key(Arc::new(LocalKey::OpenPgp(Box::new(cert)))),
                Err(e) => Lookup::Unusable(e.to_string()),
            }
        }
        KeyKind::Smime => {
            let der = match pem_or_der(bytes) {
                Some(d) => d,
                None => return Lookup::Unusable("not a PEM or DER certificate".into()),
            };
            let cert = match SmimeCert::from_der(&der) {
                Ok(c) => c,
                Err(e) => return Lookup::Unusable(e.to_string()),
            };
            let unix = now
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            match cert.check_for(address, unix) {
                Ok(()) => Lookup::Key(Arc::new(LocalKey::Smime(cert))),
                Err(e) => Lookup::Unusable(e.to_string()),
            }
        }
    }
}

/// The DER of the first certificate in a PEM file, or the bytes themselves when DER.
fn pem_or_der(bytes: &[u8]) -> Option<Vec<u8>> {
    if bytes.first() == Some(&0x30) {
        return Some(bytes.to_vec());
    }
    rustls_pemfile::certs(&mut &bytes[..])
        .next()?
        .ok()
        .map(|c| c.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sequoia_openpgp::cert::CertBuilder;
    use sequoia_openpgp::serialize::SerializeInto;

    fn cert_for(address: &str) -> Vec<u8> {
        let (cert, _) = CertBuilder::general_purpose(Some(format!("<{address}>")))
            .generate()
            .unwrap();
        let armored = cert.armored().to_vec().unwrap();
        armored
    }

    #[test]
    fn addresses_are_normalised_and_files_checked() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("alice@example.test.asc"),
            cert_for("alice@example.test"),
        )
        .unwrap();
        // bob's file holds carol's certificate: refused, never "no key".
        std::fs::write(
            dir.path().join("bob@example.test.asc"),
            cert_for("carol@example.test"),
        )
        .unwrap();
        std::fs::write(dir.path().join("dave@example.test.asc"), b"garbage").unwrap();
        std::fs::write(dir.path().join("README"), b"not a key").unwrap();
        let d = KeyDirectory::new(dir.path(), Some('+'));
        assert!(matches!(
            d.lookup("Alice+News@EXAMPLE.test").unwrap(),
            Lookup::Key(_)
        ));
        assert!(matches!(
            d.lookup("bob@example.test").unwrap(),
            Lookup::Unusable(_)
        ));
        assert!(matches!(
            d.lookup("dave@example.test").unwrap(),
            Lookup::Unusable(_)
        ));
        assert!(matches!(
            d.lookup("erin@example.test").unwrap(),
            Lookup::NoKey
        ));
        assert_eq!(d.counts().unwrap(), (1, 2));
    }

    #[test]
    fn smime_certificates_in_pem_or_der_name_their_address() {
        let dir = tempfile::tempdir().unwrap();
        let (der, _) = crate::keys::generate::smime_cert("frank@example.test").unwrap();
        let pem = crate::keys::account::pem("CERTIFICATE", &der);
        std::fs::write(dir.path().join("frank@example.test.pem"), &pem).unwrap();
        std::fs::write(dir.path().join("frank2@example.test.der"), &der).unwrap();
        std::fs::write(dir.path().join("erin@example.test.der"), &der).unwrap();
        let d = KeyDirectory::new(dir.path(), None);
        assert!(matches!(
            d.lookup("frank@example.test").unwrap(),
            Lookup::Key(k) if matches!(*k, LocalKey::Smime(_))
        ));
        // The certificate names frank, not frank2 or erin: refused, never "no key".
        assert!(matches!(
            d.lookup("frank2@example.test").unwrap(),
            Lookup::Unusable(_)
        ));
        assert!(matches!(
            d.lookup("erin@example.test").unwrap(),
            Lookup::Unusable(_)
        ));
    }

    #[test]
    fn a_changed_directory_is_read_again_and_an_unreadable_one_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let d = KeyDirectory::new(dir.path(), None);
        assert!(matches!(
            d.lookup("erin@example.test").unwrap(),
            Lookup::NoKey
        ));
        std::fs::write(
            dir.path().join("erin@example.test.asc"),
            cert_for("erin@example.test"),
        )
        .unwrap();
        // Looked at again after RECHECK.
        d.loaded.lock().unwrap().as_mut().unwrap().checked -= RECHECK;
        assert!(matches!(
            d.lookup("erin@example.test").unwrap(),
            Lookup::Key(_)
        ));
        let gone = dir.path().join("gone");
        let d = KeyDirectory::new(&gone, None);
        assert!(d.lookup("erin@example.test").is_err());
    }
}
