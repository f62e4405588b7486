//! End-of-DATA planning: which copies to send, and their bytes.
//!
//! Recipients that need the same treatment share a copy: plaintext; PGP/MIME to one set of
//! certificates; S/MIME to another. A [`struct@Copy`] can only be built through checks that make
//! plaintext to a strong address unrepresentable, and the relay sends only a copy's
//! [`super::Payload`]. Every envelope recipient not named in To/Cc (a Bcc) gets
//! a copy of its own, so no copy names another copy's Bcc recipients; so does every recipient
//! whose policy declares escrow certificates, which are added to that copy only.

use super::classify::{AtRest, Classified, Encryption, Treatment};
use super::copy::Copy;
use crate::crypto::client_sealed::{already_encrypted, verify_sealed, AlreadyEncrypted};
use crate::crypto::seal::{self, SealError, SealRequest, Sealed};
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
        at_rest: Option<AtRest>,
    },
    /// A copy of its own (Bcc or escrow), by recipient index.
    Own(usize),
}

/// The treatment each recipient gets. A plain address that is the routable address of a
/// strong recipient of the same message (`bob@x.xx--fp` and `bob@x`) is the same mailbox, so
/// it gets the strong recipient's treatment: never one encrypted and one plaintext copy.
fn effective_treatments(rcpts: &[Classified]) -> Vec<&Treatment> {
    rcpts
        .iter()
        .map(|r| {
            if r.is_strong() {
                return r.treatment();
            }
            rcpts
                .iter()
                .find(|s| s.is_strong() && s.routable().eq_ignore_ascii_case(r.routable()))
                .map_or(r.treatment(), Classified::treatment)
        })
        .collect()
}

/// The copies a message will go out as, decided before any is made: which recipients share
/// which copy. Each copy is then made with [`Plan::make`] just before it is sent, so a message
/// to many recipients holds one encrypted copy at a time.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Recipients of each copy, in sending order (plaintext first, then encrypted groups,
    /// then copies of their own).
    groups: Vec<Vec<usize>>,
    /// The treatment each recipient gets (see [`effective_treatments`]).
    treatments: Vec<Treatment>,
    /// The client encrypted the message itself: copies are checked, never encrypted again.
    client_sealed: Option<AlreadyEncrypted>,
}

impl Plan {
    /// Groups `rcpts` into copies and checks what can be checked before anything is sent: the
    /// header section parses, and a client-encrypted message is in the strict form and
    /// encrypted to every required key. Cheap: no encryption.
    pub fn new(message: &[u8], rcpts: &[Classified]) -> Result<Plan, PlanError> {
        let treatments: Vec<Treatment> = effective_treatments(rcpts).into_iter().cloned().collect();
        // A header section meshmail cannot read is refused only when something must be
        // encrypted; plaintext goes on as the server would take it (every recipient a Bcc).
        let visible = match ParsedMessage::parse(message) {
            Ok(parsed) => parsed.visible_recipients(),
            Err(e)
                if treatments
                    .iter()
                    .any(|t| matches!(t, Treatment::Encrypt(_))) =>
            {
                return Err(SealError::from(e).into())
            }
            Err(_) => Default::default(),
        };
        let is_bcc = |r: &Classified| {
            !visible.contains(&r.routable().to_lowercase())
                && !visible.contains(&r.written().to_lowercase())
        };

        let mut groups: BTreeMap<GroupKey, Vec<usize>> = BTreeMap::new();
        for (i, r) in rcpts.iter().enumerate() {
            let key = match &treatments[i] {
                _ if is_bcc(r) => GroupKey::Own(i),
                Treatment::Encrypt(e) if e.has_escrow() => GroupKey::Own(i),
                Treatment::Plain(_) => GroupKey::Plain,
                Treatment::Encrypt(e) => GroupKey::Encrypted {
                    format: e.format.name(),
                    keys: e.key_ids(),
                    at_rest: e.at_rest.clone(),
                },
            };
            groups.entry(key).or_default().push(i);
        }
        let plan = Plan {
            groups: groups.into_values().collect(),
            treatments,
            client_sealed: already_encrypted(message),
        };
        if plan.client_sealed.is_some() {
            for group in &plan.groups {
                let encryptions = plan.encryptions(group);
                if !encryptions.is_empty() {
                    plan.check_client_sealed(message, &encryptions)?;
                }
            }
        }
        Ok(plan)
    }

    /// How many copies.
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }

    /// The recipients of copy `n`.
    pub fn recipients(&self, n: usize) -> &[usize] {
        self.groups.get(n).map(Vec::as_slice).unwrap_or(&[])
    }

    fn encryptions(&self, group: &[usize]) -> Vec<&Encryption> {
        group
            .iter()
            .filter_map(|&i| match &self.treatments[i] {
                Treatment::Encrypt(e) => Some(e.as_ref()),
                Treatment::Plain(_) => None,
            })
            .collect()
    }

    fn check_client_sealed(
        &self,
        message: &[u8],
        encryptions: &[&Encryption],
    ) -> Result<Sealed, PlanError> {
        if self.client_sealed == Some(AlreadyEncrypted::Smime)
            || encryptions.iter().any(|e| e.format != Format::PgpMime)
        {
            return Err(SealError::UncheckableSmime.into());
        }
        let required: Vec<Cert> = encryptions
            .iter()
            .flat_map(|e| e.openpgp.iter().chain(e.escrow_openpgp.iter()).cloned())
            .collect();
        Ok(verify_sealed(message, &required)?)
    }

    /// Makes copy `n` of `message`. CPU work (encryption): call it on a blocking thread.
    pub fn make(&self, n: usize, message: &[u8], sender: &SenderKeys) -> Result<Copy, PlanError> {
        let members = self.recipients(n).to_vec();
        let treatments: Vec<&Treatment> = self.treatments.iter().collect();
        let encryptions = self.encryptions(&members);
        let Some(first) = encryptions.first() else {
            return Copy::plain(members, &treatments);
        };
        if self.client_sealed.is_some() {
            let sealed = self.check_client_sealed(message, &encryptions)?;
            return Copy::sealed(members, &treatments, sealed, "client");
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
        let (sealed, name) = match &first.at_rest {
            Some(at_rest) => (
                seal::seal_at_rest(message, &request, at_rest.hide_subject, &at_rest.mark)?,
                "at-rest",
            ),
            None => (seal::seal(message, &request)?, first.format.name()),
        };
        Copy::sealed(members, &treatments, sealed, name)
    }
}

/// Plans and makes every copy at once (for tests and small callers).
pub fn plan_copies(
    message: &[u8],
    rcpts: &[Classified],
    sender: &SenderKeys,
) -> Result<Vec<Copy>, PlanError> {
    let plan = Plan::new(message, rcpts)?;
    (0..plan.len())
        .map(|n| plan.make(n, message, sender))
        .collect()
}

fn dedup_certs(certs: &mut Vec<Cert>) {
    let mut seen = std::collections::HashSet::new();
    certs.retain(|c| seen.insert(c.fingerprint()));
}
