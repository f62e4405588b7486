//! Reports to the sender about recipients that failed after the client heard `250`: sent at
//! once over the session's upstream, or kept in the spool and sent by a later session of the
//! same login (after AUTH and after each transaction), with back-off. A report is never only
//! logged while it can still be delivered.

use super::relay::Relay;
use super::Session;
use crate::pipeline::report::{self, Failed, Report};
use crate::smtp::spool::{ReportSpool, Spooled, REPORTS_LOST};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// What became of one attempt to send a report.
enum Sent {
    Delivered,
    /// Refused for good (5xx): kept would never help.
    Refused(String),
    /// The upstream is gone or said 4xx: try again later.
    Later(String),
}

impl Session {
    /// The upstream login that owns spooled reports of this session.
    fn spool_owner(&self) -> String {
        self.core
            .login()
            .map(|l| l.user.clone())
            .unwrap_or_default()
    }

    /// Where a report about a message from `from` goes: the sender, or for a message with the
    /// null sender (itself a report, which RFC 3461 §6.2 forbids answering) the session's own
    /// account, so the user still learns of it.
    fn report_address(&self, from: &str) -> Option<String> {
        if !from.is_empty() {
            return Some(from.to_owned());
        }
        let login = self.core.login()?;
        match &login.account {
            Some(a) => Some(a.address.clone()),
            None if login.user.contains('@') => Some(login.user.clone()),
            None => None,
        }
    }

    /// Reports `failed` recipients of the message `message_id` from `from`.
    pub(super) async fn report(
        &mut self,
        from: &str,
        failed: Vec<Failed>,
        message_id: Option<String>,
    ) {
        let Some(to) = self.report_address(from) else {
            REPORTS_LOST.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                failed = failed.len(),
                "recipients failed after 250, and the null sender of an unmapped login has no address to report to"
            );
            return;
        };
        // Signed and encrypted to the sender's own key when the sender is the mapped account.
        let own = self
            .core
            .login()
            .and_then(|l| l.account.as_ref())
            .is_some_and(|a| a.address.eq_ignore_ascii_case(&to));
        let keys = own.then(|| self.sender_keys());
        let hostname = self.ctx.hostname.clone();
        let to_for_build = to.clone();
        let built = tokio::task::spawn_blocking(move || {
            report::build(
                &hostname,
                &to_for_build,
                &failed,
                message_id.as_deref(),
                keys.as_ref(),
            )
        })
        .await;
        let Ok(report) = built else {
            REPORTS_LOST.fetch_add(1, Ordering::Relaxed);
            tracing::error!("a delivery report could not be built");
            return;
        };
        match self.send_report(&to, &report).await {
            Sent::Delivered => tracing::info!(sealed = report.sealed, "delivery report sent"),
            Sent::Refused(why) => {
                REPORTS_LOST.fetch_add(1, Ordering::Relaxed);
                tracing::error!(why, "the mail server refused a delivery report for good");
            }
            Sent::Later(why) => self.spool(&to, report, &why).await,
        }
    }

    async fn spool(&mut self, to: &str, report: Report, why: &str) {
        let Some(spool) = self.ctx.spool.clone() else {
            REPORTS_LOST.fetch_add(1, Ordering::Relaxed);
            tracing::error!(
                why,
                "a delivery report could not be sent and there is no spool"
            );
            return;
        };
        let (owner, to) = (self.spool_owner(), to.to_owned());
        let put = tokio::task::spawn_blocking(move || spool.put(&owner, &to, &report)).await;
        match put {
            Ok(Ok(())) => tracing::warn!(why, "delivery report spooled for a later session"),
            Ok(Err(e)) => {
                tracing::error!(error = %e, why, "a delivery report could not be spooled")
            }
            Err(_) => tracing::error!(why, "a delivery report could not be spooled"),
        }
    }

    /// Sends the due reports this login owns over the session's upstream.
    pub(super) async fn flush_reports(&mut self) {
        let Some(spool) = self.ctx.spool.clone() else {
            return;
        };
        if self.upstream.is_gone() || spool.nothing_pending() {
            return;
        }
        let owner = self.spool_owner();
        let lookup = spool.clone();
        let Ok(due) = tokio::task::spawn_blocking(move || lookup.due(&owner)).await else {
            return;
        };
        for entry in due {
            self.flush_one(&spool, entry).await;
            if self.upstream.is_gone() {
                break;
            }
        }
    }

    async fn flush_one(&mut self, spool: &Arc<ReportSpool>, entry: Spooled) {
        let Some(report) = entry.report() else {
            spool.give_up(&entry, "unreadable");
            return;
        };
        let sent = self.send_report(&entry.to, &report).await;
        let spool = spool.clone();
        let _ = tokio::task::spawn_blocking(move || match sent {
            Sent::Delivered => {
                tracing::info!(
                    attempts = entry.attempts + 1,
                    "spooled delivery report sent"
                );
                spool.done(&entry);
            }
            Sent::Refused(why) => spool.give_up(&entry, &why),
            Sent::Later(_) => spool.retry_later(&entry),
        })
        .await;
    }

    /// One attempt, in a transaction of its own with the null sender.
    async fn send_report(&mut self, to: &str, report: &Report) -> Sent {
        if self.upstream.is_gone() {
            return Sent::Later("mail server connection lost".into());
        }
        let relay = self.upstream.take();
        let result = async {
            let (relay, r) = relay.mail("MAIL FROM:<>").await?;
            if !r.is_positive() {
                return Ok((relay, r));
            }
            let (relay, r) = relay.rcpt(&format!("RCPT TO:<{to}>")).await?;
            if !r.is_positive() {
                return Ok((Relay::Ready(relay.settle().await?), r));
            }
            relay.data(report.payload()).await
        }
        .await;
        match result {
            Ok((relay, r)) => {
                self.upstream = relay;
                if r.is_positive() {
                    Sent::Delivered
                } else if r.is_permanent() {
                    Sent::Refused(r.to_string().trim_end().to_owned())
                } else {
                    Sent::Later(r.to_string().trim_end().to_owned())
                }
            }
            // The connection is gone (`take` left `Gone` behind).
            Err(e) => Sent::Later(e.to_string()),
        }
    }
}
