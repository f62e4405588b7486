//! Assembling the view of an encrypted message: decrypt the payload, then show the outer
//! header (minus its Content-* fields, which describe the encryption) with the inner entity.
//!
//! Protected headers (RFC 9788 `hp`, legacy `protected-headers="v1"`): the inner Subject
//! replaces the outer placeholder. The inner From and Date replace the outer ones only when
//! the inner part is signed by a key bound to that From; otherwise the outer ones stay and the
//! result header says so. A `Meshmail-Result` header tells the reader what happened; any
//! incoming header of that name is removed first, so it cannot be forged.
//!
//! Signatures inside are checked in every form: OpenPGP signed-and-encrypted, a PGP/MIME or
//! S/MIME `multipart/signed`, and S/MIME opaque `signed-data` (then the content it carries is
//! what is shown).

use super::mime;
use crate::crypto::cms_verify::{self, SignedContent};
use crate::crypto::decrypt::{DecryptionKeys, OpenError, Opened, SignatureCheck};
use zeroize::Zeroizing;

pub const RESULT_HEADER: &str = "Meshmail-Result";

/// The reason shown for a message this account's keys cannot decrypt, whatever the cause.
pub const UNDECRYPTABLE: &str = "this account's keys cannot decrypt it";

/// The bytes of the view of `raw` (the message as stored on the server).
pub fn compose(raw: &[u8], keys: &DecryptionKeys, max: usize) -> Zeroizing<Vec<u8>> {
    compose_with(raw, keys, None, max)
}

/// [`compose`] for a split account, with the store's partials for this message.
pub fn compose_with(
    raw: &[u8],
    keys: &DecryptionKeys,
    partials: Option<&crate::crypto::decrypt::Partials>,
    max: usize,
) -> Zeroizing<Vec<u8>> {
    let outer = mime::parse(raw);
    let opened = match payload(raw, &outer) {
        Ok(Payload::OpenPgp(armored)) => {
            let opened = keys.open_openpgp_with(&armored, &[], partials, max);
            match &opened {
                // A signature by a key not held locally: the sender may have attached it.
                Ok(o) if o.signatures.iter().any(|s| !s.good) => {
                    let attached = attached_certs(&o.plaintext);
                    if attached.is_empty() {
                        opened
                    } else {
                        keys.open_openpgp_with(&armored, &attached, partials, max)
                    }
                }
                _ => opened,
            }
        }
        Ok(Payload::Cms(der)) => keys.open_cms(&der, max),
        Err(e) => Err(e),
    };
    let opened = opened.map(unwrap_opaque_signed);
    match opened {
        Ok(opened) if stored_by_us(&outer, &opened, keys) => opened.plaintext,
        Ok(opened) if outer.field(AT_REST_MARK).is_some() => at_rest(&outer, opened),
        Ok(opened) => assemble(raw, &outer, opened, keys),
        Err(e) => failed(raw, &outer, &e),
    }
}

use crate::mime::at_rest::MARK_FIELD as AT_REST_MARK;

/// A message the sidecar encrypted at rest: the original message is inside, whole, as it
/// arrived in plaintext; its view is that message, reported as "encrypted-at-rest" and never as
/// the sender's end-to-end encryption (no signature inside is claimed). Anyone could put the
/// mark on a message they encrypted themselves; that only makes it look less protected.
fn at_rest(outer: &mime::Entity, opened: Opened) -> Zeroizing<Vec<u8>> {
    let flagged = outer.field(AT_REST_MARK).is_some_and(|f| {
        mime::unfold(&f.raw_value).contains("arrived=plaintext-to-fingerprint-address")
    });
    let result = if flagged {
        " encrypted-at-rest; arrived=plaintext-to-fingerprint-address"
    } else {
        " encrypted-at-rest"
    };
    let inner = without_result_fields(&opened.plaintext);
    let mut out = Zeroizing::new(Vec::with_capacity(inner.len() + 80));
    push_field(&mut out, RESULT_HEADER, result.as_bytes());
    out.extend_from_slice(&inner);
    out
}

/// A message meshmail itself stored on APPEND: marked so, and signed by the account's own key
/// (anyone can encrypt to the account, only the account can sign). Its view is exactly the
/// bytes the client appended.
fn stored_by_us(outer: &mime::Entity, opened: &Opened, keys: &DecryptionKeys) -> bool {
    use crate::imap::append::{STORED_FIELD, STORED_VALUE};
    let marked = outer
        .field(STORED_FIELD)
        .is_some_and(|f| mime::unfold(&f.raw_value).trim() == STORED_VALUE);
    let own = keys.fingerprint();
    marked && opened.signatures.iter().any(|s| s.good && s.signer == own)
}

/// An S/MIME opaque-signed payload (`application/pkcs7-mime; smime-type=signed-data`, RFC
/// 8551 §3.5.2, what Outlook sends signed and encrypted) is replaced by the content it carries,
/// with its signatures checked. Anything else is left as it is.
fn unwrap_opaque_signed(mut opened: Opened) -> Opened {
    if !opened.signatures.is_empty() || !header_mentions(&opened.plaintext, b"pkcs7-mime") {
        return opened;
    }
    let inner = mime::parse(&opened.plaintext);
    let ct = &inner.content_type;
    let pkcs7 = ct.r#type == "application"
        && (ct.subtype == "pkcs7-mime" || ct.subtype == "x-pkcs7-mime")
        && ct
            .param("smime-type")
            .is_some_and(|t| t.eq_ignore_ascii_case("signed-data"));
    if !pkcs7 {
        return opened;
    }
    let der = decoded_body(&opened.plaintext, &inner);
    match cms_verify::verify(&der, None) {
        Some(SignedContent {
            checks,
            content: Some(content),
        }) => {
            opened.plaintext = Zeroizing::new(content);
            opened.signatures = checks;
        }
        // A signature object without content: the message says it is signed but nothing can
        // be shown as signed.
        _ => opened.signatures = vec![SignatureCheck::failed("unreadable")],
    }
    opened
}

/// The header section of `msg` contains `word` (ASCII, any case): a cheap test before a parse.
fn header_mentions(msg: &[u8], word: &[u8]) -> bool {
    let end = msg
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| msg.windows(2).position(|w| w == b"\n\n"))
        .unwrap_or(msg.len());
    msg[..end]
        .windows(word.len())
        .any(|w| w.eq_ignore_ascii_case(word))
}

/// A leaf's body, base64-decoded when its Content-Transfer-Encoding says so.
fn decoded_body(msg: &[u8], e: &mime::Entity) -> Vec<u8> {
    let body = &msg[e.body.clone()];
    let base64 = e.mime_field("Content-Transfer-Encoding").is_some_and(|f| {
        mime::unfold(&f.raw_value)
            .trim()
            .eq_ignore_ascii_case("base64")
    });
    if !base64 {
        return body.to_vec();
    }
    base64_decode(body).unwrap_or_default()
}

/// Base64 with line breaks and other whitespace skipped.
fn base64_decode(text: &[u8]) -> Option<Vec<u8>> {
    let compact: Vec<u8> = text
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace())
        .collect();
    data_encoding::BASE64.decode(&compact).ok()
}

/// The signatures of a signed-then-encrypted message whose decrypted payload is a
/// multipart/signed (RFC 3156 §6.1, RFC 8551 §3.5.3), checked against held or attached
/// certificates. An unreadable signature counts as a bad one, so the message is never called
/// unsigned.
fn detached_signatures(
    msg: &[u8],
    inner: &mime::Entity,
    keys: &DecryptionKeys,
) -> Vec<SignatureCheck> {
    let ct = &inner.content_type;
    let mime::Kind::Multipart(parts) = &inner.kind else {
        return Vec::new();
    };
    if ct.r#type != "multipart" || ct.subtype != "signed" || parts.len() != 2 {
        return Vec::new();
    }
    let protocol = ct
        .param("protocol")
        .unwrap_or_default()
        .to_ascii_lowercase();
    if protocol == "application/pgp-signature" {
        let signed = &msg[parts[0].header.start..parts[0].body.end];
        let signature = &msg[parts[1].body.clone()];
        let attached = attached_certs(msg);
        keys.verify_detached(signature, signed, &attached)
    } else if protocol == "application/pkcs7-signature"
        || protocol == "application/x-pkcs7-signature"
    {
        let signed = &msg[parts[0].header.start..parts[0].body.end];
        let der = decoded_body(msg, &parts[1]);
        match cms_verify::verify(&der, Some(signed)) {
            Some(s) if !s.checks.is_empty() => s.checks,
            _ => vec![SignatureCheck::failed("unreadable")],
        }
    } else {
        vec![SignatureCheck::failed("unreadable")]
    }
}

/// Certificates in `application/pgp-keys` parts of a decrypted message (at most a few).
fn attached_certs(plaintext: &[u8]) -> Vec<sequoia_openpgp::Cert> {
    fn walk(msg: &[u8], e: &mime::Entity, out: &mut Vec<sequoia_openpgp::Cert>, depth: usize) {
        if depth > 10 || out.len() >= 8 {
            return;
        }
        match &e.kind {
            mime::Kind::Multipart(children) => {
                for c in children {
                    walk(msg, c, out, depth + 1);
                }
            }
            mime::Kind::Message(inner) => walk(msg, inner, out, depth + 1),
            mime::Kind::Leaf => {
                let ct = &e.content_type;
                if ct.r#type != "application" || ct.subtype != "pgp-keys" {
                    return;
                }
                let bytes = decoded_body(msg, e);
                if let Ok(certs) = crate::crypto::openpgp::parse_certs(&bytes) {
                    out.extend(certs.into_iter().take(8));
                }
            }
        }
    }
    let tree = mime::parse(plaintext);
    let mut out = Vec::new();
    walk(plaintext, &tree, &mut out, 0);
    out
}

enum Payload {
    OpenPgp(Vec<u8>),
    Cms(Vec<u8>),
}

/// The encrypted payload: the OpenPGP message of a PGP/MIME body (RFC 3156 §4), or the
/// base64-decoded CMS object of an S/MIME body.
fn payload(raw: &[u8], outer: &mime::Entity) -> Result<Payload, OpenError> {
    let ct = &outer.content_type;
    if ct.r#type == "multipart" {
        let mime::Kind::Multipart(parts) = &outer.kind else {
            return Err(OpenError::Corrupt("PGP/MIME without parts".into()));
        };
        let data = parts
            .iter()
            .find(|p| {
                p.content_type.r#type == "application" && p.content_type.subtype == "octet-stream"
            })
            .or_else(|| parts.get(1))
            .ok_or_else(|| OpenError::Corrupt("PGP/MIME without the encrypted part".into()))?;
        return Ok(Payload::OpenPgp(raw[data.body.clone()].to_vec()));
    }
    let der = base64_decode(&raw[outer.body.clone()])
        .ok_or_else(|| OpenError::Corrupt("S/MIME body is not base64".into()))?;
    Ok(Payload::Cms(der))
}

/// Bare LF becomes CRLF (IMAP lines end in CRLF); CRLF stays, so signed parts keep their bytes.
fn crlf(bytes: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(bytes.len() + bytes.len() / 50));
    let mut prev = 0u8;
    for &b in bytes {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

fn is_content_field(name: &str) -> bool {
    name.len() >= 8 && name[..8].eq_ignore_ascii_case("Content-")
}

fn is_result_field(name: &str) -> bool {
    name.eq_ignore_ascii_case(RESULT_HEADER)
}

/// A message as stored, without the top-level result fields someone else wrote into it (a
/// plaintext message cannot forge what meshmail reports); every other byte kept.
pub fn without_result_fields(raw: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(raw.len()));
    let mut at = 0;
    let mut dropping = false;
    while at < raw.len() {
        let end = raw[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |p| at + p + 1);
        let line = &raw[at..end];
        if line == b"\r\n" || line == b"\n" {
            // The end of the header: the rest is the body, as it is.
            out.extend_from_slice(&raw[at..]);
            return out;
        }
        let continuation = matches!(line.first(), Some(b' ' | b'\t'));
        if !continuation {
            let name = line.split(|&b| b == b':').next().unwrap_or_default();
            dropping = std::str::from_utf8(name).is_ok_and(|n| is_result_field(n.trim()));
        }
        if !dropping {
            out.extend_from_slice(line);
        }
        at = end;
    }
    out
}

/// The e-mail address in a From value (lower case), if one can be read.
fn from_address(raw_value: &[u8]) -> Option<String> {
    let mut head = b"From:".to_vec();
    head.extend_from_slice(raw_value);
    head.extend_from_slice(b"\r\n\r\n");
    let msg = mail_parser::MessageParser::default().parse_headers(&head)?;
    let addr = msg.from()?.first()?.address()?.to_lowercase();
    Some(addr)
}

fn push_field(out: &mut Vec<u8>, name: &str, raw_value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.push(b':');
    out.extend_from_slice(raw_value);
    out.extend_from_slice(b"\r\n");
}

fn assemble(
    raw: &[u8],
    outer: &mime::Entity,
    mut opened: Opened,
    keys: &DecryptionKeys,
) -> Zeroizing<Vec<u8>> {
    let inner_bytes = crlf(&opened.plaintext);
    let inner = mime::parse(&inner_bytes);
    let ct = &inner.content_type;
    let protected = ct.param("hp").is_some() || ct.param("protected-headers").is_some();
    let inner_field = |name: &str| protected.then(|| inner.field(name)).flatten();

    if opened.signatures.is_empty() {
        opened.signatures = detached_signatures(&inner_bytes, &inner, keys);
    }
    // The signature that counts: the first good one, else the first one.
    let signature = opened
        .signatures
        .iter()
        .find(|s| s.good)
        .or(opened.signatures.first());
    let inner_from = inner_field("From");
    let signed_by_inner_from = match (signature, inner_from) {
        (Some(s), Some(f)) if s.good => {
            from_address(&f.raw_value).is_some_and(|a| s.addresses.contains(&a))
        }
        _ => false,
    };
    let use_inner_identity = protected && signed_by_inner_from;
    let outer_from = outer.field("From");
    let displayed_from = if use_inner_identity {
        inner_from
    } else {
        outer_from
    };
    let verified = match (signature, displayed_from) {
        (Some(s), Some(f)) if s.good => {
            from_address(&f.raw_value).is_some_and(|a| s.addresses.contains(&a))
        }
        _ => false,
    };

    let mut result = String::from("decrypted");
    match signature {
        Some(s) => {
            result.push_str(&format!(
                "; signed-by={}; verified={}",
                s.signer,
                if verified { "yes" } else { "no" }
            ));
        }
        None => result.push_str("; unsigned"),
    }
    let inner_identity_differs = inner_from.is_some_and(|f| {
        outer_from.map(|o| from_address(&o.raw_value)) != Some(from_address(&f.raw_value))
    });
    if protected && !use_inner_identity && inner_identity_differs {
        result.push_str("; protected-from=ignored (not signed by that address)");
    }

    let mut out = Zeroizing::new(Vec::with_capacity(raw.len() + inner_bytes.len()));
    push_field(&mut out, RESULT_HEADER, format!(" {result}").as_bytes());
    let mut subject_done = false;
    for f in &outer.fields {
        if is_content_field(&f.name)
            || is_result_field(&f.name)
            || f.name
                .eq_ignore_ascii_case(crate::imap::append::REENCRYPT_FIELD)
        {
            continue;
        }
        let replacement = if f.name.eq_ignore_ascii_case("Subject") {
            subject_done = true;
            inner_field("Subject")
        } else if use_inner_identity
            && (f.name.eq_ignore_ascii_case("From") || f.name.eq_ignore_ascii_case("Date"))
        {
            inner_field(&f.name)
        } else {
            None
        };
        match replacement {
            Some(r) => push_field(&mut out, &f.name, &r.raw_value),
            None => push_field(&mut out, &f.name, &f.raw_value),
        }
    }
    if !subject_done {
        if let Some(s) = inner_field("Subject") {
            push_field(&mut out, "Subject", &s.raw_value);
        }
    }
    for f in &inner.fields {
        if is_content_field(&f.name) {
            push_field(&mut out, &f.name, &f.raw_value);
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&inner_bytes[inner.body.clone()]);
    out
}

/// The server's message with a result header saying why it is not decrypted.
fn failed(raw: &[u8], outer: &mime::Entity, error: &OpenError) -> Zeroizing<Vec<u8>> {
    let mut out = Zeroizing::new(Vec::with_capacity(raw.len() + 100));
    // One reason for every way a decryption fails (no key, a wrapped key or padding that does
    // not check, corrupt content): what the reader sees must not tell an attacker which step
    // failed. The detail goes to the debug log only.
    tracing::debug!(error = %error, "a message could not be decrypted");
    let reason = match error {
        OpenError::TooLarge(_) => error.to_string(),
        OpenError::NotForUs | OpenError::Corrupt(_) => UNDECRYPTABLE.to_string(),
    };
    push_field(
        &mut out,
        RESULT_HEADER,
        format!(" failed; reason=\"{}\"", reason.replace('"', "'")).as_bytes(),
    );
    for f in &outer.fields {
        if !is_result_field(&f.name) {
            push_field(&mut out, &f.name, &f.raw_value);
        }
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&raw[outer.body.clone()]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::smime::SmimeCert;
    use crate::keys::generate;

    fn keys(address: &str) -> (DecryptionKeys, SmimeCert) {
        let (cert, _) = generate::openpgp_cert(address).expect("openpgp");
        let (der, key) = generate::smime_cert(address).expect("smime");
        let smime = SmimeCert::from_der(&der).expect("cert");
        (
            DecryptionKeys::new(cert, Some(smime.clone()), Some(key), Vec::new()),
            smime,
        )
    }

    fn stored(der: &[u8]) -> Vec<u8> {
        let mut m = b"From: a@example.test\r\nSubject: x\r\nMIME-Version: 1.0\r\nContent-Type: application/pkcs7-mime; smime-type=enveloped-data; name=smime.p7m\r\nContent-Transfer-Encoding: base64\r\n\r\n".to_vec();
        m.extend(data_encoding::BASE64_MIME.encode(der).into_bytes());
        m
    }

    fn result_line(view: &[u8]) -> String {
        String::from_utf8_lossy(view)
            .lines()
            .next()
            .unwrap_or_default()
            .to_owned()
    }

    #[test]
    fn mail_encrypted_at_rest_is_shown_whole_and_called_so() {
        let (alice, alice_cert) = keys("alice@example.test");
        let original = b"DKIM-Signature: v=1; d=x\r\nFrom: s@x\r\nSubject: hi\r\nMeshmail-Result: decrypted; verified=yes\r\n\r\nbody\r\n";
        let request = crate::crypto::seal::SealRequest::Smime {
            recipients: vec![alice_cert],
            gcm: true,
        };
        for (flag, want) in [
            (false, "Meshmail-Result: encrypted-at-rest"),
            (
                true,
                "Meshmail-Result: encrypted-at-rest; arrived=plaintext-to-fingerprint-address",
            ),
        ] {
            let mark = if flag {
                "v=1; for=<alice@example.test>; arrived=plaintext-to-fingerprint-address; mac=x"
            } else {
                "v=1; for=<alice@example.test>; mac=x"
            };
            let sealed =
                crate::crypto::seal::seal_at_rest(original, &request, false, mark).expect("seal");
            let view = compose(sealed.bytes(), &alice, 1 << 20);
            assert_eq!(result_line(&view), want);
            // The original, byte for byte, without the forged result field.
            assert_eq!(
                &view[want.len() + 2..],
                b"DKIM-Signature: v=1; d=x\r\nFrom: s@x\r\nSubject: hi\r\n\r\nbody\r\n"
            );
        }
    }

    #[test]
    fn every_decryption_failure_reads_the_same() {
        let (alice, alice_cert) = keys("alice@example.test");
        let (_, bob_cert) = keys("bob@example.test");
        let body = b"Content-Type: text/plain\r\n\r\nsecret\r\n";
        let ours = crate::crypto::cms::encrypt(&[body], &[alice_cert], true).expect("cms");
        let good = compose(&stored(&ours), &alice, 1 << 20);
        assert!(
            result_line(&good).starts_with("Meshmail-Result: decrypted"),
            "{}",
            result_line(&good)
        );
        let mut lines = Vec::new();
        // Not for this account.
        let theirs = crate::crypto::cms::encrypt(&[body], &[bob_cert], true).expect("cms");
        lines.push(result_line(&compose(&stored(&theirs), &alice, 1 << 20)));
        // Damaged at its end (content or tag), in the middle, and near the key it carries.
        for at in [ours.len() - 1, ours.len() / 2, ours.len() / 3] {
            let mut damaged = ours.clone();
            damaged[at] ^= 0x5a;
            lines.push(result_line(&compose(&stored(&damaged), &alice, 1 << 20)));
        }
        for line in &lines {
            assert_eq!(
                line,
                &format!("Meshmail-Result: failed; reason=\"{UNDECRYPTABLE}\""),
                "{lines:?}"
            );
        }
    }

    #[test]
    fn forged_result_fields_are_cut_and_nothing_else() {
        let raw = b"Meshmail-Result: decrypted; signed-by=me;\r\n verified=yes\r\nFrom: x@y\r\nmeshmail-result : forged\r\nSubject: s\r\n\r\nMeshmail-Result: in the body stays\r\n";
        assert_eq!(
            &without_result_fields(raw)[..],
            b"From: x@y\r\nSubject: s\r\n\r\nMeshmail-Result: in the body stays\r\n"
        );
    }
}
