//! `[filter]`: the MTA sidecar (an after-queue content filter behind Postfix) and its policy
//! service. See `config/sidecar.toml` for a documented example.

use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// `[filter]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Where Postfix's `meshfilter` transport connects: `unix:/path` (or an absolute path) for
    /// a Unix socket, else `host:port` on loopback.
    pub listen: FilterListen,
    /// Group of the Unix socket (default: the process's own), e.g. `postfix`.
    pub socket_group: Option<String>,
    /// Mode of the Unix socket, octal (default `0660`).
    pub socket_mode: Option<String>,
    /// TCP peers allowed to connect (and to send XFORWARD); default 127.0.0.1 and ::1.
    pub peers: Option<Vec<IpAddr>>,
    /// Postfix's reinjection listener, `host:port` (a service with an empty `content_filter`).
    pub reinject: String,
    /// Domains whose mailboxes are local users: their mail is encrypted at rest.
    pub local_domains: Vec<String>,
    /// Local users' public keys, one file per address: `alice@example.com.asc` (OpenPGP) or
    /// `alice@example.com.pem` (S/MIME).
    pub keys_dir: PathBuf,
    /// Postfix's `recipient_delimiter` (default `+`): `alice+tag@` uses alice's key.
    pub recipient_delimiter: Option<String>,
    /// Plaintext that arrives for a local user's fingerprint address: `refuse` (default) or
    /// `encrypt-and-flag`.
    #[serde(default)]
    pub strong_inbound: StrongInbound,
    /// Hide the Subject of mail encrypted at rest (breaks Sieve and server-side search).
    #[serde(default)]
    pub hide_subject: bool,
    /// Virtual aliases are expanded before the filter (`no_address_mappings` only on the
    /// entry), so mail to a list is encrypted per final mailbox (default true).
    pub aliases_expanded: Option<bool>,
    /// The name in the LHLO answer and the reinjection EHLO.
    pub hostname: Option<String>,
    /// The secret of the "encrypted at rest" mark (created 0600 when missing); default
    /// `<home>/filter-mark.key`.
    pub mark_secret_file: Option<PathBuf>,
    /// Postfix's configuration directory (e.g. `/etc/postfix`): `check-config` and `serve`
    /// read it with `postconf` and refuse a reinjection service that would loop.
    pub postfix_config: Option<PathBuf>,
    /// Postfix's policy delegation service for the submission smtpd.
    pub policy_service: Option<PolicyServiceConfig>,
}

/// `[filter.policy_service]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyServiceConfig {
    /// `check_policy_service inet:HOST:PORT` points here (loopback).
    pub listen: SocketAddr,
}

/// Where the filter listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FilterListen {
    Unix(PathBuf),
    Tcp(SocketAddr),
}

impl<'de> Deserialize<'de> for FilterListen {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<FilterListen, D::Error> {
        let text = String::deserialize(d)?;
        FilterListen::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl FilterListen {
    pub fn parse(text: &str) -> Result<FilterListen, String> {
        if let Some(path) = text.strip_prefix("unix:") {
            return FilterListen::parse(path).and_then(|l| match l {
                FilterListen::Unix(p) => Ok(FilterListen::Unix(p)),
                FilterListen::Tcp(_) => Err(format!("{text:?}: a socket path must be absolute")),
            });
        }
        if text.starts_with('/') {
            return Ok(FilterListen::Unix(PathBuf::from(text)));
        }
        text.parse::<SocketAddr>()
            .map(FilterListen::Tcp)
            .map_err(|_| format!("{text:?} is neither unix:/absolute/path nor a host:port address"))
    }
}

/// What becomes of plaintext sent to a local user's fingerprint address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StrongInbound {
    /// `550 5.7.1`: the address promises end-to-end encryption.
    #[default]
    Refuse,
    /// Encrypted at rest and flagged as having arrived in plaintext.
    EncryptAndFlag,
}

impl FilterConfig {
    /// The TCP peers allowed to connect.
    pub fn allowed_peers(&self) -> Vec<IpAddr> {
        self.peers.clone().unwrap_or_else(|| {
            vec![
                IpAddr::from([127, 0, 0, 1]),
                IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
            ]
        })
    }

    /// The Unix socket's mode (default 0660).
    pub fn socket_mode(&self) -> Result<u32, String> {
        match &self.socket_mode {
            None => Ok(0o660),
            Some(m) => u32::from_str_radix(m.trim_start_matches("0o"), 8)
                .ok()
                .filter(|m| *m <= 0o777)
                .ok_or_else(|| format!("socket_mode {m:?} is not an octal mode such as \"0660\"")),
        }
    }

    pub fn delimiter(&self) -> Option<char> {
        match &self.recipient_delimiter {
            None => Some('+'),
            Some(d) => d.chars().next(),
        }
    }

    /// Problems a parser cannot see, as (key, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let FilterListen::Tcp(addr) = &self.listen {
            if !addr.ip().is_loopback() {
                out.push((
                    "listen",
                    "the filter listens on loopback or a Unix socket only (it trusts XFORWARD from its peer)".into(),
                ));
            }
        }
        if let Err(e) = self.socket_mode() {
            out.push(("socket_mode", e));
        }
        if self
            .reinject
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok())
            .is_none()
        {
            out.push((
                "reinject",
                format!("reinject {:?} must be host:port", self.reinject),
            ));
        }
        if self.local_domains.is_empty() {
            out.push(("local_domains", "name at least one local domain".into()));
        }
        if let Err(e) = std::fs::read_dir(&self.keys_dir) {
            out.push(("keys_dir", format!("{}: {e}", self.keys_dir.display())));
        }
        if let Some(dir) = &self.postfix_config {
            for p in crate::filter::postfix_check::problems(
                dir,
                &self.reinject,
                self.aliases_expanded.unwrap_or(true),
            ) {
                out.push(("postfix_config", p));
            }
        }
        if let Some(p) = &self.policy_service {
            if !p.listen.ip().is_loopback() {
                out.push((
                    "listen",
                    "the policy service listens on loopback only".into(),
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_forms() {
        assert_eq!(
            FilterListen::parse("unix:/run/meshmail/filter").unwrap(),
            FilterListen::Unix("/run/meshmail/filter".into())
        );
        assert_eq!(
            FilterListen::parse("/run/x").unwrap(),
            FilterListen::Unix("/run/x".into())
        );
        assert_eq!(
            FilterListen::parse("127.0.0.1:10025").unwrap(),
            FilterListen::Tcp("127.0.0.1:10025".parse().unwrap())
        );
        assert!(FilterListen::parse("unix:relative").is_err());
        assert!(FilterListen::parse("localhost").is_err());
    }

    #[test]
    fn the_documented_example_is_a_valid_configuration() {
        let text = include_str!("../../config/sidecar.toml");
        let c = crate::config::Config::parse(text, std::path::Path::new("sidecar.toml")).unwrap();
        let f = c.filter.expect("[filter]");
        assert_eq!(
            f.listen,
            FilterListen::Unix("/var/spool/postfix/private/meshfilter".into())
        );
        assert_eq!(f.socket_mode().unwrap(), 0o660);
        assert_eq!(
            f.policy_service.map(|p| p.listen.port()),
            Some(10040),
            "as config/postfix-master.cf asks"
        );
    }

    #[test]
    fn socket_mode_is_octal() {
        let mut c: FilterConfig = toml::from_str(
            "listen = \"127.0.0.1:1\"\nreinject = \"127.0.0.1:2\"\nlocal_domains = [\"x\"]\nkeys_dir = \"/\"\n",
        )
        .unwrap();
        assert_eq!(c.socket_mode().unwrap(), 0o660);
        assert_eq!(c.strong_inbound, StrongInbound::Refuse);
        assert_eq!(c.delimiter(), Some('+'));
        c.socket_mode = Some("0600".into());
        assert_eq!(c.socket_mode().unwrap(), 0o600);
        c.socket_mode = Some("999".into());
        assert!(c.socket_mode().is_err());
    }
}
