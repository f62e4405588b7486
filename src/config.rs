//! The TOML configuration (`meshmail serve --config FILE`, `meshmail check-config FILE`).
//! Keys named in the issues are kept as they are, so scripts can rely on them; see
//! `config/device.toml` for a documented example.

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
    #[serde(default)]
    pub policy: PolicyConfig,
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
    /// Reads and checks a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            path: path.display().to_string(),
            line: None,
            message: e.to_string(),
        })?;
        Config::parse(&text, path)
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
        s
    }
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
}
