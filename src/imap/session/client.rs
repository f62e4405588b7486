//! Messages from the client: relayed fragment by fragment, or read whole and handled when
//! meshmail must look at them (login, STARTTLS, SELECT, ENABLE, FETCH of a mapped session,
//! refused extensions).

use super::{ActiveFetch, Mode, Out, Pending, Selected, Session, UpItem};
use crate::imap::caps::ENABLE_ALLOWED;
use crate::imap::fetch;
use crate::imap::owned::Credentials;
use crate::imap::search::uses_sequence_numbers;
use crate::secret::{Secret, SecretString};
use imap_codec::decode::Decoder;
use imap_codec::encode::{Encoder, Fragment};
use imap_codec::fragmentizer::FragmentInfo;
use imap_codec::imap_types::command::{Command, CommandBody};
use imap_codec::imap_types::core::LiteralMode;
use imap_codec::imap_types::extensions::binary::LiteralOrLiteral8;
use imap_codec::imap_types::mailbox::Mailbox;
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::IntoStatic;
use imap_codec::CommandCodec;
use std::sync::Arc;

/// The longest command line (without literals) a client may send: long UID sets included.
const MAX_COMMAND_LINE: usize = 256 * 1024;

/// Commands meshmail refuses: their answers would be computed from ciphertext, or they would
/// take the connection out of meshmail's hands.
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

impl Session {
    /// Feeds client bytes. `Err` carries a BYE to send before closing.
    pub(super) fn on_client_bytes(&mut self, bytes: &[u8]) -> Result<(), Vec<u8>> {
        self.cfrag.enqueue_bytes(bytes);
        self.client_pending += bytes.len();
        self.client_unframed += bytes.len();
        let result = self.frame_client();
        // A line that never ends must not fill memory (literals are bounded by the message
        // size limit instead).
        if result.is_ok() && !self.client_in_literal && self.client_unframed > MAX_COMMAND_LINE {
            return Err(b"* BYE [TOOBIG] Command line too long\r\n".to_vec());
        }
        result
    }

    fn frame_client(&mut self) -> Result<(), Vec<u8>> {
        while let Some(frag) = self.cfrag.progress() {
            self.client_unframed = self.client_unframed.saturating_sub(frag.range().len());
            self.client_in_literal = matches!(
                frag,
                FragmentInfo::Line {
                    announcement: Some(_),
                    ..
                }
            );
            if self.cfrag.is_max_message_size_exceeded() {
                return Err(b"* BYE [TOOBIG] Command too large\r\n".to_vec());
            }
            let first = matches!(frag, FragmentInfo::Line { start: 0, .. });
            if first {
                let line = self.cfrag.fragment_bytes(frag).to_vec();
                if looks_like_http(&line) {
                    return Err(b"* BYE This is an IMAP server, not a web server\r\n".to_vec());
                }
                self.mode = self.classify(&line);
                self.collected.clear();
            }
            if let FragmentInfo::Line {
                announcement: Some(a),
                ..
            } = frag
            {
                if a.length as usize > self.ctx.limits.max_message_size {
                    if a.mode == LiteralMode::Sync && first {
                        // The client waits for our go-ahead: refuse, and it sends nothing.
                        let tag = word(self.cfrag.fragment_bytes(frag), 0);
                        let len = self.cfrag.message_bytes().len();
                        self.client_pending = self.client_pending.saturating_sub(len);
                        self.cfrag.skip_message();
                        self.push_out(Out::Bytes(
                            format!("{tag} NO [TOOBIG] Literal too large\r\n").into_bytes(),
                        ));
                        continue;
                    }
                    return Err(b"* BYE [TOOBIG] Literal too large\r\n".to_vec());
                }
            }
            match self.mode {
                Mode::Forward | Mode::Sasl => {
                    let data = self.cfrag.fragment_bytes(frag).to_vec();
                    if self.mode == Mode::Sasl {
                        self.record_sasl_response(&data);
                    }
                    self.push_up(None, data);
                }
                Mode::Collect => {
                    self.collected.push(frag);
                    if let FragmentInfo::Line {
                        announcement: Some(a),
                        ..
                    } = frag
                    {
                        if a.mode == LiteralMode::Sync {
                            self.push_out(Out::Bytes(b"+ Ready for literal data\r\n".to_vec()));
                        }
                    }
                }
            }
            if self.cfrag.is_message_complete() {
                let len = self.cfrag.message_bytes().len();
                self.client_pending = self.client_pending.saturating_sub(len);
                if self.mode == Mode::Collect {
                    self.handle_collected()?;
                }
                if self.starttls || self.fetch.is_some() || self.search.is_some() {
                    // After STARTTLS, whatever follows must come over TLS; during a view FETCH,
                    // the next commands wait (in the fragmentizer) until it is answered.
                    break;
                }
            }
        }
        Ok(())
    }

    /// How the message starting with `line` is handled.
    fn classify(&mut self, line: &[u8]) -> Mode {
        if self.sasl.is_some() {
            return Mode::Sasl;
        }
        let tag = word(line, 0);
        let mut name = word(line, 1).to_ascii_uppercase();
        if name == "UID" {
            name = word(line, 2).to_ascii_uppercase();
        }
        let mapped = self.account.is_some();
        match name.as_str() {
            "STARTTLS" | "LOGIN" | "AUTHENTICATE" | "ENABLE" | "SELECT" | "EXAMINE" => {
                Mode::Collect
            }
            "FETCH" if mapped && self.selected.is_some() => Mode::Collect,
            "APPEND" if mapped => Mode::Collect,
            "SEARCH" if mapped && self.selected.is_some() => Mode::Collect,
            "CLOSE" | "UNSELECT" => {
                self.pending.insert(tag, Pending::Deselect);
                Mode::Forward
            }
            n if REFUSED.contains(&n) => Mode::Collect,
            _ => Mode::Forward,
        }
    }

    /// A whole client message in Collect mode.
    fn handle_collected(&mut self) -> Result<(), Vec<u8>> {
        let bytes = self.cfrag.message_bytes().to_vec();
        let first_line = self.collected.first().map(|f| f.range()).unwrap_or(0..0);
        let tag = word(&bytes[first_line.clone()], 0);
        let mut name = word(&bytes[first_line], 1).to_ascii_uppercase();
        if name == "UID" {
            name = word(&bytes, 2).to_ascii_uppercase();
        }
        if REFUSED.contains(&name.as_str()) {
            self.bad(&tag, &format!("{name} is not available through meshmail"));
            return Ok(());
        }
        let command = match CommandCodec::default().decode(&bytes) {
            Ok((b"", c)) => c,
            _ => {
                self.errors += 1;
                if self.errors > self.ctx.limits.max_errors {
                    return Err(b"* BYE Too many errors\r\n".to_vec());
                }
                if name == "FETCH" || name == "SEARCH" {
                    self.bad(&tag, &format!("Unsupported {name} syntax"));
                } else {
                    // meshmail only watches this command: the server judges its syntax.
                    self.forward_collected(&tag, &bytes);
                }
                return Ok(());
            }
        };
        match &command.body {
            CommandBody::StartTLS => {
                if self.link.tls || !self.link.can_starttls || self.link.authenticated {
                    self.bad(&tag, "STARTTLS is not available now");
                } else {
                    self.starttls = true;
                    self.push_out(Out::StartTls(tag));
                }
            }
            CommandBody::Login { username, password } => {
                if !self.link.login_allowed() {
                    self.no(&tag, "[PRIVACYREQUIRED] Use STARTTLS first");
                    return Ok(());
                }
                let user = String::from_utf8_lossy(username.as_ref()).into_owned();
                let password = SecretString::new(
                    String::from_utf8_lossy(password.declassify().as_ref()).into_owned(),
                );
                self.pending.insert(
                    tag.clone(),
                    Pending::Login {
                        user: user.clone(),
                        credentials: Some(Arc::new(Credentials::Login { user, password })),
                    },
                );
                self.forward_collected(&tag, &bytes);
            }
            CommandBody::Authenticate {
                mechanism,
                initial_response,
            } => {
                if !self.link.login_allowed() {
                    self.no(&tag, "[PRIVACYREQUIRED] Use STARTTLS first");
                    return Ok(());
                }
                let mut responses = Vec::new();
                if let Some(ir) = initial_response {
                    responses.push(Secret::new(ir.declassify().to_vec()));
                }
                self.sasl = Some((tag.clone(), responses, mechanism.to_string()));
                self.pending.insert(
                    tag.clone(),
                    Pending::Login {
                        user: String::new(),
                        credentials: None,
                    },
                );
                self.forward_collected(&tag, &bytes);
            }
            CommandBody::Enable { capabilities } => {
                let allowed: Vec<String> = capabilities
                    .as_ref()
                    .iter()
                    .map(|c| c.to_string())
                    .filter(|c| ENABLE_ALLOWED.iter().any(|a| a.eq_ignore_ascii_case(c)))
                    .collect();
                if allowed.is_empty() {
                    // Nothing meshmail handles: nothing is enabled.
                    self.push_out(Out::Bytes(
                        format!("* ENABLED\r\n{tag} OK ENABLE completed\r\n").into_bytes(),
                    ));
                } else {
                    let line = format!("{tag} ENABLE {}\r\n", allowed.join(" "));
                    self.push_up(Some(tag), line.into_bytes());
                }
            }
            CommandBody::Select { mailbox, .. } | CommandBody::Examine { mailbox, .. } => {
                self.selected = None;
                self.selecting = Some(tag.clone());
                self.seqmap = Default::default();
                self.pending.insert(
                    tag.clone(),
                    Pending::Select(Selected {
                        mailbox: mailbox_name(mailbox),
                        uidvalidity: None,
                        read_only: matches!(command.body, CommandBody::Examine { .. }),
                    }),
                );
                self.forward_collected(&tag, &bytes);
            }
            CommandBody::Fetch { .. } => self.start_fetch(&tag, &command, &bytes),
            CommandBody::Search { criteria, uid, .. } => {
                let criteria: Vec<SearchKey<'static>> = criteria
                    .as_ref()
                    .iter()
                    .cloned()
                    .map(|k| k.into_static())
                    .collect();
                self.start_search(&tag, criteria, *uid, &bytes);
            }
            CommandBody::Append {
                mailbox, message, ..
            } => {
                let message = match message {
                    LiteralOrLiteral8::Literal(l) => l.data().to_vec(),
                    LiteralOrLiteral8::Literal8(l) => l.data.to_vec(),
                };
                self.append(&tag, &mailbox_name(mailbox), &message, &bytes);
            }
            _ => self.forward_collected(&tag, &bytes),
        }
        Ok(())
    }

    fn start_fetch(&mut self, tag: &str, command: &Command<'_>, bytes: &[u8]) {
        let Some(plan) = fetch::plan(command) else {
            self.forward_collected(tag, bytes);
            return;
        };
        if fetch::asks_binary(&plan) {
            self.bad(tag, "BINARY is not available through meshmail");
            return;
        }
        if self.start_known_fetch(tag, command, plan.clone()) {
            return;
        }
        let encoded = CommandCodec::default().encode(&plan.upstream);
        self.push_encoded(tag, encoded);
        self.pending.insert(tag.to_owned(), Pending::Fetch);
        self.fetch = Some(ActiveFetch {
            tag: tag.to_owned(),
            plan: Arc::new(plan),
            failure: None,
            known: Default::default(),
            rest_sent: true,
            answered: Default::default(),
        });
    }

    /// APPEND of a mapped session: encrypted to the account's own key unless the mailbox is
    /// exempt or the message is already encrypted.
    fn append(&mut self, tag: &str, mailbox: &str, message: &[u8], bytes: &[u8]) {
        let exempt = self.ctx.append_plaintext.iter().any(|m| {
            m == mailbox
                || (m.eq_ignore_ascii_case("INBOX") && mailbox.eq_ignore_ascii_case("INBOX"))
        });
        if exempt || crate::imap::view::mime::parse(message).is_encrypted() {
            self.forward_collected(tag, bytes);
            return;
        }
        let Some(keys) = self.account.as_ref().and_then(|a| a.keys.clone()) else {
            self.no(
                tag,
                "[UNAVAILABLE] The key store is locked; try again later",
            );
            return;
        };
        // Encrypting a message takes milliseconds: done here, on a worker that may block.
        let sealed = tokio::task::block_in_place(|| {
            crate::imap::append::seal_for_store(message, keys.secret_cert(), keys.secret_cert())
        });
        let sealed = match sealed {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "APPEND could not be encrypted");
                self.no(tag, "[CANNOT] The message could not be encrypted");
                return;
            }
        };
        let frags = std::mem::take(&mut self.collected);
        let Some(k) = frags
            .iter()
            .rposition(|f| matches!(f, FragmentInfo::Literal { .. }))
            .filter(|k| *k > 0)
        else {
            self.bad(tag, "APPEND without a message literal");
            return;
        };
        let announced = bytes
            .get(frags[k - 1].range())
            .and_then(|line| crate::imap::append::announce(line, sealed.len()));
        let Some(announced) = announced else {
            self.bad(tag, "APPEND without a message literal");
            return;
        };
        self.forward_frags(tag, bytes, &frags[..k - 1]);
        self.push_up(Some(tag.to_owned()), announced);
        self.up_queue.push_back(UpItem::Gate {
            tag: tag.to_owned(),
        });
        self.push_up(Some(tag.to_owned()), sealed);
        self.forward_frags(tag, bytes, &frags[k + 1..]);
    }

    /// SEARCH of a mapped session: relayed, while meshmail evaluates the encrypted messages
    /// itself on its own connection; the answers are merged when the upstream's is complete.
    fn start_search(
        &mut self,
        tag: &str,
        criteria: Vec<SearchKey<'static>>,
        uid: bool,
        bytes: &[u8],
    ) {
        let Some(source) = self.view_source() else {
            self.no(tag, "[UNAVAILABLE] meshmail cannot search this mailbox now");
            return;
        };
        // The search words are the user's: only the fact is logged.
        tracing::info!(peer = %self.peer, uid, keys = criteria.len(), "IMAP SEARCH over encrypted messages");
        // A sequence-set criterion is in the client's numbering, which meshmail's own
        // connection may not share (expunges the client has not seen yet).
        let (numbering, numbering_rx) = if criteria.iter().any(uses_sequence_numbers) {
            let (tx, rx) = tokio::sync::oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let local = tokio::spawn(super::search_local(source, criteria, numbering_rx));
        let mut numbering = numbering;
        if self.seqmap.complete() {
            if let Some(tx) = numbering.take() {
                let _ = tx.send((self.seqmap.by_uid(), self.seqmap.len()));
            }
        }
        if (!uid || numbering.is_some()) && !self.seqmap.complete() {
            // Sequence numbers of what meshmail finds come from the client's own session.
            let t = self.internal_tag();
            self.pending.insert(t.clone(), Pending::Internal);
            self.mapping = Some(t.clone());
            self.push_up(
                Some(t.clone()),
                format!("{t} FETCH 1:* (UID)\r\n").into_bytes(),
            );
        }
        self.search = Some(super::ActiveSearch {
            uid,
            upstream: Vec::new(),
            local,
            numbering,
        });
        self.pending.insert(tag.to_owned(), Pending::Search);
        self.forward_collected(tag, bytes);
    }

    /// Sends a command meshmail encoded, waiting for the upstream's go-ahead before each
    /// synchronizing literal.
    pub(super) fn push_encoded(&mut self, tag: &str, encoded: imap_codec::encode::Encoded) {
        for fragment in encoded {
            match fragment {
                Fragment::Line { data } => self.push_up(Some(tag.to_owned()), data),
                Fragment::Literal { data, mode } => {
                    if mode == LiteralMode::Sync {
                        self.up_queue.push_back(UpItem::Gate {
                            tag: tag.to_owned(),
                        });
                    }
                    self.push_up(Some(tag.to_owned()), data);
                }
            }
        }
    }

    /// Relays a collected message as the client sent it, waiting for the upstream's go-ahead
    /// before each synchronizing literal (meshmail already gave the client its own).
    fn forward_collected(&mut self, tag: &str, bytes: &[u8]) {
        let frags = std::mem::take(&mut self.collected);
        self.forward_frags(tag, bytes, &frags);
    }

    fn forward_frags(&mut self, tag: &str, bytes: &[u8], frags: &[FragmentInfo]) {
        for &frag in frags {
            let data = bytes.get(frag.range()).unwrap_or_default().to_vec();
            self.push_up(Some(tag.to_owned()), data);
            if let FragmentInfo::Line {
                announcement: Some(a),
                ..
            } = frag
            {
                if a.mode == LiteralMode::Sync {
                    self.up_queue.push_back(UpItem::Gate {
                        tag: tag.to_owned(),
                    });
                }
            }
        }
    }

    /// Keeps a SASL response line (base64) for meshmail's own login.
    fn record_sasl_response(&mut self, line: &[u8]) {
        let Some((_, responses, _)) = self.sasl.as_mut() else {
            return;
        };
        let text = String::from_utf8_lossy(line);
        let text = text.trim_end_matches(['\r', '\n']);
        if let Ok(decoded) = data_encoding::BASE64.decode(text.as_bytes()) {
            responses.push(Secret::new(decoded));
        }
    }

    fn bad(&mut self, tag: &str, text: &str) {
        self.push_out(Out::Bytes(format!("{tag} BAD {text}\r\n").into_bytes()));
    }

    fn no(&mut self, tag: &str, text: &str) {
        self.push_out(Out::Bytes(format!("{tag} NO {text}\r\n").into_bytes()));
    }
}

/// The mailbox name as the server knows it (modified UTF-7 kept as it is).
fn mailbox_name(mailbox: &Mailbox<'_>) -> String {
    match mailbox {
        Mailbox::Inbox => "INBOX".into(),
        Mailbox::Other(other) => String::from_utf8_lossy(other.as_ref()).into_owned(),
    }
}

/// The `n`th space-separated word of a line (without CRLF).
pub(super) fn word(line: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(line);
    text.trim_end_matches(['\r', '\n'])
        .split(' ')
        .nth(n)
        .unwrap_or_default()
        .to_owned()
}

/// An HTTP request line sent to the IMAP port (cross-protocol attacks): closed at once.
fn looks_like_http(line: &[u8]) -> bool {
    const METHODS: &[&[u8]] = &[
        b"GET ",
        b"POST ",
        b"HEAD ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"CONNECT ",
        b"PATCH ",
        b"TRACE ",
    ];
    METHODS.iter().any(|m| line.starts_with(m))
        || line.windows(6).any(|w| w.eq_ignore_ascii_case(b" HTTP/"))
}
