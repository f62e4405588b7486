//! Micro-benchmark of one step of the pipeline: sealing a 10 KB message for one X25519
//! recipient, without any network. Prints microseconds per message for each part.

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
    let _ = std::fs::remove_dir_all(dir);
}
