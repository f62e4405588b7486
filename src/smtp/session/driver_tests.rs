//! The session driver in-process: a client and a scripted upstream on duplex pipes, the clock
//! paused (`tokio::time::pause`), so pipelining, smuggling, STARTTLS injection and the idle
//! timeout are checked byte for byte without servers. The integration tests against Postfix
//! stay beside these.

use super::io::Connection;
use super::Session;
use crate::config::{EncryptRule, EncryptRules, Limits};
use crate::policy::{PolicyResolver, ResolverSettings};
use crate::smtp::server::{InFlight, SmtpContext};
use crate::smtp::upstream::Upstream;
use crate::upstream::{UpstreamTarget, UpstreamTls};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream};

/// Everything the scripted upstream was sent, line by line (message lines included).
type Log = Arc<Mutex<Vec<String>>>;

/// A submission server that accepts everything and records what it gets.
async fn scripted_upstream(stream: DuplexStream, log: Log) {
    let (r, mut w) = tokio::io::split(stream);
    let mut r = BufReader::new(r);
    let _ = w.write_all(b"220 upstream ESMTP\r\n").await;
    let mut in_data = false;
    let mut line = String::new();
    loop {
        line.clear();
        match r.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        if let Ok(mut l) = log.lock() {
            l.push(line.clone());
        }
        let answer: &[u8] = if in_data {
            if line == ".\r\n" {
                in_data = false;
                b"250 2.0.0 queued\r\n"
            } else {
                continue;
            }
        } else {
            match line.get(..4).map(str::to_ascii_uppercase).as_deref() {
                Some("EHLO") => {
                    b"250-upstream\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 1000000\r\n"
                }
                Some("DATA") => {
                    in_data = true;
                    b"354 go on\r\n"
                }
                Some("QUIT") => {
                    let _ = w.write_all(b"221 2.0.0 bye\r\n").await;
                    return;
                }
                _ => b"250 2.0.0 ok\r\n",
            }
        };
        if w.write_all(answer).await.is_err() {
            return;
        }
    }
}

fn context(tls: Option<tokio_rustls::TlsAcceptor>) -> Arc<SmtpContext> {
    let resolver = PolicyResolver::new(&ResolverSettings {
        dns: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9))),
        https_ca: None,
        https_port: None,
        timeout: Duration::from_secs(1),
        home: None,
        store_ttl: Duration::from_secs(60),
        retry_after: Duration::from_secs(60),
    })
    .unwrap();
    Arc::new(SmtpContext {
        hostname: "meshmail.test".into(),
        resolver,
        rules: EncryptRules {
            default: EncryptRule::Never,
            domains: Default::default(),
            addresses: Default::default(),
        },
        limits: Limits {
            idle_timeout_secs: 300,
            ..Limits::default()
        },
        upstream: UpstreamTarget {
            address: "127.0.0.1:25".into(),
            tls: UpstreamTls::None,
            tls_config: Arc::new(crate::upstream::client_config(None, &[]).unwrap()),
            timeout: Duration::from_secs(30),
            hello_name: "localhost".into(),
        },
        tls,
        accounts: HashMap::new(),
        sign: false,
        in_flight: InFlight::new(1 << 24),
        connections: Arc::new(tokio::sync::Semaphore::new(10)),
        spool: None,
    })
}

/// A session between a client pipe (returned) and the scripted upstream (its log returned).
async fn session(tls: Option<tokio_rustls::TlsAcceptor>) -> (DuplexStream, Log) {
    let log: Log = Arc::default();
    let (up_here, up_there) = tokio::io::duplex(1 << 20);
    tokio::spawn(scripted_upstream(up_there, log.clone()));
    let upstream = Upstream::over(up_here).await.unwrap();
    let (client, server) = tokio::io::duplex(1 << 20);
    let ctx = context(tls);
    let idle = Duration::from_secs(ctx.limits.idle_timeout_secs);
    let conn = Connection::new(Box::new(server), idle, false);
    let (_stop, shutdown) = tokio::sync::watch::channel(false);
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 40000));
    tokio::spawn(async move {
        let _keep = _stop;
        Session::new(conn, upstream, ctx, peer, true, shutdown)
            .run()
            .await
    });
    (client, log)
}

/// Reads until each of `ends` was seen, in order, and the last line is complete.
async fn read_until(client: &mut DuplexStream, ends: &[&str]) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&got).into_owned();
        let mut rest = text.as_str();
        let mut all = true;
        for end in ends {
            match rest.find(end) {
                Some(i) => rest = &rest[i + end.len()..],
                None => {
                    all = false;
                    break;
                }
            }
        }
        if all && text.ends_with("\r\n") {
            return text;
        }
        // Long: the paused clock jumps to the earliest timer, which must be the session's.
        match tokio::time::timeout(Duration::from_secs(3600), client.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => return text,
        }
    }
}

fn upstream_saw(log: &Log, needle: &str) -> bool {
    log.lock().unwrap().iter().any(|l| l.contains(needle))
}

#[tokio::test(start_paused = true)]
async fn pipelined_commands_are_answered_in_order() {
    let (mut client, log) = session(None).await;
    client
        .write_all(b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n")
        .await
        .unwrap();
    let text = read_until(&mut client, &["220 ", "250 ", "250 ", "250 ", "354 "]).await;
    let codes: Vec<&str> = text
        .lines()
        .filter(|l| l.as_bytes().get(3) == Some(&b' '))
        .map(|l| &l[..3])
        .collect();
    assert_eq!(codes, ["220", "250", "250", "250", "354"], "{text}");
    client
        .write_all(b"Subject: hi\r\n\r\n..dotted\r\n.\r\nQUIT\r\n")
        .await
        .unwrap();
    let text = read_until(&mut client, &["250 2.0.0 Message accepted", "221 "]).await;
    assert!(text.contains("(1 copy: plain)"), "{text}");
    assert!(upstream_saw(&log, "RCPT TO:<b@x.test>"));
    // Dot-stuffing undone from the client and done again for the upstream.
    assert!(upstream_saw(&log, "..dotted"));
}

#[tokio::test(start_paused = true)]
async fn a_smuggled_second_message_never_reaches_the_upstream() {
    let (mut client, log) = session(None).await;
    client
        .write_all(b"EHLO c\r\nMAIL FROM:<a@x.test>\r\nRCPT TO:<b@x.test>\r\nDATA\r\n")
        .await
        .unwrap();
    read_until(&mut client, &["354 "]).await;
    client
        .write_all(b"Subject: first\r\n\r\nbody\n.\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<victim@x.test>\r\nDATA\r\nSubject: smuggled\r\n\r\nx\r\n.\r\nNOOP\r\n")
        .await
        .unwrap();
    let text = read_until(&mut client, &["554 5.6.0", "250 "]).await;
    assert!(text.contains("smuggling"), "{text}");
    assert_eq!(
        text.matches("\r\n").count(),
        2,
        "one refusal, then NOOP: {text}"
    );
    assert!(!upstream_saw(&log, "evil") && !upstream_saw(&log, "victim"));
    assert!(!upstream_saw(&log, "DATA"), "no message went upstream");
    // The upstream transaction opened at RCPT time was ended.
    assert!(upstream_saw(&log, "RSET"));
}

#[tokio::test(start_paused = true)]
async fn an_idle_client_is_told_and_closed() {
    let (mut client, _log) = session(None).await;
    client.write_all(b"EHLO c\r\n").await.unwrap();
    read_until(&mut client, &["220 ", "250 "]).await;
    // The paused clock jumps to the idle timeout as soon as everything waits.
    let text = read_until(&mut client, &["421 4.4.2"]).await;
    assert!(text.contains("Idle too long"), "{text}");
    let mut rest = Vec::new();
    let n = client.read_to_end(&mut rest).await.unwrap();
    assert_eq!(n, 0, "closed after the 421");
}

#[tokio::test(start_paused = true)]
async fn a_command_pipelined_after_starttls_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = crate::tls::localhost_certificate().unwrap();
    std::fs::write(dir.path().join("cert.pem"), &cert).unwrap();
    std::fs::write(dir.path().join("key.pem"), &key).unwrap();
    let acceptor =
        crate::tls::acceptor(&dir.path().join("cert.pem"), &dir.path().join("key.pem")).unwrap();
    let (mut client, _log) = session(Some(acceptor)).await;
    client.write_all(b"EHLO c\r\n").await.unwrap();
    let ehlo = read_until(&mut client, &["220 ", "250 "]).await;
    assert!(ehlo.contains("STARTTLS"), "{ehlo}");
    // The injection: a command sent in plaintext behind STARTTLS.
    client.write_all(b"STARTTLS\r\nNOOP\r\n").await.unwrap();
    let go = read_until(&mut client, &["220 "]).await;
    assert!(go.starts_with("220 2.0.0"), "{go}");
    let mut roots = rustls::RootCertStore::empty();
    for c in crate::tls::read_pem_certs(&dir.path().join("cert.pem")).unwrap() {
        roots.add(c).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, client)
        .await
        .unwrap();
    // Nothing answers the plaintext NOOP over TLS; the first reply is to the EHLO sent now.
    tls.write_all(b"EHLO c\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tls.read(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("250-meshmail.test meshmail"), "{text}");
    assert!(
        !text.contains("STARTTLS") && !text.contains("250 2.0.0 OK"),
        "{text}"
    );
}
