//! One client session: read a command, decide, reply. The verbs with real decisions live in
//! their own files: `auth` (AUTH relayed upstream), `envelope` (MAIL, RCPT), `transaction`
//! (DATA: pipeline, relay), `report` (reports about
//! recipients that failed after `250`, sent or spooled). This file holds the loop, the simple verbs and the limits.

mod auth;
mod envelope;
pub mod io;
mod relay;
mod report;
mod transaction;

use super::reply::Reply;
use super::server::SmtpContext;
use super::upstream::Upstream;
use crate::pipeline::{Classified, SenderKeys};
use io::{Connection, ReadError};
use relay::Relay;
use smtp_proto::Request;
use std::net::SocketAddr;
use std::sync::Arc;

/// An account a login is mapped to, as loaded at start.
#[derive(Debug)]
pub struct MappedAccount {
    pub address: String,
    /// `None` while the key store is locked.
    pub keys: Option<SenderKeys>,
}

/// The authenticated login of a session.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    /// Set when the login is mapped to an account: its keys sign and self-encrypt.
    pub account: Option<Arc<MappedAccount>>,
}

/// A recipient accepted at RCPT.
#[derive(Debug, Clone)]
pub struct Accepted {
    pub classified: Classified,
    /// RCPT parameters passed upstream (NOTIFY, ORCPT).
    pub params: String,
}

/// The mail transaction in progress.
#[derive(Debug)]
pub struct Transaction {
    pub from: String,
    /// MAIL parameters passed upstream for plaintext copies.
    pub params: MailParams,
    pub rcpts: Vec<Accepted>,
}

/// MAIL parameters meshmail passes on.
#[derive(Debug, Clone, Default)]
pub struct MailParams {
    pub eightbit: bool,
    pub smtputf8: bool,
    /// `RET=...` and `ENVID=...` (DSN), already formatted.
    pub dsn: String,
}

/// What the loop does after a command.
pub(super) enum Next {
    Continue,
    Close,
    StartTls,
}

pub struct Session {
    conn: Connection,
    upstream: Relay,
    ctx: Arc<SmtpContext>,
    peer: SocketAddr,
    /// The listener is on loopback: plaintext AUTH is allowed.
    loopback: bool,
    greeted: bool,
    login: Option<Login>,
    tx: Option<Transaction>,
    errors: u32,
    /// Turns true on SIGTERM: the session ends at its next command boundary with `421`.
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Session {
    pub fn new(
        conn: Connection,
        upstream: Upstream,
        ctx: Arc<SmtpContext>,
        peer: SocketAddr,
        loopback: bool,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Session {
        Session {
            conn,
            upstream: Relay::Ready(upstream),
            ctx,
            peer,
            loopback,
            greeted: false,
            login: None,
            tx: None,
            errors: 0,
            shutdown,
        }
    }

    /// Runs the session to its end.
    pub async fn run(mut self) {
        let greeting = Reply::new(
            220,
            "",
            format!("{} ESMTP meshmail ready", self.ctx.hostname),
        );
        if self.conn.write(&greeting.to_wire()).await.is_err() {
            return;
        }
        loop {
            // Between commands only: a message in DATA is finished and relayed first.
            let read = tokio::select! {
                biased;
                _ = self.shutdown.wait_for(|stop| *stop) => None,
                r = self.conn.read_line(self.ctx.limits.max_line) => Some(r),
            };
            let Some(read) = read else {
                let _ = self
                    .send(Reply::new(
                        421,
                        "4.3.2",
                        "meshmail is shutting down; try again shortly",
                    ))
                    .await;
                break;
            };
            let line = match read {
                Ok(line) => line,
                Err(ReadError::LineTooLong) => {
                    let r = Reply::new(500, "5.5.2", "Line too long");
                    if self.fail(r).await {
                        break;
                    }
                    continue;
                }
                Err(ReadError::Idle) => {
                    let _ = self
                        .send(Reply::new(421, "4.4.2", "Idle too long, closing"))
                        .await;
                    break;
                }
                Err(ReadError::Closed) | Err(ReadError::Io(_)) => break,
            };
            if looks_like_http(&line) {
                // A browser reaching a loopback port: no reply, close at once.
                tracing::warn!(peer = %self.peer, "HTTP request on the SMTP port; closed");
                break;
            }
            match self.command(&line).await {
                Next::Continue => {}
                Next::Close => break,
                Next::StartTls => match self.start_tls().await {
                    Ok(()) => {}
                    Err(e) => {
                        tracing::info!(peer = %self.peer, error = %e, "STARTTLS failed");
                        return;
                    }
                },
            }
        }
        self.upstream.take().quit().await;
        self.conn.shutdown().await;
    }

    async fn command(&mut self, line: &[u8]) -> Next {
        let request = match Request::parse(&mut line.iter()) {
            Ok(r) => r.into_owned(),
            Err(e) => {
                let reply = match e {
                    smtp_proto::Error::UnknownCommand => {
                        Reply::new(500, "5.5.1", "Command unrecognized")
                    }
                    smtp_proto::Error::InvalidSenderAddress => {
                        Reply::new(553, "5.1.7", "Sender address is not valid")
                    }
                    smtp_proto::Error::InvalidRecipientAddress => {
                        Reply::new(553, "5.1.3", "Recipient address is not valid")
                    }
                    smtp_proto::Error::SyntaxError { syntax } => {
                        Reply::new(501, "5.5.4", format!("Syntax: {syntax}"))
                    }
                    smtp_proto::Error::InvalidParameter { param } => {
                        Reply::new(501, "5.5.4", format!("Invalid parameter {param}"))
                    }
                    smtp_proto::Error::UnsupportedParameter { param } => {
                        Reply::new(504, "5.5.4", format!("Unsupported parameter {param}"))
                    }
                    _ => Reply::new(500, "5.5.2", "Syntax error"),
                };
                return if self.fail(reply).await {
                    Next::Close
                } else {
                    Next::Continue
                };
            }
        };
        match request {
            Request::Ehlo { host } => self.ehlo(&host, true).await,
            Request::Helo { host } => self.ehlo(&host, false).await,
            Request::Lhlo { .. } => {
                self.reply_error(Reply::new(500, "5.5.1", "LHLO is for LMTP"))
                    .await
            }
            Request::StartTls => self.starttls_command().await,
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, initial_response).await,
            Request::Mail { from } => self.mail(from).await,
            Request::Rcpt { to } => self.rcpt(to).await,
            Request::Data => self.data().await,
            Request::Bdat { .. } => {
                self.reply_error(Reply::new(502, "5.5.1", "BDAT is not offered; use DATA"))
                    .await
            }
            Request::Rset => {
                self.reset_transaction().await;
                self.reply(Reply::ok()).await
            }
            Request::Noop { .. } => self.reply(Reply::ok()).await,
            Request::Quit => {
                let _ = self.send(Reply::new(221, "2.0.0", "Bye")).await;
                Next::Close
            }
            Request::Vrfy { .. } => {
                self.reply(Reply::new(252, "2.5.0", "Cannot VRFY; send and see"))
                    .await
            }
            Request::Help { .. } => {
                self.reply(Reply::new(214, "2.0.0", "meshmail: see RFC 5321"))
                    .await
            }
            Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => {
                self.reply_error(Reply::new(502, "5.5.1", "Command not implemented"))
                    .await
            }
        }
    }

    async fn ehlo(&mut self, host: &str, extended: bool) -> Next {
        if host.is_empty() {
            return self
                .reply_error(Reply::new(501, "5.5.4", "Give your host name"))
                .await;
        }
        self.reset_transaction().await;
        self.greeted = true;
        if !extended {
            return self
                .reply(Reply::new(250, "", self.ctx.hostname.clone()))
                .await;
        }
        let Some(caps) = self.upstream.caps() else {
            return self.upstream_gone().await;
        };
        let mut lines = vec![format!("{} meshmail", self.ctx.hostname)];
        lines.push("PIPELINING".into());
        lines.push(format!("SIZE {}", self.ctx.max_size(caps)));
        lines.push("8BITMIME".into());
        lines.push("ENHANCEDSTATUSCODES".into());
        if caps.smtputf8 {
            lines.push("SMTPUTF8".into());
        }
        if caps.dsn {
            lines.push("DSN".into());
        }
        if self.ctx.tls.is_some() && !self.conn.tls {
            lines.push("STARTTLS".into());
        }
        let mechs = self.offered_mechanisms();
        if !mechs.is_empty() && self.login.is_none() {
            lines.push(format!("AUTH {}", mechs.join(" ")));
        }
        self.reply(Reply {
            code: 250,
            enhanced: None,
            lines,
        })
        .await
    }

    /// AUTH mechanisms meshmail relays that the upstream offers; none before TLS unless the
    /// listener is on loopback.
    fn offered_mechanisms(&self) -> Vec<String> {
        if !self.conn.tls && !self.loopback {
            return Vec::new();
        }
        let Some(caps) = self.upstream.caps() else {
            return Vec::new();
        };
        auth::RELAYED
            .iter()
            .filter(|m| caps.auth.iter().any(|u| u == *m))
            .map(|m| m.to_string())
            .collect()
    }

    async fn starttls_command(&mut self) -> Next {
        if self.conn.tls {
            return self
                .reply_error(Reply::new(503, "5.5.1", "TLS already active"))
                .await;
        }
        if self.ctx.tls.is_none() {
            return self
                .reply_error(Reply::new(454, "4.7.0", "TLS not available"))
                .await;
        }
        if self
            .send(Reply::new(220, "2.0.0", "Ready to start TLS"))
            .await
            .is_err()
        {
            return Next::Close;
        }
        Next::StartTls
    }

    async fn start_tls(&mut self) -> std::io::Result<()> {
        let acceptor = self
            .ctx
            .tls
            .clone()
            .ok_or_else(|| std::io::Error::other("no TLS configured"))?;
        if self.conn.has_buffered() {
            tracing::warn!(peer = %self.peer, "discarded plaintext pipelined after STARTTLS");
        }
        self.conn.start_tls(&acceptor).await?;
        // RFC 3207 §4.2: forget everything learned before TLS.
        self.greeted = false;
        self.tx = None;
        Ok(())
    }

    pub(super) async fn reset_transaction(&mut self) {
        self.tx = None;
        if matches!(self.upstream, Relay::Mail(_) | Relay::Rcpt(_)) {
            self.upstream = match self.upstream.take().settle().await {
                Ok(up) => Relay::Ready(up),
                Err(_) => Relay::Gone,
            };
        }
    }

    /// Sends a reply and goes on.
    pub(super) async fn reply(&mut self, reply: Reply) -> Next {
        match self.send(reply).await {
            Ok(()) => Next::Continue,
            Err(_) => Next::Close,
        }
    }

    /// Sends an error reply, counting it; too many errors close the session.
    pub(super) async fn reply_error(&mut self, reply: Reply) -> Next {
        if self.fail(reply).await {
            Next::Close
        } else {
            Next::Continue
        }
    }

    /// Counts an error and replies; true when the session must close.
    async fn fail(&mut self, reply: Reply) -> bool {
        self.errors += 1;
        if self.errors > self.ctx.limits.max_errors {
            let _ = self
                .send(Reply::new(421, "4.7.0", "Too many errors, closing"))
                .await;
            return true;
        }
        self.send(reply).await.is_err()
    }

    pub(super) async fn send(&mut self, reply: Reply) -> std::io::Result<()> {
        self.conn.write(&reply.to_wire()).await
    }

    /// The upstream connection broke: the client is told to come back later.
    pub(super) async fn upstream_gone(&mut self) -> Next {
        let _ = self
            .send(Reply::new(
                421,
                "4.4.2",
                "Lost the connection to the mail server; try again later",
            ))
            .await;
        Next::Close
    }
}

/// A line that starts like an HTTP request or header (browsers can reach loopback ports).
fn looks_like_http(line: &[u8]) -> bool {
    const STARTS: [&[u8]; 8] = [
        b"GET ",
        b"POST ",
        b"PUT ",
        b"HEAD ",
        b"CONNECT ",
        b"OPTIONS ",
        b"DELETE ",
        b"HOST:",
    ];
    let upper: Vec<u8> = line.iter().take(10).map(u8::to_ascii_uppercase).collect();
    STARTS.iter().any(|s| upper.starts_with(s))
}

#[cfg(test)]
mod tests {
    #[test]
    fn http_lines_are_recognised() {
        assert!(super::looks_like_http(b"GET / HTTP/1.1\r\n"));
        assert!(super::looks_like_http(b"Host: localhost\r\n"));
        assert!(super::looks_like_http(b"CONNECT x:443 HTTP/1.1\r\n"));
        assert!(!super::looks_like_http(b"EHLO x\r\n"));
        assert!(!super::looks_like_http(b"MAIL FROM:<get@x>\r\n"));
    }
}
