//! Sealing a message for a set of recipients: header protection, encryption, the MIME
//! envelope. A [`Sealed`] message can only be made inside this module: by [`seal`] (meshmail
//! encrypted it) or by [`super::client_sealed::verify_sealed`] (the client encrypted it, to
//! every key the policy names). It records the keys it is encrypted to, so the pipeline can
//! bind it to the recipients' verified policies; the relay sends only such copies to strong
//! recipients, so plaintext to them cannot be written.
//!
//! Runs on a blocking thread (the caller's `spawn_blocking`): encryption is CPU work.

use super::cms::{self, CmsError};
use super::openpgp::{self, OpenPgpError};
use super::smime::SmimeCert;
use crate::mime::{pgp_mime, smime_mime, MimeError, ParsedMessage, Protected};
use sequoia_openpgp::Cert;
use std::collections::BTreeSet;
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
    #[error("your mail program encrypted the message in a form meshmail cannot check ({0}); send it unencrypted and meshmail encrypts it")]
    NotStrictlySealed(String),
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
    /// The keys it is encrypted to: OpenPGP certificate fingerprints and S/MIME certificate
    /// SHA-256 digests, upper-case hex (as [`key_id_openpgp`] and [`key_id_smime`] name them).
    encrypted_to: BTreeSet<String>,
}

impl Sealed {
    /// Only this module and `client_sealed` mint a `Sealed`.
    pub(super) fn new(bytes: Vec<u8>, encrypted_to: BTreeSet<String>) -> Sealed {
        Sealed {
            bytes,
            encrypted_to,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// True when the message is encrypted to every key named in `ids`.
    pub fn is_encrypted_to_all<'a>(&self, mut ids: impl Iterator<Item = &'a String>) -> bool {
        ids.all(|id| self.encrypted_to.contains(id))
    }
}

/// How a [`Sealed`] names an OpenPGP certificate.
pub fn key_id_openpgp(cert: &Cert) -> String {
    cert.fingerprint().to_hex()
}

/// How a [`Sealed`] names an S/MIME certificate.
pub fn key_id_smime(cert: &SmimeCert) -> String {
    cert.sha256_hex()
}

/// Encrypts `message` at rest (the sidecar's inbound mail): the original bytes go inside whole,
/// so a DKIM signature still verifies after decryption; outside stay the fields delivery,
/// filters and threading need, and the mark that tells the reader's view what this is.
pub fn seal_at_rest(
    message: &[u8],
    request: &SealRequest,
    hide_subject: bool,
    mark: &str,
) -> Result<Sealed, SealError> {
    let parsed = ParsedMessage::parse(message)?;
    let outer = crate::mime::at_rest::outer_fields(&parsed, hide_subject, mark);
    let (bytes, encrypted_to) = match request {
        SealRequest::PgpMime { recipients, .. } => {
            let mut result = Ok(());
            let bytes = pgp_mime(&outer, message.len() * 11 / 8 + 4096, |out| {
                result = openpgp::encrypt_armored_into(&[message], recipients, None, out);
            });
            result?;
            (bytes, recipients.iter().map(key_id_openpgp).collect())
        }
        SealRequest::Smime { recipients, gcm } => {
            let der = cms::encrypt(&[message], recipients, *gcm)?;
            (
                smime_mime(&outer, &der, *gcm),
                recipients.iter().map(key_id_smime).collect(),
            )
        }
    };
    Ok(Sealed::new(bytes, encrypted_to))
}

/// Protects the headers of `message`, encrypts it as `request` says and wraps it in MIME.
pub fn seal(message: &[u8], request: &SealRequest) -> Result<Sealed, SealError> {
    let parsed = ParsedMessage::parse(message)?;
    let protected = Protected::of(&parsed);
    let (bytes, encrypted_to) = match request {
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
            (bytes, recipients.iter().map(key_id_openpgp).collect())
        }
        SealRequest::Smime { recipients, gcm } => {
            let der = cms::encrypt(&protected.inner_parts(), recipients, *gcm)?;
            (
                smime_mime(&protected.outer, &der, *gcm),
                recipients.iter().map(key_id_smime).collect(),
            )
        }
    };
    Ok(Sealed::new(bytes, encrypted_to))
}
