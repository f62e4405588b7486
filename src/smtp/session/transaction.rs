//! DATA: receive the message (refusing smuggling), hand it to the pipeline, relay the copies,
//! and account for every recipient: delivered, refused to the client, or named in a report
//! (sent at once or spooled, see `report.rs`).

use super::core::{mail_line, Action, Core};
use super::relay::Relay;
use super::{Session, Transaction};
use crate::pipeline::plan::PlanError;
use crate::pipeline::{Classified, Copy, Failed, Payload, Plan, SenderKeys};
use crate::smtp::data::{DataError, DataReceiver};
use crate::smtp::reply::Reply;
use crate::upstream::UpstreamError;
use std::sync::Arc;
use std::time::Instant;

/// Longest line inside DATA meshmail holds (RFC 5322's 998 is often exceeded in practice; this
/// only bounds memory per line).
const MAX_DATA_LINE: usize = 1024 * 1024;

/// Messages up to this size are planned and sealed on the session's own task (about 0.2 ms of
/// CPU for 16 KB); larger ones on a blocking thread, so the reactor never stalls for long.
const INLINE_CRYPTO_BYTES: usize = 16 * 1024;

impl Session {
    /// DATA for the transaction `tx` the core handed over: `354`, the message, the pipeline,
    /// the copies. `None` when it ended here (the reply is sent); otherwise the action that
    /// ends it.
    pub(super) async fn data(&mut self, max: usize, tx: Transaction) -> Option<Action> {
        if self
            .send(Reply::new(354, "", "End data with <CR><LF>.<CR><LF>"))
            .await
            .is_err()
        {
            return Some(Action::Close(None));
        }
        let started = Instant::now();
        let mut receiver = DataReceiver::new(max, MAX_DATA_LINE);
        let budget = self.ctx.in_flight.clone();
        let mut held = budget.reserve(0);
        let read = self
            .conn
            .read_data(&mut receiver, |len| held.grow_to(len))
            .await;
        if read.is_err() {
            return Some(Action::Close(None));
        }
        let message = match receiver.finish() {
            Ok(m) => m,
            Err(e) => {
                // Nothing goes out: end the upstream transaction opened at RCPT time.
                if self.abort_upstream_transaction().await.is_none() {
                    return Some(Core::upstream_gone());
                }
                let reply = match e {
                    DataError::BareLineEnding => Reply::new(
                        554,
                        "5.6.0",
                        "Message refused: bare CR or LF in the data (SMTP smuggling protection); end lines with CRLF",
                    ),
                    DataError::TooLarge => Reply::new(552, "5.3.4", format!("Message too large: at most {max} bytes")),
                    DataError::LineTooLong => Reply::new(554, "5.6.0", "Message refused: a line is too long"),
                    DataError::Busy => Reply::new(452, "4.3.1", "Too much mail in progress; try again shortly"),
                };
                return Some(self.core.error(reply));
            }
        };
        let reply = self.deliver(message, tx, started).await;
        drop(held);
        let Some(reply) = reply else {
            return Some(Core::upstream_gone());
        };
        if self.send(reply).await.is_err() {
            return Some(Action::Close(None));
        }
        self.flush_reports().await;
        None
    }

    /// Plans the copies, then makes and relays them one at a time; the client's reply, or
    /// `None` when the upstream is gone before anything was decided.
    async fn deliver(
        &mut self,
        message: Vec<u8>,
        tx: Transaction,
        started: Instant,
    ) -> Option<Reply> {
        let rcpts: Arc<[Classified]> = tx.rcpts.iter().map(|a| a.classified.clone()).collect();
        let message = Arc::new(message);
        let sender = self.sender_keys();
        // The plan and its first copy in one trip to a blocking thread (most messages have
        // one copy: one trip in all).
        let first_copy = |message: &[u8], rcpts: &[Classified], sender: &SenderKeys| {
            let plan = Plan::new(message, rcpts)?;
            let first = (!plan.is_empty()).then(|| plan.make(0, message, sender));
            Ok::<_, PlanError>((plan, first))
        };
        let planned = if message.len() <= INLINE_CRYPTO_BYTES {
            // A small message costs less to encrypt than a trip to a blocking thread and back.
            Ok(first_copy(&message, &rcpts, &sender))
        } else {
            let (message, rcpts, sender) = (message.clone(), rcpts.clone(), sender.clone());
            tokio::task::spawn_blocking(move || first_copy(&message, &rcpts, &sender)).await
        };
        let (plan, mut first) = match planned {
            Ok(Ok((plan, first))) => (Arc::new(plan), first),
            Ok(Err(e)) => {
                self.abort_upstream_transaction().await?;
                tracing::info!(peer = %self.peer, error = %e, "message refused");
                return Some(plan_refusal(&e));
            }
            Err(_) => {
                self.abort_upstream_transaction().await?;
                return Some(internal_error());
            }
        };

        // One copy for every recipient goes into the transaction opened at RCPT time; more
        // copies each get a transaction of their own.
        let single = plan.len() == 1 && plan.recipients(0).len() == tx.rcpts.len();
        if !single {
            self.abort_upstream_transaction().await?;
        }
        let mut outcome = Outcome::default();
        let mut treatments = Vec::with_capacity(plan.len());
        for n in 0..plan.len() {
            let members = plan.recipients(n);
            if self.upstream.is_gone() {
                outcome.fail(
                    members,
                    &Reply::new(451, "4.4.2", "Mail server connection lost"),
                );
                continue;
            }
            // Made just before it is sent: one encrypted copy in memory at a time.
            let made = match first.take() {
                Some(made) => Ok(made),
                None => {
                    let (plan, message, sender) = (plan.clone(), message.clone(), sender.clone());
                    tokio::task::spawn_blocking(move || plan.make(n, &message, &sender)).await
                }
            };
            let copy = match made {
                Ok(Ok(copy)) => copy,
                Ok(Err(e)) if outcome.delivered.is_empty() => {
                    self.abort_upstream_transaction().await?;
                    tracing::info!(peer = %self.peer, error = %e, "message refused");
                    return Some(plan_refusal(&e));
                }
                Ok(Err(e)) => {
                    tracing::warn!(peer = %self.peer, error = %e, "one copy could not be made");
                    outcome.fail(members, &plan_refusal(&e));
                    continue;
                }
                Err(_) => {
                    outcome.fail(members, &internal_error());
                    continue;
                }
            };
            treatments.push(copy.treatment());
            let payload = copy.payload(&message);
            // Every copy counts against the bound on message bytes in memory.
            let mut held = self.ctx.in_flight.reserve(0);
            if !copy.is_plain() && !held.grow_to(payload.bytes().len()) {
                let busy = Reply::new(452, "4.3.1", "Too much mail in progress; try again shortly");
                if single {
                    self.abort_upstream_transaction().await?;
                    return Some(busy);
                }
                outcome.fail(members, &busy);
                continue;
            }
            let result = if single {
                // The transaction opened at RCPT time: DATA in it.
                match self.upstream.take().data(payload).await {
                    Ok((relay, r)) => {
                        self.upstream = relay;
                        Ok(r)
                    }
                    Err(e) => Err(e),
                }
            } else {
                self.send_copy(&tx, &copy, payload).await
            };
            match result {
                Ok(r) if r.is_positive() => outcome.delivered.extend(members),
                Ok(r) => outcome.fail(members, &r),
                Err(e) => {
                    self.upstream = Relay::Gone;
                    outcome.fail(
                        members,
                        &Reply::new(451, "4.4.2", format!("Mail server connection lost: {e}")),
                    );
                }
            }
        }
        tracing::info!(
            peer = %self.peer,
            rcpts = tx.rcpts.len(),
            copies = ?treatments,
            delivered = outcome.delivered.len(),
            failed = outcome.failed.len(),
            ms = started.elapsed().as_millis() as u64,
            "transaction"
        );
        if outcome.delivered.is_empty() {
            // Nothing went out: the client hears it and keeps the message. A temporary failure
            // anywhere makes the whole answer temporary, so the client retries.
            let temporary = outcome.failed.iter().find(|(_, r)| !r.is_permanent());
            return Some(
                temporary
                    .or(outcome.failed.first())
                    .map(|(_, r)| r.clone())
                    .unwrap_or_else(|| Reply::new(451, "4.3.0", "Nothing was sent; try again")),
            );
        }
        if !outcome.failed.is_empty() {
            let failed: Vec<Failed> = outcome
                .failed
                .iter()
                .map(|(i, r)| failed_entry(tx.rcpts[*i].classified.written(), r))
                .collect();
            let message_id = crate::mime::ParsedMessage::parse(&message)
                .ok()
                .and_then(|p| p.field("message-id").map(|f| f.value.clone()));
            self.report(&tx.from, failed, message_id).await;
        }
        Some(Reply::new(
            250,
            "2.0.0",
            format!(
                "Message accepted ({} cop{}: {})",
                treatments.len(),
                if treatments.len() == 1 { "y" } else { "ies" },
                treatments.join(", ")
            ),
        ))
    }

    /// One copy in its own upstream transaction. All or nothing: when one of its recipients
    /// is refused, the copy is not sent to the others either, so every recipient's state is
    /// known. A lost connection leaves the relay `Gone`.
    async fn send_copy(
        &mut self,
        tx: &Transaction,
        copy: &Copy,
        payload: Payload<'_>,
    ) -> Result<Reply, UpstreamError> {
        let mail = mail_line(&tx.from, &tx.params, copy.is_plain());
        let (mut relay, r) = self.upstream.take().mail(&mail).await?;
        if !r.is_positive() {
            self.upstream = relay;
            return Ok(r);
        }
        let mut refusal = None;
        for &i in copy.recipients() {
            let a = &tx.rcpts[i];
            let line = format!("RCPT TO:<{}>{}", a.classified.routable(), a.params);
            let (next, r) = relay.rcpt(&line).await?;
            relay = next;
            if !r.is_positive() {
                refusal.get_or_insert(r);
            }
        }
        if let Some(r) = refusal {
            self.upstream = Relay::Ready(relay.settle().await?);
            return Ok(r);
        }
        let (relay, r) = relay.data(payload).await?;
        self.upstream = relay;
        Ok(r)
    }

    /// Ends the probe transaction upstream; `None` when the upstream is gone.
    async fn abort_upstream_transaction(&mut self) -> Option<()> {
        match self.upstream.take().settle().await {
            Ok(up) => {
                self.upstream = Relay::Ready(up);
                Some(())
            }
            Err(_) => None,
        }
    }

    pub(super) fn sender_keys(&self) -> SenderKeys {
        let mut keys = self
            .core
            .login()
            .and_then(|l| l.account.as_ref())
            .and_then(|a| a.keys.clone())
            .unwrap_or_default();
        if !self.ctx.sign {
            keys.signer = None;
        }
        keys
    }
}

/// What became of each recipient of a message.
#[derive(Default)]
struct Outcome {
    delivered: Vec<usize>,
    failed: Vec<(usize, Reply)>,
}

impl Outcome {
    fn fail(&mut self, members: &[usize], reply: &Reply) {
        self.failed
            .extend(members.iter().map(|&i| (i, reply.clone())));
    }
}

fn internal_error() -> Reply {
    Reply::new(451, "4.3.0", "Internal error while encrypting; try again")
}

/// A failed recipient for the report, from the reply it got.
fn failed_entry(recipient: &str, reply: &Reply) -> Failed {
    let text = reply.lines.join(" ");
    Failed {
        recipient: recipient.to_owned(),
        code: reply.code,
        status: enhanced_status(reply),
        diagnostic: text,
    }
}

/// The enhanced status of a reply (from its text, else from its code).
fn enhanced_status(reply: &Reply) -> String {
    if let Some(e) = &reply.enhanced {
        return e.clone();
    }
    let first = reply.lines.first().map(String::as_str).unwrap_or("");
    let word = first.split_whitespace().next().unwrap_or("");
    let looks_enhanced = word.split('.').count() == 3
        && word
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if looks_enhanced {
        word.to_owned()
    } else if reply.code >= 500 {
        "5.0.0".into()
    } else {
        "4.0.0".into()
    }
}

fn plan_refusal(e: &PlanError) -> Reply {
    Reply::plan_refused(e)
}
