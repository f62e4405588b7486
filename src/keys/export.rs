//! Exporting the account's keys in standard forms, so they work in other software (no lock-in):
//! OpenPGP armored (public or secret), S/MIME PEM (public) or PKCS#12 (secret).

use super::{Account, KeyError, Unlocked};
use crate::secret::SecretString;
use sequoia_openpgp::serialize::SerializeInto;

/// The public OpenPGP certificate, armored (what `gpg --import` reads).
pub fn openpgp_public(account: &Account) -> Result<Vec<u8>, KeyError> {
    let cert = account.openpgp_cert()?;
    Ok(crate::crypto::openpgp::public_armored(&cert))
}

/// The OpenPGP secret key, armored, unprotected (the caller writes it 0600).
pub fn openpgp_secret(unlocked: &Unlocked) -> Result<crate::secret::SecretBytes, KeyError> {
    let cert = unlocked.openpgp_secret_cert()?;
    let armored = cert
        .as_tsk()
        .armored()
        .to_vec()
        .map(crate::secret::Secret::new)
        .map_err(|e| KeyError::Corrupt(e.to_string()));
    armored
}

/// The public S/MIME certificate, PEM.
pub fn smime_public(account: &Account) -> Result<Vec<u8>, KeyError> {
    Ok(super::account::pem("CERTIFICATE", &account.smime_cert_der()?).into_bytes())
}

/// The S/MIME certificate and key as PKCS#12, protected by `password`.
///
/// Encrypted with pbeWithSHAAnd3-KeyTripleDES-CBC and an HMAC-SHA1 MAC: GnuPG 2.2's gpgsm
/// refuses the PBES2 parameters of the modern profile (measured here), while this one is read by
/// gpgsm, Thunderbird/NSS and OpenSSL alike. The file's protection rests on the password.
pub fn smime_pkcs12(
    account: &Account,
    unlocked: &Unlocked,
    password: &SecretString,
) -> Result<crate::secret::SecretBytes, KeyError> {
    let err = |e: p12_keystore::error::Error| KeyError::Corrupt(format!("PKCS#12: {e}"));
    let der = account.smime_cert_der()?;
    let cert = p12_keystore::Certificate::from_der(&der).map_err(err)?;
    let key =
        p12_keystore::PrivateKey::from_der(unlocked.smime_key_pkcs8().expose()).map_err(err)?;
    let local_key_id =
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA1_FOR_LEGACY_USE_ONLY, &der);
    let chain = p12_keystore::PrivateKeyChain::new(local_key_id.as_ref().to_vec(), key, [cert]);
    let mut store = p12_keystore::KeyStore::new();
    store.add_entry(
        account.address(),
        p12_keystore::KeyStoreEntry::PrivateKeyChain(chain),
    );
    // New salts each time: a file gpgsm would misread is written again (see p12_gpgsm).
    for _ in 0..32 {
        let bytes = store
            .writer(password.expose())
            .encryption_algorithm(p12_keystore::EncryptionAlgorithm::PbeWithShaAnd3KeyTripleDesCbc)
            .mac_algorithm(p12_keystore::MacAlgorithm::HmacSha1)
            .encryption_iterations(100_000)
            .mac_iterations(100_000)
            .write()
            .map_err(err)?;
        if !super::p12_gpgsm::gpgsm_misreads(&bytes, password.expose()) {
            return Ok(crate::secret::Secret::new(bytes));
        }
    }
    Err(KeyError::Corrupt(
        "PKCS#12: no file GnuPG can read after 32 tries".into(),
    ))
}
