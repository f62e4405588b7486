//! Framing of the server's side of an IMAP connection: whole responses (a line, or lines
//! joined by the literals they announce) out of a byte stream, exactly as imap-codec's
//! fragmentizer frames them (a property test holds the two side by side), but with a slice
//! copy per response where the fragmentizer moves every byte through a queue one at a time.
//! A mailbox FETCH brings tens of megabytes through here on the session's own task, so this
//! is the serial part of a cold read.
//!
//! A line ends at LF (CRLF or a bare LF, as the fragmentizer's relaxed mode); it announces a
//! literal when it ends in `{n}` or `{n+}` (an `~` before the brace, for literal8, is just a
//! byte of the line), with n a decimal that fits in 32 bits.

/// The response being framed grew past the limit: the connection cannot go on.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge;

/// Frames the server's responses.
pub struct ResponseFramer {
    buf: Vec<u8>,
    /// Where the current response starts in `buf`.
    start: usize,
    /// How far the current response is known to reach (a line start, or a literal's end).
    scanned: usize,
    max: usize,
}

impl ResponseFramer {
    /// Responses up to `max` bytes.
    pub fn new(max: usize) -> ResponseFramer {
        ResponseFramer {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            max,
        }
    }

    /// Adds bytes from the server.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.scanned -= self.start;
            self.start = 0;
        } else if self.start > 64 * 1024 && self.start * 2 > self.buf.len() {
            // Most of the buffer is handed out: move the rest to the front.
            self.buf.drain(..self.start);
            self.scanned -= self.start;
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// True while part of a response is buffered.
    pub fn is_mid_response(&self) -> bool {
        self.start < self.buf.len()
    }

    /// The next whole response, `None` until one is complete.
    pub fn next_response(&mut self) -> Option<Result<Vec<u8>, TooLarge>> {
        loop {
            if self.scanned > self.buf.len() {
                // Inside a literal that has not fully arrived.
                return self.waiting();
            }
            let Some(nl) = memchr(b'\n', &self.buf[self.scanned..]) else {
                return self.waiting();
            };
            let line_end = self.scanned + nl + 1;
            match announced(&self.buf[self.scanned..line_end]) {
                Some(n) => {
                    let end = line_end.saturating_add(n as usize);
                    if end - self.start > self.max {
                        return Some(Err(TooLarge));
                    }
                    self.scanned = end;
                }
                None => {
                    if line_end - self.start > self.max {
                        return Some(Err(TooLarge));
                    }
                    let response = self.buf[self.start..line_end].to_vec();
                    self.start = line_end;
                    self.scanned = line_end;
                    return Some(Ok(response));
                }
            }
        }
    }

    fn waiting(&self) -> Option<Result<Vec<u8>, TooLarge>> {
        (self.buf.len() - self.start > self.max).then_some(Err(TooLarge))
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

/// The length a line (LF included) announces: it ends in `{n}` or `{n+}` before its CRLF or
/// LF.
fn announced(line: &[u8]) -> Option<u32> {
    let line = line.strip_suffix(b"\n")?;
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let line = line.strip_suffix(b"}")?;
    let line = line.strip_suffix(b"+").unwrap_or(line);
    let open = line.iter().rposition(|&b| !b.is_ascii_digit())?;
    let digits = &line[open + 1..];
    if line[open] != b'{' || digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u32, |n, d| {
        n.checked_mul(10)?.checked_add(u32::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use imap_codec::fragmentizer::Fragmentizer;
    use proptest::prelude::*;

    /// What imap-codec's fragmentizer makes of the same stream.
    fn reference(chunks: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut f = Fragmentizer::without_max_message_size();
        let mut out = Vec::new();
        for c in chunks {
            f.enqueue_bytes(c);
            while f.progress().is_some() {
                if f.is_message_complete() {
                    out.push(f.message_bytes().to_vec());
                }
            }
        }
        out
    }

    fn ours(chunks: &[Vec<u8>]) -> Vec<Vec<u8>> {
        let mut f = ResponseFramer::new(usize::MAX);
        let mut out = Vec::new();
        for c in chunks {
            f.push(c);
            while let Some(r) = f.next_response() {
                out.push(r.expect("no limit"));
            }
        }
        out
    }

    fn piece() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"* 1 FETCH (BODY[] {5}\r\nhello)\r\n".to_vec()),
            Just(b"{3}\r\n".to_vec()),
            Just(b"{2+}\n".to_vec()),
            Just(b"~{4}\r\n".to_vec()),
            Just(b"{99999999999}\r\n".to_vec()),
            Just(b"{}\r\n".to_vec()),
            Just(b"{7}\r\r\n".to_vec()),
            Just(b"\r\n".to_vec()),
            Just(b"\n".to_vec()),
            Just(b"\r".to_vec()),
            Just(b"{".to_vec()),
            Just(b"}".to_vec()),
            Just(b"+".to_vec()),
            Just(b"12".to_vec()),
            Just(b"a OK done\r\n".to_vec()),
            proptest::collection::vec(any::<u8>(), 0..12),
        ]
    }

    proptest! {
        #[test]
        fn frames_as_imap_codecs_fragmentizer_does(
            pieces in proptest::collection::vec(piece(), 0..40),
            cuts in proptest::collection::vec(1usize..17, 1..20),
        ) {
            let stream: Vec<u8> = pieces.concat();
            let mut chunks = Vec::new();
            let mut at = 0;
            let mut i = 0;
            while at < stream.len() {
                let n = cuts[i % cuts.len()].min(stream.len() - at);
                chunks.push(stream[at..at + n].to_vec());
                at += n;
                i += 1;
            }
            prop_assert_eq!(ours(&chunks), reference(&chunks));
        }
    }

    #[test]
    fn a_response_past_the_limit_is_refused_before_it_is_buffered_whole() {
        let mut f = ResponseFramer::new(100);
        f.push(b"* 1 FETCH (BODY[] {1000}\r\n");
        assert_eq!(f.next_response(), Some(Err(TooLarge)));
        let mut f = ResponseFramer::new(100);
        f.push(&[b'x'; 150]);
        assert_eq!(f.next_response(), Some(Err(TooLarge)));
        let mut f = ResponseFramer::new(100);
        f.push(b"* OK fine\r\n* OK");
        assert_eq!(f.next_response(), Some(Ok(b"* OK fine\r\n".to_vec())));
        assert!(f.is_mid_response());
        assert_eq!(f.next_response(), None);
    }

    #[test]
    fn many_small_responses_in_one_chunk_are_framed_without_moving_the_rest_each_time() {
        let mut f = ResponseFramer::new(1 << 20);
        let line = b"* 5 FETCH (FLAGS (\\Seen))\r\n";
        f.push(&line.repeat(10_000));
        let mut n = 0;
        while let Some(r) = f.next_response() {
            assert_eq!(r.expect("fits"), line.to_vec());
            n += 1;
        }
        assert_eq!(n, 10_000);
        assert!(!f.is_mid_response());
    }
}
