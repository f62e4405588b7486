//! `meshmail policy resolve` through a real NSD serving the zone lines `meshmail policy
//! publish` wrote: UDF and OpenPGP-fingerprint addresses resolve; tampered, foreign and expired
//! records are refused (exit 65); a stopped NSD is a temporary failure (exit 75).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use std::path::Path;

const DOMAIN: &str = "example.test";

/// Resolves `address` as a stranger would (an empty home, no local store).
fn resolve(nsd: &Nsd, address: &str, root: &Path) -> Run {
    let stranger = root.join("stranger");
    run(meshmail(&stranger)
        .args(["policy", "resolve", "--no-store", "--timeout", "2", "--dns"])
        .arg(nsd.addr())
        .arg(address))
}

/// Changes one base64 character `offset` characters into the record's data.
fn flip_a_byte(line: &str, offset: usize) -> String {
    let mut bytes = line.as_bytes().to_vec();
    let data = line
        .find(" TXT \"")
        .map(|i| i + 6)
        .or_else(|| line.find(" OPENPGPKEY ").map(|i| i + 12));
    let start = data.expect("record data") + offset;
    let i = (start..bytes.len())
        .find(|&i| bytes[i].is_ascii_alphanumeric())
        .expect("a character to change");
    bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(bytes).expect("utf8")
}

fn line_of<'a>(lines: &'a [String], kind: &str) -> &'a String {
    lines
        .iter()
        .find(|l| l.contains(kind))
        .unwrap_or_else(|| panic!("no {kind} line in {lines:#?}"))
}

#[test]
fn udf_and_openpgp_addresses_resolve_through_nsd() {
    let root = tempdir();
    let alice = init_account(root.path(), "alice@example.test");
    let lines = publish(&alice, &root.path().join("pub"));
    assert_eq!(lines.len(), 3, "TXT, OPENPGPKEY, SMIMEA: {lines:#?}");
    for l in &lines {
        let owner = l.split_whitespace().next().unwrap();
        assert!(
            owner.ends_with(".example.test."),
            "owner names are fully qualified: {l}"
        );
    }
    let nsd = Nsd::start(&[(DOMAIN, lines.clone())]);

    // dig, a tool nobody here wrote, sees the same SMIMEA certificate meshmail published.
    let smimea = line_of(&lines, " SMIMEA ");
    let owner = smimea.split_whitespace().next().unwrap();
    let dig = run(std::process::Command::new("dig")
        .args(["+short", "-p"])
        .arg(nsd.port.to_string())
        .args(["@127.0.0.1", owner, "TYPE53"]));
    assert!(dig.stdout.contains("3 0 0"), "dig: {dig:#?}");

    let r = resolve(&nsd, &alice.strong, root.path());
    let json = r.ok().json();
    assert_eq!(json["routable"], "alice@example.test");
    assert_eq!(json["source"], "dns");
    assert_eq!(json["fingerprint_kind"], "udf");
    assert_eq!(
        json["openpgp"][0]["fingerprint"],
        alice.openpgp_fingerprint.as_str()
    );
    assert_eq!(json["formats"], serde_json::json!(["pgp-mime", "smime"]));
    assert_eq!(json["smime"][0]["emails"][0], "alice@example.test");

    // The prefix form and the mm-- label name the same policy.
    let prefix = run(meshmail(&alice.home).args(["address", "--form", "prefix", "--label", "mm"]))
        .ok()
        .stdout
        .trim()
        .to_owned();
    assert!(prefix.starts_with("alice@mm--"), "{prefix}");
    assert_eq!(
        resolve(&nsd, &prefix, root.path()).ok().json()["routable"],
        "alice@example.test"
    );

    let r = resolve(&nsd, &alice.openpgp_address, root.path());
    let json = r.ok().json();
    assert_eq!(json["fingerprint_kind"], "openpgp-v4");
    assert_eq!(json["source"], "dns");
    assert_eq!(
        json["openpgp"][0]["fingerprint"],
        alice.openpgp_fingerprint.as_str()
    );
}

#[test]
fn tampered_foreign_and_expired_records_are_refused() {
    let root = tempdir();
    let alice = init_account(root.path(), "alice@example.test");
    let bob = init_account(root.path(), "bob@example.test");
    let alice_lines = publish(&alice, &root.path().join("pub-alice"));
    let bob_lines = publish(&bob, &root.path().join("pub-bob"));
    let alice_txt = line_of(&alice_lines, " TXT ");
    let alice_owner = alice_txt.split_whitespace().next().unwrap();
    let bob_txt = line_of(&bob_lines, " TXT ");
    let bob_owner = bob_txt.split_whitespace().next().unwrap();
    let alice_key = line_of(&alice_lines, " OPENPGPKEY ");
    let alice_key_owner = alice_key.split_whitespace().next().unwrap();
    let bob_key = line_of(&bob_lines, " OPENPGPKEY ");
    let bob_key_owner = bob_key.split_whitespace().next().unwrap();

    let cases: Vec<(&str, Vec<String>, &str, &str)> = vec![
        (
            "changed byte in the policy",
            vec![flip_a_byte(alice_txt, 200)],
            &alice.strong,
            "signature",
        ),
        (
            "another key's policy under Alice's name",
            vec![bob_txt.replace(bob_owner, alice_owner)],
            &alice.strong,
            "another key",
        ),
        (
            "expired policy",
            vec![expired_policy_line(&alice)],
            &alice.strong,
            "expired",
        ),
        (
            "no record at all",
            vec![],
            &alice.strong,
            "no policy record",
        ),
        // A byte of the primary key: the certificate is no longer the one the address names.
        // (A changed byte inside a signature only drops that signature, as OpenPGP requires.)
        (
            "changed byte in the certificate's key",
            vec![flip_a_byte(alice_key, 40)],
            &alice.openpgp_address,
            "does not match",
        ),
        (
            "another certificate under Alice's name",
            vec![bob_key.replace(bob_key_owner, alice_key_owner)],
            &alice.openpgp_address,
            "does not match",
        ),
    ];
    for (what, lines, address, reason) in cases {
        let nsd = Nsd::start(&[(DOMAIN, lines)]);
        let r = resolve(&nsd, address, root.path());
        assert_eq!(r.code, 65, "{what}: {r:#?}");
        assert!(
            r.stdout.is_empty(),
            "{what}: nothing printed as verified: {r:#?}"
        );
        assert!(
            r.stderr.contains(reason),
            "{what}: the reason names {reason:?}: {r:#?}"
        );
    }
}

#[test]
fn stopped_nsd_is_a_temporary_failure() {
    let root = tempdir();
    let alice = init_account(root.path(), "alice@example.test");
    let lines = publish(&alice, &root.path().join("pub"));
    let mut nsd = Nsd::start(&[(DOMAIN, lines)]);
    resolve(&nsd, &alice.strong, root.path()).ok();
    nsd.stop();
    for address in [&alice.strong, &alice.openpgp_address] {
        let r = resolve(&nsd, address, root.path());
        assert_eq!(r.code, 75, "stopped NSD: {r:#?}");
        assert!(r.stderr.contains("temporarily"), "{r:#?}");
    }
}

#[test]
fn bad_addresses_exit_64() {
    let root = tempdir();
    for bad in [
        "alice@example.test.xx--mbqtw7wuggxqwihhbu3lmwedjmdj",
        "alice@example.test",
        "alice@xx--mbqt-w7wu-ggxq-wihh-bu3l-mwed.example.test.mm--mbqt-w7wu-ggxq-wihh-bu3l-mwed",
    ] {
        let r = run(meshmail(root.path()).args(["policy", "resolve", "--no-store", bad]));
        assert_eq!(r.code, 64, "{bad}: {r:#?}");
    }
}
