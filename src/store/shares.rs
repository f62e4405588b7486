//! Store shares: how a device's recryption share reaches the store and how the store keeps it.
//!
//! A [`ShareRecord`] is made on the admin device: the device's store share `s_i` sealed to the
//! store's own X25519 key (only that store can open it), bound to the account, the encryption
//! subkey, the device's name and the hash of the device's TLS public key (the certificate the
//! device must present), with a serial that grows with every record of the account; the whole
//! signed with the account's Ed25519 policy key, which the store pins.
//!
//! The store ([`ShareStore`]) keeps the shares sealed at rest under a master key, and keeps the
//! state that must never roll back — the master key, its generation and the tombstones of
//! revoked devices — together in one state file meant to live outside backups (e.g. a
//! systemd credential). Revoking a device deletes its share, records a tombstone and moves every
//! other share to a new generation's key: a backup of the share directory restored later holds
//! shares of an old generation, which no longer open, and a replayed record of a revoked device
//! (or an older record of any device) is refused.

use crate::crypto::recrypt::StoreShare;
use crate::crypto::sealbox;
use crate::secret::Secret;
use aws_lc_rs::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use aws_lc_rs::digest::{digest, SHA256};
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair, UnparsedPublicKey as SigKey, ED25519};
use data_encoding::{BASE64, HEXUPPER};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use thiserror::Error;
use zeroize::Zeroizing;

const RECORD_TAG: &str = "meshmail-store-share-v1";
const SEAL_CONTEXT: &str = "meshmail-store-share-v1/seal";
/// A record is a few hundred bytes; anything much larger is refused unread.
const MAX_RECORD: usize = 8 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ShareError {
    #[error("not a store share record")]
    NotARecord,
    #[error("the record is not signed by the account {0} as this store knows it")]
    BadSignature(String),
    #[error("the store does not serve the account {0}")]
    UnknownAccount(String),
    #[error("the record is sealed to another store")]
    OtherStore,
    #[error("device {0} was revoked: its records are refused for good")]
    Revoked(String),
    #[error("the store holds a newer record for device {0} (serial {1}); this one is refused")]
    Stale(String, u64),
    #[error("the subkey {0} was retired: its records are refused")]
    Retired(String),
    #[error("{0}")]
    Io(String),
}

/// What a record says (its signed payload).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordPayload {
    pub account: String,
    /// The encryption subkey the share belongs to (upper-case hex fingerprint).
    pub subkey: String,
    pub device: String,
    /// SHA-256 of the device's TLS public key (SPKI DER), upper-case hex.
    pub device_tls_sha256: String,
    /// The device's Ed25519 signing key, base64: what verifies a revocation it signs.
    pub device_signing_key: String,
    pub serial: u64,
    /// Ephemeral X25519 public key, nonce and AES-256-GCM of the 32-byte share, base64.
    pub sealed_share: String,
}

impl RecordPayload {
    /// What the sealed share is bound to (the AEAD's associated data).
    fn binding(&self) -> Vec<u8> {
        format!(
            "{RECORD_TAG}\n{}\n{}\n{}\n{}\n{}\n{}",
            self.account,
            self.subkey,
            self.device,
            self.device_tls_sha256,
            self.device_signing_key,
            self.serial
        )
        .into_bytes()
    }
}

/// A signed record, as text: the tag, the payload and the signature, one line each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShareRecord(String);

impl ShareRecord {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn from_text(text: &str) -> ShareRecord {
        ShareRecord(text.trim().to_owned())
    }

    /// Makes a record on the admin device: `share` sealed to `store_public` (X25519) and bound
    /// to the rest of `payload`, signed with the account's policy key.
    pub fn make(
        account_key: &Ed25519KeyPair,
        store_public: &[u8; 32],
        mut payload: RecordPayload,
        share: &StoreShare,
    ) -> Result<ShareRecord, ShareError> {
        payload.sealed_share = String::new();
        let sealed = sealbox::seal(
            store_public,
            SEAL_CONTEXT,
            &payload.binding(),
            &share.to_bytes()[..],
        )
        .map_err(|_| ShareError::OtherStore)?;
        payload.sealed_share = BASE64.encode(&sealed);
        let json = serde_json::to_vec(&payload).map_err(|e| ShareError::Io(e.to_string()))?;
        let signature = account_key.sign(&signed_bytes(&json));
        Ok(ShareRecord(
            crate::keys::envelope::text(RECORD_TAG, &json, Some(signature.as_ref()))
                .trim_end()
                .to_owned(),
        ))
    }

    /// The payload, unverified (to find which account's key verifies it).
    fn parts(&self) -> Result<(RecordPayload, Vec<u8>, Vec<u8>), ShareError> {
        let envelope = crate::keys::envelope::open(&self.0, RECORD_TAG, MAX_RECORD)
            .ok_or(ShareError::NotARecord)?;
        let (json, signature) = (
            envelope.json,
            envelope.signature.ok_or(ShareError::NotARecord)?,
        );
        let payload: RecordPayload =
            serde_json::from_slice(&json).map_err(|_| ShareError::NotARecord)?;
        Ok((payload, json, signature))
    }
}

fn signed_bytes(json: &[u8]) -> Vec<u8> {
    crate::keys::envelope::signed_bytes(RECORD_TAG, json)
}

/// The state that must never roll back, kept outside backups.
#[derive(Serialize, Deserialize, zeroize::ZeroizeOnDrop)]
struct State {
    /// The store's X25519 private key, base64 (records are sealed to its public key).
    store_key: String,
    /// The current at-rest key, base64, and its generation.
    master: String,
    #[zeroize(skip)]
    generation: u64,
    #[zeroize(skip)]
    tombstones: Vec<Tombstone>,
    /// The highest serial accepted per account and device.
    #[zeroize(skip)]
    serials: Vec<(String, String, u64)>,
    /// Subkeys retired after a rekey (account, subkey): their shares are deleted and their
    /// records refused.
    #[zeroize(skip)]
    #[serde(default)]
    retired: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tombstone {
    pub account: String,
    pub device: String,
    pub device_tls_sha256: String,
    /// SHA-256 of the revoked record's sealed share.
    pub share_sha256: String,
}

/// A share at rest (one file per account and device).
#[derive(Serialize, Deserialize)]
struct AtRest {
    record: String,
    generation: u64,
    /// Nonce and AES-256-GCM of the share under the generation's key, base64.
    share: String,
}

/// The store's shares: a state file (outside backups) and a directory of shares.
pub struct ShareStore {
    state_path: PathBuf,
    dir: PathBuf,
    /// Pinned Ed25519 policy keys of the accounts this store serves.
    accounts: Vec<(String, [u8; 32])>,
    /// A key (from a systemd credential) the state file is sealed under, when configured.
    state_key: Option<Secret<[u8; 32]>>,
}

/// The state file when a state key seals it: AES-256-GCM, nonce first, base64.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SealedState {
    sealed: String,
}

const STATE_AAD: &[u8] = b"meshmail-store-state-v1";

impl ShareStore {
    /// Opens (or creates) the store: `state_path` holds the keys, generation and tombstones,
    /// `dir` the shares.
    pub fn open(
        state_path: &Path,
        dir: &Path,
        accounts: Vec<(String, [u8; 32])>,
    ) -> Result<ShareStore, ShareError> {
        ShareStore::open_sealed(state_path, dir, accounts, None)
    }

    /// [`ShareStore::open`], with the state file sealed under `state_key`. A state file
    /// written before the key was configured is sealed now; a sealed one never opens without
    /// the key.
    pub fn open_sealed(
        state_path: &Path,
        dir: &Path,
        accounts: Vec<(String, [u8; 32])>,
        state_key: Option<Secret<[u8; 32]>>,
    ) -> Result<ShareStore, ShareError> {
        let store = ShareStore {
            state_path: state_path.to_owned(),
            dir: dir.to_owned(),
            accounts,
            state_key,
        };
        if store.state_key.is_some() && state_path.exists() {
            let _lock = store.write_lock()?;
            let bytes = Zeroizing::new(
                std::fs::read(state_path)
                    .map_err(|e| ShareError::Io(format!("{}: {e}", state_path.display())))?,
            );
            if let Ok(plain) = serde_json::from_slice::<State>(&bytes) {
                tracing::warn!(path = %state_path.display(), "sealing the store's state file under its state key");
                store.write_state(&plain)?;
            }
        }
        crate::keys::account::make_private_dir(dir).map_err(|e| ShareError::Io(e.to_string()))?;
        if !state_path.exists() {
            let mut key = Zeroizing::new([0u8; 32]);
            let mut master = Zeroizing::new([0u8; 32]);
            aws_lc_rs::rand::fill(&mut key[..])
                .map_err(|_| ShareError::Io("no randomness".into()))?;
            aws_lc_rs::rand::fill(&mut master[..])
                .map_err(|_| ShareError::Io("no randomness".into()))?;
            store.write_state(&State {
                store_key: BASE64.encode(&key[..]),
                master: BASE64.encode(&master[..]),
                generation: 1,
                tombstones: Vec::new(),
                serials: Vec::new(),
                retired: Vec::new(),
            })?;
        }
        Ok(store)
    }

    /// The public key records for this store are sealed to.
    pub fn public_key(&self) -> Result<[u8; 32], ShareError> {
        let state = self.read_state()?;
        let private = Secret::new(
            BASE64
                .decode(state.store_key.as_bytes())
                .map_err(|_| ShareError::Io("state".into()))?,
        );
        sealbox::public_of_bytes(private.expose()).map_err(|_| ShareError::Io("state".into()))
    }

    /// Takes the store's write lock (a `meshmail store` command and the running service may
    /// change the state at the same time).
    fn write_lock(&self) -> Result<std::fs::File, ShareError> {
        let path = self.state_path.with_extension("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| ShareError::Io(format!("{}: {e}", path.display())))?;
        file.lock()
            .map_err(|e| ShareError::Io(format!("{}: {e}", path.display())))?;
        Ok(file)
    }

    /// Takes a record: checks the account's signature, the tombstones and the serial, opens the
    /// share and keeps it sealed at rest. Returns the device's name.
    pub fn accept(&self, record: &ShareRecord) -> Result<String, ShareError> {
        let _lock = self.write_lock()?;
        let (payload, json, signature) = record.parts()?;
        let pinned = self
            .accounts
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case(&payload.account))
            .map(|(_, k)| *k)
            .ok_or_else(|| ShareError::UnknownAccount(payload.account.clone()))?;
        SigKey::new(&ED25519, pinned)
            .verify(&signed_bytes(&json), &signature)
            .map_err(|_| ShareError::BadSignature(payload.account.clone()))?;
        let mut state = self.read_state()?;
        let share_hash = share_sha256(&payload.sealed_share);
        if state.tombstones.iter().any(|t| {
            t.account.eq_ignore_ascii_case(&payload.account)
                && (t.share_sha256 == share_hash
                    || t.device_tls_sha256 == payload.device_tls_sha256
                    || t.device == payload.device)
        }) {
            return Err(ShareError::Revoked(payload.device.clone()));
        }
        if state
            .retired
            .iter()
            .any(|(a, k)| a.eq_ignore_ascii_case(&payload.account) && *k == payload.subkey)
        {
            return Err(ShareError::Retired(payload.subkey.clone()));
        }
        if let Some((_, _, seen)) = state
            .serials
            .iter()
            .find(|(a, d, _)| a.eq_ignore_ascii_case(&payload.account) && *d == payload.device)
        {
            if *seen >= payload.serial {
                return Err(ShareError::Stale(payload.device.clone(), *seen));
            }
        }
        let share = open_sealed(&state, &payload)?;
        state.serials.retain(|(a, d, _)| {
            !(a.eq_ignore_ascii_case(&payload.account) && *d == payload.device)
        });
        state.serials.push((
            payload.account.to_lowercase(),
            payload.device.clone(),
            payload.serial,
        ));
        self.write_share(&state, record, &payload, &share)?;
        self.write_state(&state)?;
        Ok(payload.device)
    }

    /// The records and shares (one per subkey) of the unrevoked device of `account` whose TLS
    /// key hash is `tls_sha256`.
    pub fn shares_for(
        &self,
        account: &str,
        tls_sha256: &str,
    ) -> Result<Vec<(RecordPayload, StoreShare)>, ShareError> {
        let state = self.read_state()?;
        let mut out = Vec::new();
        for (payload, at_rest, _) in self.list(account)? {
            if payload.device_tls_sha256 != tls_sha256
                || at_rest.generation != state.generation
                || is_retired(&state, &payload)
            {
                continue;
            }
            if let Ok(share) = open_at_rest(&state, &at_rest) {
                out.push((payload, share));
            }
        }
        Ok(out)
    }

    /// Retires the subkey `subkey` of `account` after a rekey: every device's share of it is
    /// deleted, and its records are refused from now on.
    pub fn retire(&self, account: &str, subkey: &str) -> Result<usize, ShareError> {
        let _lock = self.write_lock()?;
        let mut state = self.read_state()?;
        if !state
            .retired
            .iter()
            .any(|(a, k)| a.eq_ignore_ascii_case(account) && k == subkey)
        {
            state
                .retired
                .push((account.to_lowercase(), subkey.to_owned()));
        }
        self.write_state(&state)?;
        let mut removed = 0;
        for (payload, _, path) in self.list(account)? {
            if payload.subkey == subkey {
                let _ = std::fs::remove_file(path);
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// The devices of `account` the store holds a share for (current generation only).
    pub fn devices(&self, account: &str) -> Result<Vec<RecordPayload>, ShareError> {
        let state = self.read_state()?;
        Ok(self
            .list(account)?
            .into_iter()
            .filter(|(p, r, _)| r.generation == state.generation && !is_retired(&state, p))
            .map(|(p, _, _)| p)
            .collect())
    }

    /// The devices of `account` revoked at this store.
    pub fn tombstones(&self, account: &str) -> Result<Vec<Tombstone>, ShareError> {
        Ok(self
            .read_state()?
            .tombstones
            .iter()
            .filter(|t| t.account.eq_ignore_ascii_case(account))
            .cloned()
            .collect())
    }

    /// Revokes `device` of `account`: a tombstone, the share deleted, every other share moved
    /// to a new generation's key (so a restored backup of the share directory opens nothing).
    pub fn revoke(&self, account: &str, device: &str) -> Result<bool, ShareError> {
        let _lock = self.write_lock()?;
        let mut state = self.read_state()?;
        let mut found = false;
        let mut keep = Vec::new();
        let mut gone = Vec::new();
        for (payload, at_rest, path) in self.list(account)? {
            if payload.device == device {
                gone.push(path);
                state.tombstones.push(Tombstone {
                    account: payload.account.to_lowercase(),
                    device: payload.device.clone(),
                    device_tls_sha256: payload.device_tls_sha256.clone(),
                    share_sha256: share_sha256(&payload.sealed_share),
                });
                found = true;
            } else if let Ok(share) = open_at_rest(&state, &at_rest) {
                keep.push((ShareRecord(at_rest.record.clone()), payload, share));
            }
        }
        if !found {
            // A device without a current share is still refused from now on.
            state.tombstones.push(Tombstone {
                account: account.to_lowercase(),
                device: device.to_owned(),
                device_tls_sha256: String::new(),
                share_sha256: String::new(),
            });
        }
        let mut master = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(&mut master[..])
            .map_err(|_| ShareError::Io("no randomness".into()))?;
        state.master = BASE64.encode(&master[..]);
        state.generation += 1;
        // The new state first: from this moment every old share file is dead.
        self.write_state(&state)?;
        for path in gone {
            let _ = std::fs::remove_file(path);
        }
        for (record, payload, share) in keep {
            self.write_share(&state, &record, &payload, &share)?;
        }
        Ok(found)
    }

    /// Every share file of `account`: its record's payload, its content and its path.
    fn list(&self, account: &str) -> Result<Vec<(RecordPayload, AtRest, PathBuf)>, ShareError> {
        let dir = self.dir.join(account.to_lowercase());
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(ShareError::Io(format!("{}: {e}", dir.display()))),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            // Share files only (a file left half written by a crash is not one).
            if entry.path().extension().is_none_or(|e| e != "share") {
                continue;
            }
            let Ok(bytes) = std::fs::read(entry.path()) else {
                continue;
            };
            let Ok(at_rest) = serde_json::from_slice::<AtRest>(&bytes) else {
                continue;
            };
            let Ok((payload, _, _)) = ShareRecord(at_rest.record.clone()).parts() else {
                continue;
            };
            if payload.account.eq_ignore_ascii_case(account) {
                out.push((payload, at_rest, entry.path()));
            }
        }
        Ok(out)
    }

    /// One file per account, device and subkey.
    fn share_path(&self, account: &str, device: &str, subkey: &str) -> PathBuf {
        let name = HEXUPPER
            .encode(&digest(&SHA256, format!("{device}\0{subkey}").as_bytes()).as_ref()[..12]);
        self.dir
            .join(account.to_lowercase())
            .join(format!("{name}.share"))
    }

    fn write_share(
        &self,
        state: &State,
        record: &ShareRecord,
        payload: &RecordPayload,
        share: &StoreShare,
    ) -> Result<(), ShareError> {
        let key = master_key(state)?;
        let mut nonce = [0u8; 12];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| ShareError::Io("no randomness".into()))?;
        let mut body = Zeroizing::new(share.to_bytes().to_vec());
        key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(at_rest_binding(state.generation, payload)),
            &mut *body,
        )
        .map_err(|_| ShareError::Io("sealing".into()))?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&body);
        let file = AtRest {
            record: record.0.clone(),
            generation: state.generation,
            share: BASE64.encode(&sealed),
        };
        let path = self.share_path(&payload.account, &payload.device, &payload.subkey);
        if let Some(dir) = path.parent() {
            crate::keys::account::make_private_dir(dir)
                .map_err(|e| ShareError::Io(e.to_string()))?;
        }
        let json = serde_json::to_vec(&file).map_err(|e| ShareError::Io(e.to_string()))?;
        replace_file(&path, &json)
    }

    fn read_state(&self) -> Result<State, ShareError> {
        let path = self.state_path.display();
        let bytes = Zeroizing::new(
            std::fs::read(&self.state_path).map_err(|e| ShareError::Io(format!("{path}: {e}")))?,
        );
        let Some(key) = &self.state_key else {
            if serde_json::from_slice::<SealedState>(&bytes).is_ok() {
                return Err(ShareError::Io(format!(
                    "{path}: sealed under a state key: set [store] state_key_credential"
                )));
            }
            return serde_json::from_slice(&bytes)
                .map_err(|e| ShareError::Io(format!("{path}: {e}")));
        };
        let sealed: SealedState = serde_json::from_slice(&bytes)
            .map_err(|_| ShareError::Io(format!("{path}: not sealed under the state key")))?;
        let sealed = BASE64
            .decode(sealed.sealed.as_bytes())
            .map_err(|_| ShareError::Io(format!("{path}: not sealed under the state key")))?;
        if sealed.len() < 12 + 16 {
            return Err(ShareError::Io(format!("{path}: truncated")));
        }
        let (nonce, body) = sealed.split_at(12);
        let mut body = Zeroizing::new(body.to_vec());
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| ShareError::Io(format!("{path}: truncated")))?;
        let plain = aead_key(key.expose())?
            .open_in_place(nonce, Aad::from(STATE_AAD), &mut body)
            .map_err(|_| {
                ShareError::Io(format!(
                    "{path}: does not open under the state key (another host's credential?)"
                ))
            })?;
        serde_json::from_slice(plain).map_err(|e| ShareError::Io(format!("{path}: {e}")))
    }

    fn write_state(&self, state: &State) -> Result<(), ShareError> {
        let json =
            Zeroizing::new(serde_json::to_vec(state).map_err(|e| ShareError::Io(e.to_string()))?);
        let Some(key) = &self.state_key else {
            return replace_file(&self.state_path, &json);
        };
        let mut nonce = [0u8; 12];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| ShareError::Io("no randomness".into()))?;
        let mut body = Zeroizing::new(json.to_vec());
        aead_key(key.expose())?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(STATE_AAD),
                &mut *body,
            )
            .map_err(|_| ShareError::Io("sealing".into()))?;
        let mut sealed = nonce.to_vec();
        sealed.extend_from_slice(&body);
        let file = serde_json::to_vec(&SealedState {
            sealed: BASE64.encode(&sealed),
        })
        .map_err(|e| ShareError::Io(e.to_string()))?;
        replace_file(&self.state_path, &file)
    }
}

fn replace_file(path: &Path, bytes: &[u8]) -> Result<(), ShareError> {
    crate::keys::account::replace_file(path, bytes, 0o600)
        .map_err(|e| ShareError::Io(e.to_string()))
}

fn is_retired(state: &State, payload: &RecordPayload) -> bool {
    state
        .retired
        .iter()
        .any(|(a, k)| a.eq_ignore_ascii_case(&payload.account) && *k == payload.subkey)
}

fn share_sha256(sealed_share: &str) -> String {
    HEXUPPER.encode(digest(&SHA256, sealed_share.as_bytes()).as_ref())
}

fn at_rest_binding(generation: u64, payload: &RecordPayload) -> Vec<u8> {
    let mut b = payload.binding();
    b.extend_from_slice(format!("\ngeneration {generation}").as_bytes());
    b
}

fn master_key(state: &State) -> Result<LessSafeKey, ShareError> {
    let key = Secret::new(
        BASE64
            .decode(state.master.as_bytes())
            .map_err(|_| ShareError::Io("state".into()))?,
    );
    aead_key(key.expose())
}

fn aead_key(bytes: &[u8]) -> Result<LessSafeKey, ShareError> {
    UnboundKey::new(&AES_256_GCM, bytes)
        .map(LessSafeKey::new)
        .map_err(|_| ShareError::Io("state".into()))
}

/// Opens the share sealed to this store in a record.
fn open_sealed(state: &State, payload: &RecordPayload) -> Result<StoreShare, ShareError> {
    let sealed = BASE64
        .decode(payload.sealed_share.as_bytes())
        .map_err(|_| ShareError::NotARecord)?;
    if sealed.len() != 32 + sealbox::OVERHEAD {
        return Err(ShareError::NotARecord);
    }
    let private = Secret::new(
        BASE64
            .decode(state.store_key.as_bytes())
            .map_err(|_| ShareError::Io("state".into()))?,
    );
    let mut binding_payload = payload.clone();
    binding_payload.sealed_share = String::new();
    let plain = sealbox::open(
        private.expose(),
        SEAL_CONTEXT,
        &binding_payload.binding(),
        &sealed,
    )
    .map_err(|_| ShareError::OtherStore)?;
    StoreShare::from_bytes(&plain).map_err(|_| ShareError::NotARecord)
}

fn open_at_rest(state: &State, at_rest: &AtRest) -> Result<StoreShare, ShareError> {
    let (payload, _, _) = ShareRecord(at_rest.record.clone()).parts()?;
    let sealed = BASE64
        .decode(at_rest.share.as_bytes())
        .map_err(|_| ShareError::NotARecord)?;
    if sealed.len() < 12 + 16 {
        return Err(ShareError::NotARecord);
    }
    let (nonce, body) = sealed.split_at(12);
    let mut body = Zeroizing::new(body.to_vec());
    let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| ShareError::NotARecord)?;
    let plain = master_key(state)?
        .open_in_place(
            nonce,
            Aad::from(at_rest_binding(at_rest.generation, &payload)),
            &mut body,
        )
        .map_err(|_| ShareError::Io("a share does not open under the current key".into()))?;
    StoreShare::from_bytes(plain).map_err(|_| ShareError::NotARecord)
}

/// The Ed25519 public key of an account key pair (what a store pins).
pub fn pin_of(key: &Ed25519KeyPair) -> [u8; 32] {
    key.public_key().as_ref().try_into().unwrap_or([0u8; 32])
}

mod revocation;
pub use revocation::make_revocation;

#[cfg(test)]
mod tests;
