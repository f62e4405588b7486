//! Reinjection: each copy goes back to Postfix's reinjection listener (a service with an empty
//! `content_filter`, so it is not filtered again) in a transaction of its own, with XFORWARD
//! first so Postfix knows (and logs) the original client and queue ID, and the MAIL and RCPT
//! parameters
//! Postfix gave meshmail. Each recipient's answer is the reinjection listener's: meshmail
//! answers a recipient only after Postfix took (or refused) its copy.

use super::xforward::Xforward;
use crate::pipeline::{Copy, Payload};
use crate::smtp::reply::Reply;
use crate::smtp::session::{mail_line, MailParams};
use crate::smtp::upstream::{Ready, Step, Upstream};
use crate::upstream::{UpstreamError, UpstreamTarget};
use std::time::{Duration, Instant};

/// A connection idle for longer is not reused: Postfix's smtpd drops idle clients after 300 s,
/// and a copy sent into a connection it already closed would be deferred for nothing.
const REUSE_IDLE: Duration = Duration::from_secs(60);

/// The session's connection to the reinjection listener, opened when first needed and again
/// after it broke or sat idle.
pub struct Reinjector {
    target: UpstreamTarget,
    conn: Option<(Upstream<Ready>, Instant)>,
}

/// One recipient of a copy: where the envelope goes, and its RCPT parameters.
pub struct Destination<'a> {
    pub address: &'a str,
    pub params: &'a str,
}

impl Reinjector {
    pub fn new(target: UpstreamTarget) -> Reinjector {
        Reinjector { target, conn: None }
    }

    /// Sends `copy` to `rcpts`; one reply per recipient, in order.
    pub async fn send(
        &mut self,
        xforward: &Xforward,
        from: &str,
        params: &MailParams,
        rcpts: &[Destination<'_>],
        copy: &Copy,
        payload: Payload<'_>,
    ) -> Vec<Reply> {
        let cached = match self.conn.take() {
            Some((c, used)) if used.elapsed() < REUSE_IDLE => Some(c),
            Some((c, _)) => {
                c.quit().await;
                None
            }
            None => None,
        };
        let conn = match cached {
            Some(c) => c,
            None => match Upstream::connect(&self.target).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(error = %e, "reinjection listener unavailable");
                    return vec![unavailable(&e); rcpts.len()];
                }
            },
        };
        match transaction(
            conn,
            xforward,
            from,
            params,
            rcpts,
            copy.is_plain(),
            payload,
        )
        .await
        {
            Ok((conn, replies)) => {
                self.conn = Some((conn, Instant::now()));
                replies
            }
            Err(e) => {
                // Whether the copy was taken is unknown: a temporary failure, so Postfix
                // retries (a duplicate at worst, never a loss).
                tracing::warn!(error = %e, "reinjection connection lost");
                vec![
                    Reply::new(451, "4.4.2", format!("Reinjection connection lost: {e}"));
                    rcpts.len()
                ]
            }
        }
    }

    /// Ends the connection politely.
    pub async fn quit(&mut self) {
        if let Some((c, _)) = self.conn.take() {
            c.quit().await;
        }
    }
}

fn unavailable(e: &UpstreamError) -> Reply {
    Reply::new(
        451,
        "4.4.1",
        format!("The reinjection listener is unavailable ({e}); try again later"),
    )
}

async fn transaction(
    mut conn: Upstream<Ready>,
    xforward: &Xforward,
    from: &str,
    params: &MailParams,
    rcpts: &[Destination<'_>],
    plain: bool,
    payload: Payload<'_>,
) -> Result<(Upstream<Ready>, Vec<Reply>), UpstreamError> {
    for line in xforward.lines(&conn.caps().xforward) {
        let r = conn.xforward(&line).await?;
        if !r.is_positive() {
            tracing::warn!(reply = %r, "the reinjection listener refused XFORWARD (smtpd_authorized_xforward_hosts?)");
        }
    }
    let mut replies: Vec<Option<Reply>> = vec![None; rcpts.len()];
    let mail = mail_line(from, params, plain);
    let mut in_mail = match conn.mail(&mail).await? {
        Step::Moved(c, _) => c,
        Step::Stayed(c, r) => return Ok((c, vec![r; rcpts.len()])),
    };
    let mut first = 0;
    let mut in_rcpt = loop {
        let Some(d) = rcpts.get(first) else {
            // Every recipient refused: the transaction ends without a message.
            let conn = in_mail.rset().await?;
            return Ok((conn, replies.into_iter().flatten().collect()));
        };
        let line = format!("RCPT TO:<{}>{}", d.address, d.params);
        first += 1;
        match in_mail.rcpt(&line).await? {
            Step::Moved(c, _) => break c,
            Step::Stayed(c, r) => {
                replies[first - 1] = Some(r);
                in_mail = c;
            }
        }
    };
    let mut accepted = vec![first - 1];
    for (i, d) in rcpts.iter().enumerate().skip(first) {
        let r = in_rcpt
            .rcpt(&format!("RCPT TO:<{}>{}", d.address, d.params))
            .await?;
        if r.is_positive() {
            accepted.push(i);
        } else {
            replies[i] = Some(r);
        }
    }
    let (conn, r) = in_rcpt.data(payload).await?;
    for i in accepted {
        replies[i] = Some(r.clone());
    }
    Ok((
        conn,
        replies
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Reply::new(451, "4.3.0", "No answer; try again")))
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::{Classified, Plan, SenderKeys};
    use std::sync::Arc;

    #[tokio::test]
    async fn a_reinjection_listener_that_is_down_defers_every_recipient() {
        // A port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut r = Reinjector::new(UpstreamTarget {
            address: format!("127.0.0.1:{port}"),
            tls: crate::upstream::UpstreamTls::None,
            tls_config: Arc::new(crate::upstream::client_config(None, &[]).unwrap()),
            timeout: Duration::from_secs(2),
            hello_name: "filter.test".into(),
        });
        let message = b"Subject: x\r\n\r\nbody\r\n";
        let rcpts = [
            Classified::as_sent("bob@example.test").unwrap(),
            Classified::as_sent("carol@example.test").unwrap(),
        ];
        let plan = Plan::new(message, &rcpts).unwrap();
        let copy = plan.make(0, message, &SenderKeys::default()).unwrap();
        let dests = [
            Destination {
                address: "bob@example.test",
                params: "",
            },
            Destination {
                address: "carol@example.test",
                params: "",
            },
        ];
        let replies = r
            .send(
                &Xforward::default(),
                "a@x",
                &MailParams::default(),
                &dests,
                &copy,
                copy.payload(message),
            )
            .await;
        assert_eq!(replies.len(), 2);
        for reply in replies {
            assert_eq!(reply.code, 451, "{reply}");
            assert_eq!(reply.enhanced.as_deref(), Some("4.4.1"));
        }
    }
}
