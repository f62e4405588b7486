//! SEARCH over encrypted messages. The upstream answers the whole query for the messages it
//! can read; for encrypted ones meshmail evaluates the whole query itself (OR, NOT and AND
//! included), with flags and dates from the upstream and headers, body and size from the
//! decrypted view. Text matches as Dovecot's do: case-insensitive substrings of decoded text.

use super::owned::Listed;
use imap_codec::imap_types::search::SearchKey;
use imap_codec::imap_types::sequence::{SeqOrUid, Sequence, SequenceSet};

/// What a view offers to SEARCH, computed once per view.
#[derive(Debug, Default, Clone, serde::Serialize, serde::Deserialize)]
pub struct SearchText {
    /// (field name lower case, decoded value lower case), in message order.
    pub headers: Vec<(String, String)>,
    /// The decoded text of every text part, lower case.
    pub body: String,
    /// The Date field as (year, month, day), if it parses.
    pub sent: Option<(i32, u32, u32)>,
}

impl SearchText {
    pub fn of(message: &[u8]) -> SearchText {
        let mut out = SearchText::default();
        let Some(parsed) = mail_parser::MessageParser::default().parse(message) else {
            return out;
        };
        for h in parsed.headers() {
            let value = match h.value() {
                mail_parser::HeaderValue::Text(t) => t.to_string(),
                mail_parser::HeaderValue::TextList(l) => l.join(" "),
                mail_parser::HeaderValue::Address(a) => a
                    .iter()
                    .map(|x| {
                        format!(
                            "{} <{}>",
                            x.name().unwrap_or_default(),
                            x.address().unwrap_or_default()
                        )
                    })
                    .collect::<Vec<_>>()
                    .join(", "),
                mail_parser::HeaderValue::DateTime(d) => d.to_rfc822(),
                mail_parser::HeaderValue::ContentType(c) => c.c_type.to_string(),
                _ => String::new(),
            };
            // The raw value too: a search for an address part must find it whatever the
            // parser made of the field.
            let raw = String::from_utf8_lossy(
                message
                    .get(h.offset_start() as usize..h.offset_end() as usize)
                    .unwrap_or_default(),
            )
            .into_owned();
            out.headers.push((
                h.name().to_ascii_lowercase(),
                format!("{value}\n{raw}").to_lowercase(),
            ));
        }
        body_text(&parsed, &mut out.body, 0);
        out.sent = parsed
            .date()
            .map(|d| (d.year as i32, d.month as u32, d.day as u32));
        out
    }
}

/// The decoded text of every text part, forwarded messages included (as Dovecot searches).
fn body_text(message: &mail_parser::Message, out: &mut String, depth: usize) {
    for part in message.parts.iter() {
        match &part.body {
            mail_parser::PartType::Text(t) | mail_parser::PartType::Html(t) => {
                out.push_str(&t.to_lowercase());
                out.push('\n');
            }
            mail_parser::PartType::Message(inner) if depth < 10 => {
                for h in inner.headers() {
                    if let mail_parser::HeaderValue::Text(t) = h.value() {
                        out.push_str(&t.to_lowercase());
                        out.push('\n');
                    }
                }
                body_text(inner, out, depth + 1);
            }
            _ => {}
        }
    }
}

/// One encrypted message as SEARCH sees it.
pub struct Candidate<'a> {
    pub listed: &'a Listed,
    /// The size of the decrypted message.
    pub size: usize,
    pub text: &'a SearchText,
    /// The largest sequence number and UID in the mailbox (`*`).
    pub max_seq: u32,
    pub max_uid: u32,
}

fn in_set(set: &SequenceSet, n: u32, largest: u32) -> bool {
    set.0.as_ref().iter().any(|s| {
        let v = |x: &SeqOrUid| match x {
            SeqOrUid::Value(v) => v.get(),
            SeqOrUid::Asterisk => largest,
        };
        match s {
            Sequence::Single(x) => v(x) == n,
            Sequence::Range(a, b) => {
                let (lo, hi) = (v(a).min(v(b)), v(a).max(v(b)));
                (lo..=hi).contains(&n)
            }
        }
    })
}

fn has_flag(c: &Candidate, flag: &str) -> bool {
    c.listed.flags.iter().any(|f| f.eq_ignore_ascii_case(flag))
}

fn contains(hay: &str, needle: &[u8]) -> bool {
    let needle = String::from_utf8_lossy(needle).to_lowercase();
    hay.contains(&needle)
}

fn header_contains(c: &Candidate, name: &str, needle: &[u8]) -> bool {
    let name = name.to_ascii_lowercase();
    // HEADER name "" matches every message that has the field.
    c.text
        .headers
        .iter()
        .any(|(n, v)| *n == name && (needle.is_empty() || contains(v, needle)))
}

fn ymd(d: &chrono::NaiveDate) -> (i32, u32, u32) {
    use chrono::Datelike;
    (d.year(), d.month(), d.day())
}

/// True when `key` has a criterion `leaf` holds for anywhere in it.
fn uses(key: &SearchKey, leaf: &dyn Fn(&SearchKey) -> bool) -> bool {
    use SearchKey as K;
    match key {
        K::And(keys) => keys.as_ref().iter().any(|k| uses(k, leaf)),
        K::Or(a, b) => uses(a, leaf) || uses(b, leaf),
        K::Not(k) => uses(k, leaf),
        k => leaf(k),
    }
}

/// True when `key` has a sequence-set criterion anywhere (its numbers are the client's).
pub fn uses_sequence_numbers(key: &SearchKey) -> bool {
    uses(key, &|k| matches!(k, SearchKey::SequenceSet(_)))
}

/// True when `key` asks about `\Recent` (RECENT, NEW, OLD): a flag only the client's own
/// session holds, never meshmail's EXAMINE connection.
pub fn uses_recent(key: &SearchKey) -> bool {
    uses(key, &|k| {
        matches!(k, SearchKey::Recent | SearchKey::New | SearchKey::Old)
    })
}

/// True when the candidate matches `key`.
pub fn matches(key: &SearchKey, c: &Candidate) -> bool {
    use SearchKey as K;
    let date = |d: &imap_codec::imap_types::datetime::NaiveDate| ymd(d.as_ref());
    match key {
        K::And(keys) => keys.as_ref().iter().all(|k| matches(k, c)),
        K::Or(a, b) => matches(a, c) || matches(b, c),
        K::Not(k) => !matches(k, c),
        K::All => true,
        K::SequenceSet(set) => in_set(set, c.listed.seq, c.max_seq),
        K::Uid(set) => in_set(set, c.listed.uid, c.max_uid),
        K::Answered => has_flag(c, "\\Answered"),
        K::Unanswered => !has_flag(c, "\\Answered"),
        K::Deleted => has_flag(c, "\\Deleted"),
        K::Undeleted => !has_flag(c, "\\Deleted"),
        K::Draft => has_flag(c, "\\Draft"),
        K::Undraft => !has_flag(c, "\\Draft"),
        K::Flagged => has_flag(c, "\\Flagged"),
        K::Unflagged => !has_flag(c, "\\Flagged"),
        K::Seen => has_flag(c, "\\Seen"),
        K::Unseen => !has_flag(c, "\\Seen"),
        K::Recent => has_flag(c, "\\Recent"),
        K::Old => !has_flag(c, "\\Recent"),
        K::New => has_flag(c, "\\Recent") && !has_flag(c, "\\Seen"),
        K::Keyword(k) => has_flag(c, k.as_ref()),
        K::Unkeyword(k) => !has_flag(c, k.as_ref()),
        K::Larger(n) => c.size as u64 > u64::from(*n),
        K::Smaller(n) => (c.size as u64) < u64::from(*n),
        K::Before(d) => c.listed.internal_date.is_some_and(|x| x < date(d)),
        K::On(d) => c.listed.internal_date.is_some_and(|x| x == date(d)),
        K::Since(d) => c.listed.internal_date.is_some_and(|x| x >= date(d)),
        K::SentBefore(d) => c.text.sent.is_some_and(|x| x < date(d)),
        K::SentOn(d) => c.text.sent.is_some_and(|x| x == date(d)),
        K::SentSince(d) => c.text.sent.is_some_and(|x| x >= date(d)),
        K::From(s) => header_contains(c, "from", s.as_ref()),
        K::To(s) => header_contains(c, "to", s.as_ref()),
        K::Cc(s) => header_contains(c, "cc", s.as_ref()),
        K::Bcc(s) => header_contains(c, "bcc", s.as_ref()),
        K::Subject(s) => header_contains(c, "subject", s.as_ref()),
        K::Header(name, s) => {
            header_contains(c, &String::from_utf8_lossy(name.as_ref()), s.as_ref())
        }
        K::Body(s) => contains(&c.text.body, s.as_ref()),
        K::Text(s) => {
            contains(&c.text.body, s.as_ref())
                || c.text.headers.iter().any(|(_, v)| contains(v, s.as_ref()))
        }
        // CONDSTORE's MODSEQ depends on flags only; the upstream cannot answer it for the
        // encrypted subset separately, so it does not narrow the result.
        K::ModSequence { .. } => true,
        #[allow(unreachable_patterns)]
        _ => false,
    }
}

/// `* SEARCH` numbers from a response line.
pub fn parse_search_line(line: &[u8]) -> Option<Vec<u32>> {
    let text = std::str::from_utf8(line).ok()?;
    let rest = text.trim_end().strip_prefix("* ")?;
    let (word, numbers) = rest.split_once(' ').unwrap_or((rest, ""));
    if !word.eq_ignore_ascii_case("SEARCH") {
        return None;
    }
    Some(
        numbers
            .split_ascii_whitespace()
            .take_while(|w| !w.starts_with('('))
            .filter_map(|w| w.parse().ok())
            .collect(),
    )
}
