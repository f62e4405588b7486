//! A byte-level reader of one untagged `* n FETCH (…)` response from the server.
//!
//! meshmail must never fail a whole FETCH because one message's response is hard to parse: a
//! sender on the internet chooses the bytes of a message, and with them the depth of its
//! BODYSTRUCTURE. So this reader does not build a syntax tree. It finds each item's name and
//! the byte span of its value (atom, quoted string, literal or parenthesised list, nested to any
//! depth, read iteratively), which is all meshmail needs to tell what a response carries, to
//! take out the items it added and to keep the server's other items byte for byte.

use std::ops::Range;

/// One item of a FETCH response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// The item's name as the server wrote it, upper-cased (`BODY[HEADER.FIELDS (A B)]<0>`).
    pub name: String,
    /// The whole item, name and value (what to cut out or copy).
    pub span: Range<usize>,
    /// The value.
    pub value: Value,
}

/// An item's value, as spans of the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// An atom or number (`NIL` included).
    Atom(Range<usize>),
    /// A quoted string: the bytes between the quotes, still escaped.
    Quoted(Range<usize>),
    /// A literal's data.
    Literal(Range<usize>),
    /// A parenthesised list, parentheses included.
    List(Range<usize>),
}

/// A FETCH response read into its items.
#[derive(Debug, Clone)]
pub struct FetchResponse {
    pub seq: u32,
    pub items: Vec<Item>,
}

impl FetchResponse {
    /// The item named `name` (upper case).
    pub fn item(&self, name: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.name == name)
    }

    /// The UID, when the response carries one.
    pub fn uid(&self, raw: &[u8]) -> Option<u32> {
        match &self.item("UID")?.value {
            Value::Atom(r) => std::str::from_utf8(&raw[r.clone()]).ok()?.parse().ok(),
            _ => None,
        }
    }

    /// The bytes of a string value (literal or quoted, unescaped); `None` for NIL or a list.
    pub fn string<'a>(&self, raw: &'a [u8], name: &str) -> Option<std::borrow::Cow<'a, [u8]>> {
        match &self.item(name)?.value {
            Value::Literal(r) => Some(std::borrow::Cow::Borrowed(&raw[r.clone()])),
            Value::Quoted(r) => Some(std::borrow::Cow::Owned(unescape(&raw[r.clone()]))),
            _ => None,
        }
    }

    /// Only FLAGS (with UID or MODSEQ): a flag update, possibly unsolicited (another client
    /// changed the flags).
    pub fn flags_only(&self) -> bool {
        self.item("FLAGS").is_some()
            && self
                .items
                .iter()
                .all(|i| matches!(i.name.as_str(), "FLAGS" | "UID" | "MODSEQ"))
    }

    /// The response without the items named in `drop`, every other byte as the server sent
    /// it; `None` when nothing would be left to say about the message.
    pub fn without(&self, raw: &[u8], drop: &[&str]) -> Option<Vec<u8>> {
        let kept: Vec<&Item> = self
            .items
            .iter()
            .filter(|i| !drop.contains(&i.name.as_str()))
            .collect();
        if kept.is_empty() {
            return None;
        }
        if kept.len() == self.items.len() {
            return Some(raw.to_vec());
        }
        let first = self.items.first()?.span.start;
        let last = self.items.last()?.span.end;
        let mut out = Vec::with_capacity(raw.len());
        out.extend_from_slice(&raw[..first]);
        for (k, item) in kept.iter().enumerate() {
            if k > 0 {
                out.push(b' ');
            }
            out.extend_from_slice(&raw[item.span.clone()]);
        }
        out.extend_from_slice(&raw[last..]);
        Some(out)
    }
}

fn unescape(quoted: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(quoted.len());
    let mut escaped = false;
    for &b in quoted {
        if b == b'\\' && !escaped {
            escaped = true;
            continue;
        }
        escaped = false;
        out.push(b);
    }
    out
}

/// Reads `raw` (one whole response, CRLF and literals included) as `* n FETCH (items)`.
/// `None` when it is not a FETCH response or its framing is broken.
pub fn scan(raw: &[u8]) -> Option<FetchResponse> {
    let rest = raw.strip_prefix(b"* ")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    let seq: u32 = std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()?;
    let after = 2 + digits;
    let word = raw.get(after..after + 8)?;
    if !word.eq_ignore_ascii_case(b" FETCH (") {
        return None;
    }
    let mut i = after + 8;
    let mut items = Vec::new();
    loop {
        while raw.get(i) == Some(&b' ') {
            i += 1;
        }
        match raw.get(i)? {
            b')' => break,
            _ => {
                let (item, end) = read_item(raw, i)?;
                items.push(item);
                i = end;
            }
        }
    }
    // Only the line end may follow the closing parenthesis.
    let tail = &raw[i + 1..];
    if tail != b"\r\n" && tail != b"\n" {
        return None;
    }
    Some(FetchResponse { seq, items })
}

/// One `NAME value` item starting at `start`.
fn read_item(raw: &[u8], start: usize) -> Option<(Item, usize)> {
    let mut i = start;
    // The name, with its section and partial: `BODY[HEADER.FIELDS (A "B C")]<0>`.
    let mut in_section = false;
    let mut quoted = false;
    while let Some(&b) = raw.get(i) {
        match b {
            _ if quoted => {
                if b == b'\\' {
                    i += 1;
                } else if b == b'"' {
                    quoted = false;
                }
            }
            b'"' if in_section => quoted = true,
            b'[' => in_section = true,
            b']' => in_section = false,
            b'{' | b'\r' | b'\n' if in_section => return None,
            b' ' | b')' if !in_section => break,
            b'(' if !in_section => return None,
            _ => {}
        }
        i += 1;
    }
    if i == start || raw.get(i) != Some(&b' ') {
        return None;
    }
    let name = String::from_utf8_lossy(&raw[start..i]).to_ascii_uppercase();
    let (value, end) = read_value(raw, i + 1)?;
    Some((
        Item {
            name,
            span: start..end,
            value,
        },
        end,
    ))
}

/// One value starting at `start`: its span and where it ends.
fn read_value(raw: &[u8], start: usize) -> Option<(Value, usize)> {
    match raw.get(start)? {
        b'"' => {
            let end = skip_quoted(raw, start)?;
            Some((Value::Quoted(start + 1..end - 1), end))
        }
        b'{' | b'~' => {
            let (data, end) = skip_literal(raw, start)?;
            Some((Value::Literal(data), end))
        }
        b'(' => {
            let end = skip_list(raw, start)?;
            Some((Value::List(start..end), end))
        }
        _ => {
            let mut i = start;
            while let Some(&b) = raw.get(i) {
                if matches!(b, b' ' | b')' | b'(' | b'\r' | b'\n') {
                    break;
                }
                i += 1;
            }
            (i > start).then_some((Value::Atom(start..i), i))
        }
    }
}

/// The end (after the closing quote) of a quoted string starting at `start`.
fn skip_quoted(raw: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match raw.get(i)? {
            b'\\' => i += 2,
            b'"' => return Some(i + 1),
            b'\r' | b'\n' => return None,
            _ => i += 1,
        }
    }
}

/// A literal `{n}\r\n…` (or `~{n}` for literal8) at `start`: its data and where it ends.
fn skip_literal(raw: &[u8], start: usize) -> Option<(Range<usize>, usize)> {
    let open = if raw.get(start) == Some(&b'~') {
        start + 1
    } else {
        start
    };
    if raw.get(open) != Some(&b'{') {
        return None;
    }
    let close = open + raw.get(open..)?.iter().take(12).position(|&b| b == b'}')?;
    let digits = std::str::from_utf8(&raw[open + 1..close]).ok()?;
    let len: usize = digits.trim_end_matches('+').parse().ok()?;
    if raw.get(close + 1..close + 3)? != b"\r\n" {
        return None;
    }
    let data = close + 3;
    let end = data.checked_add(len)?;
    (end <= raw.len()).then_some((data..end, end))
}

/// The end (after the closing parenthesis) of a list starting at `start`, at any depth,
/// without recursion.
fn skip_list(raw: &[u8], start: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = start;
    loop {
        match raw.get(i)? {
            b'(' => {
                depth += 1;
                i += 1;
            }
            b')' => {
                depth = depth.checked_sub(1)?;
                i += 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            b'"' => i = skip_quoted(raw, i)?,
            b'{' => i = skip_literal(raw, i)?.1,
            b'~' if raw.get(i + 1) == Some(&b'{') => i = skip_literal(raw, i)?.1,
            b'\r' | b'\n' => return None,
            _ => i += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_and_their_values() {
        let raw = b"* 3 FETCH (UID 7 FLAGS (\\Seen) BODY[HEADER.FIELDS (CONTENT-TYPE \"X)\")] {5}\r\nab)cd RFC822.SIZE 40)\r\n";
        let r = scan(raw).expect("scanned");
        assert_eq!(r.seq, 3);
        let names: Vec<&str> = r.items.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "UID",
                "FLAGS",
                "BODY[HEADER.FIELDS (CONTENT-TYPE \"X)\")]",
                "RFC822.SIZE"
            ]
        );
        assert_eq!(r.uid(raw), Some(7));
        assert_eq!(
            r.string(raw, "BODY[HEADER.FIELDS (CONTENT-TYPE \"X)\")]")
                .as_deref(),
            Some(&b"ab)cd"[..])
        );
        let without = r.without(raw, &["UID", "FLAGS"]).expect("kept");
        assert_eq!(
            without,
            b"* 3 FETCH (BODY[HEADER.FIELDS (CONTENT-TYPE \"X)\")] {5}\r\nab)cd RFC822.SIZE 40)\r\n"
        );
        assert!(r
            .without(
                raw,
                &[
                    "UID",
                    "FLAGS",
                    "RFC822.SIZE",
                    "BODY[HEADER.FIELDS (CONTENT-TYPE \"X)\")]"
                ]
            )
            .is_none());
    }

    #[test]
    fn any_depth_is_read_without_recursion() {
        let depth = 200_000;
        let mut raw = b"* 1 FETCH (UID 9 BODYSTRUCTURE ".to_vec();
        raw.extend(std::iter::repeat_n(b'(', depth));
        raw.extend(std::iter::repeat_n(b')', depth));
        raw.extend_from_slice(b")\r\n");
        let r = scan(&raw).expect("scanned");
        assert_eq!(r.uid(&raw), Some(9));
        assert_eq!(
            r.without(&raw, &["UID"]).map(|v| v.len()),
            Some(raw.len() - "UID 9 ".len())
        );
    }

    #[test]
    fn broken_framing_is_none_never_a_panic() {
        for raw in [
            &b"* 1 FETCH (UID"[..],
            b"* 1 FETCH (BODY[] {10}\r\nabc)\r\n",
            b"* 1 FETCH (BODYSTRUCTURE (\"a\")\r\n",
            b"* 1 FETCH (X ((())\r\n",
            b"* 1 FETCH (X {99999999999999999999}\r\n)\r\n",
            b"* 1 EXISTS\r\n",
            b"* 1 FETCH (UID 1) trailing\r\n",
        ] {
            assert!(scan(raw).is_none(), "{}", String::from_utf8_lossy(raw));
        }
        let r = scan(b"* 1 FETCH (FLAGS (\\Seen) UID 4 MODSEQ (12))\r\n").expect("flags");
        assert!(r.flags_only());
    }
}
