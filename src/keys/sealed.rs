//! The secret key file at rest: the account's secrets as JSON, sealed with AES-256-GCM under a
//! key derived from a passphrase with Argon2id, or stored in the clear (mode 0600) when the
//! user chose no passphrase.
//!
//! File format (JSON): `{"version":1,"kdf":null|{"argon2id":{m,t,p,salt}},"nonce","data"}`
//! with base64 fields. The AEAD's associated data binds the version and KDF parameters, so a
//! changed parameter fails authentication instead of deriving another key.

use crate::secret::{Secret, SecretBytes, SecretString};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use data_encoding::BASE64;
use serde::{Deserialize, Serialize};
use thiserror::Error;

const VERSION: u32 = 1;
/// Argon2id parameters: 64 MiB, 3 passes, 1 lane (RFC 9106's second recommended option,
/// scaled for a 2-core machine unlocking once per start).
const ARGON_M_KIB: u32 = 64 * 1024;
const ARGON_T: u32 = 3;
const ARGON_P: u32 = 1;

#[derive(Debug, Error)]
pub enum SealError {
    #[error("the key store is locked: a passphrase is needed")]
    Locked,
    #[error("wrong passphrase (or the secret key file was altered)")]
    WrongPassphrase,
    #[error("secret key file is corrupt: {0}")]
    Corrupt(String),
    #[error("key derivation failed: {0}")]
    Kdf(String),
}

#[derive(Serialize, Deserialize)]
struct SealedFile {
    version: u32,
    kdf: Option<Kdf>,
    #[serde(default)]
    nonce: String,
    data: String,
}

#[derive(Serialize, Deserialize, Clone, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Kdf {
    Argon2id {
        m: u32,
        t: u32,
        p: u32,
        salt: String,
    },
}

/// Seals `plain` (the secrets JSON) for writing, with a passphrase or without.
pub fn seal(plain: &SecretBytes, passphrase: Option<&SecretString>) -> Result<Vec<u8>, SealError> {
    let file = match passphrase {
        None => SealedFile {
            version: VERSION,
            kdf: None,
            nonce: String::new(),
            data: BASE64.encode(plain.expose()),
        },
        Some(pass) => {
            let rng = SystemRandom::new();
            let mut salt = [0u8; 16];
            let mut nonce = [0u8; NONCE_LEN];
            rng.fill(&mut salt)
                .map_err(|_| SealError::Kdf("no randomness".into()))?;
            rng.fill(&mut nonce)
                .map_err(|_| SealError::Kdf("no randomness".into()))?;
            let kdf = Kdf::Argon2id {
                m: ARGON_M_KIB,
                t: ARGON_T,
                p: ARGON_P,
                salt: BASE64.encode(&salt),
            };
            let key = derive(pass, &kdf)?;
            let mut buf = plain.expose().clone();
            let aad = aad(&kdf);
            key.seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(aad),
                &mut buf,
            )
            .map_err(|_| SealError::Kdf("seal failed".into()))?;
            SealedFile {
                version: VERSION,
                kdf: Some(kdf),
                nonce: BASE64.encode(&nonce),
                data: BASE64.encode(&buf),
            }
        }
    };
    serde_json::to_vec_pretty(&file).map_err(|e| SealError::Corrupt(e.to_string()))
}

/// True when the sealed file needs a passphrase.
pub fn needs_passphrase(sealed: &[u8]) -> Result<bool, SealError> {
    let file: SealedFile =
        serde_json::from_slice(sealed).map_err(|e| SealError::Corrupt(e.to_string()))?;
    Ok(file.kdf.is_some())
}

/// Opens a sealed file. Without the passphrase it needs, the answer is [`SealError::Locked`].
pub fn open(sealed: &[u8], passphrase: Option<&SecretString>) -> Result<SecretBytes, SealError> {
    let file: SealedFile =
        serde_json::from_slice(sealed).map_err(|e| SealError::Corrupt(e.to_string()))?;
    if file.version != VERSION {
        return Err(SealError::Corrupt(format!("version {}", file.version)));
    }
    let data = Secret::new(
        BASE64
            .decode(file.data.as_bytes())
            .map_err(|_| SealError::Corrupt("data is not base64".into()))?,
    );
    let Some(kdf) = file.kdf else {
        return Ok(data);
    };
    let pass = passphrase.ok_or(SealError::Locked)?;
    let key = derive(pass, &kdf)?;
    let nonce: [u8; NONCE_LEN] = BASE64
        .decode(file.nonce.as_bytes())
        .ok()
        .and_then(|n| n.try_into().ok())
        .ok_or_else(|| SealError::Corrupt("bad nonce".into()))?;
    let mut buf = data.expose().clone();
    let plain_len = key
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad(&kdf)),
            &mut buf,
        )
        .map_err(|_| SealError::WrongPassphrase)?
        .len();
    buf.truncate(plain_len);
    Ok(Secret::new(buf))
}

fn aad(kdf: &Kdf) -> Vec<u8> {
    let Kdf::Argon2id { m, t, p, salt } = kdf;
    format!("meshmail-secrets v{VERSION} argon2id m={m} t={t} p={p} salt={salt}").into_bytes()
}

fn derive(pass: &SecretString, kdf: &Kdf) -> Result<LessSafeKey, SealError> {
    let Kdf::Argon2id { m, t, p, salt } = kdf;
    // Bounds, so a crafted file cannot make unlocking take gigabytes or hours.
    if *m > 1024 * 1024 || *t > 16 || *p > 8 {
        return Err(SealError::Corrupt("KDF parameters out of bounds".into()));
    }
    let salt = BASE64
        .decode(salt.as_bytes())
        .map_err(|_| SealError::Corrupt("bad salt".into()))?;
    let params =
        argon2::Params::new(*m, *t, *p, Some(32)).map_err(|e| SealError::Kdf(e.to_string()))?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = [0u8; 32];
    argon
        .hash_password_into(pass.expose().as_bytes(), &salt, &mut out)
        .map_err(|e| SealError::Kdf(e.to_string()))?;
    let key = Secret::new(out.to_vec());
    zeroize::Zeroize::zeroize(&mut out);
    let unbound = UnboundKey::new(&AES_256_GCM, key.expose())
        .map_err(|_| SealError::Kdf("bad key".into()))?;
    Ok(LessSafeKey::new(unbound))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_and_without_passphrase() {
        let plain = Secret::new(b"{\"k\":1}".to_vec());
        let clear = seal(&plain, None).unwrap();
        assert!(!needs_passphrase(&clear).unwrap());
        assert_eq!(open(&clear, None).unwrap().expose(), plain.expose());

        let pass = SecretString::new("correct horse".into());
        let sealed = seal(&plain, Some(&pass)).unwrap();
        assert!(needs_passphrase(&sealed).unwrap());
        assert!(!String::from_utf8_lossy(&sealed).contains("\"k\""));
        assert_eq!(open(&sealed, Some(&pass)).unwrap().expose(), plain.expose());
        assert!(matches!(open(&sealed, None), Err(SealError::Locked)));
        let wrong = SecretString::new("wrong".into());
        assert!(matches!(
            open(&sealed, Some(&wrong)),
            Err(SealError::WrongPassphrase)
        ));
        assert!(matches!(
            open(b"not json", None),
            Err(SealError::Corrupt(_))
        ));
    }
}
