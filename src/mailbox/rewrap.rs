//! After a rekey, stored mail is moved to the new subkey by replacing its PKESK only: the
//! session key is unwrapped with the old subkey and wrapped again for the new one; the
//! encrypted data packet keeps its bytes, and so does the rest of the message around the
//! ASCII armor. Other recipients' PKESKs stay as they were.

use crate::crypto::recrypt::addressed_to_fingerprint;
use sequoia_openpgp as sq;
use sq::packet::key::{PublicParts, SecretParts, UnspecifiedRole};
use sq::packet::Key;
use sq::parse::Parse;
use sq::serialize::Marshal;

const BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";
const END: &[u8] = b"-----END PGP MESSAGE-----";

/// Where the leading PKESK (tag 1) and SKESK (tag 3) packets of a binary OpenPGP message are,
/// and where what follows them starts. Only definite lengths: those packets never use partial
/// ones.
/// (packet tag, byte range) of each leading PKESK or SKESK.
type KeyPackets = Vec<(u8, std::ops::Range<usize>)>;

fn key_packets(binary: &[u8]) -> Option<(KeyPackets, usize)> {
    let mut at = 0;
    let mut out = Vec::new();
    while at < binary.len() {
        let (tag, header, body) = header(&binary[at..])?;
        if tag != 1 && tag != 3 {
            break;
        }
        let end = at.checked_add(header)?.checked_add(body)?;
        if end > binary.len() || out.len() >= crate::store::item::MAX_PKESKS {
            return None;
        }
        out.push((tag, at..end));
        at = end;
    }
    Some((out, at))
}

/// A packet header (RFC 9580 §4.2): its tag, header length and body length.
fn header(b: &[u8]) -> Option<(u8, usize, usize)> {
    let ctb = *b.first()?;
    if ctb & 0x80 == 0 {
        return None;
    }
    if ctb & 0x40 != 0 {
        let tag = ctb & 0x3f;
        let l0 = *b.get(1)? as usize;
        match l0 {
            0..=191 => Some((tag, 2, l0)),
            192..=223 => Some((tag, 3, ((l0 - 192) << 8) + *b.get(2)? as usize + 192)),
            255 => {
                let n = u32::from_be_bytes(b.get(2..6)?.try_into().ok()?);
                Some((tag, 6, n as usize))
            }
            _ => None,
        }
    } else {
        let tag = (ctb >> 2) & 0x0f;
        match ctb & 3 {
            0 => Some((tag, 2, *b.get(1)? as usize)),
            1 => Some((
                tag,
                3,
                u16::from_be_bytes(b.get(1..3)?.try_into().ok()?) as usize,
            )),
            2 => Some((
                tag,
                5,
                u32::from_be_bytes(b.get(1..5)?.try_into().ok()?) as usize,
            )),
            _ => None,
        }
    }
}

/// `message` with its PKESK for `old` replaced by one for `new`; `None` when the message is
/// not encrypted to `old` (or cannot be read).
pub fn rewrap(
    message: &[u8],
    old: &Key<SecretParts, UnspecifiedRole>,
    new: &Key<PublicParts, UnspecifiedRole>,
) -> Option<Vec<u8>> {
    let begin = find(message, BEGIN, 0)?;
    let end_marker = find(message, END, begin)?;
    let end = end_marker + END.len();
    let binary = crate::crypto::decrypt::dearmor(&message[begin..end])?;
    let (packets, rest) = key_packets(&binary)?;
    let mut keypair = old.clone().into_keypair().ok()?;
    let old_fpr = old.fingerprint();
    let mut session = None;
    let mut kept = Vec::new();
    for (tag, range) in &packets {
        if *tag == 1 && session.is_none() {
            if let Ok(sq::Packet::PKESK(pkesk)) = sq::Packet::from_bytes(&binary[range.clone()]) {
                if addressed_to_fingerprint(&pkesk, &old_fpr) {
                    if let Some(opened) = pkesk.decrypt(&mut keypair, None) {
                        session = Some(opened);
                        continue;
                    }
                }
            }
        }
        kept.push(range.clone());
    }
    let (algo, session_key) = session?;
    let pkesk = sq::packet::pkesk::PKESK3::for_recipient(algo?, &session_key, new).ok()?;
    let mut rebuilt = Vec::with_capacity(binary.len() + 128);
    sq::Packet::from(sq::packet::PKESK::from(pkesk))
        .serialize(&mut rebuilt)
        .ok()?;
    for range in kept {
        rebuilt.extend_from_slice(&binary[range]);
    }
    rebuilt.extend_from_slice(&binary[rest..]);
    let mut armored = Vec::with_capacity(rebuilt.len() * 4 / 3 + 256);
    crate::crypto::openpgp::armor_crlf(&rebuilt, &mut armored);
    // The armor replaces the old one, its trailing line end included.
    let armored = armored
        .strip_suffix(b"\r\n")
        .map(<[u8]>::to_vec)
        .unwrap_or(armored);
    let mut out = Vec::with_capacity(message.len() + 128);
    out.extend_from_slice(&message[..begin]);
    out.extend_from_slice(&armored);
    out.extend_from_slice(&message[end..]);
    Some(out)
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    hay.get(from..)?
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pkesk_is_replaced_and_the_encrypted_data_keeps_its_bytes() {
        let (alice, _) = crate::keys::generate::openpgp_cert("alice@example.test").unwrap();
        let (next, _) = crate::keys::generate::openpgp_cert("alice@example.test").unwrap();
        let (bob, _) = crate::keys::generate::openpgp_cert("bob@example.test").unwrap();
        let old = crate::crypto::recrypt::encryption_subkey(&alice).unwrap();
        let new_secret = crate::crypto::recrypt::encryption_subkey(&next).unwrap();
        let new = new_secret.parts_as_public().clone();
        let public = |c: &sq::Cert| c.clone().strip_secret_key_material();
        let mut armored = Vec::new();
        crate::crypto::openpgp::encrypt_armored_into(
            &[b"kept as it was"],
            &[public(&alice), public(&bob)],
            None,
            &mut armored,
        )
        .unwrap();
        let message = [
            b"Subject: x\r\nContent-Type: multipart/encrypted; boundary=b\r\n\r\n--b\r\n\r\n"
                .to_vec(),
            armored.clone(),
            b"\r\n--b--\r\n".to_vec(),
        ]
        .concat();
        let rewrapped = rewrap(&message, &old, &new).expect("encrypted to the old subkey");
        assert!(rewrapped.starts_with(b"Subject: x\r\n"));
        assert!(rewrapped.ends_with(b"\r\n--b--\r\n"));
        let before = crate::crypto::decrypt::dearmor(&armored).unwrap();
        let after = crate::crypto::decrypt::dearmor(&rewrapped).unwrap();
        let (_, rest_before) = key_packets(&before).unwrap();
        let (packets, rest_after) = key_packets(&after).unwrap();
        assert_eq!(
            &before[rest_before..],
            &after[rest_after..],
            "body bytes kept"
        );
        assert_eq!(packets.len(), 2, "bob's PKESK kept, alice's replaced");
        // The new subkey opens it, the old no longer does; Bob still does.
        let open = |cert: &sq::Cert| {
            crate::crypto::decrypt::DecryptionKeys::new(cert.clone(), None, None, Vec::new())
                .open_openpgp(&rewrapped, &[], 1 << 20)
                .map(|o| o.plaintext.to_vec())
        };
        assert_eq!(open(&next).unwrap(), b"kept as it was");
        assert_eq!(open(&bob).unwrap(), b"kept as it was");
        assert!(open(&alice).is_err());
        // Not encrypted to the old subkey (any more): nothing to do.
        assert!(rewrap(&rewrapped, &old, &new).is_none());
        assert!(rewrap(b"Subject: plain\r\n\r\nhello\r\n", &old, &new).is_none());
    }
}
