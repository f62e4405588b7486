//! Entry points for the fuzz target `pop3_session` (`integration/fuzz`): the session core fed
//! arbitrary bytes from the client (with a server that says +OK to everything) or from the
//! server (while a mapped session's RETR is in flight). Also the unit tests' context.

use super::core::{Control, Core};
use crate::config::Limits;
use crate::imap::ImapAccount;
use crate::pop3::{Pop3Account, Pop3Context};
use crate::upstream::{UpstreamTarget, UpstreamTls};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A context with one mapped login (`alice`, key store locked) and no network.
pub fn context(tls: Option<tokio_rustls::TlsAcceptor>) -> Arc<Pop3Context> {
    let mut accounts = HashMap::new();
    accounts.insert(
        "alice".to_string(),
        Arc::new(Pop3Account {
            imap: Arc::new(ImapAccount {
                address: "alice@example.test".into(),
                keys: None,
                index: None,
                owned: Default::default(),
                indexer: Default::default(),
                device: None,
                device_signer: None,
            }),
            sizes: None,
        }),
    );
    Arc::new(Pop3Context {
        upstream: UpstreamTarget {
            address: "127.0.0.1:1".into(),
            tls: UpstreamTls::None,
            tls_config: Arc::new(crate::imap::fuzz::test_client_config()),
            timeout: Duration::from_secs(5),
            hello_name: "localhost".into(),
        },
        tls,
        accounts,
        limits: Limits {
            max_message_size: 1 << 20,
            ..Limits::default()
        },
        connections: Arc::new(tokio::sync::Semaphore::new(4)),
        views: crate::imap::view::ViewCache::new(1 << 20),
    })
}

/// Client bytes in two pieces (split where the first byte says), each server command answered
/// `+OK` with an empty multi-line body where one is due.
pub fn client_bytes(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = (split as usize).min(rest.len());
    let mut core = Core::new(context(None), "fuzz".into(), false, true);
    for piece in [&rest[..at], &rest[at..]] {
        core.on_client_bytes(piece);
        for _ in 0..64 {
            if core.control != Control::Run {
                return;
            }
            let sent = std::mem::take(&mut core.to_upstream);
            if sent.is_empty() {
                break;
            }
            core.on_upstream_bytes(b"+OK\r\n.\r\n");
            if let Some(job) = core.job.take() {
                core.job_done(job.n, job.answer, Err("fuzz".into()));
            }
        }
        check_client_output(&std::mem::take(&mut core.to_client));
    }
}

/// A mapped session whose RETR 1 is answered with these bytes (in two pieces).
pub fn server_bytes(data: &[u8]) {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let at = (split as usize).min(rest.len());
    let mut core = Core::new(context(None), "fuzz".into(), false, true);
    core.on_client_bytes(b"USER alice\r\n");
    core.on_upstream_bytes(b"+OK\r\n");
    core.on_client_bytes(b"PASS pw\r\n");
    core.on_upstream_bytes(b"+OK\r\n");
    core.on_upstream_bytes(b"+OK\r\n1 100\r\n.\r\n");
    core.on_upstream_bytes(b"+OK\r\n1 u1\r\n.\r\n");
    core.to_client.clear();
    core.to_upstream.clear();
    core.on_client_bytes(b"RETR 1\r\nLIST 1\r\nTOP 1 3\r\n");
    for piece in [&rest[..at], &rest[at..]] {
        core.on_upstream_bytes(piece);
        if let Some(job) = core.job.take() {
            core.job_done(job.n, job.answer, Err("fuzz".into()));
        }
    }
    core.on_upstream_closed();
    check_client_output(&core.to_client);
}

/// What the client is given is whole lines, and every multi-line answer ends.
#[allow(clippy::panic)]
fn check_client_output(out: &[u8]) {
    if !out.is_empty() && !out.ends_with(b"\n") {
        panic!(
            "a partial line reached the client: {:?}",
            String::from_utf8_lossy(out)
        );
    }
}
