//! The filter session's decisions, without I/O (sans-I/O, as the SMTP and IMAP cores): LMTP
//! (RFC 2033) as Postfix's `lmtp` client speaks it, with XFORWARD. Which command is allowed in
//! which state, every limit, every reply meshmail makes itself. The driver (`session.rs`) reads
//! lines, hands them to [`Core::command`] and carries out the [`Action`] that comes back;
//! recipients come back routed ([`Core::rcpt_answered`]).
//!
//! EHLO is accepted as well, for the documented SMTP alternative (`smtp` transport with
//! `meshfilter_destination_recipient_limit = 1`): then DATA gets one reply, not one per
//! recipient.

use super::route::Route;
use super::xforward::Xforward;
use crate::smtp::reply::Reply;
use crate::smtp::session::MailParams;
use smtp_proto::{MailFrom, RcptTo, Request};

/// What the core knows of its surroundings, fixed for the session.
#[derive(Debug, Clone)]
pub struct Settings {
    pub hostname: String,
    pub max_size: usize,
    pub max_recipients: usize,
    pub max_errors: u32,
    /// The peer may send XFORWARD (the configured peer, or the Unix socket).
    pub xforward: bool,
}

/// LMTP answers each recipient after DATA; SMTP once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Lmtp,
    Smtp,
}

/// One recipient accepted at RCPT.
#[derive(Debug)]
pub struct Accepted {
    /// As the client wrote it.
    pub address: String,
    /// RCPT parameters passed on (NOTIFY, ORCPT), formatted.
    pub params: String,
    pub route: Route,
}

/// A transaction: what the driver needs at DATA.
#[derive(Debug)]
pub struct Envelope {
    pub from: String,
    pub params: MailParams,
    pub xforward: Xforward,
    pub rcpts: Vec<Accepted>,
}

/// The session's protocol state. Typed: a transaction exists only after MAIL.
#[derive(Debug)]
enum State {
    /// Before LHLO.
    Fresh,
    /// Greeted, between transactions; XFORWARD attributes gathered for the next one.
    Ready(Xforward),
    /// MAIL accepted (recipients, if any, in the envelope).
    Mail(Envelope),
}

/// What the driver does next.
#[derive(Debug)]
pub enum Action {
    Reply(Reply),
    /// Send the reply if any, then close.
    Close(Option<Reply>),
    /// Route the recipient (classification, key lookup); then [`Core::rcpt_answered`].
    Rcpt(RcptTo<String>),
    /// `354`, up to `max` bytes, deliver; one reply per recipient in LMTP mode.
    Data {
        max: usize,
        envelope: Envelope,
        mode: Mode,
    },
}

#[derive(Debug)]
pub struct Core {
    settings: Settings,
    state: State,
    mode: Mode,
    errors: u32,
    /// The ORCPT of the RCPT being routed, as it came, when the parser cannot read its form
    /// (RFC 6533 `utf-8;…`): passed on unchanged rather than refusing the recipient.
    raw_orcpt: Option<String>,
}

impl Core {
    pub fn new(settings: Settings) -> Core {
        Core {
            settings,
            state: State::Fresh,
            mode: Mode::Lmtp,
            errors: 0,
            raw_orcpt: None,
        }
    }

    pub fn greeting(&self) -> Reply {
        Reply::new(
            220,
            "",
            format!("{} LMTP meshmail filter ready", self.settings.hostname),
        )
    }

    fn error(&mut self, reply: Reply) -> Action {
        self.errors += 1;
        if self.errors > self.settings.max_errors {
            Action::Close(Some(Reply::too_many_errors()))
        } else {
            Action::Reply(reply)
        }
    }

    pub fn line_too_long(&mut self) -> Action {
        self.error(Reply::line_too_long())
    }

    pub fn idle() -> Action {
        Action::Close(Some(Reply::idle()))
    }

    pub fn shutting_down() -> Action {
        Action::Close(Some(Reply::shutting_down()))
    }

    /// One command line.
    pub fn command(&mut self, line: &[u8]) -> Action {
        if let Some(args) = strip_verb(line, b"XFORWARD") {
            return self.xforward(args);
        }
        let syntax = || Reply::new(500, "5.5.2", "Syntax error");
        self.raw_orcpt = None;
        let request = match Request::parse(&mut line.iter()) {
            Ok(r) => r.into_owned(),
            Err(smtp_proto::Error::InvalidParameter { param: "ORCPT" }) => {
                let Some((stripped, orcpt)) = without_orcpt(line) else {
                    return self.error(syntax());
                };
                match Request::parse(&mut stripped.iter()) {
                    Ok(r @ Request::Rcpt { .. }) => {
                        self.raw_orcpt = Some(orcpt);
                        r.into_owned()
                    }
                    _ => return self.error(syntax()),
                }
            }
            Err(_) => return self.error(syntax()),
        };
        match request {
            Request::Lhlo { host } => self.hello(&host, Mode::Lmtp),
            Request::Ehlo { host } => self.hello(&host, Mode::Smtp),
            Request::Helo { .. } => self.error(Reply::new(500, "5.5.1", "Use LHLO")),
            Request::Mail { from } => self.mail(from),
            Request::Rcpt { to } => self.rcpt(to),
            Request::Data => self.data(),
            Request::Rset => {
                if !matches!(self.state, State::Fresh) {
                    self.state = State::Ready(Xforward::default());
                }
                Action::Reply(Reply::ok())
            }
            Request::Noop { .. } => Action::Reply(Reply::ok()),
            Request::Quit => Action::Close(Some(Reply::new(221, "2.0.0", "Bye"))),
            _ => self.error(Reply::new(502, "5.5.1", "Command not implemented")),
        }
    }

    fn hello(&mut self, host: &str, mode: Mode) -> Action {
        if host.is_empty() {
            return self.error(Reply::new(501, "5.5.4", "Give your host name"));
        }
        self.mode = mode;
        self.state = State::Ready(Xforward::default());
        let mut lines = vec![format!("{} meshmail filter", self.settings.hostname)];
        lines.push("PIPELINING".into());
        lines.push(format!("SIZE {}", self.settings.max_size));
        lines.push("8BITMIME".into());
        lines.push("SMTPUTF8".into());
        lines.push("DSN".into());
        lines.push("ENHANCEDSTATUSCODES".into());
        if self.settings.xforward {
            lines.push(format!(
                "XFORWARD {}",
                super::xforward::ATTRIBUTES.join(" ")
            ));
        }
        Action::Reply(Reply {
            code: 250,
            enhanced: None,
            lines,
        })
    }

    fn xforward(&mut self, args: &str) -> Action {
        if !self.settings.xforward {
            return self.error(Reply::new(550, "5.7.0", "XFORWARD is not allowed from you"));
        }
        let State::Ready(x) = &mut self.state else {
            return self.error(Reply::new(
                503,
                "5.5.1",
                "XFORWARD only between transactions, after LHLO",
            ));
        };
        let mut updated = x.clone();
        match updated.parse_into(args) {
            Ok(()) => {
                *x = updated;
                Action::Reply(Reply::ok())
            }
            Err(e) => self.error(Reply::new(501, "5.5.4", e.to_string())),
        }
    }

    fn mail(&mut self, from: MailFrom<String>) -> Action {
        let xforward = match &mut self.state {
            State::Fresh => return self.error(Reply::new(503, "5.5.1", "Send LHLO first")),
            State::Mail(_) => return self.error(Reply::new(503, "5.5.1", "Nested MAIL command")),
            State::Ready(x) => std::mem::take(x),
        };
        let max = self.settings.max_size;
        if from.size > max {
            return self.error(Reply::new(
                552,
                "5.3.4",
                format!("Message too large: at most {max} bytes"),
            ));
        }
        let mut dsn = String::new();
        if from.flags & smtp_proto::MAIL_RET_FULL != 0 {
            dsn.push_str(" RET=FULL");
        } else if from.flags & smtp_proto::MAIL_RET_HDRS != 0 {
            dsn.push_str(" RET=HDRS");
        }
        if let Some(envid) = &from.env_id {
            dsn.push_str(&format!(" ENVID={}", crate::smtp::session::xtext(envid)));
        }
        let params = MailParams {
            eightbit: from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0,
            smtputf8: from.flags & smtp_proto::MAIL_SMTPUTF8 != 0 || !from.address.is_ascii(),
            dsn,
        };
        self.state = State::Mail(Envelope {
            from: from.address,
            params,
            xforward,
            rcpts: Vec::new(),
        });
        Action::Reply(Reply::new(250, "2.1.0", "OK"))
    }

    fn rcpt(&mut self, to: RcptTo<String>) -> Action {
        let State::Mail(envelope) = &self.state else {
            return self.error(Reply::new(503, "5.5.1", "Send MAIL first"));
        };
        if envelope.rcpts.len() >= self.settings.max_recipients {
            return self.error(Reply::new(
                452,
                "4.5.3",
                "Too many recipients; send the rest in another transaction",
            ));
        }
        Action::Rcpt(to)
    }

    /// The route of a recipient, or the reply refusing it.
    pub fn rcpt_answered(&mut self, to: &RcptTo<String>, routed: Result<Route, Reply>) -> Action {
        let route = match routed {
            Ok(r) => r,
            // A refused recipient is the message's business, not a protocol error.
            Err(reply) => return Action::Reply(reply),
        };
        let State::Mail(envelope) = &mut self.state else {
            return Action::Reply(Reply::new(503, "5.5.1", "Send MAIL first"));
        };
        let note = route.note();
        let mut params = rcpt_params(to);
        if let Some(orcpt) = self.raw_orcpt.take() {
            params.push(' ');
            params.push_str(&orcpt);
        }
        envelope.rcpts.push(Accepted {
            address: to.address.clone(),
            params,
            route,
        });
        Action::Reply(Reply::new(250, "2.1.5", note))
    }

    fn data(&mut self) -> Action {
        match std::mem::replace(&mut self.state, State::Ready(Xforward::default())) {
            State::Mail(envelope) if !envelope.rcpts.is_empty() => Action::Data {
                max: self.settings.max_size,
                envelope,
                mode: self.mode,
            },
            State::Mail(envelope) => {
                self.state = State::Mail(envelope);
                self.error(Reply::new(503, "5.5.1", "No valid recipients"))
            }
            other => {
                self.state = other;
                self.error(Reply::new(503, "5.5.1", "Send MAIL first"))
            }
        }
    }
}

/// `XFORWARD` and what follows it, when `line` is that command.
fn strip_verb<'a>(line: &'a [u8], verb: &[u8]) -> Option<&'a str> {
    let head = line.get(..verb.len())?;
    if !head.eq_ignore_ascii_case(verb) {
        return None;
    }
    let rest = &line[verb.len()..];
    if !rest.is_empty() && !rest[0].is_ascii_whitespace() {
        return None;
    }
    std::str::from_utf8(rest)
        .ok()
        .map(|s| s.trim_end_matches(['\r', '\n']))
}

/// `line` without its ORCPT parameter, and that parameter as it came (printable ASCII, at
/// most 500 bytes: it goes into the reinjection's RCPT line as it is).
fn without_orcpt(line: &[u8]) -> Option<(Vec<u8>, String)> {
    let text = std::str::from_utf8(line)
        .ok()?
        .trim_end_matches(['\r', '\n']);
    let mut orcpt = None;
    let mut kept = Vec::new();
    for word in text.split(' ') {
        if word.len() > 6 && word[..6].eq_ignore_ascii_case("ORCPT=") && orcpt.is_none() {
            orcpt = Some(word.to_owned());
        } else {
            kept.push(word);
        }
    }
    let orcpt = orcpt.filter(|o| o.len() <= 500 && o.bytes().all(|b| (0x21..0x7f).contains(&b)))?;
    let mut stripped = kept.join(" ").into_bytes();
    stripped.extend_from_slice(b"\r\n");
    Some((stripped, orcpt))
}

/// NOTIFY and ORCPT as Postfix sent them, for the reinjection (RFC 3461).
fn rcpt_params(to: &RcptTo<String>) -> String {
    let mut params = crate::smtp::session::notify_param(to.flags);
    if let Some(orcpt) = &to.orcpt {
        params.push_str(&format!(
            " ORCPT=rfc822;{}",
            crate::smtp::session::xtext(orcpt)
        ));
    }
    params
}
