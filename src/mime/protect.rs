//! Header protection and the encrypted envelopes.
//!
//! The original header fields go inside the encrypted part, marked both the RFC 9788 way
//! (`hp="cipher"` on the inner Content-Type, `HP-Outer` fields recording what stays outside) and
//! the legacy way Thunderbird reads (`protected-headers="v1"`). Outside, only what delivery and
//! threading need stays (From, To, Cc, Date, Message-ID, References, ...), and the Subject
//! becomes `[...]`.

use super::headers::{HeaderField, ParsedMessage};
use data_encoding::BASE64_MIME;

/// Header fields that stay visible outside (RFC 9788 §4's baseline, plus threading).
const OUTER_FIELDS: &[&str] = &[
    "from",
    "to",
    "cc",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "reply-to",
    "mail-followup-to",
    "sender",
];

/// The placeholder Subject (RFC 9788 §4.1).
pub const PLACEHOLDER_SUBJECT: &str = "[...]";

/// A message split for encryption. The body is borrowed, not copied: a large message is held
/// once.
#[derive(Debug, Clone)]
pub struct Protected<'a> {
    /// Outer header fields (without MIME-Version and Content-*), CRLF-terminated lines.
    pub outer: Vec<u8>,
    /// The header section of the MIME part to encrypt (protected headers, blank line).
    pub inner_head: Vec<u8>,
    /// The original body, byte for byte.
    pub body: &'a [u8],
}

impl<'a> Protected<'a> {
    /// The MIME part to encrypt, as the pieces it is made of.
    pub fn inner_parts(&self) -> [&[u8]; 2] {
        [&self.inner_head, self.body]
    }

    /// The MIME part to encrypt, in one piece (for tests and small messages).
    pub fn inner(&self) -> Vec<u8> {
        [self.inner_head.as_slice(), self.body].concat()
    }

    pub fn of(message: &ParsedMessage<'a>) -> Protected<'a> {
        let is_content = |f: &HeaderField| f.name.to_ascii_lowercase().starts_with("content-");
        let mut outer = Vec::new();
        let mut hp_outer = Vec::new();
        for f in message
            .fields
            .iter()
            .filter(|f| OUTER_FIELDS.iter().any(|n| f.is(n)))
        {
            outer.extend_from_slice(&f.raw);
            hp_outer.extend_from_slice(format!("HP-Outer: {}: {}\r\n", f.name, f.value).as_bytes());
        }
        outer.extend_from_slice(format!("Subject: {PLACEHOLDER_SUBJECT}\r\n").as_bytes());
        hp_outer
            .extend_from_slice(format!("HP-Outer: Subject: {PLACEHOLDER_SUBJECT}\r\n").as_bytes());

        let mut inner = Vec::with_capacity(4096);
        let content_type = message
            .field("content-type")
            .map(|f| f.value.trim().trim_end_matches(';').to_owned())
            .unwrap_or_else(|| "text/plain; charset=us-ascii".to_owned());
        inner.extend_from_slice(
            format!("Content-Type: {content_type}; protected-headers=\"v1\"; hp=\"cipher\"\r\n")
                .as_bytes(),
        );
        for f in message
            .fields
            .iter()
            .filter(|f| is_content(f) && !f.is("content-type"))
        {
            inner.extend_from_slice(&f.raw);
        }
        for f in &message.fields {
            if is_content(f) || f.is("mime-version") || f.is("bcc") || f.is("hp-outer") {
                continue;
            }
            inner.extend_from_slice(&f.raw);
        }
        inner.extend_from_slice(&hp_outer);
        inner.extend_from_slice(b"\r\n");
        Protected {
            outer,
            inner_head: inner,
            body: message.body,
        }
    }
}

fn boundary() -> String {
    let mut bytes = [0u8; 12];
    // A boundary needs to be unique, not secret; fall back to a fixed value if the RNG fails.
    let _ = aws_lc_rs::rand::fill(&mut bytes);
    format!("meshmail-{}", data_encoding::HEXLOWER.encode(&bytes))
}

/// A PGP/MIME message (RFC 3156 §4): `outer` fields, then the two-part multipart/encrypted
/// around an ASCII-armored OpenPGP message, which `armor` appends (CRLF line ends). 7-bit
/// throughout. `size` is a capacity hint.
pub fn pgp_mime(outer: &[u8], size: usize, armor: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let b = boundary();
    let mut out = Vec::with_capacity(outer.len() + size + 600);
    out.extend_from_slice(outer);
    out.extend_from_slice(
        format!(
            "MIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\";\r\n boundary=\"{b}\"\r\n\r\n\
             This is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n\
             --{b}\r\nContent-Type: application/pgp-encrypted\r\nContent-Description: PGP/MIME version identification\r\n\r\nVersion: 1\r\n\r\n\
             --{b}\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\nContent-Description: OpenPGP encrypted message\r\nContent-Disposition: inline; filename=\"encrypted.asc\"\r\n\r\n"
        )
        .as_bytes(),
    );
    armor(&mut out);
    out.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    out
}

/// An S/MIME message (RFC 8551 §3.3): `outer` fields, then application/pkcs7-mime with the
/// base64 of the DER ContentInfo.
pub fn smime_mime(outer: &[u8], der: &[u8], auth_enveloped: bool) -> Vec<u8> {
    let smime_type = if auth_enveloped {
        "authEnveloped-data"
    } else {
        "enveloped-data"
    };
    let mut out = Vec::with_capacity(outer.len() + der.len() * 4 / 3 + 400);
    out.extend_from_slice(outer);
    out.extend_from_slice(
        format!(
            "MIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type={smime_type}; name=\"smime.p7m\"\r\nContent-Transfer-Encoding: base64\r\nContent-Disposition: attachment; filename=\"smime.p7m\"\r\nContent-Description: S/MIME Encrypted Message\r\n\r\n"
        )
        .as_bytes(),
    );
    // BASE64_MIME wraps at 76 characters with CRLF.
    out.extend_from_slice(BASE64_MIME.encode(der).as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: Secret plans\r\nDate: Fri, 27 Nov 2026 05:00:00 +0000\r\nMessage-ID: <1@example.test>\r\nUser-Agent: Thunderbird\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nThe body\r\n";

    #[test]
    fn protected_headers_move_inside() {
        let m = ParsedMessage::parse(MSG).unwrap();
        let p = Protected::of(&m);
        let outer = String::from_utf8(p.outer.clone()).unwrap();
        assert!(outer.contains("From: Alice <alice@example.test>\r\n"));
        assert!(outer.contains("Message-ID: <1@example.test>\r\n"));
        assert!(outer.contains("Date: "));
        assert!(outer.contains("Subject: [...]\r\n"));
        assert!(!outer.contains("Secret plans"));
        assert!(!outer.contains("User-Agent"));
        let inner = String::from_utf8(p.inner()).unwrap();
        assert!(inner.starts_with(
            "Content-Type: text/plain; charset=utf-8; protected-headers=\"v1\"; hp=\"cipher\"\r\n"
        ));
        assert!(inner.contains("Content-Transfer-Encoding: 8bit\r\n"));
        assert!(inner.contains("Subject: Secret plans\r\n"));
        assert!(inner.contains("HP-Outer: Subject: [...]\r\n"));
        assert!(inner.contains("HP-Outer: From: Alice <alice@example.test>\r\n"));
        assert!(inner.ends_with("\r\n\r\nThe body\r\n"));
        assert!(!inner.contains("MIME-Version"));
    }

    #[test]
    fn pgp_mime_is_7bit_crlf() {
        let binary = b"\x85\x01\x02any binary OpenPGP bytes".repeat(10);
        let out = pgp_mime(b"From: a@x\r\nSubject: [...]\r\n", 100, |out| {
            crate::crypto::openpgp::armor_crlf(&binary, out)
        });
        let text = String::from_utf8(out).unwrap();
        assert!(text.is_ascii());
        assert!(
            !text.replace("\r\n", "").contains('\n'),
            "only CRLF line ends"
        );
        assert!(text.contains("protocol=\"application/pgp-encrypted\""));
        assert!(text.contains("\r\n-----END PGP MESSAGE-----\r\n\r\n--meshmail-"));
    }
}
