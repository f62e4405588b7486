//! The private item on the wire, and the partials of real PGP/MIME messages.

use super::*;
use crate::crypto::recrypt::{decrypt_message, encryption_subkey, extract};

#[test]
fn the_item_is_stripped_from_fetch_commands_only() {
    let cases: [(&[u8], Option<&[u8]>); 8] = [
        (
            b"a1 UID FETCH 5 (BODY.PEEK[] X-MESH-RECRYPT)\r\n",
            Some(b"a1 UID FETCH 5 (BODY.PEEK[])\r\n"),
        ),
        (
            b"a2 uid fetch 1:* (x-mesh-recrypt BODY.PEEK[] UID)\r\n",
            Some(b"a2 uid fetch 1:* (BODY.PEEK[] UID)\r\n"),
        ),
        (
            b"a3 FETCH 2 (X-MESH-RECRYPT)\r\n",
            Some(b"a3 FETCH 2 (UID)\r\n"),
        ),
        (
            b"a4 FETCH 2 X-MESH-RECRYPT\r\n",
            Some(b"a4 FETCH 2 UID\r\n"),
        ),
        (b"a5 UID FETCH 5 (BODY.PEEK[] X-MESH-RECRYPTED)\r\n", None),
        (b"a6 SEARCH TEXT X-MESH-RECRYPT\r\n", None),
        // Nothing else on the line changes (a fuzzer found "()" elsewhere rewritten).
        (
            b"a7 FETCH 1 (BODY.PEEK[HEADER.FIELDS (X-A  B)] X-MESH-RECRYPT ( ))\r\n",
            Some(b"a7 FETCH 1 (BODY.PEEK[HEADER.FIELDS (X-A  B)] ( ))\r\n"),
        ),
        (
            b"a8 FETCH 1 (X-MESH-RECRYPT BODY[] ())\r\n",
            Some(b"a8 FETCH 1 (BODY[] ())\r\n"),
        ),
    ];
    for (line, want) in cases {
        assert_eq!(
            strip_from_command(line).as_deref(),
            want,
            "{}",
            String::from_utf8_lossy(line)
        );
    }
}

#[test]
fn a_device_adds_the_item_to_its_fetch_and_the_store_takes_it_out_again() {
    let cases: [(&[u8], Option<&[u8]>); 10] = [
        (
            b"m1 UID FETCH 5 (BODY.PEEK[] FLAGS)\r\n",
            Some(b"m1 UID FETCH 5 (X-MESH-RECRYPT BODY.PEEK[] FLAGS)\r\n"),
        ),
        (
            b"m2 FETCH 1:* (UID BODY.PEEK[]) (CHANGEDSINCE 7)\r\n",
            Some(b"m2 FETCH 1:* (X-MESH-RECRYPT UID BODY.PEEK[]) (CHANGEDSINCE 7)\r\n"),
        ),
        (
            b"m3 UID FETCH 1:* BODY.PEEK[]\r\n",
            Some(b"m3 UID FETCH 1:* (BODY.PEEK[] X-MESH-RECRYPT)\r\n"),
        ),
        // A single item with modifiers, a literal, something else: left alone.
        (b"m4 UID FETCH 1 BODY.PEEK[] (CHANGEDSINCE 7)\r\n", None),
        (b"m5 FETCH 1 (BODY.PEEK[HEADER.FIELDS {3}\r\n", None),
        (b"m6 SEARCH ALL\r\n", None),
        (b"m7 UID FETCH 1 (X-MESH-RECRYPT)\r\n", None),
        (b"m8 UID STORE 1 (FLAGS)\r\n", None),
        // Found by the fuzzer: the store reads a tab as a separator, so it would not take
        // out what was added after one.
        (b"a\t1 UID FETCH 5 (FLAGS\r\n", None),
        (b" FETCH 2 BODY[]\r\n", None),
    ];
    for (line, want) in cases {
        let added = add_to_fetch(line);
        assert_eq!(added.as_deref(), want, "{}", String::from_utf8_lossy(line));
        if let Some(added) = added {
            assert!(mentions(&added));
            // What the store sends on asks for what the device's client asked for.
            let stripped = strip_from_command(&added).expect("the store strips it");
            let words = |b: &[u8]| -> Vec<String> {
                String::from_utf8_lossy(b)
                    .replace(['(', ')'], " ")
                    .split_ascii_whitespace()
                    .map(str::to_owned)
                    .collect()
            };
            assert_eq!(words(&stripped), words(line));
        }
    }
}

#[test]
fn answers_round_trip_and_other_devices_partials_are_not_taken() {
    let p = Partial([7u8; 32]);
    let q = Partial([9u8; 32]);
    let text = format!(
        "* 1 FETCH (UID 5{})\r\n",
        format("laptop", &Answer::Partials(vec![(0, p), (3, q)]))
    );
    assert_eq!(
        parse(&text, "laptop"),
        Some(Answer::Partials(vec![(0, p), (3, q)]))
    );
    assert_eq!(parse(&text, "phone"), Some(Answer::Partials(vec![])));
    for a in [Answer::NotForAccount, Answer::RefusedPoint] {
        assert_eq!(
            parse(
                &format!("* 1 FETCH (UID 5{})", format("laptop", &a)),
                "laptop"
            ),
            Some(a)
        );
    }
    assert_eq!(
        format("la\"p)top", &Answer::NotForAccount),
        " X-MESH-RECRYPT NIL"
    );
    assert!(format("la\"p)top", &Answer::Partials(vec![(0, p)])).contains("(\"laptop\" 0 "));
    assert_eq!(parse("* 1 FETCH (UID 5)", "laptop"), None);
    assert_eq!(
        parse(
            "* 1 FETCH (X-MESH-RECRYPT ((\"laptop\" x \"AA\")))",
            "laptop"
        ),
        None
    );
}

#[test]
fn partials_from_a_stored_pgp_mime_message_open_it_with_the_device_share() {
    let (cert, _) = crate::keys::generate::openpgp_cert("alice@example.test").unwrap();
    let (other, _) = crate::keys::generate::openpgp_cert("bob@example.test").unwrap();
    let key = encryption_subkey(&cert).unwrap();
    let public = key.parts_as_public().clone();
    let (store, device) = extract(&key).unwrap().split().unwrap();
    let public_certs = [
        other.strip_secret_key_material(),
        cert.strip_secret_key_material(),
    ];
    let request = crate::crypto::seal::SealRequest::PgpMime {
        recipients: public_certs.to_vec(),
        signer: None,
    };
    let stored = crate::crypto::seal::seal(
        b"From: a@x\r\nTo: alice@example.test\r\nSubject: s\r\n\r\nthe secret\r\n",
        &request,
    )
    .unwrap();
    let answer = partials(stored.bytes(), &public.fingerprint(), &store);
    let Answer::Partials(list) = &answer else {
        panic!("{answer:?}");
    };
    assert_eq!(list.len(), 1, "only alice's PKESK");
    assert_eq!(list[0].0, 1, "the second PKESK");
    // The device, given the answer as it travels, opens the message.
    let wire = format!("* 1 FETCH (UID 5{})", format("laptop", &answer));
    let Some(Answer::Partials(got)) = parse(&wire, "laptop") else {
        panic!()
    };
    let armored = crate::mime::encrypted::parse_pgp_mime(stored.bytes())
        .unwrap()
        .armored
        .to_vec();
    let mut dearmored = Vec::new();
    {
        use std::io::Read;
        let mut r = sq::armor::Reader::from_bytes(
            &armored,
            sq::armor::ReaderMode::Tolerant(Some(sq::armor::Kind::Message)),
        );
        r.read_to_end(&mut dearmored).unwrap();
    }
    let (idx, part) = got[0];
    let pkesks = leading_pkesks(&dearmored);
    let out = decrypt_message(
        &dearmored,
        &public,
        &device,
        &mut |p| (p == &pkesks[idx]).then_some(part),
        1 << 20,
    )
    .unwrap();
    assert!(String::from_utf8_lossy(&out).contains("the secret"));
    // Not encrypted to the account, or not encrypted at all.
    let to_bob = crate::crypto::seal::seal(
        b"Subject: s\r\n\r\nx\r\n",
        &crate::crypto::seal::SealRequest::PgpMime {
            recipients: vec![public_certs[0].clone()],
            signer: None,
        },
    )
    .unwrap();
    assert_eq!(
        partials(to_bob.bytes(), &public.fingerprint(), &store),
        Answer::NotForAccount
    );
    assert_eq!(
        partials(
            b"Subject: plain\r\n\r\nhello\r\n",
            &public.fingerprint(),
            &store
        ),
        Answer::NotForAccount
    );
}

proptest::proptest! {
    #[test]
    fn any_bytes_never_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2000)) {
        let _ = strip_from_command(&bytes);
        let _ = parse(&String::from_utf8_lossy(&bytes), "laptop");
        let _ = armor_prefix(&bytes);
        let _ = leading_pkesks(&bytes);
    }
}

#[test]
fn mentions_and_masks_the_item_in_any_case_anywhere() {
    let line = b"f FETCH 1 (x-Mesh-Recrypt BODY[]X-MESH-RECRYPTX-MESH-RECRYPT)";
    assert!(mentions(line));
    let masked = mask(line);
    assert_eq!(masked.len(), line.len());
    assert!(!mentions(&masked), "{}", String::from_utf8_lossy(&masked));
    assert_eq!(
        masked,
        b"f FETCH 1 (X-MESH-REFUSED BODY[]X-MESH-REFUSEDX-MESH-REFUSED)".to_vec()
    );
    assert!(!mentions(b"f FETCH 1 (X-MESH-RECRYP)"));
}
