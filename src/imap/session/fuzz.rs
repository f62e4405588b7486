//! Entry points for the fuzz targets (`integration/fuzz`): the session core fed arbitrary
//! bytes from the client (with a server that says OK to everything) or from the server (in
//! the middle of a mapped session's view FETCH). Also used by the unit tests for their context.

use super::core::{Core, Out, UpItem};
use crate::config::Limits;
use crate::imap::{ImapAccount, ImapContext};
use crate::upstream::{UpstreamTarget, UpstreamTls};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A context with one mapped login (`alice`, key store locked) and no network.
pub fn context() -> Arc<ImapContext> {
    let config = test_client_config();
    let mut accounts = HashMap::new();
    accounts.insert(
        "alice".to_string(),
        Arc::new(ImapAccount {
            address: "alice@example.test".into(),
            keys: None,
            index: None,
            owned: Default::default(),
            indexer: Default::default(),
            device: None,
            device_signer: None,
        }),
    );
    let limits = Limits {
        max_message_size: 1 << 20,
        ..Limits::default()
    };
    Arc::new(ImapContext {
        upstream: UpstreamTarget {
            address: "127.0.0.1:1".into(),
            tls: UpstreamTls::None,
            tls_config: Arc::new(config),
            timeout: Duration::from_secs(5),
            hello_name: "localhost".into(),
        },
        tls: None,
        accounts,
        limits,
        connections: Arc::new(tokio::sync::Semaphore::new(4)),
        views: crate::imap::view::ViewCache::new(1 << 20),
        append_plaintext: Vec::new(),
        indexer: Default::default(),
        store: None,
    })
}

/// A context in the store role (no mapped account) and no network.
#[cfg(test)]
pub(super) fn store_context(role: Arc<crate::store::role::StoreRole>) -> Arc<ImapContext> {
    Arc::new(ImapContext {
        upstream: UpstreamTarget {
            address: "127.0.0.1:1".into(),
            tls: UpstreamTls::None,
            tls_config: Arc::new(test_client_config()),
            timeout: Duration::from_secs(5),
            hello_name: "localhost".into(),
        },
        tls: None,
        accounts: HashMap::new(),
        limits: Limits {
            max_message_size: 1 << 20,
            ..Limits::default()
        },
        connections: Arc::new(tokio::sync::Semaphore::new(4)),
        views: crate::imap::view::ViewCache::new(0),
        append_plaintext: Vec::new(),
        indexer: Default::default(),
        store: Some(role),
    })
}

/// A TLS client configuration for a context that never connects.
#[allow(clippy::expect_used)]
pub fn test_client_config() -> rustls::ClientConfig {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default TLS versions")
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth()
}

fn core() -> Core {
    let caps = ["IMAP4rev1", "AUTH=PLAIN", "SASL-IR", "IDLE", "LITERAL+"]
        .map(String::from)
        .to_vec();
    Core::new(context(), "fuzz".into(), caps, false, true)
}

/// Takes what the core queued for the client (and tells it what was written).
fn drain_client(core: &mut Core) -> usize {
    let mut n = 0;
    while let Some(out) = core.out.pop_front() {
        n += 1;
        match out {
            Out::FetchDone(_) => core.fetch_delivered(),
            Out::SearchDone(_) => core.search_delivered(),
            Out::StartTls(_) => core.tls_started(),
            _ => {}
        }
    }
    core.jobs.clear();
    if core.sealing.is_some() {
        core.sealed(Err("fuzz".into()));
    }
    n
}

/// Plays a server that answers every command meshmail sends with OK (and every wait for a
/// continuation with `+`).
fn answer_everything(core: &mut Core) {
    for _ in 0..64 {
        let mut replies = Vec::new();
        while let Some(item) = core.up_queue.pop_front() {
            match item {
                UpItem::Gate { .. } => replies.extend_from_slice(b"+ go\r\n"),
                UpItem::Bytes { data, .. } => {
                    core.up_queued_bytes = core.up_queued_bytes.saturating_sub(data.len());
                    if let Some(tag) = data.split(|&b| b == b' ').next() {
                        if tag.first() == Some(&b'M') && data.ends_with(b"\r\n") {
                            replies.extend_from_slice(tag);
                            replies.extend_from_slice(b" OK done\r\n");
                        }
                    }
                }
            }
        }
        core.up_written = 0;
        if replies.is_empty() {
            break;
        }
        core.on_upstream_bytes(&replies);
        drain_client(core);
    }
}

/// Arbitrary client bytes, in chunks whose sizes the input's first bytes choose.
pub fn client_bytes(data: &[u8]) {
    let mut core = core();
    let (sizes, mut rest) = data.split_at(data.len().min(8));
    for &size in sizes.iter().cycle().take(64) {
        if rest.is_empty() {
            break;
        }
        let n = (size as usize % 64 + 1).min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        core.on_client_bytes(chunk);
        drain_client(&mut core);
        answer_everything(&mut core);
    }
    core.on_client_bytes(rest);
    drain_client(&mut core);
    answer_everything(&mut core);
}

/// Arbitrary server bytes while a mapped session's view FETCH runs.
pub fn server_bytes(data: &[u8]) {
    let mut core = core();
    core.on_client_bytes(b"a LOGIN alice pw\r\n");
    answer_everything(&mut core);
    core.on_client_bytes(b"s SELECT INBOX\r\n");
    let mut select = Vec::new();
    for item in core.up_queue.drain(..) {
        if let UpItem::Bytes { data, .. } = item {
            select.extend_from_slice(&data);
        }
    }
    core.up_queued_bytes = 0;
    let tag: Vec<u8> = select
        .split(|&b| b == b' ')
        .next()
        .unwrap_or_default()
        .to_vec();
    let mut reply = b"* 3 EXISTS\r\n* OK [UIDVALIDITY 5] ok\r\n".to_vec();
    reply.extend_from_slice(&tag);
    reply.extend_from_slice(b" OK done\r\n");
    core.on_upstream_bytes(&reply);
    drain_client(&mut core);
    core.on_client_bytes(b"f FETCH 1:* (FLAGS BODYSTRUCTURE BODY.PEEK[] ENVELOPE)\r\n");
    drain_client(&mut core);
    let half = data.len() / 2;
    core.on_upstream_bytes(&data[..half]);
    drain_client(&mut core);
    core.on_upstream_bytes(&data[half..]);
    drain_client(&mut core);
    answer_everything(&mut core);
}

/// Arbitrary bytes as a message: the view's MIME parser, structure, sections and search text,
/// and the FETCH response scanner.
pub fn view(data: &[u8]) {
    use imap_codec::imap_types::fetch::Section;
    let view = crate::imap::view::View::from_message(zeroize::Zeroizing::new(data.to_vec()));
    let _ = view.bodystructure();
    let _ = view.envelope();
    let _ = view.search_text();
    for section in [None, Some(Section::Header(None)), Some(Section::Text(None))] {
        let _ = view.section(section.as_ref());
    }
    let one = std::num::NonZeroU32::MIN;
    if let Ok(numbers) = imap_codec::imap_types::core::Vec1::try_from(vec![one, one]) {
        let part = imap_codec::imap_types::fetch::Part(numbers);
        let _ = view.section(Some(&Section::Part(part.clone())));
        let _ = view.section(Some(&Section::Mime(part)));
    }
    if let Some(r) = crate::imap::fetch::response::scan(data) {
        let _ = r.uid(data);
        let _ = r.without(data, &["UID"]);
    }
}
