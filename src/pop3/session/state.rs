//! The session's protocol state (RFC 1939 §3): AUTHORIZATION until the server accepts a login,
//! then TRANSACTION, then UPDATE once QUIT is answered.
//!
//! The account is decided in exactly one place, [`State::logged_in`], from the server's `+OK`
//! to the one login that was in flight. Only a login as a mapped account's `upstream_user`
//! becomes [`Account::Mapped`]; any other is [`Account::Other`], whose session is relayed byte
//! for byte from then on and never reaches a key, a view or the size book.

use super::super::Pop3Account;
use crate::secret::SecretBytes;
use std::collections::HashMap;
use std::sync::Arc;

/// Where the session stands.
pub(super) enum State {
    /// AUTHORIZATION; `user` is the name of a USER command the server accepted.
    Authorization { user: Option<String> },
    /// A login is in flight (PASS, APOP or an AUTH exchange): nothing but its SASL responses
    /// is read until the server has answered it.
    Authenticating,
    /// TRANSACTION, as a mapped account (other logins leave the core for a byte relay).
    Transaction(Arc<Mapped>),
    /// UPDATE: QUIT was answered, or the session is over.
    Update,
}

/// The login in flight.
pub(super) struct PendingLogin {
    /// Who it names (USER's argument for PASS, APOP's first argument, the SASL identity);
    /// `None` when it cannot be told: the session is then not mapped.
    pub user: Option<String>,
    /// An AUTH exchange: the mechanism and the client's responses, decoded.
    pub sasl: Option<Sasl>,
}

pub(super) struct Sasl {
    pub mechanism: String,
    pub responses: Vec<SecretBytes>,
}

/// Whose session a successful login makes this.
pub(super) enum Account {
    Mapped(Arc<Mapped>),
    Other,
}

/// A mapped login.
pub(super) struct Mapped {
    pub user: String,
    pub account: Arc<Pop3Account>,
}

impl PendingLogin {
    /// The login named: USER's or APOP's name, or the one the SASL exchange authenticated.
    fn name(&self) -> Option<String> {
        match &self.sasl {
            Some(s) => crate::sasl::authenticated_user(&s.mechanism, &s.responses),
            None => self.user.clone(),
        }
    }
}

impl State {
    /// The account a login the server accepted (`ok`) makes this session, or the state to go
    /// back to when it refused.
    pub fn logged_in(
        login: PendingLogin,
        ok: bool,
        accounts: &HashMap<String, Arc<Pop3Account>>,
    ) -> Result<Account, State> {
        if !ok {
            return Err(State::Authorization { user: None });
        }
        Ok(match login.name() {
            Some(user) if !user.is_empty() => match accounts.get(&user) {
                Some(account) => Account::Mapped(Arc::new(Mapped {
                    user,
                    account: account.clone(),
                })),
                None => Account::Other,
            },
            _ => Account::Other,
        })
    }
}
