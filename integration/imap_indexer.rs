//! The background indexer against a real Postfix and Dovecot: mail that arrives while `serve`
//! runs is decrypted and indexed before any client asks, a restart in the middle of a
//! catch-up neither decrypts a message twice nor misses one, an EXPUNGE removes the record, a
//! torn index file costs one record, and two sessions and the indexer reading the same new
//! messages decrypt each once. Decryptions are counted from meshmail's debug log
//! (`decrypted … by=…`, one line per decryption); index contents from `meshmail index
//! status --json`, which reads the index without changing it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::imap::{append, crlf, gpg_encrypt, pgp_mime};
use common::mail::{MailServers, Meshmail};
use common::raw_imap::RawImap;
use common::*;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

struct World {
    root: tempfile::TempDir,
    servers: MailServers,
    alice: TestAccount,
    /// One message gpg encrypted to Alice (PGP/MIME body), reused under many outer headers.
    armored: Vec<u8>,
}

const SECRET: &str = "The meeting moves to the persimmon orchard.";

fn world() -> World {
    let root = tempdir();
    let servers = MailServers::start();
    let (alice, _bob, g) = common::gpg::alice_and_bob(root.path());
    let inner = crlf(&format!(
        "Content-Type: text/plain; charset=us-ascii; protected-headers=\"v1\"\r\nSubject: Orchard plans\r\n\r\n{SECRET}\r\n"
    ));
    let armored = gpg_encrypt(&g, root.path(), &inner, &["-r", &alice.openpgp_fingerprint]);
    World {
        root,
        servers,
        alice,
        armored,
    }
}

impl World {
    fn message(&self, n: usize) -> Vec<u8> {
        let outer = format!("From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: [...]\r\nDate: Mon, 30 Nov 2026 10:00:00 +0000\r\nMessage-ID: <idx{n}@example.test>\r\nMIME-Version: 1.0\r\n");
        pgp_mime(&outer, &self.armored)
    }

    /// `n` encrypted messages stored straight into Alice's INBOX.
    fn append_to_inbox(&self, n: usize) {
        let messages: Vec<Vec<u8>> = (0..n).map(|i| self.message(i)).collect();
        let refs: Vec<&[u8]> = messages.iter().map(|m| m.as_slice()).collect();
        append(&self.servers, "alice", "INBOX", self.root.path(), &refs);
    }

    fn config(&self, extra: &str) -> String {
        self.servers
            .meshmail_config(&self.alice.home, "alice", None, extra)
    }

    /// `meshmail index status --json` for the configuration meshmail runs with.
    fn status(&self, m: &Meshmail) -> Vec<serde_json::Value> {
        let out = run(meshmail(&self.alice.home)
            .args(["index", "status", "--json", "--config"])
            .arg(m.dir.path().join("meshmail.toml")));
        out.ok();
        let account = out.json();
        account["mailboxes"].as_array().cloned().unwrap_or_default()
    }

    fn mailbox_status(&self, m: &Meshmail, mailbox: &str) -> Option<serde_json::Value> {
        self.status(m)
            .into_iter()
            .find(|s| s["mailbox"].as_str() == Some(mailbox))
    }
}

/// Decryptions logged so far, by whom (`session`, `indexer`) or all (`None`).
fn decryptions(log: &str, by: Option<&str>) -> usize {
    common::plain(log)
        .lines()
        .filter(|l| l.contains(" decrypted"))
        .filter(|l| by.is_none_or(|b| l.contains(&format!("by=\"{b}\""))))
        .count()
}

/// Decryptions of one UID of one mailbox.
fn decryptions_of(log: &str, mailbox: &str, uid: u32) -> usize {
    common::plain(log)
        .lines()
        .filter(|l| l.contains(" decrypted"))
        .filter(|l| {
            l.contains(&format!("mailbox={mailbox} ")) && l.contains(&format!(" uid={uid} "))
        })
        .count()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn login(port: u16, mailbox: &str) -> RawImap {
    let mut c = RawImap::connect(port);
    let r = c.command("a", "LOGIN alice secret");
    assert!(contains(&r, "a OK"), "{}", String::from_utf8_lossy(&r));
    let r = c.command("b", &format!("SELECT {mailbox}"));
    assert!(contains(&r, "b OK"), "{}", String::from_utf8_lossy(&r));
    c
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

fn count(hay: &[u8], needle: &str) -> usize {
    hay.windows(needle.len())
        .filter(|w| *w == needle.as_bytes())
        .count()
}

/// Postfix delivers `message` to Alice (SMTP to its port 25, then LMTP to Dovecot).
fn deliver(servers: &MailServers, dir: &Path, message: &[u8]) {
    let file = dir.join(format!("deliver-{}.eml", common::imap::rand_suffix()));
    std::fs::write(&file, message).expect("write");
    let r = run(Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{}", servers.base + 25)])
        .args(["--from", "bob@example.test", "--to", "alice@example.test"])
        .arg("--data")
        .arg(&file));
    assert_eq!(r.code, 0, "{r:#?}");
}

#[test]
fn mail_delivered_while_serving_is_indexed_before_the_client_asks_and_expunge_removes_it() {
    let w = world();
    let m = Meshmail::start(&w.config(""));
    // Thunderbird-like: logged in, INBOX selected, the indexer started with this login.
    let mut client = login(m.port, "INBOX");
    for n in 0..3 {
        deliver(&w.servers, w.root.path(), &w.message(n));
    }
    w.servers.wait_for_inbox("alice", 3);
    wait_until(
        "the indexer to decrypt 3 messages",
        Duration::from_secs(60),
        || decryptions(&m.log_text(), Some("indexer")) >= 3,
    );
    // The client hears of the new mail (Thunderbird would from its IDLE), then reads it.
    let r = client.command("n", "NOOP");
    assert!(
        contains(&r, "* 3 EXISTS"),
        "{}",
        String::from_utf8_lossy(&r)
    );
    let before = decryptions(&m.log_text(), None);
    let answer = client.command("c", "UID FETCH 1:* (BODY.PEEK[] RFC822.SIZE)");
    let after = decryptions(&m.log_text(), None);
    assert_eq!(
        count(&answer, SECRET),
        3,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(count(&answer, "Subject: Orchard plans"), 3);
    assert_eq!(
        before,
        after,
        "the client's first FETCH decrypted: {}",
        m.log_text()
    );
    assert_eq!(decryptions(&m.log_text(), Some("indexer")), 3);

    let inbox = w.mailbox_status(&m, "INBOX").expect("INBOX indexed");
    assert_eq!(inbox["records"], 3, "{inbox}");
    assert_eq!(inbox["scanned_to"], 3, "{inbox}");
    // The same for a person.
    let text = run(meshmail(&w.alice.home)
        .args(["index", "status", "--config"])
        .arg(m.dir.path().join("meshmail.toml")));
    text.ok();
    assert!(
        text.stdout.contains("alice:")
            && text.stdout.contains("INBOX (UIDVALIDITY ")
            && text
                .stdout
                .contains("3 indexed, scanned to UID 3 (server UIDNEXT 4, 3 messages; caught up)"),
        "{}",
        text.stdout
    );
    // The index holds no plaintext.
    for f in std::fs::read_dir(w.alice.home.join("imap-index")).expect("index dir") {
        let bytes = std::fs::read(f.expect("file").path()).expect("read");
        assert!(!contains(&bytes, "persimmon") && !contains(&bytes, "Orchard"));
    }

    // An EXPUNGE through the client: the indexer (in IDLE) removes the record.
    let r = client.command("d", "UID STORE 2 +FLAGS (\\Deleted)");
    assert!(contains(&r, "d OK"));
    let r = client.command("e", "EXPUNGE");
    assert!(contains(&r, "e OK"));
    wait_until(
        "the record of the expunged message to go",
        Duration::from_secs(30),
        || {
            w.mailbox_status(&m, "INBOX")
                .is_some_and(|s| s["records"] == 2)
        },
    );
    let answer = client.command("f", "UID FETCH 1:* (BODY.PEEK[])");
    assert_eq!(count(&answer, SECRET), 2);
    assert_eq!(
        decryptions(&m.log_text(), None),
        after,
        "nothing decrypted again"
    );
}

#[test]
fn a_restart_in_the_middle_of_a_catch_up_decrypts_each_message_once_and_misses_none() {
    let w = world();
    const N: usize = 1500;
    w.append_to_inbox(N);
    let config = w.config("index_mailboxes = [\"INBOX\"]\n");

    // First run: a client logs in; the indexer catches up and is killed on its way.
    let mut first = Meshmail::start(&config);
    let _client = login(first.port, "INBOX");
    wait_until(
        "the indexer to start decrypting",
        Duration::from_secs(60),
        || decryptions(&first.log_text(), Some("indexer")) > 0,
    );
    run(Command::new("kill").args(["-9", &first.pid().to_string()]));
    first.stop();
    let first_log = first.log_text();
    let decrypted_first = decryptions(&first_log, Some("indexer"));
    let first_status = w.mailbox_status(&first, "INBOX").expect("INBOX indexed");
    let kept = first_status["records"].as_u64().expect("records") as usize;
    assert!(
        kept < N,
        "the catch-up finished before the kill: the test saw no restart ({first_status})"
    );
    // A record cut short by the kill is not counted: it is lost, and only it.
    assert!(
        kept + 1 >= decrypted_first.saturating_sub(2 * 64),
        "{first_status}"
    );
    drop(first);

    // Second run: the catch-up goes on from the checkpoint, skipping what is indexed.
    let second = Meshmail::start(&config);
    let mut client = login(second.port, "INBOX");
    wait_until(
        "the index to hold every message",
        Duration::from_secs(120),
        || {
            w.mailbox_status(&second, "INBOX")
                .is_some_and(|s| s["records"] == N as u64 && s["scanned_to"] == N as u64)
        },
    );
    let log = second.log_text();
    assert_eq!(
        decryptions(&log, None),
        N - kept,
        "the second run decrypted exactly what the first had not indexed"
    );
    let status = w.mailbox_status(&second, "INBOX").expect("status");
    assert_eq!(
        status["dead_records"], 0,
        "a message indexed twice: {status}"
    );
    assert!(log.contains("IMAP index caught up"), "{log}");
    // Nothing missed: the whole mailbox is read without a decryption.
    let answer = client.command("c", "UID FETCH 1:* (BODY.PEEK[])");
    assert_eq!(count(&answer, SECRET), N);
    assert_eq!(decryptions(&second.log_text(), None), N - kept);
    drop(client);
    drop(second);

    // Mail deleted while meshmail was down loses its records at the next catch-up.
    let mut direct = RawImap::connect(w.servers.imap());
    direct.command("a", "LOGIN alice secret");
    direct.command("b", "SELECT INBOX");
    let r = direct.command("c", "UID STORE 1:10 +FLAGS.SILENT (\\Deleted)");
    assert!(contains(&r, "c OK"), "{}", String::from_utf8_lossy(&r));
    let r = direct.command("d", "EXPUNGE");
    assert!(contains(&r, "d OK"), "{}", String::from_utf8_lossy(&r));
    let third = Meshmail::start(&config);
    let _client = login(third.port, "INBOX");
    wait_until(
        "the records of the expunged messages to go",
        Duration::from_secs(60),
        || {
            w.mailbox_status(&third, "INBOX")
                .is_some_and(|s| s["records"] == (N - 10) as u64)
        },
    );
    assert_eq!(decryptions(&third.log_text(), None), 0);
}

#[test]
fn a_sender_cannot_stop_the_indexer_and_another_login_gets_nothing_from_it() {
    let w = world();
    let m = Meshmail::start(&w.config(""));
    // Another user of the same server, through meshmail, with mail encrypted to Alice in
    // their own INBOX: relayed untouched, no indexer, no decryption, no index.
    append(
        &w.servers,
        "bob",
        "INBOX",
        w.root.path(),
        &[&w.message(100)],
    );
    let mut bob = RawImap::connect(m.port);
    bob.command("a", "LOGIN bob secret");
    bob.command("b", "SELECT INBOX");
    let r = bob.command("c", "UID FETCH 1:* (BODY.PEEK[])");
    assert!(contains(&r, "-----BEGIN PGP MESSAGE-----") && !contains(&r, SECRET));
    std::thread::sleep(Duration::from_millis(500));
    let log = common::plain(&m.log_text());
    assert_eq!(decryptions(&log, None), 0, "{log}");
    assert!(!log.contains("IMAP index"), "{log}");
    assert!(w.status(&m).is_empty(), "an index for another login");

    // Alice's sessions start the indexer. A sender's broken message (an armour that is no
    // OpenPGP message) comes first; the indexer goes on with the next ones.
    let mut client = login(m.port, "INBOX");
    let broken = pgp_mime(
        "From: Mallory <m@example.test>\r\nTo: alice@example.test\r\nSubject: [...]\r\nMessage-ID: <broken@example.test>\r\nMIME-Version: 1.0\r\n",
        b"-----BEGIN PGP MESSAGE-----\n\nhQEMA0xxxxnotreally\n=AAAA\n-----END PGP MESSAGE-----\n",
    );
    deliver(&w.servers, w.root.path(), &broken);
    deliver(&w.servers, w.root.path(), &w.message(1));
    w.servers.wait_for_inbox("alice", 2);
    wait_until("the indexer to index both", Duration::from_secs(60), || {
        w.mailbox_status(&m, "INBOX")
            .is_some_and(|s| s["records"] == 2)
    });
    client.command("n", "NOOP");
    let before = decryptions(&m.log_text(), None);
    let answer = client.command("c", "UID FETCH 1:* (BODY.PEEK[])");
    assert_eq!(
        decryptions(&m.log_text(), None),
        before,
        "read from the index"
    );
    assert_eq!(
        count(&answer, SECRET),
        1,
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(count(&answer, "Meshmail-Result: failed"), 1);
    // Bob's session is still untouched by any of it.
    let r = bob.command("d", "UID FETCH 1:* (BODY.PEEK[])");
    assert!(!contains(&r, SECRET) && !contains(&r, "Meshmail-Result"));
}

#[test]
fn a_torn_index_file_costs_one_record_only() {
    let w = world();
    w.append_to_inbox(20);
    let config = w.config("indexer = false\n");
    let mut m = Meshmail::start(&config);
    let mut client = login(m.port, "INBOX");
    let answer = client.command("c", "UID FETCH 1:* (BODY.PEEK[])");
    assert_eq!(count(&answer, SECRET), 20);
    drop(client);
    m.stop(); // the records queued by the session are written at shutdown
    let status = w.mailbox_status(&m, "INBOX").expect("indexed");
    assert_eq!(status["records"], 20, "{status}");

    // A crash mid-write: the file ends in the middle of its last record.
    let file = std::fs::read_dir(w.alice.home.join("imap-index"))
        .expect("dir")
        .map(|f| f.expect("file").path())
        .find(|p| p.extension().is_some_and(|e| e == "idx3"))
        .expect("an index file");
    let len = std::fs::metadata(&file).expect("meta").len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&file)
        .expect("open")
        .set_len(len - 5)
        .expect("truncate");
    let status = w.mailbox_status(&m, "INBOX").expect("indexed");
    assert_eq!(
        status["records"], 19,
        "the torn record alone is gone: {status}"
    );
    drop(m);

    let m = Meshmail::start(&config);
    let mut client = login(m.port, "INBOX");
    let answer = client.command("c", "UID FETCH 1:* (BODY.PEEK[])");
    assert_eq!(count(&answer, SECRET), 20, "every message still shown");
    assert_eq!(
        decryptions(&m.log_text(), None),
        1,
        "only the torn record was lost"
    );
    // `indexer = false`: no background indexer ran.
    assert!(!common::plain(&m.log_text()).contains("IMAP index caught up"));
    // Its record is written again, after the cut: the file reads whole.
    wait_until(
        "the record to be written again",
        Duration::from_secs(30),
        || {
            w.mailbox_status(&m, "INBOX")
                .is_some_and(|s| s["records"] == 20)
        },
    );
}

#[test]
fn two_sessions_and_the_indexer_decrypt_each_new_message_once() {
    let w = world();
    let m = Meshmail::start(&w.config(""));
    let mut a = login(m.port, "INBOX");
    let mut b = login(m.port, "INBOX");
    const N: usize = 30;
    w.append_to_inbox(N);
    // Both sessions read the new mail at once, while the indexer works on it too.
    let reader = |c: &mut RawImap, tag: &str| {
        let start = Instant::now();
        loop {
            let answer = c.command(tag, "UID FETCH 1:* (BODY.PEEK[])");
            if count(&answer, SECRET) == N {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "never saw all messages"
            );
        }
    };
    std::thread::scope(|s| {
        s.spawn(|| reader(&mut a, "x"));
        s.spawn(|| reader(&mut b, "y"));
    });
    wait_until("the indexer to finish", Duration::from_secs(30), || {
        w.mailbox_status(&m, "INBOX")
            .is_some_and(|s| s["scanned_to"] == N as u64)
    });
    let log = m.log_text();
    for uid in 1..=N as u32 {
        assert_eq!(decryptions_of(&log, "INBOX", uid), 1, "UID {uid}:\n{log}");
    }
    assert_eq!(decryptions(&log, None), N);
}
