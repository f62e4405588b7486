//! The session's protocol state (RFC 9051 §3), as the server's answers made it.
//!
//! The account is decided in exactly one place, [`State::logged_in`], from the server's tagged
//! `OK` to the one LOGIN or AUTHENTICATE that was in flight, and is carried unchanged through
//! every later state: nothing else in the session can make a session mapped. A session whose
//! account is [`Account::Other`] has no keys, cache or index to reach.

use super::super::owned::Credentials;
use super::super::ImapAccount;
use std::sync::Arc;

/// Where the session stands.
pub(super) enum State {
    NotAuthenticated,
    /// A LOGIN or AUTHENTICATE is in flight (nothing else is sent until it is answered).
    Authenticating(PendingLogin),
    Authenticated(Account),
    Selected(Account, Mailbox),
    /// The client said LOGOUT, or the server said BYE.
    Logout,
}

/// The login in flight: who it names, and how meshmail could log in again as them.
pub(super) struct PendingLogin {
    /// meshmail's tag for the command upstream.
    pub tag: String,
    pub user: String,
    pub credentials: Option<Arc<Credentials>>,
    /// An AUTHENTICATE exchange: the client may send one response per server challenge.
    pub sasl: Option<Sasl>,
}

/// An AUTHENTICATE exchange in progress.
pub(super) struct Sasl {
    pub mechanism: String,
    pub responses: Vec<crate::secret::SecretBytes>,
    /// The server sent a challenge the client has not answered yet.
    pub challenged: bool,
    /// meshmail cancelled the exchange (a device's connection at the store naming someone
    /// else): the client gets this instead of the server's answer.
    pub refused: Option<&'static str>,
}

/// Whose session this is.
#[derive(Clone)]
pub(super) enum Account {
    /// A login the configuration maps to a key store.
    Mapped(Arc<Mapped>),
    /// Any other login: relayed, never given a key, a view, the cache or the index.
    Other,
    /// At the store: an enrolled device logged in as its account (relayed like `Other`, and
    /// its FETCH responses carry the partials it asks for).
    Device(Arc<crate::store::role::DeviceBinding>),
}

/// A mapped login.
pub(super) struct Mapped {
    pub user: String,
    pub account: Arc<ImapAccount>,
    /// How meshmail's own connection logs in (`None`: a SASL mechanism it cannot replay).
    pub credentials: Option<Arc<Credentials>>,
}

/// The selected mailbox, from the server's answer to SELECT or EXAMINE.
#[derive(Clone, Debug)]
pub(super) struct Mailbox {
    pub name: String,
    /// From the `[UIDVALIDITY n]` response code the server sent during the SELECT.
    pub uidvalidity: Option<u32>,
    /// EXAMINE, or `[READ-ONLY]` in the server's tagged OK: meshmail sets no flag.
    pub read_only: bool,
}

impl State {
    /// The account, once authenticated.
    pub fn account(&self) -> Option<&Account> {
        match self {
            State::Authenticated(a) | State::Selected(a, _) => Some(a),
            _ => None,
        }
    }

    /// The mapped account, once authenticated as one.
    pub fn mapped(&self) -> Option<&Arc<Mapped>> {
        match self.account()? {
            Account::Mapped(m) => Some(m),
            Account::Other | Account::Device(_) => None,
        }
    }

    /// The device a store session is bound to.
    pub fn device(&self) -> Option<&Arc<crate::store::role::DeviceBinding>> {
        match self.account()? {
            Account::Device(d) => Some(d),
            _ => None,
        }
    }

    /// The selected mailbox's name, in any session.
    pub fn selected_name(&self) -> Option<&str> {
        match self {
            State::Selected(_, m) => Some(&m.name),
            _ => None,
        }
    }

    /// The mapped account and its selected mailbox: the only state in which views exist.
    pub fn mapped_selected(&self) -> Option<(&Arc<Mapped>, &Mailbox)> {
        match self {
            State::Selected(Account::Mapped(m), mailbox) => Some((m, mailbox)),
            _ => None,
        }
    }

    pub fn is_authenticated(&self) -> bool {
        self.account().is_some()
    }

    /// The state after the server answered the login in flight: the account is bound here
    /// and nowhere else.
    pub fn logged_in(
        login: PendingLogin,
        ok: bool,
        accounts: &std::collections::HashMap<String, Arc<ImapAccount>>,
        store: Option<&crate::store::role::StoreRole>,
        client_key: Option<&str>,
    ) -> State {
        if !ok {
            return State::NotAuthenticated;
        }
        if let Some(store) = store {
            // At the store nothing is mapped: a login is a device's or is relayed.
            return State::Authenticated(match store.bind(&login.user, client_key) {
                Some(device) if !login.user.is_empty() => Account::Device(device),
                _ => Account::Other,
            });
        }
        let account = match accounts.get(&login.user) {
            Some(account) if !login.user.is_empty() => Account::Mapped(Arc::new(Mapped {
                user: login.user,
                account: account.clone(),
                credentials: login.credentials,
            })),
            _ => Account::Other,
        };
        State::Authenticated(account)
    }

    /// The state once the selected mailbox is left (CLOSE, UNSELECT, a new SELECT).
    pub fn deselected(self) -> State {
        match self {
            State::Selected(account, _) => State::Authenticated(account),
            other => other,
        }
    }
}

/// The mailbox a successful RENAME of `from` to `to` makes of `selected`: the same one under
/// its new name (a child of `from` moves with it).
pub(super) fn renamed(selected: &str, from: &str, to: &str) -> Option<String> {
    if selected == from {
        return Some(to.to_owned());
    }
    let rest = selected.strip_prefix(from)?;
    let separator = rest.chars().next()?;
    (separator == '/' || separator == '.').then(|| format!("{to}{rest}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rename_moves_the_selected_mailbox_and_its_children_only() {
        assert_eq!(renamed("Work", "Work", "Old").as_deref(), Some("Old"));
        assert_eq!(renamed("Work/A", "Work", "Old").as_deref(), Some("Old/A"));
        assert_eq!(renamed("Workshop", "Work", "Old"), None);
        assert_eq!(renamed("INBOX", "Work", "Old"), None);
    }
}
