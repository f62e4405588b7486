//! A home server with a self-signed certificate made the usual way (`openssl req -x509`, which
//! marks it as a CA) is used once it is pinned: named in `upstream_ca` (the SMTP upstream here)
//! or by its digest in `upstream_fingerprint` (the IMAP upstream, in the colon form `openssl
//! x509 -fingerprint -sha256` prints). Real Postfix and Dovecot serve that certificate; without
//! a pin meshmail refuses them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::mail::{swaks, MailServers, Meshmail};
use common::*;
use std::process::Command;

#[test]
fn a_self_signed_ca_flagged_upstream_is_used_once_pinned() {
    let root = tempdir();
    let servers = MailServers::start();
    let alice = init_account(root.path(), "alice@example.test");

    // The servers' certificate becomes a self-signed one with CA:TRUE, as openssl makes it.
    let tls = servers.dir().join("tls");
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args([
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout",
        ])
        .arg(tls.join("key.pem"))
        .arg("-out")
        .arg(tls.join("cert.pem")))
    .ok();
    let text = run(Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(tls.join("cert.pem")));
    assert!(text.stdout.contains("CA:TRUE"), "{text:#?}");
    let pinned = root.path().join("home-server.pem");
    std::fs::copy(tls.join("cert.pem"), &pinned).unwrap();
    run(Command::new("postfix")
        .arg("-c")
        .arg(servers.dir().join("postfix"))
        .arg("reload"))
    .ok();
    run(Command::new("doveadm")
        .arg("-c")
        .arg(servers.dir().join("dovecot/dovecot.conf"))
        .arg("reload"))
    .ok();
    std::thread::sleep(std::time::Duration::from_secs(2));
    let fingerprint = run(Command::new("openssl")
        .args(["x509", "-noout", "-fingerprint", "-sha256", "-in"])
        .arg(&pinned));
    let fingerprint = fingerprint
        .stdout
        .trim()
        .rsplit_once('=')
        .map(|(_, f)| f.to_owned())
        .unwrap();

    let config = |smtp_ca: &str, imap_pin: &str| {
        format!(
            "home = \"{home}\"\nupstream_user = \"alice\"\n[smtp]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"127.0.0.1:{sub}\"\nupstream_tls = \"starttls\"\n{smtp_ca}\n[imap]\nlisten = \"127.0.0.1:{imap_port}\"\nupstream = \"127.0.0.1:{imap}\"\nupstream_tls = \"starttls\"\n{imap_pin}\n",
            home = alice.home.display(),
            sub = servers.submission(),
            imap = servers.imap(),
            imap_port = free_port(),
        )
    };
    let imap_login = |config: &str| {
        let port: u16 = config
            .split("[imap]\nlisten = \"127.0.0.1:")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap()
            .parse()
            .unwrap();
        run(Command::new("python3").arg("-c").arg(format!(
            "import imaplib\ntry:\n    m = imaplib.IMAP4('127.0.0.1', {port}); print('LOGIN', m.login('alice', 'secret')[0]); print('SELECT', m.select('INBOX')[0])\nexcept Exception as e:\n    print('FAILED', e)\n"
        )))
    };

    // Pinned: the certificate file for SMTP, its digest for IMAP.
    let good = config(
        &format!("upstream_ca = \"{}\"", pinned.display()),
        &format!("upstream_fingerprint = \"sha256:{fingerprint}\""),
    );
    let m = Meshmail::start(&good);
    let r = swaks(m.port, "alice", "secret", "alice@example.test", &[]);
    assert!(
        r.stdout.contains("<-  250 2.0.0 Message accepted"),
        "{r:#?}\n{}",
        m.log_text()
    );
    assert_eq!(servers.wait_for_inbox("alice", 1).len(), 1);
    let r = imap_login(&good);
    assert!(
        r.stdout.contains("LOGIN OK") && r.stdout.contains("SELECT OK"),
        "{r:#?}\n{}",
        m.log_text()
    );
    drop(m);

    // Not pinned (only the test CA, which no longer signs the servers' certificate): refused.
    let bad = config(
        &format!("upstream_ca = \"{}\"", servers.ca_pem().display()),
        &format!("upstream_ca = \"{}\"", servers.ca_pem().display()),
    );
    let m = Meshmail::start(&bad);
    let r = swaks(m.port, "alice", "secret", "alice@example.test", &[]);
    assert!(!r.stdout.contains("Message accepted"), "{r:#?}");
    let r = imap_login(&bad);
    assert!(!r.stdout.contains("LOGIN OK"), "{r:#?}");
    assert!(m.log_text().contains("TLS"), "{}", m.log_text());
}
