//! A real, headless Thunderbird (Debian's, installed by `make deps`) through meshmail on
//! localhost, in front of a real Dovecot. Thunderbird's internals are driven from one file,
//! `integration/tools/thunderbird.py`, which checks the Thunderbird version first.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::gpg::Gpg;
use common::imap::{append, crlf, gpg_encrypt, pgp_mime};
use common::mail::{MailServers, Meshmail};
use common::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn thunderbird() -> Command {
    let mut c = Command::new("python3");
    c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/tools/thunderbird.py"));
    c
}

/// meshmail started on `config`, and a Thunderbird profile `<name>-profile` written for it by
/// `meshmail thunderbird` (with `flags` such as `--starttls` or `--pop3`): meshmail, the
/// profile, and what the command printed.
fn meshmail_and_profile(
    root: &Path,
    home: &Path,
    name: &str,
    config: &str,
    flags: &[&str],
) -> (Meshmail, PathBuf, Run) {
    let m = Meshmail::start(config);
    let config_path = root.join(format!("{name}.toml"));
    std::fs::write(&config_path, config.replace("{port}", &m.port.to_string())).expect("config");
    let profile = root.join(format!("{name}-profile"));
    let mut command = meshmail(home);
    command.arg("thunderbird").args(flags);
    let made = run(command
        .arg("--profile")
        .arg(&profile)
        .arg("--config")
        .arg(&config_path));
    assert_eq!(made.code, 0, "{made:#?}");
    (m, profile, made)
}

/// PGP/MIME messages from Alice to `to`, encrypted by gpg, each Subject protected inside and
/// `[...]` outside.
fn protected_messages(
    g: &Gpg,
    dir: &Path,
    to: &TestAccount,
    items: &[(&str, &str)],
    id: &str,
) -> Vec<Vec<u8>> {
    items
        .iter()
        .enumerate()
        .map(|(i, (subject, body))| {
            let inner = crlf(&format!("Content-Type: text/plain; charset=us-ascii; protected-headers=\"v1\"\r\nSubject: {subject}\r\n\r\n{body}\r\n"));
            let armored = gpg_encrypt(g, dir, &inner, &["-r", &to.openpgp_fingerprint]);
            pgp_mime(
                &format!("From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: [...]\r\nDate: Thu, 26 Nov 2026 1{i}:00:00 +0000\r\nMessage-ID: <{id}{i}@example.test>\r\nMIME-Version: 1.0\r\n"),
                &armored,
            )
        })
        .collect()
}

/// Bob's INBOX holding messages from Alice (`(subject, body)`, the Subject protected inside),
/// Bob's meshmail in front of it and a Thunderbird profile for it.
struct BobsInbox {
    // Dropped in this order: meshmail, then the servers, then the directory.
    meshmail: Meshmail,
    profile: PathBuf,
    /// What `meshmail thunderbird` printed.
    made: Run,
    _servers: MailServers,
    _root: tempfile::TempDir,
}

fn bobs_inbox(items: &[(&str, &str)], id: &str) -> BobsInbox {
    bobs_inbox_over(items, id, false)
}

/// [`bobs_inbox`], read over IMAP or (`pop3`) over POP3.
fn bobs_inbox_over(items: &[(&str, &str)], id: &str, pop3: bool) -> BobsInbox {
    let root = tempdir();
    let servers = MailServers::start();
    let alice = init_account(root.path(), "alice@example.test");
    let bob = init_account(root.path(), "bob@example.test");
    let g = Gpg::with_secret_of(&alice.home, root.path().join("gpg-alice"));
    g.import_public(&bob.home);
    let stored = protected_messages(&g, root.path(), &bob, items, id);
    let refs: Vec<&[u8]> = stored.iter().map(|m| m.as_slice()).collect();
    append(&servers, "bob", "INBOX", root.path(), &refs);
    let (config, flags): (String, &[&str]) = if pop3 {
        (
            servers.meshmail_pop3_config(&bob.home, "bob", ""),
            &["--pop3"],
        )
    } else {
        (servers.meshmail_config(&bob.home, "bob", None, ""), &[])
    };
    let (meshmail, profile, made) =
        meshmail_and_profile(root.path(), &bob.home, "bob", &config, flags);
    BobsInbox {
        meshmail,
        profile,
        made,
        _servers: servers,
        _root: root,
    }
}

#[test]
fn the_message_list_shows_the_protected_subject_not_the_placeholder() {
    // Alice writes to Bob, the Subject protected inside the encryption (as meshmail's SMTP
    // proxy and Thunderbird itself do); Bob's Dovecot holds `[...]` only. One command writes
    // the profile.
    let inbox = bobs_inbox(
        &[
            ("Lunch on Friday?", "See you there."),
            ("The kumquat report", "See you there."),
        ],
        "tb",
    );
    let (m, profile, made) = (&inbox.meshmail, &inbox.profile, &inbox.made);
    assert!(made.stdout.contains("offline copies are off"), "{made:#?}");

    let out = run(thunderbird()
        .args(["inbox-subjects"])
        .arg(profile)
        .args(["bob", "secret"]));
    assert_eq!(out.code, 0, "{out:#?}\n{}", m.log_text());
    let shown: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
    let mut rows: Vec<String> = shown["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    rows.sort();
    assert_eq!(rows, ["Lunch on Friday?", "The kumquat report"], "{out:#?}");
    // meshmail served it: Bob's login went through it.
    assert!(m.log_text().contains("IMAP login"), "{}", m.log_text());
}

#[test]
fn a_pop3_account_downloads_decrypted_mail_and_shows_the_protected_subject() {
    let inbox = bobs_inbox_over(
        &[
            ("Quince harvest", "Bring baskets."),
            ("The medlar memo", "Wait for frost."),
        ],
        "pop",
        true,
    );
    let (m, profile) = (&inbox.meshmail, &inbox.profile);
    let prefs = std::fs::read_to_string(profile.join("user.js")).expect("prefs");
    assert!(
        prefs.contains("\"mail.server.server1.type\", \"pop3\""),
        "{prefs}"
    );
    let out = run(thunderbird()
        .args(["pop3-subjects"])
        .arg(profile)
        .args(["bob", "secret"]));
    assert_eq!(out.code, 0, "{out:#?}\n{}", m.log_text());
    let shown: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
    assert_eq!(shown["status"], 0, "{out:#?}\n{}", m.log_text());
    let mut rows: Vec<String> = shown["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .filter_map(|r| r.as_str().map(str::to_owned))
        .collect();
    rows.sort();
    assert_eq!(rows, ["Quince harvest", "The medlar memo"], "{out:#?}");
    // Thunderbird fetched over meshmail's POP3 listener, and meshmail decrypted.
    let log = plain(&m.log_text());
    assert!(log.contains("POP3 login of a mapped account"), "{log}");
    assert_eq!(log.matches("by=\"pop3\"").count(), 2, "{log}");
}

#[test]
fn the_sent_copy_is_ciphertext_on_the_server_and_the_original_in_thunderbird() {
    let root = tempdir();
    let servers = MailServers::start();
    let alice = init_account(root.path(), "alice@example.test");
    let config = servers.meshmail_config(
        &alice.home,
        "alice",
        Some(free_port()),
        "[encrypt]\ndefault = \"never\"\n",
    );
    let (m, profile, _) = meshmail_and_profile(root.path(), &alice.home, "alice", &config, &[]);
    let subject = "Plans for the tamarind harvest";
    let out = run(thunderbird().arg("send").arg(&profile).args([
        "alice",
        "secret",
        "bob@example.test",
        subject,
        "See the attached figures.",
        "Draft about quinces",
    ]));
    assert_eq!(out.code, 0, "{out:#?}\n{}", m.log_text());
    let shown: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
    assert_eq!(shown["rows"], serde_json::json!([subject]), "{out:#?}");
    // On the server, the Sent copy is ciphertext with the Subject hidden.
    let sent = servers.messages("alice", "Sent");
    assert_eq!(sent.len(), 1, "{out:#?}");
    let text = String::from_utf8_lossy(&sent[0]);
    assert!(text.contains("multipart/encrypted"), "{text}");
    assert!(
        !text.contains("tamarind") && !text.contains("attached figures"),
        "{text}"
    );
    // The saved draft too.
    let drafts = servers.messages("alice", "Drafts");
    assert_eq!(drafts.len(), 1, "{out:#?}");
    let text = String::from_utf8_lossy(&drafts[0]);
    assert!(text.contains("multipart/encrypted"), "{text}");
    assert!(
        !text.contains("quince") && !text.contains("attached figures"),
        "{text}"
    );
    // Bob got the message (a plain address, no policy: sent as written).
    let inbox = servers.wait_for_inbox("bob", 1);
    assert!(String::from_utf8_lossy(&inbox[0]).contains(subject));
}

#[test]
fn a_fingerprint_address_without_a_valid_policy_is_refused_with_the_reason_in_a_dialog() {
    let root = tempdir();
    let servers = MailServers::start();
    let alice = init_account(root.path(), "alice@example.test");
    // Bob has keys but never published a policy; DNS answers that there is none.
    let bob = init_account(root.path(), "bob@example.test");
    let nsd = Nsd::start(&[("example.test", Vec::new())]);
    let config = servers.meshmail_config(
        &alice.home,
        "alice",
        Some(free_port()),
        &format!("[policy]\ndns = \"{}\"\ntimeout_secs = 5\n", nsd.addr()),
    );
    let (m, profile, _) = meshmail_and_profile(root.path(), &alice.home, "alice", &config, &[]);
    let out = run(thunderbird().arg("send-refused").arg(&profile).args([
        "alice",
        "secret",
        &bob.strong,
        "Never sent",
        "This must not leave.",
    ]));
    assert_eq!(out.code, 0, "{out:#?}");
    let shown: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
    assert_ne!(shown["result"], "sent", "{out:#?}");
    let dialogs = shown["dialogs"].to_string();
    // meshmail's 550 text, shown by Thunderbird: who, why, and that nothing went out.
    for words in [
        bob.strong.as_str(),
        "securely",
        "no policy record",
        "Nothing was sent",
    ] {
        assert!(
            dialogs.contains(words),
            "the dialog lacks {words:?}: {out:#?}\n{}",
            m.log_text()
        );
    }
    // Thunderbird sent the address as written, and nothing was delivered.
    assert!(m.log_text().contains(&bob.strong), "{}", m.log_text());
    assert!(servers.messages("bob", "INBOX").is_empty());
}

#[test]
fn online_search_finds_a_word_only_inside_an_encrypted_body() {
    let inbox = bobs_inbox(
        &[
            ("Garden", "Plant the pomegranate tree."),
            ("Kitchen", "Buy figs."),
        ],
        "s",
    );
    let (m, profile) = (&inbox.meshmail, &inbox.profile);
    // Offline copies are off, so Thunderbird has no local text to search.
    let prefs = std::fs::read_to_string(profile.join("user.js")).expect("prefs");
    assert!(
        prefs.contains("\"mail.server.server1.offline_download\", false"),
        "{prefs}"
    );
    let out = run(thunderbird()
        .arg("search")
        .arg(profile)
        .args(["bob", "secret", "pomegranate"]));
    assert_eq!(out.code, 0, "{out:#?}\n{}", m.log_text());
    let hits: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
    assert_eq!(hits, serde_json::json!(["Garden"]), "{out:#?}");
    // The search reached meshmail (not Thunderbird's local copy).
    assert!(
        m.log_text().contains("IMAP SEARCH over encrypted messages"),
        "{}",
        m.log_text()
    );
}

#[test]
fn alice_sends_to_a_fingerprint_address_over_starttls_and_bob_reads_it_through_his_meshmail() {
    let root = tempdir();
    let servers = MailServers::start();
    let alice = init_account(root.path(), "alice@example.test");
    let bob = init_account(root.path(), "bob@example.test");
    let nsd = nsd_with_policies(root.path(), &[&bob]);
    // Alice: SMTP and IMAP through meshmail, STARTTLS with meshmail's own certificate, which
    // the profile accepts (no CA installed anywhere).
    let certs = root.path().join("certs");
    run(meshmail(&alice.home).args(["certs", "--out"]).arg(&certs)).ok();
    let config = servers.meshmail_config(
        &alice.home,
        "alice",
        Some(free_port()),
        &format!(
            "[tls]\ncert = \"{certs}/cert.pem\"\nkey = \"{certs}/key.pem\"\n[policy]\ndns = \"{dns}\"\ntimeout_secs = 5\n[encrypt]\ndefault = \"never\"\n",
            certs = certs.display(),
            dns = nsd.addr(),
        ),
    );
    let (ma, alice_profile, _) =
        meshmail_and_profile(root.path(), &alice.home, "alice", &config, &["--starttls"]);
    assert!(alice_profile.join("cert_override.txt").exists());
    let attachment = root.path().join("figures.txt");
    std::fs::write(&attachment, "Q3: 42 crates of quinces\n").expect("attachment");
    let sent = run(thunderbird()
        .arg("send-attached")
        .arg(&alice_profile)
        .args([
            "alice",
            "secret",
            &format!("{}, carol@example.test", bob.strong),
            "Quarterly figures",
            "The numbers are in the attachment.",
        ])
        .arg(&attachment));
    assert_eq!(sent.code, 0, "{sent:#?}\n{}", ma.log_text());

    // Bob's Dovecot holds ciphertext only; Carol (a plain address) got it as written.
    let stored = servers.wait_for_inbox("bob", 1);
    assert_eq!(stored.len(), 1, "{}", servers.postfix_log());
    let text = String::from_utf8_lossy(&stored[0]);
    assert!(text.contains("multipart/encrypted"), "{text}");
    for secret in ["Quarterly", "numbers are", "figures.txt", "quinces"] {
        assert!(
            !text.contains(secret),
            "{secret} readable on Bob's server: {text}"
        );
    }
    assert_eq!(servers.wait_for_inbox("carol", 1).len(), 1);

    // Bob reads it in his Thunderbird, through his own meshmail.
    let config = servers.meshmail_config(&bob.home, "bob", None, "");
    let (mb, bob_profile, _) = meshmail_and_profile(root.path(), &bob.home, "bob", &config, &[]);
    let read = run(thunderbird()
        .arg("read")
        .arg(&bob_profile)
        .args(["bob", "secret"]));
    assert_eq!(read.code, 0, "{read:#?}\n{}", mb.log_text());
    let messages: serde_json::Value = serde_json::from_str(read.stdout.trim()).expect("json");
    // The message pane (what Bob sees) and Thunderbird's MIME reader agree.
    let pane = &messages[0]["pane"];
    assert_eq!(pane["subject"], "Quarterly figures", "{read:#?}");
    assert!(
        pane["body"]
            .as_str()
            .unwrap_or_default()
            .contains("The numbers are in the attachment."),
        "{read:#?}"
    );
    assert_eq!(
        pane["attachments"],
        serde_json::json!(["figures.txt"]),
        "{read:#?}"
    );
    let m = &messages[1];
    assert_eq!(m["subject"], "Quarterly figures", "{read:#?}");
    assert!(
        m["body"]
            .as_str()
            .unwrap_or_default()
            .contains("The numbers are in the attachment."),
        "{read:#?}"
    );
    assert_eq!(
        m["attachments"],
        serde_json::json!(["figures.txt"]),
        "{read:#?}"
    );
}

#[test]
fn the_compose_window_accepts_fingerprint_addresses_in_both_forms() {
    let root = tempdir();
    let alice = init_account(root.path(), "alice@example.test");
    let suffix = alice.strong.clone();
    let prefix = run(meshmail(&alice.home).args(["address", "--form", "prefix"]))
        .ok()
        .stdout
        .trim()
        .to_owned();
    assert!(
        suffix.contains(".xx--") && prefix.contains("@xx--"),
        "{suffix} {prefix}"
    );
    let config_path = root.path().join("m.toml");
    std::fs::write(
        &config_path,
        format!(
            "home = \"{}\"\nupstream_user = \"alice\"\n[imap]\nlisten = \"127.0.0.1:1143\"\nupstream = \"127.0.0.1:143\"\nupstream_tls = \"none\"\n",
            alice.home.display()
        ),
    )
    .expect("config");
    let profile = root.path().join("profile");
    run(meshmail(&alice.home)
        .args(["thunderbird", "--profile"])
        .arg(&profile)
        .arg("--config")
        .arg(&config_path))
    .ok();
    let out = run(thunderbird()
        .arg("compose-pills")
        .arg(&profile)
        .args([&suffix, &prefix]));
    assert_eq!(out.code, 0, "{out:#?}");
    let pills: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("json");
    assert_eq!(
        pills,
        serde_json::json!([
            {"address": suffix, "invalid": false},
            {"address": prefix, "invalid": false},
        ]),
        "{out:#?}"
    );
}
