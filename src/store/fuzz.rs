//! Entry points for the store fuzz targets (`integration/fuzz`): arbitrary bytes as a client's
//! command line (the private item stripped), as a store response the device parses, and as a
//! stored message the store computes partials from (a share and key made once per process);
//! and as the texts enrolment and revocation exchange (a device request, an admin's reply, a
//! share record and a signed revocation given to a store).

use super::item;
use crate::crypto::recrypt::{encryption_subkey, extract, StoreShare};
use sequoia_openpgp as sq;
use sq::packet::key::{PublicParts, UnspecifiedRole};
use std::sync::OnceLock;

fn share() -> Option<&'static (sq::packet::Key<PublicParts, UnspecifiedRole>, StoreShare)> {
    static SHARE: OnceLock<Option<(sq::packet::Key<PublicParts, UnspecifiedRole>, StoreShare)>> =
        OnceLock::new();
    SHARE
        .get_or_init(|| {
            let (cert, _) = crate::keys::generate::openpgp_cert("alice@example.test").ok()?;
            let key = encryption_subkey(&cert)?;
            let (store, _) = extract(&key).ok()?.split().ok()?;
            Some((key.parts_as_public().clone(), store))
        })
        .as_ref()
}

/// Arbitrary bytes through the item codec and the partial computation.
pub fn item(data: &[u8]) {
    if let Some(stripped) = item::strip_from_command(data) {
        assert!(
            stripped.len() <= data.len(),
            "stripping never grows a line (nothing but the item and a space changes)"
        );
    }
    if let Some(added) = item::add_to_fetch(data) {
        // What a device adds, its store takes out again: the same line, item and one space
        // aside (a list made of a bare item keeps its parentheses).
        let stripped = item::strip_from_command(&added);
        assert!(
            stripped.is_some_and(|s| s == data || s.len() == data.len() + 2 && !item::mentions(&s)),
            "the store takes out exactly what a device added"
        );
    }
    let masked = item::mask(data);
    assert!(
        masked.len() == data.len() && !item::mentions(&masked),
        "a masked line keeps its length and names the item nowhere"
    );
    let _ = item::parse(&String::from_utf8_lossy(data), "laptop");
    if let Some((public, store)) = share() {
        let _ = item::partials(data, &public.fingerprint(), store);
    }
}

/// A store in a directory of its own, made once per process.
fn store() -> Option<&'static super::shares::ShareStore> {
    static STORE: OnceLock<Option<super::shares::ShareStore>> = OnceLock::new();
    STORE
        .get_or_init(|| {
            let dir =
                std::env::temp_dir().join(format!("meshmail-fuzz-store-{}", std::process::id()));
            super::shares::ShareStore::open(
                &dir.join("state.json"),
                &dir.join("shares"),
                vec![("alice@example.test".into(), [7u8; 32])],
            )
            .ok()
        })
        .as_ref()
}

/// Arbitrary text as every enrolment and revocation message a party reads from another.
pub fn enrolment(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    if let Ok(request) = crate::keys::device::DeviceRequest::parse(&text) {
        let _ = (request.code(), request.tls_sha256(), request.sha256());
    }
    if let Ok(reply) = crate::keys::device::DeviceReply::parse(&text) {
        let _ = (reply.code(), reply.store_record(), reply.device());
    }
    if let Some(store) = store() {
        let record = super::shares::ShareRecord::from_text(&text);
        assert!(
            store.accept(&record).is_err(),
            "nothing unsigned by the account is accepted"
        );
        assert!(store.revoke_signed(&text).is_err());
    }
    crate::imap::fuzz_recrypt_read(data);
}
