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
    /// Plaintext (a plain address whose rule allows it).
    Plain,
    /// Encrypted to these keys in this format.
    Encrypt(Box<Encryption>),
}

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
}

impl Encryption {
    pub fn has_escrow(&self) -> bool {
        !self.escrow_openpgp.is_empty() || !self.escrow_smime.is_empty()
    }

    /// Fingerprints of every key, for grouping recipients that get the same treatment.
    pub fn key_ids(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .openpgp
            .iter()
            .map(|c| c.fingerprint().to_hex())
            .collect();
        ids.extend(self.smime.iter().map(|c| c.sha256_hex()));
        ids.sort();
        ids
    }
}

/// A recipient as the pipeline knows it.
#[derive(Debug, Clone)]
pub struct Classified {
    /// As the client wrote it (strong form for strong addresses).
    pub written: String,
    /// Where the envelope goes: the fingerprint label removed.
    pub routable: String,
    pub strong: bool,
    pub treatment: Treatment,
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
            let format = *verified
                .formats()
                .first()
                .ok_or_else(|| Refusal::NoValidPolicy("policy names no usable format".into()))?;
            Ok(Classified {
                written: address.to_owned(),
                routable: strong.routable(),
                strong: true,
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
                })),
            })
        }
        MailAddress::Plain(plain) => {
            let rule = rules.for_address(&plain);
            let plain_copy = || Classified {
                written: plain.clone(),
                routable: plain.clone(),
                strong: false,
                treatment: Treatment::Plain,
            };
            if rule == EncryptRule::Never {
                return Ok(plain_copy());
            }
            match resolver.resolve_plain(&plain).await {
                Ok(Some(cert)) => Ok(Classified {
                    written: plain.clone(),
                    routable: plain.clone(),
                    strong: false,
                    treatment: Treatment::Encrypt(Box::new(Encryption {
                        format: Format::PgpMime,
                        openpgp: vec![cert].into(),
                        smime: Vec::new().into(),
                        escrow_openpgp: Vec::new().into(),
                        escrow_smime: Vec::new().into(),
                        policy: None,
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
