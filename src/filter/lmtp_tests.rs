//! The filter's LMTP core, scripted without I/O.

use super::lmtp::{Action, Core, Mode, Settings};
use super::route::Route;
use crate::smtp::reply::Reply;

fn core(xforward: bool) -> Core {
    Core::new(Settings {
        hostname: "filter.test".into(),
        max_size: 1000,
        max_recipients: 2,
        max_errors: 6,
        xforward,
    })
}

fn reply(a: Action) -> Reply {
    match a {
        Action::Reply(r) => r,
        other => panic!("expected a reply, got {other:?}"),
    }
}

fn local(address: &str) -> Route {
    Route::Local {
        address: address.into(),
        key: None,
    }
}

/// RCPT routed as a local mailbox.
fn rcpt(c: &mut Core, line: &str) -> Reply {
    match c.command(line.as_bytes()) {
        Action::Rcpt(to) => {
            let route = local(&to.address);
            reply(c.rcpt_answered(&to, Ok(route)))
        }
        other => reply(other),
    }
}

#[test]
fn lhlo_offers_what_postfix_needs_and_xforward_only_to_the_allowed_peer() {
    let mut c = core(true);
    let r = reply(c.command(b"LHLO mx.test\r\n"));
    let text = r.lines.join("\n");
    for ext in [
        "PIPELINING",
        "SIZE 1000",
        "8BITMIME",
        "SMTPUTF8",
        "DSN",
        "ENHANCEDSTATUSCODES",
        "XFORWARD NAME ADDR PORT PROTO HELO IDENT SOURCE",
    ] {
        assert!(text.contains(ext), "{ext} in {text}");
    }
    let mut c = core(false);
    let r = reply(c.command(b"LHLO mx.test\r\n"));
    assert!(!r.lines.join("\n").contains("XFORWARD"));
    assert_eq!(reply(c.command(b"XFORWARD ADDR=192.0.2.1\r\n")).code, 550);
}

#[test]
fn xforward_belongs_to_the_next_transaction_only() {
    let mut c = core(true);
    assert_eq!(
        reply(c.command(b"MAIL FROM:<a@x>\r\n")).code,
        503,
        "LHLO first"
    );
    reply(c.command(b"LHLO mx.test\r\n"));
    assert_eq!(
        reply(c.command(b"XFORWARD NAME=client.test ADDR=192.0.2.1\r\n")).code,
        250
    );
    assert_eq!(
        reply(c.command(b"XFORWARD IDENT=Q1 HELO=helo.test\r\n")).code,
        250
    );
    assert_eq!(reply(c.command(b"XFORWARD EVIL=1\r\n")).code, 501);
    assert_eq!(
        reply(c.command(b"MAIL FROM:<a@x> BODY=8BITMIME RET=HDRS ENVID=e1\r\n")).code,
        250
    );
    assert_eq!(
        reply(c.command(b"XFORWARD ADDR=192.0.2.9\r\n")).code,
        503,
        "not inside a transaction"
    );
    assert_eq!(
        rcpt(
            &mut c,
            "RCPT TO:<b@example.test> NOTIFY=NEVER ORCPT=rfc822;b@example.test\r\n"
        )
        .code,
        250
    );
    match c.command(b"DATA\r\n") {
        Action::Data { envelope, mode, .. } => {
            assert_eq!(mode, Mode::Lmtp);
            assert_eq!(envelope.xforward.get("ADDR"), Some("192.0.2.1"));
            assert_eq!(envelope.xforward.get("IDENT"), Some("Q1"));
            assert!(envelope.params.eightbit);
            assert_eq!(envelope.params.dsn, " RET=HDRS ENVID=e1");
            assert_eq!(
                envelope.rcpts[0].params,
                " NOTIFY=NEVER ORCPT=rfc822;b@example.test"
            );
        }
        other => panic!("{other:?}"),
    }
    // The next transaction starts without the attributes.
    reply(c.command(b"MAIL FROM:<a@x>\r\n"));
    rcpt(&mut c, "RCPT TO:<b@example.test>\r\n");
    match c.command(b"DATA\r\n") {
        Action::Data { envelope, .. } => assert!(envelope.xforward.is_empty()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn the_state_follows_the_protocol_and_limits_hold() {
    let mut c = core(true);
    reply(c.command(b"LHLO mx.test\r\n"));
    assert_eq!(
        rcpt(&mut c, "RCPT TO:<b@example.test>\r\n").code,
        503,
        "MAIL first"
    );
    assert_eq!(reply(c.command(b"MAIL FROM:<a@x> SIZE=5000\r\n")).code, 552);
    reply(c.command(b"MAIL FROM:<a@x>\r\n"));
    assert_eq!(reply(c.command(b"MAIL FROM:<a@x>\r\n")).code, 503, "nested");
    assert_eq!(reply(c.command(b"DATA\r\n")).code, 503, "no recipient");
    assert_eq!(rcpt(&mut c, "RCPT TO:<b@example.test>\r\n").code, 250);
    // A refused recipient is the message's business, not a protocol error.
    match c.command(b"RCPT TO:<c@example.test>\r\n") {
        Action::Rcpt(to) => {
            let r = c.rcpt_answered(&to, Err(Reply::new(451, "4.7.0", "key broken")));
            assert_eq!(reply(r).code, 451);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(rcpt(&mut c, "RCPT TO:<d@example.test>\r\n").code, 250);
    assert_eq!(
        rcpt(&mut c, "RCPT TO:<e@example.test>\r\n").code,
        452,
        "max_recipients"
    );
    assert_eq!(reply(c.command(b"RSET\r\n")).code, 250);
    assert_eq!(
        reply(c.command(b"DATA\r\n")).code,
        503,
        "RSET ended the transaction"
    );
    // Errors add up to a close.
    let mut closed = false;
    for _ in 0..10 {
        if let Action::Close(Some(r)) = c.command(b"BOGUS\r\n") {
            assert_eq!(r.code, 421);
            closed = true;
            break;
        }
    }
    assert!(closed);
}

#[test]
fn ehlo_is_the_smtp_alternative_with_one_reply() {
    let mut c = core(false);
    reply(c.command(b"EHLO mx.test\r\n"));
    reply(c.command(b"MAIL FROM:<>\r\n"));
    rcpt(&mut c, "RCPT TO:<b@example.test>\r\n");
    match c.command(b"DATA\r\n") {
        Action::Data { mode, .. } => assert_eq!(mode, Mode::Smtp),
        other => panic!("{other:?}"),
    }
    assert_eq!(reply(core(false).command(b"HELO mx.test\r\n")).code, 500);
}

#[test]
fn an_orcpt_the_parser_cannot_read_is_passed_on_as_it_came() {
    let mut c = core(true);
    reply(c.command(b"LHLO mx.test\r\n"));
    reply(c.command(b"MAIL FROM:<a@x> SMTPUTF8\r\n"));
    // RFC 6533: Postfix sends the original recipient of an internationalised address so.
    let r = rcpt(
        &mut c,
        "RCPT TO:<b@example.test> ORCPT=utf-8;b\\x{00E9}@example.test NOTIFY=NEVER\r\n",
    );
    assert_eq!(r.code, 250);
    match c.command(b"DATA\r\n") {
        Action::Data { envelope, .. } => assert_eq!(
            envelope.rcpts[0].params,
            " NOTIFY=NEVER ORCPT=utf-8;b\\x{00E9}@example.test"
        ),
        other => panic!("{other:?}"),
    }
    // A parameter that cannot go into a command line is still a syntax error.
    reply(c.command(b"MAIL FROM:<a@x>\r\n"));
    assert_eq!(
        rcpt(&mut c, "RCPT TO:<b@example.test> ORCPT=utf-8;\x01\r\n").code,
        500
    );
}

#[test]
fn smtp_mode_answers_250_only_when_every_recipient_was_delivered() {
    use super::session::one_reply;
    let ok = Reply::new(250, "2.0.0", "ok");
    let temp = Reply::new(451, "4.4.1", "later");
    let perm = Reply::new(550, "5.7.1", "no");
    assert_eq!(one_reply(&[ok.clone(), ok.clone()]).code, 250);
    assert_eq!(one_reply(&[perm.clone(), perm.clone()]).code, 550);
    assert_eq!(one_reply(&[temp.clone(), temp.clone()]).code, 451);
    // Mixed: a retry may duplicate, never lose.
    assert_eq!(one_reply(&[ok.clone(), perm.clone()]).code, 451);
    assert_eq!(one_reply(&[ok, temp]).code, 451);
}
