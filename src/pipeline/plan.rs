//! End-of-DATA planning: which copies to send, and their bytes.
//!
//! Recipients that need the same treatment share a copy: plaintext; PGP/MIME to one set of
//! certificates; S/MIME to another. Every envelope recipient not named in To/Cc (a Bcc) gets
//! a copy of its own, so no copy names another copy's Bcc recipients; so does every recipient
//! whose policy declares escrow certificates, which are added to that copy only.

use super::classify::{Classified, Encryption, Treatment};
use crate::crypto::seal::{
    self, already_encrypted, AlreadyEncrypted, SealError, SealRequest, Sealed,
};
use crate::crypto::smime::SmimeCert;
use crate::mime::ParsedMessage;
use crate::policy::Format;
use sequoia_openpgp::Cert;
use std::collections::BTreeMap;

/// The sender's own keys, for a session mapped to an account.
#[derive(Debug, Clone, Default)]
pub struct SenderKeys {
    /// Added to every PGP/MIME copy, so the sender can read what it sent.
    pub self_openpgp: Option<Cert>,
    /// Added to every S/MIME copy.
    pub self_smime: Option<SmimeCert>,
    /// Signs PGP/MIME copies (a certificate with its secret signing key).
    pub signer: Option<Cert>,
}

/// The bytes of one copy. Plaintext is only possible for a copy without strong recipients.
#[derive(Debug, Clone)]
pub enum CopyBody {
    /// The message exactly as received (not copied: a large message is held once).
    Original,
    Sealed(Sealed),
}

impl CopyBody {
    /// The bytes to relay, given the message as received.
    pub fn bytes<'a>(&'a self, original: &'a [u8]) -> &'a [u8] {
        match self {
            CopyBody::Original => original,
            CopyBody::Sealed(s) => s.bytes(),
        }
    }
}

/// One message to relay: its recipients (indices into the transaction's list) and bytes.
#[derive(Debug, Clone)]
pub struct Copy {
    pub recipients: Vec<usize>,
    pub body: CopyBody,
    /// A short description for the log: `plain`, `pgp-mime`, `smime`, `smime-gcm`, `client`.
    pub treatment: &'static str,
}

/// Why the message cannot be sent to anyone as it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    Seal(#[from] SealError),
    /// A fingerprint address would have got plaintext: never sent.
    #[error("a fingerprint address would have got plaintext")]
    Unprotected,
}

impl PlanError {
    /// True when the message itself is malformed (`554 5.6.0`) rather than unsealable
    /// (`550 5.7.5`).
    pub fn is_malformed(&self) -> bool {
        matches!(self, PlanError::Seal(SealError::Mime(_)))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum GroupKey {
    Plain,
    Encrypted {
        format: &'static str,
        keys: Vec<String>,
    },
    /// A copy of its own (Bcc or escrow), by recipient index.
    Own(usize),
}

/// Plans the copies of `message` for `rcpts`. CPU work (encryption): call it on a blocking
/// thread.
pub fn plan_copies(
    message: &[u8],
    rcpts: &[Classified],
    sender: &SenderKeys,
) -> Result<Vec<Copy>, PlanError> {
    let visible = ParsedMessage::parse(message)
        .map(|p| p.visible_recipients())
        .unwrap_or_default();
    let is_bcc = |r: &Classified| {
        !visible.contains(&r.routable.to_lowercase())
            && !visible.contains(&r.written.to_lowercase())
    };

    let mut groups: BTreeMap<GroupKey, Vec<usize>> = BTreeMap::new();
    for (i, r) in rcpts.iter().enumerate() {
        let key = match &r.treatment {
            _ if is_bcc(r) => GroupKey::Own(i),
            Treatment::Encrypt(e) if e.has_escrow() => GroupKey::Own(i),
            Treatment::Plain => GroupKey::Plain,
            Treatment::Encrypt(e) => GroupKey::Encrypted {
                format: e.format.name(),
                keys: e.key_ids(),
            },
        };
        groups.entry(key).or_default().push(i);
    }

    // A message the client encrypted itself is checked, never encrypted again.
    let client_sealed = already_encrypted(message);

    let mut copies = Vec::with_capacity(groups.len());
    for (_, members) in groups {
        let encryptions: Vec<&Encryption> = members
            .iter()
            .filter_map(|&i| match &rcpts[i].treatment {
                Treatment::Encrypt(e) => Some(e.as_ref()),
                Treatment::Plain => None,
            })
            .collect();
        let Some(first) = encryptions.first() else {
            // Defence in depth: classification never gives a strong address a plain treatment.
            if members.iter().any(|&i| rcpts[i].strong) {
                return Err(PlanError::Unprotected);
            }
            copies.push(Copy {
                recipients: members,
                body: CopyBody::Original,
                treatment: "plain",
            });
            continue;
        };
        if let Some(kind) = client_sealed {
            let required: Vec<Cert> = encryptions
                .iter()
                .flat_map(|e| e.openpgp.iter().cloned())
                .collect();
            if kind == AlreadyEncrypted::Smime
                || encryptions.iter().any(|e| e.format != Format::PgpMime)
            {
                return Err(SealError::UncheckableSmime.into());
            }
            copies.push(Copy {
                recipients: members,
                body: CopyBody::Sealed(seal::verify_sealed(message, &required)?),
                treatment: "client",
            });
            continue;
        }
        let request = match first.format {
            Format::PgpMime => {
                let mut recipients: Vec<Cert> = Vec::new();
                for e in &encryptions {
                    recipients.extend(e.openpgp.iter().cloned());
                    recipients.extend(e.escrow_openpgp.iter().cloned());
                }
                recipients.extend(sender.self_openpgp.iter().cloned());
                dedup_certs(&mut recipients);
                SealRequest::PgpMime {
                    recipients,
                    signer: sender.signer.clone().map(Box::new),
                }
            }
            Format::Smime | Format::SmimeGcm => {
                let mut recipients: Vec<SmimeCert> = Vec::new();
                for e in &encryptions {
                    recipients.extend(e.smime.iter().cloned());
                    recipients.extend(e.escrow_smime.iter().cloned());
                }
                recipients.extend(sender.self_smime.iter().cloned());
                recipients.dedup_by(|a, b| a.der() == b.der());
                SealRequest::Smime {
                    recipients,
                    gcm: first.format == Format::SmimeGcm,
                }
            }
        };
        copies.push(Copy {
            recipients: members,
            body: CopyBody::Sealed(seal::seal(message, &request)?),
            treatment: first.format.name(),
        });
    }
    Ok(copies)
}

fn dedup_certs(certs: &mut Vec<Cert>) {
    let mut seen = std::collections::HashSet::new();
    certs.retain(|c| seen.insert(c.fingerprint()));
}
