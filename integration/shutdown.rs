//! SIGTERM: meshmail stops accepting, lets each session finish what it is doing and says
//! goodbye at the next quiet moment (`421` in SMTP, `* BYE` in IMAP), then exits within its
//! grace period. A message in the middle of DATA is relayed, not lost. Real Postfix and Dovecot
//! behind it; Python's sockets play the clients so the signal lands mid-DATA.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::mail::{MailServers, Meshmail};
use common::*;
use std::process::Command;
use std::time::Duration;

#[test]
fn sigterm_finishes_a_message_in_data_and_says_goodbye_to_idle_sessions() {
    let root = tempdir();
    let servers = MailServers::start();
    let alice = init_account(root.path(), "alice@example.test");
    let smtp_port = free_port();
    let config = servers.meshmail_config(
        &alice.home,
        "alice",
        Some(smtp_port),
        "[limits]\nshutdown_grace_secs = 20\n",
    );
    let mut m = Meshmail::start(&config);
    let py = format!(
        r#"
import base64, os, socket, time
def rd(s):
    s.settimeout(15); return s.recv(65536).decode()
auth = base64.b64encode(b"\0alice\0secret").decode()
a = socket.create_connection(("127.0.0.1", {smtp})); rd(a)
a.sendall(b"EHLO a\r\n"); rd(a)
a.sendall(("AUTH PLAIN " + auth + "\r\n").encode()); print("A-AUTH", rd(a).strip())
a.sendall(b"MAIL FROM:<alice@example.test>\r\n"); rd(a)
a.sendall(b"RCPT TO:<alice@example.test>\r\n"); rd(a)
a.sendall(b"DATA\r\n"); print("A-DATA", rd(a).strip())
a.sendall(b"Subject: sent across a shutdown\r\nMessage-ID: <drain@example.test>\r\n\r\nfirst half\r\n")
b = socket.create_connection(("127.0.0.1", {smtp})); rd(b)
b.sendall(b"EHLO b\r\n"); rd(b)
c = socket.create_connection(("127.0.0.1", {imap})); rd(c)
c.sendall(b"a1 LOGIN alice secret\r\n"); print("C-LOGIN", rd(c).strip())
time.sleep(0.5)
os.kill({pid}, 15)
print("B-GOT", rd(b).strip())
print("C-GOT", rd(c).strip())
time.sleep(1)
a.sendall(b"second half\r\n.\r\n")
end = rd(a)
if "421" not in end:
    end += rd(a)
print("A-END", end.replace("\r\n", " | "))
"#,
        smtp = smtp_port,
        imap = m.port,
        pid = m.pid(),
    );
    let r = run(Command::new("python3").arg("-c").arg(&py));
    let log = m.log_text();
    assert!(r.stdout.contains("A-DATA 354"), "{r:#?}\n{log}");
    assert!(r.stdout.contains("C-LOGIN a1 OK"), "{r:#?}\n{log}");
    // The idle sessions hear goodbye at once.
    assert!(r.stdout.contains("B-GOT 421 4.3.2"), "{r:#?}\n{log}");
    assert!(
        r.stdout.contains("C-GOT * BYE [UNAVAILABLE]"),
        "{r:#?}\n{log}"
    );
    // The message in DATA is finished and relayed, then the session ends with 421.
    assert!(
        r.stdout
            .contains("A-END 250 2.0.0 Message accepted (1 copy: plain) | 421 4.3.2"),
        "{r:#?}\n{log}"
    );
    let took = m.wait_exit(Duration::from_secs(25));
    assert!(took.is_some(), "meshmail did not exit: {}", m.log_text());
    let got = servers.wait_for_inbox("alice", 1);
    assert_eq!(got.len(), 1);
    let text = String::from_utf8_lossy(&got[0]);
    assert!(
        text.contains("first half") && text.contains("second half"),
        "{text}"
    );
}
