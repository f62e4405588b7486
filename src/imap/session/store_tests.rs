//! The session core in the store role: a device bound by its pinned key, the private item
//! stripped upstream and answered, refused elsewhere; logins a device never needs refused.

use super::core::{Core, Out};
use super::tests::{tag_of, upstream};
use std::sync::Arc;

fn store_core(role: crate::store::role::StoreRole, client_key: Option<&str>) -> Core {
    let ctx = super::fuzz::store_context(Arc::new(role));
    let caps = [
        "IMAP4rev1",
        "AUTH=PLAIN",
        "SASL-IR",
        "BINARY",
        "COMPRESS=DEFLATE",
        "IDLE",
    ]
    .map(String::from)
    .to_vec();
    let mut core = Core::new(ctx, "test".into(), caps, true, true);
    core.client_key = client_key.map(str::to_owned);
    core
}

fn client(core: &mut Core) -> String {
    let mut out = String::new();
    while let Some(item) = core.out.pop_front() {
        match item {
            Out::Bytes(b) | Out::FetchDone(b) | Out::Close(b) => {
                out.push_str(&String::from_utf8_lossy(&b))
            }
            Out::Recrypt(job) => {
                // What the task does on a blocking thread.
                let answered = job.role.answer(&job.device, &job.mailbox, job.response);
                out.push_str(&String::from_utf8_lossy(&answered));
            }
            _ => out.push_str("<other>"),
        }
    }
    out
}

fn login(core: &mut Core, user: &str) -> String {
    core.on_client_bytes(format!("a LOGIN \"{user}\" pw\r\n").as_bytes());
    let up = upstream(core);
    if !up.is_empty() {
        core.on_upstream_bytes(format!("{} OK Logged in\r\n", tag_of(&up)).as_bytes());
    }
    client(core)
}

#[test]
fn an_enrolled_device_gets_partials_and_the_item_never_goes_upstream() {
    let f = crate::store::role::tests::fixture();
    let tls = f.tls.clone();
    let cert = f.admin.openpgp_cert().unwrap();
    let mut c = store_core(f.role, Some(&tls));
    assert_eq!(login(&mut c, "alice"), "a OK Logged in\r\n");
    assert_eq!(c.state.device().map(|d| d.device.as_str()), Some("laptop"));
    // Nothing that would change how a message is carried.
    let caps = c.capabilities().join(" ");
    assert!(
        !caps.contains("BINARY") && !caps.contains("COMPRESS"),
        "{caps}"
    );
    c.on_client_bytes(b"s SELECT INBOX\r\n");
    let tag = tag_of(&upstream(&mut c));
    c.on_upstream_bytes(format!("* OK [UIDVALIDITY 5] x\r\n{tag} OK done\r\n").as_bytes());
    client(&mut c);
    c.on_client_bytes(b"f UID FETCH 3 (BODY.PEEK[] X-MESH-RECRYPT)\r\n");
    let up = upstream(&mut c);
    assert!(up.ends_with(" UID FETCH 3 (BODY.PEEK[])\r\n"), "{up}");
    let mut armored = Vec::new();
    crate::crypto::openpgp::encrypt_armored_into(&[b"x"], &[cert], None, &mut armored).unwrap();
    let mut message = b"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    message.extend_from_slice(&armored);
    message.extend_from_slice(b"\r\n--b--\r\n");
    let mut response = format!("* 1 FETCH (UID 3 BODY[] {{{}}}\r\n", message.len()).into_bytes();
    response.extend_from_slice(&message);
    response.extend_from_slice(format!(")\r\n{} OK done\r\n", tag_of(&up)).as_bytes());
    c.on_upstream_bytes(&response);
    let answered = client(&mut c);
    assert!(
        answered.contains("--b--\r\n X-MESH-RECRYPT ((\"laptop\" 0 \""),
        "{answered}"
    );
    assert!(answered.ends_with("f OK done\r\n"), "{answered}");
    // A FETCH without the item is relayed untouched.
    c.on_client_bytes(b"g UID FETCH 3 (FLAGS)\r\n");
    let up = upstream(&mut c);
    c.on_upstream_bytes(
        format!(
            "* 1 FETCH (UID 3 FLAGS (\\Seen))\r\n{} OK done\r\n",
            tag_of(&up)
        )
        .as_bytes(),
    );
    assert_eq!(
        client(&mut c),
        "* 1 FETCH (UID 3 FLAGS (\\Seen))\r\ng OK done\r\n"
    );
}

#[test]
fn without_an_enrolled_key_the_item_is_refused_and_nothing_reaches_the_server() {
    let f = crate::store::role::tests::fixture();
    for key in [None, Some("AB12")] {
        let f2 = crate::store::role::tests::fixture();
        let mut c = store_core(f2.role, key);
        assert_eq!(login(&mut c, "alice"), "a OK Logged in\r\n");
        assert!(c.state.device().is_none());
        c.on_client_bytes(b"f UID FETCH 3 (BODY.PEEK[] X-MESH-RECRYPT)\r\nn NOOP\r\n");
        let up = upstream(&mut c);
        assert!(!up.contains("FETCH") && up.ends_with(" NOOP\r\n"), "{up}");
        assert!(client(&mut c).starts_with("f NO [NOPERM]"));
    }
    // The enrolled key, but another login: not bound.
    let tls = f.tls.clone();
    let mut c = store_core(f.role, Some(&tls));
    assert_eq!(login(&mut c, "bob"), "a OK Logged in\r\n");
    assert!(c.state.device().is_none());
}

#[test]
fn a_device_connection_refuses_master_user_and_foreign_authzid_logins() {
    let f = crate::store::role::tests::fixture();
    let tls = f.tls.clone();
    let mut c = store_core(f.role, Some(&tls));
    let answer = login(&mut c, "alice*admin");
    assert!(answer.starts_with("a NO [AUTHORIZATIONFAILED]"), "{answer}");
    // PLAIN with authzid alice, authcid admin.
    let ir = data_encoding::BASE64.encode(b"alice\0admin\0pw");
    c.on_client_bytes(format!("b AUTHENTICATE PLAIN {ir}\r\n").as_bytes());
    assert!(upstream(&mut c).is_empty());
    assert!(client(&mut c).starts_with("b NO [AUTHORIZATIONFAILED]"));
    // A plain client (no key) is relayed as it is: the server judges.
    let f2 = crate::store::role::tests::fixture();
    let mut plain = store_core(f2.role, None);
    plain.on_client_bytes(b"a LOGIN \"alice*admin\" pw\r\n");
    assert!(upstream(&mut plain).ends_with(" LOGIN \"alice*admin\" pw\r\n"));
}
