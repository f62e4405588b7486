//! `[store]`: the store role, an IMAP proxy in front of the mail store that holds the store
//! shares of a split account's devices and answers their `X-MESH-RECRYPT` requests. It never
//! holds an account's secret key.

use serde::Deserialize;
use std::net::SocketAddr;
use std::path::PathBuf;

/// `[store]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// STARTTLS listener (devices use STARTTLS or the implicit-TLS listener; a device's
    /// certificate is only seen over TLS).
    pub listen: SocketAddr,
    /// Implicit-TLS listener, e.g. `0.0.0.0:1993`.
    pub listen_implicit_tls: Option<SocketAddr>,
    /// The mail store's IMAP server (Dovecot), `host:port`.
    pub upstream: String,
    pub upstream_tls: crate::upstream::UpstreamTls,
    pub upstream_ca: Option<PathBuf>,
    pub upstream_fingerprint: Option<String>,
    /// The shares, sealed at rest (may be backed up: they open only with the state file).
    pub shares_dir: PathBuf,
    /// The store key, the at-rest key and the tombstones: keep it out of backups (e.g. a
    /// systemd credential). Default: `shares_dir/../store-state.json`.
    pub state_file: Option<PathBuf>,
    /// The name of a systemd credential (`LoadCredentialEncrypted=NAME:…` in the unit; read
    /// from `$CREDENTIALS_DIRECTORY/NAME`) that seals the state file: a copy of the file,
    /// in a backup or anywhere else, then opens only where that credential does (with
    /// `systemd-creds`, on this host).
    pub state_key_credential: Option<String>,
    /// The per-device audit log (mailbox, UID, time). Default: `shares_dir/../audit`.
    pub audit_dir: Option<PathBuf>,
    /// Partials one device may ask for in an hour before an ALARM is logged (default 2000).
    pub alarm_per_hour: Option<u32>,
    /// What devices connect to, as `device add` writes it into a reply (default: the
    /// implicit-TLS listener, else `listen`).
    pub public_address: Option<String>,
    /// Dovecot's `auth_master_user_separator` (default `*`): a login naming a master user is
    /// refused on a device's connection.
    pub master_user_separator: Option<String>,
    /// The accounts whose devices this store serves.
    #[serde(rename = "account", default)]
    pub accounts: Vec<StoreAccountConfig>,
}

/// `[[store.account]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreAccountConfig {
    /// The mail store login of the account.
    pub upstream_user: String,
    /// A directory with the account's public files (`account.json`, `openpgp.asc`), copied
    /// from the admin device. The store refuses a directory holding a secret key.
    pub public_home: PathBuf,
}

impl StoreConfig {
    pub fn state_file(&self) -> PathBuf {
        self.state_file.clone().unwrap_or_else(|| {
            self.shares_dir
                .parent()
                .unwrap_or(&self.shares_dir)
                .join("store-state.json")
        })
    }

    /// The key that seals the state file, when a credential is named: SHA-256 of the
    /// credential's bytes (so any length of random bytes will do).
    pub fn state_key(&self) -> Result<Option<crate::secret::Secret<[u8; 32]>>, String> {
        let Some(name) = &self.state_key_credential else {
            return Ok(None);
        };
        if name.is_empty() || name.contains('/') || name.starts_with('.') {
            return Err(format!(
                "state_key_credential {name:?}: a credential name, not a path"
            ));
        }
        let dir = std::env::var_os("CREDENTIALS_DIRECTORY").ok_or_else(|| {
            format!(
                "state_key_credential {name:?}: no $CREDENTIALS_DIRECTORY (run under systemd \
                 with LoadCredentialEncrypted={name}:…)"
            )
        })?;
        let path = std::path::Path::new(&dir).join(name);
        let bytes = zeroize::Zeroizing::new(
            std::fs::read(&path).map_err(|e| format!("{}: {e}", path.display()))?,
        );
        if bytes.len() < 32 {
            return Err(format!(
                "{}: a state key credential holds at least 32 random bytes",
                path.display()
            ));
        }
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &bytes);
        let mut key = [0u8; 32];
        key.copy_from_slice(digest.as_ref());
        Ok(Some(crate::secret::Secret::new(key)))
    }

    pub fn audit_dir(&self) -> PathBuf {
        self.audit_dir.clone().unwrap_or_else(|| {
            self.shares_dir
                .parent()
                .unwrap_or(&self.shares_dir)
                .join("audit")
        })
    }

    pub fn public_address(&self) -> String {
        self.public_address
            .clone()
            .unwrap_or_else(|| self.listen_implicit_tls.unwrap_or(self.listen).to_string())
    }

    /// Problems a parser cannot see.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.accounts.is_empty() {
            out.push((
                "account",
                "[[store.account]]: the store serves no account".into(),
            ));
        }
        for a in &self.accounts {
            for secret in [
                crate::keys::account::SECRETS_FILE,
                crate::keys::device::DEVICE_SECRETS_FILE,
            ] {
                if a.public_home.join(secret).exists() {
                    out.push((
                        "public_home",
                        format!(
                            "{}: holds {secret}; the store must never run beside an account's \
                             secret key (copy account.json and openpgp.asc only)",
                            a.public_home.display()
                        ),
                    ));
                }
            }
            if let Err(e) = crate::keys::Account::open(&a.public_home) {
                out.push(("public_home", e.to_string()));
            }
        }
        if self.state_file().starts_with(&self.shares_dir) {
            out.push((
                "state_file",
                "the state file must not be inside shares_dir (it is kept out of backups)".into(),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_examples_are_valid_configurations() {
        let text = include_str!("../../config/store.toml");
        let c = crate::config::Config::parse(text, std::path::Path::new("store.toml")).unwrap();
        let s = c.store.expect("[store]");
        assert_eq!(s.accounts.len(), 1);
        assert_eq!(s.public_address(), "mail.example.com:1993");
        assert!(!s.state_file().starts_with(&s.shares_dir));
        assert!(c.tls.is_some());
        let text = include_str!("../../config/device-split.toml");
        let c =
            crate::config::Config::parse(text, std::path::Path::new("device-split.toml")).unwrap();
        assert_eq!(
            c.imap.expect("[imap]").upstream_tls,
            crate::upstream::UpstreamTls::Implicit
        );
    }

    #[test]
    fn defaults_sit_beside_the_shares_and_a_state_file_inside_them_is_a_problem() {
        let mut c: StoreConfig = toml::from_str(
            "listen = \"127.0.0.1:1\"\nupstream = \"127.0.0.1:2\"\nupstream_tls = \"none\"\nshares_dir = \"/srv/store/shares\"\n",
        )
        .unwrap();
        assert_eq!(c.state_file(), PathBuf::from("/srv/store/store-state.json"));
        assert_eq!(c.audit_dir(), PathBuf::from("/srv/store/audit"));
        assert_eq!(c.public_address(), "127.0.0.1:1");
        let problems = c.problems();
        assert!(
            problems.iter().any(|(k, _)| *k == "account"),
            "{problems:?}"
        );
        c.state_file = Some("/srv/store/shares/state.json".into());
        assert!(c.problems().iter().any(|(k, _)| *k == "state_file"));
    }
}
