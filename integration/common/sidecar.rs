//! The MTA sidecar under test: a real Postfix whose MX and submission hand every message to
//! meshmail's filter (LMTP), its reinjection listener, a real Dovecot behind it, and Postfix's
//! `smtp-sink` as the outside world (sink.test), which records each RCPT's parameters.

use super::mail::{MailServers, Meshmail};
use super::{free_port, run, Run};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How a sidecar test is set up.
#[derive(Default)]
pub struct Setup {
    /// Postfix's message_size_limit at the entry (the reinjection takes twice as much).
    pub size_limit: Option<usize>,
    /// Ask meshmail's policy service at RCPT on submission.
    pub policy_service: bool,
    /// Lines added to `[filter]`.
    pub filter_extra: String,
    /// Sections added after `[filter]` (e.g. `[policy]`).
    pub extra: String,
    /// The filter on a Unix socket (group postfix, mode 0660) instead of loopback TCP.
    pub unix: bool,
}

pub struct Sidecar {
    pub work: tempfile::TempDir,
    pub servers: MailServers,
    pub meshmail: Option<Meshmail>,
    /// `[filter] keys_dir`.
    pub keys: PathBuf,
    pub filter_port: u16,
    pub policy_port: u16,
    /// The port meshmail is ready on (the filter's, or the policy service's).
    ready_port: u16,
    config: String,
    sink: Child,
}

/// One transaction smtp-sink recorded.
#[derive(Debug, Clone)]
pub struct SinkMessage {
    pub mail_args: String,
    pub rcpt_args: Vec<String>,
    pub message: Vec<u8>,
}

impl Sidecar {
    pub fn start(setup: Setup) -> Sidecar {
        let work = super::tempdir();
        // smtp-sink runs as nobody and writes its dump under here.
        chmod(work.path(), 0o755);
        let keys = work.path().join("keys");
        std::fs::create_dir_all(&keys).expect("keys");
        let sink_dir = work.path().join("sink");
        std::fs::create_dir_all(&sink_dir).expect("sink");
        chmod(&sink_dir, 0o1777);
        let filter_port = free_port();
        let policy_port = free_port();
        let socket = work.path().join("filter.sock");
        let (nexthop, listen) = if setup.unix {
            (
                format!("unix:{}", socket.display()),
                format!(
                    "listen = \"unix:{}\"\nsocket_group = \"postfix\"",
                    socket.display()
                ),
            )
        } else {
            (
                format!("inet:127.0.0.1:{filter_port}"),
                format!("listen = \"127.0.0.1:{filter_port}\""),
            )
        };
        // meshmail is ready when a TCP port of its own accepts: with a Unix socket, the
        // policy service's.
        let policy_service = setup.policy_service || setup.unix;
        let servers = MailServers::start_sidecar(
            &nexthop,
            setup.policy_service.then_some(policy_port),
            setup.size_limit,
        );
        let sink = Command::new("/usr/sbin/smtp-sink")
            .args(["-u", "nobody", "-D"])
            .arg(sink_dir.join("dump"))
            .arg(format!("127.0.0.1:{}", servers.base + 60))
            .arg("100")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("smtp-sink (postfix package)");
        super::wait_for_port(servers.base + 60, "smtp-sink");
        let policy = if policy_service {
            format!("[filter.policy_service]\nlisten = \"127.0.0.1:{policy_port}\"\n")
        } else {
            String::new()
        };
        let config = format!(
            "[filter]\n{listen}\nreinject = \"127.0.0.1:{}\"\nlocal_domains = [\"example.test\"]\nkeys_dir = \"{}\"\nhostname = \"filter.example.test\"\nmark_secret_file = \"{}\"\n{}\n{policy}{}",
            servers.reinject(),
            keys.display(),
            work.path().join("mark.key").display(),
            setup.filter_extra,
            setup.extra,
        );
        let ready_port = if setup.unix { policy_port } else { filter_port };
        let meshmail = Meshmail::start_on(&config, ready_port);
        Sidecar {
            work,
            servers,
            meshmail: Some(meshmail),
            keys,
            filter_port,
            policy_port,
            ready_port,
            config,
            sink,
        }
    }

    /// Gives `address` the public key of the meshmail account at `home`.
    pub fn add_key(&self, address: &str, home: &Path) {
        std::fs::copy(
            home.join("openpgp.asc"),
            self.keys.join(format!("{address}.asc")),
        )
        .expect("copy key");
    }

    /// meshmail's log.
    pub fn log(&self) -> String {
        self.meshmail
            .as_ref()
            .map(Meshmail::log_text)
            .unwrap_or_default()
    }

    /// Starts meshmail again (after a stop or a kill).
    pub fn restart_meshmail(&mut self) {
        self.meshmail = None;
        self.meshmail = Some(Meshmail::start_on(&self.config, self.ready_port));
    }

    /// Sends `message` from `from` to `rcpts` through the MX (as a sender on the internet).
    pub fn send_mx(&self, from: &str, rcpts: &[&str], message: &[u8], extra: &[&str]) -> Run {
        self.send(self.servers.mx(), from, rcpts, message, extra)
    }

    /// Sends through submission, logged in as `user`.
    pub fn submit(&self, user: &str, rcpts: &[&str], message: &[u8], extra: &[&str]) -> Run {
        let login = format!("{user}:secret");
        let ca = self.servers.ca_pem();
        let mut args = vec!["--login", &login, "--ca", ca.to_str().expect("path")];
        args.extend_from_slice(extra);
        self.send(
            self.servers.submission(),
            &format!("{user}@example.test"),
            rcpts,
            message,
            &args,
        )
    }

    fn send(&self, port: u16, from: &str, rcpts: &[&str], message: &[u8], extra: &[&str]) -> Run {
        let file = self
            .work
            .path()
            .join(format!("msg-{}.eml", super::imap::rand_suffix()));
        std::fs::write(&file, message).expect("message");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/tools/send_mail.py");
        run(Command::new("python3")
            .arg(script)
            .arg(port.to_string())
            .arg(from)
            .arg(rcpts.join(","))
            .arg(&file)
            .args(extra))
    }

    /// Sends `n` messages (Message-ID `<prefix-i@load.test>`) to `rcpts` through the MX over
    /// 4 connections; how many Postfix took.
    pub fn send_many(&self, n: usize, prefix: &str, rcpts: &[&str]) -> usize {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/tools/send_many.py");
        let r = run(Command::new("python3")
            .arg(script)
            .arg(self.servers.mx().to_string())
            .arg(n.to_string())
            .arg("4")
            .arg(prefix)
            .arg(rcpts.join(",")));
        r.json()["accepted"].as_u64().expect("accepted") as usize
    }

    /// How many messages `user`'s Maildir holds (new and cur), without IMAP.
    pub fn maildir_count(&self, user: &str) -> usize {
        let dir = self.servers.dir().join("mail").join(user).join("Maildir");
        ["new", "cur"]
            .iter()
            .map(|d| std::fs::read_dir(dir.join(d)).map_or(0, |r| r.count()))
            .sum()
    }

    /// `user`'s INBOX counted by Message-ID.
    pub fn count_ids(&self, user: &str) -> std::collections::BTreeMap<String, u64> {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/tools/count_ids.py");
        let r = run(Command::new("python3")
            .arg(script)
            .arg(self.servers.imap().to_string())
            .arg(user)
            .arg("secret"));
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {r:#?}"))
    }

    /// Every transaction smtp-sink recorded so far.
    pub fn sink_messages(&self) -> Vec<SinkMessage> {
        let dump = std::fs::read(self.work.path().join("sink/dump")).unwrap_or_default();
        let text = String::from_utf8_lossy(&dump);
        let mut out = Vec::new();
        for chunk in text.split("X-Client-Addr: ").skip(1) {
            let mut mail_args = String::new();
            let mut rcpt_args = Vec::new();
            let mut rest = chunk;
            while let Some((line, tail)) = rest.split_once('\n') {
                if let Some(a) = line.strip_prefix("X-Mail-Args: ") {
                    mail_args = a.trim().to_owned();
                } else if let Some(a) = line.strip_prefix("X-Rcpt-Args: ") {
                    rcpt_args.push(a.trim().to_owned());
                } else if !line.starts_with("X-") && !line.contains("127.0.0.1") {
                    break;
                }
                rest = tail;
            }
            out.push(SinkMessage {
                mail_args,
                rcpt_args,
                message: rest.as_bytes().to_vec(),
            });
        }
        out
    }

    /// Waits until smtp-sink recorded `n` transactions.
    pub fn wait_for_sink(&self, n: usize) -> Vec<SinkMessage> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.sink_messages();
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Postfix's queue, as `postqueue -p` shows it.
    pub fn queue(&self) -> String {
        run(Command::new("postqueue")
            .arg("-c")
            .arg(self.servers.dir().join("postfix"))
            .arg("-p"))
        .stdout
    }

    /// Asks Postfix to retry what it deferred, now.
    pub fn flush(&self) {
        run(Command::new("postqueue")
            .arg("-c")
            .arg(self.servers.dir().join("postfix"))
            .arg("-f"));
    }

    /// Waits until Postfix's queue is empty; false if it is not within `limit`.
    pub fn wait_queue_empty(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if self.queue().contains("Mail queue is empty") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    }
}

impl Drop for Sidecar {
    fn drop(&mut self) {
        let _ = self.sink.kill();
        let _ = self.sink.wait();
    }
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).expect("chmod");
}

/// `message` as stored, without the trace fields delivery put on top (Return-Path,
/// Delivered-To, Received and their folded lines).
pub fn without_trace(stored: &[u8]) -> Vec<u8> {
    let mut rest = stored;
    loop {
        let line_end = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(rest.len(), |i| i + 2);
        let line = &rest[..line_end];
        let lower = String::from_utf8_lossy(line).to_ascii_lowercase();
        let trace = lower.starts_with("return-path:")
            || lower.starts_with("delivered-to:")
            || lower.starts_with("received:")
            || lower.starts_with(' ')
            || lower.starts_with('\t');
        if !trace || line.is_empty() {
            return rest.to_vec();
        }
        rest = &rest[line_end..];
    }
}
