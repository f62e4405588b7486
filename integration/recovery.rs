//! Recovery shares through the command line: split into printable files, a quorum checked
//! against the account and restored into a new key store (GnuPG judges the restored key), and
//! every way a join can go wrong refused with a reason.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{meshmail, run};
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

#[test]
fn any_quorum_of_share_files_recovers_the_account_and_fewer_do_not() {
    let root = common::tempdir();
    let alice = common::init_account(root.path(), "alice@example.test");
    let out = root.path().join("shares");
    let r = run(meshmail(&alice.home)
        .args([
            "recovery", "split", "--shares", "3", "--quorum", "2", "--out",
        ])
        .arg(&out));
    r.ok();
    let files: Vec<_> = (1..=3)
        .map(|i| out.join(format!("recovery-share-{i}.txt")))
        .collect();
    for f in &files {
        let text = std::fs::read_to_string(f).unwrap();
        assert!(text.contains("share: MMRS1-"), "{text}");
        assert!(text.contains("any 2 of them recover the account"));
        assert!(!text.contains("PRIVATE KEY"), "nothing in the clear");
        assert_eq!(
            std::fs::metadata(f).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(alice.home.join("recovery.json")).unwrap()).unwrap();
    assert_eq!(
        (record["shares"].as_u64(), record["quorum"].as_u64()),
        (Some(3), Some(2))
    );
    assert!(record["tested"].is_null());

    // A quorum checked against the account: recorded.
    run(meshmail(&alice.home)
        .args(["recovery", "join", "--check"])
        .arg(&files[0])
        .arg(&files[2]))
    .ok();
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(alice.home.join("recovery.json")).unwrap()).unwrap();
    assert!(record["tested"].is_string(), "{record}");

    // Another quorum restored into a new key store: the same account.
    let restored = root.path().join("restored");
    run(meshmail(&restored)
        .args(["recovery", "join"])
        .arg(&files[1])
        .arg(&files[2]))
    .ok();
    let address = run(meshmail(&restored).arg("address"))
        .ok()
        .stdout
        .trim()
        .to_owned();
    assert_eq!(address, alice.strong);
    assert_eq!(
        std::fs::read(restored.join("policy.jws")).unwrap(),
        std::fs::read(alice.home.join("policy.jws")).unwrap()
    );
    assert_eq!(
        std::fs::metadata(restored.join("secrets.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    // GnuPG, given the restored secret key, reads what it encrypted to the original certificate.
    let gpg = root.path().join("gnupg");
    std::fs::create_dir_all(&gpg).unwrap();
    std::fs::set_permissions(&gpg, std::fs::Permissions::from_mode(0o700)).unwrap();
    let g = |args: &[&str]| {
        let mut c = Command::new("gpg");
        c.arg("--homedir")
            .arg(&gpg)
            .args(["--batch", "--yes", "--trust-model", "always"])
            .args(args);
        c
    };
    let secret = root.path().join("restored-secret.asc");
    run(meshmail(&restored)
        .args(["keys", "export", "--openpgp", "--secret", "--out"])
        .arg(&secret))
    .ok();
    let plain = root.path().join("plain.txt");
    std::fs::write(&plain, "for alice").unwrap();
    let sealed = root.path().join("sealed.gpg");
    run(g(&["--import"]).arg(alice.home.join("openpgp.asc"))).ok();
    run(g(&["-r", "alice@example.test", "--output"])
        .arg(&sealed)
        .arg("--encrypt")
        .arg(&plain))
    .ok();
    run(g(&["--import"]).arg(&secret)).ok();
    let opened = run(g(&["--decrypt"]).arg(&sealed));
    assert_eq!(opened.stdout, "for alice", "{opened:#?}");
    // The restored store refuses to be overwritten.
    let again = run(meshmail(&restored)
        .args(["recovery", "join"])
        .arg(&files[0])
        .arg(&files[1]));
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("already exists"), "{again:#?}");

    // One file is not a quorum.
    let one = run(meshmail(&root.path().join("x"))
        .args(["recovery", "join"])
        .arg(&files[0]));
    assert_eq!(one.code, 64, "{one:#?}");
    assert!(one.stderr.contains("2 needed"), "{one:#?}");
    // A typing error in a share.
    let text = std::fs::read_to_string(&files[1]).unwrap();
    let line = text.lines().find(|l| l.starts_with("share: ")).unwrap();
    let mut typo = line.to_owned().into_bytes();
    let at = typo.len() - 15;
    typo[at] = if typo[at] == b'A' { b'B' } else { b'A' };
    let typo_file = root.path().join("typo.txt");
    std::fs::write(
        &typo_file,
        text.replace(line, std::str::from_utf8(&typo).unwrap()),
    )
    .unwrap();
    let bad = run(meshmail(&root.path().join("y"))
        .args(["recovery", "join"])
        .arg(&files[0])
        .arg(&typo_file));
    assert_eq!(bad.code, 64, "{bad:#?}");
    assert!(
        bad.stderr.contains("typing error") || bad.stderr.contains("not a recovery share"),
        "{bad:#?}"
    );
    // A share of another account's split.
    let bob = common::init_account(root.path(), "bob@example.test");
    let bob_out = root.path().join("bob-shares");
    run(meshmail(&bob.home)
        .args(["recovery", "split", "--out"])
        .arg(&bob_out))
    .ok();
    let mixed = run(meshmail(&root.path().join("z"))
        .args(["recovery", "join"])
        .arg(&files[0])
        .arg(bob_out.join("recovery-share-2.txt")));
    assert_eq!(mixed.code, 64, "{mixed:#?}");
    assert!(mixed.stderr.contains("different"), "{mixed:#?}");
    assert!(!root.path().join("z").join("account.json").exists());
}
