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
