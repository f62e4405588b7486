//! The text form of what enrolment, rekeying and revocation exchange (device requests and
//! replies, share records, share updates, revocations): a tag line naming the kind and its
//! version, the JSON payload in base64, and, when signed, an Ed25519 signature over the tag
//! line and the JSON, in base64. Line-based and ASCII, so it survives e-mail, chat and
//! copy-paste; bounded, so a party reading one from another reads a few KB at most.

use data_encoding::BASE64;

/// An envelope's parts, as read (the signature not yet checked).
#[derive(Debug, Clone)]
pub struct Envelope {
    pub json: Vec<u8>,
    pub signature: Option<Vec<u8>>,
}

/// Reads `text` as an envelope of kind `tag` of at most `max` bytes; `None` when it is not one.
pub fn open(text: &str, tag: &str, max: usize) -> Option<Envelope> {
    let text = text.trim();
    if text.len() > max {
        return None;
    }
    let mut lines = text.lines().map(str::trim);
    if lines.next() != Some(tag) {
        return None;
    }
    let json = BASE64.decode(lines.next()?.as_bytes()).ok()?;
    let signature = match lines.next() {
        Some(l) => Some(BASE64.decode(l.as_bytes()).ok()?),
        None => None,
    };
    if lines.next().is_some() {
        return None;
    }
    Some(Envelope { json, signature })
}

/// What the signature of an envelope of kind `tag` covers.
pub fn signed_bytes(tag: &str, json: &[u8]) -> Vec<u8> {
    let mut m = format!("{tag}\n").into_bytes();
    m.extend_from_slice(json);
    m
}

/// The text of an envelope.
pub fn text(tag: &str, json: &[u8], signature: Option<&[u8]>) -> String {
    match signature {
        Some(s) => format!("{tag}\n{}\n{}\n", BASE64.encode(json), BASE64.encode(s)),
        None => format!("{tag}\n{}\n", BASE64.encode(json)),
    }
}

impl Envelope {
    /// True when the envelope carries a signature by the Ed25519 key `public`.
    pub fn signed_by(&self, tag: &str, public: &[u8]) -> bool {
        use aws_lc_rs::signature::{UnparsedPublicKey, ED25519};
        self.signature.as_ref().is_some_and(|s| {
            UnparsedPublicKey::new(&ED25519, public)
                .verify(&signed_bytes(tag, &self.json), s)
                .is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_what_is_not_one() {
        let pkcs8 = crate::keys::generate::policy_signing_key().unwrap();
        let key = aws_lc_rs::signature::Ed25519KeyPair::from_pkcs8(pkcs8.expose()).unwrap();
        let sig = key.sign(&signed_bytes("t-v1", b"{}"));
        let t = text("t-v1", b"{}", Some(sig.as_ref()));
        let e = open(&t, "t-v1", 1000).unwrap();
        assert_eq!(e.json, b"{}");
        use aws_lc_rs::signature::KeyPair;
        assert!(e.signed_by("t-v1", key.public_key().as_ref()));
        assert!(!e.signed_by("other", key.public_key().as_ref()));
        assert!(open(&t, "other", 1000).is_none());
        assert!(open(&t, "t-v1", 10).is_none());
        assert!(open(&format!("{t}extra\n"), "t-v1", 1000).is_none());
        let unsigned = open(&text("t-v1", b"{}", None), "t-v1", 1000).unwrap();
        assert!(
            unsigned.signature.is_none() && !unsigned.signed_by("t-v1", key.public_key().as_ref())
        );
    }
}
