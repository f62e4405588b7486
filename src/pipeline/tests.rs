//! The pipeline's promises, without servers: who shares which copy, and that no strong
//! recipient is ever in a plaintext copy (Bcc, escrow, mixed, client-sealed, same mailbox).

use super::classify::{Classified, Treatment};
use super::plan::{plan_copies, Plan, PlanError, SenderKeys};
use crate::address::{Fingerprint, Form, Label, StrongAddress};
use crate::crypto::seal::SealError;
use crate::policy::verify::verified_for_tests;
use sequoia_openpgp as sq;
use sq::cert::{CertBuilder, CipherSuite};

fn cert(uid: &str) -> sq::Cert {
    CertBuilder::general_purpose(Some(uid))
        .set_cipher_suite(CipherSuite::Cv25519)
        .generate()
        .map(|(c, _)| c.strip_secret_key_material())
        .unwrap()
}

/// A strong recipient whose OpenPGP-fingerprint address names `cert`, with `escrow` keys.
fn strong(routable: &str, cert: &sq::Cert, escrow: Vec<sq::Cert>) -> Classified {
    let fpr: [u8; 20] = cert.fingerprint().as_bytes().try_into().unwrap();
    let address = StrongAddress::new(
        routable,
        Fingerprint::OpenPgpV4(fpr),
        Label::Xx,
        Form::Suffix,
    )
    .unwrap();
    let verified = verified_for_tests(&address, vec![cert.clone()], escrow);
    Classified::strong_for_tests(&address.to_string(), verified)
}

fn message(to: &str, cc: &str) -> Vec<u8> {
    format!("From: alice@example.test\r\nTo: {to}\r\nCc: {cc}\r\nSubject: Secret plans\r\nMessage-ID: <1@example.test>\r\n\r\nthe secret body\r\n").into_bytes()
}

fn is_plain_copy(bytes: &[u8]) -> bool {
    String::from_utf8_lossy(bytes).contains("the secret body")
}

#[test]
fn a_plain_recipient_and_a_strong_one_get_separate_treatments() {
    let bob_cert = cert("bob@example.test");
    let rcpts = vec![
        strong("bob@example.test", &bob_cert, vec![]),
        Classified::plain_for_tests("carol@example.test"),
    ];
    let msg = message(rcpts[0].written(), "carol@example.test");
    let copies = plan_copies(&msg, &rcpts, &SenderKeys::default()).unwrap();
    assert_eq!(copies.len(), 2);
    for c in &copies {
        let plain = is_plain_copy(c.payload(&msg).bytes());
        assert_eq!(plain, c.recipients() == [1], "{:?}", c.recipients());
        assert_eq!(plain, c.is_plain());
    }
}

#[test]
fn a_plain_address_of_a_strong_recipients_mailbox_gets_the_strong_treatment() {
    let bob_cert = cert("bob@example.test");
    let rcpts = vec![
        strong("bob@example.test", &bob_cert, vec![]),
        Classified::plain_for_tests("Bob@Example.test"),
    ];
    let msg = message(rcpts[0].written(), "bob@example.test");
    let copies = plan_copies(&msg, &rcpts, &SenderKeys::default()).unwrap();
    assert_eq!(copies.len(), 1, "one encrypted copy for the one mailbox");
    assert_eq!(copies[0].recipients(), [0, 1]);
    assert!(!copies[0].is_plain());
    assert!(!is_plain_copy(copies[0].payload(&msg).bytes()));
}

#[test]
fn a_bcc_gets_a_copy_of_its_own_and_escrow_only_its_own_copy() {
    let bob_cert = cert("bob@example.test");
    let erin_cert = cert("erin@example.test");
    let escrow = cert("escrow@example.test");
    let rcpts = vec![
        strong("bob@example.test", &bob_cert, vec![]),
        strong("erin@example.test", &erin_cert, vec![escrow.clone()]),
        strong("dave@example.test", &cert("dave@example.test"), vec![]),
    ];
    // Dave is not in To/Cc: a Bcc.
    let msg = message(rcpts[0].written(), rcpts[1].written());
    let plan = Plan::new(&msg, &rcpts).unwrap();
    let groups: Vec<Vec<usize>> = (0..plan.len())
        .map(|n| plan.recipients(n).to_vec())
        .collect();
    assert_eq!(groups.len(), 3, "{groups:?}");
    assert!(groups.contains(&vec![0]));
    assert!(groups.contains(&vec![1]));
    assert!(groups.contains(&vec![2]));
    let copies = plan_copies(&msg, &rcpts, &SenderKeys::default()).unwrap();
    for c in copies {
        let bytes = c.payload(&msg).bytes();
        assert!(!is_plain_copy(bytes));
        let armored = crate::mime::encrypted::parse_pgp_mime(bytes)
            .unwrap()
            .armored;
        let to = crate::crypto::client_sealed::encrypted_packets(armored).unwrap();
        let escrowed = crate::crypto::openpgp::addressed_to(&to, &escrow);
        assert_eq!(
            escrowed,
            c.recipients() == [1],
            "escrow only in Erin's copy"
        );
    }
}

#[test]
fn a_client_sealed_message_missing_the_escrow_key_is_refused() {
    let bob_cert = cert("bob@example.test");
    let escrow = cert("escrow@example.test");
    let rcpts = vec![strong("bob@example.test", &bob_cert, vec![escrow])];
    // Encrypted by "the client" to Bob only.
    let policy = sq::policy::StandardPolicy::new();
    let keys: Vec<_> = bob_cert
        .keys()
        .with_policy(&policy, None)
        .for_transport_encryption()
        .collect();
    let mut binary = Vec::new();
    let m = sq::serialize::stream::Message::new(&mut binary);
    let m = sq::serialize::stream::Encryptor::for_recipients(m, keys)
        .build()
        .unwrap();
    let mut w = sq::serialize::stream::LiteralWriter::new(m)
        .build()
        .unwrap();
    std::io::Write::write_all(&mut w, b"secret").unwrap();
    w.finalize().unwrap();
    let mut armor = sq::armor::Writer::new(Vec::new(), sq::armor::Kind::Message).unwrap();
    std::io::Write::write_all(&mut armor, &binary).unwrap();
    let armored = String::from_utf8(armor.finalize().unwrap())
        .unwrap()
        .replace('\n', "\r\n");
    let msg = format!(
        "From: alice@example.test\r\nTo: {}\r\nMIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"B\"\r\n\r\n--B\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--B\r\nContent-Type: application/octet-stream\r\n\r\n{armored}\r\n--B--\r\n",
        rcpts[0].written()
    );
    let e = Plan::new(msg.as_bytes(), &rcpts).unwrap_err();
    assert!(
        matches!(e, PlanError::Seal(SealError::NotEncryptedTo(_))),
        "{e}"
    );
}

#[test]
fn only_classification_grants_plaintext() {
    // The only plain treatment outside classify.rs comes from a plain address.
    let c = Classified::plain_for_tests("carol@example.test");
    assert!(matches!(c.treatment(), Treatment::Plain(_)));
    assert!(!c.is_strong());
    let s = strong("bob@example.test", &cert("bob@example.test"), vec![]);
    assert!(s.is_strong() && s.policy().is_some());
    assert!(matches!(s.treatment(), Treatment::Encrypt(_)));
}
