//! Reading a PGP/MIME message (RFC 3156 §4) that a client encrypted itself, strictly: the body
//! must be exactly the two parts of multipart/encrypted (the version part and one ASCII-armored
//! OpenPGP message) and nothing else that a reader could see. Anything more (a third part, text
//! beside the armour, an encoded part) is refused, since it would travel in plaintext.
//!
//! Boundary delimiters are recognised only as whole lines (RFC 2046 §5.1.1): a short boundary
//! such as `B` also occurs inside `-----BEGIN PGP MESSAGE-----`, and must not split it.

use super::headers::{MimeError, ParsedMessage};
use mail_parser::MimeHeaders;

/// Longest boundary RFC 2046 §5.1.1 allows.
const MAX_BOUNDARY: usize = 70;

/// A client-encrypted PGP/MIME message, checked for form.
#[derive(Debug, Clone)]
pub struct PgpMimeMessage<'a> {
    /// The top-level header fields (outer headers) and the raw message.
    pub header: ParsedMessage<'a>,
    /// The ASCII-armored OpenPGP message of the second part, from `-----BEGIN` to the end of
    /// `-----END PGP MESSAGE-----`.
    pub armored: &'a [u8],
}

fn structure(why: impl Into<String>) -> MimeError {
    MimeError::Structure(why.into())
}

/// A parsed Content-Type: `type/subtype` in lower case, and parameters.
struct ContentType {
    mime_type: String,
    boundary: Option<String>,
    protocol: Option<String>,
}

fn content_type(message: &ParsedMessage<'_>) -> Result<ContentType, MimeError> {
    let field = message
        .field("content-type")
        .ok_or_else(|| structure("a part has no Content-Type"))?;
    let mut head = field.raw.clone();
    head.extend_from_slice(b"\r\n");
    let parsed = mail_parser::MessageParser::default()
        .parse_headers(&head)
        .ok_or_else(|| structure("unreadable Content-Type"))?;
    let ct = parsed
        .content_type()
        .ok_or_else(|| structure("unreadable Content-Type"))?;
    let mime_type = match ct.subtype() {
        Some(sub) => format!("{}/{}", ct.ctype(), sub),
        None => ct.ctype().to_owned(),
    }
    .to_ascii_lowercase();
    Ok(ContentType {
        mime_type,
        boundary: ct.attribute("boundary").map(str::to_owned),
        protocol: ct.attribute("protocol").map(str::to_ascii_lowercase),
    })
}

/// A part body may not be transfer-encoded: the armour is 7-bit by design, and an encoding
/// would hide what the part really holds.
fn unencoded(message: &ParsedMessage<'_>) -> Result<(), MimeError> {
    match message.field("content-transfer-encoding") {
        None => Ok(()),
        Some(f) if ["7bit", "8bit"].contains(&f.value.trim().to_ascii_lowercase().as_str()) => {
            Ok(())
        }
        Some(f) => Err(structure(format!(
            "a part is encoded ({}), which PGP/MIME does not use",
            f.value.trim()
        ))),
    }
}

/// Splits a multipart body at its delimiter lines: the parts (without the CRLF that belongs to
/// the next delimiter), or an error when the close delimiter is missing. Preamble and
/// epilogue are dropped.
fn split_parts<'a>(body: &'a [u8], boundary: &str) -> Result<Vec<&'a [u8]>, MimeError> {
    let dash = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() {
        let end = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| pos + i + 1)
            .unwrap_or(body.len());
        let line = &body[pos..end];
        let content = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line);
        // Transport padding (trailing white space) is allowed after a delimiter.
        let trimmed = trim_end(content);
        if let Some(rest) = trimmed.strip_prefix(dash.as_bytes()) {
            if rest.is_empty() || rest == b"--" {
                if let Some(s) = start {
                    // The CRLF before the delimiter belongs to it.
                    let part_end = if pos >= s + 2 && &body[pos - 2..pos] == b"\r\n" {
                        pos - 2
                    } else {
                        pos.max(s)
                    };
                    parts.push(&body[s..part_end]);
                }
                if rest == b"--" {
                    return Ok(parts);
                }
                start = Some(end);
                if parts.len() > 2 {
                    return Err(structure("more than two parts in multipart/encrypted"));
                }
            }
        }
        pos = end;
    }
    Err(structure("multipart/encrypted has no closing boundary"))
}

fn trim_end(bytes: &[u8]) -> &[u8] {
    let n = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map(|i| i + 1)
        .unwrap_or(0);
    &bytes[..n]
}

fn trim(bytes: &[u8]) -> &[u8] {
    let t = trim_end(bytes);
    let n = t
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(t.len());
    &t[n..]
}

const BEGIN: &[u8] = b"-----BEGIN PGP MESSAGE-----";
const END: &[u8] = b"-----END PGP MESSAGE-----";

/// Reads `raw` as a client-encrypted PGP/MIME message, refusing every other form.
pub fn parse_pgp_mime(raw: &[u8]) -> Result<PgpMimeMessage<'_>, MimeError> {
    let header = ParsedMessage::parse(raw)?;
    let ct = content_type(&header)?;
    if ct.mime_type != "multipart/encrypted"
        || ct.protocol.as_deref() != Some("application/pgp-encrypted")
    {
        return Err(structure("not PGP/MIME (multipart/encrypted)"));
    }
    unencoded(&header)?;
    let boundary = ct
        .boundary
        .filter(|b| !b.is_empty() && b.len() <= MAX_BOUNDARY)
        .ok_or_else(|| structure("multipart/encrypted without a usable boundary"))?;
    let parts = split_parts(header.body, &boundary)?;
    let [version, encrypted] = parts[..] else {
        return Err(structure(format!(
            "multipart/encrypted has {} parts, not the two of RFC 3156",
            parts.len()
        )));
    };

    let version = ParsedMessage::parse(version)?;
    if content_type(&version)?.mime_type != "application/pgp-encrypted" {
        return Err(structure("the first part is not application/pgp-encrypted"));
    }
    unencoded(&version)?;
    if !trim(version.body).eq_ignore_ascii_case(b"Version: 1") {
        return Err(structure("the first part is not \"Version: 1\""));
    }

    let encrypted = ParsedMessage::parse(encrypted)?;
    if content_type(&encrypted)?.mime_type != "application/octet-stream" {
        return Err(structure("the second part is not application/octet-stream"));
    }
    unencoded(&encrypted)?;
    let armored = trim(encrypted.body);
    if !armored.starts_with(BEGIN) || !armored.ends_with(END) {
        return Err(structure(
            "the second part holds more than one ASCII-armored OpenPGP message",
        ));
    }
    if armored.windows(BEGIN.len()).filter(|w| *w == BEGIN).count() != 1 {
        return Err(structure(
            "the second part holds more than one OpenPGP message",
        ));
    }
    Ok(PgpMimeMessage { header, armored })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(boundary: &str, parts: &[&str], preamble: &str) -> Vec<u8> {
        let mut m = format!(
            "From: a@x\r\nTo: b@y\r\nSubject: ...\r\nMIME-Version: 1.0\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=\"{boundary}\"\r\n\r\n{preamble}"
        );
        for p in parts {
            m.push_str(&format!("--{boundary}\r\n{p}\r\n"));
        }
        m.push_str(&format!("--{boundary}--\r\n"));
        m.into_bytes()
    }

    const VERSION: &str = "Content-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n";
    const ARMOR: &str = "-----BEGIN PGP MESSAGE-----\r\n\r\nwV4DAAAAAAAAAAASAQdA\r\n=AAAA\r\n-----END PGP MESSAGE-----";

    fn encrypted_part() -> String {
        format!("Content-Type: application/octet-stream\r\n\r\n{ARMOR}\r\n")
    }

    #[test]
    fn the_two_parts_of_rfc_3156_are_read() {
        let enc = encrypted_part();
        for boundary in ["B", "-", "meshmail-0123", "---BEGIN"] {
            let raw = message(
                boundary,
                &[VERSION, &enc],
                "This is an OpenPGP/MIME message\r\n",
            );
            let m = parse_pgp_mime(&raw).unwrap_or_else(|e| panic!("{boundary}: {e}"));
            assert_eq!(m.armored, ARMOR.as_bytes(), "{boundary}");
        }
    }

    #[test]
    fn anything_readable_beside_the_armour_is_refused() {
        let enc = encrypted_part();
        let third = "Content-Type: text/plain\r\n\r\nthe secret in plaintext\r\n";
        let cases: Vec<Vec<u8>> = vec![
            message("b", &[VERSION, &enc, third], ""),
            message("b", &[VERSION], ""),
            message("b", &[third, &enc], ""),
            message(
                "b",
                &[
                    VERSION,
                    &format!("Content-Type: application/octet-stream\r\n\r\nthe secret\r\n{ARMOR}\r\n"),
                ],
                "",
            ),
            message(
                "b",
                &[
                    VERSION,
                    &format!("Content-Type: application/octet-stream\r\n\r\n{ARMOR}\r\nthe secret\r\n"),
                ],
                "",
            ),
            message(
                "b",
                &[
                    VERSION,
                    &format!("Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n{ARMOR}\r\n"),
                ],
                "",
            ),
            message(
                "b",
                &[VERSION, &format!("Content-Type: text/plain\r\n\r\n{ARMOR}\r\n")],
                "",
            ),
            // No closing delimiter.
            message("b", &[VERSION, &enc], "")
                .strip_suffix(b"--b--\r\n")
                .unwrap()
                .to_vec(),
            b"Content-Type: text/plain\r\n\r\nhello\r\n".to_vec(),
        ];
        for (i, raw) in cases.iter().enumerate() {
            assert!(parse_pgp_mime(raw).is_err(), "case {i} was accepted");
        }
    }

    #[test]
    fn a_delimiter_counts_only_as_a_whole_line() {
        // "--b" inside a line (and "--bx" as a line) is content, not a delimiter.
        let enc = "Content-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\n\r\nxx--b yy\r\n--bx\r\n-----END PGP MESSAGE-----\r\n";
        let raw = message("b", &[VERSION, enc], "");
        let m = parse_pgp_mime(&raw).unwrap();
        assert!(m.armored.ends_with(END));
        assert!(m.armored.windows(4).any(|w| w == b"--bx"));
    }
}
