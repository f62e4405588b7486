//! "Never a lost recipient": when the upstream hangs up between the copies of one message,
//! the client still hears `250` for what was sent, and the recipients whose copy never went out
//! are reported to the sender. The report cannot go over the dead connection, so it waits in
//! the spool (encrypted at rest) and the sender's next session sends it, sealed to the sender's
//! own key. The upstream here is `tools/flaky_upstream.py`: a real Postfix cannot be made to
//! hang up at that moment. Policies come from a real NSD; gpg reads what arrives.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::gpg::Gpg;
use common::mail::{pgp_part, Meshmail};
use common::*;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

struct Flaky {
    child: Child,
    port: u16,
    out: PathBuf,
}

impl Flaky {
    fn start(root: &Path) -> Flaky {
        let port = free_port();
        let out = root.join("flaky-out");
        let child = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/integration/tools/flaky_upstream.py"
            ))
            .arg(port.to_string())
            .arg(&out)
            .spawn()
            .expect("flaky upstream");
        wait_for_port(port, "flaky upstream");
        Flaky { child, port, out }
    }

    /// The messages accepted so far, in order.
    fn messages(&self) -> Vec<String> {
        let mut names: Vec<(u32, PathBuf)> = std::fs::read_dir(&self.out)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        let p = e.path();
                        let n = p
                            .file_name()?
                            .to_str()?
                            .strip_suffix(".eml")?
                            .parse()
                            .ok()?;
                        Some((n, p))
                    })
                    .collect()
            })
            .unwrap_or_default();
        names.sort();
        names
            .into_iter()
            .map(|(_, p)| std::fs::read_to_string(p).unwrap())
            .collect()
    }

    fn wait_for(&self, n: usize) -> Vec<String> {
        let start = Instant::now();
        loop {
            let m = self.messages();
            if m.len() >= n || start.elapsed() > Duration::from_secs(15) {
                return m;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Flaky {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spooled(home: &Path) -> usize {
    std::fs::read_dir(home.join("spool/reports"))
        .map(|d| {
            d.flatten()
                .filter(|e| e.path().extension().is_some_and(|x| x == "json"))
                .count()
        })
        .unwrap_or(0)
}

/// Alice (mapped, sending) and Bob (his policy in a real NSD), meshmail in front of the flaky
/// upstream, its configuration ending with `extra`.
struct World {
    root: tempfile::TempDir,
    alice: TestAccount,
    bob: TestAccount,
    _nsd: Nsd,
    flaky: Flaky,
    meshmail: Meshmail,
}

fn world(extra: &str) -> World {
    let root = tempdir();
    let alice = init_account(root.path(), "alice@example.test");
    let bob = init_account(root.path(), "bob@example.test");
    let nsd = nsd_with_policies(root.path(), &[&bob]);
    let flaky = Flaky::start(root.path());
    let config = format!(
        "home = \"{home}\"\nupstream_user = \"alice\"\n[smtp]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"127.0.0.1:{up}\"\nupstream_tls = \"none\"\n[policy]\ndns = \"{dns}\"\ntimeout_secs = 2\n{extra}",
        home = alice.home.display(),
        up = flaky.port,
        dns = nsd.addr(),
    );
    let meshmail = Meshmail::start(&config);
    World {
        root,
        alice,
        bob,
        _nsd: nsd,
        flaky,
        meshmail,
    }
}

fn smtplib(port: u16, script: &str) -> Run {
    let py = format!(
        "import smtplib\ns = smtplib.SMTP('127.0.0.1', {port}, timeout=20)\ns.login('alice', 'secret')\n{script}\n"
    );
    run(Command::new("python3").arg("-c").arg(py))
}

#[test]
fn a_copy_lost_with_the_connection_is_reported_from_the_spool_on_the_next_session() {
    // Bound whole: a field left out of a pattern would be dropped (NSD stopped) at once.
    let w = world("");
    let (root, alice, bob, flaky, m) = (&w.root, &w.alice, &w.bob, &w.flaky, &w.meshmail);

    // Frank's plaintext copy goes first and is accepted; then the upstream hangs up, so Bob's
    // encrypted copy is never sent. The client hears 250 (something was delivered).
    let send = |from: &str| {
        smtplib(
            m.port,
            &format!(
                "r = s.sendmail('{from}', ['frank@example.test', '{bob}'], 'From: alice@example.test\\r\\nTo: frank@example.test, {bob}\\r\\nSubject: The secret subject\\r\\nMessage-ID: <half-{tag}@example.test>\\r\\nX-Drop-After: yes\\r\\n\\r\\nthe secret body\\r\\n')\nprint('REFUSED', r)",
                bob = bob.strong,
                tag = if from.is_empty() { "null" } else { "alice" },
            ),
        )
    };
    let r = send("alice@example.test");
    assert!(r.stdout.contains("REFUSED {}"), "{r:#?}\n{}", m.log_text());
    let got = flaky.wait_for(1);
    assert_eq!(got.len(), 1);
    assert!(got[0].contains("X-Envelope-To: <frank@example.test>"));
    assert!(!got[0].contains("X-Envelope-To: <bob@"));
    // The report could not be sent on the dead connection: it waits in the spool, encrypted.
    let start = Instant::now();
    while spooled(&alice.home) == 0 && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(spooled(&alice.home), 1, "{}", m.log_text());
    for e in std::fs::read_dir(alice.home.join("spool/reports")).unwrap() {
        let text = std::fs::read_to_string(e.unwrap().path()).unwrap();
        assert!(!text.contains("bob@") && !text.contains("half-alice"));
    }

    // The next session of the same login sends it.
    smtplib(m.port, "s.noop(); s.quit()").ok();
    let got = flaky.wait_for(2);
    assert_eq!(got.len(), 2, "{}", m.log_text());
    let report = &got[1];
    assert!(report.starts_with("X-Envelope-From: <>\r\n"), "{report}");
    assert!(report.contains("X-Envelope-To: <alice@example.test>"));
    // Sealed to Alice's own key: nothing readable outside, and never the original subject.
    assert!(report.contains("multipart/encrypted"), "{report}");
    assert!(!report.contains("bob@") && !report.contains("The secret subject"));
    let gpg = Gpg::with_secret_of(&alice.home, root.path().join("gpg-alice"));
    let out = gpg.decrypt(&pgp_part(report.as_bytes()));
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(
        out.stdout
            .contains(&format!("Final-Recipient: rfc822; {}", bob.strong)),
        "{out:#?}"
    );
    assert!(out.stdout.contains("Status: 4.4.2"), "{out:#?}");
    assert!(out.stdout.contains("<half-alice@example.test>"), "{out:#?}");
    assert!(!out.stdout.contains("The secret subject"));
    assert!(!out.stdout.contains("the secret body"));
    assert_eq!(spooled(&alice.home), 0, "sent, so removed");

    // A message with the null sender (itself a report): its lost recipient is reported to the
    // session's own account, not dropped.
    let r = send("");
    assert!(r.stdout.contains("REFUSED {}"), "{r:#?}");
    flaky.wait_for(3);
    smtplib(m.port, "s.noop(); s.quit()").ok();
    let got = flaky.wait_for(4);
    assert_eq!(got.len(), 4, "{}", m.log_text());
    assert!(got[3].contains("X-Envelope-To: <alice@example.test>"));
    let out = gpg.decrypt(&pgp_part(got[3].as_bytes()));
    assert!(out.stdout.contains("<half-null@example.test>"), "{out:#?}");
    assert!(!m.log_text().contains("given up"), "{}", m.log_text());
}

/// Every copy counts against `max_bytes_in_flight`, not only the message as received: a 10 KB
/// message fits a 16 KB budget, but not beside its encrypted copy, so it is deferred (`452`)
/// rather than held twice; the same message to a plain recipient goes through.
#[test]
fn encrypted_copies_count_against_the_bytes_in_flight() {
    let w = world("[encrypt]\ndefault = \"never\"\n[limits]\nmax_bytes_in_flight = 16384\n");
    let (bob, flaky, m) = (&w.bob, &w.flaky, &w.meshmail);
    let body = "0123456789abcdef".repeat(40);
    let send = |to: &str| {
        smtplib(
            m.port,
            &format!(
                "msg = 'From: alice@example.test\\r\\nTo: {to}\\r\\nSubject: big\\r\\n\\r\\n' + ('{body}\\r\\n' * 16)\ntry:\n    s.sendmail('alice@example.test', ['{to}'], msg); print('SENT')\nexcept smtplib.SMTPDataError as e:\n    print('REFUSED', e.smtp_code, e.smtp_error.decode())\n"
            ),
        )
    };
    let r = send(&bob.strong);
    assert!(
        r.stdout.contains("REFUSED 452") && r.stdout.contains("4.3.1"),
        "{r:#?}\n{}",
        m.log_text()
    );
    assert!(flaky.messages().is_empty(), "nothing was sent");
    let r = send("frank@example.test");
    assert!(r.stdout.contains("SENT"), "{r:#?}\n{}", m.log_text());
    assert_eq!(flaky.wait_for(1).len(), 1);
}
