//! A device of a split account: enrolment (request → reply → import) and the device's files.
//!
//! 1. `device request` on the new device makes its TLS key (with a self-signed certificate the
//!    store pins by the hash of its public key), an Ed25519 signing key and a one-time X25519
//!    enrolment key, keeps them sealed in `device-request.json`, and prints a request carrying
//!    only the public halves, with a comparison code.
//! 2. `device add` on the admin device checks that code (read out by the device's owner),
//!    splits the account's Cv25519 subkey afresh for this device, seals the device share `d_i`
//!    to the enrolment key and the store share `s_i` to the store (a [`ShareRecord`]), and signs
//!    the reply with the account's policy key. It prints the reply's own code.
//! 3. `device import` on the new device checks the reply answers its request, is signed by the
//!    account key it carries, and that the code typed in is the reply's; then it opens `d_i`
//!    and writes the device's home.
//!
//! No private key travels and no passphrase-protected bundle exists: the only secret in the
//! reply is `d_i`, sealed to a key that never left the device, and useless without the store.
//!
//! ```text
//! device.json          public: device name, account, subkey, store address and pin
//! device-secrets.json  0600, sealed like secrets.json: d_i, TLS key, signing key, index key
//! device-tls.pem       the device's TLS certificate (public)
//! account.json, openpgp.asc, policy.jws   the account's public files, as on the admin device
//! ```

use super::account::{make_private_dir, write_new, AccountInfo, ACCOUNT_FILE, OPENPGP_FILE};
use super::{sealed, Account, KeyError, Unlocked};
use crate::crypto::recrypt::{self, DeviceShare};
use crate::crypto::sealbox;
use crate::secret::{Secret, SecretBytes, SecretString};
use crate::store::shares::{RecordPayload, ShareRecord};
use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use data_encoding::{BASE64, HEXUPPER};
use sequoia_openpgp as sq;
use serde::{Deserialize, Serialize};
use std::path::Path;
use time::OffsetDateTime;
use zeroize::ZeroizeOnDrop;

pub const DEVICE_FILE: &str = "device.json";
pub const DEVICE_SECRETS_FILE: &str = "device-secrets.json";
pub const DEVICE_CERT_FILE: &str = "device-tls.pem";
pub const PENDING_FILE: &str = "device-request.json";
/// On the admin device: the devices enrolled, and the last serial given.
pub const DEVICES_FILE: &str = "devices.json";
/// The admin device's copy of its store's description, kept from the first `--store`.
pub const STORE_INFO_FILE: &str = "store.json";

const REQUEST_TAG: &str = "meshmail-device-request-v1";
const REPLY_TAG: &str = "meshmail-device-reply-v1";
const SHARE_CONTEXT: &str = "meshmail-device-share-v1";
/// Requests and replies are a few KB; anything much larger is refused unread.
const MAX_TEXT: usize = 64 * 1024;

/// The public half of a request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RequestBody {
    /// The device's self-signed TLS certificate, DER, base64.
    tls_cert: String,
    /// Ed25519 public key, base64.
    signing_key: String,
    /// X25519 public key, base64: `d_i` is sealed to it.
    enrolment_key: String,
    /// The device's OpenPGP signing subkey and its back-signature (`keys::device_signing`),
    /// when the device knew the account's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    signing_subkey: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    made: OffsetDateTime,
}

/// A device's enrolment request, as text.
#[derive(Debug, Clone)]
pub struct DeviceRequest {
    text: String,
    body: RequestBody,
}

impl DeviceRequest {
    pub fn parse(text: &str) -> Result<DeviceRequest, KeyError> {
        let bad = || KeyError::Corrupt("not a meshmail device request".into());
        let envelope = super::envelope::open(text, REQUEST_TAG, MAX_TEXT).ok_or_else(bad)?;
        let body: RequestBody = serde_json::from_slice(&envelope.json).map_err(|_| bad())?;
        let request = DeviceRequest {
            text: text.trim().to_owned(),
            body,
        };
        request.tls_sha256()?;
        request.enrolment_key()?;
        Ok(request)
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// SHA-256 of the request text, upper-case hex: what the reply answers.
    pub fn sha256(&self) -> String {
        HEXUPPER.encode(digest(&SHA256, self.text.as_bytes()).as_ref())
    }

    /// The code the device shows and the admin types in.
    pub fn code(&self) -> String {
        code_of(&format!("request\n{}", self.text))
    }

    /// SHA-256 of the device's TLS public key (SPKI), what the store pins.
    pub fn tls_sha256(&self) -> Result<String, KeyError> {
        let der = BASE64
            .decode(self.body.tls_cert.as_bytes())
            .map_err(|_| KeyError::Corrupt("request: TLS certificate".into()))?;
        crate::tls::spki_sha256(&der)
            .ok_or_else(|| KeyError::Corrupt("request: TLS certificate".into()))
    }

    fn enrolment_key(&self) -> Result<[u8; 32], KeyError> {
        BASE64
            .decode(self.body.enrolment_key.as_bytes())
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| KeyError::Corrupt("request: enrolment key".into()))
    }
}

/// A short decimal code over `text`: three groups of four digits (about 40 bits), read aloud
/// and compared out of band.
fn code_of(text: &str) -> String {
    let h = digest(&SHA256, text.as_bytes());
    let mut n = 0u64;
    for b in &h.as_ref()[..8] {
        n = (n << 8) | u64::from(*b);
    }
    let d = format!("{:012}", n % 1_000_000_000_000);
    format!("{}-{}-{}", &d[..4], &d[4..8], &d[8..])
}

/// Codes compare on their digits only (spaces and dashes as the user typed them).
fn same_code(typed: &str, expected: &str) -> bool {
    let digits = |s: &str| s.chars().filter(char::is_ascii_digit).collect::<String>();
    let t = digits(typed);
    !t.is_empty() && t == digits(expected)
}

/// What the device keeps between request and import (sealed like the account's secrets).
#[derive(Serialize, Deserialize, ZeroizeOnDrop)]
struct Pending {
    request: String,
    tls_key: String,
    signing_key: String,
    enrolment_key: String,
    /// The secret OpenPGP signing subkey packet, base64.
    #[serde(default)]
    openpgp_signing: Option<String>,
}

/// The device's secrets.
#[derive(Serialize, Deserialize, ZeroizeOnDrop)]
struct SecretsFile {
    share: String,
    tls_key: String,
    signing_key: String,
    index_key: String,
    #[serde(default)]
    openpgp_signing: Option<String>,
    /// The device's X25519 key new shares are sealed to (a rekey), base64: the enrolment key,
    /// kept.
    #[serde(default)]
    share_key: Option<String>,
    /// Shares of later subkeys (a rekey): (subkey fingerprint, share), base64.
    #[serde(default)]
    more_shares: Vec<(String, String)>,
}

/// How a device reaches its store: written by `store info`, read by `device add`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreInfo {
    /// `host:port` of the store's IMAP listener.
    pub address: String,
    /// The store's X25519 key for share records, base64.
    pub public_key: String,
    /// SHA-256 of the store's TLS certificate (DER), upper-case hex: the device pins it.
    pub cert_sha256: String,
}

impl StoreInfo {
    /// Parses `meshmail store info`'s output.
    pub fn parse(text: &str) -> Result<StoreInfo, KeyError> {
        serde_json::from_str(text)
            .map_err(|e| KeyError::Corrupt(format!("not a store description: {e}")))
    }

    /// On the admin device: the store description `given` (a file from `meshmail store
    /// info`), kept in `home` for the next enrolment or rekey; without one, the kept copy.
    pub fn for_admin(home: &Path, given: Option<&Path>) -> Result<StoreInfo, KeyError> {
        let kept = home.join(STORE_INFO_FILE);
        match given {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|e| KeyError::io(path, e))?;
                let info = StoreInfo::parse(&text)?;
                super::account::replace_file(&kept, text.as_bytes(), 0o644)?;
                Ok(info)
            }
            None => match std::fs::read_to_string(&kept) {
                Ok(text) => StoreInfo::parse(&text),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(KeyError::Corrupt(
                    "no store description yet: give --store FILE once (the output of `meshmail \
                     store info` on the store host); it is kept for later"
                        .into(),
                )),
                Err(e) => Err(KeyError::io(&kept, e)),
            },
        }
    }
}

/// The device's public description (`device.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeviceInfo {
    pub name: String,
    pub address: String,
    /// The encryption subkey the share belongs to (upper-case hex fingerprint).
    pub subkey: String,
    pub store: StoreInfo,
    /// SHA-256 of this device's TLS public key, as the store pins it.
    pub tls_sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    pub enrolled: OffsetDateTime,
}

/// A device's secrets, unlocked.
pub struct DeviceSecrets {
    /// The device's shares, each with the subkey it belongs to (the enrolment's first).
    pub shares: Vec<(String, DeviceShare)>,
    /// The X25519 key a rekey's new shares are sealed to (32 raw bytes).
    pub share_key: Option<SecretBytes>,
    /// PKCS#8 DER.
    pub tls_key: SecretBytes,
    /// PKCS#8 DER.
    pub signing_key: SecretBytes,
    /// The key of the device's persistent index.
    pub index_key: SecretBytes,
    /// The device's OpenPGP signing subkey (a secret subkey packet), when it has one.
    pub openpgp_signing: Option<SecretBytes>,
}

/// The signed part of a reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReplyBody {
    request_sha256: String,
    device: String,
    account: AccountInfo,
    /// The account's public certificate, armored.
    openpgp: String,
    policy: String,
    subkey: String,
    /// `d_i` sealed to the enrolment key, base64.
    sealed_share: String,
    store: StoreInfo,
    store_record: String,
}

/// The admin's answer to a request, as text.
#[derive(Debug, Clone)]
pub struct DeviceReply {
    text: String,
    body: ReplyBody,
    envelope: super::envelope::Envelope,
}

impl DeviceReply {
    pub fn parse(text: &str) -> Result<DeviceReply, KeyError> {
        let bad = || KeyError::Corrupt("not a meshmail device reply".into());
        let envelope = super::envelope::open(text, REPLY_TAG, MAX_TEXT).ok_or_else(bad)?;
        let body: ReplyBody = serde_json::from_slice(&envelope.json).map_err(|_| bad())?;
        envelope.signature.as_ref().ok_or_else(bad)?;
        Ok(DeviceReply {
            text: text.trim().to_owned(),
            body,
            envelope,
        })
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// The code the admin device shows and the new device's owner types in.
    pub fn code(&self) -> String {
        code_of(&format!("reply\n{}", BASE64.encode(&self.envelope.json)))
    }

    /// The record to give the store (`meshmail store accept`).
    pub fn store_record(&self) -> ShareRecord {
        ShareRecord::from_text(&self.body.store_record)
    }

    pub fn device(&self) -> &str {
        &self.body.device
    }
}

/// Step 1, on the new device: keys and a request. Refuses a home that holds an account or a
/// device, or a request already waiting for its reply.
/// With the account's public certificate (`account`), the device also makes its own OpenPGP
/// signing subkey for it.
pub fn request(
    home: &Path,
    passphrase: Option<&SecretString>,
    account: Option<&sq::Cert>,
) -> Result<DeviceRequest, KeyError> {
    for f in [ACCOUNT_FILE, DEVICE_FILE, PENDING_FILE] {
        if home.join(f).exists() {
            return Err(KeyError::AccountExists(format!("{} ({f})", home.display())));
        }
    }
    make_private_dir(home)?;
    let (request, pending, cert_pem) = new_request(account)?;
    let plain =
        Secret::new(serde_json::to_vec(&pending).map_err(|e| KeyError::Corrupt(e.to_string()))?);
    write_new(
        &home.join(PENDING_FILE),
        &sealed::seal(&plain, passphrase)?,
        0o600,
    )?;
    write_new(&home.join(DEVICE_CERT_FILE), cert_pem.as_bytes(), 0o644)?;
    Ok(request)
}

/// A device's keys, in memory: the request, what the device keeps until the reply, and its
/// TLS certificate (PEM).
fn new_request(account: Option<&sq::Cert>) -> Result<(DeviceRequest, Pending, String), KeyError> {
    let tls = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let cert = rcgen::CertificateParams::new(vec!["meshmail-device".to_owned()])
        .and_then(|p| p.self_signed(&tls))
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    let signing = super::generate::policy_signing_key()?;
    let signing_public = Ed25519KeyPair::from_pkcs8(signing.expose())
        .map_err(|_| KeyError::Generate("Ed25519 key".into()))?
        .public_key()
        .as_ref()
        .to_vec();
    let (enrolment, enrolment_public) =
        sealbox::generate().map_err(|e| KeyError::Generate(e.to_string()))?;
    let openpgp = account.map(super::device_signing::make).transpose()?;
    let body = RequestBody {
        tls_cert: BASE64.encode(cert.der()),
        signing_key: BASE64.encode(&signing_public),
        enrolment_key: BASE64.encode(&enrolment_public),
        signing_subkey: openpgp.as_ref().map(|(field, _)| field.clone()),
        made: OffsetDateTime::now_utc(),
    };
    let json = serde_json::to_vec(&body).map_err(|e| KeyError::Corrupt(e.to_string()))?;
    let text = super::envelope::text(REQUEST_TAG, &json, None);
    let pending = Pending {
        request: text.clone(),
        tls_key: BASE64.encode(&tls.serialize_der()),
        signing_key: BASE64.encode(signing.expose()),
        enrolment_key: BASE64.encode(&enrolment[..]),
        openpgp_signing: openpgp.map(|(_, secret)| BASE64.encode(secret.expose())),
    };
    let pem = super::account::pem("CERTIFICATE", cert.der());
    Ok((DeviceRequest::parse(&text)?, pending, pem))
}

fn share_binding(request_sha256: &str, device: &str, subkey: &str) -> Vec<u8> {
    format!("{SHARE_CONTEXT}\n{request_sha256}\n{device}\n{subkey}").into_bytes()
}

/// Step 3, on the new device: checks the reply and the code the user typed (the one the admin
/// device showed), then writes the device's home.
pub fn import(
    home: &Path,
    reply: &DeviceReply,
    code: &str,
    passphrase: Option<&SecretString>,
) -> Result<DeviceInfo, KeyError> {
    let pending_path = home.join(PENDING_FILE);
    let sealed_pending =
        std::fs::read(&pending_path).map_err(|e| KeyError::io(&pending_path, e))?;
    let plain = sealed::open(&sealed_pending, passphrase)?;
    let pending: Pending =
        serde_json::from_slice(plain.expose()).map_err(|e| KeyError::Corrupt(e.to_string()))?;
    if !same_code(code, &reply.code()) {
        return Err(KeyError::Corrupt(
            "the code does not match this reply: it was changed on the way, or comes from \
             someone else; nothing was imported"
                .into(),
        ));
    }
    let info = write_device(home, &pending, reply, passphrase, true)?;
    std::fs::remove_file(&pending_path).map_err(|e| KeyError::io(&pending_path, e))?;
    Ok(info)
}

/// Checks `reply` answers `pending`'s request and is signed by the account it names, opens the
/// share, and writes the device's files (the account's public files too, unless the home
/// already is the account's).
fn write_device(
    home: &Path,
    pending: &Pending,
    reply: &DeviceReply,
    passphrase: Option<&SecretString>,
    public_files: bool,
) -> Result<DeviceInfo, KeyError> {
    let request = DeviceRequest::parse(&pending.request)?;
    let body = &reply.body;
    if body.request_sha256 != request.sha256() {
        return Err(KeyError::Corrupt(
            "this reply answers another request".into(),
        ));
    }
    let account_key = BASE64
        .decode(body.account.policy_key.as_bytes())
        .map_err(|_| KeyError::Corrupt("reply: policy key".into()))?;
    if !reply.envelope.signed_by(REPLY_TAG, &account_key) {
        return Err(KeyError::Corrupt(
            "the reply is not signed by the account's key".into(),
        ));
    }
    let cert = crate::crypto::openpgp::parse_certs(body.openpgp.as_bytes())
        .ok()
        .and_then(|c| c.into_iter().next())
        .ok_or_else(|| KeyError::Corrupt("reply: certificate".into()))?;
    if cert.fingerprint().to_hex() != body.account.openpgp_fingerprint
        || !cert
            .keys()
            .any(|k| k.key().fingerprint().to_hex() == body.subkey)
    {
        return Err(KeyError::Corrupt(
            "reply: the certificate is not the account's, or lacks the split subkey".into(),
        ));
    }
    let enrolment = Secret::new(
        BASE64
            .decode(pending.enrolment_key.as_bytes())
            .map_err(|_| KeyError::Corrupt("pending request".into()))?,
    );
    let sealed_share = BASE64
        .decode(body.sealed_share.as_bytes())
        .map_err(|_| KeyError::Corrupt("reply: share".into()))?;
    let share = sealbox::open(
        enrolment.expose(),
        SHARE_CONTEXT,
        &share_binding(&body.request_sha256, &body.device, &body.subkey),
        &sealed_share,
    )
    .map_err(|_| KeyError::Corrupt("the share in the reply does not open here".into()))?;
    DeviceShare::from_bytes(&share).map_err(|e| KeyError::Corrupt(e.to_string()))?;
    let mut index_key = zeroize::Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(&mut index_key[..]).map_err(|_| KeyError::Generate("random".into()))?;
    let secrets = SecretsFile {
        share: BASE64.encode(&share),
        tls_key: pending.tls_key.clone(),
        signing_key: pending.signing_key.clone(),
        index_key: BASE64.encode(&index_key[..]),
        openpgp_signing: pending.openpgp_signing.clone(),
        share_key: Some(pending.enrolment_key.clone()),
        more_shares: Vec::new(),
    };
    let plain =
        Secret::new(serde_json::to_vec(&secrets).map_err(|e| KeyError::Corrupt(e.to_string()))?);
    drop(secrets);
    let info = DeviceInfo {
        name: body.device.clone(),
        address: body.account.address.clone(),
        subkey: body.subkey.clone(),
        store: body.store.clone(),
        tls_sha256: request.tls_sha256()?,
        enrolled: OffsetDateTime::now_utc(),
    };
    write_new(
        &home.join(DEVICE_SECRETS_FILE),
        &sealed::seal(&plain, passphrase)?,
        0o600,
    )?;
    if public_files {
        write_new(&home.join(OPENPGP_FILE), body.openpgp.as_bytes(), 0o644)?;
    } else {
        // The admin's own home: its certificate now binds its device subkey.
        crate::keys::Account::open(home)?.replace_openpgp_cert(&cert)?;
    }
    if public_files {
        write_new(
            &home.join(super::account::POLICY_FILE),
            body.policy.as_bytes(),
            0o644,
        )?;
    }
    write_new(
        &home.join(DEVICE_FILE),
        &serde_json::to_vec_pretty(&info).map_err(|e| KeyError::Corrupt(e.to_string()))?,
        0o644,
    )?;
    if public_files {
        // account.json last: its presence means the home is complete.
        write_new(
            &home.join(ACCOUNT_FILE),
            &serde_json::to_vec_pretty(&body.account)
                .map_err(|e| KeyError::Corrupt(e.to_string()))?,
            0o644,
        )?;
    }
    Ok(info)
}

/// The device description in `home`, when it is a device's home.
pub fn info(home: &Path) -> Result<Option<DeviceInfo>, KeyError> {
    let path = home.join(DEVICE_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| KeyError::Corrupt(format!("{DEVICE_FILE}: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(KeyError::io(&path, e)),
    }
}

/// Opens the device's secrets.
pub fn unlock(home: &Path, passphrase: Option<&SecretString>) -> Result<DeviceSecrets, KeyError> {
    let path = home.join(DEVICE_SECRETS_FILE);
    let bytes = super::account::read_private(&path)?;
    let plain = sealed::open(&bytes, passphrase)?;
    let file: SecretsFile =
        serde_json::from_slice(plain.expose()).map_err(|e| KeyError::Corrupt(e.to_string()))?;
    let decode = |s: &str| {
        BASE64
            .decode(s.as_bytes())
            .map(Secret::new)
            .map_err(|_| KeyError::Corrupt("device secret is not base64".into()))
    };
    let first = info(home)?
        .ok_or_else(|| KeyError::Corrupt(format!("{}: no {DEVICE_FILE}", home.display())))?
        .subkey;
    let mut shares = Vec::new();
    for (subkey, share) in std::iter::once((&first, &file.share)).chain(
        file.more_shares
            .iter()
            .map(|(subkey, share)| (subkey, share)),
    ) {
        let bytes = decode(share)?;
        shares.push((
            subkey.clone(),
            DeviceShare::from_bytes(bytes.expose())
                .map_err(|e| KeyError::Corrupt(e.to_string()))?,
        ));
    }
    Ok(DeviceSecrets {
        shares,
        share_key: file.share_key.as_deref().map(decode).transpose()?,
        tls_key: decode(&file.tls_key)?,
        signing_key: decode(&file.signing_key)?,
        index_key: decode(&file.index_key)?,
        openpgp_signing: file.openpgp_signing.as_deref().map(decode).transpose()?,
    })
}

/// Adds a share for another subkey (a rekey) to the device's secrets in `home`, sealed again
/// with `passphrase` (the same one they were sealed with).
pub(crate) fn add_share(
    home: &Path,
    passphrase: Option<&SecretString>,
    subkey: &str,
    share: &DeviceShare,
) -> Result<(), KeyError> {
    let path = home.join(DEVICE_SECRETS_FILE);
    let bytes = super::account::read_private(&path)?;
    let plain = sealed::open(&bytes, passphrase)?;
    let mut file: SecretsFile =
        serde_json::from_slice(plain.expose()).map_err(|e| KeyError::Corrupt(e.to_string()))?;
    file.more_shares.retain(|(k, _)| k != subkey);
    file.more_shares
        .push((subkey.to_owned(), BASE64.encode(&share.to_bytes()[..])));
    let plain =
        Secret::new(serde_json::to_vec(&file).map_err(|e| KeyError::Corrupt(e.to_string()))?);
    drop(file);
    super::account::replace_file(&path, &sealed::seal(&plain, passphrase)?, 0o600)
}

mod admin;
pub(crate) use admin::next_serial;
pub use admin::{add, enrolled, forget_account_key, has_live_devices, mark_revoked, Enrolled};

#[cfg(test)]
mod tests;
