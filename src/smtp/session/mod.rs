//! One client session. `core` decides (which command is allowed when, every limit, every
//! reply meshmail makes) without I/O; this file is the driver: it reads a line, asks the core,
//! and carries out the action that comes back. The steps with I/O live in their own files:
//! `auth` (the AUTH exchange relayed upstream), `envelope` (RCPT: classification and the
//! upstream probe), `transaction` (DATA: pipeline, relay), `report` (reports about recipients
//! that failed after `250`, sent or spooled), `relay` (the upstream in its typed states).

mod auth;
pub mod core;
#[cfg(test)]
mod core_tests;
#[cfg(test)]
mod driver_tests;
mod envelope;
pub mod io;
mod relay;
mod report;
mod transaction;

pub(crate) use self::core::{mail_line, notify_param, refusal_reply, xtext};
use self::core::{Action, Core, Settings};
use super::reply::Reply;
use super::server::SmtpContext;
use super::upstream::Upstream;
use crate::pipeline::{Classified, SenderKeys};
use io::{Connection, ReadError};
use relay::Relay;
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

pub struct Session {
    conn: Connection,
    upstream: Relay,
    ctx: Arc<SmtpContext>,
    peer: SocketAddr,
    core: Core,
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
        let settings = Settings {
            hostname: ctx.hostname.clone(),
            max_errors: ctx.limits.max_errors,
            max_recipients: ctx.limits.max_recipients,
            max_size: ctx.max_size(upstream.caps()),
            tls_available: ctx.tls.is_some(),
            loopback,
        };
        let core = Core::new(settings, upstream.caps().clone(), conn.tls);
        Session {
            conn,
            upstream: Relay::Ready(upstream),
            ctx,
            peer,
            core,
            shutdown,
        }
    }

    /// Runs the session to its end.
    pub async fn run(mut self) {
        let greeting = self.core.greeting();
        if self.send(greeting).await.is_err() {
            return;
        }
        loop {
            let read = self
                .conn
                .next_command(self.ctx.limits.max_line, &mut self.shutdown)
                .await;
            let action = match read {
                None => Core::shutting_down(),
                Some(Ok(line)) => self.core.command(&line),
                Some(Err(ReadError::LineTooLong)) => self.core.line_too_long(),
                Some(Err(ReadError::Idle)) => Core::idle(),
                Some(Err(ReadError::Closed)) | Some(Err(ReadError::Io(_))) => break,
            };
            if !self.perform(action).await {
                break;
            }
        }
        self.upstream.take().quit().await;
        self.conn.shutdown().await;
    }

    /// Carries out `action` and what it leads to; false when the session ends.
    async fn perform(&mut self, mut action: Action) -> bool {
        loop {
            action = match action {
                Action::Reply(reply) => return self.send(reply).await.is_ok(),
                Action::Close(reply) => {
                    if let Some(reply) = reply {
                        let _ = self.send(reply).await;
                    }
                    return false;
                }
                Action::StartTls(reply) => {
                    if self.send(reply).await.is_err() {
                        return false;
                    }
                    return match self.start_tls().await {
                        Ok(()) => {
                            self.core.tls_started();
                            true
                        }
                        Err(e) => {
                            tracing::info!(peer = %self.peer, error = %e, "STARTTLS failed");
                            false
                        }
                    };
                }
                Action::Reset(reply) => {
                    if matches!(self.upstream, Relay::Mail(_) | Relay::Rcpt(_)) {
                        match self.upstream.take().settle().await {
                            Ok(up) => self.upstream = Relay::Ready(up),
                            Err(_) => return self.perform_close(Core::upstream_gone()).await,
                        }
                    }
                    Action::Reply(reply)
                }
                Action::Auth { mechanism, initial } => {
                    let Some(next) = self.auth(mechanism, initial).await else {
                        return true;
                    };
                    next
                }
                Action::Mail { line, from, params } => {
                    match self.upstream.take().mail(&line).await {
                        Ok((relay, reply)) => {
                            self.upstream = relay;
                            self.core.mail_answered(reply, from, params)
                        }
                        Err(_) => Core::upstream_gone(),
                    }
                }
                Action::Rcpt { to, dsn } => self.rcpt(to, dsn).await,
                Action::Data { max, tx } => {
                    let Some(next) = self.data(max, tx).await else {
                        return true;
                    };
                    next
                }
            };
        }
    }

    async fn perform_close(&mut self, action: Action) -> bool {
        if let Action::Close(Some(reply)) = action {
            let _ = self.send(reply).await;
        }
        false
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
        self.conn.start_tls(&acceptor).await
    }

    pub(super) async fn send(&mut self, reply: Reply) -> std::io::Result<()> {
        self.conn.write(&reply.to_wire()).await
    }
}
