//! The sequence number ↔ UID map of the selected mailbox, as the client's session sees it:
//! sized by EXISTS, shifted by EXPUNGE, filled from every FETCH response that carries a UID.
//! SEARCH in its sequence-number form needs it to number what meshmail finds by UID.

/// Messages per mailbox the map follows at most.
const MAX: usize = 10_000_000;

#[derive(Debug, Default, Clone)]
pub struct SeqMap {
    uids: Vec<Option<u32>>,
}

impl SeqMap {
    pub fn exists(&mut self, n: u32) {
        self.uids.resize((n as usize).min(MAX), None);
    }

    pub fn expunge(&mut self, seq: u32) {
        let i = seq as usize;
        if i >= 1 && i <= self.uids.len() {
            self.uids.remove(i - 1);
        }
    }

    pub fn learn(&mut self, seq: u32, uid: u32) {
        let i = seq as usize;
        if (1..=MAX).contains(&i) {
            if i > self.uids.len() {
                self.uids.resize(i, None);
            }
            self.uids[i - 1] = Some(uid);
        }
    }

    /// Every message's UID is known.
    pub fn complete(&self) -> bool {
        self.uids.iter().all(Option::is_some)
    }

    /// The number of messages (the largest sequence number).
    pub fn len(&self) -> u32 {
        self.uids.len() as u32
    }

    /// UID → sequence number, for translating many at once.
    pub fn by_uid(&self) -> std::collections::HashMap<u32, u32> {
        self.uids
            .iter()
            .enumerate()
            .filter_map(|(i, u)| u.map(|u| (u, i as u32 + 1)))
            .collect()
    }
}

/// What an untagged line says about the map: `* n EXISTS`, `* n EXPUNGE`, or a FETCH with
/// `UID m` (and whether UID is all it carries).
#[derive(Debug, PartialEq, Eq)]
pub enum MapNews {
    Exists(u32),
    Expunge(u32),
    Fetch { seq: u32, uid: u32, only_uid: bool },
}

pub fn news(
    message: &[u8],
    fetch: Option<&crate::imap::fetch::response::FetchResponse>,
) -> Option<MapNews> {
    if let Some(f) = fetch {
        let uid = f.uid(message)?;
        let only_uid = f.items.len() == 1;
        return Some(MapNews::Fetch {
            seq: f.seq,
            uid,
            only_uid,
        });
    }
    let first = message.split(|&b| b == b'\n').next()?;
    let text = std::str::from_utf8(first).ok()?.trim_end();
    let rest = text.strip_prefix("* ")?;
    let (n, word) = rest.split_once(' ')?;
    let n: u32 = n.parse().ok()?;
    match word.to_ascii_uppercase().as_str() {
        "EXISTS" => Some(MapNews::Exists(n)),
        "EXPUNGE" => Some(MapNews::Expunge(n)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::imap::fetch::response::scan;

    #[test]
    fn follows_exists_expunge_and_fetch() {
        let mut m = SeqMap::default();
        m.exists(3);
        assert!(!m.complete());
        for (s, u) in [(1, 10), (2, 20), (3, 30)] {
            m.learn(s, u);
        }
        assert!(m.complete());
        m.expunge(2);
        assert_eq!(m.by_uid().get(&30), Some(&2));
        assert_eq!(news(b"* 4 EXISTS\r\n", None), Some(MapNews::Exists(4)));
        assert_eq!(
            news(
                b"* 2 FETCH (UID 30)\r\n",
                scan(b"* 2 FETCH (UID 30)\r\n").as_ref()
            ),
            Some(MapNews::Fetch {
                seq: 2,
                uid: 30,
                only_uid: true
            })
        );
        assert_eq!(
            news(
                b"* 2 FETCH (FLAGS (\\Seen) UID 30)\r\n",
                scan(b"* 2 FETCH (FLAGS (\\Seen) UID 30)\r\n").as_ref()
            ),
            Some(MapNews::Fetch {
                seq: 2,
                uid: 30,
                only_uid: false
            })
        );
        assert_eq!(news(b"* OK [UIDNEXT 4]\r\n", None), None);
    }
}
