//! Messages from the upstream: continuation requests, untagged data and tagged completions.
//! Everything is relayed byte for byte except capability lists (filtered), tags (given back
//! as the client wrote them), the continuation requests meshmail asked for itself, and FETCH
//! responses of encrypted messages in a mapped session (answered from the decrypted view).
//!
//! The session's state changes only here, on the server's tagged answer to the command in
//! flight that asked for the change; the response codes it relies on (`UIDVALIDITY`,
//! `READ-ONLY`) are parsed by imap-codec, never searched for in text.

use super::core::{
    Core, Out, RecryptJob, SearchDone, StreamedFetch, StreamedStart, UpItem, ViewJob,
};
use super::state::{renamed, State};
use super::tags::{Inflight, Kind};
use crate::imap::fetch;
use crate::imap::owned::Credentials;
use imap_codec::decode::Decoder;
use imap_codec::imap_types::response::{Code, Response, Status, StatusKind};
use imap_codec::ResponseCodec;
use std::sync::Arc;

/// An OK status response as imap-codec reads it: the codes meshmail uses.
struct StatusInfo {
    uidvalidity: Option<u32>,
    read_only: bool,
}

/// Reads an OK status line (`* OK [...] …`, `tag OK …`); `None` for anything else.
fn status(message: &[u8]) -> Option<StatusInfo> {
    let (rest, response) = ResponseCodec::default().decode(message).ok()?;
    if !rest.is_empty() {
        return None;
    }
    let body = match response {
        Response::Status(Status::Untagged(body)) => body,
        Response::Status(Status::Tagged(tagged)) => tagged.body,
        _ => return None,
    };
    if body.kind != StatusKind::Ok {
        return None;
    }
    Some(StatusInfo {
        uidvalidity: match body.code {
            Some(Code::UidValidity(v)) => Some(v.get()),
            _ => None,
        },
        read_only: matches!(body.code, Some(Code::ReadOnly)),
    })
}

/// The first word of a line and whether the second is `OK`.
fn tag_and_ok(message: &[u8]) -> (String, bool) {
    let mut words = message.splitn(3, |&b| b == b' ');
    let tag = String::from_utf8_lossy(words.next().unwrap_or_default()).into_owned();
    let ok = words.next().is_some_and(|w| w.eq_ignore_ascii_case(b"OK"));
    (tag, ok)
}

impl Core {
    pub(super) fn on_upstream_message(&mut self, message: Vec<u8>) {
        if message.starts_with(b"+") {
            self.on_continuation(message);
        } else if message.starts_with(b"* ") {
            self.on_untagged(message);
        } else {
            self.on_tagged(message);
        }
    }

    fn on_continuation(&mut self, message: Vec<u8>) {
        if self.up_written == 0 && matches!(self.up_queue.front(), Some(UpItem::Gate { .. })) {
            // The go-ahead meshmail waited for; the client already had its own.
            self.up_queue.pop_front();
            return;
        }
        if let State::Authenticating(login) = &mut self.state {
            if let Some(sasl) = login.sasl.as_mut() {
                // A challenge: the client may now send one response line.
                sasl.challenged = true;
            }
        }
        self.push_out(Out::Bytes(message));
    }

    fn on_tagged(&mut self, message: Vec<u8>) {
        let (tag, ok) = tag_and_ok(&message);
        self.drop_refused_literals(&tag);
        let Some(Inflight { client_tag, kind }) = self.tags.complete(&tag) else {
            // An answer to no command in flight cannot be given to anyone.
            tracing::warn!(peer = %self.peer, "the server answered a command that is not in flight");
            return;
        };
        let mut line = match &client_tag {
            Some(client) => super::tags::retag(&message, client),
            None => message.clone(),
        };
        match kind {
            Kind::Login => {
                if let Some(reason) = self.on_login_answer(ok) {
                    let client = client_tag.as_deref().unwrap_or("*");
                    line = format!("{client} NO {reason}\r\n").into_bytes();
                }
            }
            Kind::Select(mut mailbox) => {
                if ok && self.state.is_authenticated() {
                    mailbox.read_only |= status(&message).is_some_and(|s| s.read_only);
                    let state = std::mem::replace(&mut self.state, State::Logout);
                    if let State::Authenticated(account) = state {
                        tracing::debug!(peer = %self.peer, mailbox = %mailbox.name, "selected");
                        self.state = State::Selected(account, mailbox);
                    } else {
                        self.state = state;
                    }
                }
            }
            Kind::Deselect if ok => {
                let state = std::mem::replace(&mut self.state, State::Logout);
                self.state = state.deselected();
                self.seqmap = Default::default();
            }
            Kind::Rename { from, to } if ok => {
                if let State::Selected(_, mailbox) = &mut self.state {
                    if let Some(name) = renamed(&mailbox.name, &from, &to) {
                        mailbox.name = name;
                    }
                }
            }
            Kind::Logout => self.state = State::Logout,
            Kind::Fetch => {
                // The store's refusal of the partials is answered before anything is fetched.
                let refused = !ok && crate::store::item::mentions(&message);
                if let (true, Some(client)) = (refused, client_tag.as_deref()) {
                    if self.fetch_again_without_partials(client) {
                        return;
                    }
                }
                self.push_out(Out::FetchDone(line));
                return;
            }
            Kind::KnownFetch => {
                self.finish_known_fetch(ok, &message);
                return;
            }
            Kind::Mapping => {
                self.mapping = None;
                // The map is as complete as the server let it be.
                if let Some(tx) = self.search.as_mut().and_then(|s| s.numbering.take()) {
                    let _ = tx.send((self.seqmap.by_uid(), self.seqmap.len()));
                }
                return;
            }
            Kind::Recent => {
                if let Some((_, uids, tx)) = self.search.as_mut().and_then(|s| s.recent.take()) {
                    let _ = tx.send(uids);
                }
                return;
            }
            Kind::Search => {
                self.finish_search(client_tag.unwrap_or_default(), ok, line);
                return;
            }
            Kind::Internal => return,
            Kind::Deselect | Kind::Rename { .. } | Kind::Relay | Kind::Idle | Kind::Recrypt => {}
        }
        if client_tag.is_some() {
            self.push_capability_aware(line);
        }
        // Commands the client pipelined behind a state change are handled now.
        self.pump_client();
    }

    /// The server answered the login in flight: the one place the account is bound. Returns
    /// meshmail's reason when it cancelled the exchange itself.
    fn on_login_answer(&mut self, ok: bool) -> Option<&'static str> {
        let state = std::mem::replace(&mut self.state, State::Logout);
        let State::Authenticating(mut login) = state else {
            self.state = state;
            return None;
        };
        if let Some(reason) = login.sasl.as_ref().and_then(|s| s.refused) {
            if ok {
                // The server logged in despite the cancel: nothing in this session is bound.
                self.push_out(Out::Close(format!("* BYE {reason}\r\n").into_bytes()));
            } else {
                self.state = State::NotAuthenticated;
            }
            return Some(reason);
        }
        if let Some(sasl) = login.sasl.take() {
            let user = crate::sasl::authenticated_user(&sasl.mechanism, &sasl.responses);
            login.user = user.unwrap_or_default();
            login.credentials = Some(Arc::new(Credentials::Sasl {
                mechanism: sasl.mechanism,
                responses: sasl.responses,
            }));
        }
        let user = login.user.clone();
        self.state = State::logged_in(
            login,
            ok,
            &self.ctx.accounts,
            self.ctx.store.as_deref(),
            self.client_key.as_deref(),
        );
        if ok {
            let mapped = self.state.mapped().is_some();
            let device = self.state.device().map(|d| d.device.as_str());
            tracing::info!(peer = %self.peer, user = %user, mapped, device, "IMAP login");
        }
        None
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
        if message.len() >= 5 && message[2..5].eq_ignore_ascii_case(b"BYE") {
            // The server is closing the connection; the client reads why from its BYE.
            self.state = State::Logout;
        }
        if self.search.is_some() && self.take_search_data(&message) {
            return;
        }
        if message.len() > 4 && message[2..].starts_with(b"OK [") {
            // A response code for the selection in flight (only SELECT/EXAMINE run then).
            if let Some(v) = status(&message).and_then(|s| s.uidvalidity) {
                if let Some(selecting) = self.tags.selecting_mut() {
                    selecting.uidvalidity = Some(v);
                }
            }
        }
        if let Some(untagged) = super::tags::untag_correlator(&message, &self.tags) {
            self.push_out(Out::Bytes(untagged));
            return;
        }
        if let (Some(device), Some(role)) = (self.state.device(), self.ctx.store.as_ref()) {
            if self.tags.recrypting() && message.starts_with(b"* ") {
                // Partials are computed on a blocking thread, in the client's order.
                self.push_out(Out::Recrypt(Box::new(RecryptJob {
                    role: role.clone(),
                    device: device.clone(),
                    mailbox: self.state.selected_name().unwrap_or_default().to_owned(),
                    response: message,
                    streamed: None,
                })));
                return;
            }
        }
        let scanned = fetch::response::scan(&message);
        // The numbering starts with the SELECT's own EXISTS, before its tagged OK.
        let follows_mailbox = self.state.mapped_selected().is_some()
            || (self.state.mapped().is_some() && self.tags.selecting());
        if follows_mailbox {
            use super::seqmap::MapNews;
            match super::seqmap::news(&message, scanned.as_ref()) {
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
            if self.fetch.is_some() && scanned.is_some() && self.state.mapped_selected().is_some() {
                self.on_fetch_response(message);
                return;
            }
        }
        self.push_capability_aware(message);
    }

    /// A part of a FETCH response whose large literal is passed on as it arrives (see
    /// `imap::frame::Piece`). In a device's FETCH with partials at the store, the response's
    /// start and the message's first [`item::PREFIX`] bytes are held until the partials can be
    /// computed from them; the item then goes before the last part's closing parenthesis.
    /// What a response gets is decided by its first part: a FETCH with the item sent while
    /// another response streams does not make the rest of that one a message to answer.
    pub(super) fn on_upstream_part(&mut self, bytes: Vec<u8>, last: bool) {
        use crate::store::item;
        let binding = self.state.device().cloned().zip(self.ctx.store.clone());
        let (head, literal, bytes) = match self.streamed.take() {
            Some(StreamedFetch::Forwarding(item)) => {
                match (last, item) {
                    (true, Some(item)) => self.push_out(Out::RecryptTail(bytes, item)),
                    (true, None) => self.push_out(Out::Bytes(bytes)),
                    (false, item) => {
                        self.streamed = Some(StreamedFetch::Forwarding(item));
                        self.push_out(Out::Bytes(bytes));
                    }
                }
                return;
            }
            Some(StreamedFetch::Collecting {
                head,
                literal,
                bytes: mut held,
            }) => {
                held.extend_from_slice(&bytes);
                (head, literal, held)
            }
            None => {
                // The response up to its literal: `... BODY[] {n}` CRLF.
                let answered = binding.is_some() && self.tags.recrypting();
                if !answered || !literal_is_the_message(&bytes) {
                    self.streamed = (!last).then_some(StreamedFetch::Forwarding(None));
                    self.push_out(Out::Bytes(bytes));
                    return;
                }
                let literal = crate::imap::frame::announced(&bytes).unwrap_or(0) as usize;
                (bytes.len(), literal, bytes)
            }
        };
        // Only a device's session at the store ever collects.
        let Some((device, role)) = binding else {
            self.push_out(Out::Bytes(bytes));
            return;
        };
        let mailbox = self.state.selected_name().unwrap_or_default().to_owned();
        if last {
            // Whole after all: answered as a whole response is.
            self.push_out(Out::Recrypt(Box::new(RecryptJob {
                role,
                device,
                mailbox,
                response: bytes,
                streamed: None,
            })));
            return;
        }
        let want = literal.min(item::PREFIX);
        if bytes.len() - head < want {
            self.streamed = Some(StreamedFetch::Collecting {
                head,
                literal,
                bytes,
            });
            return;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let start = StreamedStart {
            uid: uid_in(&bytes[..head]),
            prefix: bytes[head..head + want].to_vec(),
            item: tx,
        };
        self.streamed = Some(StreamedFetch::Forwarding(Some(rx)));
        self.push_out(Out::Recrypt(Box::new(RecryptJob {
            role,
            device,
            mailbox,
            response: bytes,
            streamed: Some(start),
        })));
    }

    fn push_capability_aware(&mut self, message: Vec<u8>) {
        let single_line = message.iter().filter(|&&b| b == b'\n').count() == 1;
        let rewritten = single_line
            .then(|| crate::imap::caps::rewrite_line(&message, self.link()))
            .flatten();
        self.push_out(Out::Bytes(rewritten.unwrap_or(message)));
    }

    /// A FETCH response during the mapped session's view FETCH.
    fn on_fetch_response(&mut self, message: Vec<u8>) {
        let Some(active) = self.fetch.as_ref() else {
            self.push_out(Out::Bytes(message));
            return;
        };
        let plan = active.plan.clone();
        let Some(parsed) = fetch::read_response(&message, &plan) else {
            // Framing meshmail cannot read: the server's bytes, as they are.
            self.push_out(Out::Bytes(message));
            return;
        };
        let known = parsed
            .uid
            .is_some_and(|u| self.fetch.as_ref().is_some_and(|f| f.known.contains(&u)));
        if known {
            let uid = parsed.uid.unwrap_or_default();
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
        if !parsed.encrypted && !parsed.forged && !known {
            if let Some(bytes) = parsed.as_sent {
                self.push_out(Out::Bytes(bytes));
            }
            return;
        }
        let (Some(uid), Some(source)) = (parsed.uid, self.view_source()) else {
            self.push_out(Out::Bytes(message));
            return;
        };
        self.push_out(Out::View(Box::new(ViewJob {
            source,
            uid,
            forged: parsed.forged,
            ciphertext: parsed.full_message,
            recrypt: parsed.recrypt,
            seq: parsed.seq,
            passthrough: parsed.passthrough,
            plan,
        })));
    }

    /// The upstream completed the SEARCH: answer with the merged numbers once meshmail's own
    /// evaluation is done.
    pub(super) fn finish_search(&mut self, client_tag: String, ok: bool, line: Vec<u8>) {
        let Some(active) = self.search.as_mut() else {
            self.push_out(Out::Bytes(line));
            return;
        };
        let upstream = std::mem::take(&mut active.upstream);
        // meshmail's own results are UIDs; a SEARCH in sequence numbers gets them numbered as
        // the client's session numbers them.
        let seq_of = (!active.uid).then(|| self.seqmap.by_uid());
        if !ok {
            self.push_out(Out::Bytes(line));
            self.search = None;
            self.pump_client();
            return;
        }
        self.push_out(Out::SearchDone(Box::new(SearchDone {
            client_tag,
            line,
            upstream,
            seq_of,
        })));
    }
}

/// True when the literal a streamed response's first part announces is the message itself
/// (`BODY[] {n}`), the one the store computes partials for.
fn literal_is_the_message(head: &[u8]) -> bool {
    let text = String::from_utf8_lossy(head);
    let Some(open) = text.rfind('{') else {
        return false;
    };
    text[..open]
        .trim_end()
        .to_ascii_uppercase()
        .ends_with(" BODY[]")
}

/// The UID a FETCH response's start names (`UID <n>`), if it does before the literal.
fn uid_in(head: &[u8]) -> Option<u32> {
    let text = String::from_utf8_lossy(head);
    let mut words = text.split(|c: char| c.is_ascii_whitespace() || c == '(');
    while let Some(word) = words.next() {
        if word.eq_ignore_ascii_case("UID") {
            return words.next()?.parse().ok();
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_streamed_responses_start_names_its_literal_and_uid() {
        assert!(literal_is_the_message(
            b"* 1 FETCH (UID 3 BODY[] {300000}\r\n"
        ));
        assert!(literal_is_the_message(
            b"* 1 FETCH (FLAGS () body[] {300000}\r\n"
        ));
        assert!(!literal_is_the_message(
            b"* 1 FETCH (UID 3 BODY[1] {300000}\r\n"
        ));
        assert!(!literal_is_the_message(
            b"* 1 FETCH (UID 3 BODY[]<0> {300000}\r\n"
        ));
        assert_eq!(uid_in(b"* 1 FETCH (UID 3 BODY[] {300000}\r\n"), Some(3));
        assert_eq!(
            uid_in(b"* 1 FETCH (FLAGS (\\Seen) UID 42 BODY[] {9}\r\n"),
            Some(42)
        );
        assert_eq!(uid_in(b"* 1 FETCH (BODY[] {9}\r\n"), None);
    }

    #[test]
    fn response_codes_come_from_the_codec_not_from_text() {
        let s = status(b"* OK [UIDVALIDITY 1700000000] UIDs valid\r\n").expect("status");
        assert_eq!(s.uidvalidity, Some(1700000000));
        // A mailbox named like a response code is text, not a code.
        let s = status(b"* OK Selected \"[UIDVALIDITY 5]\"\r\n").expect("status");
        assert_eq!(s.uidvalidity, None);
        assert!(status(b"* LIST () \"/\" \"[UIDVALIDITY 5]\"\r\n").is_none());
        assert!(
            status(b"M3 OK [READ-ONLY] Examined\r\n")
                .expect("tagged")
                .read_only
        );
    }
}
