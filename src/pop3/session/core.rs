//! The POP3 session core, without I/O: it is fed the client's bytes, the server's bytes and
//! the views its jobs built, and leaves what to write to each side, the job to run and what the
//! connection must do next in its fields. The driver (`super`) does the reading and writing.
//!
//! One command at a time: the next client line is read only once the server has answered the
//! last one and any view it needed is built, so answers keep the client's order and a
//! pipelined STLS is seen for what it is. Commands are relayed as the client wrote them; what a
//! mapped session is answered differently:
//!
//! - `RETR` and `TOP` of an encrypted message: the decrypted view (a [`Job`]), or
//!   `-ERR [SYS/TEMP]` when it cannot be built now;
//! - `LIST` and `STAT`: from the scan listing meshmail read after the login, with the sizes
//!   `RETR` serves;
//! - `CAPA`: the server's list as meshmail offers it.

use super::maildrop::{self, Maildrop};
use super::state::{Account, Mapped, PendingLogin, Sasl, State};
use crate::imap::view::{mime, Treatment};
use crate::pop3::command::{line_limit, Command, CommandError, MAX_SASL_LINE};
use crate::pop3::reply::{unstuff, Reply, ReplyFramer};
use crate::pop3::Pop3Context;
use crate::secret::Secret;
use std::collections::VecDeque;
use std::sync::Arc;

/// The longest header a message's treatment is read from.
const MAX_HEADER: usize = 1024 * 1024;
/// Client bytes buffered at most before the client is no longer read.
const MAX_CLIENT_BUFFER: usize = 64 * 1024;
/// `TOP n` with this many lines is the whole message (RFC 1939 §7), without RETR's side
/// effects (a server marks a retrieved message seen).
const WHOLE: &str = "999999999";

/// What the connection does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Control {
    Run,
    /// Write what is queued for the client, then start TLS on the client link.
    StartTls,
    /// A login other than a mapped one: write what is queued, then copy bytes both ways.
    Relay,
    /// Write what is queued for the client, then close.
    Close,
}

/// A view to build (on a blocking thread) for a message of a mapped session.
pub(super) struct Job {
    pub mapped: Arc<Mapped>,
    /// The message as the server stores it.
    pub raw: Vec<u8>,
    pub n: u32,
    pub answer: Answer,
}

/// What a message's view answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    Retr,
    /// TOP with this many body lines.
    Top(u32),
    /// `LIST n` of a message whose size through meshmail is not known yet.
    List,
}

/// What the job made.
pub(super) type JobResult = Result<Arc<crate::imap::view::View>, String>;

/// The server reply awaited, and what it answers.
enum Awaiting {
    /// Passed to the client as it came.
    Relay {
        multiline: bool,
    },
    Capa,
    /// `AUTH` alone: the server's mechanisms, as meshmail offers them.
    AuthList,
    User(String),
    Login(PendingLogin),
    ScanList,
    ScanUidl,
    Retr(u32),
    /// The client's TOP: shown as it came unless the header says encrypted.
    TopProbe(u32, u32),
    /// `TOP n 0` for a `LIST n` whose size is not known: is the message encrypted?
    SizeProbe(u32),
    /// The whole message, fetched with TOP (a server marks what RETR reads as seen), for
    /// the view a TOP or LIST of an encrypted message needs.
    Whole(u32, Answer),
    Dele(u32),
    Rset,
    Quit,
}

impl Awaiting {
    fn multiline(&self) -> bool {
        match self {
            Awaiting::Relay { multiline } => *multiline,
            Awaiting::Capa
            | Awaiting::AuthList
            | Awaiting::ScanList
            | Awaiting::ScanUidl
            | Awaiting::Retr(_)
            | Awaiting::TopProbe(..)
            | Awaiting::SizeProbe(_)
            | Awaiting::Whole(..) => true,
            _ => false,
        }
    }
}

pub(super) struct Core {
    pub ctx: Arc<Pop3Context>,
    pub peer: String,
    pub state: State,
    /// The client link is TLS (implicit, or after STLS).
    tls: bool,
    loopback: bool,
    client_in: Vec<u8>,
    framer: ReplyFramer,
    /// The command whose reply is awaited (one at a time: not every server pipelines).
    in_flight: Option<Awaiting>,
    /// meshmail's own commands waiting to be sent.
    queued: VecDeque<(Vec<u8>, Awaiting)>,
    /// The login whose SASL exchange waits for the client's next line (a response, not a
    /// command).
    sasl_turn: Option<PendingLogin>,
    maildrop: Option<Maildrop>,
    /// The mapped account's size book, from its login on (kept past QUIT, to be saved).
    sizes: Option<Arc<crate::pop3::sizes::SizeBook>>,
    /// Bytes for the client and for the server, taken by the driver.
    pub to_client: Vec<u8>,
    pub to_upstream: Vec<u8>,
    /// The view to build, taken by the driver; answered with [`Core::job_done`].
    pub job: Option<Job>,
    job_running: bool,
    pub control: Control,
    errors: u32,
    /// The longest reply read whole (a message is held in memory to be decrypted).
    max_reply: usize,
}

impl Core {
    pub fn new(ctx: Arc<Pop3Context>, peer: String, tls: bool, loopback: bool) -> Core {
        // An armoured message is about 1.37 times its plaintext.
        let max = ctx.limits.max_message_size.saturating_mul(2);
        Core {
            ctx,
            peer,
            state: State::Authorization { user: None },
            tls,
            loopback,
            client_in: Vec::new(),
            framer: ReplyFramer::new(max),
            in_flight: None,
            queued: VecDeque::new(),
            sasl_turn: None,
            maildrop: None,
            sizes: None,
            to_client: Vec::new(),
            to_upstream: Vec::new(),
            job: None,
            job_running: false,
            control: Control::Run,
            errors: 0,
            max_reply: max,
        }
    }

    /// The client link became TLS (STLS done).
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.control = Control::Run;
        // RFC 2595 §4: what was said before TLS is forgotten.
        self.state = State::Authorization { user: None };
    }

    /// The driver may read more from the client.
    pub fn wants_client_bytes(&self) -> bool {
        self.control == Control::Run && self.client_in.len() < MAX_CLIENT_BUFFER
    }

    /// A reply is awaited (the upstream timeout applies, not the client's idle time).
    pub fn awaits_upstream(&self) -> bool {
        self.in_flight.is_some()
    }

    /// The mapped account, in TRANSACTION.
    pub fn mapped(&self) -> Option<&Arc<Mapped>> {
        match &self.state {
            State::Transaction(m) => Some(m),
            _ => None,
        }
    }

    /// The size book of the mapped account this session logged in as.
    pub fn size_book(&self) -> Option<&Arc<crate::pop3::sizes::SizeBook>> {
        self.sizes.as_ref()
    }

    /// What the client sent and the server sent that the core has not used: after a relayed
    /// login, the driver passes them on before copying bytes both ways.
    pub fn take_unread(&mut self) -> (Vec<u8>, Vec<u8>) {
        (
            std::mem::take(&mut self.client_in),
            self.framer.take_buffered(),
        )
    }

    pub fn on_client_bytes(&mut self, bytes: &[u8]) {
        self.client_in.extend_from_slice(bytes);
        self.step();
    }

    pub fn on_upstream_bytes(&mut self, bytes: &[u8]) {
        self.framer.push(bytes);
        while let Some(awaiting) = self.in_flight.take() {
            match self.framer.next(awaiting.multiline()) {
                None => {
                    self.in_flight = Some(awaiting);
                    return;
                }
                Some(Err(_)) => {
                    self.reply_to_client(b"-ERR [SYS/PERM] The message is larger than meshmail's limit ([limits] max_message_size)\r\n");
                    self.control = Control::Close;
                    return;
                }
                Some(Ok(reply)) => {
                    self.answer(awaiting, reply);
                    self.send_queued();
                }
            }
        }
        if self.control == Control::Run && self.in_flight.is_none() && self.framer.is_mid_reply() {
            // The server spoke unasked (a BYE-like line on timeout): nothing to relate it to.
            self.control = Control::Close;
            return;
        }
        self.step();
    }

    /// The server closed the connection or stopped answering: the client is told, and never
    /// given part of a message as if it were whole.
    pub fn on_upstream_closed(&mut self) {
        if self.control != Control::Run {
            return;
        }
        let reply: &[u8] = if self.framer.is_mid_reply() {
            b"-ERR [SYS/TEMP] The mail server stopped in the middle of a reply\r\n"
        } else {
            b"-ERR [SYS/TEMP] The mail server closed the connection\r\n"
        };
        if self.in_flight.is_some() || matches!(self.state, State::Transaction(_)) {
            self.reply_to_client(reply);
        }
        self.control = Control::Close;
    }

    /// The view a job built, or why it could not be built now.
    pub fn job_done(&mut self, job_n: u32, answer: Answer, result: JobResult) {
        self.job_running = false;
        match result {
            Ok(view) => self.shown(job_n, answer, view.message(), true),
            Err(reason) if answer == Answer::List => {
                // A size is still owed: the estimate (see `Message::size`).
                tracing::warn!(peer = %self.peer, n = job_n, %reason, "POP3: a message could not be opened now");
                self.list_one(job_n);
            }
            Err(reason) => {
                tracing::warn!(peer = %self.peer, n = job_n, %reason, "POP3: a message could not be opened now");
                let line = format!("-ERR [SYS/TEMP] {}\r\n", one_line(&reason));
                self.reply_to_client(line.as_bytes());
            }
        }
        self.step();
    }

    /// Handles client lines while nothing else is pending.
    fn step(&mut self) {
        while self.control == Control::Run
            && self.in_flight.is_none()
            && self.queued.is_empty()
            && !self.job_running
        {
            let max = if self.sasl_turn.is_some() {
                MAX_SASL_LINE
            } else {
                line_limit(&self.client_in)
            };
            let Some(nl) = self.client_in.iter().position(|&b| b == b'\n') else {
                if self.client_in.len() > max {
                    self.reply_to_client(b"-ERR Line too long\r\n");
                    self.control = Control::Close;
                }
                return;
            };
            if nl + 1 > max {
                self.reply_to_client(b"-ERR Line too long\r\n");
                self.control = Control::Close;
                return;
            }
            let line: Vec<u8> = self.client_in.drain(..=nl).collect();
            if let Some(pending) = self.sasl_turn.take() {
                self.sasl_response(pending, line);
            } else {
                self.command(line);
            }
        }
    }

    fn command(&mut self, line: Vec<u8>) {
        let command = match Command::parse(&line) {
            Ok(c) => c,
            Err(e) => {
                let reply = match e {
                    CommandError::Unknown => "-ERR Unknown command\r\n".to_owned(),
                    CommandError::Arguments(name) => format!("-ERR Wrong arguments for {name}\r\n"),
                    CommandError::TooLong => "-ERR Line too long\r\n".to_owned(),
                    CommandError::NotText => "-ERR Not a command line\r\n".to_owned(),
                };
                self.refuse(reply.as_bytes());
                return;
            }
        };
        match std::mem::replace(&mut self.state, State::Update) {
            State::Authorization { user } => {
                self.state = State::Authorization { user: user.clone() };
                self.authorization(command, line, user);
            }
            State::Transaction(mapped) => {
                self.state = State::Transaction(mapped);
                self.transaction(command, line);
            }
            other => {
                // Nothing is read while a login is in flight or after QUIT.
                self.state = other;
            }
        }
    }

    fn authorization(&mut self, command: Command, line: Vec<u8>, user: Option<String>) {
        let login_allowed = self.tls || self.loopback;
        match command {
            Command::Capa => self.relay(line, Awaiting::Capa),
            Command::AuthList if login_allowed => self.relay(line, Awaiting::AuthList),
            Command::Stls => self.stls(),
            Command::Quit => self.relay(line, Awaiting::Quit),
            Command::User(_)
            | Command::Pass(_)
            | Command::Apop(_)
            | Command::Auth { .. }
            | Command::AuthList
                if !login_allowed =>
            {
                self.refuse(b"-ERR [AUTH] Log in over TLS: use STLS first\r\n");
            }
            Command::User(name) => self.relay(line, Awaiting::User(name)),
            Command::Pass(_) => {
                let pending = PendingLogin { user, sasl: None };
                self.state = State::Authenticating;
                self.relay(line, Awaiting::Login(pending));
            }
            Command::Apop(name) => {
                self.state = State::Authenticating;
                self.relay(
                    line,
                    Awaiting::Login(PendingLogin {
                        user: Some(name),
                        sasl: None,
                    }),
                );
            }
            Command::Auth { mechanism, .. } if !crate::sasl::can_tell_user(&mechanism) => {
                self.refuse(
                    b"-ERR [AUTH] meshmail cannot tell who this mechanism logs in: use PLAIN or LOGIN\r\n",
                );
            }
            Command::Auth { mechanism, initial } => {
                let mut responses = Vec::new();
                if let Some(ir) = initial {
                    match decode_response(ir.expose()) {
                        Some(r) => responses.push(r),
                        None => {
                            self.refuse(b"-ERR Initial response is not base64\r\n");
                            return;
                        }
                    }
                }
                self.state = State::Authenticating;
                self.relay(
                    line,
                    Awaiting::Login(PendingLogin {
                        user: None,
                        sasl: Some(Sasl {
                            mechanism,
                            responses,
                        }),
                    }),
                );
            }
            _ => self.refuse(b"-ERR Log in first\r\n"),
        }
    }

    /// STLS (RFC 2595 §4): only before login, only where meshmail has a certificate, and only
    /// when nothing follows it: bytes after STLS were sent in plaintext and must not be read
    /// as if they came over TLS.
    fn stls(&mut self) {
        if self.tls || self.ctx.tls.is_none() {
            self.refuse(b"-ERR STLS is not available\r\n");
        } else if !self.client_in.is_empty() {
            tracing::warn!(peer = %self.peer, "POP3: commands pipelined after STLS: closing");
            self.reply_to_client(b"-ERR Commands were sent after STLS in plaintext: closing\r\n");
            self.control = Control::Close;
        } else {
            self.reply_to_client(b"+OK Begin TLS negotiation\r\n");
            self.control = Control::StartTls;
        }
    }

    fn sasl_response(&mut self, mut pending: PendingLogin, line: Vec<u8>) {
        let text = trim_line(&line);
        if text != b"*" {
            match decode_response(text) {
                Some(r) => {
                    if let Some(s) = pending.sasl.as_mut() {
                        s.responses.push(r);
                    }
                }
                // Not base64: the server refuses it; the session stays unmapped either way.
                None => pending.sasl = None,
            }
        }
        self.relay(line, Awaiting::Login(pending));
    }

    fn transaction(&mut self, command: Command, line: Vec<u8>) {
        match command {
            Command::Stat => match &self.maildrop {
                Some(m) => {
                    let stat = m.stat();
                    self.reply_to_client(&stat);
                }
                None => self.relay(line, Awaiting::Relay { multiline: false }),
            },
            Command::List(n) => match (&self.maildrop, n) {
                (Some(m), None) => {
                    let listing = m.listing();
                    self.reply_to_client(&listing);
                }
                (Some(m), Some(n)) => match m.get(n) {
                    // Not known yet: this one message is looked at (and decrypted when it
                    // is encrypted, which its RETR then finds done), so that the size a
                    // client checks a RETR against is the one RETR serves.
                    Some(msg) if msg.served.is_none() && !self.too_large(n) => {
                        self.relay(
                            format!("TOP {n} 0\r\n").into_bytes(),
                            Awaiting::SizeProbe(n),
                        );
                    }
                    _ => {
                        let one = m.list_one(n);
                        self.reply_to_client(&one);
                    }
                },
                (None, n) => self.relay(
                    line,
                    Awaiting::Relay {
                        multiline: n.is_none(),
                    },
                ),
            },
            Command::Uidl(n) => self.relay(
                line,
                Awaiting::Relay {
                    multiline: n.is_none(),
                },
            ),
            // Refused before it is asked for: the session goes on with the other messages.
            Command::Retr(n) if self.too_large(n) => self.reply_to_client(TOO_LARGE),
            Command::Retr(n) => self.relay(line, Awaiting::Retr(n)),
            Command::Top(n, k) => self.relay(line, Awaiting::TopProbe(n, k)),
            Command::Dele(n) => self.relay(line, Awaiting::Dele(n)),
            Command::Rset => self.relay(line, Awaiting::Rset),
            Command::Noop => self.relay(line, Awaiting::Relay { multiline: false }),
            Command::Quit => self.relay(line, Awaiting::Quit),
            Command::Capa => self.relay(line, Awaiting::Capa),
            _ => self.refuse(b"-ERR Already logged in\r\n"),
        }
    }

    /// What to do with the server's reply to `awaiting`.
    fn answer(&mut self, awaiting: Awaiting, reply: Reply) {
        match awaiting {
            Awaiting::Relay { .. } => self.pass(&reply),
            Awaiting::Capa => match (&reply.body, reply.ok) {
                (Some(body), true) => {
                    let offer = !self.tls
                        && self.ctx.tls.is_some()
                        && matches!(self.state, State::Authorization { .. });
                    let shown = maildrop::capabilities(body, offer, self.tls || self.loopback);
                    self.reply_to_client(&shown);
                }
                _ => self.pass(&reply),
            },
            Awaiting::AuthList => match (&reply.body, reply.ok) {
                (Some(body), true) => {
                    let shown = maildrop::mechanisms(body);
                    self.reply_to_client(&shown);
                }
                _ => self.pass(&reply),
            },
            Awaiting::User(name) => {
                if let State::Authorization { user } = &mut self.state {
                    *user = reply.ok.then_some(name);
                }
                self.pass(&reply);
            }
            Awaiting::Login(pending) => {
                if is_continuation(&reply) {
                    // The client answers the challenge on its next line.
                    self.sasl_turn = Some(pending);
                    self.pass(&reply);
                    return;
                }
                self.pass(&reply);
                match State::logged_in(pending, reply.ok, &self.ctx.accounts) {
                    Err(back) => self.state = back,
                    Ok(Account::Other) => {
                        self.state = State::Update;
                        self.control = Control::Relay;
                    }
                    Ok(Account::Mapped(mapped)) => {
                        tracing::info!(peer = %self.peer, user = %mapped.user, "POP3 login of a mapped account");
                        self.sizes = mapped.account.sizes.clone();
                        self.state = State::Transaction(mapped);
                        self.queued
                            .push_back((b"LIST\r\n".to_vec(), Awaiting::ScanList));
                    }
                }
            }
            Awaiting::ScanList => {
                self.maildrop = match (reply.ok, &reply.body) {
                    (true, Some(body)) => Maildrop::from_listing(&unstuff(body)),
                    _ => None,
                };
                if self.maildrop.is_some() {
                    self.queued
                        .push_back((b"UIDL\r\n".to_vec(), Awaiting::ScanUidl));
                }
            }
            Awaiting::ScanUidl => {
                if let (Some(m), true, Some(body)) = (&mut self.maildrop, reply.ok, &reply.body) {
                    m.add_uidls(&unstuff(body));
                }
                self.sizes_from_book();
            }
            Awaiting::Retr(n) => self.message(n, Answer::Retr, reply, true),
            Awaiting::TopProbe(n, k) => {
                match (reply.ok, reply.body.as_deref().map(probe_treatment)) {
                    (true, Some(Some(Treatment::Decrypt) | None)) => {
                        self.fetch_whole(n, Answer::Top(k))
                    }
                    // The client's own TOP: the header and k lines, not the whole message.
                    _ => self.message(n, Answer::Top(k), reply, false),
                }
            }
            Awaiting::SizeProbe(n) => {
                match (reply.ok, reply.body.as_deref().map(probe_treatment)) {
                    (true, Some(Some(Treatment::AsStored))) => {
                        // Served as stored: the server's size is the size.
                        if let Some(m) = self.maildrop.as_ref().and_then(|m| m.get(n)) {
                            let size = m.server_size;
                            self.learned_size(n, size);
                        }
                        self.list_one(n);
                    }
                    (true, Some(_)) => self.fetch_whole(n, Answer::List),
                    _ => self.list_one(n),
                }
            }
            Awaiting::Whole(n, answer) => self.message(n, answer, reply, true),
            Awaiting::Dele(n) => {
                if reply.ok {
                    if let Some(m) = self.maildrop.as_mut().and_then(|m| m.get_mut(n)) {
                        m.deleted = true;
                    }
                }
                self.pass(&reply);
            }
            Awaiting::Rset => {
                if reply.ok {
                    if let Some(m) = self.maildrop.as_mut() {
                        m.undelete();
                    }
                }
                self.pass(&reply);
            }
            Awaiting::Quit => {
                self.pass(&reply);
                self.state = State::Update;
                self.control = Control::Close;
            }
        }
    }

    /// The server's answer with message `n` (`whole`: all of it, by RETR or TOP; else the
    /// client's TOP, the header and some lines), as a mapped session shows it. Only a whole
    /// message tells its size.
    fn message(&mut self, n: u32, answer: Answer, reply: Reply, whole: bool) {
        let (true, Some(body), Some(mapped)) = (reply.ok, &reply.body, self.mapped().cloned())
        else {
            if answer == Answer::List {
                self.list_one(n);
            } else {
                self.pass(&reply);
            }
            return;
        };
        let raw = unstuff(body);
        match treatment_of(&raw) {
            Treatment::AsStored => {
                if whole {
                    self.learned_size(n, raw.len() as u64);
                }
                match answer {
                    Answer::List => self.list_one(n),
                    _ => self.pass(&reply),
                }
            }
            Treatment::StripForgedResult => {
                let shown = crate::imap::view::compose::without_result_fields(&raw);
                self.shown(n, answer, &shown, whole);
            }
            Treatment::Decrypt => {
                self.job = Some(Job {
                    mapped,
                    raw,
                    n,
                    answer,
                });
                self.job_running = true;
            }
        }
    }

    /// Answers from `shown`, the message as meshmail shows it (`whole`, or its header and the
    /// lines a TOP asked for).
    fn shown(&mut self, n: u32, answer: Answer, shown: &[u8], whole: bool) {
        let served = maildrop::served_len(shown);
        if whole {
            self.learned_size(n, served);
        }
        match answer {
            Answer::Retr => {
                let reply = maildrop::multiline(&format!("+OK {served} octets"), shown);
                self.reply_to_client(&reply);
            }
            Answer::Top(k) => {
                let reply = maildrop::multiline("+OK", maildrop::top(shown, k));
                self.reply_to_client(&reply);
            }
            Answer::List => self.list_one(n),
        }
    }

    /// `LIST n` from the listing.
    fn list_one(&mut self, n: u32) {
        let reply = match &self.maildrop {
            Some(m) => m.list_one(n),
            None => maildrop::NO_SUCH_MESSAGE.to_vec(),
        };
        self.reply_to_client(&reply);
    }

    /// Asks for the whole message `n` without RETR's side effects.
    fn fetch_whole(&mut self, n: u32, answer: Answer) {
        if self.too_large(n) {
            match answer {
                Answer::List => self.list_one(n),
                _ => self.reply_to_client(TOO_LARGE),
            }
            return;
        }
        self.queued.push_back((
            format!("TOP {n} {WHOLE}\r\n").into_bytes(),
            Awaiting::Whole(n, answer),
        ));
    }

    /// Message `n` is larger than meshmail reads whole (by the server's scan listing).
    fn too_large(&self, n: u32) -> bool {
        self.maildrop
            .as_ref()
            .and_then(|m| m.get(n))
            .is_some_and(|m| m.server_size > self.max_reply as u64)
    }

    /// Remembers the served size of message `n` (for LIST and STAT, and in the size book).
    fn learned_size(&mut self, n: u32, served: u64) {
        let book = self.sizes.clone();
        let Some(m) = self.maildrop.as_mut().and_then(|m| m.get_mut(n)) else {
            return;
        };
        m.served = Some(served);
        if let (Some(uidl), Some(book)) = (&m.uidl, book) {
            book.set(uidl, m.server_size, served);
        }
    }

    /// Fills the sizes the book knows.
    fn sizes_from_book(&mut self) {
        let Some(book) = self.sizes.clone() else {
            return;
        };
        if let Some(m) = self.maildrop.as_mut() {
            for msg in &mut m.messages {
                if let Some(uidl) = &msg.uidl {
                    msg.served = book.get(uidl, msg.server_size);
                }
            }
        }
    }

    fn relay(&mut self, line: Vec<u8>, awaiting: Awaiting) {
        self.to_upstream.extend_from_slice(&line);
        self.in_flight = Some(awaiting);
    }

    fn send_queued(&mut self) {
        if self.in_flight.is_none() && self.control == Control::Run {
            if let Some((line, awaiting)) = self.queued.pop_front() {
                self.relay(line, awaiting);
            }
        }
    }

    /// The server's reply as it came.
    fn pass(&mut self, reply: &Reply) {
        self.to_client.extend_from_slice(&reply.line);
        if let Some(body) = &reply.body {
            self.to_client.extend_from_slice(body);
            self.to_client.extend_from_slice(b".\r\n");
        }
    }

    fn reply_to_client(&mut self, bytes: &[u8]) {
        self.to_client.extend_from_slice(bytes);
    }

    /// A command refused by meshmail itself; too many and the session ends.
    fn refuse(&mut self, reply: &[u8]) {
        self.reply_to_client(reply);
        self.errors += 1;
        if self.errors >= self.ctx.limits.max_errors {
            self.reply_to_client(b"-ERR Too many errors\r\n");
            self.control = Control::Close;
        }
    }
}

/// `-ERR` for a message too large to read whole: it stays on the server, untouched.
const TOO_LARGE: &[u8] =
    b"-ERR [SYS/PERM] This message is larger than meshmail reads ([limits] max_message_size); it stays on the server\r\n";

/// The treatment a TOP answer's header says, when it says it for sure: `None` when the header
/// does not end in an empty line within the answer (a server may cut a header where meshmail's
/// parser would not, e.g. at a line starting with CR; then only the whole message can tell).
fn probe_treatment(body: &[u8]) -> Option<Treatment> {
    let raw = unstuff(body);
    let header = header_of(&raw);
    let ends = header.ends_with(b"\n\r\n") || header.ends_with(b"\n\n") || header == b"\r\n";
    ends.then(|| treatment_of(&raw))
}

fn treatment_of(message: &[u8]) -> Treatment {
    Treatment::of(&mime::parse(header_of(message)))
}

/// The header a message's treatment is read from, at most [`MAX_HEADER`] (it is parsed on the
/// reactor; a sender's header without an end would otherwise be the whole message). A longer
/// one is judged by its start: its Content-Type, if beyond, is not seen and the message is
/// shown as stored, never decrypted into something else.
fn header_of(message: &[u8]) -> &[u8] {
    let header = mime::header_section(message);
    &header[..header.len().min(MAX_HEADER)]
}

/// `+ challenge` (RFC 5034 §4).
fn is_continuation(reply: &Reply) -> bool {
    reply.line.starts_with(b"+ ") || reply.line == b"+\r\n"
}

fn trim_line(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// A SASL response: base64, `=` for an empty one.
fn decode_response(text: impl AsRef<[u8]>) -> Option<crate::secret::SecretBytes> {
    let text = text.as_ref();
    if text == b"=" {
        return Some(Secret::new(Vec::new()));
    }
    data_encoding::BASE64.decode(text).ok().map(Secret::new)
}

fn one_line(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(200)
        .collect()
}
