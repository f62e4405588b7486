//! RCPT, the I/O part: each recipient is classified (a strong address needs its verified
//! policy) and then probed upstream, so both meshmail's refusals and the upstream's arrive on
//! that recipient. What is allowed when, and the replies, are the core's.

use super::core::{notify_param, xtext, Action, Core, RcptOutcome};
use super::Session;
use crate::pipeline::classify;
use smtp_proto::RcptTo;

impl Session {
    pub(super) async fn rcpt(&mut self, to: RcptTo<String>, dsn: bool) -> Action {
        let classified = match classify::classify(&self.ctx.resolver, &self.ctx.rules, &to.address)
            .await
        {
            Ok(c) => c,
            Err(refusal) => {
                tracing::info!(peer = %self.peer, rcpt = %to.address, refusal = ?refusal, "recipient refused");
                return self.core.rcpt_answered(RcptOutcome::Refused {
                    address: to.address,
                    refusal,
                });
            }
        };
        let mut params = String::new();
        if dsn {
            params.push_str(&notify_param(to.flags));
            // ORCPT carries the address as the sender wrote it: the strong address.
            let original = to
                .orcpt
                .clone()
                .unwrap_or_else(|| classified.written().to_owned());
            if classified.is_strong() || to.orcpt.is_some() {
                params.push_str(&format!(" ORCPT=rfc822;{}", xtext(&original)));
            }
        }
        let line = format!("RCPT TO:<{}>{params}", classified.routable());
        match self.upstream.take().rcpt(&line).await {
            Ok((relay, reply)) => {
                self.upstream = relay;
                self.core.rcpt_answered(RcptOutcome::Answered {
                    classified: Box::new(classified),
                    params,
                    reply,
                })
            }
            Err(_) => Core::upstream_gone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn xtext_escapes() {
        assert_eq!(super::xtext("a+b=c d"), "a+2Bb+3Dc+20d");
        assert_eq!(super::xtext("bob@x.xx--mddk-7n6a"), "bob@x.xx--mddk-7n6a");
    }
}
