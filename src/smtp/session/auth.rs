//! AUTH, relayed on the session's own upstream connection with the client's credentials: each
//! line of the exchange goes upstream and each upstream reply comes back unchanged, so the
//! client sees the upstream's exact answer (235, 535, 454). meshmail only reads the login
//! name, to know whether the session is mapped to an account. Credentials are never logged.

use super::core::{Action, Core};
use super::relay::Relay;
use super::{Login, Session};
use crate::smtp::reply::Reply;
use data_encoding::BASE64;

/// Steps of an exchange before it is cut off (LOGIN needs two).
const MAX_STEPS: usize = 6;

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
    /// Relays the AUTH exchange for `mechanism` (the core checked that it may start). `None`
    /// when it ended here (the reply is sent); otherwise the action that ends it.
    pub(super) async fn auth(
        &mut self,
        mechanism: &'static str,
        initial: String,
    ) -> Option<Action> {
        let mut user: Option<String> = None;
        let mut step = 0;
        // smtp-proto gives "" when there is no initial response; "=" means an empty one.
        let mut line = format!("AUTH {mechanism}");
        if !initial.is_empty() {
            match identity(mechanism, 0, &initial) {
                Identity::ForeignAuthzid => return Some(self.core.error(authzid_refusal())),
                Identity::User(u) => user = Some(u),
                Identity::Unknown => {}
            }
            step = 1;
            line.push(' ');
            line.push_str(&initial);
        }
        loop {
            // No transaction is open (the core refuses AUTH inside one).
            let Relay::Ready(up) = &mut self.upstream else {
                return Some(Core::upstream_gone());
            };
            let reply = match up.auth_line(&line).await {
                Ok(r) => r,
                Err(_) => {
                    self.upstream = Relay::Gone;
                    return Some(Core::upstream_gone());
                }
            };
            if reply.code != 334 || step >= MAX_STEPS {
                if reply.code != 235 {
                    return Some(Action::Reply(reply));
                }
                let user = user.unwrap_or_default();
                let account = self.ctx.accounts.get(&user).cloned();
                tracing::info!(peer = %self.peer, user = %user, mapped = account.is_some(), "authenticated");
                self.core.authenticated(Some(Login { user, account }));
                if self.send(reply).await.is_err() {
                    return Some(Action::Close(None));
                }
                // Reports this login left in the spool go out now.
                self.flush_reports().await;
                return None;
            }
            if self.send(reply).await.is_err() {
                return Some(Action::Close(None));
            }
            let response = match self.conn.read_line(self.ctx.limits.max_line).await {
                Ok(l) => String::from_utf8_lossy(&l)
                    .trim_end_matches(['\r', '\n'])
                    .to_owned(),
                Err(_) => return Some(Action::Close(None)),
            };
            if step == 0 || (mechanism == "LOGIN" && user.is_none()) {
                match identity(mechanism, 0, &response) {
                    Identity::ForeignAuthzid => {
                        // Cancel upstream, then refuse.
                        if let Relay::Ready(up) = &mut self.upstream {
                            let _ = up.auth_line("*").await;
                        }
                        return Some(self.core.error(authzid_refusal()));
                    }
                    Identity::User(u) if user.is_none() => user = Some(u),
                    _ => {}
                }
            }
            step += 1;
            line = response;
        }
    }
}

fn authzid_refusal() -> Reply {
    Reply::new(
        535,
        "5.7.8",
        "meshmail does not relay PLAIN with an authorization identity other than the login",
    )
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
