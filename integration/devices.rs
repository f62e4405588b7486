//! Several devices, one published key (issue 13), against a real Dovecot and GnuPG: Alice's
//! laptop and phone are enrolled with `meshmail device request/add/import`, each runs a device
//! proxy whose upstream is the store proxy in front of Dovecot, and mail GnuPG encrypted to
//! Alice's one published certificate (one recipient, a hidden recipient, several recipients)
//! is read through either. Then: a wrong comparison code, a device with another device's key,
//! Dovecot read directly, revocation (an open session and a cold start; from the store host and
//! from a remaining device), a replayed record and a restored backup of the store's shares;
//! a device's own signing subkey as GnuPG sees it; the indexer with the store's partials;
//! forgetting the account key; a rekey that moves devices and stored mail to a new subkey.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::gpg::Gpg;
use common::imap::{append, crlf, gpg_encrypt, oracle, pgp_mime};
use common::mail::{MailServers, Meshmail};
use common::{free_port, meshmail, run, TestAccount};
use sequoia_openpgp::parse::Parse;
use std::path::{Path, PathBuf};

struct World {
    root: tempfile::TempDir,
    servers: MailServers,
    alice: TestAccount,
    gpg: Gpg,
    store: Meshmail,
    store_config: PathBuf,
    store_tls_port: u16,
    store_cert: PathBuf,
    shares_dir: PathBuf,
}

/// The code a `device request` / `device add` printed.
fn code_in(stdout: &str) -> String {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("code: "))
        .unwrap_or_else(|| panic!("no code in {stdout}"))
        .trim()
        .to_owned()
}

fn world() -> World {
    world_with("")
}

/// A world whose store's configuration ends with `store_extra`.
fn world_with(store_extra: &str) -> World {
    let root = common::tempdir();
    let servers = MailServers::start();
    let (alice, _bob, gpg) = common::gpg::alice_and_bob(root.path());
    // The store host: its TLS certificate, Alice's public files only, its configuration.
    let certs = root.path().join("store-certs");
    run(meshmail(&alice.home).arg("certs").arg("--out").arg(&certs)).ok();
    let public = root.path().join("store/alice-public");
    std::fs::create_dir_all(&public).unwrap();
    for f in ["account.json", "openpgp.asc"] {
        std::fs::copy(alice.home.join(f), public.join(f)).unwrap();
    }
    let shares_dir = root.path().join("store/shares");
    let store_tls_port = free_port();
    let config = format!(
        "[tls]\ncert = \"{c}/cert.pem\"\nkey = \"{c}/key.pem\"\n\
         [store]\nlisten = \"127.0.0.1:{{port}}\"\nlisten_implicit_tls = \"127.0.0.1:{store_tls_port}\"\n\
         upstream = \"127.0.0.1:{}\"\nupstream_tls = \"starttls\"\nupstream_ca = \"{}\"\n\
         shares_dir = \"{}\"\nalarm_per_hour = 50\n\
         [[store.account]]\nupstream_user = \"alice\"\npublic_home = \"{}\"\n{store_extra}",
        servers.imap(),
        servers.ca_pem().display(),
        shares_dir.display(),
        public.display(),
        c = certs.display(),
    );
    let store = Meshmail::start(&config);
    let store_config = root.path().join("store.toml");
    std::fs::write(
        &store_config,
        config.replace("{port}", &store.port.to_string()),
    )
    .unwrap();
    World {
        store_cert: certs.join("cert.pem"),
        root,
        servers,
        alice,
        gpg,
        store,
        store_config,
        store_tls_port,
        shares_dir,
    }
}

impl World {
    /// The store's audit log of Alice's device `device`.
    fn audit(&self, device: &str) -> String {
        let dir = self
            .shares_dir
            .parent()
            .unwrap()
            .join("audit/alice@example.test");
        std::fs::read_to_string(dir.join(format!("{device}.log"))).unwrap()
    }

    fn store_json(&self) -> PathBuf {
        let path = self.root.path().join("store.json");
        if !path.exists() {
            let info = self.store_cmd(&["info"]);
            info.ok();
            std::fs::write(&path, &info.stdout).unwrap();
        }
        path
    }

    fn store_cmd(&self, args: &[&str]) -> common::Run {
        run(meshmail(&self.alice.home)
            .arg("store")
            .args(args)
            .arg("--config")
            .arg(&self.store_config))
    }

    /// Enrols a device called `name` in a new home, end to end; returns the home.
    fn enrol(&self, name: &str) -> PathBuf {
        self.enrol_with(name, &[])
    }

    /// [`World::enrol`], with more arguments for `device add`.
    fn enrol_with(&self, name: &str, add_args: &[&str]) -> PathBuf {
        let home = self.root.path().join(format!("device-{name}"));
        let dir = self.root.path().join(format!("enrol-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let store_json = dir.join("store.json");
        if !store_json.exists() {
            let info = self.store_cmd(&["info"]);
            info.ok();
            std::fs::write(&store_json, &info.stdout).unwrap();
        }
        let req = run(meshmail(&home)
            .args(["device", "request", "--out"])
            .arg(dir.join("request")))
        .ok()
        .stdout
        .clone();
        // The admin device keeps the store's description from its first enrolment.
        let first = !self.alice.home.join("store.json").exists();
        let reply = run(meshmail(&self.alice.home)
            .args(["device", "add"])
            .arg(dir.join("request"))
            .args(["--name", name])
            .args(first.then_some("--store"))
            .args(first.then_some(&store_json))
            .arg("--out")
            .arg(dir.join("reply"))
            .args(["--code", &code_in(&req)])
            .args(add_args))
        .ok()
        .stdout
        .clone();
        run(meshmail(&home)
            .args(["device", "import"])
            .arg(dir.join("reply"))
            .args(["--code", &code_in(&reply)]))
        .ok();
        self.store_cmd(&["accept", dir.join("reply.record").to_str().unwrap()])
            .ok();
        home
    }

    /// The configuration of the device in `home`: its upstream is the store (implicit TLS).
    fn device_config(&self, home: &Path) -> String {
        format!(
            "home = \"{}\"\nupstream_user = \"alice\"\n[imap]\nlisten = \"127.0.0.1:{{port}}\"\n\
             upstream = \"127.0.0.1:{}\"\nupstream_tls = \"implicit\"\nupstream_ca = \"{}\"\n",
            home.display(),
            self.store_tls_port,
            self.store_cert.display()
        )
    }

    /// A device proxy for the device in `home`.
    fn device_proxy(&self, home: &Path) -> Meshmail {
        Meshmail::start(&self.device_config(home))
    }

    /// The device's configuration as a file, for its command-line tools.
    fn device_config_file(&self, home: &Path) -> PathBuf {
        let path = home.with_extension("toml");
        std::fs::write(
            &path,
            self.device_config(home)
                .replace("{port}", &free_port().to_string()),
        )
        .unwrap();
        path
    }

    /// A message GnuPG encrypted with `args`, delivered to Alice's INBOX in Dovecot: its UID.
    fn deliver(&self, word: &str, args: &[&str]) -> String {
        self.deliver_padded(word, 0, args)
    }

    /// As `deliver`, with `padding` bytes of text that do not compress after the word.
    fn deliver_padded(&self, word: &str, padding: usize, args: &[&str]) -> String {
        let mut text = format!("The secret word is {word}.\r\n");
        let mut n: u64 = 1;
        while text.len() < padding {
            n = n
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            text.push_str(&format!(
                "{n:016x}{:016x}{:016x}\r\n",
                n.rotate_left(17),
                !n
            ));
        }
        let inner = crlf(&format!(
            "Content-Type: text/plain; charset=utf-8\r\n\r\n{text}"
        ));
        let armored = gpg_encrypt(&self.gpg, self.root.path(), &inner, args);
        let message = pgp_mime(
            &format!(
                "From: bob@example.test\r\nTo: alice@example.test\r\nSubject: {word}\r\n\
                 Message-ID: <{word}@example.test>\r\n"
            ),
            &armored,
        );
        append(
            &self.servers,
            "alice",
            "INBOX",
            self.root.path(),
            &[&message],
        )
        .pop()
        .expect("a UID")
    }
}

/// FETCH through `port` (imaplib): the bytes, or the error imaplib raised.
fn fetch(port: u16, uid: &str) -> Result<String, String> {
    fetch_item(port, uid, "BODY.PEEK[]")
}

/// FETCH of `item` through `port` (imaplib).
fn fetch_item(port: u16, uid: &str, item: &str) -> Result<String, String> {
    let out = oracle()
        .args([
            "fetch",
            &port.to_string(),
            "alice",
            "secret",
            "INBOX",
            uid,
            item,
        ])
        .output()
        .expect("python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    // imaplib's oracle prints a refused FETCH as its status and text.
    if out.status.success() && !stdout.starts_with("NO ") && !stdout.starts_with("BAD ") {
        Ok(stdout)
    } else if out.status.success() {
        Err(stdout)
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

#[test]
fn two_devices_read_gnupg_mail_through_the_store_and_a_revoked_one_reads_nothing_new() {
    let w = world();
    let laptop = w.enrol("laptop");
    let phone = w.enrol("phone");
    // Neither device holds the account's secret key.
    for home in [&laptop, &phone] {
        assert!(!home.join("secrets.json").exists());
        assert!(home.join("device-secrets.json").exists());
    }
    let one = w.deliver("pomegranate", &["-r", "alice@example.test"]);
    let hidden = w.deliver("quince", &["--hidden-recipient", "alice@example.test"]);
    let several = w.deliver(
        "medlar",
        &["-r", "bob@example.test", "-r", "alice@example.test"],
    );
    let laptop_proxy = w.device_proxy(&laptop);
    let phone_proxy = w.device_proxy(&phone);
    for (uid, word) in [
        (&one, "pomegranate"),
        (&hidden, "quince"),
        (&several, "medlar"),
    ] {
        for proxy in [&laptop_proxy, &phone_proxy] {
            let view = fetch(proxy.port, uid).unwrap();
            assert!(
                view.contains(&format!("The secret word is {word}.")),
                "uid {uid}: {view}\n{}",
                proxy.log_text()
            );
            assert!(view.contains("Meshmail-Result: decrypted"), "{view}");
        }
        // Dovecot itself holds ciphertext only.
        let direct = fetch(w.servers.imap(), uid).unwrap();
        assert!(direct.contains("-----BEGIN PGP MESSAGE-----"));
        assert!(!direct.contains("The secret word"));
    }
    // The store's audit log names each message the laptop asked for.
    let audit = w.audit("laptop");
    assert!(audit.contains(&format!("uid={one} ")), "{audit}");
    // Neither log holds a partial or the plaintext.
    for log in [w.store.log_text(), laptop_proxy.log_text()] {
        assert!(!log.contains("pomegranate."), "decrypted content in a log");
    }

    // A backup of the store's shares, taken while the laptop is enrolled.
    let backup = w.root.path().join("shares-backup");
    run(std::process::Command::new("cp")
        .arg("-a")
        .arg(&w.shares_dir)
        .arg(&backup))
    .ok();

    // The laptop is lost: revoked on the store host.
    w.store_cmd(&["revoke", "alice@example.test", "laptop"])
        .ok();
    let after = w.deliver("loquat", &["-r", "alice@example.test"]);
    // The laptop's open session: what it decrypted before stays readable, nothing new.
    assert!(fetch(laptop_proxy.port, &one)
        .unwrap()
        .contains("The secret word is pomegranate."));
    let refused = fetch(laptop_proxy.port, &after).unwrap_err();
    assert!(refused.contains("UNAVAILABLE"), "{refused}");
    // The laptop started cold: nothing new either.
    drop(laptop_proxy);
    let cold = w.device_proxy(&laptop);
    let refused = fetch(cold.port, &after).unwrap_err();
    assert!(refused.contains("UNAVAILABLE"), "{refused}");
    assert!(!cold.log_text().contains("loquat."));
    // The phone reads everything.
    for (uid, word) in [(&one, "pomegranate"), (&after, "loquat")] {
        assert!(fetch(phone_proxy.port, uid)
            .unwrap()
            .contains(&format!("The secret word is {word}.")));
    }

    // The laptop's old record, replayed: refused for good.
    let replay = w.store_cmd(&[
        "accept",
        w.root
            .path()
            .join("enrol-laptop/reply.record")
            .to_str()
            .unwrap(),
    ]);
    assert_ne!(replay.code, 0, "{replay:?}");
    assert!(replay.stderr.contains("revoked"), "{replay:?}");
    // The backup restored over the shares: the laptop's share no longer opens.
    std::fs::remove_dir_all(&w.shares_dir).unwrap();
    run(std::process::Command::new("cp")
        .arg("-a")
        .arg(&backup)
        .arg(&w.shares_dir))
    .ok();
    let still = fetch(cold.port, &after).unwrap_err();
    assert!(still.contains("UNAVAILABLE"), "{still}");
    // The store's own view.
    let list = w.store_cmd(&["list"]).ok().stdout.clone();
    assert!(list.contains("laptop\trevoked"), "{list}");
}

#[test]
fn enrolment_refuses_a_wrong_code_and_a_device_with_another_devices_key_reads_nothing() {
    let w = world();
    let dir = w.root.path().join("enrol-tablet");
    std::fs::create_dir_all(&dir).unwrap();
    let tablet = w.root.path().join("device-tablet");
    let info = w.store_cmd(&["info"]);
    std::fs::write(dir.join("store.json"), &info.ok().stdout).unwrap();
    let req = run(meshmail(&tablet)
        .args(["device", "request", "--out"])
        .arg(dir.join("request")))
    .ok()
    .stdout
    .clone();
    let add = |code: &str, out: &str| {
        run(meshmail(&w.alice.home)
            .args(["device", "add"])
            .arg(dir.join("request"))
            .args(["--name", "tablet", "--store"])
            .arg(dir.join("store.json"))
            .arg("--out")
            .arg(dir.join(out))
            .args(["--code", code]))
    };
    // A code read out wrong (or a request swapped on the way): nothing is enrolled.
    let wrong = add("0000-0000-0000", "reply-wrong");
    assert_ne!(wrong.code, 0);
    assert!(wrong.stderr.contains("code does not match"), "{wrong:?}");
    assert!(!dir.join("reply-wrong").exists());
    let reply = add(&code_in(&req), "reply").ok().stdout.clone();
    // The admin's code typed wrong on the device: not imported.
    let bad_import = run(meshmail(&tablet)
        .args(["device", "import"])
        .arg(dir.join("reply"))
        .args(["--code", &code_in(&req)]));
    assert_ne!(bad_import.code, 0);
    assert!(
        bad_import.stderr.contains("code does not match"),
        "{bad_import:?}"
    );
    assert!(!tablet.join("device.json").exists());
    run(meshmail(&tablet)
        .args(["device", "import"])
        .arg(dir.join("reply"))
        .args(["--code", &code_in(&reply)]))
    .ok();
    w.store_cmd(&["accept", dir.join("reply.record").to_str().unwrap()])
        .ok();

    // The laptop's share with the tablet's TLS key: the store answers for the tablet, whose
    // partial does not fit the laptop's share; no plaintext, no view kept.
    let laptop = w.enrol("laptop");
    let mixed = w.root.path().join("device-mixed");
    run(std::process::Command::new("cp")
        .arg("-a")
        .arg(&laptop)
        .arg(&mixed))
    .ok();
    std::fs::copy(tablet.join("device-tls.pem"), mixed.join("device-tls.pem")).unwrap();
    let secrets = |home: &Path| -> (serde_json::Value, serde_json::Value) {
        let outer: serde_json::Value =
            serde_json::from_slice(&std::fs::read(home.join("device-secrets.json")).unwrap())
                .unwrap();
        let data = data_encoding::BASE64
            .decode(outer["data"].as_str().unwrap().as_bytes())
            .unwrap();
        (outer, serde_json::from_slice(&data).unwrap())
    };
    let (mut outer, mut inner) = secrets(&laptop);
    inner["tls_key"] = secrets(&tablet).1["tls_key"].clone();
    outer["data"] = data_encoding::BASE64
        .encode(&serde_json::to_vec(&inner).unwrap())
        .into();
    let path = mixed.join("device-secrets.json");
    std::fs::remove_file(&path).unwrap();
    std::fs::write(&path, serde_json::to_vec(&outer).unwrap()).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let uid = w.deliver("tamarind", &["-r", "alice@example.test"]);
    let proxy = w.device_proxy(&mixed);
    let refused = fetch(proxy.port, &uid).unwrap_err();
    assert!(refused.contains("UNAVAILABLE"), "{refused}");
    let log = proxy.log_text();
    assert!(!log.contains("decrypted"), "{log}");
    // The tablet itself reads it.
    let tablet_proxy = w.device_proxy(&tablet);
    assert!(fetch(tablet_proxy.port, &uid)
        .unwrap()
        .contains("The secret word is tamarind."));
}

#[test]
fn the_private_item_reaches_neither_dovecot_nor_a_session_without_an_enrolled_key() {
    let w = world();
    let uid = w.deliver("sapodilla", &["-r", "alice@example.test"]);
    // A plain client (no device certificate) through the store: relayed byte for byte, and
    // the private item refused before it reaches Dovecot.
    let mut plain = common::raw_imap::RawImap::connect(w.store.port);
    plain.drain(std::time::Duration::from_millis(300));
    let login = String::from_utf8_lossy(&plain.command("a", "LOGIN alice secret")).into_owned();
    assert!(login.contains("a OK"), "{login}");
    plain.command("b", "SELECT INBOX");
    let asked = String::from_utf8_lossy(&plain.command(
        "c",
        &format!("UID FETCH {uid} (BODY.PEEK[] X-MESH-RECRYPT)"),
    ))
    .into_owned();
    assert!(asked.contains("c NO [NOPERM]"), "{asked}");
    assert!(!asked.contains("X-MESH-RECRYPT ("), "{asked}");
    let body =
        String::from_utf8_lossy(&plain.command("d", &format!("UID FETCH {uid} (BODY.PEEK[])")))
            .into_owned();
    assert!(body.contains("-----BEGIN PGP MESSAGE-----"));
    assert!(!body.contains("X-MESH-RECRYPT"));
}

#[test]
fn the_admin_forgets_the_account_key_and_the_next_device_is_enrolled_from_recovery_shares() {
    let w = world();
    let record = w.root.path().join("admin.record");
    let forget = || {
        run(meshmail(&w.alice.home)
            .args([
                "device",
                "add",
                "--forget-account-key",
                "--name",
                "admin",
                "--store",
            ])
            .arg(w.store_json())
            .arg("--out")
            .arg(&record))
    };
    // Refused without recovery shares, then while no recovery from them was tried.
    let refused = forget();
    assert_ne!(refused.code, 0);
    assert!(refused.stderr.contains("no recovery shares"), "{refused:?}");
    let shares = w.root.path().join("shares");
    run(meshmail(&w.alice.home)
        .args([
            "recovery", "split", "--shares", "3", "--quorum", "2", "--out",
        ])
        .arg(&shares))
    .ok();
    let share = |i: u8| shares.join(format!("recovery-share-{i}.txt"));
    let refused = forget();
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("no recovery from them was tried"),
        "{refused:?}"
    );
    assert!(w.alice.home.join("secrets.json").exists());
    run(meshmail(&w.alice.home)
        .args(["recovery", "join", "--check"])
        .arg(share(1))
        .arg(share(3)))
    .ok();
    forget().ok();
    assert!(
        !w.alice.home.join("secrets.json").exists(),
        "the key is gone"
    );
    assert!(w.alice.home.join("device.json").exists());
    w.store_cmd(&["accept", record.to_str().unwrap()]).ok();

    // The admin device reads its mail like any other device.
    let uid = w.deliver("jabuticaba", &["-r", "alice@example.test"]);
    let admin = w.device_proxy(&w.alice.home);
    assert!(fetch(admin.port, &uid)
        .unwrap()
        .contains("The secret word is jabuticaba."));

    // The next enrolment needs a quorum of the shares; the key never lands on disk.
    let home = w.root.path().join("device-phone");
    let req = run(meshmail(&home)
        .args(["device", "request", "--out"])
        .arg(w.root.path().join("phone.req")))
    .ok()
    .stdout
    .clone();
    let add = |extra: &[&std::path::Path]| {
        run(meshmail(&w.alice.home)
            .args(["device", "add"])
            .arg(w.root.path().join("phone.req"))
            .args(["--name", "phone", "--store"])
            .arg(w.store_json())
            .arg("--out")
            .arg(w.root.path().join("phone.reply"))
            .args(["--code", &code_in(&req)])
            .args(if extra.is_empty() {
                vec![]
            } else {
                vec!["--recovery"]
            })
            .args(extra))
    };
    let refused = add(&[]);
    assert_ne!(refused.code, 0);
    assert!(
        refused.stderr.contains("forgot the account key"),
        "{refused:?}"
    );
    let added = add(&[&share(2), &share(3)]);
    added.ok();
    assert!(!w.alice.home.join("secrets.json").exists());
    run(meshmail(&home)
        .args(["device", "import"])
        .arg(w.root.path().join("phone.reply"))
        .args(["--code", &code_in(&added.stdout)]))
    .ok();
    w.store_cmd(&[
        "accept",
        w.root.path().join("phone.record").to_str().unwrap(),
    ])
    .ok();
    let phone = w.device_proxy(&home);
    assert!(fetch(phone.port, &uid)
        .unwrap()
        .contains("The secret word is jabuticaba."));
}

#[test]
fn a_device_signs_as_the_account_with_its_own_subkey_and_revocation_retires_it() {
    let w = world();
    let dir = w.root.path().join("enrol-laptop");
    std::fs::create_dir_all(&dir).unwrap();
    let home = w.root.path().join("device-laptop");
    // The device knows the account's certificate: it makes its own signing subkey.
    let req = run(meshmail(&home)
        .args(["device", "request", "--out"])
        .arg(dir.join("request"))
        .arg("--account-cert")
        .arg(w.alice.home.join("openpgp.asc")))
    .ok()
    .stdout
    .clone();
    let reply = run(meshmail(&w.alice.home)
        .args(["device", "add"])
        .arg(dir.join("request"))
        .args(["--name", "laptop", "--store"])
        .arg(w.store_json())
        .arg("--out")
        .arg(dir.join("reply"))
        .args(["--code", &code_in(&req)]))
    .ok()
    .stdout
    .clone();
    assert!(reply.contains("policy publish"), "{reply}");
    run(meshmail(&home)
        .args(["device", "import"])
        .arg(dir.join("reply"))
        .args(["--code", &code_in(&reply)]))
    .ok();

    // Bob's GnuPG takes Alice's certificate as published now, and checks what the laptop
    // signs: a good signature by Alice.
    let bob = common::tempdir();
    let gpg = Gpg::with_secret_of(
        &w.root.path().join("bob_at_example.test"),
        bob.path().join("g"),
    );
    gpg.import_public(&w.alice.home);
    let signed = |text: &[u8]| {
        let secrets = meshmail::keys::device::unlock(&home, None).unwrap();
        let cert = meshmail::keys::Account::open(&home)
            .unwrap()
            .openpgp_cert()
            .unwrap();
        let signer = meshmail::keys::device_signing::signer(
            &cert,
            secrets.openpgp_signing.as_ref().unwrap().expose(),
        )
        .unwrap();
        let bob_cert = meshmail::keys::Account::open(&w.root.path().join("bob_at_example.test"))
            .unwrap()
            .openpgp_cert()
            .unwrap();
        let binary =
            meshmail::crypto::openpgp::encrypt(&[text], &[bob_cert], Some(&signer)).unwrap();
        let file = bob.path().join("signed.pgp");
        std::fs::write(&file, binary).unwrap();
        run(gpg.cmd().arg("--decrypt").arg(&file))
    };
    let good = signed(b"from the laptop");
    assert_eq!(good.code, 0, "{good:?}");
    assert!(good.stdout.contains("from the laptop"));
    assert!(
        good.stderr
            .contains("Good signature from \"alice@example.test\""),
        "{good:?}"
    );

    // A draft the laptop's mail client APPENDs through the device proxy is stored encrypted
    // to the account and signed with the laptop's subkey: Alice's GnuPG reads it as hers.
    w.store_cmd(&["accept", dir.join("reply.record").to_str().unwrap()])
        .ok();
    let proxy = w.device_proxy(&home);
    let draft = dir.join("draft.eml");
    std::fs::write(
        &draft,
        crlf("From: alice@example.test\r\nTo: bob@example.test\r\nSubject: Draft\r\nMessage-ID: <draft@example.test>\r\n\r\nThe draft about quinces.\r\n"),
    )
    .unwrap();
    let uid = run(oracle()
        .args(["append", "127.0.0.1", &proxy.port.to_string()])
        .args(["alice", "secret", "Drafts"])
        .arg(&draft))
    .ok()
    .stdout
    .trim()
    .to_owned();
    let stored = run(oracle()
        .args(["fetch", &w.servers.imap().to_string()])
        .args(["alice", "secret", "Drafts", &uid, "BODY.PEEK[]"]))
    .ok()
    .stdout
    .clone();
    assert!(
        !stored.contains("quinces"),
        "plaintext on the server: {stored}"
    );
    let alice_gpg = Gpg::with_secret_of(&w.alice.home, w.root.path().join("gpg-alice"));
    alice_gpg.import_public(&w.alice.home);
    let opened = alice_gpg.decrypt(&common::mail::pgp_part(stored.as_bytes()));
    assert_eq!(opened.code, 0, "{opened:?}");
    assert!(
        opened.stdout.contains("The draft about quinces."),
        "{opened:?}"
    );
    assert!(
        opened
            .stderr
            .contains("Good signature from \"alice@example.test\""),
        "the device proxy signs its APPENDs with the laptop's subkey: {opened:?}"
    );
    drop(proxy);
    // The laptop is revoked: its subkey too, in the certificate Alice publishes again.
    let revoked = run(meshmail(&w.alice.home)
        .args(["device", "revoke", "laptop", "--out"])
        .arg(dir.join("revocation")));
    revoked.ok();
    assert!(
        revoked.stdout.contains("signing subkey is revoked"),
        "{revoked:?}"
    );
    w.store_cmd(&[
        "revoke",
        "--signed",
        dir.join("revocation").to_str().unwrap(),
    ])
    .ok();
    gpg.import_public(&w.alice.home);
    let after = signed(b"after the revocation");
    assert!(after.stderr.contains("revoked"), "{after:?}");
}

/// Decryption lines in a meshmail log whose `field` is `value`: by whom (`by`: `session`,
/// `indexer`), or where a device's session had the store's partials from (`partials_from`:
/// `fetch`, with the client's FETCH; `own`, asked on meshmail's own connection).
fn decryptions(log: &str, field: &str, value: &str) -> usize {
    common::plain(log)
        .lines()
        .filter(|l| l.contains(" decrypted") && l.contains(&format!("{field}=\"{value}\"")))
        .count()
}

#[test]
fn a_device_indexes_new_mail_with_its_stores_partials_before_the_client_asks() {
    let w = world();
    let laptop = w.enrol("laptop");
    let proxy = w.device_proxy(&laptop);
    // A client logs in once: the device's indexer starts with its login, INBOX in IDLE.
    let mut client = common::raw_imap::RawImap::connect(proxy.port);
    client.drain(std::time::Duration::from_millis(300));
    client.command("a", "LOGIN alice secret");
    client.command("b", "SELECT INBOX");
    let uids: Vec<String> = ["feijoa", "rambutan", "mangosteen"]
        .iter()
        .map(|word| w.deliver(word, &["-r", "alice@example.test"]))
        .collect();
    let started = std::time::Instant::now();
    while decryptions(&proxy.log_text(), "by", "indexer") < 3 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the indexer did not decrypt: {}",
            proxy.log_text()
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    client.command("n", "NOOP");
    let before = decryptions(&proxy.log_text(), "by", "session");
    let answer = String::from_utf8_lossy(
        &client.command("c", &format!("UID FETCH {} (BODY.PEEK[])", uids.join(","))),
    )
    .into_owned();
    for word in ["feijoa", "rambutan", "mangosteen"] {
        assert!(
            answer.contains(&format!("The secret word is {word}.")),
            "{answer}"
        );
    }
    assert_eq!(
        decryptions(&proxy.log_text(), "by", "session"),
        before,
        "the client's FETCH decrypted again"
    );
}

#[test]
fn a_devices_fetch_of_whole_messages_brings_their_partials_with_the_ciphertext() {
    let w = world();
    let laptop = w.enrol("laptop");
    let uids: Vec<String> = ["mulberry", "tamarind"]
        .iter()
        .map(|word| w.deliver(word, &["-r", "alice@example.test"]))
        .collect();
    // No indexer: the client's FETCH is the first to read these messages.
    let proxy = Meshmail::start(&format!("{}indexer = false\n", w.device_config(&laptop)));
    for (uid, word) in uids.iter().zip(["mulberry", "tamarind"]) {
        let view = fetch(proxy.port, uid).unwrap();
        assert!(
            view.contains(&format!("The secret word is {word}.")),
            "{view}\n{}",
            proxy.log_text()
        );
    }
    // Each message came once, its partials with it: none was fetched again for them.
    let log = proxy.log_text();
    assert_eq!(decryptions(&log, "partials_from", "fetch"), 2, "{log}");
    assert_eq!(decryptions(&log, "partials_from", "own"), 0, "{log}");
    // Part of a message brings no partials: meshmail's own connection asks for them.
    let third = w.deliver("soursop", &["-r", "alice@example.test"]);
    let part = fetch_item(proxy.port, &third, "BODY.PEEK[]<0.20000>").unwrap();
    assert!(part.contains("The secret word is soursop."), "{part}");
    assert_eq!(decryptions(&proxy.log_text(), "partials_from", "own"), 1);
    // The store audited one answer per message.
    let audit = w.audit("laptop");
    for uid in uids.iter().chain([&third]) {
        assert_eq!(
            audit.matches(&format!("uid={uid} ")).count(),
            1,
            "uid {uid}: {audit}"
        );
    }
}

#[test]
fn a_device_reads_a_message_larger_than_the_store_holds_as_it_streams_through() {
    // The store holds responses of up to 2 MB (twice max_message_size); the message, not
    // compressed, is about 40 MB: more than the store queues for a slow client (16 MiB).
    let w = world_with("[limits]\nmax_message_size = 1048576\n");
    let laptop = w.enrol("laptop");
    let uid = w.deliver_padded(
        "jabuticaba",
        30 << 20,
        &["-z", "0", "-r", "alice@example.test"],
    );
    let proxy = Meshmail::start(&format!("{}indexer = false\n", w.device_config(&laptop)));
    let before = common::peak_rss_kb(w.store.pid());
    let view = fetch(proxy.port, &uid).unwrap();
    assert!(
        view.contains("The secret word is jabuticaba."),
        "{}\n{}",
        &view[..view.len().min(500)],
        w.store.log_text()
    );
    assert!(view.len() > 30 << 20, "{}", view.len());
    // Its partials came with it, computed by the store from the message's first bytes.
    assert_eq!(
        decryptions(&proxy.log_text(), "partials_from", "fetch"),
        1,
        "{}",
        proxy.log_text()
    );
    // The store held a part of the message at a time (at most its queue for the client and
    // the partials' prefix), not the whole of it.
    let grew = common::peak_rss_kb(w.store.pid()).saturating_sub(before);
    assert!(grew < 24 << 10, "the store's peak RSS grew by {grew} kB");
}

/// The key IDs of the PKESKs of the PGP/MIME message `message` (GnuPG's `--list-packets`).
fn pkesk_key_ids(gpg: &Gpg, dir: &Path, message: &str) -> Vec<String> {
    let start = message.find("-----BEGIN PGP MESSAGE-----").unwrap();
    let end = message.find("-----END PGP MESSAGE-----").unwrap() + 25;
    let file = dir.join(format!("m-{}.asc", common::imap::rand_suffix()));
    std::fs::write(&file, &message[start..end]).unwrap();
    let listed = run(gpg.cmd().arg("--list-packets").arg(&file));
    listed
        .stdout
        .lines()
        .filter_map(|l| l.split("keyid ").nth(1))
        .map(|id| id.trim().to_ascii_uppercase())
        .collect()
}

#[test]
fn a_rekey_moves_devices_and_stored_mail_to_a_new_subkey_and_the_old_one_is_retired() {
    let w = world();
    let laptop = w.enrol("laptop");
    let before = w.deliver("durian", &["-r", "alice@example.test"]);
    let admin_config = w.root.path().join("admin.toml");
    std::fs::write(
        &admin_config,
        w.servers
            .meshmail_config(&w.alice.home, "alice", None, "")
            .replace("{port}", &free_port().to_string()),
    )
    .unwrap();
    let keys = w.root.path().join("rekey");
    // The store's description is the one `device add` kept.
    let rekey = run(meshmail(&w.alice.home)
        .args(["mailbox", "rekey", "--config"])
        .arg(&admin_config)
        .arg("--out")
        .arg(&keys));
    rekey.ok();
    let new_fpr = rekey.stdout.split_whitespace().nth(3).unwrap().to_owned();
    let old_fpr = rekey
        .stdout
        .split("(the old ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap()
        .to_owned();
    // A meshmail sender encrypts to the certificate inside Alice's signed policy: the rekey
    // signed it again, so that certificate names the new subkey (and OpenPGP alone is offered).
    let account = meshmail::keys::Account::open(&w.alice.home).unwrap();
    let address = account
        .strong_address(
            meshmail::address::Label::Xx,
            meshmail::address::Form::Suffix,
            meshmail::address::udf::DEFAULT_BITS,
        )
        .unwrap();
    let policy = meshmail::policy::verify::verify_policy(
        &account.policy_jws().unwrap(),
        &address,
        meshmail::policy::Source::Store,
        time::OffsetDateTime::now_utc(),
    )
    .unwrap();
    assert_eq!(policy.formats(), &[meshmail::policy::Format::PgpMime]);
    let sent = meshmail::crypto::openpgp::encrypt(&[b"x"], policy.openpgp_certs(), None).unwrap();
    let recipients: Vec<String> = sequoia_openpgp::PacketPile::from_bytes(&sent)
        .unwrap()
        .descendants()
        .filter_map(|p| match p {
            sequoia_openpgp::Packet::PKESK(k) => k.recipient().map(|id| id.to_hex()),
            _ => None,
        })
        .collect();
    assert_eq!(recipients, vec![new_fpr[new_fpr.len() - 16..].to_owned()]);
    run(meshmail(&laptop)
        .args(["device", "update"])
        .arg(keys.join("laptop.update")))
    .ok();
    w.store_cmd(&["accept", keys.join("laptop.record").to_str().unwrap()])
        .ok();
    // Senders take the certificate as published again: GnuPG encrypts to the new subkey.
    w.gpg.import_public(&w.alice.home);
    let after = w.deliver("cherimoya", &["-r", "alice@example.test"]);
    let direct = fetch(w.servers.imap(), &after).unwrap();
    assert_eq!(
        pkesk_key_ids(&w.gpg, w.root.path(), &direct),
        vec![new_fpr[new_fpr.len() - 16..].to_owned()],
    );
    let proxy = w.device_proxy(&laptop);
    for (uid, word) in [(&before, "durian"), (&after, "cherimoya")] {
        assert!(fetch(proxy.port, uid)
            .unwrap()
            .contains(&format!("The secret word is {word}.")));
    }
    drop(proxy);

    // Stored mail moves to the new subkey: only its PKESK is replaced.
    let old_copy = fetch(w.servers.imap(), &before).unwrap();
    let password = w.root.path().join("password");
    std::fs::write(&password, "secret\n").unwrap();
    let moved = run(meshmail(&w.alice.home)
        .args([
            "mailbox",
            "rekey",
            "--reencrypt",
            "--mailbox",
            "INBOX",
            "--config",
        ])
        .arg(&admin_config)
        .arg("--password-file")
        .arg(&password));
    moved.ok();
    assert!(moved.stdout.contains("1 encrypted"), "{moved:?}");
    let inbox = w.servers.messages("alice", "INBOX");
    assert_eq!(inbox.len(), 2, "nothing lost, nothing doubled");
    let rewrapped = inbox
        .iter()
        .map(|m| String::from_utf8_lossy(m).into_owned())
        .find(|m| m.contains("Subject: durian"))
        .unwrap();
    assert_eq!(
        pkesk_key_ids(&w.gpg, w.root.path(), &rewrapped),
        vec![new_fpr[new_fpr.len() - 16..].to_owned()],
        "old subkey {old_fpr}"
    );
    assert_ne!(old_fpr, new_fpr);
    // The encrypted data kept its bytes: the binaries share everything after the PKESK.
    let binary = |m: &str| {
        let start = m.find("-----BEGIN PGP MESSAGE-----").unwrap();
        let end = m.find("-----END PGP MESSAGE-----").unwrap();
        let body: String = m[start..end]
            .lines()
            .skip(1)
            .skip_while(|l| !l.trim().is_empty())
            .filter(|l| !l.starts_with('='))
            .map(str::trim)
            .collect();
        data_encoding::BASE64.decode(body.as_bytes()).unwrap()
    };
    let (was, now) = (binary(&old_copy), binary(&rewrapped));
    let common = was
        .iter()
        .rev()
        .zip(now.iter().rev())
        .take_while(|(a, b)| a == b)
        .count();
    assert!(
        common + 120 >= was.len() && common * 2 >= was.len(),
        "{common} of {} bytes kept",
        was.len()
    );

    // The grace period over: the store retires the old subkey. The laptop, cold, reads both.
    w.store_cmd(&["retire", "alice@example.test", &old_fpr])
        .ok();
    let proxy = w.device_proxy(&laptop);
    for m in dump_uids(w.servers.imap()) {
        let view = fetch(proxy.port, &m).unwrap();
        assert!(view.contains("The secret word is"), "{view}");
        assert!(!view.contains("Meshmail-Reencrypt"), "{view}");
    }
}

/// The UIDs of Alice's INBOX (imaplib).
fn dump_uids(port: u16) -> Vec<String> {
    let out = run(oracle().args(["dump", &port.to_string(), "alice", "secret", "INBOX"]));
    out.ok();
    out.stdout
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["uid"].to_string())
        .collect()
}

#[test]
fn a_remaining_device_revokes_the_lost_one_at_the_store_at_once() {
    let w = world();
    let laptop = w.enrol("laptop");
    let phone = w.enrol("phone");
    let password = w.root.path().join("password");
    std::fs::write(&password, "secret\n").unwrap();
    let on = |home: &Path, args: &[&str]| {
        run(meshmail(home)
            .args(["device"])
            .args(args)
            .arg("--config")
            .arg(w.device_config_file(home))
            .arg("--password-file")
            .arg(&password))
    };
    let list = on(&phone, &["list"]);
    list.ok();
    assert!(list.stdout.contains("laptop\tenrolled"), "{list:?}");
    let laptop_proxy = w.device_proxy(&laptop);
    // The laptop is lost: the phone revokes it, signed with the phone's own key.
    on(&phone, &["revoke", "laptop"]).ok();
    let list = on(&phone, &["list"]);
    assert!(list.stdout.contains("laptop\trevoked"), "{list:?}");
    assert!(list.stdout.contains("phone\tenrolled"), "{list:?}");
    let uid = w.deliver("salak", &["-r", "alice@example.test"]);
    let refused = fetch(laptop_proxy.port, &uid).unwrap_err();
    assert!(refused.contains("UNAVAILABLE"), "{refused}");
    // The laptop, revoked, cannot revoke the phone in return.
    let back = on(&laptop, &["revoke", "phone"]);
    assert_ne!(back.code, 0, "{back:?}");
    assert!(back.stderr.contains("NOPERM"), "{back:?}");
    let phone_proxy = w.device_proxy(&phone);
    assert!(fetch(phone_proxy.port, &uid)
        .unwrap()
        .contains("The secret word is salak."));
}

#[test]
fn the_stores_state_sealed_under_a_systemd_credential_opens_only_with_it() {
    let root = common::tempdir();
    let alice = common::init_account(root.path(), "alice@example.test");
    let certs = root.path().join("certs");
    run(meshmail(&alice.home).arg("certs").arg("--out").arg(&certs)).ok();
    let public = root.path().join("alice-public");
    std::fs::create_dir_all(&public).unwrap();
    for f in ["account.json", "openpgp.asc"] {
        std::fs::copy(alice.home.join(f), public.join(f)).unwrap();
    }
    // What systemd's LoadCredentialEncrypted= hands the service: a directory of credentials.
    let credentials = root.path().join("credentials");
    std::fs::create_dir_all(&credentials).unwrap();
    std::fs::write(credentials.join("store-state"), [7u8; 48]).unwrap();
    let state = root.path().join("state/state.json");
    std::fs::create_dir_all(state.parent().unwrap()).unwrap();
    let config = root.path().join("store.toml");
    std::fs::write(
        &config,
        format!(
            "[tls]\ncert = \"{c}/cert.pem\"\nkey = \"{c}/key.pem\"\n[store]\nlisten = \"127.0.0.1:1\"\n\
             upstream = \"127.0.0.1:2\"\nupstream_tls = \"none\"\nshares_dir = \"{}\"\n\
             state_file = \"{}\"\nstate_key_credential = \"store-state\"\n\
             [[store.account]]\nupstream_user = \"alice\"\npublic_home = \"{}\"\n",
            root.path().join("shares").display(),
            state.display(),
            public.display(),
            c = certs.display(),
        ),
    )
    .unwrap();
    let store = |creds: Option<&Path>, args: &[&str]| {
        let mut cmd = meshmail(&alice.home);
        cmd.arg("store").args(args).arg("--config").arg(&config);
        cmd.env_remove("CREDENTIALS_DIRECTORY");
        if let Some(dir) = creds {
            cmd.env("CREDENTIALS_DIRECTORY", dir);
        }
        run(&mut cmd)
    };
    let info = store(Some(&credentials), &["info"]);
    info.ok();
    let text = std::fs::read_to_string(&state).unwrap();
    assert!(
        text.starts_with("{\"sealed\":") && !text.contains("master"),
        "the state file is sealed: {text}"
    );
    // The same again: the store's key is the same (its public key is in the description).
    assert_eq!(store(Some(&credentials), &["info"]).stdout, info.stdout);
    // Without the credential, or with another host's, nothing opens.
    let without = store(None, &["info"]);
    assert_ne!(without.code, 0);
    assert!(
        without.stderr.contains("CREDENTIALS_DIRECTORY"),
        "{without:?}"
    );
    let elsewhere = root.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    std::fs::write(elsewhere.join("store-state"), [8u8; 48]).unwrap();
    let other = store(Some(&elsewhere), &["info"]);
    assert_ne!(other.code, 0);
    assert!(other.stderr.contains("state key"), "{other:?}");
}
