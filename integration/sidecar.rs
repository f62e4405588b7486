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
