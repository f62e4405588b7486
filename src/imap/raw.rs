//! meshmail's own commands on the raw stream of a connection async-imap logged in (what
//! async-imap cannot send or read: the private item, the store's commands, APPENDUID): whole
//! responses, one at a time, framed as the session core frames them.

use super::frame::ResponseFramer;
use tokio::io::{AsyncRead, AsyncReadExt};

/// Reads responses from a stream.
pub(crate) struct Responses {
    framer: ResponseFramer,
    buf: Vec<u8>,
}

impl Responses {
    /// Responses of at most `max` bytes.
    pub fn new(max: usize) -> Responses {
        Responses {
            framer: ResponseFramer::new(max),
            buf: vec![0u8; 64 * 1024],
        }
    }

    /// The next whole response.
    pub async fn next<S: AsyncRead + Unpin>(&mut self, stream: &mut S) -> Result<Vec<u8>, String> {
        loop {
            if let Some(r) = self.framer.next_response() {
                return r.map_err(|_| "a response was too large".to_string());
            }
            let n = stream
                .read(&mut self.buf)
                .await
                .map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the server closed the connection".into());
            }
            self.framer.push(&self.buf[..n]);
        }
    }
}

/// The text after `tag` when `response` is that command's completion.
pub(crate) fn completion<'a>(response: &'a [u8], tag: &str) -> Option<&'a [u8]> {
    response.strip_prefix(tag.as_bytes())?.strip_prefix(b" ")
}

/// True for an `OK` completion text.
pub(crate) fn is_ok(text: &[u8]) -> bool {
    text.get(..2).is_some_and(|s| s.eq_ignore_ascii_case(b"OK"))
}
