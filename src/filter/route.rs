//! Where each recipient of the filter goes, decided at RCPT so that a refusal is a clean reply
//! on that recipient: beyond the local domains, the outbound pipeline's classification (a
//! fingerprint address needs its verified policy); a local mailbox, its key from the key
//! directory; a local user's fingerprint address, its verified policy.

use super::directory::{LocalKey, Lookup};
use super::FilterContext;
use crate::address::MailAddress;
use crate::pipeline::{classify, Classified};
use crate::smtp::reply::Reply;
use crate::smtp::session::refusal_reply;
use std::sync::Arc;

/// One recipient's route.
#[derive(Debug)]
pub enum Route {
    /// Beyond the local domains: what the outbound pipeline decided.
    Outbound(Classified),
    /// A local mailbox (a plain address): stored encrypted to its key unless the message is
    /// already encrypted; without a key, stored as it arrives.
    Local {
        address: String,
        key: Option<Arc<LocalKey>>,
    },
    /// A local user's fingerprint address: its verified policy; delivered to the mailbox.
    LocalStrong(Classified),
}

impl Route {
    /// The text of the `250` at RCPT.
    pub fn note(&self) -> String {
        match self {
            Route::Outbound(c) if c.is_strong() => {
                "OK, will be encrypted as its policy says".into()
            }
            Route::Outbound(_) => "OK".into(),
            Route::Local { key: Some(_), .. } => "OK, will be stored encrypted".into(),
            Route::Local { key: None, .. } => "OK".into(),
            Route::LocalStrong(c) => format!("OK, for {}", c.routable()),
        }
    }
}

/// Routes one RCPT address.
pub async fn route(ctx: &Arc<FilterContext>, address: &str) -> Result<Route, Reply> {
    let parsed = MailAddress::classify(address)
        .map_err(|e| refusal_reply(address, classify::Refusal::BadAddress(e)))?;
    match parsed {
        MailAddress::Strong(strong) if ctx.is_local(strong.domain()) => {
            classify::classify(&ctx.resolver, &ctx.rules, address)
                .await
                .map(Route::LocalStrong)
                .map_err(|r| refusal_reply(address, r))
        }
        MailAddress::Plain(plain) if ctx.is_local(domain_of(&plain)) => {
            let c = ctx.clone();
            let looked = tokio::task::spawn_blocking(move || c.keys.lookup(&plain))
                .await
                .map_err(|_| busy())?;
            match looked {
                Ok(Lookup::Key(key)) => Ok(Route::Local {
                    address: address.to_owned(),
                    key: Some(key),
                }),
                Ok(Lookup::NoKey) => Ok(Route::Local {
                    address: address.to_owned(),
                    key: None,
                }),
                Ok(Lookup::Unusable(why)) => Err(Reply::new(
                    451,
                    "4.7.0",
                    format!("The key of {address} cannot be used now ({why}); the message waits until it is fixed"),
                )),
                Err(e) => {
                    tracing::error!(error = %e, "ALARM: the key directory cannot be read; mail for local users is deferred");
                    Err(Reply::new(
                        451,
                        "4.3.0",
                        "Local keys cannot be read now; try again later",
                    ))
                }
            }
        }
        _ => classify::classify(&ctx.resolver, &ctx.rules, address)
            .await
            .map(Route::Outbound)
            .map_err(|r| refusal_reply(address, r)),
    }
}

fn domain_of(address: &str) -> &str {
    address.rsplit_once('@').map_or("", |(_, d)| d)
}

fn busy() -> Reply {
    Reply::new(451, "4.3.0", "Internal error; try again")
}
