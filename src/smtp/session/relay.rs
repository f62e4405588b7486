//! The session's upstream connection in whatever state the client's commands put it. The typed
//! [`Upstream`] decides which commands each state allows; this enum lets the session, driven
//! by its client, hold any of them. A step the state does not allow is an error here, never a
//! command on the wire.

use crate::pipeline::Payload;
use crate::smtp::reply::Reply;
use crate::smtp::upstream::{InMail, InRcpt, Ready, Step, Upstream};
use crate::upstream::UpstreamError;

pub(super) enum Relay {
    Ready(Upstream<Ready>),
    Mail(Upstream<InMail>),
    Rcpt(Upstream<InRcpt>),
    /// The connection broke (or was never there): the session ends with `421`.
    Gone,
}

fn out_of_order(what: &str) -> UpstreamError {
    UpstreamError::Broken(format!("{what} outside its place in a transaction"))
}

impl Relay {
    pub fn is_gone(&self) -> bool {
        matches!(self, Relay::Gone)
    }

    /// Takes the connection out, leaving `Gone` until a step puts one back.
    pub fn take(&mut self) -> Relay {
        std::mem::replace(self, Relay::Gone)
    }

    /// Back between transactions: RSET when one is open.
    pub async fn settle(self) -> Result<Upstream<Ready>, UpstreamError> {
        match self {
            Relay::Ready(u) => Ok(u),
            Relay::Mail(u) => u.rset().await,
            Relay::Rcpt(u) => u.rset().await,
            Relay::Gone => Err(UpstreamError::Broken("gone".into())),
        }
    }

    /// MAIL, after ending any open transaction.
    pub async fn mail(self, line: &str) -> Result<(Relay, Reply), UpstreamError> {
        Ok(match self.settle().await?.mail(line).await? {
            Step::Moved(u, r) => (Relay::Mail(u), r),
            Step::Stayed(u, r) => (Relay::Ready(u), r),
        })
    }

    /// RCPT, inside a transaction.
    pub async fn rcpt(self, line: &str) -> Result<(Relay, Reply), UpstreamError> {
        match self {
            Relay::Mail(u) => Ok(match u.rcpt(line).await? {
                Step::Moved(u, r) => (Relay::Rcpt(u), r),
                Step::Stayed(u, r) => (Relay::Mail(u), r),
            }),
            Relay::Rcpt(mut u) => {
                let r = u.rcpt(line).await?;
                Ok((Relay::Rcpt(u), r))
            }
            _ => Err(out_of_order("RCPT")),
        }
    }

    /// DATA and the payload, once a recipient was accepted.
    pub async fn data(self, payload: Payload<'_>) -> Result<(Relay, Reply), UpstreamError> {
        match self {
            Relay::Rcpt(u) => {
                let (u, r) = u.data(payload).await?;
                Ok((Relay::Ready(u), r))
            }
            _ => Err(out_of_order("DATA")),
        }
    }

    /// QUIT when the connection is usable; a broken one is just dropped.
    pub async fn quit(self) {
        if let Ok(u) = self.settle().await {
            u.quit().await;
        }
    }
}
