//! XFORWARD (Postfix's `XFORWARD_README`): the original client's name, address, HELO, protocol
//! and queue ID, sent by Postfix's LMTP client before MAIL and passed on to the reinjection
//! listener, so the reinjected message's Received header names the original client. A codec
//! only: parsing the command's attributes and formatting them again.

/// The attributes meshmail takes and passes on, in the order they are sent.
pub const ATTRIBUTES: [&str; 7] = ["NAME", "ADDR", "PORT", "PROTO", "HELO", "IDENT", "SOURCE"];

/// Longest value kept (Postfix's own limit on a host name is 255).
const MAX_VALUE: usize = 255;
/// Longest XFORWARD line sent (RFC 5321's 512 for a command line, with its CRLF).
const MAX_LINE: usize = 500;

/// Attributes received for the next transaction (reset when it ends).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Xforward {
    values: [Option<String>; 7],
}

/// Why an XFORWARD command was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XforwardError {
    #[error("XFORWARD needs at least one attribute")]
    Empty,
    #[error("unknown XFORWARD attribute {0}")]
    Unknown(String),
    #[error("bad XFORWARD value for {0}")]
    BadValue(&'static str),
}

impl Xforward {
    /// Takes the attributes of one `XFORWARD` command (the text after the verb); values
    /// already received stay unless named again.
    pub fn parse_into(&mut self, args: &str) -> Result<(), XforwardError> {
        let mut any = false;
        for word in args.split_ascii_whitespace() {
            let (name, value) = word
                .split_once('=')
                .ok_or_else(|| XforwardError::Unknown(truncate(word)))?;
            let slot = ATTRIBUTES
                .iter()
                .position(|a| a.eq_ignore_ascii_case(name))
                .ok_or_else(|| XforwardError::Unknown(truncate(name)))?;
            let decoded = xtext_decode(value).ok_or(XforwardError::BadValue(ATTRIBUTES[slot]))?;
            self.values[slot] = Some(decoded);
            any = true;
        }
        if any {
            Ok(())
        } else {
            Err(XforwardError::Empty)
        }
    }

    pub fn is_empty(&self) -> bool {
        self.values.iter().all(Option::is_none)
    }

    /// The value of one attribute (`"ADDR"`).
    pub fn get(&self, name: &str) -> Option<&str> {
        let slot = ATTRIBUTES.iter().position(|a| *a == name)?;
        self.values[slot].as_deref()
    }

    /// The XFORWARD lines (without CRLF) that pass these attributes on, each short enough for
    /// any server, keeping only those the server named in its EHLO.
    pub fn lines(&self, offered: &[String]) -> Vec<String> {
        let mut lines = Vec::new();
        let mut line = String::from("XFORWARD");
        for (name, value) in ATTRIBUTES.iter().zip(&self.values) {
            let Some(value) = value else { continue };
            if !offered.iter().any(|o| o.eq_ignore_ascii_case(name)) {
                continue;
            }
            let item = format!(" {name}={}", crate::smtp::session::xtext(value));
            if line.len() + item.len() > MAX_LINE && line.len() > "XFORWARD".len() {
                lines.push(std::mem::replace(&mut line, String::from("XFORWARD")));
            }
            line.push_str(&item);
        }
        if line.len() > "XFORWARD".len() {
            lines.push(line);
        }
        lines
    }
}

fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

/// RFC 3461 xtext: `+XX` for a byte; printable ASCII otherwise. `None` for a malformed,
/// too long or non-printable value.
fn xtext_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'+' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
        if out.len() > MAX_VALUE {
            return None;
        }
    }
    // Values end up in a Received header: printable ASCII only.
    if out.iter().any(|b| !(0x20..0x7f).contains(b)) {
        return None;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn postfix_attributes_round_trip() {
        let mut x = Xforward::default();
        x.parse_into("NAME=client.example ADDR=192.0.2.7 PORT=41000 HELO=[192.0.2.7]")
            .unwrap();
        x.parse_into("PROTO=ESMTP SOURCE=REMOTE IDENT=4FgH2x0Z1Tz1")
            .unwrap();
        assert_eq!(x.get("ADDR"), Some("192.0.2.7"));
        let all: Vec<String> = ATTRIBUTES.iter().map(|s| s.to_string()).collect();
        let lines = x.lines(&all);
        assert_eq!(lines.len(), 1);
        let mut again = Xforward::default();
        again
            .parse_into(lines[0].strip_prefix("XFORWARD").unwrap())
            .unwrap();
        assert_eq!(again, x);
        // Only what the server offers is passed on.
        assert_eq!(
            x.lines(&["ADDR".to_string()]),
            vec!["XFORWARD ADDR=192.0.2.7"]
        );
    }

    #[test]
    fn bad_attributes_are_refused() {
        let mut x = Xforward::default();
        assert_eq!(x.parse_into(""), Err(XforwardError::Empty));
        assert!(matches!(
            x.parse_into("EVIL=1"),
            Err(XforwardError::Unknown(_))
        ));
        assert!(x.parse_into("NAME=a+0Db").is_err(), "CR in a value");
        assert!(x.parse_into("NAME=a+zz").is_err());
        assert!(x.parse_into(&format!("NAME={}", "a".repeat(300))).is_err());
        assert!(x.parse_into("HELO=spa+20ce").is_ok());
        assert_eq!(x.get("HELO"), Some("spa ce"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_lines_parse_back(args in "[ -~]{0,600}") {
            let mut x = Xforward::default();
            if x.parse_into(&args).is_ok() {
                let all: Vec<String> = ATTRIBUTES.iter().map(|s| s.to_string()).collect();
                let mut again = Xforward::default();
                for line in x.lines(&all) {
                    proptest::prop_assert!(line.len() <= MAX_LINE + 300);
                    again.parse_into(line.strip_prefix("XFORWARD").unwrap()).unwrap();
                }
                proptest::prop_assert_eq!(again, x);
            }
        }
    }
}
