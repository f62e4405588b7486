//! Revocations signed by the account's key or by a remaining device's signing key: what a
//! store takes from `meshmail store revoke --signed FILE` or from a device's session
//! (`X-MESH-REVOKE`), so a lost device is cut off from any other device of the account.

use super::{ShareError, ShareStore, MAX_RECORD};
use aws_lc_rs::signature::{Ed25519KeyPair, UnparsedPublicKey as SigKey, ED25519};
use data_encoding::BASE64;
use serde::{Deserialize, Serialize};

const REVOCATION_TAG: &str = "meshmail-device-revocation-v1";

/// What a revocation says.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RevocationBody {
    account: String,
    device: String,
    /// The device that signed it; empty when the account's key did.
    by: String,
    #[serde(with = "time::serde::rfc3339")]
    made: time::OffsetDateTime,
}

struct Revocation {
    body: RevocationBody,
    json: Vec<u8>,
    signature: Vec<u8>,
}

impl Revocation {
    fn parse(text: &str) -> Result<Revocation, ShareError> {
        let envelope = crate::keys::envelope::open(text, REVOCATION_TAG, MAX_RECORD)
            .ok_or(ShareError::NotARecord)?;
        let (json, signature) = (
            envelope.json,
            envelope.signature.ok_or(ShareError::NotARecord)?,
        );
        let body = serde_json::from_slice(&json).map_err(|_| ShareError::NotARecord)?;
        Ok(Revocation {
            body,
            json,
            signature,
        })
    }
}

fn revocation_signed_bytes(json: &[u8]) -> Vec<u8> {
    crate::keys::envelope::signed_bytes(REVOCATION_TAG, json)
}

/// A revocation of `device` of `account`, signed with `key`: the account's policy key
/// (`by` empty) or the signing key of the device named `by`.
pub fn make_revocation(
    key: &Ed25519KeyPair,
    account: &str,
    device: &str,
    by: &str,
) -> Result<String, ShareError> {
    let body = RevocationBody {
        account: account.to_owned(),
        device: device.to_owned(),
        by: by.to_owned(),
        made: time::OffsetDateTime::now_utc(),
    };
    let json = serde_json::to_vec(&body).map_err(|e| ShareError::Io(e.to_string()))?;
    let signature = key.sign(&revocation_signed_bytes(&json));
    Ok(crate::keys::envelope::text(
        REVOCATION_TAG,
        &json,
        Some(signature.as_ref()),
    ))
}

impl ShareStore {
    /// Applies a revocation signed by the account's key, or by the signing key of one of the
    /// account's devices that is itself unrevoked. Returns the revoked device's name.
    pub fn revoke_signed(&self, text: &str) -> Result<String, ShareError> {
        self.revoke_signed_for(None, text)
    }

    /// [`Self::revoke_signed`], refused unless it revokes a device of `account` (a device's
    /// session submits revocations for its own account only).
    pub fn revoke_signed_for(
        &self,
        account: Option<&str>,
        text: &str,
    ) -> Result<String, ShareError> {
        let revocation = Revocation::parse(text)?;
        let body = &revocation.body;
        if account.is_some_and(|a| !a.eq_ignore_ascii_case(&body.account)) {
            return Err(ShareError::UnknownAccount(body.account.clone()));
        }
        let pinned = self
            .accounts
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case(&body.account))
            .map(|(_, k)| *k)
            .ok_or_else(|| ShareError::UnknownAccount(body.account.clone()))?;
        let signer: Vec<u8> = if body.by.is_empty() {
            pinned.to_vec()
        } else {
            let devices = self.devices(&body.account)?;
            let by = devices
                .iter()
                .find(|d| d.device == body.by)
                .ok_or_else(|| ShareError::Revoked(body.by.clone()))?;
            BASE64
                .decode(by.device_signing_key.as_bytes())
                .map_err(|_| ShareError::BadSignature(body.account.clone()))?
        };
        SigKey::new(&ED25519, &signer)
            .verify(
                &revocation_signed_bytes(&revocation.json),
                &revocation.signature,
            )
            .map_err(|_| ShareError::BadSignature(body.account.clone()))?;
        self.revoke(&body.account, &body.device)?;
        Ok(body.device.clone())
    }
}
