//! Postfix's policy delegation protocol (`check_policy_service inet:127.0.0.1:10040` on the
//! submission smtpd): attribute lines `name=value`, an empty line, and one `action=` answer.
//! meshmail answers for fingerprint addresses only: a valid policy is `DUNNO` (Postfix goes on
//! with its own rules), none is `REJECT 5.7.1 …` and a lookup failing for now is
//! `DEFER_IF_PERMIT 4.4.3 …`, so the user's mail program shows the reason at RCPT instead of a
//! bounce later. The filter checks again at delivery; this is a courtesy, not the guarantee.

use super::FilterContext;
use crate::address::MailAddress;
use crate::pipeline::classify::{self, Refusal};
use crate::smtp::session::refusal_reply;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// Longest attribute line (Postfix's own are far shorter).
const MAX_LINE: usize = 4096;
/// Attributes in one request (Postfix sends about 30).
const MAX_ATTRIBUTES: usize = 200;

/// Serves policy requests until `shutdown`.
pub async fn run(listener: TcpListener, ctx: Arc<FilterContext>, shutdown: watch::Receiver<bool>) {
    // Its own limit: idle policy connections (any local process may open them) never take
    // the filter's, so they cannot hold up Postfix's deliveries.
    let connections = Arc::new(tokio::sync::Semaphore::new(ctx.limits.max_connections));
    let grace = Duration::from_secs(ctx.limits.shutdown_grace_secs);
    crate::listen::accept_loop(listener, connections, shutdown, grace, move |tcp, peer, _, _| {
        let ctx = ctx.clone();
        async move {
            if !ctx.peers.contains(&peer.ip()) {
                tracing::warn!(%peer, "policy request from a peer not in [filter] peers; closed");
                return;
            }
            if let Err(e) = serve(tcp, &ctx).await {
                tracing::debug!(%peer, error = %e, "policy connection ended");
            }
        }
    })
    .await
}

async fn serve(tcp: tokio::net::TcpStream, ctx: &Arc<FilterContext>) -> std::io::Result<()> {
    let idle = Duration::from_secs(ctx.limits.idle_timeout_secs);
    let (read, mut write) = tcp.into_split();
    let mut lines = BufReader::new(read);
    let mut request: HashMap<String, String> = HashMap::new();
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = tokio::time::timeout(idle, read_line(&mut lines, &mut line))
            .await
            .map_err(|_| std::io::Error::other("idle"))??;
        if n == 0 {
            return Ok(());
        }
        let text = String::from_utf8_lossy(&line);
        let text = text.trim_end_matches(['\r', '\n']);
        if text.is_empty() {
            let action = decide(ctx, &request).await;
            write
                .write_all(format!("action={action}\n\n").as_bytes())
                .await?;
            request.clear();
            continue;
        }
        if request.len() >= MAX_ATTRIBUTES {
            return Err(std::io::Error::other("too many attributes"));
        }
        if let Some((name, value)) = text.split_once('=') {
            request.insert(name.to_owned(), value.to_owned());
        }
    }
}

/// One line of at most [`MAX_LINE`] bytes; a longer one ends the connection.
async fn read_line<R: tokio::io::AsyncBufRead + Unpin>(
    r: &mut R,
    out: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let n = (&mut *r)
        .take(MAX_LINE as u64 + 1)
        .read_until(b'\n', out)
        .await?;
    if out.len() > MAX_LINE {
        return Err(std::io::Error::other("line too long"));
    }
    Ok(n)
}

/// The action for one request.
pub async fn decide(ctx: &FilterContext, request: &HashMap<String, String>) -> String {
    let state = request.get("protocol_state").map(String::as_str);
    let Some(recipient) = request.get("recipient").filter(|r| !r.is_empty()) else {
        return "DUNNO".into();
    };
    if state.is_some_and(|s| !s.eq_ignore_ascii_case("RCPT")) {
        return "DUNNO".into();
    }
    let refusal = match MailAddress::classify(recipient) {
        Ok(MailAddress::Plain(_)) => return "DUNNO".into(),
        Err(e) => Refusal::BadAddress(e),
        Ok(MailAddress::Strong(_)) => {
            match classify::classify(&ctx.resolver, &ctx.rules, recipient).await {
                Ok(_) => return "DUNNO".into(),
                Err(r) => r,
            }
        }
    };
    let reply = refusal_reply(recipient, refusal);
    let verb = if reply.is_permanent() {
        "REJECT"
    } else {
        "DEFER_IF_PERMIT"
    };
    let text: String = format!(
        "{} {}",
        reply.enhanced.clone().unwrap_or_default(),
        reply.lines.join(" ")
    )
    .chars()
    .map(|c| if c.is_control() { ' ' } else { c })
    .collect();
    tracing::info!(rcpt = %recipient, action = verb, "policy service refused a recipient");
    format!("{verb} {}", text.trim())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EncryptRules, FilterConfig, Limits};

    fn context(dir: &std::path::Path) -> FilterContext {
        let config: FilterConfig = toml::from_str(&format!(
            "listen = \"127.0.0.1:0\"\nreinject = \"127.0.0.1:9\"\nlocal_domains = [\"example.test\"]\nkeys_dir = \"{}\"\n",
            dir.display()
        ))
        .unwrap();
        // DNS at a port where nothing answers: every policy lookup fails for now.
        let resolver = crate::policy::PolicyResolver::new(&crate::policy::ResolverSettings {
            dns: Some(std::net::SocketAddr::from(([127, 0, 0, 1], 9))),
            timeout: Duration::from_secs(1),
            ..Default::default()
        })
        .unwrap();
        FilterContext::new(
            &config,
            resolver,
            EncryptRules::default(),
            Limits::default(),
            Some(dir),
        )
        .unwrap()
    }

    fn request(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[tokio::test]
    async fn only_fingerprint_addresses_are_judged_and_a_failing_lookup_defers() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path());
        let rcpt = |r: &'static str| {
            request(&[
                ("request", "smtpd_access_policy"),
                ("protocol_state", "RCPT"),
                ("recipient", r),
            ])
        };
        assert_eq!(decide(&ctx, &rcpt("bob@example.net")).await, "DUNNO");
        assert_eq!(
            decide(&ctx, &request(&[("protocol_state", "DATA")])).await,
            "DUNNO"
        );
        let strong = "bob@example.net.xx--mddk-7n6a-727a-jzno-strx-xks7-djaf";
        let deferred = decide(&ctx, &rcpt(strong)).await;
        assert!(deferred.starts_with("DEFER_IF_PERMIT 4.4.3 "), "{deferred}");
        let bad = decide(&ctx, &rcpt("bob@example.net.xx--not-a-fingerprint")).await;
        assert!(bad.starts_with("REJECT 5.1.3 "), "{bad}");
        assert!(
            !bad.contains('\n') && !deferred.contains('\n'),
            "one line each"
        );
    }
}
