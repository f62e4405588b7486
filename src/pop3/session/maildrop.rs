//! The maildrop as a mapped session sees it: the server's scan listing and unique-ids, read
//! once after login (RFC 1939 §8: the maildrop is locked, so the numbering does not change
//! during the session), with the size each message has through meshmail and the messages
//! marked deleted. Also the text transforms a mapped session's answers need: `TOP` over a
//! view, the octets a body counts, and the capability list the client is shown.

use super::super::reply::stuff;

/// Messages in one maildrop listing at most (a longer listing is not taken: the session then
/// relays STAT and LIST as the server answers them).
pub const MAX_MESSAGES: usize = 1_000_000;

/// One message of the maildrop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Message {
    /// The size the server's scan listing gave.
    pub server_size: u64,
    pub uidl: Option<String>,
    /// The octets `RETR` serves through meshmail, once known (from the size book, or from a
    /// view built in this session).
    pub served: Option<u64>,
    pub deleted: bool,
    /// In the server's listing (false for a gap: a number the server had deleted already).
    pub listed: bool,
}

impl Message {
    /// What LIST and STAT say: the served size when known, else the server's (see the README:
    /// for an encrypted message not read yet, the ciphertext's size, usually a little more).
    pub fn size(&self) -> u64 {
        self.served.unwrap_or(self.server_size)
    }
}

/// The scan listing, by message number (1-based).
#[derive(Debug, Default)]
pub(super) struct Maildrop {
    pub messages: Vec<Message>,
}

impl Maildrop {
    /// From the body of the server's `LIST` answer (`n size` lines, in order from 1).
    pub fn from_listing(body: &[u8]) -> Option<Maildrop> {
        let mut messages = Vec::new();
        for line in body.split(|&b| b == b'\n') {
            let line = std::str::from_utf8(line).ok()?.trim_end_matches('\r');
            if line.is_empty() {
                continue;
            }
            let mut parts = line.split_ascii_whitespace();
            let n: usize = parts.next()?.parse().ok()?;
            let size: u64 = parts.next()?.parse().ok()?;
            // Deleted messages are left out of a listing: fill the gap, marked deleted.
            if n <= messages.len() || n > MAX_MESSAGES {
                return None;
            }
            while messages.len() + 1 < n {
                messages.push(Message {
                    server_size: 0,
                    uidl: None,
                    served: None,
                    deleted: true,
                    listed: false,
                });
            }
            messages.push(Message {
                server_size: size,
                uidl: None,
                served: None,
                deleted: false,
                listed: true,
            });
        }
        Some(Maildrop { messages })
    }

    /// Adds the unique-ids of the server's `UIDL` answer.
    pub fn add_uidls(&mut self, body: &[u8]) {
        for line in body.split(|&b| b == b'\n') {
            let Ok(line) = std::str::from_utf8(line) else {
                continue;
            };
            let mut parts = line.trim_end_matches('\r').split_ascii_whitespace();
            let (Some(n), Some(uidl)) = (parts.next(), parts.next()) else {
                continue;
            };
            if let Some(m) = n
                .parse::<usize>()
                .ok()
                .and_then(|n| self.messages.get_mut(n.checked_sub(1)?))
            {
                m.uidl = Some(uidl.to_owned());
            }
        }
    }

    /// The message numbered `n`, unless deleted.
    pub fn get(&self, n: u32) -> Option<&Message> {
        self.messages
            .get((n as usize).checked_sub(1)?)
            .filter(|m| !m.deleted)
    }

    pub fn get_mut(&mut self, n: u32) -> Option<&mut Message> {
        self.messages
            .get_mut((n as usize).checked_sub(1)?)
            .filter(|m| !m.deleted)
    }

    /// `+OK count octets`.
    pub fn stat(&self) -> Vec<u8> {
        let live = self.messages.iter().filter(|m| !m.deleted);
        let (count, octets) = live.fold((0u64, 0u64), |(c, o), m| (c + 1, o + m.size()));
        format!("+OK {count} {octets}\r\n").into_bytes()
    }

    /// The whole scan listing, as a multi-line answer.
    pub fn listing(&self) -> Vec<u8> {
        let mut out = b"+OK scan listing follows\r\n".to_vec();
        for (i, m) in self.messages.iter().enumerate() {
            if !m.deleted {
                out.extend_from_slice(format!("{} {}\r\n", i + 1, m.size()).as_bytes());
            }
        }
        out.extend_from_slice(b".\r\n");
        out
    }

    /// `LIST n`.
    pub fn list_one(&self, n: u32) -> Vec<u8> {
        match self.get(n) {
            Some(m) => format!("+OK {n} {}\r\n", m.size()).into_bytes(),
            None => NO_SUCH_MESSAGE.to_vec(),
        }
    }

    /// RSET: nothing is deleted any more (gaps of the listing stay deleted: the server had
    /// deleted them before this session).
    pub fn undelete(&mut self) {
        for m in &mut self.messages {
            m.deleted = !m.listed;
        }
    }
}

pub const NO_SUCH_MESSAGE: &[u8] = b"-ERR no such message\r\n";

/// The octets a client counts of `stuff(message)`: every line ends in CRLF, dot-stuffing
/// excluded (RFC 1939 §11 counts sizes this way).
pub fn served_len(message: &[u8]) -> u64 {
    let mut n = 0u64;
    for line in message.split_inclusive(|&b| b == b'\n') {
        let content = line
            .strip_suffix(b"\n")
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
            .unwrap_or(line);
        n += content.len() as u64 + 2;
    }
    n
}

/// `TOP n k` of a whole message: its header, the blank line, and the first `k` lines of its
/// body (RFC 1939 §7).
pub fn top(message: &[u8], k: u32) -> &[u8] {
    let header = crate::imap::view::mime::header_section(message).len();
    let mut end = header.min(message.len());
    let mut lines = 0u32;
    while lines < k && end < message.len() {
        match message[end..].iter().position(|&b| b == b'\n') {
            Some(nl) => end += nl + 1,
            None => end = message.len(),
        }
        lines += 1;
    }
    &message[..end]
}

/// A multi-line answer for a message: its status line, the stuffed lines and the end.
pub fn multiline(status: &str, message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(status.len() + message.len() + message.len() / 40 + 8);
    out.extend_from_slice(status.as_bytes());
    out.extend_from_slice(b"\r\n");
    out.extend_from_slice(&stuff(message));
    out.extend_from_slice(b".\r\n");
    out
}

/// The capability list the client is shown (RFC 2449), from the server's: STLS as meshmail
/// offers it (the server's own is about meshmail's link to it), no PIPELINING (meshmail
/// answers one command at a time), and no login mechanism on a link where logging in is not
/// allowed (plaintext, off loopback).
pub fn capabilities(server: &[u8], offer_stls: bool, login_allowed: bool) -> Vec<u8> {
    let mut out = b"+OK capability list follows\r\n".to_vec();
    for line in server.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        let name = line
            .split(|&b| b == b' ')
            .next()
            .unwrap_or_default()
            .to_ascii_uppercase();
        let keep = match name.as_slice() {
            b"STLS" | b"PIPELINING" => false,
            b"USER" => login_allowed,
            b"SASL" => {
                // Only mechanisms whose login meshmail can tell (else a mapped user would
                // silently get the server's ciphertext).
                let mechanisms: Vec<&[u8]> = line
                    .split(|&b| b == b' ')
                    .skip(1)
                    .filter(|m| crate::sasl::can_tell_user(&String::from_utf8_lossy(m)))
                    .collect();
                if login_allowed && !mechanisms.is_empty() {
                    out.extend_from_slice(b"SASL");
                    for m in mechanisms {
                        out.push(b' ');
                        out.extend_from_slice(m);
                    }
                    out.extend_from_slice(b"\r\n");
                }
                false
            }
            _ => true,
        };
        if keep {
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    if offer_stls {
        out.extend_from_slice(b"STLS\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

/// The answer to `AUTH` alone: the server's mechanisms whose login meshmail can tell.
pub fn mechanisms(server: &[u8]) -> Vec<u8> {
    let mut out = b"+OK\r\n".to_vec();
    for line in server.split(|&b| b == b'\n') {
        let name = line.strip_suffix(b"\r").unwrap_or(line);
        if crate::sasl::can_tell_user(&String::from_utf8_lossy(name)) {
            out.extend_from_slice(name);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::super::super::reply::unstuff;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn listing_with_gaps_and_uidls() {
        let mut m = Maildrop::from_listing(b"1 100\r\n3 300\r\n4 0\r\n").expect("listing");
        m.add_uidls(b"1 aaa\r\n3 ccc\r\n");
        assert_eq!(m.messages.len(), 4);
        assert!(m.get(2).is_none());
        assert_eq!(m.get(3).and_then(|m| m.uidl.as_deref()), Some("ccc"));
        assert_eq!(m.stat(), b"+OK 3 400\r\n");
        m.get_mut(3).expect("3").served = Some(250);
        assert_eq!(m.list_one(3), b"+OK 3 250\r\n");
        m.get_mut(1).expect("1").deleted = true;
        // An empty message without a unique-id is deleted like any other.
        m.get_mut(4).expect("4").deleted = true;
        assert_eq!(m.listing(), b"+OK scan listing follows\r\n3 250\r\n.\r\n");
        m.undelete();
        assert_eq!(m.stat(), b"+OK 3 350\r\n");
        assert!(
            m.get(4).is_some() && m.get(2).is_none(),
            "RSET brings back 4, not the gap"
        );
        assert!(Maildrop::from_listing(b"2 1\r\n1 1\r\n").is_none());
        assert!(Maildrop::from_listing(b"x\r\n").is_none());
    }

    #[test]
    fn top_takes_the_header_and_k_body_lines() {
        let m = b"Subject: s\r\nX: y\r\n\r\nline1\r\nline2\r\nline3";
        assert_eq!(top(m, 0), b"Subject: s\r\nX: y\r\n\r\n");
        assert_eq!(top(m, 2), b"Subject: s\r\nX: y\r\n\r\nline1\r\nline2\r\n");
        assert_eq!(top(m, 10), &m[..]);
    }

    #[test]
    fn capabilities_as_meshmail_offers_them() {
        let server = b"CAPA\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nPIPELINING\r\nSTLS\r\nUSER\r\nSASL PLAIN CRAM-MD5 LOGIN\r\n";
        let shown = capabilities(server, true, false);
        let text = String::from_utf8(shown).expect("text");
        assert!(text.contains("TOP\r\n") && text.contains("UIDL\r\n") && text.contains("STLS\r\n"));
        assert!(!text.contains("PIPELINING") && !text.contains("USER") && !text.contains("SASL"));
        let text = String::from_utf8(capabilities(server, false, true)).expect("text");
        assert!(text.contains("SASL PLAIN LOGIN\r\n") && !text.contains("STLS"));
    }

    proptest! {
        #[test]
        fn served_len_counts_what_the_client_reads(message in proptest::collection::vec(any::<u8>(), 0..400)) {
            let served = unstuff(&stuff(&message));
            prop_assert_eq!(served_len(&message), served.len() as u64);
        }
    }
}
