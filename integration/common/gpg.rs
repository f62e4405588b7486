//! GnuPG and OpenSSL as the judges of ciphertext: a private GnuPG home holding one account's
//! secret key, and S/MIME decryption with the account's exported key.

use super::{meshmail, run, Run};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A GnuPG home with the secret key of the account at `home`.
pub struct Gpg {
    pub dir: PathBuf,
}

/// Alice and Bob under `root`, and Bob's GnuPG home with his secret key and Alice's
/// certificate: the sending side of the IMAP tests.
pub fn alice_and_bob(root: &Path) -> (super::TestAccount, super::TestAccount, Gpg) {
    let alice = super::init_account(root, "alice@example.test");
    let bob = super::init_account(root, "bob@example.test");
    let g = Gpg::with_secret_of(&bob.home, root.join("gpg-bob"));
    g.import_public(&alice.home);
    (alice, bob, g)
}

impl Gpg {
    pub fn with_secret_of(account_home: &Path, dir: PathBuf) -> Gpg {
        std::fs::create_dir_all(&dir).expect("gpg dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        let key = dir.join("secret.asc");
        let g = Gpg { dir };
        if !key.exists() {
            run(meshmail(account_home)
                .args(["keys", "export", "--openpgp", "--secret", "--out"])
                .arg(&key))
            .ok();
            run(g.cmd().arg("--import").arg(&key)).ok();
        }
        g
    }

    /// Imports another account's public certificate (to check signatures).
    pub fn import_public(&self, account_home: &Path) {
        run(self
            .cmd()
            .arg("--import")
            .arg(account_home.join("openpgp.asc")))
        .ok();
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new("gpg");
        c.arg("--homedir").arg(&self.dir).args([
            "--batch",
            "--yes",
            "--no-tty",
            "--pinentry-mode",
            "loopback",
        ]);
        c
    }

    /// Decrypts an armored OpenPGP message.
    pub fn decrypt(&self, armored: &[u8]) -> Run {
        let f = self.dir.join(format!("in-{}.asc", rand_suffix()));
        std::fs::write(&f, armored).expect("write");
        run(self.cmd().arg("--decrypt").arg(&f))
    }
}

/// Key IDs (upper-case hex) an OpenPGP message is encrypted to, as gpg lists them.
pub fn pgp_recipients(armored: &[u8]) -> Vec<String> {
    let dir = super::tempdir();
    let f = dir.path().join("m.asc");
    std::fs::write(&f, armored).expect("write");
    let r = run(Command::new("gpg")
        .arg("--homedir")
        .arg(dir.path())
        .args(["--batch", "--list-packets"])
        .arg(&f));
    r.stdout
        .lines()
        .filter(|l| l.contains("pubkey enc packet"))
        .filter_map(|l| l.split("keyid ").nth(1))
        .map(|k| k.split_whitespace().next().unwrap_or("").to_uppercase())
        .collect()
}

/// The encryption subkey IDs of an account's certificate (long key IDs, upper case).
pub fn encryption_key_ids(account_home: &Path) -> Vec<String> {
    let r = run(Command::new("gpg")
        .args(["--batch", "--with-colons", "--show-keys"])
        .arg(account_home.join("openpgp.asc")));
    r.stdout
        .lines()
        .filter(|l| l.starts_with("sub:") && l.split(':').nth(11).unwrap_or("").contains('e'))
        .filter_map(|l| l.split(':').nth(4).map(str::to_uppercase))
        .collect()
}

/// Decrypts an S/MIME message with the account's key (exported as PKCS#12, opened by
/// openssl), using `openssl cms`.
pub fn smime_decrypt(account_home: &Path, message: &[u8], work: &Path) -> Run {
    std::fs::create_dir_all(work).expect("work");
    let tag = rand_suffix();
    let cert = work.join(format!("cert-{tag}.pem"));
    let p12 = work.join(format!("key-{tag}.p12"));
    let pass = work.join(format!("pass-{tag}"));
    let key = work.join(format!("key-{tag}.pem"));
    let msg = work.join(format!("msg-{tag}.eml"));
    std::fs::write(&pass, "x").expect("pass");
    std::fs::write(&msg, message).expect("msg");
    run(meshmail(account_home)
        .args(["keys", "export", "--smime", "--out"])
        .arg(&cert))
    .ok();
    run(meshmail(account_home)
        .args([
            "keys",
            "export",
            "--smime",
            "--secret",
            "--p12-passphrase-file",
        ])
        .arg(&pass)
        .arg("--out")
        .arg(&p12))
    .ok();
    run(Command::new("openssl")
        .args(["pkcs12", "-nodes", "-nocerts", "-passin", "pass:x", "-in"])
        .arg(&p12)
        .arg("-out")
        .arg(&key))
    .ok();
    run(Command::new("openssl")
        .args(["cms", "-decrypt", "-in"])
        .arg(&msg)
        .arg("-inkey")
        .arg(&key)
        .arg("-recip")
        .arg(&cert))
}

fn rand_suffix() -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
