//! Issuing the account's own policy: the document that tells senders to encrypt to the
//! account's OpenPGP certificate (preferred) or S/MIME certificate, signed with the
//! policy-signing key whose UDF is in the account's strong address.

use super::document::{Format, PolicyDocument, POLICY_VERSION};
use super::jws;
use super::verify::MAX_VALIDITY;
use crate::keys::{Account, KeyError};
use aws_lc_rs::signature::Ed25519KeyPair;
use data_encoding::BASE64;
use time::{Duration, OffsetDateTime};

/// Default validity of a policy; `policy renew` issues a new one before it runs out.
pub const DEFAULT_VALIDITY: Duration = Duration::days(365);

/// Signs a new policy for `account`, valid from now for `validity` (at most two years).
pub fn sign_account_policy(
    account: &Account,
    key: &Ed25519KeyPair,
    validity: Duration,
) -> Result<String, KeyError> {
    sign_account_policy_with(account, key, validity, &[Format::PgpMime, Format::Smime])
}

/// As [`sign_account_policy`], with the formats in the account's order of preference.
pub fn sign_account_policy_with(
    account: &Account,
    key: &Ed25519KeyPair,
    validity: Duration,
    formats: &[Format],
) -> Result<String, KeyError> {
    let validity = validity.clamp(Duration::days(1), MAX_VALIDITY);
    // Whole seconds: RFC 3339 text round-trips exactly.
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap_or_else(|_| OffsetDateTime::now_utc());
    let cert = account.openpgp_cert()?;
    let doc = PolicyDocument {
        mesh_policy: POLICY_VERSION,
        address: account.address().to_owned(),
        created: now,
        expires: now + validity,
        encryption: "required".into(),
        formats: formats.iter().map(|f| f.name().to_owned()).collect(),
        openpgp: Some(BASE64.encode(&crate::crypto::openpgp::public_bytes(&cert))),
        // The S/MIME certificate only where senders may use it.
        smime: match formats.iter().any(|f| f.is_smime()) {
            true => Some(BASE64.encode(&account.smime_cert_der()?)),
            false => None,
        },
        escrow: None,
    };
    let payload = serde_json::to_vec(&doc).map_err(|e| KeyError::Corrupt(e.to_string()))?;
    Ok(jws::sign(&payload, key))
}

/// Signs the account's policy again after its OpenPGP certificate changed (a device's signing
/// subkey bound or revoked, a new encryption subkey), so that senders, who encrypt to the
/// certificate inside the policy, see the change. The expiry and formats stay as they were,
/// except that a `split` account (devices hold shares of its OpenPGP key, which recryption
/// covers and S/MIME does not) offers OpenPGP only.
pub fn refresh_account_policy(
    account: &Account,
    key: &Ed25519KeyPair,
    split: bool,
) -> Result<(), KeyError> {
    let jws = account.policy_jws()?;
    let checked = jws::verify(&jws).map_err(|e| KeyError::Corrupt(e.to_string()))?;
    let doc: PolicyDocument =
        serde_json::from_slice(&checked.payload).map_err(|e| KeyError::Corrupt(e.to_string()))?;
    let left = doc.expires - OffsetDateTime::now_utc();
    let validity = if left > Duration::days(1) {
        left
    } else {
        DEFAULT_VALIDITY
    };
    let mut formats: Vec<Format> = doc
        .formats
        .iter()
        .filter_map(|f| Format::parse(f))
        .filter(|f| !(split && f.is_smime()))
        .collect();
    if formats.is_empty() {
        formats.push(Format::PgpMime);
    }
    let jws = sign_account_policy_with(account, key, validity, &formats)?;
    account.replace_policy(&jws)
}

/// When the account's published policy expires, if it can be read.
pub fn account_policy_expiry(account: &Account) -> Result<OffsetDateTime, KeyError> {
    let jws = account.policy_jws()?;
    let checked = jws::verify(&jws).map_err(|e| KeyError::Corrupt(e.to_string()))?;
    let doc: PolicyDocument =
        serde_json::from_slice(&checked.payload).map_err(|e| KeyError::Corrupt(e.to_string()))?;
    Ok(doc.expires)
}

/// A warning text when the account's policy expires within `horizon` (or has expired).
pub fn expiry_warning(account: &Account, horizon: Duration) -> Option<String> {
    let expires = account_policy_expiry(account).ok()?;
    let left = expires - OffsetDateTime::now_utc();
    if left <= Duration::ZERO {
        Some(format!(
            "the published policy for {} has expired; senders will refuse to write to its strong address: run `meshmail policy renew` and publish again",
            account.address()
        ))
    } else if left <= horizon {
        Some(format!(
            "the published policy for {} expires in {} days: run `meshmail policy renew` and publish again",
            account.address(),
            left.whole_days()
        ))
    } else {
        None
    }
}
