//! OpenPGP certificates with Sequoia: parsing what a policy or a DNS/WKD answer carries, and
//! deciding whether a certificate can receive encrypted mail now.

use sequoia_openpgp as sq;
use sq::cert::prelude::*;
use sq::parse::Parse;
use sq::policy::StandardPolicy;
use sq::serialize::{Serialize, SerializeInto};
use sq::types::RevocationStatus;
use std::time::SystemTime;
use thiserror::Error;

/// At most this many certificates are read from one artefact (a policy, a DNS record, a WKD
/// file); more is a sign of abuse.
pub const MAX_CERTS_PER_ARTEFACT: usize = 16;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CertError {
    #[error("not an OpenPGP certificate: {0}")]
    Parse(String),
    #[error("more than {MAX_CERTS_PER_ARTEFACT} certificates")]
    TooMany,
    #[error("certificate {fingerprint} is not valid now: {reason}")]
    Invalid { fingerprint: String, reason: String },
    #[error("certificate {0} has no valid encryption subkey")]
    NoEncryptionKey(String),
}

/// Parses one or more certificates (binary or armored) from `bytes`.
pub fn parse_certs(bytes: &[u8]) -> Result<Vec<Cert>, CertError> {
    let mut certs = Vec::new();
    for cert in CertParser::from_bytes(bytes).map_err(|e| CertError::Parse(e.to_string()))? {
        let cert = cert.map_err(|e| CertError::Parse(e.to_string()))?;
        certs.push(cert);
        if certs.len() > MAX_CERTS_PER_ARTEFACT {
            return Err(CertError::TooMany);
        }
    }
    if certs.is_empty() {
        return Err(CertError::Parse("no certificate".into()));
    }
    Ok(certs)
}

/// Checks that `cert` is valid at `now` under Sequoia's standard policy (not revoked, not
/// expired, no broken algorithms) and has at least one live transport-encryption key.
pub fn check_encryptable(cert: &Cert, now: SystemTime) -> Result<(), CertError> {
    let policy = StandardPolicy::new();
    let fingerprint = cert.fingerprint().to_hex();
    let valid = cert
        .with_policy(&policy, now)
        .map_err(|e| CertError::Invalid {
            fingerprint: fingerprint.clone(),
            reason: e.to_string(),
        })?;
    valid.alive().map_err(|e| CertError::Invalid {
        fingerprint: fingerprint.clone(),
        reason: e.to_string(),
    })?;
    if let RevocationStatus::Revoked(_) = valid.revocation_status() {
        return Err(CertError::Invalid {
            fingerprint,
            reason: "revoked".into(),
        });
    }
    let usable = valid
        .keys()
        .alive()
        .revoked(false)
        .for_transport_encryption()
        .next()
        .is_some();
    if usable {
        Ok(())
    } else {
        Err(CertError::NoEncryptionKey(fingerprint))
    }
}

/// The fingerprints (upper-case hex) of the live transport-encryption keys of `cert`.
pub fn encryption_key_fingerprints(cert: &Cert, now: SystemTime) -> Vec<String> {
    let policy = StandardPolicy::new();
    match cert.with_policy(&policy, now) {
        Ok(valid) => valid
            .keys()
            .alive()
            .revoked(false)
            .for_transport_encryption()
            .map(|k| k.key().fingerprint().to_hex())
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// The binary transferable public key of `cert` (no secrets).
pub fn public_bytes(cert: &Cert) -> Vec<u8> {
    let mut out = Vec::new();
    // Serializing to a Vec cannot fail for I/O reasons.
    let _ = cert.serialize(&mut out);
    out
}

/// The armored public key of `cert`.
pub fn public_armored(cert: &Cert) -> Vec<u8> {
    cert.armored().to_vec().unwrap_or_default()
}

/// Why a message could not be encrypted or checked (`550 5.7.5`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OpenPgpError {
    #[error("no usable encryption key for {0}")]
    NoRecipientKey(String),
    #[error("OpenPGP encryption failed: {0}")]
    Encrypt(String),
    #[error("the account's signing key is not usable: {0}")]
    Signer(String),
    #[error("not an OpenPGP message: {0}")]
    Parse(String),
}

/// Encrypts the concatenation of `parts` to every live transport-encryption key of
/// `recipients` (SEIPDv1 when a recipient asks for it, as GnuPG 2.2 needs), signing it with
/// `signer` when given, and returns the binary OpenPGP message (see [`armor_crlf`]).
pub fn encrypt(
    parts: &[&[u8]],
    recipients: &[Cert],
    signer: Option<&Cert>,
) -> Result<Vec<u8>, OpenPgpError> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut sink = Vec::with_capacity(total + 1024);
    encrypt_to(parts, recipients, signer, &mut sink)?;
    Ok(sink)
}

fn encrypt_to(
    parts: &[&[u8]],
    recipients: &[Cert],
    signer: Option<&Cert>,
    sink: &mut (dyn std::io::Write + Send + Sync),
) -> Result<(), OpenPgpError> {
    use sq::serialize::stream::{Encryptor, LiteralWriter, Message, Recipient, Signer};
    use std::io::Write;
    let policy = StandardPolicy::new();
    let targets: Vec<std::sync::Arc<EncryptionKeys>> = recipients
        .iter()
        .map(encryption_keys)
        .collect::<Result<_, _>>()?;
    let keys: Vec<Recipient> = targets
        .iter()
        .flat_map(|t| {
            t.keys.iter().map(|k| {
                Recipient::new(t.features.clone(), Some(sq::KeyHandle::from(k.keyid())), k)
            })
        })
        .collect();
    let err = |e: anyhow::Error| OpenPgpError::Encrypt(e.to_string());
    let keypair = match signer {
        Some(cert) => {
            let key = cert
                .keys()
                .with_policy(&policy, None)
                .secret()
                .alive()
                .revoked(false)
                .for_signing()
                .next()
                .ok_or_else(|| OpenPgpError::Signer("no signing-capable secret key".into()))?;
            Some(
                key.key()
                    .clone()
                    .into_keypair()
                    .map_err(|e| OpenPgpError::Signer(e.to_string()))?,
            )
        }
        None => None,
    };
    {
        let message = if all_cv25519(&targets) {
            // The fast path: PKESKs from aws-lc-rs (see `x25519`), then Sequoia writes the
            // encrypted data with the same session key.
            let sym = sq::types::SymmetricAlgorithm::AES256;
            let mut session_key = sq::crypto::SessionKey::new(32).map_err(err)?;
            aws_lc_rs::rand::fill(&mut session_key)
                .map_err(|_| OpenPgpError::Encrypt("no randomness".into()))?;
            for key in targets.iter().flat_map(|t| t.keys.iter()) {
                let pkesk = super::x25519::pkesk(key, sym, &session_key)
                    .ok_or_else(|| OpenPgpError::Encrypt("not a Cv25519 key".into()))?
                    .map_err(OpenPgpError::Encrypt)?;
                sq::Packet::from(pkesk).serialize(sink).map_err(err)?;
            }
            let message = Message::new(sink);
            Encryptor::with_session_key(message, sym, session_key)
                .map_err(err)?
                .build()
                .map_err(err)?
        } else {
            let message = Message::new(sink);
            Encryptor::for_recipients(message, keys)
                .build()
                .map_err(err)?
        };
        let message = match keypair {
            Some(kp) => Signer::new(message, kp)
                .map_err(err)?
                .build()
                .map_err(err)?,
            None => message,
        };
        let mut literal = LiteralWriter::new(message).build().map_err(err)?;
        for part in parts {
            literal
                .write_all(part)
                .map_err(|e| OpenPgpError::Encrypt(e.to_string()))?;
        }
        literal.finalize().map_err(err)?;
    }
    Ok(())
}

/// Encrypts like [`encrypt`], writing the ASCII-armored message (see [`armor_crlf`]) straight
/// into `out`: the binary ciphertext is never held whole, so a large message is in memory
/// only as its plaintext and its armored copy.
pub fn encrypt_armored_into(
    parts: &[&[u8]],
    recipients: &[Cert],
    signer: Option<&Cert>,
    out: &mut Vec<u8>,
) -> Result<(), OpenPgpError> {
    let mut armor = ArmorWriter::new(out);
    encrypt_to(parts, recipients, signer, &mut armor)?;
    armor.finish();
    Ok(())
}

/// True when every recipient key is a Cv25519 ECDH key with a SHA-2 KDF.
fn all_cv25519(targets: &[std::sync::Arc<EncryptionKeys>]) -> bool {
    use sq::crypto::mpi::PublicKey;
    use sq::types::{Curve, HashAlgorithm};
    targets.iter().flat_map(|t| t.keys.iter()).all(|k| {
        matches!(
            k.mpis(),
            PublicKey::ECDH {
                curve: Curve::Cv25519,
                hash: HashAlgorithm::SHA256 | HashAlgorithm::SHA384 | HashAlgorithm::SHA512,
                ..
            }
        )
    })
}

/// Streams base64 with CRLF every 64 characters and a CRC24, as [`armor_crlf`] does: whole
/// lines (48 input bytes) are encoded at once.
struct ArmorWriter<'a> {
    out: &'a mut Vec<u8>,
    /// Fewer than 48 bytes waiting for a whole line.
    pending: Vec<u8>,
    crc: u32,
}

/// Input bytes per armor line (64 base64 characters).
const LINE_BYTES: usize = 48;

impl<'a> ArmorWriter<'a> {
    fn new(out: &'a mut Vec<u8>) -> ArmorWriter<'a> {
        out.extend_from_slice(b"-----BEGIN PGP MESSAGE-----\r\n\r\n");
        ArmorWriter {
            out,
            pending: Vec::with_capacity(LINE_BYTES),
            crc: CRC24_INIT,
        }
    }

    fn line(out: &mut Vec<u8>, bytes: &[u8]) {
        let start = out.len();
        let n = data_encoding::BASE64.encode_len(bytes.len());
        out.resize(start + n, 0);
        data_encoding::BASE64.encode_mut(bytes, &mut out[start..]);
        out.extend_from_slice(b"\r\n");
    }

    fn finish(self) {
        if !self.pending.is_empty() {
            Self::line(self.out, &self.pending);
        }
        let crc = (self.crc & 0x00FF_FFFF).to_be_bytes();
        self.out.push(b'=');
        self.out
            .extend_from_slice(data_encoding::BASE64.encode(&crc[1..]).as_bytes());
        self.out
            .extend_from_slice(b"\r\n-----END PGP MESSAGE-----\r\n");
    }
}

impl std::io::Write for ArmorWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.crc = crc24_update(self.crc, buf);
        let mut rest = buf;
        if !self.pending.is_empty() {
            let take = (LINE_BYTES - self.pending.len()).min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() < LINE_BYTES {
                return Ok(buf.len());
            }
            Self::line(self.out, &self.pending);
            self.pending.clear();
        }
        let mut lines = rest.chunks_exact(LINE_BYTES);
        for line in &mut lines {
            Self::line(self.out, line);
        }
        self.pending.extend_from_slice(lines.remainder());
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Appends the ASCII armor (RFC 9580 §6.2) of a binary OpenPGP message to `out`, with CRLF
/// line ends as MIME wants them, 64 characters a line, and the CRC24 checksum GnuPG 2.2
/// expects.
pub fn armor_crlf(binary: &[u8], out: &mut Vec<u8>) {
    use std::io::Write;
    let mut w = ArmorWriter::new(out);
    // Writing to a Vec cannot fail.
    let _ = w.write_all(binary);
    w.finish();
}

const CRC24_INIT: u32 = 0x00B7_04CE;

/// RFC 9580 §6.1.1 CRC-24 of a whole buffer.
#[cfg(test)]
fn crc24(data: &[u8]) -> u32 {
    crc24_update(CRC24_INIT, data) & 0x00FF_FFFF
}

/// CRC-24 table (polynomial 0x864CFB), built at compile time: byte at a time.
const CRC24_TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = (i as u32) << 16;
        let mut bit = 0;
        while bit < 8 {
            crc <<= 1;
            if crc & 0x0100_0000 != 0 {
                crc ^= 0x0186_4CFB;
            }
            bit += 1;
        }
        table[i] = crc & 0x00FF_FFFF;
        i += 1;
    }
    table
};

/// Slicing-by-8 tables for the CRC held left-aligned in 32 bits (`crc << 8`): table `k`
/// advances a byte through `k` more zero bytes. Eight input bytes cost eight lookups instead
/// of eight dependent steps; the CRC was the largest single cost of armouring a message.
const CRC24_SLICES: [[u32; 256]; 8] = {
    let mut t = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        t[0][i] = CRC24_TABLE[i] << 8;
        i += 1;
    }
    let mut k = 1;
    while k < 8 {
        let mut i = 0;
        while i < 256 {
            let prev = t[k - 1][i];
            t[k][i] = (prev << 8) ^ t[0][(prev >> 24) as usize];
            i += 1;
        }
        k += 1;
    }
    t
};

fn crc24_update(crc: u32, data: &[u8]) -> u32 {
    let t = &CRC24_SLICES;
    let mut c = (crc & 0x00FF_FFFF) << 8;
    let mut blocks = data.chunks_exact(8);
    for b in &mut blocks {
        let w1 = c ^ u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
        let w2 = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
        c = t[7][(w1 >> 24) as usize]
            ^ t[6][((w1 >> 16) & 0xFF) as usize]
            ^ t[5][((w1 >> 8) & 0xFF) as usize]
            ^ t[4][(w1 & 0xFF) as usize]
            ^ t[3][(w2 >> 24) as usize]
            ^ t[2][((w2 >> 16) & 0xFF) as usize]
            ^ t[1][((w2 >> 8) & 0xFF) as usize]
            ^ t[0][(w2 & 0xFF) as usize];
    }
    for &b in blocks.remainder() {
        c = (c << 8) ^ t[0][((c >> 24) as u8 ^ b) as usize];
    }
    c >> 8
}

/// The live transport-encryption keys of a certificate and the features it advertises.
pub struct EncryptionKeys {
    features: sq::types::Features,
    keys: Vec<sq::packet::Key<sq::packet::key::PublicParts, sq::packet::key::UnspecifiedRole>>,
}

/// How long the keys found in a certificate are reused without evaluating it again (its
/// signatures, expiry and revocations). Policies are refreshed far less often than this.
const KEY_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

/// The encryption keys of `cert`: evaluated under the standard policy once, then reused
/// for a minute, since evaluating a certificate's signatures costs more than encrypting a
/// typical message.
fn encryption_keys(cert: &Cert) -> Result<std::sync::Arc<EncryptionKeys>, OpenPgpError> {
    use std::sync::{Arc, OnceLock};
    static CACHE: OnceLock<moka::sync::Cache<(sq::Fingerprint, usize), Arc<EncryptionKeys>>> =
        OnceLock::new();
    let cache = CACHE.get_or_init(|| {
        moka::sync::Cache::builder()
            .max_capacity(10_000)
            .time_to_live(KEY_CACHE_TTL)
            .build()
    });
    // An updated copy of the certificate (a new subkey, a revocation, a new binding) has more
    // signatures: it is evaluated afresh at once. (Expiry is seen within a minute.)
    let signatures: usize = cert
        .keys()
        .map(|k| k.self_signatures().count() + k.self_revocations().count())
        .sum::<usize>()
        + cert.keys().count();
    let id = (cert.fingerprint(), signatures);
    if let Some(hit) = cache.get(&id) {
        return Ok(hit);
    }
    let policy = StandardPolicy::new();
    let valid = cert
        .with_policy(&policy, None)
        .map_err(|_| OpenPgpError::NoRecipientKey(cert.fingerprint().to_hex()))?;
    let keys: Vec<_> = valid
        .keys()
        .supported()
        .alive()
        .revoked(false)
        .for_transport_encryption()
        .map(|ka| ka.key().clone().role_into_unspecified())
        .collect();
    if keys.is_empty() {
        return Err(OpenPgpError::NoRecipientKey(cert.fingerprint().to_hex()));
    }
    let entry = Arc::new(EncryptionKeys {
        features: valid
            .features()
            .unwrap_or_else(sq::types::Features::sequoia),
        keys,
    });
    cache.insert(id, entry.clone());
    Ok(entry)
}

/// True when `cert` binds `address` in a user ID that its primary key certified (a valid
/// self-signature under the standard policy). A user ID without one is anyone's claim: a
/// certificate with a forged user ID must not become the key of a plain address.
pub fn certifies_address(cert: &Cert, address: &str) -> bool {
    let policy = StandardPolicy::new();
    let Ok(valid) = cert.with_policy(&policy, None) else {
        return false;
    };
    valid.userids().revoked(false).any(|u| {
        u.userid()
            .email()
            .ok()
            .flatten()
            .is_some_and(|e| e.eq_ignore_ascii_case(address))
    })
}

/// True when `recipients` (from `client_sealed::encrypted_packets`) covers a live encryption key of `cert` (by key ID or
/// fingerprint).
pub fn addressed_to(recipients: &[Option<String>], cert: &Cert) -> bool {
    let policy = StandardPolicy::new();
    let Ok(valid) = cert.with_policy(&policy, None) else {
        return false;
    };
    valid
        .keys()
        .alive()
        .revoked(false)
        .for_transport_encryption()
        .any(|k| {
            let fpr = k.key().fingerprint().to_hex();
            let id = k.key().keyid().to_hex();
            recipients.iter().flatten().any(|r| *r == fpr || *r == id)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_certified_user_id_binds_an_address() {
        let (cert, _) = CertBuilder::general_purpose(Some("mallory@example.test"))
            .generate()
            .unwrap();
        // A user ID appended without a self-signature: anyone can write one.
        let (forged, _) = cert
            .clone()
            .insert_packets(vec![sq::Packet::from(sq::packet::UserID::from(
                "victim@example.test",
            ))])
            .unwrap();
        assert!(
            forged
                .userids()
                .any(|u| u.userid().value() == b"victim@example.test"),
            "the forged user ID is in the certificate"
        );
        assert!(!certifies_address(&forged, "victim@example.test"));
        assert!(certifies_address(&forged, "Mallory@Example.test"));
    }

    #[test]
    fn sliced_crc24_equals_the_bytewise_one() {
        let bytewise = |mut crc: u32, data: &[u8]| {
            for &b in data {
                let index = ((crc >> 16) as u8 ^ b) as usize;
                crc = ((crc << 8) ^ CRC24_TABLE[index]) & 0x00FF_FFFF;
            }
            crc
        };
        let data: Vec<u8> = (0..1000u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
            .collect();
        for len in 0..100 {
            for start in [0, 1, 7] {
                let d = &data[start..start + len];
                assert_eq!(
                    crc24_update(CRC24_INIT, d),
                    bytewise(CRC24_INIT, d),
                    "{len}"
                );
            }
        }
        // Split updates agree with one update.
        let (a, b) = data.split_at(333);
        assert_eq!(
            crc24_update(crc24_update(CRC24_INIT, a), b),
            bytewise(CRC24_INIT, &data)
        );
    }

    #[test]
    fn crc24_matches_the_rfc_reference() {
        // RFC 4880 §6.1 reference implementation on "123456789": 0x21CF02.
        assert_eq!(super::crc24(b"123456789"), 0x21CF02);
    }

    #[test]
    fn streamed_armor_equals_armor_of_the_whole() {
        use std::io::Write;
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 7 % 251) as u8).collect();
        // An independent reference: data_encoding's own wrapping.
        let mut spec = data_encoding::BASE64.specification();
        spec.wrap.width = 64;
        spec.wrap.separator = "\r\n".into();
        let body = spec.encoding().unwrap().encode(&data);
        let crc = super::crc24(&data).to_be_bytes();
        let whole = format!(
            "-----BEGIN PGP MESSAGE-----\r\n\r\n{body}={}\r\n-----END PGP MESSAGE-----\r\n",
            data_encoding::BASE64.encode(&crc[1..])
        )
        .into_bytes();
        let mut via_fn = Vec::new();
        super::armor_crlf(&data, &mut via_fn);
        assert_eq!(via_fn, whole);
        for step in [1, 2, 3, 5, 64, 1000] {
            let mut out = Vec::new();
            let mut w = super::ArmorWriter::new(&mut out);
            for chunk in data.chunks(step) {
                w.write_all(chunk).unwrap();
            }
            w.finish();
            assert_eq!(out, whole, "chunks of {step}");
        }
    }
}
