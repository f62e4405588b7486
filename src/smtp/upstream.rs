//! The upstream submission server, one connection per client session, over lettre's
//! `AsyncSmtpConnection` (its `command`, `message`, `read_response`).
//!
//! TLS is meshmail's own (tokio-rustls, certificates verified against the system roots plus the
//! configured CA). STARTTLS is done here rather than by lettre: lettre reads the `220` through a
//! buffered reader and upgrades the socket underneath it, so bytes an attacker placed after the
//! `220` in plaintext would later be read as if they came over TLS. Here the plaintext phase
//! reads only up to the end of the `220` reply, discards anything after it, and hands lettre a
//! stream that is TLS from its first byte.

use super::reply::Reply;
use crate::pipeline::Payload;
use crate::upstream::{handshake, UpstreamError, UpstreamTarget, UpstreamTls};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream};
use lettre::transport::smtp::extension::ClientId;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// What the upstream's EHLO offers.
#[derive(Debug, Clone, Default)]
pub struct Capabilities {
    pub size: Option<usize>,
    pub smtputf8: bool,
    pub eightbitmime: bool,
    pub pipelining: bool,
    pub dsn: bool,
    pub enhanced_status_codes: bool,
    /// AUTH mechanisms, upper case.
    pub auth: Vec<String>,
}

impl Capabilities {
    pub fn parse<'a>(lines: impl Iterator<Item = &'a str>) -> Capabilities {
        let mut caps = Capabilities::default();
        // The first line is the greeting part of the EHLO reply ("host Hello ...").
        for line in lines.skip(1) {
            let mut words = line.split_whitespace();
            let Some(keyword) = words.next() else {
                continue;
            };
            match keyword.to_ascii_uppercase().as_str() {
                "SIZE" => caps.size = words.next().and_then(|n| n.parse().ok()).filter(|n| *n > 0),
                "SMTPUTF8" => caps.smtputf8 = true,
                "8BITMIME" => caps.eightbitmime = true,
                "PIPELINING" => caps.pipelining = true,
                "DSN" => caps.dsn = true,
                "ENHANCEDSTATUSCODES" => caps.enhanced_status_codes = true,
                "AUTH" => caps.auth = words.map(str::to_ascii_uppercase).collect(),
                _ => {}
            }
        }
        caps
    }
}

/// A live upstream connection.
pub struct Upstream {
    conn: AsyncSmtpConnection,
    pub caps: Capabilities,
    timeout: Duration,
}

impl Upstream {
    pub async fn connect(target: &UpstreamTarget) -> Result<Upstream, UpstreamError> {
        let t = target.timeout;
        let tcp = tokio::time::timeout(t, TcpStream::connect(&target.address))
            .await
            .map_err(|_| UpstreamError::Connect("timed out".into()))?
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let hello = ClientId::Domain(target.hello_name.clone());
        let peer = tcp
            .peer_addr()
            .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        let stream: Box<dyn AsyncTokioStream> = match target.tls {
            UpstreamTls::None => Box::new(Wrapped::new(tcp, peer, None)),
            UpstreamTls::Implicit => {
                let tls = handshake(target, tcp).await?;
                Box::new(Wrapped::new(tls, peer, None))
            }
            UpstreamTls::Starttls => {
                let tcp = plaintext_starttls(tcp, &target.hello_name, t).await?;
                let tls = handshake(target, tcp).await?;
                // lettre expects a greeting; after STARTTLS there is none, so it is supplied.
                Box::new(Wrapped::new(
                    tls,
                    peer,
                    Some(b"220 TLS established\r\n".to_vec()),
                ))
            }
        };
        let conn = tokio::time::timeout(
            t,
            AsyncSmtpConnection::connect_with_transport(stream, &hello),
        )
        .await
        .map_err(|_| UpstreamError::Connect("timed out in EHLO".into()))?
        .map_err(|e| UpstreamError::Connect(e.to_string()))?;
        let mut upstream = Upstream {
            conn,
            caps: Capabilities::default(),
            timeout: t,
        };
        // lettre parses only a few extensions; read the whole EHLO reply once more.
        let ehlo = upstream
            .command(&format!("EHLO {}", target.hello_name))
            .await?;
        upstream.caps = Capabilities::parse(ehlo.lines.iter().map(String::as_str));
        Ok(upstream)
    }

    /// Sends one command line (without CRLF) and returns the upstream's reply, positive or
    /// negative, exactly as it came. Only a broken connection is an error.
    pub async fn command(&mut self, line: &str) -> Result<Reply, UpstreamError> {
        let r = tokio::time::timeout(self.timeout, self.conn.command(format!("{line}\r\n"))).await;
        self.reply(r)
    }

    /// Sends DATA and a copy or report the pipeline made (dot-stuffed by lettre), returning
    /// the final reply. Takes a [`Payload`], never bytes: only the pipeline makes one.
    pub async fn data(&mut self, payload: Payload<'_>) -> Result<Reply, UpstreamError> {
        let message = payload.bytes();
        let go = self.command("DATA").await?;
        if go.code != 354 {
            // A refused DATA command leaves the transaction open (Postfix's
            // smtpd_data_restrictions): end it, or the next MAIL is a "nested MAIL command".
            self.command("RSET").await?;
            return Ok(go);
        }
        // A large message takes longer than one command.
        let long = self.timeout * 10;
        // In chunks: lettre dot-stuffs each part into a buffer of its size, so a whole large
        // message would be held twice.
        let r = tokio::time::timeout(long, self.conn.message_iter(message.chunks(64 * 1024))).await;
        self.reply(r)
    }

    pub async fn quit(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(5), self.conn.quit()).await;
    }

    fn reply(
        &mut self,
        r: Result<
            Result<lettre::transport::smtp::response::Response, lettre::transport::smtp::Error>,
            tokio::time::error::Elapsed,
        >,
    ) -> Result<Reply, UpstreamError> {
        match r {
            Err(_) => Err(UpstreamError::Broken("timed out".into())),
            Ok(Ok(response)) => {
                let code = response.code().to_string().parse().unwrap_or(250);
                Ok(Reply::from_lines(
                    code,
                    response.message().map(str::to_owned).collect(),
                ))
            }
            Ok(Err(e)) => match e.status() {
                Some(code) => {
                    let text = std::error::Error::source(&e)
                        .map(|s| s.to_string())
                        .unwrap_or_default();
                    Ok(Reply::relayed(
                        code.to_string().parse().unwrap_or(451),
                        &text,
                    ))
                }
                None => Err(UpstreamError::Broken(e.to_string())),
            },
        }
    }
}

/// Greeting, EHLO and STARTTLS in plaintext, reading exactly up to the end of each reply.
async fn plaintext_starttls(
    mut tcp: TcpStream,
    hello: &str,
    t: Duration,
) -> Result<TcpStream, UpstreamError> {
    let mut pending = Vec::new();
    let greeting = read_reply(&mut tcp, &mut pending, t).await?;
    if greeting.code != 220 {
        return Err(UpstreamError::Connect(format!(
            "greeting: {} {}",
            greeting.code,
            greeting.message.trim()
        )));
    }
    write(&mut tcp, format!("EHLO {hello}\r\n").as_bytes(), t).await?;
    let ehlo = read_reply(&mut tcp, &mut pending, t).await?;
    // The first line greets; each further line is one extension.
    if ehlo.code != 250
        || !ehlo
            .message
            .split('\n')
            .skip(1)
            .any(|l| l.trim().eq_ignore_ascii_case("STARTTLS"))
    {
        return Err(UpstreamError::NoStartTls);
    }
    write(&mut tcp, b"STARTTLS\r\n", t).await?;
    let go = read_reply(&mut tcp, &mut pending, t).await?;
    if go.code != 220 {
        return Err(UpstreamError::Tls(format!(
            "STARTTLS refused: {} {}",
            go.code,
            go.message.trim()
        )));
    }
    if !pending.is_empty() {
        // Bytes after the 220 in plaintext: an injection attempt or a broken server.
        tracing::warn!(
            bytes = pending.len(),
            "discarded plaintext the upstream sent after its STARTTLS reply"
        );
    }
    Ok(tcp)
}

async fn write(tcp: &mut TcpStream, bytes: &[u8], t: Duration) -> Result<(), UpstreamError> {
    tokio::time::timeout(t, tcp.write_all(bytes))
        .await
        .map_err(|_| UpstreamError::Broken("timed out".into()))?
        .map_err(|e| UpstreamError::Broken(e.to_string()))
}

/// Reads one (multi-line) reply with smtp-proto's parser; bytes after it stay in `pending`.
async fn read_reply(
    tcp: &mut TcpStream,
    pending: &mut Vec<u8>,
    t: Duration,
) -> Result<smtp_proto::Response<String>, UpstreamError> {
    let mut receiver = smtp_proto::response::parser::ResponseReceiver::default();
    loop {
        let mut rest = pending.iter();
        match receiver.parse(&mut rest) {
            Ok(reply) => {
                let used = pending.len() - rest.len();
                pending.drain(..used);
                return Ok(reply);
            }
            // The parser keeps what it read so far.
            Err(smtp_proto::Error::NeedsMoreData { .. }) => pending.clear(),
            Err(e) => return Err(UpstreamError::Broken(format!("unreadable reply: {e}"))),
        }
        let mut chunk = [0u8; 4096];
        let n = tokio::time::timeout(t, tcp.read(&mut chunk))
            .await
            .map_err(|_| UpstreamError::Broken("timed out".into()))?
            .map_err(|e| UpstreamError::Broken(e.to_string()))?;
        if n == 0 {
            return Err(UpstreamError::Broken("closed".into()));
        }
        pending.extend_from_slice(&chunk[..n]);
    }
}

/// A stream handed to lettre: optionally starts with bytes meshmail supplies (the greeting
/// after STARTTLS).
struct Wrapped<S> {
    inner: S,
    peer: std::net::SocketAddr,
    prefix: Option<Vec<u8>>,
}

impl<S> Wrapped<S> {
    fn new(inner: S, peer: std::net::SocketAddr, prefix: Option<Vec<u8>>) -> Wrapped<S> {
        Wrapped {
            inner,
            peer,
            prefix,
        }
    }
}

impl<S> fmt::Debug for Wrapped<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "upstream({})", self.peer)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Wrapped<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if let Some(prefix) = self.prefix.take() {
            let n = prefix.len().min(buf.remaining());
            buf.put_slice(&prefix[..n]);
            if n < prefix.len() {
                self.prefix = Some(prefix[n..].to_vec());
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Wrapped<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<S: AsyncRead + AsyncWrite + Send + Sync + Unpin> AsyncTokioStream for Wrapped<S> {
    fn peer_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        Ok(self.peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ehlo_capabilities() {
        let lines = [
            "mx.example.test",
            "PIPELINING",
            "SIZE 10240000",
            "AUTH PLAIN LOGIN",
            "ENHANCEDSTATUSCODES",
            "8BITMIME",
            "DSN",
            "SMTPUTF8",
        ];
        let c = Capabilities::parse(lines.iter().copied());
        assert_eq!(c.size, Some(10_240_000));
        assert!(c.smtputf8 && c.eightbitmime && c.pipelining && c.dsn && c.enhanced_status_codes);
        assert_eq!(c.auth, vec!["PLAIN", "LOGIN"]);
    }
}
