//! Entry point for the decryption fuzz target (`integration/fuzz`): arbitrary bytes as an
//! OpenPGP message, a CMS structure and a whole stored message, opened with keys made once
//! per process. Any input must give a result or an error, never a panic.

use super::decrypt::DecryptionKeys;
use super::smime::SmimeCert;
use std::sync::OnceLock;

/// Bytes a decryption may produce at most (as the proxy limits it).
const MAX: usize = 1 << 20;

fn keys() -> Option<&'static DecryptionKeys> {
    static KEYS: OnceLock<Option<DecryptionKeys>> = OnceLock::new();
    KEYS.get_or_init(|| {
        let (cert, _) = crate::keys::generate::openpgp_cert("fuzz@example.test").ok()?;
        let (der, key) = crate::keys::generate::smime_cert("fuzz@example.test").ok()?;
        let smime = SmimeCert::from_der(&der).ok();
        Some(DecryptionKeys::new(cert, smime, Some(key), Vec::new()))
    })
    .as_ref()
}

/// Arbitrary bytes through every decryption entry point.
pub fn decrypt(data: &[u8]) {
    let Some(keys) = keys() else {
        return;
    };
    let _ = keys.open_openpgp(data, &[], MAX);
    let _ = keys.open_cms(data, MAX);
    let _ = crate::imap::view::compose::compose(data, keys, MAX);
}
