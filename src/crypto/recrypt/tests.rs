//! Recryption with Sequoia-made keys and messages; GnuPG-made messages are in
//! `integration/recrypt.rs`.

use super::*;
use sequoia_openpgp::parse::Parse;

/// An account certificate as meshmail makes them, and its encryption subkey (public, and with
/// its secret).
fn account() -> (sq::Cert, Key<SecretParts, UnspecifiedRole>) {
    let (cert, _) = crate::keys::generate::openpgp_cert("alice@example.test").unwrap();
    let key = encryption_subkey(&cert).unwrap();
    (cert, key)
}

fn pkesks(message: &[u8]) -> Vec<PKESK> {
    sq::PacketPile::from_bytes(message)
        .unwrap()
        .descendants()
        .filter_map(|p| match p {
            sq::Packet::PKESK(k) => Some(k.clone()),
            _ => None,
        })
        .collect()
}

#[test]
fn store_and_device_shares_together_decrypt_and_each_device_pair_is_independent() {
    let (cert, key) = account();
    let public = key.parts_as_public().clone();
    let message = crate::crypto::openpgp::encrypt(
        &[b"the plaintext"],
        &[cert.strip_secret_key_material()],
        None,
    )
    .unwrap();
    let m = extract(&key).unwrap();
    let (s1, d1) = m.split().unwrap();
    let (s2, d2) = m.split().unwrap();
    for (s, d) in [(&s1, &d1), (&s2, &d2)] {
        let out =
            decrypt_message(&message, &public, d, &mut |p| s.partial(p).ok(), 1 << 20).unwrap();
        assert_eq!(&out[..], b"the plaintext");
    }
    // Device 1's share with device 2's store share (a stolen share record) opens nothing.
    assert_eq!(
        decrypt_message(&message, &public, &d1, &mut |p| s2.partial(p).ok(), 1 << 20),
        Err(RecryptError::Unwrap)
    );
    // Without the store (revoked: its share deleted) nothing either.
    assert!(decrypt_message(&message, &public, &d1, &mut |_| None, 1 << 20).is_err());
    // The shares differ per device; neither share is the whole scalar.
    assert_ne!(*s1.to_bytes(), *s2.to_bytes());
    assert_ne!(*d1.to_bytes(), m.0.to_bytes());
    assert_ne!(*s1.to_bytes(), m.0.to_bytes());
    assert_eq!(s1.0 + d1.0, m.0);
}

#[test]
fn the_combined_secret_is_the_x25519_secret_of_the_whole_key() {
    let (cert, key) = account();
    let message =
        crate::crypto::openpgp::encrypt(&[b"x"], &[cert.strip_secret_key_material()], None)
            .unwrap();
    let pkesk = &pkesks(&message)[0];
    let (s, d) = extract(&key).unwrap().split().unwrap();
    let z = d
        .shared_secret(pkesk.esk(), &s.partial(pkesk).unwrap())
        .unwrap();
    // The whole key's X25519 with the ephemeral key, as RFC 7748 computes it.
    let fast = crate::crypto::x25519::FastDecryptor::new(&key).unwrap();
    assert!(fast.decrypt(pkesk).is_some());
    let Ciphertext::ECDH { e, .. } = pkesk.esk() else {
        panic!()
    };
    let u: [u8; 32] = e.value()[1..].try_into().unwrap();
    let sq::crypto::mpi::SecretKeyMaterial::ECDH { scalar } = (match key.optional_secret() {
        Some(sq::packet::key::SecretKeyMaterial::Unencrypted(u)) => u.map(|m| m.clone()),
        _ => panic!(),
    }) else {
        panic!()
    };
    let mut k = [0u8; 32];
    for (i, b) in scalar.value().iter().rev().enumerate() {
        k[i] = *b;
    }
    let whole = MontgomeryPoint(u).mul_clamped(k).to_bytes();
    assert_eq!(&z[..], &whole[..]);
}

#[test]
fn shares_and_points_that_cannot_be_used_are_refused() {
    assert_eq!(
        StoreShare::from_bytes(&[0xff; 32]).unwrap_err(),
        RecryptError::BadShare,
        "not canonical"
    );
    assert_eq!(
        DeviceShare::from_bytes(&[1; 31]).unwrap_err(),
        RecryptError::BadShare
    );
    let (_, key) = account();
    let (s, _) = extract(&key).unwrap().split().unwrap();
    let again = StoreShare::from_bytes(&s.to_bytes()[..]).unwrap();
    assert_eq!(again.0, s.0);
    // A point on the twist (no Edwards lift) and a point of small order (u = 0).
    let twist = (2u8..=255)
        .map(|b| {
            let mut u = [0u8; 32];
            u[0] = b;
            u
        })
        .find(|u| MontgomeryPoint(*u).to_edwards(0).is_none())
        .unwrap();
    for u in [twist, [0u8; 32]] {
        let mut e = vec![0x40];
        e.extend_from_slice(&u);
        let esk = Ciphertext::ECDH {
            e: sq::crypto::mpi::MPI::new(&e),
            key: vec![0u8; 40].into_boxed_slice(),
        };
        assert_eq!(ephemeral(&esk).unwrap_err(), RecryptError::BadPoint);
    }
    // A key that is not Cv25519 cannot be split.
    let (rsa, _) = sq::cert::CertBuilder::new()
        .set_cipher_suite(sq::cert::CipherSuite::RSA2k)
        .add_transport_encryption_subkey()
        .generate()
        .unwrap();
    let k = encryption_subkey(&rsa).unwrap();
    assert_eq!(extract(&k).unwrap_err(), RecryptError::NotCv25519);
    assert!(format!("{s:?}").contains("<secret>"), "never printed");
}
