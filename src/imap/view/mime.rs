//! The MIME tree of a view with byte offsets, as IMAP numbers its parts (RFC 3501 §6.4.5):
//! what `BODY[1.2]`, `BODY[2.MIME]` or `BODY[3.HEADER]` select, and what BODYSTRUCTURE
//! describes. Parsing never fails: whatever is not well-formed MIME is a leaf.

use std::ops::Range;

/// Nesting deeper than this is treated as a leaf (Dovecot stops at a similar depth).
pub const MAX_DEPTH: usize = 50;
/// Parts per message at most; the rest of a longer multipart stays in its last part.
pub const MAX_PARTS: usize = 5000;

/// A header field: name and raw value (unfolded later where needed).
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    /// The raw value after the colon, folding kept, without the final CRLF.
    pub raw_value: Vec<u8>,
}

/// One MIME entity.
#[derive(Debug, Clone)]
pub struct Entity {
    /// The header, including the empty line that ends it (if any).
    pub header: Range<usize>,
    /// The body (for a multipart: everything after the header, preamble and epilogue included).
    pub body: Range<usize>,
    pub fields: Vec<Field>,
    pub content_type: ContentType,
    /// A MIME entity: inside a multipart, or with MIME-Version or Content-Type. The Content-*
    /// fields of any other entity are ignored (as Dovecot does).
    pub mime: bool,
    pub kind: Kind,
    /// For a multipart: where its closing delimiter (`--boundary--`) ends, if it has one.
    pub closing_end: Option<usize>,
}

#[derive(Debug, Clone)]
pub enum Kind {
    Leaf,
    /// multipart/*: the parts between the boundaries.
    Multipart(Vec<Entity>),
    /// message/rfc822 (or global): the encapsulated message.
    Message(Box<Entity>),
}

/// A parsed Content-Type (type and subtype lower case; parameters as they came, decoded per
/// RFC 2231 where continued or encoded).
#[derive(Debug, Clone)]
pub struct ContentType {
    pub r#type: String,
    pub subtype: String,
    pub params: Vec<(String, String)>,
    /// The header had a Content-Type field at all.
    pub explicit: bool,
}

impl ContentType {
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

impl Entity {
    /// The first field of that name.
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields
            .iter()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    }

    /// True for the encrypted forms meshmail decrypts: PGP/MIME, and S/MIME enveloped or
    /// authEnveloped data.
    pub fn is_encrypted(&self) -> bool {
        let ct = &self.content_type;
        let eq = |a: Option<&str>, b: &str| a.is_some_and(|a| a.eq_ignore_ascii_case(b));
        (ct.r#type == "multipart"
            && ct.subtype == "encrypted"
            && eq(ct.param("protocol"), "application/pgp-encrypted"))
            || (ct.r#type == "application"
                && (ct.subtype == "pkcs7-mime" || ct.subtype == "x-pkcs7-mime")
                && (eq(ct.param("smime-type"), "enveloped-data")
                    || eq(ct.param("smime-type"), "authEnveloped-data")))
    }

    /// A Content-* field, only when the entity is MIME.
    pub fn mime_field(&self, name: &str) -> Option<&Field> {
        self.field(name).filter(|_| self.mime)
    }
}

/// Parses a whole message.
pub fn parse(message: &[u8]) -> Entity {
    let mut count = 0;
    parse_entity(message, 0..message.len(), Parent::Message, 0, &mut count)
}

/// Where an entity sits, which decides its defaults.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Parent {
    /// The top level, or the message inside a message/rfc822 part.
    Message,
    Multipart,
    Digest,
}

fn parse_entity(
    msg: &[u8],
    range: Range<usize>,
    parent: Parent,
    depth: usize,
    count: &mut usize,
) -> Entity {
    *count += 1;
    let (header, body) = split_header(msg, range.clone());
    let fields = parse_fields(&msg[header.clone()]);
    let has = |name: &str| fields.iter().any(|f| f.name.eq_ignore_ascii_case(name));
    let mime = parent != Parent::Message || has("MIME-Version") || has("Content-Type");
    let content_type = fields
        .iter()
        .find(|f| f.name.eq_ignore_ascii_case("Content-Type"))
        .filter(|_| mime)
        .map(|f| parse_content_type(&f.raw_value))
        .filter(|ct| !ct.r#type.is_empty() && !ct.subtype.is_empty())
        .unwrap_or_else(|| default_type(parent == Parent::Digest));
    let mut entity = Entity {
        header,
        body: body.clone(),
        fields,
        content_type,
        mime,
        kind: Kind::Leaf,
        closing_end: None,
    };
    if depth >= MAX_DEPTH || *count >= MAX_PARTS {
        return entity;
    }
    let ct = &entity.content_type;
    if ct.r#type == "multipart" {
        if let Some(boundary) = ct.param("boundary").filter(|b| !b.is_empty()) {
            let child_parent = if ct.subtype == "digest" {
                Parent::Digest
            } else {
                Parent::Multipart
            };
            let (ranges, closing) = split_multipart(msg, body, boundary.as_bytes());
            let children = ranges
                .into_iter()
                .map(|r| {
                    let child = parse_entity(msg, r.clone(), child_parent, depth + 1, count);
                    // A nested multipart whose closing delimiter line ends right where this
                    // part ends keeps that line's break (Dovecot counts it to the part).
                    match (&child.kind, child.closing_end) {
                        (Kind::Multipart(_), Some(end)) if end == r.end => {
                            let eol = if msg[r.end..].starts_with(b"\r\n") {
                                2
                            } else {
                                1
                            };
                            let eol = if msg[r.end..].starts_with(b"\n") || eol == 2 {
                                eol
                            } else {
                                0
                            };
                            let mut child = child;
                            child.body.end += eol;
                            child
                        }
                        _ => child,
                    }
                })
                .collect::<Vec<_>>();
            entity.kind = Kind::Multipart(children);
            entity.closing_end = closing;
        }
    } else if ct.r#type == "message" && (ct.subtype == "rfc822" || ct.subtype == "global") {
        let cte = entity
            .mime_field("Content-Transfer-Encoding")
            .map(|f| {
                String::from_utf8_lossy(&f.raw_value)
                    .trim()
                    .to_ascii_lowercase()
            })
            .unwrap_or_default();
        if !matches!(cte.as_str(), "base64" | "quoted-printable") {
            entity.kind = Kind::Message(Box::new(parse_entity(
                msg,
                body,
                Parent::Message,
                depth + 1,
                count,
            )));
        }
    }
    entity
}

fn default_type(digest_child: bool) -> ContentType {
    if digest_child {
        ContentType {
            r#type: "message".into(),
            subtype: "rfc822".into(),
            params: Vec::new(),
            explicit: false,
        }
    } else {
        ContentType {
            r#type: "text".into(),
            subtype: "plain".into(),
            params: vec![("charset".into(), "us-ascii".into())],
            explicit: false,
        }
    }
}

/// A message's header section, its empty line included, found as [`parse`] finds it.
pub fn header_section(msg: &[u8]) -> &[u8] {
    &msg[split_header(msg, 0..msg.len()).0]
}

/// Splits `range` at the end of the header (after the empty line).
fn split_header(msg: &[u8], range: Range<usize>) -> (Range<usize>, Range<usize>) {
    let bytes = &msg[range.clone()];
    // An entity starting with an empty line has an empty header.
    if bytes.starts_with(b"\r\n") {
        return (range.start..range.start + 2, range.start + 2..range.end);
    }
    if bytes.starts_with(b"\n") {
        return (range.start..range.start + 1, range.start + 1..range.end);
    }
    let mut i = 0;
    while let Some(nl) = bytes[i..].iter().position(|&b| b == b'\n') {
        let next = i + nl + 1;
        if bytes[next..].starts_with(b"\r\n") {
            let end = range.start + next + 2;
            return (range.start..end, end..range.end);
        }
        if bytes[next..].starts_with(b"\n") {
            let end = range.start + next + 1;
            return (range.start..end, end..range.end);
        }
        i = next;
    }
    // No empty line: all header, no body.
    (range.clone(), range.end..range.end)
}

/// Header fields; lines that are not fields are skipped.
pub fn parse_fields(header: &[u8]) -> Vec<Field> {
    let mut fields: Vec<Field> = Vec::new();
    for line in header.split_inclusive(|&b| b == b'\n') {
        let content = trim_eol(line);
        if content.is_empty() {
            break;
        }
        if content[0] == b' ' || content[0] == b'\t' {
            if let Some(f) = fields.last_mut() {
                f.raw_value.extend_from_slice(b"\r\n");
                f.raw_value.extend_from_slice(content);
            }
            continue;
        }
        let Some(colon) = content.iter().position(|&b| b == b':') else {
            continue;
        };
        let name = String::from_utf8_lossy(&content[..colon])
            .trim_end()
            .to_owned();
        if name.is_empty() || name.contains(' ') {
            continue;
        }
        fields.push(Field {
            name,
            raw_value: content[colon + 1..].to_vec(),
        });
    }
    fields
}

fn trim_eol(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The parts of a multipart body: each ends before the line break that precedes the next
/// delimiter line (RFC 2046 §5.1.1).
fn split_multipart(
    msg: &[u8],
    body: Range<usize>,
    boundary: &[u8],
) -> (Vec<Range<usize>>, Option<usize>) {
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    let mut line_start = body.start;
    while line_start < body.end {
        let rest = &msg[line_start..body.end];
        let line_len = rest
            .iter()
            .position(|&b| b == b'\n')
            .map(|p| p + 1)
            .unwrap_or(rest.len());
        let line = &rest[..line_len];
        if let Some(after) = line
            .strip_prefix(b"--")
            .and_then(|l| l.strip_prefix(boundary))
        {
            let closing = after.starts_with(b"--");
            // The delimiter includes the line break before it.
            let mut end = line_start;
            if end > body.start && msg[end - 1] == b'\n' {
                end -= 1;
                if end > body.start && msg[end - 1] == b'\r' {
                    end -= 1;
                }
            }
            if let Some(s) = start.take() {
                parts.push(s..end.max(s));
            }
            if closing {
                return (parts, Some(line_start + 2 + boundary.len() + 2));
            }
            start = Some(line_start + line_len);
            if parts.len() >= MAX_PARTS {
                return (parts, None);
            }
        }
        line_start += line_len;
    }
    // No closing delimiter: the last part runs to the end.
    if let Some(s) = start {
        parts.push(s..body.end);
    }
    (parts, None)
}

/// Parses a Content-Type value: `type/subtype; name=value; …`.
pub fn parse_content_type(raw: &[u8]) -> ContentType {
    let text = unfold(raw);
    let (media, params) = match text.find(';') {
        Some(i) => (&text[..i], &text[i + 1..]),
        None => (text.as_str(), ""),
    };
    let media = strip_comments(media);
    let (t, s) = media.split_once('/').unwrap_or((media.as_str(), ""));
    ContentType {
        r#type: t.trim().to_ascii_lowercase(),
        subtype: s.trim().to_ascii_lowercase(),
        params: parse_params(params),
        explicit: true,
    }
}

/// Unfolds a raw header value (CRLF before whitespace removed) into text.
pub fn unfold(raw: &[u8]) -> String {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\r' && raw.get(i + 1) == Some(&b'\n') {
            i += 2;
            continue;
        }
        if raw[i] == b'\n' {
            i += 1;
            continue;
        }
        out.push(raw[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn strip_comments(s: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    for c in s.chars() {
        match c {
            '(' => depth += 1,
            ')' if depth > 0 => depth -= 1,
            _ if depth == 0 => out.push(c),
            _ => {}
        }
    }
    out
}

/// `; name=value` parameters, quoted strings unquoted, RFC 2231 continuations joined and
/// `name*=charset'lang'%XX` values decoded.
pub fn parse_params(text: &str) -> Vec<(String, String)> {
    let mut raw: Vec<(String, String)> = Vec::new();
    let bytes: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < bytes.len() {
        while i < bytes.len() && (bytes[i] == ';' || bytes[i].is_whitespace()) {
            i += 1;
        }
        let start = i;
        while i < bytes.len() && bytes[i] != '=' && bytes[i] != ';' {
            i += 1;
        }
        let name: String = bytes[start..i].iter().collect::<String>().trim().to_owned();
        if i >= bytes.len() || bytes[i] != '=' {
            continue;
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < bytes.len() && bytes[i] == '"' {
            i += 1;
            while i < bytes.len() && bytes[i] != '"' {
                if bytes[i] == '\\' && i + 1 < bytes.len() {
                    i += 1;
                }
                value.push(bytes[i]);
                i += 1;
            }
            i += 1;
        } else {
            while i < bytes.len() && bytes[i] != ';' {
                value.push(bytes[i]);
                i += 1;
            }
            value = value.trim().to_owned();
        }
        if !name.is_empty() && raw.len() < 100 {
            raw.push((name, value));
        }
    }
    join_rfc2231(raw)
}

/// One RFC 2231 section: its number, whether it is %-encoded, its text.
type Piece = (Option<u32>, bool, String);

/// RFC 2231 parameters as Dovecot 2.3 stores them (`rfc2231_parse`): plain parameters first,
/// in header order; then the `name*…` ones merged per name, sorted by name, left %-encoded
/// under `name*` when any section is extended.
fn join_rfc2231(raw: Vec<(String, String)>) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut extended: Vec<(String, Piece)> = Vec::new();
    for (name, value) in raw {
        let Some(star) = name.find('*') else {
            out.push((name, value));
            continue;
        };
        let base = name[..star].to_owned();
        let rest = &name[star + 1..];
        let piece = if rest.is_empty() {
            (None, true, value)
        } else {
            let encoded = rest.ends_with('*');
            match rest.trim_end_matches('*').parse::<u32>() {
                Ok(n) => (Some(n), encoded, value),
                Err(_) => {
                    out.push((name, value));
                    continue;
                }
            }
        };
        extended.push((base, piece));
    }
    extended.sort_by(|a, b| a.0.cmp(&b.0).then(a.1 .0.cmp(&b.1 .0)));
    let mut i = 0;
    while i < extended.len() {
        let base = extended[i].0.clone();
        let mut j = i;
        while j < extended.len() && extended[j].0 == base {
            j += 1;
        }
        let group = &extended[i..j];
        i = j;
        if let [(_, (None, _, value))] = group {
            out.push((format!("{base}*"), value.clone()));
            continue;
        }
        let complete = group
            .iter()
            .enumerate()
            .all(|(k, (_, (n, _, _)))| *n == Some(k as u32));
        if !complete {
            for (_, (n, enc, value)) in group {
                let n = n.map(|n| n.to_string()).unwrap_or_default();
                let star = if *enc { "*" } else { "" };
                out.push((format!("{base}*{n}{star}"), value.clone()));
            }
            continue;
        }
        let any_encoded = group.iter().any(|(_, (_, e, _))| *e);
        let mut value = String::new();
        for (k, (_, (_, enc, v))) in group.iter().enumerate() {
            if any_encoded && !enc {
                if k == 0 {
                    value.push_str("''");
                }
                value.push_str(&v.replace('%', "%25"));
            } else {
                value.push_str(v);
            }
        }
        let key = if any_encoded {
            format!("{base}*")
        } else {
            base
        };
        out.push((key, value));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multipart_parts_end_before_the_delimiter_line_break() {
        let m = b"Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\npre\r\n--b\r\n\r\none\r\n--b\r\nContent-Type: text/html\r\n\r\n<p>two</p>\r\n--b--\r\nepilogue\r\n";
        let e = parse(m);
        let Kind::Multipart(parts) = &e.kind else {
            panic!("not multipart")
        };
        assert_eq!(parts.len(), 2);
        assert_eq!(&m[parts[0].body.clone()], b"one");
        assert_eq!(
            &m[parts[1].header.clone()],
            b"Content-Type: text/html\r\n\r\n"
        );
        assert_eq!(&m[parts[1].body.clone()], b"<p>two</p>");
        assert_eq!(parts[0].content_type.subtype, "plain");
        assert_eq!(parts[1].content_type.subtype, "html");
    }

    #[test]
    fn params_quoted_and_rfc2231() {
        let ct = parse_content_type(
            b" application/pdf; name*0=\"a very \"; name*1=\"long.pdf\";\r\n title*=utf-8''%E2%82%AC.txt; Size=\"1\"",
        );
        assert_eq!(ct.r#type, "application");
        // Dovecot's order and forms (its rfc2231_parse): plain first, then merged.
        let names: Vec<&str> = ct.params.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(names, ["Size", "name", "title*"]);
        assert_eq!(ct.param("name"), Some("a very long.pdf"));
        assert_eq!(ct.param("title*"), Some("utf-8''%E2%82%AC.txt"));
        let mixed = parse_content_type(b"a/b; x*0*=utf-8''%41; x*1=%42");
        assert_eq!(
            mixed.params,
            [("x*".to_owned(), "utf-8''%41%2542".to_owned())]
        );
    }

    #[test]
    fn garbage_never_panics() {
        for m in [
            &b""[..],
            b"\r\n",
            b"Content-Type: multipart/mixed; boundary=\r\n\r\n--\r\n",
            b"Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n--x\r\n--x--",
            b"Content-Type: message/rfc822\r\n\r\nContent-Type: message/rfc822\r\n\r\n",
            b"a: %\r\nContent-Type: a/b; c*=%; d*0*=%4",
        ] {
            let _ = parse(m);
        }
    }
}
