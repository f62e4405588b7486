//! The client connection of a session: a byte stream (plain or TLS) with a read buffer, line
//! and DATA reading under limits, idle timeouts, and the STARTTLS upgrade.

use crate::smtp::data::{DataError, DataReceiver, Progress};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Any stream a session can run over.
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// Why reading from the client stopped.
#[derive(Debug)]
pub enum ReadError {
    /// The client closed the connection.
    Closed,
    /// Nothing arrived within the idle timeout.
    Idle,
    /// A command line longer than the limit (the rest of it was discarded).
    LineTooLong,
    Io(std::io::Error),
}

pub struct Connection {
    stream: Box<dyn Stream>,
    buf: Vec<u8>,
    idle: Duration,
    /// Set once TLS is in place (STARTTLS or implicit).
    pub tls: bool,
}

const READ_CHUNK: usize = 16 * 1024;

impl Connection {
    pub fn new(stream: Box<dyn Stream>, idle: Duration, tls: bool) -> Connection {
        Connection {
            stream,
            buf: Vec::new(),
            idle,
            tls,
        }
    }

    async fn fill(&mut self) -> Result<(), ReadError> {
        let mut chunk = [0u8; READ_CHUNK];
        let n = tokio::time::timeout(self.idle, self.stream.read(&mut chunk))
            .await
            .map_err(|_| ReadError::Idle)?
            .map_err(ReadError::Io)?;
        if n == 0 {
            return Err(ReadError::Closed);
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }

    /// One line including its LF. Lines longer than `max` are discarded up to their LF and
    /// reported, so the session can answer and go on.
    pub async fn read_line(&mut self, max: usize) -> Result<Vec<u8>, ReadError> {
        let mut discarding = false;
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                if discarding || line.len() > max {
                    return Err(ReadError::LineTooLong);
                }
                return Ok(line);
            }
            if self.buf.len() > max {
                discarding = true;
                self.buf.clear();
            }
            self.fill().await?;
        }
    }

    /// The next command line, or `None` once `shutdown` turns true: checked first, so a
    /// session stops between commands only (a message in DATA is finished before).
    pub async fn next_command(
        &mut self,
        max: usize,
        shutdown: &mut tokio::sync::watch::Receiver<bool>,
    ) -> Option<Result<Vec<u8>, ReadError>> {
        tokio::select! {
            biased;
            _ = shutdown.wait_for(|stop| *stop) => None,
            r = self.read_line(max) => Some(r),
        }
    }

    /// Bytes that arrived but were not read yet (pipelined commands).
    pub fn has_buffered(&self) -> bool {
        !self.buf.is_empty()
    }

    /// Reads DATA into `receiver` until its end marker; what follows stays buffered.
    /// `admit(len)` is asked after each chunk whether `len` bytes may be held; when it says no,
    /// the message is refused as [`DataError::Busy`] and the rest is read and dropped.
    pub async fn read_data(
        &mut self,
        receiver: &mut DataReceiver,
        mut admit: impl FnMut(usize) -> bool,
    ) -> Result<(), ReadError> {
        loop {
            if !self.buf.is_empty() {
                let pending = std::mem::take(&mut self.buf);
                let progress = receiver.feed(&pending);
                if !admit(receiver.len()) {
                    receiver.refuse(DataError::Busy);
                }
                if let Progress::Done { consumed } = progress {
                    self.buf = pending[consumed..].to_vec();
                    return Ok(());
                }
            }
            self.fill().await?;
        }
    }

    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes).await?;
        self.stream.flush().await
    }

    /// Replaces the stream by its TLS form. Anything the client pipelined after STARTTLS in
    /// plaintext is discarded first (RFC 3207 §4.2; CVE-2011-0411-style injection).
    pub async fn start_tls(&mut self, acceptor: &tokio_rustls::TlsAcceptor) -> std::io::Result<()> {
        self.buf.clear();
        let (placeholder, _) = tokio::io::duplex(1);
        let plain = std::mem::replace(&mut self.stream, Box::new(placeholder));
        let tls = tokio::time::timeout(self.idle, acceptor.accept(plain))
            .await
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::TimedOut, "TLS handshake timed out")
            })??;
        self.stream = Box::new(tls);
        self.tls = true;
        Ok(())
    }

    pub async fn shutdown(&mut self) {
        let _ = self.stream.shutdown().await;
    }
}
