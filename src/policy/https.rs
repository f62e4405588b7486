//! HTTPS fetches for policy discovery: `/.well-known/mmm-udf/` and WKD.
//!
//! The server certificate is verified against the system roots plus an optional extra CA from
//! the configuration; verification is never turned off. Names are resolved through the same
//! [`DnsClient`] as every other lookup. Redirects are followed only to the same host (at most
//! three), and a body longer than the caller's limit is refused.

use super::dns::{Answer, DnsClient};
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::StatusCode;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

/// The HTTPS client used for policy and WKD fetches.
#[derive(Clone)]
pub struct HttpsClient {
    client: reqwest::Client,
    /// Test-only override of the port (443 otherwise).
    port: Option<u16>,
}

/// Why the HTTPS client could not be built (a configuration problem).
#[derive(Debug, thiserror::Error)]
pub enum HttpsSetupError {
    #[error("cannot read CA file {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("HTTPS client: {0}")]
    Client(String),
}

impl HttpsClient {
    pub fn new(
        dns: DnsClient,
        extra_ca: Option<&Path>,
        port: Option<u16>,
        timeout: Duration,
    ) -> Result<HttpsClient, HttpsSetupError> {
        let tls = crate::tls::client_config(extra_ca).map_err(|e| HttpsSetupError::CaFile {
            path: extra_ca
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            reason: e,
        })?;
        let redirect = reqwest::redirect::Policy::custom(|attempt| {
            let same_host = attempt
                .previous()
                .first()
                .map(|first| first.host_str() == attempt.url().host_str())
                .unwrap_or(false);
            if same_host && attempt.previous().len() <= 3 && attempt.url().scheme() == "https" {
                attempt.follow()
            } else {
                attempt.stop()
            }
        });
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .https_only(true)
            .redirect(redirect)
            .timeout(timeout)
            .connect_timeout(timeout)
            .dns_resolver(Arc::new(ViaDnsClient(dns)))
            .user_agent(concat!("meshmail/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| HttpsSetupError::Client(e.to_string()))?;
        Ok(HttpsClient { client, port })
    }

    /// GETs `https://<host>/<path_and_query>`, at most `limit` bytes.
    /// 404 and 410 are a definitive "nothing"; so is a host with no address.
    pub async fn get(&self, host: &str, path_and_query: &str, limit: usize) -> Answer<Vec<u8>> {
        let url = match self.port {
            Some(port) => format!("https://{host}:{port}{path_and_query}"),
            None => format!("https://{host}{path_and_query}"),
        };
        let mut response = match self.client.get(&url).send().await {
            Ok(r) => r,
            Err(e) => return classify(&e, host),
        };
        match response.status() {
            s if s.is_success() => {}
            StatusCode::NOT_FOUND | StatusCode::GONE => return Answer::Nothing,
            s if s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS => {
                return Answer::Transient(format!("HTTPS {host}: status {s}"))
            }
            s => return Answer::Nothing.with_note(format!("HTTPS {host}: status {s}")),
        }
        let mut body = Vec::new();
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
                        return Answer::Nothing
                            .with_note(format!("HTTPS {host}: body over {limit} bytes"));
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Answer::Found(body),
                Err(e) => return Answer::Transient(format!("HTTPS {host}: {e}")),
            }
        }
    }
}

trait WithNote {
    fn with_note(self, note: String) -> Self;
}

impl<T> WithNote for Answer<T> {
    /// A definitive refusal that is worth a debug line.
    fn with_note(self, note: String) -> Self {
        tracing::debug!(%note, "HTTPS answer taken as definitive");
        self
    }
}

/// Errors that leave the question open (timeouts, refused or reset connections) are transient;
/// a host that has no address, or a certificate that does not verify, is definitive.
fn classify<T>(e: &reqwest::Error, host: &str) -> Answer<T> {
    let text = error_chain(e);
    if text.contains(NO_ADDRESS) {
        return Answer::Nothing;
    }
    if text.contains("certificate")
        || text.contains("UnknownIssuer")
        || text.contains("NotValidForName")
    {
        return Answer::Nothing.with_note(format!("HTTPS {host}: {text}"));
    }
    Answer::Transient(format!("HTTPS {host}: {text}"))
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

const NO_ADDRESS: &str = "meshmail: host has no address";
const TRANSIENT_DNS: &str = "meshmail: DNS failed";

/// reqwest's name resolution through meshmail's resolver.
struct ViaDnsClient(DnsClient);

impl Resolve for ViaDnsClient {
    fn resolve(&self, name: Name) -> Resolving {
        let dns = self.0.clone();
        Box::pin(async move {
            match dns.addresses(name.as_str()).await {
                Answer::Found(ips) => {
                    let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
                    Ok(addrs)
                }
                Answer::Nothing => Err(NO_ADDRESS.into()),
                Answer::Transient(why) => Err(format!("{TRANSIENT_DNS}: {why}").into()),
            }
        })
    }
}
