//! Commands from the client: each goes upstream under meshmail's own tag. Most are relayed
//! fragment by fragment; those meshmail must understand are read whole and parsed by
//! imap-codec (login, STARTTLS, selection, ENABLE, RENAME, and a mapped session's FETCH,
//! SEARCH and APPEND).
//!
//! Fail closed for secrets: a mapped session's APPEND that meshmail cannot parse or encrypt is
//! refused, never relayed. Fail open for the rest: a command meshmail only watches and cannot
//! parse is relayed for the server to judge, unless it could change whose session this is.

use super::core::{ActiveFetch, Core, Mode, Out, SealJob, Sealing, UpItem};
use super::state::{Mailbox, PendingLogin, Sasl, State};
use super::tags::{self, Kind};
use crate::imap::caps::{ENABLE_ALLOWED, RELAYED_MECHANISMS};
use crate::imap::fetch;
use crate::imap::owned::Credentials;
use crate::secret::{Secret, SecretString};
use imap_codec::decode::Decoder;
use imap_codec::encode::{Encoder, Fragment};
use imap_codec::fragmentizer::FragmentInfo;
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::LiteralMode;
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::mailbox::Mailbox as CodecMailbox;
use imap_codec::CommandCodec;
use std::sync::Arc;

/// Commands meshmail refuses in every session: they take the connection out of its hands.
const REFUSED_ALWAYS: &[&str] = &["COMPRESS"];

/// Commands meshmail refuses in a mapped session: their answers would be computed from
/// ciphertext, or would bypass the views.
const REFUSED: &[&str] = &[
    "COMPRESS",
    "SORT",
    "THREAD",
    "ESEARCH",
    "URLFETCH",
    "GENURLAUTH",
    "RESETKEY",
    "NOTIFY",
];

/// Commands that change the session's state (they wait until nothing else is in flight, and
/// nothing is sent after them until they are answered).
const EXCLUSIVE: &[&str] = &[
    "LOGIN",
    "AUTHENTICATE",
    "STARTTLS",
    "SELECT",
    "EXAMINE",
    "CLOSE",
    "UNSELECT",
    "RENAME",
    "LOGOUT",
];

/// The command name of a message's first line (`UID` skipped), upper-cased.
fn command_name(line: &[u8]) -> String {
    let mut words = line
        .split(|&b| b == b' ' || b == b'\r' || b == b'\n')
        .filter(|w| !w.is_empty())
        .skip(1);
    let mut name = words.next().unwrap_or_default().to_ascii_uppercase();
    if name == b"UID" {
        name = words.next().unwrap_or_default().to_ascii_uppercase();
    }
    String::from_utf8_lossy(&name).into_owned()
}

/// A whole client message whose command changes the session's state.
pub(super) fn is_exclusive(bytes: &[u8]) -> bool {
    EXCLUSIVE.contains(&command_name(bytes).as_str())
}

impl Core {
    /// True when meshmail refuses the command `name` in this session.
    fn refused(&self, name: &str) -> bool {
        REFUSED_ALWAYS.contains(&name)
            || (!matches!(
                self.state.account(),
                Some(super::state::Account::Other | super::state::Account::Device(_))
            ) && REFUSED.contains(&name))
    }

    /// How the message starting with `line` is handled.
    pub(super) fn classify(&mut self, line: &[u8]) -> Mode {
        self.mask_item = false;
        if let State::Authenticating(PendingLogin {
            tag, sasl: Some(_), ..
        }) = &self.state
        {
            self.current = Some((String::new(), tag.clone()));
            return Mode::Raw;
        }
        if let Some(idle) = self.tags.idle() {
            // `DONE` (or whatever the client sends instead) ends the IDLE.
            self.current = Some((String::new(), idle.to_owned()));
            return Mode::Raw;
        }
        let Some(tag) = tags::client_tag(line).map(str::to_owned) else {
            self.current = None;
            self.push_out(Out::Bytes(b"* BAD Invalid tag\r\n".to_vec()));
            return Mode::Skip;
        };
        let name = command_name(line);
        if name == "X-MESH-REVOKE" || name == "X-MESH-DEVICES" {
            // The store's own commands: answered here, never relayed.
            self.current = None;
            self.store_command(&tag, &name, line);
            return Mode::Skip;
        }
        self.mask_item = name == "FETCH";
        if crate::store::item::mentions(line) {
            // The private item never goes upstream as the client wrote it: only an enrolled
            // device's session at the store gets it answered, asked for once in a FETCH.
            self.current = None;
            let stripped = crate::store::item::strip_from_command(line)
                .filter(|s| !crate::store::item::mentions(s));
            match (self.state.device().is_some(), stripped) {
                (true, Some(stripped)) => {
                    let own = self.tags.issue(Some(&tag), Kind::Recrypt);
                    self.recrypt_line = Some(stripped);
                    self.current = Some((tag, own));
                    return Mode::Forward;
                }
                (true, None) => self.bad(
                    &tag,
                    "X-MESH-RECRYPT is asked for once, as an item of a FETCH command",
                ),
                (false, _) => self.no(
                    &tag,
                    "[NOPERM] X-MESH-RECRYPT is only for an enrolled device at its store",
                ),
            }
            return Mode::Skip;
        }
        let mapped = self.state.mapped().is_some();
        let selected = self.state.mapped_selected().is_some();
        let collect = match name.as_str() {
            "STARTTLS" | "LOGIN" | "AUTHENTICATE" | "ENABLE" | "SELECT" | "EXAMINE" | "CLOSE"
            | "UNSELECT" | "RENAME" | "LOGOUT" => true,
            "FETCH" | "SEARCH" => selected,
            "APPEND" => mapped,
            n => self.refused(n),
        };
        if collect {
            // meshmail's tag is issued when the command is handled.
            self.current = Some((tag, String::new()));
            return Mode::Collect;
        }
        let kind = if name == "IDLE" {
            Kind::Idle
        } else {
            Kind::Relay
        };
        let own = self.tags.issue(Some(&tag), kind);
        let updates = line
            .split(|&b| b == b' ' || b == b'(' || b == b')')
            .any(|w| w.eq_ignore_ascii_case(b"UPDATE"));
        if matches!(name.as_str(), "SEARCH" | "SORT") && updates {
            self.tags.remember_context(&own, &tag);
        }
        self.cancelupdate = name == "CANCELUPDATE";
        self.current = Some((tag, own));
        Mode::Forward
    }

    /// `X-MESH-REVOKE <base64 revocation>` and `X-MESH-DEVICES` from an enrolled device's
    /// session at the store.
    fn store_command(&mut self, tag: &str, name: &str, line: &[u8]) {
        let (Some(role), Some(device)) = (self.ctx.store.clone(), self.state.device().cloned())
        else {
            self.no(
                tag,
                &format!("[NOPERM] {name} is only for an enrolled device at its store"),
            );
            return;
        };
        if name == "X-MESH-DEVICES" {
            match role.devices(&device) {
                Ok(list) => {
                    for (device, state) in list {
                        let quoted = device.replace(['"', '\\'], "");
                        self.push_out(Out::Bytes(
                            format!("* X-MESH-DEVICES \"{quoted}\" {state}\r\n").into_bytes(),
                        ));
                    }
                    self.push_out(Out::Bytes(
                        format!("{tag} OK devices listed\r\n").into_bytes(),
                    ));
                }
                Err(e) => self.no(tag, &format!("[UNAVAILABLE] {e}")),
            }
            return;
        }
        let text = std::str::from_utf8(line)
            .ok()
            .and_then(|l| l.split_ascii_whitespace().nth(2))
            .and_then(|b64| data_encoding::BASE64.decode(b64.as_bytes()).ok())
            .and_then(|b| String::from_utf8(b).ok());
        let Some(text) = text else {
            self.bad(
                tag,
                "X-MESH-REVOKE takes one argument: a signed revocation, base64",
            );
            return;
        };
        match role.revoke(&device, &text) {
            Ok(revoked) => {
                let quoted = revoked.replace(['"', '\\'], "");
                self.push_out(Out::Bytes(
                    format!("* X-MESH-REVOKED \"{quoted}\"\r\n").into_bytes(),
                ));
                self.push_out(Out::Bytes(
                    format!("{tag} OK device revoked\r\n").into_bytes(),
                ));
            }
            Err(e) => self.no(tag, &format!("[NOPERM] {e}")),
        }
    }

    /// A line relayed as it is: a SASL response, or the end of an IDLE. Returns the line to
    /// send instead, when meshmail cancels a SASL exchange.
    pub(super) fn raw_line(&mut self, line: &[u8]) -> Option<Vec<u8>> {
        if let State::Authenticating(login) = &mut self.state {
            let sasl = login.sasl.as_mut()?;
            sasl.challenged = false;
            let text = String::from_utf8_lossy(line);
            let text = text.trim_end_matches(['\r', '\n']);
            if let Ok(decoded) = data_encoding::BASE64.decode(text.as_bytes()) {
                sasl.responses.push(Secret::new(decoded));
            }
            let State::Authenticating(login) = &self.state else {
                return None;
            };
            let reason = self.refused_device_login("", login.sasl.as_ref())?;
            if let State::Authenticating(PendingLogin {
                sasl: Some(sasl), ..
            }) = &mut self.state
            {
                sasl.refused = Some(reason);
            }
            // RFC 9051 6.2.2: "*" cancels the exchange; the server answers BAD.
            return Some(b"*\r\n".to_vec());
        }
        if let Some(idle) = self.tags.idle().map(str::to_owned) {
            if let Some(kind) = self.tags.kind_mut(&idle) {
                *kind = Kind::Relay;
            }
        }
        None
    }

    /// A whole client message read in Collect mode.
    pub(super) fn handle_collected(&mut self, bytes: &[u8]) -> Result<(), Vec<u8>> {
        let tag = tags::client_tag(bytes).unwrap_or("*").to_owned();
        let name = command_name(bytes);
        if self.refused(&name) {
            self.bad(&tag, &format!("{name} is not available through meshmail"));
            return Ok(());
        }
        let command = match CommandCodec::default().decode(bytes) {
            Ok((b"", c)) => c,
            _ => return self.unparsed(&tag, &name, bytes),
        };
        match &command.body {
            CommandBody::StartTLS => self.starttls(&tag),
            CommandBody::Login { username, password } => {
                let user = String::from_utf8_lossy(username.as_ref()).into_owned();
                let password = SecretString::new(
                    String::from_utf8_lossy(password.declassify().as_ref()).into_owned(),
                );
                let credentials = Arc::new(Credentials::Login {
                    user: user.clone(),
                    password,
                });
                self.login(&tag, user, Some(credentials), None, bytes);
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } => {
                let mechanism = mechanism.to_string();
                if !RELAYED_MECHANISMS
                    .iter()
                    .any(|m| m.eq_ignore_ascii_case(&mechanism))
                {
                    self.no(&tag, "[CANNOT] meshmail does not relay this mechanism");
                    return Ok(());
                }
                let mut responses = Vec::new();
                if let Some(ir) = initial_response {
                    responses.push(Secret::new(ir.declassify().to_vec()));
                }
                let sasl = Sasl {
                    mechanism,
                    responses,
                    challenged: false,
                    refused: None,
                };
                self.login(&tag, String::new(), None, Some(sasl), bytes);
            }
            CommandBody::Enable { .. } if self.state.mapped().is_none() => {
                // Not meshmail's to judge: before a login the server refuses it, and another
                // login's session is relayed as it is.
                self.forward_collected(&tag, Kind::Relay, bytes);
            }
            CommandBody::Enable { capabilities } => {
                let allowed: Vec<String> = capabilities
                    .as_ref()
                    .iter()
                    .map(|c| c.to_string())
                    .filter(|c| ENABLE_ALLOWED.iter().any(|a| a.eq_ignore_ascii_case(c)))
                    .collect();
                if allowed.is_empty() {
                    // Nothing meshmail handles is enabled.
                    self.push_out(Out::Bytes(b"* ENABLED\r\n".to_vec()));
                    self.push_out(Out::Bytes(
                        format!("{tag} OK ENABLE completed\r\n").into_bytes(),
                    ));
                } else {
                    let own = self.tags.issue(Some(&tag), Kind::Relay);
                    let line = format!("{own} ENABLE {}\r\n", allowed.join(" "));
                    self.push_up(Some(own), line.into_bytes());
                }
            }
            CommandBody::Select { mailbox, .. } | CommandBody::Examine { mailbox, .. } => {
                let read_only = matches!(command.body, CommandBody::Examine { .. });
                if !self.state.is_authenticated() {
                    self.forward_collected(&tag, Kind::Relay, bytes);
                    return Ok(());
                }
                // RFC 9051 §6.3.2: a SELECT leaves the selected state, even when it fails.
                let state = std::mem::replace(&mut self.state, State::Logout);
                self.state = state.deselected();
                self.seqmap = Default::default();
                let pending = Mailbox {
                    name: mailbox_name(mailbox),
                    uidvalidity: None,
                    read_only,
                };
                self.forward_collected(&tag, Kind::Select(pending), bytes);
            }
            CommandBody::Close | CommandBody::Unselect => {
                self.forward_collected(&tag, Kind::Deselect, bytes);
            }
            CommandBody::Rename { from, to } => {
                let kind = Kind::Rename {
                    from: mailbox_name(from),
                    to: mailbox_name(to),
                };
                self.forward_collected(&tag, kind, bytes);
            }
            CommandBody::Logout => {
                self.forward_collected(&tag, Kind::Logout, bytes);
            }
            CommandBody::Fetch { .. } => self.start_fetch(&tag, &command, bytes),
            CommandBody::Search { criteria, uid, .. } => {
                let criteria = criteria
                    .as_ref()
                    .iter()
                    .cloned()
                    .map(imap_codec::imap_types::IntoStatic::into_static)
                    .collect();
                self.start_search(&tag, criteria, *uid, bytes);
            }
            CommandBody::Append {
                mailbox, message, ..
            } => {
                let message = match message {
                    LiteralOrLiteral8::Literal(l) => l.data().to_vec(),
                    LiteralOrLiteral8::Literal8(l) => l.data.to_vec(),
                };
                self.append(&tag, &mailbox_name(mailbox), &message, bytes);
            }
            _ => {
                self.forward_collected(&tag, Kind::Relay, bytes);
            }
        }
        Ok(())
    }

    /// A command meshmail reads whole but imap-codec could not parse.
    fn unparsed(&mut self, tag: &str, name: &str, bytes: &[u8]) -> Result<(), Vec<u8>> {
        self.errors += 1;
        if self.errors > self.ctx.limits.max_errors {
            return Err(b"* BYE Too many errors\r\n".to_vec());
        }
        match name {
            // What binds the session to an account, or carries a secret, must be understood.
            "LOGIN" | "AUTHENTICATE" | "STARTTLS" | "SELECT" | "EXAMINE" | "RENAME" => {
                self.bad(tag, &format!("Unsupported {name} syntax"))
            }
            "APPEND" => self.no(
                tag,
                "[CANNOT] meshmail cannot encrypt this APPEND (one message per APPEND, no CATENATE, no NUL)",
            ),
            "FETCH" | "SEARCH" => self.bad(tag, &format!("Unsupported {name} syntax")),
            // The server judges the syntax of what meshmail only watches.
            _ => {
                self.forward_collected(tag, Kind::Relay, bytes);
            }
        }
        Ok(())
    }

    fn starttls(&mut self, tag: &str) {
        let link = self.link();
        if link.tls || !link.can_starttls || link.authenticated {
            self.bad(tag, "STARTTLS is not available now");
        } else {
            self.starttls = true;
            self.push_out(Out::StartTls(tag.to_owned()));
        }
    }

    /// LOGIN or AUTHENTICATE: relayed once, in a session not yet authenticated, with nothing
    /// else in flight; its answer alone decides the account.
    fn login(
        &mut self,
        tag: &str,
        user: String,
        credentials: Option<Arc<Credentials>>,
        sasl: Option<Sasl>,
        bytes: &[u8],
    ) {
        if !matches!(self.state, State::NotAuthenticated) {
            self.bad(tag, "Already authenticated");
            return;
        }
        if !self.link().login_allowed() {
            self.no(tag, "[PRIVACYREQUIRED] Use STARTTLS first");
            return;
        }
        if let Some(reason) = self.refused_device_login(&user, sasl.as_ref()) {
            self.no(tag, reason);
            return;
        }
        let own = self.forward_collected(tag, Kind::Login, bytes);
        self.state = State::Authenticating(PendingLogin {
            tag: own,
            user,
            credentials,
            sasl,
        });
    }

    /// At the store, a device's connection logs in as its account and nothing else: not as a
    /// Dovecot master user, not with a SASL authorization identity other than the
    /// authentication identity.
    fn refused_device_login(&self, user: &str, sasl: Option<&Sasl>) -> Option<&'static str> {
        let store = self.ctx.store.as_ref()?;
        self.client_key.as_ref()?;
        let user = match sasl {
            // The first response names the user (with an initial response, or later).
            Some(s) if !s.responses.is_empty() => {
                match crate::sasl::authenticated_user(&s.mechanism, &s.responses) {
                    Some(u) => u,
                    None => return Some("[AUTHORIZATIONFAILED] A device logs in as itself only"),
                }
            }
            _ => user.to_owned(),
        };
        store
            .is_master_login(&user)
            .then_some("[AUTHORIZATIONFAILED] No master-user login on a device's connection")
    }

    fn start_fetch(&mut self, tag: &str, command: &Command<'_>, bytes: &[u8]) {
        let Some(plan) = fetch::plan(command) else {
            self.forward_collected(tag, Kind::Relay, bytes);
            return;
        };
        if fetch::asks_binary(&plan) {
            self.bad(tag, "BINARY is not available through meshmail");
            return;
        }
        if self.start_known_fetch(tag, command, plan.clone()) {
            return;
        }
        let own = self.tags.issue(Some(tag), Kind::Fetch);
        let mut upstream = plan.upstream.clone();
        upstream.tag = imap_codec::imap_types::core::Tag::unvalidated(own.clone());
        let mut plan = plan;
        self.push_fetch(&own, &upstream, &mut plan);
        self.fetch = Some(ActiveFetch {
            client_tag: tag.to_owned(),
            with_partials: plan.with_partials.then_some(upstream),
            plan: Arc::new(plan),
            known: Default::default(),
            rest_sent: true,
            answered: Default::default(),
        });
    }

    /// APPEND of a mapped session: encrypted to the account's own key unless the mailbox is
    /// exempt or the message is already encrypted. The encryption is a job for the task.
    fn append(&mut self, tag: &str, mailbox: &str, message: &[u8], bytes: &[u8]) {
        let exempt = self.ctx.append_plaintext.iter().any(|m| {
            m == mailbox
                || (m.eq_ignore_ascii_case("INBOX") && mailbox.eq_ignore_ascii_case("INBOX"))
        });
        if exempt || crate::imap::view::mime::parse(message).is_encrypted() {
            self.forward_collected(tag, Kind::Relay, bytes);
            return;
        }
        let signer = self
            .state
            .mapped()
            .and_then(|m| m.account.device_signer.clone());
        let Some(keys) = self.state.mapped().and_then(|m| m.account.keys.clone()) else {
            self.no(
                tag,
                "[UNAVAILABLE] The key store is locked; try again later",
            );
            return;
        };
        let frags = std::mem::take(&mut self.collected);
        let literal_at = frags
            .iter()
            .rposition(|f| matches!(f, FragmentInfo::Literal { .. }))
            .filter(|k| *k > 0);
        let Some(k) = literal_at else {
            self.bad(tag, "APPEND without a message literal");
            return;
        };
        let mut head = Vec::new();
        for f in &frags[..k] {
            head.extend_from_slice(bytes.get(f.range()).unwrap_or_default());
        }
        // The announcement `{n}`/`{n+}` at the end of the head is written anew.
        if crate::imap::append::announce(&head, 0).is_none() {
            self.bad(tag, "APPEND without a message literal");
            return;
        }
        let mut tail = Vec::new();
        for f in &frags[k + 1..] {
            tail.extend_from_slice(bytes.get(f.range()).unwrap_or_default());
        }
        self.sealing = Some(Sealing {
            client_tag: tag.to_owned(),
            head,
            tail,
        });
        self.jobs.push_back(super::core::Job::Seal(SealJob {
            keys,
            signer,
            message: message.to_vec(),
        }));
    }

    /// The task sealed the APPEND's message (or could not).
    pub fn sealed(&mut self, result: Result<Vec<u8>, String>) {
        let Some(sealing) = self.sealing.take() else {
            return;
        };
        let tag = sealing.client_tag;
        match result {
            Err(e) => {
                tracing::warn!(error = %e, "APPEND could not be encrypted");
                self.no(&tag, "[CANNOT] The message could not be encrypted");
            }
            Ok(sealed) => {
                let own = self.tags.issue(Some(&tag), Kind::Relay);
                let head = tags::retag(&sealing.head, &own);
                let head = crate::imap::append::announce(&head, sealed.len()).unwrap_or(head);
                self.push_up(Some(own.clone()), head);
                self.up_queue.push_back(UpItem::Gate { tag: own.clone() });
                self.push_up(Some(own.clone()), sealed);
                self.push_up(Some(own), sealing.tail);
            }
        }
        self.pump_client();
    }

    /// meshmail's FETCH `upstream` for `plan`, under its tag `own`. A device's FETCH of whole
    /// messages asks its store for the partials in the same command, so each message is
    /// fetched once (not again on meshmail's own connection to get its partials).
    pub(super) fn push_fetch(
        &mut self,
        own: &str,
        upstream: &Command<'_>,
        plan: &mut fetch::FetchPlan,
    ) {
        let fragments: Vec<Fragment> = CommandCodec::default().encode(upstream).collect();
        let device = self
            .state
            .mapped_selected()
            .is_some_and(|(m, _)| m.account.device.is_some());
        if device && !self.partials_refused && plan.fetches_whole_body() {
            if let [Fragment::Line { data }] = fragments.as_slice() {
                if let Some(line) = crate::store::item::add_to_fetch(data) {
                    plan.with_partials = true;
                    self.push_up(Some(own.to_owned()), line);
                    return;
                }
            }
        }
        self.push_encoded(own, fragments);
    }

    /// The store refused the partials asked with the running FETCH (it takes this device's
    /// key no more: revoked, or enrolled again elsewhere): the same FETCH again without them,
    /// and none asked for the rest of the session. Plaintext is then shown as it is, and an
    /// encrypted message's view asks on meshmail's own connection, where the store's refusal
    /// becomes `NO [UNAVAILABLE]` for the client. False when the FETCH asked for none.
    pub(super) fn fetch_again_without_partials(&mut self, client_tag: &str) -> bool {
        self.partials_refused = true;
        let Some(active) = self.fetch.as_mut() else {
            return false;
        };
        let Some(mut command) = active.with_partials.take() else {
            return false;
        };
        let mut plan = fetch::FetchPlan::clone(&active.plan);
        plan.with_partials = false;
        active.plan = Arc::new(plan);
        let own = self.tags.issue(Some(client_tag), Kind::Fetch);
        command.tag = imap_codec::imap_types::core::Tag::unvalidated(own.clone());
        let fragments: Vec<Fragment> = CommandCodec::default().encode(&command).collect();
        self.push_encoded(&own, fragments);
        true
    }

    /// Sends a command meshmail encoded, waiting for the upstream's go-ahead before each
    /// synchronizing literal.
    pub(super) fn push_encoded(&mut self, own: &str, encoded: impl IntoIterator<Item = Fragment>) {
        for fragment in encoded {
            match fragment {
                Fragment::Line { data } => self.push_up(Some(own.to_owned()), data),
                Fragment::Literal { data, mode } => {
                    if mode == LiteralMode::Sync {
                        self.up_queue.push_back(UpItem::Gate {
                            tag: own.to_owned(),
                        });
                    }
                    self.push_up(Some(own.to_owned()), data);
                }
            }
        }
    }

    /// Relays a collected message under a new tag of meshmail's, waiting for the upstream's
    /// go-ahead before each synchronizing literal (meshmail already gave the client its own).
    /// Returns meshmail's tag.
    pub(super) fn forward_collected(&mut self, tag: &str, kind: Kind, bytes: &[u8]) -> String {
        let own = self.tags.issue(Some(tag), kind);
        let frags = std::mem::take(&mut self.collected);
        for (i, &frag) in frags.iter().enumerate() {
            let mut data = bytes.get(frag.range()).unwrap_or_default().to_vec();
            if i == 0 {
                data = tags::retag(&data, &own);
            }
            self.push_up(Some(own.clone()), data);
            if let FragmentInfo::Line {
                announcement: Some(a),
                ..
            } = frag
            {
                if a.mode == LiteralMode::Sync {
                    self.up_queue.push_back(UpItem::Gate { tag: own.clone() });
                }
            }
        }
        own
    }
}

/// The mailbox name as the server knows it (modified UTF-7 kept as it is).
fn mailbox_name(mailbox: &CodecMailbox<'_>) -> String {
    match mailbox {
        CodecMailbox::Inbox => "INBOX".into(),
        CodecMailbox::Other(other) => String::from_utf8_lossy(other.as_ref()).into_owned(),
    }
}
