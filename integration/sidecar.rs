//! The MTA sidecar end to end: a real Postfix hands every message to meshmail's filter over
//! LMTP, meshmail reinjects into Postfix's reinjection listener, a real Dovecot stores what
//! arrives, GnuPG judges the ciphertext, and Postfix's smtp-sink stands for the outside world.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::gpg::{pgp_recipients, Gpg};
use common::imap::{crlf, gpg_encrypt, pgp_mime};
use common::mail::pgp_part;
use common::sidecar::{without_trace, Setup, Sidecar};
use std::time::Duration;

/// A plaintext message as a sender on the internet writes it (a DKIM-style signature field,
/// 8-bit UTF-8 in the body), with a Message-ID of its own.
fn plaintext(id: &str, subject: &str, extra_header: &str) -> Vec<u8> {
    let mut m = crlf(&format!(
        "DKIM-Signature: v=1; a=rsa-sha256; d=sender.test; s=sel; h=from:to:subject; bh=abc=; b=def=\n\
         From: Sender <sender@sink.test>\nTo: alice@example.test\nSubject: {subject}\n\
         Message-ID: <{id}@sender.test>\nDate: Mon, 30 Nov 2026 10:00:00 +0000\n{extra_header}\
         MIME-Version: 1.0\nContent-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: 8bit\n\n"
    ));
    m.extend_from_slice("Grüße: the quarterly numbers are secret.\r\n".as_bytes());
    m
}

/// The stored message in `messages` whose header carries `<id@sender.test>`.
fn with_id<'a>(messages: &'a [Vec<u8>], id: &str) -> Vec<&'a Vec<u8>> {
    let needle = format!("<{id}@sender.test>");
    messages
        .iter()
        .filter(|m| String::from_utf8_lossy(m).contains(&needle))
        .collect()
}

fn header_section(m: &[u8]) -> String {
    let text = String::from_utf8_lossy(m);
    text.split("\r\n\r\n").next().unwrap_or("").to_owned()
}

#[test]
fn inbound_mail_is_stored_encrypted_for_users_with_a_key_and_unchanged_for_the_others() {
    let root = common::tempdir();
    let alice = common::init_account(root.path(), "alice@example.test");
    let gpg = Gpg::with_secret_of(&alice.home, root.path().join("gpg-alice"));
    let limit = 1_000_000;
    let sc = Sidecar::start(Setup {
        size_limit: Some(limit),
        ..Setup::default()
    });
    sc.add_key("alice@example.test", &alice.home);

    // 1. Plaintext to alice (who has a key) and bob (who has none), one transaction.
    let original = plaintext("one", "Quarterly numbers", "");
    let r = sc.send_mx(
        "sender@sink.test",
        &["alice@example.test", "bob@example.test"],
        &original,
        &[],
    );
    assert!(r.stdout.contains("\"refused\": {}"), "{r:#?}");
    let inbox = sc.servers.wait_for_inbox("alice", 1);
    let stored = with_id(&inbox, "one");
    assert_eq!(stored.len(), 1, "delivered once: {}", sc.log());
    let stored = stored[0];
    let text = String::from_utf8_lossy(stored);
    assert!(
        !text.contains("quarterly numbers are secret"),
        "no plaintext at rest:\n{text}"
    );
    assert!(
        !text.contains("DKIM-Signature"),
        "the signature goes inside"
    );
    let head = header_section(stored);
    assert!(
        head.contains("Subject: Quarterly numbers"),
        "Subject visible by default"
    );
    assert!(
        head.contains("Meshmail-At-Rest: v=1; for=<alice@example.test>"),
        "{head}"
    );
    assert!(head.contains("multipart/encrypted"));
    // The entry's trace field (naming the client) stays outside; the reinjection learned the
    // original client and queue ID over XFORWARD (Postfix logs them; its own Received field
    // always names the connection it came over).
    assert!(
        head.contains("Received: from client.example (localhost [127.0.0.1])"),
        "{head}"
    );
    let log = sc.servers.postfix_log();
    let entry_ids: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("postfix/smtp/smtpd[") && l.contains(": client="))
        .filter_map(|l| l.split(": ").nth(1))
        .collect();
    assert!(
        log.lines()
            .filter(|l| l.contains("postfix/reinject/smtpd["))
            .any(|l| entry_ids.iter().any(|id| l.contains(&format!(
                "orig_queue_id={id}, orig_client=localhost[127.0.0.1]"
            )))),
        "XFORWARD IDENT and client reached the reinjection:\n{log}"
    );
    let armored = pgp_part(stored);
    assert_eq!(
        pgp_recipients(&armored),
        common::gpg::encryption_key_ids(&alice.home),
        "encrypted to alice's key only"
    );
    let opened = gpg.decrypt(&armored);
    assert_eq!(opened.code, 0, "{opened:#?}");
    let inner = opened.stdout.as_bytes();
    assert!(
        inner.ends_with(&original),
        "the original bytes inside, byte for byte:\n{}",
        opened.stdout
    );
    assert!(
        without_trace(inner) == original,
        "only the entry's trace field precedes them"
    );

    // Alice's own meshmail (the device role) shows her the original, called what it is.
    let device =
        common::mail::Meshmail::start(&sc.servers.meshmail_config(&alice.home, "alice", None, ""));
    let view = common::run(std::process::Command::new("curl").args([
        "-s",
        "-u",
        "alice:secret",
        &format!("imap://127.0.0.1:{}/INBOX;UID=1", device.port),
    ]));
    let mut want = b"Meshmail-Result: encrypted-at-rest\r\n".to_vec();
    want.extend_from_slice(inner);
    assert_eq!(view.stdout.as_bytes(), &want[..], "{}", device.log_text());
    drop(device);

    let bob_inbox = sc.servers.wait_for_inbox("bob", 1);
    let plain = with_id(&bob_inbox, "one");
    assert_eq!(plain.len(), 1);
    assert_eq!(
        without_trace(plain[0]),
        original,
        "bob has no key: unchanged"
    );

    // 2. Already encrypted (by the sender, to alice's key): stored exactly as it came.
    let inner = crlf("Content-Type: text/plain\n\nencrypted by the sender\n");
    let armored = gpg_encrypt(&gpg, root.path(), &inner, &["-r", "alice@example.test"]);
    let sealed = pgp_mime(
        "From: sender@sink.test\nTo: alice@example.test\nSubject: sealed\nMessage-ID: <two@sender.test>\nDate: Mon, 30 Nov 2026 10:00:00 +0000\nMIME-Version: 1.0\n",
        &armored,
    );
    let r = sc.send_mx("sender@sink.test", &["alice@example.test"], &sealed, &[]);
    assert!(r.stdout.contains("\"refused\": {}"), "{r:#?}");
    let inbox = sc.servers.wait_for_inbox("alice", 2);
    let stored = with_id(&inbox, "two");
    assert_eq!(stored.len(), 1);
    assert_eq!(
        String::from_utf8_lossy(&without_trace(stored[0])),
        String::from_utf8_lossy(&sealed),
        "already encrypted: unchanged"
    );

    // 3. A forged "handled" mark changes nothing: alice's copy is still encrypted (with a
    // real mark), bob's loses the forged field.
    let forged = plaintext(
        "three",
        "forged",
        "Meshmail-At-Rest: v=1; for=<alice@example.test>; mac=forged\n",
    );
    sc.send_mx(
        "sender@sink.test",
        &["alice@example.test", "bob@example.test"],
        &forged,
        &[],
    );
    let inbox = sc.servers.wait_for_inbox("alice", 3);
    let stored = with_id(&inbox, "three");
    assert_eq!(stored.len(), 1);
    let head = header_section(stored[0]);
    assert!(head.contains("multipart/encrypted"), "{head}");
    assert_eq!(head.matches("Meshmail-At-Rest:").count(), 1);
    assert!(!head.contains("mac=forged"), "{head}");
    let opened = gpg.decrypt(&pgp_part(stored[0]));
    assert!(
        !opened.stdout.contains("mac=forged"),
        "the forged field is gone inside too"
    );
    let bob_inbox = sc.servers.wait_for_inbox("bob", 2);
    let plain = with_id(&bob_inbox, "three");
    assert_eq!(plain.len(), 1);
    assert!(!String::from_utf8_lossy(plain[0]).contains("Meshmail-At-Rest"));

    // 4. An alias and a +tag address: encrypted per final mailbox.
    let to_list = plaintext("four", "to the team", "");
    sc.send_mx("sender@sink.test", &["team@example.test"], &to_list, &[]);
    let tagged = plaintext("five", "tagged", "");
    sc.send_mx(
        "sender@sink.test",
        &["alice+news@example.test"],
        &tagged,
        &[],
    );
    let inbox = sc.servers.wait_for_inbox("alice", 5);
    for id in ["four", "five"] {
        let stored = with_id(&inbox, id);
        assert_eq!(stored.len(), 1, "{id}: {}", sc.log());
        assert!(
            header_section(stored[0]).contains("multipart/encrypted"),
            "{id}"
        );
        assert!(gpg.decrypt(&pgp_part(stored[0])).stdout.ends_with(
            std::str::from_utf8(if id == "four" { &to_list } else { &tagged }).unwrap()
        ));
    }
    let bob_inbox = sc.servers.wait_for_inbox("bob", 3);
    assert_eq!(without_trace(with_id(&bob_inbox, "four")[0]), to_list);

    // 5. A message at the entry's size limit: taken, encrypted, delivered.
    let mut big = plaintext("six", "big", "");
    let line = "x".repeat(76) + "\r\n";
    while big.len() + line.len() < limit - 4096 {
        big.extend_from_slice(line.as_bytes());
    }
    let r = sc.send_mx("sender@sink.test", &["alice@example.test"], &big, &[]);
    assert!(r.stdout.contains("\"refused\": {}"), "{r:#?}");
    let inbox = sc.servers.wait_for_inbox("alice", 6);
    let stored = with_id(&inbox, "six");
    assert_eq!(
        stored.len(),
        1,
        "{}\n{}",
        sc.log(),
        sc.servers.postfix_log()
    );
    assert!(
        stored[0].len() > limit,
        "the encrypted copy is larger than the entry's limit"
    );
    assert!(
        sc.wait_queue_empty(Duration::from_secs(10)),
        "{}",
        sc.queue()
    );
}

#[test]
fn a_broken_key_or_a_poison_message_costs_only_its_recipient_and_nothing_is_duplicated() {
    let root = common::tempdir();
    let alice = common::init_account(root.path(), "alice@example.test");
    let bob = common::init_account(root.path(), "bob@example.test");
    let sc = Sidecar::start(Setup::default());
    sc.add_key("alice@example.test", &alice.home);
    std::fs::write(
        sc.keys.join("bob@example.test.asc"),
        b"-----BEGIN PGP PUBLIC KEY BLOCK-----\ngarbage\n",
    )
    .unwrap();

    let original = plaintext("both", "for two", "");
    let r = sc.send_mx(
        "sender@sink.test",
        &["alice@example.test", "bob@example.test"],
        &original,
        &[],
    );
    assert!(
        r.stdout.contains("\"refused\": {}"),
        "Postfix took it: {r:#?}"
    );
    let inbox = sc.servers.wait_for_inbox("alice", 1);
    assert_eq!(with_id(&inbox, "both").len(), 1);
    // bob's copy waits in Postfix's queue with the reason.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !sc.servers.postfix_log().contains("status=deferred")
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = sc.servers.postfix_log();
    assert!(
        log.lines().any(|l| l.contains("to=<bob@example.test>")
            && l.contains("status=deferred")
            && l.contains("4.7.0")),
        "{log}"
    );
    assert!(sc.queue().contains("bob@example.test"), "{}", sc.queue());
    assert!(
        sc.servers.messages("bob", "INBOX").is_empty(),
        "never stored in plaintext"
    );
    assert!(
        sc.log().contains("ALARM"),
        "the broken key is an alarm in the log"
    );

    // The key is fixed; the retry delivers bob's copy, encrypted, once; alice's stays single.
    sc.add_key("bob@example.test", &bob.home);
    std::thread::sleep(Duration::from_millis(1100));
    sc.flush();
    assert!(
        sc.wait_queue_empty(Duration::from_secs(30)),
        "{}",
        sc.queue()
    );
    let bob_inbox = sc.servers.wait_for_inbox("bob", 1);
    let stored = with_id(&bob_inbox, "both");
    assert_eq!(stored.len(), 1);
    assert!(header_section(stored[0]).contains("multipart/encrypted"));
    let bob_gpg = Gpg::with_secret_of(&bob.home, root.path().join("gpg-bob"));
    assert!(bob_gpg
        .decrypt(&pgp_part(stored[0]))
        .stdout
        .ends_with(std::str::from_utf8(&original).unwrap()));
    assert_eq!(
        with_id(&sc.servers.messages("alice", "INBOX"), "both").len(),
        1,
        "no duplicate"
    );

    // A sender's message meshmail cannot encrypt (more header fields than it reads): bounced
    // for the recipient with a key (never stored in plaintext), delivered to the one without.
    let mut poison = crlf("From: sender@sink.test\nTo: alice@example.test, carol@example.test\nSubject: poison\nMessage-ID: <poison@sender.test>\nDate: Mon, 30 Nov 2026 10:00:00 +0000\n");
    for i in 0..1001 {
        poison.extend_from_slice(format!("X-Filler-{i}: y\r\n").as_bytes());
    }
    poison.extend_from_slice(b"\r\nthe poison body\r\n");
    let before = sc.servers.messages("alice", "INBOX").len();
    let r = sc.send_mx(
        "sender@sink.test",
        &["alice@example.test", "carol@example.test"],
        &poison,
        &[],
    );
    assert!(
        r.stdout.contains("\"refused\": {}"),
        "Postfix took it: {r:#?}"
    );
    let carol = sc.servers.wait_for_inbox("carol", 1);
    assert_eq!(with_id(&carol, "poison").len(), 1, "{}", sc.log());
    let bounce = sc.wait_for_sink(1);
    assert_eq!(
        bounce.len(),
        1,
        "one bounce, for alice: {}",
        sc.servers.postfix_log()
    );
    let text = String::from_utf8_lossy(&bounce[0].message);
    assert!(
        text.contains("alice@example.test") && text.contains("5.6.0"),
        "{text}"
    );
    let alice = sc.servers.messages("alice", "INBOX");
    assert_eq!(alice.len(), before, "nothing stored for alice");
    assert!(alice
        .iter()
        .all(|m| !String::from_utf8_lossy(m).contains("the poison body")));
    assert!(
        sc.wait_queue_empty(Duration::from_secs(20)),
        "{}",
        sc.queue()
    );

    // The key directory cannot be read: deferred (never "no key", never plaintext), then
    // delivered encrypted once it is back.
    let away = sc.work.path().join("keys-away");
    std::fs::rename(&sc.keys, &away).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    let later = plaintext("later", "keys gone", "");
    sc.send_mx("sender@sink.test", &["alice@example.test"], &later, &[]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !sc.servers.postfix_log().contains("4.3.0") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        sc.servers
            .postfix_log()
            .lines()
            .any(|l| l.contains("to=<alice@example.test>")
                && l.contains("status=deferred")
                && l.contains("4.3.0")),
        "{}",
        sc.servers.postfix_log()
    );
    assert!(with_id(&sc.servers.messages("alice", "INBOX"), "later").is_empty());
    std::fs::rename(&away, &sc.keys).unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    sc.flush();
    assert!(
        sc.wait_queue_empty(Duration::from_secs(30)),
        "{}",
        sc.queue()
    );
    let inbox = sc.servers.messages("alice", "INBOX");
    let stored = with_id(&inbox, "later");
    assert_eq!(stored.len(), 1);
    assert!(header_section(stored[0]).contains("multipart/encrypted"));

    // check-config reads Postfix's own configuration: the reinjection listener passes, the
    // MX (filtered through meshmail) as a reinjection target would loop.
    let postfix = sc.servers.dir().join("postfix");
    for (port, ok) in [(sc.servers.reinject(), true), (sc.servers.mx(), false)] {
        let cfg = sc.work.path().join(format!("check-{port}.toml"));
        std::fs::write(
            &cfg,
            format!(
                "[filter]\nlisten = \"127.0.0.1:1\"\nreinject = \"127.0.0.1:{port}\"\nlocal_domains = [\"example.test\"]\nkeys_dir = \"{}\"\npostfix_config = \"{}\"\n",
                sc.keys.display(),
                postfix.display()
            ),
        )
        .unwrap();
        let r = common::run(
            std::process::Command::new(env!("CARGO_BIN_EXE_meshmail"))
                .arg("check-config")
                .arg(&cfg),
        );
        assert_eq!(r.code == 0, ok, "{r:#?}");
        if !ok {
            assert!(
                r.stderr.contains("content_filter = meshfilter")
                    && r.stderr.contains("again and again"),
                "{r:#?}"
            );
        }
    }
}

/// A account on sink.test (the outside world) with its policy published in NSD, and the
/// sidecar asking that NSD.
fn outside_world(
    root: &std::path::Path,
    policy_service: bool,
) -> (common::TestAccount, common::Nsd, Sidecar) {
    let bob = common::init_account(root, "bob@sink.test");
    let lines: Vec<String> = common::publish(&bob, &root.join("pub-bob"))
        .into_iter()
        .filter(|l| l.contains(" TXT "))
        .collect();
    let nsd = common::Nsd::start(&[("sink.test", lines)]);
    let sc = Sidecar::start(Setup {
        policy_service,
        extra: format!("[policy]\ndns = \"{}\"\nretry_after_secs = 1\n", nsd.addr()),
        ..Setup::default()
    });
    (bob, nsd, sc)
}

fn outbound(id: &str) -> Vec<u8> {
    crlf(&format!(
        "From: alice@example.test\nTo: bob@sink.test\nSubject: Plans for {id}\nMessage-ID: <{id}@sender.test>\nDate: Mon, 30 Nov 2026 10:00:00 +0000\n\nThe plans for {id}.\n"
    ))
}

#[test]
fn outbound_fingerprint_addresses_are_checked_at_rcpt_and_encrypted_as_their_policy_says() {
    let root = common::tempdir();
    let (bob, _nsd, sc) = outside_world(root.path(), true);
    let stranger = common::init_account(root.path(), "carol@sink.test");
    // bob's mailbox under a fingerprint nobody published a policy for.
    let unpublished = format!(
        "bob@sink.test.{}",
        stranger
            .strong
            .rsplit_once(".xx--")
            .map(|(_, fp)| format!("xx--{fp}"))
            .unwrap()
    );

    // No valid policy: refused at RCPT by the policy service, so the client sees why.
    let r = sc.submit("alice", &[&unpublished], &outbound("nope"), &[]);
    let refused = &r.json()["refused"][&unpublished];
    assert!(refused[0].as_u64().unwrap() >= 500, "{r:#?}");
    assert!(refused[1].as_str().unwrap().contains("5.7.1"), "{r:#?}");

    // A valid policy: accepted, encrypted to bob's key, relayed to bob@sink.test.
    let r = sc.submit("alice", &[&bob.strong], &outbound("yes"), &[]);
    assert!(r.stdout.contains("\"refused\": {}"), "{r:#?}");
    // A plain outside recipient with NOTIFY=NEVER: passed on as it is, NOTIFY=NEVER kept.
    let r = sc.submit(
        "alice",
        &["dave@sink.test"],
        &outbound("plain"),
        &["--notify", "NEVER"],
    );
    assert!(r.stdout.contains("\"refused\": {}"), "{r:#?}");
    let got = sc.wait_for_sink(2);
    assert_eq!(got.len(), 2, "{}\n{}", sc.log(), sc.servers.postfix_log());
    let sealed = got
        .iter()
        .find(|m| m.rcpt_args.iter().any(|a| a.starts_with("<bob@sink.test>")))
        .expect("bob's copy");
    let text = String::from_utf8_lossy(&sealed.message);
    assert!(!text.contains("The plans for yes"), "{text}");
    assert!(text.contains("Subject: [...]"), "protected Subject");
    let armored = pgp_part(&sealed.message);
    assert_eq!(
        pgp_recipients(&armored),
        common::gpg::encryption_key_ids(&bob.home)
    );
    let bob_gpg = Gpg::with_secret_of(&bob.home, root.path().join("gpg-bob"));
    assert!(bob_gpg
        .decrypt(&armored)
        .stdout
        .contains("The plans for yes."));
    let plain = got
        .iter()
        .find(|m| {
            m.rcpt_args
                .iter()
                .any(|a| a.starts_with("<dave@sink.test>"))
        })
        .expect("dave's copy");
    assert!(
        plain.rcpt_args[0].contains("NOTIFY=NEVER"),
        "{:?}",
        plain.rcpt_args
    );
    assert!(String::from_utf8_lossy(&plain.message).contains("The plans for plain."));
    assert!(
        sc.queue().contains("Mail queue is empty"),
        "nothing deferred: {}",
        sc.queue()
    );
}

#[test]
fn a_policy_lookup_failing_for_now_defers_and_the_retry_delivers_encrypted() {
    let root = common::tempdir();
    // No policy service: the filter alone decides (the submission server takes everything).
    let (bob, mut nsd, sc) = outside_world(root.path(), false);
    nsd.stop();
    let r = sc.submit("alice", &[&bob.strong], &outbound("later"), &[]);
    assert!(
        r.stdout.contains("\"refused\": {}"),
        "Postfix queued it: {r:#?}"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !sc.servers.postfix_log().contains("4.4.3") && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = sc.servers.postfix_log();
    assert!(
        log.lines()
            .any(|l| l.contains("status=deferred") && l.contains("4.4.3")),
        "deferred with the policy lookup's reason: {log}"
    );
    assert!(sc.sink_messages().is_empty(), "nothing went out meanwhile");
    nsd.restart();
    std::thread::sleep(Duration::from_millis(1200));
    sc.flush();
    let got = sc.wait_for_sink(1);
    assert_eq!(got.len(), 1, "{}", sc.log());
    let text = String::from_utf8_lossy(&got[0].message);
    assert!(text.contains("multipart/encrypted") && !text.contains("The plans for later"));
}

#[test]
fn plaintext_to_a_local_fingerprint_address_is_refused_with_a_reason_and_encrypted_mail_is_delivered(
) {
    let root = common::tempdir();
    let alice = common::init_account(root.path(), "alice@example.test");
    let gpg = Gpg::with_secret_of(&alice.home, root.path().join("gpg-alice"));
    let nsd = common::nsd_with_policies(root.path(), &[&alice]);
    let sc = Sidecar::start(Setup {
        extra: format!("[policy]\ndns = \"{}\"\n", nsd.addr()),
        ..Setup::default()
    });
    sc.add_key("alice@example.test", &alice.home);
    // The prefix form, as a legacy sender reaches it through a wildcard MX.
    let (local, fp) = alice.strong.rsplit_once(".xx--").unwrap();
    let prefix = format!("alice@xx--{fp}.example.test");
    assert!(local.ends_with("@example.test"));

    let r = sc.send_mx(
        "sender@sink.test",
        &[&prefix],
        &plaintext("legacy", "plain", ""),
        &[],
    );
    assert!(
        r.stdout.contains("\"refused\": {}"),
        "the MX takes it: {r:#?}"
    );
    // Refused by the filter; Postfix bounces to the sender (smtp-sink) with the reason.
    let bounce = sc.wait_for_sink(1);
    assert_eq!(
        bounce.len(),
        1,
        "{}\n{}",
        sc.log(),
        sc.servers.postfix_log()
    );
    let text = String::from_utf8_lossy(&bounce[0].message);
    assert!(
        text.contains("5.7.1") && text.contains("end-to-end encrypted"),
        "{text}"
    );

    let inner = crlf("Content-Type: text/plain\n\nend to end\n");
    let armored = gpg_encrypt(&gpg, root.path(), &inner, &["-r", "alice@example.test"]);
    let sealed = pgp_mime(
        &format!("From: sender@sink.test\nTo: {prefix}\nSubject: sealed\nMessage-ID: <sealed@sender.test>\nDate: Mon, 30 Nov 2026 10:00:00 +0000\nMIME-Version: 1.0\n"),
        &armored,
    );
    let r = sc.send_mx("sender@sink.test", &[&alice.strong], &sealed, &[]);
    assert!(r.stdout.contains("\"refused\": {}"), "{r:#?}");
    let inbox = sc.servers.wait_for_inbox("alice", 1);
    assert_eq!(inbox.len(), 1, "only the encrypted message: {}", sc.log());
    assert!(with_id(&inbox, "sealed").len() == 1);
    assert!(gpg
        .decrypt(&pgp_part(&inbox[0]))
        .stdout
        .contains("end to end"));
}

#[test]
fn the_filter_on_a_unix_socket_is_reachable_by_postfix_only() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let root = common::tempdir();
    let alice = common::init_account(root.path(), "alice@example.test");
    let sc = Sidecar::start(Setup {
        unix: true,
        ..Setup::default()
    });
    sc.add_key("alice@example.test", &alice.home);
    let socket = sc.work.path().join("filter.sock");
    let meta = std::fs::metadata(&socket).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);
    let group = common::run(std::process::Command::new("getent").args(["group", "postfix"]));
    let gid: u32 = group.stdout.split(':').nth(2).unwrap().parse().unwrap();
    assert_eq!(meta.gid(), gid, "group postfix");
    // Another local user cannot talk to the filter (and so cannot forge XFORWARD).
    let probe = format!(
        "import socket; s=socket.socket(socket.AF_UNIX); s.connect('{}')",
        socket.display()
    );
    let r = common::run(
        std::process::Command::new("runuser").args(["-u", "nobody", "--", "python3", "-c", &probe]),
    );
    assert_ne!(r.code, 0, "nobody connected: {r:#?}");
    assert!(r.stderr.contains("Permission denied"), "{r:#?}");

    let original = plaintext("unix", "over the socket", "");
    sc.send_mx("sender@sink.test", &["alice@example.test"], &original, &[]);
    let inbox = sc.servers.wait_for_inbox("alice", 1);
    let stored = with_id(&inbox, "unix");
    assert_eq!(stored.len(), 1, "{}", sc.log());
    assert!(header_section(stored[0]).contains("Meshmail-At-Rest: v=1"));
}

#[test]
fn with_encrypt_and_flag_plaintext_to_a_local_fingerprint_address_is_stored_encrypted_and_flagged()
{
    let root = common::tempdir();
    let alice = common::init_account(root.path(), "alice@example.test");
    let gpg = Gpg::with_secret_of(&alice.home, root.path().join("gpg-alice"));
    let nsd = common::nsd_with_policies(root.path(), &[&alice]);
    let sc = Sidecar::start(Setup {
        filter_extra: "strong_inbound = \"encrypt-and-flag\"\n".into(),
        extra: format!("[policy]\ndns = \"{}\"\n", nsd.addr()),
        ..Setup::default()
    });
    let original = plaintext("flagged", "legacy sender", "");
    let r = sc.send_mx("sender@sink.test", &[&alice.strong], &original, &[]);
    assert!(r.stdout.contains("\"refused\": {}"), "{r:#?}");
    let inbox = sc.servers.wait_for_inbox("alice", 1);
    assert_eq!(inbox.len(), 1, "{}", sc.log());
    let head = header_section(&inbox[0]);
    assert!(
        head.contains("Meshmail-At-Rest: v=1; for=<alice@example.test>; arrived=plaintext-to-fingerprint-address;"),
        "{head}"
    );
    let armored = pgp_part(&inbox[0]);
    assert_eq!(
        pgp_recipients(&armored),
        common::gpg::encryption_key_ids(&alice.home),
        "the policy's key"
    );
    assert!(gpg
        .decrypt(&armored)
        .stdout
        .ends_with(std::str::from_utf8(&original).unwrap()));
    assert!(sc.sink_messages().is_empty(), "no bounce");
}
