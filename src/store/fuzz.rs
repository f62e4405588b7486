//! Entry point for the store fuzz target (`integration/fuzz`): arbitrary bytes as a client's
//! command line (the private item stripped), as a store response the device parses, and as a
//! stored message the store computes partials from (a share and key made once per process).

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
            stripped.len() <= data.len() + 4,
            "stripping never grows a line by much"
        );
    }
    let _ = item::parse(&String::from_utf8_lossy(data), "laptop");
    if let Some((public, store)) = share() {
        let _ = item::partials(data, public, store);
    }
}
