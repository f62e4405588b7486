//! One copy to relay, and the bytes the relay may send. The constructors are the guarantee
//! "never plaintext to a strong address": a plain copy only for recipients whose treatment
//! allows plaintext, a sealed copy only when it is encrypted to every key each recipient's
//! policy requires (escrow included). Only the pipeline calls them.

use super::classify::Treatment;
use super::plan::PlanError;
use crate::crypto::seal::Sealed;

/// What a copy carries. Private: a [`Copy`] is made only by the checked constructors below.
#[derive(Debug, Clone)]
enum CopyBody {
    /// The message exactly as received (not copied: a large message is held once).
    Original,
    Sealed(Sealed),
}

/// One message to relay: its recipients (indices into the transaction's list) and what they
/// get. The constructors are the guarantee: a plain copy only for recipients whose treatment
/// allows plaintext, a sealed copy only when it is encrypted to every key each recipient's
/// policy requires (escrow included).
#[derive(Debug, Clone)]
pub struct Copy {
    recipients: Vec<usize>,
    body: CopyBody,
    /// A short description for the log: `plain`, `pgp-mime`, `smime`, `smime-gcm`, `client`.
    treatment: &'static str,
}

impl Copy {
    pub(super) fn plain(
        recipients: Vec<usize>,
        treatments: &[&Treatment],
    ) -> Result<Copy, PlanError> {
        if recipients
            .iter()
            .any(|&i| !matches!(treatments[i], Treatment::Plain(_)))
        {
            return Err(PlanError::Unprotected);
        }
        Ok(Copy {
            recipients,
            body: CopyBody::Original,
            treatment: "plain",
        })
    }

    pub(super) fn sealed(
        recipients: Vec<usize>,
        treatments: &[&Treatment],
        sealed: Sealed,
        treatment: &'static str,
    ) -> Result<Copy, PlanError> {
        for &i in &recipients {
            if let Treatment::Encrypt(e) = treatments[i] {
                if !sealed.is_encrypted_to_all(e.required_keys().iter()) {
                    return Err(PlanError::Unprotected);
                }
            }
        }
        Ok(Copy {
            recipients,
            body: CopyBody::Sealed(sealed),
            treatment,
        })
    }

    pub fn recipients(&self) -> &[usize] {
        &self.recipients
    }

    pub fn treatment(&self) -> &'static str {
        self.treatment
    }

    /// True for the plaintext copy (its MAIL may keep BODY=8BITMIME).
    pub fn is_plain(&self) -> bool {
        matches!(self.body, CopyBody::Original)
    }

    /// What the relay sends for this copy, given the message as received.
    pub fn payload<'a>(&'a self, original: &'a [u8]) -> Payload<'a> {
        Payload(match &self.body {
            CopyBody::Original => original,
            CopyBody::Sealed(s) => s.bytes(),
        })
    }
}

/// Bytes the relay may send: only a [`struct@Copy`] or a [`super::report::Report`] gives them out, so
/// the relay cannot be handed the raw message for a strong recipient.
#[derive(Debug, Clone, Copy)]
pub struct Payload<'a>(&'a [u8]);

impl<'a> Payload<'a> {
    pub(super) fn of(bytes: &'a [u8]) -> Payload<'a> {
        Payload(bytes)
    }

    pub fn bytes(&self) -> &'a [u8] {
        self.0
    }
}
