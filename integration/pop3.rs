//! The POP3 proxy against a real Dovecot POP3 server, read with python's poplib and fetchmail:
//! decrypted mail for the mapped login with sizes that agree, other logins untouched, TLS both
//! ways, STLS injection and long lines refused, and a server that stops mid-message.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::gpg::Gpg;
use common::imap::{append, crlf, gpg_encrypt, locked_account_with_a_message, pgp_mime};
use common::mail::{MailServers, Meshmail};
use common::*;
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Bob's maildrop: two messages from Alice encrypted by gpg (the Subject protected inside,
/// a body line starting with a dot), and one in plaintext.
struct Maildrop {
    servers: MailServers,
    bob: TestAccount,
    stored: Vec<Vec<u8>>,
    root: tempfile::TempDir,
}

const SUBJECTS: [&str; 2] = ["Harvest plans", "Cellar inventory"];

fn bobs_maildrop() -> Maildrop {
    let root = tempdir();
    let servers = MailServers::start();
    let alice = init_account(root.path(), "alice@example.test");
    let bob = init_account(root.path(), "bob@example.test");
    let g = Gpg::with_secret_of(&alice.home, root.path().join("gpg-alice"));
    g.import_public(&bob.home);
    let mut stored: Vec<Vec<u8>> = SUBJECTS
        .iter()
        .enumerate()
        .map(|(i, subject)| {
            let inner = crlf(&format!("Content-Type: text/plain; charset=us-ascii; protected-headers=\"v1\"\r\nSubject: {subject}\r\n\r\nPick the quinces ({i}).\r\n.a line that starts with a dot\r\n.\r\nthe end\r\n"));
            let armored = gpg_encrypt(&g, root.path(), &inner, &["-r", &bob.openpgp_fingerprint]);
            pgp_mime(
                &format!("From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: [...]\r\nDate: Thu, 26 Nov 2026 1{i}:00:00 +0000\r\nMessage-ID: <pop{i}@example.test>\r\nMIME-Version: 1.0\r\n"),
                &armored,
            )
        })
        .collect();
    stored.push(crlf("From: Carol <carol@example.test>\r\nTo: bob@example.test\r\nSubject: Plain lunch\r\nMessage-ID: <plain@example.test>\r\n\r\nSoup at noon.\r\n..two dots\r\n"));
    let refs: Vec<&[u8]> = stored.iter().map(|m| m.as_slice()).collect();
    append(&servers, "bob", "INBOX", root.path(), &refs);
    Maildrop {
        servers,
        bob,
        stored,
        root,
    }
}

fn pop3_client() -> Command {
    let mut c = Command::new("python3");
    c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/tools/pop3_client.py"));
    c
}

/// What poplib saw of a maildrop (see `pop3_client.py fetch`).
struct Seen {
    json: serde_json::Value,
}

impl Seen {
    fn fetch(port: u16, user: &str, mode: &str) -> Seen {
        let out = run(pop3_client().args([
            "fetch",
            "127.0.0.1",
            &port.to_string(),
            user,
            "secret",
            mode,
        ]));
        assert_eq!(out.code, 0, "{out:#?}");
        Seen {
            json: serde_json::from_str(out.stdout.trim()).expect("json"),
        }
    }
    fn bytes(&self, field: &str, n: usize) -> Vec<u8> {
        let text = self.json[field][n.to_string()].as_str().expect("base64");
        data_encoding::BASE64
            .decode(text.as_bytes())
            .expect("base64")
    }
    fn message(&self, n: usize) -> Vec<u8> {
        self.bytes("messages", n)
    }
    fn text(&self, n: usize) -> String {
        String::from_utf8_lossy(&self.message(n)).into_owned()
    }
    fn sizes(&self, field: &str) -> BTreeMap<String, u64> {
        serde_json::from_value(self.json[field].clone()).expect("sizes")
    }
    fn count(&self) -> usize {
        self.json["list"].as_object().map_or(0, |o| o.len())
    }
}

fn decryptions(m: &Meshmail) -> usize {
    plain(&m.log_text())
        .lines()
        .filter(|l| l.contains(" decrypted") && l.contains("by=\"pop3\""))
        .count()
}

#[test]
fn poplib_reads_decrypted_mail_through_meshmail_with_sizes_that_agree() {
    let d = bobs_maildrop();
    let config = d.servers.meshmail_pop3_config(&d.bob.home, "bob", "");
    let mut m = Meshmail::start(&config);
    let direct = Seen::fetch(d.servers.pop3(), "bob", "stls");
    let seen = Seen::fetch(m.port, "bob", "plain");
    assert_eq!(seen.count(), 3, "{}", seen.json);
    // Unique-ids are the server's own.
    assert_eq!(seen.json["uidl"], direct.json["uidl"]);
    for (i, subject) in SUBJECTS.iter().enumerate() {
        let n = i + 1;
        let text = seen.text(n);
        assert!(text.contains(&format!("Subject: {subject}\r\n")), "{text}");
        assert!(text.contains("Meshmail-Result: decrypted"), "{text}");
        assert!(
            text.contains(&format!(
                "Pick the quinces ({i}).\r\n.a line that starts with a dot\r\n.\r\nthe end\r\n"
            )),
            "{text}"
        );
        assert!(!text.contains("BEGIN PGP MESSAGE"), "{text}");
        assert!(
            !direct.text(n).contains(subject),
            "the server holds ciphertext only"
        );
        // TOP n 2: the decrypted header and the body's first two lines.
        let top = String::from_utf8(seen.bytes("top", n)).expect("utf-8");
        let (header, body) = text.split_once("\r\n\r\n").expect("header");
        let first_two: Vec<&str> = body.split_inclusive("\r\n").take(2).collect();
        assert_eq!(top, format!("{header}\r\n\r\n{}", first_two.concat()));
    }
    // curl, another client nobody here wrote, reads the same view.
    let curl = run(Command::new("curl").args([
        "-s",
        "-u",
        "bob:secret",
        &format!("pop3://127.0.0.1:{}/1", m.port),
    ]));
    assert_eq!(curl.stdout.as_bytes(), seen.message(1), "{curl:#?}");
    // The plaintext message is the server's, byte for byte.
    assert_eq!(seen.message(3), direct.message(3));
    assert_eq!(seen.message(3), d.stored[2]);
    // Sizes: what RETR served (dot-stuffing excluded), in LIST and STAT once known; before
    // the first RETR an encrypted message's is the server's (the README says why).
    let list = seen.sizes("list");
    let after = seen.sizes("list_after");
    let octets = seen.sizes("octets");
    for n in 1..=3 {
        let key = n.to_string();
        assert_eq!(after[&key], seen.message(n).len() as u64, "LIST {n}");
        assert_eq!(octets[&key], seen.message(n).len() as u64, "RETR {n}");
    }
    assert_eq!(
        list,
        direct.sizes("list"),
        "first LIST, nothing decrypted yet"
    );
    let total: u64 = after.values().sum();
    assert_eq!(seen.json["stat_after"], serde_json::json!([3, total]));
    // One decryption per encrypted message: TOP after RETR used the view already built.
    assert_eq!(decryptions(&m), 2, "{}", m.log_text());
    // A new session, after a restart, knows the sizes from its sealed size book.
    m.stop();
    let m = Meshmail::start(&config);
    let again = Seen::fetch(m.port, "bob", "plain");
    assert_eq!(again.sizes("list"), after);
    assert_eq!(again.json["stat"], serde_json::json!([3, total]));
    assert_eq!(again.text(1), seen.text(1), "the same view every time");
    let book = std::fs::read(d.bob.home.join("pop3-sizes")).expect("size book");
    assert!(
        !book.windows(8).any(|w| w == b"00000001"),
        "the size book is sealed"
    );
    drop(d.root);
}

#[test]
fn another_login_is_relayed_untouched() {
    let d = bobs_maildrop();
    // Carol holds the same encrypted message; her login is not mapped.
    append(&d.servers, "carol", "INBOX", d.root.path(), &[&d.stored[0]]);
    let m = Meshmail::start(&d.servers.meshmail_pop3_config(&d.bob.home, "bob", ""));
    let through = Seen::fetch(m.port, "carol", "plain");
    let direct = Seen::fetch(d.servers.pop3(), "carol", "stls");
    assert_eq!(through.count(), 1);
    assert_eq!(through.message(1), direct.message(1));
    assert_eq!(through.bytes("top", 1), direct.bytes("top", 1));
    assert_eq!(through.json["list"], direct.json["list"]);
    assert_eq!(through.json["uidl"], direct.json["uidl"]);
    assert!(through.text(1).contains("BEGIN PGP MESSAGE"));
    assert!(!through.text(1).contains("Meshmail-Result"));
    assert_eq!(decryptions(&m), 0, "{}", m.log_text());
}

#[test]
fn stls_and_implicit_tls_work_and_pipelined_stls_and_long_lines_are_refused() {
    let d = bobs_maildrop();
    let certs = d.root.path().join("certs");
    run(meshmail(&d.bob.home).args(["certs", "--out"]).arg(&certs)).ok();
    let implicit = free_port();
    let extra = format!(
        "listen_implicit_tls = \"127.0.0.1:{implicit}\"\n[tls]\ncert = \"{c}/cert.pem\"\nkey = \"{c}/key.pem\"\n[limits]\nidle_timeout_secs = 3\n",
        c = certs.display()
    );
    let m = Meshmail::start(&d.servers.meshmail_pop3_config(&d.bob.home, "bob", &extra));
    for (port, mode) in [(m.port, "stls"), (implicit, "ssl")] {
        let seen = Seen::fetch(port, "bob", mode);
        assert!(
            seen.text(1).contains("Subject: Harvest plans\r\n"),
            "{mode}"
        );
        // STLS is offered before TLS only.
        let capa = seen.json["capa"].to_string();
        assert!(
            !capa.contains("STLS") && !capa.contains("PIPELINING"),
            "{capa}"
        );
    }
    // A command pipelined behind STLS (it would be read as if it came over TLS): refused,
    // and the connection closed.
    let (reply, closed) = converse(m.port, b"STLS\r\nUSER bob\r\n", Duration::from_secs(5));
    assert!(reply.starts_with("-ERR"), "{reply}");
    assert!(!reply.contains("+OK"), "{reply}");
    assert!(closed, "{reply}");
    // A line far over RFC 2449's 255 octets: refused, closed, nothing relayed.
    let long = format!("USER {}\r\n", "a".repeat(600));
    let (reply, closed) = converse(m.port, long.as_bytes(), Duration::from_secs(5));
    assert_eq!(reply, "-ERR Line too long\r\n");
    assert!(closed);
    // AUTH alone (RFC 1734's mechanism list, as some clients still ask): Dovecot's list, as
    // meshmail offers it.
    let (reply, _) = converse(m.port, b"AUTH\r\nQUIT\r\n", Duration::from_secs(5));
    assert!(
        reply.starts_with("+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n+OK"),
        "{reply}"
    );
    // A 250-octet one is the server's business (Dovecot answers it).
    let long = format!("USER {}\r\nQUIT\r\n", "a".repeat(240));
    let (reply, _) = converse(m.port, long.as_bytes(), Duration::from_secs(5));
    assert!(
        reply.starts_with("+OK") || reply.starts_with("-ERR"),
        "{reply}"
    );
    assert!(!reply.contains("Line too long"), "{reply}");
}

#[test]
fn a_server_that_stops_mid_message_gives_the_client_an_error_not_a_message() {
    let root = tempdir();
    let bob = init_account(root.path(), "bob@example.test");
    let port = free_port();
    #[allow(clippy::zombie_processes)] // killed and reaped at the end
    let mut fake = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/tools/fake_pop3.py"))
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("fake server");
    wait_for_port(port, "fake POP3 server");
    let config = format!(
        "home = \"{}\"\nupstream_user = \"bob\"\n[pop3]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"127.0.0.1:{port}\"\nupstream_tls = \"none\"\n[limits]\nupstream_timeout_secs = 3\n",
        bob.home.display()
    );
    let m = Meshmail::start(&config);
    for user in ["bob", "somebody-else"] {
        let out = run(pop3_client().args([
            "retr-one",
            "127.0.0.1",
            &m.port.to_string(),
            user,
            "pw",
            "1",
        ]));
        assert_eq!(out.code, 0, "{out:#?}");
        let r: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
        assert_eq!(
            r["ok"], false,
            "{user}: a cut message was taken as whole: {r}"
        );
        if user == "bob" {
            // The mapped session says why, with RFC 3206's code.
            let error = r["error"].as_str().unwrap_or_default();
            assert!(
                error.contains("SYS/TEMP") && error.contains("middle"),
                "{r}"
            );
        }
    }
    let _ = fake.kill();
    let _ = fake.wait();
    drop(m);
}

#[test]
fn fetchmail_delivers_decrypted_mail() {
    let d = bobs_maildrop();
    let m = Meshmail::start(&d.servers.meshmail_pop3_config(&d.bob.home, "bob", ""));
    let dir = d.root.path().join("fetchmail");
    std::fs::create_dir_all(&dir).expect("dir");
    let delivered = dir.join("delivered.mbox");
    let rc = dir.join("fetchmailrc");
    std::fs::write(
        &rc,
        format!(
            "set no syslog\npoll 127.0.0.1 service {port} protocol pop3 auth password\n  user \"bob\" password \"secret\" is \"bob\" here\n  keep fetchall sslproto ''\n  mda \"/bin/sh -c 'cat >> {out}; echo ==== >> {out}'\"\n",
            port = m.port,
            out = delivered.display()
        ),
    )
    .expect("rc");
    std::fs::set_permissions(&rc, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .expect("chmod");
    let out = run(Command::new("fetchmail")
        .arg("-f")
        .arg(&rc)
        .arg("--pidfile")
        .arg(dir.join("pid"))
        .arg("-v")
        .env("HOME", &dir)
        .env("FETCHMAILHOME", &dir));
    assert_eq!(out.code, 0, "{out:#?}\n{}", m.log_text());
    let mbox = std::fs::read_to_string(&delivered).expect("delivered");
    assert_eq!(mbox.matches("====").count(), 3, "{mbox}");
    for subject in SUBJECTS {
        assert!(mbox.contains(&format!("Subject: {subject}")), "{mbox}");
    }
    assert!(mbox.contains("Pick the quinces (1)."), "{mbox}");
    assert!(mbox.contains("Soup at noon."), "{mbox}");
    assert!(!mbox.contains("BEGIN PGP MESSAGE"), "{mbox}");
    // fetchmail asks `LIST n` before each `RETR n`: the size announced is the size served.
    let transcript = out.stdout.clone() + &out.stderr;
    let reply_after = |command: &str| -> Option<String> {
        let mut lines = transcript.lines();
        lines.find(|l| l.ends_with(&format!("POP3> {command}")))?;
        lines
            .find(|l| l.contains("POP3< "))?
            .split("POP3< ")
            .nth(1)
            .map(str::to_owned)
    };
    for n in 1..=3 {
        let list = reply_after(&format!("LIST {n}")).expect("LIST n in the transcript");
        let retr = reply_after(&format!("RETR {n}")).expect("RETR n in the transcript");
        let listed = list.split_whitespace().nth(2).expect("size");
        assert_eq!(retr, format!("+OK {listed} octets"), "{transcript}");
    }
    // `keep`: the server still holds the three messages, encrypted.
    assert_eq!(d.servers.messages("bob", "INBOX").len(), 3);
}

#[test]
fn dele_rset_and_quit_work_as_without_meshmail() {
    let d = bobs_maildrop();
    let m = Meshmail::start(&d.servers.meshmail_pop3_config(&d.bob.home, "bob", ""));
    let out =
        run(pop3_client().args(["delete", "127.0.0.1", &m.port.to_string(), "bob", "secret"]));
    assert_eq!(out.code, 0, "{out:#?}");
    let r: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
    let count = |v: &serde_json::Value| v[0].as_u64().expect("count");
    assert_eq!(count(&r["stat"]), 3, "{r}");
    // Marked deleted: gone from STAT and LIST (and LIST 1 refused) until RSET.
    assert_eq!(count(&r["stat_deleted"]), 2, "{r}");
    assert!(!r["list_deleted"].to_string().contains("\"1 "), "{r}");
    assert!(
        r["list_1"].as_str().unwrap_or_default().contains("-ERR"),
        "{r}"
    );
    assert_eq!(r["stat_rset"], r["stat"], "{r}");
    // QUIT: the server deletes the one marked after RSET (the plaintext message, 3).
    let left = d.servers.messages("bob", "INBOX");
    assert_eq!(left.len(), 2);
    assert!(!left.iter().any(|m| m == &d.stored[2]));
}

#[test]
fn a_locked_key_store_gets_a_temporary_error_never_a_failure_view() {
    let root = tempdir();
    let servers = MailServers::start();
    let (home, pass, _, _) = locked_account_with_a_message(
        root.path(),
        &servers,
        "frank",
        "From: a@example.test\r\nSubject: [...]\r\n",
        "Locked away: mulberry.",
    );
    // No passphrase in the configuration: the account is mapped but locked.
    let m = Meshmail::start(&servers.meshmail_pop3_config(&home, "frank", ""));
    let out = run(pop3_client().args([
        "retr-one",
        "127.0.0.1",
        &m.port.to_string(),
        "frank",
        "secret",
        "1",
    ]));
    let r: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
    assert_eq!(r["ok"], false, "{r}");
    let error = r["error"].as_str().unwrap_or_default();
    assert!(
        error.contains("-ERR [SYS/TEMP]") && error.contains("locked"),
        "{r}"
    );
    // Once unlocked, the same message opens: nothing was cached as a failure.
    drop(m);
    let config = servers.meshmail_pop3_config(&home, "frank", "").replace(
        "[pop3]",
        &format!("passphrase_file = \"{}\"\n[pop3]", pass.display()),
    );
    let m = Meshmail::start(&config);
    let seen = Seen::fetch(m.port, "frank", "plain");
    assert!(
        seen.text(1).contains("Locked away: mulberry."),
        "{}",
        seen.json
    );
}

#[test]
fn a_message_for_another_key_is_served_as_stored_with_the_failure_header() {
    let d = bobs_maildrop();
    // Encrypted to Alice, not to Bob: Bob's keys can never open it.
    let alice = TestAccount::at(
        d.root
            .path()
            .join("alice@example.test".replace('@', "_at_")),
    );
    let g = Gpg::with_secret_of(&alice.home, d.root.path().join("gpg-alice-2"));
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(alice.home.join("account.json")).expect("json"))
            .expect("json");
    let fpr = info["openpgp_fingerprint"]
        .as_str()
        .expect("fpr")
        .to_owned();
    let inner = crlf("Content-Type: text/plain\r\nSubject: Not yours\r\n\r\nFor Alice only.\r\n");
    let armored = gpg_encrypt(&g, d.root.path(), &inner, &["-r", &fpr]);
    let stored = pgp_mime(
        "From: Carol <carol@example.test>\r\nTo: bob@example.test\r\nSubject: [...]\r\nMessage-ID: <other@example.test>\r\nMIME-Version: 1.0\r\n",
        &armored,
    );
    append(
        &d.servers,
        "bob",
        "INBOX",
        d.root.path(),
        &[stored.as_slice()],
    );
    let m = Meshmail::start(&d.servers.meshmail_pop3_config(&d.bob.home, "bob", ""));
    let seen = Seen::fetch(m.port, "bob", "plain");
    let text = seen.text(4);
    assert!(
        text.contains("Meshmail-Result: failed; reason=\"this account's keys cannot decrypt it\""),
        "{text}"
    );
    // The stored message itself follows, ciphertext and all; nothing of Alice's plaintext.
    assert!(text.contains("-----BEGIN PGP MESSAGE-----"), "{text}");
    assert!(!text.contains("For Alice only"), "{text}");
    assert_eq!(seen.sizes("list_after")["4"], seen.message(4).len() as u64);
}
