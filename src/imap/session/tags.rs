//! Commands in flight: every command goes upstream under meshmail's own tag, and the server's
//! tagged answer is given back to the client under the client's tag.
//!
//! This is what makes an answer belong to the command that caused it whatever the client
//! does: a client that reuses a tag, or pipelines two commands with one tag, cannot make the
//! answer to one count as the answer to the other (issue: a reused tag once bound a session to
//! another user's account).

use std::collections::HashMap;

/// What a command in flight was, as far as the session's state is concerned.
pub(super) enum Kind {
    /// Relayed; its answer changes nothing meshmail keeps.
    Relay,
    /// LOGIN or AUTHENTICATE (the pending login is in the state).
    Login,
    /// SELECT or EXAMINE of this mailbox.
    Select(super::state::Mailbox),
    /// CLOSE or UNSELECT.
    Deselect,
    /// RENAME: the selected mailbox may move with it.
    Rename { from: String, to: String },
    /// IDLE: the client ends it with `DONE`.
    Idle,
    /// LOGOUT.
    Logout,
    /// The client's FETCH, answered through views.
    Fetch,
    /// The client's SEARCH, merged with meshmail's own evaluation.
    Search,
    /// meshmail's own UID FETCH of messages it knows (answers completed from views).
    KnownFetch,
    /// meshmail's own `FETCH 1:* (UID)` for the session's numbering.
    Mapping,
    /// meshmail's own `UID SEARCH RECENT` in the client's session.
    Recent,
    /// meshmail's own command whose answer the client does not see.
    Internal,
    /// At the store: a device's FETCH that asked for `X-MESH-RECRYPT` (stripped upstream).
    Recrypt,
}

impl Kind {
    /// Commands that change the session's state: nothing else is in flight with them, so
    /// every untagged response meanwhile is theirs.
    pub fn exclusive(&self) -> bool {
        matches!(
            self,
            Kind::Login | Kind::Select(_) | Kind::Deselect | Kind::Rename { .. } | Kind::Logout
        )
    }
}

/// One command in flight.
pub(super) struct Inflight {
    /// The client's tag; `None` for meshmail's own commands.
    pub client_tag: Option<String>,
    pub kind: Kind,
}

/// The table of commands in flight.
#[derive(Default)]
pub(super) struct Tags {
    next: u64,
    inflight: HashMap<String, Inflight>,
    /// Searches whose results the server keeps updating after they complete (RFC 5267
    /// `RETURN (UPDATE)`): meshmail's tag and the client's, newest last.
    contexts: std::collections::VecDeque<(String, String)>,
}

/// Search contexts remembered at most (the server ends older ones anyway: Dovecot keeps 10).
const MAX_CONTEXTS: usize = 64;

impl Tags {
    /// A new tag of meshmail's for `kind`, on behalf of `client_tag`.
    pub fn issue(&mut self, client_tag: Option<&str>, kind: Kind) -> String {
        self.next += 1;
        let tag = format!("M{}", self.next);
        self.inflight.insert(
            tag.clone(),
            Inflight {
                client_tag: client_tag.map(str::to_owned),
                kind,
            },
        );
        tag
    }

    /// The command the server's tagged answer `tag` completes.
    pub fn complete(&mut self, tag: &str) -> Option<Inflight> {
        self.inflight.remove(tag)
    }

    /// A device's FETCH with `X-MESH-RECRYPT` is in flight.
    pub fn recrypting(&self) -> bool {
        self.inflight
            .values()
            .any(|i| matches!(i.kind, Kind::Recrypt))
    }

    pub fn is_empty(&self) -> bool {
        self.inflight.is_empty()
    }

    /// Nothing in flight but an IDLE.
    pub fn only_idle(&self) -> bool {
        self.inflight.values().all(|i| matches!(i.kind, Kind::Idle))
    }

    /// A state-changing command is in flight.
    pub fn exclusive_in_flight(&self) -> bool {
        self.inflight.values().any(|i| i.kind.exclusive())
    }

    /// The client's IDLE in flight, if any.
    pub fn idle(&self) -> Option<&str> {
        self.inflight
            .iter()
            .find(|(_, i)| matches!(i.kind, Kind::Idle))
            .map(|(t, _)| t.as_str())
    }

    /// The client's tag for meshmail's tag `own`: a command in flight, or a search context.
    pub fn client_tag_of(&self, own: &str) -> Option<&str> {
        match self.inflight.get(own) {
            Some(i) => i.client_tag.as_deref(),
            None => self
                .contexts
                .iter()
                .rev()
                .find(|(o, _)| o == own)
                .map(|(_, c)| c.as_str()),
        }
    }

    /// Remembers a search context: the server names it by meshmail's tag after it completes.
    pub fn remember_context(&mut self, own: &str, client: &str) {
        if self.contexts.len() == MAX_CONTEXTS {
            self.contexts.pop_front();
        }
        self.contexts.push_back((own.to_owned(), client.to_owned()));
    }

    /// `CANCELUPDATE "t1" "t2"` with the client's tags given as meshmail's.
    pub fn cancelupdate(&self, line: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(line.len());
        let mut parts = line.split(|&b| b == b'"');
        if let Some(first) = parts.next() {
            out.extend_from_slice(first);
        }
        for (i, part) in parts.enumerate() {
            out.push(b'"');
            let own = (i % 2 == 0)
                .then(|| std::str::from_utf8(part).ok())
                .flatten()
                .and_then(|client| {
                    self.contexts
                        .iter()
                        .rev()
                        .find(|(_, c)| c == client)
                        .map(|(o, _)| o.as_bytes())
                });
            out.extend_from_slice(own.unwrap_or(part));
        }
        out
    }

    /// The kind of a command in flight.
    pub fn kind_mut(&mut self, tag: &str) -> Option<&mut Kind> {
        self.inflight.get_mut(tag).map(|i| &mut i.kind)
    }

    /// A SELECT or EXAMINE is in flight.
    pub fn selecting(&self) -> bool {
        self.inflight
            .values()
            .any(|i| matches!(i.kind, Kind::Select(_)))
    }

    /// The selection in flight, for the untagged data that answers it.
    pub fn selecting_mut(&mut self) -> Option<&mut super::state::Mailbox> {
        self.inflight.values_mut().find_map(|i| match &mut i.kind {
            Kind::Select(m) => Some(m),
            _ => None,
        })
    }
}

/// The client's tag at the start of a command line, if it is a valid one (RFC 9051: any
/// ASTRING-CHAR but `+`).
pub(super) fn client_tag(line: &[u8]) -> Option<&str> {
    let end = line.iter().position(|&b| b == b' ')?;
    let tag = &line[..end];
    let valid = !tag.is_empty()
        && tag.iter().all(|&b| {
            b.is_ascii_graphic()
                && !matches!(b, b'(' | b')' | b'{' | b'%' | b'*' | b'"' | b'\\' | b'+')
        });
    if valid {
        std::str::from_utf8(tag).ok()
    } else {
        None
    }
}

/// The first line of a command with its tag replaced by `tag`.
pub(super) fn retag(line: &[u8], tag: &str) -> Vec<u8> {
    let rest = line
        .iter()
        .position(|&b| b == b' ')
        .map_or(&line[line.len()..], |p| &line[p..]);
    let mut out = Vec::with_capacity(tag.len() + rest.len());
    out.extend_from_slice(tag.as_bytes());
    out.extend_from_slice(rest);
    out
}

/// An untagged response that names a command by its tag (RFC 4731 `* ESEARCH (TAG "M4") …`,
/// also for ESORT and CONTEXT=SEARCH), with meshmail's tag given back as the client's.
pub(super) fn untag_correlator(message: &[u8], tags: &Tags) -> Option<Vec<u8>> {
    const PREFIX: &[u8] = b"* ESEARCH (TAG \"";
    let head = message.get(..PREFIX.len())?;
    if !head.eq_ignore_ascii_case(PREFIX) {
        return None;
    }
    let rest = &message[PREFIX.len()..];
    let end = rest.iter().position(|&b| b == b'"')?;
    let own = std::str::from_utf8(&rest[..end]).ok()?;
    let client = tags.client_tag_of(own)?;
    let mut out = Vec::with_capacity(message.len() + client.len());
    out.extend_from_slice(head);
    out.extend_from_slice(client.as_bytes());
    out.extend_from_slice(&rest[end..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_meshmails_own_and_answers_find_their_command() {
        let mut tags = Tags::default();
        let a = tags.issue(Some("x"), Kind::Relay);
        let b = tags.issue(Some("x"), Kind::Login);
        assert_ne!(a, b, "a reused client tag still gets two tags upstream");
        assert!(tags.exclusive_in_flight());
        assert!(matches!(
            tags.complete(&a).map(|i| i.kind),
            Some(Kind::Relay)
        ));
        assert!(matches!(
            tags.complete(&b).map(|i| i.kind),
            Some(Kind::Login)
        ));
        assert!(
            tags.complete(&b).is_none(),
            "an answer completes one command once"
        );
        assert!(tags.is_empty());
    }

    #[test]
    fn client_tags_are_checked_and_replaced() {
        assert_eq!(client_tag(b"a1 NOOP\r\n"), Some("a1"));
        assert_eq!(client_tag(b"+ x\r\n"), None);
        assert_eq!(client_tag(b"* NOOP\r\n"), None);
        assert_eq!(client_tag(b"NOOP\r\n"), None);
        assert_eq!(client_tag(b" NOOP\r\n"), None);
        assert_eq!(retag(b"a1 SELECT INBOX\r\n", "M7"), b"M7 SELECT INBOX\r\n");
        let mut tags = Tags::default();
        let own = tags.issue(Some("c.1"), Kind::Relay);
        let esearch = format!("* ESEARCH (TAG \"{own}\") UID ALL 1:3\r\n");
        assert_eq!(
            untag_correlator(esearch.as_bytes(), &tags).as_deref(),
            Some(&b"* ESEARCH (TAG \"c.1\") UID ALL 1:3\r\n"[..])
        );
        assert!(untag_correlator(b"* ESEARCH (TAG \"M99\") ALL 1\r\n", &tags).is_none());
        // A search context outlives its command (RFC 5267).
        let ctx = tags.issue(Some("s1"), Kind::Relay);
        tags.remember_context(&ctx, "s1");
        tags.complete(&ctx);
        let update = format!("* ESEARCH (TAG \"{ctx}\") ADDTO (0 3)\r\n");
        assert_eq!(
            untag_correlator(update.as_bytes(), &tags).as_deref(),
            Some(&b"* ESEARCH (TAG \"s1\") ADDTO (0 3)\r\n"[..])
        );
        assert_eq!(
            tags.cancelupdate(b"M9 CANCELUPDATE \"s1\" \"zz\"\r\n"),
            format!("M9 CANCELUPDATE \"{ctx}\" \"zz\"\r\n").into_bytes()
        );
    }
}
