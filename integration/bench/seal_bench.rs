//! Micro-benchmark of one step of the pipeline: sealing a 10 KB message for one X25519
//! recipient, without any network. Prints microseconds per message for each part.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Instant;

fn main() {
    let dir = std::env::temp_dir().join(format!("seal-bench-{}", std::process::id()));
    let account =
        meshmail::keys::Account::create(&dir, "bob@example.test", None, time::Duration::days(30))
            .expect("account");
    let cert = account.openpgp_cert().expect("cert");
    let mut msg =
        b"From: a@example.test\r\nTo: bob@example.test\r\nSubject: bench\r\n\r\n".to_vec();
    while msg.len() < 10240 {
        msg.extend_from_slice(
            b"The quick brown fox jumps over the lazy dog, 0123456789 times.\r\n",
        );
    }
    let n: usize = std::env::var("N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let t = Instant::now();
    for _ in 0..n {
        let _ = meshmail::crypto::openpgp::encrypt(&[&msg], std::slice::from_ref(&cert), None)
            .expect("encrypt");
    }
    println!(
        "openpgp::encrypt       {:8.1} us/msg",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let t = Instant::now();
    for _ in 0..n {
        let _ = meshmail::crypto::openpgp::encrypt(&[b"hi"], std::slice::from_ref(&cert), None)
            .expect("encrypt");
    }
    println!(
        "openpgp::encrypt 2 B   {:8.1} us/msg",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let req = meshmail::crypto::seal::SealRequest::PgpMime {
        recipients: vec![cert.clone()],
        signer: None,
    };
    let t = Instant::now();
    for _ in 0..n {
        let _ = meshmail::crypto::seal::seal(&msg, &req).expect("seal");
    }
    println!(
        "seal (parse+protect+encrypt+mime) {:8.1} us/msg",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    // The other direction: the IMAP view of a sealed 20 KB message.
    while msg.len() < 20480 {
        msg.extend_from_slice(
            b"The quick brown fox jumps over the lazy dog, 0123456789 times.\r\n",
        );
    }
    let sealed = meshmail::crypto::seal::seal(&msg, &req).expect("seal");
    let unlocked = account.unlock(None).expect("unlock");
    let keys = meshmail::crypto::decrypt::DecryptionKeys::new(
        unlocked.openpgp_secret_cert().expect("secret"),
        None,
        None,
        Vec::new(),
    );
    let armored = {
        let text = String::from_utf8_lossy(sealed.bytes()).into_owned();
        let start = text.find("-----BEGIN PGP MESSAGE-----").expect("armor");
        let end = text.find("-----END PGP MESSAGE-----").expect("armor") + 25;
        text.as_bytes()[start..end].to_vec()
    };
    if std::env::var("ONLY_OPEN").is_ok() {
        // For a profile of decryption alone.
        for _ in 0..n {
            let _ = keys.open_openpgp(&armored, &[], 1 << 26).expect("open");
        }
        return;
    }
    let t = Instant::now();
    for _ in 0..n {
        let _ = keys.open_openpgp(&armored, &[], 1 << 26).expect("open");
    }
    println!(
        "open_openpgp 20 KB     {:8.1} us/msg",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let t = Instant::now();
    for _ in 0..n {
        let _ = meshmail::imap::view::View::build(sealed.bytes(), &keys, 1 << 26);
    }
    println!(
        "View::build 20 KB      {:8.1} us/msg",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let t = Instant::now();
    for _ in 0..n {
        let v = meshmail::imap::view::View::build(sealed.bytes(), &keys, 1 << 26);
        let _ = v.index_entry();
    }
    println!(
        "View::build + index entry {:8.1} us/msg",
        t.elapsed().as_secs_f64() * 1e6 / n as f64
    );
    let _ = std::fs::remove_dir_all(dir);
}
