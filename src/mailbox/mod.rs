//! Stored mail: `meshmail mailbox encrypt` re-encrypts a mailbox's plaintext messages to the
//! account's own key, in place ([`encrypt`]), resumable from its [`journal`].

pub mod encrypt;
pub mod journal;
pub mod rewrap;

use sequoia_openpgp as sq;

/// What `mailbox rekey --reencrypt` moves mail between: the newest revoked encryption subkey
/// of the account (with its secret) and the live one.
pub fn rekey_keys(tsk: &sq::Cert) -> Option<encrypt::Rewrite> {
    use sq::cert::amalgamation::ValidAmalgamation;
    use sq::types::RevocationStatus;
    let policy = sq::policy::StandardPolicy::new();
    let new = crate::crypto::recrypt::encryption_subkey(tsk)?;
    let valid = tsk.with_policy(&policy, None).ok()?;
    let old = valid
        .keys()
        .subkeys()
        .secret()
        .filter(|k| k.key_flags().is_some_and(|f| f.for_transport_encryption()))
        .filter(|k| matches!(k.revocation_status(), RevocationStatus::Revoked(_)))
        .max_by_key(|k| k.key().creation_time())?
        .key()
        .clone()
        .role_into_unspecified();
    Some(encrypt::Rewrite::Rekey {
        old: Box::new(old),
        new: Box::new(new.parts_as_public().clone()),
    })
}
