//! The store benchmark's client (`make bench`, `integration/bench/store_bench.sh`): times one
//! command through the store proxy over TLS as an enrolled device (its certificate from the
//! device's home), reading the raw answer as fast as the socket gives it.
//!
//!   store_load ADDR STORE_CERT DEVICE_HOME USER PASS MAILBOX COMMAND...
//!
//! Prints `seconds bytes items` per command (items: `X-MESH-RECRYPT` answers carrying partials).
//! With `STORE_LOAD_GO=PATH`, it logs in, writes `PATH.ready.<pid>`, and sends its commands
//! only once PATH exists: many devices then read at the same moment, their logins not timed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 8 {
        eprintln!("usage: store_load ADDR STORE_CERT DEVICE_HOME USER PASS MAILBOX COMMAND...");
        std::process::exit(64);
    }
    let (addr, cert, home, user, pass, mailbox) =
        (&args[1], &args[2], &args[3], &args[4], &args[5], &args[6]);
    let home = Path::new(home);
    let secrets = meshmail::keys::device::unlock(home, None).expect("device secrets");
    let identity = meshmail::tls::client_keys::ClientIdentity::new(
        &home.join(meshmail::keys::device::DEVICE_CERT_FILE),
        secrets.tls_key.expose(),
    )
    .expect("identity");
    let config =
        meshmail::upstream::client_config_with_identity(Some(Path::new(cert)), &[], Some(identity))
            .expect("tls");
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").expect("name");
    let connection = rustls::ClientConnection::new(Arc::new(config), name).expect("tls");
    let tcp = TcpStream::connect(addr).expect("connect");
    let mut reader =
        BufReader::with_capacity(256 * 1024, rustls::StreamOwned::new(connection, tcp));
    let mut greeting = String::new();
    reader.read_line(&mut greeting).expect("greeting");
    command(&mut reader, &format!("LOGIN {user} {pass}"));
    command(&mut reader, &format!("EXAMINE {mailbox}"));
    if let Some(go) = std::env::var_os("STORE_LOAD_GO") {
        let go = std::path::PathBuf::from(go);
        let mut ready = go.clone().into_os_string();
        ready.push(format!(".ready.{}", std::process::id()));
        std::fs::write(&ready, b"").expect("ready file");
        while !go.exists() {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    for c in &args[7..] {
        let start = Instant::now();
        let (bytes, items) = command(&mut reader, c);
        println!("{:.3} {bytes} {items}", start.elapsed().as_secs_f64());
    }
}

/// Sends `t COMMAND` and reads until its tagged answer: (bytes read, answers with partials).
fn command(reader: &mut BufReader<Tls>, command: &str) -> (usize, usize) {
    reader
        .get_mut()
        .write_all(format!("t {command}\r\n").as_bytes())
        .expect("write");
    reader.get_mut().flush().expect("flush");
    let mut total = 0;
    let mut items = 0;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line).expect("read");
        assert!(n > 0, "connection closed");
        total += n;
        if line.windows(17).any(|w| w == b"X-MESH-RECRYPT ((") {
            items += 1;
        }
        if let Some(len) = literal_length(&line) {
            let mut buf = vec![0u8; len];
            reader.read_exact(&mut buf).expect("literal");
            total += len;
            continue;
        }
        if line.starts_with(b"t ") {
            assert!(
                line.starts_with(b"t OK"),
                "{}",
                String::from_utf8_lossy(&line)
            );
            return (total, items);
        }
    }
}

fn literal_length(line: &[u8]) -> Option<usize> {
    let line = line.strip_suffix(b"\r\n")?;
    let line = line.strip_suffix(b"}")?;
    let open = line.iter().rposition(|&b| b == b'{')?;
    std::str::from_utf8(&line[open + 1..]).ok()?.parse().ok()
}
