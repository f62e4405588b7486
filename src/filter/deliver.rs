//! End of DATA in the filter: what each recipient gets, the copies the pipeline makes, and
//! their reinjection. Every recipient ends with exactly one reply: delivered (the reinjection
//! listener's `250`), refused for good (`5xx`, Postfix bounces) or deferred (`4xx`, Postfix
//! keeps the message and retries).
//!
//! - A local mailbox with a key gets the message encrypted at rest, unless it is already
//!   encrypted (its structure says so; no header is trusted for it).
//! - A local user's fingerprint address accepts only mail already encrypted to every key its
//!   policy names; plaintext is refused (`strong_inbound = "refuse"`) or encrypted at rest and
//!   flagged.
//! - Outbound recipients get what the outbound pipeline decided at RCPT (a fingerprint address
//!   only ever an encrypted copy, checked to be encrypted to its policy's keys when the sender
//!   encrypted it); a plain address gets a message its sender encrypted as it is.
//!
//! Plaintext recipients share one copy; every other recipient gets a copy of its own, so one
//! recipient's broken key or policy never costs another its delivery.

use super::lmtp::Envelope;
use super::reinject::{Destination, Reinjector};
use super::route::Route;
use super::FilterContext;
use crate::config::StrongInbound;
use crate::crypto::client_sealed::already_encrypted;
use crate::pipeline::classify::AtRest;
use crate::pipeline::plan::PlanError;
use crate::pipeline::{Classified, Plan, SenderKeys, Treatment};
use crate::smtp::reply::Reply;
use std::sync::Arc;

/// One reply per recipient of `envelope`, in order.
pub async fn deliver(
    ctx: &Arc<FilterContext>,
    reinjector: &mut Reinjector,
    envelope: &Envelope,
    message: Vec<u8>,
) -> Vec<Reply> {
    // meshmail's own mark never comes from outside (the message is copied only when it
    // carries one).
    let cleaned = match crate::mime::at_rest::without_mark(&message) {
        std::borrow::Cow::Owned(clean) => Some(clean),
        std::borrow::Cow::Borrowed(_) => None,
    };
    let message = Arc::new(cleaned.unwrap_or(message));
    let encrypted = already_encrypted(&message).is_some();
    let message_id = crate::mime::ParsedMessage::parse(&message)
        .ok()
        .and_then(|p| p.field("message-id").map(|f| f.value.clone()));

    let mut replies: Vec<Option<Reply>> = vec![None; envelope.rcpts.len()];
    let mut plain: Vec<(usize, Classified)> = Vec::new();
    let mut own: Vec<(usize, Classified)> = Vec::new();
    for (i, rcpt) in envelope.rcpts.iter().enumerate() {
        match treatment(ctx, &rcpt.route, encrypted, message_id.as_deref()) {
            Ok(c) if matches!(c.treatment(), Treatment::Plain(_)) => plain.push((i, c)),
            Ok(c) => own.push((i, c)),
            Err(reply) => replies[i] = Some(reply),
        }
    }
    let mut groups: Vec<Vec<(usize, Classified)>> = own.into_iter().map(|x| vec![x]).collect();
    if !plain.is_empty() {
        groups.insert(0, plain);
    }
    for group in groups {
        let (members, rcpts): (Vec<usize>, Vec<Classified>) = group.into_iter().unzip();
        let got = copies(ctx, reinjector, envelope, &message, &members, rcpts).await;
        for (k, reply) in got.into_iter().enumerate() {
            replies[members[k]] = Some(reply);
        }
    }
    replies
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Reply::new(451, "4.3.0", "Not delivered; try again")))
        .collect()
}

/// The treatment of one recipient now that the message is known.
fn treatment(
    ctx: &FilterContext,
    route: &Route,
    encrypted: bool,
    message_id: Option<&str>,
) -> Result<Classified, Reply> {
    let refused = |r| crate::smtp::session::refusal_reply("this recipient", r);
    match route {
        // Its sender encrypted it already: a plain address's rule has nothing to add (the key
        // found for an `opportunistic` rule may not be the one the sender chose).
        Route::Outbound(c) if encrypted && !c.is_strong() => {
            Classified::as_sent(c.written()).map_err(refused)
        }
        Route::Outbound(c) => Ok(c.clone()),
        Route::Local { address, key } => match key {
            Some(key) if !encrypted => {
                let mailbox = ctx.keys.normalize(address);
                let at_rest = AtRest {
                    hide_subject: ctx.hide_subject,
                    mark: ctx.mark.mark(&mailbox, message_id, false),
                };
                Ok(match key.as_ref() {
                    super::directory::LocalKey::OpenPgp(c) => {
                        Classified::at_rest(address, Some(c.as_ref().clone()), None, at_rest)
                    }
                    super::directory::LocalKey::Smime(c) => {
                        Classified::at_rest(address, None, Some(c.clone()), at_rest)
                    }
                })
            }
            _ => Classified::as_sent(address).map_err(refused),
        },
        // Already encrypted: the pipeline checks it is encrypted to every key of the policy.
        Route::LocalStrong(c) if encrypted => Ok(c.clone()),
        Route::LocalStrong(c) => match ctx.strong_inbound {
            StrongInbound::Refuse => Err(Reply::new(
                550,
                "5.7.1",
                format!(
                    "{} accepts only end-to-end encrypted mail: encrypt to the key its fingerprint names, or write to {} instead",
                    c.written(),
                    c.routable()
                ),
            )),
            StrongInbound::EncryptAndFlag => {
                let at_rest = AtRest {
                    hide_subject: ctx.hide_subject,
                    mark: ctx.mark.mark(c.routable(), message_id, true),
                };
                Ok(c.clone().stored_at_rest(at_rest))
            }
        },
    }
}

/// Plans, makes and reinjects the copies for `rcpts` (one group; `members` are their places in
/// the envelope); one reply per recipient.
async fn copies(
    ctx: &Arc<FilterContext>,
    reinjector: &mut Reinjector,
    envelope: &Envelope,
    message: &Arc<Vec<u8>>,
    members: &[usize],
    rcpts: Vec<Classified>,
) -> Vec<Reply> {
    let rcpts: Arc<[Classified]> = rcpts.into();
    let mut replies: Vec<Option<Reply>> = vec![None; rcpts.len()];
    let planned = {
        let (message, rcpts) = (message.clone(), rcpts.clone());
        tokio::task::spawn_blocking(move || Plan::new(&message, &rcpts)).await
    };
    let plan = match planned {
        Ok(Ok(plan)) => Arc::new(plan),
        Ok(Err(e)) => return vec![plan_refusal(&e); rcpts.len()],
        Err(_) => return vec![internal_error(); rcpts.len()],
    };
    for n in 0..plan.len() {
        let in_copy = plan.recipients(n).to_vec();
        let made = {
            let (plan, message) = (plan.clone(), message.clone());
            // The sidecar holds no keys of its own: nothing is signed or self-encrypted.
            tokio::task::spawn_blocking(move || plan.make(n, &message, &SenderKeys::default()))
                .await
        };
        let copy = match made {
            Ok(Ok(copy)) => copy,
            Ok(Err(e)) => {
                tracing::info!(error = %e, "a copy could not be made");
                for &m in &in_copy {
                    replies[m] = Some(plan_refusal(&e));
                }
                continue;
            }
            Err(_) => {
                for &m in &in_copy {
                    replies[m] = Some(internal_error());
                }
                continue;
            }
        };
        let mut held = ctx.in_flight.reserve(0);
        if !copy.is_plain() && !held.grow_to(copy.payload(message).bytes().len()) {
            for &m in &in_copy {
                replies[m] = Some(Reply::new(
                    452,
                    "4.3.1",
                    "Too much mail in progress; try again shortly",
                ));
            }
            continue;
        }
        let idx: Vec<usize> = copy.recipients().to_vec();
        let dests: Vec<Destination<'_>> = idx
            .iter()
            .map(|&i| Destination {
                address: rcpts[i].routable(),
                params: &envelope.rcpts[members[i]].params,
            })
            .collect();
        let got = reinjector
            .send(
                &envelope.xforward,
                &envelope.from,
                &envelope.params,
                &dests,
                &copy,
                copy.payload(message),
            )
            .await;
        tracing::info!(
            copy = copy.treatment(),
            rcpts = idx.len(),
            code = got.first().map(|r| r.code).unwrap_or(0),
            "reinjected"
        );
        for (k, reply) in got.into_iter().enumerate() {
            replies[idx[k]] = Some(reply);
        }
    }
    replies
        .into_iter()
        .map(|r| r.unwrap_or_else(internal_error))
        .collect()
}

fn internal_error() -> Reply {
    Reply::new(451, "4.3.0", "Internal error while encrypting; try again")
}

fn plan_refusal(e: &PlanError) -> Reply {
    Reply::plan_refused(e)
}
