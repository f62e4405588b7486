//! PKESK v3 packets for Cv25519 (ECDH, RFC 6637 with RFC 7748 X25519) recipients, computed with
//! aws-lc-rs.
//!
//! Why: through either of Sequoia's backends on this machine, one X25519 key agreement costs
//! more than encrypting a whole 10 KB message (nettle ~580 µs, OpenSSL 3's EVP lookup ~200 µs
//! per message, measured with `examples/seal_bench`); aws-lc-rs does it in a few tens of µs.
//! The packet is built exactly as RFC 6637 §7–8 say (and as Sequoia's own `encrypt_wrap`
//! does): KDF parameters with the recipient's fingerprint, SHA-2 KDF, AES key wrap of the
//! PKCS#5-padded session key. gpg decrypting the result is the test (integration/smtp_proxy.rs).

use aws_lc_rs::agreement::{agree_ephemeral, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use aws_lc_rs::digest::{digest, SHA256, SHA384, SHA512};
use aws_lc_rs::rand::SystemRandom;
use sequoia_openpgp as sq;
use sq::crypto::mem::Protected;
use sq::crypto::mpi::{Ciphertext, PublicKey, MPI};
use sq::packet::key::{PublicParts, UnspecifiedRole};
use sq::packet::pkesk::PKESK3;
use sq::packet::{Key, PKESK};
use sq::types::{Curve, HashAlgorithm, PublicKeyAlgorithm, SymmetricAlgorithm};

/// The PKESK for `key` wrapping `session_key` (for `sym`), or `None` when `key` is not a
/// Cv25519 ECDH key with a SHA-2 KDF (the caller then lets Sequoia do it).
pub fn pkesk(
    key: &Key<PublicParts, UnspecifiedRole>,
    sym: SymmetricAlgorithm,
    session_key: &[u8],
) -> Option<Result<PKESK, String>> {
    let PublicKey::ECDH {
        curve: Curve::Cv25519,
        q,
        hash,
        sym: kek,
    } = key.mpis()
    else {
        return None;
    };
    let kdf = match hash {
        HashAlgorithm::SHA256 => &SHA256,
        HashAlgorithm::SHA384 => &SHA384,
        HashAlgorithm::SHA512 => &SHA512,
        _ => return None,
    };
    let q = q.value();
    if q.len() != 33 || q[0] != 0x40 {
        return None;
    }
    Some(build(key, sym, session_key, &q[1..], kdf, *hash, *kek))
}

fn build(
    key: &Key<PublicParts, UnspecifiedRole>,
    sym: SymmetricAlgorithm,
    session_key: &[u8],
    recipient: &[u8],
    kdf: &'static aws_lc_rs::digest::Algorithm,
    hash: HashAlgorithm,
    kek: SymmetricAlgorithm,
) -> Result<PKESK, String> {
    let ephemeral =
        EphemeralPrivateKey::generate(&X25519, &SystemRandom::new()).map_err(|_| "X25519 key")?;
    let public = ephemeral
        .compute_public_key()
        .map_err(|_| "X25519 public key")?;
    let shared = agree_ephemeral(
        ephemeral,
        UnparsedPublicKey::new(&X25519, recipient),
        "X25519 agreement",
        |s| Ok(Protected::from(s)),
    )?;
    if shared.iter().all(|&b| b == 0) {
        return Err("X25519 gave an all-zero secret".into());
    }
    // m = sym_alg_ID || session key || checksum, PKCS#5-padded to 40 (RFC 6637 §8; always 40,
    // to hide the session key's length).
    let mut m: Vec<u8> = Vec::with_capacity(40);
    m.push(sym.into());
    m.extend_from_slice(session_key);
    let checksum = session_key
        .iter()
        .map(|&b| u16::from(b))
        .fold(0u16, u16::wrapping_add);
    m.extend_from_slice(&checksum.to_be_bytes());
    let pad = 40usize.checked_sub(m.len()).ok_or("session key too long")?;
    m.resize(40, pad as u8);
    let m = Protected::from(m);
    // Param = curve OID || 18 || 03 01 hash kek || "Anonymous Sender    " || fingerprint
    let oid = Curve::Cv25519.oid();
    let fingerprint = key.fingerprint();
    let mut param = Vec::with_capacity(1 + oid.len() + 1 + 4 + 20 + 20);
    param.push(oid.len() as u8);
    param.extend_from_slice(oid);
    param.push(PublicKeyAlgorithm::ECDH.into());
    param.extend_from_slice(&[3, 1, hash.into(), kek.into()]);
    param.extend_from_slice(b"Anonymous Sender    ");
    param.extend_from_slice(fingerprint.as_bytes());
    // Z = Hash(00 00 00 01 || S || Param), cut to the KEK size.
    let mut input = Vec::with_capacity(4 + 32 + param.len());
    input.extend_from_slice(&[0, 0, 0, 1]);
    input.extend_from_slice(&shared);
    input.extend_from_slice(&param);
    let z = digest(kdf, &input);
    zeroize::Zeroize::zeroize(&mut input);
    let kek_len = kek.key_size().map_err(|e| e.to_string())?;
    let z = Protected::from(z.as_ref().get(..kek_len).ok_or("KDF output too short")?);
    let wrapped = sq::crypto::ecdh::aes_key_wrap(kek, &z, &m).map_err(|e| e.to_string())?;
    let mut e = Vec::with_capacity(33);
    e.push(0x40);
    e.extend_from_slice(public.as_ref());
    let ciphertext = Ciphertext::ECDH {
        e: MPI::new(&e),
        key: wrapped.into_boxed_slice(),
    };
    let pkesk = PKESK3::new(Some(key.keyid()), PublicKeyAlgorithm::ECDH, ciphertext)
        .map_err(|e| e.to_string())?;
    Ok(pkesk.into())
}

/// The other direction: a Cv25519 decryption key held as an aws-lc-rs X25519 private key, so
/// that opening a message costs one fast key agreement (Sequoia's OpenSSL path costs several
/// times more, like encryption above).
pub struct FastDecryptor {
    private: aws_lc_rs::agreement::PrivateKey,
    public: Key<PublicParts, UnspecifiedRole>,
}

impl FastDecryptor {
    /// `None` unless `key` is an unencrypted Cv25519 ECDH key with a SHA-2 KDF.
    pub fn new<R: sq::packet::key::KeyRole>(
        key: &Key<sq::packet::key::SecretParts, R>,
    ) -> Option<FastDecryptor> {
        use sq::crypto::mpi::SecretKeyMaterial as S;
        use sq::packet::key::SecretKeyMaterial;
        let PublicKey::ECDH {
            curve: Curve::Cv25519,
            hash: HashAlgorithm::SHA256 | HashAlgorithm::SHA384 | HashAlgorithm::SHA512,
            ..
        } = key.mpis()
        else {
            return None;
        };
        let SecretKeyMaterial::Unencrypted(secret) = key.optional_secret()? else {
            return None;
        };
        // OpenPGP stores the X25519 scalar big-endian; RFC 7748 wants it little-endian.
        let scalar = secret.map(|m| match m {
            S::ECDH { scalar } => {
                let v = scalar.value();
                (v.len() <= 32).then(|| {
                    let mut le = zeroize::Zeroizing::new([0u8; 32]);
                    for (i, b) in v.iter().rev().enumerate() {
                        le[i] = *b;
                    }
                    le
                })
            }
            _ => None,
        })?;
        let private =
            aws_lc_rs::agreement::PrivateKey::from_private_key(&X25519, &scalar[..]).ok()?;
        Some(FastDecryptor {
            private,
            public: key.parts_as_public().role_as_unspecified().clone(),
        })
    }

    /// The session key in `pkesk` (v3), or `None` when it is not for this key or malformed.
    pub fn decrypt(
        &self,
        pkesk: &PKESK,
    ) -> Option<(Option<SymmetricAlgorithm>, sq::crypto::SessionKey)> {
        let Ciphertext::ECDH { e, .. } = pkesk.esk() else {
            return None;
        };
        let e = e.value();
        if pkesk.version() != 3 || e.len() != 33 || e[0] != 0x40 {
            return None;
        }
        let shared = aws_lc_rs::agreement::agree(
            &self.private,
            UnparsedPublicKey::new(&X25519, &e[1..]),
            (),
            |s| Ok(Protected::from(s)),
        )
        .ok()?;
        // RFC 6637 §8: KDF, AES key unwrap and unpadding, as Sequoia does them.
        let m = sq::crypto::ecdh::decrypt_unwrap(&self.public, &shared, pkesk.esk(), None).ok()?;
        // m = symmetric algorithm || session key || two-octet checksum
        let m: &[u8] = &m;
        if m.len() < 3 {
            return None;
        }
        let key = &m[1..m.len() - 2];
        let checksum = key
            .iter()
            .map(|&b| u16::from(b))
            .fold(0u16, u16::wrapping_add);
        if checksum.to_be_bytes() != m[m.len() - 2..] {
            return None;
        }
        Some((Some(SymmetricAlgorithm::from(m[0])), key.into()))
    }
}
