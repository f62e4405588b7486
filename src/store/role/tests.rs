use super::*;
use crate::config::store::StoreAccountConfig;
use crate::keys::device::{self, StoreInfo};
use crate::keys::Account;
use data_encoding::BASE64;

pub(crate) struct Fixture {
    pub _dir: tempfile::TempDir,
    pub role: StoreRole,
    pub admin: Account,
    /// The enrolled laptop's TLS key hash.
    pub tls: String,
    pub public: std::path::PathBuf,
}

/// A store for alice, whose public files are in `public_home`.
fn store_config(shares_dir: std::path::PathBuf, public_home: std::path::PathBuf) -> StoreConfig {
    StoreConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        listen_implicit_tls: None,
        upstream: "127.0.0.1:143".into(),
        upstream_tls: crate::upstream::UpstreamTls::None,
        upstream_ca: None,
        upstream_fingerprint: None,
        shares_dir,
        state_file: None,
        state_key_credential: None,
        audit_dir: None,
        alarm_per_hour: None,
        public_address: None,
        master_user_separator: None,
        accounts: vec![StoreAccountConfig {
            upstream_user: "alice".into(),
            public_home,
        }],
    }
}

/// An account, its public files for the store, and one enrolled device ("laptop").
pub(crate) fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let admin = Account::create(
        &dir.path().join("admin"),
        "alice@example.test",
        None,
        time::Duration::days(30),
    )
    .unwrap();
    let public = dir.path().join("public");
    std::fs::create_dir(&public).unwrap();
    for f in ["account.json", "openpgp.asc"] {
        std::fs::copy(admin.home().join(f), public.join(f)).unwrap();
    }
    let config = store_config(dir.path().join("store/shares"), public.clone());
    let role = StoreRole::open(&config).unwrap();
    let info = StoreInfo {
        address: "127.0.0.1:1993".into(),
        public_key: BASE64.encode(&role.shares().public_key().unwrap()),
        cert_sha256: "00".repeat(32),
    };
    let unlocked = admin.unlock(None).unwrap();
    let home = dir.path().join("laptop");
    let req = device::request(&home, None, None).unwrap();
    let reply = device::add(&admin, &unlocked, &req, &req.code(), "laptop", &info).unwrap();
    device::import(&home, &reply, &reply.code(), None).unwrap();
    role.shares().accept(&reply.store_record()).unwrap();
    Fixture {
        tls: req.tls_sha256().unwrap(),
        _dir: dir,
        role,
        admin,
        public,
    }
}

fn fetch_response(message: &[u8]) -> Vec<u8> {
    let mut r = format!("* 3 FETCH (UID 17 BODY[] {{{}}}\r\n", message.len()).into_bytes();
    r.extend_from_slice(message);
    r.extend_from_slice(b")\r\n");
    r
}

fn pgp_mime(armored: &[u8]) -> Vec<u8> {
    let mut m = b"From: bob@example.test\r\nTo: alice@example.test\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    m.extend_from_slice(armored);
    m.extend_from_slice(b"\r\n--b--\r\n");
    m
}

#[test]
fn a_bound_device_gets_partials_from_the_servers_bytes_and_nothing_else_changes() {
    let f = fixture();
    let binding = f
        .role
        .bind("alice", Some(&f.tls))
        .expect("the laptop is enrolled");
    assert_eq!(binding.device, "laptop");
    let cert = f.admin.openpgp_cert().unwrap();
    let mut armored = Vec::new();
    crate::crypto::openpgp::encrypt_armored_into(&[b"hi"], &[cert], None, &mut armored).unwrap();
    let response = fetch_response(&pgp_mime(&armored));
    let answered = f.role.answer(&binding, "INBOX", response.clone());
    // The server's bytes, the item inserted before the closing parenthesis.
    assert_eq!(
        &answered[..response.len() - 3],
        &response[..response.len() - 3]
    );
    let text = String::from_utf8_lossy(&answered);
    assert!(text.ends_with(")\r\n"));
    match item::parse(&text, "laptop") {
        Some(Answer::Partials(p)) => assert_eq!(p.len(), 1),
        other => panic!("{other:?}"),
    }
    // A response without the message: unchanged.
    let flags = b"* 3 FETCH (UID 17 FLAGS (\\Seen))\r\n".to_vec();
    assert_eq!(f.role.answer(&binding, "INBOX", flags.clone()), flags);
    // Plaintext: a defined answer, no partial.
    let plain = fetch_response(b"Subject: x\r\n\r\nhello\r\n");
    let text = String::from_utf8_lossy(&f.role.answer(&binding, "INBOX", plain)).into_owned();
    assert_eq!(item::parse(&text, "laptop"), Some(Answer::NotForAccount));
    // Each answer is in the device's audit log.
    let log = std::fs::read_to_string(
        f.public
            .parent()
            .unwrap()
            .join("store/audit/alice@example.test/laptop.log"),
    )
    .unwrap();
    assert_eq!(log.lines().count(), 2, "{log}");
}

#[test]
fn no_binding_without_the_pinned_key_for_that_login_and_revocation_stops_an_open_session() {
    let f = fixture();
    assert!(f.role.bind("alice", None).is_none(), "no client key");
    assert!(f.role.bind("alice", Some("AB12")).is_none(), "another key");
    assert!(f.role.bind("bob", Some(&f.tls)).is_none(), "another login");
    assert!(f.role.is_master_login("alice*admin"));
    assert!(!f.role.is_master_login("alice"));
    let binding = f.role.bind("alice", Some(&f.tls)).unwrap();
    let cert = f.admin.openpgp_cert().unwrap();
    let mut armored = Vec::new();
    crate::crypto::openpgp::encrypt_armored_into(&[b"hi"], &[cert], None, &mut armored).unwrap();
    let response = fetch_response(&pgp_mime(&armored));
    assert!(matches!(
        item::parse(
            &String::from_utf8_lossy(&f.role.answer(&binding, "INBOX", response.clone())),
            "laptop"
        ),
        Some(Answer::Partials(_))
    ));
    // Revoked (as `meshmail store revoke` does, from another process): the next message of
    // the open session gets no partial.
    assert!(f
        .role
        .shares()
        .revoke("alice@example.test", "laptop")
        .unwrap());
    let text = String::from_utf8_lossy(&f.role.answer(&binding, "INBOX", response)).into_owned();
    assert_eq!(item::parse(&text, "laptop"), Some(Answer::Revoked));
    assert!(f.role.bind("alice", Some(&f.tls)).is_none());
}

#[test]
fn the_store_refuses_a_public_home_that_holds_the_account_secret() {
    let f = fixture();
    let config = store_config(
        f.public.parent().unwrap().join("other/shares"),
        f.admin.home().to_owned(),
    );
    let e = StoreRole::open(&config).err().expect("refused");
    assert!(e.contains("secrets.json"), "{e}");
}

#[test]
fn after_a_rekey_old_and_new_mail_open_until_the_old_subkey_is_retired() {
    use crate::keys::rekey::{apply_update, rekey};
    let f = fixture();
    let laptop = f.public.parent().unwrap().join("laptop");
    let before = f.admin.openpgp_cert().unwrap();
    let armored = |cert: &sequoia_openpgp::Cert, text: &[u8]| {
        let mut out = Vec::new();
        crate::crypto::openpgp::encrypt_armored_into(
            &[text],
            std::slice::from_ref(cert),
            None,
            &mut out,
        )
        .unwrap();
        out
    };
    let old_mail = armored(&before, b"before the rekey");
    let info = StoreInfo {
        address: "127.0.0.1:1993".into(),
        public_key: BASE64.encode(&f.role.shares().public_key().unwrap()),
        cert_sha256: "00".repeat(32),
    };
    let r = rekey(&f.admin, None, &info).unwrap();
    assert_ne!(r.old, r.new);
    assert_eq!(r.devices.len(), 1, "skipped: {:?}", r.skipped);
    let (name, update, record) = &r.devices[0];
    assert_eq!(name, "laptop");
    assert_eq!(apply_update(&laptop, update, None).unwrap(), r.new);
    // Applied twice: the same share replaced, nothing doubled.
    apply_update(&laptop, update, None).unwrap();
    f.role.shares().accept(record).unwrap();
    // Senders with the new certificate encrypt to the new subkey only (the old is revoked).
    let after = Account::open(f.admin.home())
        .unwrap()
        .openpgp_cert()
        .unwrap();
    let new_mail = armored(&after, b"after the rekey");
    let pkesks = item::pkesks(&pgp_mime(&new_mail));
    assert_eq!(pkesks.len(), 1);
    assert!(
        pkesks[0]
            .recipient()
            .is_some_and(|k| k.to_hex() == r_keyid(&r.new)),
        "{:?} new {} old {}",
        pkesks.iter().map(|p| p.recipient()).collect::<Vec<_>>(),
        r.new,
        r.old
    );
    let secrets = crate::keys::device::unlock(&laptop, None).unwrap();
    assert_eq!(secrets.shares.len(), 2);
    let keys = crate::crypto::decrypt::DecryptionKeys::split(
        Account::open(&laptop).unwrap().openpgp_cert().unwrap(),
        secrets.shares,
        Vec::new(),
    )
    .unwrap();
    let binding = f.role.bind("alice", Some(&f.tls)).unwrap();
    let open = |mail: &[u8]| {
        let answered = f
            .role
            .answer(&binding, "INBOX", fetch_response(&pgp_mime(mail)));
        match item::parse(&String::from_utf8_lossy(&answered), "laptop") {
            Some(Answer::Partials(p)) => keys
                .open_openpgp_with(mail, &[], Some(&p), 1 << 20)
                .ok()
                .map(|o| o.plaintext.to_vec()),
            _ => None,
        }
    };
    assert_eq!(open(&old_mail).as_deref(), Some(&b"before the rekey"[..]));
    assert_eq!(open(&new_mail).as_deref(), Some(&b"after the rekey"[..]));
    // The grace period over: the store retires the old subkey; its record is refused again.
    assert_eq!(
        f.role
            .shares()
            .retire("alice@example.test", &r.old)
            .unwrap(),
        1
    );
    assert_eq!(open(&old_mail), None);
    assert_eq!(open(&new_mail).as_deref(), Some(&b"after the rekey"[..]));
    // An update is only for its device, and only from the account.
    assert!(apply_update(&laptop, &update.replace("v1\n", "v1\nX"), None).is_err());
}

/// The key ID (upper-case hex) of a v4 fingerprint.
fn r_keyid(fingerprint: &str) -> String {
    fingerprint[fingerprint.len() - 16..].to_owned()
}
