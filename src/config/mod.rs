//! The TOML configuration (`meshmail serve --config FILE`, `meshmail check-config FILE`).
//! Keys named in the issues are kept as they are, so scripts can rely on them; see
//! `config/device.toml` for a documented example.

mod filter;
pub mod store;

pub use filter::{FilterConfig, FilterListen, PolicyServiceConfig, StrongInbound};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The account's key store; else `$MESHMAIL_HOME`, else the default data directory.
    pub home: Option<PathBuf>,
    /// The upstream login mapped to the account.
    pub upstream_user: Option<String>,
    /// A file holding the key store passphrase (e.g. from systemd-creds).
    pub passphrase_file: Option<PathBuf>,
    /// An inherited file descriptor to read the passphrase from.
    pub passphrase_fd: Option<u32>,
    /// Sign outgoing mail of mapped sessions with the account's key (default true).
    pub sign: Option<bool>,
    /// More accounts: each maps an upstream login to a key store.
    #[serde(default, rename = "account")]
    pub accounts: Vec<AccountConfig>,
    #[serde(default)]
    pub policy: PolicyConfig,
    pub smtp: Option<SmtpConfig>,
    pub imap: Option<ImapConfig>,
    /// The POP3 proxy (device role), for clients that fetch with POP3.
    pub pop3: Option<Pop3Config>,
    /// The MTA sidecar (content filter behind Postfix); holds no private keys.
    pub filter: Option<FilterConfig>,
    /// The store role in front of the mail store (split accounts' devices).
    pub store: Option<store::StoreConfig>,
    pub tls: Option<TlsConfig>,
    #[serde(default)]
    pub encrypt: EncryptRules,
    #[serde(default)]
    pub limits: Limits,
}

/// `[[account]]`: an upstream login and its key store.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub upstream_user: String,
    pub home: PathBuf,
    pub passphrase_file: Option<PathBuf>,
    pub passphrase_fd: Option<u32>,
}

/// `[smtp]`: the submission listener and its upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SmtpConfig {
    /// STARTTLS (or plaintext on loopback) listener, e.g. `127.0.0.1:1587`.
    pub listen: SocketAddr,
    /// Implicit-TLS listener, e.g. `127.0.0.1:1465`.
    pub listen_implicit_tls: Option<SocketAddr>,
    /// The provider's submission server, `host:port`.
    pub upstream: String,
    /// `starttls` (587), `implicit` (465) or `none` (loopback only).
    pub upstream_tls: crate::upstream::UpstreamTls,
    /// Extra CA for the upstream's certificate; the server's own certificate here is pinned.
    pub upstream_ca: Option<PathBuf>,
    /// The upstream's certificate pinned by digest: `sha256:<64 hex digits>`.
    pub upstream_fingerprint: Option<String>,
    /// The name meshmail gives in its greeting and EHLO (default: localhost).
    pub hostname: Option<String>,
}

/// The pins of an upstream's `upstream_fingerprint` (checked by `Config::check_file`).
pub fn upstream_pins(fingerprint: Option<&str>) -> Result<Vec<crate::upstream::CertPin>, String> {
    fingerprint
        .map(crate::upstream::parse_pin)
        .transpose()
        .map(|p| p.into_iter().collect())
}

/// `[imap]`: the IMAP listener and its upstream.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ImapConfig {
    /// STARTTLS (or plaintext on loopback) listener, e.g. `127.0.0.1:1143`.
    pub listen: SocketAddr,
    /// Implicit-TLS listener, e.g. `127.0.0.1:1993`.
    pub listen_implicit_tls: Option<SocketAddr>,
    /// The provider's IMAP server, `host:port`.
    pub upstream: String,
    /// `starttls` (143), `implicit` (993) or `none` (loopback only).
    pub upstream_tls: crate::upstream::UpstreamTls,
    /// Extra CA for the upstream's certificate; the server's own certificate here is pinned.
    pub upstream_ca: Option<PathBuf>,
    /// The upstream's certificate pinned by digest: `sha256:<64 hex digits>`.
    pub upstream_fingerprint: Option<String>,
    /// Mailboxes whose APPENDed messages are stored as the client sent them (not encrypted).
    #[serde(default)]
    pub append_plaintext: Vec<String>,
    /// Decrypted messages kept in memory, in bytes (default 32 MiB).
    pub cache_bytes: Option<u64>,
    /// The background indexer decrypts new mail as it arrives (default true).
    pub indexer: Option<bool>,
    /// Mailboxes it always watches; the first is kept in IDLE (default INBOX, Sent, Drafts).
    pub index_mailboxes: Option<Vec<String>>,
    /// Mailboxes a client selects are watched too (default true).
    pub index_selected: Option<bool>,
    /// How often the watched mailboxes not in IDLE are looked at, in seconds (default 60).
    pub index_poll_secs: Option<u64>,
    /// A device of a split account: the store's certificate, pinned (`sha256:<hex>` or a PEM
    /// file). Default: the pin the device got at enrolment.
    pub store_cert: Option<String>,
}

impl ImapConfig {
    /// What the background indexers watch, defaults filled in.
    pub fn indexer_settings(&self) -> crate::imap::indexer::IndexerSettings {
        let d = crate::imap::indexer::IndexerSettings::default();
        crate::imap::indexer::IndexerSettings {
            enabled: self.indexer.unwrap_or(d.enabled),
            mailboxes: self.index_mailboxes.clone().unwrap_or(d.mailboxes),
            follow_selected: self.index_selected.unwrap_or(d.follow_selected),
            poll: self
                .index_poll_secs
                .map_or(d.poll, |s| std::time::Duration::from_secs(s.max(1))),
        }
    }
}

/// `[pop3]`: the POP3 listener and its upstream (the mapped accounts are the same as IMAP's).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pop3Config {
    /// STLS (or plaintext on loopback) listener, e.g. `127.0.0.1:1110`.
    pub listen: SocketAddr,
    /// Implicit-TLS listener, e.g. `127.0.0.1:1995`.
    pub listen_implicit_tls: Option<SocketAddr>,
    /// The provider's POP3 server, `host:port`.
    pub upstream: String,
    /// `starttls` (STLS on 110), `implicit` (995) or `none` (loopback only).
    pub upstream_tls: crate::upstream::UpstreamTls,
    /// Extra CA for the upstream's certificate; the server's own certificate here is pinned.
    pub upstream_ca: Option<PathBuf>,
    /// The upstream's certificate pinned by digest: `sha256:<64 hex digits>`.
    pub upstream_fingerprint: Option<String>,
}

/// `[tls]`: the certificate offered to clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// What to do with a plain (not strong) recipient.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum EncryptRule {
    /// Encrypt, or refuse the recipient when no key is found.
    Required,
    /// Encrypt when a key is found; otherwise send in plaintext.
    #[default]
    Opportunistic,
    /// Send in plaintext.
    Never,
}

/// `[encrypt]`: rules for plain addresses (strong addresses always need their policy):
/// the most specific wins: address, then domain, then `default`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncryptRules {
    #[serde(default)]
    pub default: EncryptRule,
    #[serde(default)]
    pub domains: std::collections::BTreeMap<String, EncryptRule>,
    #[serde(default)]
    pub addresses: std::collections::BTreeMap<String, EncryptRule>,
}

impl EncryptRules {
    /// The rule for a plain address.
    pub fn for_address(&self, address: &str) -> EncryptRule {
        let lower = address.to_lowercase();
        if let Some(r) = self
            .addresses
            .iter()
            .find(|(a, _)| a.to_lowercase() == lower)
        {
            return *r.1;
        }
        if let Some((_, domain)) = lower.rsplit_once('@') {
            if let Some(r) = self
                .domains
                .iter()
                .find(|(d, _)| d.to_lowercase() == domain)
            {
                return *r.1;
            }
        }
        self.default
    }
}

/// `[limits]`: every length, count and time a client can push on.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Longest command line (RFC 5321 §4.5.3.1.4 says 512; extensions make lines longer).
    pub max_line: usize,
    /// Recipients per message (RFC 5321 §4.5.3.1.8: at least 100).
    pub max_recipients: usize,
    /// Largest message accepted from a client, in bytes (also bounded by the upstream's SIZE
    /// divided by the encryption growth).
    pub max_message_size: usize,
    /// Message bytes held in memory across all sessions at once.
    pub max_bytes_in_flight: usize,
    /// Seconds a client may stay silent.
    pub idle_timeout_secs: u64,
    /// Protocol errors before the session is closed.
    pub max_errors: u32,
    /// Client connections at once.
    pub max_connections: usize,
    /// Seconds for each upstream step.
    pub upstream_timeout_secs: u64,
    /// Seconds sessions get to finish after SIGTERM (a message in DATA is relayed, others
    /// are told `421`/`BYE`); then whatever is left is cut.
    pub shutdown_grace_secs: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_line: 4096,
            max_recipients: 100,
            max_message_size: 50 * 1024 * 1024,
            max_bytes_in_flight: 512 * 1024 * 1024,
            idle_timeout_secs: 300,
            max_errors: 10,
            max_connections: 100,
            upstream_timeout_secs: 60,
            shutdown_grace_secs: 30,
        }
    }
}

/// `[policy]`: discovery settings.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyConfig {
    /// DNS server for policy lookups, `HOST:PORT` (default: the system's resolvers).
    pub dns: Option<SocketAddr>,
    /// Extra CA for HTTPS policy and WKD fetches.
    pub https_ca: Option<PathBuf>,
    /// Test only: port of HTTPS policy fetches (default 443).
    pub https_port: Option<u16>,
    /// Seconds for each DNS query or HTTPS request (default 5).
    pub timeout_secs: Option<u64>,
    /// Seconds a stored policy is used before it is refreshed (default 3600).
    pub store_ttl_secs: Option<u64>,
    /// Seconds a lookup that failed for now (DNS or HTTPS down) is answered from the cache
    /// before it is tried again (default and at most 60).
    pub retry_after_secs: Option<u64>,
}

/// A configuration problem, with the line it is on when known.
#[derive(Debug, thiserror::Error)]
#[error("{path}{}: {message}", line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct ConfigError {
    pub path: String,
    pub line: Option<usize>,
    pub message: String,
}

impl Config {
    /// Reads a configuration file and checks it; the first problem is the error (use
    /// [`Config::check_file`] for all of them).
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let (config, mut problems) = Config::check_file(path)?;
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems.remove(0))
        }
    }

    /// Reads a configuration file and returns it with every problem found (syntax problems
    /// stop at the first, as the TOML parser does).
    pub fn check_file(path: &Path) -> Result<(Config, Vec<ConfigError>), ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.display().to_string(),
            line: None,
            message: e.to_string(),
        })?;
        let config = Config::parse(&text, path)?;
        let problems = config.problems(&text, path);
        Ok((config, problems))
    }

    /// Problems a parser cannot see: addresses, files, combinations.
    pub fn problems(&self, text: &str, path: &Path) -> Vec<ConfigError> {
        let mut out = Vec::new();
        let mut problem = |section: &str, key: &str, message: String| {
            out.push(ConfigError {
                path: path.display().to_string(),
                line: line_of(text, section, key),
                message,
            })
        };
        let readable = |p: &Path| {
            std::fs::File::open(p)
                .err()
                .map(|e| format!("{}: {e}", p.display()))
        };
        if (self.smtp.is_some() || self.imap.is_some() || self.pop3.is_some())
            && self.upstream_user.is_none()
            && self.accounts.is_empty()
        {
            problem(
                "",
                "upstream_user",
                "upstream_user is required: the upstream login mapped to the account".into(),
            );
        }
        let listeners = [
            self.smtp.as_ref().map(|s| {
                (
                    "smtp",
                    &s.upstream,
                    s.upstream_tls,
                    s.listen,
                    s.listen_implicit_tls,
                    s.upstream_ca.as_deref(),
                    s.upstream_fingerprint.as_deref(),
                )
            }),
            self.imap.as_ref().map(|s| {
                (
                    "imap",
                    &s.upstream,
                    s.upstream_tls,
                    s.listen,
                    s.listen_implicit_tls,
                    s.upstream_ca.as_deref(),
                    s.upstream_fingerprint.as_deref(),
                )
            }),
            self.pop3.as_ref().map(|s| {
                (
                    "pop3",
                    &s.upstream,
                    s.upstream_tls,
                    s.listen,
                    s.listen_implicit_tls,
                    s.upstream_ca.as_deref(),
                    s.upstream_fingerprint.as_deref(),
                )
            }),
        ];
        for (section, upstream, upstream_tls, listen, implicit, ca, pin) in
            listeners.into_iter().flatten()
        {
            if let Some(Err(e)) = pin.map(crate::upstream::parse_pin) {
                problem(section, "upstream_fingerprint", e);
            }
            let host = upstream
                .rsplit_once(':')
                .map(|(h, _)| h)
                .unwrap_or(upstream);
            if upstream_tls == crate::upstream::UpstreamTls::None {
                let loopback = host == "localhost"
                    || host
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|ip| ip.is_loopback());
                if !loopback {
                    problem(
                        section,
                        "upstream_tls",
                        "upstream_tls = \"none\" is allowed only for a loopback upstream".into(),
                    );
                }
            }
            if upstream
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .is_none()
            {
                problem(
                    section,
                    "upstream",
                    format!("upstream {upstream:?} must be host:port"),
                );
            }
            if !listen.ip().is_loopback() && self.tls.is_none() {
                problem(
                    section,
                    "listen",
                    "a listener off loopback needs a [tls] certificate (logins only over TLS)"
                        .into(),
                );
            }
            if implicit.is_some() && self.tls.is_none() {
                problem(
                    section,
                    "listen_implicit_tls",
                    "listen_implicit_tls needs a [tls] certificate".into(),
                );
            }
            if let Some(e) = ca.and_then(readable) {
                problem(section, "upstream_ca", e);
            }
        }
        if let Some(filter) = &self.filter {
            for (key, message) in filter.problems() {
                problem("filter", key, message);
            }
        }
        if let Some(store) = &self.store {
            for (key, message) in store.problems() {
                problem("store", key, message);
            }
            if self.tls.is_none() {
                problem(
                    "store",
                    "listen",
                    "the store needs a [tls] certificate: devices are known by their TLS keys"
                        .into(),
                );
            }
        }
        if let Some(tls) = &self.tls {
            if let Err(e) = crate::tls::acceptor(&tls.cert, &tls.key) {
                problem("tls", "cert", e);
            }
        }
        if let Some(e) = self.policy.https_ca.as_deref().and_then(readable) {
            problem("policy", "https_ca", e);
        }
        if let Some(e) = self.passphrase_file.as_deref().and_then(readable) {
            problem("", "passphrase_file", e);
        }
        if let Some(home) = &self.home {
            if let Err(e) = crate::keys::Account::open(home) {
                problem("", "home", e.to_string());
            }
        }
        for a in &self.accounts {
            if let Err(e) = crate::keys::Account::open(&a.home) {
                problem("account", "home", e.to_string());
            }
        }
        if self.limits.max_line < 512 {
            problem(
                "limits",
                "max_line",
                "max_line must be at least 512 (RFC 5321 §4.5.3.1.4)".into(),
            );
        }
        if self.limits.max_recipients == 0 || self.limits.max_connections == 0 {
            problem("limits", "max_recipients", "limits must be positive".into());
        }
        out
    }

    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError {
            path: path.display().to_string(),
            line: e
                .span()
                .map(|s| text[..s.start.min(text.len())].lines().count().max(1)),
            message: e.message().to_owned(),
        })
    }

    /// The resolver settings this configuration asks for.
    pub fn resolver_settings(&self, home: Option<PathBuf>) -> crate::policy::ResolverSettings {
        let mut s = crate::policy::ResolverSettings {
            dns: self.policy.dns,
            https_ca: self.policy.https_ca.clone(),
            https_port: self.policy.https_port,
            home,
            ..Default::default()
        };
        if let Some(t) = self.policy.timeout_secs {
            s.timeout = Duration::from_secs(t.clamp(1, 120));
        }
        if let Some(t) = self.policy.store_ttl_secs {
            s.store_ttl = Duration::from_secs(t);
        }
        if let Some(t) = self.policy.retry_after_secs {
            s.retry_after = Duration::from_secs(t.min(60));
        }
        s
    }
}

/// The line of `key` in `[section]` ("" for the top level), for error reports.
fn line_of(text: &str, section: &str, key: &str) -> Option<usize> {
    let mut current = String::new();
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if t.starts_with('[') {
            current = t.trim_matches(['[', ']']).trim().to_owned();
            continue;
        }
        let name = t.split('=').next().unwrap_or("").trim();
        if current == section && name == key {
            return Some(i + 1);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_line() {
        let text = "home = \"/x\"\n[policy]\ndns = \"not an address\"\n";
        let e = Config::parse(text, Path::new("c.toml")).unwrap_err();
        assert_eq!(e.line, Some(3), "{e}");
        let e = Config::parse("hoem = 1\n", Path::new("c.toml")).unwrap_err();
        assert!(e.message.contains("hoem"), "{e}");
        let ok = Config::parse("[policy]\ndns = \"127.0.0.1:5353\"\n", Path::new("c")).unwrap();
        assert_eq!(ok.policy.dns, Some("127.0.0.1:5353".parse().unwrap()));
    }

    #[test]
    fn indexer_settings_default_and_follow_the_imap_section() {
        let base = "[imap]\nlisten = \"127.0.0.1:1143\"\nupstream = \"imap.example.com:993\"\nupstream_tls = \"implicit\"\n";
        let c = Config::parse(base, Path::new("c")).unwrap();
        let d = c.imap.as_ref().unwrap().indexer_settings();
        assert!(d.enabled && d.follow_selected);
        assert_eq!(d.mailboxes, ["INBOX", "Sent", "Drafts"]);
        assert_eq!(d.poll, std::time::Duration::from_secs(60));
        let text = format!("{base}indexer = false\nindex_mailboxes = [\"Archive\"]\nindex_selected = false\nindex_poll_secs = 0\n");
        let c = Config::parse(&text, Path::new("c")).unwrap();
        let s = c.imap.as_ref().unwrap().indexer_settings();
        assert!(!s.enabled && !s.follow_selected);
        assert_eq!(s.mailboxes, ["Archive"]);
        assert_eq!(
            s.poll,
            std::time::Duration::from_secs(1),
            "at least a second"
        );
    }

    #[test]
    fn every_problem_is_reported_with_its_line() {
        let text = "upstream_user = \"alice\"\n[smtp]\nlisten = \"0.0.0.0:1587\"\nupstream = \"smtp.example.com:587\"\nupstream_tls = \"none\"\nupstream_ca = \"/nonexistent/ca.pem\"\n";
        let c = Config::parse(text, Path::new("d.toml")).unwrap();
        let problems = c.problems(text, Path::new("d.toml"));
        let lines: Vec<Option<usize>> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![Some(5), Some(3), Some(6)], "{problems:#?}");
    }
}
