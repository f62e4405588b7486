//! POP3 load for the benchmark (`integration/bench/pop3_bench.sh`): one client that logs in,
//! asks LIST, then RETRs every message in turn, as a POP3 client downloading a maildrop does.
//!
//!   pop3_load PORT USER PASS [CA]
//!
//! With CA (a PEM file), the client says STLS and goes on over TLS, verifying the server's
//! certificate for 127.0.0.1 against CA (the baseline for meshmail's own STLS upstream).
//!
//! Prints `seconds bytes messages p50_ms p99_ms` (time from LIST to the last RETR; bytes as
//! received, dot-stuffing included; per-RETR latency percentiles).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::Instant;

/// The connection, plaintext or TLS.
trait Link: Read + Write {}
impl<T: Read + Write> Link for T {}

/// Lets reads and writes share one link.
struct Shared(std::rc::Rc<std::cell::RefCell<Box<dyn Link>>>);

impl Read for Shared {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().read(buf)
    }
}

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().write(buf)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.borrow_mut().flush()
    }
}

/// STLS on `tcp`, then TLS verified against the CA in `ca_pem`.
fn stls(mut tcp: TcpStream, ca_pem: &str) -> Box<dyn Link> {
    let mut greeting = BufReader::new(tcp.try_clone().expect("clone"));
    let mut line = String::new();
    greeting.read_line(&mut line).expect("greeting");
    assert!(line.starts_with("+OK"), "{line}");
    tcp.write_all(b"STLS\r\n").expect("write");
    line.clear();
    greeting.read_line(&mut line).expect("STLS");
    assert!(line.starts_with("+OK"), "{line}");
    let mut roots = rustls::RootCertStore::empty();
    let pem = std::fs::read(ca_pem).expect("CA");
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        roots.add(cert.expect("certificate")).expect("root");
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let conn = rustls::ClientConnection::new(Arc::new(config), name).expect("TLS");
    Box::new(rustls::StreamOwned::new(conn, tcp))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: pop3_load PORT USER PASS [CA]");
        std::process::exit(64);
    }
    let tcp =
        TcpStream::connect(("127.0.0.1", args[1].parse::<u16>().expect("port"))).expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let tls = args.get(4).is_some();
    let link: Box<dyn Link> = match args.get(4) {
        Some(ca) => stls(tcp, ca),
        None => Box::new(tcp),
    };
    let link = std::rc::Rc::new(std::cell::RefCell::new(link));
    let mut w = Shared(link.clone());
    let mut r = BufReader::with_capacity(256 * 1024, Shared(link));
    let mut line = String::new();
    let mut status = |r: &mut BufReader<Shared>| {
        line.clear();
        r.read_line(&mut line).expect("read");
        assert!(line.starts_with("+OK"), "{line}");
        line.clone()
    };
    // After STLS the greeting was read already.
    if !tls {
        status(&mut r);
    }
    for c in [
        format!("USER {}\r\n", args[2]),
        format!("PASS {}\r\n", args[3]),
    ] {
        w.write_all(c.as_bytes()).expect("write");
        status(&mut r);
    }
    let start = Instant::now();
    w.write_all(b"LIST\r\n").expect("write");
    status(&mut r);
    let mut count = 0u32;
    let (mut bytes, _) = body(&mut r, |_| count += 1);
    let mut latencies = Vec::with_capacity(count as usize);
    for n in 1..=count {
        let t = Instant::now();
        w.write_all(format!("RETR {n}\r\n").as_bytes())
            .expect("write");
        status(&mut r);
        let (b, _) = body(&mut r, |_| {});
        bytes += b;
        latencies.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let seconds = start.elapsed().as_secs_f64();
    w.write_all(b"QUIT\r\n").expect("write");
    latencies.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| {
        latencies
            .get(((latencies.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(0.0)
    };
    println!(
        "{seconds:.3} {bytes} {count} {:.2} {:.2}",
        pct(0.5),
        pct(0.99)
    );
}

/// Reads a multi-line body up to its `.` line; calls `each` per line; gives the bytes read.
fn body(r: &mut BufReader<Shared>, mut each: impl FnMut(&[u8])) -> (usize, ()) {
    let mut bytes = 0;
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        let n = r.read_until(b'\n', &mut buf).expect("read");
        assert!(n > 0, "the server closed in the middle of a body");
        if buf == b".\r\n" {
            return (bytes, ());
        }
        bytes += n;
        each(&buf);
    }
}
