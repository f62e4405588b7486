//! Rekeying a split account after a compromise (`meshmail mailbox rekey`), on the admin device,
//! in the order that loses no mail:
//!
//! 1. a new Cv25519 encryption subkey joins the account's certificate and the old one is
//!    revoked as superseded (senders that refresh the certificate encrypt to the new one;
//!    those with a cached copy still use the old one, whose shares stay for a grace period);
//! 2. every enrolled device gets a new pair of shares: an update for the device (`d_i` sealed
//!    to the X25519 key it kept from its enrolment, signed by the account) and a record for the
//!    store; both keep the old subkey's shares;
//! 3. the certificate is published again (`meshmail policy publish`);
//! 4. stored mail is re-encrypted to the new subkey (`mailbox rekey --reencrypt`: only the
//!    PKESK is replaced, the encrypted body's bytes are kept);
//! 5. after the grace period the store retires the old subkey (`meshmail store retire`).

use super::account::Account;
use super::device::{self, StoreInfo};
use super::KeyError;
use crate::crypto::recrypt::{self, DeviceShare};
use crate::crypto::sealbox;
use crate::secret::SecretString;
use crate::store::shares::{RecordPayload, ShareRecord};
use data_encoding::BASE64;
use sequoia_openpgp as sq;
use serde::{Deserialize, Serialize};
use sq::packet::key::{Key4, SecretParts, SubordinateRole};
use sq::packet::signature::SignatureBuilder;
use sq::packet::Key;
use sq::types::{Curve, KeyFlags, ReasonForRevocation, SignatureType};
use std::path::Path;

const UPDATE_TAG: &str = "meshmail-device-share-update-v1";
const UPDATE_CONTEXT: &str = "meshmail-device-share-update-v1/seal";
const MAX_UPDATE: usize = 64 * 1024;

/// What a rekey made.
pub struct Rekeyed {
    pub old: String,
    pub new: String,
    /// Per device: (name, the update for the device, the record for the store).
    pub devices: Vec<(String, String, ShareRecord)>,
    /// Devices enrolled before they kept a share key: enrol them again.
    pub skipped: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    account: String,
    device: String,
    subkey: String,
    /// `d_i` sealed to the device's share key, base64.
    sealed_share: String,
    /// The account's certificate with the new subkey, armored.
    openpgp: String,
}

fn err(e: impl std::fmt::Display) -> KeyError {
    KeyError::Generate(format!("rekey: {e}"))
}

/// Steps 1 and 2 on the admin device (which must hold the account key).
pub fn rekey(
    account: &Account,
    passphrase: Option<&SecretString>,
    store: &StoreInfo,
) -> Result<Rekeyed, KeyError> {
    if !account.holds_secrets() {
        return Err(KeyError::Corrupt(
            "a rekey needs the account key: restore it from the recovery shares first".into(),
        ));
    }
    let unlocked = account.unlock(passphrase)?;
    let tsk = unlocked.openpgp_secret_cert()?;
    let old = recrypt::encryption_subkey(&tsk)
        .ok_or_else(|| KeyError::Corrupt("the account has no live encryption subkey".into()))?;
    let mut primary = tsk
        .primary_key()
        .key()
        .clone()
        .parts_into_secret()
        .map_err(err)?
        .into_keypair()
        .map_err(err)?;
    let new: Key<SecretParts, SubordinateRole> = Key4::generate_ecc(false, Curve::Cv25519)
        .map_err(err)?
        .into();
    let binding = SignatureBuilder::new(SignatureType::SubkeyBinding)
        .set_key_flags(
            KeyFlags::empty()
                .set_transport_encryption()
                .set_storage_encryption(),
        )
        .map_err(err)?;
    let binding = super::device_signing::as_long_as(binding, &tsk, new.creation_time())?
        .sign_subkey_binding(&mut primary, tsk.primary_key().key(), &new)
        .map_err(err)?;
    let old_sub = old.clone().role_into_subordinate();
    let superseded = sq::cert::SubkeyRevocationBuilder::new()
        .set_reason_for_revocation(ReasonForRevocation::KeySuperseded, b"rekeyed")
        .map_err(err)?
        .build(&mut primary, &tsk, &old_sub, None)
        .map_err(err)?;
    let scalar = recrypt::extract(&new).map_err(|e| KeyError::Corrupt(e.to_string()))?;
    let new_fpr = new.fingerprint().to_hex();
    let tsk = tsk
        .insert_packets(vec![
            sq::Packet::from(new),
            sq::Packet::from(binding),
            sq::Packet::from(superseded),
        ])
        .map_err(err)?
        .0;
    // The secret first: a crash after it leaves a key the certificate does not name yet,
    // never a certificate naming a key nobody holds.
    let rekeyed = unlocked.with_openpgp(&tsk)?;
    account.replace_secrets(&rekeyed, passphrase)?;
    account.replace_openpgp_cert(&tsk.clone().strip_secret_key_material())?;
    // Recovery shares hold the old key only: they must be made again.
    let _ = std::fs::remove_file(account.home().join(super::recovery::RECOVERY_FILE));

    let policy_key = rekeyed.policy_signing_key()?;
    // Senders encrypt to the certificate inside the policy: it must name the new subkey.
    crate::policy::issue::refresh_account_policy(
        account,
        &policy_key,
        device::has_live_devices(account.home(), None)?,
    )?;
    let store_public: [u8; 32] = BASE64
        .decode(store.public_key.as_bytes())
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| KeyError::Corrupt("store info: public_key".into()))?;
    let openpgp =
        String::from_utf8_lossy(&crate::crypto::openpgp::public_armored(&tsk)).into_owned();
    let mut out = Rekeyed {
        old: old.fingerprint().to_hex(),
        new: new_fpr.clone(),
        devices: Vec::new(),
        skipped: Vec::new(),
    };
    for d in device::enrolled(account.home())? {
        if d.revoked {
            continue;
        }
        let (Some(share_key), Some(signing_key)) = (&d.share_key, &d.signing_key) else {
            out.skipped.push(d.name.clone());
            continue;
        };
        let share_key: [u8; 32] = BASE64
            .decode(share_key.as_bytes())
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| KeyError::Corrupt(format!("{}: share key", d.name)))?;
        let (store_share, device_share) = scalar.split().map_err(err)?;
        let serial = device::next_serial(account.home())?;
        let record = ShareRecord::make(
            &policy_key,
            &store_public,
            RecordPayload {
                account: account.address().to_owned(),
                subkey: new_fpr.clone(),
                device: d.name.clone(),
                device_tls_sha256: d.tls_sha256.clone(),
                device_signing_key: signing_key.clone(),
                serial,
                sealed_share: String::new(),
            },
            &store_share,
        )
        .map_err(err)?;
        let sealed = sealbox::seal(
            &share_key,
            UPDATE_CONTEXT,
            &binding_of(account.address(), &d.name, &new_fpr),
            &device_share.to_bytes()[..],
        )
        .map_err(err)?;
        let body = UpdateBody {
            account: account.address().to_owned(),
            device: d.name.clone(),
            subkey: new_fpr.clone(),
            sealed_share: BASE64.encode(&sealed),
            openpgp: openpgp.clone(),
        };
        let json = serde_json::to_vec(&body).map_err(err)?;
        let signature = policy_key.sign(&super::envelope::signed_bytes(UPDATE_TAG, &json));
        let update = super::envelope::text(UPDATE_TAG, &json, Some(signature.as_ref()));
        out.devices.push((d.name.clone(), update, record));
    }
    Ok(out)
}

fn binding_of(account: &str, device: &str, subkey: &str) -> Vec<u8> {
    format!("{UPDATE_CONTEXT}\n{account}\n{device}\n{subkey}").into_bytes()
}

/// On a device: takes an update from the admin (`meshmail device update FILE`): checks it is
/// signed by the account and meant for this device, keeps the new share beside the old ones
/// and the certificate with the new subkey. Returns the new subkey's fingerprint.
pub fn apply_update(
    home: &Path,
    text: &str,
    passphrase: Option<&SecretString>,
) -> Result<String, KeyError> {
    let bad = || KeyError::Corrupt("not a meshmail share update".into());
    let envelope = super::envelope::open(text, UPDATE_TAG, MAX_UPDATE).ok_or_else(bad)?;
    let body: UpdateBody = serde_json::from_slice(&envelope.json).map_err(|_| bad())?;
    let account = Account::open(home)?;
    if !envelope.signed_by(UPDATE_TAG, &account.policy_public_key()?) {
        return Err(KeyError::Corrupt(
            "the update is not signed by the account's key".into(),
        ));
    }
    let info = device::info(home)?
        .ok_or_else(|| KeyError::Corrupt(format!("{} is not a device", home.display())))?;
    if body.device != info.name || !body.account.eq_ignore_ascii_case(account.address()) {
        return Err(KeyError::Corrupt(format!(
            "this update is for {} of {}",
            body.device, body.account
        )));
    }
    let cert = crate::crypto::openpgp::parse_certs(body.openpgp.as_bytes())
        .ok()
        .and_then(|c| c.into_iter().next())
        .ok_or_else(bad)?;
    if cert.fingerprint().to_hex() != account.info().openpgp_fingerprint
        || !cert
            .keys()
            .any(|k| k.key().fingerprint().to_hex() == body.subkey)
    {
        return Err(KeyError::Corrupt(
            "the update's certificate is not the account's, or lacks the new subkey".into(),
        ));
    }
    let secrets = device::unlock(home, passphrase)?;
    let share_key = secrets
        .share_key
        .ok_or_else(|| KeyError::Corrupt("this device kept no share key: enrol it again".into()))?;
    let sealed = BASE64
        .decode(body.sealed_share.as_bytes())
        .map_err(|_| bad())?;
    let share = sealbox::open(
        share_key.expose(),
        UPDATE_CONTEXT,
        &binding_of(&body.account, &body.device, &body.subkey),
        &sealed,
    )
    .map_err(|_| KeyError::Corrupt("the share in the update does not open here".into()))?;
    let share = DeviceShare::from_bytes(&share).map_err(|e| KeyError::Corrupt(e.to_string()))?;
    device::add_share(home, passphrase, &body.subkey, &share)?;
    account.replace_openpgp_cert(&cert)?;
    Ok(body.subkey)
}
