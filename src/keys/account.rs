//! One account: its public description ([`AccountInfo`]), its files, and its secrets once
//! unlocked ([`Unlocked`]).

use super::{generate, sealed, KeyError};
use crate::address::{udf, Fingerprint, Form, Label, MailAddress, StrongAddress, Udf};
use crate::crypto::openpgp as pgp;
use crate::secret::{Secret, SecretBytes, SecretString};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use data_encoding::BASE64;
use sequoia_openpgp as sq;
use sequoia_openpgp::parse::Parse;
use sequoia_openpgp::serialize::{Serialize as _, SerializeInto};
use serde::{Deserialize, Serialize};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;
use zeroize::{Zeroize, ZeroizeOnDrop};

pub const ACCOUNT_FILE: &str = "account.json";
pub const SECRETS_FILE: &str = "secrets.json";
pub const OPENPGP_FILE: &str = "openpgp.asc";
pub const REVOCATION_FILE: &str = "openpgp-revocation.asc";
pub const SMIME_FILE: &str = "smime.pem";
pub const POLICY_FILE: &str = "policy.jws";

/// The public description of an account (`account.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AccountInfo {
    /// The routable address the account receives mail at.
    pub address: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// The Ed25519 policy-signing public key, base64.
    pub policy_key: String,
    /// Upper-case hex, as gpg prints it.
    pub openpgp_fingerprint: String,
    /// SHA-256 of the S/MIME certificate DER, upper-case hex.
    pub smime_sha256: String,
}

/// An account in a key store directory.
#[derive(Debug, Clone)]
pub struct Account {
    home: PathBuf,
    info: AccountInfo,
}

/// The account's secrets, in memory only while needed; zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
struct SecretsFile {
    /// Ed25519 PKCS#8, base64.
    policy_key: String,
    /// OpenPGP transferable secret key, binary, base64.
    openpgp: String,
    /// RSA PKCS#8, base64.
    smime_key: String,
}

/// An unlocked account: the secret keys, each wrapped in a [`Secret`].
#[derive(Debug)]
pub struct Unlocked {
    policy_key: SecretBytes,
    openpgp_tsk: SecretBytes,
    smime_key: SecretBytes,
}

impl Account {
    /// Makes a new account for `address` in `home`: keys, certificates, a revocation
    /// certificate and a signed policy valid for `policy_validity`. Refuses to touch an existing
    /// account.
    pub fn create(
        home: &Path,
        address: &str,
        passphrase: Option<&SecretString>,
        policy_validity: time::Duration,
    ) -> Result<Account, KeyError> {
        match MailAddress::classify(address) {
            Ok(MailAddress::Plain(_)) if address.contains('@') => {}
            Ok(MailAddress::Strong(_)) => {
                return Err(KeyError::Address(
                    "give the routable address (without a fingerprint label)".into(),
                ))
            }
            Ok(MailAddress::Plain(_)) => return Err(KeyError::Address("no '@'".into())),
            Err(e) => return Err(KeyError::Address(e.to_string())),
        }
        let (local, domain) = address
            .rsplit_once('@')
            .ok_or_else(|| KeyError::Address("no '@'".into()))?;
        if local.is_empty() || domain.is_empty() || domain.contains("..") {
            return Err(KeyError::Address(format!("{address:?} is not an address")));
        }
        let address = format!("{local}@{}", domain.to_ascii_lowercase());
        if home.join(ACCOUNT_FILE).exists() || home.join(SECRETS_FILE).exists() {
            return Err(KeyError::AccountExists(home.display().to_string()));
        }
        make_private_dir(home)?;

        let policy_key = generate::policy_signing_key()?;
        let (cert, revocation) = generate::openpgp_cert(&address)?;
        let (smime_der, smime_key) = generate::smime_cert(&address)?;

        let signing = Ed25519KeyPair::from_pkcs8(policy_key.expose())
            .map_err(|_| KeyError::Generate("Ed25519 key".into()))?;
        let mut tsk = Vec::new();
        cert.as_tsk()
            .serialize(&mut tsk)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let tsk = Secret::new(tsk);
        let secrets = SecretsFile {
            policy_key: BASE64.encode(policy_key.expose()),
            openpgp: BASE64.encode(tsk.expose()),
            smime_key: BASE64.encode(smime_key.expose()),
        };
        let plain = Secret::new(
            serde_json::to_vec(&secrets).map_err(|e| KeyError::Corrupt(e.to_string()))?,
        );
        drop(secrets);
        let sealed = sealed::seal(&plain, passphrase)?;
        // The secret file is written first and with create_new: two concurrent `init`s cannot
        // both succeed.
        write_new(&home.join(SECRETS_FILE), &sealed, 0o600)?;

        let smime_cert = crate::crypto::smime::SmimeCert::from_der(&smime_der)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        let info = AccountInfo {
            address: address.clone(),
            created: OffsetDateTime::now_utc(),
            policy_key: BASE64.encode(signing.public_key().as_ref()),
            openpgp_fingerprint: cert.fingerprint().to_hex(),
            smime_sha256: smime_cert.sha256_hex(),
        };
        let account = Account {
            home: home.to_owned(),
            info,
        };
        write_new(&home.join(OPENPGP_FILE), &pgp::public_armored(&cert), 0o644)?;
        let revocation = armored_revocation(&cert, revocation)?;
        write_new(&home.join(REVOCATION_FILE), &revocation, 0o600)?;
        write_new(
            &home.join(SMIME_FILE),
            pem("CERTIFICATE", &smime_der).as_bytes(),
            0o644,
        )?;
        let jws = crate::policy::issue::sign_account_policy(&account, &signing, policy_validity)?;
        write_new(&home.join(POLICY_FILE), jws.as_bytes(), 0o644)?;
        let info_json = serde_json::to_vec_pretty(&account.info)
            .map_err(|e| KeyError::Corrupt(e.to_string()))?;
        // account.json last: its presence means the account is complete.
        write_new(&home.join(ACCOUNT_FILE), &info_json, 0o644)?;
        Ok(account)
    }

    /// Opens the account in `home` (public parts only; nothing is unlocked).
    pub fn open(home: &Path) -> Result<Account, KeyError> {
        let path = home.join(ACCOUNT_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(KeyError::NoAccount(home.display().to_string()))
            }
            Err(e) => return Err(KeyError::io(&path, e)),
        };
        let info: AccountInfo =
            serde_json::from_slice(&bytes).map_err(|e| KeyError::Corrupt(e.to_string()))?;
        Ok(Account {
            home: home.to_owned(),
            info,
        })
    }

    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn info(&self) -> &AccountInfo {
        &self.info
    }

    /// The routable address.
    pub fn address(&self) -> &str {
        &self.info.address
    }

    /// The Ed25519 policy-signing public key.
    pub fn policy_public_key(&self) -> Result<[u8; 32], KeyError> {
        BASE64
            .decode(self.info.policy_key.as_bytes())
            .ok()
            .and_then(|k| k.try_into().ok())
            .ok_or_else(|| KeyError::Corrupt("policy_key".into()))
    }

    /// The UDF of the policy-signing key at `bits` precision.
    pub fn policy_udf(&self, bits: usize) -> Result<Udf, KeyError> {
        Ok(Udf::of_ed25519_key(&self.policy_public_key()?, bits))
    }

    /// The account's strong address (UDF of the policy key).
    pub fn strong_address(
        &self,
        label: Label,
        form: Form,
        bits: usize,
    ) -> Result<StrongAddress, KeyError> {
        let udf = self.policy_udf(bits.max(udf::MIN_BITS))?;
        StrongAddress::new(&self.info.address, Fingerprint::Udf(udf), label, form)
            .map_err(|e| KeyError::Address(e.to_string()))
    }

    /// The account's OpenPGP-fingerprint address.
    pub fn openpgp_address(&self, label: Label, form: Form) -> Result<StrongAddress, KeyError> {
        let cert = self.openpgp_cert()?;
        let fpr: [u8; 20] = cert
            .fingerprint()
            .as_bytes()
            .try_into()
            .map_err(|_| KeyError::Corrupt("OpenPGP fingerprint is not v4".into()))?;
        StrongAddress::new(&self.info.address, Fingerprint::OpenPgpV4(fpr), label, form)
            .map_err(|e| KeyError::Address(e.to_string()))
    }

    /// The public OpenPGP certificate.
    pub fn openpgp_cert(&self) -> Result<sq::Cert, KeyError> {
        let path = self.home.join(OPENPGP_FILE);
        let bytes = fs::read(&path).map_err(|e| KeyError::io(&path, e))?;
        sq::Cert::from_bytes(&bytes).map_err(|e| KeyError::Corrupt(e.to_string()))
    }

    /// The public S/MIME certificate, DER.
    pub fn smime_cert_der(&self) -> Result<Vec<u8>, KeyError> {
        let path = self.home.join(SMIME_FILE);
        let text = fs::read_to_string(&path).map_err(|e| KeyError::io(&path, e))?;
        let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        BASE64
            .decode(body.as_bytes())
            .map_err(|_| KeyError::Corrupt("smime.pem".into()))
    }

    /// The account's signed policy.
    pub fn policy_jws(&self) -> Result<String, KeyError> {
        let path = self.home.join(POLICY_FILE);
        fs::read_to_string(&path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| KeyError::io(&path, e))
    }

    /// Replaces the signed policy (write to a temporary file, then rename).
    pub fn replace_policy(&self, jws: &str) -> Result<(), KeyError> {
        replace_file(&self.home.join(POLICY_FILE), jws.as_bytes(), 0o644)
    }

    /// Replaces the public OpenPGP certificate (a device's signing subkey bound or revoked);
    /// `policy publish` again puts it where senders look.
    pub fn replace_openpgp_cert(&self, cert: &sq::Cert) -> Result<(), KeyError> {
        replace_file(
            &self.home.join(OPENPGP_FILE),
            &pgp::public_armored(cert),
            0o644,
        )
    }

    /// Replaces the secret key file with `unlocked`, sealed under `passphrase` (write to a
    /// temporary file, then rename).
    pub(crate) fn replace_secrets(
        &self,
        unlocked: &Unlocked,
        passphrase: Option<&SecretString>,
    ) -> Result<(), KeyError> {
        let sealed = sealed::seal(&unlocked.secrets_json()?, passphrase)?;
        replace_file(&self.home.join(SECRETS_FILE), &sealed, 0o600)
    }

    /// True when the secret file needs a passphrase to open.
    pub fn needs_passphrase(&self) -> Result<bool, KeyError> {
        Ok(sealed::needs_passphrase(&self.read_secrets_file()?)?)
    }

    /// Opens the secrets. Without a needed passphrase: [`KeyError::Locked`].
    pub fn unlock(&self, passphrase: Option<&SecretString>) -> Result<Unlocked, KeyError> {
        let plain = sealed::open(&self.read_secrets_file()?, passphrase)?;
        let unlocked = Unlocked::from_json(&plain)?;
        Ok(unlocked)
    }

    /// True while the account's secret keys are in this home (not forgotten).
    pub fn holds_secrets(&self) -> bool {
        self.home.join(SECRETS_FILE).exists()
    }

    /// Removes the account's secret key file from this home: overwritten with zeros, synced,
    /// then unlinked (what remains of the key is in the recovery shares).
    pub(crate) fn forget_secrets(&self) -> Result<(), KeyError> {
        let path = self.home.join(SECRETS_FILE);
        let len = fs::metadata(&path)
            .map_err(|e| KeyError::io(&path, e))?
            .len();
        let mut file = OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| KeyError::io(&path, e))?;
        file.write_all(&vec![0u8; len as usize])
            .and_then(|()| file.sync_all())
            .map_err(|e| KeyError::io(&path, e))?;
        drop(file);
        fs::remove_file(&path).map_err(|e| KeyError::io(&path, e))
    }

    fn read_secrets_file(&self) -> Result<Vec<u8>, KeyError> {
        read_private(&self.home.join(SECRETS_FILE))
    }
}

impl Unlocked {
    /// The secrets from their JSON form (the secret file's content, or a recovery's).
    pub(crate) fn from_json(plain: &SecretBytes) -> Result<Unlocked, KeyError> {
        let file: SecretsFile =
            serde_json::from_slice(plain.expose()).map_err(|e| KeyError::Corrupt(e.to_string()))?;
        let decode = |s: &str| {
            BASE64
                .decode(s.as_bytes())
                .map(Secret::new)
                .map_err(|_| KeyError::Corrupt("secret is not base64".into()))
        };
        Ok(Unlocked {
            policy_key: decode(&file.policy_key)?,
            openpgp_tsk: decode(&file.openpgp)?,
            smime_key: decode(&file.smime_key)?,
        })
    }
}

/// Reads a secret file, refusing one that others can read.
pub fn read_private(path: &Path) -> Result<Vec<u8>, KeyError> {
    let meta = fs::metadata(path).map_err(|e| KeyError::io(path, e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        // Like ssh: a secret readable by others is a mistake worth stopping for.
        return Err(KeyError::Io {
            path: path.display().to_string(),
            reason: "secret key file is readable by others; chmod 600 it".into(),
        });
    }
    fs::read(path).map_err(|e| KeyError::io(path, e))
}

/// The files of an account a recovery restores: everything but the caches.
pub const RECOVERED_FILES: [(&str, u32); 5] = [
    (OPENPGP_FILE, 0o644),
    (REVOCATION_FILE, 0o600),
    (SMIME_FILE, 0o644),
    (POLICY_FILE, 0o644),
    (ACCOUNT_FILE, 0o644),
];

impl Account {
    /// The account's files a recovery carries (public, and the revocation certificate).
    pub(crate) fn recovered_files(&self) -> Result<Vec<(String, Vec<u8>)>, KeyError> {
        RECOVERED_FILES
            .iter()
            .map(|(name, _)| {
                let path = self.home.join(name);
                fs::read(&path)
                    .map(|b| (name.to_string(), b))
                    .map_err(|e| KeyError::io(&path, e))
            })
            .collect()
    }

    /// Writes a recovered account into a new `home`: the secrets sealed under `passphrase`
    /// first, the other files after, `account.json` last; then checks it opens and unlocks as
    /// the same account.
    pub(crate) fn restore(
        home: &Path,
        files: &[(String, Vec<u8>)],
        secrets: &SecretBytes,
        passphrase: Option<&SecretString>,
    ) -> Result<Account, KeyError> {
        if home.join(ACCOUNT_FILE).exists() || home.join(SECRETS_FILE).exists() {
            return Err(KeyError::AccountExists(home.display().to_string()));
        }
        let _: SecretsFile = serde_json::from_slice(secrets.expose())
            .map_err(|e| KeyError::Corrupt(format!("recovered secrets: {e}")))?;
        make_private_dir(home)?;
        write_new(
            &home.join(SECRETS_FILE),
            &sealed::seal(secrets, passphrase)?,
            0o600,
        )?;
        for (name, mode) in RECOVERED_FILES {
            let bytes = files
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, b)| b)
                .ok_or_else(|| KeyError::Corrupt(format!("the recovery carries no {name}")))?;
            write_new(&home.join(name), bytes, mode)?;
        }
        let account = Account::open(home)?;
        let cert = account.unlock(passphrase)?.openpgp_secret_cert()?;
        if cert.fingerprint().to_hex() != account.info.openpgp_fingerprint {
            return Err(KeyError::Corrupt(
                "the recovered secret key is not the account's".into(),
            ));
        }
        Ok(account)
    }
}

impl Unlocked {
    /// The three secrets as the secrets file holds them (for a recovery bundle).
    pub(crate) fn secrets_json(&self) -> Result<SecretBytes, KeyError> {
        let file = SecretsFile {
            policy_key: BASE64.encode(self.policy_key.expose()),
            openpgp: BASE64.encode(self.openpgp_tsk.expose()),
            smime_key: BASE64.encode(self.smime_key.expose()),
        };
        serde_json::to_vec(&file)
            .map(Secret::new)
            .map_err(|e| KeyError::Corrupt(e.to_string()))
    }

    /// The Ed25519 policy-signing key.
    pub fn policy_signing_key(&self) -> Result<Ed25519KeyPair, KeyError> {
        Ed25519KeyPair::from_pkcs8(self.policy_key.expose())
            .map_err(|_| KeyError::Corrupt("policy key".into()))
    }

    /// The same secrets with another OpenPGP certificate (a rekey's new subkey).
    pub(crate) fn with_openpgp(&self, tsk: &sq::Cert) -> Result<Unlocked, KeyError> {
        let mut bytes = Vec::new();
        tsk.as_tsk()
            .serialize(&mut bytes)
            .map_err(|e| KeyError::Generate(e.to_string()))?;
        Ok(Unlocked {
            policy_key: Secret::new(self.policy_key.expose().clone()),
            openpgp_tsk: Secret::new(bytes),
            smime_key: Secret::new(self.smime_key.expose().clone()),
        })
    }

    /// The OpenPGP certificate with its secret keys.
    pub fn openpgp_secret_cert(&self) -> Result<sq::Cert, KeyError> {
        sq::Cert::from_bytes(self.openpgp_tsk.expose())
            .map_err(|e| KeyError::Corrupt(e.to_string()))
    }

    /// The S/MIME RSA key, PKCS#8 DER.
    pub fn smime_key_pkcs8(&self) -> &SecretBytes {
        &self.smime_key
    }
}

/// Creates `dir` (and parents) with mode 0700 for the last component; an existing directory is
/// tightened to 0700.
pub fn make_private_dir(dir: &Path) -> Result<(), KeyError> {
    if dir.is_dir() {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| KeyError::io(dir, e))
    } else {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| KeyError::io(dir, e))
    }
}

/// Writes a new file with `mode` from the start (never created wider and narrowed later).
pub fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| KeyError::io(path, e))?;
    file.write_all(bytes).map_err(|e| KeyError::io(path, e))?;
    file.sync_all().map_err(|e| KeyError::io(path, e))
}

/// Replaces `path` with `bytes` (mode `mode` from the start): written beside it, synced, then
/// renamed over it, so a crash leaves the old file or the new one, never half of one.
pub fn replace_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".new");
    let tmp = path.with_file_name(name);
    let _ = fs::remove_file(&tmp);
    write_new(&tmp, bytes, mode)?;
    fs::rename(&tmp, path).map_err(|e| KeyError::io(path, e))
}

/// PEM armour (RFC 7468) around DER.
pub fn pem(label: &str, der: &[u8]) -> String {
    let b64 = BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

fn armored_revocation(
    cert: &sq::Cert,
    revocation: sq::packet::Signature,
) -> Result<Vec<u8>, KeyError> {
    // A revocation certificate is the primary key with the revocation signature, armored; gpg
    // imports it to revoke the key.
    let revoked = cert
        .clone()
        .strip_secret_key_material()
        .insert_packets(revocation)
        .map_err(|e| KeyError::Generate(e.to_string()))?
        .0;
    let primary_only = sq::Cert::from_packets(
        revoked
            .clone()
            .into_packets()
            .filter(|p| {
                matches!(p, sq::Packet::PublicKey(_))
                    || matches!(p, sq::Packet::Signature(s) if s.typ() == sq::types::SignatureType::KeyRevocation)
            }),
    )
    .map_err(|e| KeyError::Generate(e.to_string()))?;
    let armored = primary_only
        .armored()
        .to_vec()
        .map_err(|e| KeyError::Generate(e.to_string()));
    armored
}
