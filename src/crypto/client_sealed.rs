//! A message the client encrypted itself (Thunderbird's own OpenPGP): passed on only when
//! nothing in it can be read without the recipients' keys, and it is encrypted to every key the
//! policies require.
//!
//! Form ([`crate::mime::encrypted`]): exactly the two parts of RFC 3156, the second one ASCII
//! armour and nothing else. Packets: one or more PKESKs, then exactly one encrypted data packet
//! (SEIPD v1 or v2), then the end; a literal data packet beside real PKESKs, a password-only
//! SKESK or trailing packets are refused. The copy that goes out is rebuilt around the client's
//! armour, byte for byte, with the same minimal outer header fields meshmail's own copies have
//! (the Subject becomes `[...]`; Thunderbird protects it inside by default), so no preamble,
//! epilogue or extra header field travels in plaintext.

use super::openpgp::{self, OpenPgpError};
use super::seal::{key_id_openpgp, SealError, Sealed};
use crate::mime::encrypted::parse_pgp_mime;
use crate::mime::{pgp_mime, ParsedMessage, Protected};
use sequoia_openpgp as sq;
use sq::parse::{PacketParser, PacketParserResult, Parse};
use sq::Packet;
use std::io::Read;

/// At most this many PKESK packets (recipients) in one message.
const MAX_RECIPIENTS: usize = 1000;

/// What kind of encryption a message already carries, from its top-level Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlreadyEncrypted {
    PgpMime,
    Smime,
}

/// Tells whether the client already encrypted the message (Thunderbird's own OpenPGP/S/MIME).
/// Only a claim: [`verify_sealed`] decides whether it holds.
pub fn already_encrypted(message: &[u8]) -> Option<AlreadyEncrypted> {
    let parsed = ParsedMessage::parse(message).ok()?;
    let ct = parsed.field("content-type")?.value.to_ascii_lowercase();
    if ct.starts_with("multipart/encrypted") && ct.contains("application/pgp-encrypted") {
        Some(AlreadyEncrypted::PgpMime)
    } else if (ct.starts_with("application/pkcs7-mime")
        || ct.starts_with("application/x-pkcs7-mime"))
        && (ct.contains("enveloped-data") || ct.contains("authenveloped-data"))
    {
        Some(AlreadyEncrypted::Smime)
    } else {
        None
    }
}

/// Accepts a message the client encrypted itself if it is strictly one OpenPGP-encrypted
/// message encrypted to a live encryption key of every certificate in `required`, and returns
/// the copy to send. A hidden recipient (wildcard key ID) cannot be checked and is refused.
pub fn verify_sealed(message: &[u8], required: &[sq::Cert]) -> Result<Sealed, SealError> {
    if already_encrypted(message) == Some(AlreadyEncrypted::Smime) {
        return Err(SealError::UncheckableSmime);
    }
    let form = parse_pgp_mime(message).map_err(|e| SealError::NotStrictlySealed(e.to_string()))?;
    let recipients = encrypted_packets(form.armored)?;
    if recipients.iter().any(Option::is_none) {
        return Err(SealError::HiddenRecipient);
    }
    for cert in required {
        if !openpgp::addressed_to(&recipients, cert) {
            return Err(SealError::NotEncryptedTo(cert.fingerprint().to_hex()));
        }
    }
    let outer = Protected::of(&form.header).outer;
    let bytes = pgp_mime(&outer, form.armored.len() + 64, |out| {
        // The armour as the client wrote it, with CRLF line ends throughout.
        for line in form.armored.split(|&b| b == b'\n') {
            out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
            out.extend_from_slice(b"\r\n");
        }
        out.truncate(out.len() - 2);
    });
    Ok(Sealed::new(
        bytes,
        required.iter().map(key_id_openpgp).collect(),
    ))
}

fn not_sealed(why: impl Into<String>) -> SealError {
    SealError::NotStrictlySealed(why.into())
}

/// Checks the packet sequence of an armored OpenPGP message (PKESK+, one SEIPD, end) and
/// returns the recipients its PKESKs name: key IDs or fingerprints, upper-case hex; the
/// wildcard (hidden recipient) as `None`.
pub fn encrypted_packets(armored: &[u8]) -> Result<Vec<Option<String>>, SealError> {
    let mut binary = Vec::with_capacity(armored.len() * 3 / 4);
    sq::armor::Reader::from_bytes(
        armored,
        sq::armor::ReaderMode::Tolerant(Some(sq::armor::Kind::Message)),
    )
    .read_to_end(&mut binary)
    .map_err(|e| not_sealed(format!("unreadable armour: {e}")))?;
    let parse_error = |e: anyhow::Error| SealError::OpenPgp(OpenPgpError::Parse(e.to_string()));

    let mut recipients = Vec::new();
    let mut encrypted_data = false;
    let mut ppr = PacketParser::from_bytes(&binary).map_err(parse_error)?;
    while let PacketParserResult::Some(pp) = ppr {
        if encrypted_data {
            return Err(not_sealed("a packet follows the encrypted data"));
        }
        match &pp.packet {
            Packet::PKESK(pkesk) => {
                recipients.push(
                    pkesk
                        .recipient()
                        .map(|h| h.to_hex())
                        .filter(|h| !h.chars().all(|c| c == '0')),
                );
                if recipients.len() > MAX_RECIPIENTS {
                    return Err(not_sealed("too many recipients"));
                }
            }
            Packet::SEIP(_) if !recipients.is_empty() => encrypted_data = true,
            Packet::SEIP(_) => return Err(not_sealed("encrypted data without a recipient")),
            Packet::SKESK(_) => {
                return Err(not_sealed("encrypted with a password (SKESK)"));
            }
            other => {
                return Err(not_sealed(format!("an unencrypted {} packet", other.tag())));
            }
        }
        // `next`, not `recurse`: the encrypted data is skipped, not opened.
        ppr = pp.next().map_err(parse_error)?.1;
    }
    if !encrypted_data {
        return Err(not_sealed("no encrypted data packet"));
    }
    Ok(recipients)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sq::cert::CertBuilder;
    use sq::policy::StandardPolicy;
    use sq::serialize::stream::{Encryptor, LiteralWriter, Message};
    use sq::serialize::{Serialize, SerializeInto};

    fn cert(uid: &str) -> sq::Cert {
        CertBuilder::general_purpose(Some(uid))
            .generate()
            .map(|(c, _)| c)
            .unwrap()
    }

    /// Binary OpenPGP: PKESKs to `to`, and SEIPD around a literal packet with `text`.
    fn encrypt_to(to: &[&sq::Cert], text: &[u8]) -> Vec<u8> {
        let policy = StandardPolicy::new();
        let keys: Vec<_> = to
            .iter()
            .flat_map(|c| {
                c.keys()
                    .with_policy(&policy, None)
                    .for_transport_encryption()
            })
            .collect();
        let mut out = Vec::new();
        let message = Message::new(&mut out);
        let message = Encryptor::for_recipients(message, keys).build().unwrap();
        let mut w = LiteralWriter::new(message).build().unwrap();
        std::io::Write::write_all(&mut w, text).unwrap();
        w.finalize().unwrap();
        out
    }

    fn armor(binary: &[u8]) -> Vec<u8> {
        let mut w = sq::armor::Writer::new(Vec::new(), sq::armor::Kind::Message).unwrap();
        std::io::Write::write_all(&mut w, binary).unwrap();
        w.finalize().unwrap()
    }

    fn pgp_mime_message(boundary: &str, armored: &[u8], extra_part: &str) -> Vec<u8> {
        let armored = String::from_utf8(armored.to_vec())
            .unwrap()
            .replace('\n', "\r\n");
        format!(
            "From: alice@example.test\r\nTo: bob@example.test\r\nSubject: Secret plans\r\nUser-Agent: Thunderbird\r\nX-Secret: the plan\r\nMIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"{boundary}\"\r\n\r\nThis is an OpenPGP/MIME encrypted message (RFC 4880 and 3156)\r\n--{boundary}\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--{boundary}\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n{}\r\n{extra_part}--{boundary}--\r\nepilogue\r\n",
            armored.trim_end()
        )
        .into_bytes()
    }

    #[test]
    fn a_well_formed_message_passes_with_minimal_outer_headers() {
        let bob = cert("bob@example.test");
        let armored = armor(&encrypt_to(&[&bob], b"secret text"));
        // "B" also occurs in "-----BEGIN": only whole lines are delimiters.
        for boundary in ["B", "b", "------------abc"] {
            let raw = pgp_mime_message(boundary, &armored, "");
            let sealed = verify_sealed(&raw, std::slice::from_ref(&bob))
                .unwrap_or_else(|e| panic!("{boundary}: {e}"));
            let text = String::from_utf8(sealed.bytes().to_vec()).unwrap();
            assert!(!text.contains("Secret plans"), "{text}");
            assert!(!text.contains("X-Secret") && !text.contains("User-Agent"));
            assert!(!text.contains("epilogue"));
            assert!(text.contains("Subject: [...]\r\n"));
            assert!(text.contains("From: alice@example.test\r\n"));
            // The client's armour, unchanged.
            let first = String::from_utf8(armored.clone()).unwrap();
            let body_line = first.lines().nth(2).unwrap();
            assert!(text.contains(body_line));
            assert_eq!(text.matches("-----BEGIN PGP MESSAGE-----").count(), 1);
            assert!(sealed.is_encrypted_to_all([key_id_openpgp(&bob)].iter()));
        }
    }

    #[test]
    fn plaintext_beside_or_inside_the_armour_is_refused() {
        let bob = cert("bob@example.test");
        let required = std::slice::from_ref(&bob);
        let sealed = encrypt_to(&[&bob], b"secret text");

        // A third part in plaintext.
        let raw = pgp_mime_message(
            "b",
            &armor(&sealed),
            "--b\r\nContent-Type: text/plain\r\n\r\nthe secret in plaintext\r\n",
        );
        assert!(matches!(
            verify_sealed(&raw, required),
            Err(SealError::NotStrictlySealed(_))
        ));

        // The recipient's real PKESK, then a literal data packet instead of encrypted data.
        let mut forged = Vec::new();
        let mut ppr = PacketParser::from_bytes(&sealed).unwrap();
        while let PacketParserResult::Some(pp) = ppr {
            if let Packet::PKESK(_) = &pp.packet {
                pp.packet.serialize(&mut forged).unwrap();
            }
            ppr = pp.next().unwrap().1;
        }
        let mut lit = sq::packet::Literal::new(sq::types::DataFormat::Unicode);
        lit.set_body(b"the secret in plaintext".to_vec());
        forged.extend(Packet::from(lit).to_vec().unwrap());
        let raw = pgp_mime_message("b", &armor(&forged), "");
        let e = verify_sealed(&raw, required).unwrap_err();
        assert!(
            matches!(&e, SealError::NotStrictlySealed(why) if why.contains("unencrypted")),
            "{e}"
        );

        // Real encrypted data followed by a literal packet.
        let mut trailing = sealed.clone();
        let mut lit = sq::packet::Literal::new(sq::types::DataFormat::Unicode);
        lit.set_body(b"the secret in plaintext".to_vec());
        trailing.extend(Packet::from(lit).to_vec().unwrap());
        let raw = pgp_mime_message("b", &armor(&trailing), "");
        assert!(matches!(
            verify_sealed(&raw, required),
            Err(SealError::NotStrictlySealed(_))
        ));

        // Encrypted, but to someone else.
        let erin = cert("erin@example.test");
        let raw = pgp_mime_message("b", &armor(&encrypt_to(&[&erin], b"x")), "");
        assert!(matches!(
            verify_sealed(&raw, required),
            Err(SealError::NotEncryptedTo(_))
        ));
    }
}
