//! AUTH, relayed on the session's own upstream connection with the client's credentials: each
//! line of the exchange goes upstream and each upstream reply comes back unchanged, so the
//! client sees the upstream's exact answer (235, 535, 454). meshmail only reads the login
//! name, to know whether the session is mapped to an account. Credentials are never logged.

use super::relay::Relay;
use super::{Login, Next, Session};
use crate::smtp::reply::Reply;
use data_encoding::BASE64;

/// Mechanisms meshmail relays (those whose login name it can read).
pub const RELAYED: [&str; 4] = ["PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"];

/// Steps of an exchange before it is cut off (LOGIN needs two).
const MAX_STEPS: usize = 6;

fn mechanism_name(flag: u64) -> Option<&'static str> {
    match flag {
        smtp_proto::AUTH_PLAIN => Some("PLAIN"),
        smtp_proto::AUTH_LOGIN => Some("LOGIN"),
        smtp_proto::AUTH_XOAUTH2 => Some("XOAUTH2"),
        smtp_proto::AUTH_OAUTHBEARER => Some("OAUTHBEARER"),
        _ => None,
    }
}

/// What a client's response says about the login name, for a mechanism.
enum Identity {
    User(String),
    /// PLAIN with an authorization identity other than the login: refused (lettre-style
    /// credentials have no authzid, and acting for another user is not meshmail's to allow).
    ForeignAuthzid,
    Unknown,
}

fn identity(mechanism: &str, step: usize, response: &str) -> Identity {
    let Ok(bytes) = BASE64.decode(response.trim().as_bytes()) else {
        return Identity::Unknown;
    };
    let text = String::from_utf8_lossy(&bytes).into_owned();
    match (mechanism, step) {
        ("PLAIN", 0) => {
            let mut parts = text.split('\0');
            let (authzid, authcid) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            if !authzid.is_empty() && authzid != authcid {
                Identity::ForeignAuthzid
            } else {
                Identity::User(authcid.to_owned())
            }
        }
        ("LOGIN", 0) => Identity::User(text),
        ("XOAUTH2", 0) => text
            .split('\x01')
            .find_map(|f| f.strip_prefix("user="))
            .map(|u| Identity::User(u.to_owned()))
            .unwrap_or(Identity::Unknown),
        ("OAUTHBEARER", 0) => text
            .split(',')
            .find_map(|f| f.strip_prefix("a="))
            .map(|u| Identity::User(u.replace("=2C", ",").replace("=3D", "=")))
            .unwrap_or(Identity::Unknown),
        _ => Identity::Unknown,
    }
}

impl Session {
    pub(super) async fn auth(&mut self, flag: u64, initial: String) -> Next {
        if !self.greeted {
            return self
                .reply_error(Reply::new(503, "5.5.1", "Send EHLO first"))
                .await;
        }
        if self.login.is_some() {
            return self
                .reply_error(Reply::new(503, "5.5.1", "Already authenticated"))
                .await;
        }
        if self.tx.is_some() {
            return self
                .reply_error(Reply::new(
                    503,
                    "5.5.1",
                    "AUTH not allowed during a mail transaction",
                ))
                .await;
        }
        if !self.conn.tls && !self.loopback {
            return self
                .reply_error(Reply::new(
                    538,
                    "5.7.11",
                    "Encryption required: use STARTTLS before AUTH",
                ))
                .await;
        }
        let Some(mechanism) =
            mechanism_name(flag).filter(|m| self.offered_mechanisms().iter().any(|o| o == m))
        else {
            return self
                .reply_error(Reply::new(
                    504,
                    "5.5.4",
                    "Unrecognized authentication mechanism",
                ))
                .await;
        };
        let mut user: Option<String> = None;
        let mut step = 0;
        // smtp-proto gives "" when there is no initial response; "=" means an empty one.
        let mut line = format!("AUTH {mechanism}");
        if !initial.is_empty() {
            match identity(mechanism, 0, &initial) {
                Identity::ForeignAuthzid => return self.refuse_authzid().await,
                Identity::User(u) => user = Some(u),
                Identity::Unknown => {}
            }
            step = 1;
            line.push(' ');
            line.push_str(&initial);
        }
        loop {
            // No transaction is open (AUTH inside one was refused above).
            let Relay::Ready(up) = &mut self.upstream else {
                return self.upstream_gone().await;
            };
            let reply = match up.auth_line(&line).await {
                Ok(r) => r,
                Err(_) => {
                    self.upstream = Relay::Gone;
                    return self.upstream_gone().await;
                }
            };
            if reply.code != 334 || step >= MAX_STEPS {
                if reply.code == 235 {
                    let user = user.unwrap_or_default();
                    let account = self.ctx.accounts.get(&user).cloned();
                    tracing::info!(peer = %self.peer, user = %user, mapped = account.is_some(), "authenticated");
                    self.login = Some(Login { user, account });
                    let next = self.reply(reply).await;
                    // Reports this login left in the spool go out now.
                    self.flush_reports().await;
                    return next;
                }
                return self.reply(reply).await;
            }
            if self.send(reply).await.is_err() {
                return Next::Close;
            }
            let response = match self.conn.read_line(self.ctx.limits.max_line).await {
                Ok(l) => String::from_utf8_lossy(&l)
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
                Err(_) => return Next::Close,
            };
            if step == 0 || (mechanism == "LOGIN" && user.is_none()) {
                match identity(mechanism, 0, &response) {
                    Identity::ForeignAuthzid => {
                        // Cancel upstream, then refuse.
                        if let Relay::Ready(up) = &mut self.upstream {
                            let _ = up.auth_line("*").await;
                        }
                        return self.refuse_authzid().await;
                    }
                    Identity::User(u) if user.is_none() => user = Some(u),
                    _ => {}
                }
            }
            step += 1;
            line = response;
        }
    }

    async fn refuse_authzid(&mut self) -> Next {
        self.reply_error(Reply::new(
            535,
            "5.7.8",
            "meshmail does not relay PLAIN with an authorization identity other than the login",
        ))
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        BASE64.encode(s.as_bytes())
    }

    #[test]
    fn login_names() {
        assert!(
            matches!(identity("PLAIN", 0, &b64("\0alice\0secret")), Identity::User(u) if u == "alice")
        );
        assert!(
            matches!(identity("PLAIN", 0, &b64("alice\0alice\0secret")), Identity::User(u) if u == "alice")
        );
        assert!(matches!(
            identity("PLAIN", 0, &b64("bob\0alice\0secret")),
            Identity::ForeignAuthzid
        ));
        assert!(matches!(identity("LOGIN", 0, &b64("alice")), Identity::User(u) if u == "alice"));
        assert!(matches!(
            identity("XOAUTH2", 0, &b64("user=alice@x\x01auth=Bearer t\x01\x01")),
            Identity::User(u) if u == "alice@x"
        ));
        assert!(matches!(
            identity("OAUTHBEARER", 0, &b64("n,a=alice@x,\x01auth=Bearer t\x01\x01")),
            Identity::User(u) if u == "alice@x"
        ));
        assert!(matches!(
            identity("PLAIN", 0, "not base64!"),
            Identity::Unknown
        ));
    }
}
