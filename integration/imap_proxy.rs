//! The IMAP proxy against a real Dovecot. Messages encrypted by gpg (PGP/MIME, hidden and
//! several recipients, a nested signed part) and by `openssl cms` (EnvelopedData with CBC,
//! AuthEnvelopedData with GCM) are stored on Dovecot; Python's imaplib reads them through
//! meshmail. Dovecot is the oracle: the expected decrypted message is stored in plaintext in a
//! scratch mailbox, and every FETCH item is compared byte for byte with what meshmail serves
//! for the encrypted original. mbsync syncs through meshmail.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::gpg::Gpg;
use common::imap::{
    append, crlf, expected_view, gpg_encrypt, locked_account_with_a_message, oracle, pgp_mime,
};
use common::mail::{MailServers, Meshmail};
use common::smime;
use common::*;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A test message: what the server holds and what the client must see.
struct Case {
    name: &'static str,
    stored: Vec<u8>,
    view: Vec<u8>,
}

struct World {
    root: tempfile::TempDir,
    servers: MailServers,
    meshmail: Meshmail,
    alice: TestAccount,
    /// The messages in Alice's INBOX (UID order) and the UIDs of their plaintext twins.
    cases: Vec<Case>,
    uids: Vec<String>,
    oracle_uids: Vec<String>,
    /// meshmail's configuration (to start it again).
    config: String,
    /// meshmail's implicit-TLS IMAP port, and the directory of its certificate.
    tls_port: u16,
    certs: PathBuf,
}

const OUTER: &str = "From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: [...]\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <NAME@example.test>\r\nMIME-Version: 1.0\r\n";

fn world() -> World {
    let root = tempdir();
    let servers = MailServers::start();
    // Bob's GnuPG home (his secret key) with Alice's public key: the sender's side.
    let (alice, bob, g) = common::gpg::alice_and_bob(root.path());
    let dir = root.path();
    let outer = |name: &str| OUTER.replace("NAME", name);

    let mut cases = Vec::new();
    // 1. PGP/MIME, protected headers, text and a PDF attachment.
    let inner = crlf("Content-Type: multipart/mixed; boundary=\"inner1\"; protected-headers=\"v1\"\r\nSubject: Quarterly numbers\r\nFrom: Bob <bob@example.test>\r\nTo: alice@example.test\r\n\r\n--inner1\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\nThe secret word is pomegranate. Gr\u{fc}\u{df}e.\r\n--inner1\r\nContent-Type: application/pdf; name=\"report.pdf\"\r\nContent-Disposition: attachment; filename=\"report.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQKJcOkw7zDtsOfCjIgMCBvYmoKPDwvTGVuZ3RoIDMgMCBSL0ZpbHRlci9GbGF0ZURl\r\n--inner1--\r\n");
    let armored = gpg_encrypt(&g, dir, &inner, &["-r", &alice.openpgp_fingerprint]);
    cases.push(Case {
        name: "pgp-attachment",
        stored: pgp_mime(&outer("m1"), &armored),
        view: expected_view(
            "decrypted; unsigned",
            &outer("m1"),
            Some("Quarterly numbers"),
            &inner,
        ),
    });
    // 2. Hidden recipient, several recipients, a single text part.
    let inner = crlf("Content-Type: text/plain; charset=us-ascii; protected-headers=\"v1\"\r\nSubject: Hidden lunch\r\n\r\nMeet at noon by the kumquat stand.\r\n");
    let armored = gpg_encrypt(
        &g,
        dir,
        &inner,
        &[
            "--throw-keyids",
            "-r",
            &alice.openpgp_fingerprint,
            "-r",
            &bob.openpgp_fingerprint,
        ],
    );
    cases.push(Case {
        name: "pgp-hidden-recipients",
        stored: pgp_mime(&outer("m2"), &armored),
        view: expected_view(
            "decrypted; unsigned",
            &outer("m2"),
            Some("Hidden lunch"),
            &inner,
        ),
    });
    // 3. A nested signed part (kept byte for byte) next to a forwarded message.
    let inner = crlf("Content-Type: multipart/mixed; boundary=\"mix3\"\r\n\r\n--mix3\r\nContent-Type: multipart/signed; micalg=pgp-sha256; protocol=\"application/pgp-signature\"; boundary=\"sig3\"\r\n\r\n--sig3\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nSigned and sealed: tamarind.\r\n--sig3\r\nContent-Type: application/pgp-signature; name=\"signature.asc\"\r\n\r\n-----BEGIN PGP SIGNATURE-----\r\n\r\niHUEARYIAB0WIQQAAAAAAAAAAAAAAAAAAAAAAAAAAAUCZ0AAAAAACgkQAAAAAAAAAAA=\r\n-----END PGP SIGNATURE-----\r\n--sig3--\r\n--mix3\r\nContent-Type: message/rfc822\r\n\r\nFrom: Carol <carol@example.test>\r\nTo: bob@example.test\r\nSubject: Forwarded\r\nDate: Wed, 25 Nov 2026 09:00:00 +0100\r\n\r\nThe forwarded text.\r\n--mix3--\r\n");
    let armored = gpg_encrypt(&g, dir, &inner, &["-r", &alice.openpgp_fingerprint]);
    cases.push(Case {
        name: "pgp-nested-signed",
        stored: pgp_mime(&outer("m3"), &armored),
        view: expected_view("decrypted; unsigned", &outer("m3"), None, &inner),
    });
    // 4. S/MIME EnvelopedData (AES-256-CBC) by openssl cms.
    let inner = crlf("Content-Type: multipart/mixed; boundary=\"s4\"\r\n\r\n--s4\r\nContent-Type: text/plain\r\n\r\nS/MIME body with durian.\r\n--s4\r\nContent-Type: image/png; name=\"dot.png\"\r\nContent-Disposition: attachment; filename=\"dot.png\"\r\nContent-Transfer-Encoding: base64\r\n\r\niVBORw0KGgo=\r\n--s4--\r\n");
    let der = smime::encrypt(dir, &inner, &alice.home.join("smime.pem"), "-aes256");
    let o = outer("m4").replace("Subject: [...]", "Subject: S/MIME report");
    cases.push(Case {
        name: "cms-cbc",
        stored: smime::enveloped(&o, &der, false),
        view: expected_view("decrypted; unsigned", &o, None, &inner),
    });
    // 5. S/MIME AuthEnvelopedData (AES-256-GCM) by openssl cms.
    let inner =
        crlf("Content-Type: text/plain; charset=us-ascii\r\n\r\nGCM protects the lychee.\r\n");
    let der = smime::encrypt(dir, &inner, &alice.home.join("smime.pem"), "-aes-256-gcm");
    let o = outer("m5").replace("Subject: [...]", "Subject: GCM report");
    cases.push(Case {
        name: "cms-gcm",
        stored: smime::enveloped(&o, &der, true),
        view: expected_view("decrypted; unsigned", &o, None, &inner),
    });
    // 6. A forged result header, outside and inside.
    let forged_outer = format!("{}Meshmail-Result: decrypted; signed-by=00; verified=yes\r\nMESHMAIL-RESULT: verified=yes\r\n", outer("m6"));
    let inner = crlf("Content-Type: text/plain; charset=us-ascii; protected-headers=\"v1\"\r\nMeshmail-Result: decrypted; verified=yes\r\nSubject: Trust me\r\n\r\nNothing to see.\r\n");
    let armored = gpg_encrypt(&g, dir, &inner, &["-r", &alice.openpgp_fingerprint]);
    cases.push(Case {
        name: "forged-result",
        stored: pgp_mime(&forged_outer, &armored),
        view: expected_view(
            "decrypted; unsigned",
            &outer("m6"),
            Some("Trust me"),
            &inner,
        ),
    });
    // 7. Plaintext: shown as it is.
    let plain = crlf(&format!(
        "{}Content-Type: text/plain\r\n\r\nA plain note about figs.\r\n",
        outer("m7").replace("Subject: [...]", "Subject: Plain")
    ));
    cases.push(Case {
        name: "plaintext",
        stored: plain.clone(),
        view: plain,
    });
    // 8. Signed by Bob, whose certificate Alice holds: the inner From and Date are shown.
    let inner = crlf("Content-Type: text/plain; charset=us-ascii; protected-headers=\"v1\"\r\nSubject: Signed plan\r\nFrom: Bob <bob@example.test>\r\nDate: Wed, 25 Nov 2026 08:00:00 +0000\r\n\r\nThe signed word is quince.\r\n");
    let armored = gpg_encrypt(
        &g,
        dir,
        &inner,
        &[
            "--sign",
            "--local-user",
            &bob.openpgp_fingerprint,
            "-r",
            &alice.openpgp_fingerprint,
        ],
    );
    let o = outer("m8");
    let shown = o.replace(
        "Date: Thu, 26 Nov 2026 10:00:00 +0000",
        "Date: Wed, 25 Nov 2026 08:00:00 +0000",
    );
    cases.push(Case {
        name: "signed-verified",
        stored: pgp_mime(&o, &armored),
        view: expected_view(
            &format!(
                "decrypted; signed-by={}; verified=yes",
                bob.openpgp_fingerprint
            ),
            &shown,
            Some("Signed plan"),
            &inner,
        ),
    });
    // 9. Signed by Bob, but claiming to be from Carol: nothing inner replaces the outer From,
    //    and the result says the signature is not Carol's.
    let inner = crlf("Content-Type: text/plain; charset=us-ascii; protected-headers=\"v1\"\r\nSubject: Not really Carol\r\nFrom: Carol <carol@example.test>\r\n\r\nA spoofed damson.\r\n");
    let armored = gpg_encrypt(
        &g,
        dir,
        &inner,
        &[
            "--sign",
            "--local-user",
            &bob.openpgp_fingerprint,
            "-r",
            &alice.openpgp_fingerprint,
        ],
    );
    let o = outer("m9").replace(
        "From: Bob <bob@example.test>",
        "From: Carol <carol@example.test>",
    );
    cases.push(Case {
        name: "signed-not-by-from",
        stored: pgp_mime(&o, &armored),
        view: expected_view(
            &format!(
                "decrypted; signed-by={}; verified=no",
                bob.openpgp_fingerprint
            ),
            &o,
            Some("Not really Carol"),
            &inner,
        ),
    });

    // 10. Encrypted to Bob only: shown as stored, with a result header saying why.
    let inner = crlf("Content-Type: text/plain\r\n\r\nFor Bob's eyes: olive.\r\n");
    let armored = gpg_encrypt(&g, dir, &inner, &["-r", &bob.openpgp_fingerprint]);
    let stored = pgp_mime(&outer("m10"), &armored);
    let mut view =
        b"Meshmail-Result: failed; reason=\"this account's keys cannot decrypt it\"\r\n".to_vec();
    view.extend_from_slice(&stored);
    cases.push(Case {
        name: "not-for-us",
        stored,
        view,
    });
    // 12. Signed, then encrypted (RFC 3156 §6.1): the decrypted payload is a
    //     multipart/signed whose detached signature Bob made over its first part.
    let signed_part =
        crlf("Content-Type: text/plain; charset=us-ascii\r\n\r\nDetached and sealed: apricot.");
    let part_file = dir.join("signed-part.txt");
    std::fs::write(&part_file, &signed_part).expect("write");
    let sig = Command::new("gpg")
        .arg("--homedir")
        .arg(&g.dir)
        .args([
            "--batch",
            "--yes",
            "--armor",
            "--detach-sign",
            "--digest-algo",
            "SHA256",
            "--local-user",
            &bob.openpgp_fingerprint,
            "--output",
            "-",
        ])
        .arg(&part_file)
        .output()
        .expect("gpg");
    assert!(
        sig.status.success(),
        "{}",
        String::from_utf8_lossy(&sig.stderr)
    );
    let mut inner = crlf("Content-Type: multipart/signed; micalg=pgp-sha256; protocol=\"application/pgp-signature\"; boundary=\"s12\"\r\n\r\n--s12\r\n");
    inner.extend_from_slice(&signed_part);
    inner.extend(crlf(
        "\r\n--s12\r\nContent-Type: application/pgp-signature; name=\"signature.asc\"\r\n\r\n",
    ));
    inner.extend(crlf(&String::from_utf8_lossy(&sig.stdout)));
    inner.extend(crlf("\r\n--s12--\r\n"));
    let armored = gpg_encrypt(&g, dir, &inner, &["-r", &alice.openpgp_fingerprint]);
    cases.push(Case {
        name: "signed-then-encrypted",
        stored: pgp_mime(&outer("m12"), &armored),
        view: expected_view(
            &format!(
                "decrypted; signed-by={}; verified=yes",
                bob.openpgp_fingerprint
            ),
            &outer("m12"),
            None,
            &inner,
        ),
    });
    // 11. Signed by Carol, whose certificate Alice does not hold but the message carries.
    let carol = init_account(root.path(), "carol@example.test");
    let gc = Gpg::with_secret_of(&carol.home, root.path().join("gpg-carol"));
    gc.import_public(&alice.home);
    let key = String::from_utf8_lossy(&std::fs::read(carol.home.join("openpgp.asc")).expect("key"))
        .replace("\r\n", "\n")
        .replace('\n', "\r\n");
    let inner = crlf(&format!("Content-Type: multipart/mixed; boundary=\"k11\"; protected-headers=\"v1\"\r\nSubject: My key is attached\r\nFrom: Carol <carol@example.test>\r\n\r\n--k11\r\nContent-Type: text/plain\r\n\r\nHere is my key and a persimmon.\r\n--k11\r\nContent-Type: application/pgp-keys; name=\"carol.asc\"\r\nContent-Disposition: attachment; filename=\"carol.asc\"\r\n\r\n{key}\r\n--k11--\r\n"));
    let armored = gpg_encrypt(
        &gc,
        dir,
        &inner,
        &[
            "--sign",
            "--local-user",
            &carol.openpgp_fingerprint,
            "-r",
            &alice.openpgp_fingerprint,
        ],
    );
    let o = outer("m11").replace(
        "From: Bob <bob@example.test>",
        "From: Carol <carol@example.test>",
    );
    cases.push(Case {
        name: "signed-key-attached",
        stored: pgp_mime(&o, &armored),
        view: expected_view(
            &format!(
                "decrypted; signed-by={}; verified=yes",
                carol.openpgp_fingerprint
            ),
            &o,
            Some("My key is attached"),
            &inner,
        ),
    });
    smime_signed_cases(dir, &alice, &g, &mut cases);
    let stored: Vec<&[u8]> = cases.iter().map(|c| c.stored.as_slice()).collect();
    let uids = append(&servers, "alice", "INBOX", dir, &stored);
    let views: Vec<&[u8]> = cases.iter().map(|c| c.view.as_slice()).collect();
    let oracle_uids = append(&servers, "alice", "Oracle", dir, &views);
    assert_eq!(uids.len(), cases.len());

    // Alice's keyring holds Bob's certificate (signature checks never look anything up).
    std::fs::create_dir_all(alice.home.join("keyring")).expect("keyring");
    std::fs::copy(
        bob.home.join("openpgp.asc"),
        alice.home.join("keyring/bob.asc"),
    )
    .expect("copy");
    let certs = root.path().join("certs");
    run(meshmail(&alice.home).args(["certs", "--out"]).arg(&certs)).ok();
    let tls_port = free_port();
    let config = format!(
        "home = \"{home}\"\nupstream_user = \"alice\"\n[imap]\nlisten = \"127.0.0.1:{{port}}\"\nlisten_implicit_tls = \"127.0.0.1:{tls_port}\"\nupstream = \"127.0.0.1:{imap}\"\nupstream_tls = \"starttls\"\nupstream_ca = \"{ca}\"\n[tls]\ncert = \"{cert}\"\nkey = \"{key}\"\n",
        home = alice.home.display(),
        imap = servers.imap(),
        ca = servers.ca_pem().display(),
        cert = certs.join("cert.pem").display(),
        key = certs.join("key.pem").display(),
    );
    let meshmail = Meshmail::start(&config);
    World {
        config,
        tls_port,
        certs,
        root,
        servers,
        meshmail,
        alice,
        cases,
        uids,
        oracle_uids,
    }
}

/// S/MIME signed, then encrypted: the signatures inside are checked with the certificates the
/// SignedData carries.
fn smime_signed_cases(dir: &Path, alice: &TestAccount, g: &Gpg, cases: &mut Vec<Case>) {
    let outer = |name: &str| OUTER.replace("NAME", name);
    let alice_cert = alice.home.join("smime.pem");
    // 13. Detached (multipart/signed) by Bob's RSA certificate, in EnvelopedData.
    let bob = smime::signer(dir, "bob@example.test", false);
    let part =
        crlf("Content-Type: text/plain; charset=us-ascii\r\n\r\nSigned by S/MIME: cloudberry.\r\n");
    let inner = smime::multipart_signed(&part, &smime::sign(dir, &bob, &part, true));
    let o = outer("m13");
    cases.push(Case {
        name: "smime-detached-verified",
        stored: smime::enveloped(
            &o,
            &smime::encrypt(dir, &inner, &alice_cert, "-aes256"),
            false,
        ),
        view: expected_view(
            &format!("decrypted; signed-by={}; verified=yes", bob.fingerprint),
            &o,
            None,
            &inner,
        ),
    });
    // 14. Opaque signed-data by Carol's P-256 certificate, in AuthEnvelopedData: the view is
    //     the content the SignedData carries.
    let carol = smime::signer(dir, "carol@example.test", true);
    let content =
        crlf("Content-Type: text/plain; charset=us-ascii\r\n\r\nOpaque and sealed: mulberry.\r\n");
    let inner = smime::opaque_signed(&smime::sign(dir, &carol, &content, false));
    let o = outer("m14").replace(
        "From: Bob <bob@example.test>",
        "From: Carol <carol@example.test>",
    );
    cases.push(Case {
        name: "smime-opaque-verified",
        stored: smime::enveloped(
            &o,
            &smime::encrypt(dir, &inner, &alice_cert, "-aes-256-gcm"),
            true,
        ),
        view: expected_view(
            &format!("decrypted; signed-by={}; verified=yes", carol.fingerprint),
            &o,
            None,
            &content,
        ),
    });
    // 15. Bob's S/MIME signature over a text that was changed afterwards, in PGP/MIME.
    let signed = crlf("Content-Type: text/plain; charset=us-ascii\r\n\r\nPay 100 to Bob.\r\n");
    let changed = crlf("Content-Type: text/plain; charset=us-ascii\r\n\r\nPay 900 to Eve.\r\n");
    let inner = smime::multipart_signed(&changed, &smime::sign(dir, &bob, &signed, true));
    let armored = gpg_encrypt(g, dir, &inner, &["-r", &alice.openpgp_fingerprint]);
    cases.push(Case {
        name: "smime-detached-tampered",
        stored: pgp_mime(&outer("m15"), &armored),
        view: expected_view(
            &format!("decrypted; signed-by={}; verified=no", bob.fingerprint),
            &outer("m15"),
            None,
            &inner,
        ),
    });
}

impl World {
    fn fetch(&self, port: u16, user: &str, mailbox: &str, uid: &str, item: &str) -> Vec<u8> {
        let out = oracle()
            .args([
                "fetch",
                &port.to_string(),
                user,
                "secret",
                mailbox,
                uid,
                item,
            ])
            .output()
            .expect("python");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn via_meshmail(&self, uid: &str, item: &str) -> Vec<u8> {
        self.fetch(self.meshmail.port, "alice", "INBOX", uid, item)
    }

    fn direct(&self, mailbox: &str, uid: &str, item: &str) -> Vec<u8> {
        self.fetch(self.servers.imap(), "alice", mailbox, uid, item)
    }
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[test]
fn dovecot_agrees_with_every_item_of_the_decrypted_view() {
    let w = world();
    // The server holds ciphertext only.
    for (case, uid) in w.cases.iter().zip(&w.uids) {
        let stored = w.direct("INBOX", uid, "BODY.PEEK[]");
        for secret in ["pomegranate", "kumquat", "tamarind", "durian", "lychee"] {
            assert!(
                case.name == "plaintext" || !contains(&stored, secret),
                "{} is readable on the server",
                case.name
            );
        }
    }
    let pairs: Vec<String> = w
        .uids
        .iter()
        .zip(&w.oracle_uids)
        .map(|(a, b)| format!("{a}:{b}"))
        .collect();
    let items = [
        "BODYSTRUCTURE",
        "BODY",
        "ENVELOPE",
        "RFC822.SIZE",
        "BODY.PEEK[]",
        "BODY.PEEK[HEADER]",
        "BODY.PEEK[TEXT]",
        "BODY.PEEK[1]",
        "BODY.PEEK[2]",
        "BODY.PEEK[1.MIME]",
        "BODY.PEEK[2.MIME]",
        "BODY.PEEK[1.1]",
        "BODY.PEEK[2.HEADER]",
        "BODY.PEEK[2.TEXT]",
        "BODY.PEEK[HEADER.FIELDS (FROM SUBJECT DATE)]",
        "BODY.PEEK[HEADER.FIELDS.NOT (SUBJECT)]",
        "BODY.PEEK[]<0.100>",
        "BODY.PEEK[]<100.1000>",
        "BODY.PEEK[1]<5.10>",
        "RFC822.HEADER",
        "RFC822.SIZE BODYSTRUCTURE ENVELOPE",
    ];
    let out = run(oracle().args([
        "compare",
        &w.meshmail.port.to_string(),
        &w.servers.imap().to_string(),
        "alice",
        "secret",
        "INBOX",
        "Oracle",
        &pairs.join(","),
        &items.join("|"),
    ]));
    assert_eq!(
        out.code,
        0,
        "{}\n{}\n{}",
        out.stdout,
        out.stderr,
        w.meshmail.log_text()
    );
    assert!(out.stdout.contains(", 0 mismatches"), "{}", out.stdout);
}

#[test]
fn the_view_is_what_the_sender_wrote_and_forged_results_never_reach_the_client() {
    let w = world();
    for (case, uid) in w.cases.iter().zip(&w.uids) {
        let got = w.via_meshmail(uid, "BODY.PEEK[]");
        assert!(
            got.windows(case.view.len())
                .any(|x| x == case.view.as_slice()),
            "{}: the view differs:\n{}",
            case.name,
            String::from_utf8_lossy(&got)
        );
        // Deterministic: the same bytes every time.
        assert_eq!(got, w.via_meshmail(uid, "BODY.PEEK[]"), "{}", case.name);
    }
    let forged = w
        .cases
        .iter()
        .position(|c| c.name == "forged-result")
        .expect("case");
    let got = String::from_utf8_lossy(&w.via_meshmail(&w.uids[forged], "BODY.PEEK[]")).to_string();
    assert_eq!(
        got.to_ascii_lowercase().matches("meshmail-result").count(),
        1,
        "{got}"
    );
    assert!(!got.contains("verified=yes"), "{got}");
}

#[test]
fn a_non_peek_fetch_sets_seen_upstream_as_dovecot_does() {
    let w = world();
    let uid = &w.uids[0];
    let before = w.direct("INBOX", uid, "FLAGS");
    assert!(
        !contains(&before, "\\Seen"),
        "{}",
        String::from_utf8_lossy(&before)
    );
    let got = w.via_meshmail(uid, "BODY[TEXT]");
    assert!(
        contains(&got, "pomegranate"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    // Dovecot announces the new flag in the same response, through meshmail too.
    assert!(
        contains(&got, "FLAGS (\\Seen)"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let after = w.direct("INBOX", uid, "FLAGS");
    assert!(
        contains(&after, "\\Seen"),
        "{}",
        String::from_utf8_lossy(&after)
    );
}

#[test]
fn another_login_sees_its_mailbox_untouched() {
    let w = world();
    // Bob's mailbox holds a message encrypted to Alice's key: Bob's session is not mapped.
    let stored = &w.cases[0].stored;
    let uids = append(
        &w.servers,
        "bob",
        "INBOX",
        w.root.path(),
        &[stored.as_slice()],
    );
    let got = w.fetch(w.meshmail.port, "bob", "INBOX", &uids[0], "BODY.PEEK[]");
    assert!(got.windows(stored.len()).any(|x| x == stored.as_slice()));
    assert!(!contains(&got, "Meshmail-Result"));
}

#[test]
fn capabilities_injection_and_bad_input() {
    let w = world();
    let wait = std::time::Duration::from_secs(2);
    let port = w.meshmail.port;
    let (caps, _) = converse(port, b"a CAPABILITY\r\n", wait);
    assert!(caps.contains("STARTTLS") && caps.contains("IDLE"), "{caps}");
    for gone in [
        "SORT",
        "THREAD",
        "ESEARCH",
        "COMPRESS",
        "BINARY",
        "NOTIFY",
        "PREVIEW",
        "URLAUTH",
        "CATENATE",
        "MULTIAPPEND",
    ] {
        assert!(!caps.contains(gone), "{gone} offered: {caps}");
    }
    // After login too (the tagged OK's capability code).
    let (login, _) = converse(
        port,
        b"a LOGIN alice secret\r\nb ENABLE QRESYNC UTF8=ACCEPT\r\nc SORT (DATE) UTF-8 ALL\r\n",
        wait,
    );
    assert!(login.contains("a OK"), "{login}");
    assert!(
        !login.contains("SORT") || login.contains("c BAD"),
        "{login}"
    );
    assert!(
        login.contains("* ENABLED\r\nb OK"),
        "ENABLE of unhandled extensions must enable nothing: {login}"
    );
    assert!(login.contains("c BAD"), "{login}");
    // STARTTLS with a command pipelined in plaintext: the connection is closed.
    let (reply, closed) = converse(port, b"a STARTTLS\r\nb LOGIN alice secret\r\n", wait);
    assert!(
        closed,
        "still open after plaintext behind STARTTLS: {reply}"
    );
    assert!(!reply.contains("b OK"), "{reply}");
    // An HTTP request: closed at once.
    let (reply, closed) = converse(port, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", wait);
    assert!(closed && reply.contains("BYE"), "{reply}");
    // A huge literal announcement is refused, and the session goes on.
    let (reply, _) = converse(port, b"a LOGIN {4000000000}\r\nb NOOP\r\n", wait);
    assert!(
        reply.contains("a NO [TOOBIG]") && reply.contains("b OK"),
        "{reply}"
    );
    // A line that never ends: refused before it fills memory.
    let mut long = b"a NOOP ".to_vec();
    long.extend(std::iter::repeat_n(b'x', 400_000));
    let (reply, closed) = converse(port, &long, wait);
    assert!(closed && reply.contains("BYE [TOOBIG]"), "{reply}");
    // Junk of every kind: meshmail keeps serving.
    let mut junk = Vec::new();
    for i in 0..2000u32 {
        junk.push((i.wrapping_mul(2654435761) >> 13) as u8);
    }
    junk.extend_from_slice(b"\r\nz FETCH 1:* (BODY[\r\ny UID FETCH x (\r\nx {5+}\r\nabc\r\n");
    let _ = converse(port, &junk, wait);
    let (caps, _) = converse(port, b"a CAPABILITY\r\n", wait);
    assert!(caps.contains("a OK"), "meshmail stopped serving: {caps}");
}

#[test]
fn mbsync_through_meshmail_gets_the_decrypted_messages_once() {
    let w = world();
    let local = w.root.path().join("maildir");
    std::fs::create_dir_all(&local).expect("dir");
    let rc = w.root.path().join("mbsyncrc");
    std::fs::write(
        &rc,
        format!(
            "IMAPAccount a\nHost 127.0.0.1\nPort {port}\nUser alice\nPass secret\nSSLType None\nAuthMechs LOGIN\n\nIMAPStore remote\nAccount a\n\nMaildirStore local\nPath {dir}/\nInbox {dir}/INBOX\n\nChannel c\nFar :remote:\nNear :local:\nPatterns INBOX\nCreate Near\nSync Pull\nSyncState *\n",
            port = w.meshmail.port,
            dir = local.display()
        ),
    )
    .expect("rc");
    let first = run(Command::new("mbsync")
        .arg("-c")
        .arg(&rc)
        .args(["-V", "-Dn", "c"]));
    assert_eq!(first.code, 0, "{first:#?}\n{}", w.meshmail.log_text());
    assert!(first.stdout.contains("BODY.PEEK[]"), "{first:#?}");
    let files = maildir_files(&local.join("INBOX"));
    assert_eq!(files.len(), w.cases.len(), "{first:#?}");
    // mbsync adds its own X-TUID field to every header it stores; nothing else may differ.
    let mut found: Vec<Vec<u8>> = files
        .iter()
        .map(|f| {
            let text = String::from_utf8_lossy(&std::fs::read(f).expect("read")).into_owned();
            text.lines()
                .filter(|l| !l.starts_with("X-TUID: "))
                .map(|l| format!("{l}\n"))
                .collect::<String>()
                .into_bytes()
        })
        .collect();
    for case in &w.cases {
        // mbsync stores LF line endings.
        let want = String::from_utf8_lossy(&case.view)
            .replace("\r\n", "\n")
            .into_bytes();
        let at = found.iter().position(|f| *f == want);
        assert!(
            at.is_some(),
            "{} not synced as its view: {:?}",
            case.name,
            found
                .iter()
                .map(|f| String::from_utf8_lossy(f).into_owned())
                .collect::<Vec<_>>()
        );
        found.remove(at.unwrap_or_default());
    }
    // The second sync asks for no message body (mbsync's network trace shows its commands).
    let second = run(Command::new("mbsync")
        .arg("-c")
        .arg(&rc)
        .args(["-V", "-Dn", "c"]));
    assert_eq!(second.code, 0, "{second:#?}");
    assert_eq!(maildir_files(&local.join("INBOX")).len(), w.cases.len());
    let trace = format!("{}{}", second.stdout, second.stderr);
    assert!(trace.contains("UID FETCH"), "no trace: {trace}");
    assert!(
        !trace.contains("BODY.PEEK[]"),
        "the second sync transferred messages: {trace}"
    );
}

fn maildir_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for sub in ["cur", "new"] {
        if let Ok(entries) = std::fs::read_dir(dir.join(sub)) {
            out.extend(entries.flatten().map(|e| e.path()));
        }
    }
    out
}

#[test]
fn append_through_meshmail_stores_ciphertext_and_reads_back_the_same_bytes() {
    let w = world();
    let draft = crlf("From: Alice <alice@example.test>\r\nTo: bob@example.test\r\nSubject: Draft about persimmons\r\nDate: Fri, 27 Nov 2026 08:00:00 +0000\r\nMessage-ID: <d1@example.test>\r\nX-Mozilla-Draft-Info: internal/draft; vcard=0; receipt=0\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nThe persimmon plan, in detail.\r\n");
    let file = w.root.path().join("draft.eml");
    std::fs::write(&file, &draft).expect("write");
    for mailbox in ["INBOX", "Drafts", "Sent"] {
        let uid = run(oracle()
            .env("IMAP_FLAGS", "(\\Draft)")
            .env("IMAP_DATE", "\"01-Jan-2026 12:34:56 +0000\"")
            .args([
                "append",
                "127.0.0.1",
                &w.meshmail.port.to_string(),
                "alice",
                "secret",
                mailbox,
            ])
            .arg(&file))
        .ok()
        .stdout
        .trim()
        .to_owned();
        // The UID the client got is the server's, and the server holds ciphertext only.
        let stored = w.direct(mailbox, &uid, "BODY.PEEK[]");
        let text = String::from_utf8_lossy(&stored);
        assert!(text.contains("multipart/encrypted"), "{mailbox}: {text}");
        assert!(
            !text.contains("persimmon"),
            "{mailbox}: plaintext on the server: {text}"
        );
        assert!(text.contains("Message-ID: <d1@example.test>"), "{text}");
        assert!(
            text.contains("X-Mozilla-Draft-Info: internal/draft"),
            "{text}"
        );
        let flags = w.direct(mailbox, &uid, "FLAGS INTERNALDATE");
        assert!(
            contains(&flags, "\\Draft"),
            "{}",
            String::from_utf8_lossy(&flags)
        );
        assert!(
            contains(&flags, "01-Jan-2026 12:34:56 +0000"),
            "the internal date is the client's: {}",
            String::from_utf8_lossy(&flags)
        );
        // gpg reads it with Alice's key: it is real OpenPGP to her.
        let g = Gpg::with_secret_of(&w.alice.home, w.root.path().join("gpg-alice"));
        let out = g.decrypt(&common::mail::pgp_part(&stored));
        assert_eq!(out.code, 0, "{out:#?}");
        assert!(out.stdout.contains("The persimmon plan"), "{out:#?}");
        // Through meshmail: the very bytes appended, and the size the client cached.
        let got = w.fetch(
            w.meshmail.port,
            "alice",
            mailbox,
            &uid,
            "RFC822.SIZE BODY.PEEK[]",
        );
        assert!(
            got.windows(draft.len()).any(|x| x == draft.as_slice()),
            "{mailbox}: {}",
            String::from_utf8_lossy(&got)
        );
        assert!(
            contains(&got, &format!("RFC822.SIZE {}", draft.len())),
            "{}",
            String::from_utf8_lossy(&got)
        );
        assert!(!contains(&got, "Meshmail-Result"));
    }
}

#[test]
fn search_over_encrypted_and_plaintext_messages_agrees_with_the_plaintext_oracle() {
    let w = world();
    // curl finds a word that only an encrypted body holds.
    let url = format!("imap://127.0.0.1:{}/INBOX", w.meshmail.port);
    let curl = run(Command::new("curl").args([
        "-s",
        "--url",
        &url,
        "-u",
        "alice:secret",
        "-X",
        "UID SEARCH BODY pomegranate",
    ]));
    assert_eq!(curl.code, 0, "{curl:#?}");
    assert_eq!(
        curl.stdout.trim(),
        format!("* SEARCH {}", w.uids[0]),
        "{curl:#?}"
    );
    // Dovecot alone cannot: the word is ciphertext on the server.
    let direct = run(oracle().args([
        "search",
        &w.servers.imap().to_string(),
        "alice",
        "secret",
        "INBOX",
        "uid",
        "BODY pomegranate",
    ]))
    .ok()
    .stdout
    .clone();
    assert_eq!(direct.trim(), "", "the server sees the plaintext?");
    let queries = [
        "BODY pomegranate",
        "TEXT durian",
        "SUBJECT quarterly",
        "OR BODY kumquat SUBJECT plain",
        "NOT BODY lychee",
        "OR NOT FROM bob HEADER Message-ID m4",
        "LARGER 300",
        "SMALLER 300 NOT SUBJECT report",
        "OR (SUBJECT trust) (BODY figs)",
        "NOT (OR BODY tamarind BODY durian)",
        "SENTSINCE 26-Nov-2026 BODY the",
        "UNSEEN BODY noon",
        "2:5 NOT BODY nothing",
        "ALL",
    ];
    for kind in ["uid", "seq"] {
        let search = |port: u16, mailbox: &str| {
            run(oracle()
                .args([
                    "search",
                    &port.to_string(),
                    "alice",
                    "secret",
                    mailbox,
                    kind,
                ])
                .args(queries))
            .ok()
            .stdout
            .clone()
        };
        let got = search(w.meshmail.port, "INBOX");
        let want = search(w.servers.imap(), "Oracle");
        for ((q, g), o) in queries.iter().zip(got.lines()).zip(want.lines()) {
            assert_eq!(
                g, o,
                "{kind} SEARCH {q}: meshmail {g:?}, Dovecot on plaintext {o:?}"
            );
        }
        assert_eq!(got.lines().count(), queries.len(), "{got}");
    }
    assert!(
        w.meshmail.log_text().contains("IMAP login"),
        "meshmail served the searches"
    );
}

fn views_built(log: &str) -> usize {
    log.matches("view built").count()
}

#[test]
fn header_sync_after_a_restart_reads_the_index_not_the_ciphertext() {
    let mut w = world();
    let encrypted = w.cases.iter().filter(|c| c.name != "plaintext").count();
    let sync = "UID RFC822.SIZE FLAGS BODY.PEEK[HEADER.FIELDS (From To Subject Date Message-ID Content-Type)]";
    let strip_seq = |b: Vec<u8>| String::from_utf8_lossy(&b).to_string();
    let first = strip_seq(w.via_meshmail("1:*", sync));
    let oracle = strip_seq(w.direct("Oracle", "1:*", sync));
    // Same answers as Dovecot gives for the plaintext (UIDs are equal in both mailboxes).
    // Flags differ (\\Recent belongs to the first session that sees a message).
    let norm = |s: &str| {
        let mut out = String::new();
        let mut rest = s;
        while let Some(i) = rest.find("FLAGS (") {
            out.push_str(&rest[..i]);
            rest = rest[i..].split_once(')').map(|x| x.1).unwrap_or("");
        }
        out.push_str(rest);
        // One entry per message, in UID order (meshmail answers indexed messages first).
        let mut messages: Vec<String> = out
            .split(")")
            .filter(|m| !m.trim().is_empty())
            .map(|m| {
                m.trim_start_matches(|c: char| c.is_ascii_digit() || c == ' ')
                    .to_owned()
            })
            .collect();
        messages.sort();
        messages
    };
    assert_eq!(norm(&first), norm(&oracle), "{first}\n---\n{oracle}");
    assert!(first.contains("Subject: Quarterly numbers"), "{first}");
    assert_eq!(
        views_built(&w.meshmail.log_text()),
        encrypted,
        "{}",
        w.meshmail.log_text()
    );

    // The index at rest: owner-only, and no decrypted text in it.
    let index = w.alice.home.join("imap-index");
    let mut files = 0;
    for f in std::fs::read_dir(&index).expect("index dir").flatten() {
        use std::os::unix::fs::PermissionsExt;
        let meta = f.metadata().expect("meta");
        assert_eq!(
            meta.permissions().mode() & 0o077,
            0,
            "{:?} is readable by others",
            f.path()
        );
        let bytes = std::fs::read(f.path()).expect("read");
        for secret in ["Quarterly", "pomegranate", "kumquat", "lychee"] {
            assert!(!contains(&bytes, secret), "{secret} in the index at rest");
        }
        files += 1;
    }
    assert!(files > 0, "no index written");

    // After a restart the same sync decrypts nothing and fetches no ciphertext.
    w.meshmail.stop();
    w.meshmail = Meshmail::start(&w.config);
    let second = strip_seq(w.via_meshmail("1:*", sync));
    assert_eq!(norm(&second), norm(&first));
    let log = w.meshmail.log_text();
    assert_eq!(
        views_built(&log),
        0,
        "decrypted again after the restart: {log}"
    );

    // A non-PEEK fetch of an indexed message sets \Seen on the server (UID STORE), and the
    // answer carries it, as Dovecot's does.
    let uid = &w.uids[1];
    let got = w.via_meshmail(uid, "BODY[TEXT]");
    assert!(
        contains(&got, "kumquat"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    assert!(
        contains(&got, "\\Seen"),
        "{}",
        String::from_utf8_lossy(&got)
    );
    let flags = w.direct("INBOX", uid, "FLAGS");
    assert!(
        contains(&flags, "\\Seen"),
        "{}",
        String::from_utf8_lossy(&flags)
    );
}

#[test]
fn a_locked_key_store_answers_unavailable_never_a_view_or_plaintext() {
    let root = tempdir();
    let servers = MailServers::start();
    let (home, _pass, _stored, uid) = locked_account_with_a_message(
        root.path(),
        &servers,
        "frank",
        &OUTER.replace("NAME", "f1"),
        "Locked away: mulberry.",
    );
    // No passphrase in the configuration: the account is mapped but locked.
    let config = servers.meshmail_config(&home, "frank", None, "");
    let m = Meshmail::start(&config);
    let out = oracle()
        .args([
            "fetch",
            &m.port.to_string(),
            "frank",
            "secret",
            "INBOX",
            &uid,
            "BODY.PEEK[]",
        ])
        .output()
        .expect("python");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.starts_with("NO") && text.contains("UNAVAILABLE"),
        "{text}"
    );
    assert!(
        !text.contains("mulberry") && !text.contains("BEGIN PGP"),
        "{text}"
    );
    // APPEND is refused rather than stored in plaintext.
    let draft = root.path().join("draft.eml");
    std::fs::write(
        &draft,
        crlf("Subject: x\r\n\r\nA draft about elderberries.\r\n"),
    )
    .expect("write");
    let appended = run(oracle()
        .args([
            "append",
            "127.0.0.1",
            &m.port.to_string(),
            "frank",
            "secret",
            "Drafts",
        ])
        .arg(&draft));
    assert_ne!(appended.code, 0, "{appended:#?}");
    assert!(appended.stderr.contains("UNAVAILABLE"), "{appended:#?}");
    let count = run(oracle().args([
        "search",
        &servers.imap().to_string(),
        "frank",
        "secret",
        "Drafts",
        "uid",
        "ALL",
    ]));
    assert_eq!(count.code, 0, "{count:#?}");
    assert_eq!(count.stdout.trim(), "", "{count:#?}");
}

#[test]
fn malformed_server_responses_give_errors_not_crashes_or_unbounded_memory() {
    let root = tempdir();
    let alice = init_account(root.path(), "alice@example.test");
    let port = free_port();
    #[allow(clippy::zombie_processes)] // killed and reaped at the end
    let mut fake = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/tools/fake_imap.py"))
        .arg(port.to_string())
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("fake server");
    wait_for_port(port, "fake IMAP server");
    // `badfetch` is mapped (meshmail parses its FETCH answers); the others are relayed.
    // Messages of 1 MB at most.
    let mut config = format!(
        "home = \"{home}\"\nupstream_user = \"badfetch\"\n[imap]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"127.0.0.1:{port}\"\nupstream_tls = \"none\"\n[limits]\nmax_message_size = 1000000\n",
        home = alice.home.display(),
    );
    config = config.replace(
        "[limits]",
        "[limits]\nidle_timeout_secs = 5\nupstream_timeout_secs = 2",
    );
    let m = Meshmail::start(&config);
    let wait = std::time::Duration::from_secs(5);
    let session = |user: &str, command: &str| {
        converse(
            m.port,
            format!("a LOGIN {user} pw\r\nb SELECT INBOX\r\nc {command}\r\n").as_bytes(),
            wait,
        )
    };
    let (junk, _) = session("junk", "NOOP");
    assert!(junk.contains("c OK"), "{junk}");
    let (huge, closed) = session("hugeliteral", "UID FETCH 1 (BODY.PEEK[])");
    assert!(closed && huge.contains("BYE"), "{huge}");
    let (long, closed) = session("longline", "NOOP");
    assert!(closed && long.contains("BYE"), "{long}");
    // A literal shorter than announced: the server stops in the middle of its answer, and
    // meshmail gives up after the upstream timeout (2 s) instead of the idle timeout.
    let started = std::time::Instant::now();
    let (bad, closed) = session("badfetch", "UID FETCH 1 (BODY.PEEK[])");
    assert!(
        !bad.contains("c OK"),
        "a broken answer must not complete the FETCH: {bad}"
    );
    assert!(
        closed && bad.contains("BYE [UNAVAILABLE] The mail server stopped in the middle"),
        "{bad}"
    );
    assert!(started.elapsed() < wait, "{:?}", started.elapsed());
    // meshmail is still there, and its memory stayed bounded.
    let (caps, _) = converse(m.port, b"a CAPABILITY\r\n", wait);
    assert!(caps.contains("a OK"), "{caps}");
    let pid = run(Command::new("pgrep").args(["-f", &format!("{}", m.dir.path().display())]))
        .stdout
        .clone();
    assert!(!pid.trim().is_empty(), "meshmail's process not found");
    for p in pid.lines() {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", p.trim())).unwrap_or_default();
        if let Some(kb) = status.lines().find(|l| l.starts_with("VmHWM")) {
            let kb: u64 = kb
                .split_whitespace()
                .nth(1)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            assert!(kb < 200 * 1024, "peak RSS {kb} kB");
        }
    }
    let _ = fake.kill();
    let _ = fake.wait();
}

#[test]
fn modseq_and_seen_are_the_servers() {
    let w = world();
    let modseq = |b: &[u8]| -> u64 {
        let t = String::from_utf8_lossy(b);
        t.split("MODSEQ (")
            .nth(1)
            .and_then(|r| r.split(')').next())
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no MODSEQ in {t}"))
    };
    for uid in [&w.uids[0], &w.uids[3]] {
        // Through meshmail (view path) and straight from Dovecot: the same MODSEQ.
        let via = w.via_meshmail(uid, "MODSEQ BODY.PEEK[HEADER]");
        let direct = w.direct("INBOX", uid, "MODSEQ");
        assert_eq!(
            modseq(&via),
            modseq(&direct),
            "{}",
            String::from_utf8_lossy(&via)
        );
        // Reading it for real sets \\Seen and moves MODSEQ on the server, as Dovecot does.
        let read = w.via_meshmail(uid, "MODSEQ BODY[TEXT]");
        let after = w.direct("INBOX", uid, "MODSEQ FLAGS");
        assert!(
            contains(&after, "\\Seen"),
            "{}",
            String::from_utf8_lossy(&after)
        );
        assert!(modseq(&after) > modseq(&direct));
        assert!(
            contains(&read, "\\Seen"),
            "{}",
            String::from_utf8_lossy(&read)
        );
    }
}

#[test]
fn tls_both_ways_and_authenticate_plain_reach_the_view() {
    let w = world();
    let ca = w.certs.join("cert.pem");
    for (port, mode, mech) in [
        (w.meshmail.port, "starttls", "plain"),
        (w.tls_port, "implicit", "login"),
    ] {
        // HEADER.FIELDS of a message not decrypted yet: meshmail fetches its ciphertext on its
        // own connection, logged in by replaying the client's LOGIN or AUTHENTICATE PLAIN.
        let uid = if mode == "starttls" {
            &w.uids[0]
        } else {
            &w.uids[1]
        };
        let out = run(oracle().args([
            "tls",
            &port.to_string(),
            mode,
            &ca.display().to_string(),
            mech,
            "alice",
            "secret",
            "INBOX",
            uid,
            "BODY.PEEK[HEADER.FIELDS (SUBJECT)]",
        ]));
        assert_eq!(
            out.code,
            0,
            "{mode}/{mech}: {out:#?}\n{}",
            w.meshmail.log_text()
        );
        let want = if mode == "starttls" {
            "Quarterly numbers"
        } else {
            "Hidden lunch"
        };
        assert!(out.stdout.contains(want), "{mode}/{mech}: {out:#?}");
    }
}

#[test]
fn a_message_sent_through_meshmails_smtp_proxy_reads_back_through_its_imap_proxy() {
    let root = tempdir();
    let servers = MailServers::start();
    let alice = init_account(root.path(), "alice@example.test");
    // Alice's own certificate in her keyring: mail to her plain address must be encrypted.
    std::fs::create_dir_all(alice.home.join("keyring")).expect("keyring");
    std::fs::copy(
        alice.home.join("openpgp.asc"),
        alice.home.join("keyring/alice.asc"),
    )
    .expect("copy");
    let smtp_port = free_port();
    let config = servers.meshmail_config(
        &alice.home,
        "alice",
        Some(smtp_port),
        "[encrypt]\ndefault = \"never\"\naddresses = { \"alice@example.test\" = \"required\" }\n",
    );
    let m = Meshmail::start(&config);
    let sent = common::mail::swaks(
        smtp_port,
        "alice",
        "secret",
        "alice@example.test",
        &[
            "--header",
            "Subject: Through both proxies",
            "--body",
            "The proxied fruit is a guava.",
        ],
    );
    assert_eq!(sent.code, 0, "{sent:#?}\n{}", m.log_text());
    let inbox = servers.wait_for_inbox("alice", 1);
    assert_eq!(inbox.len(), 1, "{}", servers.postfix_log());
    let stored = &inbox[0];
    assert!(
        !contains(stored, "guava") && !contains(stored, "Through both"),
        "plaintext on the server"
    );
    // The expected view, built from what the server holds and what gpg decrypts.
    let g = Gpg::with_secret_of(&alice.home, root.path().join("gpg"));
    let inner = g.decrypt(&common::mail::pgp_part(stored));
    assert_eq!(inner.code, 0, "{inner:#?}");
    let inner = inner.stdout.into_bytes();
    let head = String::from_utf8_lossy(
        &stored[..stored
            .windows(4)
            .position(|x| x == b"\r\n\r\n")
            .expect("header")
            + 2],
    )
    .to_string();
    let mut outer = String::new();
    let mut skip = false;
    for line in head.split_inclusive("\r\n") {
        if !line.starts_with([' ', '\t']) {
            skip = line.to_ascii_lowercase().starts_with("content-");
        }
        if !skip {
            outer.push_str(line);
        }
    }
    let inner_head = String::from_utf8_lossy(
        &inner[..inner
            .windows(4)
            .position(|x| x == b"\r\n\r\n")
            .expect("inner header")
            + 2],
    )
    .to_string();
    let inner_field = |name: &str| {
        inner_head
            .split("\r\n")
            .find(|l| {
                l.to_ascii_lowercase()
                    .starts_with(&format!("{}:", name.to_ascii_lowercase()))
            })
            .map(|l| l[name.len() + 1..].trim().to_owned())
    };
    let subject = inner_field("Subject").expect("protected subject");
    assert_eq!(subject, "Through both proxies");
    let want = expected_view(
        &format!(
            "decrypted; signed-by={}; verified=yes",
            alice.openpgp_fingerprint
        ),
        &outer,
        Some(&subject),
        &inner,
    );
    let uids = run(oracle().args([
        "search",
        &m.port.to_string(),
        "alice",
        "secret",
        "INBOX",
        "uid",
        "ALL",
    ]))
    .ok()
    .stdout
    .clone();
    let uid = uids.trim().to_owned();
    let out = oracle()
        .args([
            "fetch",
            &m.port.to_string(),
            "alice",
            "secret",
            "INBOX",
            &uid,
            "BODY.PEEK[]",
        ])
        .output()
        .expect("python");
    assert!(
        out.stdout.windows(want.len()).any(|x| x == want.as_slice()),
        "got:\n{}\nwant:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&want)
    );
    // And Dovecot agrees on the structure of that view.
    let oracle_uid = append(&servers, "alice", "Oracle", root.path(), &[want.as_slice()]);
    let cmp = run(oracle().args([
        "compare",
        &m.port.to_string(),
        &servers.imap().to_string(),
        "alice",
        "secret",
        "INBOX",
        "Oracle",
        &format!("{uid}:{}", oracle_uid[0]),
        "BODYSTRUCTURE|ENVELOPE|RFC822.SIZE|BODY.PEEK[1]|BODY.PEEK[HEADER]",
    ]));
    assert_eq!(cmp.code, 0, "{}", cmp.stdout);
}

#[test]
fn search_in_sequence_numbers_uses_the_clients_own_numbering() {
    let w = world();
    // "durian" is UID 4. The client's session saw UID 1 go (durian is its number 3) but not
    // yet UID 2: a fresh session numbers durian 2. meshmail must answer 3, and a sequence-set
    // criterion means the client's numbers too (3 names durian, 2 does not).
    let out = run(oracle().args([
        "stale-search",
        &w.meshmail.port.to_string(),
        &w.servers.imap().to_string(),
        "alice",
        "secret",
        "INBOX",
        &w.uids[0],
        &w.uids[1],
        "BODY durian",
        "3 BODY durian",
        "2 BODY durian",
    ]));
    assert_eq!(w.uids[3], "4");
    assert_eq!(out.code, 0, "{out:#?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines, ["3", "3", ""], "{out:#?}\n{}", w.meshmail.log_text());
}

#[test]
fn plaintext_injected_after_the_upstreams_starttls_reply_is_refused() {
    let root = tempdir();
    let alice = init_account(root.path(), "alice@example.test");
    let ca = make_test_ca(root.path(), &["localhost"]);
    let port = free_port();
    #[allow(clippy::zombie_processes)] // killed and reaped at the end
    let mut fake = Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/tools/fake_imap.py"))
        .arg(port.to_string())
        .arg(&ca.cert_pem)
        .arg(&ca.key_pem)
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("fake server");
    wait_for_port(port, "fake IMAP server");
    let config = format!(
        "home = \"{home}\"\nupstream_user = \"alice\"\n[imap]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"localhost:{port}\"\nupstream_tls = \"starttls\"\nupstream_ca = \"{ca}\"\n",
        home = alice.home.display(),
        ca = ca.ca_pem.display(),
    );
    let m = Meshmail::start(&config);
    let s = std::net::TcpStream::connect(("127.0.0.1", m.port)).expect("connect");
    s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .expect("timeout");
    let mut greeting = String::new();
    let _ = std::io::BufReader::new(&s).read_line(&mut greeting);
    assert!(greeting.starts_with("* BYE [UNAVAILABLE]"), "{greeting}");
    assert!(!greeting.contains("injected"), "{greeting}");
    assert!(
        m.log_text().contains("plaintext after its STARTTLS reply"),
        "{}",
        m.log_text()
    );
    let _ = fake.kill();
    let _ = fake.wait();
}
