//! `meshmail thunderbird --profile DIR`: the account prefs of a new Thunderbird profile, so that
//! set-up is one command. The incoming (IMAP, or POP3 with `--pop3`) and outgoing (SMTP)
//! servers are meshmail's
//! listeners on localhost; the user name is the provider login (`upstream_user`); the address is
//! the account's. Passwords are not written (Thunderbird asks once and keeps them in its own
//! login store).
//!
//! With TLS, meshmail's localhost certificate is accepted through the profile's
//! `cert_override.txt`: no CA is installed anywhere.

use crate::config::Config;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::Path;

/// What the profile is made from.
pub struct ProfileSettings {
    pub name: String,
    pub address: String,
    pub user: String,
    pub imap: Option<SocketAddr>,
    /// Fetch over POP3 from here instead of IMAP.
    pub pop3: Option<SocketAddr>,
    pub smtp: Option<SocketAddr>,
    /// STARTTLS to meshmail (with its certificate accepted in the profile), else plaintext
    /// (loopback only).
    pub starttls: bool,
    /// Keep downloaded (decrypted) messages on disk for offline use.
    pub offline: bool,
}

impl ProfileSettings {
    pub fn from_config(
        config: &Config,
        address: &str,
        starttls: bool,
        offline: bool,
        pop3: bool,
    ) -> ProfileSettings {
        let pop3 = if pop3 {
            config.pop3.as_ref().map(|p| p.listen)
        } else {
            None
        };
        ProfileSettings {
            name: address.split('@').next().unwrap_or(address).to_owned(),
            address: address.to_owned(),
            user: config.upstream_user.clone().unwrap_or_default(),
            imap: config
                .imap
                .as_ref()
                .map(|i| i.listen)
                .filter(|_| pop3.is_none()),
            pop3,
            smtp: config.smtp.as_ref().map(|s| s.listen),
            starttls,
            offline,
        }
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The prefs (`user.js`).
pub fn user_js(s: &ProfileSettings) -> String {
    let mut out = String::from(
        "// Written by `meshmail thunderbird`: Thunderbird through meshmail on localhost.\n",
    );
    let mut pref = |k: &str, v: String| {
        let _ = writeln!(out, "user_pref({}, {v});", quote(k));
    };
    let security = if s.starttls { "2" } else { "0" };
    pref("mail.accountmanager.accounts", quote("account1,account2"));
    pref("mail.accountmanager.defaultaccount", quote("account1"));
    pref("mail.accountmanager.localfoldersserver", quote("server2"));
    pref("mail.account.account1.server", quote("server1"));
    pref("mail.account.account1.identities", quote("id1"));
    pref("mail.account.account2.server", quote("server2"));
    // The incoming server: IMAP, or POP3 with `--pop3`.
    let incoming = match (s.imap, s.pop3) {
        (_, Some(pop3)) => Some(("pop3", pop3, "Mail")),
        (Some(imap), None) => Some(("imap", imap, "ImapMail")),
        (None, None) => None,
    };
    if let Some((kind, addr, dir)) = incoming {
        let host = addr.ip().to_string();
        pref("mail.server.server1.type", quote(kind));
        pref("mail.server.server1.hostname", quote(&host));
        pref("mail.server.server1.port", addr.port().to_string());
        pref("mail.server.server1.userName", quote(&s.user));
        pref(
            "mail.server.server1.name",
            quote(&format!("{} (meshmail)", s.address)),
        );
        pref("mail.server.server1.socketType", security.into());
        pref("mail.server.server1.authMethod", "3".into());
        pref(
            "mail.server.server1.directory-rel",
            quote(&format!("[ProfD]{dir}/{host}")),
        );
        if kind == "imap" {
            // Decrypted messages stay on this disk for offline use only when asked for.
            pref(
                "mail.server.server1.offline_download",
                s.offline.to_string(),
            );
            let folder = |f: &str| format!("imap://{}@{host}/{f}", s.user);
            pref("mail.identity.id1.fcc_folder", quote(&folder("Sent")));
            pref("mail.identity.id1.draft_folder", quote(&folder("Drafts")));
        } else {
            // The server keeps its (encrypted) copy: another device, the IMAP view or a rekey
            // still finds the message after Thunderbird downloaded it.
            pref("mail.server.server1.leave_on_server", "true".into());
        }
    }
    pref("mail.server.server2.type", quote("none"));
    pref("mail.server.server2.hostname", quote("Local Folders"));
    pref("mail.server.server2.userName", quote("nobody"));
    pref(
        "mail.server.server2.directory-rel",
        quote("[ProfD]Mail/Local Folders"),
    );
    pref("mail.identity.id1.fullName", quote(&s.name));
    pref("mail.identity.id1.useremail", quote(&s.address));
    pref("mail.identity.id1.valid", "true".into());
    pref("mail.identity.id1.compose_html", "false".into());
    if let Some(smtp) = s.smtp {
        pref("mail.identity.id1.smtpServer", quote("smtp1"));
        pref("mail.smtpservers", quote("smtp1"));
        pref("mail.smtp.defaultserver", quote("smtp1"));
        pref("mail.smtpserver.smtp1.type", quote("smtp"));
        pref(
            "mail.smtpserver.smtp1.hostname",
            quote(&smtp.ip().to_string()),
        );
        pref("mail.smtpserver.smtp1.port", smtp.port().to_string());
        pref("mail.smtpserver.smtp1.try_ssl", security.into());
        pref("mail.smtpserver.smtp1.authMethod", "3".into());
        pref("mail.smtpserver.smtp1.username", quote(&s.user));
    }
    out
}

/// A `cert_override.txt` line accepting meshmail's certificate (PEM) on `addr`.
pub fn cert_override(cert_pem: &str, addrs: &[SocketAddr]) -> Result<String, String> {
    let der = rustls_pemfile::certs(&mut cert_pem.as_bytes())
        .next()
        .ok_or("no certificate in the PEM file")?
        .map_err(|e| e.to_string())?;
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der.as_ref());
    let fingerprint: Vec<String> = digest.as_ref().iter().map(|b| format!("{b:02X}")).collect();
    let mut out = String::from(
        "# PSM Certificate Override Settings file\n# This is a generated file!  Do not edit.\n",
    );
    for a in addrs {
        let _ = writeln!(
            out,
            "{}:{}:\tOID.2.16.840.1.101.3.4.2.1\t{}\t",
            a.ip(),
            a.port(),
            fingerprint.join(":")
        );
    }
    Ok(out)
}

/// Writes the profile files into `dir` (created if missing; existing prefs are not touched).
pub fn write_profile(
    dir: &Path,
    settings: &ProfileSettings,
    cert_pem: Option<&str>,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let prefs = dir.join("user.js");
    if prefs.exists() {
        return Err(format!(
            "{} exists: not overwriting a profile's prefs",
            prefs.display()
        ));
    }
    std::fs::write(&prefs, user_js(settings)).map_err(|e| format!("{}: {e}", prefs.display()))?;
    if let Some(pem) = cert_pem {
        let addrs: Vec<SocketAddr> = settings
            .imap
            .iter()
            .chain(settings.pop3.iter())
            .chain(settings.smtp.iter())
            .copied()
            .collect();
        let text = cert_override(pem, &addrs)?;
        let path = dir.join("cert_override.txt");
        std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefs_name_meshmails_listeners_and_the_offline_choice() {
        let s = ProfileSettings {
            name: "alice".into(),
            address: "alice@example.test".into(),
            user: "alice".into(),
            imap: "127.0.0.1:1143".parse().ok(),
            pop3: None,
            smtp: "127.0.0.1:1587".parse().ok(),
            starttls: false,
            offline: false,
        };
        let js = user_js(&s);
        assert!(js.contains("user_pref(\"mail.server.server1.port\", 1143);"));
        assert!(js.contains("user_pref(\"mail.smtpserver.smtp1.port\", 1587);"));
        assert!(js.contains("user_pref(\"mail.server.server1.offline_download\", false);"));
        assert!(js.contains("user_pref(\"mail.server.server1.socketType\", 0);"));
        assert!(js.contains("imap://alice@127.0.0.1/Sent"));
        assert!(!js.contains("pop3"));
    }

    #[test]
    fn a_pop3_profile_fetches_from_meshmails_pop3_listener_and_leaves_mail_on_the_server() {
        let s = ProfileSettings {
            name: "alice".into(),
            address: "alice@example.test".into(),
            user: "alice".into(),
            imap: None,
            pop3: "127.0.0.1:1110".parse().ok(),
            smtp: "127.0.0.1:1587".parse().ok(),
            starttls: true,
            offline: false,
        };
        let js = user_js(&s);
        assert!(js.contains("user_pref(\"mail.server.server1.type\", \"pop3\");"));
        assert!(js.contains("user_pref(\"mail.server.server1.port\", 1110);"));
        assert!(js.contains("user_pref(\"mail.server.server1.socketType\", 2);"));
        assert!(js.contains("user_pref(\"mail.server.server1.leave_on_server\", true);"));
        assert!(!js.contains("imap"));
    }
}
