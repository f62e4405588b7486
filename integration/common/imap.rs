//! IMAP test helpers shared by the IMAP and Thunderbird tests: messages encrypted by gpg in
//! PGP/MIME form, and imaplib (`tools/imap_oracle.py`) to store and read them.

use super::gpg::Gpg;
use super::mail::MailServers;
use super::run;
use std::path::Path;
use std::process::Command;

pub const ORACLE: &str = "integration/tools/imap_oracle.py";

pub fn oracle() -> Command {
    let mut c = Command::new("python3");
    c.arg(Path::new(env!("CARGO_MANIFEST_DIR")).join(ORACLE));
    c
}

pub fn crlf(text: &str) -> Vec<u8> {
    text.replace("\r\n", "\n")
        .replace('\n', "\r\n")
        .into_bytes()
}

pub fn pgp_mime(outer: &str, armored: &[u8]) -> Vec<u8> {
    let mut m = crlf(outer);
    m.extend(crlf("Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"outer\"\r\n\r\nThis is an OpenPGP/MIME encrypted message\r\n--outer\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--outer\r\nContent-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n"));
    m.extend(crlf(&String::from_utf8_lossy(armored)));
    m.extend(crlf("\r\n--outer--\r\n"));
    m
}

pub fn gpg_encrypt(g: &Gpg, dir: &Path, inner: &[u8], args: &[&str]) -> Vec<u8> {
    let f = dir.join(format!("inner-{}.eml", rand_suffix()));
    std::fs::write(&f, inner).expect("write");
    let out = Command::new("gpg")
        .arg("--homedir")
        .arg(&g.dir)
        .args([
            "--batch",
            "--yes",
            "--trust-model",
            "always",
            "--armor",
            "--encrypt",
        ])
        .args(args)
        .arg("--output")
        .arg("-")
        .arg(&f)
        .output()
        .expect("gpg");
    assert!(
        out.status.success(),
        "gpg: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

pub fn rand_suffix() -> String {
    format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    )
}

pub fn append(
    servers: &MailServers,
    user: &str,
    mailbox: &str,
    dir: &Path,
    messages: &[&[u8]],
) -> Vec<String> {
    let mut files = Vec::new();
    for (i, m) in messages.iter().enumerate() {
        let f = dir.join(format!("append-{mailbox}-{i}-{}.eml", rand_suffix()));
        std::fs::write(&f, m).expect("write");
        files.push(f);
    }
    let out = run(oracle()
        .args([
            "append",
            "127.0.0.1",
            &servers.imap().to_string(),
            user,
            "secret",
            mailbox,
        ])
        .args(&files))
    .ok()
    .stdout
    .clone();
    out.lines().map(str::to_owned).collect()
}

/// The view meshmail promises: its result line, the outer header without Content-* fields
/// (Subject replaced when given), the inner Content-* fields, the inner body.
pub fn expected_view(result: &str, outer: &str, subject: Option<&str>, inner: &[u8]) -> Vec<u8> {
    let mut v = format!("Meshmail-Result: {result}\r\n").into_bytes();
    for line in outer.split("\r\n").filter(|l| !l.is_empty()) {
        match (line.starts_with("Subject:"), subject) {
            (true, Some(s)) => v.extend(format!("Subject: {s}\r\n").into_bytes()),
            _ => v.extend(format!("{line}\r\n").into_bytes()),
        }
    }
    let split = inner
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("inner header");
    for line in String::from_utf8_lossy(&inner[..split]).split("\r\n") {
        if line.to_ascii_lowercase().starts_with("content-") {
            v.extend(format!("{line}\r\n").into_bytes());
        }
    }
    v.extend_from_slice(b"\r\n");
    v.extend_from_slice(&inner[split + 4..]);
    v
}

/// An account made with a passphrase (`<root>/<user>`, the passphrase in `<root>/pass`), and
/// one PGP/MIME message encrypted to it by gpg holding `secret_word`, stored in `user`'s
/// INBOX: (home, passphrase file, the stored message, its UID).
pub fn locked_account_with_a_message(
    root: &Path,
    servers: &super::mail::MailServers,
    user: &str,
    outer: &str,
    secret_word: &str,
) -> (std::path::PathBuf, std::path::PathBuf, Vec<u8>, String) {
    let home = root.join(user);
    let pass = root.join("pass");
    std::fs::write(&pass, "correct horse battery staple\n").expect("pass");
    super::run(
        super::meshmail(&home)
            .arg("--passphrase-file")
            .arg(&pass)
            .args(["init", "--address", &format!("{user}@example.test")]),
    )
    .ok();
    let g = Gpg {
        dir: root.join("gpg"),
    };
    std::fs::create_dir_all(&g.dir).expect("gpg dir");
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&g.dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    }
    g.import_public(&home);
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("account.json")).expect("json"))
            .expect("json");
    let fpr = info["openpgp_fingerprint"]
        .as_str()
        .expect("fpr")
        .to_owned();
    let inner = crlf(&format!(
        "Content-Type: text/plain\r\n\r\n{secret_word}\r\n"
    ));
    let armored = gpg_encrypt(&g, root, &inner, &["-r", &fpr]);
    let stored = pgp_mime(outer, &armored);
    let uids = append(servers, user, "INBOX", root, &[stored.as_slice()]);
    let uid = uids.first().cloned().expect("uid");
    (home, pass, stored, uid)
}
