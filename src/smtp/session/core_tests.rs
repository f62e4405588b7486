//! Scripted tests of the session core: command lines in, actions out, no I/O.

use super::core::{Action, Core, RcptOutcome, Settings};
use super::{Login, MailParams};
use crate::pipeline::{Classified, Refusal};
use crate::smtp::reply::Reply;
use crate::smtp::upstream::Capabilities;

fn settings(loopback: bool) -> Settings {
    Settings {
        hostname: "mx.test".into(),
        max_errors: 10,
        max_recipients: 2,
        max_size: 1000,
        tls_available: true,
        loopback,
    }
}

fn caps() -> Capabilities {
    Capabilities {
        size: Some(1400),
        smtputf8: false,
        eightbitmime: true,
        pipelining: true,
        dsn: true,
        enhanced_status_codes: true,
        auth: vec!["PLAIN".into(), "LOGIN".into()],
        xforward: Vec::new(),
    }
}

fn core() -> Core {
    Core::new(settings(true), caps(), false)
}

/// The reply of an action that is only a reply (or a reset before one).
fn reply(action: Action) -> Reply {
    match action {
        Action::Reply(r) | Action::Reset(r) => r,
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn code(action: Action) -> u16 {
    reply(action).code
}

/// A core greeted, with MAIL accepted upstream.
fn in_transaction() -> Core {
    let mut c = core();
    code(c.command(b"EHLO client\r\n"));
    let Action::Mail { from, params, .. } = c.command(b"MAIL FROM:<a@x.test>\r\n") else {
        panic!("MAIL goes upstream");
    };
    assert_eq!(code(c.mail_answered(Reply::ok(), from, params)), 250);
    c
}

fn accepted(c: &mut Core, address: &str) -> u16 {
    let Action::Rcpt { .. } = c.command(format!("RCPT TO:<{address}>\r\n").as_bytes()) else {
        panic!("RCPT goes to classification");
    };
    code(c.rcpt_answered(RcptOutcome::Answered {
        classified: Box::new(Classified::plain_for_tests(address)),
        params: String::new(),
        reply: Reply::new(250, "2.1.5", "Ok"),
    }))
}

#[test]
fn commands_out_of_order_are_refused_without_touching_the_upstream() {
    let mut c = core();
    assert_eq!(
        code(c.command(b"MAIL FROM:<a@x.test>\r\n")),
        503,
        "MAIL before EHLO"
    );
    assert_eq!(
        code(c.command(b"RCPT TO:<b@x.test>\r\n")),
        503,
        "RCPT before MAIL"
    );
    assert_eq!(code(c.command(b"DATA\r\n")), 503, "DATA before MAIL");
    let mut c = in_transaction();
    assert_eq!(
        code(c.command(b"MAIL FROM:<a@x.test>\r\n")),
        503,
        "nested MAIL"
    );
    assert_eq!(
        code(c.command(b"DATA\r\n")),
        554,
        "DATA without a recipient"
    );
    assert!(
        c.in_transaction(),
        "the transaction survives a refused DATA"
    );
    assert_eq!(code(c.command(b"BDAT 10 LAST\r\n")), 502);
}

#[test]
fn a_transaction_collects_recipients_up_to_the_limit_and_data_hands_it_over() {
    let mut c = in_transaction();
    assert_eq!(accepted(&mut c, "b@x.test"), 250);
    assert_eq!(accepted(&mut c, "c@x.test"), 250);
    assert_eq!(
        code(c.command(b"RCPT TO:<d@x.test>\r\n")),
        452,
        "over max_recipients"
    );
    let Action::Data { max, tx } = c.command(b"DATA\r\n") else {
        panic!("DATA with recipients goes to the driver");
    };
    assert_eq!(max, 1000);
    assert_eq!(tx.from, "a@x.test");
    assert_eq!(tx.rcpts.len(), 2);
    assert!(!c.in_transaction(), "handed over once");
}

#[test]
fn refusals_and_upstream_answers_come_back_as_replies() {
    let mut c = in_transaction();
    let Action::Rcpt { .. } = c.command(b"RCPT TO:<bob@x.test.xx--abc>\r\n") else {
        panic!();
    };
    let r = reply(c.rcpt_answered(RcptOutcome::Refused {
        address: "bob@x.test.xx--abc".into(),
        refusal: Refusal::Temporary("DNS timed out".into()),
    }));
    assert_eq!((r.code, r.enhanced.as_deref()), (451, Some("4.4.3")));
    let Action::Rcpt { .. } = c.command(b"RCPT TO:<carol@x.test>\r\n") else {
        panic!();
    };
    let r = reply(c.rcpt_answered(RcptOutcome::Answered {
        classified: Box::new(Classified::plain_for_tests("carol@x.test")),
        params: String::new(),
        reply: Reply::relayed(550, "5.1.1 <carol@x.test>: Recipient address rejected"),
    }));
    assert_eq!(r.code, 550, "the upstream's refusal, as it came");
    assert_eq!(code(c.command(b"DATA\r\n")), 554, "neither was accepted");
    // A refused MAIL opens nothing.
    let mut c = core();
    code(c.command(b"EHLO client\r\n"));
    let Action::Mail { from, params, .. } = c.command(b"MAIL FROM:<a@x.test>\r\n") else {
        panic!();
    };
    assert_eq!(
        code(c.mail_answered(Reply::relayed(553, "5.7.1 Sender rejected"), from, params)),
        553
    );
    assert!(!c.in_transaction());
}

#[test]
fn auth_needs_tls_off_loopback_and_is_offered_only_then() {
    let mut c = Core::new(settings(false), caps(), false);
    let ehlo = reply(c.command(b"EHLO client\r\n"));
    assert!(ehlo.lines.iter().any(|l| l == "STARTTLS"));
    assert!(
        !ehlo.lines.iter().any(|l| l.starts_with("AUTH")),
        "{ehlo:?}"
    );
    assert_eq!(code(c.command(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")), 538);
    let Action::StartTls(go) = c.command(b"STARTTLS\r\n") else {
        panic!("STARTTLS");
    };
    assert_eq!(go.code, 220);
    c.tls_started();
    // RFC 3207: EHLO again after TLS; then AUTH is offered and starts.
    assert_eq!(code(c.command(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")), 503);
    let ehlo = reply(c.command(b"EHLO client\r\n"));
    assert!(
        ehlo.lines.iter().any(|l| l == "AUTH PLAIN LOGIN"),
        "{ehlo:?}"
    );
    assert!(!ehlo.lines.iter().any(|l| l == "STARTTLS"));
    assert_eq!(code(c.command(b"STARTTLS\r\n")), 503, "TLS already active");
    assert!(matches!(
        c.command(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
        Action::Auth {
            mechanism: "PLAIN",
            ..
        }
    ));
    assert_eq!(code(c.command(b"AUTH CRAM-MD5\r\n")), 504, "not relayed");
    c.authenticated(Some(Login {
        user: "alice".into(),
        account: None,
    }));
    assert_eq!(code(c.command(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n")), 503);
    let ehlo = reply(c.command(b"EHLO client\r\n"));
    assert!(
        !ehlo.lines.iter().any(|l| l.starts_with("AUTH")),
        "not again"
    );
}

#[test]
fn starttls_forgets_the_greeting_and_the_transaction() {
    let mut c = in_transaction();
    assert_eq!(accepted(&mut c, "b@x.test"), 250);
    assert!(matches!(c.command(b"STARTTLS\r\n"), Action::StartTls(_)));
    c.tls_started();
    assert!(!c.in_transaction());
    assert_eq!(
        code(c.command(b"MAIL FROM:<a@x.test>\r\n")),
        503,
        "EHLO again first"
    );
}

#[test]
fn ehlo_offers_what_meshmail_can_keep() {
    let mut c = core();
    let ehlo = reply(c.command(b"EHLO client\r\n"));
    let lines = ehlo.lines.join("|");
    assert!(
        lines.starts_with("mx.test meshmail|PIPELINING|SIZE 1000|8BITMIME"),
        "{lines}"
    );
    assert!(
        lines.contains("|DSN") && !lines.contains("SMTPUTF8"),
        "{lines}"
    );
    assert_eq!(code(c.command(b"EHLO\r\n")), 501);
    // Without SMTPUTF8 upstream, a non-ASCII address is refused with 553 5.6.7.
    let r = reply(c.command("MAIL FROM:<ü@x.test>\r\n".as_bytes()));
    assert_eq!((r.code, r.enhanced.as_deref()), (553, Some("5.6.7")));
    let r = reply(c.command(b"MAIL FROM:<a@x.test> SIZE=5000\r\n"));
    assert_eq!((r.code, r.enhanced.as_deref()), (552, Some("5.3.4")));
}

#[test]
fn too_many_errors_close_the_session_and_http_gets_no_reply() {
    let mut c = Core::new(
        Settings {
            max_errors: 3,
            ..settings(true)
        },
        caps(),
        false,
    );
    for _ in 0..3 {
        assert_eq!(code(c.command(b"NONSENSE\r\n")), 500);
    }
    match c.command(b"NONSENSE\r\n") {
        Action::Close(Some(r)) => assert_eq!((r.code, r.enhanced.as_deref()), (421, Some("4.7.0"))),
        other => panic!("{other:?}"),
    }
    let mut c = core();
    assert!(matches!(
        c.command(b"GET / HTTP/1.1\r\n"),
        Action::Close(None)
    ));
    assert!(matches!(c.line_too_long(), Action::Reply(r) if r.code == 500));
    assert!(matches!(Core::idle(), Action::Close(Some(r)) if r.code == 421));
    assert!(
        matches!(Core::shutting_down(), Action::Close(Some(r)) if r.enhanced.as_deref() == Some("4.3.2"))
    );
}

#[test]
fn rset_ends_the_transaction_and_resets_upstream() {
    let mut c = in_transaction();
    assert!(matches!(c.command(b"RSET\r\n"), Action::Reset(r) if r.code == 250));
    assert!(!c.in_transaction());
    // MAIL parameters that go upstream.
    let Action::Mail { line, params, .. } =
        c.command(b"MAIL FROM:<a@x.test> BODY=8BITMIME RET=HDRS ENVID=a+2Bb\r\n")
    else {
        panic!();
    };
    assert_eq!(
        line,
        "MAIL FROM:<a@x.test> BODY=8BITMIME RET=HDRS ENVID=a+2Bb"
    );
    let MailParams { eightbit, .. } = params;
    assert!(eightbit);
}
