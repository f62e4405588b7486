//! Where a view comes from, cheapest first: the in-memory cache, the persistent index (when
//! the body is not needed), else the ciphertext (given, or fetched on meshmail's connection)
//! decrypted on a blocking thread (one decryption per core at a time), then cached and
//! indexed (the index builds its record when decryption is idle).

use super::state::Mailbox;
use crate::crypto::decrypt::DecryptionKeys;
use crate::imap::index::Index;
use crate::imap::owned::{Credentials, OwnedConnection};
use crate::imap::view::{View, ViewCache, ViewKey};
use std::sync::Arc;

/// Everything needed to open the views of one selected mailbox.
#[derive(Clone)]
pub(super) struct ViewSource {
    pub views: ViewCache,
    pub index: Option<Arc<Index>>,
    pub keys: Option<Arc<DecryptionKeys>>,
    /// How meshmail's own connection logs in (`None`: it cannot).
    pub credentials: Option<Arc<Credentials>>,
    pub user: String,
    pub selected: Mailbox,
    pub max: usize,
}

impl ViewSource {
    fn key(&self, uid: u32) -> ViewKey {
        ViewKey {
            user: self.user.clone(),
            mailbox: self.selected.name.clone(),
            uidvalidity: self.selected.uidvalidity.unwrap_or(0),
            uid,
        }
    }

    /// The index entry, when the mailbox's UIDVALIDITY is known.
    pub fn indexed(&self, uid: u32) -> Option<View> {
        let validity = self.selected.uidvalidity?;
        let index = self.index.as_ref()?;
        index.prepare(&self.selected.name, validity);
        let entry = index.get(&self.selected.name, validity, uid)?;
        Some(View::from_index(&entry))
    }

    /// The view of `uid`; `complete` when the body is needed. Errors are temporary.
    pub async fn open(
        &self,
        owned: Option<&OwnedConnection>,
        uid: u32,
        ciphertext: Option<Vec<u8>>,
        complete: bool,
    ) -> Result<Arc<View>, String> {
        let key = self.key(uid);
        // Without a UIDVALIDITY a UID names no message for sure: no cache then.
        if let Some(v) = self.selected.uidvalidity.and_then(|_| self.views.get(&key)) {
            return Ok(v);
        }
        if !complete {
            if let Some(v) = self.indexed(uid) {
                return Ok(Arc::new(v));
            }
        }
        let keys = self.keys.clone().ok_or("the key store is locked")?;
        let raw = match ciphertext {
            Some(c) => c,
            None => {
                let owned = owned.ok_or("meshmail cannot log in again with this login method")?;
                owned
                    .fetch(&self.selected.name, self.selected.uidvalidity, uid)
                    .await
                    .map_err(|e| e.0)?
            }
        };
        let max = self.max;
        let index = self.index.clone();
        let mailbox = self.selected.name.clone();
        let validity = self.selected.uidvalidity;
        let slot = crate::imap::slots::decryption_slot().await;
        let view = tokio::task::spawn_blocking(move || {
            let view = Arc::new(View::build(&raw, &keys, max));
            drop(slot);
            if let (Some(index), Some(validity)) = (index, validity) {
                let v = view.clone();
                index.insert_later(&mailbox, validity, uid, v.size(), move || v.index_entry());
            }
            view
        })
        .await
        .map_err(|_| "decryption stopped".to_string())?;
        if validity.is_some() {
            self.views.insert(key, view.clone());
        }
        Ok(view)
    }
}
