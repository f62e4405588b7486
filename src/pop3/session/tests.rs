//! Unit tests of the POP3 session core: scripted bytes from both sides, no server, no sockets.

use super::core::{Answer, Control, Core};
use super::fuzz::context;
use crate::imap::view::View;
use std::sync::Arc;
use zeroize::Zeroizing;

/// A TLS acceptor with a fresh self-signed certificate.
fn test_acceptor() -> tokio_rustls::TlsAcceptor {
    let dir = tempfile::tempdir().expect("tempdir");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
    let (c, k) = (dir.path().join("c.pem"), dir.path().join("k.pem"));
    std::fs::write(&c, cert.cert.pem()).expect("write");
    std::fs::write(&k, cert.signing_key.serialize_pem()).expect("write");
    crate::tls::acceptor(&c, &k).expect("acceptor")
}

fn core() -> Core {
    Core::new(context(None), "test".into(), false, true)
}

fn upstream(core: &mut Core) -> String {
    String::from_utf8_lossy(&std::mem::take(&mut core.to_upstream)).into_owned()
}

fn client(core: &mut Core) -> String {
    String::from_utf8_lossy(&std::mem::take(&mut core.to_client)).into_owned()
}

const ENCRYPTED: &str = "From: a@example.test\r\nSubject: ...\r\nContent-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=b\r\n\r\n--b\r\nContent-Type: application/pgp-encrypted\r\n\r\nVersion: 1\r\n--b\r\nContent-Type: application/octet-stream\r\n\r\n-----BEGIN PGP MESSAGE-----\r\nxx\r\n-----END PGP MESSAGE-----\r\n--b--\r\n";

/// Logs in as `user` with USER/PASS and answers meshmail's scan listing for a mapped login.
fn login(core: &mut Core, user: &str, listing: &str, uidls: &str) {
    core.on_client_bytes(format!("USER {user}\r\n").as_bytes());
    assert_eq!(upstream(core), format!("USER {user}\r\n"));
    core.on_upstream_bytes(b"+OK\r\n");
    assert_eq!(client(core), "+OK\r\n");
    core.on_client_bytes(b"PASS secret word\r\n");
    assert_eq!(upstream(core), "PASS secret word\r\n");
    core.on_upstream_bytes(b"+OK Logged in.\r\n");
    assert_eq!(client(core), "+OK Logged in.\r\n");
    if user == "alice" {
        assert_eq!(upstream(core), "LIST\r\n");
        core.on_upstream_bytes(format!("+OK\r\n{listing}.\r\n").as_bytes());
        assert_eq!(upstream(core), "UIDL\r\n");
        core.on_upstream_bytes(format!("+OK\r\n{uidls}.\r\n").as_bytes());
        assert_eq!(upstream(core), "");
    }
}

#[test]
fn a_mapped_login_reads_the_listing_and_answers_sizes_itself() {
    let mut c = core();
    login(&mut c, "alice", "1 120\r\n2 900\r\n", "1 u1\r\n2 u2\r\n");
    assert!(c.mapped().is_some());
    c.on_client_bytes(b"STAT\r\nLIST 2\r\n");
    assert_eq!(client(&mut c), "+OK 2 1020\r\n");
    // A size not known yet: the header says whether the server's size is the size.
    assert_eq!(upstream(&mut c), "TOP 2 0\r\n");
    c.on_upstream_bytes(b"+OK\r\nSubject: plain\r\n\r\n.\r\n");
    assert_eq!(client(&mut c), "+OK 2 900\r\n");
    c.on_client_bytes(b"LIST 2\r\n");
    assert_eq!(client(&mut c), "+OK 2 900\r\n");
    assert_eq!(upstream(&mut c), "");
    // UIDL is the server's, unchanged.
    c.on_client_bytes(b"UIDL\r\n");
    assert_eq!(upstream(&mut c), "UIDL\r\n");
    c.on_upstream_bytes(b"+OK\r\n1 u1\r\n2 u2\r\n.\r\n");
    assert_eq!(client(&mut c), "+OK\r\n1 u1\r\n2 u2\r\n.\r\n");
}

#[test]
fn an_encrypted_message_is_served_as_its_view_with_its_own_size() {
    let mut c = core();
    login(&mut c, "alice", "1 120\r\n2 900\r\n", "1 u1\r\n2 u2\r\n");
    c.on_client_bytes(b"RETR 2\r\nSTAT\r\n");
    assert_eq!(upstream(&mut c), "RETR 2\r\n");
    c.on_upstream_bytes(format!("+OK 900 octets\r\n{ENCRYPTED}.\r\n").as_bytes());
    // Nothing for the client until the view is built, and STAT waits its turn.
    assert_eq!(client(&mut c), "");
    let job = c.job.take().expect("a view to build");
    assert_eq!(job.n, 2);
    assert_eq!(job.raw, ENCRYPTED.as_bytes());
    let view = b"Subject: secret\r\n\r\n.hidden line\r\nbye\r\n".to_vec();
    c.job_done(
        2,
        Answer::Retr,
        Ok(Arc::new(View::from_message(Zeroizing::new(view.clone())))),
    );
    assert_eq!(
        client(&mut c),
        format!(
            "+OK {} octets\r\nSubject: secret\r\n\r\n..hidden line\r\nbye\r\n.\r\n+OK 2 {}\r\n",
            view.len(),
            120 + view.len()
        )
    );
    c.on_client_bytes(b"LIST\r\n");
    assert_eq!(
        client(&mut c),
        format!(
            "+OK scan listing follows\r\n1 120\r\n2 {}\r\n.\r\n",
            view.len()
        )
    );
}

#[test]
fn list_of_one_encrypted_message_gives_the_size_retr_will_serve() {
    let mut c = core();
    login(&mut c, "alice", "1 900\r\n", "1 u1\r\n");
    c.on_client_bytes(b"LIST 1\r\n");
    assert_eq!(upstream(&mut c), "TOP 1 0\r\n");
    let head = ENCRYPTED.split("\r\n\r\n").next().unwrap_or_default();
    c.on_upstream_bytes(format!("+OK\r\n{head}\r\n\r\n.\r\n").as_bytes());
    assert_eq!(upstream(&mut c), "TOP 1 999999999\r\n");
    c.on_upstream_bytes(format!("+OK\r\n{ENCRYPTED}.\r\n").as_bytes());
    let job = c.job.take().expect("job");
    assert_eq!(job.answer, Answer::List);
    let view = b"Subject: secret\r\n\r\nbody\r\n".to_vec();
    c.job_done(
        1,
        Answer::List,
        Ok(Arc::new(View::from_message(Zeroizing::new(view.clone())))),
    );
    assert_eq!(client(&mut c), format!("+OK 1 {}\r\n", view.len()));
    // A view that cannot be built now still gets LIST an answer: the server's size.
    let mut c = core();
    login(&mut c, "alice", "1 900\r\n", "1 u1\r\n");
    c.on_client_bytes(b"LIST 1\r\n");
    let _ = upstream(&mut c);
    c.on_upstream_bytes(format!("+OK\r\n{head}\r\n\r\n.\r\n").as_bytes());
    let _ = upstream(&mut c);
    c.on_upstream_bytes(format!("+OK\r\n{ENCRYPTED}.\r\n").as_bytes());
    let job = c.job.take().expect("job");
    c.job_done(job.n, job.answer, Err("the key store is locked".into()));
    assert_eq!(client(&mut c), "+OK 1 900\r\n");
}

#[test]
fn a_view_that_cannot_be_built_now_is_a_temporary_error() {
    let mut c = core();
    login(&mut c, "alice", "1 900\r\n", "1 u1\r\n");
    c.on_client_bytes(b"RETR 1\r\n");
    let _ = upstream(&mut c);
    c.on_upstream_bytes(format!("+OK\r\n{ENCRYPTED}.\r\n").as_bytes());
    let job = c.job.take().expect("job");
    c.job_done(job.n, job.answer, Err("the key store is locked".into()));
    assert_eq!(
        client(&mut c),
        "-ERR [SYS/TEMP] the key store is locked\r\n"
    );
}

#[test]
fn plaintext_is_relayed_and_a_forged_result_header_removed() {
    let mut c = core();
    login(&mut c, "alice", "1 40\r\n2 60\r\n", "1 u1\r\n2 u2\r\n");
    c.on_client_bytes(b"RETR 1\r\n");
    let _ = upstream(&mut c);
    let plain = "+OK 40 octets\r\nSubject: hi\r\n\r\n..dot\r\n.\r\n";
    c.on_upstream_bytes(plain.as_bytes());
    assert_eq!(client(&mut c), plain);
    assert!(c.job.is_none());
    c.on_client_bytes(b"RETR 2\r\n");
    let _ = upstream(&mut c);
    c.on_upstream_bytes(
        b"+OK\r\nSubject: hi\r\nMeshmail-Result: decrypted; verified=yes\r\n\r\nbody\r\n.\r\n",
    );
    let shown = client(&mut c);
    assert!(!shown.contains("Meshmail-Result"), "{shown}");
    assert!(
        shown.contains("Subject: hi\r\n\r\nbody\r\n.\r\n"),
        "{shown}"
    );
}

#[test]
fn top_of_an_encrypted_message_comes_from_its_view() {
    let mut c = core();
    login(&mut c, "alice", "1 900\r\n", "1 u1\r\n");
    c.on_client_bytes(b"TOP 1 1\r\n");
    assert_eq!(upstream(&mut c), "TOP 1 1\r\n");
    let head = ENCRYPTED.split("\r\n\r\n").next().unwrap_or_default();
    c.on_upstream_bytes(format!("+OK\r\n{head}\r\n\r\n--b\r\n.\r\n").as_bytes());
    // The header says encrypted: meshmail asks for the whole message, without RETR.
    assert_eq!(upstream(&mut c), "TOP 1 999999999\r\n");
    c.on_upstream_bytes(format!("+OK\r\n{ENCRYPTED}.\r\n").as_bytes());
    let job = c.job.take().expect("job");
    assert_eq!(job.answer, Answer::Top(1));
    let view = b"Subject: secret\r\n\r\nfirst\r\nsecond\r\n".to_vec();
    c.job_done(
        1,
        Answer::Top(1),
        Ok(Arc::new(View::from_message(Zeroizing::new(view)))),
    );
    assert_eq!(
        client(&mut c),
        "+OK\r\nSubject: secret\r\n\r\nfirst\r\n.\r\n"
    );
}

#[test]
fn another_login_leaves_the_core_for_a_byte_relay() {
    let mut c = core();
    login(&mut c, "bob", "", "");
    assert_eq!(c.control, Control::Relay);
    assert!(c.mapped().is_none());
    // Bytes the client sent after PASS are handed on untouched.
    let (from_client, _) = c.take_unread();
    assert!(from_client.is_empty());
}

#[test]
fn a_sasl_login_is_mapped_by_its_authentication_identity() {
    let mut c = core();
    c.on_client_bytes(b"AUTH PLAIN\r\n");
    assert_eq!(upstream(&mut c), "AUTH PLAIN\r\n");
    c.on_upstream_bytes(b"+ \r\n");
    assert_eq!(client(&mut c), "+ \r\n");
    let response = data_encoding::BASE64.encode(b"\0alice\0pw");
    c.on_client_bytes(format!("{response}\r\n").as_bytes());
    assert_eq!(upstream(&mut c), format!("{response}\r\n"));
    c.on_upstream_bytes(b"+OK Logged in.\r\n");
    assert!(c.mapped().is_some());
    // An authorization identity other than the authentication identity is not mapped.
    let mut c = core();
    let response = data_encoding::BASE64.encode(b"alice\0bob\0pw");
    c.on_client_bytes(format!("AUTH PLAIN {response}\r\n").as_bytes());
    let _ = upstream(&mut c);
    c.on_upstream_bytes(b"+OK Logged in.\r\n");
    assert!(c.mapped().is_none());
    assert_eq!(c.control, Control::Relay);
}

#[test]
fn a_refused_login_stays_in_authorization() {
    let mut c = core();
    c.on_client_bytes(b"USER alice\r\nPASS wrong\r\n");
    assert_eq!(upstream(&mut c), "USER alice\r\n");
    c.on_upstream_bytes(b"+OK\r\n");
    assert_eq!(upstream(&mut c), "PASS wrong\r\n");
    c.on_upstream_bytes(b"-ERR [AUTH] Authentication failed.\r\n");
    assert!(c.mapped().is_none());
    assert_eq!(c.control, Control::Run);
    c.on_client_bytes(b"STAT\r\n");
    assert_eq!(upstream(&mut c), "");
    assert!(client(&mut c).ends_with("-ERR Log in first\r\n"));
}

#[test]
fn stls_with_pipelined_commands_is_refused() {
    let acceptor = test_acceptor();
    let mut c = Core::new(context(Some(acceptor.clone())), "t".into(), false, false);
    c.on_client_bytes(b"STLS\r\nUSER alice\r\n");
    assert!(client(&mut c).starts_with("-ERR"));
    assert_eq!(c.control, Control::Close);
    assert_eq!(upstream(&mut c), "");
    let mut c = Core::new(context(Some(acceptor)), "t".into(), false, false);
    // Off loopback, no login before TLS.
    c.on_client_bytes(b"USER alice\r\n");
    assert!(client(&mut c).starts_with("-ERR [AUTH]"));
    c.on_client_bytes(b"STLS\r\n");
    assert_eq!(client(&mut c), "+OK Begin TLS negotiation\r\n");
    assert_eq!(c.control, Control::StartTls);
}

#[test]
fn long_lines_and_a_server_that_stops_mid_message() {
    let mut c = core();
    c.on_client_bytes(&[b'A'; 600]);
    assert_eq!(client(&mut c), "-ERR Line too long\r\n");
    assert_eq!(c.control, Control::Close);
    let mut c = core();
    login(&mut c, "alice", "1 900\r\n", "1 u1\r\n");
    c.on_client_bytes(b"RETR 1\r\n");
    let _ = upstream(&mut c);
    c.on_upstream_bytes(b"+OK\r\nSubject: half\r\n\r\nfirst part\r\n");
    c.on_upstream_closed();
    let shown = client(&mut c);
    assert_eq!(
        shown,
        "-ERR [SYS/TEMP] The mail server stopped in the middle of a reply\r\n"
    );
    assert_eq!(c.control, Control::Close);
}

#[test]
fn capa_is_offered_as_meshmail_handles_it() {
    let mut c = core();
    c.on_client_bytes(b"CAPA\r\n");
    assert_eq!(upstream(&mut c), "CAPA\r\n");
    c.on_upstream_bytes(
        b"+OK\r\nCAPA\r\nTOP\r\nUIDL\r\nPIPELINING\r\nSTLS\r\nSASL PLAIN\r\nUSER\r\n.\r\n",
    );
    assert_eq!(
        client(&mut c),
        "+OK capability list follows\r\nCAPA\r\nTOP\r\nUIDL\r\nSASL PLAIN\r\nUSER\r\n.\r\n"
    );
}

#[test]
fn a_sasl_mechanism_whose_login_cannot_be_told_is_refused() {
    let mut c = core();
    c.on_client_bytes(b"AUTH CRAM-MD5\r\n");
    assert!(client(&mut c).starts_with("-ERR [AUTH]"));
    assert_eq!(upstream(&mut c), "");
    assert_eq!(c.control, Control::Run);
}

#[test]
fn a_top_of_a_plaintext_message_does_not_change_its_size() {
    let mut c = core();
    login(&mut c, "alice", "1 60\r\n2 80\r\n", "1 u1\r\n2 u2\r\n");
    c.on_client_bytes(b"TOP 1 1\r\n");
    let _ = upstream(&mut c);
    c.on_upstream_bytes(b"+OK\r\nSubject: a\r\n\r\nfirst\r\n.\r\n");
    assert_eq!(client(&mut c), "+OK\r\nSubject: a\r\n\r\nfirst\r\n.\r\n");
    // A forged result field is taken out of a TOP too, and the size stays unknown.
    c.on_client_bytes(b"TOP 2 0\r\n");
    let _ = upstream(&mut c);
    c.on_upstream_bytes(b"+OK\r\nSubject: b\r\nMeshmail-Result: decrypted\r\n\r\n.\r\n");
    assert_eq!(client(&mut c), "+OK\r\nSubject: b\r\n\r\n.\r\n");
    c.on_client_bytes(b"STAT\r\n");
    assert_eq!(client(&mut c), "+OK 2 140\r\n");
}

#[test]
fn a_header_the_server_cut_short_is_judged_on_the_whole_message() {
    // A server may end a header at a line starting with CR, where meshmail's parser goes on
    // (and would find the Content-Type saying encrypted): only the whole message can tell.
    let mut c = core();
    login(&mut c, "alice", "1 900\r\n", "1 u1\r\n");
    c.on_client_bytes(b"LIST 1\r\n");
    assert_eq!(upstream(&mut c), "TOP 1 0\r\n");
    c.on_upstream_bytes(b"+OK\r\nFrom: a@example.test\r\n\rX\r\n.\r\n");
    assert_eq!(upstream(&mut c), "TOP 1 999999999\r\n");
    c.on_client_bytes(b"TOP 1 0\r\n");
    c.on_upstream_bytes(format!("+OK\r\n{ENCRYPTED}.\r\n").as_bytes());
    let job = c.job.take().expect("the whole message is judged encrypted");
    assert_eq!(job.answer, Answer::List);
}

#[test]
fn a_message_too_large_to_read_whole_is_refused_and_the_session_goes_on() {
    let mut c = core();
    // The context reads replies up to 2 MiB.
    login(
        &mut c,
        "alice",
        "1 3000000\r\n2 100\r\n",
        "1 big\r\n2 small\r\n",
    );
    c.on_client_bytes(b"LIST 1\r\nRETR 1\r\nRETR 2\r\n");
    // LIST 1 gives the server's size without reading the message; RETR 1 is refused
    // without asking the server; RETR 2 goes on.
    assert_eq!(upstream(&mut c), "RETR 2\r\n");
    let shown = client(&mut c);
    assert!(
        shown.starts_with("+OK 1 3000000\r\n-ERR [SYS/PERM]"),
        "{shown}"
    );
    assert_eq!(c.control, Control::Run);
}

#[test]
fn auth_alone_lists_the_mechanisms_meshmail_can_map() {
    let mut c = core();
    c.on_client_bytes(b"AUTH\r\n");
    assert_eq!(upstream(&mut c), "AUTH\r\n");
    c.on_upstream_bytes(b"+OK\r\nPLAIN\r\nCRAM-MD5\r\nLOGIN\r\n.\r\n");
    assert_eq!(client(&mut c), "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n");
}

#[test]
fn a_header_longer_than_meshmail_reads_is_judged_by_its_start() {
    // 1.1 MiB of header fields before the Content-Type: parsed no further than 1 MiB (on the
    // reactor), so the message is shown as stored: no view, no job.
    let mut c = core();
    login(&mut c, "alice", "1 1300000\r\n", "1 u1\r\n");
    c.on_client_bytes(b"RETR 1\r\n");
    let _ = upstream(&mut c);
    let filler = "X-Filler: ".to_owned() + &"a".repeat(70) + "\r\n";
    let head = filler.repeat(1_100_000 / filler.len());
    let body = ENCRYPTED.replacen("From:", &format!("{head}From:"), 1);
    c.on_upstream_bytes(format!("+OK\r\n{body}.\r\n").as_bytes());
    assert!(c.job.is_none());
    assert!(client(&mut c).ends_with("-----END PGP MESSAGE-----\r\n--b--\r\n.\r\n"));
}
