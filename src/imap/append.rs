//! APPEND of a mapped session: drafts, sent copies and anything else the client stores are
//! encrypted to the account's own key (and signed by it) before they reach the server.
//!
//! The stored form is PGP/MIME whose payload is exactly the bytes the client appended. Only
//! Message-ID, Date and X-Mozilla-Draft-Info stay outside (clients match drafts and sent
//! copies by them); the Subject outside is `[...]`. A `Meshmail-Stored: appended` field and
//! the account's own signature tell the view to show the payload as it is, so the client gets
//! back the very bytes it stored (RFC822.SIZE included).

use crate::crypto::openpgp::{self, OpenPgpError};
use crate::mime::pgp_mime;
use sequoia_openpgp::Cert;

/// The outer field that marks a message meshmail stored for its own account.
pub const STORED_FIELD: &str = "Meshmail-Stored";
pub const STORED_VALUE: &str = "appended";

/// Fields kept outside the encryption.
const KEPT_OUTSIDE: &[&str] = &["Message-ID", "Date", "X-Mozilla-Draft-Info"];

/// The message as meshmail stores it: encrypted to `own` and signed by `signer`.
pub fn seal_for_store(
    message: &[u8],
    own: &Cert,
    signer: Option<&Cert>,
) -> Result<Vec<u8>, OpenPgpError> {
    seal_marked(message, own, signer, None)
}

/// The outer field `mailbox encrypt` finds its own APPENDs by after a crash (a random value
/// per message, recorded in its journal first).
pub const REENCRYPT_FIELD: &str = "Meshmail-Reencrypt";

/// [`seal_for_store`] with the `Meshmail-Reencrypt` field outside, when given.
pub fn seal_marked(
    message: &[u8],
    own: &Cert,
    signer: Option<&Cert>,
    reencrypt: Option<&str>,
) -> Result<Vec<u8>, OpenPgpError> {
    let mut outer = Vec::new();
    let header_end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 2)
        .unwrap_or(message.len());
    for field in crate::imap::view::mime::parse_fields(&message[..header_end]) {
        if KEPT_OUTSIDE
            .iter()
            .any(|k| field.name.eq_ignore_ascii_case(k))
        {
            outer.extend_from_slice(field.name.as_bytes());
            outer.push(b':');
            outer.extend_from_slice(&field.raw_value);
            outer.extend_from_slice(b"\r\n");
        }
    }
    outer.extend_from_slice(b"Subject: [...]\r\n");
    outer.extend_from_slice(format!("{STORED_FIELD}: {STORED_VALUE}\r\n").as_bytes());
    if let Some(nonce) = reencrypt {
        outer.extend_from_slice(format!("{REENCRYPT_FIELD}: {nonce}\r\n").as_bytes());
    }
    let mut result = Ok(());
    let own = own.clone().strip_secret_key_material();
    let sealed = pgp_mime(&outer, message.len() * 11 / 8 + 4096, |out| {
        result = openpgp::encrypt_armored_into(&[message], &[own], signer, out);
    });
    result?;
    Ok(sealed)
}

/// Rewrites the literal announcement at the end of an APPEND line (`{123}`, `{123+}`) for the
/// new length, synchronizing. `None` when the line does not end in one.
pub fn announce(line: &[u8], length: usize) -> Option<Vec<u8>> {
    let body = line
        .strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))?;
    let body = body.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    let mut out = body[..open].to_vec();
    out.extend_from_slice(format!("{{{length}}}\r\n").as_bytes());
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announcements() {
        assert_eq!(
            announce(b"a APPEND Drafts (\\Draft) {12+}\r\n", 345).unwrap(),
            b"a APPEND Drafts (\\Draft) {345}\r\n"
        );
        assert_eq!(
            announce(b"a APPEND x {1}\r\n", 2).unwrap(),
            b"a APPEND x {2}\r\n"
        );
        assert!(announce(b"a NOOP\r\n", 1).is_none());
    }
}
