//! The account's keys work in software nobody here wrote: gpg imports the exported certificate
//! and encrypts to it, gpg's import of the exported secret key decrypts, the revocation
//! certificate revokes the key in gpg, openssl reads the S/MIME certificate and its
//! subjectAltName, and the PKCS#12 export opens in openssl and imports into gpgsm.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn gpg(home: &Path) -> Command {
    let mut cmd = Command::new("gpg");
    cmd.arg("--homedir").arg(home).args([
        "--batch",
        "--yes",
        "--no-tty",
        "--pinentry-mode",
        "loopback",
    ]);
    cmd
}

fn gnupg_home(root: &Path, name: &str) -> std::path::PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).expect("gnupg home");
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    dir
}

#[test]
fn gpg_encrypts_to_the_account_and_decrypts_with_its_exported_secret_key() {
    let root = tempdir();
    let alice = init_account(root.path(), "alice@example.test");
    let public = root.path().join("alice.asc");
    let secret = root.path().join("alice-secret.asc");
    run(meshmail(&alice.home)
        .args(["keys", "export", "--openpgp", "--out"])
        .arg(&public))
    .ok();
    run(meshmail(&alice.home)
        .args(["keys", "export", "--openpgp", "--secret", "--out"])
        .arg(&secret))
    .ok();
    let mode = std::fs::metadata(&secret)
        .expect("secret")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "exported secret key is private");

    // A sender with GnuPG imports the public certificate and encrypts to it.
    let sender = gnupg_home(root.path(), "sender");
    run(gpg(&sender).arg("--import").arg(&public)).ok();
    let listing = run(gpg(&sender)
        .args(["--with-colons", "--list-keys"])
        .arg(&alice.openpgp_fingerprint));
    listing.ok();
    assert!(
        listing.stdout.contains("alice@example.test"),
        "user ID is the routable address: {listing:#?}"
    );
    assert!(
        listing
            .stdout
            .lines()
            .any(|l| l.starts_with("sub:") && l.split(':').nth(11).unwrap_or("").contains('e')),
        "an encryption subkey: {listing:#?}"
    );
    let plain = root.path().join("plain.txt");
    std::fs::write(&plain, "meet me at the usual place\n").expect("plain");
    let cipher = root.path().join("cipher.asc");
    run(gpg(&sender)
        .args([
            "--trust-model",
            "always",
            "--armor",
            "--encrypt",
            "--recipient",
        ])
        .arg(&alice.openpgp_fingerprint)
        .arg("--output")
        .arg(&cipher)
        .arg(&plain))
    .ok();

    // Alice's secret key, exported and imported into another GnuPG, decrypts it.
    let reader = gnupg_home(root.path(), "reader");
    run(gpg(&reader).arg("--import").arg(&secret)).ok();
    let out = run(gpg(&reader).arg("--decrypt").arg(&cipher));
    out.ok();
    assert_eq!(out.stdout, "meet me at the usual place\n");

    // Without the secret key, the sender cannot read it (the test can fail).
    let nobody = run(gpg(&sender).arg("--decrypt").arg(&cipher));
    assert_ne!(nobody.code, 0);

    // GnuPG 2.2 reads what it is sent: every features subpacket asks for SEIPDv1 only
    // (0x01), never SEIPDv2 (0x08), which GnuPG 2.2 cannot read.
    let packets = run(Command::new("gpg").arg("--list-packets").arg(&public));
    let features: Vec<&str> = packets
        .stdout
        .lines()
        .filter(|l| l.contains("(features:"))
        .collect();
    assert!(!features.is_empty(), "{packets:#?}");
    assert!(
        features.iter().all(|l| l.contains("(features: 01)")),
        "{features:#?}"
    );
}

#[test]
fn the_revocation_certificate_revokes_the_key_in_gpg() {
    let root = tempdir();
    let alice = init_account(root.path(), "alice@example.test");
    let home = gnupg_home(root.path(), "g");
    run(gpg(&home)
        .arg("--import")
        .arg(alice.home.join("openpgp.asc")))
    .ok();
    run(gpg(&home)
        .arg("--import")
        .arg(alice.home.join("openpgp-revocation.asc")))
    .ok();
    let listing = run(gpg(&home)
        .args(["--with-colons", "--list-keys"])
        .arg(&alice.openpgp_fingerprint));
    let pub_line = listing
        .stdout
        .lines()
        .find(|l| l.starts_with("pub:"))
        .expect("pub line");
    assert_eq!(
        pub_line.split(':').nth(1),
        Some("r"),
        "revoked after import: {listing:#?}"
    );
}

#[test]
fn openssl_reads_the_smime_certificate_and_pkcs12() {
    let root = tempdir();
    let alice = init_account(root.path(), "alice@example.test");
    let pem = root.path().join("alice.pem");
    run(meshmail(&alice.home)
        .args(["keys", "export", "--smime", "--out"])
        .arg(&pem))
    .ok();
    let text = run(Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(&pem));
    text.ok();
    assert!(
        text.stdout.contains("email:alice@example.test"),
        "subjectAltName: {text:#?}"
    );
    assert!(
        text.stdout.contains("Public-Key: (3072 bit)"),
        "RSA-3072: {text:#?}"
    );
    assert!(text.stdout.contains("E-mail Protection"), "{text:#?}");

    let p12 = root.path().join("alice.p12");
    let p12pass = root.path().join("p12pass");
    std::fs::write(&p12pass, "export secret\n").expect("pass");
    run(meshmail(&alice.home)
        .args([
            "keys",
            "export",
            "--smime",
            "--secret",
            "--p12-passphrase-file",
        ])
        .arg(&p12pass)
        .arg("--out")
        .arg(&p12))
    .ok();
    let dump = run(Command::new("openssl")
        .args(["pkcs12", "-nodes", "-passin", "pass:export secret", "-in"])
        .arg(&p12));
    dump.ok();
    assert!(
        dump.stdout.contains("BEGIN PRIVATE KEY"),
        "key inside: {}",
        dump.stderr
    );
    assert!(
        dump.stdout.contains("subject=CN = alice@example.test"),
        "cert inside: {dump:#?}"
    );
    let wrong = run(Command::new("openssl")
        .args(["pkcs12", "-nodes", "-passin", "pass:wrong", "-in"])
        .arg(&p12));
    assert_ne!(wrong.code, 0, "the PKCS#12 is protected by its password");

    // The key in the PKCS#12 decrypts what openssl encrypts to the certificate.
    let key = root.path().join("key.pem");
    std::fs::write(&key, &dump.stdout).expect("key");
    let msg = root.path().join("msg.txt");
    std::fs::write(&msg, "Content-Type: text/plain\r\n\r\nhello smime\r\n").expect("msg");
    let enc = root.path().join("msg.p7m");
    run(Command::new("openssl")
        .args(["cms", "-encrypt", "-aes256", "-in"])
        .arg(&msg)
        .arg("-out")
        .arg(&enc)
        .arg(&pem))
    .ok();
    let dec = run(Command::new("openssl")
        .args(["cms", "-decrypt", "-in"])
        .arg(&enc)
        .arg("-inkey")
        .arg(&key)
        .arg("-recip")
        .arg(&pem));
    dec.ok();
    assert!(dec.stdout.contains("hello smime"), "{dec:#?}");
}

#[test]
fn gpgsm_imports_the_pkcs12() {
    let root = tempdir();
    let alice = init_account(root.path(), "alice@example.test");
    let p12 = root.path().join("alice.p12");
    let p12pass = root.path().join("p12pass");
    std::fs::write(&p12pass, "export secret").expect("pass");
    run(meshmail(&alice.home)
        .args([
            "keys",
            "export",
            "--smime",
            "--secret",
            "--p12-passphrase-file",
        ])
        .arg(&p12pass)
        .arg("--out")
        .arg(&p12))
    .ok();
    let home = gnupg_home(root.path(), "sm");
    std::fs::write(home.join("gpg-agent.conf"), "allow-loopback-pinentry\n").expect("agent conf");
    // gpgsm reads the passphrase from fd 0.
    let import = run(Command::new("sh").arg("-c").arg(format!(
        "printf 'export secret' | gpgsm --homedir '{}' --batch --pinentry-mode loopback --passphrase-fd 0 --import '{}'",
        home.display(),
        p12.display()
    )));
    assert_eq!(import.code, 0, "gpgsm import: {import:#?}");
    let secret = run(Command::new("gpgsm")
        .arg("--homedir")
        .arg(&home)
        .args(["--batch", "--list-secret-keys"]));
    assert!(
        secret.stdout.contains("alice@example.test"),
        "gpgsm holds the secret key: {secret:#?} {import:#?}"
    );
    let _ = Command::new("gpgconf")
        .arg("--homedir")
        .arg(&home)
        .args(["--kill", "all"])
        .status();
}
