//! The session's decisions, without I/O (sans-I/O, as the IMAP core): which command is allowed
//! in which state, every limit, every reply meshmail makes itself, and the transaction being
//! built. The driver (`mod.rs`) reads lines, hands them to [`Core::command`], and carries out
//! the [`Action`] that comes back; steps that need the upstream, the resolver or the pipeline
//! come back to the core as results ([`Core::mail_answered`], [`Core::rcpt_answered`], ...).
//! Scripted tests drive the core directly (`core_tests.rs`).

use super::{Accepted, Login, MailParams, Transaction};
use crate::pipeline::{Classified, Refusal, Treatment};
use crate::smtp::reply::Reply;
use crate::smtp::upstream::Capabilities;
use smtp_proto::{MailFrom, RcptTo, Request};

/// AUTH mechanisms meshmail relays (those whose login name it can read).
pub const RELAYED: [&str; 4] = ["PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"];

/// What the core knows of its surroundings, fixed for the session.
#[derive(Debug, Clone)]
pub struct Settings {
    pub hostname: String,
    pub max_errors: u32,
    pub max_recipients: usize,
    /// The largest message accepted (the configured limit and the upstream's SIZE).
    pub max_size: usize,
    /// A certificate is configured: STARTTLS can be offered.
    pub tls_available: bool,
    /// The listener is on loopback: AUTH is allowed before TLS.
    pub loopback: bool,
}

/// What the driver does next.
#[derive(Debug)]
pub enum Action {
    /// Send the reply, read the next command.
    Reply(Reply),
    /// Send the reply (if any; none when the client is gone or not speaking SMTP), then close
    /// the session.
    Close(Option<Reply>),
    /// Send the `220`, then start TLS.
    StartTls(Reply),
    /// Relay an AUTH exchange for `mechanism` upstream; then [`Core::authenticated`].
    Auth {
        mechanism: &'static str,
        initial: String,
    },
    /// Open the upstream transaction with `line`; then [`Core::mail_answered`].
    Mail {
        line: String,
        from: String,
        params: MailParams,
    },
    /// Classify the recipient and probe it upstream; then [`Core::rcpt_answered`].
    Rcpt { to: RcptTo<String>, dsn: bool },
    /// `354`, receive up to `max` bytes, deliver the transaction; the driver replies.
    Data { max: usize, tx: Transaction },
    /// End any upstream transaction (RSET), then send the reply.
    Reset(Reply),
}

/// What became of an RCPT the driver carried out.
#[derive(Debug)]
pub enum RcptOutcome {
    /// meshmail refused it (no valid policy, a bad address, a lookup failing for now).
    Refused { address: String, refusal: Refusal },
    /// The upstream answered the probe.
    Answered {
        classified: Box<Classified>,
        params: String,
        reply: Reply,
    },
}

/// The state of one session.
#[derive(Debug)]
pub struct Core {
    settings: Settings,
    caps: Capabilities,
    tls: bool,
    greeted: bool,
    login: Option<Login>,
    tx: Option<Transaction>,
    errors: u32,
}

impl Core {
    pub fn new(settings: Settings, caps: Capabilities, tls: bool) -> Core {
        Core {
            settings,
            caps,
            tls,
            greeted: false,
            login: None,
            tx: None,
            errors: 0,
        }
    }

    pub fn greeting(&self) -> Reply {
        Reply::new(
            220,
            "",
            format!("{} ESMTP meshmail ready", self.settings.hostname),
        )
    }

    pub fn login(&self) -> Option<&Login> {
        self.login.as_ref()
    }

    pub fn in_transaction(&self) -> bool {
        self.tx.is_some()
    }

    /// Counts an error; too many close the session.
    pub fn error(&mut self, reply: Reply) -> Action {
        self.errors += 1;
        if self.errors > self.settings.max_errors {
            Action::Close(Some(Reply::too_many_errors()))
        } else {
            Action::Reply(reply)
        }
    }

    /// A line longer than the limit (discarded up to its end).
    pub fn line_too_long(&mut self) -> Action {
        self.error(Reply::line_too_long())
    }

    /// The client said nothing for too long.
    pub fn idle() -> Action {
        Action::Close(Some(Reply::idle()))
    }

    /// SIGTERM, between commands.
    pub fn shutting_down() -> Action {
        Action::Close(Some(Reply::shutting_down()))
    }

    /// The upstream connection broke.
    pub fn upstream_gone() -> Action {
        Action::Close(Some(Reply::new(
            421,
            "4.4.2",
            "Lost the connection to the mail server; try again later",
        )))
    }

    /// TLS is up: RFC 3207 §4.2, forget everything learned before.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.greeted = false;
        self.tx = None;
    }

    /// One command line.
    pub fn command(&mut self, line: &[u8]) -> Action {
        if looks_like_http(line) {
            // A browser reaching a loopback port: no reply, close at once.
            tracing::warn!("HTTP request on the SMTP port; closed");
            return Action::Close(None);
        }
        let request = match Request::parse(&mut line.iter()) {
            Ok(r) => r.into_owned(),
            Err(e) => return self.error(syntax_reply(e)),
        };
        match request {
            Request::Ehlo { host } => self.ehlo(&host, true),
            Request::Helo { host } => self.ehlo(&host, false),
            Request::Lhlo { .. } => self.error(Reply::new(500, "5.5.1", "LHLO is for LMTP")),
            Request::StartTls => self.starttls(),
            Request::Auth {
                mechanism,
                initial_response,
            } => self.auth(mechanism, initial_response),
            Request::Mail { from } => self.mail(from),
            Request::Rcpt { to } => self.rcpt(to),
            Request::Data => self.data(),
            Request::Bdat { .. } => {
                self.error(Reply::new(502, "5.5.1", "BDAT is not offered; use DATA"))
            }
            Request::Rset => {
                self.tx = None;
                Action::Reset(Reply::ok())
            }
            Request::Noop { .. } => Action::Reply(Reply::ok()),
            Request::Quit => Action::Close(Some(Reply::new(221, "2.0.0", "Bye"))),
            Request::Vrfy { .. } => {
                Action::Reply(Reply::new(252, "2.5.0", "Cannot VRFY; send and see"))
            }
            Request::Help { .. } => {
                Action::Reply(Reply::new(214, "2.0.0", "meshmail: see RFC 5321"))
            }
            Request::Expn { .. }
            | Request::Etrn { .. }
            | Request::Atrn { .. }
            | Request::Burl { .. } => {
                self.error(Reply::new(502, "5.5.1", "Command not implemented"))
            }
        }
    }

    fn ehlo(&mut self, host: &str, extended: bool) -> Action {
        if host.is_empty() {
            return self.error(Reply::new(501, "5.5.4", "Give your host name"));
        }
        self.tx = None;
        self.greeted = true;
        let hostname = self.settings.hostname.clone();
        if !extended {
            return Action::Reset(Reply::new(250, "", hostname));
        }
        let mut lines = vec![format!("{hostname} meshmail")];
        lines.push("PIPELINING".into());
        lines.push(format!("SIZE {}", self.settings.max_size));
        lines.push("8BITMIME".into());
        lines.push("ENHANCEDSTATUSCODES".into());
        if self.caps.smtputf8 {
            lines.push("SMTPUTF8".into());
        }
        if self.caps.dsn {
            lines.push("DSN".into());
        }
        if self.settings.tls_available && !self.tls {
            lines.push("STARTTLS".into());
        }
        let mechs = self.offered_mechanisms();
        if !mechs.is_empty() && self.login.is_none() {
            lines.push(format!("AUTH {}", mechs.join(" ")));
        }
        Action::Reset(Reply {
            code: 250,
            enhanced: None,
            lines,
        })
    }

    /// AUTH mechanisms meshmail relays that the upstream offers; none before TLS unless the
    /// listener is on loopback.
    fn offered_mechanisms(&self) -> Vec<&'static str> {
        if !self.tls && !self.settings.loopback {
            return Vec::new();
        }
        RELAYED
            .iter()
            .copied()
            .filter(|m| self.caps.auth.iter().any(|u| u == m))
            .collect()
    }

    fn starttls(&mut self) -> Action {
        if self.tls {
            return self.error(Reply::new(503, "5.5.1", "TLS already active"));
        }
        if !self.settings.tls_available {
            return self.error(Reply::new(454, "4.7.0", "TLS not available"));
        }
        Action::StartTls(Reply::new(220, "2.0.0", "Ready to start TLS"))
    }

    fn auth(&mut self, flag: u64, initial: String) -> Action {
        if !self.greeted {
            return self.error(Reply::new(503, "5.5.1", "Send EHLO first"));
        }
        if self.login.is_some() {
            return self.error(Reply::new(503, "5.5.1", "Already authenticated"));
        }
        if self.tx.is_some() {
            return self.error(Reply::new(
                503,
                "5.5.1",
                "AUTH not allowed during a mail transaction",
            ));
        }
        if !self.tls && !self.settings.loopback {
            return self.error(Reply::new(
                538,
                "5.7.11",
                "Encryption required: use STARTTLS before AUTH",
            ));
        }
        let name = match flag {
            smtp_proto::AUTH_PLAIN => Some("PLAIN"),
            smtp_proto::AUTH_LOGIN => Some("LOGIN"),
            smtp_proto::AUTH_XOAUTH2 => Some("XOAUTH2"),
            smtp_proto::AUTH_OAUTHBEARER => Some("OAUTHBEARER"),
            _ => None,
        };
        match name.filter(|m| self.offered_mechanisms().contains(m)) {
            Some(mechanism) => Action::Auth { mechanism, initial },
            None => self.error(Reply::new(
                504,
                "5.5.4",
                "Unrecognized authentication mechanism",
            )),
        }
    }

    /// The AUTH exchange ended; `login` when the upstream said `235`.
    pub fn authenticated(&mut self, login: Option<Login>) {
        if login.is_some() {
            self.login = login;
        }
    }

    fn mail(&mut self, from: MailFrom<String>) -> Action {
        if !self.greeted {
            return self.error(Reply::new(503, "5.5.1", "Send EHLO first"));
        }
        if self.tx.is_some() {
            return self.error(Reply::new(503, "5.5.1", "Nested MAIL command"));
        }
        let smtputf8 = from.flags & smtp_proto::MAIL_SMTPUTF8 != 0 || !from.address.is_ascii();
        if smtputf8 && !self.caps.smtputf8 {
            return self.error(Reply::non_ascii_refused());
        }
        let max = self.settings.max_size;
        if from.size > max {
            return self.error(Reply::new(
                552,
                "5.3.4",
                format!("Message too large: at most {max} bytes"),
            ));
        }
        if let Some(account) = self.login.as_ref().and_then(|l| l.account.as_ref()) {
            if account.keys.is_none() {
                return Action::Reply(Reply::new(
                    451,
                    "4.7.0",
                    "meshmail's key store is locked; try again later",
                ));
            }
        }
        let mut dsn = String::new();
        if self.caps.dsn {
            if from.flags & smtp_proto::MAIL_RET_FULL != 0 {
                dsn.push_str(" RET=FULL");
            } else if from.flags & smtp_proto::MAIL_RET_HDRS != 0 {
                dsn.push_str(" RET=HDRS");
            }
            if let Some(envid) = &from.env_id {
                dsn.push_str(&format!(" ENVID={}", xtext(envid)));
            }
        }
        let params = MailParams {
            eightbit: from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0,
            smtputf8,
            dsn,
        };
        Action::Mail {
            line: mail_line(&from.address, &params, true),
            from: from.address,
            params,
        }
    }

    /// The upstream's answer to MAIL.
    pub fn mail_answered(&mut self, reply: Reply, from: String, params: MailParams) -> Action {
        if !reply.is_positive() {
            return self.error(reply);
        }
        self.tx = Some(Transaction {
            from,
            params,
            rcpts: Vec::new(),
        });
        Action::Reply(reply)
    }

    fn rcpt(&mut self, to: RcptTo<String>) -> Action {
        let Some(tx) = &self.tx else {
            return self.error(Reply::new(503, "5.5.1", "Send MAIL first"));
        };
        if tx.rcpts.len() >= self.settings.max_recipients {
            return self.error(Reply::new(
                452,
                "4.5.3",
                "Too many recipients; send the rest in another message",
            ));
        }
        if !to.address.is_ascii() && !self.caps.smtputf8 {
            return self.error(Reply::non_ascii_refused());
        }
        Action::Rcpt {
            to,
            dsn: self.caps.dsn,
        }
    }

    /// What became of an RCPT.
    pub fn rcpt_answered(&mut self, outcome: RcptOutcome) -> Action {
        match outcome {
            RcptOutcome::Refused { address, refusal } => {
                self.error(refusal_reply(&address, refusal))
            }
            RcptOutcome::Answered {
                classified,
                params,
                reply,
            } if reply.is_positive() => {
                let note = match classified.treatment() {
                    Treatment::Plain(_) => "OK".to_owned(),
                    Treatment::Encrypt(e) => {
                        format!("OK, will be encrypted ({})", e.format.name())
                    }
                };
                if let Some(tx) = &mut self.tx {
                    tx.rcpts.push(Accepted {
                        classified: *classified,
                        params,
                    });
                }
                Action::Reply(Reply::new(250, "2.1.5", note))
            }
            RcptOutcome::Answered { reply, .. } => self.error(reply),
        }
    }

    fn data(&mut self) -> Action {
        let Some(tx) = self.tx.take() else {
            return self.error(Reply::new(503, "5.5.1", "Send MAIL first"));
        };
        if tx.rcpts.is_empty() {
            self.tx = Some(tx);
            return self.error(Reply::new(554, "5.5.1", "No valid recipients"));
        }
        Action::Data {
            max: self.settings.max_size,
            tx,
        }
    }
}

fn syntax_reply(e: smtp_proto::Error) -> Reply {
    match e {
        smtp_proto::Error::UnknownCommand => Reply::new(500, "5.5.1", "Command unrecognized"),
        smtp_proto::Error::InvalidSenderAddress => {
            Reply::new(553, "5.1.7", "Sender address is not valid")
        }
        smtp_proto::Error::InvalidRecipientAddress => {
            Reply::new(553, "5.1.3", "Recipient address is not valid")
        }
        smtp_proto::Error::SyntaxError { syntax } => {
            Reply::new(501, "5.5.4", format!("Syntax: {syntax}"))
        }
        smtp_proto::Error::InvalidParameter { param } => {
            Reply::new(501, "5.5.4", format!("Invalid parameter {param}"))
        }
        smtp_proto::Error::UnsupportedParameter { param } => {
            Reply::new(504, "5.5.4", format!("Unsupported parameter {param}"))
        }
        _ => Reply::new(500, "5.5.2", "Syntax error"),
    }
}

/// The MAIL line for the upstream. Encrypted copies are 7-bit, so BODY=8BITMIME is only
/// passed for plaintext copies.
pub(crate) fn mail_line(from: &str, params: &MailParams, plain: bool) -> String {
    let mut line = format!("MAIL FROM:<{from}>");
    if plain && params.eightbit {
        line.push_str(" BODY=8BITMIME");
    }
    if params.smtputf8 {
        line.push_str(" SMTPUTF8");
    }
    line.push_str(&params.dsn);
    line
}

/// The ` NOTIFY=…` parameter of an RCPT as smtp-proto parsed it (RFC 3461), or nothing.
pub(crate) fn notify_param(flags: u64) -> String {
    let notify: Vec<&str> = [
        (smtp_proto::RCPT_NOTIFY_SUCCESS, "SUCCESS"),
        (smtp_proto::RCPT_NOTIFY_FAILURE, "FAILURE"),
        (smtp_proto::RCPT_NOTIFY_DELAY, "DELAY"),
        (smtp_proto::RCPT_NOTIFY_NEVER, "NEVER"),
    ]
    .iter()
    .filter(|(f, _)| flags & f != 0)
    .map(|(_, n)| *n)
    .collect();
    if notify.is_empty() {
        String::new()
    } else {
        format!(" NOTIFY={}", notify.join(","))
    }
}

/// RFC 3461 §4: xtext encoding.
pub(crate) fn xtext(text: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if (33..=126).contains(&b) && b != b'+' && b != b'=' {
            out.push(b as char);
        } else {
            out.push_str(&format!("+{b:02X}"));
        }
    }
    out
}

pub(crate) fn refusal_reply(address: &str, refusal: Refusal) -> Reply {
    match refusal {
        Refusal::BadAddress(e) => Reply::new(
            553,
            "5.1.3",
            format!("Bad fingerprint address {address}: {e}"),
        ),
        Refusal::NoValidPolicy(why) => Reply::new(
            550,
            "5.7.1",
            format!("Cannot send to {address} securely: {why}. Nothing was sent"),
        ),
        Refusal::Temporary(why) => Reply::new(
            451,
            "4.4.3",
            format!("Cannot check the policy of {address} now ({why}); try again later"),
        ),
    }
}

/// A line that starts like an HTTP request or header (browsers can reach loopback ports).
fn looks_like_http(line: &[u8]) -> bool {
    const STARTS: [&[u8]; 8] = [
        b"GET ",
        b"POST ",
        b"PUT ",
        b"HEAD ",
        b"CONNECT ",
        b"OPTIONS ",
        b"DELETE ",
        b"HOST:",
    ];
    let upper: Vec<u8> = line.iter().take(10).map(u8::to_ascii_uppercase).collect();
    STARTS.iter().any(|s| upper.starts_with(s))
}
