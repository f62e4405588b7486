//! POP3 load for the benchmark (`integration/bench/pop3_bench.sh`): one client that logs in,
//! asks LIST, then RETRs every message in turn, as a POP3 client downloading a maildrop does.
//!
//!   pop3_load PORT USER PASS
//!
//! Prints `seconds bytes messages p50_ms p99_ms` (time from LIST to the last RETR; bytes as
//! received, dot-stuffing included; per-RETR latency percentiles).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 4 {
        eprintln!("usage: pop3_load PORT USER PASS");
        std::process::exit(64);
    }
    let tcp =
        TcpStream::connect(("127.0.0.1", args[1].parse::<u16>().expect("port"))).expect("connect");
    tcp.set_nodelay(true).expect("nodelay");
    let mut w = tcp.try_clone().expect("clone");
    let mut r = BufReader::with_capacity(256 * 1024, tcp);
    let mut line = String::new();
    let mut status = |r: &mut BufReader<TcpStream>| {
        line.clear();
        r.read_line(&mut line).expect("read");
        assert!(line.starts_with("+OK"), "{line}");
        line.clone()
    };
    status(&mut r);
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
fn body(r: &mut BufReader<TcpStream>, mut each: impl FnMut(&[u8])) -> (usize, ()) {
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
