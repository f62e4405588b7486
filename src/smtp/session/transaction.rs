//! DATA: receive the message (refusing smuggling), hand it to the pipeline, relay the copies,
//! and account for every recipient: delivered, refused to the client, or named in a DSN.

use super::envelope::mail_line;
use super::{Next, Session};
use crate::pipeline::plan::PlanError;
use crate::pipeline::{plan_copies, Copy, CopyBody, SenderKeys};
use crate::smtp::data::{DataError, DataReceiver};
use crate::smtp::dsn::{self, Failed};
use crate::smtp::reply::Reply;
use crate::smtp::upstream::UpstreamError;
use std::time::Instant;

/// Longest line inside DATA meshmail holds (RFC 5322's 998 is often exceeded in practice; this
/// only bounds memory per line).
const MAX_DATA_LINE: usize = 1024 * 1024;

impl Session {
    pub(super) async fn data(&mut self) -> Next {
        let Some(tx) = &self.tx else {
            return self
                .reply_error(Reply::new(503, "5.5.1", "Send MAIL first"))
                .await;
        };
        if tx.rcpts.is_empty() {
            return self
                .reply_error(Reply::new(554, "5.5.1", "No valid recipients"))
                .await;
        }
        let Some(up) = &self.upstream else {
            return self.upstream_gone().await;
        };
        let max = self.ctx.max_size(&up.caps);
        if self
            .send(Reply::new(354, "", "End data with <CR><LF>.<CR><LF>"))
            .await
            .is_err()
        {
            return Next::Close;
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
            return Next::Close;
        }
        let message = match receiver.finish() {
            Ok(m) => m,
            Err(e) => {
                self.reset_transaction().await;
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
                return self.reply_error(reply).await;
            }
        };
        let reply = self.deliver(message, started).await;
        drop(held);
        match reply {
            Some(r) => self.reply(r).await,
            None => self.upstream_gone().await,
        }
    }

    /// Plans and relays the copies; the client's reply, or `None` when the upstream is gone.
    async fn deliver(&mut self, message: Vec<u8>, started: Instant) -> Option<Reply> {
        let tx = self.tx.take()?;
        let rcpts: Vec<_> = tx.rcpts.iter().map(|a| a.classified.clone()).collect();
        let sender = self.sender_keys();
        // The message moves to the blocking thread and back: a large one is held once.
        let planned = tokio::task::spawn_blocking(move || {
            let copies = plan_copies(&message, &rcpts, &sender);
            (copies, message)
        })
        .await;
        let (planned, message) = match planned {
            Ok((planned, message)) => (Ok(planned), message),
            Err(e) => (Err(e), Vec::new()),
        };
        let copies = match planned {
            Ok(Ok(copies)) => copies,
            Ok(Err(e)) => {
                self.abort_upstream_transaction().await?;
                tracing::info!(peer = %self.peer, error = %e, "message refused");
                return Some(plan_refusal(&e));
            }
            Err(_) => {
                self.abort_upstream_transaction().await?;
                return Some(Reply::new(
                    451,
                    "4.3.0",
                    "Internal error while encrypting; try again",
                ));
            }
        };

        let single = copies.len() == 1 && copies[0].recipients.len() == tx.rcpts.len();
        let mut delivered: Vec<usize> = Vec::new();
        let mut failed: Vec<(usize, Reply)> = Vec::new();
        let mut first_failure: Option<Reply> = None;
        let mut upstream_lost = false;
        if !single {
            self.abort_upstream_transaction().await?;
        }
        for copy in &copies {
            let result = if single {
                self.upstream
                    .as_mut()?
                    .data(copy.body.bytes(&message))
                    .await
            } else {
                self.send_copy(&tx, copy, &message).await
            };
            match result {
                Ok(r) if r.is_positive() => delivered.extend(&copy.recipients),
                Ok(r) => {
                    first_failure.get_or_insert_with(|| r.clone());
                    failed.extend(copy.recipients.iter().map(|&i| (i, r.clone())));
                }
                Err(e) => {
                    upstream_lost = true;
                    let r = Reply::new(451, "4.4.2", format!("Mail server connection lost: {e}"));
                    first_failure.get_or_insert_with(|| r.clone());
                    failed.extend(copy.recipients.iter().map(|&i| (i, r.clone())));
                    break;
                }
            }
        }
        // Copies never attempted after a lost connection count as failed too.
        for copy in &copies {
            for &i in &copy.recipients {
                if !delivered.contains(&i) && !failed.iter().any(|(f, _)| *f == i) {
                    failed.push((i, Reply::new(451, "4.4.2", "Mail server connection lost")));
                }
            }
        }
        let treatments: Vec<&str> = copies.iter().map(|c| c.treatment).collect();
        tracing::info!(
            peer = %self.peer,
            rcpts = tx.rcpts.len(),
            copies = ?treatments,
            delivered = delivered.len(),
            failed = failed.len(),
            ms = started.elapsed().as_millis() as u64,
            "transaction"
        );
        if upstream_lost {
            self.upstream = None;
        }
        if delivered.is_empty() {
            return Some(
                first_failure
                    .unwrap_or_else(|| Reply::new(451, "4.3.0", "Nothing was sent; try again")),
            );
        }
        if !failed.is_empty() {
            let list: Vec<Failed> = failed
                .iter()
                .map(|(i, r)| Failed {
                    recipient: tx.rcpts[*i].classified.written.clone(),
                    reply: r.clone(),
                })
                .collect();
            self.send_dsn(&tx.from, &list, &message).await;
        }
        Some(Reply::new(
            250,
            "2.0.0",
            format!(
                "Message accepted ({} cop{}: {})",
                copies.len(),
                if copies.len() == 1 { "y" } else { "ies" },
                treatments.join(", ")
            ),
        ))
    }

    /// One copy in its own upstream transaction.
    async fn send_copy(
        &mut self,
        tx: &super::Transaction,
        copy: &Copy,
        original: &[u8],
    ) -> Result<Reply, UpstreamError> {
        let up = self
            .upstream
            .as_mut()
            .ok_or_else(|| UpstreamError::Broken("gone".into()))?;
        let plain = matches!(copy.body, CopyBody::Original);
        let r = up.command(&mail_line(&tx.from, &tx.params, plain)).await?;
        if !r.is_positive() {
            return Ok(r);
        }
        let mut accepted = 0;
        let mut refusal = None;
        for &i in &copy.recipients {
            let a = &tx.rcpts[i];
            let r = up
                .command(&format!("RCPT TO:<{}>{}", a.classified.routable, a.params))
                .await?;
            if r.is_positive() {
                accepted += 1;
            } else {
                refusal.get_or_insert(r);
            }
        }
        if accepted < copy.recipients.len() {
            // All or nothing per copy, so that every recipient's state is known.
            up.command("RSET").await?;
            return Ok(refusal.unwrap_or_else(|| Reply::new(550, "5.1.1", "Recipient refused")));
        }
        up.data(copy.body.bytes(original)).await
    }

    /// Ends the probe transaction upstream; `None` when the upstream is gone.
    async fn abort_upstream_transaction(&mut self) -> Option<()> {
        let up = self.upstream.as_mut()?;
        if up.command("RSET").await.is_err() {
            self.upstream = None;
            return None;
        }
        Some(())
    }

    /// A DSN to the sender about recipients whose copy failed after others were accepted.
    async fn send_dsn(&mut self, sender: &str, failed: &[Failed], message: &[u8]) {
        if sender.is_empty() {
            return; // never a DSN about a DSN (RFC 3461 §6.2)
        }
        let headers = crate::mime::headers::find(message, b"\r\n\r\n")
            .map(|i| &message[..i + 2])
            .unwrap_or(message);
        let body = dsn::build(&self.ctx.hostname, sender, failed, headers);
        let Some(up) = self.upstream.as_mut() else {
            tracing::error!(
                sender,
                failed = failed.len(),
                "cannot send a DSN: upstream gone"
            );
            return;
        };
        let result = async {
            let r = up.command("MAIL FROM:<>").await?;
            if !r.is_positive() {
                return Ok(r);
            }
            let r = up.command(&format!("RCPT TO:<{sender}>")).await?;
            if !r.is_positive() {
                up.command("RSET").await?;
                return Ok(r);
            }
            up.data(&body).await
        }
        .await;
        match result {
            Ok(r) if r.is_positive() => {
                tracing::info!(failed = failed.len(), "DSN sent to the sender")
            }
            other => tracing::error!(result = ?other, "DSN could not be sent"),
        }
    }

    fn sender_keys(&self) -> SenderKeys {
        let mut keys = self
            .login
            .as_ref()
            .and_then(|l| l.account.as_ref())
            .and_then(|a| a.keys.clone())
            .unwrap_or_default();
        if !self.ctx.sign {
            keys.signer = None;
        }
        keys
    }
}

fn plan_refusal(e: &PlanError) -> Reply {
    if e.is_malformed() {
        Reply::new(554, "5.6.0", format!("Message refused: {e}"))
    } else {
        Reply::new(
            550,
            "5.7.5",
            format!("Cannot encrypt as the recipient's policy demands: {e}. Nothing was sent"),
        )
    }
}
