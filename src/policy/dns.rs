//! DNS lookups for policy discovery (hickory-resolver): TXT `_mmm`, OPENPGPKEY, and addresses for
//! the HTTPS fetches, all through one resolver so that a test's `--dns` reaches every lookup.
//!
//! Each lookup answers [`Answer::Found`], [`Answer::Nothing`] (NXDOMAIN or no record of that
//! type: a definitive "no") or [`Answer::Transient`] (timeout, SERVFAIL, REFUSED, no server).
//! DNSSEC is not needed: every artefact is checked against the address's fingerprint.

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::{RData, RecordType};
use hickory_resolver::{Resolver, TokioResolver};
use std::net::SocketAddr;
use std::time::Duration;

/// A TXT record longer than this (all its strings together) is skipped.
const MAX_TXT_LEN: usize = 16 * 1024;
/// At most this many records of one name are considered (rotation keeps two or three).
const MAX_RECORDS: usize = 8;

/// What a source said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer<T> {
    Found(T),
    /// A definitive "no such record".
    Nothing,
    /// The source could not answer now; the reason, for logs and replies.
    Transient(String),
}

/// The resolver used for every policy lookup.
#[derive(Clone)]
pub struct DnsClient {
    resolver: TokioResolver,
}

impl DnsClient {
    /// A resolver asking `server` (UDP, then TCP for long answers), or the system's resolvers
    /// when `server` is `None`.
    pub fn new(server: Option<SocketAddr>, timeout: Duration) -> Result<DnsClient, String> {
        let mut opts = ResolverOpts::default();
        opts.timeout = timeout;
        opts.attempts = 2;
        opts.edns0 = true;
        opts.cache_size = 256;
        let builder = match server {
            Some(addr) => {
                let mut udp = ConnectionConfig::udp();
                udp.port = addr.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = addr.port();
                let ns = NameServerConfig::new(addr.ip(), true, vec![udp, tcp]);
                let cfg = ResolverConfig::from_parts(None, vec![], vec![ns]);
                Resolver::builder_with_config(cfg, TokioRuntimeProvider::default())
            }
            None => Resolver::builder_tokio().map_err(|e| format!("system resolver: {e}"))?,
        };
        let resolver = builder
            .with_options(opts)
            .build()
            .map_err(|e| format!("resolver: {e}"))?;
        Ok(DnsClient { resolver })
    }

    /// TXT records at `name`, each record's strings concatenated (one JWS per record).
    pub async fn txt(&self, name: &str) -> Answer<Vec<String>> {
        self.records(name, RecordType::TXT, |data| match data {
            RData::TXT(txt) => {
                let joined: Vec<u8> = txt
                    .txt_data
                    .iter()
                    .flat_map(|s| s.iter().copied())
                    .collect();
                if joined.len() > MAX_TXT_LEN {
                    return None;
                }
                String::from_utf8(joined).ok()
            }
            _ => None,
        })
        .await
    }

    /// OPENPGPKEY records at `name` (RFC 7929), as binary transferable public keys.
    pub async fn openpgpkey(&self, name: &str) -> Answer<Vec<Vec<u8>>> {
        self.records(name, RecordType::OPENPGPKEY, |data| match data {
            RData::OPENPGPKEY(key) => Some(key.public_key.clone()),
            _ => None,
        })
        .await
    }

    /// The addresses of `host`, for the HTTPS client.
    pub async fn addresses(&self, host: &str) -> Answer<Vec<std::net::IpAddr>> {
        match self.resolver.lookup_ip(fqdn(host)).await {
            Ok(ips) => {
                let ips: Vec<_> = ips.iter().collect();
                if ips.is_empty() {
                    Answer::Nothing
                } else {
                    Answer::Found(ips)
                }
            }
            Err(e) => classify(&e),
        }
    }

    async fn records<T>(
        &self,
        name: &str,
        record_type: RecordType,
        take: impl Fn(&RData) -> Option<T>,
    ) -> Answer<Vec<T>> {
        match self.resolver.lookup(fqdn(name), record_type).await {
            Ok(lookup) => {
                let found: Vec<T> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| take(&r.data))
                    .take(MAX_RECORDS)
                    .collect();
                if found.is_empty() {
                    Answer::Nothing
                } else {
                    Answer::Found(found)
                }
            }
            Err(e) => classify(&e),
        }
    }
}

/// NXDOMAIN and NODATA are definitive; everything else may pass.
fn classify<T>(e: &NetError) -> Answer<T> {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(no))
            if matches!(
                no.response_code,
                ResponseCode::NXDomain | ResponseCode::NoError
            ) =>
        {
            Answer::Nothing
        }
        other => Answer::Transient(format!("DNS: {other}")),
    }
}

/// Names are looked up as absolute names, so no search domain is ever appended.
fn fqdn(name: &str) -> String {
    if name.ends_with('.') {
        name.to_owned()
    } else {
        format!("{name}.")
    }
}
