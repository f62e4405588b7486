//! CMS encryption for S/MIME (RFC 5652, RFC 5083, RFC 8551) with rasn-cms and aws-lc-rs:
//! EnvelopedData with AES-256-CBC and RSA PKCS#1 v1.5 key transport (what gpgsm 2.2 and
//! Thunderbird read), or AuthEnvelopedData with AES-256-GCM and RSA-OAEP (SHA-256) when the
//! recipient's policy asks for `smime-gcm`.

use super::smime::SmimeCert;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::cipher::{EncryptionContext, PaddedBlockEncryptingKey, UnboundCipherKey, AES_256};
use aws_lc_rs::rsa::{
    OaepPublicEncryptingKey, Pkcs1PublicEncryptingKey, PublicEncryptingKey, OAEP_SHA256_MGF1SHA256,
};
use rasn::types::{Any, ObjectIdentifier, OctetString, SetOf};
use rasn_cms::{
    AlgorithmIdentifier, AuthEnvelopedData, ContentInfo, EncryptedContentInfo, EnvelopedData,
    IssuerAndSerialNumber, KeyTransRecipientInfo, RecipientIdentifier, RecipientInfo,
};
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CmsError {
    #[error("no recipient certificate")]
    NoRecipient,
    #[error("certificate cannot be used for CMS: {0}")]
    Certificate(String),
    #[error("CMS encryption failed: {0}")]
    Encrypt(String),
}

pub(super) const OID_DATA: &[u32] = &[1, 2, 840, 113549, 1, 7, 1];
pub(super) const OID_ENVELOPED_DATA: &[u32] = &[1, 2, 840, 113549, 1, 7, 3];
pub(super) const OID_AUTH_ENVELOPED_DATA: &[u32] = &[1, 2, 840, 113549, 1, 9, 16, 1, 23];
pub(super) const OID_RSA_ENCRYPTION: &[u32] = &[1, 2, 840, 113549, 1, 1, 1];
pub(super) const OID_RSAES_OAEP: &[u32] = &[1, 2, 840, 113549, 1, 1, 7];
pub(super) const OID_AES256_CBC: &[u32] = &[2, 16, 840, 1, 101, 3, 4, 1, 42];
pub(super) const OID_AES256_GCM: &[u32] = &[2, 16, 840, 1, 101, 3, 4, 1, 46];

/// DER of RSAES-OAEP-params with SHA-256 and MGF1(SHA-256) (RFC 4055 §4.1).
const OAEP_SHA256_PARAMS: &[u8] = &[
    0x30, 0x2f, 0xa0, 0x0f, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02,
    0x01, 0x05, 0x00, 0xa1, 0x1c, 0x30, 0x1a, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01,
    0x01, 0x08, 0x30, 0x0d, 0x06, 0x09, 0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01, 0x05,
    0x00,
];
/// DER NULL.
const NULL: &[u8] = &[0x05, 0x00];

pub(super) fn oid(arcs: &'static [u32]) -> ObjectIdentifier {
    // The constants above are valid OIDs (first arc 1 or 2).
    ObjectIdentifier::new(arcs).unwrap_or_else(|| ObjectIdentifier::new_unchecked(arcs.into()))
}

fn alg(arcs: &'static [u32], params: Option<Vec<u8>>) -> AlgorithmIdentifier {
    AlgorithmIdentifier {
        algorithm: oid(arcs),
        parameters: params.map(Any::new),
    }
}

/// Encrypts a MIME entity (the concatenation of `parts`) for the certificates, returning the
/// DER ContentInfo.
pub fn encrypt(parts: &[&[u8]], recipients: &[SmimeCert], gcm: bool) -> Result<Vec<u8>, CmsError> {
    if recipients.is_empty() {
        return Err(CmsError::NoRecipient);
    }
    let mut cek = zeroize::Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(cek.as_mut()).map_err(|_| CmsError::Encrypt("no randomness".into()))?;
    let mut infos = Vec::with_capacity(recipients.len());
    for cert in recipients {
        infos.push(RecipientInfo::KeyTransRecipientInfo(key_trans(
            cert,
            cek.as_ref(),
            gcm,
        )?));
    }
    let err = |e: rasn::error::EncodeError| CmsError::Encrypt(e.to_string());
    let (content_type, inner) = if gcm {
        let mut nonce = [0u8; 12];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| CmsError::Encrypt("no randomness".into()))?;
        let key = LessSafeKey::new(
            UnboundKey::new(&AES_256_GCM, cek.as_ref())
                .map_err(|_| CmsError::Encrypt("AES key".into()))?,
        );
        let mut data = parts.concat();
        let tag = key
            .seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::empty(),
                &mut data,
            )
            .map_err(|_| CmsError::Encrypt("AES-GCM".into()))?;
        // GCMParameters ::= SEQUENCE { aes-nonce OCTET STRING (12), aes-ICVlen INTEGER 16 }
        let mut params = vec![0x30, 0x11, 0x04, 0x0c];
        params.extend_from_slice(&nonce);
        params.extend_from_slice(&[0x02, 0x01, 0x10]);
        let auth = AuthEnvelopedData {
            version: 0.into(),
            originator_info: None,
            recipient_infos: SetOf::from_vec(infos),
            auth_encrypted_content_info: EncryptedContentInfo {
                content_type: oid(OID_DATA),
                content_encryption_algorithm: alg(OID_AES256_GCM, Some(params)),
                encrypted_content: Some(OctetString::from(data)),
            },
            auth_attrs: None,
            mac: OctetString::from(tag.as_ref().to_vec()),
            unauth_attrs: None,
        };
        (
            OID_AUTH_ENVELOPED_DATA,
            rasn::der::encode(&auth).map_err(err)?,
        )
    } else {
        let mut iv = [0u8; 16];
        aws_lc_rs::rand::fill(&mut iv).map_err(|_| CmsError::Encrypt("no randomness".into()))?;
        let key = PaddedBlockEncryptingKey::cbc_pkcs7(
            UnboundCipherKey::new(&AES_256, cek.as_ref())
                .map_err(|_| CmsError::Encrypt("AES key".into()))?,
        )
        .map_err(|_| CmsError::Encrypt("AES-CBC".into()))?;
        let mut data = parts.concat();
        key.less_safe_encrypt(&mut data, EncryptionContext::Iv128(iv.into()))
            .map_err(|_| CmsError::Encrypt("AES-CBC".into()))?;
        let mut params = vec![0x04, 0x10];
        params.extend_from_slice(&iv);
        let env = EnvelopedData {
            version: 0.into(),
            originator_info: None,
            recipient_infos: SetOf::from_vec(infos),
            encrypted_content_info: EncryptedContentInfo {
                content_type: oid(OID_DATA),
                content_encryption_algorithm: alg(OID_AES256_CBC, Some(params)),
                encrypted_content: Some(OctetString::from(data)),
            },
            unprotected_attrs: None,
        };
        (OID_ENVELOPED_DATA, rasn::der::encode(&env).map_err(err)?)
    };
    let info = ContentInfo {
        content_type: oid(content_type),
        content: Any::new(inner),
    };
    rasn::der::encode(&info).map_err(err)
}

/// One KeyTransRecipientInfo: the content key encrypted to the certificate's RSA key.
fn key_trans(cert: &SmimeCert, cek: &[u8], oaep: bool) -> Result<KeyTransRecipientInfo, CmsError> {
    let parsed: rasn_cms::Certificate =
        rasn::der::decode(cert.der()).map_err(|e| CmsError::Certificate(e.to_string()))?;
    let spki = rasn::der::encode(&parsed.tbs_certificate.subject_public_key_info)
        .map_err(|e| CmsError::Certificate(e.to_string()))?;
    let public =
        PublicEncryptingKey::from_der(&spki).map_err(|e| CmsError::Certificate(e.to_string()))?;
    let (encrypted, algorithm) = if oaep {
        let key = OaepPublicEncryptingKey::new(public)
            .map_err(|_| CmsError::Certificate("RSA key".into()))?;
        let mut out = vec![0u8; key.ciphertext_size()];
        let n = key
            .encrypt(&OAEP_SHA256_MGF1SHA256, cek, &mut out, None)
            .map_err(|_| CmsError::Encrypt("RSA-OAEP".into()))?
            .len();
        out.truncate(n);
        (out, alg(OID_RSAES_OAEP, Some(OAEP_SHA256_PARAMS.to_vec())))
    } else {
        let key = Pkcs1PublicEncryptingKey::new(public)
            .map_err(|_| CmsError::Certificate("RSA key".into()))?;
        let mut out = vec![0u8; key.ciphertext_size()];
        let n = key
            .encrypt(cek, &mut out)
            .map_err(|_| CmsError::Encrypt("RSA PKCS#1 v1.5".into()))?
            .len();
        out.truncate(n);
        (out, alg(OID_RSA_ENCRYPTION, Some(NULL.to_vec())))
    };
    Ok(KeyTransRecipientInfo {
        version: 0.into(),
        rid: RecipientIdentifier::IssuerAndSerialNumber(IssuerAndSerialNumber {
            issuer: parsed.tbs_certificate.issuer.clone(),
            serial_number: parsed.tbs_certificate.serial_number.clone(),
        }),
        key_encryption_algorithm: algorithm,
        encrypted_key: OctetString::from(encrypted),
    })
}
