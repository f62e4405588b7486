//! Messages from the upstream: continuation requests, untagged data and tagged completions.
//! Everything is relayed byte for byte except capability lists (filtered), the continuation
//! requests meshmail asked for itself, and FETCH responses of encrypted messages in a mapped
//! session (answered from the decrypted view).

use super::client::word;
use super::{Out, OutFuture, Pending, Session, UpItem};
use crate::imap::fetch;
use crate::imap::owned::Credentials;
use std::sync::Arc;

impl Session {
    /// Feeds upstream bytes. `Err` carries a BYE to send before closing.
    pub(super) fn on_upstream_bytes(&mut self, bytes: &[u8]) -> Result<(), Vec<u8>> {
        self.ufrag.enqueue_bytes(bytes);
        while self.ufrag.progress().is_some() {
            if self.ufrag.is_max_message_size_exceeded() {
                return Err(b"* BYE [UNAVAILABLE] A server response was too large\r\n".to_vec());
            }
            if self.ufrag.is_message_complete() {
                let message = self.ufrag.message_bytes().to_vec();
                self.on_upstream_message(message);
            }
        }
        Ok(())
    }

    fn on_upstream_message(&mut self, message: Vec<u8>) {
        if message.starts_with(b"+") {
            if self.up_written == 0 && matches!(self.up_queue.front(), Some(UpItem::Gate { .. })) {
                // The go-ahead meshmail waited for; the client already had its own.
                self.up_queue.pop_front();
            } else {
                self.push_out(Out::Bytes(message));
            }
            return;
        }
        if message.starts_with(b"* ") {
            self.on_untagged(message);
            return;
        }
        let tag = word(&message, 0);
        let ok = word(&message, 1).eq_ignore_ascii_case("OK");
        self.drop_refused_literals(&tag);
        match self.pending.remove(&tag) {
            Some(Pending::Login { user, credentials }) => {
                let (user, credentials) = match self.sasl.take() {
                    Some((t, responses, mechanism)) if t == tag => {
                        let user = sasl_user(&mechanism, &responses);
                        let creds = Credentials::Sasl {
                            mechanism,
                            responses,
                        };
                        (user, Some(Arc::new(creds)))
                    }
                    _ => (user, credentials),
                };
                if ok {
                    self.link.authenticated = true;
                    self.account = self.ctx.accounts.get(&user).cloned();
                    self.credentials = credentials;
                    tracing::info!(peer = %self.peer, user = %user, mapped = self.account.is_some(), "IMAP login");
                    self.user = Some(user);
                }
            }
            Some(Pending::Select(selected)) => {
                self.selecting = None;
                self.selected = ok.then_some(selected);
            }
            Some(Pending::Deselect) if ok => self.selected = None,
            Some(Pending::Deselect) => {}
            Some(Pending::Fetch) => {
                self.push_out(Out::FetchDone(message));
                return;
            }
            Some(Pending::KnownFetch) => {
                self.finish_known_fetch(ok, &message);
                return;
            }
            Some(Pending::Internal) => {
                if self.mapping.as_deref() == Some(tag.as_str()) {
                    self.mapping = None;
                    // The map is as complete as the server let it be.
                    let numbering = self.search.as_mut().and_then(|s| s.numbering.take());
                    if let Some(tx) = numbering {
                        let _ = tx.send((self.seqmap.by_uid(), self.seqmap.len()));
                    }
                }
                return;
            }
            Some(Pending::Search) => {
                self.finish_search(tag, ok, message);
                return;
            }
            None => {}
        }
        self.push_capability_aware(message);
    }

    /// When the upstream answers a command instead of giving the go-ahead for its literal, the
    /// rest of that command is not sent.
    fn drop_refused_literals(&mut self, tag: &str) {
        if !matches!(self.up_queue.front(), Some(UpItem::Gate { tag: t }) if t == tag) {
            return;
        }
        while let Some(item) = self.up_queue.front() {
            let same = match item {
                UpItem::Gate { tag: t } => t == tag,
                UpItem::Bytes { tag: t, .. } => t.as_deref() == Some(tag),
            };
            if !same {
                break;
            }
            if let Some(UpItem::Bytes { data, .. }) = self.up_queue.pop_front() {
                self.up_queued_bytes = self.up_queued_bytes.saturating_sub(data.len());
            }
        }
    }

    fn on_untagged(&mut self, message: Vec<u8>) {
        if self.search.is_some() && self.take_search_data(&message) {
            return;
        }
        if self.account.is_some() {
            use super::seqmap::{news, MapNews};
            match news(&message) {
                Some(MapNews::Exists(n)) => self.seqmap.exists(n),
                Some(MapNews::Expunge(n)) => self.seqmap.expunge(n),
                Some(MapNews::Fetch { seq, uid, only_uid }) => {
                    self.seqmap.learn(seq, uid);
                    if only_uid && self.mapping.is_some() {
                        // An answer to meshmail's own FETCH (UID): not the client's.
                        return;
                    }
                }
                None => {}
            }
        }
        if self.fetch.is_some() && self.account.is_some() && is_fetch(&message) {
            self.on_fetch_response(message);
            return;
        }
        if self.selecting.is_some() {
            if let Some(v) = uidvalidity(&message) {
                let tag = self.selecting.clone().unwrap_or_default();
                if let Some(Pending::Select(s)) = self.pending.get_mut(&tag) {
                    s.uidvalidity = Some(v);
                }
            }
        }
        self.push_capability_aware(message);
    }

    fn push_capability_aware(&mut self, message: Vec<u8>) {
        let single_line = message.iter().filter(|&&b| b == b'\n').count() == 1;
        let rewritten = single_line
            .then(|| crate::imap::caps::rewrite_line(&message, self.link))
            .flatten();
        self.push_out(Out::Bytes(rewritten.unwrap_or(message)));
    }

    fn on_fetch_response(&mut self, message: Vec<u8>) {
        let Some(active) = self.fetch.as_ref() else {
            self.push_out(Out::Bytes(message));
            return;
        };
        let plan = active.plan.clone();
        let Some(parsed) = fetch::parse_response(&message, &plan) else {
            // Not a FETCH meshmail can read: it carries no content meshmail would change
            // only if it has no body items; refuse to guess.
            self.push_out(Out::ViewFailed(
                "unreadable FETCH response from the server".into(),
            ));
            return;
        };
        let known = parsed.uid.is_some_and(|u| {
            self.fetch
                .as_ref()
                .is_some_and(|f| f.known.contains(&u.get()))
        });
        if known {
            let uid = parsed.uid.map(|u| u.get()).unwrap_or_default();
            let first = self.fetch.as_mut().is_some_and(|f| f.answered.insert(uid));
            if !first {
                // Answered already: Dovecot may run the two FETCHes side by side, and the
                // rest's `n:*` names the last (known) message; that second answer is dropped.
                // A flag update is passed on: another client may have changed the flags.
                if parsed.flags_only {
                    self.push_out(Out::Bytes(message));
                }
                return;
            }
        }
        if !parsed.encrypted && !known {
            // Byte for byte, minus what meshmail added (re-encoding would change case and
            // quoting).
            let mut added = Vec::new();
            if plan.added_uid {
                added.push("UID");
            }
            if plan.added_bodystructure {
                added.push("BODYSTRUCTURE");
            }
            let bytes = match (added.is_empty(), fetch::strip_items(&message, &added)) {
                (true, _) => message,
                (false, Some(stripped)) => stripped,
                (false, None) => match parsed.stripped {
                    Some(items) => fetch::encode_items(parsed.seq, items),
                    None => message,
                },
            };
            self.push_out(Out::Bytes(bytes));
            return;
        }
        let Some(uid) = parsed.uid else {
            self.push_out(Out::ViewFailed("the server gave no UID".into()));
            return;
        };
        let Some(source) = self.view_source() else {
            self.push_out(Out::Bytes(message));
            return;
        };
        let complete = plan.needs_body();
        let future: OutFuture = Box::pin(async move {
            match source.open(uid.get(), parsed.full_message, complete).await {
                Ok(view) => Out::Bytes(fetch::render_view(
                    parsed.seq,
                    parsed.passthrough,
                    &plan.requested,
                    &view,
                )),
                Err(reason) => Out::ViewFailed(reason),
            }
        });
        self.out.push_back(future);
    }
}

/// `* <n> FETCH ` at the start.
fn is_fetch(message: &[u8]) -> bool {
    let Some(rest) = message.strip_prefix(b"* ") else {
        return false;
    };
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    digits > 0
        && rest
            .get(digits..digits + 7)
            .is_some_and(|w| w.eq_ignore_ascii_case(b" FETCH "))
}

/// The UIDVALIDITY in `* OK [UIDVALIDITY n] …`.
fn uidvalidity(message: &[u8]) -> Option<u32> {
    let text = std::str::from_utf8(message).ok()?;
    let upper = text.to_ascii_uppercase();
    let at = upper.find("[UIDVALIDITY ")? + "[UIDVALIDITY ".len();
    let end = upper[at..].find(']')? + at;
    text[at..end].trim().parse().ok()
}

/// The login a SASL exchange authenticated as (PLAIN authcid, XOAUTH2 `user=`, OAUTHBEARER
/// `a=`, LOGIN's first response).
fn sasl_user(mechanism: &str, responses: &[crate::secret::SecretBytes]) -> String {
    let first = responses
        .first()
        .map(|r| r.expose().as_slice())
        .unwrap_or_default();
    match mechanism.to_ascii_uppercase().as_str() {
        "PLAIN" => {
            let mut fields = first.split(|&b| b == 0);
            let authzid = fields.next().unwrap_or_default();
            let authcid = fields.next().unwrap_or_default();
            let id = if authzid.is_empty() { authcid } else { authzid };
            String::from_utf8_lossy(id).into_owned()
        }
        "XOAUTH2" => String::from_utf8_lossy(first)
            .split('\x01')
            .find_map(|f| f.strip_prefix("user=").map(str::to_owned))
            .unwrap_or_default(),
        "OAUTHBEARER" => String::from_utf8_lossy(first)
            .split(['\x01', ','])
            .find_map(|f| f.strip_prefix("a=").map(str::to_owned))
            .unwrap_or_default(),
        "LOGIN" => String::from_utf8_lossy(first).into_owned(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn sasl_users() {
        let plain = [Secret::new(b"\0alice\0secret".to_vec())];
        assert_eq!(sasl_user("PLAIN", &plain), "alice");
        let xoauth = [Secret::new(b"user=bob\x01auth=Bearer x\x01\x01".to_vec())];
        assert_eq!(sasl_user("xoauth2", &xoauth), "bob");
        let bearer = [Secret::new(b"n,a=carol,\x01host=h\x01\x01".to_vec())];
        assert_eq!(sasl_user("OAUTHBEARER", &bearer), "carol");
    }

    #[test]
    fn fetch_and_uidvalidity_lines() {
        assert!(is_fetch(b"* 12 FETCH (UID 3)\r\n"));
        assert!(!is_fetch(b"* 12 EXPUNGE\r\n"));
        assert!(!is_fetch(b"* OK FETCH\r\n"));
        assert_eq!(
            uidvalidity(b"* OK [UIDVALIDITY 1700000000] UIDs valid\r\n"),
            Some(1700000000)
        );
        assert_eq!(uidvalidity(b"* OK [UIDNEXT 5] x\r\n"), None);
    }
}
