//! Real Postfix and Dovecot for the SMTP/IMAP tests (started by `integration/servers/start.sh`),
//! a meshmail `serve` process in front of them, and readers for what landed in a mailbox.

use super::{free_port, run, wait_for_port, Run};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A private Postfix + Dovecot instance (see `integration/servers/start.sh` for the ports).
pub struct MailServers {
    pub root: tempfile::TempDir,
    pub base: u16,
}

fn servers_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/servers")
}

/// A base port whose whole range (BASE+0..BASE+99) is free now.
fn free_base() -> u16 {
    for _ in 0..200 {
        let p = free_port();
        let base = (p / 100) * 100;
        if !(20000..=60000).contains(&base) {
            continue;
        }
        let all_free = [10u16, 24, 25, 26, 43, 53, 60, 65, 87, 93, 95]
            .iter()
            .all(|o| std::net::TcpListener::bind(("127.0.0.1", base + o)).is_ok());
        if all_free {
            return base;
        }
    }
    panic!("no free port range");
}

impl MailServers {
    pub fn start() -> MailServers {
        Self::start_with_size_limit(None)
    }

    pub fn start_with_size_limit(limit: Option<usize>) -> MailServers {
        let env: Vec<(&str, String)> = limit
            .map(|l| ("MESSAGE_SIZE_LIMIT", l.to_string()))
            .into_iter()
            .collect();
        Self::start_with_env(&env)
    }

    /// The sidecar set-up: the MX and submission hand every message to meshmail's filter at
    /// `filter` (an LMTP next hop, `inet:127.0.0.1:PORT` or `unix:/path`), which reinjects into
    /// [`MailServers::reinject`]; submission asks the policy service at `policy` when given.
    pub fn start_sidecar(filter: &str, policy: Option<u16>, limit: Option<usize>) -> MailServers {
        let mut env = vec![("FILTER_NEXTHOP", filter.to_owned())];
        if let Some(p) = policy {
            env.push(("POLICY_SERVICE", format!("inet:127.0.0.1:{p}")));
        }
        if let Some(l) = limit {
            env.push(("MESSAGE_SIZE_LIMIT", l.to_string()));
        }
        Self::start_with_env(&env)
    }

    fn start_with_env(env: &[(&str, String)]) -> MailServers {
        // Ports are checked free just before the start, but a test running in parallel may
        // take one meanwhile: then the instance is stopped and started on another range.
        let mut last = String::new();
        for _ in 0..5 {
            let root = super::tempdir();
            let base = free_base();
            let log = root.path().join("start.log");
            let mut cmd = Command::new("bash");
            cmd.arg(servers_dir().join("start.sh"))
                .arg(root.path().join("srv"))
                .arg(base.to_string());
            for (k, v) in env {
                cmd.env(k, v);
            }
            // The daemons inherit stdout/stderr: send them to a file, not a pipe nobody closes.
            let file = std::fs::File::create(&log).expect("log");
            let status = cmd
                .stdin(Stdio::null())
                .stdout(file.try_clone().expect("log"))
                .stderr(file)
                .status()
                .expect("start.sh");
            let servers = MailServers { root, base };
            if status.success() {
                return servers;
            }
            last = std::fs::read_to_string(&log).unwrap_or_default();
            if !last.contains("already in use") {
                break;
            }
            // Dropping `servers` stops what did start.
        }
        panic!("start.sh failed: {last}");
    }

    pub fn dir(&self) -> PathBuf {
        self.root.path().join("srv")
    }
    /// meshmail's configuration for `user` (home `home`) in front of these servers: `[imap]`
    /// listening on `{port}` (which `Meshmail::start` fills in), `[smtp]` on `smtp_port` when
    /// given, both STARTTLS upstream with the test CA; then the `extra` sections.
    pub fn meshmail_config(
        &self,
        home: &Path,
        user: &str,
        smtp_port: Option<u16>,
        extra: &str,
    ) -> String {
        let ca = self.ca_pem();
        let ca = ca.display();
        let mut c = format!(
            "home = \"{}\"\nupstream_user = \"{user}\"\n",
            home.display()
        );
        if let Some(port) = smtp_port {
            c += &format!(
                "[smtp]\nlisten = \"127.0.0.1:{port}\"\nupstream = \"127.0.0.1:{}\"\nupstream_tls = \"starttls\"\nupstream_ca = \"{ca}\"\n",
                self.submission()
            );
        }
        c += &format!(
            "[imap]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"127.0.0.1:{}\"\nupstream_tls = \"starttls\"\nupstream_ca = \"{ca}\"\n",
            self.imap()
        );
        c + extra
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.dir().join("tls/ca.pem")
    }
    /// The MX (mail from the internet).
    pub fn mx(&self) -> u16 {
        self.base + 25
    }
    /// The reinjection listener of the sidecar set-up.
    pub fn reinject(&self) -> u16 {
        self.base + 26
    }
    pub fn submission(&self) -> u16 {
        self.base + 87
    }
    pub fn submissions(&self) -> u16 {
        self.base + 65
    }
    pub fn imap(&self) -> u16 {
        self.base + 43
    }
    /// Dovecot's POP3 (STLS) and POP3S listeners.
    pub fn pop3(&self) -> u16 {
        self.base + 10
    }
    pub fn pop3s(&self) -> u16 {
        self.base + 95
    }
    /// meshmail's configuration for `user` (home `home`) with `[pop3]` listening on `{port}`
    /// in front of Dovecot's POP3 (STLS upstream, the test CA); then the `extra` sections.
    pub fn meshmail_pop3_config(&self, home: &Path, user: &str, extra: &str) -> String {
        format!(
            "home = \"{}\"\nupstream_user = \"{user}\"\n[pop3]\nlisten = \"127.0.0.1:{{port}}\"\nupstream = \"127.0.0.1:{}\"\nupstream_tls = \"starttls\"\nupstream_ca = \"{}\"\n{extra}",
            home.display(),
            self.pop3(),
            self.ca_pem().display(),
        )
    }

    /// Every message in `user`'s mailbox folder, in UID order.
    pub fn messages(&self, user: &str, folder: &str) -> Vec<Vec<u8>> {
        let url = format!("imap://127.0.0.1:{}/{folder}", self.imap());
        let search = run(Command::new("curl").args([
            "-s",
            "-u",
            &format!("{user}:secret"),
            &url,
            "-X",
            "UID SEARCH ALL",
        ]));
        let uids: Vec<String> = search
            .stdout
            .split_whitespace()
            .filter(|w| w.chars().all(|c| c.is_ascii_digit()))
            .map(str::to_owned)
            .collect();
        uids.iter()
            .map(|uid| {
                let out = Command::new("curl")
                    .args([
                        "-s",
                        "-u",
                        &format!("{user}:secret"),
                        &format!("{url};UID={uid}"),
                    ])
                    .output()
                    .expect("curl");
                out.stdout
            })
            .collect()
    }

    /// Waits until `user`'s INBOX holds `n` messages (Postfix delivers asynchronously).
    pub fn wait_for_inbox(&self, user: &str, n: usize) -> Vec<Vec<u8>> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.messages(user, "INBOX");
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Postfix's log, for failure messages.
    pub fn postfix_log(&self) -> String {
        std::fs::read_to_string(self.dir().join("postfix.log")).unwrap_or_default()
    }
}

impl Drop for MailServers {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(servers_dir().join("stop.sh"))
            .arg(self.dir())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A running `meshmail serve`.
pub struct Meshmail {
    child: Child,
    pub port: u16,
    pub log: PathBuf,
    pub dir: tempfile::TempDir,
}

impl Meshmail {
    /// Starts meshmail with `config` (TOML); `{port}` in it is replaced by the listen port.
    pub fn start(config: &str) -> Meshmail {
        Self::start_trying(config, 3, None)
    }

    /// Starts meshmail with `config`, which names its own listen `port` (ready when it
    /// accepts connections there).
    pub fn start_on(config: &str, port: u16) -> Meshmail {
        Self::start_trying(config, 1, Some(port))
    }

    fn start_trying(config: &str, tries: u32, fixed: Option<u16>) -> Meshmail {
        let dir = super::tempdir();
        let port = fixed.unwrap_or_else(free_port);
        let cfg = dir.path().join("meshmail.toml");
        std::fs::write(&cfg, config.replace("{port}", &port.to_string())).expect("config");
        let log = dir.path().join("meshmail.log");
        let mut child = Command::new(env!("CARGO_BIN_EXE_meshmail"))
            .args(["-v", "serve", "--config"])
            .arg(&cfg)
            .env_remove("MESHMAIL_HOME")
            .env("RUST_LOG", "meshmail=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .expect("meshmail serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        match lines.next() {
            Some(Ok(l)) if l.contains("ready") => {}
            other => {
                let _ = child.kill();
                let _ = child.wait();
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                // Another test took the port between the check and the bind: try another.
                if tries > 1 && config.contains("{port}") && text.contains("Address already in use")
                {
                    return Meshmail::start_trying(config, tries - 1, fixed);
                }
                panic!("meshmail serve did not start ({other:?}): {text}");
            }
        }
        wait_for_port(port, "meshmail");
        Meshmail {
            child,
            port,
            log,
            dir,
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Meshmail {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `limit` for the process to exit on its own; how long it took.
    pub fn wait_exit(&mut self, limit: std::time::Duration) -> Option<std::time::Duration> {
        let start = std::time::Instant::now();
        while start.elapsed() < limit {
            if let Ok(Some(_)) = self.child.try_wait() {
                return Some(start.elapsed());
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        None
    }

    /// Stops the process (SIGTERM) and waits for it; dropping afterwards does nothing more.
    pub fn stop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = Command::new("kill")
                .arg(self.child.id().to_string())
                .status();
            let _ = self.child.wait();
        }
    }
}

impl Drop for Meshmail {
    fn drop(&mut self) {
        self.stop();
    }
}

/// swaks through meshmail (AUTH PLAIN, no TLS: meshmail listens on loopback).
pub fn swaks(port: u16, user: &str, password: &str, to: &str, extra: &[&str]) -> Run {
    run(Command::new("swaks")
        .args(["--server", &format!("127.0.0.1:{port}"), "--auth", "PLAIN"])
        .args(["--auth-user", user, "--auth-password", password])
        .args(["--from", &format!("{user}@example.test"), "--to", to])
        .args(extra))
}

/// The second part of a PGP/MIME message: the armored OpenPGP message.
pub fn pgp_part(message: &[u8]) -> Vec<u8> {
    let text = String::from_utf8_lossy(message);
    let start = text
        .find("-----BEGIN PGP MESSAGE-----")
        .expect("no PGP message in the copy");
    let end = text
        .find("-----END PGP MESSAGE-----")
        .expect("unterminated PGP message")
        + 25;
    text[start..end].replace("\r\n", "\n").into_bytes()
}
