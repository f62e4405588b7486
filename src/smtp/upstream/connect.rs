//! Reaching the upstream: TCP, then TLS from the first byte or after a plaintext STARTTLS
//! phase read exactly up to each reply's end (smtp-proto's parser), and the stream handed to
//! lettre.

use crate::upstream::UpstreamError;
use lettre::transport::smtp::client::AsyncTokioStream;
use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;

/// Greeting, EHLO and STARTTLS in plaintext, reading exactly up to the end of each reply.
pub(super) async fn plaintext_starttls(
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
pub(super) struct Wrapped<S> {
    inner: S,
    peer: std::net::SocketAddr,
    prefix: Option<Vec<u8>>,
}

impl<S> Wrapped<S> {
    pub(super) fn new(inner: S, peer: std::net::SocketAddr, prefix: Option<Vec<u8>>) -> Wrapped<S> {
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
