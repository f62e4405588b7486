//! The store role: what the IMAP session core asks of the store when it runs in front of the
//! mail store. A session is bound to a device only when the client's TLS key matches the pin
//! of an unrevoked share record of the account it logged in as ([`StoreRole::bind`]); the
//! share is looked up again for every message ([`StoreRole::answer`]), so a revocation stops
//! a session that is already open at its next message.
//!
//! Partials are computed from the bytes the mail store returned in the FETCH response the
//! session is relaying, never from bytes a client supplied.

use super::audit::Audit;
use super::item::{self, Answer};
use super::shares::{RecordPayload, ShareStore};
use crate::config::store::StoreConfig;
use crate::crypto::recrypt::StoreShare;
use crate::imap::fetch::response::{scan, Value};
use sequoia_openpgp as sq;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// An account the store serves (its subkeys are named by the records: a rekey needs no new
/// configuration here).
pub struct StoreAccount {
    pub address: String,
}

/// A session bound to an enrolled device.
#[derive(Debug)]
pub struct DeviceBinding {
    pub user: String,
    pub account: String,
    pub device: String,
    pub tls_sha256: String,
}

/// The state file as last seen: a change (accept, revoke, even from another process) empties
/// the cache.
#[derive(PartialEq, Eq, Clone, Copy)]
struct Stamp {
    inode: u64,
    modified: i64,
    modified_ns: i64,
    len: u64,
}

/// A device's records and shares, one per subkey (several during a rekey's grace period).
type Cached = Arc<Vec<(RecordPayload, StoreShare)>>;

/// Lookups kept at most.
const MAX_CACHED: usize = 4096;

/// Lookups since the state file last changed: (account, TLS key hash) → what was found.
type ShareCache = (Option<Stamp>, HashMap<(String, String), Cached>);

pub struct StoreRole {
    shares: ShareStore,
    state_file: std::path::PathBuf,
    /// Upstream login → account.
    accounts: HashMap<String, StoreAccount>,
    cache: Mutex<ShareCache>,
    audit: Audit,
    master_separator: String,
}

impl StoreRole {
    pub fn open(config: &StoreConfig) -> Result<StoreRole, String> {
        let problems = config.problems();
        if let Some((key, message)) = problems.into_iter().next() {
            return Err(format!("[store] {key}: {message}"));
        }
        let mut accounts = HashMap::new();
        let mut pins = Vec::new();
        for a in &config.accounts {
            let account = crate::keys::Account::open(&a.public_home).map_err(|e| e.to_string())?;
            pins.push((
                account.address().to_owned(),
                account.policy_public_key().map_err(|e| e.to_string())?,
            ));
            accounts.insert(
                a.upstream_user.clone(),
                StoreAccount {
                    address: account.address().to_owned(),
                },
            );
        }
        let state_file = config.state_file();
        let state_key = config.state_key().map_err(|e| format!("[store] {e}"))?;
        let shares = ShareStore::open_sealed(&state_file, &config.shares_dir, pins, state_key)
            .map_err(|e| format!("[store] shares: {e}"))?;
        Ok(StoreRole {
            shares,
            state_file,
            accounts,
            cache: Mutex::new((None, HashMap::new())),
            audit: Audit::new(config.audit_dir(), config.alarm_per_hour.unwrap_or(2000)),
            master_separator: config
                .master_user_separator
                .clone()
                .unwrap_or_else(|| "*".into()),
        })
    }

    /// The share store (for `meshmail store` commands on the store host).
    pub fn shares(&self) -> &ShareStore {
        &self.shares
    }

    /// The account a login maps to.
    pub fn account(&self, user: &str) -> Option<&StoreAccount> {
        self.accounts.get(user)
    }

    /// A login that names a Dovecot master user (`user*master`): refused on a device's
    /// connection, since it would reach a mailbox as someone else.
    pub fn is_master_login(&self, user: &str) -> bool {
        !self.master_separator.is_empty() && user.contains(self.master_separator.as_str())
    }

    /// The device a session is, once the mail store accepted the login as `user`: only with a
    /// client key pinned by an unrevoked record of that login's account.
    pub fn bind(&self, user: &str, tls_sha256: Option<&str>) -> Option<Arc<DeviceBinding>> {
        let tls = tls_sha256?;
        let account = self.accounts.get(user)?;
        let found = self.lookup(&account.address, tls);
        let (first, _) = found.first()?;
        Some(Arc::new(DeviceBinding {
            user: user.to_owned(),
            account: account.address.clone(),
            device: first.device.clone(),
            tls_sha256: tls.to_owned(),
        }))
    }

    /// The record and share for a device now (`None`: revoked or never enrolled).
    fn lookup(&self, account: &str, tls: &str) -> Cached {
        let stamp = stamp(&self.state_file);
        let key = (account.to_lowercase(), tls.to_owned());
        if let Ok(mut cache) = self.cache.lock() {
            // Keys of logins that presented a certificate nobody enrolled are cached too: a
            // client trying many keys empties the cache rather than growing it.
            if cache.0 != stamp || stamp.is_none() || cache.1.len() >= MAX_CACHED {
                cache.0 = stamp;
                cache.1.clear();
            }
            if let Some(hit) = cache.1.get(&key) {
                return hit.clone();
            }
            let found = match self.shares.shares_for(account, tls) {
                Ok(found) => Arc::new(found),
                Err(e) => {
                    tracing::error!(error = %e, "the store's shares cannot be read");
                    return Arc::new(Vec::new());
                }
            };
            cache.1.insert(key, found.clone());
            found
        } else {
            Arc::new(Vec::new())
        }
    }

    /// The FETCH response `response` (as the mail store sent it) with the item appended for
    /// `binding`'s device, when it carries the message (`BODY[]`); unchanged otherwise.
    pub fn answer(&self, binding: &DeviceBinding, mailbox: &str, response: Vec<u8>) -> Vec<u8> {
        let Some(scanned) = scan(&response) else {
            return response;
        };
        let Some(body) = scanned.item("BODY[]") else {
            return response;
        };
        let (Value::Literal(range) | Value::Quoted(range)) = &body.value else {
            return response;
        };
        let uid = scanned.uid(&response);
        let item = self.item_for(binding, mailbox, uid, &response[range.clone()]);
        insert_item(response, &item)
    }

    /// The item (` X-MESH-RECRYPT ...`) for `binding`'s device and a message as the mail
    /// store sent it: the whole message, or at least its first [`item::PREFIX`] bytes (all
    /// the partials are computed from). Audited as `uid` of `mailbox`.
    pub fn item_for(
        &self,
        binding: &DeviceBinding,
        mailbox: &str,
        uid: Option<u32>,
        message: &[u8],
    ) -> String {
        let found = self.lookup(&binding.account, &binding.tls_sha256);
        let answer = if found.is_empty() {
            Answer::Revoked
        } else {
            self.partials(&binding.user, &found, message)
        };
        self.audit.record(
            &binding.account,
            &binding.device,
            mailbox,
            uid,
            answer.kind(),
        );
        // Never the partials themselves in the service log.
        tracing::debug!(device = %binding.device, uid, answer = answer.kind(), "recrypt");
        item::format(&binding.device, &answer)
    }
}

impl StoreRole {
    /// One answer over every subkey the device holds a share of (the PKESK key IDs choose; a
    /// hidden recipient is tried with each).
    fn partials(
        &self,
        user: &str,
        found: &[(RecordPayload, StoreShare)],
        message: &[u8],
    ) -> Answer {
        let mut partials = Vec::new();
        let mut refused = false;
        if !self.accounts.contains_key(user) {
            return Answer::NotForAccount;
        }
        for (record, share) in found {
            // The record names the subkey (signed by the account): its key ID is all the
            // PKESKs are matched by.
            let Ok(subkey) = sq::Fingerprint::from_hex(&record.subkey) else {
                continue;
            };
            match item::partials(message, &subkey, share) {
                Answer::Partials(p) => partials.extend(p),
                Answer::RefusedPoint => refused = true,
                Answer::NotForAccount | Answer::Revoked => {}
            }
        }
        if refused {
            Answer::RefusedPoint
        } else if partials.is_empty() {
            Answer::NotForAccount
        } else {
            Answer::Partials(partials)
        }
    }
}

impl StoreRole {
    /// `X-MESH-REVOKE`: a revocation signed by the account or one of its remaining devices,
    /// submitted by a device of that account. Returns the revoked device's name.
    pub fn revoke(&self, binding: &DeviceBinding, text: &str) -> Result<String, String> {
        let device = self
            .shares
            .revoke_signed_for(Some(&binding.account), text)
            .map_err(|e| e.to_string())?;
        tracing::warn!(account = %binding.account, device = %device, by = %binding.device, "device revoked");
        Ok(device)
    }

    /// `X-MESH-DEVICES`: the devices of the session's account as the store holds them, with
    /// `enrolled` or `revoked`.
    pub fn devices(&self, binding: &DeviceBinding) -> Result<Vec<(String, &'static str)>, String> {
        let mut out: Vec<(String, &'static str)> = Vec::new();
        for d in self
            .shares
            .devices(&binding.account)
            .map_err(|e| e.to_string())?
        {
            if !out.iter().any(|(n, _)| *n == d.device) {
                out.push((d.device, "enrolled"));
            }
        }
        for t in self
            .shares
            .tombstones(&binding.account)
            .map_err(|e| e.to_string())?
        {
            if !out.iter().any(|(n, _)| *n == t.device) {
                out.push((t.device, "revoked"));
            }
        }
        Ok(out)
    }
}

/// `response` (a whole FETCH response, or the last part of one) with `item`
/// (` X-MESH-RECRYPT …`) before its closing parenthesis.
pub fn insert_item(mut response: Vec<u8>, item: &str) -> Vec<u8> {
    let Some(close) = response.iter().rposition(|&b| b == b')') else {
        return response;
    };
    response.splice(close..close, item.bytes());
    response
}

fn stamp(path: &std::path::Path) -> Option<Stamp> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(Stamp {
        inode: m.ino(),
        modified: m.mtime(),
        modified_ns: m.mtime_nsec(),
        len: m.len(),
    })
}

#[cfg(test)]
pub(crate) mod tests;
