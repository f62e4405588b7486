//! The mark on mail the sidecar encrypted at rest: `v=1; for=<mailbox>; mac=<HMAC>`, where the
//! HMAC-SHA256 under a local secret covers the mailbox and the Message-ID. Incoming mail never
//! gets to carry one (any field of that name is removed on arrival), and the sidecar never
//! trusts one as a "done" marker: whether a message is encrypted is read from its structure.
//! A reader's view that sees the mark says "encrypted-at-rest"; a forged mark on a sender's
//! end-to-end message could only make it look less protected than it is.

use crate::secret::Secret;
use aws_lc_rs::hmac;
use std::path::Path;

pub struct MarkKey {
    key: hmac::Key,
}

impl MarkKey {
    /// Reads the secret, or creates it (32 random bytes, readable by the owner only).
    pub fn load_or_create(path: &Path) -> std::io::Result<MarkKey> {
        let bytes = match std::fs::read(path) {
            Ok(b) if b.len() >= 32 => Secret::new(b),
            Ok(_) => {
                return Err(std::io::Error::other(format!(
                    "{}: shorter than 32 bytes",
                    path.display()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut fresh = vec![0u8; 32];
                aws_lc_rs::rand::fill(&mut fresh)
                    .map_err(|_| std::io::Error::other("no randomness"))?;
                if let Some(dir) = path.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                crate::keys::account::write_new(path, &fresh, 0o600)
                    .map_err(|e| std::io::Error::other(e.to_string()))?;
                Secret::new(fresh)
            }
            Err(e) => return Err(e),
        };
        Ok(MarkKey {
            key: hmac::Key::new(hmac::HMAC_SHA256, bytes.expose()),
        })
    }

    /// The mark's value for a copy stored for `mailbox`. `flag` records that plaintext arrived
    /// for the mailbox's fingerprint address.
    pub fn mark(&self, mailbox: &str, message_id: Option<&str>, flag: bool) -> String {
        let mut ctx = hmac::Context::with_key(&self.key);
        ctx.update(b"meshmail-at-rest-v1\0");
        ctx.update(mailbox.to_ascii_lowercase().as_bytes());
        ctx.update(b"\0");
        ctx.update(message_id.unwrap_or("").trim().as_bytes());
        ctx.update(if flag { b"\0flag" } else { b"\0none" });
        let mac = data_encoding::BASE64URL_NOPAD.encode(ctx.sign().as_ref());
        let flag = if flag {
            "; arrived=plaintext-to-fingerprint-address"
        } else {
            ""
        };
        format!("v=1; for=<{mailbox}>{flag}; mac={mac}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_secret_is_private_and_the_mark_depends_on_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mark.key");
        let a = MarkKey::load_or_create(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = MarkKey::load_or_create(&path).unwrap();
        let m = a.mark("alice@example.test", Some("<1@x>"), false);
        assert_eq!(m, again.mark("alice@example.test", Some("<1@x>"), false));
        assert_ne!(m, a.mark("bob@example.test", Some("<1@x>"), false));
        let other = MarkKey::load_or_create(&dir.path().join("other.key")).unwrap();
        assert_ne!(m, other.mark("alice@example.test", Some("<1@x>"), false));
        assert!(a
            .mark("alice@example.test", None, true)
            .contains("arrived=plaintext-to-fingerprint-address"));
    }
}
