//! Client commands (RFC 1939, CAPA and the extended codes of RFC 2449, STLS of RFC 2595,
//! AUTH of RFC 5034), read from one line. Keywords are case-insensitive; message numbers are
//! positive decimals that fit in 32 bits. A line longer than [`MAX_LINE`] is refused before
//! it is read whole (RFC 2449 §4 allows 255 octets; the margin is for clients that count
//! differently).

use crate::secret::{Secret, SecretString};

/// The longest command line accepted, CRLF included.
pub const MAX_LINE: usize = 512;
/// The longest SASL line: an AUTH continuation, or an AUTH command with its initial response
/// (an OAuth token, base64, is often longer than a command line may be).
pub const MAX_SASL_LINE: usize = 8 * 1024;

/// The longest line accepted where `line` (its start, at least) begins.
pub fn line_limit(line: &[u8]) -> usize {
    if line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"AUTH ") {
        MAX_SASL_LINE
    } else {
        MAX_LINE
    }
}

/// A client command.
#[derive(Debug)]
pub enum Command {
    User(String),
    Pass(SecretString),
    /// `AUTH` alone (RFC 1734's way to list the mechanisms, which some clients still use).
    AuthList,
    /// `AUTH mechanism [initial-response]`.
    Auth {
        mechanism: String,
        initial: Option<SecretString>,
    },
    Apop(String),
    Capa,
    Stls,
    Stat,
    List(Option<u32>),
    Uidl(Option<u32>),
    Retr(u32),
    Top(u32, u32),
    Dele(u32),
    Noop,
    Rset,
    Quit,
}

/// Why a line is not a command meshmail understands.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("command line too long")]
    TooLong,
    #[error("unknown command")]
    Unknown,
    #[error("wrong arguments for {0}")]
    Arguments(&'static str),
    #[error("not a text line")]
    NotText,
}

impl Command {
    /// Reads one line (CRLF or LF included or not).
    pub fn parse(line: &[u8]) -> Result<Command, CommandError> {
        if line.len() > line_limit(line) {
            return Err(CommandError::TooLong);
        }
        let line = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line);
        let text = std::str::from_utf8(line).map_err(|_| CommandError::NotText)?;
        if text.bytes().any(|b| b == 0 || b == b'\r' || b == b'\n') {
            return Err(CommandError::NotText);
        }
        let (keyword, rest) = match text.split_once(' ') {
            Some((k, r)) => (k, r),
            None => (text, ""),
        };
        let args: Vec<&str> = rest.split(' ').filter(|a| !a.is_empty()).collect();
        let number = |s: &str| -> Option<u32> {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u32>().ok())
                .flatten()
                .filter(|n| *n > 0)
        };
        let keyword = keyword.to_ascii_uppercase();
        let none = |c: Command, name: &'static str| {
            if args.is_empty() {
                Ok(c)
            } else {
                Err(CommandError::Arguments(name))
            }
        };
        let optional = |name: &'static str| -> Result<Option<u32>, CommandError> {
            match args.as_slice() {
                [] => Ok(None),
                [n] => number(n).map(Some).ok_or(CommandError::Arguments(name)),
                _ => Err(CommandError::Arguments(name)),
            }
        };
        let one = |name: &'static str| -> Result<u32, CommandError> {
            match args.as_slice() {
                [n] => number(n).ok_or(CommandError::Arguments(name)),
                _ => Err(CommandError::Arguments(name)),
            }
        };
        match keyword.as_str() {
            // USER and PASS take the rest of the line: a password may hold spaces.
            "USER" if !rest.is_empty() => Ok(Command::User(rest.to_owned())),
            "USER" => Err(CommandError::Arguments("USER")),
            "PASS" if !rest.is_empty() => Ok(Command::Pass(Secret::new(rest.to_owned()))),
            "PASS" => Err(CommandError::Arguments("PASS")),
            "APOP" if args.len() == 2 => Ok(Command::Apop(args[0].to_owned())),
            "APOP" => Err(CommandError::Arguments("APOP")),
            "AUTH" => match args.as_slice() {
                [] => Ok(Command::AuthList),
                [m] => Ok(Command::Auth {
                    mechanism: m.to_ascii_uppercase(),
                    initial: None,
                }),
                [m, ir] => Ok(Command::Auth {
                    mechanism: m.to_ascii_uppercase(),
                    initial: Some(Secret::new((*ir).to_owned())),
                }),
                _ => Err(CommandError::Arguments("AUTH")),
            },
            "CAPA" => none(Command::Capa, "CAPA"),
            "STLS" => none(Command::Stls, "STLS"),
            "STAT" => none(Command::Stat, "STAT"),
            "NOOP" => none(Command::Noop, "NOOP"),
            "RSET" => none(Command::Rset, "RSET"),
            "QUIT" => none(Command::Quit, "QUIT"),
            "LIST" => optional("LIST").map(Command::List),
            "UIDL" => optional("UIDL").map(Command::Uidl),
            "RETR" => one("RETR").map(Command::Retr),
            "DELE" => one("DELE").map(Command::Dele),
            "TOP" => match args.as_slice() {
                // k may be 0 (the header alone); digits only, no sign.
                [n, lines] if lines.bytes().all(|b| b.is_ascii_digit()) => {
                    match (number(n), lines.parse::<u32>().ok()) {
                        (Some(n), Some(k)) => Ok(Command::Top(n, k)),
                        _ => Err(CommandError::Arguments("TOP")),
                    }
                }
                _ => Err(CommandError::Arguments("TOP")),
            },
            _ => Err(CommandError::Unknown),
        }
    }

    /// True when the server answers this command with a multi-line response on success
    /// (RFC 1939, RFC 2449): the framing of the reply depends on it.
    pub fn multiline(&self) -> bool {
        matches!(
            self,
            Command::Capa
                | Command::AuthList
                | Command::List(None)
                | Command::Uidl(None)
                | Command::Retr(_)
                | Command::Top(..)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn commands_and_their_arguments() {
        assert!(matches!(Command::parse(b"user alice\r\n"), Ok(Command::User(u)) if u == "alice"));
        assert!(
            matches!(Command::parse(b"PASS with spaces in it\r\n"), Ok(Command::Pass(p)) if p.expose() == "with spaces in it")
        );
        assert!(matches!(Command::parse(b"STAT"), Ok(Command::Stat)));
        assert!(matches!(
            Command::parse(b"LIST\r\n"),
            Ok(Command::List(None))
        ));
        assert!(matches!(
            Command::parse(b"LIST 3\r\n"),
            Ok(Command::List(Some(3)))
        ));
        assert!(matches!(
            Command::parse(b"top 2 10\r\n"),
            Ok(Command::Top(2, 10))
        ));
        assert!(matches!(
            Command::parse(b"TOP 2 0\r\n"),
            Ok(Command::Top(2, 0))
        ));
        assert!(matches!(
            Command::parse(b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
            Ok(Command::Auth { mechanism, initial: Some(_) }) if mechanism == "PLAIN"
        ));
        assert!(matches!(Command::parse(b"STLS\r\n"), Ok(Command::Stls)));
        assert!(Command::parse(b"STLS now\r\n").is_err());
        assert_eq!(
            Command::parse(b"RETR 0\r\n").unwrap_err(),
            CommandError::Arguments("RETR")
        );
        assert!(Command::parse(b"RETR -1\r\n").is_err());
        assert!(Command::parse(b"RETR 4294967296\r\n").is_err());
        assert!(Command::parse(b"TOP 1 +5\r\n").is_err());
        assert_eq!(
            Command::parse(b"XTND\r\n").unwrap_err(),
            CommandError::Unknown
        );
        assert_eq!(
            Command::parse(&[b'A'; MAX_LINE + 1]).unwrap_err(),
            CommandError::TooLong
        );
        let token = format!("AUTH XOAUTH2 {}\r\n", "A".repeat(2000));
        assert!(matches!(
            Command::parse(token.as_bytes()),
            Ok(Command::Auth { .. })
        ));
        assert_eq!(
            Command::parse(format!("AUTH PLAIN {}\r\n", "A".repeat(MAX_SASL_LINE)).as_bytes())
                .unwrap_err(),
            CommandError::TooLong
        );
        assert_eq!(
            Command::parse(b"USER a\0b\r\n").unwrap_err(),
            CommandError::NotText
        );
        assert!(Command::parse(b"RETR 1").unwrap().multiline());
        assert!(!Command::parse(b"LIST 1").unwrap().multiline());
    }

    proptest! {
        #[test]
        fn any_line_is_a_command_or_an_error_never_a_panic(line in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = Command::parse(&line);
        }
    }
}
