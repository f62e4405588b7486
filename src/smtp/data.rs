//! The DATA receiver (RFC 5321 §4.1.4, §4.5.2): collects message bytes until `<CRLF>.<CRLF>`,
//! undoing dot-stuffing, and refuses what SMTP smuggling relies on.
//!
//! Smuggling (CVE-2023-51764 and friends) hides a second message behind an end-of-data that one
//! server sees and another does not, typically `<LF>.<LF>` or `<LF>.<CRLF>`. meshmail accepts
//! only `<CRLF>.<CRLF>` as the end, and treats any bare LF or bare CR in the data as an error:
//! the whole transaction is refused with a 5xx after the real end, so the bytes that follow a
//! fake end never become a second message (the upstream here, Postfix with default settings,
//! would take `<LF>.<LF>` as an end).

/// What went wrong with the data, reported after the real end of data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataError {
    /// A LF not preceded by CR, or a CR not followed by LF.
    BareLineEnding,
    /// More than the size limit; the rest was discarded.
    TooLarge,
    /// A line longer than the configured limit.
    LineTooLong,
    /// The global bound on message bytes in memory was reached: try again later.
    Busy,
}

/// Sans-I/O receiver: feed bytes, get `Done` once `<CRLF>.<CRLF>` arrived.
#[derive(Debug)]
pub struct DataReceiver {
    message: Vec<u8>,
    max_size: usize,
    max_line: usize,
    /// Bytes of the current line (after un-stuffing), for the line-length limit.
    line_len: usize,
    /// At the start of a line (after CRLF or a bare LF, or at the very beginning).
    line_start: bool,
    /// The current line began after a real CRLF (or at the beginning): only such a line can
    /// be the end marker, so a dot after a bare LF never ends the data.
    after_crlf: bool,
    /// The previous byte was CR (waiting for LF).
    pending_cr: bool,
    /// The current line started with a dot (candidate for the end marker or stuffing).
    dot_line: bool,
    error: Option<DataError>,
    /// A CR not followed by LF is content (the filter: Postfix passes such bytes on).
    bare_cr_ok: bool,
}

/// The result of feeding bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum Progress {
    /// More bytes are needed.
    More,
    /// The end of data was seen after `consumed` bytes of the input; what follows belongs to
    /// the next command.
    Done { consumed: usize },
}

impl DataReceiver {
    pub fn new(max_size: usize, max_line: usize) -> DataReceiver {
        DataReceiver {
            message: Vec::new(),
            max_size,
            max_line,
            line_len: 0,
            line_start: true,
            after_crlf: true,
            pending_cr: false,
            dot_line: false,
            error: None,
            bare_cr_ok: false,
        }
    }

    /// Takes a CR not followed by LF as content rather than refusing the message. For the
    /// filter, whose client is Postfix: it never sends a bare LF, and a bare CR inside a line
    /// is no end of line to it or to the reinjection listener, so no smuggling is possible.
    pub fn allowing_bare_cr(mut self) -> DataReceiver {
        self.bare_cr_ok = true;
        self
    }

    /// Feeds bytes. After `Done`, call [`DataReceiver::finish`].
    pub fn feed(&mut self, input: &[u8]) -> Progress {
        let mut i = 0;
        while i < input.len() {
            if !self.pending_cr && !self.line_start {
                // Inside a line: everything up to the next CR or LF is content, taken at once.
                let end = input[i..]
                    .iter()
                    .position(|&b| b == b'\r' || b == b'\n')
                    .map_or(input.len(), |p| i + p);
                if end > i {
                    let run = &input[i..end];
                    self.line_len += run.len();
                    if self.line_len > self.max_line {
                        self.fail(DataError::LineTooLong);
                    }
                    self.push(run);
                    i = end;
                    continue;
                }
            }
            let b = input[i];
            i += 1;
            if let Some(done) = self.byte(b, i) {
                return done;
            }
        }
        Progress::More
    }

    /// One byte at a line start or around a line end; `consumed` counts it.
    fn byte(&mut self, b: u8, consumed: usize) -> Option<Progress> {
        {
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    if self.dot_line && self.line_len == 0 && self.after_crlf {
                        // "<CRLF>.<CRLF>": the end. Remove nothing more: the terminating CRLF
                        // of the last line is already in the message.
                        return Some(Progress::Done { consumed });
                    }
                    self.push(b"\r\n");
                    self.line_start = true;
                    self.after_crlf = true;
                    self.dot_line = false;
                    self.line_len = 0;
                    return None;
                }
                // A CR not followed by LF.
                if !self.bare_cr_ok {
                    self.fail(DataError::BareLineEnding);
                }
                self.push(b"\r");
                self.line_len += 1;
            }
            match b {
                b'\r' => self.pending_cr = true,
                b'\n' => {
                    // A LF without CR: never a line end, never an end of data.
                    self.fail(DataError::BareLineEnding);
                    self.push(b"\n");
                    self.line_start = true;
                    self.after_crlf = false;
                    self.dot_line = false;
                    self.line_len = 0;
                }
                b'.' if self.line_start => {
                    // Dot-stuffing: a leading dot is removed (RFC 5321 §4.5.2).
                    self.line_start = false;
                    self.dot_line = true;
                }
                _ => {
                    self.line_start = false;
                    self.line_len += 1;
                    if self.line_len > self.max_line {
                        self.fail(DataError::LineTooLong);
                    }
                    self.push(&[b]);
                }
            }
        }
        None
    }

    /// The message, or why it is refused.
    pub fn finish(mut self) -> Result<Vec<u8>, DataError> {
        match self.error {
            Some(e) => Err(e),
            None => {
                // Growing by doubling leaves up to half the buffer unused; a large message is
                // held through encryption, so give that back first.
                if self.message.capacity() - self.message.len() > 1024 * 1024 {
                    self.message.shrink_to_fit();
                }
                Ok(self.message)
            }
        }
    }

    /// Refuses the message (the rest of the data is still read, and dropped).
    pub fn refuse(&mut self, e: DataError) {
        self.fail(e);
    }

    /// Bytes kept so far.
    pub fn len(&self) -> usize {
        self.message.len()
    }

    pub fn is_empty(&self) -> bool {
        self.message.is_empty()
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.error.is_some() {
            return; // refused anyway: keep nothing more
        }
        if self.message.len() + bytes.len() > self.max_size {
            self.fail(DataError::TooLarge);
            return;
        }
        // The dot of a stuffed line was removed; a dot line that is not the end keeps its
        // remaining content only.
        self.message.extend_from_slice(bytes);
    }

    fn fail(&mut self, e: DataError) {
        if self.error.is_none() {
            self.error = Some(e);
            self.message = Vec::new();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn receive(chunks: &[&[u8]]) -> (Result<Vec<u8>, DataError>, Option<usize>) {
        let mut r = DataReceiver::new(1 << 20, 998);
        let mut done = None;
        for (n, c) in chunks.iter().enumerate() {
            if let Progress::Done { consumed } = r.feed(c) {
                done = Some(chunks[..n].iter().map(|c| c.len()).sum::<usize>() + consumed);
                break;
            }
        }
        (r.finish(), done)
    }

    fn whole(input: &[u8]) -> (Result<Vec<u8>, DataError>, Option<usize>) {
        receive(&[input])
    }

    #[test]
    fn ends_only_at_crlf_dot_crlf_in_any_chunking() {
        let input = b"Subject: x\r\n\r\nhello\r\n..dot\r\n.\r\nQUIT\r\n";
        let want = b"Subject: x\r\n\r\nhello\r\n.dot\r\n".to_vec();
        let end = input.len() - b"QUIT\r\n".len();
        for split in 0..input.len() {
            let (a, b) = input.split_at(split);
            let (msg, done) = receive(&[a, b]);
            assert_eq!(msg.as_deref(), Ok(&want[..]), "split at {split}");
            assert_eq!(done, Some(end), "split at {split}");
        }
        // Byte by byte.
        let chunks: Vec<&[u8]> = input.chunks(1).collect();
        assert_eq!(receive(&chunks).0.as_deref(), Ok(&want[..]));
        // An empty message.
        assert_eq!(whole(b".\r\n"), (Ok(vec![]), Some(3)));
    }

    // The smuggling vectors: each fake end must not end the data, and the data is refused.
    #[test]
    fn smuggling_payloads_are_refused_and_never_end_the_message() {
        for fake in [
            &b"\n.\n"[..],
            b"\n.\r\n",
            b"\r\n.\n",
            b"\r.\r\n",
            b"\r\n.\r",
        ] {
            let mut input = b"Subject: first\r\n\r\nbody".to_vec();
            input.extend_from_slice(fake);
            input.extend_from_slice(b"MAIL FROM:<evil@x>\r\nRCPT TO:<victim@y>\r\nDATA\r\nSubject: smuggled\r\n\r\nsecond\r\n.\r\n");
            let (msg, done) = whole(&input);
            assert_eq!(msg, Err(DataError::BareLineEnding), "{fake:?}");
            assert_eq!(
                done,
                Some(input.len()),
                "{fake:?}: the whole input is one refused message"
            );
        }
    }

    #[test]
    fn the_filter_takes_a_bare_cr_as_content_and_still_ends_only_at_crlf_dot_crlf() {
        let input = b"Subject: x\r\n\r\nbody\r.\r\nmore\rtext\r\n.\r\nRSET\r\n";
        let mut r = DataReceiver::new(1000, 1000).allowing_bare_cr();
        assert_eq!(
            r.feed(input),
            Progress::Done {
                consumed: input.len() - 6
            }
        );
        assert_eq!(
            r.finish().unwrap(),
            b"Subject: x\r\n\r\nbody\r.\r\nmore\rtext\r\n".to_vec()
        );
        let mut r = DataReceiver::new(1000, 1000).allowing_bare_cr();
        r.feed(b"a\nb\r\n.\r\n");
        assert_eq!(
            r.finish(),
            Err(DataError::BareLineEnding),
            "a bare LF is still refused"
        );
    }

    /// The byte-at-a-time receiver the fast path must agree with.
    fn reference(input: &[u8], max_line: usize) -> (Result<Vec<u8>, DataError>, Option<usize>) {
        let mut r = DataReceiver::new(1 << 20, max_line);
        for (i, &b) in input.iter().enumerate() {
            if let Some(Progress::Done { .. }) = r.byte(b, i + 1) {
                return (r.finish(), Some(i + 1));
            }
        }
        (r.finish(), None)
    }

    #[test]
    fn runs_and_single_bytes_agree_on_any_input() {
        // A small alphabet makes line ends, dots and bare CR/LF frequent.
        let alphabet = b"ab.\r\n";
        let mut seed = 0x2545_f491_u32;
        for round in 0..3000 {
            let len = (round % 40) + 1;
            let input: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 17;
                    seed ^= seed << 5;
                    alphabet[(seed % alphabet.len() as u32) as usize]
                })
                .collect();
            let mut fast = DataReceiver::new(1 << 20, 6);
            let done = match fast.feed(&input) {
                Progress::Done { consumed } => Some(consumed),
                Progress::More => None,
            };
            assert_eq!((fast.finish(), done), reference(&input, 6), "{input:?}");
        }
    }

    #[test]
    fn limits() {
        let mut r = DataReceiver::new(10, 998);
        assert_eq!(
            r.feed(b"0123456789abc\r\n.\r\n"),
            Progress::Done { consumed: 18 }
        );
        assert_eq!(r.finish(), Err(DataError::TooLarge));
        let mut r = DataReceiver::new(1 << 20, 5);
        assert!(matches!(r.feed(b"123456\r\n.\r\n"), Progress::Done { .. }));
        assert_eq!(r.finish(), Err(DataError::LineTooLong));
    }
}
