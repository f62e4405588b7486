//! SMTP replies (RFC 5321 §4.2) with enhanced status codes (RFC 3463), and the one mapping
//! from meshmail's outcomes to replies (DESIGN.md "Codes"). Texts are short and say what to
//! do: Thunderbird shows them in a dialog.

use std::fmt;

/// One reply: a code, an optional enhanced status, and one or more lines of text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub enhanced: Option<String>,
    pub lines: Vec<String>,
}

impl Reply {
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Reply {
        Reply {
            code,
            enhanced: (!enhanced.is_empty()).then(|| enhanced.to_owned()),
            lines: vec![clean(&text.into())],
        }
    }

    /// A reply relayed from the upstream exactly as it came (its text may carry its own
    /// enhanced code).
    pub fn relayed(code: u16, text: &str) -> Reply {
        Reply::from_lines(code, text.split('\n').map(clean).collect())
    }

    /// A reply with the upstream's lines as they came (none becomes one empty line).
    pub fn from_lines(code: u16, lines: Vec<String>) -> Reply {
        Reply {
            code,
            enhanced: None,
            lines: if lines.is_empty() {
                vec![String::new()]
            } else {
                lines
            },
        }
    }

    /// `553 5.6.7`: an address needs SMTPUTF8, which the upstream does not offer (RFC 6531 §3.5).
    pub fn non_ascii_refused() -> Reply {
        Reply::new(
            553,
            "5.6.7",
            "The mail server does not accept non-ASCII addresses",
        )
    }

    pub fn is_positive(&self) -> bool {
        (200..400).contains(&self.code)
    }

    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }

    /// The wire form, CRLF-terminated.
    pub fn to_wire(&self) -> Vec<u8> {
        self.to_string().into_bytes()
    }

    pub fn ok() -> Reply {
        Reply::new(250, "2.0.0", "OK")
    }

    /// `421`: the session made too many errors and is closed.
    pub fn too_many_errors() -> Reply {
        Reply::new(421, "4.7.0", "Too many errors, closing")
    }

    /// A command line longer than the limit (discarded up to its end).
    pub fn line_too_long() -> Reply {
        Reply::new(500, "5.5.2", "Line too long")
    }

    /// `421`: the client said nothing for too long.
    pub fn idle() -> Reply {
        Reply::new(421, "4.4.2", "Idle too long, closing")
    }

    /// `421`: SIGTERM, between commands.
    pub fn shutting_down() -> Reply {
        Reply::new(421, "4.3.2", "meshmail is shutting down; try again shortly")
    }

    /// A copy the pipeline could not make: malformed (`554 5.6.0`) or not encryptable as the
    /// recipient's policy or key requires (`550 5.7.5`); both for good.
    pub fn plan_refused(e: &crate::pipeline::plan::PlanError) -> Reply {
        if e.is_malformed() {
            Reply::new(554, "5.6.0", format!("Message refused: {e}"))
        } else {
            Reply::new(
                550,
                "5.7.5",
                format!("Cannot encrypt as the recipient's policy demands: {e}. Nothing was sent"),
            )
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.lines.len();
        for (i, line) in self.lines.iter().enumerate() {
            let sep = if i + 1 == n { ' ' } else { '-' };
            match &self.enhanced {
                Some(e) => write!(f, "{}{sep}{e} {line}\r\n", self.code)?,
                None => write!(f, "{}{sep}{line}\r\n", self.code)?,
            }
        }
        Ok(())
    }
}

/// Reply text never carries CR or LF (it would split the reply) and stays short.
fn clean(text: &str) -> String {
    let t: String = text
        .chars()
        .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
        .collect();
    let t = t.trim();
    if t.len() > 400 {
        let mut end = 400;
        while !t.is_char_boundary(end) {
            end -= 1;
        }
        format!("{}...", &t[..end])
    } else {
        t.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms() {
        assert_eq!(
            Reply::new(250, "2.1.0", "OK").to_string(),
            "250 2.1.0 OK\r\n"
        );
        let multi = Reply {
            code: 250,
            enhanced: None,
            lines: vec!["a".into(), "b".into()],
        };
        assert_eq!(multi.to_string(), "250-a\r\n250 b\r\n");
        assert_eq!(
            Reply::new(550, "5.7.1", "x\r\ny").to_string(),
            "550 5.7.1 x  y\r\n"
        );
        assert_eq!(
            Reply::relayed(535, "5.7.8 Error: auth failed").to_string(),
            "535 5.7.8 Error: auth failed\r\n"
        );
    }
}
