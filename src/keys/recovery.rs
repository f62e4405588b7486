//! Recovery shares of an account (`meshmail recovery split` / `join`): a random recovery key is
//! split with Shamir's scheme ([`crate::crypto::shamir`]), and the account — its three secret
//! keys (policy signing, OpenPGP, S/MIME) and its files (certificates, revocation certificate,
//! policy, `account.json`) — is sealed under that key (AES-256-GCM). Each share file is
//! printable and self-contained: one share of the key, and the sealed account, the same in every
//! file. Any quorum of files gives the account back; fewer give nothing about it.
//!
//! The account's home records that shares exist and when a recovery was last tried with them
//! (`recovery.json`), which later steps (forgetting the account key) require.

use super::account::Account;
use super::{KeyError, Unlocked};
use crate::crypto::shamir::{self, Share};
use crate::secret::{Secret, SecretBytes, SecretString};
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::digest::{digest, SHA256};
use data_encoding::{BASE64, BASE64_MIME};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use time::OffsetDateTime;
use zeroize::Zeroizing;

/// What the home records about its recovery shares.
pub const RECOVERY_FILE: &str = "recovery.json";

const CONTEXT: &[u8] = b"meshmail-recovery-v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoveryRecord {
    pub shares: u8,
    pub quorum: u8,
    #[serde(with = "time::serde::rfc3339")]
    pub created: OffsetDateTime,
    /// When `recovery join --check` last recovered the account from a quorum of these shares.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub tested: Option<OffsetDateTime>,
}

/// The sealed content: the account's files and secrets.
#[derive(Serialize, Deserialize)]
struct Bundle {
    address: String,
    files: Vec<(String, String)>,
    secrets: String,
}

/// An account recovered in memory, not yet written anywhere.
pub struct Recovered {
    address: String,
    files: Vec<(String, Vec<u8>)>,
    secrets: SecretBytes,
}

fn key_of(secret: &curve25519_dalek::scalar::Scalar) -> Result<LessSafeKey, KeyError> {
    let mut input = Zeroizing::new(CONTEXT.to_vec());
    input.extend_from_slice(secret.as_bytes());
    let k = Zeroizing::new(digest(&SHA256, &input).as_ref().to_vec());
    UnboundKey::new(&AES_256_GCM, &k)
        .map(LessSafeKey::new)
        .map_err(|_| KeyError::Generate("recovery key".into()))
}

/// Splits `account` into `shares` files in `out` (0600), any `quorum` of which recover it.
pub fn split(
    account: &Account,
    unlocked: &Unlocked,
    shares: u8,
    quorum: u8,
    out: &Path,
) -> Result<Vec<PathBuf>, KeyError> {
    let secret = shamir::random_secret().map_err(|e| KeyError::Generate(e.to_string()))?;
    let parts =
        shamir::split(&secret, shares, quorum).map_err(|e| KeyError::Generate(e.to_string()))?;
    let secrets = unlocked.secrets_json()?;
    let bundle = Bundle {
        address: account.address().to_owned(),
        files: account
            .recovered_files()?
            .into_iter()
            .map(|(n, b)| (n, BASE64.encode(&b)))
            .collect(),
        secrets: BASE64.encode(secrets.expose()),
    };
    let mut plain =
        Zeroizing::new(serde_json::to_vec(&bundle).map_err(|e| KeyError::Corrupt(e.to_string()))?);
    drop(bundle);
    let mut nonce = [0u8; 12];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| KeyError::Generate("no randomness".into()))?;
    key_of(&secret)?
        .seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(CONTEXT),
            &mut *plain,
        )
        .map_err(|_| KeyError::Generate("sealing the account".into()))?;
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&plain);
    let sealed = BASE64_MIME.encode(&sealed);

    super::account::make_private_dir(out)?;
    let made = OffsetDateTime::now_utc();
    let mut files = Vec::new();
    for part in &parts {
        let path = out.join(format!("recovery-share-{}.txt", part.index()));
        let text = Zeroizing::new(format!(
            "meshmail recovery share {index} of {shares}: any {quorum} of them recover the account\n\
             account: {address} (OpenPGP {fpr})\nmade: {made}\n\n\
             Keep each share apart from the others (a quorum is the account). A share holds one\n\
             share of the recovery key; the sealed account below (the same in every share) holds the\n\
             policy-signing key, the OpenPGP secret key, the S/MIME key, the certificates, the\n\
             revocation certificate and the policy, encrypted under that key.\n\
             Recover: meshmail --home NEW_HOME recovery join SHARE_FILE SHARE_FILE ...\n\n\
             share: {share}\n\nsealed account:\n{sealed}",
            index = part.index(),
            address = account.address(),
            fpr = account.info().openpgp_fingerprint,
            made = made.date(),
            share = &*part.to_printable(),
        ));
        super::account::write_new(&path, text.as_bytes(), 0o600)?;
        files.push(path);
    }
    write_record(
        account.home(),
        &RecoveryRecord {
            shares,
            quorum,
            created: made,
            tested: None,
        },
    )?;
    Ok(files)
}

/// Reads share files and recovers the account they hold, in memory.
pub fn join(files: &[PathBuf]) -> Result<Recovered, KeyError> {
    let mut shares: Vec<Share> = Vec::new();
    let mut sealed: Option<String> = None;
    for path in files {
        let text =
            Zeroizing::new(std::fs::read_to_string(path).map_err(|e| KeyError::io(path, e))?);
        let share_line = text
            .lines()
            .find_map(|l| l.strip_prefix("share: "))
            .ok_or_else(|| KeyError::Corrupt(format!("{}: no share line", path.display())))?;
        shares.push(
            Share::parse(share_line)
                .map_err(|e| KeyError::Corrupt(format!("{}: {e}", path.display())))?,
        );
        let body: String = text
            .split_once("sealed account:\n")
            .map(|(_, b)| b.chars().filter(|c| !c.is_whitespace()).collect())
            .ok_or_else(|| KeyError::Corrupt(format!("{}: no sealed account", path.display())))?;
        match &sealed {
            Some(s) if *s != body => {
                return Err(KeyError::Corrupt(
                    "the share files hold different sealed accounts".into(),
                ))
            }
            _ => sealed = Some(body),
        }
    }
    let secret = shamir::join(&shares).map_err(|e| KeyError::Corrupt(e.to_string()))?;
    let sealed = BASE64
        .decode(sealed.unwrap_or_default().as_bytes())
        .map_err(|_| KeyError::Corrupt("the sealed account is not base64".into()))?;
    if sealed.len() < 12 + 16 {
        return Err(KeyError::Corrupt("the sealed account is too short".into()));
    }
    let (nonce, body) = sealed.split_at(12);
    let mut body = Zeroizing::new(body.to_vec());
    let nonce =
        Nonce::try_assume_unique_for_key(nonce).map_err(|_| KeyError::Corrupt("nonce".into()))?;
    let plain = key_of(&secret)?
        .open_in_place(nonce, Aad::from(CONTEXT), &mut body)
        .map_err(|_| {
            KeyError::Corrupt("the sealed account does not open with these shares".into())
        })?;
    let bundle: Bundle =
        serde_json::from_slice(plain).map_err(|e| KeyError::Corrupt(e.to_string()))?;
    let decode = |s: &str| {
        BASE64
            .decode(s.as_bytes())
            .map_err(|_| KeyError::Corrupt("recovered file is not base64".into()))
    };
    let files = bundle
        .files
        .iter()
        .map(|(n, b)| decode(b).map(|b| (n.clone(), b)))
        .collect::<Result<Vec<_>, _>>()?;
    let secrets = Secret::new(decode(&bundle.secrets)?);
    Ok(Recovered {
        address: bundle.address,
        files,
        secrets,
    })
}

impl Recovered {
    pub fn address(&self) -> &str {
        &self.address
    }

    /// Writes the account into a new key store at `home`.
    pub fn restore(
        &self,
        home: &Path,
        passphrase: Option<&SecretString>,
    ) -> Result<Account, KeyError> {
        Account::restore(home, &self.files, &self.secrets, passphrase)
    }

    /// The account's secrets, in memory only, once checked to be `account`'s (its policy key
    /// and OpenPGP certificate): for an admin device that forgot the account key.
    pub fn unlock_for(&self, account: &Account) -> Result<Unlocked, KeyError> {
        let unlocked = Unlocked::from_json(&self.secrets)?;
        let policy = crate::store::shares::pin_of(&unlocked.policy_signing_key()?);
        let fingerprint = unlocked.openpgp_secret_cert()?.fingerprint().to_hex();
        if policy != account.policy_public_key()?
            || fingerprint != account.info().openpgp_fingerprint
        {
            return Err(KeyError::Corrupt(
                "these shares recover another account".into(),
            ));
        }
        Ok(unlocked)
    }

    /// Checks that this is the account in `account` (same secrets and files), and records in its
    /// home that a recovery from its shares worked.
    pub fn check_against(&self, account: &Account, unlocked: &Unlocked) -> Result<(), KeyError> {
        let same_secrets = unlocked.secrets_json()?.expose() == self.secrets.expose();
        let same_files = account.recovered_files()? == self.files;
        if !same_secrets || !same_files {
            return Err(KeyError::Corrupt(
                "these shares recover another account (or an older state of this one)".into(),
            ));
        }
        let mut record = read_record(account.home())?
            .ok_or_else(|| KeyError::Corrupt("this key store has no recovery shares".into()))?;
        record.tested = Some(OffsetDateTime::now_utc());
        write_record(account.home(), &record)
    }
}

/// What the home records about its recovery shares, if any.
pub fn read_record(home: &Path) -> Result<Option<RecoveryRecord>, KeyError> {
    let path = home.join(RECOVERY_FILE);
    match std::fs::read(&path) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| KeyError::Corrupt(format!("{}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(KeyError::io(&path, e)),
    }
}

fn write_record(home: &Path, record: &RecoveryRecord) -> Result<(), KeyError> {
    let json = serde_json::to_vec_pretty(record).map_err(|e| KeyError::Corrupt(e.to_string()))?;
    super::account::replace_file(&home.join(RECOVERY_FILE), &json, 0o644)
}
