//! Secret material as a type: a redacted `Debug`, zeroized on drop, never `Display`.
//!
//! Every private key, passphrase and sealed blob meshmail holds in memory lives in a
//! [`Secret`], so that a stray `{:?}` in a log line or an error prints `Secret(<redacted>)`
//! instead of key bytes.

use std::fmt;
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Bytes or text that must never be logged and are wiped when dropped.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret<T: Zeroize>(T);

impl<T: Zeroize> Secret<T> {
    /// Wraps a value; from here on it is redacted and zeroized on drop.
    pub fn new(value: T) -> Self {
        Secret(value)
    }

    /// The secret value, for the code that must use it (sign, decrypt, write to a 0600 file).
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T: Zeroize> Drop for Secret<T> {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl<T: Zeroize> ZeroizeOnDrop for Secret<T> {}

impl<T: Zeroize> fmt::Debug for Secret<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl<T: Zeroize> From<T> for Secret<T> {
    fn from(value: T) -> Self {
        Secret::new(value)
    }
}

/// Secret bytes: key material, sealed key files.
pub type SecretBytes = Secret<Vec<u8>>;

/// A secret string: a passphrase.
pub type SecretString = Secret<String>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let s = SecretString::new("hunter2".to_owned());
        let shown = format!("{s:?}");
        assert!(!shown.contains("hunter2"));
        assert_eq!(shown, "Secret(<redacted>)");
        assert_eq!(s.expose(), "hunter2");
    }
}
