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

/// Encrypts `plain` to every live transport-encryption key of `recipients` (SEIPDv1 when a
/// recipient asks for it, as GnuPG 2.2 needs), signing it with `signer` when given, and
/// returns an ASCII-armored OpenPGP message.
pub fn encrypt(
    plain: &[u8],
    recipients: &[Cert],
    signer: Option<&Cert>,
) -> Result<Vec<u8>, OpenPgpError> {
    use sq::armor;
    use sq::serialize::stream::{Armorer, Encryptor, LiteralWriter, Message, Signer};
    use std::io::Write;
    let policy = StandardPolicy::new();
    let mut keys = Vec::new();
    for cert in recipients {
        let before = keys.len();
        keys.extend(
            cert.keys()
                .with_policy(&policy, None)
                .supported()
                .alive()
                .revoked(false)
                .for_transport_encryption(),
        );
        if keys.len() == before {
            return Err(OpenPgpError::NoRecipientKey(cert.fingerprint().to_hex()));
        }
    }
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
    let mut sink = Vec::with_capacity(plain.len() * 4 / 3 + 1024);
    {
        let message = Message::new(&mut sink);
        let message = Armorer::new(message)
            .kind(armor::Kind::Message)
            .build()
            .map_err(err)?;
        let message = Encryptor::for_recipients(message, keys)
            .build()
            .map_err(err)?;
        let message = match keypair {
            Some(kp) => Signer::new(message, kp)
                .map_err(err)?
                .build()
                .map_err(err)?,
            None => message,
        };
        let mut literal = LiteralWriter::new(message).build().map_err(err)?;
        literal
            .write_all(plain)
            .map_err(|e| OpenPgpError::Encrypt(e.to_string()))?;
        literal.finalize().map_err(err)?;
    }
    Ok(sink)
}

/// The recipients named by the PKESK packets of an OpenPGP message (armored or binary): key
/// IDs or fingerprints, upper-case hex; the wildcard (hidden recipient) as `None`.
pub fn message_recipients(message: &[u8]) -> Result<Vec<Option<String>>, OpenPgpError> {
    use sq::parse::{PacketParser, PacketParserResult};
    use sq::Packet;
    let mut out = Vec::new();
    let mut ppr =
        PacketParser::from_bytes(message).map_err(|e| OpenPgpError::Parse(e.to_string()))?;
    while let PacketParserResult::Some(pp) = ppr {
        match &pp.packet {
            Packet::PKESK(pkesk) => {
                let handle = pkesk.recipient();
                out.push(
                    handle
                        .map(|h| h.to_hex())
                        .filter(|h| !h.chars().all(|c| c == '0')),
                );
            }
            // The encrypted data follows the PKESKs: nothing more to learn without the key.
            Packet::SEIP(_) => break,
            _ => {}
        }
        ppr = pp.next().map_err(|e| OpenPgpError::Parse(e.to_string()))?.1;
        if out.len() > 1000 {
            return Err(OpenPgpError::Parse("too many recipients".into()));
        }
    }
    if out.is_empty() {
        return Err(OpenPgpError::Parse("no encrypted session key".into()));
    }
    Ok(out)
}

/// True when `message_recipients` covers a live encryption key of `cert` (by key ID or
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
