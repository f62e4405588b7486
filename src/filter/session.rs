//! One filter session (one connection from Postfix's `meshfilter` transport). The core decides;
//! this driver reads lines, routes recipients, receives DATA, hands the message to `deliver`
//! and writes one reply per recipient (LMTP) or one for all (SMTP).

use super::deliver::deliver;
use super::lmtp::{Action, Core, Envelope, Mode};
use super::reinject::Reinjector;
use super::FilterContext;
use crate::smtp::data::{DataError, DataReceiver};
use crate::smtp::reply::Reply;
use crate::smtp::session::io::{Connection, ReadError};
use std::sync::Arc;
use std::time::Instant;

/// Longest line inside DATA (bounds memory per line only).
const MAX_DATA_LINE: usize = 1024 * 1024;

pub struct FilterSession {
    conn: Connection,
    ctx: Arc<FilterContext>,
    core: Core,
    reinjector: Reinjector,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl FilterSession {
    pub fn new(
        conn: Connection,
        ctx: Arc<FilterContext>,
        xforward_allowed: bool,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> FilterSession {
        let core = Core::new(super::lmtp::Settings {
            hostname: ctx.hostname.clone(),
            max_size: ctx.limits.max_message_size,
            max_recipients: ctx.limits.max_recipients,
            max_errors: ctx.limits.max_errors,
            xforward: xforward_allowed,
        });
        let reinjector = Reinjector::new(ctx.reinject.clone());
        FilterSession {
            conn,
            ctx,
            core,
            reinjector,
            shutdown,
        }
    }

    pub async fn run(mut self) {
        let greeting = self.core.greeting();
        if self.send(&greeting).await.is_err() {
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
                Some(Err(_)) => break,
            };
            if !self.perform(action).await {
                break;
            }
        }
        self.reinjector.quit().await;
        self.conn.shutdown().await;
    }

    async fn perform(&mut self, action: Action) -> bool {
        match action {
            Action::Reply(r) => self.send(&r).await.is_ok(),
            Action::Close(r) => {
                if let Some(r) = r {
                    let _ = self.send(&r).await;
                }
                false
            }
            Action::Rcpt(to) => {
                let routed = super::route::route(&self.ctx, &to.address).await;
                if let Err(r) = &routed {
                    tracing::info!(rcpt = %to.address, reply = %r, "filter recipient refused");
                }
                let next = self.core.rcpt_answered(&to, routed);
                Box::pin(self.perform(next)).await
            }
            Action::Data {
                max,
                envelope,
                mode,
            } => self.data(max, envelope, mode).await,
        }
    }

    async fn data(&mut self, max: usize, envelope: Envelope, mode: Mode) -> bool {
        let go = Reply::new(354, "", "End data with <CR><LF>.<CR><LF>");
        if self.send(&go).await.is_err() {
            return false;
        }
        let started = Instant::now();
        // Postfix sends lines ending in CRLF; a bare CR inside a line is content it passed on
        // (and will take back), not an attempt at smuggling.
        let mut receiver = DataReceiver::new(max, MAX_DATA_LINE).allowing_bare_cr();
        let mut held = self.ctx.in_flight.reserve(0);
        if self
            .conn
            .read_data(&mut receiver, |len| held.grow_to(len))
            .await
            .is_err()
        {
            return false;
        }
        let replies = match receiver.finish() {
            Ok(message) => {
                let replies = deliver(&self.ctx, &mut self.reinjector, &envelope, message).await;
                drop(held);
                replies
            }
            Err(e) => {
                let r = match e {
                    DataError::TooLarge => Reply::new(
                        552,
                        "5.3.4",
                        format!("Message too large: at most {max} bytes"),
                    ),
                    DataError::LineTooLong => Reply::new(554, "5.6.0", "A line is too long"),
                    DataError::BareLineEnding => Reply::new(554, "5.6.0", "Bare LF in the data"),
                    DataError::Busy => {
                        Reply::new(452, "4.3.1", "Too much mail in progress; try again shortly")
                    }
                };
                vec![r; envelope.rcpts.len()]
            }
        };
        let delivered = replies.iter().filter(|r| r.is_positive()).count();
        tracing::info!(
            rcpts = replies.len(),
            delivered,
            deferred = replies.iter().filter(|r| r.code / 100 == 4).count(),
            refused = replies.iter().filter(|r| r.is_permanent()).count(),
            ident = envelope.xforward.get("IDENT").unwrap_or("-"),
            ms = started.elapsed().as_millis() as u64,
            "filter transaction"
        );
        match mode {
            Mode::Lmtp => {
                let mut wire = Vec::new();
                for r in &replies {
                    wire.extend_from_slice(&r.to_wire());
                }
                self.conn.write(&wire).await.is_ok()
            }
            Mode::Smtp => self.send(&one_reply(&replies)).await.is_ok(),
        }
    }

    async fn send(&mut self, reply: &Reply) -> std::io::Result<()> {
        self.conn.write(&reply.to_wire()).await
    }
}

/// SMTP has one reply for all recipients: `250` only when every one was delivered. Mixed
/// outcomes are answered `451` (a retry may duplicate, never lose): set
/// `meshfilter_destination_recipient_limit = 1` so they cannot happen.
pub(super) fn one_reply(replies: &[Reply]) -> Reply {
    if replies.iter().all(Reply::is_positive) {
        return replies[0].clone();
    }
    if replies.iter().all(Reply::is_permanent) {
        return replies[0].clone();
    }
    if let Some(temp) = replies.iter().find(|r| r.code / 100 == 4) {
        if replies.iter().all(|r| r.code / 100 == 4) {
            return temp.clone();
        }
    }
    tracing::warn!("recipients of one SMTP transaction ended differently: set meshfilter_destination_recipient_limit = 1");
    Reply::new(
        451,
        "4.3.0",
        "Recipients ended differently; send one recipient per transaction",
    )
}
