//! The outer header of a message the sidecar encrypted at rest. Unlike an end-to-end copy, the
//! original message goes inside whole (DKIM verifies after decryption), and more stays outside:
//! what the server's own delivery, filters and threading read (trace fields, verification and
//! spam results, list fields), plus the mark that tells the reader's view what this is.

use super::headers::{ParsedMessage, MAX_HEADER_BYTES};
use super::protect::PLACEHOLDER_SUBJECT;

/// The mark meshmail puts on mail it encrypted at rest. Any field of this name arriving from
/// outside is removed first ([`without_mark`]); the reader's view reports such a message as
/// "encrypted-at-rest", never as the sender's end-to-end encryption.
pub const MARK_FIELD: &str = "Meshmail-At-Rest";

/// Fields copied outside, by name.
const OUTER: &[&str] = &[
    "return-path",
    "received",
    "from",
    "sender",
    "to",
    "cc",
    "reply-to",
    "date",
    "message-id",
    "in-reply-to",
    "references",
    "authentication-results",
    "arc-authentication-results",
    "received-spf",
];

/// Fields copied outside, by prefix (spam results and list fields).
const OUTER_PREFIXES: &[&str] = &["x-spam-", "list-"];

/// The outer header fields (CRLF lines, no Content-* or MIME-Version: the envelope adds them).
pub fn outer_fields(message: &ParsedMessage<'_>, hide_subject: bool, mark: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(2048);
    for f in &message.fields {
        let lower = f.name.to_ascii_lowercase();
        if OUTER.contains(&lower.as_str()) || OUTER_PREFIXES.iter().any(|p| lower.starts_with(p)) {
            out.extend_from_slice(&f.raw);
        } else if lower == "subject" {
            if hide_subject {
                out.extend_from_slice(format!("Subject: {PLACEHOLDER_SUBJECT}\r\n").as_bytes());
            } else {
                out.extend_from_slice(&f.raw);
            }
        }
    }
    out.extend_from_slice(format!("{MARK_FIELD}: {mark}\r\n").as_bytes());
    out
}

/// `message` without any field named [`MARK_FIELD`] in its header section (borrowed when there
/// is none). Folded continuation lines go with their field.
pub fn without_mark(message: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    // Only the header section can hold the field, and no header section is longer than
    // MAX_HEADER_BYTES: a large body is never scanned.
    let window = &message[..message.len().min(MAX_HEADER_BYTES + 4)];
    let head_end = find(window, b"\r\n\r\n").map_or(window.len(), |i| i + 2);
    let head = &message[..head_end];
    let name = MARK_FIELD.as_bytes();
    let is_mark = |line: &[u8]| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name)
            && line[name.len()..]
                .iter()
                .find(|b| **b != b' ' && **b != b'\t')
                == Some(&b':')
    };
    let mut lines = Vec::new();
    let mut start = 0;
    while start < head.len() {
        let end = find(&head[start..], b"\n").map_or(head.len(), |i| start + i + 1);
        lines.push(&head[start..end]);
        start = end;
    }
    if !lines.iter().any(|l| is_mark(l)) {
        return std::borrow::Cow::Borrowed(message);
    }
    let mut out = Vec::with_capacity(message.len());
    let mut dropping = false;
    for line in lines {
        let continuation = line.first().is_some_and(|b| *b == b' ' || *b == b'\t');
        if !continuation {
            dropping = is_mark(line);
        }
        if !dropping {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(&message[head_end..]);
    std::borrow::Cow::Owned(out)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Received: from a by b\r\nDKIM-Signature: v=1; d=x\r\nFrom: a@x\r\nTo: b@y\r\nSubject: Hello\r\nX-Spam-Status: No\r\nList-Id: <l.x>\r\nUser-Agent: Z\r\nContent-Type: text/plain\r\n\r\nbody\r\n";

    #[test]
    fn outer_keeps_what_the_server_reads() {
        let p = ParsedMessage::parse(MSG).unwrap();
        let outer = String::from_utf8(outer_fields(&p, false, "v=1")).unwrap();
        for kept in [
            "Received:",
            "From:",
            "To:",
            "Subject: Hello",
            "X-Spam-Status",
            "List-Id",
        ] {
            assert!(outer.contains(kept), "{kept} stays outside");
        }
        for inside in ["DKIM-Signature", "User-Agent", "Content-Type"] {
            assert!(!outer.contains(inside), "{inside} only inside");
        }
        assert!(outer.ends_with("Meshmail-At-Rest: v=1\r\n"));
        let hidden = String::from_utf8(outer_fields(&p, true, "v=1")).unwrap();
        assert!(hidden.contains("Subject: [...]") && !hidden.contains("Hello"));
    }

    #[test]
    fn a_forged_mark_is_removed_with_its_folding() {
        let forged = b"From: a@x\r\nmeshmail-at-rest : v=1;\r\n mac=forged\r\nTo: b@y\r\n\r\nMeshmail-At-Rest: in the body stays\r\n";
        let clean = without_mark(forged);
        assert_eq!(
            &clean[..],
            &b"From: a@x\r\nTo: b@y\r\n\r\nMeshmail-At-Rest: in the body stays\r\n"[..]
        );
        assert!(matches!(without_mark(MSG), std::borrow::Cow::Borrowed(_)));
        // Nothing past the longest header section is scanned (nor changed).
        let mut big = b"X-Filler: y\r\n".repeat(30_000);
        big.extend_from_slice(b"Meshmail-At-Rest: far\r\n\r\nbody\r\n");
        assert!(big.len() > MAX_HEADER_BYTES + 4);
        assert!(matches!(without_mark(&big), std::borrow::Cow::Borrowed(_)));
    }
}
