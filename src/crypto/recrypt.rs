//! Recryption by key splitting (mesh-formats.md §4): the account publishes one ordinary
//! Cv25519 encryption key; its scalar is split into a share per device and a matching share the
//! store keeps. Neither alone can decrypt. For each message the store computes a *partial* from
//! the message's ephemeral key and its share; the device completes the X25519 shared secret with
//! its own share and unwraps the session key as any OpenPGP implementation would.
//!
//! The arithmetic is done on the Edwards form (curve25519-dalek), on the prime-order part of the
//! ephemeral point: `Q = 8·lift(u_E)`, `m = clamp(k)/8`, `m = s_i + d_i (mod ℓ)`, so
//! `u(s_i·Q + d_i·Q) = u(m·8·lift(u_E)) = X25519(k, u_E)`. Splitting `clamp(k)` itself would give
//! wrong results for points with a torsion component.
//!
//! Types make misuse hard: only [`extract`] makes an [`AccountScalar`] (the whole secret, held
//! on the admin device only while splitting), only [`AccountScalar::split`] makes a matching
//! [`StoreShare`] and [`DeviceShare`]; all three are zeroized on drop and never printed.

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::montgomery::MontgomeryPoint;
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::IsIdentity;
use sequoia_openpgp as sq;
use sq::crypto::mem::Protected;
use sq::crypto::mpi::{Ciphertext, PublicKey};
use sq::crypto::SessionKey;
use sq::packet::key::{KeyRole, PublicParts, SecretParts, UnspecifiedRole};
use sq::packet::{Key, PKESK};
use sq::types::Curve;
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RecryptError {
    #[error("not a Cv25519 (X25519) encryption key")]
    NotCv25519,
    #[error("the secret key is not available (locked or absent)")]
    NoSecret,
    #[error("the secret does not match the public key")]
    Mismatch,
    #[error("a share is 32 bytes holding a canonical scalar")]
    BadShare,
    #[error("the message's ephemeral key is not a usable curve point")]
    BadPoint,
    #[error("the shares do not belong together, or the message is not for this key")]
    Unwrap,
}

/// The account key's scalar as it is split: `m = clamp(k) / 8`. Only [`extract`] makes one.
pub struct AccountScalar(Scalar);

/// The store's share `s_i` of one device.
pub struct StoreShare(Scalar);

/// A device's share `d_i`.
pub struct DeviceShare(Scalar);

/// What the store answers for one message and one device: `s_i · Q`, a compressed Edwards
/// point. Not secret on its own, but only useful to the device holding `d_i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Partial(pub [u8; 32]);

macro_rules! secret_scalar {
    ($t:ident) => {
        impl Drop for $t {
            fn drop(&mut self) {
                self.0.zeroize();
            }
        }
        impl std::fmt::Debug for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($t), "(<secret>)"))
            }
        }
    };
}
secret_scalar!(AccountScalar);
secret_scalar!(StoreShare);
secret_scalar!(DeviceShare);

macro_rules! share_bytes {
    ($t:ident) => {
        impl $t {
            /// The 32 little-endian bytes of the share (to be stored encrypted).
            pub fn to_bytes(&self) -> Zeroizing<[u8; 32]> {
                Zeroizing::new(self.0.to_bytes())
            }

            /// A share from its bytes; only a canonical scalar (below ℓ) is taken.
            pub fn from_bytes(bytes: &[u8]) -> Result<$t, RecryptError> {
                let arr: [u8; 32] = bytes.try_into().map_err(|_| RecryptError::BadShare)?;
                let arr = Zeroizing::new(arr);
                Option::<Scalar>::from(Scalar::from_canonical_bytes(*arr))
                    .map($t)
                    .ok_or(RecryptError::BadShare)
            }
        }
    };
}
share_bytes!(StoreShare);
share_bytes!(DeviceShare);

/// The account certificate's live encryption subkey with its secret (the key a split divides).
pub fn encryption_subkey(cert: &sq::Cert) -> Option<Key<SecretParts, UnspecifiedRole>> {
    let policy = sq::policy::StandardPolicy::new();
    // Not a revoked one (a rekey supersedes the old subkey); the newest when several live.
    cert.keys()
        .with_policy(&policy, None)
        .secret()
        .alive()
        .revoked(false)
        .for_transport_encryption()
        .max_by_key(|k| k.key().creation_time())
        .map(|k| k.key().clone().role_into_unspecified())
}

/// Takes the scalar of a Cv25519 encryption (sub)key with its secret: OpenPGP v4 stores the
/// native X25519 key big-endian in an MPI (reversed, left-padded to 32 bytes); checked against
/// the public key before anything is split.
pub fn extract<R: KeyRole>(key: &Key<SecretParts, R>) -> Result<AccountScalar, RecryptError> {
    use sq::crypto::mpi::SecretKeyMaterial as S;
    use sq::packet::key::SecretKeyMaterial;
    let PublicKey::ECDH {
        curve: Curve::Cv25519,
        q,
        ..
    } = key.mpis()
    else {
        return Err(RecryptError::NotCv25519);
    };
    let public = q.value();
    if public.len() != 33 || public[0] != 0x40 {
        return Err(RecryptError::NotCv25519);
    }
    let SecretKeyMaterial::Unencrypted(secret) =
        key.optional_secret().ok_or(RecryptError::NoSecret)?
    else {
        return Err(RecryptError::NoSecret);
    };
    let k: Zeroizing<[u8; 32]> = secret
        .map(|m| match m {
            S::ECDH { scalar } => {
                let v = scalar.value();
                (v.len() <= 32).then(|| {
                    let mut le = Zeroizing::new([0u8; 32]);
                    for (i, b) in v.iter().rev().enumerate() {
                        le[i] = *b;
                    }
                    le
                })
            }
            _ => None,
        })
        .ok_or(RecryptError::NotCv25519)?;
    if MontgomeryPoint::mul_base_clamped(*k).to_bytes()[..] != public[1..] {
        return Err(RecryptError::Mismatch);
    }
    let mut clamped = k.clone();
    clamped[0] &= 248;
    clamped[31] &= 127;
    clamped[31] |= 64;
    // m = clamp(k) / 8: a right shift by three bits of the little-endian integer (exact,
    // since clamping cleared the low bits; m < 2^252 < ℓ).
    let mut m = Zeroizing::new([0u8; 32]);
    for i in 0..32 {
        let high = clamped.get(i + 1).copied().unwrap_or(0);
        m[i] = (clamped[i] >> 3) | (high << 5);
    }
    Option::<Scalar>::from(Scalar::from_canonical_bytes(*m))
        .map(AccountScalar)
        .ok_or(RecryptError::Mismatch)
}

impl AccountScalar {
    /// A fresh pair of shares for one device: `s` uniformly random mod ℓ, `d = m − s`. Each
    /// device gets its own pair, so deleting one store share revokes that device only.
    pub fn split(&self) -> Result<(StoreShare, DeviceShare), RecryptError> {
        let mut wide = Zeroizing::new([0u8; 64]);
        aws_lc_rs::rand::fill(&mut wide[..]).map_err(|_| RecryptError::BadShare)?;
        let s = Scalar::from_bytes_mod_order_wide(&wide);
        let d = self.0 - s;
        Ok((StoreShare(s), DeviceShare(d)))
    }
}

/// `Q = 8 · lift(u_E)` for the ephemeral key of a Cv25519 PKESK: v3 (`0x40 || u`) or v6
/// (X25519, 32 raw bytes). A point on the twist, or one of small order, is refused.
fn ephemeral(esk: &Ciphertext) -> Result<EdwardsPoint, RecryptError> {
    let u: [u8; 32] = match esk {
        Ciphertext::ECDH { e, .. } => {
            let e = e.value();
            if e.len() != 33 || e[0] != 0x40 {
                return Err(RecryptError::BadPoint);
            }
            e[1..].try_into().map_err(|_| RecryptError::BadPoint)?
        }
        Ciphertext::X25519 { e, .. } => **e,
        _ => return Err(RecryptError::NotCv25519),
    };
    let q = MontgomeryPoint(u)
        .to_edwards(0)
        .ok_or(RecryptError::BadPoint)?
        .mul_by_cofactor();
    if q.is_identity() {
        return Err(RecryptError::BadPoint);
    }
    Ok(q)
}

impl StoreShare {
    /// The store's part for one message: `s_i · Q`, from the PKESK in the bytes the mail store
    /// returned.
    pub fn partial(&self, pkesk: &PKESK) -> Result<Partial, RecryptError> {
        let q = ephemeral(pkesk.esk())?;
        Ok(Partial((q * self.0).compress().to_bytes()))
    }
}

impl DeviceShare {
    /// The X25519 shared secret `Z = u(P_i + d_i · Q)` of a ciphertext, given the store's part.
    fn shared_secret(
        &self,
        esk: &Ciphertext,
        partial: &Partial,
    ) -> Result<Protected, RecryptError> {
        let q = ephemeral(esk)?;
        let p = CompressedEdwardsY(partial.0)
            .decompress()
            .ok_or(RecryptError::BadPoint)?;
        let z = Zeroizing::new((p + q * self.0).to_montgomery().to_bytes());
        if z.iter().all(|b| *b == 0) {
            return Err(RecryptError::BadPoint);
        }
        Ok(Protected::from(&z[..]))
    }

    /// A Sequoia [`sq::crypto::Decryptor`] for `public` (the account's encryption subkey) that
    /// uses this share and the store's `partial` for one PKESK.
    pub fn decryptor<'a>(
        &'a self,
        public: &Key<PublicParts, UnspecifiedRole>,
        partial: Partial,
    ) -> SplitDecryptor<'a> {
        SplitDecryptor {
            public: public.clone(),
            share: self,
            partial,
        }
    }
}

/// Decrypts a session key with a device share and the store's partial, as Sequoia's
/// `PKESK::decrypt` asks a key pair to.
pub struct SplitDecryptor<'a> {
    public: Key<PublicParts, UnspecifiedRole>,
    share: &'a DeviceShare,
    partial: Partial,
}

impl sq::crypto::Decryptor for SplitDecryptor<'_> {
    fn public(&self) -> &Key<PublicParts, UnspecifiedRole> {
        &self.public
    }

    fn decrypt(
        &mut self,
        ciphertext: &Ciphertext,
        _plaintext_len: Option<usize>,
    ) -> sq::Result<SessionKey> {
        let z = self.share.shared_secret(ciphertext, &self.partial)?;
        // RFC 6637 §8 (KDF, AES key unwrap, unpadding), exactly as for a whole key.
        sq::crypto::ecdh::decrypt_unwrap(&self.public, &z, ciphertext, None)
    }
}

/// Whether `pkesk` may be for `key`: its key ID, or the wildcard of a hidden recipient.
pub fn addressed_to(pkesk: &PKESK, key: &Key<PublicParts, UnspecifiedRole>) -> bool {
    addressed_to_fingerprint(pkesk, &key.fingerprint())
}

/// [`addressed_to`] by the key's fingerprint alone (all the store knows of a subkey: the
/// record names it).
pub fn addressed_to_fingerprint(pkesk: &PKESK, fingerprint: &sq::Fingerprint) -> bool {
    match pkesk.recipient() {
        None => true,
        Some(handle) => {
            handle.aliases(sq::KeyHandle::from(fingerprint.clone()))
                || handle.to_hex().chars().all(|c| c == '0')
        }
    }
}

/// The session key of `pkesk` through a device share and the store's partial for it; `None`
/// when they do not open it (wrong pair, or a PKESK for another key).
pub fn session_key(
    pkesk: &PKESK,
    public: &Key<PublicParts, UnspecifiedRole>,
    share: &DeviceShare,
    partial: Partial,
) -> Option<(Option<sq::types::SymmetricAlgorithm>, SessionKey)> {
    let mut d = share.decryptor(public, partial);
    pkesk.decrypt(&mut d, None)
}

/// Decrypts a whole OpenPGP message (binary) with a device share, asking `partial` for the
/// store's part of each PKESK that may be for `public` (a hidden recipient's too). Signatures
/// are not checked here; at most `max` bytes of plaintext are read.
pub fn decrypt_message(
    message: &[u8],
    public: &Key<PublicParts, UnspecifiedRole>,
    share: &DeviceShare,
    partial: &mut dyn FnMut(&PKESK) -> Option<Partial>,
    max: usize,
) -> Result<Zeroizing<Vec<u8>>, RecryptError> {
    use sq::parse::stream::DecryptorBuilder;
    use sq::parse::Parse;
    use std::io::Read;
    let policy = sq::policy::StandardPolicy::new();
    let helper = SplitHelper {
        public,
        share,
        partial,
    };
    let mut decryptor = DecryptorBuilder::from_bytes(message)
        .map_err(|_| RecryptError::Unwrap)?
        .with_policy(&policy, None, helper)
        .map_err(|_| RecryptError::Unwrap)?;
    let mut plaintext = Zeroizing::new(Vec::new());
    let mut chunk = Zeroizing::new([0u8; 16 * 1024]);
    loop {
        let n = decryptor
            .read(&mut chunk[..])
            .map_err(|_| RecryptError::Unwrap)?;
        if n == 0 {
            return Ok(plaintext);
        }
        if plaintext.len() + n > max {
            return Err(RecryptError::Unwrap);
        }
        plaintext.extend_from_slice(&chunk[..n]);
    }
}

struct SplitHelper<'a> {
    public: &'a Key<PublicParts, UnspecifiedRole>,
    share: &'a DeviceShare,
    partial: &'a mut dyn FnMut(&PKESK) -> Option<Partial>,
}

impl sq::parse::stream::VerificationHelper for SplitHelper<'_> {
    fn get_certs(&mut self, _ids: &[sq::KeyHandle]) -> sq::Result<Vec<sq::Cert>> {
        Ok(Vec::new())
    }

    fn check(&mut self, _structure: sq::parse::stream::MessageStructure) -> sq::Result<()> {
        Ok(())
    }
}

impl sq::parse::stream::DecryptionHelper for SplitHelper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[sq::packet::SKESK],
        sym_algo: Option<sq::types::SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<sq::types::SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> sq::Result<Option<sq::Cert>> {
        for pkesk in pkesks.iter().filter(|p| addressed_to(p, self.public)) {
            let Some(partial) = (self.partial)(pkesk) else {
                continue;
            };
            let mut d = self.share.decryptor(self.public, partial);
            if let Some((algo, sk)) = pkesk.decrypt(&mut d, sym_algo) {
                if decrypt(algo, &sk) {
                    return Ok(None);
                }
            }
        }
        Err(anyhow::anyhow!("no share opened the message"))
    }
}

#[cfg(test)]
mod tests;
