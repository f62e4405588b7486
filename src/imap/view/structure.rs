//! BODYSTRUCTURE, BODY and ENVELOPE of a view, written the way Dovecot 2.3 writes them
//! (lib-imap/imap-bodystructure.c, imap-envelope.c, imap-quote.c), so that a client sees the
//! same answer for a decrypted message as for the same bytes stored in plaintext. Case is kept
//! as the header wrote it; the integration tests compare with Dovecot byte for byte.

use super::address::{self, Address};
use super::mime::{self, Entity, Field, Kind};

/// `(…)` BODYSTRUCTURE (`extended`) or BODY of `entity`.
pub fn bodystructure(msg: &[u8], entity: &Entity, extended: bool) -> Vec<u8> {
    let mut out = Vec::new();
    write_part(&mut out, msg, entity, extended);
    out
}

fn write_part(out: &mut Vec<u8>, msg: &[u8], e: &Entity, extended: bool) {
    out.push(b'(');
    match &e.kind {
        Kind::Multipart(children) => {
            if children.is_empty() {
                // Dovecot shows a multipart without parts as one empty text part.
                out.extend_from_slice(
                    b"(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 0 0",
                );
                if extended {
                    out.extend_from_slice(b" NIL NIL NIL NIL");
                }
                out.push(b')');
            }
            for c in children {
                write_part(out, msg, c, extended);
            }
            out.push(b' ');
            out.extend_from_slice(&string(type_raw(e).1.as_bytes()));
            if extended {
                out.push(b' ');
                out.extend_from_slice(&params(&e.content_type.params, false));
                write_tail(out, e);
            }
        }
        _ => write_single(out, msg, e, extended),
    }
    out.push(b')');
}

/// Type and subtype as the header wrote them (Dovecot keeps their case).
fn type_raw(e: &Entity) -> (String, String) {
    match e.mime_field("Content-Type") {
        Some(f) if e.content_type.explicit => {
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

fn write_single(out: &mut Vec<u8>, msg: &[u8], e: &Entity, extended: bool) {
    let message = matches!(e.kind, Kind::Message(_));
    let text = e.content_type.r#type == "text";
    if message {
        out.extend_from_slice(b"\"message\" \"rfc822\"");
    } else {
        let (t, s) = type_raw(e);
        out.extend_from_slice(&string(t.as_bytes()));
        out.push(b' ');
        out.extend_from_slice(&string(s.as_bytes()));
    }
    out.push(b' ');
    let p = if e.content_type.explicit {
        e.content_type.params.as_slice()
    } else {
        &[]
    };
    out.extend_from_slice(&params(p, text));
    out.push(b' ');
    out.extend_from_slice(&nstring_nolf(e.mime_field("Content-ID")));
    out.push(b' ');
    out.extend_from_slice(&nstring_nolf(e.mime_field("Content-Description")));
    out.push(b' ');
    match e.mime_field("Content-Transfer-Encoding").and_then(encoding) {
        Some(cte) => out.extend_from_slice(&string(cte.as_bytes())),
        None => out.extend_from_slice(b"\"7bit\""),
    }
    let body = &msg[e.body.clone()];
    out.extend_from_slice(format!(" {}", body.len()).as_bytes());
    match &e.kind {
        Kind::Message(inner) => {
            out.push(b' ');
            out.extend_from_slice(&envelope(&inner.fields));
            out.push(b' ');
            write_part(out, msg, inner, extended);
            out.extend_from_slice(format!(" {}", lines(body)).as_bytes());
        }
        _ if text => out.extend_from_slice(format!(" {}", lines(body)).as_bytes()),
        _ => {}
    }
    if extended {
        out.push(b' ');
        out.extend_from_slice(&nstring_nolf(e.mime_field("Content-MD5")));
        write_tail(out, e);
    }
}

/// A Content-Transfer-Encoding value: one token, else none.
fn encoding(f: &Field) -> Option<String> {
    let text = mime::unfold(&f.raw_value);
    let mut words = text.split_whitespace();
    let token = words.next()?;
    let valid = token
        .bytes()
        .all(|b| b.is_ascii_graphic() && !b"()<>@,;:\\\"/[]?=".contains(&b));
    (valid && words.next().is_none()).then(|| token.to_owned())
}

/// Disposition, language and location.
fn write_tail(out: &mut Vec<u8>, e: &Entity) {
    out.push(b' ');
    match e.mime_field("Content-Disposition") {
        Some(f) => {
            let text = mime::unfold(&f.raw_value);
            let (kind, rest) = match text.find(';') {
                Some(i) => (&text[..i], &text[i + 1..]),
                None => (text.as_str(), ""),
            };
            out.push(b'(');
            out.extend_from_slice(&string(kind.trim().as_bytes()));
            out.push(b' ');
            out.extend_from_slice(&params(&mime::parse_params(rest), false));
            out.push(b')');
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    match e.mime_field("Content-Language") {
        Some(f) => {
            let text = mime::unfold(&f.raw_value);
            let mut langs = Vec::new();
            for l in text.split(',').map(str::trim) {
                if l.is_empty() || !l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                    break;
                }
                langs.push(string(l.as_bytes()));
            }
            if langs.is_empty() {
                out.extend_from_slice(b"NIL");
            } else {
                out.push(b'(');
                out.extend_from_slice(&langs.join(&b' '));
                out.push(b')');
            }
        }
        None => out.extend_from_slice(b"NIL"),
    }
    out.push(b' ');
    out.extend_from_slice(&nstring_nolf(e.mime_field("Content-Location")));
}

/// `("name" "value" …)`; a text part without a charset gets `"charset" "us-ascii"` last.
fn params(p: &[(String, String)], text: bool) -> Vec<u8> {
    let mut items: Vec<Vec<u8>> = p
        .iter()
        .map(|(k, v)| [string(k.as_bytes()), string(v.as_bytes())].join(&b' '))
        .collect();
    if text && !p.iter().any(|(k, _)| k.eq_ignore_ascii_case("charset")) {
        items.push(b"\"charset\" \"us-ascii\"".to_vec());
    }
    if items.is_empty() {
        b"NIL".to_vec()
    } else {
        [&b"("[..], &items.join(&b' '), b")"].concat()
    }
}

/// Line feeds in `body` (Dovecot's line count).
fn lines(body: &[u8]) -> usize {
    body.iter().filter(|&&b| b == b'\n').count()
}

fn literal(s: &[u8]) -> Vec<u8> {
    // The announced length is the number of bytes that follow, 8-bit ones included.
    [format!("{{{}}}\r\n", s.len()).as_bytes(), s].concat()
}

/// Dovecot's `imap_append_string`: quoted, unless CR, LF, 8-bit or a fifth `"`/`\` make it
/// a literal.
pub fn string(s: &[u8]) -> Vec<u8> {
    let specials = s.iter().filter(|&&b| b == b'"' || b == b'\\').count();
    if specials > 4 || s.iter().any(|&b| b == b'\r' || b == b'\n' || b >= 0x80) {
        return literal(s);
    }
    let mut out = Vec::with_capacity(s.len() + 2);
    out.push(b'"');
    for &b in s {
        if b == b'"' || b == b'\\' {
            out.push(b'\\');
        }
        out.push(b);
    }
    out.push(b'"');
    out
}

fn nstring(s: Option<&[u8]>) -> Vec<u8> {
    s.map(string).unwrap_or_else(|| b"NIL".to_vec())
}

/// Dovecot's `imap_append_string_for_humans` (Subject, display names): quoted as it is when
/// it is plain, else a literal with whitespace runs collapsed.
fn for_humans(s: &[u8]) -> Vec<u8> {
    let plain = !s.is_empty()
        && s[0] != b' '
        && s[s.len() - 1] != b' '
        && !s.windows(2).any(|w| w[0] == b' ' && w[1] == b' ')
        && !s
            .iter()
            .any(|&b| matches!(b, b'\t' | b'\r' | b'\n' | 0 | b'"' | b'\\') || b >= 0x80);
    if plain {
        return [&b"\""[..], s, b"\""].concat();
    }
    let mut out: Vec<u8> = Vec::with_capacity(s.len());
    let mut space = false;
    for &b in s {
        if matches!(b, b' ' | b'\t' | b'\r' | b'\n') {
            space = !out.is_empty();
            continue;
        }
        if space {
            out.push(b' ');
            space = false;
        }
        out.push(if b == 0 { 0x80 } else { b });
    }
    if out.is_empty() {
        return "\"\"".into();
    }
    literal(&out)
}

/// Dovecot's `full_value`: after the colon, leading whitespace skipped, folds kept as LF.
fn full_value(f: &Field) -> Vec<u8> {
    let v: Vec<u8> = f
        .raw_value
        .iter()
        .copied()
        .filter(|&b| b != b'\r')
        .collect();
    let start = v
        .iter()
        .position(|b| *b != b' ' && *b != b'\t')
        .unwrap_or(v.len().min(1));
    v[start..].to_vec()
}

/// Dovecot's `imap_append_nstring_nolf`: line breaks removed (a space put where a break was
/// not followed by whitespace), trailing whitespace kept.
fn nstring_nolf(f: Option<&Field>) -> Vec<u8> {
    let Some(f) = f else {
        return b"NIL".to_vec();
    };
    let v = full_value(f);
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'\n' || v[i] == b'\r' {
            i += 1;
            if i < v.len() && !matches!(v[i], b' ' | b'\t' | b'\r' | b'\n') {
                out.push(b' ');
            }
            continue;
        }
        out.push(v[i]);
        i += 1;
    }
    string(&out)
}

/// `(date subject from sender reply-to to cc bcc in-reply-to message-id)`.
pub fn envelope(fields: &[Field]) -> Vec<u8> {
    // Date, Subject, In-Reply-To, Message-ID: the last occurrence wins.
    let last = |name: &str| {
        fields
            .iter()
            .rev()
            .find(|f| f.name.eq_ignore_ascii_case(name))
    };
    // Address headers: every occurrence, as one list.
    let addresses = |name: &str| -> Vec<Address> {
        fields
            .iter()
            .filter(|f| f.name.eq_ignore_ascii_case(name))
            .flat_map(|f| address::parse(&f.raw_value))
            .collect()
    };
    let from = addresses("From");
    let or_from = |list: Vec<Address>| if list.is_empty() { from.clone() } else { list };
    let subject = match last("Subject") {
        Some(f) => for_humans(&full_value(f)),
        None => b"NIL".to_vec(),
    };
    let items = [
        nstring_nolf(last("Date")),
        subject,
        address_list(&from),
        address_list(&or_from(addresses("Sender"))),
        address_list(&or_from(addresses("Reply-To"))),
        address_list(&addresses("To")),
        address_list(&addresses("Cc")),
        address_list(&addresses("Bcc")),
        nstring_nolf(last("In-Reply-To")),
        nstring_nolf(last("Message-ID")),
    ];
    [&b"("[..], &items.join(&b' '), b")"].concat()
}

/// `((name adl mailbox host) …)`, or NIL for none.
fn address_list(addrs: &[Address]) -> Vec<u8> {
    if addrs.is_empty() {
        return b"NIL".to_vec();
    }
    let mut out = b"(".to_vec();
    for a in addrs {
        out.push(b'(');
        out.extend_from_slice(
            &a.name
                .as_deref()
                .map(for_humans)
                .unwrap_or_else(|| b"NIL".to_vec()),
        );
        out.push(b' ');
        out.extend_from_slice(&nstring(a.route.as_deref()));
        out.push(b' ');
        out.extend_from_slice(&nstring(a.mailbox.as_deref()));
        out.push(b' ');
        out.extend_from_slice(&nstring(a.domain.as_deref()));
        out.push(b')');
    }
    out.push(b')');
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
            .map(|i| &content[..i])
            .unwrap_or(content);
        let name = trim_end(name);
        let listed = names.iter().any(|n| n.eq_ignore_ascii_case(name));
        keep = listed != not;
        if keep {
            out.extend_from_slice(line);
        }
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn trim_end(v: &[u8]) -> &[u8] {
    let end = v
        .iter()
        .rposition(|b| *b != b' ' && *b != b'\t')
        .map(|p| p + 1)
        .unwrap_or(0);
    &v[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Examples produced by Dovecot 2.3.19 itself.
    #[test]
    fn dovecot_examples() {
        let m = b"MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=\"XYZ\"\r\n\r\nThis is a preamble\r\n--XYZ\r\nContent-Type: text/plain; charset=UTF-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nHi there\r\n\r\n--XYZ\r\nContent-Type: application/pdf; name=\"doc.pdf\"\r\nContent-Disposition: attachment; filename=\"doc.pdf\"\r\nContent-Transfer-Encoding: base64\r\n\r\nJVBERi0xLjQK\r\n--XYZ--\r\nepilogue\r\n";
        let tree = mime::parse(m);
        assert_eq!(
            String::from_utf8_lossy(&bodystructure(m, &tree, true)),
            "((\"text\" \"plain\" (\"charset\" \"UTF-8\") NIL NIL \"quoted-printable\" 10 1 NIL NIL NIL NIL)(\"application\" \"pdf\" (\"name\" \"doc.pdf\") NIL NIL \"base64\" 12 NIL (\"attachment\" (\"filename\" \"doc.pdf\")) NIL NIL) \"mixed\" (\"boundary\" \"XYZ\") NIL NIL NIL)"
        );
        let m = b"Content-Type: TEXT/Plain; CHARSET=Utf-8; Format=Flowed\r\nContent-Transfer-Encoding: 8BIT\r\nContent-Description: multi\r\n line\r\nContent-ID: <id@x>\r\nContent-Language: en-US, DE\r\nContent-Location: http://x/y\r\nContent-MD5: abc=\r\nContent-Disposition: INLINE\r\n\r\nabcdef\r\n";
        let tree = mime::parse(m);
        assert_eq!(
            String::from_utf8_lossy(&bodystructure(m, &tree, true)),
            "(\"TEXT\" \"Plain\" (\"CHARSET\" \"Utf-8\" \"Format\" \"Flowed\") \"<id@x>\" \"multi line\" \"8BIT\" 8 1 \"abc=\" (\"INLINE\" NIL) (\"en-US\" \"DE\") \"http://x/y\")"
        );
        // Not MIME: Content-* ignored.
        let m = b"Content-Transfer-Encoding: base64\r\nContent-ID: <x>\r\n\r\n12345678\r\n";
        let tree = mime::parse(m);
        assert_eq!(
            String::from_utf8_lossy(&bodystructure(m, &tree, false)),
            "(\"text\" \"plain\" (\"charset\" \"us-ascii\") NIL NIL \"7bit\" 10 1)"
        );
    }

    #[test]
    fn envelope_strings_for_humans() {
        let fields = mime::parse_fields(b"From: \"Quote \\\" me\" <q@d>\r\nSubject: folded\r\n subject\r\nTo: undisclosed-recipients:;\r\nMessage-ID:   <a@b>  \r\n\r\n");
        assert_eq!(
            String::from_utf8_lossy(&envelope(&fields)),
            "(NIL {14}\r\nfolded subject (({10}\r\nQuote \" me NIL \"q\" \"d\")) (({10}\r\nQuote \" me NIL \"q\" \"d\")) (({10}\r\nQuote \" me NIL \"q\" \"d\")) ((NIL NIL \"undisclosed-recipients\" NIL)(NIL NIL NIL NIL)) NIL NIL NIL \"<a@b>  \")"
        );
        assert_eq!(
            String::from_utf8_lossy(&string(b"\"\"\"\"5")),
            "\"\\\"\\\"\\\"\\\"5\""
        );
        assert_eq!(
            String::from_utf8_lossy(&string(b"\"\"\"\"\"5")),
            "{6}\r\n\"\"\"\"\"5"
        );
    }

    #[test]
    fn literals_announce_their_bytes_8bit_included() {
        let fields =
            mime::parse_fields(b"Subject: caf\xe9 cr\xe8me\r\nFrom: Ren\xe9 <r@d>\r\n\r\n");
        let env = envelope(&fields);
        // Every literal announces exactly the bytes that follow it.
        let mut literals = 0;
        let mut i = 0;
        while let Some(open) = env[i..].iter().position(|&b| b == b'{') {
            let open = i + open;
            let close = open + env[open..].iter().position(|&b| b == b'}').expect("close");
            let n: usize = std::str::from_utf8(&env[open + 1..close])
                .expect("digits")
                .parse()
                .expect("n");
            let data = &env[close + 3..close + 3 + n];
            assert!(
                data == b"caf\xe9 cr\xe8me" || data == b"Ren\xe9",
                "{:?}",
                String::from_utf8_lossy(data)
            );
            literals += 1;
            i = close + 3 + n;
        }
        assert_eq!(
            literals, 4,
            "subject, and the name in From, Sender, Reply-To"
        );
    }
}
