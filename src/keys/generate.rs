//! Making an account's keys: the Ed25519 policy-signing key, the OpenPGP v4 certificate and the
//! self-signed S/MIME certificate.

use super::KeyError;
use crate::secret::{Secret, SecretBytes};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::Ed25519KeyPair;
use sequoia_openpgp as sq;
use sq::cert::prelude::*;
use sq::packet::Signature;
use sq::types::{Features, KeyFlags};
use std::time::{Duration, SystemTime};

/// How long the OpenPGP and S/MIME certificates are valid (renewed before then).
pub const CERT_VALIDITY: Duration = Duration::from_secs(3 * 365 * 24 * 3600);

/// A freshly made Ed25519 policy-signing key, as PKCS#8.
pub fn policy_signing_key() -> Result<SecretBytes, KeyError> {
    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new())
        .map_err(|_| KeyError::Generate("Ed25519 key".into()))?;
    Ok(Secret::new(pkcs8.as_ref().to_vec()))
}

/// An OpenPGP v4 certificate for `address`: Ed25519 primary (certify, sign), Cv25519
/// encryption subkey, SEIPDv1 only (GnuPG 2.2 cannot read SEIPDv2), user ID = the routable
/// address (as WKD needs), an expiry. Returns the certificate with secrets and its revocation.
pub fn openpgp_cert(address: &str) -> Result<(sq::Cert, Signature), KeyError> {
    let err = |e: anyhow::Error| KeyError::Generate(format!("OpenPGP certificate: {e}"));
    CertBuilder::new()
        .set_profile(sq::Profile::RFC4880)
        .map_err(err)?
        .set_cipher_suite(CipherSuite::Cv25519)
        .set_features(Features::empty().set_seipdv1())
        .map_err(err)?
        .set_primary_key_flags(KeyFlags::empty().set_certification().set_signing())
        .add_userid(address)
        .add_subkey(
            KeyFlags::empty()
                .set_transport_encryption()
                .set_storage_encryption(),
            None,
            None,
        )
        .set_validity_period(CERT_VALIDITY)
        .generate()
        .map_err(err)
}

/// A self-signed S/MIME certificate: RSA-3072, the address as the subject's CN and in the
/// subjectAltName (rfc822Name), emailProtection. Returns (certificate DER, key PKCS#8).
pub fn smime_cert(address: &str) -> Result<(Vec<u8>, SecretBytes), KeyError> {
    let err = |what: &str, e: String| KeyError::Generate(format!("S/MIME {what}: {e}"));
    let rsa = aws_lc_rs::rsa::KeyPair::generate(KeySize::Rsa3072)
        .map_err(|e| err("RSA key", e.to_string()))?;
    let pkcs8 = Secret::new(
        rsa.as_der()
            .map_err(|e| err("RSA key", e.to_string()))?
            .as_ref()
            .to_vec(),
    );
    let pkcs8_der = rustls::pki_types::PrivatePkcs8KeyDer::from(pkcs8.expose().as_slice());
    let key_pair =
        rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&pkcs8_der, &rcgen::PKCS_RSA_SHA256)
            .map_err(|e| err("key", e.to_string()))?;
    let mut params = rcgen::CertificateParams::default();
    let mut dn = rcgen::DistinguishedName::new();
    dn.push(rcgen::DnType::CommonName, address);
    params.distinguished_name = dn;
    let email = rcgen::string::Ia5String::try_from(address.to_owned())
        .map_err(|e| err("address", e.to_string()))?;
    params.subject_alt_names = vec![rcgen::SanType::Rfc822Name(email)];
    params.key_usages = vec![
        rcgen::KeyUsagePurpose::DigitalSignature,
        rcgen::KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::EmailProtection];
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::minutes(5);
    params.not_after = now + time::Duration::seconds(CERT_VALIDITY.as_secs() as i64);
    let cert = params
        .self_signed(&key_pair)
        .map_err(|e| err("certificate", e.to_string()))?;
    Ok((cert.der().to_vec(), pkcs8))
}

/// Seconds since the Unix epoch, for file metadata.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
