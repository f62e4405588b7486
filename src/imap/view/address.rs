//! Address lists for ENVELOPE (RFC 5322 §3.4), parsed the way Dovecot's message-address.c
//! does: display names unquoted with encoded words kept as they are, a comment used as the
//! name when there is none, groups marked by a start and an end entry.

/// One ENVELOPE address (or group marker).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Address {
    pub name: Option<Vec<u8>>,
    pub route: Option<Vec<u8>>,
    pub mailbox: Option<Vec<u8>>,
    pub domain: Option<Vec<u8>>,
}

/// Addresses in one header at most.
const MAX_ADDRESSES: usize = 1000;

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(Vec<u8>),
    Quoted(Vec<u8>),
    Comment(Vec<u8>),
    Special(u8),
}

fn tokenize(raw: &[u8]) -> Vec<Token> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        match c {
            b' ' | b'\t' | b'\r' | b'\n' => i += 1,
            b'"' => {
                let mut v = Vec::new();
                i += 1;
                while i < raw.len() && raw[i] != b'"' {
                    if raw[i] == b'\\' && i + 1 < raw.len() {
                        i += 1;
                    }
                    if raw[i] != b'\r' && raw[i] != b'\n' {
                        v.push(raw[i]);
                    }
                    i += 1;
                }
                i += 1;
                out.push(Token::Quoted(v));
            }
            b'(' => {
                let mut depth = 0usize;
                let mut v = Vec::new();
                while i < raw.len() {
                    let b = raw[i];
                    if b == b'\\' && i + 1 < raw.len() {
                        v.push(raw[i + 1]);
                        i += 2;
                        continue;
                    }
                    if b == b'(' {
                        depth += 1;
                        if depth > 1 {
                            v.push(b);
                        }
                    } else if b == b')' {
                        depth -= 1;
                        if depth == 0 {
                            i += 1;
                            break;
                        }
                        v.push(b);
                    } else if b != b'\r' && b != b'\n' {
                        v.push(b);
                    }
                    i += 1;
                }
                out.push(Token::Comment(v));
            }
            b'<' | b'>' | b'@' | b',' | b':' | b';' | b'.' => {
                out.push(Token::Special(c));
                i += 1;
            }
            _ => {
                let start = i;
                while i < raw.len() && !b" \t\r\n\"(<>@,:;.".contains(&raw[i]) {
                    i += 1;
                }
                out.push(Token::Word(raw[start..i].to_vec()));
            }
        }
    }
    out
}

/// Parses an address-list header value.
pub fn parse(raw: &[u8]) -> Vec<Address> {
    let tokens = tokenize(raw);
    let mut out = Vec::new();
    let mut i = 0;
    let mut in_group = false;
    while i < tokens.len() && out.len() < MAX_ADDRESSES {
        // One mailbox, group start or group end up to the next separator.
        let start = i;
        let mut depth_angle = false;
        while i < tokens.len() {
            match &tokens[i] {
                Token::Special(b'<') => depth_angle = true,
                Token::Special(b'>') => depth_angle = false,
                Token::Special(b',') | Token::Special(b';') if !depth_angle => break,
                Token::Special(b':') if !depth_angle && !in_group => break,
                _ => {}
            }
            i += 1;
        }
        let chunk = &tokens[start..i];
        let sep = tokens.get(i).cloned();
        i += 1;
        match sep {
            Some(Token::Special(b':')) => {
                out.push(Address {
                    mailbox: Some(phrase(chunk)),
                    ..Address::default()
                });
                in_group = true;
                continue;
            }
            _ => {
                if let Some(a) = mailbox(chunk) {
                    out.push(a);
                }
                if sep == Some(Token::Special(b';')) && in_group {
                    out.push(Address::default());
                    in_group = false;
                }
            }
        }
    }
    if in_group {
        out.push(Address::default());
    }
    out
}

/// Words and quoted strings joined by single spaces (dots kept as they came).
fn phrase(tokens: &[Token]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut prev_dot = false;
    for t in tokens {
        match t {
            Token::Word(w) | Token::Quoted(w) => {
                if !out.is_empty() && !prev_dot {
                    out.push(b' ');
                }
                out.extend_from_slice(w);
                prev_dot = false;
            }
            Token::Special(b'.') => {
                out.push(b'.');
                prev_dot = true;
            }
            _ => {}
        }
    }
    out
}

/// `local@domain` from tokens (dots joined without spaces).
fn addr_spec(tokens: &[Token]) -> (Vec<u8>, Option<Vec<u8>>) {
    let at = tokens.iter().position(|t| *t == Token::Special(b'@'));
    let join = |ts: &[Token]| {
        let mut v = Vec::new();
        for t in ts {
            match t {
                Token::Word(w) => v.extend_from_slice(w),
                Token::Quoted(w) => {
                    v.push(b'"');
                    v.extend_from_slice(w);
                    v.push(b'"');
                }
                Token::Special(b'.') => v.push(b'.'),
                _ => {}
            }
        }
        v
    };
    match at {
        Some(p) => (join(&tokens[..p]), Some(join(&tokens[p + 1..]))),
        None => (join(tokens), None),
    }
}

fn mailbox(chunk: &[Token]) -> Option<Address> {
    if chunk.iter().all(|t| matches!(t, Token::Comment(_))) {
        return None;
    }
    // A bare addr-spec takes its last comment as the name.
    let comment = chunk.iter().rev().find_map(|t| match t {
        Token::Comment(c) => Some(c.clone()),
        _ => None,
    });
    let open = chunk.iter().position(|t| *t == Token::Special(b'<'));
    let (name, route, local, domain) = match open {
        Some(o) => {
            let close = chunk[o..]
                .iter()
                .position(|t| *t == Token::Special(b'>'))
                .map(|c| c + o)
                .unwrap_or(chunk.len());
            let inside = &chunk[o + 1..close];
            // An obsolete route: <@a,@b:local@domain>.
            let (route, inside) = match inside.iter().position(|t| *t == Token::Special(b':')) {
                Some(c) if inside.first() == Some(&Token::Special(b'@')) => {
                    (Some(phrase_route(&inside[..c])), &inside[c + 1..])
                }
                _ => (None, inside),
            };
            let (local, domain) = addr_spec(inside);
            (Some(phrase(&chunk[..o])), route, local, domain)
        }
        None => {
            let spec: Vec<Token> = chunk
                .iter()
                .filter(|t| !matches!(t, Token::Comment(_)))
                .cloned()
                .collect();
            let words = spec
                .iter()
                .filter(|t| matches!(t, Token::Word(_) | Token::Quoted(_)))
                .count();
            let has_at = spec.contains(&Token::Special(b'@'));
            if !has_at && words > 1 {
                // "Name Only": a phrase without an address.
                (Some(phrase(&spec)), None, Vec::new(), None)
            } else {
                let (local, domain) = addr_spec(&spec);
                (comment, None, local, domain)
            }
        }
    };
    Some(Address {
        name: name.filter(|n| !n.is_empty()),
        route,
        mailbox: Some(if local.is_empty() {
            b"MISSING_MAILBOX".to_vec()
        } else {
            local
        }),
        domain: Some(
            domain
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| b"MISSING_DOMAIN".to_vec()),
        ),
    })
}

fn phrase_route(tokens: &[Token]) -> Vec<u8> {
    let mut v = Vec::new();
    for t in tokens {
        match t {
            Token::Word(w) => v.extend_from_slice(w),
            Token::Special(c) => v.push(*c),
            _ => {}
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &Option<Vec<u8>>) -> Option<&str> {
        v.as_deref().map(|b| std::str::from_utf8(b).unwrap())
    }

    #[test]
    fn names_groups_and_comments() {
        let a = parse(
            b" \"Alice Q. Doe\" <alice@example.com>, bob@example.org (Bob),\r\n team: carol@x.y;",
        );
        assert_eq!(a.len(), 5);
        assert_eq!(s(&a[0].name), Some("Alice Q. Doe"));
        assert_eq!(s(&a[0].mailbox), Some("alice"));
        assert_eq!(s(&a[0].domain), Some("example.com"));
        assert_eq!(s(&a[1].name), Some("Bob"));
        assert_eq!(s(&a[2].mailbox), Some("team"));
        assert_eq!(a[2].domain, None);
        assert_eq!(s(&a[3].mailbox), Some("carol"));
        let m = parse(b" user, Name Only, <>");
        assert_eq!(s(&m[0].domain), Some("MISSING_DOMAIN"));
        assert_eq!(s(&m[1].name), Some("Name Only"));
        assert_eq!(s(&m[1].mailbox), Some("MISSING_MAILBOX"));
        assert_eq!(s(&m[2].mailbox), Some("MISSING_MAILBOX"));
        assert_eq!(a[4], Address::default());
    }

    #[test]
    fn encoded_words_stay_raw() {
        let a = parse(b" =?utf-8?q?J=C3=B6rg?= <j@x.de>");
        assert_eq!(s(&a[0].name), Some("=?utf-8?q?J=C3=B6rg?="));
    }
}
