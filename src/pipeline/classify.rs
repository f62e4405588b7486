//! RCPT-time classification: a strong address needs its verified policy, whatever any rule
//! says; a plain address follows the local rule (`required`, `opportunistic`, `never`).

use crate::address::{AddressError, MailAddress};
use crate::config::{EncryptRule, EncryptRules};
use crate::crypto::smime::SmimeCert;
use crate::policy::{Format, PolicyResolver, ResolveFailure, Verified};
use sequoia_openpgp::Cert;
use std::sync::Arc;

/// How one recipient's copy is made.
#[derive(Debug, Clone)]
pub enum Treatment {
    /// Plaintext: only [`classify`] can grant it, and only to a plain address whose rule
    /// allows it.
    Plain(PlainAllowed),
    /// Encrypted to these keys in this format.
    Encrypt(Box<Encryption>),
}

/// Proof that a recipient may get plaintext. Its field is private: nothing outside this file
/// can make one, so a strong address can never be given a plain treatment.
#[derive(Debug, Clone)]
pub struct PlainAllowed(());

/// Keys and format for an encrypted recipient.
#[derive(Debug, Clone)]
pub struct Encryption {
    pub format: Format,
    pub openpgp: Arc<[Cert]>,
    pub smime: Arc<[SmimeCert]>,
    /// Escrow certificates a policy declares: this recipient gets a copy of its own.
    pub escrow_openpgp: Arc<[Cert]>,
    pub escrow_smime: Arc<[SmimeCert]>,
    /// The policy this came from, for a strong address (the proof that it was verified).
    pub policy: Option<Verified>,
    /// Set by the sidecar for mail it stores encrypted for a local user: the original message
    /// goes inside whole, marked so the reader's view says "encrypted at rest".
    pub at_rest: Option<AtRest>,
}

/// How a copy encrypted at rest is made (the sidecar's inbound mail).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AtRest {
    /// Replace the outer Subject by `[...]`.
    pub hide_subject: bool,
    /// The value of the mark header that tells the reader's view what this is.
    pub mark: String,
}

/// Names an OpenPGP certificate or an S/MIME certificate in [`Encryption::required_keys`].
fn openpgp_id(c: &Cert) -> String {
    crate::crypto::seal::key_id_openpgp(c)
}

fn smime_id(c: &SmimeCert) -> String {
    crate::crypto::seal::key_id_smime(c)
}

impl Encryption {
    pub fn has_escrow(&self) -> bool {
        !self.escrow_openpgp.is_empty() || !self.escrow_smime.is_empty()
    }

    /// Fingerprints of every recipient key, for grouping recipients that get the same
    /// treatment.
    pub fn key_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self.openpgp.iter().map(openpgp_id).collect();
        ids.extend(self.smime.iter().map(smime_id));
        ids.sort();
        ids
    }

    /// Every key a copy for this recipient must be encrypted to: the recipient's and the
    /// escrow keys its policy declares.
    pub fn required_keys(&self) -> Vec<String> {
        let mut ids = self.key_ids();
        ids.extend(self.escrow_openpgp.iter().map(openpgp_id));
        ids.extend(self.escrow_smime.iter().map(smime_id));
        ids
    }
}

/// A recipient as the pipeline knows it. Only [`classify`] makes one (the fields are read
/// through methods), so a strong address always carries its verified policy.
#[derive(Debug, Clone)]
pub struct Classified {
    written: String,
    routable: String,
    treatment: Treatment,
}

impl Classified {
    /// As the client wrote it (strong form for strong addresses).
    pub fn written(&self) -> &str {
        &self.written
    }

    /// Where the envelope goes: the fingerprint label removed.
    pub fn routable(&self) -> &str {
        &self.routable
    }

    pub fn treatment(&self) -> &Treatment {
        &self.treatment
    }

    /// A strong address: its treatment comes from a verified policy.
    pub fn is_strong(&self) -> bool {
        self.policy().is_some()
    }

    /// The verified policy of a strong address.
    pub fn policy(&self) -> Option<&Verified> {
        match &self.treatment {
            Treatment::Encrypt(e) => e.policy.as_ref(),
            Treatment::Plain(_) => None,
        }
    }

    /// A strong recipient, for unit tests of the pipeline.
    #[cfg(test)]
    pub(crate) fn strong_for_tests(written: &str, verified: Verified) -> Classified {
        Classified::strong(written, verified).expect("a usable format")
    }

    /// A strong recipient from its verified policy (what [`classify`] does after resolving),
    /// for the fuzz target: the proof is still needed.
    pub(crate) fn from_verified(written: &str, verified: Verified) -> Result<Classified, Refusal> {
        Classified::strong(written, verified)
    }

    /// A plain recipient, for unit tests of the pipeline.
    #[cfg(test)]
    pub(crate) fn plain_for_tests(address: &str) -> Classified {
        Classified {
            written: address.to_owned(),
            routable: address.to_owned(),
            treatment: Treatment::Plain(PlainAllowed(())),
        }
    }

    /// A plain address that gets the message as it arrived (the sidecar: a local mailbox
    /// without a key, or a message its sender already encrypted). Only for plain addresses: a
    /// fingerprint address is refused here.
    pub fn as_sent(address: &str) -> Result<Classified, Refusal> {
        match MailAddress::classify(address).map_err(Refusal::BadAddress)? {
            MailAddress::Plain(plain) => Ok(Classified {
                written: plain.clone(),
                routable: plain,
                treatment: Treatment::Plain(PlainAllowed(())),
            }),
            MailAddress::Strong(_) => Err(Refusal::NoValidPolicy(
                "a fingerprint address is never given plaintext".into(),
            )),
        }
    }

    /// A local mailbox of the sidecar, encrypted at rest to its own key (`openpgp` or
    /// `smime`, one of them).
    pub fn at_rest(
        address: &str,
        openpgp: Option<Cert>,
        smime: Option<SmimeCert>,
        at_rest: AtRest,
    ) -> Classified {
        let format = if openpgp.is_some() {
            Format::PgpMime
        } else {
            Format::SmimeGcm
        };
        Classified {
            written: address.to_owned(),
            routable: address.to_owned(),
            treatment: Treatment::Encrypt(Box::new(Encryption {
                format,
                openpgp: openpgp.into_iter().collect::<Vec<_>>().into(),
                smime: smime.into_iter().collect::<Vec<_>>().into(),
                escrow_openpgp: Vec::new().into(),
                escrow_smime: Vec::new().into(),
                policy: None,
                at_rest: Some(at_rest),
            })),
        }
    }

    /// This strong recipient's copy encrypted at rest instead (plaintext that arrived for a
    /// local user's fingerprint address, `strong_inbound = "encrypt-and-flag"`): still to
    /// every key its policy names.
    pub fn stored_at_rest(mut self, at_rest: AtRest) -> Classified {
        if let Treatment::Encrypt(e) = &mut self.treatment {
            e.at_rest = Some(at_rest);
        }
        self
    }

    fn strong(written: &str, verified: Verified) -> Result<Classified, Refusal> {
        let format = *verified
            .formats()
            .first()
            .ok_or_else(|| Refusal::NoValidPolicy("policy names no usable format".into()))?;
        Ok(Classified {
            written: written.to_owned(),
            routable: verified.address().routable(),
            treatment: Treatment::Encrypt(Box::new(Encryption {
                format,
                openpgp: if format == Format::PgpMime {
                    verified.openpgp_shared()
                } else {
                    Vec::new().into()
                },
                smime: if format.is_smime() {
                    verified.smime_shared()
                } else {
                    Vec::new().into()
                },
                escrow_openpgp: verified.escrow_openpgp_shared(),
                escrow_smime: verified.escrow_smime_shared(),
                policy: Some(verified),
                at_rest: None,
            })),
        })
    }
}

/// Why a recipient is refused at RCPT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// `553 5.1.3`: not an address meshmail can read.
    BadAddress(AddressError),
    /// `550 5.7.1`: no valid policy (or, for a `required` rule, no key).
    NoValidPolicy(String),
    /// `451 4.4.3`: a lookup failed for now.
    Temporary(String),
}

/// Classifies one RCPT address.
pub async fn classify(
    resolver: &PolicyResolver,
    rules: &EncryptRules,
    address: &str,
) -> Result<Classified, Refusal> {
    match MailAddress::classify(address).map_err(Refusal::BadAddress)? {
        MailAddress::Strong(strong) => {
            let verified = resolver.resolve(&strong).await.map_err(|e| match e {
                ResolveFailure::NoValidPolicy(why) => Refusal::NoValidPolicy(why),
                ResolveFailure::Temporary(why) => Refusal::Temporary(why),
            })?;
            Classified::strong(address, verified)
        }
        MailAddress::Plain(plain) => {
            let rule = rules.for_address(&plain);
            let plain_copy = || Classified {
                written: plain.clone(),
                routable: plain.clone(),
                treatment: Treatment::Plain(PlainAllowed(())),
            };
            if rule == EncryptRule::Never {
                return Ok(plain_copy());
            }
            match resolver.resolve_plain(&plain).await {
                Ok(Some(cert)) => Ok(Classified {
                    written: plain.clone(),
                    routable: plain.clone(),
                    treatment: Treatment::Encrypt(Box::new(Encryption {
                        format: Format::PgpMime,
                        openpgp: vec![cert].into(),
                        smime: Vec::new().into(),
                        escrow_openpgp: Vec::new().into(),
                        escrow_smime: Vec::new().into(),
                        policy: None,
                        at_rest: None,
                    })),
                }),
                // Opportunistic never refuses: no key (or no answer) means plaintext.
                Ok(None) | Err(_) if rule == EncryptRule::Opportunistic => Ok(plain_copy()),
                Ok(None) => Err(Refusal::NoValidPolicy(format!(
                    "no key found for {plain}, and local rules require encryption"
                ))),
                Err(ResolveFailure::Temporary(why)) => Err(Refusal::Temporary(why)),
                Err(ResolveFailure::NoValidPolicy(why)) => Err(Refusal::NoValidPolicy(why)),
            }
        }
    }
}
