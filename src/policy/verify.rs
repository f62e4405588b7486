//! Verification: the only place a [`Verified`] policy is made.
//!
//! A sender accepts a signed policy only if (mesh-formats.md §3, in this order):
//! 1. the UDF of the JWS's `jwk` matches the address's fingerprint to the address's precision;
//! 2. the signature verifies (and the JWS header obeys the rules in [`super::jws`]);
//! 3. `address` equals the routable address (domain as lower-case A-label, local part byte for
//!    byte);
//! 4. `created` is not in the future (beyond [`CLOCK_SKEW`]), `expires` is later than now and at
//!    most [`MAX_VALIDITY`] after `created`;
//! 5. `encryption` is `required`, and every format it names has keys that can be used.
//!
//! For an OpenPGP-fingerprint address the "policy" is the certificate itself: its primary
//! fingerprint must equal the address's, and it must be able to receive encrypted mail now.

use super::document::{Format, PolicyDocument, POLICY_VERSION};
use super::jws::{self, JwsError};
use crate::address::{Fingerprint, StrongAddress, Udf};
use crate::crypto::openpgp::{self, CertError};
use crate::crypto::smime::{SmimeCert, SmimeCertError};
use data_encoding::BASE64;
use sequoia_openpgp::Cert;
use std::sync::Arc;
use std::time::SystemTime;
use thiserror::Error;
use time::{Duration, OffsetDateTime};

/// How far in the future `created` may lie before the policy is refused.
pub const CLOCK_SKEW: Duration = Duration::minutes(5);
/// The longest a policy may be valid: two years (plus a leap day).
pub const MAX_VALIDITY: Duration = Duration::days(2 * 365 + 1);

/// Why an artefact is not a valid policy for an address. Each maps to `550 5.7.1` (SMTP) and
/// exit code 65 (CLI), with this text as the reason.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PolicyRefusal {
    #[error("malformed policy signature: {0}")]
    Jws(JwsError),
    #[error("policy is signed by another key (fingerprint mismatch)")]
    FingerprintMismatch,
    #[error("policy payload is invalid: {0}")]
    Payload(String),
    #[error("policy format version {0} is not supported")]
    Version(u32),
    #[error("policy is for {policy}, not {wanted}")]
    AddressMismatch { policy: String, wanted: String },
    #[error("policy was created in the future")]
    CreatedInFuture,
    #[error("policy expired")]
    Expired,
    #[error("policy is valid for more than two years")]
    ValidityTooLong,
    #[error("policy encryption {0:?} is not \"required\"")]
    Encryption(String),
    #[error("policy names no format meshmail can produce")]
    NoFormats,
    #[error("policy keys: {0}")]
    OpenPgpKeys(#[from] CertError),
    #[error("policy S/MIME certificates: {0}")]
    SmimeCerts(#[from] SmimeCertError),
    #[error("certificate fingerprint does not match the address")]
    CertificateMismatch,
    #[error("the address carries no fingerprint of this kind")]
    WrongKind,
}

/// Where a verified policy was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// The local policy store or keyring.
    Store,
    /// DNS: TXT `_mmm` or OPENPGPKEY.
    Dns,
    /// HTTPS: `/.well-known/mmm-udf/` or WKD.
    Https,
}

/// What backs a verified policy.
#[derive(Debug, Clone)]
pub enum Origin {
    /// A signed policy document.
    SignedPolicy {
        signer: Udf,
        created: OffsetDateTime,
        expires: OffsetDateTime,
        /// The JWS as received, to store and to re-verify later.
        jws: Arc<str>,
    },
    /// The OpenPGP certificate an OpenPGP-fingerprint address names.
    Certificate,
}

/// A policy that passed every check for one address. Only this module makes one, so code that
/// holds a `Verified` knows the checks ran (a proof token, as rustls's
/// `HandshakeSignatureValid`).
#[derive(Debug, Clone)]
pub struct Verified {
    address: StrongAddress,
    origin: Origin,
    source: Source,
    formats: Vec<Format>,
    // Shared, so that the copies a busy session makes of a verified policy (cache, RCPT,
    // DATA) cost a reference count, not a certificate parse's worth of allocations.
    openpgp: Arc<[Cert]>,
    smime: Arc<[SmimeCert]>,
    escrow_openpgp: Arc<[Cert]>,
    escrow_smime: Arc<[SmimeCert]>,
}

impl Verified {
    pub fn address(&self) -> &StrongAddress {
        &self.address
    }
    pub fn origin(&self) -> &Origin {
        &self.origin
    }
    pub fn source(&self) -> Source {
        self.source
    }
    /// The formats in the policy's order of preference, each with keys to use.
    pub fn formats(&self) -> &[Format] {
        &self.formats
    }
    pub fn openpgp_certs(&self) -> &[Cert] {
        &self.openpgp
    }
    pub fn smime_certs(&self) -> &[SmimeCert] {
        &self.smime
    }
    pub fn escrow_openpgp(&self) -> &[Cert] {
        &self.escrow_openpgp
    }
    pub fn escrow_smime(&self) -> &[SmimeCert] {
        &self.escrow_smime
    }
    /// The certificates, shared.
    pub fn openpgp_shared(&self) -> Arc<[Cert]> {
        self.openpgp.clone()
    }
    pub fn smime_shared(&self) -> Arc<[SmimeCert]> {
        self.smime.clone()
    }
    pub fn escrow_openpgp_shared(&self) -> Arc<[Cert]> {
        self.escrow_openpgp.clone()
    }
    pub fn escrow_smime_shared(&self) -> Arc<[SmimeCert]> {
        self.escrow_smime.clone()
    }
    /// `created` of a signed policy (None for a certificate).
    pub fn created(&self) -> Option<OffsetDateTime> {
        match &self.origin {
            Origin::SignedPolicy { created, .. } => Some(*created),
            Origin::Certificate => None,
        }
    }
    /// When this verification stops holding: the policy's expiry.
    pub fn expires(&self) -> Option<OffsetDateTime> {
        match &self.origin {
            Origin::SignedPolicy { expires, .. } => Some(*expires),
            Origin::Certificate => None,
        }
    }

    /// A JSON summary for people and scripts (`meshmail policy resolve`).
    pub fn to_json(&self) -> serde_json::Value {
        let now = SystemTime::now();
        let certs = |certs: &[Cert]| -> Vec<serde_json::Value> {
            certs
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "fingerprint": c.fingerprint().to_hex(),
                        "encryption_keys": openpgp::encryption_key_fingerprints(c, now),
                        "user_ids": c.userids().map(|u| String::from_utf8_lossy(u.userid().value()).into_owned()).collect::<Vec<_>>(),
                    })
                })
                .collect()
        };
        let smime = |certs: &[SmimeCert]| -> Vec<serde_json::Value> {
            certs
                .iter()
                .map(|c| {
                    serde_json::json!({
                        "subject": c.subject(), "emails": c.emails(), "sha256": c.sha256_hex(),
                    })
                })
                .collect()
        };
        let mut out = serde_json::json!({
            "address": self.address.to_string(),
            "routable": self.address.routable(),
            "fingerprint_kind": self.address.fingerprint().kind(),
            "source": self.source,
            "formats": self.formats,
            "openpgp": certs(&self.openpgp),
            "smime": smime(&self.smime),
        });
        if let Origin::SignedPolicy {
            signer,
            created,
            expires,
            ..
        } = &self.origin
        {
            let rfc = |t: &OffsetDateTime| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            };
            out["signer"] = signer.to_string().into();
            out["created"] = rfc(created).into();
            out["expires"] = rfc(expires).into();
        }
        if !self.escrow_openpgp.is_empty() || !self.escrow_smime.is_empty() {
            out["escrow"] = serde_json::json!({
                "openpgp": certs(&self.escrow_openpgp), "smime": smime(&self.escrow_smime),
            });
        }
        out
    }
}

/// Verifies a signed policy (compact JWS) for a UDF address.
pub fn verify_policy(
    jws_text: &str,
    address: &StrongAddress,
    source: Source,
    now: OffsetDateTime,
) -> Result<Verified, PolicyRefusal> {
    let Fingerprint::Udf(wanted) = address.fingerprint() else {
        return Err(PolicyRefusal::WrongKind);
    };
    let checked = jws::verify_with_key_check(jws_text, |key| {
        Udf::of_ed25519_key(key, wanted.bits()).matches(wanted)
    })
    .map_err(|e| match e {
        jws::KeyCheckError::KeyRefused => PolicyRefusal::FingerprintMismatch,
        jws::KeyCheckError::Jws(e) => PolicyRefusal::Jws(e),
    })?;
    let doc: PolicyDocument = serde_json::from_slice(&checked.payload)
        .map_err(|e| PolicyRefusal::Payload(e.to_string()))?;
    if doc.mesh_policy != POLICY_VERSION {
        return Err(PolicyRefusal::Version(doc.mesh_policy));
    }
    let wanted_address = canonical_address(&address.routable());
    if canonical_address(&doc.address) != wanted_address {
        return Err(PolicyRefusal::AddressMismatch {
            policy: doc.address.clone(),
            wanted: address.routable(),
        });
    }
    if doc.created > now + CLOCK_SKEW {
        return Err(PolicyRefusal::CreatedInFuture);
    }
    if doc.expires <= now {
        return Err(PolicyRefusal::Expired);
    }
    if doc.expires - doc.created > MAX_VALIDITY {
        return Err(PolicyRefusal::ValidityTooLong);
    }
    if doc.encryption != "required" {
        return Err(PolicyRefusal::Encryption(doc.encryption.clone()));
    }
    let system_now = SystemTime::from(now);
    let formats: Vec<Format> = doc
        .formats
        .iter()
        .filter_map(|f| Format::parse(f))
        .collect();
    let openpgp = if formats.contains(&Format::PgpMime) {
        usable_openpgp(doc.openpgp.as_deref(), system_now)?
    } else {
        Vec::new()
    };
    let smime = if formats.iter().any(|f| f.is_smime()) {
        usable_smime(
            doc.smime.as_deref(),
            &address.routable(),
            now.unix_timestamp(),
            true,
        )?
    } else {
        Vec::new()
    };
    if formats.is_empty() {
        return Err(PolicyRefusal::NoFormats);
    }
    let escrow = doc.escrow.clone().unwrap_or_default();
    let escrow_openpgp = match escrow.openpgp.as_deref() {
        Some(text) => usable_openpgp(Some(text), system_now)?,
        None => Vec::new(),
    };
    let escrow_smime = match escrow.smime.as_deref() {
        Some(text) => usable_smime(Some(text), "", now.unix_timestamp(), false)?,
        None => Vec::new(),
    };
    Ok(Verified {
        address: address.clone(),
        origin: Origin::SignedPolicy {
            signer: Udf::of_ed25519_key(&checked.public_key, crate::address::udf::DEFAULT_BITS),
            created: doc.created,
            expires: doc.expires,
            jws: jws_text.trim().into(),
        },
        source,
        formats,
        openpgp: openpgp.into(),
        smime: smime.into(),
        escrow_openpgp: escrow_openpgp.into(),
        escrow_smime: escrow_smime.into(),
    })
}

/// Verifies that `cert` is the certificate an OpenPGP-fingerprint address names and that it
/// can receive encrypted mail now.
pub fn verify_certificate(
    cert: &Cert,
    address: &StrongAddress,
    source: Source,
    now: OffsetDateTime,
) -> Result<Verified, PolicyRefusal> {
    let wanted: &[u8] = match address.fingerprint() {
        Fingerprint::OpenPgpV4(f) => f,
        Fingerprint::OpenPgpV6(f) => f,
        Fingerprint::Udf(_) => return Err(PolicyRefusal::WrongKind),
    };
    if cert.fingerprint().as_bytes() != wanted {
        return Err(PolicyRefusal::CertificateMismatch);
    }
    openpgp::check_encryptable(cert, SystemTime::from(now))?;
    Ok(Verified {
        address: address.clone(),
        origin: Origin::Certificate,
        source,
        formats: vec![Format::PgpMime],
        openpgp: vec![cert.clone()].into(),
        smime: Vec::new().into(),
        escrow_openpgp: Vec::new().into(),
        escrow_smime: Vec::new().into(),
    })
}

fn usable_openpgp(text: Option<&str>, now: SystemTime) -> Result<Vec<Cert>, PolicyRefusal> {
    let bytes = decode_base64(text.unwrap_or_default())?;
    let certs = openpgp::parse_certs(&bytes)?;
    for cert in &certs {
        openpgp::check_encryptable(cert, now)?;
    }
    Ok(certs)
}

fn usable_smime(
    text: Option<&str>,
    address: &str,
    now: i64,
    check_address: bool,
) -> Result<Vec<SmimeCert>, PolicyRefusal> {
    let bytes = decode_base64(text.unwrap_or_default())?;
    let certs = SmimeCert::parse_concatenated(&bytes)?;
    for cert in &certs {
        match cert.check_for(address, now) {
            Err(SmimeCertError::AddressMissing(_)) if !check_address => {}
            other => other?,
        }
    }
    Ok(certs)
}

fn decode_base64(text: &str) -> Result<Vec<u8>, PolicyRefusal> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    BASE64
        .decode(compact.as_bytes())
        .map_err(|_| PolicyRefusal::Payload("key material is not base64".into()))
}

/// An address with its domain as a lower-case A-label and its local part unchanged.
fn canonical_address(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => {
            let domain =
                idna::domain_to_ascii(domain).unwrap_or_else(|_| domain.to_ascii_lowercase());
            format!("{local}@{}", domain.to_ascii_lowercase())
        }
        None => address.to_owned(),
    }
}

/// A verified PGP/MIME policy for `address` made without signature checks, for unit tests of
/// the pipeline (the checks have tests of their own above).
#[cfg(test)]
pub(crate) fn verified_for_tests(
    address: &StrongAddress,
    openpgp: Vec<Cert>,
    escrow_openpgp: Vec<Cert>,
) -> Verified {
    Verified {
        address: address.clone(),
        origin: Origin::Certificate,
        source: Source::Store,
        formats: vec![Format::PgpMime],
        openpgp: openpgp.into(),
        smime: Vec::new().into(),
        escrow_openpgp: escrow_openpgp.into(),
        escrow_smime: Vec::new().into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::address::{Form, Label};
    use crate::policy::jws::tests::{sign_with_header, test_key};
    use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
    use serde_json::json;

    /// A self-contained policy: an RSA S/MIME certificate made for the test, no OpenPGP.
    struct Fixture {
        key: Ed25519KeyPair,
        smime_b64: String,
        now: OffsetDateTime,
    }

    fn fixture() -> Fixture {
        let (der, _) = crate::keys::generate::smime_cert("alice@example.com").unwrap();
        Fixture {
            key: test_key(),
            smime_b64: BASE64.encode(&der),
            now: OffsetDateTime::now_utc(),
        }
    }

    impl Fixture {
        fn address(&self, bits: usize) -> StrongAddress {
            let public: [u8; 32] = self.key.public_key().as_ref().try_into().unwrap();
            StrongAddress::new(
                "alice@example.com",
                Fingerprint::Udf(Udf::of_ed25519_key(&public, bits)),
                Label::Xx,
                Form::Suffix,
            )
            .unwrap()
        }

        fn payload(&self) -> serde_json::Value {
            let rfc = |t: OffsetDateTime| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .unwrap()
            };
            json!({
                "mesh_policy": 1,
                "address": "alice@example.com",
                "created": rfc(self.now - Duration::hours(1)),
                "expires": rfc(self.now + Duration::days(30)),
                "encryption": "required",
                "formats": ["smime"],
                "smime": self.smime_b64,
            })
        }

        fn sign(&self, payload: &serde_json::Value) -> String {
            jws::sign(payload.to_string().as_bytes(), &self.key)
        }

        fn check(&self, payload: &serde_json::Value) -> Result<Verified, PolicyRefusal> {
            verify_policy(
                &self.sign(payload),
                &self.address(140),
                Source::Dns,
                self.now,
            )
        }
    }

    #[test]
    fn a_good_policy_verifies_at_any_precision() {
        let f = fixture();
        let jws = f.sign(&f.payload());
        for bits in [120, 140, 200] {
            let v = verify_policy(&jws, &f.address(bits), Source::Dns, f.now).unwrap();
            assert_eq!(v.formats(), &[Format::Smime]);
            assert_eq!(v.smime_certs().len(), 1);
        }
        // The address's domain is compared case-insensitively, as an A-label.
        let mut p = f.payload();
        p["address"] = json!("alice@EXAMPLE.com");
        assert!(f.check(&p).is_ok());
    }

    #[test]
    fn refusals_name_the_failed_check() {
        let f = fixture();
        let edit = |change: &dyn Fn(&mut serde_json::Value)| {
            let mut p = f.payload();
            change(&mut p);
            f.check(&p).unwrap_err()
        };
        let rfc = |t: OffsetDateTime| {
            t.format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        assert!(matches!(
            edit(&|p| p["address"] = json!("bob@example.com")),
            PolicyRefusal::AddressMismatch { .. }
        ));
        // The local part is compared byte for byte.
        assert!(matches!(
            edit(&|p| p["address"] = json!("Alice@example.com")),
            PolicyRefusal::AddressMismatch { .. }
        ));
        assert_eq!(
            edit(&|p| p["created"] = json!(rfc(f.now + Duration::hours(1)))),
            PolicyRefusal::CreatedInFuture
        );
        assert_eq!(
            edit(&|p| p["expires"] = json!(rfc(f.now - Duration::seconds(1)))),
            PolicyRefusal::Expired
        );
        assert_eq!(
            edit(&|p| p["expires"] = json!(rfc(f.now + Duration::days(800)))),
            PolicyRefusal::ValidityTooLong
        );
        assert_eq!(
            edit(&|p| p["encryption"] = json!("opportunistic")),
            PolicyRefusal::Encryption("opportunistic".into())
        );
        assert_eq!(
            edit(&|p| p["formats"] = json!(["carrier-pigeon"])),
            PolicyRefusal::NoFormats
        );
        assert_eq!(
            edit(&|p| p["mesh_policy"] = json!(2)),
            PolicyRefusal::Version(2)
        );
        assert!(matches!(
            edit(&|p| {
                p.as_object_mut().unwrap().remove("expires");
            }),
            PolicyRefusal::Payload(_)
        ));
        assert!(matches!(
            edit(&|p| p["smime"] = json!("AAAA")),
            PolicyRefusal::SmimeCerts(_)
        ));
        assert!(matches!(
            edit(&|p| p["formats"] = json!(["pgp-mime"])),
            PolicyRefusal::OpenPgpKeys(_)
        ));
    }

    #[test]
    fn another_keys_policy_is_a_fingerprint_mismatch() {
        let f = fixture();
        let other = Fixture {
            key: test_key(),
            ..fixture()
        };
        let jws = other.sign(&other.payload());
        assert_eq!(
            verify_policy(&jws, &f.address(140), Source::Dns, f.now).unwrap_err(),
            PolicyRefusal::FingerprintMismatch
        );
    }

    #[test]
    fn duplicate_payload_keys_refused() {
        let f = fixture();
        let text = f
            .payload()
            .to_string()
            .replacen('{', r#"{"address":"mallory@example.com","#, 1);
        let public: [u8; 32] = f.key.public_key().as_ref().try_into().unwrap();
        let header = json!({
            "alg": "EdDSA", "typ": jws::POLICY_TYP,
            "kid": Udf::of_ed25519_key(&public, 140).to_string(),
            "jwk": {"kty": "OKP", "crv": "Ed25519", "x": data_encoding::BASE64URL_NOPAD.encode(&public)},
        });
        let jws = sign_with_header(&header, text.as_bytes(), &f.key);
        assert!(matches!(
            verify_policy(&jws, &f.address(140), Source::Dns, f.now),
            Err(PolicyRefusal::Jws(JwsError::PayloadJson(e))) if e.contains("duplicate")
        ));
    }

    #[test]
    fn header_rules_apply_to_policies() {
        let f = fixture();
        let public: [u8; 32] = f.key.public_key().as_ref().try_into().unwrap();
        let mut header = json!({
            "alg": "none", "typ": jws::POLICY_TYP,
            "kid": Udf::of_ed25519_key(&public, 140).to_string(),
            "jwk": {"kty": "OKP", "crv": "Ed25519", "x": data_encoding::BASE64URL_NOPAD.encode(&public)},
        });
        let jws = sign_with_header(&header, f.payload().to_string().as_bytes(), &f.key);
        assert!(matches!(
            verify_policy(&jws, &f.address(140), Source::Dns, f.now),
            Err(PolicyRefusal::Jws(JwsError::Algorithm(_)))
        ));
        header["alg"] = json!("EdDSA");
        header["crit"] = json!(["b64"]);
        let jws = sign_with_header(&header, f.payload().to_string().as_bytes(), &f.key);
        assert!(matches!(
            verify_policy(&jws, &f.address(140), Source::Dns, f.now),
            Err(PolicyRefusal::Jws(JwsError::RefusedHeader("crit")))
        ));
    }
}
