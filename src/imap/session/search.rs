//! The mapped session's SEARCH: meshmail's evaluation of the encrypted messages, and the
//! merge with the upstream's answer for the others.

use super::core::{ActiveSearch, Core, Job, SearchJob};
use super::open::OpenFailure;
use super::tags::Kind;
use crate::imap::owned::{Listed, OwnedConnection};
use crate::imap::search::{matches, parse_search_line, Candidate};
use futures_util::{StreamExt, TryStreamExt};
use imap_codec::imap_types::core::Vec1;
use imap_codec::imap_types::search::SearchKey;
use std::sync::Arc;

/// Views opened at once for a SEARCH (decryption itself is limited to one per core).
const OPEN_AT_ONCE: usize = 8;

/// Lists the mailbox on meshmail's connection, opens every encrypted message (cache, index,
/// or decryption) and evaluates the query on each. Answers with the UIDs of the encrypted
/// messages and of those that match. With `numbering`, sequence-set criteria are evaluated in
/// the client's numbering (a message the client has no number for matches none).
pub(super) type LocalSearch = (std::collections::HashSet<u32>, Vec<u32>);

pub(super) async fn search_local(
    job: SearchJob,
    owned: Option<OwnedConnection>,
) -> Result<LocalSearch, String> {
    let SearchJob {
        source,
        criteria,
        numbering,
        recent,
    } = job;
    let owned = owned.ok_or("no connection of meshmail's own")?;
    let mut listed = owned
        .list(&source.selected.name, source.selected.uidvalidity)
        .await
        .map_err(|e| e.to_string())?;
    let mut max_seq = listed.iter().map(|l| l.seq).max().unwrap_or(0);
    if let Some(numbering) = numbering {
        let (seq_of, count) = numbering
            .await
            .map_err(|_| "the session's numbering is not known".to_string())?;
        for l in &mut listed {
            l.seq = seq_of.get(&l.uid).copied().unwrap_or(0);
        }
        max_seq = count;
    }
    if let Some(recent) = recent {
        let recent = recent
            .await
            .map_err(|_| "the session's recent messages are not known".to_string())?;
        for l in &mut listed {
            l.flags.retain(|f| !f.eq_ignore_ascii_case("\\Recent"));
            if recent.contains(&l.uid) {
                l.flags.push("\\Recent".into());
            }
        }
    }
    let max_uid = listed.iter().map(|l| l.uid).max().unwrap_or(0);
    let query = Arc::new(match Vec1::try_from(criteria) {
        Ok(keys) => SearchKey::And(keys),
        Err(_) => SearchKey::All,
    });
    // Message by message: each view is opened (cache, index or decryption; several side by
    // side, decryption one per core), evaluated off the reactor and dropped, so memory does
    // not grow with the mailbox. The first failure ends the search.
    let encrypted: Vec<Listed> = listed.into_iter().filter(|l| l.encrypted).collect();
    let mut evaluated = futures_util::stream::iter(encrypted.into_iter().map(|l| {
        let source = source.clone();
        let owned = owned.clone();
        let query = query.clone();
        async move {
            let view = match source
                .open(
                    Some(&owned),
                    l.uid,
                    Default::default(),
                    false,
                    false,
                    Default::default(),
                )
                .await
            {
                Ok(v) => v,
                // Expunged meanwhile: it matches nothing.
                Err(OpenFailure::Gone) => return Ok((l.uid, false)),
                Err(OpenFailure::Temporary(e)) => return Err(e),
            };
            let uid = l.uid;
            let ready = view.has_search_text();
            let evaluate = move || {
                matches(
                    &query,
                    &Candidate {
                        listed: &l,
                        size: view.size(),
                        text: view.search_text(),
                        max_seq,
                        max_uid,
                    },
                )
            };
            // Decoding a message's text is work for a blocking thread; matching text that is
            // there already is not worth the trip.
            let hit = if ready {
                evaluate()
            } else {
                tokio::task::spawn_blocking(evaluate)
                    .await
                    .map_err(|_| "search stopped".to_string())?
            };
            Ok::<_, String>((uid, hit))
        }
    }))
    .buffered(OPEN_AT_ONCE);
    let mut numbers = std::collections::HashSet::new();
    let mut hits = Vec::new();
    while let Some((uid, hit)) = evaluated.try_next().await? {
        numbers.insert(uid);
        if hit {
            hits.push(uid);
        }
    }
    Ok((numbers, hits))
}

impl Core {
    /// SEARCH of a mapped session: relayed, while meshmail evaluates the encrypted messages
    /// itself on its own connection; the answers are merged when the upstream's is complete.
    pub(super) fn start_search(
        &mut self,
        tag: &str,
        criteria: Vec<SearchKey<'static>>,
        uid: bool,
        bytes: &[u8],
    ) {
        let Some(source) = self.view_source() else {
            self.no(tag, "[UNAVAILABLE] meshmail cannot search this mailbox now");
            return;
        };
        // The search words are the user's: only the fact is logged.
        tracing::info!(peer = %self.peer, uid, keys = criteria.len(), "IMAP SEARCH over encrypted messages");
        // A sequence-set criterion is in the client's numbering, which meshmail's own
        // connection may not share (expunges the client has not seen yet).
        let (mut numbering, numbering_rx) = if criteria
            .iter()
            .any(crate::imap::search::uses_sequence_numbers)
        {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        // \Recent is the client's session's own: asked of it, before its SEARCH.
        let recent = if criteria.iter().any(crate::imap::search::uses_recent) {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let t = self.tags.issue(None, Kind::Recent);
            self.push_up(
                Some(t.clone()),
                format!("{t} UID SEARCH RECENT\r\n").into_bytes(),
            );
            Some((t, tx, rx))
        } else {
            None
        };
        let (recent, recent_rx) = match recent {
            Some((t, tx, rx)) => (Some((t, Vec::new(), tx)), Some(rx)),
            None => (None, None),
        };
        self.jobs.push_back(Job::Search(Box::new(SearchJob {
            source,
            criteria,
            numbering: numbering_rx,
            recent: recent_rx,
        })));
        if self.seqmap.complete() {
            if let Some(tx) = numbering.take() {
                let _ = tx.send((self.seqmap.by_uid(), self.seqmap.len()));
            }
        }
        if (!uid || numbering.is_some()) && !self.seqmap.complete() {
            // Sequence numbers of what meshmail finds come from the client's own session.
            let t = self.tags.issue(None, Kind::Mapping);
            self.mapping = Some(t.clone());
            self.push_up(
                Some(t.clone()),
                format!("{t} FETCH 1:* (UID)\r\n").into_bytes(),
            );
        }
        self.search = Some(ActiveSearch {
            uid,
            upstream: Vec::new(),
            numbering,
            recent,
        });
        self.forward_collected(tag, Kind::Search, bytes);
    }

    /// `* SEARCH` during meshmail's SEARCH: kept for the merge. True when taken.
    pub(super) fn take_search_data(&mut self, message: &[u8]) -> bool {
        let Some(active) = self.search.as_mut() else {
            return false;
        };
        let Some(numbers) = parse_search_line(message) else {
            return false;
        };
        // meshmail's own SEARCH RECENT runs first, and is answered first.
        match active.recent.as_mut() {
            Some((_, recent, _)) => recent.extend(numbers),
            None => active.upstream.extend(numbers),
        }
        true
    }
}

/// The answer to a SEARCH: the server's numbers for the messages meshmail did not evaluate,
/// and meshmail's hits, in the client's numbering.
pub(super) fn merged_answer(
    done: &super::core::SearchDone,
    local: Result<LocalSearch, String>,
) -> Vec<u8> {
    let (encrypted, hits) = match local {
        Ok(l) => l,
        Err(reason) => {
            return format!(
                "{} NO [UNAVAILABLE] {reason}; try again later\r\n",
                done.client_tag
            )
            .into_bytes()
        }
    };
    let (encrypted, hits): (std::collections::HashSet<u32>, Vec<u32>) = match &done.seq_of {
        None => (encrypted, hits),
        Some(map) => (
            encrypted
                .iter()
                .filter_map(|u| map.get(u).copied())
                .collect(),
            hits.iter().filter_map(|u| map.get(u).copied()).collect(),
        ),
    };
    let mut all: Vec<u32> = done
        .upstream
        .iter()
        .copied()
        .filter(|n| !encrypted.contains(n))
        .chain(hits)
        .collect();
    all.sort_unstable();
    all.dedup();
    let mut out = b"* SEARCH".to_vec();
    for n in all {
        out.extend_from_slice(format!(" {n}").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&done.line);
    out
}
