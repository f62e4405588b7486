//! Recryption against GnuPG 2.2 senders (mesh-formats.md §4): messages GnuPG encrypts to an
//! account's published certificate (one recipient, a hidden recipient, several recipients) are
//! opened by a store share and a device share together, for two devices with pairs of their own;
//! a device's share with another device's store share opens nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use meshmail::crypto::recrypt::{decrypt_message, encryption_subkey, extract};
use sequoia_openpgp as sq;
use sq::parse::Parse;
use std::process::Command;

/// What GnuPG makes of `plaintext` with `args` (recipient options), as binary OpenPGP.
fn gpg_encrypt(home: &std::path::Path, plaintext: &[u8], args: &[&str]) -> Vec<u8> {
    let input = home.join("in.txt");
    std::fs::write(&input, plaintext).unwrap();
    let out = Command::new("gpg")
        .arg("--homedir")
        .arg(home)
        .args(["--batch", "--yes", "--trust-model", "always", "--encrypt"])
        .args(args)
        .arg("--output")
        .arg("-")
        .arg(&input)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn gnupg_messages_open_with_a_store_share_and_a_device_share_together() {
    let root = common::tempdir();
    let alice = common::init_account(root.path(), "alice@example.test");
    let bob = common::init_account(root.path(), "bob@example.test");
    let gpg = root.path().join("gnupg");
    std::fs::create_dir_all(&gpg).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&gpg, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    for who in [&alice, &bob] {
        common::run(
            Command::new("gpg")
                .arg("--homedir")
                .arg(&gpg)
                .args(["--batch", "--import"])
                .arg(who.home.join("openpgp.asc")),
        )
        .ok();
    }
    let messages = [
        (
            "one recipient",
            gpg_encrypt(&gpg, b"plain one", &["-r", "alice@example.test"]),
        ),
        (
            "hidden recipient",
            gpg_encrypt(&gpg, b"plain hidden", &["-R", "alice@example.test"]),
        ),
        (
            "two recipients",
            gpg_encrypt(
                &gpg,
                b"plain two",
                &["-r", "bob@example.test", "-r", "alice@example.test"],
            ),
        ),
    ];

    // The admin device: the account's secret, its Cv25519 subkey, split for two devices.
    let account = meshmail::keys::Account::open(&alice.home).unwrap();
    let secret = account.unlock(None).unwrap().openpgp_secret_cert().unwrap();
    let key = encryption_subkey(&secret).expect("an encryption subkey");
    let public = key.parts_as_public().clone();
    let whole = extract(&key).unwrap();
    let (store1, device1) = whole.split().unwrap();
    let (store2, device2) = whole.split().unwrap();
    drop(whole);

    for (what, message) in &messages {
        let want = match *what {
            "one recipient" => &b"plain one"[..],
            "hidden recipient" => b"plain hidden",
            _ => b"plain two",
        };
        for (store, device, name) in [
            (&store1, &device1, "device 1"),
            (&store2, &device2, "device 2"),
        ] {
            let mut asked = 0;
            let out = decrypt_message(
                message,
                &public,
                device,
                &mut |p| {
                    asked += 1;
                    store.partial(p).ok()
                },
                1 << 20,
            )
            .unwrap_or_else(|e| panic!("{name}, {what}: {e}"));
            assert_eq!(&out[..], want, "{name}, {what}");
            assert!(asked >= 1);
        }
        // Device 1's share with device 2's store share: nothing.
        assert!(
            decrypt_message(
                message,
                &public,
                &device1,
                &mut |p| store2.partial(p).ok(),
                1 << 20
            )
            .is_err(),
            "{what}: mixed pair"
        );
        // The message as the mail store holds it is ciphertext to anyone else.
        assert!(!message.windows(want.len()).any(|w| w == want));
        assert!(
            sq::Message::from_bytes(message).is_ok(),
            "a well-formed OpenPGP message"
        );
    }
}
