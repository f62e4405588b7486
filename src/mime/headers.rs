//! The header section of a message: split from the body, fields kept with their raw bytes.

use std::collections::BTreeSet;
use thiserror::Error;

/// Limits on what a header section may hold (Postfix's header_size_limit is 100 KB; Dovecot's
/// default is similar).
pub const MAX_HEADER_BYTES: usize = 256 * 1024;
pub const MAX_HEADER_FIELDS: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MimeError {
    #[error("the header section is larger than {MAX_HEADER_BYTES} bytes")]
    HeaderTooLarge,
    #[error("more than {MAX_HEADER_FIELDS} header fields")]
    TooManyFields,
    #[error("a header line is not a field (no colon): {0:?}")]
    NotAField(String),
    #[error("the message is not in the expected form: {0}")]
    Structure(String),
}

/// One header field: its name, its unfolded value, and its raw bytes (with folding and CRLF).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderField {
    pub name: String,
    pub value: String,
    pub raw: Vec<u8>,
}

impl HeaderField {
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// A message split into header fields and body bytes.
#[derive(Debug, Clone)]
pub struct ParsedMessage<'a> {
    pub fields: Vec<HeaderField>,
    pub body: &'a [u8],
    pub raw: &'a [u8],
}

impl<'a> ParsedMessage<'a> {
    pub fn parse(raw: &'a [u8]) -> Result<ParsedMessage<'a>, MimeError> {
        let (head, body) = match find(raw, b"\r\n\r\n") {
            Some(i) => (&raw[..i + 2], &raw[i + 4..]),
            None if raw.ends_with(b"\r\n") => (raw, &raw[raw.len()..]),
            None => (raw, &raw[raw.len()..]),
        };
        if head.len() > MAX_HEADER_BYTES {
            return Err(MimeError::HeaderTooLarge);
        }
        let mut fields: Vec<HeaderField> = Vec::new();
        for line in split_lines(head) {
            if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
                // A continuation line (folding, RFC 5322 §2.2.3).
                match fields.last_mut() {
                    Some(f) => {
                        f.raw.extend_from_slice(line);
                        f.value
                            .push_str(&String::from_utf8_lossy(line).replace("\r\n", ""));
                    }
                    None => {
                        return Err(MimeError::NotAField(
                            String::from_utf8_lossy(line).into_owned(),
                        ))
                    }
                }
                continue;
            }
            let text = String::from_utf8_lossy(line);
            let Some((name, value)) = text.split_once(':') else {
                return Err(MimeError::NotAField(
                    text.trim_end().chars().take(60).collect(),
                ));
            };
            if name.is_empty() || name.contains(' ') {
                return Err(MimeError::NotAField(
                    text.trim_end().chars().take(60).collect(),
                ));
            }
            fields.push(HeaderField {
                name: name.to_owned(),
                value: value.trim_end_matches(['\r', '\n']).trim_start().to_owned(),
                raw: line.to_vec(),
            });
            if fields.len() > MAX_HEADER_FIELDS {
                return Err(MimeError::TooManyFields);
            }
        }
        Ok(ParsedMessage { fields, body, raw })
    }

    /// The first field of that name.
    pub fn field(&self, name: &str) -> Option<&HeaderField> {
        self.fields.iter().find(|f| f.is(name))
    }

    /// The addresses in To and Cc, lower case (for telling Bcc recipients apart).
    pub fn visible_recipients(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        let mut head = Vec::new();
        for f in self.fields.iter().filter(|f| f.is("to") || f.is("cc")) {
            head.extend_from_slice(&f.raw);
        }
        head.extend_from_slice(b"\r\n");
        if let Some(msg) = mail_parser::MessageParser::default().parse_headers(&head) {
            for list in [msg.to(), msg.cc()].into_iter().flatten() {
                for addr in list.iter() {
                    if let Some(a) = addr.address() {
                        out.insert(a.to_lowercase());
                    }
                }
            }
        }
        out
    }
}

/// Lines including their CRLF (a last line without one is kept as it is).
fn split_lines(bytes: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = bytes;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| i + 1)
            .unwrap_or(rest.len());
        let (line, tail) = rest.split_at(end);
        rest = tail;
        Some(line)
    })
}

pub(crate) fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_keep_their_raw_bytes() {
        let raw = b"From: a@x\r\nSubject: one\r\n two\r\nTo: \"B\" <b@x>, c@x\r\nCc: D <d@X>\r\n\r\nbody\r\n";
        let m = ParsedMessage::parse(raw).unwrap();
        assert_eq!(m.fields.len(), 4);
        assert_eq!(m.field("subject").unwrap().value, "one two");
        assert_eq!(m.field("subject").unwrap().raw, b"Subject: one\r\n two\r\n");
        assert_eq!(m.body, b"body\r\n");
        let v: Vec<String> = m.visible_recipients().into_iter().collect();
        assert_eq!(v, vec!["b@x", "c@x", "d@x"]);
        assert!(ParsedMessage::parse(b"not a header\r\n\r\nx").is_err());
        assert!(ParsedMessage::parse(b" folded first\r\n\r\nx").is_err());
    }
}
