//! The store's share records and their lifecycle: accepted, replayed, revoked, restored from a
//! backup.

use super::*;
use crate::crypto::recrypt::AccountScalar;

fn account_key() -> Ed25519KeyPair {
    let pkcs8 = crate::keys::generate::policy_signing_key().unwrap();
    Ed25519KeyPair::from_pkcs8(pkcs8.expose()).unwrap()
}

fn scalar() -> AccountScalar {
    let (cert, _) = crate::keys::generate::openpgp_cert("alice@example.test").unwrap();
    let key = crate::crypto::recrypt::encryption_subkey(&cert).unwrap();
    crate::crypto::recrypt::extract(&key).unwrap()
}

fn payload(device: &str, tls: &str, serial: u64) -> RecordPayload {
    RecordPayload {
        account: "alice@example.test".into(),
        subkey: "ABCDEF".into(),
        device: device.into(),
        device_tls_sha256: tls.into(),
        device_signing_key: String::new(),
        serial,
        sealed_share: String::new(),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: ShareStore,
    shares: std::path::PathBuf,
    key: Ed25519KeyPair,
    public: [u8; 32],
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let key = account_key();
    let shares = dir.path().join("shares");
    let store = ShareStore::open(
        &dir.path().join("state.json"),
        &shares,
        vec![("alice@example.test".into(), pin_of(&key))],
    )
    .unwrap();
    let public = store.public_key().unwrap();
    Fixture {
        _dir: dir,
        store,
        shares,
        key,
        public,
    }
}

#[test]
fn a_record_is_accepted_once_and_its_share_is_found_by_the_device_tls_key() {
    let f = fixture();
    let m = scalar();
    let (s1, _) = m.split().unwrap();
    let r1 = ShareRecord::make(&f.key, &f.public, payload("laptop", "AA11", 1), &s1).unwrap();
    assert_eq!(f.store.accept(&r1).unwrap(), "laptop");
    let (device, share) = f
        .store
        .shares_for("alice@example.test", "AA11")
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    assert_eq!(device.device, "laptop");
    assert_eq!(*share.to_bytes(), *s1.to_bytes());
    assert!(
        f.store
            .shares_for("alice@example.test", "BB22")
            .unwrap()
            .into_iter()
            .next()
            .is_none(),
        "another TLS key"
    );
    // Replayed, or an older serial: refused.
    assert_eq!(
        f.store.accept(&r1),
        Err(ShareError::Stale("laptop".into(), 1))
    );
    let (s1b, _) = m.split().unwrap();
    let newer = ShareRecord::make(&f.key, &f.public, payload("laptop", "AA11", 2), &s1b).unwrap();
    f.store.accept(&newer).unwrap();
    let (_, share) = f
        .store
        .shares_for("alice@example.test", "AA11")
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    assert_eq!(*share.to_bytes(), *s1b.to_bytes());
    // Shares at rest: private files, never the share in the clear.
    let file = std::fs::read_dir(f.shares.join("alice@example.test"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(!text.contains(&BASE64.encode(&s1b.to_bytes()[..])));
}

#[test]
fn records_not_signed_by_the_pinned_account_key_or_for_another_store_are_refused() {
    let f = fixture();
    let (s, _) = scalar().split().unwrap();
    let stranger = account_key();
    let forged = ShareRecord::make(&stranger, &f.public, payload("laptop", "AA11", 1), &s).unwrap();
    assert_eq!(
        f.store.accept(&forged),
        Err(ShareError::BadSignature("alice@example.test".into()))
    );
    let mut other = payload("laptop", "AA11", 1);
    other.account = "bob@example.test".into();
    let r = ShareRecord::make(&f.key, &f.public, other, &s).unwrap();
    assert_eq!(
        f.store.accept(&r),
        Err(ShareError::UnknownAccount("bob@example.test".into()))
    );
    let elsewhere = fixture();
    let r = ShareRecord::make(&f.key, &elsewhere.public, payload("laptop", "AA11", 1), &s).unwrap();
    assert_eq!(f.store.accept(&r), Err(ShareError::OtherStore));
    // The device's TLS key hash changed after signing: the signature no longer holds.
    let good = ShareRecord::make(&f.key, &f.public, payload("laptop", "AA11", 1), &s).unwrap();
    let (mut p, _, sig) = good.parts().unwrap();
    p.device_tls_sha256 = "EVIL".into();
    let json = serde_json::to_vec(&p).unwrap();
    let tampered = ShareRecord(format!(
        "{RECORD_TAG}\n{}\n{}",
        BASE64.encode(&json),
        BASE64.encode(&sig)
    ));
    assert!(matches!(
        f.store.accept(&tampered),
        Err(ShareError::BadSignature(_))
    ));
    assert_eq!(
        f.store.accept(&ShareRecord::from_text("hello")),
        Err(ShareError::NotARecord)
    );
}

#[test]
fn a_revoked_device_stays_revoked_even_after_a_backup_of_the_shares_is_restored() {
    let f = fixture();
    let m = scalar();
    let (s1, _) = m.split().unwrap();
    let (s2, _) = m.split().unwrap();
    let r1 = ShareRecord::make(&f.key, &f.public, payload("tablet", "AA11", 1), &s1).unwrap();
    let r2 = ShareRecord::make(&f.key, &f.public, payload("phone", "BB22", 2), &s2).unwrap();
    f.store.accept(&r1).unwrap();
    f.store.accept(&r2).unwrap();
    let backup = f.shares.with_extension("backup");
    copy_dir(&f.shares, &backup);

    assert!(f.store.revoke("alice@example.test", "tablet").unwrap());
    assert!(f
        .store
        .shares_for("alice@example.test", "AA11")
        .unwrap()
        .into_iter()
        .next()
        .is_none());
    let (_, phone) = f
        .store
        .shares_for("alice@example.test", "BB22")
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    assert_eq!(
        *phone.to_bytes(),
        *s2.to_bytes(),
        "the other device keeps working"
    );
    let listed: Vec<String> = f
        .store
        .devices("alice@example.test")
        .unwrap()
        .into_iter()
        .map(|p| p.device)
        .collect();
    assert_eq!(listed, vec!["phone".to_string()]);
    // The old record replayed, or a fresh one for the same device or TLS key: refused.
    assert_eq!(
        f.store.accept(&r1),
        Err(ShareError::Revoked("tablet".into()))
    );
    let (s1c, _) = m.split().unwrap();
    let again = ShareRecord::make(&f.key, &f.public, payload("tablet", "AA11", 9), &s1c).unwrap();
    assert_eq!(
        f.store.accept(&again),
        Err(ShareError::Revoked("tablet".into()))
    );

    // The share directory restored from the backup taken before the revocation.
    std::fs::remove_dir_all(&f.shares).unwrap();
    copy_dir(&backup, &f.shares);
    assert!(
        f.store
            .shares_for("alice@example.test", "AA11")
            .unwrap()
            .into_iter()
            .next()
            .is_none(),
        "an old generation's share does not open"
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn a_revocation_signed_by_the_account_or_a_remaining_device_is_applied_and_no_other() {
    let f = fixture();
    let m = scalar();
    let phone_key = account_key();
    let tablet_key = account_key();
    for (name, tls, key, serial) in [
        ("phone", "AA11", &phone_key, 1),
        ("tablet", "BB22", &tablet_key, 2),
        ("laptop", "CC33", &account_key(), 3),
    ] {
        let mut p = payload(name, tls, serial);
        p.device_signing_key = BASE64.encode(&pin_of(key));
        let (s, _) = m.split().unwrap();
        f.store
            .accept(&ShareRecord::make(&f.key, &f.public, p, &s).unwrap())
            .unwrap();
    }
    // The phone (remaining) revokes the lost tablet.
    let by_phone = make_revocation(&phone_key, "alice@example.test", "tablet", "phone").unwrap();
    assert_eq!(f.store.revoke_signed(&by_phone).unwrap(), "tablet");
    assert!(f
        .store
        .shares_for("alice@example.test", "BB22")
        .unwrap()
        .into_iter()
        .next()
        .is_none());
    // The revoked tablet cannot revoke anyone any more.
    let by_tablet = make_revocation(&tablet_key, "alice@example.test", "phone", "tablet").unwrap();
    assert!(matches!(
        f.store.revoke_signed(&by_tablet),
        Err(ShareError::Revoked(_))
    ));
    // A key that is not the named device's, or not the account's, is refused.
    let forged = make_revocation(&account_key(), "alice@example.test", "phone", "laptop").unwrap();
    assert!(matches!(
        f.store.revoke_signed(&forged),
        Err(ShareError::BadSignature(_))
    ));
    let forged = make_revocation(&account_key(), "alice@example.test", "phone", "").unwrap();
    assert!(matches!(
        f.store.revoke_signed(&forged),
        Err(ShareError::BadSignature(_))
    ));
    assert!(f
        .store
        .shares_for("alice@example.test", "AA11")
        .unwrap()
        .into_iter()
        .next()
        .is_some());
    // The account's own key revokes any device.
    let by_account = make_revocation(&f.key, "alice@example.test", "phone", "").unwrap();
    assert_eq!(f.store.revoke_signed(&by_account).unwrap(), "phone");
    assert!(f.store.revoke_signed("not a revocation").is_err());
}

#[test]
fn a_state_file_sealed_under_a_state_key_opens_with_that_key_only() {
    let dir = tempfile::tempdir().unwrap();
    let key = account_key();
    let state = dir.path().join("state.json");
    let shares = dir.path().join("shares");
    let pins = vec![("alice@example.test".to_string(), pin_of(&key))];
    // A store that ran without a state key: its state file is plain JSON.
    let plain = ShareStore::open(&state, &shares, pins.clone()).unwrap();
    let public = plain.public_key().unwrap();
    let (s1, _) = scalar().split().unwrap();
    let record = ShareRecord::make(&key, &public, payload("laptop", "AA11", 1), &s1).unwrap();
    plain.accept(&record).unwrap();
    assert!(std::fs::read_to_string(&state)
        .unwrap()
        .contains("\"master\""));

    // Given a state key, the file is sealed at once; the keys and shares are the same.
    let sealed =
        ShareStore::open_sealed(&state, &shares, pins.clone(), Some(Secret::new([3u8; 32])))
            .unwrap();
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(
        text.starts_with("{\"sealed\":") && !text.contains("master"),
        "{text}"
    );
    assert_eq!(sealed.public_key().unwrap(), public);
    assert_eq!(
        sealed
            .shares_for("alice@example.test", "AA11")
            .unwrap()
            .len(),
        1
    );
    // A revocation under the sealed state stays sealed.
    sealed.revoke("alice@example.test", "laptop").unwrap();
    assert!(std::fs::read_to_string(&state)
        .unwrap()
        .starts_with("{\"sealed\":"));

    // Another key, or none, opens nothing (and writes nothing).
    let other =
        ShareStore::open_sealed(&state, &shares, pins.clone(), Some(Secret::new([4u8; 32])))
            .unwrap();
    assert!(other.public_key().is_err());
    let none = ShareStore::open(&state, &shares, pins).unwrap();
    let refused = none.public_key().unwrap_err().to_string();
    assert!(refused.contains("state_key_credential"), "{refused}");
    assert!(std::fs::read_to_string(&state)
        .unwrap()
        .starts_with("{\"sealed\":"));
}
