//! Recryption cost (`make bench`): per message, the store's partial (`s_i · Q`) and the
//! device's completion (`u(P + d_i · Q)`, then the RFC 6637 unwrap), against one whole-key
//! X25519 decryption of the same PKESK (the baseline); then the partials per second one store
//! core sustains for 1, 10 and 100 enrolled devices asking for the same messages.
//!
//! cargo run --release --example recrypt_bench

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use meshmail::crypto::recrypt::{encryption_subkey, extract, session_key};
use meshmail::crypto::x25519::FastDecryptor;
use sequoia_openpgp as sq;
use sq::parse::Parse;
use std::time::Instant;

fn main() {
    let (cert, _) = meshmail::keys::generate::openpgp_cert("alice@example.test").expect("cert");
    let key = encryption_subkey(&cert).expect("subkey");
    let public = key.parts_as_public().clone();
    let public_cert = cert.clone().strip_secret_key_material();
    let messages: Vec<sq::packet::PKESK> = (0..1000)
        .map(|_| {
            let m = meshmail::crypto::openpgp::encrypt(
                &[b"x"],
                std::slice::from_ref(&public_cert),
                None,
            )
            .expect("encrypt");
            sq::PacketPile::from_bytes(&m)
                .expect("parse")
                .descendants()
                .find_map(|p| match p {
                    sq::Packet::PKESK(k) => Some(k.clone()),
                    _ => None,
                })
                .expect("pkesk")
        })
        .collect();
    let whole = extract(&key).expect("extract");
    let fast = FastDecryptor::new(&key).expect("fast");

    let t = Instant::now();
    for p in &messages {
        assert!(fast.decrypt(p).is_some());
    }
    let baseline = t.elapsed().as_secs_f64() * 1e6 / messages.len() as f64;

    let (store, device) = whole.split().expect("split");
    let t = Instant::now();
    let partials: Vec<_> = messages
        .iter()
        .map(|p| store.partial(p).expect("partial"))
        .collect();
    let partial_us = t.elapsed().as_secs_f64() * 1e6 / messages.len() as f64;
    let t = Instant::now();
    for (p, part) in messages.iter().zip(&partials) {
        assert!(session_key(p, &public, &device, *part).is_some());
    }
    let complete_us = t.elapsed().as_secs_f64() * 1e6 / messages.len() as f64;

    println!(
        "recryption, {} messages (Cv25519 PKESK v3), one core:",
        messages.len()
    );
    println!("  whole-key X25519 decryption (baseline)   {baseline:8.1} µs/message");
    println!("  store: partial s_i·Q                      {partial_us:8.1} µs/message");
    println!("  device: completion and unwrap             {complete_us:8.1} µs/message");
    let mut rates = Vec::new();
    for devices in [1usize, 10, 100] {
        let stores: Vec<_> = (0..devices)
            .map(|_| whole.split().expect("split").0)
            .collect();
        let t = Instant::now();
        let mut n = 0usize;
        for p in messages.iter().take(1000 / devices.min(10)) {
            for s in &stores {
                s.partial(p).expect("partial");
                n += 1;
            }
        }
        let per_s = n as f64 / t.elapsed().as_secs_f64();
        println!("  store partials with {devices:3} devices           {per_s:8.0} /s");
        rates.push(per_s);
    }
    println!(
        "recrypt baseline_us={baseline:.1} partial_us={partial_us:.1} complete_us={complete_us:.1} partials_per_s_1={:.0} partials_per_s_10={:.0} partials_per_s_100={:.0}",
        rates[0], rates[1], rates[2]
    );
}
