//! `meshmail mailbox encrypt` against a real Dovecot (issue 13, "Stored mail"): 500 plaintext
//! messages with their flags and dates, two already encrypted (one of them marked `\Deleted`),
//! a run killed midway with SIGKILL and resumed. Each message ends encrypted exactly once, its
//! view through meshmail equals the original bytes, flags and dates are kept, and no other
//! `\Deleted` message is expunged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::imap::{append, crlf, gpg_encrypt, oracle, pgp_mime};
use common::mail::{MailServers, Meshmail};
use common::run;
use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

const PLAIN: usize = 500;

/// One message as the oracle dumps it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Stored {
    body: Vec<u8>,
    flags: Vec<String>,
    date: String,
}

fn dump(port: u16, mailbox: &str) -> Vec<Stored> {
    let out = run(oracle().args(["dump", &port.to_string(), "alice", "secret", mailbox]));
    out.ok();
    out.stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Stored {
                body: data_encoding::BASE64
                    .decode(v["body"].as_str().unwrap().as_bytes())
                    .unwrap(),
                flags: v["flags"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|f| f.as_str().unwrap().to_owned())
                    .collect(),
                date: v["date"].as_str().unwrap().to_owned(),
            }
        })
        .collect()
}

/// APPENDs `files` to Alice's Archive with `flags` and, when given, an internal date.
fn append_with(
    servers: &MailServers,
    flags: &str,
    date: Option<&str>,
    files: &[std::path::PathBuf],
) {
    let mut cmd = oracle();
    cmd.env("IMAP_FLAGS", flags);
    if let Some(d) = date {
        cmd.env("IMAP_DATE", d);
    }
    run(cmd
        .args([
            "append",
            "127.0.0.1",
            &servers.imap().to_string(),
            "alice",
            "secret",
            "Archive",
        ])
        .args(files))
    .ok();
}

fn done_lines(home: &std::path::Path) -> usize {
    let Ok(dir) = std::fs::read_dir(home.join("mailbox-encrypt")) else {
        return 0;
    };
    dir.flatten()
        .map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .matches("\"step\":\"done\"")
                .count()
        })
        .sum()
}

#[test]
fn a_killed_and_resumed_run_encrypts_each_message_once_keeping_flags_and_dates() {
    let root = common::tempdir();
    let servers = MailServers::start();
    let (alice, _bob, gpg) = common::gpg::alice_and_bob(root.path());
    let work = root.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    // 500 plaintext messages in three batches of flags and dates.
    let batches: [(&str, &str, std::ops::Range<usize>); 3] = [
        ("(\\Seen)", "\"02-Mar-2025 08:15:00 +0100\"", 0..250),
        (
            "(\\Flagged \\Answered)",
            "\"17-Oct-2024 23:59:59 -0700\"",
            250..499,
        ),
        (
            "(\\Deleted \\Seen)",
            "\"01-Jan-2020 00:00:01 +0000\"",
            499..500,
        ),
    ];
    for (flags, date, range) in batches.clone() {
        let files: Vec<std::path::PathBuf> = range
            .map(|i| {
                let f = work.join(format!("m{i}.eml"));
                std::fs::write(
                    &f,
                    crlf(&format!(
                        "From: bob@example.test\r\nTo: alice@example.test\r\nSubject: message {i}\r\n\
                         Message-ID: <m{i}@example.test>\r\nDate: Sun, 2 Mar 2025 08:15:00 +0100\r\n\r\n\
                         Body of message {i}.\r\nSecond line, unique {i}.\r\n"
                    )),
                )
                .unwrap();
                f
            })
            .collect();
        append_with(&servers, flags, Some(date), &files);
    }
    // Two already encrypted (by GnuPG, as a sender would); one of them marked \Deleted.
    let inner = crlf("Content-Type: text/plain\r\n\r\nalready encrypted\r\n");
    let encrypted = pgp_mime(
        "From: bob@example.test\r\nSubject: sealed\r\n",
        &gpg_encrypt(&gpg, root.path(), &inner, &["-r", "alice@example.test"]),
    );
    append(&servers, "alice", "Archive", root.path(), &[&encrypted]);
    let sealed_deleted = work.join("sealed-deleted.eml");
    std::fs::write(&sealed_deleted, &encrypted).unwrap();
    append_with(&servers, "(\\Deleted)", None, &[sealed_deleted]);
    let before = dump(servers.imap(), "Archive");
    assert_eq!(before.len(), PLAIN + 2);
    let deleted_before = before
        .iter()
        .filter(|m| m.flags.contains(&"\\Deleted".into()))
        .count();
    assert_eq!(deleted_before, 2);

    let config = root.path().join("meshmail.toml");
    std::fs::write(
        &config,
        servers
            .meshmail_config(&alice.home, "alice", None, "")
            .replace("{port}", &common::free_port().to_string()),
    )
    .unwrap();
    let password = root.path().join("password");
    std::fs::write(&password, "secret\n").unwrap();
    let encrypt = || {
        let mut c = common::meshmail(&alice.home);
        c.args(["mailbox", "encrypt", "--mailbox", "Archive", "--config"])
            .arg(&config)
            .arg("--password-file")
            .arg(&password);
        c
    };

    // Killed (SIGKILL) once a fifth of the messages are done.
    let mut child = encrypt()
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while done_lines(&alice.home) < PLAIN / 5 {
        assert!(started.elapsed() < Duration::from_secs(120), "no progress");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = done_lines(&alice.home);
    assert!(killed_at < PLAIN, "killed midway ({killed_at})");

    // Resumed to the end.
    let resumed = run(&mut encrypt());
    resumed.ok();
    // "Archive: E encrypted, R finished from an earlier run, S already encrypted"
    let numbers: Vec<usize> = resumed
        .stdout
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    let [encrypted, finished, skipped] = numbers[..] else {
        panic!("{resumed:?}");
    };
    assert_eq!(encrypted + finished + killed_at, PLAIN, "{resumed:?}");
    // Already encrypted when listed: the two from the start, the copies of the first run, and
    // the copy of a message it had appended but not yet finished.
    assert_eq!(skipped, killed_at + 2 + finished, "{resumed:?}");
    assert!(
        resumed.stderr.contains("download the mailbox again"),
        "{resumed:?}"
    );

    // On the server: every message encrypted, none lost, none doubled, no \Deleted one gone.
    let after = dump(servers.imap(), "Archive");
    assert_eq!(after.len(), PLAIN + 2, "messages lost or doubled");
    for m in &after {
        let text = String::from_utf8_lossy(&m.body);
        assert!(text.contains("multipart/encrypted"), "{text}");
        assert!(!text.contains("Body of message"), "plaintext left: {text}");
    }
    assert_eq!(
        after
            .iter()
            .filter(|m| m.flags.contains(&"\\Deleted".into()))
            .count(),
        deleted_before
    );
    // Through meshmail: each view is the original bytes, with its flags and date.
    let proxy = Meshmail::start(&servers.meshmail_config(&alice.home, "alice", None, ""));
    let mut want: BTreeMap<Vec<u8>, Stored> = BTreeMap::new();
    for m in before
        .iter()
        .filter(|m| !String::from_utf8_lossy(&m.body).contains("multipart/encrypted"))
    {
        want.insert(m.body.clone(), m.clone());
    }
    assert_eq!(want.len(), PLAIN);
    let views = dump(proxy.port, "Archive");
    let mut seen = 0;
    for v in &views {
        if let Some(original) = want.remove(&v.body) {
            assert_eq!(
                v.flags,
                original.flags,
                "flags of {:?}",
                String::from_utf8_lossy(&v.body)
            );
            assert_eq!(v.date, original.date);
            seen += 1;
        }
    }
    assert_eq!(
        seen,
        PLAIN,
        "{} originals not seen through meshmail",
        want.len()
    );
    // A third run has nothing left to do.
    let again = run(&mut encrypt());
    again.ok();
    assert!(
        again.stdout.contains("0 encrypted, 0 finished"),
        "{again:?}"
    );
}
