//! The policy document (`shared/reference/mesh-formats.md` §3): what a recipient demands of
//! senders, signed under the key whose UDF is in the recipient's address.

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

/// The only format version meshmail reads and writes.
pub const POLICY_VERSION: u32 = 1;

/// The payload of a signed policy. Unknown fields are ignored when reading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDocument {
    pub mesh_policy: u32,
    /// The routable address this policy speaks for.
    pub address: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub expires: OffsetDateTime,
    /// `required`: the only value a strong address may carry.
    pub encryption: String,
    /// Preference list of [`Format`] names; names meshmail does not know are skipped.
    pub formats: Vec<String>,
    /// Base64 of binary transferable OpenPGP public keys, one after another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openpgp: Option<String>,
    /// Base64 of DER X.509 certificates, one after another.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smime: Option<String>,
    /// Certificates every copy to this recipient must also be encrypted to, declared openly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub escrow: Option<Escrow>,
}

/// Escrow certificates, encoded as in the policy itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Escrow {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub openpgp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smime: Option<String>,
}

/// A message format a policy may ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Format {
    /// PGP/MIME, RFC 3156.
    PgpMime,
    /// S/MIME EnvelopedData, AES-256-CBC, RSA PKCS#1 v1.5 key transport.
    Smime,
    /// S/MIME AuthEnvelopedData, AES-256-GCM, RSA-OAEP.
    SmimeGcm,
}

impl Format {
    pub fn parse(name: &str) -> Option<Format> {
        match name {
            "pgp-mime" => Some(Format::PgpMime),
            "smime" => Some(Format::Smime),
            "smime-gcm" => Some(Format::SmimeGcm),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::PgpMime => "pgp-mime",
            Format::Smime => "smime",
            Format::SmimeGcm => "smime-gcm",
        }
    }

    pub fn is_smime(self) -> bool {
        matches!(self, Format::Smime | Format::SmimeGcm)
    }
}
