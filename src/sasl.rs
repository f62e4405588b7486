//! What IMAP AUTHENTICATE and POP3 AUTH share: which login a SASL exchange names.

/// The mechanisms whose login [`authenticated_user`] can tell.
pub const MECHANISMS: [&str; 4] = ["PLAIN", "LOGIN", "XOAUTH2", "OAUTHBEARER"];

/// True for a mechanism whose login [`authenticated_user`] can tell.
pub fn can_tell_user(mechanism: &str) -> bool {
    MECHANISMS.iter().any(|m| m.eq_ignore_ascii_case(mechanism))
}

/// The login a SASL exchange authenticated as (PLAIN authcid, XOAUTH2 `user=`, OAUTHBEARER
/// `a=`, LOGIN's first response). `None` when it cannot be told: the session is then not
/// mapped. A PLAIN authorization identity other than the authentication identity is not
/// taken: the session would act for someone the password does not belong to.
pub fn authenticated_user(
    mechanism: &str,
    responses: &[crate::secret::SecretBytes],
) -> Option<String> {
    let first = responses.first().map(|r| r.expose().as_slice())?;
    let user = match mechanism.to_ascii_uppercase().as_str() {
        "PLAIN" => {
            let mut fields = first.split(|&b| b == 0);
            let authzid = fields.next()?;
            let authcid = fields.next()?;
            if !authzid.is_empty() && authzid != authcid {
                return None;
            }
            String::from_utf8_lossy(authcid).into_owned()
        }
        "XOAUTH2" => {
            // Dovecot takes the last `user=` field: more than one is a name meshmail could
            // read differently from the server, so none is taken.
            let text = std::str::from_utf8(first).ok()?;
            only_one(text.split('\x01').filter_map(|f| f.strip_prefix("user=")))?.to_owned()
        }
        "OAUTHBEARER" => {
            // RFC 7628: the authorization identity is the gs2 header's `a=` (before the first
            // ^A), with `,` and `=` escaped; an `a=` anywhere else names nobody.
            let text = std::str::from_utf8(first).ok()?;
            let gs2 = text.split('\x01').next()?;
            let a = only_one(gs2.split(',').skip(1).filter_map(|f| f.strip_prefix("a=")))?;
            unescape_saslname(a)?
        }
        "LOGIN" => String::from_utf8_lossy(first).into_owned(),
        _ => return None,
    };
    Some(user)
}

/// The one item of `items`; `None` for none or several.
fn only_one<'a>(mut items: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let one = items.next()?;
    items.next().is_none().then_some(one)
}

/// A gs2 `saslname` (RFC 5801): `=2C` is `,`, `=3D` is `=`, and any other `=` is malformed.
fn unescape_saslname(text: &str) -> Option<String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('=') {
        out.push_str(&rest[..at]);
        let escape = rest.get(at..at + 3)?;
        out.push(match escape {
            "=2C" | "=2c" => ',',
            "=3D" | "=3d" => '=',
            _ => return None,
        });
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    (!out.is_empty()).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    #[test]
    fn sasl_users() {
        let plain = [Secret::new(b"\0alice\0secret".to_vec())];
        assert_eq!(
            authenticated_user("PLAIN", &plain).as_deref(),
            Some("alice")
        );
        let other = [Secret::new(b"alice\0bob\0bobs".to_vec())];
        assert_eq!(authenticated_user("PLAIN", &other), None);
        let xoauth = [Secret::new(b"user=bob\x01auth=Bearer x\x01\x01".to_vec())];
        assert_eq!(
            authenticated_user("xoauth2", &xoauth).as_deref(),
            Some("bob")
        );
        let bearer = [Secret::new(b"n,a=carol,\x01host=h\x01\x01".to_vec())];
        assert_eq!(
            authenticated_user("OAUTHBEARER", &bearer).as_deref(),
            Some("carol")
        );
        assert_eq!(authenticated_user("SCRAM-SHA-256", &plain), None);
    }

    #[test]
    fn an_ambiguous_oauth_identity_names_nobody() {
        // Dovecot logs in the last user= (bob); meshmail must not take the first (alice).
        let twice = [Secret::new(
            b"user=alice\x01user=bob\x01auth=Bearer t\x01\x01".to_vec(),
        )];
        assert_eq!(authenticated_user("XOAUTH2", &twice), None);
        // OAUTHBEARER: only the gs2 header's a= counts, once, unescaped.
        let outside = [Secret::new(
            b"n,,\x01a=alice\x01auth=Bearer t\x01\x01".to_vec(),
        )];
        assert_eq!(authenticated_user("OAUTHBEARER", &outside), None);
        let two = [Secret::new(
            b"n,a=alice,a=bob,\x01auth=Bearer t\x01\x01".to_vec(),
        )];
        assert_eq!(authenticated_user("OAUTHBEARER", &two), None);
        let escaped = [Secret::new(
            b"n,a=al=2Cice=3D,\x01auth=Bearer t\x01\x01".to_vec(),
        )];
        assert_eq!(
            authenticated_user("OAUTHBEARER", &escaped).as_deref(),
            Some("al,ice=")
        );
        let bad = [Secret::new(
            b"n,a=al=ZZice,\x01auth=Bearer t\x01\x01".to_vec(),
        )];
        assert_eq!(authenticated_user("OAUTHBEARER", &bad), None);
    }
}
