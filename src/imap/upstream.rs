//! Connecting to the upstream IMAP server: TCP, implicit TLS or STARTTLS (with certificate
//! verification), the greeting and the capability list. Used for the client's relayed
//! connection and for meshmail's own connection (`owned`).

use crate::smtp::session::io::Stream;
use crate::upstream::{handshake, read_line, write, UpstreamError, UpstreamTarget, UpstreamTls};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// A connected, greeted upstream.
pub struct ImapUpstream {
    pub stream: Box<dyn Stream>,
    /// The capabilities the upstream announced over the final (TLS) link.
    pub capabilities: Vec<String>,
}

/// Connects, secures and greets. Any failure is temporary for the client.
pub async fn connect(target: &UpstreamTarget) -> Result<ImapUpstream, UpstreamError> {
    let t = target.timeout;
    let tcp = crate::upstream::connect_tcp(target).await?;
    let mut stream: Box<dyn Stream> = match target.tls {
        UpstreamTls::None => {
            let mut tcp = tcp;
            expect_greeting(&mut tcp, t).await?;
            Box::new(tcp)
        }
        UpstreamTls::Implicit => {
            let mut tls = handshake(target, tcp).await?;
            expect_greeting(&mut tls, t).await?;
            Box::new(tls)
        }
        UpstreamTls::Starttls => {
            let mut tcp = tcp;
            expect_greeting(&mut tcp, t).await?;
            write(&mut tcp, b"m0 STARTTLS\r\n", t).await?;
            let reply = read_until_tagged(&mut tcp, "m0", t, true).await?;
            if !reply.tagged_ok {
                return Err(UpstreamError::NoStartTls);
            }
            if reply.extra {
                // Bytes after the tagged OK arrived in plaintext: an injection attempt (or a
                // broken server). They must not be read as if they came over TLS.
                return Err(UpstreamError::Tls(
                    "the upstream sent plaintext after its STARTTLS reply".into(),
                ));
            }
            Box::new(handshake(target, tcp).await?)
        }
    };
    write(&mut stream, b"m1 CAPABILITY\r\n", t).await?;
    let reply = read_until_tagged(&mut stream, "m1", t, false).await?;
    if !reply.tagged_ok || reply.extra {
        return Err(UpstreamError::Broken("CAPABILITY failed".into()));
    }
    let capabilities = reply
        .lines
        .iter()
        .filter_map(|l| {
            let l = l.strip_prefix("* ")?;
            let rest = l
                .get(..10)?
                .eq_ignore_ascii_case("CAPABILITY")
                .then(|| &l[10..])?;
            Some(
                rest.split_ascii_whitespace()
                    .map(str::to_owned)
                    .collect::<Vec<_>>(),
            )
        })
        .flatten()
        .collect();
    Ok(ImapUpstream {
        stream,
        capabilities,
    })
}

async fn expect_greeting<S: tokio::io::AsyncRead + Unpin + ?Sized>(
    s: &mut S,
    t: Duration,
) -> Result<(), UpstreamError> {
    let greeting = read_line(s, t).await?;
    if !greeting.to_ascii_uppercase().starts_with("* OK") {
        return Err(UpstreamError::Connect(format!(
            "greeting: {}",
            greeting.trim_end()
        )));
    }
    Ok(())
}

struct TaggedReply {
    lines: Vec<String>,
    tagged_ok: bool,
    /// More bytes were already waiting after the tagged line.
    extra: bool,
}

async fn read_until_tagged<S: tokio::io::AsyncRead + Unpin + ?Sized>(
    s: &mut S,
    tag: &str,
    t: Duration,
    probe: bool,
) -> Result<TaggedReply, UpstreamError> {
    let mut lines = Vec::new();
    loop {
        let line = read_line(s, t).await?;
        if let Some(rest) = line.strip_prefix(tag).and_then(|r| r.strip_prefix(' ')) {
            let tagged_ok = rest.to_ascii_uppercase().starts_with("OK");
            // Anything already readable now was sent together with the tagged reply.
            let mut byte = [0u8; 1];
            let extra = probe
                && matches!(
                    tokio::time::timeout(Duration::from_millis(20), s.read(&mut byte)).await,
                    Ok(Ok(n)) if n > 0
                );
            return Ok(TaggedReply {
                lines,
                tagged_ok,
                extra,
            });
        }
        if lines.len() > 1000 {
            return Err(UpstreamError::Broken("too many lines".into()));
        }
        lines.push(line);
    }
}
