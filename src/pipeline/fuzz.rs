//! Entry point for the submission fuzz target (`integration/fuzz`): arbitrary bytes as what a
//! client sends after DATA, through the DATA receiver (in two chunks), the strict reading of a
//! client-encrypted message, and the plan and copies for a strong recipient. Any input must
//! give a result or an error, never a panic, and never a plaintext copy for that recipient.

use super::classify::Classified;
use super::plan::{Plan, SenderKeys};
use crate::address::{Fingerprint, Form, Label, StrongAddress};
use crate::crypto::client_sealed::verify_sealed;
use crate::policy::verify::{verify_certificate, Source};
use crate::smtp::data::{DataReceiver, Progress};
use sequoia_openpgp::Cert;
use std::sync::OnceLock;

/// Bob's certificate and his strong recipient, made once per process.
fn bob() -> Option<&'static (Cert, Classified)> {
    static BOB: OnceLock<Option<(Cert, Classified)>> = OnceLock::new();
    BOB.get_or_init(|| {
        let (cert, _) = crate::keys::generate::openpgp_cert("bob@example.test").ok()?;
        let cert = cert.strip_secret_key_material();
        let fpr: [u8; 20] = cert.fingerprint().as_bytes().try_into().ok()?;
        let address = StrongAddress::new(
            "bob@example.test",
            Fingerprint::OpenPgpV4(fpr),
            Label::Xx,
            Form::Suffix,
        )
        .ok()?;
        let verified = verify_certificate(
            &cert,
            &address,
            Source::Store,
            time::OffsetDateTime::now_utc(),
        )
        .ok()?;
        let rcpt = Classified::from_verified(&address.to_string(), verified).ok()?;
        Some((cert, rcpt))
    })
    .as_ref()
}

/// Arbitrary bytes through the submission path.
pub fn submission(data: &[u8]) {
    let split = data.first().map_or(0, |b| *b as usize).min(data.len());
    let mut receiver = DataReceiver::new(1 << 20, 4096);
    let mut done = matches!(receiver.feed(&data[..split]), Progress::Done { .. });
    if !done {
        done = matches!(receiver.feed(&data[split..]), Progress::Done { .. });
    }
    let _ = (done, receiver.finish());

    let Some((cert, rcpt)) = bob() else {
        return;
    };
    let _ = verify_sealed(data, std::slice::from_ref(cert));
    let rcpts = std::slice::from_ref(rcpt);
    if let Ok(plan) = Plan::new(data, rcpts) {
        for n in 0..plan.len() {
            if let Ok(copy) = plan.make(n, data, &SenderKeys::default()) {
                // The guarantee the types give, checked on every input.
                assert!(!copy.is_plain(), "a plaintext copy for a strong recipient");
            }
        }
    }
}
