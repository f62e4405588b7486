//! The IMAP proxy against its two adversaries, with a real Dovecot and two users:
//!
//! - another user of the same server who logs in through meshmail (bob, while meshmail maps
//!   alice): whatever he sends, he never receives the plaintext of a message encrypted to
//!   alice, even one stored in his own mailbox;
//! - any sender on the internet, who chooses the bytes of a message in alice's mailbox: a
//!   ten-deep message/rfc822 or 8-bit Latin-1 headers do not break a folder, and what meshmail
//!   does not change reads byte for byte as Dovecot serves it.
//!
//! Plus what the client must be able to rely on: a message expunged by another session costs
//! only itself, new mail is decrypted on its first FETCH, and a 30 MB encrypted message read
//! in Thunderbird's 64 KiB pieces is decrypted once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::gpg::Gpg;
use common::imap::{append, crlf, expected_view, gpg_encrypt, pgp_mime};
use common::mail::{MailServers, Meshmail};
use common::raw_imap::{responses, RawImap};
use common::*;
use std::time::Duration;

/// A word only the plaintext of the encrypted message holds.
const SECRET: &str = "zanzibar-quokka";

struct Setup {
    root: tempfile::TempDir,
    servers: MailServers,
    alice: TestAccount,
    /// Bob's GnuPG home with Alice's public key: any sender's side.
    gpg: Gpg,
}

fn setup() -> Setup {
    let root = tempdir();
    let servers = MailServers::start();
    let (alice, _bob, gpg) = common::gpg::alice_and_bob(root.path());
    Setup {
        root,
        servers,
        alice,
        gpg,
    }
}

impl Setup {
    /// A PGP/MIME message to Alice whose inner part says `text`, with `subject` protected.
    fn encrypted(&self, name: &str, subject: &str, text: &str) -> (Vec<u8>, Vec<u8>) {
        let outer = format!("From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: [...]\r\nDate: Fri, 27 Nov 2026 10:00:00 +0000\r\nMessage-ID: <{name}@example.test>\r\nMIME-Version: 1.0\r\n");
        let inner = crlf(&format!("Content-Type: text/plain; charset=us-ascii; protected-headers=\"v1\"\r\nSubject: {subject}\r\n\r\n{text}\r\n"));
        let armored = gpg_encrypt(
            &self.gpg,
            self.root.path(),
            &inner,
            &["-r", &self.alice.openpgp_fingerprint],
        );
        let view = expected_view("decrypted; unsigned", &outer, Some(subject), &inner);
        (pgp_mime(&outer, &armored), view)
    }

    fn meshmail(&self, extra: &str) -> Meshmail {
        Meshmail::start(
            &self
                .servers
                .meshmail_config(&self.alice.home, "alice", None, extra),
        )
    }
}

/// meshmail's log without its colour codes.
fn plain_log(mm: &Meshmail) -> String {
    let log = mm.log_text();
    let mut out = String::with_capacity(log.len());
    let mut escape = false;
    for ch in log.chars() {
        match (escape, ch) {
            (false, '\x1b') => escape = true,
            (true, 'm') => escape = false,
            (true, _) => {}
            (false, c) => out.push(c),
        }
    }
    out
}

/// The data of a FETCH response's first literal (`{n}` CRLF, then n bytes).
fn first_literal(fetch: &[u8]) -> &[u8] {
    let open = fetch.iter().position(|&b| b == b'{').expect("literal");
    let close = open
        + fetch[open..]
            .iter()
            .position(|&b| b == b'}')
            .expect("close");
    let len: usize = text(&fetch[open + 1..close]).parse().expect("length");
    &fetch[close + 3..close + 3 + len]
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn b64(bytes: &[u8]) -> String {
    data_encoding::BASE64.encode(bytes)
}

#[test]
fn another_login_never_receives_the_accounts_plaintext_whatever_it_sends() {
    let s = setup();
    let (stored, _) = s.encrypted("m1", "Private", &format!("The word is {SECRET}."));
    // The same ciphertext in Bob's mailbox (he got a copy, or put it there) and in Alice's.
    append(&s.servers, "bob", "INBOX", s.root.path(), &[&stored]);
    append(&s.servers, "alice", "INBOX", s.root.path(), &[&stored]);
    let mm = s.meshmail("");
    let fetch_all = "FETCH 1:* (BODY.PEEK[] BODYSTRUCTURE ENVELOPE)";
    let attacks: Vec<(&str, String)> = vec![
        (
            "a reused tag in flight, then LOGIN as the mapped user",
            format!("a LOGIN bob secret\r\nx NOOP\r\nx LOGIN alice wrong\r\ns SELECT INBOX\r\nf {fetch_all}\r\n"),
        ),
        (
            "a second LOGIN, with the mapped user's right password",
            format!("a LOGIN bob secret\r\nb LOGIN alice secret\r\nc SELECT INBOX\r\nd {fetch_all}\r\n"),
        ),
        (
            "a failed LOGIN as the mapped user, then his own, pipelined",
            format!("a LOGIN alice wrong\r\nb LOGIN bob secret\r\nc SELECT INBOX\r\nd {fetch_all}\r\n"),
        ),
        (
            "AUTHENTICATE PLAIN naming the mapped user as authorization identity",
            format!(
                "a AUTHENTICATE PLAIN {}\r\nb AUTHENTICATE PLAIN {}\r\nc SELECT INBOX\r\nd {fetch_all}\r\n",
                b64(b"alice\0bob\0secret"),
                b64(b"\0bob\0secret")
            ),
        ),
        (
            "AUTHENTICATE after LOGIN, every tag the same",
            format!(
                "a LOGIN bob secret\r\na AUTHENTICATE PLAIN {}\r\na SELECT INBOX\r\na UID {fetch_all}\r\n",
                b64(b"\0alice\0wrong")
            ),
        ),
        (
            "SEARCH for the secret word and section fetches",
            format!("a LOGIN bob secret\r\nb SELECT INBOX\r\nc UID SEARCH BODY {SECRET}\r\nd FETCH 1 (BODY.PEEK[1] BODY.PEEK[TEXT] RFC822.SIZE)\r\n"),
        ),
    ];
    for (what, script) in &attacks {
        let mut c = RawImap::connect(mm.port);
        c.send(script.as_bytes());
        c.send(b"z LOGOUT\r\n");
        let got = text(&c.drain(Duration::from_secs(3)));
        assert!(
            !got.contains(SECRET),
            "{what}: the plaintext leaked:\n{got}"
        );
        assert!(
            got.contains("BEGIN PGP MESSAGE") || got.contains("c OK"),
            "{what}: the FETCH did not run, so the test proves nothing:\n{got}"
        );
        assert!(
            !got.contains("Meshmail-Result"),
            "{what}: a view was made:\n{got}"
        );
    }
    // The control: the mapped account does see the plaintext through the same meshmail, so
    // the word above would have shown had another login been given the account.
    let mut c = RawImap::connect(mm.port);
    c.command("a", "LOGIN alice secret");
    c.command("b", "SELECT INBOX");
    let got = text(&c.command("c", "FETCH 1 (BODY.PEEK[])"));
    assert!(got.contains(SECRET), "the control failed: {got}");
    let log = plain_log(&mm);
    assert_eq!(
        log.matches("mapped=true").count(),
        1,
        "only the control was mapped: {log}"
    );
    assert_eq!(
        log.matches("user=bob mapped=false").count(),
        attacks.len(),
        "{log}"
    );
}

#[test]
fn a_sender_cannot_break_a_folder_and_plaintext_reads_as_dovecot_serves_it() {
    let s = setup();
    // Ten message/rfc822 parts, each inside the one before.
    let mut nested =
        b"From: deep@example.test\r\nSubject: innermost\r\n\r\nthe bottom\r\n".to_vec();
    for level in 0..10 {
        let mut outer = format!("From: level{level}@example.test\r\nSubject: level {level}\r\nMIME-Version: 1.0\r\nContent-Type: message/rfc822\r\n\r\n").into_bytes();
        outer.extend_from_slice(&nested);
        nested = outer;
    }
    // 8-bit Latin-1 in the headers, as old mailers send them.
    let latin1 = b"From: Ren\xe9 Fran\xe7ois <rene@example.test>\r\nTo: alice@example.test\r\nSubject: Caf\xe9 cr\xe8me \xe0 la carte\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=iso-8859-1; name=\"r\xe9sum\xe9.txt\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\nD\xe9j\xe0 vu.\r\n".to_vec();
    // An encrypted message whose inner header is Latin-1 too, and its plaintext twin.
    let outer = "From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: [...]\r\nDate: Fri, 27 Nov 2026 11:00:00 +0000\r\nMessage-ID: <l1@example.test>\r\nMIME-Version: 1.0\r\n";
    let inner = b"Content-Type: text/plain; charset=iso-8859-1; protected-headers=\"v1\"\r\nSubject: Cr\xe8me br\xfbl\xe9e\r\nContent-Transfer-Encoding: 8bit\r\n\r\nSecret d\xe9sert.\r\n".to_vec();
    let armored = gpg_encrypt(
        &s.gpg,
        s.root.path(),
        &inner,
        &["-r", &s.alice.openpgp_fingerprint],
    );
    let mut view = b"Meshmail-Result: decrypted; unsigned\r\n".to_vec();
    for line in outer.split("\r\n").filter(|l| !l.is_empty()) {
        if line.starts_with("Subject:") {
            view.extend_from_slice(b"Subject: Cr\xe8me br\xfbl\xe9e\r\n");
        } else {
            view.extend(format!("{line}\r\n").into_bytes());
        }
    }
    view.extend_from_slice(b"Content-Type: text/plain; charset=iso-8859-1; protected-headers=\"v1\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\nSecret d\xe9sert.\r\n");
    let encrypted = pgp_mime(outer, &armored);
    // A plaintext message that claims meshmail verified it: shown without that claim (the
    // only change meshmail makes to a plaintext message), and otherwise as Dovecot serves it.
    let honest = b"From: Mallory <mallory@example.test>\r\nTo: alice@example.test\r\nSubject: Trust me\r\nMIME-Version: 1.0\r\nContent-Type: text/plain\r\n\r\nI am your bank.\r\n".to_vec();
    let mut forged = b"Meshmail-Result: decrypted; signed-by=bank; verified=yes\r\n".to_vec();
    forged.extend_from_slice(&honest);
    append(
        &s.servers,
        "alice",
        "INBOX",
        s.root.path(),
        &[&nested, &latin1, &encrypted, &forged],
    );
    append(
        &s.servers,
        "alice",
        "Oracle",
        s.root.path(),
        &[&view, &honest],
    );
    let mm = s.meshmail("");

    let items = "(UID RFC822.SIZE FLAGS BODYSTRUCTURE BODY ENVELOPE BODY.PEEK[HEADER] BODY.PEEK[1] BODY.PEEK[])";
    let read = |port: u16, mailbox: &str, set: &str| -> (String, Vec<Vec<u8>>) {
        let mut c = RawImap::connect(port);
        c.command("a", "LOGIN alice secret");
        c.command("b", &format!("EXAMINE {mailbox}"));
        let got = c.command("c", &format!("FETCH {set} {items}"));
        let all = responses(&got);
        let tagged = text(all.last().map(Vec::as_slice).unwrap_or_default());
        let fetches = all
            .into_iter()
            .filter(|r| r.windows(7).any(|w| w == b" FETCH "))
            .collect();
        (tagged, fetches)
    };
    let (tagged, through) = read(mm.port, "INBOX", "1:*");
    assert!(
        tagged.starts_with("c OK"),
        "the folder's FETCH failed: {tagged}"
    );
    assert_eq!(through.len(), 4, "every message answered");
    let (_, direct) = read(s.servers.imap(), "INBOX", "1:*");
    // The plaintext messages meshmail does not change: Dovecot's bytes.
    for i in 0..2 {
        assert_eq!(
            text(&through[i]),
            text(&direct[i]),
            "message {} differs from Dovecot's",
            i + 1
        );
        assert_eq!(through[i], direct[i]);
    }
    // The encrypted one: the same bytes as Dovecot serves for its plaintext twin, items after
    // the sequence number (literal lengths are those of the 8-bit bytes sent).
    let (_, twin) = read(s.servers.imap(), "Oracle", "1:2");
    let after_uid = |r: &[u8]| -> Vec<u8> {
        let at = r
            .windows(12)
            .position(|w| w == b"RFC822.SIZE ")
            .expect("items");
        r[at..].to_vec()
    };
    for (i, j) in [(2, 0), (3, 1)] {
        assert_eq!(text(&after_uid(&through[i])), text(&after_uid(&twin[j])));
        assert_eq!(after_uid(&through[i]), after_uid(&twin[j]));
    }
    assert!(!text(&through[3]).contains("Meshmail-Result"));
    // A Thunderbird-style header sync and a SEARCH over the folder work too.
    let mut c = RawImap::connect(mm.port);
    c.command("a", "LOGIN alice secret");
    c.command("b", "SELECT INBOX");
    let sync = text(&c.command(
        "c",
        "UID FETCH 1:* (UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Subject Date Content-Type)])",
    ));
    assert!(sync.contains("c OK"), "{sync}");
    let search = text(&c.command("d", "SEARCH TEXT desert"));
    assert!(search.contains("d OK"), "{search}");
}

#[test]
fn a_message_expunged_meanwhile_costs_only_itself() {
    let s = setup();
    let (a, _) = s.encrypted("e1", "First", "first body, apple");
    let (b, _) = s.encrypted("e2", "Second", "second body, banana");
    let (c, _) = s.encrypted("e3", "Third", "third body, cherry");
    append(&s.servers, "alice", "INBOX", s.root.path(), &[&a, &b, &c]);
    // A first sync indexes all three; meshmail restarts with an empty cache.
    let mut mm = s.meshmail("");
    let mut client = RawImap::connect(mm.port);
    client.command("a", "LOGIN alice secret");
    client.command("b", "SELECT INBOX");
    let synced = text(&client.command("c", "UID FETCH 1:3 (ENVELOPE)"));
    assert!(synced.contains("Third"), "{synced}");
    client.command("z", "LOGOUT");
    mm.stop();
    let mm = s.meshmail("");
    let mut client = RawImap::connect(mm.port);
    client.command("a", "LOGIN alice secret");
    client.command("b", "SELECT INBOX");
    // Another session (straight to Dovecot) expunges the first message.
    let mut other = RawImap::connect(s.servers.imap());
    other.command("a", "LOGIN alice secret");
    other.command("b", "SELECT INBOX");
    other.command("c", "UID STORE 1 +FLAGS.SILENT (\\Deleted)");
    let expunged = text(&other.command("d", "EXPUNGE"));
    assert!(expunged.contains("d OK"), "{expunged}");
    // The client has not been told yet. Its UID FETCH names messages meshmail has indexed
    // whole: they are answered from the index as long as the server still answers for them
    // in this session (as Dovecot answers cached items of a message expunged elsewhere until
    // it has told the session); one that is gone is left out. Either way the FETCH succeeds.
    let got = text(&client.command("c", "UID FETCH 1:2 (BODY.PEEK[1])"));
    assert!(
        got.contains("banana"),
        "the message still there was not answered: {got}"
    );
    assert!(got.contains("c OK"), "the whole FETCH failed: {got}");
    // The session goes on: once told of the expunge, the two left are messages 1 and 2.
    let noop = text(&client.command("d", "NOOP"));
    let told = format!("{got}{noop}");
    assert!(told.contains("* 1 EXPUNGE"), "{told}");
    let rest = text(&client.command("e", "FETCH 1:2 (ENVELOPE BODY.PEEK[1])"));
    assert!(
        rest.contains("banana") && rest.contains("cherry") && rest.contains("e OK"),
        "{rest}"
    );
}

#[test]
fn new_mail_is_decrypted_on_its_first_fetch() {
    let s = setup();
    let (first, _) = s.encrypted("n1", "Old news", "already here");
    append(&s.servers, "alice", "INBOX", s.root.path(), &[&first]);
    let mm = s.meshmail("");
    let mut client = RawImap::connect(mm.port);
    client.command("a", "LOGIN alice secret");
    client.command("b", "SELECT INBOX");
    // meshmail's own connection exists and has the mailbox open.
    let warm = text(&client.command("c", "FETCH 1 (ENVELOPE)"));
    assert!(warm.contains("Old news"), "{warm}");
    // New mail arrives while the client is connected.
    let (second, _) = s.encrypted("n2", "Fresh news", "just arrived: cherry");
    append(&s.servers, "alice", "INBOX", s.root.path(), &[&second]);
    let noop = text(&client.command("d", "NOOP"));
    assert!(noop.contains("* 2 EXISTS"), "{noop}");
    // Its first FETCH (no body in the response: meshmail fetches the ciphertext itself).
    let got = text(&client.command("e", "UID FETCH 2 (ENVELOPE BODYSTRUCTURE)"));
    assert!(
        got.contains("Fresh news") && got.contains("e OK"),
        "new mail not shown decrypted: {got}"
    );
    assert!(!got.contains("\"encrypted\""), "{got}");
    // A second session of the account shares meshmail's own connection: Dovecot sees the two
    // client logins and one of meshmail's.
    let logins = || {
        std::fs::read_to_string(s.servers.dir().join("dovecot/dovecot.log"))
            .unwrap_or_default()
            .matches("Login: user=<alice>")
            .count()
    };
    let before = logins();
    let mut second = RawImap::connect(mm.port);
    second.command("a", "LOGIN alice secret");
    second.command("b", "SELECT INBOX");
    let (third, _) = s.encrypted("n3", "Third news", "for the second session");
    append(&s.servers, "alice", "INBOX", s.root.path(), &[&third]);
    second.command("c", "NOOP");
    let got = text(&second.command("d", "UID FETCH 3 (ENVELOPE BODYSTRUCTURE)"));
    assert!(got.contains("Third news"), "{got}");
    // The append itself logged in once.
    assert_eq!(
        logins() - before,
        2,
        "the second session started a connection of its own"
    );
}

#[test]
fn a_30_mb_message_read_in_64_kib_partials_is_decrypted_once() {
    let s = setup();
    let mut body = String::with_capacity(31 << 20);
    let mut n = 0u64;
    while body.len() < 30 << 20 {
        body.push_str(&format!(
            "line {n:08} of a long report, nothing secret here at all\r\n"
        ));
        n += 1;
    }
    let (stored, view) = s.encrypted("big", "The big one", &body);
    append(&s.servers, "alice", "INBOX", s.root.path(), &[&stored]);
    // A cache far smaller than the message.
    let mm = s.meshmail("cache_bytes = 4194304\n");
    let mut c = RawImap::connect(mm.port);
    c.command("a", "LOGIN alice secret");
    c.command("b", "SELECT INBOX");
    let size = text(&c.command("c", "UID FETCH 1 (RFC822.SIZE)"));
    assert!(
        size.contains(&format!("RFC822.SIZE {}", view.len())),
        "{size} (expected {})",
        view.len()
    );
    let mut read = Vec::with_capacity(view.len());
    let mut offset = 0;
    let mut k = 0;
    while offset < view.len() {
        k += 1;
        let tag = format!("p{k}");
        let got = c.command(&tag, &format!("UID FETCH 1 (BODY.PEEK[]<{offset}.65536>)"));
        read.extend_from_slice(first_literal(&responses(&got)[0]));
        offset += 65536;
    }
    assert!(k > 400, "{k} partials");
    assert_eq!(read.len(), view.len());
    assert!(read == view, "the partials do not add up to the view");
    let built = mm.log_text().matches("view built").count();
    assert_eq!(built, 1, "decrypted {built} times for {k} partials");
}

#[test]
fn another_login_reads_a_message_larger_than_meshmail_holds_as_it_arrives() {
    let s = setup();
    // Bob's plaintext message of 40 MB, more than meshmail queues for a slow client (16 MiB);
    // meshmail holds responses up to 2 MB (twice max_message_size) when it reads them.
    let mut message =
        b"From: Carol <carol@example.test>\r\nTo: bob@example.test\r\nSubject: big\r\n\r\n"
            .to_vec();
    let mut n = 0u64;
    while message.len() < 40 << 20 {
        message.extend_from_slice(format!("line {n:08} {{5}} ) BODY[] \r\n").as_bytes());
        n += 1;
    }
    append(&s.servers, "bob", "INBOX", s.root.path(), &[&message]);
    let mm = s.meshmail("[limits]\nmax_message_size = 1048576\n");
    let hwm = || peak_rss_kb(mm.pid());
    let mut c = RawImap::connect(mm.port);
    assert!(text(&c.command("a", "LOGIN bob secret")).contains("a OK"));
    c.command("b", "SELECT INBOX");
    let before = hwm();
    let got = c.command("f", "UID FETCH 1 (UID BODY.PEEK[])");
    let r = responses(&got);
    let literal = first_literal(&r[0]);
    assert_eq!(literal.len(), message.len());
    assert!(literal == &message[..], "the message arrived changed");
    assert!(
        text(&got).contains("f OK"),
        "{}",
        text(&got[got.len() - 200..])
    );
    // The session goes on.
    assert!(text(&c.command("n", "NOOP")).contains("n OK"));
    // meshmail held a bounded part of it, not the whole message (was: BYE, too large).
    let grew = hwm().saturating_sub(before);
    assert!(
        grew < 24 << 10,
        "peak RSS grew by {grew} kB for a 40 MB message"
    );
}
