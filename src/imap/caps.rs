//! The capabilities meshmail lets a client see: an explicit allow-list of what the proxy
//! handles correctly. Anything that would show ciphertext-derived results (SORT, THREAD,
//! ESEARCH, PREVIEW, BINARY …) or bypass the proxy (COMPRESS, NOTIFY, URLAUTH, CATENATE …) is
//! dropped until meshmail implements it. Applied to the greeting, `* CAPABILITY` and every
//! `[CAPABILITY …]` response code.
//!
//! A session logged in as a user meshmail does not map is relayed untouched, so once logged in
//! it sees the server's capabilities, less only what would take the connection out of
//! meshmail's hands (COMPRESS) or no longer applies (STARTTLS, AUTH=).

/// Capabilities passed through as they are (upper case; `AUTH=` is matched as a prefix).
const ALLOWED: &[&str] = &[
    "IMAP4REV1",
    "IDLE",
    "NAMESPACE",
    "ID",
    "ENABLE",
    "UIDPLUS",
    "MOVE",
    "SPECIAL-USE",
    "CREATE-SPECIAL-USE",
    "LITERAL+",
    "LITERAL-",
    "CONDSTORE",
    "UNSELECT",
    "SASL-IR",
    "CHILDREN",
    "LIST-EXTENDED",
    "LIST-STATUS",
    "QUOTA",
    "LOGIN-REFERRALS",
    "I18NLEVEL=1",
];

/// SASL mechanisms meshmail relays: those whose login it can tell (to bind the session to an
/// account) and replay (for its own connection). Others are not advertised.
pub const RELAYED_MECHANISMS: &[&str] = &crate::sasl::MECHANISMS;

/// Extensions a client may ENABLE through meshmail.
pub const ENABLE_ALLOWED: &[&str] = &["CONDSTORE"];

/// How the client link stands, which decides STARTTLS and LOGINDISABLED.
#[derive(Debug, Clone, Copy)]
pub struct ClientLink {
    /// TLS is in place (STARTTLS done or implicit).
    pub tls: bool,
    /// meshmail has a certificate to offer STARTTLS with.
    pub can_starttls: bool,
    /// The client is on loopback, where plaintext logins are allowed.
    pub loopback: bool,
    /// The session is authenticated (no STARTTLS or AUTH= any more).
    pub authenticated: bool,
    /// Authenticated as a login meshmail does not map: relayed as it is.
    pub relayed: bool,
    /// A device's session at the store, which adds `X-MESH-RECRYPT` to FETCH responses:
    /// nothing that would change how a message is carried (BINARY; COMPRESS is never offered).
    pub recrypting: bool,
}

impl ClientLink {
    /// Logins are allowed over this link.
    pub fn login_allowed(&self) -> bool {
        self.tls || self.loopback
    }
}

/// The allowed subset of `upstream` (capability atoms), adjusted for the client link.
pub fn filter<'a>(upstream: impl Iterator<Item = &'a str>, link: ClientLink) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for cap in upstream {
        let upper = cap.to_ascii_uppercase();
        let relayed = link.relayed
            && !upper.starts_with("COMPRESS")
            && !upper.starts_with("AUTH=")
            && upper != "STARTTLS"
            && upper != "LOGINDISABLED"
            && !(link.recrypting && upper.starts_with("BINARY"));
        let keep = relayed
            || ALLOWED.contains(&upper.as_str())
            || (upper
                .strip_prefix("AUTH=")
                .is_some_and(|m| RELAYED_MECHANISMS.contains(&m))
                && !link.authenticated
                && link.login_allowed());
        if keep && !out.iter().any(|c| c.eq_ignore_ascii_case(cap)) {
            out.push(cap.to_owned());
        }
    }
    if !out.iter().any(|c| c.eq_ignore_ascii_case("IMAP4rev1")) {
        out.insert(0, "IMAP4rev1".into());
    }
    if !link.authenticated && !link.tls && link.can_starttls {
        out.push("STARTTLS".into());
    }
    if !link.authenticated && !link.login_allowed() {
        out.push("LOGINDISABLED".into());
    }
    out
}

/// Rewrites a response line carrying capabilities (`* CAPABILITY …`, `* OK [CAPABILITY …] …`,
/// `tag OK [CAPABILITY …] …`), or returns `None` when the line carries none.
pub fn rewrite_line(line: &[u8], link: ClientLink) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(line).ok()?;
    let body = text.trim_end_matches(['\r', '\n']);
    let (head, rest) = body.split_once(' ')?;
    // Untagged CAPABILITY data.
    if head == "*" {
        if let Some(list) = strip_prefix_ci(rest, "CAPABILITY") {
            if list.is_empty() || list.starts_with(' ') {
                let caps = filter(list.split_ascii_whitespace(), link);
                return Some(format!("* CAPABILITY {}\r\n", caps.join(" ")).into_bytes());
            }
        }
    }
    // A [CAPABILITY …] response code after a status word (OK, PREAUTH).
    let (status, after) = rest.split_once(' ')?;
    let code = strip_prefix_ci(after, "[CAPABILITY")?;
    let end = code.find(']')?;
    let caps = filter(code[..end].split_ascii_whitespace(), link);
    Some(
        format!(
            "{head} {status} [CAPABILITY {}]{}\r\n",
            caps.join(" "),
            &code[end + 1..]
        )
        .into_bytes(),
    )
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    const PLAIN_LOOPBACK: ClientLink = ClientLink {
        tls: false,
        can_starttls: true,
        loopback: true,
        authenticated: false,
        relayed: false,
        recrypting: false,
    };

    #[test]
    fn drops_what_would_leak_or_bypass() {
        let line = b"* CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE COMPRESS=DEFLATE NOTIFY SPECIAL-USE LITERAL+ STARTTLS AUTH=PLAIN AUTH=XOAUTH2\r\n";
        let out = String::from_utf8(rewrite_line(line, PLAIN_LOOPBACK).unwrap()).unwrap();
        assert_eq!(
            out,
            "* CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE UNSELECT CHILDREN NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE LIST-STATUS MOVE SPECIAL-USE LITERAL+ AUTH=PLAIN AUTH=XOAUTH2 STARTTLS\r\n"
        );
        for gone in [
            "SORT", "THREAD", "ESEARCH", "BINARY", "COMPRESS", "NOTIFY", "PREVIEW",
        ] {
            assert!(!out.contains(gone), "{gone} leaked: {out}");
        }
    }

    #[test]
    fn response_codes_are_rewritten_and_text_kept() {
        let link = ClientLink {
            tls: true,
            can_starttls: true,
            loopback: false,
            authenticated: true,
            relayed: false,
            recrypting: false,
        };
        let out = rewrite_line(
            b"a1 OK [CAPABILITY IMAP4rev1 SORT IDLE AUTH=PLAIN] Logged in\r\n",
            link,
        )
        .unwrap();
        assert_eq!(out, b"a1 OK [CAPABILITY IMAP4rev1 IDLE] Logged in\r\n");
        assert!(rewrite_line(b"* OK [UIDVALIDITY 5] x\r\n", link).is_none());
        assert!(rewrite_line(b"* 3 FETCH (FLAGS ())\r\n", link).is_none());
    }

    #[test]
    fn plaintext_off_loopback_disables_login() {
        let link = ClientLink {
            tls: false,
            can_starttls: true,
            loopback: false,
            authenticated: false,
            relayed: false,
            recrypting: false,
        };
        let caps = filter(["IMAP4rev1", "AUTH=PLAIN"].into_iter(), link);
        assert_eq!(caps, ["IMAP4rev1", "STARTTLS", "LOGINDISABLED"]);
    }

    #[test]
    fn another_login_sees_the_servers_capabilities_less_compress() {
        let link = ClientLink {
            tls: true,
            can_starttls: true,
            loopback: false,
            authenticated: true,
            relayed: true,
            recrypting: false,
        };
        let caps = filter(
            [
                "IMAP4rev1",
                "SORT",
                "THREAD=REFERENCES",
                "COMPRESS=DEFLATE",
                "AUTH=PLAIN",
                "BINARY",
            ]
            .into_iter(),
            link,
        );
        assert_eq!(caps, ["IMAP4rev1", "SORT", "THREAD=REFERENCES", "BINARY"]);
    }
}
