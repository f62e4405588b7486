//! The command-line contract the rest of the project and its users rely on: `init`,
//! `address`, `keys export`, `policy publish|resolve|renew`, all honouring `MESHMAIL_HOME` and
//! `--home`; exit codes from DESIGN.md's table; secrets on disk private; a passphrase that
//! locks the key store for commands that need it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn bin() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshmail"));
    cmd.env_remove("MESHMAIL_HOME");
    cmd
}

#[test]
fn meshmail_home_and_home_flag_are_honoured_and_init_never_overwrites() {
    let root = tempdir();
    let via_env = root.path().join("env-home");
    run(bin()
        .env("MESHMAIL_HOME", &via_env)
        .args(["init", "--address", "alice@example.test"]))
    .ok();
    assert!(
        via_env.join("account.json").is_file(),
        "init wrote into $MESHMAIL_HOME"
    );
    let mode = std::fs::metadata(&via_env)
        .expect("dir")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o700, "key store directory is private");
    for secret in ["secrets.json", "openpgp-revocation.asc"] {
        let mode = std::fs::metadata(via_env.join(secret))
            .expect(secret)
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600, "{secret} is readable by the owner only");
    }
    let before = std::fs::read(via_env.join("secrets.json")).expect("secrets");

    // A second init is refused, whether the home comes from the flag or the environment.
    let again =
        run(bin()
            .env("MESHMAIL_HOME", &via_env)
            .args(["init", "--address", "alice@example.test"]));
    assert_eq!(again.code, 73, "{again:#?}");
    assert!(again.stderr.contains("already exists"), "{again:#?}");
    let again =
        run(bin()
            .arg("--home")
            .arg(&via_env)
            .args(["init", "--address", "eve@example.test"]));
    assert_eq!(again.code, 73, "{again:#?}");
    assert_eq!(
        std::fs::read(via_env.join("secrets.json")).expect("secrets"),
        before,
        "nothing overwritten"
    );

    // --home wins over the environment.
    let via_flag = root.path().join("flag-home");
    run(bin()
        .env("MESHMAIL_HOME", &via_env)
        .arg("--home")
        .arg(&via_flag)
        .args(["init", "--address", "bob@example.test"]))
    .ok();
    let a = run(bin().env("MESHMAIL_HOME", &via_env).arg("address"))
        .ok()
        .stdout
        .clone();
    let b = run(bin()
        .env("MESHMAIL_HOME", &via_env)
        .arg("--home")
        .arg(&via_flag)
        .arg("address"))
    .ok()
    .stdout
    .clone();
    assert!(a.starts_with("alice@example.test.xx--"), "{a}");
    assert!(b.starts_with("bob@example.test.xx--"), "{b}");

    // No account: exit 69.
    let none = run(bin()
        .arg("--home")
        .arg(root.path().join("nothing"))
        .arg("address"));
    assert_eq!(none.code, 69, "{none:#?}");
}

#[test]
fn address_forms() {
    let root = tempdir();
    let alice = init_account(root.path(), "alice@example.test");
    let suffix = run(meshmail(&alice.home).arg("address"))
        .ok()
        .stdout
        .trim()
        .to_owned();
    // Suffix form, xx-- label, 140-bit UDF: 28 characters in 7 dashed groups.
    let fp = suffix
        .strip_prefix("alice@example.test.xx--")
        .expect("suffix form");
    assert_eq!(fp.len(), 34, "{fp}");
    assert_eq!(fp.split('-').count(), 7, "{fp}");
    assert!(fp.starts_with('m'), "SHA-512 UDF type byte: {fp}");
    let prefix = run(meshmail(&alice.home).args(["address", "--form", "prefix"]))
        .ok()
        .stdout
        .trim()
        .to_owned();
    assert_eq!(prefix, format!("alice@xx--{fp}.example.test"));
    let mm = run(meshmail(&alice.home).args(["address", "--label", "mm"]))
        .ok()
        .stdout
        .trim()
        .to_owned();
    assert_eq!(mm, format!("alice@example.test.mm--{fp}"));
    let openpgp = run(meshmail(&alice.home).args(["address", "--openpgp"]))
        .ok()
        .stdout
        .trim()
        .to_owned();
    assert_eq!(
        openpgp,
        format!(
            "alice@example.test.xx--{}",
            alice.openpgp_fingerprint.to_lowercase()
        )
    );
    let bad = run(meshmail(&alice.home).args(["address", "--bits", "100"]));
    assert_eq!(bad.code, 64, "{bad:#?}");
}

#[test]
fn a_reader_that_goes_away_ends_the_output_without_a_panic() {
    // `meshmail address | head -0`: the pipe is closed before meshmail writes.
    let root = tempdir();
    let alice = init_account(root.path(), "alice@example.test");
    let mut child = meshmail(&alice.home)
        .arg("address")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("wait");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "{stderr}");
}

#[test]
fn init_refuses_bad_addresses() {
    let root = tempdir();
    for bad in [
        "alice",
        "alice@",
        "@example.test",
        "alice@example.test.xx--mbqt-w7wu-ggxq-wihh-bu3l-mwed",
    ] {
        let r =
            run(bin()
                .arg("--home")
                .arg(root.path().join("h"))
                .args(["init", "--address", bad]));
        assert_eq!(r.code, 64, "{bad}: {r:#?}");
        assert!(
            !root.path().join("h/secrets.json").exists(),
            "{bad}: nothing written"
        );
    }
}

#[test]
fn a_passphrase_locks_the_secrets_and_headless_commands_get_it_from_a_file() {
    let root = tempdir();
    let home = root.path().join("locked");
    let pass = root.path().join("pass");
    std::fs::write(&pass, "correct horse battery staple\n").expect("pass");
    run(bin()
        .arg("--home")
        .arg(&home)
        .arg("--passphrase-file")
        .arg(&pass)
        .args(["init", "--address", "alice@example.test"]))
    .ok();
    let sealed = std::fs::read_to_string(home.join("secrets.json")).expect("secrets");
    assert!(
        sealed.contains("argon2id"),
        "sealed with a passphrase: {sealed}"
    );

    // Public operations need no passphrase.
    run(bin().arg("--home").arg(&home).arg("address")).ok();
    run(bin()
        .arg("--home")
        .arg(&home)
        .args(["keys", "export", "--openpgp"]))
    .ok();

    // A secret operation without the passphrase (no terminal): temporarily unavailable.
    let locked =
        run(bin()
            .arg("--home")
            .arg(&home)
            .args(["keys", "export", "--openpgp", "--secret"]));
    assert_eq!(locked.code, 75, "{locked:#?}");
    assert!(locked.stderr.contains("locked"), "{locked:#?}");

    // A wrong passphrase is refused; the right one, from a file or a descriptor, works.
    let wrong = root.path().join("wrong");
    std::fs::write(&wrong, "tr0ub4dor").expect("wrong");
    let r = run(bin()
        .arg("--home")
        .arg(&home)
        .arg("--passphrase-file")
        .arg(&wrong)
        .args(["keys", "export", "--openpgp", "--secret"]));
    assert_eq!(r.code, 64, "{r:#?}");
    let r = run(bin()
        .arg("--home")
        .arg(&home)
        .arg("--passphrase-file")
        .arg(&pass)
        .args(["keys", "export", "--openpgp", "--secret"]));
    assert!(
        r.ok().stdout.contains("BEGIN PGP PRIVATE KEY BLOCK"),
        "{r:#?}"
    );
    let r = run(Command::new("sh").arg("-c").arg(format!(
        "exec 3<'{}'; '{}' --home '{}' --passphrase-fd 3 keys export --openpgp --secret",
        pass.display(),
        env!("CARGO_BIN_EXE_meshmail"),
        home.display()
    )));
    assert!(
        r.ok().stdout.contains("BEGIN PGP PRIVATE KEY BLOCK"),
        "{r:#?}"
    );
    // The secret never shows in logs or errors.
    assert!(!r.stderr.contains("correct horse"), "{r:#?}");
}

#[test]
fn renew_resigns_the_policy_with_a_new_expiry() {
    let root = tempdir();
    let home = root.path().join("h");
    run(bin().arg("--home").arg(&home).args([
        "init",
        "--address",
        "alice@example.test",
        "--policy-days",
        "10",
    ]))
    .ok();
    let expiry = |home: &std::path::Path| {
        let account = meshmail::keys::Account::open(home).expect("account");
        meshmail::policy::issue::account_policy_expiry(&account).expect("expiry")
    };
    let first = expiry(&home);
    // A policy expiring within 30 days is worth a warning.
    let warn = run(bin().arg("--home").arg(&home).arg("address"));
    assert!(warn.ok().stderr.contains("expires in"), "{warn:#?}");
    run(bin()
        .arg("--home")
        .arg(&home)
        .args(["policy", "renew", "--days", "200"]))
    .ok();
    let second = expiry(&home);
    assert!(
        second - first > time::Duration::days(180),
        "{first} -> {second}"
    );
    let quiet = run(bin().arg("--home").arg(&home).arg("address"));
    assert!(!quiet.ok().stderr.contains("expires in"), "{quiet:#?}");
}

#[test]
fn publish_writes_the_files_a_domain_serves() {
    let root = tempdir();
    let alice = init_account(root.path(), "alice@example.test");
    let out = root.path().join("pub");
    let lines = publish(&alice, &out);
    assert!(lines
        .iter()
        .any(|l| l.contains("._mmm.example.test. ") && l.contains(" IN TXT \"")));
    assert!(lines
        .iter()
        .any(|l| l.contains("._openpgpkey.example.test. ") && l.contains(" IN OPENPGPKEY ")));
    assert!(lines
        .iter()
        .any(|l| l.contains("._smimecert.example.test. ") && l.contains(" IN SMIMEA 3 0 0 ")));
    let policy = std::fs::read_dir(out.join("https/example.test/.well-known/mmm-udf"))
        .expect("mmm-udf dir")
        .count();
    assert_eq!(policy, 1);
    // The WKD file is the certificate gpg reads.
    let hu = out.join("https/openpgpkey.example.test/.well-known/openpgpkey/example.test/hu");
    let file = std::fs::read_dir(&hu)
        .expect("hu")
        .next()
        .expect("a file")
        .expect("entry")
        .path();
    let show = run(Command::new("gpg")
        .args(["--batch", "--with-colons", "--show-keys"])
        .arg(&file));
    assert!(
        show.ok().stdout.contains(&alice.openpgp_fingerprint),
        "{show:#?}"
    );
    assert!(out
        .join("https/example.test/.well-known/openpgpkey/policy")
        .is_file());
}

#[test]
fn check_config_reports_the_line() {
    let root = tempdir();
    let cfg = root.path().join("c.toml");
    std::fs::write(
        &cfg,
        "upstream_user = \"alice\"\n[policy]\ndns = \"nonsense\"\n",
    )
    .expect("cfg");
    let r = run(bin().arg("check-config").arg(&cfg));
    assert_eq!(r.code, 78, "{r:#?}");
    assert!(r.stderr.contains("c.toml:3"), "{r:#?}");
}

/// The names issue 13 fixed ("names may grow, not change"): each command and flag exists.
#[test]
fn the_device_recovery_mailbox_and_store_commands_keep_their_names() {
    for (command, flags) in [
        (vec!["device", "request"], vec!["--out"]),
        (
            vec!["device", "add"],
            vec!["--name", "--out", "--forget-account-key"],
        ),
        (vec!["device", "import"], vec![]),
        (vec!["device", "list"], vec![]),
        (vec!["device", "revoke"], vec![]),
        (
            vec!["recovery", "split"],
            vec!["--shares", "--quorum", "--out"],
        ),
        (vec!["recovery", "join"], vec![]),
        (vec!["mailbox", "encrypt"], vec!["--config", "--mailbox"]),
        (vec!["mailbox", "rekey"], vec!["--config"]),
        (vec!["store", "revoke"], vec!["--config"]),
    ] {
        let help = run(bin().args(&command).arg("--help"));
        assert_eq!(help.code, 0, "{command:?}: {help:?}");
        for flag in flags {
            assert!(
                help.stdout.contains(flag),
                "{command:?} lacks {flag}: {}",
                help.stdout
            );
        }
    }
}

/// The forms issue 13 writes out parse as written: no flag beyond them is required (the
/// commands fail later, for want of files, not of arguments).
#[test]
fn the_contract_forms_need_no_other_flags() {
    let dir = common::tempdir();
    let home = dir.path().join("home");
    for args in [
        vec!["device", "add", "REQ", "--name", "laptop", "--out", "REPLY"],
        vec!["device", "import", "REPLY"],
        vec!["device", "request", "--out", "REQ"],
        vec!["mailbox", "encrypt", "--config", "FILE", "--mailbox", "M"],
        vec!["mailbox", "rekey", "--config", "FILE"],
        vec![
            "recovery", "split", "--shares", "3", "--quorum", "2", "--out", "DIR",
        ],
        vec!["recovery", "join", "A", "B"],
        vec![
            "store",
            "revoke",
            "--config",
            "FILE",
            "alice@example.test",
            "laptop",
        ],
        vec!["device", "revoke", "laptop"],
        vec!["device", "list"],
    ] {
        let r = run(bin()
            .arg("--home")
            .arg(&home)
            .args(&args)
            .current_dir(dir.path()));
        assert!(
            !r.stderr.contains("required") && !r.stderr.contains("unexpected argument"),
            "{args:?}: {r:?}"
        );
        assert_ne!(r.code, 2, "{args:?} is a usage error: {r:?}");
    }
}
