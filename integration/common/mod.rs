//! Test harness shared by the integration tests: the meshmail binary, real NSD, a real HTTPS
//! server (Python's http.server over TLS with a test CA made by openssl), temporary homes.
//!
//! Every server binds to 127.0.0.1 on a free port and is stopped when its handle drops. A
//! missing tool is a test failure with a clear message, never a silent skip: `make deps`
//! installs them all.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What a command did.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    pub fn ok(&self) -> &Self {
        assert_eq!(self.code, 0, "command failed: {self:#?}");
        self
    }
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {self:#?}"))
    }
}

pub fn run(cmd: &mut Command) -> Run {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e} (run `make deps`)"));
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// The meshmail binary with `--home HOME`.
pub fn meshmail(home: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshmail"));
    cmd.arg("--home").arg(home).env_remove("MESHMAIL_HOME");
    cmd
}

pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("meshmail-it-")
        .tempdir()
        .expect("tempdir")
}

/// A port free on 127.0.0.1 for TCP (and, in practice, UDP) at the time of asking.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

pub fn wait_for_port(port: u16, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not start listening on port {port}");
}

/// An account made with `meshmail init`, and its addresses.
pub struct TestAccount {
    pub home: PathBuf,
    pub address: String,
    /// The UDF strong address (suffix form).
    pub strong: String,
    /// The OpenPGP-fingerprint address (suffix form).
    pub openpgp_address: String,
    pub openpgp_fingerprint: String,
}

impl TestAccount {
    /// An account to be made by the caller at `home` (only the home is known yet).
    pub fn at(home: PathBuf) -> TestAccount {
        TestAccount {
            home,
            address: String::new(),
            strong: String::new(),
            openpgp_address: String::new(),
            openpgp_fingerprint: String::new(),
        }
    }
}

pub fn init_account(root: &Path, address: &str) -> TestAccount {
    let home = root.join(address.replace('@', "_at_"));
    run(meshmail(&home).args(["init", "--address", address])).ok();
    let strong = run(meshmail(&home).arg("address"))
        .ok()
        .stdout
        .trim()
        .to_owned();
    let openpgp_address = run(meshmail(&home).args(["address", "--openpgp"]))
        .ok()
        .stdout
        .trim()
        .to_owned();
    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(home.join("account.json")).expect("account.json"))
            .expect("json");
    TestAccount {
        home,
        address: address.to_owned(),
        strong,
        openpgp_address,
        openpgp_fingerprint: info["openpgp_fingerprint"]
            .as_str()
            .expect("fpr")
            .to_owned(),
    }
}

/// The zone lines `meshmail policy publish` writes for an account (and its output dir).
pub fn publish(account: &TestAccount, out: &Path) -> Vec<String> {
    let r = run(meshmail(&account.home)
        .args(["policy", "publish", "--out"])
        .arg(out));
    r.ok();
    let zone = std::fs::read_to_string(out.join("zone.txt")).expect("zone.txt");
    assert_eq!(
        r.stdout.trim(),
        zone.trim(),
        "publish prints the zone lines it writes"
    );
    zone.lines().map(str::to_owned).collect()
}

/// A real NSD serving the `example.test` zone with the policy TXT records of `accounts`
/// (published under `root`).
pub fn nsd_with_policies(root: &Path, accounts: &[&TestAccount]) -> Nsd {
    let mut zone = Vec::new();
    for who in accounts {
        let out = root.join(format!("pub-{}", who.address));
        zone.extend(
            publish(who, &out)
                .into_iter()
                .filter(|l| l.contains(" TXT ")),
        );
    }
    Nsd::start(&[("example.test", zone)])
}

/// A real NSD serving zones on 127.0.0.1.
pub struct Nsd {
    pub port: u16,
    dir: tempfile::TempDir,
    running: bool,
}

impl Nsd {
    /// Starts NSD with one zone per `(domain, extra lines)`; each zone gets an SOA and NS.
    pub fn start(zones: &[(&str, Vec<String>)]) -> Nsd {
        let dir = tempdir();
        let port = free_port();
        let d = dir.path().display().to_string();
        let mut conf = format!(
            "server:\n  ip-address: 127.0.0.1@{port}\n  port: {port}\n  do-ip6: no\n  username: \"\"\n  chroot: \"\"\n  database: \"\"\n  server-count: 1\n  zonesdir: \"{d}\"\n  zonelistfile: \"{d}/zone.list\"\n  xfrdfile: \"{d}/xfrd.state\"\n  xfrdir: \"{d}\"\n  pidfile: \"{d}/nsd.pid\"\n  logfile: \"{d}/nsd.log\"\nremote-control:\n  control-enable: no\n"
        );
        for (domain, lines) in zones {
            let mut zone = format!(
                "$ORIGIN {domain}.\n$TTL 60\n@ IN SOA ns.{domain}. hostmaster.{domain}. ( 1 3600 600 86400 60 )\n@ IN NS ns.{domain}.\nns IN A 127.0.0.1\n"
            );
            for l in lines {
                zone.push_str(l);
                zone.push('\n');
            }
            std::fs::write(dir.path().join(format!("{domain}.zone")), zone).expect("zone");
            conf.push_str(&format!(
                "zone:\n  name: {domain}\n  zonefile: {domain}.zone\n"
            ));
            let check = run(Command::new("nsd-checkzone")
                .arg(domain)
                .arg(dir.path().join(format!("{domain}.zone"))));
            assert_eq!(
                check.code, 0,
                "nsd-checkzone refused the zone lines: {check:#?}"
            );
        }
        std::fs::write(dir.path().join("nsd.conf"), conf).expect("conf");
        let start = run(Command::new("nsd")
            .arg("-c")
            .arg(dir.path().join("nsd.conf")));
        assert_eq!(start.code, 0, "nsd did not start: {start:#?}");
        let nsd = Nsd {
            port,
            dir,
            running: true,
        };
        wait_for_port(port, "nsd");
        nsd
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Starts the stopped server again on the same port with the same zones.
    pub fn restart(&mut self) {
        if self.running {
            return;
        }
        let start = run(Command::new("nsd")
            .arg("-c")
            .arg(self.dir.path().join("nsd.conf")));
        assert_eq!(start.code, 0, "nsd did not start again: {start:#?}");
        self.running = true;
        wait_for_port(self.port, "nsd");
    }

    pub fn stop(&mut self) {
        if !self.running {
            return;
        }
        self.running = false;
        if let Ok(pid) = std::fs::read_to_string(self.dir.path().join("nsd.pid")) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        // Wait until the port is closed, so "stopped" really means stopped.
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Nsd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A test CA and a server certificate for `hosts`, made with openssl.
pub struct TestCa {
    pub ca_pem: PathBuf,
    pub cert_pem: PathBuf,
    pub key_pem: PathBuf,
}

pub fn make_test_ca(dir: &Path, hosts: &[&str]) -> TestCa {
    let p = |n: &str| dir.join(n);
    run(Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=meshmail test CA",
        ])
        .args([
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ])
        .arg("-keyout")
        .arg(p("ca.key"))
        .arg("-out")
        .arg(p("ca.pem")))
    .ok();
    run(Command::new("openssl")
        .args(["req", "-newkey", "rsa:2048", "-nodes", "-subj"])
        .arg(format!("/CN={}", hosts[0]))
        .arg("-keyout")
        .arg(p("server.key"))
        .arg("-out")
        .arg(p("server.csr")))
    .ok();
    let sans: Vec<String> = hosts.iter().map(|h| format!("DNS:{h}")).collect();
    std::fs::write(
        p("ext.cnf"),
        format!(
            "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName={}\n",
            sans.join(",")
        ),
    )
    .expect("ext");
    run(Command::new("openssl")
        .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
        .arg("-in")
        .arg(p("server.csr"))
        .arg("-CA")
        .arg(p("ca.pem"))
        .arg("-CAkey")
        .arg(p("ca.key"))
        .arg("-extfile")
        .arg(p("ext.cnf"))
        .arg("-out")
        .arg(p("server.pem")))
    .ok();
    TestCa {
        ca_pem: p("ca.pem"),
        cert_pem: p("server.pem"),
        key_pem: p("server.key"),
    }
}

/// A real HTTPS server serving `root/<Host>/<path>` (virtual hosts by the Host header).
pub struct HttpsServer {
    pub port: u16,
    child: Child,
}

impl HttpsServer {
    pub fn start(root: &Path, ca: &TestCa) -> HttpsServer {
        let port = free_port();
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/tools/https_server.py");
        let child = Command::new("python3")
            .arg(script)
            .arg(root)
            .arg(port.to_string())
            .arg(&ca.cert_pem)
            .arg(&ca.key_pem)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3");
        wait_for_port(port, "https server");
        HttpsServer { port, child }
    }
}

impl Drop for HttpsServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TXT line holding `who`'s own policy, re-signed by its key after `edit` changed it.
pub fn resigned_policy_line(
    who: &TestAccount,
    edit: impl FnOnce(&mut meshmail::policy::PolicyDocument),
) -> String {
    use meshmail::keys::Account;
    use meshmail::policy::{jws, PolicyDocument};
    let account = Account::open(&who.home).expect("account");
    let key = account
        .unlock(None)
        .expect("unlock")
        .policy_signing_key()
        .expect("key");
    let mut doc: PolicyDocument = serde_json::from_slice(
        &jws::verify(&account.policy_jws().expect("jws"))
            .expect("valid")
            .payload,
    )
    .expect("doc");
    edit(&mut doc);
    let signed = jws::sign(&serde_json::to_vec(&doc).expect("json"), &key);
    let strings: Vec<String> = signed
        .as_bytes()
        .chunks(255)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    let udf = account.policy_udf(140).expect("udf");
    format!(
        "{}._mmm.example.test. 60 IN TXT {}",
        udf.dns_label(),
        strings.join(" ")
    )
}

/// A TXT line holding `who`'s own policy, signed by its key, expired yesterday.
pub fn expired_policy_line(who: &TestAccount) -> String {
    resigned_policy_line(who, |doc| {
        let now = time::OffsetDateTime::now_utc();
        doc.created = now - time::Duration::days(400);
        doc.expires = now - time::Duration::days(1);
    })
}

pub mod gpg;
pub mod imap;
pub mod mail;
pub mod raw_imap;
pub mod sidecar;
pub mod smime;

/// Connects, reads the greeting, sends `send` at once, and reads what the server says until it
/// closes (true) or `wait` passes (false).
pub fn converse(port: u16, send: &[u8], wait: std::time::Duration) -> (String, bool) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(wait)).expect("timeout");
    let mut greeting = [0u8; 4096];
    let _ = s.read(&mut greeting);
    // The server may close before it has read everything (that is what some tests check).
    let _ = s.write_all(send);
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match s.read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&out).into_owned(), closed)
}

/// A log without its ANSI colour sequences (tracing colours its fields).
pub fn plain(log: &str) -> String {
    let mut out = String::with_capacity(log.len());
    let mut chars = log.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The peak RSS of process `pid` so far, in kB (`VmHWM`).
#[allow(dead_code)]
pub fn peak_rss_kb(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}
