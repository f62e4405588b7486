//! Opening CMS EnvelopedData (AES-CBC) and AuthEnvelopedData (AES-GCM) addressed to the
//! account's S/MIME certificate by RSA key transport (PKCS#1 v1.5 or OAEP with SHA-1/SHA-256),
//! the forms `openssl cms`, gpgsm and Thunderbird produce. BER (indefinite lengths, as OpenSSL
//! streams them) is accepted.

use super::cms::{
    oid, OID_AUTH_ENVELOPED_DATA, OID_ENVELOPED_DATA, OID_RSAES_OAEP, OID_RSA_ENCRYPTION,
};
use super::decrypt::OpenError;
use super::smime::SmimeCert;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_128_GCM, AES_256_GCM};
use aws_lc_rs::cipher::{
    DecryptionContext, PaddedBlockDecryptingKey, UnboundCipherKey, AES_128, AES_256,
};
use aws_lc_rs::rsa::{
    OaepPrivateDecryptingKey, Pkcs1PrivateDecryptingKey, PrivateDecryptingKey, OAEP_SHA1_MGF1SHA1,
    OAEP_SHA256_MGF1SHA256,
};
use rasn_cms::{
    AuthEnvelopedData, ContentInfo, EncryptedContentInfo, EnvelopedData, RecipientIdentifier,
    RecipientInfo,
};
use zeroize::Zeroizing;

const AES128_CBC: &[u32] = &[2, 16, 840, 1, 101, 3, 4, 1, 2];
const AES256_CBC: &[u32] = &[2, 16, 840, 1, 101, 3, 4, 1, 42];
const AES128_GCM: &[u32] = &[2, 16, 840, 1, 101, 3, 4, 1, 6];
const AES256_GCM: &[u32] = &[2, 16, 840, 1, 101, 3, 4, 1, 46];
const SHA256: &[u32] = &[2, 16, 840, 1, 101, 3, 4, 2, 1];

fn corrupt(what: impl std::fmt::Display) -> OpenError {
    OpenError::Corrupt(what.to_string())
}

/// Decrypts `der` (a ContentInfo) with the certificate's RSA key (`pkcs8`).
pub fn decrypt(
    der: &[u8],
    cert: &SmimeCert,
    pkcs8: &[u8],
    max: usize,
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let info: ContentInfo = rasn::ber::decode(der).map_err(corrupt)?;
    let (infos, content, mac) = if info.content_type == oid(OID_ENVELOPED_DATA) {
        let env: EnvelopedData = rasn::ber::decode(info.content.as_bytes()).map_err(corrupt)?;
        (env.recipient_infos, env.encrypted_content_info, None)
    } else if info.content_type == oid(OID_AUTH_ENVELOPED_DATA) {
        let env: AuthEnvelopedData = rasn::ber::decode(info.content.as_bytes()).map_err(corrupt)?;
        if env.auth_attrs.is_some() {
            // Authenticated attributes would be part of the AAD; none of the senders we read
            // sets them, and guessing their encoding is worse than refusing.
            return Err(corrupt("AuthEnvelopedData with authenticated attributes"));
        }
        (
            env.recipient_infos,
            env.auth_encrypted_content_info,
            Some(env.mac.to_vec()),
        )
    } else {
        return Err(corrupt("not EnvelopedData or AuthEnvelopedData"));
    };

    let parsed: rasn_cms::Certificate = rasn::der::decode(cert.der()).map_err(corrupt)?;
    let tbs = &parsed.tbs_certificate;
    let ours = |rid: &RecipientIdentifier| match rid {
        RecipientIdentifier::IssuerAndSerialNumber(ias) => {
            ias.issuer == tbs.issuer && ias.serial_number == tbs.serial_number
        }
        // Subject key identifiers are not compared: the trial decryption below decides.
        RecipientIdentifier::SubjectKeyIdentifier(_) => true,
    };
    let key = PrivateDecryptingKey::from_pkcs8(pkcs8).map_err(|_| OpenError::NotForUs)?;
    let mut cek = None;
    for ri in infos.to_vec() {
        let RecipientInfo::KeyTransRecipientInfo(ktri) = ri else {
            continue;
        };
        if !ours(&ktri.rid) {
            continue;
        }
        if let Some(k) = unwrap_key(&key, ktri)? {
            cek = Some(k);
            break;
        }
    }
    let cek = cek.ok_or(OpenError::NotForUs)?;
    let plaintext = decrypt_content(&content, &cek, mac.as_deref())?;
    if plaintext.len() > max {
        return Err(OpenError::TooLarge(max));
    }
    Ok(plaintext)
}

/// The content-encryption key from one KeyTransRecipientInfo, or `None` when the RSA
/// decryption fails (not our key).
fn unwrap_key(
    key: &PrivateDecryptingKey,
    ktri: &rasn_cms::KeyTransRecipientInfo,
) -> Result<Option<Zeroizing<Vec<u8>>>, OpenError> {
    let alg = &ktri.key_encryption_algorithm;
    let mut out = Zeroizing::new(vec![0u8; key.key_size_bytes()]);
    let n = if alg.algorithm == oid(OID_RSA_ENCRYPTION) {
        let k = Pkcs1PrivateDecryptingKey::new(key.clone()).map_err(corrupt)?;
        match k.decrypt(&ktri.encrypted_key, &mut out) {
            Ok(p) => p.len(),
            Err(_) => return Ok(None),
        }
    } else if alg.algorithm == oid(OID_RSAES_OAEP) {
        // RSAES-OAEP-params: absent or empty means SHA-1 (RFC 4055 §4.1).
        let sha256 = alg
            .parameters
            .as_ref()
            .is_some_and(|p| contains_oid(p.as_bytes(), SHA256));
        let k = OaepPrivateDecryptingKey::new(key.clone()).map_err(corrupt)?;
        let algorithm = if sha256 {
            &OAEP_SHA256_MGF1SHA256
        } else {
            &OAEP_SHA1_MGF1SHA1
        };
        match k.decrypt(algorithm, &ktri.encrypted_key, &mut out, None) {
            Ok(p) => p.len(),
            Err(_) => return Ok(None),
        }
    } else {
        return Err(corrupt("unsupported key transport algorithm"));
    };
    out.truncate(n);
    Ok(Some(out))
}

/// True when the DER `bytes` contain the encoding of `arcs` (enough to tell the hash in
/// RSAES-OAEP-params).
fn contains_oid(bytes: &[u8], arcs: &'static [u32]) -> bool {
    let Ok(der) = rasn::der::encode(&oid(arcs)) else {
        return false;
    };
    bytes.windows(der.len()).any(|w| w == der.as_slice())
}

fn decrypt_content(
    content: &EncryptedContentInfo,
    cek: &[u8],
    mac: Option<&[u8]>,
) -> Result<Zeroizing<Vec<u8>>, OpenError> {
    let alg = &content.content_encryption_algorithm;
    let mut data = Zeroizing::new(
        content
            .encrypted_content
            .as_ref()
            .map(|c| c.to_vec())
            .ok_or_else(|| corrupt("detached content"))?,
    );
    let params = alg.parameters.as_ref().map(|p| p.as_bytes().to_vec());
    let is = |arcs: &'static [u32]| alg.algorithm == oid(arcs);
    if is(AES128_CBC) || is(AES256_CBC) {
        let iv: [u8; 16] = params
            .as_deref()
            .and_then(|p| p.strip_prefix(&[0x04, 0x10][..]))
            .and_then(|iv| iv.try_into().ok())
            .ok_or_else(|| corrupt("AES-CBC without a 16-byte IV"))?;
        let cipher = if is(AES128_CBC) { &AES_128 } else { &AES_256 };
        let key = PaddedBlockDecryptingKey::cbc_pkcs7(
            UnboundCipherKey::new(cipher, cek).map_err(|_| corrupt("AES key length"))?,
        )
        .map_err(corrupt)?;
        let n = key
            .decrypt(&mut data, DecryptionContext::Iv128(iv.into()))
            .map_err(|_| corrupt("AES-CBC padding"))?
            .len();
        data.truncate(n);
        Ok(data)
    } else if is(AES128_GCM) || is(AES256_GCM) {
        let mac = mac.ok_or_else(|| corrupt("AES-GCM outside AuthEnvelopedData"))?;
        // GCMParameters ::= SEQUENCE { aes-nonce OCTET STRING, aes-ICVlen INTEGER DEFAULT 12 }
        let nonce: [u8; 12] = params
            .as_deref()
            .and_then(|p| p.get(2..))
            .and_then(|p| p.strip_prefix(&[0x04, 0x0c][..]))
            .and_then(|p| p.get(..12))
            .and_then(|n| n.try_into().ok())
            .ok_or_else(|| corrupt("AES-GCM without a 12-byte nonce"))?;
        let algorithm = if is(AES128_GCM) {
            &AES_128_GCM
        } else {
            &AES_256_GCM
        };
        let key = LessSafeKey::new(
            UnboundKey::new(algorithm, cek).map_err(|_| corrupt("AES key length"))?,
        );
        data.extend_from_slice(mac);
        let n = key
            .open_in_place(Nonce::assume_unique_for_key(nonce), Aad::empty(), &mut data)
            .map_err(|_| corrupt("AES-GCM authentication failed"))?
            .len();
        data.truncate(n);
        Ok(data)
    } else {
        Err(corrupt("unsupported content encryption algorithm"))
    }
}
