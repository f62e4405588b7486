//! The admin device's side of enrolment: answering a request (`device add`), enrolling itself
//! when it forgets the account key, and its list of the devices it enrolled (`devices.json`:
//! names are never given twice, and record serials only grow).

use super::*;

/// A device enrolled by this admin device.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Enrolled {
    pub name: String,
    pub tls_sha256: String,
    pub serial: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub enrolled: OffsetDateTime,
    #[serde(default)]
    pub revoked: bool,
    /// The device's OpenPGP signing subkey in the account's certificate.
    #[serde(default)]
    pub signing_subkey: Option<String>,
    /// The device's Ed25519 signing key and its X25519 share key, base64 (a rekey's new
    /// records and shares are made with them).
    #[serde(default)]
    pub signing_key: Option<String>,
    #[serde(default)]
    pub share_key: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct DevicesFile {
    devices: Vec<Enrolled>,
    last_serial: u64,
}

/// Step 2, on the admin device: the reply to `request` for a device called `name`. `code` is
/// the request's code as the device's owner read it out; a different one is refused.
pub fn add(
    account: &Account,
    unlocked: &Unlocked,
    request: &DeviceRequest,
    code: &str,
    name: &str,
    store: &StoreInfo,
) -> Result<DeviceReply, KeyError> {
    if !same_code(code, &request.code()) {
        return Err(KeyError::Corrupt(
            "the code does not match this request: it was changed on the way, or is another \
             device's; nothing was enrolled"
                .into(),
        ));
    }
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err(KeyError::Address(format!(
            "{name:?}: a device name is 1 to 64 letters, digits, '-', '_' or '.'"
        )));
    }
    let mut devices = read_devices(account.home())?;
    if devices.devices.iter().any(|d| d.name == name) {
        return Err(KeyError::AccountExists(format!(
            "device {name} (names are never reused, so a revoked device stays revoked)"
        )));
    }
    let tls_sha256 = request.tls_sha256()?;
    let store_public: [u8; 32] = BASE64
        .decode(store.public_key.as_bytes())
        .ok()
        .and_then(|k| k.try_into().ok())
        .ok_or_else(|| KeyError::Corrupt("store info: public_key".into()))?;
    let secret = unlocked.openpgp_secret_cert()?;
    let subkey = recrypt::encryption_subkey(&secret)
        .ok_or_else(|| KeyError::Corrupt("the account has no live encryption subkey".into()))?;
    let scalar = recrypt::extract(&subkey).map_err(|e| KeyError::Corrupt(e.to_string()))?;
    let (store_share, device_share) = scalar
        .split()
        .map_err(|e| KeyError::Generate(e.to_string()))?;
    drop(scalar);
    let subkey_fpr = subkey.fingerprint().to_hex();
    // Serials only grow, also across a clock set back.
    let serial = (devices.last_serial + 1).max(OffsetDateTime::now_utc().unix_timestamp() as u64);
    let policy_key = unlocked.policy_signing_key()?;
    let record = ShareRecord::make(
        &policy_key,
        &store_public,
        RecordPayload {
            account: account.address().to_owned(),
            subkey: subkey_fpr.clone(),
            device: name.to_owned(),
            device_tls_sha256: tls_sha256.clone(),
            device_signing_key: request.body.signing_key.clone(),
            serial,
            sealed_share: String::new(),
        },
        &store_share,
    )
    .map_err(|e| KeyError::Generate(e.to_string()))?;
    let binding = share_binding(&request.sha256(), name, &subkey_fpr);
    let sealed_share = sealbox::seal(
        &request.enrolment_key()?,
        SHARE_CONTEXT,
        &binding,
        &device_share.to_bytes()[..],
    )
    .map_err(|e| KeyError::Generate(e.to_string()))?;
    // The device's signing subkey joins the account's certificate (published again later).
    let mut cert = account.openpgp_cert()?;
    let mut signing_subkey = None;
    if let Some(field) = &request.body.signing_subkey {
        let (bound, fingerprint) = crate::keys::device_signing::bind(&secret, &cert, field)?;
        account.replace_openpgp_cert(&bound)?;
        cert = bound;
        signing_subkey = Some(fingerprint);
    }
    // Senders encrypt to the certificate inside the policy, so it is signed again for the
    // certificate as it is now; and devices hold shares of the OpenPGP key only (recryption
    // does not cover S/MIME), so the policy offers OpenPGP alone from now on.
    crate::policy::issue::refresh_account_policy(account, &policy_key, true)?;
    let openpgp =
        String::from_utf8_lossy(&crate::crypto::openpgp::public_armored(&cert)).into_owned();
    let body = ReplyBody {
        request_sha256: request.sha256(),
        device: name.to_owned(),
        account: account.info().clone(),
        openpgp,
        policy: account.policy_jws()?,
        subkey: subkey_fpr,
        sealed_share: BASE64.encode(&sealed_share),
        store: store.clone(),
        store_record: record.as_str().to_owned(),
    };
    let json = serde_json::to_vec(&body).map_err(|e| KeyError::Corrupt(e.to_string()))?;
    let signature = policy_key.sign(&crate::keys::envelope::signed_bytes(REPLY_TAG, &json));
    let text = crate::keys::envelope::text(REPLY_TAG, &json, Some(signature.as_ref()));
    devices.last_serial = serial;
    devices.devices.push(Enrolled {
        name: name.to_owned(),
        tls_sha256,
        serial,
        enrolled: OffsetDateTime::now_utc(),
        revoked: false,
        signing_subkey,
        signing_key: Some(request.body.signing_key.clone()),
        share_key: Some(request.body.enrolment_key.clone()),
    });
    write_devices(account.home(), &devices)?;
    DeviceReply::parse(&text)
}

/// The admin device forgets the account key: refused until recovery shares exist and a
/// recovery from them worked once (`recovery join --check`). The admin device is first
/// enrolled as a device called `name` (its record for the store is returned), then the secret
/// key file is overwritten and removed. Later enrolments rebuild the key from recovery shares,
/// in memory only.
pub fn forget_account_key(
    account: &Account,
    unlocked: &Unlocked,
    passphrase: Option<&SecretString>,
    name: &str,
    store: &StoreInfo,
) -> Result<(DeviceInfo, ShareRecord), KeyError> {
    let home = account.home();
    match crate::keys::recovery::read_record(home)? {
        Some(r) if r.tested.is_some() => {}
        Some(_) => {
            return Err(KeyError::Corrupt(
                "recovery shares exist but no recovery from them was tried: run `meshmail \
                 recovery join --check FILE FILE` first"
                    .into(),
            ))
        }
        None => {
            return Err(KeyError::Corrupt(
                "no recovery shares: run `meshmail recovery split` and `meshmail recovery join \
                 --check` first (once forgotten, the shares are the only copy of the key)"
                    .into(),
            ))
        }
    }
    if home.join(DEVICE_FILE).exists() {
        return Err(KeyError::AccountExists(format!(
            "{}: already a device",
            home.display()
        )));
    }
    let (request, pending, cert_pem) = new_request(Some(&account.openpgp_cert()?))?;
    // No code to compare: the request never left this device.
    let reply = add(account, unlocked, &request, &request.code(), name, store)?;
    write_new(&home.join(DEVICE_CERT_FILE), cert_pem.as_bytes(), 0o644)?;
    let info = write_device(home, &pending, &reply, passphrase, false)?;
    account.forget_secrets()?;
    Ok((info, reply.store_record()))
}

/// The next serial for a record of this account (records' serials only grow).
pub(crate) fn next_serial(home: &Path) -> Result<u64, KeyError> {
    let mut devices = read_devices(home)?;
    let serial = (devices.last_serial + 1).max(OffsetDateTime::now_utc().unix_timestamp() as u64);
    devices.last_serial = serial;
    write_devices(home, &devices)?;
    Ok(serial)
}

/// The devices this admin device enrolled.
pub fn enrolled(home: &Path) -> Result<Vec<Enrolled>, KeyError> {
    Ok(read_devices(home)?.devices)
}

/// True when a device enrolled by this admin device, other than `except`, is not revoked:
/// the account's OpenPGP key is split, and its policy offers OpenPGP only.
pub fn has_live_devices(home: &Path, except: Option<&str>) -> Result<bool, KeyError> {
    Ok(read_devices(home)?
        .devices
        .iter()
        .any(|d| !d.revoked && Some(d.name.as_str()) != except))
}

/// Marks `name` revoked in the admin's list (the store's revocation is what stops it).
pub fn mark_revoked(home: &Path, name: &str) -> Result<bool, KeyError> {
    let mut devices = read_devices(home)?;
    let mut found = false;
    for d in devices.devices.iter_mut().filter(|d| d.name == name) {
        d.revoked = true;
        found = true;
    }
    if found {
        write_devices(home, &devices)?;
    }
    Ok(found)
}

fn read_devices(home: &Path) -> Result<DevicesFile, KeyError> {
    let path = home.join(DEVICES_FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| KeyError::Corrupt(format!("{DEVICES_FILE}: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(DevicesFile::default()),
        Err(e) => Err(KeyError::io(&path, e)),
    }
}

fn write_devices(home: &Path, devices: &DevicesFile) -> Result<(), KeyError> {
    let json = serde_json::to_vec_pretty(devices).map_err(|e| KeyError::Corrupt(e.to_string()))?;
    crate::keys::account::replace_file(&home.join(DEVICES_FILE), &json, 0o644)
}
