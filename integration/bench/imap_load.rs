//! The IMAP benchmark's client (`make bench`): fills a mailbox with encrypted messages and
//! times one command, reading the raw answer as fast as the socket gives it (Python's imaplib
//! would be the bottleneck).
//!
//!   imap_load populate PORT USER PASS MAILBOX CERT COUNT SIZE
//!   imap_load time PORT USER PASS MAILBOX COMMAND...
//!
//! `time` prints `seconds bytes` for each command, run one after another on one connection.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshmail::crypto::openpgp::parse_certs;
use meshmail::crypto::seal::{seal, SealRequest};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 7 {
        eprintln!("usage: imap_load populate|time PORT USER PASS MAILBOX …");
        std::process::exit(64);
    }
    let (port, user, pass, mailbox) = (&args[2], &args[3], &args[4], &args[5]);
    let mut conn = Conn::login(port, user, pass);
    match args[1].as_str() {
        "populate" => {
            let cert = std::fs::read(&args[6]).expect("cert");
            let certs = parse_certs(&cert).expect("certificate");
            let count: usize = args[7].parse().expect("count");
            let size: usize = args[8].parse().expect("size");
            if !mailbox.eq_ignore_ascii_case("INBOX") {
                conn.command(&format!("CREATE {mailbox}"));
            }
            for i in 0..count {
                let message = message(i, size);
                let sealed = seal(
                    &message,
                    &SealRequest::PgpMime {
                        recipients: certs.clone(),
                        signer: None,
                    },
                )
                .expect("seal");
                let mut cmd =
                    format!("a APPEND {mailbox} {{{}+}}\r\n", sealed.bytes().len()).into_bytes();
                cmd.extend_from_slice(sealed.bytes());
                cmd.extend_from_slice(b"\r\n");
                conn.raw(&cmd, "a");
            }
        }
        "time" => {
            conn.command(&format!("EXAMINE {mailbox}"));
            for command in &args[6..] {
                let start = Instant::now();
                let bytes = conn.command(command);
                println!("{:.3} {}", start.elapsed().as_secs_f64(), bytes);
            }
        }
        other => panic!("unknown {other}"),
    }
}

/// A message of about `size` bytes: a text part with a searchable word and an attachment.
fn message(i: usize, size: usize) -> Vec<u8> {
    let mut body = String::new();
    let line = "Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod.\r\n";
    while body.len() < size / 2 {
        body.push_str(line);
    }
    let attachment = data_encoding::BASE64_MIME.encode(&vec![(i % 251) as u8; size / 3]);
    format!(
        "From: Bob <bob@example.test>\r\nTo: alice@example.test\r\nSubject: Report {i}\r\nDate: Thu, 26 Nov 2026 10:00:00 +0000\r\nMessage-ID: <bench{i}@example.test>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"b{i}\"\r\n\r\n--b{i}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\nMessage {i}. The code word is {word}.\r\n{body}\r\n--b{i}\r\nContent-Type: application/octet-stream; name=\"data.bin\"\r\nContent-Disposition: attachment; filename=\"data.bin\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{attachment}\r\n--b{i}--\r\n",
        word = if i == 500 { "xylophone" } else { "walnut" },
    )
    .into_bytes()
}

struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn login(port: &str, user: &str, pass: &str) -> Conn {
        let stream = TcpStream::connect(format!("127.0.0.1:{port}")).expect("connect");
        let writer = stream.try_clone().expect("clone");
        let mut c = Conn {
            reader: BufReader::with_capacity(256 * 1024, stream),
            writer,
        };
        let mut greeting = String::new();
        c.reader.read_line(&mut greeting).expect("greeting");
        c.command(&format!("LOGIN {user} {pass}"));
        c
    }

    fn command(&mut self, command: &str) -> usize {
        self.raw(format!("t {command}\r\n").as_bytes(), "t")
    }

    /// Sends `bytes` and reads until the tagged answer; returns the bytes read.
    fn raw(&mut self, bytes: &[u8], tag: &str) -> usize {
        self.writer.write_all(bytes).expect("write");
        let mut total = 0;
        let mut line = Vec::new();
        loop {
            line.clear();
            let n = self.reader.read_until(b'\n', &mut line).expect("read");
            assert!(n > 0, "connection closed");
            total += n;
            // A literal follows: read it whole.
            if let Some(len) = literal_length(&line) {
                let mut buf = vec![0u8; len];
                self.reader.read_exact(&mut buf).expect("literal");
                total += len;
                continue;
            }
            if line.starts_with(format!("{tag} ").as_bytes()) {
                assert!(
                    line.starts_with(format!("{tag} OK").as_bytes()),
                    "{}",
                    String::from_utf8_lossy(&line)
                );
                return total;
            }
        }
    }
}

fn literal_length(line: &[u8]) -> Option<usize> {
    let line = line.strip_suffix(b"\r\n")?;
    let line = line.strip_suffix(b"}")?;
    let open = line.iter().rposition(|&b| b == b'{')?;
    std::str::from_utf8(&line[open + 1..]).ok()?.parse().ok()
}
