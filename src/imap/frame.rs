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

/// Literals larger than this, in a FETCH response the caller passes on unread, are passed
/// on as they arrive instead of being held until the response is whole.
pub const STREAM_ABOVE: usize = 64 * 1024;

/// What the framer hands out.
#[derive(Debug, PartialEq, Eq)]
pub enum Piece {
    /// A whole response.
    Whole(Vec<u8>),
    /// Part of an untagged FETCH response whose large literal is passed on as it arrives
    /// (see [`ResponseFramer::next_piece`]); `last` on the part that ends the response.
    Part { bytes: Vec<u8>, last: bool },
}

/// Frames the server's responses.
pub struct ResponseFramer {
    buf: Vec<u8>,
    /// Where the current response starts in `buf`.
    start: usize,
    /// How far the current response is known to reach (a line start, or a literal's end).
    scanned: usize,
    max: usize,
    /// Inside a streamed response: the bytes of its large literal still to come (0: the
    /// literal is over, the rest of the response is framed as usual).
    streaming: Option<usize>,
}

impl ResponseFramer {
    /// Responses up to `max` bytes.
    pub fn new(max: usize) -> ResponseFramer {
        ResponseFramer {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            max,
            streaming: None,
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
        self.start < self.buf.len() || self.streaming.is_some()
    }

    /// The next whole response, `None` until one is complete.
    pub fn next_response(&mut self) -> Option<Result<Vec<u8>, TooLarge>> {
        match self.next_piece(false)? {
            Ok(Piece::Whole(response)) => Some(Ok(response)),
            // Not streaming: a part is never handed out.
            Ok(Piece::Part { .. }) | Err(TooLarge) => Some(Err(TooLarge)),
        }
    }

    /// The next whole response, or with `stream` (the caller passes responses on unread) a
    /// part of an untagged FETCH response whose literal is larger than [`STREAM_ABOVE`]:
    /// everything up to the literal, then the literal as it arrives, then the rest of the
    /// response (`last`). A streamed literal does not count against the limit, so a relay
    /// holds no more of a large message than has arrived and not yet been written. Once a
    /// response is streamed, it is streamed to its end whatever later calls ask.
    pub fn next_piece(&mut self, stream: bool) -> Option<Result<Piece, TooLarge>> {
        if let Some(left) = self.streaming {
            if left > 0 {
                let n = left.min(self.buf.len() - self.start);
                if n == 0 {
                    return None;
                }
                let bytes = self.buf[self.start..self.start + n].to_vec();
                self.start += n;
                self.scanned = self.start;
                self.streaming = Some(left - n);
                return Some(Ok(Piece::Part { bytes, last: false }));
            }
        }
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
                Some(n) if n as usize > STREAM_ABOVE && self.may_stream(stream) => {
                    // Everything up to the literal now; the literal as it comes.
                    let bytes = self.buf[self.start..line_end].to_vec();
                    self.start = line_end;
                    self.scanned = line_end;
                    self.streaming = Some(n as usize);
                    return Some(Ok(Piece::Part { bytes, last: false }));
                }
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
                    let bytes = self.buf[self.start..line_end].to_vec();
                    self.start = line_end;
                    self.scanned = line_end;
                    if self.streaming.take().is_some() {
                        return Some(Ok(Piece::Part { bytes, last: true }));
                    }
                    return Some(Ok(Piece::Whole(bytes)));
                }
            }
        }
    }

    fn waiting(&self) -> Option<Result<Piece, TooLarge>> {
        (self.buf.len() - self.start > self.max).then_some(Err(TooLarge))
    }

    /// A large literal is streamed when the caller passes responses on unread and the
    /// response is an untagged FETCH (`* <n> FETCH`), or is one already being streamed.
    fn may_stream(&self, stream: bool) -> bool {
        if self.streaming.is_some() {
            return true;
        }
        if !stream {
            return false;
        }
        let head = &self.buf[self.start..self.buf.len().min(self.start + 32)];
        let Some(rest) = head.strip_prefix(b"* ") else {
            return false;
        };
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        digits > 0
            && rest[digits..]
                .get(..7)
                .is_some_and(|w| w.eq_ignore_ascii_case(b" FETCH "))
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

/// The length a line (LF included) announces: it ends in `{n}` or `{n+}` before its CRLF or
/// LF.
pub fn announced(line: &[u8]) -> Option<u32> {
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
            let chunks = cut(&pieces.concat(), &cuts);
            prop_assert_eq!(ours(&chunks), reference(&chunks));
        }
    }

    /// Pieces as the relay would see them, parts joined back into responses; and how many
    /// parts there were.
    fn streamed(chunks: &[Vec<u8>], max: usize) -> Result<(Vec<Vec<u8>>, usize), TooLarge> {
        let mut f = ResponseFramer::new(max);
        let mut out = Vec::new();
        let mut joined = Vec::new();
        let mut parts = 0;
        for c in chunks {
            f.push(c);
            while let Some(piece) = f.next_piece(true) {
                match piece? {
                    Piece::Whole(r) => out.push(r),
                    Piece::Part { bytes, last } => {
                        parts += 1;
                        joined.extend_from_slice(&bytes);
                        if last {
                            out.push(std::mem::take(&mut joined));
                        }
                    }
                }
            }
        }
        Ok((out, parts))
    }

    fn cut(stream: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
        let mut chunks = Vec::new();
        let mut at = 0;
        let mut i = 0;
        while at < stream.len() {
            let n = cuts[i % cuts.len()].min(stream.len() - at);
            chunks.push(stream[at..at + n].to_vec());
            at += n;
            i += 1;
        }
        chunks
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        #[test]
        fn a_streamed_fetch_joins_back_into_what_the_fragmentizer_frames(
            n in (STREAM_ABOVE + 1)..150_000,
            cuts in proptest::collection::vec(1usize..9000, 1..20),
            second_literal in any::<bool>(),
        ) {
            // Literal bytes that look like framing: braces, CRLF, parentheses.
            const LOOKS_LIKE_FRAMING: &[u8] = b"ab{3}\r\n)x";
            let literal: Vec<u8> =
                (0..n).map(|i| LOOKS_LIKE_FRAMING[i % LOOKS_LIKE_FRAMING.len()]).collect();
            let mut stream = b"* 1 FETCH (FLAGS ())\r\n".to_vec();
            stream.extend_from_slice(format!("* 2 FETCH (UID 5 BODY[] {{{n}}}\r\n").as_bytes());
            stream.extend_from_slice(&literal);
            if second_literal {
                stream.extend_from_slice(format!(" BODY[1] {{{n}}}\r\n").as_bytes());
                stream.extend_from_slice(&literal);
                stream.extend_from_slice(b" BODY[HEADER] {3}\r\nabc");
            }
            stream.extend_from_slice(b")\r\n* 3 FETCH (FLAGS (\\Seen))\r\na1 OK done\r\n");
            let chunks = cut(&stream, &cuts);
            // Held whole, the large response would pass the limit; streamed, it does not.
            let (ours, parts) = streamed(&chunks, STREAM_ABOVE).expect("streamed");
            prop_assert_eq!(ours, reference(&chunks));
            prop_assert!(parts >= 3);
        }
    }

    #[test]
    fn only_an_untagged_fetch_is_streamed_and_only_when_asked() {
        let big = format!(
            "{{{}}}\r\n{}",
            STREAM_ABOVE + 1,
            "x".repeat(STREAM_ABOVE + 1)
        );
        for head in [
            "a1 OK ",
            "* LIST () \"/\" ",
            "* 1 FETCHX (BODY[] ",
            "* FETCH (BODY[] ",
        ] {
            let mut f = ResponseFramer::new(STREAM_ABOVE);
            f.push(format!("{head}{big})\r\n").as_bytes());
            assert_eq!(f.next_piece(true), Some(Err(TooLarge)), "{head}");
        }
        let mut f = ResponseFramer::new(STREAM_ABOVE);
        f.push(format!("* 7 fetch (BODY[] {big})\r\n").as_bytes());
        assert_eq!(f.next_response(), Some(Err(TooLarge)));
        let mut f = ResponseFramer::new(STREAM_ABOVE);
        f.push(format!("* 7 fetch (BODY[] {{{}}}\r\nxy", STREAM_ABOVE + 1).as_bytes());
        assert!(matches!(
            f.next_piece(true),
            Some(Ok(Piece::Part { last: false, .. }))
        ));
        assert!(matches!(
            f.next_piece(true),
            Some(Ok(Piece::Part { last: false, .. }))
        ));
        // Nothing buffered, yet a response is under way (the server may stall inside it).
        assert_eq!(f.next_piece(true), None);
        assert!(f.is_mid_response());
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
