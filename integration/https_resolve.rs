//! Policy and WKD discovery over HTTPS: a real HTTPS server (its certificate from a test CA made
//! with openssl and trusted through configuration) serves the files `meshmail policy publish`
//! wrote, while DNS (a real NSD) has only address records. A file signed by another key is
//! refused, and without the test CA nothing is accepted: verification is never off.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::path::Path;

const DOMAIN: &str = "example.test";

struct World {
    _root: tempfile::TempDir,
    alice: TestAccount,
    bob: TestAccount,
    /// Document roots: `<docroot>/<host>/...`.
    docroot: std::path::PathBuf,
    ca: TestCa,
    nsd: Nsd,
}

fn world() -> World {
    let root = tempdir();
    let alice = init_account(root.path(), "alice@example.test");
    let bob = init_account(root.path(), "bob@example.test");
    publish(&alice, &root.path().join("pub"));
    publish(&bob, &root.path().join("pub-bob"));
    let docroot = root.path().join("pub/https");
    let ca = make_test_ca(root.path(), &[DOMAIN, "openpgpkey.example.test"]);
    // DNS knows the hosts but holds no policy record: HTTPS is the only source.
    let nsd = Nsd::start(&[(
        DOMAIN,
        vec![
            "@ IN A 127.0.0.1".into(),
            "openpgpkey IN A 127.0.0.1".into(),
        ],
    )]);
    World {
        _root: root,
        alice,
        bob,
        docroot,
        ca,
        nsd,
    }
}

fn resolve(w: &World, https: &HttpsServer, address: &str, ca: Option<&Path>) -> Run {
    let stranger = w.docroot.join("../../stranger");
    let mut cmd = meshmail(&stranger);
    cmd.args(["policy", "resolve", "--no-store", "--timeout", "3", "--dns"])
        .arg(w.nsd.addr())
        .arg("--https-port")
        .arg(https.port.to_string());
    if let Some(ca) = ca {
        cmd.arg("--https-ca").arg(ca);
    }
    run(cmd.arg(address))
}

#[test]
fn udf_and_openpgp_addresses_resolve_over_https() {
    let w = world();
    let https = HttpsServer::start(&w.docroot, &w.ca);

    let json = resolve(&w, &https, &w.alice.strong, Some(&w.ca.ca_pem))
        .ok()
        .json();
    assert_eq!(json["source"], "https");
    assert_eq!(json["routable"], "alice@example.test");
    assert_eq!(
        json["openpgp"][0]["fingerprint"],
        w.alice.openpgp_fingerprint.as_str()
    );

    let json = resolve(&w, &https, &w.alice.openpgp_address, Some(&w.ca.ca_pem))
        .ok()
        .json();
    assert_eq!(json["source"], "https");
    assert_eq!(json["fingerprint_kind"], "openpgp-v4");
    assert_eq!(
        json["openpgp"][0]["fingerprint"],
        w.alice.openpgp_fingerprint.as_str()
    );

    // The advanced WKD host gone, the direct method still finds the key.
    std::fs::remove_dir_all(w.docroot.join("openpgpkey.example.test")).expect("rm");
    let json = resolve(&w, &https, &w.alice.openpgp_address, Some(&w.ca.ca_pem))
        .ok()
        .json();
    assert_eq!(
        json["openpgp"][0]["fingerprint"],
        w.alice.openpgp_fingerprint.as_str()
    );
}

#[test]
fn without_the_test_ca_nothing_is_accepted() {
    let w = world();
    let https = HttpsServer::start(&w.docroot, &w.ca);
    let r = resolve(&w, &https, &w.alice.strong, None);
    assert_ne!(
        r.code, 0,
        "an untrusted certificate must not yield a policy: {r:#?}"
    );
    assert!(r.stdout.is_empty(), "{r:#?}");
}

#[test]
fn files_signed_by_another_key_are_refused() {
    let w = world();
    // Bob's policy and certificate, placed where Alice's belong.
    let alice_udf_dir = w.docroot.join("example.test/.well-known/mmm-udf");
    let alice_policy = std::fs::read_dir(&alice_udf_dir)
        .expect("dir")
        .next()
        .expect("file")
        .expect("entry")
        .path();
    let bob_jws = std::fs::read(w.bob.home.join("policy.jws")).expect("bob policy");
    std::fs::write(&alice_policy, bob_jws).expect("write");
    let bob_cert = run(meshmail(&w.bob.home).args(["keys", "export", "--openpgp"]))
        .ok()
        .stdout
        .clone();
    for dir in [
        "example.test/.well-known/openpgpkey/hu",
        "openpgpkey.example.test/.well-known/openpgpkey/example.test/hu",
    ] {
        for f in std::fs::read_dir(w.docroot.join(dir)).expect("hu") {
            std::fs::write(f.expect("entry").path(), &bob_cert).expect("write");
        }
    }
    let https = HttpsServer::start(&w.docroot, &w.ca);

    let r = resolve(&w, &https, &w.alice.strong, Some(&w.ca.ca_pem));
    assert_eq!(r.code, 65, "{r:#?}");
    assert!(r.stderr.contains("another key"), "{r:#?}");
    let r = resolve(&w, &https, &w.alice.openpgp_address, Some(&w.ca.ca_pem));
    assert_eq!(r.code, 65, "{r:#?}");
    assert!(r.stderr.contains("does not match"), "{r:#?}");
}

/// DNS and HTTPS are asked together and the newest valid policy wins, whichever serves it: a
/// stale TXT record cannot hide a newer file, nor a stale file a newer record.
#[test]
fn the_newest_policy_wins_whether_dns_or_https_has_it() {
    let root = tempdir();
    let alice = init_account(root.path(), "alice@example.test");
    publish(&alice, &root.path().join("pub"));
    let docroot = root.path().join("pub/https");
    let ca = make_test_ca(root.path(), &[DOMAIN, "openpgpkey.example.test"]);
    let https = HttpsServer::start(&docroot, &ca);
    let now = time::OffsetDateTime::now_utc();
    let resolve_with = |txt: String| {
        let nsd = Nsd::start(&[(DOMAIN, vec!["@ IN A 127.0.0.1".into(), txt])]);
        let stranger = root.path().join(format!("stranger-{}", free_port()));
        let r = run(meshmail(&stranger)
            .args(["policy", "resolve", "--no-store", "--timeout", "3", "--dns"])
            .arg(nsd.addr())
            .arg("--https-port")
            .arg(https.port.to_string())
            .arg("--https-ca")
            .arg(&ca.ca_pem)
            .arg(&alice.strong));
        r.ok().json()
    };
    // DNS holds an older policy (two days), HTTPS the one just published.
    let older = resigned_policy_line(&alice, |doc| doc.created = now - time::Duration::days(2));
    let json = resolve_with(older);
    assert_eq!(json["source"], "https", "{json}");
    // DNS holds a newer one than the file.
    let newer = resigned_policy_line(&alice, |doc| doc.created = now + time::Duration::minutes(1));
    let json = resolve_with(newer);
    assert_eq!(json["source"], "dns", "{json}");
}
