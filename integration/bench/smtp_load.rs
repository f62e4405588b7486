//! SMTP load generator for the benchmarks: N sessions send M messages of S bytes in total, and
//! the time of each transaction (MAIL to the final reply) is recorded. Prints one line:
//! `messages=.. failed=.. seconds=.. msgs_per_s=.. p50_ms=.. p99_ms=..`.
//!
//! usage: smtp_load SERVER SESSIONS MESSAGES SIZE FROM TO

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

async fn reply(r: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> std::io::Result<u16> {
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(60), r.read_line(&mut line))
            .await
            .map_err(|_| std::io::Error::other("timed out"))??;
        if n == 0 {
            return Err(std::io::Error::other("closed"));
        }
        if line.as_bytes().get(3) != Some(&b'-') {
            return Ok(line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0));
        }
    }
}

async fn session(
    server: String,
    count: usize,
    body: std::sync::Arc<Vec<u8>>,
    from: String,
    to: String,
) -> (Vec<Duration>, usize) {
    let mut times = Vec::with_capacity(count);
    let mut failed = 0;
    let Ok(stream) = TcpStream::connect(&server).await else {
        return (times, count);
    };
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    if reply(&mut rd).await.is_err()
        || wr.write_all(b"EHLO bench\r\n").await.is_err()
        || reply(&mut rd).await.is_err()
    {
        return (times, count);
    }
    for _ in 0..count {
        let t = Instant::now();
        let ok = async {
            wr.write_all(format!("MAIL FROM:<{from}>\r\n").as_bytes())
                .await?;
            if reply(&mut rd).await? != 250 {
                return Ok::<bool, std::io::Error>(false);
            }
            wr.write_all(format!("RCPT TO:<{to}>\r\n").as_bytes())
                .await?;
            if reply(&mut rd).await? != 250 {
                wr.write_all(b"RSET\r\n").await?;
                reply(&mut rd).await?;
                return Ok(false);
            }
            wr.write_all(b"DATA\r\n").await?;
            if reply(&mut rd).await? != 354 {
                return Ok(false);
            }
            wr.write_all(&body).await?;
            Ok(reply(&mut rd).await? == 250)
        }
        .await;
        match ok {
            Ok(true) => times.push(t.elapsed()),
            _ => failed += 1,
        }
    }
    let _ = wr.write_all(b"QUIT\r\n").await;
    (times, failed)
}

#[tokio::main]
async fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 7 {
        eprintln!("usage: smtp_load SERVER SESSIONS MESSAGES SIZE FROM TO");
        std::process::exit(64);
    }
    let (server, sessions, messages, size) = (
        a[1].clone(),
        a[2].parse::<usize>().unwrap_or(20),
        a[3].parse::<usize>().unwrap_or(5000),
        a[4].parse::<usize>().unwrap_or(10240),
    );
    let mut body = format!(
        "From: {}\r\nTo: {}\r\nSubject: benchmark\r\n\r\n",
        a[5], a[6]
    )
    .into_bytes();
    while body.len() < size {
        body.extend_from_slice(
            b"The quick brown fox jumps over the lazy dog, 0123456789 times.\r\n",
        );
    }
    body.extend_from_slice(b".\r\n");
    let body = std::sync::Arc::new(body);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..sessions {
        let n = messages / sessions + usize::from(i < messages % sessions);
        tasks.push(tokio::spawn(session(
            server.clone(),
            n,
            body.clone(),
            a[5].clone(),
            a[6].clone(),
        )));
    }
    let mut all = Vec::new();
    let mut failed = 0;
    for t in tasks {
        if let Ok((times, f)) = t.await {
            all.extend(times);
            failed += f;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    all.sort();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .map(|d| d.as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
    };
    println!(
        "messages={} failed={} seconds={:.2} msgs_per_s={:.0} p50_ms={:.1} p99_ms={:.1}",
        all.len(),
        failed,
        secs,
        all.len() as f64 / secs,
        pct(0.50),
        pct(0.99)
    );
}
