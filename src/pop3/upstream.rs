//! Connecting to the provider's POP3 server: TCP, implicit TLS or STLS (RFC 2595, with
//! certificate verification), and its greeting. Each client session gets its own connection:
//! a POP3 maildrop is locked for one session at a time, so meshmail reads the ciphertext it
//! decrypts over the client's own connection.

use crate::smtp::session::io::Stream;
use crate::upstream::{handshake, read_line, write, UpstreamError, UpstreamTarget, UpstreamTls};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// A connected, greeted upstream.
pub struct Pop3Upstream {
    pub stream: Box<dyn Stream>,
    /// The server's greeting, CRLF included. Its text is shown to the client as it came: an
    /// APOP timestamp in it must reach the client for APOP to work through meshmail.
    pub greeting: Vec<u8>,
}

/// Connects, secures and greets. Any failure is temporary for the client.
pub async fn connect(target: &UpstreamTarget) -> Result<Pop3Upstream, UpstreamError> {
    let t = target.timeout;
    let tcp = crate::upstream::connect_tcp(target).await?;
    Ok(match target.tls {
        UpstreamTls::None => {
            let mut tcp = tcp;
            let greeting = expect_greeting(&mut tcp, t).await?;
            Pop3Upstream {
                stream: Box::new(tcp),
                greeting,
            }
        }
        UpstreamTls::Implicit => {
            let mut tls = handshake(target, tcp).await?;
            let greeting = expect_greeting(&mut tls, t).await?;
            Pop3Upstream {
                stream: Box::new(tls),
                greeting,
            }
        }
        UpstreamTls::Starttls => {
            let mut tcp = tcp;
            let greeting = expect_greeting(&mut tcp, t).await?;
            write(&mut tcp, b"STLS\r\n", t).await?;
            let reply = read_line(&mut tcp, t).await?;
            if !reply.starts_with("+OK") {
                return Err(UpstreamError::NoStartTls);
            }
            // Anything readable now was sent in plaintext together with the +OK: an injection
            // attempt (or a broken server). It must not be read as if it came over TLS.
            let mut byte = [0u8; 1];
            if matches!(
                tokio::time::timeout(Duration::from_millis(20), tcp.read(&mut byte)).await,
                Ok(Ok(n)) if n > 0
            ) {
                return Err(UpstreamError::Tls(
                    "the upstream sent plaintext after its STLS reply".into(),
                ));
            }
            Pop3Upstream {
                stream: Box::new(handshake(target, tcp).await?),
                greeting,
            }
        }
    })
}

async fn expect_greeting<S: tokio::io::AsyncRead + Unpin + ?Sized>(
    s: &mut S,
    t: Duration,
) -> Result<Vec<u8>, UpstreamError> {
    let greeting = read_line(s, t).await?;
    if !greeting.starts_with("+OK") || greeting.len() > super::command::MAX_LINE {
        return Err(UpstreamError::Connect(format!(
            "greeting: {}",
            greeting.trim_end()
        )));
    }
    let mut line = greeting.trim_end().as_bytes().to_vec();
    line.extend_from_slice(b"\r\n");
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A server that answers STLS with `+OK` and, in the same packet, a line of its own.
    #[tokio::test]
    async fn plaintext_injected_after_the_stls_reply_is_refused() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            s.write_all(b"+OK ready\r\n").await.expect("greeting");
            let mut buf = [0u8; 64];
            let _ = s.read(&mut buf).await;
            s.write_all(b"+OK Begin TLS\r\n+OK injected\r\n")
                .await
                .expect("reply");
            let _ = s.read(&mut buf).await;
        });
        let target = UpstreamTarget {
            address: addr.to_string(),
            tls: UpstreamTls::Starttls,
            tls_config: std::sync::Arc::new(crate::imap::fuzz::test_client_config()),
            timeout: Duration::from_secs(5),
            hello_name: "localhost".into(),
        };
        match connect(&target).await {
            Err(UpstreamError::Tls(reason)) => assert!(reason.contains("plaintext"), "{reason}"),
            Err(e) => panic!("refused for another reason: {e}"),
            Ok(_) => panic!("an injected line was accepted"),
        }
    }
}
