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
        "XOAUTH2" => String::from_utf8_lossy(first)
            .split('\x01')
            .find_map(|f| f.strip_prefix("user=").map(str::to_owned))?,
        "OAUTHBEARER" => String::from_utf8_lossy(first)
            .split(['\x01', ','])
            .find_map(|f| f.strip_prefix("a=").map(str::to_owned))?,
        "LOGIN" => String::from_utf8_lossy(first).into_owned(),
        _ => return None,
    };
    Some(user)
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
}
