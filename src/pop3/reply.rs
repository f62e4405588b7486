//! Server replies (RFC 1939 §3): a status line (`+OK …` or `-ERR …`), and after the `+OK` of
//! a command with a multi-line answer, lines up to one that is a single `.`, each line that
//! begins with `.` having had one more put in front (dot-stuffing). A server that stops in the
//! middle of a multi-line reply gives no reply at all: a truncated message is never taken for a
//! whole one.

/// A buffer emptied after a reply larger than this is given back.
const SHRINK_ABOVE: usize = 1 << 20;

/// A reply grew past the limit: the connection cannot go on.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge;

/// One whole reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub ok: bool,
    /// The status line, CRLF included.
    pub line: Vec<u8>,
    /// A multi-line reply's lines, still dot-stuffed, without the terminating `.` line.
    pub body: Option<Vec<u8>>,
}

/// Frames the server's replies.
pub struct ReplyFramer {
    buf: Vec<u8>,
    /// How far the terminator has been looked for.
    scanned: usize,
    max: usize,
}

impl ReplyFramer {
    /// Replies up to `max` bytes.
    pub fn new(max: usize) -> ReplyFramer {
        ReplyFramer {
            buf: Vec::new(),
            scanned: 0,
            max,
        }
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Whatever is buffered, taken out (a relayed session's bytes after its login).
    pub fn take_buffered(&mut self) -> Vec<u8> {
        self.scanned = 0;
        std::mem::take(&mut self.buf)
    }

    /// Part of a reply is buffered.
    pub fn is_mid_reply(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The next whole reply, `None` until it is complete. `multiline`: the command in flight
    /// answers `+OK` with a multi-line body.
    pub fn next(&mut self, multiline: bool) -> Option<Result<Reply, TooLarge>> {
        let Some(nl) = self.buf.iter().position(|&b| b == b'\n') else {
            return (self.buf.len() > self.max).then_some(Err(TooLarge));
        };
        let line_end = nl + 1;
        let ok = self.buf.starts_with(b"+OK");
        if !(ok && multiline) {
            let line: Vec<u8> = self.buf.drain(..line_end).collect();
            self.scanned = 0;
            return Some(Ok(Reply {
                ok,
                line,
                body: None,
            }));
        }
        // The body ends at a line that is a single ".": look from where the last look ended
        // (the status line's own line end counts as the one before an empty body).
        let from = self
            .scanned
            .max(line_end.saturating_sub(2))
            .min(self.buf.len());
        let end = find(&self.buf[from..], b"\r\n.\r\n").map(|i| from + i);
        match end {
            None => {
                if self.buf.len() > self.max {
                    return Some(Err(TooLarge));
                }
                self.scanned = self.buf.len().saturating_sub(4);
                None
            }
            Some(at) => {
                let total = at + 5;
                let mut whole: Vec<u8> = self.buf.drain(..total).collect();
                self.scanned = 0;
                // The body: after the status line, up to the CRLF before the "." line.
                let body = if at + 2 > line_end {
                    whole[line_end..at + 2].to_vec()
                } else {
                    Vec::new()
                };
                whole.truncate(line_end);
                whole.shrink_to_fit();
                if self.buf.is_empty() && self.buf.capacity() > SHRINK_ABOVE {
                    // A large message is not kept allocated for the rest of the session.
                    self.buf = Vec::new();
                }
                Some(Ok(Reply {
                    ok,
                    line: whole,
                    body: Some(body),
                }))
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    memchr::memmem::find(hay, needle)
}

/// A multi-line body as it was meant: one `.` taken off each line that starts with one.
pub fn unstuff(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(body.len());
    for line in body.split_inclusive(|&b| b == b'\n') {
        out.extend_from_slice(line.strip_prefix(b".").unwrap_or(line));
    }
    out
}

/// A message as a multi-line body: each line that starts with `.` gets one more, lines end in
/// CRLF (a bare LF is made CRLF, and a last line without an end gets one).
pub fn stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 50 + 2);
    for line in message.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b".") {
            out.push(b'.');
        }
        let content = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line);
        out.extend_from_slice(content);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn single_and_multi_line_replies_and_a_reply_cut_short() {
        let mut f = ReplyFramer::new(1 << 20);
        f.push(b"+OK 2 messages\r\n-ERR no such message\r\n+OK\r\nline 1\r\n..dotted\r\n.\r\n");
        let r = f.next(false).unwrap().unwrap();
        assert!(r.ok && r.body.is_none() && r.line == b"+OK 2 messages\r\n");
        let r = f.next(true).unwrap().unwrap();
        assert!(!r.ok && r.body.is_none(), "-ERR has no body");
        let r = f.next(true).unwrap().unwrap();
        assert_eq!(r.body.as_deref(), Some(&b"line 1\r\n..dotted\r\n"[..]));
        assert_eq!(
            unstuff(r.body.as_deref().unwrap()),
            b"line 1\r\n.dotted\r\n"
        );
        assert!(!f.is_mid_reply());
        // An empty body.
        f.push(b"+OK\r\n.\r\n");
        assert_eq!(f.next(true).unwrap().unwrap().body, Some(Vec::new()));
        // A server that stops mid-message: no reply, never a truncated one.
        f.push(b"+OK 120 octets\r\nSubject: x\r\n\r\nhalf of it");
        assert_eq!(f.next(true), None);
        assert!(f.is_mid_reply());
        // Past the limit.
        let mut small = ReplyFramer::new(10);
        small.push(b"+OK\r\n0123456789abcdef");
        assert_eq!(small.next(true), Some(Err(TooLarge)));
    }

    #[test]
    fn stuffing_round_trips() {
        let message = b"Subject: x\r\n\r\n.hidden\r\n..two\r\nlast";
        let stuffed = stuff(message);
        assert_eq!(stuffed, b"Subject: x\r\n\r\n..hidden\r\n...two\r\nlast\r\n");
        assert_eq!(
            unstuff(&stuffed),
            b"Subject: x\r\n\r\n.hidden\r\n..two\r\nlast\r\n"
        );
    }

    proptest! {
        #[test]
        fn any_bytes_frame_without_panic_and_within_the_limit(
            bytes in proptest::collection::vec(any::<u8>(), 0..400),
            flags in proptest::collection::vec(any::<bool>(), 1..8),
        ) {
            let mut f = ReplyFramer::new(256);
            f.push(&bytes);
            for multiline in flags {
                match f.next(multiline) {
                    Some(Ok(r)) => prop_assert!(r.line.len() + r.body.map_or(0, |b| b.len()) <= bytes.len()),
                    Some(Err(TooLarge)) | None => break,
                }
            }
        }

        #[test]
        fn a_stuffed_message_is_framed_whole_in_any_chunks(
            lines in proptest::collection::vec("[.a-z ]{0,12}", 0..20),
            cut in 1usize..40,
        ) {
            let message: Vec<u8> = lines.iter().flat_map(|l| format!("{l}\r\n").into_bytes()).collect();
            let mut wire = b"+OK\r\n".to_vec();
            wire.extend(stuff(&message));
            wire.extend_from_slice(b".\r\n");
            let mut f = ReplyFramer::new(1 << 20);
            let mut got = None;
            for chunk in wire.chunks(cut) {
                f.push(chunk);
                if let Some(r) = f.next(true) {
                    got = Some(r.unwrap());
                }
            }
            let reply = got.expect("a whole reply");
            prop_assert_eq!(unstuff(&reply.body.unwrap()), message);
            prop_assert!(!f.is_mid_reply());
        }
    }
}
