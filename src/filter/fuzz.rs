//! Entry point for the filter fuzz target (`integration/fuzz`): arbitrary bytes as what
//! Postfix's LMTP client sends, line by line through the session core (recipients routed as
//! local mailboxes), the DATA that follows through the receiver, the mark removal, and every
//! XFORWARD line through the codec and back. Any input must give replies, never a panic.

use super::lmtp::{Action, Core, Settings};
use super::route::Route;
use super::xforward::{Xforward, ATTRIBUTES};
use crate::smtp::data::{DataReceiver, Progress};

/// Arbitrary bytes through the filter's session core and codecs.
pub fn lmtp(data: &[u8]) {
    let mut core = Core::new(Settings {
        hostname: "filter.test".into(),
        max_size: 1 << 16,
        max_recipients: 8,
        max_errors: 1000,
        xforward: true,
    });
    let mut rest = data;
    while !rest.is_empty() {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map_or(rest.len(), |i| i + 1);
        let (line, tail) = rest.split_at(end);
        rest = tail;
        xforward_round_trip(line);
        match core.command(line) {
            Action::Rcpt(to) => {
                let route = Route::Local {
                    address: to.address.clone(),
                    key: None,
                };
                let _ = core.rcpt_answered(&to, Ok(route));
            }
            Action::Data { max, .. } => {
                let mut receiver = DataReceiver::new(max, 4096).allowing_bare_cr();
                if let Progress::Done { consumed } = receiver.feed(rest) {
                    rest = &rest[consumed..];
                } else {
                    rest = &[];
                }
                if let Ok(message) = receiver.finish() {
                    let clean = crate::mime::at_rest::without_mark(&message);
                    assert!(clean.len() <= message.len());
                }
            }
            Action::Close(_) => return,
            Action::Reply(_) => {}
        }
    }
}

/// A line's XFORWARD attributes, formatted and parsed again, are what they were.
fn xforward_round_trip(line: &[u8]) {
    let Ok(text) = std::str::from_utf8(line) else {
        return;
    };
    let mut x = Xforward::default();
    if x.parse_into(text.trim_end()).is_err() {
        return;
    }
    let all: Vec<String> = ATTRIBUTES.iter().map(|a| a.to_string()).collect();
    let mut again = Xforward::default();
    for l in x.lines(&all) {
        let args = l.strip_prefix("XFORWARD").unwrap_or_default();
        assert!(again.parse_into(args).is_ok(), "a formatted line parses");
    }
    assert_eq!(again, x, "XFORWARD round trip");
}
