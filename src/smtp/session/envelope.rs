//! MAIL and RCPT. MAIL opens the upstream transaction at once; each RCPT is classified (a
//! strong address needs its verified policy) and then probed upstream, so both meshmail's
//! refusals and the upstream's arrive on that recipient.

use super::{Accepted, MailParams, Next, Session, Transaction};
use crate::pipeline::{classify, Refusal, Treatment};
use crate::smtp::reply::Reply;
use smtp_proto::{MailFrom, RcptTo};

impl Session {
    pub(super) async fn mail(&mut self, from: MailFrom<String>) -> Next {
        if !self.greeted {
            return self
                .reply_error(Reply::new(503, "5.5.1", "Send EHLO first"))
                .await;
        }
        if self.tx.is_some() {
            return self
                .reply_error(Reply::new(503, "5.5.1", "Nested MAIL command"))
                .await;
        }
        let Some(caps) = self.upstream.caps().cloned() else {
            return self.upstream_gone().await;
        };
        let smtputf8 = from.flags & smtp_proto::MAIL_SMTPUTF8 != 0 || !from.address.is_ascii();
        if smtputf8 && !caps.smtputf8 {
            return self.reply_error(Reply::non_ascii_refused()).await;
        }
        let max = self.ctx.max_size(&caps);
        if from.size > max {
            return self
                .reply_error(Reply::new(
                    552,
                    "5.3.4",
                    format!("Message too large: at most {max} bytes"),
                ))
                .await;
        }
        if let Some(account) = self.login.as_ref().and_then(|l| l.account.as_ref()) {
            if account.keys.is_none() {
                return self
                    .reply(Reply::new(
                        451,
                        "4.7.0",
                        "meshmail's key store is locked; try again later",
                    ))
                    .await;
            }
        }
        let mut dsn = String::new();
        if caps.dsn {
            if from.flags & smtp_proto::MAIL_RET_FULL != 0 {
                dsn.push_str(" RET=FULL");
            } else if from.flags & smtp_proto::MAIL_RET_HDRS != 0 {
                dsn.push_str(" RET=HDRS");
            }
            if let Some(envid) = &from.env_id {
                dsn.push_str(&format!(" ENVID={}", xtext(envid)));
            }
        }
        let params = MailParams {
            eightbit: from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0,
            smtputf8,
            dsn,
        };
        let line = mail_line(&from.address, &params, true);
        match self.upstream.take().mail(&line).await {
            Ok((relay, reply)) => {
                self.upstream = relay;
                if !reply.is_positive() {
                    return self.reply_error(reply).await;
                }
                self.tx = Some(Transaction {
                    from: from.address,
                    params,
                    rcpts: Vec::new(),
                });
                self.reply(reply).await
            }
            Err(_) => self.upstream_gone().await,
        }
    }

    pub(super) async fn rcpt(&mut self, to: RcptTo<String>) -> Next {
        let Some(tx) = &self.tx else {
            return self
                .reply_error(Reply::new(503, "5.5.1", "Send MAIL first"))
                .await;
        };
        if tx.rcpts.len() >= self.ctx.limits.max_recipients {
            return self
                .reply_error(Reply::new(
                    452,
                    "4.5.3",
                    "Too many recipients; send the rest in another message",
                ))
                .await;
        }
        let Some(caps) = self.upstream.caps() else {
            return self.upstream_gone().await;
        };
        if !to.address.is_ascii() && !caps.smtputf8 {
            return self.reply_error(Reply::non_ascii_refused()).await;
        }
        let dsn_capable = caps.dsn;
        let classified = match classify::classify(&self.ctx.resolver, &self.ctx.rules, &to.address)
            .await
        {
            Ok(c) => c,
            Err(refusal) => {
                tracing::info!(peer = %self.peer, rcpt = %to.address, refusal = ?refusal, "recipient refused");
                return self.reply_error(refusal_reply(&to.address, refusal)).await;
            }
        };
        let mut params = String::new();
        if dsn_capable {
            let notify: Vec<&str> = [
                (smtp_proto::RCPT_NOTIFY_SUCCESS, "SUCCESS"),
                (smtp_proto::RCPT_NOTIFY_FAILURE, "FAILURE"),
                (smtp_proto::RCPT_NOTIFY_DELAY, "DELAY"),
                (smtp_proto::RCPT_NOTIFY_NEVER, "NEVER"),
            ]
            .iter()
            .filter(|(f, _)| to.flags & f != 0)
            .map(|(_, n)| *n)
            .collect();
            if !notify.is_empty() {
                params.push_str(&format!(" NOTIFY={}", notify.join(",")));
            }
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
        let answer = match self.upstream.take().rcpt(&line).await {
            Ok((relay, reply)) => {
                self.upstream = relay;
                Ok(reply)
            }
            Err(e) => Err(e),
        };
        match answer {
            Ok(reply) if reply.is_positive() => {
                let note = match classified.treatment() {
                    Treatment::Plain(_) => "OK".to_owned(),
                    Treatment::Encrypt(e) => format!("OK, will be encrypted ({})", e.format.name()),
                };
                if let Some(tx) = &mut self.tx {
                    tx.rcpts.push(Accepted { classified, params });
                }
                self.reply(Reply::new(250, "2.1.5", note)).await
            }
            Ok(reply) => self.reply_error(reply).await,
            Err(_) => self.upstream_gone().await,
        }
    }
}

/// The MAIL line for the upstream. Encrypted copies are 7-bit, so BODY=8BITMIME is only
/// passed for plaintext copies.
pub(super) fn mail_line(from: &str, params: &MailParams, plain: bool) -> String {
    let mut line = format!("MAIL FROM:<{from}>");
    if plain && params.eightbit {
        line.push_str(" BODY=8BITMIME");
    }
    if params.smtputf8 {
        line.push_str(" SMTPUTF8");
    }
    line.push_str(&params.dsn);
    line
}

/// RFC 3461 §4: xtext encoding.
fn xtext(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

fn refusal_reply(address: &str, refusal: Refusal) -> Reply {
    match refusal {
        Refusal::BadAddress(e) => Reply::new(
            553,
            "5.1.3",
            format!("Bad fingerprint address {address}: {e}"),
        ),
        Refusal::NoValidPolicy(why) => Reply::new(
            550,
            "5.7.1",
            format!("Cannot send to {address} securely: {why}. Nothing was sent"),
        ),
        Refusal::Temporary(why) => Reply::new(
            451,
            "4.4.3",
            format!("Cannot check the policy of {address} now ({why}); try again later"),
        ),
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
