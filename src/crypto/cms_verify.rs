//! Checking the CMS SignedData (RFC 5652 §5) of S/MIME mail found inside an encrypted message:
//! a detached signature (the second part of a `multipart/signed`, RFC 8551 §3.5.3) or an
//! opaque `signed-data` object that carries its content (§3.5.2).
//!
//! Only the signer certificates the object itself carries are used ("attached"): nothing is
//! looked up at read time. A signature counts as good when the signer's certificate is found,
//! was valid at the signing time, and its key verifies the signature over the signed attributes
//! whose message digest matches the content. No chain is built: like an attached OpenPGP key,
//! the result says which certificate signed and which addresses it names, and the view shows
//! the From as verified only when that certificate names it.

use super::cms::oid;
use super::decrypt::SignatureCheck;
use aws_lc_rs::digest;
use aws_lc_rs::signature::{self as sig, VerificationAlgorithm};
use rasn::types::{ObjectIdentifier, OctetString};
use rasn_cms::{CertificateChoices, ContentInfo, SignedData, SignerIdentifier, SignerInfo};
use x509_parser::prelude::*;

/// At most this many signers and carried certificates are looked at.
const MAX_SIGNERS: usize = 8;
const MAX_CERTS: usize = 32;

const OID_SIGNED_DATA: &[u32] = &[1, 2, 840, 113549, 1, 7, 2];
const OID_MESSAGE_DIGEST: &[u32] = &[1, 2, 840, 113549, 1, 9, 4];
const OID_SIGNING_TIME: &[u32] = &[1, 2, 840, 113549, 1, 9, 5];

const SHA1: &[u32] = &[1, 3, 14, 3, 2, 26];
const SHA256: &[u32] = &[2, 16, 840, 1, 101, 3, 4, 2, 1];
const SHA384: &[u32] = &[2, 16, 840, 1, 101, 3, 4, 2, 2];
const SHA512: &[u32] = &[2, 16, 840, 1, 101, 3, 4, 2, 3];

const RSA: &[u32] = &[1, 2, 840, 113549, 1, 1, 1];
const RSA_SHA1: &[u32] = &[1, 2, 840, 113549, 1, 1, 5];
const RSA_SHA256: &[u32] = &[1, 2, 840, 113549, 1, 1, 11];
const RSA_SHA384: &[u32] = &[1, 2, 840, 113549, 1, 1, 12];
const RSA_SHA512: &[u32] = &[1, 2, 840, 113549, 1, 1, 13];
const RSA_PSS: &[u32] = &[1, 2, 840, 113549, 1, 1, 10];
const EC_PUBLIC_KEY: &[u32] = &[1, 2, 840, 10045, 2, 1];
const ECDSA_SHA256: &[u32] = &[1, 2, 840, 10045, 4, 3, 2];
const ECDSA_SHA384: &[u32] = &[1, 2, 840, 10045, 4, 3, 3];
const ECDSA_SHA512: &[u32] = &[1, 2, 840, 10045, 4, 3, 4];
const ED25519: &[u32] = &[1, 3, 101, 112];
const P256: &[u32] = &[1, 2, 840, 10045, 3, 1, 7];
const P384: &[u32] = &[1, 3, 132, 0, 34];

/// What a SignedData says: the signatures, and the content it carries (opaque form only).
pub struct SignedContent {
    pub checks: Vec<SignatureCheck>,
    pub content: Option<Vec<u8>>,
}

/// Checks the SignedData in `der` (a ContentInfo) over `detached` when given, else over the
/// content it carries. `None` when `der` is not a readable SignedData at all.
pub fn verify(der: &[u8], detached: Option<&[u8]>) -> Option<SignedContent> {
    let info: ContentInfo = rasn::ber::decode(der).ok()?;
    if info.content_type != oid(OID_SIGNED_DATA) {
        return None;
    }
    let signed: SignedData = rasn::ber::decode(info.content.as_bytes()).ok()?;
    let carried = signed
        .encap_content_info
        .content
        .as_ref()
        .map(|c| c.to_vec());
    let content = detached.or(carried.as_deref());
    let certs: Vec<rasn_cms::Certificate> = signed
        .certificates
        .iter()
        .flat_map(|set| set.iter())
        .take(MAX_CERTS)
        .filter_map(|c| match c {
            CertificateChoices::Certificate(c) => Some((**c).clone()),
            _ => None,
        })
        .collect();
    let checks = signed
        .signer_infos
        .iter()
        .take(MAX_SIGNERS)
        .map(|si| check_signer(si, &certs, content))
        .collect();
    Some(SignedContent {
        checks,
        content: carried,
    })
}

/// One signer's check. Without its certificate the signer is named by its identifier.
fn check_signer(
    si: &SignerInfo,
    certs: &[rasn_cms::Certificate],
    content: Option<&[u8]>,
) -> SignatureCheck {
    let Some(der) = find_cert(&si.sid, certs) else {
        return SignatureCheck::failed("smime-certificate-missing");
    };
    let Ok((_, cert)) = X509Certificate::from_der(&der) else {
        return SignatureCheck::failed("smime-certificate-unreadable");
    };
    let fingerprint =
        data_encoding::HEXUPPER.encode(digest::digest(&digest::SHA256, &der).as_ref());
    SignatureCheck {
        signer: fingerprint,
        good: content.is_some_and(|c| signature_good(si, &cert, c)),
        addresses: emails(&cert),
    }
}

/// The signer's certificate (DER), by issuer and serial number or by subject key identifier.
fn find_cert(sid: &SignerIdentifier, certs: &[rasn_cms::Certificate]) -> Option<Vec<u8>> {
    certs.iter().find_map(|c| {
        let der = rasn::der::encode(c).ok()?;
        let found = match sid {
            SignerIdentifier::IssuerAndSerialNumber(ias) => {
                ias.issuer == c.tbs_certificate.issuer
                    && ias.serial_number == c.tbs_certificate.serial_number
            }
            SignerIdentifier::SubjectKeyIdentifier(ski) => X509Certificate::from_der(&der)
                .ok()
                .and_then(|(_, x)| subject_key_identifier(&x))
                .is_some_and(|own| own == ski.as_ref()),
        };
        found.then_some(der)
    })
}

fn subject_key_identifier(cert: &X509Certificate<'_>) -> Option<Vec<u8>> {
    cert.extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0.to_vec()),
            _ => None,
        })
}

/// The addresses a certificate names (subjectAltName rfc822Name, else the subject's
/// emailAddress), lower case.
fn emails(cert: &X509Certificate<'_>) -> Vec<String> {
    let mut out = Vec::new();
    if let Ok(Some(san)) = cert.subject_alternative_name() {
        for name in &san.value.general_names {
            if let GeneralName::RFC822Name(email) = name {
                out.push(email.to_lowercase());
            }
        }
    }
    if out.is_empty() {
        for e in cert.subject().iter_email() {
            if let Ok(s) = e.as_str() {
                out.push(s.to_lowercase());
            }
        }
    }
    out
}

/// The signature of `si` verifies with the certificate's key, over the signed attributes
/// (whose message digest must be the content's) or, without them, over the content.
fn signature_good(si: &SignerInfo, cert: &X509Certificate<'_>, content: &[u8]) -> bool {
    let Some(hash) = HashAlg::of(&si.digest_algorithm.algorithm) else {
        return false;
    };
    let signed_bytes = match &si.signed_attrs {
        Some(attrs) => {
            let digest_attr = attribute(attrs, OID_MESSAGE_DIGEST)
                .and_then(|v| rasn::der::decode::<OctetString>(v).ok());
            if digest_attr.as_deref() != Some(hash.digest(content).as_slice()) {
                return false;
            }
            if !valid_at_signing_time(cert, attrs) {
                return false;
            }
            // The signature covers the DER of the attributes as a SET OF (RFC 5652 §5.4).
            match rasn::der::encode(attrs) {
                Ok(der) => der,
                Err(_) => return false,
            }
        }
        None => {
            if !cert.validity().is_valid() {
                return false;
            }
            content.to_vec()
        }
    };
    let Some(algorithm) = verification_algorithm(si, cert, hash) else {
        return false;
    };
    let key = &cert.public_key().subject_public_key.data;
    sig::UnparsedPublicKey::new(algorithm, key.as_ref())
        .verify(&signed_bytes, si.signature.as_ref())
        .is_ok()
}

/// The first value of the signed attribute `arcs`, as DER.
fn attribute<'a>(attrs: &'a rasn_cms::SignedAttributes, arcs: &'static [u32]) -> Option<&'a [u8]> {
    let wanted = oid(arcs);
    attrs
        .iter()
        .find(|a| a.r#type == wanted)
        .and_then(|a| a.values.iter().next())
        .map(|v| v.as_bytes())
}

/// The certificate was valid when the message says it was signed (now, when it does not say).
fn valid_at_signing_time(cert: &X509Certificate<'_>, attrs: &rasn_cms::SignedAttributes) -> bool {
    // Time ::= CHOICE { utcTime, generalTime } (RFC 5652 §11.3).
    let time = attribute(attrs, OID_SIGNING_TIME).and_then(|v| {
        rasn::der::decode::<rasn::types::UtcTime>(v)
            .map(|t| t.timestamp())
            .or_else(|_| {
                rasn::der::decode::<rasn::types::GeneralizedTime>(v).map(|t| t.timestamp())
            })
            .ok()
    });
    match time.and_then(|t| ASN1Time::from_timestamp(t).ok()) {
        Some(t) => cert.validity().is_valid_at(t),
        None => cert.validity().is_valid(),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum HashAlg {
    Sha1,
    Sha256,
    Sha384,
    Sha512,
}

impl HashAlg {
    fn of(algorithm: &ObjectIdentifier) -> Option<HashAlg> {
        [
            (SHA1, HashAlg::Sha1),
            (SHA256, HashAlg::Sha256),
            (SHA384, HashAlg::Sha384),
            (SHA512, HashAlg::Sha512),
        ]
        .into_iter()
        .find(|(arcs, _)| *algorithm == oid(arcs))
        .map(|(_, h)| h)
    }

    fn digest(self, data: &[u8]) -> Vec<u8> {
        let alg = match self {
            HashAlg::Sha1 => &digest::SHA1_FOR_LEGACY_USE_ONLY,
            HashAlg::Sha256 => &digest::SHA256,
            HashAlg::Sha384 => &digest::SHA384,
            HashAlg::Sha512 => &digest::SHA512,
        };
        digest::digest(alg, data).as_ref().to_vec()
    }
}

/// aws-lc-rs's algorithm for the signer's signature algorithm, digest and key.
fn verification_algorithm(
    si: &SignerInfo,
    cert: &X509Certificate<'_>,
    digest: HashAlg,
) -> Option<&'static dyn VerificationAlgorithm> {
    let sig_alg = &si.signature_algorithm.algorithm;
    let is = |arcs: &'static [u32]| *sig_alg == oid(arcs);
    let rsa = |h: HashAlg| -> &'static dyn VerificationAlgorithm {
        match h {
            HashAlg::Sha1 => &sig::RSA_PKCS1_2048_8192_SHA1_FOR_LEGACY_USE_ONLY,
            HashAlg::Sha256 => &sig::RSA_PKCS1_2048_8192_SHA256,
            HashAlg::Sha384 => &sig::RSA_PKCS1_2048_8192_SHA384,
            HashAlg::Sha512 => &sig::RSA_PKCS1_2048_8192_SHA512,
        }
    };
    if is(RSA) {
        return Some(rsa(digest));
    }
    for (arcs, h) in [
        (RSA_SHA1, HashAlg::Sha1),
        (RSA_SHA256, HashAlg::Sha256),
        (RSA_SHA384, HashAlg::Sha384),
        (RSA_SHA512, HashAlg::Sha512),
    ] {
        if is(arcs) {
            return Some(rsa(h));
        }
    }
    if is(RSA_PSS) {
        // RSASSA-PSS-params name the hash; absent means SHA-1, which is not accepted.
        let params = si.signature_algorithm.parameters.as_ref()?.as_bytes();
        let has = |arcs: &'static [u32]| {
            rasn::der::encode(&oid(arcs))
                .is_ok_and(|der| params.windows(der.len()).any(|w| w == der.as_slice()))
        };
        return if has(SHA256) {
            Some(&sig::RSA_PSS_2048_8192_SHA256)
        } else if has(SHA384) {
            Some(&sig::RSA_PSS_2048_8192_SHA384)
        } else if has(SHA512) {
            Some(&sig::RSA_PSS_2048_8192_SHA512)
        } else {
            None
        };
    }
    if is(ED25519) {
        return Some(&sig::ED25519);
    }
    let ecdsa_hash = if is(EC_PUBLIC_KEY) {
        digest
    } else if is(ECDSA_SHA256) {
        HashAlg::Sha256
    } else if is(ECDSA_SHA384) {
        HashAlg::Sha384
    } else if is(ECDSA_SHA512) {
        HashAlg::Sha512
    } else {
        return None;
    };
    let curve = cert
        .public_key()
        .algorithm
        .parameters
        .as_ref()
        .and_then(|p| p.as_oid().ok())
        .map(|o| o.to_id_string())?;
    let curve_is = |arcs: &[u32]| {
        curve
            == arcs
                .iter()
                .map(|a| a.to_string())
                .collect::<Vec<_>>()
                .join(".")
    };
    match (curve_is(P256), curve_is(P384), ecdsa_hash) {
        (true, _, HashAlg::Sha256) => Some(&sig::ECDSA_P256_SHA256_ASN1),
        (true, _, HashAlg::Sha384) => Some(&sig::ECDSA_P256_SHA384_ASN1),
        (_, true, HashAlg::Sha256) => Some(&sig::ECDSA_P384_SHA256_ASN1),
        (_, true, HashAlg::Sha384) => Some(&sig::ECDSA_P384_SHA384_ASN1),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn what_is_not_signed_data_is_none() {
        assert!(verify(b"", None).is_none());
        assert!(verify(b"not DER at all", Some(b"content")).is_none());
        // A ContentInfo of type data, not signed-data.
        let data = rasn::der::encode(&ContentInfo {
            content_type: oid(&[1, 2, 840, 113549, 1, 7, 1]),
            content: rasn::types::Any::new(vec![0x04, 0x01, 0x41]),
        })
        .expect("der");
        assert!(verify(&data, None).is_none());
    }

    #[test]
    fn a_signer_without_its_certificate_is_never_good() {
        let signed = SignedData {
            version: 1.into(),
            digest_algorithms: rasn::types::SetOf::new(),
            encap_content_info: rasn_cms::EncapsulatedContentInfo {
                content_type: oid(&[1, 2, 840, 113549, 1, 7, 1]),
                content: Some(OctetString::from_static(b"hello")),
            },
            certificates: None,
            crls: None,
            signer_infos: rasn::types::SetOf::from_vec(vec![SignerInfo {
                version: 1.into(),
                sid: SignerIdentifier::SubjectKeyIdentifier(OctetString::from_static(b"k")),
                digest_algorithm: rasn_cms::AlgorithmIdentifier {
                    algorithm: oid(SHA256),
                    parameters: None,
                },
                signed_attrs: None,
                signature_algorithm: rasn_cms::AlgorithmIdentifier {
                    algorithm: oid(ED25519),
                    parameters: None,
                },
                signature: OctetString::from_static(b"sig"),
                unsigned_attrs: None,
            }]),
        };
        let info = ContentInfo {
            content_type: oid(OID_SIGNED_DATA),
            content: rasn::types::Any::new(rasn::der::encode(&signed).expect("der")),
        };
        let found = verify(&rasn::der::encode(&info).expect("der"), None).expect("signed-data");
        assert_eq!(found.content.as_deref(), Some(&b"hello"[..]));
        assert_eq!(found.checks.len(), 1);
        assert!(!found.checks[0].good);
        assert_eq!(found.checks[0].signer, "smime-certificate-missing");
    }

    proptest! {
        /// Any bytes, whole or as a damaged SignedData header: an answer, never a panic.
        #[test]
        fn arbitrary_input_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = verify(&bytes, Some(b"content"));
            let mut framed = vec![0x30, 0x82, 0x01, 0x00, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86,
                0xf7, 0x0d, 0x01, 0x07, 0x02, 0xa0, 0x80];
            framed.extend_from_slice(&bytes);
            let _ = verify(&framed, None);
        }
    }
}
