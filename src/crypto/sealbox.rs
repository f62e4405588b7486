//! A small secret sealed to an X25519 public key (an ephemeral key agreement, then
//! AES-256-GCM), bound to what it is for by associated data. Used for a device's share sealed
//! to its enrolment key and a store share sealed to the store's key: only the holder of the
//! private key opens it, and a sealed value moved into another context does not open.
//!
//! Format: ephemeral public key (32) ‖ nonce (12) ‖ ciphertext ‖ tag (16).

use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::agreement::{self, EphemeralPrivateKey, PrivateKey, UnparsedPublicKey, X25519};
use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::rand::SystemRandom;
use zeroize::Zeroizing;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealboxError {
    #[error("no randomness")]
    Random,
    #[error("not a valid X25519 key")]
    BadKey,
    #[error("the sealed value does not open with this key in this context")]
    DoesNotOpen,
}

/// Overhead of a sealed value over its plaintext.
pub const OVERHEAD: usize = 32 + 12 + 16;

/// Seals `plain` to `public` for `context` (a fixed label) and `aad` (what it is bound to).
pub fn seal(
    public: &[u8; 32],
    context: &str,
    aad: &[u8],
    plain: &[u8],
) -> Result<Vec<u8>, SealboxError> {
    let rng = SystemRandom::new();
    let ephemeral =
        EphemeralPrivateKey::generate(&X25519, &rng).map_err(|_| SealboxError::Random)?;
    let eph_public = ephemeral
        .compute_public_key()
        .map_err(|_| SealboxError::BadKey)?;
    let eph_public: [u8; 32] = eph_public
        .as_ref()
        .try_into()
        .map_err(|_| SealboxError::BadKey)?;
    let key = agreement::agree_ephemeral(
        ephemeral,
        UnparsedPublicKey::new(&X25519, public),
        SealboxError::BadKey,
        |z| Ok(aead_key(context, &eph_public, public, z)),
    )??;
    let mut nonce = [0u8; 12];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| SealboxError::Random)?;
    let mut body = Zeroizing::new(plain.to_vec());
    key.seal_in_place_append_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut *body,
    )
    .map_err(|_| SealboxError::BadKey)?;
    let mut out = eph_public.to_vec();
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&body);
    Ok(out)
}

/// Opens what [`seal`] made, with the private key (32 raw bytes).
pub fn open(
    private: &[u8],
    context: &str,
    aad: &[u8],
    sealed: &[u8],
) -> Result<Zeroizing<Vec<u8>>, SealboxError> {
    if sealed.len() < OVERHEAD {
        return Err(SealboxError::DoesNotOpen);
    }
    let (eph, rest) = sealed.split_at(32);
    let (nonce, body) = rest.split_at(12);
    let private =
        PrivateKey::from_private_key(&X25519, private).map_err(|_| SealboxError::BadKey)?;
    let public = public_of(&private)?;
    let key = agreement::agree(
        &private,
        UnparsedPublicKey::new(&X25519, eph),
        SealboxError::DoesNotOpen,
        |z| Ok(aead_key(context, eph, &public, z)),
    )??;
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| SealboxError::DoesNotOpen)?;
    let mut body = Zeroizing::new(body.to_vec());
    let len = key
        .open_in_place(nonce, Aad::from(aad), &mut body)
        .map_err(|_| SealboxError::DoesNotOpen)?
        .len();
    body.truncate(len);
    Ok(body)
}

/// A new X25519 private key (32 raw bytes) and its public key.
pub fn generate() -> Result<(Zeroizing<[u8; 32]>, [u8; 32]), SealboxError> {
    let mut private = Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(&mut private[..]).map_err(|_| SealboxError::Random)?;
    let public = public_of_bytes(&private[..])?;
    Ok((private, public))
}

/// The public key of a private key given as 32 raw bytes.
pub fn public_of_bytes(private: &[u8]) -> Result<[u8; 32], SealboxError> {
    let private =
        PrivateKey::from_private_key(&X25519, private).map_err(|_| SealboxError::BadKey)?;
    public_of(&private)
}

fn public_of(private: &PrivateKey) -> Result<[u8; 32], SealboxError> {
    private
        .compute_public_key()
        .map_err(|_| SealboxError::BadKey)?
        .as_ref()
        .try_into()
        .map_err(|_| SealboxError::BadKey)
}

/// SHA-256 over the context, both public keys and the X25519 secret.
fn aead_key(
    context: &str,
    eph_public: &[u8],
    public: &[u8],
    z: &[u8],
) -> Result<LessSafeKey, SealboxError> {
    let mut input = Zeroizing::new(context.as_bytes().to_vec());
    input.extend_from_slice(eph_public);
    input.extend_from_slice(public);
    input.extend_from_slice(z);
    let k = Zeroizing::new(digest(&SHA256, &input).as_ref().to_vec());
    UnboundKey::new(&AES_256_GCM, &k)
        .map(LessSafeKey::new)
        .map_err(|_| SealboxError::BadKey)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_only_with_its_key_context_and_binding() {
        let (private, public) = generate().unwrap();
        let sealed = seal(&public, "ctx", b"bound", b"secret share").unwrap();
        assert_eq!(sealed.len(), b"secret share".len() + OVERHEAD);
        assert_eq!(
            &open(&private[..], "ctx", b"bound", &sealed).unwrap()[..],
            b"secret share"
        );
        let (other, _) = generate().unwrap();
        assert_eq!(
            open(&other[..], "ctx", b"bound", &sealed),
            Err(SealboxError::DoesNotOpen)
        );
        assert!(open(&private[..], "other", b"bound", &sealed).is_err());
        assert!(open(&private[..], "ctx", b"elsewhere", &sealed).is_err());
        let mut flipped = sealed.clone();
        flipped[40] ^= 1;
        assert!(open(&private[..], "ctx", b"bound", &flipped).is_err());
        assert!(open(&private[..], "ctx", b"bound", &sealed[..20]).is_err());
    }
}
