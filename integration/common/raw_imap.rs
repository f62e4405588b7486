//! A raw IMAP client for tests that must see every byte (literals included) and send what no
//! well-behaved client would: pipelined logins, reused tags, commands out of place.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

pub struct RawImap {
    stream: TcpStream,
    /// Bytes read and not yet returned.
    pending: Vec<u8>,
    pub greeting: Vec<u8>,
}

impl RawImap {
    /// Connects and reads the greeting line.
    pub fn connect(port: u16) -> RawImap {
        let stream = TcpStream::connect(("127.0.0.1", port)).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        let mut c = RawImap {
            stream,
            pending: Vec::new(),
            greeting: Vec::new(),
        };
        c.greeting = c.responses_until(|line| line.starts_with(b"* "), Duration::from_secs(10));
        c
    }

    pub fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("send");
    }

    /// Sends `tag command` and reads up to its tagged answer.
    pub fn command(&mut self, tag: &str, command: &str) -> Vec<u8> {
        self.send(format!("{tag} {command}\r\n").as_bytes());
        self.until_tagged(tag)
    }

    /// Reads up to and including the tagged line of `tag` (literals skipped whole).
    pub fn until_tagged(&mut self, tag: &str) -> Vec<u8> {
        let prefix = format!("{tag} ").into_bytes();
        self.responses_until(|line| line.starts_with(&prefix), Duration::from_secs(60))
    }

    /// Everything the server sends until it closes or stays silent for `quiet`.
    pub fn drain(&mut self, quiet: Duration) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.pending);
        let mut last = Instant::now();
        let mut buf = [0u8; 65536];
        while last.elapsed() < quiet {
            match self.stream.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    last = Instant::now();
                }
                Err(_) => {}
            }
        }
        out
    }

    /// Reads whole responses until one whose first line satisfies `done`.
    fn responses_until(&mut self, done: impl Fn(&[u8]) -> bool, limit: Duration) -> Vec<u8> {
        let started = Instant::now();
        let mut out = Vec::new();
        let mut buf = [0u8; 65536];
        loop {
            // Take every complete response in `pending`.
            while let Some(end) = response_end(&self.pending) {
                let response: Vec<u8> = self.pending.drain(..end).collect();
                let finished = done(&response);
                out.extend_from_slice(&response);
                if finished {
                    return out;
                }
            }
            assert!(
                started.elapsed() < limit,
                "no answer in time; got: {}",
                String::from_utf8_lossy(&out)
            );
            match self.stream.read(&mut buf) {
                Ok(0) => return out,
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
        }
    }
}

/// The end of the first whole response in `data` (its lines and literals), if it is there.
pub fn response_end(data: &[u8]) -> Option<usize> {
    let mut at = 0;
    loop {
        let nl = data[at..].iter().position(|&b| b == b'\n')? + at;
        let line = &data[at..=nl];
        let literal = line.strip_suffix(b"}\r\n").and_then(|l| {
            let open = l.iter().rposition(|&b| b == b'{')?;
            std::str::from_utf8(&l[open + 1..])
                .ok()?
                .trim_end_matches('+')
                .parse::<usize>()
                .ok()
        });
        match literal {
            Some(n) => {
                at = nl + 1 + n;
                if at > data.len() {
                    return None;
                }
            }
            None => return Some(nl + 1),
        }
    }
}

/// The untagged responses of `bytes`, one per element (literals included).
pub fn responses(bytes: &[u8]) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while let Some(end) = response_end(rest) {
        out.push(rest[..end].to_vec());
        rest = &rest[end..];
    }
    out
}
