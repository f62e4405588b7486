//! The bytes of one index record, before sealing: a plain length-prefixed binary layout (a
//! JSON encoding of a 20 KB message cost more than decrypting it). Every read is bounded by
//! the record's own length, so damage gives `None`, never a panic or an allocation beyond the
//! record.
//!
//! ```text
//! entry:      version(1)=3 size(8) bodystructure body envelope header message? search
//! checkpoint: version(1)=3 mailbox uidvalidity(4) scanned_to(4) uidnext(4) messages(4) at(8)
//! bytes:      len(4) data        (message?: present(1), then bytes)
//! search:     count(4) (name value)* body sent?(1 [year(4) month(4) day(4)])
//! ```

use super::{Checkpoint, IndexEntry};
use crate::imap::search::SearchText;
use zeroize::Zeroizing;

const VERSION: u8 = 3;

struct Writer(Vec<u8>);

impl Writer {
    fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_be_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        // Lengths are bounded by MAX_RECORD long before they reach u32::MAX.
        self.u32(u32::try_from(b.len()).unwrap_or(u32::MAX));
        self.0.extend_from_slice(b);
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Option<String> {
        String::from_utf8(self.bytes()?.to_vec()).ok()
    }
}

/// The bytes of an entry (to be sealed; they hold plaintext, hence `Zeroizing`).
pub fn encode_entry(entry: &IndexEntry) -> Zeroizing<Vec<u8>> {
    let message = entry.message.as_ref().map_or(0, |m| m.len());
    let mut w = Writer(Vec::with_capacity(
        entry.header.len() + message + entry.search.body.len() + 1024,
    ));
    w.0.push(VERSION);
    w.u64(entry.size as u64);
    w.bytes(&entry.bodystructure);
    w.bytes(&entry.body);
    w.bytes(&entry.envelope);
    w.bytes(&entry.header);
    match &entry.message {
        Some(m) => {
            w.0.push(1);
            w.bytes(m);
        }
        None => w.0.push(0),
    }
    let search = &entry.search;
    w.u32(u32::try_from(search.headers.len()).unwrap_or(u32::MAX));
    for (name, value) in &search.headers {
        w.bytes(name.as_bytes());
        w.bytes(value.as_bytes());
    }
    w.bytes(search.body.as_bytes());
    match search.sent {
        Some((y, m, d)) => {
            w.0.push(1);
            w.u32(y as u32);
            w.u32(m);
            w.u32(d);
        }
        None => w.0.push(0),
    }
    Zeroizing::new(w.0)
}

/// An entry from its bytes; `None` for anything that is not exactly one well-formed entry.
pub fn decode_entry(bytes: &[u8]) -> Option<IndexEntry> {
    let mut r = Reader(bytes);
    if r.u8()? != VERSION {
        return None;
    }
    let size = usize::try_from(r.u64()?).ok()?;
    let bodystructure = r.bytes()?.to_vec();
    let body = r.bytes()?.to_vec();
    let envelope = r.bytes()?.to_vec();
    let header = r.bytes()?.to_vec();
    let message = match r.u8()? {
        0 => None,
        1 => Some(Zeroizing::new(r.bytes()?.to_vec())),
        _ => return None,
    };
    let count = r.u32()? as usize;
    // Each header takes at least 8 bytes: a count beyond what is left is damage.
    if count > r.0.len() / 8 {
        return None;
    }
    let mut headers = Vec::with_capacity(count);
    for _ in 0..count {
        headers.push((r.string()?, r.string()?));
    }
    let search_body = r.string()?;
    let sent = match r.u8()? {
        0 => None,
        1 => Some((r.u32()? as i32, r.u32()?, r.u32()?)),
        _ => return None,
    };
    if !r.0.is_empty() {
        return None;
    }
    Some(IndexEntry {
        size,
        bodystructure,
        body,
        envelope,
        header,
        message,
        search: SearchText {
            headers,
            body: search_body,
            sent,
        },
    })
}

pub fn encode_checkpoint(c: &Checkpoint) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(64 + c.mailbox.len()));
    w.0.push(VERSION);
    w.bytes(c.mailbox.as_bytes());
    w.u32(c.uidvalidity);
    w.u32(c.scanned_to);
    w.u32(c.uidnext);
    w.u32(c.messages);
    w.u64(c.at);
    w.0
}

pub fn decode_checkpoint(bytes: &[u8]) -> Option<Checkpoint> {
    let mut r = Reader(bytes);
    if r.u8()? != VERSION {
        return None;
    }
    let c = Checkpoint {
        mailbox: r.string()?,
        uidvalidity: r.u32()?,
        scanned_to: r.u32()?,
        uidnext: r.u32()?,
        messages: r.u32()?,
        at: r.u64()?,
    };
    r.0.is_empty().then_some(c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn entry() -> IndexEntry {
        IndexEntry {
            size: 1234,
            bodystructure: b"(\"text\" \"plain\")".to_vec(),
            body: b"(\"text\")".to_vec(),
            envelope: b"(NIL)".to_vec(),
            header: b"Subject: s\r\n\r\n".to_vec(),
            message: Some(Zeroizing::new(b"Subject: s\r\n\r\nbody\r\n".to_vec())),
            search: SearchText {
                headers: vec![("subject".into(), "s".into())],
                body: "body".into(),
                sent: Some((2026, 11, 30)),
            },
        }
    }

    #[test]
    fn entries_and_checkpoints_round_trip() {
        let e = entry();
        let back = decode_entry(&encode_entry(&e)).expect("decodes");
        assert_eq!(back.size, e.size);
        assert_eq!(back.header, e.header);
        assert_eq!(back.message.as_deref(), e.message.as_deref());
        assert_eq!(back.search.headers, e.search.headers);
        assert_eq!(back.search.sent, e.search.sent);
        let c = Checkpoint {
            mailbox: "Archive/2026".into(),
            uidvalidity: 7,
            scanned_to: 99,
            uidnext: 120,
            messages: 98,
            at: 1_800_000_000,
        };
        assert_eq!(decode_checkpoint(&encode_checkpoint(&c)), Some(c));
    }

    proptest! {
        #[test]
        fn damaged_records_give_none_or_an_entry_never_a_panic(cut in 0usize..200, flip in any::<(usize, u8)>()) {
            let mut bytes = encode_entry(&entry()).to_vec();
            let at = flip.0 % bytes.len();
            bytes[at] ^= flip.1;
            let _ = decode_entry(&bytes);
            bytes.truncate(cut.min(bytes.len()));
            let _ = decode_entry(&bytes);
            let _ = decode_checkpoint(&bytes);
        }
    }
}
