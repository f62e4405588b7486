//! Sealing a message for a set of recipients: header protection, encryption, the MIME
//! envelope. A [`Sealed`] message can only come from [`seal`] (meshmail encrypted it) or from
//! [`verify_sealed`] (the client encrypted it, to every key the policy names), so the relay's
//! demand for a `Sealed` copy for strong recipients makes plaintext to them impossible to write.
//!
//! Runs on a blocking thread (the caller's `spawn_blocking`): encryption is CPU work.

use super::cms::{self, CmsError};
use super::openpgp::{self, OpenPgpError};
use super::smime::SmimeCert;
use crate::mime::{pgp_mime, smime_mime, MimeError, ParsedMessage, Protected};
use sequoia_openpgp::Cert;
use thiserror::Error;

/// Why a message could not be sealed (`550 5.7.5`, or `554 5.6.0` for a malformed message).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SealError {
    #[error("{0}")]
    OpenPgp(#[from] OpenPgpError),
    #[error("{0}")]
    Cms(#[from] CmsError),
    #[error("malformed message: {0}")]
    Mime(#[from] MimeError),
    #[error("the message is already encrypted, but not to {0}")]
    NotEncryptedTo(String),
    #[error("the message is already encrypted to a hidden recipient, which cannot be checked")]
    HiddenRecipient,
    #[error("an S/MIME-encrypted message cannot be checked against the policy; send it unencrypted and meshmail encrypts it")]
    UncheckableSmime,
}

/// How to encrypt one copy.
#[derive(Debug, Clone)]
pub enum SealRequest {
    /// PGP/MIME to these certificates, signed with `signer` (a certificate with secrets).
    PgpMime {
        recipients: Vec<Cert>,
        signer: Option<Box<Cert>>,
    },
    /// S/MIME to these certificates; AuthEnvelopedData (AES-GCM, RSA-OAEP) when `gcm`.
    Smime {
        recipients: Vec<SmimeCert>,
        gcm: bool,
    },
}

/// A complete message whose content is encrypted to the recipients it is meant for.
#[derive(Debug, Clone)]
pub struct Sealed {
    bytes: Vec<u8>,
}

impl Sealed {
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }
}

/// Protects the headers of `message`, encrypts it as `request` says and wraps it in MIME.
pub fn seal(message: &[u8], request: &SealRequest) -> Result<Sealed, SealError> {
    let parsed = ParsedMessage::parse(message)?;
    let protected = Protected::of(&parsed);
    let bytes = match request {
        SealRequest::PgpMime { recipients, signer } => {
            let size: usize = protected.inner_parts().iter().map(|p| p.len()).sum();
            // base64 (4/3) in lines of 64 plus CRLF (66/64): 11/8, and the packet overhead.
            let mut result = Ok(());
            let bytes = pgp_mime(&protected.outer, size * 11 / 8 + 4096, |out| {
                result = openpgp::encrypt_armored_into(
                    &protected.inner_parts(),
                    recipients,
                    signer.as_deref(),
                    out,
                );
            });
            result?;
            bytes
        }
        SealRequest::Smime { recipients, gcm } => {
            let der = cms::encrypt(&protected.inner_parts(), recipients, *gcm)?;
            smime_mime(&protected.outer, &der, *gcm)
        }
    };
    Ok(Sealed { bytes })
}

/// What kind of encryption a message already carries, from its top-level Content-Type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlreadyEncrypted {
    PgpMime,
    Smime,
}

/// Tells whether the client already encrypted the message (Thunderbird's own OpenPGP/S/MIME).
pub fn already_encrypted(message: &[u8]) -> Option<AlreadyEncrypted> {
    let parsed = ParsedMessage::parse(message).ok()?;
    let ct = parsed.field("content-type")?.value.to_ascii_lowercase();
    if ct.starts_with("multipart/encrypted") && ct.contains("application/pgp-encrypted") {
        Some(AlreadyEncrypted::PgpMime)
    } else if (ct.starts_with("application/pkcs7-mime")
        || ct.starts_with("application/x-pkcs7-mime"))
        && (ct.contains("enveloped-data") || ct.contains("authenveloped-data"))
    {
        Some(AlreadyEncrypted::Smime)
    } else {
        None
    }
}

/// Accepts a message the client encrypted itself, unchanged, if it is encrypted to a live
/// encryption key of every certificate in `required`. A hidden recipient (wildcard key ID)
/// cannot be checked and is refused.
pub fn verify_sealed(message: &[u8], required: &[Cert]) -> Result<Sealed, SealError> {
    match already_encrypted(message) {
        Some(AlreadyEncrypted::PgpMime) => {}
        Some(AlreadyEncrypted::Smime) => return Err(SealError::UncheckableSmime),
        None => {
            return Err(SealError::Mime(MimeError::Structure(
                "not encrypted".into(),
            )))
        }
    }
    let parsed = mail_parser::MessageParser::default()
        .parse(message)
        .ok_or_else(|| MimeError::Structure("unparsable MIME".into()))?;
    // RFC 3156 §4: the second body part holds the OpenPGP message.
    let encrypted = parsed
        .parts
        .iter()
        .skip(1)
        .map(|p| p.contents())
        .find(|c| c.windows(27).any(|w| w == b"-----BEGIN PGP MESSAGE-----"))
        .ok_or_else(|| MimeError::Structure("no OpenPGP message in multipart/encrypted".into()))?;
    let recipients = openpgp::message_recipients(encrypted)?;
    if recipients.iter().any(Option::is_none) {
        return Err(SealError::HiddenRecipient);
    }
    for cert in required {
        if !openpgp::addressed_to(&recipients, cert) {
            return Err(SealError::NotEncryptedTo(cert.fingerprint().to_hex()));
        }
    }
    Ok(Sealed {
        bytes: message.to_vec(),
    })
}
