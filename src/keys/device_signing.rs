//! A device's own OpenPGP signing subkey: made on the device, bound to the account's
//! certificate by the admin device, revoked with the device. Mail a device signs then verifies
//! as the account's (the subkey is in the published certificate) and no device holds the
//! account's primary key.
//!
//! A signing subkey needs a back-signature (a primary key binding signature made by the subkey)
//! inside its binding signature, so the device makes it at request time: it must know the
//! account's public certificate then (`device request --account-cert FILE`).

use super::KeyError;
use crate::secret::{Secret, SecretBytes};
use data_encoding::BASE64;
use sequoia_openpgp as sq;
use sq::packet::key::{Key4, PublicParts, SecretParts, SubordinateRole};
use sq::packet::signature::SignatureBuilder;
use sq::packet::Key;
use sq::parse::Parse;
use sq::serialize::Marshal;
use sq::types::{Curve, KeyFlags, ReasonForRevocation, SignatureType};
use sq::Cert;

fn err(e: impl std::fmt::Display) -> KeyError {
    KeyError::Generate(format!("device signing subkey: {e}"))
}

/// On the device: a new Ed25519 signing subkey for `account` with its back-signature. Returns
/// what goes into the request (base64 of the public subkey and the back-signature) and the
/// secret subkey packet (kept sealed on the device).
pub fn make(account: &Cert) -> Result<(String, SecretBytes), KeyError> {
    let key: Key<SecretParts, SubordinateRole> = Key4::generate_ecc(true, Curve::Ed25519)
        .map_err(err)?
        .into();
    let mut signer = key.clone().into_keypair().map_err(err)?;
    let backsig = SignatureBuilder::new(SignatureType::PrimaryKeyBinding)
        .sign_primary_key_binding(&mut signer, account.primary_key().key(), &key)
        .map_err(err)?;
    let public: Key<PublicParts, SubordinateRole> = key.clone().take_secret().0;
    let mut field = Vec::new();
    sq::Packet::from(public)
        .serialize(&mut field)
        .map_err(err)?;
    sq::Packet::from(backsig)
        .serialize(&mut field)
        .map_err(err)?;
    let mut secret = Vec::new();
    sq::Packet::from(key).serialize(&mut secret).map_err(err)?;
    Ok((BASE64.encode(&field), Secret::new(secret)))
}

/// The subkey and back-signature a request carries.
fn parse_field(
    field: &str,
) -> Result<(Key<PublicParts, SubordinateRole>, sq::packet::Signature), KeyError> {
    let bad = || KeyError::Corrupt("request: not a signing subkey".into());
    let bytes = BASE64.decode(field.as_bytes()).map_err(|_| bad())?;
    let pile = sq::PacketPile::from_bytes(&bytes).map_err(|_| bad())?;
    let mut packets = pile.into_children();
    let key = match packets.next() {
        Some(sq::Packet::PublicSubkey(k)) => k,
        _ => return Err(bad()),
    };
    let backsig = match packets.next() {
        Some(sq::Packet::Signature(s)) if s.typ() == SignatureType::PrimaryKeyBinding => s,
        _ => return Err(bad()),
    };
    if packets.next().is_some() {
        return Err(bad());
    }
    Ok((key, backsig))
}

/// On the admin device: `public` (the account's certificate) with the requested subkey bound
/// as a signing subkey, signed by the primary key of `secret`. Returns the new certificate and
/// the subkey's fingerprint.
pub fn bind(secret: &Cert, public: &Cert, field: &str) -> Result<(Cert, String), KeyError> {
    let (key, backsig) = parse_field(field)?;
    backsig
        .verify_primary_key_binding(public.primary_key().key(), &key)
        .map_err(|_| {
            KeyError::Corrupt("request: the signing subkey was not made for this account".into())
        })?;
    if public
        .keys()
        .any(|k| k.key().fingerprint() == key.fingerprint())
    {
        return Err(KeyError::Corrupt(
            "request: this signing subkey is already in the certificate".into(),
        ));
    }
    let mut primary = primary_signer(secret)?;
    let builder = SignatureBuilder::new(SignatureType::SubkeyBinding)
        .set_key_flags(KeyFlags::empty().set_signing())
        .map_err(err)?
        .set_embedded_signature(backsig)
        .map_err(err)?;
    let binding = as_long_as(builder, public, key.creation_time())?
        .sign_subkey_binding(&mut primary, public.primary_key().key(), &key)
        .map_err(err)?;
    let fingerprint = key.fingerprint().to_hex();
    let cert = public
        .clone()
        .insert_packets(vec![sq::Packet::from(key), sq::Packet::from(binding)])
        .map_err(err)?
        .0;
    Ok((cert, fingerprint))
}

/// On the admin device: `public` with the device subkey `fingerprint` revoked.
pub fn revoke(secret: &Cert, public: &Cert, fingerprint: &str) -> Result<Cert, KeyError> {
    let key = public
        .keys()
        .subkeys()
        .find(|k| k.key().fingerprint().to_hex() == fingerprint)
        .ok_or_else(|| KeyError::Corrupt(format!("no subkey {fingerprint} in the certificate")))?
        .key()
        .clone();
    let mut primary = primary_signer(secret)?;
    let sig = sq::cert::SubkeyRevocationBuilder::new()
        .set_reason_for_revocation(ReasonForRevocation::KeyRetired, b"device revoked")
        .map_err(err)?
        .build(&mut primary, public, &key, None)
        .map_err(err)?;
    Ok(public.clone().insert_packets(sig).map_err(err)?.0)
}

/// On the device: the certificate it signs with, `public` (with its subkey bound) and the
/// secret subkey packet.
pub fn signer(public: &Cert, secret_packet: &[u8]) -> Result<Cert, KeyError> {
    let packet = sq::Packet::from_bytes(secret_packet)
        .map_err(|_| KeyError::Corrupt("device signing subkey".into()))?;
    let sq::Packet::SecretSubkey(key) = packet else {
        return Err(KeyError::Corrupt("device signing subkey".into()));
    };
    if !public
        .keys()
        .subkeys()
        .any(|k| k.key().fingerprint() == key.fingerprint())
    {
        return Err(KeyError::Corrupt(
            "the account's certificate does not bind this device's signing subkey".into(),
        ));
    }
    Ok(public.clone().insert_packets(key).map_err(err)?.0)
}

/// A subkey binding under which the subkey (made at `created`) lives as long as `cert`'s
/// primary key.
pub(crate) fn as_long_as(
    builder: SignatureBuilder,
    cert: &Cert,
    created: std::time::SystemTime,
) -> Result<SignatureBuilder, KeyError> {
    let expiry = cert
        .with_policy(&sq::policy::StandardPolicy::new(), None)
        .ok()
        .and_then(|v| v.primary_key().key_expiration_time());
    match expiry.and_then(|e| e.duration_since(created).ok()) {
        Some(d) => builder.set_key_validity_period(d).map_err(err),
        None => Ok(builder),
    }
}

fn primary_signer(secret: &Cert) -> Result<sq::crypto::KeyPair, KeyError> {
    secret
        .primary_key()
        .key()
        .clone()
        .parts_into_secret()
        .map_err(|_| KeyError::Corrupt("the account's primary key has no secret here".into()))?
        .into_keypair()
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sq::policy::StandardPolicy;

    #[test]
    fn a_bound_device_subkey_signs_for_the_account_until_it_is_revoked() {
        let (secret, _) = crate::keys::generate::openpgp_cert("alice@example.test").unwrap();
        let public = secret.clone().strip_secret_key_material();
        let (field, key) = make(&public).unwrap();
        let (cert, fpr) = bind(&secret, &public, &field).unwrap();
        let p = StandardPolicy::new();
        let valid = cert.with_policy(&p, None).unwrap();
        let signing: Vec<String> = valid
            .keys()
            .subkeys()
            .for_signing()
            .map(|k| k.key().fingerprint().to_hex())
            .collect();
        assert_eq!(signing, vec![fpr.clone()]);
        // The device signs with it; the message verifies against the published certificate.
        let device = signer(&cert, key.expose()).unwrap();
        let message = crate::crypto::openpgp::encrypt(
            &[b"signed"],
            std::slice::from_ref(&public),
            Some(&device),
        )
        .unwrap();
        let keys = crate::crypto::decrypt::DecryptionKeys::new(
            secret.clone(),
            None,
            None,
            vec![cert.clone()],
        );
        let opened = keys.open_openpgp(&message, &[], 1 << 20).unwrap();
        assert!(
            opened.signatures.iter().any(|s| s.good),
            "{:?}",
            opened.signatures
        );
        // Bound once only; a subkey made for another account is refused.
        assert!(bind(&secret, &cert, &field).is_err());
        let (other, _) = crate::keys::generate::openpgp_cert("mallory@example.test").unwrap();
        let (foreign, _) = make(&other.clone().strip_secret_key_material()).unwrap();
        assert!(bind(&secret, &public, &foreign).is_err());
        // Revoked: no longer a signing key of the account.
        let revoked = revoke(&secret, &cert, &fpr).unwrap();
        let valid = revoked.with_policy(&p, None).unwrap();
        assert_eq!(
            valid.keys().subkeys().for_signing().revoked(false).count(),
            0
        );
    }
}
