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
                let job = *job;
                let answered = match job.streamed {
                    Some(start) => {
                        let item =
                            job.role
                                .item_for(&job.device, &job.mailbox, start.uid, &start.prefix);
                        start.item.send(item).unwrap();
                        job.response
                    }
                    None => job.role.answer(&job.device, &job.mailbox, job.response),
                };
                out.push_str(&String::from_utf8_lossy(&answered));
            }
            Out::RecryptTail(bytes, mut item) => {
                let item = item.try_recv().expect("the start's item first");
                let answered = crate::store::role::insert_item(bytes, &item);
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

/// A PGP/MIME message (one text part) encrypted to `cert`.
fn pgp_mime_to(cert: sequoia_openpgp::Cert) -> Vec<u8> {
    let mut armored = Vec::new();
    crate::crypto::openpgp::encrypt_armored_into(&[b"x"], &[cert], None, &mut armored).unwrap();
    let mut message = b"Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n".to_vec();
    message.extend_from_slice(&armored);
    message.extend_from_slice(b"\r\n--b--\r\n");
    message
}

/// The laptop's session at the store, logged in as alice with INBOX selected; Alice's
/// certificate; and the store's directory (the shares live there: keep it).
fn device_in_inbox() -> (Core, sequoia_openpgp::Cert, tempfile::TempDir) {
    let f = crate::store::role::tests::fixture();
    let cert = f.admin.openpgp_cert().unwrap();
    let mut c = store_core(f.role, Some(&f.tls));
    assert_eq!(login(&mut c, "alice"), "a OK Logged in\r\n");
    c.on_client_bytes(b"s SELECT INBOX\r\n");
    let tag = tag_of(&upstream(&mut c));
    c.on_upstream_bytes(format!("* OK [UIDVALIDITY 5] x\r\n{tag} OK done\r\n").as_bytes());
    client(&mut c);
    (c, cert, f._dir)
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
    let message = pgp_mime_to(cert);
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
fn a_large_message_streams_through_the_store_with_the_same_partials() {
    let (mut c, cert, _store) = device_in_inbox();
    c.on_client_bytes(b"f UID FETCH 3 (BODY.PEEK[] X-MESH-RECRYPT)\r\n");
    let up = upstream(&mut c);
    // A message of 1 MiB: its armour first, then a large epilogue.
    let mut message = pgp_mime_to(cert);
    while message.len() < 1 << 20 {
        message.extend_from_slice(b"epilogue {5}\r\n) BODY[] X-MESH-RECRYPT\r\n");
    }
    let mut response = format!("* 1 FETCH (UID 3 BODY[] {{{}}}\r\n", message.len()).into_bytes();
    response.extend_from_slice(&message);
    response.extend_from_slice(b" FLAGS ())\r\n");
    // Answered whole, as a small message is: what the streamed answer must equal.
    let whole = {
        let role = c.ctx.store.clone().unwrap();
        let binding = c.state.device().cloned().unwrap();
        let r = role.answer(&binding, "INBOX", response.clone());
        String::from_utf8_lossy(&r).into_owned()
    };
    assert!(
        whole.contains(" FLAGS () X-MESH-RECRYPT ((\"laptop\" 0 \""),
        "{}",
        &whole[whole.len() - 300..]
    );
    let mut streamed = String::new();
    let mut written_before_the_end = 0;
    for (i, chunk) in response.chunks(64 * 1024).enumerate() {
        c.on_upstream_bytes(chunk);
        streamed.push_str(&client(&mut c));
        if i == 8 {
            written_before_the_end = streamed.len();
        }
    }
    // Past the partials' prefix, the message goes on to the client before it has all come.
    assert!(
        written_before_the_end > crate::store::item::PREFIX,
        "{written_before_the_end}"
    );
    c.on_upstream_bytes(format!("{} OK done\r\n", tag_of(&up)).as_bytes());
    streamed.push_str(&client(&mut c));
    // Byte for byte what the whole answer is, partials included.
    assert!(
        streamed == format!("{whole}f OK done\r\n"),
        "the streamed answer differs"
    );
}

#[test]
fn a_fetch_with_the_item_sent_while_another_message_streams_leaves_that_message_alone() {
    let (mut c, _, _store) = device_in_inbox();
    c.on_client_bytes(b"g UID FETCH 4 (BODY.PEEK[])\r\n");
    let g = tag_of(&upstream(&mut c));
    // A sender's message whose bytes, cut where the network cuts them, end like the start of
    // a FETCH response with a message literal.
    let mut message = b"Subject: bait\r\n\r\n".to_vec();
    message.resize(100_000, b'x');
    let flip = message.len();
    message.resize(200_000, b'x');
    message.extend_from_slice(b" BODY[] {300000}\r\n");
    let bait = message.len();
    message.resize(500_000, b'y');
    let mut response = format!("* 2 FETCH (UID 4 BODY[] {{{}}}\r\n", message.len()).into_bytes();
    let head = response.len();
    response.extend_from_slice(&message);
    response.extend_from_slice(format!(")\r\n{g} OK done\r\n").as_bytes());
    c.on_upstream_bytes(&response[..head + flip]);
    // The device asks for a message with its partials meanwhile.
    c.on_client_bytes(b"f UID FETCH 3 (BODY.PEEK[] X-MESH-RECRYPT)\r\n");
    assert!(upstream(&mut c).contains("UID FETCH 3"));
    assert!(c.tags.recrypting());
    c.on_upstream_bytes(&response[head + flip..head + bait]);
    c.on_upstream_bytes(&response[head + bait..]);
    let mut written = Vec::new();
    while let Some(out) = c.out.pop_front() {
        match out {
            Out::Bytes(b) | Out::FetchDone(b) => written.extend_from_slice(&b),
            _ => panic!("the streamed message was taken for one to answer"),
        }
    }
    // The server's bytes as they came, the tagged line under the client's tag.
    let fetch_end = response.len() - format!("{g} OK done\r\n").len();
    assert!(
        written[..fetch_end] == response[..fetch_end],
        "the message arrived changed"
    );
    assert_eq!(&written[fetch_end..], b"g OK done\r\n");
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

/// A device's session at the store after SELECT.
fn selected_device() -> Core {
    let f = crate::store::role::tests::fixture();
    let tls = f.tls.clone();
    let mut c = store_core(f.role, Some(&tls));
    assert_eq!(login(&mut c, "alice"), "a OK Logged in\r\n");
    c.on_client_bytes(b"s SELECT INBOX\r\n");
    let tag = tag_of(&upstream(&mut c));
    c.on_upstream_bytes(format!("* OK [UIDVALIDITY 5] x\r\n{tag} OK done\r\n").as_bytes());
    client(&mut c);
    c
}

#[test]
fn the_item_in_any_other_form_never_reaches_the_server() {
    let disguised: [&[u8]; 6] = [
        // Asked for twice.
        b"f UID FETCH 3 (BODY.PEEK[] X-MESH-RECRYPT X-MESH-RECRYPT)\r\n",
        // A tab where the strip looks for a space.
        b"f UID FETCH 3 (BODY.PEEK[]\tX-MESH-RECRYPT)\r\n",
        // Bytes that are not UTF-8 on the same line.
        b"f UID FETCH 3 (BODY.PEEK[] X-MESH-RECRYPT) \xff\r\n",
        // Glued to another word.
        b"f UID FETCH 3 (BODY.PEEK[]X-MESH-RECRYPT)\r\n",
        // A tab inside the command name: stripped like a FETCH, and the server refuses it.
        b"f UID\tFETCH 3 (BODY.PEEK[] X-MESH-RECRYPT) x\r\n",
        // Lower case, inside a header list.
        b"f UID FETCH 3 (BODY.PEEK[HEADER.FIELDS (x-mesh-recrypt)] X-MESH-RECRYPT)\r\n",
    ];
    for line in disguised {
        let mut c = selected_device();
        c.on_client_bytes(line);
        c.on_client_bytes(b"n NOOP\r\n");
        let up = upstream(&mut c);
        assert!(
            !crate::store::item::mentions(up.as_bytes()),
            "{}: {up}",
            String::from_utf8_lossy(line)
        );
        assert!(up.ends_with(" NOOP\r\n"), "{up}");
        let answer = client(&mut c);
        if !line.starts_with(b"f UID\t") {
            assert!(answer.starts_with("f BAD "), "{answer:?}");
        }
    }
    // After a literal, on a later line of the same FETCH: the name is overwritten.
    let mut c = selected_device();
    c.on_client_bytes(b"f UID FETCH 3 (BODY.PEEK[HEADER.FIELDS ({3+}\r\nFOO)] X-MESH-RECRYPT)\r\n");
    let up = upstream(&mut c);
    assert!(!crate::store::item::mentions(up.as_bytes()), "{up}");
    assert!(up.contains("FOO)] X-MESH-REFUSED)\r\n"), "{up}");
    // An APPEND's literal is the message: it goes as the client wrote it.
    let mut c = selected_device();
    c.on_client_bytes(b"p APPEND INBOX {16+}\r\nX-MESH-RECRYPT\r\n\r\n");
    let up = upstream(&mut c);
    assert!(up.contains("{16+}\r\nX-MESH-RECRYPT\r\n"), "{up:?}");
}

#[test]
fn a_sasl_exchange_without_initial_response_is_cancelled_for_a_foreign_identity() {
    for (response, refused) in [
        (&b"alice\0admin\0pw"[..], true),
        (&b"\0alice*admin\0pw"[..], true),
        (&b"\0alice\0pw"[..], false),
    ] {
        let f = crate::store::role::tests::fixture();
        let tls = f.tls.clone();
        let mut c = store_core(f.role, Some(&tls));
        c.on_client_bytes(b"b AUTHENTICATE PLAIN\r\n");
        let up = upstream(&mut c);
        assert!(up.ends_with(" AUTHENTICATE PLAIN\r\n"), "{up}");
        let tag = tag_of(&up);
        c.on_upstream_bytes(b"+ \r\n");
        assert_eq!(client(&mut c), "+ \r\n");
        let line = format!("{}\r\n", data_encoding::BASE64.encode(response));
        c.on_client_bytes(line.as_bytes());
        let sent = upstream(&mut c);
        if refused {
            // The response never reaches the server: the exchange is cancelled.
            assert_eq!(sent, "*\r\n");
            c.on_upstream_bytes(
                format!("{tag} BAD Authentication aborted by client\r\n").as_bytes(),
            );
            let answer = client(&mut c);
            assert!(answer.starts_with("b NO [AUTHORIZATIONFAILED]"), "{answer}");
            assert!(!c.state.is_authenticated());
        } else {
            assert_eq!(sent, line);
            c.on_upstream_bytes(format!("{tag} OK Logged in\r\n").as_bytes());
            assert_eq!(client(&mut c), "b OK Logged in\r\n");
            assert_eq!(c.state.device().map(|d| d.device.as_str()), Some("laptop"));
        }
    }
}
