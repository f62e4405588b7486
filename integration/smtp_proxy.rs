//! The SMTP proxy against real servers: swaks, msmtp and Python's smtplib send through meshmail
//! to a real Postfix (submission, AUTH via Dovecot) that delivers to a real Dovecot, while a
//! real NSD serves the recipients' published policies. What lands is judged by gpg and openssl.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::gpg::{encryption_key_ids, pgp_recipients, smime_decrypt, Gpg};
use common::mail::{pgp_part, swaks, MailServers, Meshmail};
use common::*;
use std::process::Command;

/// Servers, accounts, DNS and meshmail in front, for one test.
struct World {
    root: tempfile::TempDir,
    servers: MailServers,
    nsd: Nsd,
    meshmail: Meshmail,
    /// The sender; its upstream login `alice` is mapped to this account.
    alice: TestAccount,
    /// UDF address, PGP/MIME policy.
    bob: TestAccount,
    /// UDF address, S/MIME policy.
    carol: TestAccount,
    /// OpenPGP-fingerprint address (OPENPGPKEY in DNS).
    dave: TestAccount,
    /// UDF address, PGP/MIME: the Bcc recipient.
    erin: TestAccount,
}

fn world() -> World {
    world_with(|_, _| Vec::new(), "")
}

/// A world whose zone also holds what `extra_zone` returns (given the root and Bob's account)
/// and whose configuration ends with `extra_config`.
fn world_with(
    extra_zone: impl Fn(&std::path::Path, &TestAccount) -> Vec<String>,
    extra_config: &str,
) -> World {
    let root = tempdir();
    let servers = MailServers::start();
    let alice = init_account(root.path(), "alice@example.test");
    let bob = init_account(root.path(), "bob@example.test");
    let carol = init_account(root.path(), "carol@example.test");
    run(meshmail(&carol.home).args(["policy", "renew", "--formats", "smime"])).ok();
    let dave = init_account(root.path(), "dave@example.test");
    let erin = init_account(root.path(), "erin@example.test");
    let mut zone = Vec::new();
    for (who, kinds) in [
        (&bob, &[" TXT "][..]),
        (&carol, &[" TXT "]),
        (&dave, &[" OPENPGPKEY "]),
        (&erin, &[" TXT "]),
    ] {
        let lines = publish(who, &root.path().join(format!("pub-{}", who.address)));
        zone.extend(
            lines
                .into_iter()
                .filter(|l| kinds.iter().any(|k| l.contains(k))),
        );
    }
    zone.extend(extra_zone(root.path(), &bob));
    let nsd = Nsd::start(&[("example.test", zone)]);
    let mut config = format!(
        "home = \"{home}\"\nupstream_user = \"alice\"\n[smtp]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"127.0.0.1:{sub}\"\nupstream_tls = \"starttls\"\nupstream_ca = \"{ca}\"\n[policy]\ndns = \"{dns}\"\ntimeout_secs = 2\n",
        home = alice.home.display(),
        sub = servers.submission(),
        ca = servers.ca_pem().display(),
        dns = nsd.addr(),
    );
    config.push_str(extra_config);
    let meshmail = Meshmail::start(&config);
    World {
        root,
        servers,
        nsd,
        meshmail,
        alice,
        bob,
        carol,
        dave,
        erin,
    }
}

impl World {
    /// A GnuPG home with `who`'s secret key and the sender's public key.
    fn gpg(&self, who: &TestAccount) -> Gpg {
        let g = Gpg::with_secret_of(
            &who.home,
            self.root.path().join(format!("gpg-{}", who.address)),
        );
        g.import_public(&self.alice.home);
        g
    }
}

/// Asserts that `copy` is a PGP/MIME message whose outer headers do not carry `subject`, that
/// `reader` decrypts it to a text with `subject` and `body`, and returns the key IDs it is
/// encrypted to.
fn assert_pgp_copy(copy: &[u8], reader: &Gpg, subject: &str, body: &str) -> Vec<String> {
    let text = String::from_utf8_lossy(copy);
    assert!(text.contains("multipart/encrypted"), "not PGP/MIME: {text}");
    assert!(
        !text.contains(subject),
        "the Subject is in the clear: {text}"
    );
    assert!(!text.contains(body), "the body is in the clear");
    assert!(text.contains("Subject: [...]"), "{text}");
    let armored = pgp_part(copy);
    let out = reader.decrypt(&armored);
    assert_eq!(out.code, 0, "gpg cannot decrypt: {out:#?}");
    assert!(
        out.stdout.contains(&format!("Subject: {subject}")),
        "{out:#?}"
    );
    assert!(out.stdout.contains(body), "{out:#?}");
    assert!(out.stdout.contains("protected-headers=\"v1\""), "{out:#?}");
    // The mapped sender's key signs.
    assert!(
        out.stderr
            .contains("Good signature from \"alice@example.test\""),
        "{out:#?}"
    );
    pgp_recipients(&armored)
}

#[test]
fn each_kind_of_recipient_gets_what_its_policy_demands() {
    let w = world();
    let port = w.meshmail.port;

    // swaks → Bob's UDF address (PGP/MIME).
    let r = swaks(
        port,
        "alice",
        "secret",
        &w.bob.strong,
        &[
            "--header",
            "Subject: plans for bob",
            "--body",
            "the eagle lands",
        ],
    );
    assert!(r.stdout.contains("250 2.0.0 Message accepted"), "{r:#?}");
    // msmtp → Dave's OpenPGP-fingerprint address.
    let msg = format!(
        "From: alice@example.test\r\nTo: {}\r\nSubject: plans for dave\r\n\r\nthe fox runs\r\n",
        w.dave.openpgp_address
    );
    let msmtp = run(Command::new("sh").arg("-c").arg(format!(
        "printf '%s' \"$MSG\" | msmtp --host=127.0.0.1 --port={port} --auth=plain --user=alice --passwordeval='echo secret' --tls=off --from=alice@example.test '{}'",
        w.dave.openpgp_address
    )).env("MSG", &msg));
    assert_eq!(msmtp.code, 0, "{msmtp:#?}");
    // Python smtplib → Carol's S/MIME address, and a plain address (no key anywhere).
    let py = format!(
        r#"
import smtplib
from email.message import EmailMessage
s = smtplib.SMTP("127.0.0.1", {port})
s.login("alice", "secret")
m = EmailMessage(); m["From"] = "alice@example.test"; m["To"] = "{carol}"; m["Subject"] = "plans for carol"
m.set_content("the owl hoots")
s.send_message(m)
m = EmailMessage(); m["From"] = "alice@example.test"; m["To"] = "frank@example.test"; m["Subject"] = "hello frank"
m.set_content("plain words")
s.send_message(m)
s.quit()
"#,
        carol = w.carol.strong
    );
    run(Command::new("python3").arg("-c").arg(&py)).ok();

    let alice_keys = encryption_key_ids(&w.alice.home);
    let bob_copy = w.servers.wait_for_inbox("bob", 1);
    assert_eq!(bob_copy.len(), 1, "{}", w.servers.postfix_log());
    let to = assert_pgp_copy(
        &bob_copy[0],
        &w.gpg(&w.bob),
        "plans for bob",
        "the eagle lands",
    );
    let mut want = encryption_key_ids(&w.bob.home);
    want.extend(alice_keys.clone()); // self-encryption for the mapped sender
    want.sort();
    let mut got = to.clone();
    got.sort();
    assert_eq!(got, want, "encrypted to exactly Bob and the sender");

    let dave_copy = w.servers.wait_for_inbox("dave", 1);
    assert_eq!(dave_copy.len(), 1);
    assert_pgp_copy(
        &dave_copy[0],
        &w.gpg(&w.dave),
        "plans for dave",
        "the fox runs",
    );
    // Another account's key cannot read it.
    assert_ne!(w.gpg(&w.bob).decrypt(&pgp_part(&dave_copy[0])).code, 0);

    let carol_copy = w.servers.wait_for_inbox("carol", 1);
    assert_eq!(carol_copy.len(), 1);
    let text = String::from_utf8_lossy(&carol_copy[0]);
    assert!(
        text.contains("application/pkcs7-mime; smime-type=enveloped-data"),
        "{text}"
    );
    assert!(!text.contains("plans for carol"), "Subject in the clear");
    let dec = smime_decrypt(&w.carol.home, &carol_copy[0], &w.root.path().join("smime"));
    assert_eq!(dec.code, 0, "{dec:#?}");
    assert!(
        dec.stdout.contains("Subject: plans for carol") && dec.stdout.contains("the owl hoots"),
        "{dec:#?}"
    );
    assert_ne!(
        smime_decrypt(
            &w.bob.home,
            &carol_copy[0],
            &w.root.path().join("smime-bob")
        )
        .code,
        0
    );

    let frank = w.servers.wait_for_inbox("frank", 1);
    assert_eq!(frank.len(), 1);
    let text = String::from_utf8_lossy(&frank[0]);
    assert!(
        text.contains("Subject: hello frank") && text.contains("plain words"),
        "plain stays plain"
    );

    // DSN parameters go upstream, ORCPT carrying the strong address as written: Postfix's
    // success notice to the sender names it as the Original-Recipient.
    let py = format!(
        "import smtplib\ns = smtplib.SMTP('127.0.0.1', {port}); s.login('alice', 'secret')\ns.sendmail('alice@example.test', ['{bob}'], 'Subject: dsn\\r\\n\\r\\nx\\r\\n', rcpt_options=['NOTIFY=SUCCESS'])",
        bob = w.bob.strong
    );
    run(Command::new("python3").arg("-c").arg(&py)).ok();
    let notice = w.servers.wait_for_inbox("alice", 1);
    assert_eq!(notice.len(), 1, "{}", w.servers.postfix_log());
    let text = String::from_utf8_lossy(&notice[0]);
    assert!(
        text.contains(&format!("Original-Recipient: rfc822;{}", w.bob.strong)),
        "{text}"
    );

    // The log has one line per transaction and no content.
    let log = w.meshmail.log_text();
    assert!(log.matches("transaction").count() >= 4, "{log}");
    for secret in [
        "the eagle lands",
        "plans for bob",
        "the owl hoots",
        "c2VjcmV0",
    ] {
        assert!(!log.contains(secret), "the log leaks {secret:?}");
    }
}

#[test]
fn one_message_to_every_kind_with_a_bcc() {
    let w = world();
    let port = w.meshmail.port;
    // To: Bob, Dave, Frank (plain); Cc: Carol; Bcc (envelope only): Erin.
    let py = format!(
        r#"
import smtplib
from email.message import EmailMessage
s = smtplib.SMTP("127.0.0.1", {port})
s.login("alice", "secret")
m = EmailMessage(); m["From"] = "alice@example.test"
m["To"] = "{bob}, {dave}, frank@example.test"; m["Cc"] = "{carol}"; m["Subject"] = "all hands"
m.set_content("meeting at dawn")
refused = s.send_message(m, to_addrs=["{bob}", "{dave}", "frank@example.test", "{carol}", "{erin}"])
assert not refused, refused
s.quit()
"#,
        bob = w.bob.strong,
        dave = w.dave.openpgp_address,
        carol = w.carol.strong,
        erin = w.erin.strong
    );
    run(Command::new("python3").arg("-c").arg(&py)).ok();

    let erin_keys = encryption_key_ids(&w.erin.home);
    let bob = w.servers.wait_for_inbox("bob", 1);
    let dave = w.servers.wait_for_inbox("dave", 1);
    let carol = w.servers.wait_for_inbox("carol", 1);
    let frank = w.servers.wait_for_inbox("frank", 1);
    let erin = w.servers.wait_for_inbox("erin", 1);
    for (who, got) in [
        ("bob", &bob),
        ("dave", &dave),
        ("carol", &carol),
        ("frank", &frank),
        ("erin", &erin),
    ] {
        assert_eq!(
            got.len(),
            1,
            "{who} got exactly one copy: {}",
            w.servers.postfix_log()
        );
    }
    // Bob and Dave share one PGP/MIME copy; each reads it.
    let to = assert_pgp_copy(&bob[0], &w.gpg(&w.bob), "all hands", "meeting at dawn");
    assert_pgp_copy(&dave[0], &w.gpg(&w.dave), "all hands", "meeting at dawn");
    // The Bcc recipient's key is in no other copy, and its address in no other copy's bytes.
    for id in &erin_keys {
        assert!(
            !to.contains(id),
            "Bob's copy is encrypted to the Bcc recipient"
        );
    }
    for other in [&bob[0], &dave[0], &carol[0], &frank[0]] {
        let text = String::from_utf8_lossy(other);
        assert!(!text.contains("erin@"), "a copy names the Bcc recipient");
    }
    // Erin's own copy decrypts for Erin, and is not encrypted to Bob.
    let erin_to = assert_pgp_copy(&erin[0], &w.gpg(&w.erin), "all hands", "meeting at dawn");
    for id in encryption_key_ids(&w.bob.home) {
        assert!(!erin_to.contains(&id), "the Bcc copy is encrypted to Bob");
    }
    // Carol's copy is S/MIME and Frank's is plain.
    assert!(
        smime_decrypt(&w.carol.home, &carol[0], &w.root.path().join("s"))
            .stdout
            .contains("meeting at dawn")
    );
    assert!(String::from_utf8_lossy(&frank[0]).contains("meeting at dawn"));
    // Five recipients, five deliveries: none missing.
}

#[test]
fn auth_is_relayed_and_other_logins_use_no_account_keys() {
    let w = world();
    let port = w.meshmail.port;
    // A wrong password gets the upstream's own 535, word for word.
    let direct = run(Command::new("swaks")
        .args([
            "--server",
            &format!("127.0.0.1:{}", w.servers.submission()),
            "--tls",
        ])
        .args(["--tls-ca-path"])
        .arg(w.servers.ca_pem())
        .args([
            "--auth",
            "PLAIN",
            "--auth-user",
            "alice",
            "--auth-password",
            "wrong",
            "--quit-after",
            "AUTH",
        ]));
    let upstream_535 = direct
        .stdout
        .lines()
        .find(|l| l.contains("<~* 535"))
        .unwrap_or("")
        .replace("<~* ", "")
        .trim()
        .to_owned();
    assert!(upstream_535.starts_with("535"), "{direct:#?}");
    let r = swaks(
        port,
        "alice",
        "wrong",
        &w.bob.strong,
        &["--quit-after", "AUTH"],
    );
    let relayed = r
        .stdout
        .lines()
        .find(|l| l.contains("<** 535"))
        .unwrap_or("")
        .replace("<** ", "")
        .trim()
        .to_owned();
    assert_eq!(relayed, upstream_535, "{r:#?}");

    // A PLAIN authzid other than the login is refused.
    let py = format!(
        "import smtplib, base64\ns = smtplib.SMTP('127.0.0.1', {port}); s.ehlo()\nprint(s.docmd('AUTH', 'PLAIN ' + base64.b64encode(b'bob\\0alice\\0secret').decode()))"
    );
    let r = run(Command::new("python3").arg("-c").arg(&py));
    assert!(r.stdout.contains("(535, b'5.7.8"), "{r:#?}");

    // Bob logs in through meshmail: his login is not mapped, so nothing of Alice's keys is
    // used: Erin's copy is encrypted (strong address) but neither signed nor self-encrypted.
    let r = run(Command::new("swaks")
        .args([
            "--server",
            &format!("127.0.0.1:{port}"),
            "--auth",
            "PLAIN",
            "--auth-user",
            "bob",
            "--auth-password",
            "secret",
        ])
        .args([
            "--from",
            "bob@example.test",
            "--to",
            &w.erin.strong,
            "--header",
            "Subject: from bob",
            "--body",
            "unsigned words",
        ]));
    assert!(r.stdout.contains("250 2.0.0"), "{r:#?}");
    let copy = w.servers.wait_for_inbox("erin", 1);
    assert_eq!(copy.len(), 1);
    let armored = pgp_part(&copy[0]);
    let out = w.gpg(&w.erin).decrypt(&armored);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stdout.contains("unsigned words"));
    assert!(
        !out.stderr.contains("Signature made"),
        "an unmapped login's mail is not signed: {out:#?}"
    );
    let to = pgp_recipients(&armored);
    for id in encryption_key_ids(&w.alice.home) {
        assert!(
            !to.contains(&id),
            "an unmapped login's mail is not encrypted to the account"
        );
    }
    assert_eq!(to.len(), encryption_key_ids(&w.erin.home).len());
}

/// Every refusal is an error on that recipient, and nothing is delivered anywhere.
#[test]
fn refusals_deliver_nothing() {
    // Mallory's record is tampered with; Oscar's policy expired; Bob's address with another
    // fingerprint has no policy; Trent has no record at all.
    let w = world_with(
        |root, bob| {
            let mallory = init_account(root, "mallory@example.test");
            let oscar = init_account(root, "oscar@example.test");
            let mut lines = Vec::new();
            let txt = publish(&mallory, &root.join("pub-mallory"))
                .into_iter()
                .find(|l| l.contains(" TXT "))
                .expect("txt");
            let i = txt.find(" TXT \"").expect("data") + 300;
            let mut bytes = txt.into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            lines.push(String::from_utf8(bytes).expect("utf8"));
            lines.push(expired_policy_line(&oscar));
            std::fs::write(
                root.join("mallory"),
                run(meshmail(&mallory.home).arg("address")).stdout,
            )
            .expect("w");
            std::fs::write(
                root.join("oscar"),
                run(meshmail(&oscar.home).arg("address")).stdout,
            )
            .expect("w");
            let _ = bob;
            lines
        },
        "",
    );
    let port = w.meshmail.port;
    let read = |n: &str| {
        std::fs::read_to_string(w.root.path().join(n))
            .expect("addr")
            .trim()
            .to_owned()
    };
    let wrong_fpr = {
        let mut a = w.bob.strong.clone();
        let last = a.pop().expect("char");
        a.push(if last == 'a' { 'b' } else { 'a' });
        a
    };
    let trent = "trent@example.test.xx--mdag-hqlj-cm2d-sl43-aj43-cfau-a6zp";
    for (what, to, reason) in [
        ("tampered", read("mallory"), "signature"),
        ("expired", read("oscar"), "expired"),
        ("wrong fingerprint", wrong_fpr, "another key"),
        ("no policy", trent.to_owned(), "no policy"),
    ] {
        let r = swaks(port, "alice", "secret", &to, &["--body", "must not arrive"]);
        let line = r
            .stdout
            .lines()
            .find(|l| l.contains("<** 550"))
            .unwrap_or("");
        assert!(line.contains("550 5.7.1"), "{what}: {r:#?}");
        assert!(
            line.contains(reason),
            "{what}: the reply names the reason: {line}"
        );
    }
    // One message to a good and a bad recipient: the good one is delivered, the bad refused
    // to the client (and counted: 2 recipients = 1 delivered + 1 refused).
    let py = format!(
        r#"
import smtplib
s = smtplib.SMTP("127.0.0.1", {port}); s.login("alice", "secret")
refused = s.sendmail("alice@example.test", ["{bob}", "{trent}"], "From: alice@example.test\r\nTo: {bob}\r\nSubject: two\r\n\r\nhello\r\n")
assert list(refused) == ["{trent}"] and refused["{trent}"][0] == 550, refused
print("ok")
"#,
        bob = w.bob.strong,
        trent = trent
    );
    run(Command::new("python3").arg("-c").arg(&py)).ok();
    assert_eq!(
        w.servers.wait_for_inbox("bob", 1).len(),
        1,
        "the good recipient got it"
    );

    // DNS down: a temporary failure, so the sender's software retries.
    let mut nsd = w.nsd;
    nsd.stop();
    let fresh = "carol@example.test.xx--mb2q-zmuc-a7bc-33rd-gdb4-phgb-ob4p";
    let r = swaks(port, "alice", "secret", fresh, &["--body", "later"]);
    assert!(r.stdout.contains("<** 451 4.4.3"), "{r:#?}");

    // Nothing else arrived anywhere: only Bob's one message.
    std::thread::sleep(std::time::Duration::from_secs(1));
    for user in ["alice", "carol", "dave", "erin", "frank"] {
        assert!(
            w.servers.messages(user, "INBOX").is_empty(),
            "{user} got mail"
        );
    }
    assert_eq!(w.servers.messages("bob", "INBOX").len(), 1);
    let log = w.servers.postfix_log();
    assert!(!log.contains("must not arrive"));
}

#[test]
fn upstream_down_is_a_temporary_error_and_serve_warns_of_policy_expiry() {
    let root = tempdir();
    let alice = TestAccount::at(root.path().join("alice"));
    run(meshmail(&alice.home).args([
        "init",
        "--address",
        "alice@example.test",
        "--policy-days",
        "10",
    ]))
    .ok();
    let closed = free_port();
    let config = format!(
        "home = \"{}\"\nupstream_user = \"alice\"\n[smtp]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"127.0.0.1:{closed}\"\nupstream_tls = \"starttls\"\n",
        alice.home.display()
    );
    let m = Meshmail::start(&config);
    let r = swaks(m.port, "alice", "secret", "bob@example.test", &[]);
    assert!(r.stdout.contains("<** 421 4.4.0"), "{r:#?}");
    // The account's policy expires in 10 days: serve says so in its log.
    assert!(
        m.log_text().contains("expires in 9 days") || m.log_text().contains("expires in 10 days"),
        "{}",
        m.log_text()
    );
}

/// Sends raw bytes through meshmail as Alice and returns everything meshmail answered.
fn raw_session(port: u16, script: &str) -> Run {
    let py = format!(
        r#"
import socket, base64, time, sys
s = socket.create_connection(("127.0.0.1", {port})); s.settimeout(5)
def rd():
    time.sleep(0.3)
    try: return s.recv(65536).decode(errors="replace")
    except socket.timeout: return ""
out = rd()
def tx(b):
    global out
    s.sendall(b); out += rd()
tx(b"EHLO test\r\n")
tx(b"AUTH PLAIN " + base64.b64encode(b"\0alice\0secret") + b"\r\n")
{script}
sys.stdout.write(out)
"#
    );
    run(Command::new("python3").arg("-c").arg(&py))
}

#[test]
fn smuggling_is_refused_and_never_becomes_a_second_message() {
    let w = world();
    for fake in [r"\n.\n", r"\n.\r\n", r"\r\n.\n", r"\r.\r\n"] {
        let script = format!(
            r#"tx(b"MAIL FROM:<alice@example.test>\r\n")
tx(b"RCPT TO:<frank@example.test>\r\n")
tx(b"DATA\r\n")
tx(b"Subject: first\r\n\r\nbody{fake}MAIL FROM:<alice@example.test>\r\nRCPT TO:<erin@example.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nsecond\r\n.\r\n")
tx(b"QUIT\r\n")"#
        );
        let r = raw_session(w.meshmail.port, &script);
        assert!(r.stdout.contains("554 5.6.0"), "{fake}: {r:#?}");
        assert!(!r.stdout.contains("Message accepted"), "{fake}: {r:#?}");
    }
    std::thread::sleep(std::time::Duration::from_secs(1));
    assert!(
        w.servers.messages("frank", "INBOX").is_empty(),
        "the first message was refused"
    );
    assert!(
        w.servers.messages("erin", "INBOX").is_empty(),
        "no smuggled second message"
    );
}

#[test]
fn an_http_request_closes_the_connection() {
    let w = world();
    let py = format!(
        r#"
import socket, time
s = socket.create_connection(("127.0.0.1", {})); s.settimeout(5)
greeting = s.recv(1000)
s.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
rest = s.recv(1000)
print(repr(greeting), repr(rest))
"#,
        w.meshmail.port
    );
    let r = run(Command::new("python3").arg("-c").arg(&py));
    r.ok();
    assert!(r.stdout.contains("220"), "{r:#?}");
    assert!(
        r.stdout.trim_end().ends_with("b''"),
        "closed without a reply: {r:#?}"
    );
}

#[test]
fn starttls_injection_is_refused_on_both_sides() {
    let root = tempdir();
    let alice = init_account(root.path(), "alice@example.test");
    let certs = root.path().join("certs");
    run(meshmail(&alice.home).arg("certs").arg("--out").arg(&certs)).ok();
    let ca = make_test_ca(root.path(), &["localhost", "127.0.0.1"]);
    // The upstream side: a server that injects plaintext after its STARTTLS reply.
    let up_port = free_port();
    let mut fake = Command::new("python3")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/integration/tools/fake_upstream.py"
        ))
        .arg(up_port.to_string())
        .arg(&ca.cert_pem)
        .arg(&ca.key_pem)
        .spawn()
        .expect("fake upstream");
    wait_for_port(up_port, "fake upstream");
    let config = format!(
        "home = \"{home}\"\nupstream_user = \"alice\"\n[smtp]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"localhost:{up_port}\"\nupstream_tls = \"starttls\"\nupstream_ca = \"{ca}\"\n[tls]\ncert = \"{c}/cert.pem\"\nkey = \"{c}/key.pem\"\n",
        home = alice.home.display(),
        ca = ca.ca_pem.display(),
        c = certs.display()
    );
    let m = Meshmail::start(&config);
    // The client side: a command pipelined after STARTTLS in plaintext must be discarded.
    let py = format!(
        r#"
import socket, ssl, time
s = socket.create_connection(("127.0.0.1", {port})); s.settimeout(3)
s.recv(1000)
s.sendall(b"EHLO test\r\n"); time.sleep(0.3); ehlo = s.recv(4000).decode()
s.sendall(b"STARTTLS\r\nNOOP\r\n"); time.sleep(0.3); go = s.recv(1000).decode()
ctx = ssl.create_default_context(cafile="{cert}")
t = ctx.wrap_socket(s, server_hostname="localhost")
t.settimeout(1)
try:
    leaked = t.recv(1000).decode()
except (socket.timeout, TimeoutError):
    leaked = ""
t.sendall(b"EHLO test\r\n"); time.sleep(0.3); ehlo2 = t.recv(4000).decode()
t.sendall(b"MAIL FROM:<\xc3\xbc@example.test> SMTPUTF8\r\n"); time.sleep(0.3); utf8 = t.recv(4000).decode()
print("GO", go.strip()); print("LEAKED", repr(leaked)); print(ehlo); print(ehlo2); print("UTF8", utf8)
"#,
        port = m.port,
        cert = certs.join("cert.pem").display()
    );
    let r = run(Command::new("python3").arg("-c").arg(&py));
    let _ = fake.kill();
    let _ = fake.wait();
    r.ok();
    assert!(r.stdout.contains("GO 220"), "{r:#?}");
    assert!(
        r.stdout.contains("LEAKED ''"),
        "the pipelined NOOP was answered after TLS: {r:#?}"
    );
    // The upstream's injected "SIZE 1000" was not believed: the SIZE offered comes from the
    // EHLO over TLS (10000000 / 1.4).
    assert!(r.stdout.contains("SIZE 7142857"), "{r:#?}");
    assert!(!r.stdout.contains("SIZE 714\r"), "{r:#?}");
    // This upstream has no SMTPUTF8: meshmail does not offer it, and refuses such an address.
    assert!(!r.stdout.contains("SMTPUTF8\r"), "{r:#?}");
    assert!(r.stdout.contains("UTF8 553 5.6.7"), "{r:#?}");
    assert!(
        m.log_text()
            .contains("discarded plaintext the upstream sent after its STARTTLS reply"),
        "{}",
        m.log_text()
    );
    assert!(
        m.log_text()
            .contains("discarded plaintext pipelined after STARTTLS"),
        "{}",
        m.log_text()
    );
}

#[test]
fn a_copy_refused_after_another_was_accepted_is_reported_in_a_dsn() {
    let w = world();
    // The upstream refuses Bob's copy at DATA (a server's own data restriction), so the plain
    // copy is accepted and the encrypted one fails afterwards.
    let dir = w.servers.dir();
    std::fs::write(
        dir.join("data_access"),
        "/^bob@example\\.test$/ REJECT encrypted mail is not accepted here\n",
    )
    .expect("access");
    run(Command::new("postconf")
        .arg("-c")
        .arg(dir.join("postfix"))
        .arg("-e")
        .arg(format!(
            "smtpd_data_restrictions = check_recipient_access regexp:{}",
            dir.join("data_access").display()
        )))
    .ok();
    run(Command::new("postfix")
        .arg("-c")
        .arg(dir.join("postfix"))
        .arg("reload"))
    .ok();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let py = format!(
        r#"
import smtplib
s = smtplib.SMTP("127.0.0.1", {port}); s.login("alice", "secret")
refused = s.sendmail("alice@example.test", ["frank@example.test", "{bob}"],
    "From: alice@example.test\r\nTo: frank@example.test, {bob}\r\nSubject: half\r\n\r\nhello\r\n")
assert not refused, refused
print("accepted")
"#,
        port = w.meshmail.port,
        bob = w.bob.strong
    );
    run(Command::new("python3").arg("-c").arg(&py)).ok();
    assert_eq!(
        w.servers.wait_for_inbox("frank", 1).len(),
        1,
        "the plain copy was delivered"
    );
    let dsn = w.servers.wait_for_inbox("alice", 1);
    assert_eq!(
        dsn.len(),
        1,
        "the sender got a DSN: {}\n{}",
        w.servers.postfix_log(),
        w.meshmail.log_text()
    );
    // Sent to the mapped account itself, so sealed to its own key: nothing of the report, and
    // never the original subject, is readable on the way.
    let text = String::from_utf8_lossy(&dsn[0]);
    assert!(text.contains("multipart/encrypted"), "{text}");
    assert!(
        !text.contains("bob@") && !text.contains("Subject: half"),
        "{text}"
    );
    let out = w.gpg(&w.alice).decrypt(&pgp_part(&dsn[0]));
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stdout.contains("report-type=delivery-status"),
        "{out:#?}"
    );
    assert!(
        out.stdout
            .contains(&format!("Final-Recipient: rfc822; {}", w.bob.strong)),
        "{out:#?}"
    );
    assert!(out.stdout.contains("Action: failed"), "{out:#?}");
    assert!(out.stdout.contains("Status: 5.7.1"), "{out:#?}");
    assert!(!out.stdout.contains("Subject: half"), "{out:#?}");
    assert!(w.servers.messages("bob", "INBOX").is_empty());
}

/// A message the client already encrypted (Thunderbird's own OpenPGP) is checked, not
/// encrypted again: it passes unchanged only when encrypted to every key the policy names.
#[test]
fn a_message_the_client_encrypted_is_checked_not_reencrypted() {
    let w = world();
    let port = w.meshmail.port;
    let sender = w.root.path().join("sender-gpg");
    std::fs::create_dir_all(&sender).expect("dir");
    let gpg = |args: &[&str]| {
        let mut c = Command::new("gpg");
        c.arg("--homedir")
            .arg(&sender)
            .args(["--batch", "--yes", "--trust-model", "always"])
            .args(args);
        c
    };
    std::fs::set_permissions(&sender, std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .expect("chmod");
    for who in [&w.bob, &w.erin] {
        run(gpg(&["--import"]).arg(who.home.join("openpgp.asc"))).ok();
    }
    let plain = w.root.path().join("inner.txt");
    std::fs::write(&plain, "Content-Type: text/plain\r\n\r\nalready secret\r\n").expect("inner");
    let encrypt = |flag: &str, to: &str, name: &str| -> String {
        let out = w.root.path().join(name);
        run(gpg(&["--armor", "--encrypt", flag, to, "--output"])
            .arg(&out)
            .arg(&plain))
        .ok();
        std::fs::read_to_string(out).expect("armored")
    };
    let to_bob = encrypt("--recipient", &w.bob.openpgp_fingerprint, "bob.asc");
    let to_erin = encrypt("--recipient", &w.erin.openpgp_fingerprint, "erin.asc");
    let hidden_bob = encrypt(
        "--hidden-recipient",
        &w.bob.openpgp_fingerprint,
        "hidden.asc",
    );
    // `boundary` "B" also occurs in "-----BEGIN"; `extra` is more after the two parts.
    let send_with = |armored: &str, boundary: &str, extra: &str| {
        let msg = format!(
            "From: alice@example.test\r\nTo: {bob}\r\nSubject: pre\r\nX-Mailer: the secret mailer\r\nMIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"{boundary}\"\r\n\r\n--{boundary}\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n{body}\r\n{extra}--{boundary}--\r\n",
            bob = w.bob.strong,
            body = armored.replace('\n', "\r\n").trim_end()
        );
        let file = w.root.path().join("pre.eml");
        std::fs::write(&file, msg).expect("msg");
        swaks(
            port,
            "alice",
            "secret",
            &w.bob.strong,
            &["--data", &file.display().to_string()],
        )
    };
    let send = |armored: &str| send_with(armored, "b", "");
    // Encrypted to Bob, with a third part in plaintext beside the two of RFC 3156: refused.
    let r = send_with(
        &to_bob,
        "b",
        "--b\r\nContent-Type: text/plain\r\n\r\nthe plaintext beside it\r\n",
    );
    assert!(
        r.stdout.contains("<** 550 5.7.5") && r.stdout.contains("cannot check"),
        "{r:#?}"
    );
    let r = send(&hidden_bob);
    assert!(
        r.stdout.contains("<** 550 5.7.5") && r.stdout.contains("hidden recipient"),
        "{r:#?}"
    );
    let r = send(&to_erin);
    assert!(
        r.stdout.contains("<** 550 5.7.5"),
        "encrypted to someone else: {r:#?}"
    );
    let r = send_with(&to_bob, "B", "");
    assert!(
        r.stdout
            .contains("250 2.0.0 Message accepted (1 copy: client)"),
        "a short boundary is read as whole lines only: {r:#?}"
    );
    let got = w.servers.wait_for_inbox("bob", 1);
    assert_eq!(got.len(), 1);
    let text = String::from_utf8_lossy(&got[0]);
    // Passed on unchanged: the very ciphertext the client made, once.
    let first_line = to_bob.lines().nth(2).expect("armor line");
    assert!(
        text.contains(first_line),
        "the client's ciphertext, unchanged"
    );
    assert_eq!(text.matches("-----BEGIN PGP MESSAGE-----").count(), 1);
    // Only the minimal outer header fields travel in the clear.
    assert!(!text.contains("the secret mailer") && !text.contains("Subject: pre"));
    assert!(!text.contains("the plaintext beside it"));
    assert!(text.contains("Subject: [...]"), "{text}");
    assert!(w
        .gpg(&w.bob)
        .decrypt(&pgp_part(&got[0]))
        .stdout
        .contains("already secret"));
}

#[test]
fn implicit_tls_on_both_sides_and_tls_before_auth_off_loopback() {
    let root = tempdir();
    let servers = MailServers::start();
    let alice = init_account(root.path(), "alice@example.test");
    let certs = root.path().join("certs");
    run(meshmail(&alice.home).arg("certs").arg("--out").arg(&certs)).ok();
    let tls_port = free_port();
    let config = format!(
        "home = \"{home}\"\nupstream_user = \"alice\"\n[smtp]\nlisten = \"0.0.0.0:{{port}}\"\nlisten_implicit_tls = \"127.0.0.1:{tls_port}\"\nupstream = \"127.0.0.1:{up}\"\nupstream_tls = \"implicit\"\nupstream_ca = \"{ca}\"\n[tls]\ncert = \"{c}/cert.pem\"\nkey = \"{c}/key.pem\"\n[encrypt]\ndefault = \"never\"\n",
        home = alice.home.display(),
        up = servers.submissions(),
        ca = servers.ca_pem().display(),
        c = certs.display()
    );
    let m = Meshmail::start(&config);
    // Not a loopback listener: no AUTH before TLS.
    let r = swaks(
        m.port,
        "alice",
        "secret",
        "bob@example.test",
        &["--quit-after", "AUTH"],
    );
    assert!(
        !r.stdout.contains("250 AUTH"),
        "AUTH offered before TLS: {r:#?}"
    );
    let r = run(Command::new("python3").arg("-c").arg(format!(
        "import smtplib\ns = smtplib.SMTP('127.0.0.1', {}); s.ehlo(); print(s.docmd('AUTH', 'PLAIN AGFsaWNlAHNlY3JldA=='))",
        m.port
    )));
    assert!(r.stdout.contains("538"), "{r:#?}");
    // Implicit TLS to meshmail, implicit TLS to the upstream.
    let cert = certs.join("cert.pem");
    let over_tls = |port: u16, mode: &str, body: &str| {
        run(Command::new("swaks")
            .args([
                "--server",
                &format!("127.0.0.1:{port}"),
                mode,
                "--tls-verify",
                "--tls-ca-path",
            ])
            .arg(&cert)
            .args([
                "--auth",
                "PLAIN",
                "--auth-user",
                "alice",
                "--auth-password",
                "secret",
            ])
            .args([
                "--from",
                "alice@example.test",
                "--to",
                "bob@example.test",
                "--body",
                body,
            ]))
    };
    let r = over_tls(tls_port, "--tlsc", "over tls");
    assert!(r.stdout.contains("250 2.0.0 Message accepted"), "{r:#?}");
    // STARTTLS on the other listener, then AUTH.
    let r = over_tls(m.port, "--tls", "over starttls");
    assert!(r.stdout.contains("250 2.0.0 Message accepted"), "{r:#?}");
    assert_eq!(servers.wait_for_inbox("bob", 2).len(), 2);
}

#[test]
fn limits_answer_clearly_and_the_session_survives() {
    let w = world_with(
        |_, _| Vec::new(),
        "[limits]\nmax_recipients = 2\nmax_message_size = 2000\nmax_line = 600\nmax_errors = 3\nidle_timeout_secs = 2\n",
    );
    let port = w.meshmail.port;
    let script = r#"tx(b"MAIL FROM:<alice@example.test>\r\n")
tx(b"RCPT TO:<frank@example.test>\r\n")
tx(b"RCPT TO:<frank@example.test>\r\n")
tx(b"RCPT TO:<frank@example.test>\r\n")
tx(b"DATA\r\n")
tx(b"Subject: big\r\n\r\n" + b"x" * 100 + b"\r\n" * 30 + b"y" * 2000 + b"\r\n.\r\n")
tx(b"NOOP " + b"z" * 700 + b"\r\n")
tx(b"NOOP\r\n")
time.sleep(3)
out += rd()"#;
    let r = raw_session(port, script);
    assert!(
        r.stdout.contains("452 4.5.3"),
        "too many recipients: {r:#?}"
    );
    assert!(r.stdout.contains("552 5.3.4"), "too large: {r:#?}");
    assert!(r.stdout.contains("500 5.5.2 Line too long"), "{r:#?}");
    assert!(
        r.stdout.contains("250 2.0.0 OK"),
        "the session survives: {r:#?}"
    );
    assert!(
        r.stdout.contains("421 4.4.2 Idle"),
        "idle sessions are closed: {r:#?}"
    );
    let r = raw_session(port, "for _ in range(5): tx(b\"BOGUS\\r\\n\")");
    assert!(r.stdout.contains("421 4.7.0 Too many errors"), "{r:#?}");
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(w.servers.messages("frank", "INBOX").is_empty());
}

/// Local rules for plain addresses, and S/MIME with AES-256-GCM for a `smime-gcm` policy.
#[test]
fn rules_for_plain_addresses_and_smime_gcm() {
    let w = world_with(
        |_, _| Vec::new(),
        "[encrypt]\ndefault = \"opportunistic\"\naddresses = { \"frank@example.test\" = \"required\", \"dave@example.test\" = \"opportunistic\" }\n",
    );
    let port = w.meshmail.port;
    // Required and no key anywhere: refused on that recipient.
    let r = swaks(
        port,
        "alice",
        "secret",
        "frank@example.test",
        &["--body", "no key"],
    );
    assert!(
        r.stdout.contains("<** 550 5.7.1") && r.stdout.contains("require"),
        "{r:#?}"
    );
    // Opportunistic with a key in DNS (Dave's OPENPGPKEY): encrypted although plain.
    let r = swaks(
        port,
        "alice",
        "secret",
        "dave@example.test",
        &[
            "--header",
            "Subject: opportunistic",
            "--body",
            "found your key",
        ],
    );
    assert!(r.stdout.contains("will be encrypted (pgp-mime)"), "{r:#?}");
    let got = w.servers.wait_for_inbox("dave", 1);
    assert_eq!(got.len(), 1);
    assert_pgp_copy(&got[0], &w.gpg(&w.dave), "opportunistic", "found your key");

    // Carol now asks for AES-256-GCM (AuthEnvelopedData, RSA-OAEP).
    run(meshmail(&w.carol.home).args(["policy", "renew", "--formats", "smime-gcm"])).ok();
    let lines = publish(&w.carol, &w.root.path().join("pub-carol-gcm"));
    let txt = lines
        .iter()
        .find(|l| l.contains(" TXT "))
        .expect("txt")
        .clone();
    let nsd = Nsd::start(&[("example.test", vec![txt])]);
    let config = std::fs::read_to_string(w.meshmail.dir.path().join("meshmail.toml"))
        .expect("config")
        .replace(&w.nsd.addr(), &nsd.addr())
        .replace(&format!("127.0.0.1:{port}"), "127.0.0.1:{port}");
    let m = Meshmail::start(&config);
    let r = swaks(
        m.port,
        "alice",
        "secret",
        &w.carol.strong,
        &["--header", "Subject: gcm", "--body", "sealed with gcm"],
    );
    assert!(r.stdout.contains("will be encrypted (smime-gcm)"), "{r:#?}");
    let got = w.servers.wait_for_inbox("carol", 1);
    assert_eq!(got.len(), 1);
    let text = String::from_utf8_lossy(&got[0]);
    assert!(text.contains("smime-type=authEnveloped-data"), "{text}");
    let dec = smime_decrypt(&w.carol.home, &got[0], &w.root.path().join("gcm"));
    assert_eq!(dec.code, 0, "{dec:#?}");
    assert!(
        dec.stdout.contains("sealed with gcm") && dec.stdout.contains("Subject: gcm"),
        "{dec:#?}"
    );
}

/// A policy that declares an escrow certificate: that recipient gets a copy of its own,
/// encrypted to the escrow key too; no other copy is.
#[test]
fn escrow_is_added_to_that_recipients_copy_only() {
    let w = world_with(
        |root, bob| {
            // Bob's policy, re-signed by Bob's key, with Erin's certificate as escrow.
            let erin_home = root.join("erin_at_example.test");
            let erin_cert = std::fs::read(erin_home.join("openpgp.asc")).expect("cert");
            let erin_bin = meshmail::crypto::openpgp::public_bytes(
                &meshmail::crypto::openpgp::parse_certs(&erin_cert).expect("parse")[0],
            );
            vec![resigned_policy_line(bob, |doc| {
                // Newer than the policy published beside it, so this one wins.
                doc.created += time::Duration::seconds(1);
                doc.escrow = Some(meshmail::policy::document::Escrow {
                    openpgp: Some(data_encoding::BASE64.encode(&erin_bin)),
                    smime: None,
                });
            })]
        },
        "",
    );
    let py = format!(
        r#"
import smtplib
s = smtplib.SMTP("127.0.0.1", {port}); s.login("alice", "secret")
s.sendmail("alice@example.test", ["{bob}", "{dave}"],
    "From: alice@example.test\r\nTo: {bob}, {dave}\r\nSubject: escrowed\r\n\r\nfor bob and dave\r\n")
"#,
        port = w.meshmail.port,
        bob = w.bob.strong,
        dave = w.dave.openpgp_address
    );
    run(Command::new("python3").arg("-c").arg(&py)).ok();
    let bob = w.servers.wait_for_inbox("bob", 1);
    let dave = w.servers.wait_for_inbox("dave", 1);
    assert_eq!((bob.len(), dave.len()), (1, 1));
    let erin_keys = encryption_key_ids(&w.erin.home);
    let bob_to = pgp_recipients(&pgp_part(&bob[0]));
    let dave_to = pgp_recipients(&pgp_part(&dave[0]));
    assert!(
        erin_keys.iter().all(|k| bob_to.contains(k)),
        "Bob's copy is encrypted to the escrow key"
    );
    assert!(
        erin_keys.iter().all(|k| !dave_to.contains(k)),
        "Dave's copy is not"
    );
    assert_ne!(pgp_part(&bob[0]), pgp_part(&dave[0]), "separate copies");
    // The escrow holder can read Bob's copy (a front door, declared in the signed policy).
    assert!(w
        .gpg(&w.erin)
        .decrypt(&pgp_part(&bob[0]))
        .stdout
        .contains("for bob and dave"));
}
