use super::*;
use crate::store::shares::ShareStore;
use std::os::unix::fs::PermissionsExt;

struct Setup {
    _dir: tempfile::TempDir,
    admin: Account,
    unlocked: Unlocked,
    device_home: std::path::PathBuf,
    store: ShareStore,
    info: StoreInfo,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let admin = Account::create(
        &dir.path().join("admin"),
        "alice@example.test",
        None,
        time::Duration::days(30),
    )
    .unwrap();
    let unlocked = admin.unlock(None).unwrap();
    let store = ShareStore::open(
        &dir.path().join("state.json"),
        &dir.path().join("shares"),
        vec![(
            "alice@example.test".into(),
            admin.policy_public_key().unwrap(),
        )],
    )
    .unwrap();
    let info = StoreInfo {
        address: "127.0.0.1:1993".into(),
        public_key: BASE64.encode(&store.public_key().unwrap()),
        cert_sha256: "00".repeat(32),
    };
    Setup {
        device_home: dir.path().join("laptop"),
        _dir: dir,
        admin,
        unlocked,
        store,
        info,
    }
}

#[test]
fn enrolment_gives_the_device_and_the_store_shares_that_together_decrypt() {
    let s = setup();
    let account_cert = s.admin.openpgp_cert().unwrap();
    let req = request(&s.device_home, None, Some(&account_cert)).unwrap();
    assert!(req.text().starts_with(REQUEST_TAG));
    // Only public halves travel.
    assert!(!req.text().contains("PRIVATE"));
    let reply = add(
        &s.admin,
        &s.unlocked,
        &DeviceRequest::parse(req.text()).unwrap(),
        &req.code(),
        "laptop",
        &s.info,
    )
    .unwrap();
    let reply = DeviceReply::parse(reply.text()).unwrap();
    let info = import(&s.device_home, &reply, &reply.code(), None).unwrap();
    assert_eq!(info.name, "laptop");
    // The device's signing subkey is in the account's certificate, on both sides.
    let enrolled = enrolled(s.admin.home()).unwrap();
    let subkey = enrolled[0]
        .signing_subkey
        .clone()
        .expect("a signing subkey");
    for home in [s.admin.home(), s.device_home.as_path()] {
        let cert = Account::open(home).unwrap().openpgp_cert().unwrap();
        assert!(cert
            .keys()
            .any(|k| k.key().fingerprint().to_hex() == subkey));
    }
    assert!(unlock(&s.device_home, None)
        .unwrap()
        .openpgp_signing
        .is_some());
    // The policy senders fetch was signed again: OpenPGP only (recryption does not cover
    // S/MIME), with the certificate as it is now (the device's subkey in it), on both sides.
    for home in [s.admin.home(), s.device_home.as_path()] {
        let jws = Account::open(home).unwrap().policy_jws().unwrap();
        let checked = crate::policy::jws::verify(&jws).unwrap();
        let doc: crate::policy::PolicyDocument = serde_json::from_slice(&checked.payload).unwrap();
        assert_eq!(doc.formats, vec!["pgp-mime".to_string()]);
        assert!(doc.smime.is_none());
        let inside = <sequoia_openpgp::Cert as sequoia_openpgp::parse::Parse<_>>::from_bytes(
            &BASE64.decode(doc.openpgp.unwrap().as_bytes()).unwrap(),
        )
        .unwrap();
        assert!(inside
            .keys()
            .any(|k| k.key().fingerprint().to_hex() == subkey));
    }
    assert_eq!(info.tls_sha256, req.tls_sha256().unwrap());
    assert!(!s.device_home.join(PENDING_FILE).exists());
    let mode = std::fs::metadata(s.device_home.join(DEVICE_SECRETS_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0);

    // The store takes the record; its share and the device's decrypt mail to the account.
    assert_eq!(s.store.accept(&reply.store_record()).unwrap(), "laptop");
    let (_, store_share) = s
        .store
        .shares_for("alice@example.test", &info.tls_sha256)
        .unwrap()
        .into_iter()
        .next()
        .expect("the store holds the share");
    let secrets = unlock(&s.device_home, None).unwrap();
    let cert = s.admin.openpgp_cert().unwrap();
    let message =
        crate::crypto::openpgp::encrypt(&[b"for the laptop"], std::slice::from_ref(&cert), None)
            .unwrap();
    let subkey = cert
        .keys()
        .subkeys()
        .find(|k| k.key().fingerprint().to_hex() == info.subkey)
        .unwrap()
        .key()
        .clone()
        .role_into_unspecified();
    let plain = recrypt::decrypt_message(
        &message,
        &subkey,
        &secrets.shares[0].1,
        &mut |p| store_share.partial(p).ok(),
        1 << 20,
    )
    .unwrap();
    assert_eq!(&plain[..], b"for the laptop");
    // The same through the device's keys: the store's partial opens it; a partial made
    // with another device's store share does not, and the message is not shown.
    let keys = crate::crypto::decrypt::DecryptionKeys::split(
        cert.clone(),
        unlock(&s.device_home, None).unwrap().shares,
        Vec::new(),
    )
    .unwrap();
    let armored = {
        let mut out = Vec::new();
        crate::crypto::openpgp::encrypt_armored_into(
            &[b"armored"],
            std::slice::from_ref(&cert),
            None,
            &mut out,
        )
        .unwrap();
        out
    };
    let pkesks = crate::store::item::pkesks(&armored);
    assert_eq!(pkesks.len(), 1);
    let good = vec![(0, store_share.partial(&pkesks[0]).unwrap())];
    assert!(keys.split_opens(&pkesks, &good));
    let opened = keys
        .open_openpgp_with(&armored, &[], Some(&good), 1 << 20)
        .unwrap();
    assert_eq!(&opened.plaintext[..], b"armored");
    let scalar = recrypt::extract(
        &recrypt::encryption_subkey(&s.unlocked.openpgp_secret_cert().unwrap()).unwrap(),
    )
    .unwrap();
    let (other_store, _) = scalar.split().unwrap();
    let wrong = vec![(0, other_store.partial(&pkesks[0]).unwrap())];
    assert!(!keys.split_opens(&pkesks, &wrong));
    assert!(keys
        .open_openpgp_with(&armored, &[], Some(&wrong), 1 << 20)
        .is_err());
    assert!(
        keys.open_openpgp(&armored, &[], 1 << 20).is_err(),
        "no partial, no plaintext"
    );
    // The home opens as the account's public side.
    assert_eq!(
        Account::open(&s.device_home).unwrap().address(),
        "alice@example.test"
    );
    // The name is never given again.
    let second = request(&s.device_home.with_extension("2"), None, None).unwrap();
    assert!(add(
        &s.admin,
        &s.unlocked,
        &second,
        &second.code(),
        "laptop",
        &s.info
    )
    .is_err());
}

#[test]
fn a_wrong_code_is_refused_on_either_side_and_nothing_is_written() {
    let s = setup();
    let req = request(&s.device_home, None, None).unwrap();
    let e = add(
        &s.admin,
        &s.unlocked,
        &req,
        "1234-5678-9012",
        "phone",
        &s.info,
    )
    .unwrap_err();
    assert!(e.to_string().contains("code does not match"), "{e}");
    assert!(enrolled(s.admin.home()).unwrap().is_empty());
    let reply = add(&s.admin, &s.unlocked, &req, &req.code(), "phone", &s.info).unwrap();
    let e = import(&s.device_home, &reply, &req.code(), None).unwrap_err();
    assert!(e.to_string().contains("code does not match"), "{e}");
    assert!(!s.device_home.join(DEVICE_FILE).exists());
    // The right code, typed with spaces, works.
    let spaced = reply.code().replace('-', " ");
    import(&s.device_home, &reply, &spaced, None).unwrap();
}

#[test]
fn a_reply_for_another_request_or_not_signed_by_the_account_is_refused() {
    let s = setup();
    let mine = request(&s.device_home, None, None).unwrap();
    let other_home = s.device_home.with_extension("other");
    let other = request(&other_home, None, None).unwrap();
    let reply = add(
        &s.admin,
        &s.unlocked,
        &other,
        &other.code(),
        "tablet",
        &s.info,
    )
    .unwrap();
    let e = import(&s.device_home, &reply, &reply.code(), None).unwrap_err();
    assert!(e.to_string().contains("another request"), "{e}");
    // An attacker's account answering the device's request with its own key: the code the
    // user types is the admin's, which does not match.
    let mallory = Account::create(
        &s.device_home.with_extension("m"),
        "alice@example.test",
        None,
        time::Duration::days(30),
    )
    .unwrap();
    let mallory_unlocked = mallory.unlock(None).unwrap();
    let forged = add(
        &mallory,
        &mallory_unlocked,
        &mine,
        &mine.code(),
        "laptop",
        &s.info,
    )
    .unwrap();
    let genuine = add(
        &s.admin,
        &s.unlocked,
        &mine,
        &mine.code(),
        "laptop",
        &s.info,
    )
    .unwrap();
    assert!(import(&s.device_home, &forged, &genuine.code(), None).is_err());
    // A reply whose signed body was altered fails the signature.
    let mut lines: Vec<String> = genuine.text().lines().map(str::to_owned).collect();
    let mut body: serde_json::Value =
        serde_json::from_slice(&BASE64.decode(lines[1].as_bytes()).unwrap()).unwrap();
    body["device"] = "evil".into();
    lines[1] = BASE64.encode(&serde_json::to_vec(&body).unwrap());
    let altered = DeviceReply::parse(&lines.join("\n")).unwrap();
    let e = import(&s.device_home, &altered, &altered.code(), None).unwrap_err();
    assert!(e.to_string().contains("not signed"), "{e}");
    import(&s.device_home, &genuine, &genuine.code(), None).unwrap();
}

#[test]
fn a_home_with_an_account_or_a_waiting_request_is_not_overwritten() {
    let s = setup();
    assert!(request(s.admin.home(), None, None).is_err());
    request(&s.device_home, None, None).unwrap();
    assert!(request(&s.device_home, None, None).is_err());
    assert!(DeviceRequest::parse("meshmail-device-request-v1\n!!!").is_err());
    assert!(DeviceReply::parse(&"x".repeat(MAX_TEXT + 1)).is_err());
}
