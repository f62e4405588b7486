//! UID FETCH of messages meshmail already knows to be encrypted (they are in the index):
//! their content is never asked of the server again. Such a FETCH becomes
//!
//! 1. (for a non-PEEK fetch in a read-write mailbox) `UID STORE known +FLAGS.SILENT (\Seen)`;
//! 2. `UID FETCH known (UID FLAGS …)`: only the items that do not depend on content, each
//!    answer completed from the view (cache, index or decryption);
//! 3. the client's FETCH for the other UIDs, as usual (or nothing, when none are left).

use super::core::{ActiveFetch, Core, Out};
use super::tags::Kind;
use crate::imap::fetch::FetchPlan;
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::Vec1;
use imap_codec::imap_types::fetch::MessageDataItemName;
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};
use std::collections::BTreeSet;
use std::num::NonZeroU32;
use std::sync::Arc;

/// `(low, high)` inclusive; `u32::MAX` stands for `*`.
type Range = (u32, u32);

fn ranges(set: &SequenceSet) -> Vec<Range> {
    let v = |x: &SeqOrUid| match x {
        SeqOrUid::Value(v) => v.get(),
        SeqOrUid::Asterisk => u32::MAX,
    };
    set.0
        .as_ref()
        .iter()
        .map(|s| match s {
            Sequence::Single(x) => (v(x), v(x)),
            Sequence::Range(a, b) => (v(a).min(v(b)), v(a).max(v(b))),
        })
        .collect()
}

fn contains(ranges: &[Range], n: u32) -> bool {
    ranges.iter().any(|(a, b)| (*a..=*b).contains(&n))
}

/// The ranges of `set` without the UIDs in `known`.
fn subtract(set: &[Range], known: &BTreeSet<u32>) -> Vec<Range> {
    let mut out = Vec::new();
    for &(a, b) in set {
        let mut start = a;
        for &k in known.range(a..=b) {
            if k > start {
                out.push((start, k - 1));
            }
            start = k.saturating_add(1);
            if k == u32::MAX {
                start = u32::MAX;
                break;
            }
        }
        if start <= b && !(start == u32::MAX && known.contains(&u32::MAX)) {
            out.push((start, b));
        }
    }
    out
}

fn to_set(ranges: &[Range]) -> Option<SequenceSet> {
    let value = |n: u32| {
        if n == u32::MAX {
            Some(SeqOrUid::Asterisk)
        } else {
            NonZeroU32::new(n).map(SeqOrUid::Value)
        }
    };
    let seqs: Vec<Sequence> = ranges
        .iter()
        .filter_map(|&(a, b)| {
            if a == b {
                Some(Sequence::Single(value(a)?))
            } else {
                Some(Sequence::Range(value(a)?, value(b)?))
            }
        })
        .collect();
    Vec1::try_from(seqs).ok().map(SequenceSet)
}

fn set_text(ranges: &[Range]) -> String {
    let part = |n: u32| {
        if n == u32::MAX {
            "*".to_string()
        } else {
            n.to_string()
        }
    };
    ranges
        .iter()
        .map(|&(a, b)| {
            if a == b {
                part(a)
            } else {
                format!("{}:{}", part(a), part(b))
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

impl Core {
    /// Starts a UID FETCH split into known-encrypted and other UIDs. False when there is
    /// nothing known to split off (the caller relays the FETCH as a whole).
    pub(super) fn start_known_fetch(
        &mut self,
        tag: &str,
        command: &Command<'_>,
        mut plan: FetchPlan,
    ) -> bool {
        let CommandBody::Fetch {
            sequence_set,
            uid: true,
            ..
        } = &command.body
        else {
            return false;
        };
        let Some((mapped, selected)) = self.state.mapped_selected() else {
            return false;
        };
        let (selected, Some(index)) = (selected.clone(), mapped.account.index.clone()) else {
            return false;
        };
        let Some(validity) = selected.uidvalidity else {
            return false;
        };
        let wanted = ranges(sequence_set);
        index.prepare(&selected.name, validity);
        let known: BTreeSet<u32> = index
            .known_uids(&selected.name, validity)
            .into_iter()
            .filter(|u| contains(&wanted, *u))
            .collect();
        if known.is_empty() {
            return false;
        }
        let known_ranges: Vec<Range> = {
            // Consecutive UIDs as ranges keep the command short.
            let mut r: Vec<Range> = Vec::new();
            for &u in &known {
                match r.last_mut() {
                    Some((_, b)) if *b + 1 == u => *b = u,
                    _ => r.push((u, u)),
                }
            }
            r
        };
        let sets = set_text(&known_ranges);
        let sets_seen = !plan.peek_only() && !selected.read_only;
        if sets_seen {
            let t = self.tags.issue(None, Kind::Internal);
            self.push_up(
                Some(t.clone()),
                format!("{t} UID STORE {sets} +FLAGS.SILENT (\\Seen)\r\n").into_bytes(),
            );
        }
        let mut items = vec!["UID".to_string()];
        for name in &plan.requested {
            let item = match name {
                MessageDataItemName::Flags => "FLAGS",
                MessageDataItemName::InternalDate => "INTERNALDATE",
                MessageDataItemName::ModSeq => "MODSEQ",
                _ => continue,
            };
            if !items.iter().any(|i| i == item) {
                items.push(item.into());
            }
        }
        if sets_seen && !items.iter().any(|i| i == "FLAGS") {
            // Dovecot reports the \Seen it sets; so does meshmail.
            items.push("FLAGS".into());
        }
        let t = self.tags.issue(None, Kind::KnownFetch);
        self.push_up(
            Some(t.clone()),
            format!("{t} UID FETCH {sets} ({})\r\n", items.join(" ")).into_bytes(),
        );
        let rest = to_set(&subtract(&wanted, &known));
        let mut with_partials = None;
        let rest_sent = match rest {
            Some(set) => {
                let own = self.tags.issue(Some(tag), Kind::Fetch);
                let mut upstream = plan.upstream.clone();
                if let CommandBody::Fetch { sequence_set, .. } = &mut upstream.body {
                    *sequence_set = set;
                }
                if let Ok(t) = imap_codec::imap_types::core::Tag::try_from(own.clone()) {
                    upstream.tag = t;
                }
                self.push_fetch(&own, &upstream, &mut plan);
                with_partials = plan.with_partials.then_some(upstream);
                true
            }
            None => false,
        };
        self.fetch = Some(ActiveFetch {
            client_tag: tag.to_owned(),
            plan: Arc::new(plan),
            known,
            rest_sent,
            answered: BTreeSet::new(),
            with_partials,
        });
        true
    }

    /// The internal UID FETCH of known messages is complete.
    pub(super) fn finish_known_fetch(&mut self, ok: bool, line: &[u8]) {
        let Some(active) = self.fetch.as_ref() else {
            return;
        };
        let client_tag = active.client_tag.clone();
        let rest_sent = active.rest_sent;
        if !ok {
            let text = String::from_utf8_lossy(line);
            let reason = text
                .split_once(' ')
                .map(|(_, r)| r.trim())
                .unwrap_or("failed");
            self.push_out(Out::ViewFailed(format!("the server said: {reason}")));
        }
        if !rest_sent {
            let done = format!("{client_tag} OK Fetch completed\r\n").into_bytes();
            self.push_out(Out::FetchDone(done));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtraction_keeps_the_rest_and_star() {
        let known: BTreeSet<u32> = [2, 3, 7].into_iter().collect();
        assert_eq!(subtract(&[(1, 10)], &known), [(1, 1), (4, 6), (8, 10)]);
        assert_eq!(
            subtract(&[(1, u32::MAX)], &known),
            [(1, 1), (4, 6), (8, u32::MAX)]
        );
        assert_eq!(subtract(&[(2, 3)], &known), []);
        assert_eq!(set_text(&[(1, 1), (4, u32::MAX)]), "1,4:*");
    }
}
