//! Decryption of incoming mail for the account: OpenPGP messages (PGP/MIME payloads) with the
//! account's secret subkeys, CMS EnvelopedData / AuthEnvelopedData with its S/MIME key
//! (`cms_decrypt`). Signatures found inside an OpenPGP message are checked against
//! certificates held locally only: a lookup at read time would tell the sender when mail is read.
//!
//! Everything here is blocking CPU work; callers run it on blocking threads.

use super::cms_decrypt;
use super::smime::SmimeCert;
use crate::secret::SecretBytes;
use sequoia_openpgp as sq;
use sq::crypto::SessionKey;
use sq::packet::{PKESK, SKESK};
use sq::parse::stream::{
    DecryptionHelper, DecryptorBuilder, MessageLayer, MessageStructure, VerificationHelper,
};
use sq::parse::Parse;
use sq::policy::StandardPolicy;
use sq::types::SymmetricAlgorithm;
use sq::{Cert, KeyHandle};
use std::io::Read;
use thiserror::Error;
use zeroize::Zeroizing;

/// Why a message could not be opened. Every case is permanent for that message: retrying with
/// the same keys gives the same answer.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum OpenError {
    #[error("not encrypted to this account's key")]
    NotForUs,
    #[error("corrupt encrypted message: {0}")]
    Corrupt(String),
    #[error("decrypted message larger than {0} bytes")]
    TooLarge(usize),
}

/// The account's decryption keys, unlocked.
pub struct DecryptionKeys {
    /// The OpenPGP certificate with its secret keys.
    openpgp: Cert,
    /// The S/MIME certificate and its RSA key (PKCS#8 DER).
    smime_cert: Option<SmimeCert>,
    smime_key: Option<SecretBytes>,
    /// Certificates trusted for signature checks: the account's own and the local keyring.
    known: Vec<Cert>,
    /// The decryption subkeys, validated once (a policy check per message would verify the
    /// binding signatures again every time).
    keypairs: Vec<(
        KeyHandle,
        sq::crypto::KeyPair,
        Option<super::x25519::FastDecryptor>,
    )>,
    /// A split account (a device with shares, one per subkey during a rekey's grace period):
    /// no secret subkey, the store's partials instead.
    split: Vec<SplitKey>,
}

/// The encryption subkey of a split account and this device's share of it.
struct SplitKey {
    public: sq::packet::Key<sq::packet::key::PublicParts, sq::packet::key::UnspecifiedRole>,
    share: super::recrypt::DeviceShare,
}

/// The store's partials for one message: (PKESK index, partial).
pub type Partials = [(usize, super::recrypt::Partial)];

impl std::fmt::Debug for DecryptionKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        write!(f, "DecryptionKeys({})", self.openpgp.fingerprint())
    }
}

/// One signature found on the decrypted message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureCheck {
    /// The signing certificate's fingerprint (upper-case hex; for S/MIME the SHA-256 of the
    /// X.509 certificate), or the issuer given by the signature when the certificate is not
    /// held.
    pub signer: String,
    /// The signature verified with a certificate held locally or carried by the message.
    pub good: bool,
    /// The e-mail addresses bound to that certificate by valid user IDs or, for S/MIME, named
    /// by it (lower case).
    pub addresses: Vec<String>,
}

impl SignatureCheck {
    /// A signature that did not verify (or could not be read), named by `signer`.
    pub fn failed(signer: impl Into<String>) -> SignatureCheck {
        SignatureCheck {
            signer: signer.into(),
            good: false,
            addresses: Vec::new(),
        }
    }
}

/// A decrypted message body.
pub struct Opened {
    pub plaintext: Zeroizing<Vec<u8>>,
    pub signatures: Vec<SignatureCheck>,
}

impl DecryptionKeys {
    pub fn new(
        openpgp: Cert,
        smime_cert: Option<SmimeCert>,
        smime_key: Option<SecretBytes>,
        mut known: Vec<Cert>,
    ) -> DecryptionKeys {
        known.push(openpgp.clone().strip_secret_key_material());
        let policy = StandardPolicy::new();
        let keypairs = match openpgp.with_policy(&policy, None) {
            Ok(valid) => valid
                .keys()
                .secret()
                .for_transport_encryption()
                .chain(valid.keys().secret().for_storage_encryption())
                .filter_map(|ka| {
                    let fast = super::x25519::FastDecryptor::new(ka.key());
                    let pair = ka.key().clone().into_keypair().ok()?;
                    Some((ka.key().key_handle(), pair, fast))
                })
                .collect(),
            Err(_) => Vec::new(),
        };
        DecryptionKeys {
            openpgp,
            smime_cert,
            smime_key,
            known,
            keypairs,
            split: Vec::new(),
        }
    }

    /// The keys of a device of a split account: the account's public certificate and this
    /// device's shares, each with the subkey that was split (upper-case hex fingerprint).
    /// OpenPGP only (S/MIME is not split). `None` when a subkey is not in the certificate.
    pub fn split(
        cert: Cert,
        shares: Vec<(String, super::recrypt::DeviceShare)>,
        mut known: Vec<Cert>,
    ) -> Option<DecryptionKeys> {
        let mut split = Vec::new();
        for (subkey, share) in shares {
            let public = cert
                .keys()
                .find(|k| k.key().fingerprint().to_hex() == subkey)?
                .key()
                .clone()
                .role_into_unspecified();
            split.push(SplitKey { public, share });
        }
        if split.is_empty() {
            return None;
        }
        known.push(cert.clone());
        Some(DecryptionKeys {
            openpgp: cert,
            smime_cert: None,
            smime_key: None,
            known,
            keypairs: Vec::new(),
            split,
        })
    }

    /// True for a device of a split account: messages open only with the store's partials.
    pub fn is_split(&self) -> bool {
        !self.split.is_empty()
    }

    /// The session key `partial` opens from `pkesk` with one of this device's shares (the
    /// one whose subkey the PKESK names, or each for a hidden recipient).
    fn split_session_key(
        &self,
        pkesk: &PKESK,
        partial: super::recrypt::Partial,
    ) -> Option<(Option<SymmetricAlgorithm>, SessionKey)> {
        self.split
            .iter()
            .filter(|s| super::recrypt::addressed_to(pkesk, &s.public))
            .find_map(|s| super::recrypt::session_key(pkesk, &s.public, &s.share, partial))
    }

    /// For a split account: whether `partials` with this device's share unwrap a session key
    /// from one of `pkesks` (a store holding another device's share, or a corrupt answer,
    /// does not).
    pub fn split_opens(&self, pkesks: &[PKESK], partials: &Partials) -> bool {
        partials.iter().any(|(i, partial)| {
            pkesks
                .get(*i)
                .is_some_and(|pkesk| self.split_session_key(pkesk, *partial).is_some())
        })
    }

    /// The account's certificate with its secret keys (self-encryption and signing); for a
    /// split account, the public certificate only.
    pub fn secret_cert(&self) -> &Cert {
        &self.openpgp
    }

    /// The account's own OpenPGP fingerprint.
    pub fn fingerprint(&self) -> String {
        self.openpgp.fingerprint().to_hex()
    }

    /// Decrypts an OpenPGP message (armored or binary), checking any signature inside it
    /// against `extra` certificates (e.g. keys attached to the message) and the known ones.
    pub fn open_openpgp(
        &self,
        message: &[u8],
        extra: &[Cert],
        max: usize,
    ) -> Result<Opened, OpenError> {
        self.open_openpgp_with(message, extra, None, max)
    }

    /// [`Self::open_openpgp`], for a split account with the store's `partials` for it.
    pub fn open_openpgp_with(
        &self,
        message: &[u8],
        extra: &[Cert],
        partials: Option<&Partials>,
        max: usize,
    ) -> Result<Opened, OpenError> {
        let policy = StandardPolicy::new();
        let mut helper = Helper::new(self, extra);
        helper.partials = partials;
        // Armor is undone here: Sequoia's armor reader costs more than the decryption.
        let binary = dearmor(message);
        let mut decryptor = DecryptorBuilder::from_bytes(binary.as_deref().unwrap_or(message))
            .map_err(|e| OpenError::Corrupt(e.to_string()))?
            .with_policy(&policy, None, helper)
            .map_err(|e| {
                if format!("{e:#}").contains(NO_KEY) {
                    OpenError::NotForUs
                } else {
                    OpenError::Corrupt(e.to_string())
                }
            })?;
        let mut plaintext = Zeroizing::new(Vec::new());
        let mut chunk = [0u8; 64 * 1024];
        loop {
            let n = decryptor
                .read(&mut chunk)
                .map_err(|e| OpenError::Corrupt(e.to_string()))?;
            if n == 0 {
                break;
            }
            if plaintext.len() + n > max {
                return Err(OpenError::TooLarge(max));
            }
            plaintext.extend_from_slice(&chunk[..n]);
        }
        let helper = decryptor.into_helper();
        if !helper.decrypted {
            return Err(OpenError::Corrupt("the message is not encrypted".into()));
        }
        Ok(Opened {
            plaintext,
            signatures: helper.signatures,
        })
    }

    /// Checks a detached OpenPGP signature (the second part of a PGP/MIME multipart/signed,
    /// RFC 3156 §5) over `data`, against the known and `extra` certificates. An unreadable
    /// signature gives one failed check, so the message is never called unsigned.
    pub fn verify_detached(
        &self,
        signature: &[u8],
        data: &[u8],
        extra: &[Cert],
    ) -> Vec<SignatureCheck> {
        use sq::parse::stream::DetachedVerifierBuilder;
        let unreadable = || vec![SignatureCheck::failed("unreadable")];
        let policy = StandardPolicy::new();
        let helper = Helper::new(self, extra);
        let Ok(builder) = DetachedVerifierBuilder::from_bytes(signature) else {
            return unreadable();
        };
        let Ok(mut verifier) = builder.with_policy(&policy, None, helper) else {
            return unreadable();
        };
        let _ = verifier.verify_bytes(data);
        let found = verifier.into_helper().signatures;
        if found.is_empty() {
            unreadable()
        } else {
            found
        }
    }

    /// Decrypts a CMS ContentInfo (EnvelopedData or AuthEnvelopedData, DER).
    pub fn open_cms(&self, der: &[u8], max: usize) -> Result<Opened, OpenError> {
        let (Some(cert), Some(key)) = (&self.smime_cert, &self.smime_key) else {
            return Err(OpenError::NotForUs);
        };
        let plaintext = cms_decrypt::decrypt(der, cert, key.expose(), max)?;
        Ok(Opened {
            plaintext,
            signatures: Vec::new(),
        })
    }

    /// Certificates (held locally or given) with a valid user ID for `address`.
    fn known_cert(&self, extra: &[Cert], handle: &KeyHandle) -> Option<Cert> {
        self.known
            .iter()
            .chain(extra)
            .find(|c| c.keys().any(|k| k.key().key_handle().aliases(handle)))
            .cloned()
    }
}

/// The binary of an ASCII-armored OpenPGP message, or `None` when `message` is not armored
/// in the plain form (Sequoia's reader then deals with it).
pub(crate) fn dearmor(message: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(message).ok()?;
    let begin = text.find("-----BEGIN PGP MESSAGE-----")?;
    let rest = &text[begin..];
    let end = rest.find("-----END PGP MESSAGE-----")?;
    let block = &rest[..end];
    // Armor headers end at the first empty line.
    let body_start = block
        .find("\r\n\r\n")
        .map(|i| i + 4)
        .or_else(|| block.find("\n\n").map(|i| i + 2))?;
    let mut b64: Vec<u8> = Vec::with_capacity(block.len());
    for line in block[body_start..].lines() {
        let line = line.trim();
        // The CRC-24 line; the checksum itself is optional (RFC 9580 §6.1).
        if line.starts_with('=') {
            break;
        }
        b64.extend_from_slice(line.as_bytes());
    }
    data_encoding::BASE64.decode(&b64).ok()
}

const NO_KEY: &str = "meshmail: no secret key for this message";

/// The addresses bound to `cert` by user IDs that are valid under the standard policy.
pub fn bound_addresses(cert: &Cert) -> Vec<String> {
    let policy = StandardPolicy::new();
    let Ok(valid) = cert.with_policy(&policy, None) else {
        return Vec::new();
    };
    valid
        .userids()
        .filter_map(|u| u.userid().email().ok().flatten().map(|e| e.to_lowercase()))
        .collect()
}

struct Helper<'a> {
    keys: &'a DecryptionKeys,
    extra: &'a [Cert],
    partials: Option<&'a Partials>,
    signatures: Vec<SignatureCheck>,
    decrypted: bool,
}

impl<'a> Helper<'a> {
    fn new(keys: &'a DecryptionKeys, extra: &'a [Cert]) -> Helper<'a> {
        Helper {
            keys,
            extra,
            partials: None,
            signatures: Vec::new(),
            decrypted: false,
        }
    }
}

impl VerificationHelper for Helper<'_> {
    fn get_certs(&mut self, ids: &[KeyHandle]) -> sq::Result<Vec<Cert>> {
        Ok(ids
            .iter()
            .filter_map(|id| self.keys.known_cert(self.extra, id))
            .collect())
    }

    fn check(&mut self, structure: MessageStructure) -> sq::Result<()> {
        for layer in structure.into_iter() {
            if let MessageLayer::SignatureGroup { results } = layer {
                for result in results {
                    match result {
                        Ok(good) => self.signatures.push(SignatureCheck {
                            signer: good.ka.cert().fingerprint().to_hex(),
                            good: true,
                            addresses: bound_addresses(good.ka.cert()),
                        }),
                        Err(bad) => {
                            let signer = signature_issuer(&bad).unwrap_or_else(|| "unknown".into());
                            self.signatures.push(SignatureCheck::failed(signer))
                        }
                    }
                }
            }
        }
        // A bad or unknown signature does not hide the message: the result header says so.
        Ok(())
    }
}

fn signature_issuer(error: &sq::parse::stream::VerificationError) -> Option<String> {
    use sq::parse::stream::VerificationError as E;
    let sig = match error {
        E::MalformedSignature { sig, .. }
        | E::MissingKey { sig }
        | E::UnboundKey { sig, .. }
        | E::BadKey { sig, .. }
        | E::BadSignature { sig, .. } => sig,
        _ => return None,
    };
    sig.get_issuers().first().map(|h| h.to_hex())
}

impl DecryptionHelper for Helper<'_> {
    fn decrypt(
        &mut self,
        pkesks: &[PKESK],
        _skesks: &[SKESK],
        sym_algo: Option<SymmetricAlgorithm>,
        decrypt: &mut dyn FnMut(Option<SymmetricAlgorithm>, &SessionKey) -> bool,
    ) -> sq::Result<Option<Cert>> {
        if let Some(partials) = self.partials {
            // Sequoia lists the PKESKs in message order, as the store counted them.
            for (i, pkesk) in pkesks.iter().enumerate() {
                for (_, partial) in partials.iter().filter(|(j, _)| *j == i) {
                    let opened = self.keys.split_session_key(pkesk, *partial);
                    if let Some((algo, session_key)) = opened {
                        if decrypt(algo, &session_key) {
                            self.decrypted = true;
                            return Ok(None);
                        }
                    }
                }
            }
        }
        for pkesk in pkesks {
            // A hidden recipient (wildcard key ID) is tried against every key.
            let wanted = pkesk.recipient();
            for (handle, pair, fast) in &self.keys.keypairs {
                if let Some(w) = &wanted {
                    let hidden = w.to_hex().chars().all(|c| c == '0');
                    if !hidden && !handle.aliases(w) {
                        continue;
                    }
                }
                if let Some((algo, session_key)) = fast.as_ref().and_then(|f| f.decrypt(pkesk)) {
                    if decrypt(algo, &session_key) {
                        self.decrypted = true;
                        return Ok(None);
                    }
                }
                let mut pair = pair.clone();
                if let Some((algo, session_key)) = pkesk.decrypt(&mut pair, sym_algo) {
                    if decrypt(algo, &session_key) {
                        self.decrypted = true;
                        return Ok(None);
                    }
                }
            }
        }
        Err(anyhow::anyhow!(NO_KEY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fast_x25519_path_opens_what_sequoia_encrypted() {
        let dir = tempfile::tempdir().expect("dir");
        let account = crate::keys::Account::create(
            &dir.path().join("a"),
            "a@example.test",
            None,
            time::Duration::days(30),
        )
        .expect("account");
        let unlocked = account.unlock(None).expect("unlock");
        let keys = DecryptionKeys::new(
            unlocked.openpgp_secret_cert().expect("secret"),
            None,
            None,
            Vec::new(),
        );
        let cert = account.openpgp_cert().expect("cert");
        let message =
            crate::crypto::openpgp::encrypt(&[b"hello fast path"], &[cert], None).expect("enc");
        let pkesk = sq::PacketPile::from_bytes(&message)
            .expect("packets")
            .descendants()
            .find_map(|p| match p {
                sq::Packet::PKESK(k) => Some(k.clone()),
                _ => None,
            })
            .expect("a PKESK");
        let fast = keys
            .keypairs
            .iter()
            .find_map(|(_, _, f)| f.as_ref())
            .expect("a Cv25519 key takes the fast path");
        assert!(fast.decrypt(&pkesk).is_some());
        let opened = keys.open_openpgp(&message, &[], 1 << 20).expect("open");
        assert_eq!(&opened.plaintext[..], b"hello fast path");
    }
}
