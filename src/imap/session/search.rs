//! The mapped session's SEARCH: meshmail's evaluation of the encrypted messages, and the
//! merge with the upstream's answer for the others.

use super::open::ViewSource;
use super::{ClientNumbering, LocalSearch, Out, Session};
use crate::imap::owned::Listed;
use crate::imap::search::{matches, parse_search_line, Candidate};
use futures_util::{StreamExt, TryStreamExt};
use imap_codec::imap_types::core::Vec1;
use imap_codec::imap_types::search::SearchKey;

/// Views opened at once for a SEARCH (decryption itself is limited to one per core).
const OPEN_AT_ONCE: usize = 8;

/// Lists the mailbox on meshmail's connection, opens every encrypted message (cache, index,
/// or decryption) and evaluates the query on each. Answers with the UIDs of the encrypted
/// messages and of those that match. With `numbering`, sequence-set criteria are evaluated in
/// the client's numbering (a message the client has no number for matches none).
pub(super) async fn search_local(
    source: ViewSource,
    criteria: Vec<SearchKey<'static>>,
    numbering: Option<tokio::sync::oneshot::Receiver<ClientNumbering>>,
) -> Result<LocalSearch, String> {
    let owned = source
        .owned
        .clone()
        .ok_or("no connection of meshmail's own")?;
    let mut listed = owned
        .list(&source.selected.mailbox, source.selected.uidvalidity)
        .await
        .map_err(|e| e.0)?;
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
    let max_uid = listed.iter().map(|l| l.uid).max().unwrap_or(0);
    let number = |l: &Listed| l.uid;
    // Opened side by side (decryption takes one slot per core); the first failure ends it.
    let encrypted: Vec<Listed> = listed.iter().filter(|l| l.encrypted).cloned().collect();
    let opened: Vec<_> = futures_util::stream::iter(encrypted.into_iter().map(|l| {
        let source = source.clone();
        async move {
            let view = source.open(l.uid, None, false).await?;
            Ok::<_, String>((l, view))
        }
    }))
    .buffered(OPEN_AT_ONCE)
    .try_collect()
    .await?;
    let query = match Vec1::try_from(criteria) {
        Ok(keys) => SearchKey::And(keys),
        Err(_) => SearchKey::All,
    };
    tokio::task::spawn_blocking(move || {
        let numbers = opened.iter().map(|(l, _)| number(l)).collect();
        let hits = opened
            .iter()
            .filter(|(l, view)| {
                matches(
                    &query,
                    &Candidate {
                        listed: l,
                        size: view.size(),
                        text: view.search_text(),
                        max_seq,
                        max_uid,
                    },
                )
            })
            .map(|(l, _)| number(l))
            .collect();
        (numbers, hits)
    })
    .await
    .map_err(|_| "search stopped".to_string())
}

impl Session {
    /// `* SEARCH` during meshmail's SEARCH: kept for the merge. True when taken.
    pub(super) fn take_search_data(&mut self, message: &[u8]) -> bool {
        let Some(active) = self.search.as_mut() else {
            return false;
        };
        match parse_search_line(message) {
            Some(numbers) => {
                active.upstream.extend(numbers);
                true
            }
            None => false,
        }
    }

    /// The upstream completed the SEARCH: answer with the merged numbers once meshmail's own
    /// evaluation is done.
    pub(super) fn finish_search(&mut self, tag: String, ok: bool, line: Vec<u8>) {
        let Some(active) = self.search.take() else {
            self.push_out(Out::Bytes(line));
            return;
        };
        if !ok {
            active.local.abort();
            self.push_out(Out::Bytes(line));
        } else {
            // meshmail's own results are UIDs; a SEARCH in sequence numbers gets them numbered
            // as the client's session numbers them.
            let seq_of = (!active.uid).then(|| self.seqmap.by_uid());
            self.out.push_back(Box::pin(async move {
                match active.local.await {
                    Ok(Ok((encrypted, hits))) => {
                        let (encrypted, hits) = match &seq_of {
                            None => (encrypted, hits),
                            Some(map) => (
                                encrypted
                                    .iter()
                                    .filter_map(|u| map.get(u).copied())
                                    .collect(),
                                hits.iter().filter_map(|u| map.get(u).copied()).collect(),
                            ),
                        };
                        let mut all: Vec<u32> = active
                            .upstream
                            .into_iter()
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
                        out.extend_from_slice(&line);
                        Out::Bytes(out)
                    }
                    Ok(Err(reason)) => Out::Bytes(
                        format!("{tag} NO [UNAVAILABLE] {reason}; try again later\r\n")
                            .into_bytes(),
                    ),
                    Err(_) => Out::Bytes(
                        format!("{tag} NO [UNAVAILABLE] search failed; try again later\r\n")
                            .into_bytes(),
                    ),
                }
            }));
        }
        // Commands the client pipelined behind the SEARCH are handled now.
        if let Err(bye) = self.on_client_bytes(&[]) {
            self.push_out(Out::Close(bye));
        }
    }
}
