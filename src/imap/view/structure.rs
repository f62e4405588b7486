//! BODYSTRUCTURE, BODY and ENVELOPE of a view, written the way Dovecot writes them
//! (lib-imap/imap-bodystructure.c, imap-envelope.c), so that a client sees the same answer
//! for a decrypted message as for the same bytes stored in plaintext. The integration tests
//! compare with Dovecot byte for byte.

use super::mime::{self, Entity, Field, Kind};

/// `(…)` BODYSTRUCTURE (`extended`) or BODY of `entity`.
pub fn bodystructure(msg: &[u8], entity: &Entity, extended: bool) -> String {
    let mut out = String::new();
    write_part(&mut out, msg, entity, extended);
    out
}

fn write_part(out: &mut String, msg: &[u8], e: &Entity, extended: bool) {
    out.push('(');
    match &e.kind {
        Kind::Multipart(children) if !children.is_empty() => {
            for c in children {
                write_part(out, msg, c, extended);
            }
            out.push(' ');
            out.push_str(&string(subtype_raw(e).as_bytes()));
            if extended {
                out.push(' ');
                out.push_str(&params(&raw_params(e)));
                write_tail(out, e);
            }
        }
        _ => write_single(out, msg, e, extended),
    }
    out.push(')');
}

/// Type and subtype as the header wrote them (Dovecot keeps their case).
fn type_raw(e: &Entity) -> (String, String) {
    match e.field("Content-Type") {
        Some(f) if e.content_type.explicit && !e.content_type.subtype.is_empty() => {
            let text = mime::unfold(&f.raw_value);
            let media = text.split(';').next().unwrap_or_default();
            let (t, s) = media.split_once('/').unwrap_or((media, ""));
            (t.trim().to_owned(), s.trim().to_owned())
        }
        _ => (
            e.content_type.r#type.clone(),
            e.content_type.subtype.clone(),
        ),
    }
}

fn subtype_raw(e: &Entity) -> String {
    type_raw(e).1
}

fn raw_params(e: &Entity) -> Vec<(String, String)> {
    if e.content_type.explicit {
        e.content_type.params.clone()
    } else {
        Vec::new()
    }
}

fn write_single(out: &mut String, msg: &[u8], e: &Entity, extended: bool) {
    let (t, s) = type_raw(e);
    let text = e.content_type.r#type == "text";
    out.push_str(&string(t.as_bytes()));
    out.push(' ');
    out.push_str(&string(s.as_bytes()));
    out.push(' ');
    let p = raw_params(e);
    if p.is_empty() && text {
        out.push_str("(\"charset\" \"us-ascii\")");
    } else {
        out.push_str(&params(&p));
    }
    out.push(' ');
    out.push_str(&nstring_field(e.field("Content-ID")));
    out.push(' ');
    out.push_str(&nstring_field(e.field("Content-Description")));
    out.push(' ');
    match e.field("Content-Transfer-Encoding") {
        Some(f) => out.push_str(&string(mime::unfold(&f.raw_value).trim().as_bytes())),
        None => out.push_str("\"7bit\""),
    }
    let body = &msg[e.body.clone()];
    out.push_str(&format!(" {}", body.len()));
    match &e.kind {
        Kind::Message(inner) => {
            out.push(' ');
            out.push_str(&envelope(&inner.fields));
            out.push(' ');
            write_part(out, msg, inner, extended);
            out.push_str(&format!(" {}", lines(body)));
        }
        _ if text => out.push_str(&format!(" {}", lines(body))),
        _ => {}
    }
    if extended {
        out.push(' ');
        out.push_str(&nstring_field(e.field("Content-MD5")));
        write_tail(out, e);
    }
}

/// Disposition, language and location.
fn write_tail(out: &mut String, e: &Entity) {
    out.push(' ');
    match e.field("Content-Disposition") {
        Some(f) => {
            let ct = mime::parse_content_type(&f.raw_value);
            let text = mime::unfold(&f.raw_value);
            let kind = text.split(';').next().unwrap_or_default().trim().to_owned();
            out.push('(');
            out.push_str(&string(kind.as_bytes()));
            out.push(' ');
            out.push_str(&params(&ct.params));
            out.push(')');
        }
        None => out.push_str("NIL"),
    }
    out.push(' ');
    match e.field("Content-Language") {
        Some(f) => {
            let text = mime::unfold(&f.raw_value);
            let langs: Vec<&str> = text
                .split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            match langs.as_slice() {
                [] => out.push_str("NIL"),
                [one] => out.push_str(&string(one.as_bytes())),
                many => {
                    out.push('(');
                    let quoted: Vec<String> = many.iter().map(|l| string(l.as_bytes())).collect();
                    out.push_str(&quoted.join(" "));
                    out.push(')');
                }
            }
        }
        None => out.push_str("NIL"),
    }
    out.push(' ');
    out.push_str(&nstring_field(e.field("Content-Location")));
}

fn params(p: &[(String, String)]) -> String {
    if p.is_empty() {
        return "NIL".into();
    }
    let items: Vec<String> = p
        .iter()
        .map(|(k, v)| {
            format!(
                "{} {}",
                string(k.to_ascii_lowercase().as_bytes()),
                string(v.as_bytes())
            )
        })
        .collect();
    format!("({})", items.join(" "))
}

/// Line feeds in `body` (Dovecot's body line count).
fn lines(body: &[u8]) -> usize {
    body.iter().filter(|&&b| b == b'\n').count()
}

/// An IMAP string: quoted when it can be, else a literal (8-bit, CR/LF, or long).
pub fn string(s: &[u8]) -> String {
    let quotable = s.len() < 1024
        && s.iter()
            .all(|&b| b != b'\r' && b != b'\n' && b != 0 && b < 0x80);
    if quotable {
        let mut out = String::with_capacity(s.len() + 2);
        out.push('"');
        for &b in s {
            if b == b'"' || b == b'\\' {
                out.push('\\');
            }
            out.push(b as char);
        }
        out.push('"');
        out
    } else {
        format!("{{{}}}\r\n{}", s.len(), String::from_utf8_lossy(s))
    }
}

fn nstring(s: Option<&[u8]>) -> String {
    match s {
        Some(v) => string(v),
        None => "NIL".into(),
    }
}

/// A header value for the envelope: unfolded (CR and LF removed), leading whitespace trimmed.
fn value_nolf(f: &Field) -> Vec<u8> {
    let v: Vec<u8> = f
        .raw_value
        .iter()
        .copied()
        .filter(|&b| b != b'\r' && b != b'\n')
        .collect();
    let start = v
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(v.len());
    v[start..].to_vec()
}

fn nstring_field(f: Option<&Field>) -> String {
    match f {
        Some(f) => {
            let v = value_nolf(f);
            let trimmed = trim_end(&v);
            string(trimmed)
        }
        None => "NIL".into(),
    }
}

fn trim_end(v: &[u8]) -> &[u8] {
    let end = v
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map(|p| p + 1)
        .unwrap_or(0);
    &v[..end]
}

/// `(date subject from sender reply-to to cc bcc in-reply-to message-id)`.
pub fn envelope(fields: &[Field]) -> String {
    let get = |name: &str| fields.iter().find(|f| f.name.eq_ignore_ascii_case(name));
    let text = |name: &str| nstring(get(name).map(value_nolf).as_deref());
    let addresses = |name: &str| get(name).map(|f| address_list(&f.raw_value));
    let from = addresses("From");
    let list = |a: Option<String>| a.unwrap_or_else(|| "NIL".into());
    let sender = addresses("Sender").or_else(|| from.clone());
    let reply_to = addresses("Reply-To").or_else(|| from.clone());
    format!(
        "({} {} {} {} {} {} {} {} {} {})",
        text("Date"),
        text("Subject"),
        list(from.clone()),
        list(sender),
        list(reply_to),
        list(addresses("To")),
        list(addresses("Cc")),
        list(addresses("Bcc")),
        text("In-Reply-To"),
        text("Message-ID"),
    )
}

/// `((name adl mailbox host) …)`, groups as `(NIL NIL "group" NIL) … (NIL NIL NIL NIL)`.
fn address_list(raw: &[u8]) -> String {
    let addrs = super::address::parse(raw);
    if addrs.is_empty() {
        return "NIL".into();
    }
    let mut out = String::from("(");
    for a in addrs {
        out.push('(');
        out.push_str(&nstring(a.name.as_deref()));
        out.push(' ');
        out.push_str(&nstring(a.route.as_deref()));
        out.push(' ');
        out.push_str(&nstring(a.mailbox.as_deref()));
        out.push(' ');
        out.push_str(&nstring(a.domain.as_deref()));
        out.push(')');
    }
    out.push(')');
    out
}

/// `HEADER.FIELDS` / `HEADER.FIELDS.NOT`: the matching fields in message order, then CRLF.
pub fn header_fields(header: &[u8], names: &[&[u8]], not: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let mut keep = false;
    for line in header.split_inclusive(|&b| b == b'\n') {
        let content = line.strip_suffix(b"\n").unwrap_or(line);
        let content = content.strip_suffix(b"\r").unwrap_or(content);
        if content.is_empty() {
            break;
        }
        if content[0] == b' ' || content[0] == b'\t' {
            if keep {
                out.extend_from_slice(line);
            }
            continue;
        }
        let name = content
            .iter()
            .position(|&b| b == b':')
            .map(|i| trim_end(&content[..i]))
            .unwrap_or(content);
        let listed = names.iter().any(|n| n.eq_ignore_ascii_case(name));
        keep = listed != not;
        if keep {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}
