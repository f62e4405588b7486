//! Unit tests of the session core: scripted bytes from both sides, no server, no sockets.
//! Each test plays the client and the server and reads what the core would write to each.

use super::core::{Core, Out, UpItem};
use super::fuzz::context;
use super::state::State;

fn core() -> Core {
    let caps = [
        "IMAP4rev1",
        "AUTH=PLAIN",
        "AUTH=CRAM-MD5",
        "SASL-IR",
        "IDLE",
    ]
    .map(String::from)
    .to_vec();
    Core::new(context(), "test".into(), caps, false, true)
}

/// Everything queued upstream up to the first wait for a continuation, as text.
pub(super) fn upstream(core: &mut Core) -> String {
    let mut out = Vec::new();
    while let Some(UpItem::Bytes { .. }) = core.up_queue.front() {
        if let Some(UpItem::Bytes { data, .. }) = core.up_queue.pop_front() {
            out.extend_from_slice(&data[core.up_written..]);
            core.up_written = 0;
        }
    }
    core.up_queued_bytes = core
        .up_queue
        .iter()
        .map(|i| match i {
            UpItem::Bytes { data, .. } => data.len(),
            UpItem::Gate { .. } => 0,
        })
        .sum();
    String::from_utf8_lossy(&out).into_owned()
}

/// Everything queued for the client, as text (views as `<view uid>`).
fn client(core: &mut Core) -> String {
    let mut out = String::new();
    while let Some(item) = core.out.pop_front() {
        match item {
            Out::Bytes(b) | Out::FetchDone(b) | Out::Close(b) => {
                out.push_str(&String::from_utf8_lossy(&b))
            }
            Out::View(job) => out.push_str(&format!("<view {}>", job.uid)),
            Out::ViewFailed(r) => out.push_str(&format!("<failed {r}>")),
            Out::SearchDone(_) => out.push_str("<search>"),
            Out::StartTls(t) => out.push_str(&format!("<starttls {t}>")),
            Out::Recrypt(job) => out.push_str(&format!(
                "<recrypt {}>",
                String::from_utf8_lossy(&job.response).trim_end()
            )),
            Out::RecryptTail(b, _) => out.push_str(&String::from_utf8_lossy(&b)),
        }
    }
    out
}

fn login(core: &mut Core, user: &str) {
    core.on_client_bytes(format!("a LOGIN {user} pw\r\n").as_bytes());
    let up = upstream(core);
    let tag = up.split(' ').next().unwrap_or_default().to_owned();
    assert_eq!(up, format!("{tag} LOGIN {user} pw\r\n"));
    core.on_upstream_bytes(format!("{tag} OK Logged in\r\n").as_bytes());
    assert_eq!(client(core), "a OK Logged in\r\n");
}

pub(super) fn tag_of(up: &str) -> String {
    up.split(' ').next().unwrap_or_default().to_owned()
}

fn select(core: &mut Core, mailbox: &str, validity: u32) {
    core.on_client_bytes(format!("s SELECT {mailbox}\r\n").as_bytes());
    let tag = tag_of(&upstream(core));
    core.on_upstream_bytes(
        format!("* 2 EXISTS\r\n* OK [UIDVALIDITY {validity}] UIDs valid\r\n{tag} OK [READ-WRITE] Select completed\r\n")
            .as_bytes(),
    );
    client(core);
}

fn selected(core: &Core) -> Option<(String, Option<u32>)> {
    match &core.state {
        State::Selected(_, m) => Some((m.name.clone(), m.uidvalidity)),
        _ => None,
    }
}

#[test]
fn another_login_reusing_a_tag_never_becomes_the_mapped_account() {
    let mut c = core();
    login(&mut c, "bob");
    assert!(c.state.is_authenticated() && c.state.mapped().is_none());
    // The attack seen on main at 168a45f: a tag in flight reused for LOGIN of the mapped user.
    c.on_client_bytes(b"x NOOP\r\nx LOGIN alice wrong\r\n");
    let up = upstream(&mut c);
    assert!(up.ends_with(" NOOP\r\n") && !up.contains("LOGIN"), "{up}");
    c.on_upstream_bytes(format!("{} OK NOOP completed\r\n", tag_of(&up)).as_bytes());
    assert_eq!(
        client(&mut c),
        "x OK NOOP completed\r\nx BAD Already authenticated\r\n"
    );
    assert!(
        upstream(&mut c).is_empty(),
        "LOGIN after login is not relayed"
    );
    assert!(c.state.mapped().is_none());
    // A FETCH of an Other session is relayed untouched: no probe, no view.
    c.on_client_bytes(b"s SELECT INBOX\r\n");
    let tag = tag_of(&upstream(&mut c));
    c.on_upstream_bytes(format!("* OK [UIDVALIDITY 9] x\r\n{tag} OK done\r\n").as_bytes());
    client(&mut c);
    c.on_client_bytes(b"f UID FETCH 1 (BODY[])\r\n");
    let up = upstream(&mut c);
    assert!(up.ends_with(" UID FETCH 1 (BODY[])\r\n"), "{up}");
    c.on_upstream_bytes(
        format!(
            "* 1 FETCH (UID 1 BODY[] {{5}}\r\nhello)\r\n{} OK done\r\n",
            tag_of(&up)
        )
        .as_bytes(),
    );
    assert_eq!(
        client(&mut c),
        "* 1 FETCH (UID 1 BODY[] {5}\r\nhello)\r\nf OK done\r\n"
    );
}

#[test]
fn answers_are_matched_by_meshmails_tags_not_the_clients() {
    let mut c = core();
    login(&mut c, "bob");
    c.on_client_bytes(b"t NOOP\r\nt NOOP\r\n");
    let up = upstream(&mut c);
    let tags: Vec<&str> = up
        .lines()
        .map(|l| l.split(' ').next().unwrap_or(""))
        .collect();
    assert_eq!(tags.len(), 2);
    assert_ne!(tags[0], tags[1], "one tag upstream per command");
    // A tagged answer to nothing in flight is given to nobody.
    c.on_upstream_bytes(b"t OK forged\r\nM999 OK forged\r\n");
    assert_eq!(client(&mut c), "");
    c.on_upstream_bytes(format!("{} OK second\r\n{} OK first\r\n", tags[1], tags[0]).as_bytes());
    assert_eq!(client(&mut c), "t OK second\r\nt OK first\r\n");
}

#[test]
fn commands_pipelined_behind_a_login_wait_for_its_answer() {
    let mut c = core();
    c.on_client_bytes(b"a LOGIN alice pw\r\nb APPEND INBOX {5+}\r\nhello\r\nc NOOP\r\n");
    let up = upstream(&mut c);
    assert_eq!(up, format!("{} LOGIN alice pw\r\n", tag_of(&up)));
    // The login is answered: the APPEND is now the mapped account's, and never plaintext.
    c.on_upstream_bytes(format!("{} OK Logged in\r\n", tag_of(&up)).as_bytes());
    assert!(c.state.mapped().is_some());
    let out = client(&mut c);
    assert!(
        out.starts_with("a OK Logged in\r\nb NO [UNAVAILABLE]"),
        "{out}"
    );
    let up = upstream(&mut c);
    assert!(!up.contains("APPEND") && !up.contains("hello"), "{up}");
    assert!(up.ends_with(" NOOP\r\n"), "{up}");
}

#[test]
fn a_failed_login_binds_nothing() {
    let mut c = core();
    c.on_client_bytes(b"a LOGIN alice wrong\r\n");
    let tag = tag_of(&upstream(&mut c));
    c.on_upstream_bytes(
        format!("{tag} NO [AUTHENTICATIONFAILED] Authentication failed.\r\n").as_bytes(),
    );
    assert_eq!(
        client(&mut c),
        "a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n"
    );
    assert!(matches!(c.state, State::NotAuthenticated));
    // An answer to a command that is not the login does not log in.
    c.on_client_bytes(b"b NOOP\r\n");
    let tag = tag_of(&upstream(&mut c));
    c.on_upstream_bytes(format!("{tag} OK NOOP\r\n").as_bytes());
    assert!(matches!(c.state, State::NotAuthenticated));
}

#[test]
fn sasl_is_relayed_one_response_per_challenge_and_binds_the_authcid() {
    let mut c = core();
    c.on_client_bytes(b"a AUTHENTICATE CRAM-MD5\r\n");
    assert_eq!(
        client(&mut c),
        "a NO [CANNOT] meshmail does not relay this mechanism\r\n"
    );
    assert!(upstream(&mut c).is_empty());
    c.on_client_bytes(b"a AUTHENTICATE PLAIN\r\n");
    let tag = tag_of(&upstream(&mut c));
    // Nothing is read until the server asks.
    c.on_client_bytes(b"AGFsaWNlAHB3\r\nb APPEND INBOX {5+}\r\nhello\r\n");
    assert!(upstream(&mut c).is_empty());
    c.on_upstream_bytes(b"+ \r\n");
    assert_eq!(client(&mut c), "+ \r\n");
    c.on_client_bytes(b"");
    assert_eq!(upstream(&mut c), "AGFsaWNlAHB3\r\n");
    c.on_upstream_bytes(format!("{tag} OK Logged in\r\n").as_bytes());
    assert!(c.state.mapped().is_some(), "\\0alice\\0pw is alice");
    assert!(!upstream(&mut c).contains("hello"));
}

#[test]
fn a_mailbox_named_like_a_response_code_is_only_a_name() {
    let mut c = core();
    login(&mut c, "alice");
    c.on_client_bytes(b"l LIST \"\" *\r\n");
    let tag = tag_of(&upstream(&mut c));
    c.on_upstream_bytes(
        format!("* LIST () \"/\" \"[UIDVALIDITY 5]\"\r\n{tag} OK List completed\r\n").as_bytes(),
    );
    client(&mut c);
    c.on_client_bytes(b"s SELECT \"[UIDVALIDITY 5]\"\r\n");
    let tag = tag_of(&upstream(&mut c));
    c.on_upstream_bytes(
        format!("* OK [UIDVALIDITY 77] UIDs valid\r\n* OK Selected \"[UIDVALIDITY 6]\"\r\n{tag} OK [READ-WRITE] done\r\n")
            .as_bytes(),
    );
    assert_eq!(
        selected(&c),
        Some(("[UIDVALIDITY 5]".to_string(), Some(77)))
    );
}

#[test]
fn a_select_that_fails_leaves_no_mailbox_selected() {
    let mut c = core();
    login(&mut c, "alice");
    select(&mut c, "INBOX", 7);
    assert_eq!(selected(&c), Some(("INBOX".into(), Some(7))));
    c.on_client_bytes(b"s SELECT nosuch\r\n");
    let tag = tag_of(&upstream(&mut c));
    c.on_upstream_bytes(format!("{tag} NO [NONEXISTENT] Mailbox doesn't exist\r\n").as_bytes());
    assert_eq!(selected(&c), None);
    assert!(c.state.mapped().is_some());
    // A FETCH now is not one meshmail answers from views.
    c.on_client_bytes(b"f FETCH 1 BODY[]\r\n");
    assert!(upstream(&mut c).ends_with(" FETCH 1 BODY[]\r\n"));
}

#[test]
fn select_waits_for_commands_in_flight_and_holds_the_ones_behind_it() {
    let mut c = core();
    login(&mut c, "alice");
    c.on_client_bytes(b"n NOOP\r\ns SELECT Work\r\nf FETCH 1 BODY[]\r\n");
    let up = upstream(&mut c);
    assert!(up.ends_with(" NOOP\r\n") && !up.contains("SELECT"), "{up}");
    c.on_upstream_bytes(format!("{} OK NOOP\r\n", tag_of(&up)).as_bytes());
    let up = upstream(&mut c);
    assert!(
        up.ends_with(" SELECT Work\r\n") && !up.contains("FETCH"),
        "{up}"
    );
    c.on_upstream_bytes(
        format!(
            "* OK [UIDVALIDITY 3] x\r\n{} OK [READ-ONLY] done\r\n",
            tag_of(&up)
        )
        .as_bytes(),
    );
    let up = upstream(&mut c);
    // A whole message: its own header tells whether it is encrypted (no probe added).
    assert!(up.contains("FETCH 1 (BODY[] UID)"), "{up}");
    assert!(
        !up.contains("BODYSTRUCTURE"),
        "meshmail adds no BODYSTRUCTURE: {up}"
    );
    match &c.state {
        State::Selected(_, m) => assert!(m.read_only),
        _ => panic!("not selected"),
    }
}

#[test]
fn rename_of_the_selected_mailbox_follows_it() {
    let mut c = core();
    login(&mut c, "alice");
    select(&mut c, "Work", 4);
    c.on_client_bytes(b"r RENAME Work Old\r\n");
    let tag = tag_of(&upstream(&mut c));
    c.on_upstream_bytes(format!("{tag} OK Rename completed\r\n").as_bytes());
    assert_eq!(selected(&c), Some(("Old".into(), Some(4))));
    c.on_client_bytes(b"r RENAME Old Older\r\n");
    let tag = tag_of(&upstream(&mut c));
    c.on_upstream_bytes(format!("{tag} NO failed\r\n").as_bytes());
    assert_eq!(selected(&c), Some(("Old".into(), Some(4))));
}

#[test]
fn appends_meshmail_cannot_encrypt_are_refused_never_relayed() {
    for append in [
        // MULTIAPPEND
        &b"a APPEND INBOX {5+}\r\nhello {5+}\r\nworld\r\n"[..],
        // CATENATE
        b"a APPEND INBOX CATENATE (TEXT {5+}\r\nhello)\r\n",
        // NUL in the message
        b"a APPEND INBOX {3+}\r\na\0b\r\n",
    ] {
        let mut c = core();
        login(&mut c, "alice");
        c.on_client_bytes(append);
        let out = client(&mut c);
        assert!(out.starts_with("a NO [CANNOT]"), "{out}");
        assert!(upstream(&mut c).is_empty(), "nothing of it goes upstream");
    }
    // The same APPEND by another login is the server's to judge.
    let mut c = core();
    login(&mut c, "bob");
    c.on_client_bytes(b"a APPEND INBOX {5+}\r\nhello {5+}\r\nworld\r\n");
    assert!(upstream(&mut c).contains("hello {5+}\r\nworld"));
}

#[test]
fn a_deep_structure_the_client_asked_for_is_relayed_as_the_server_sent_it() {
    let mut c = core();
    login(&mut c, "alice");
    select(&mut c, "INBOX", 7);
    c.on_client_bytes(b"f UID FETCH 1:* (UID BODYSTRUCTURE)\r\n");
    let tag = tag_of(&upstream(&mut c));
    let deep = format!(
        "{}\"text\" \"plain\" NIL NIL NIL \"7bit\" 1 1{}",
        "(".repeat(40),
        ")".repeat(40)
    );
    let header = "Content-Type: message/rfc822\r\n\r\n";
    let response = format!(
        "* 1 FETCH (UID 4 BODYSTRUCTURE {deep} BODY[HEADER.FIELDS (CONTENT-TYPE MESHMAIL-RESULT)] {{{}}}\r\n{header})\r\n",
        header.len()
    );
    c.on_upstream_bytes(format!("{response}{tag} OK Fetch completed\r\n").as_bytes());
    assert_eq!(
        client(&mut c),
        format!("* 1 FETCH (UID 4 BODYSTRUCTURE {deep})\r\nf OK Fetch completed\r\n")
    );
}

/// A session core whose mapped account `alice` is a split account's device ("laptop").
fn device_core() -> Core {
    let mut ctx = context();
    let ctx_mut = std::sync::Arc::get_mut(&mut ctx).expect("a fresh context");
    let alice = ctx_mut.accounts.get_mut("alice").expect("alice");
    std::sync::Arc::get_mut(alice)
        .expect("a fresh account")
        .device = Some("laptop".into());
    let caps = ["IMAP4rev1", "AUTH=PLAIN"].map(String::from).to_vec();
    Core::new(ctx, "test".into(), caps, false, true)
}

#[test]
fn a_device_asks_its_store_for_the_partials_with_the_messages_it_fetches_whole() {
    let mut c = device_core();
    login(&mut c, "alice");
    select(&mut c, "INBOX", 7);
    c.on_client_bytes(b"f UID FETCH 10:11 (BODY.PEEK[])\r\n");
    let up = upstream(&mut c);
    assert!(
        up.ends_with(" UID FETCH 10:11 (BODY.PEEK[] X-MESH-RECRYPT)\r\n"),
        "{up}"
    );
    let tag = tag_of(&up);
    let enc = "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=x\r\n\r\nabc";
    let plain = "Content-Type: text/plain\r\n\r\nxyz";
    let item = "X-MESH-RECRYPT ((\"laptop\" 0 \"AAAA\"))";
    c.on_upstream_bytes(
        format!(
            "* 1 FETCH (UID 10 BODY[] {{{}}}\r\n{enc} {item})\r\n* 2 FETCH (UID 11 BODY[] {{{}}}\r\n{plain} X-MESH-RECRYPT NIL)\r\n{tag} OK done\r\n",
            enc.len(),
            plain.len()
        )
        .as_bytes(),
    );
    // The encrypted message goes to its view with the ciphertext and the store's item.
    match c.out.pop_front() {
        Some(Out::View(job)) => {
            assert_eq!(job.uid, 10);
            assert_eq!(job.ciphertext.as_deref(), Some(enc.as_bytes()));
            assert_eq!(job.recrypt.as_deref(), Some(item));
        }
        _ => panic!("the encrypted message is opened through a view"),
    }
    // The plaintext one is answered as the store sent it, without the item.
    assert_eq!(
        client(&mut c),
        format!(
            "* 2 FETCH (UID 11 BODY[] {{{}}}\r\n{plain})\r\nf OK done\r\n",
            plain.len()
        )
    );
    // A header sync fetches no whole message: no partials are asked with it (the view is
    // opened on meshmail's own connection, which asks for them).
    c.fetch_delivered();
    c.on_client_bytes(b"g UID FETCH 1:* (UID RFC822.SIZE BODY.PEEK[HEADER])\r\n");
    let up = upstream(&mut c);
    assert!(
        up.contains("UID FETCH 1:*") && !up.contains("X-MESH-RECRYPT"),
        "{up}"
    );
}

#[test]
fn a_device_the_store_no_longer_takes_fetches_again_without_the_partials() {
    let mut c = device_core();
    login(&mut c, "alice");
    select(&mut c, "INBOX", 7);
    c.on_client_bytes(b"f UID FETCH 10 (FLAGS BODY.PEEK[])\r\n");
    let up = upstream(&mut c);
    assert!(up.contains("X-MESH-RECRYPT"), "{up}");
    // Revoked: the store's session is not a device's, and it refuses the item.
    c.on_upstream_bytes(
        format!(
            "{} NO [NOPERM] X-MESH-RECRYPT is only for an enrolled device at its store\r\n",
            tag_of(&up)
        )
        .as_bytes(),
    );
    assert_eq!(client(&mut c), "", "the client waits for the FETCH again");
    let again = upstream(&mut c);
    assert!(
        again.ends_with(" UID FETCH 10 (FLAGS BODY.PEEK[])\r\n"),
        "{again}"
    );
    assert_ne!(tag_of(&again), tag_of(&up));
    // A plaintext message is shown; the FETCH ends with the server's own answer.
    let plain = "Content-Type: text/plain\r\n\r\nxyz";
    c.on_upstream_bytes(
        format!(
            "* 1 FETCH (UID 10 FLAGS () BODY[] {{{}}}\r\n{plain})\r\n{} OK done\r\n",
            plain.len(),
            tag_of(&again)
        )
        .as_bytes(),
    );
    assert_eq!(
        client(&mut c),
        format!(
            "* 1 FETCH (UID 10 FLAGS () BODY[] {{{}}}\r\n{plain})\r\nf OK done\r\n",
            plain.len()
        )
    );
    // The session asks for no partials any more.
    c.fetch_delivered();
    c.on_client_bytes(b"g UID FETCH 11 (BODY.PEEK[])\r\n");
    let up = upstream(&mut c);
    assert!(up.ends_with(" UID FETCH 11 BODY.PEEK[]\r\n"), "{up}");
}

#[test]
fn a_session_that_is_not_a_device_never_asks_for_the_partials() {
    let mut c = core();
    login(&mut c, "alice");
    select(&mut c, "INBOX", 7);
    c.on_client_bytes(b"f UID FETCH 10:11 (BODY.PEEK[])\r\n");
    let up = upstream(&mut c);
    assert!(up.ends_with(" UID FETCH 10:11 BODY.PEEK[]\r\n"), "{up}");
}

#[test]
fn an_encrypted_message_is_answered_from_its_view_and_a_plain_one_as_sent() {
    let mut c = core();
    login(&mut c, "alice");
    select(&mut c, "INBOX", 7);
    c.on_client_bytes(b"f FETCH 1:2 (FLAGS BODY.PEEK[])\r\n");
    let up = upstream(&mut c);
    // Whole messages bring their own headers: no probe is added, only the UID.
    assert!(
        up.ends_with(" FETCH 1:2 (FLAGS BODY.PEEK[] UID)\r\n"),
        "{up}"
    );
    let tag = tag_of(&up);
    let enc = "Content-Type: multipart/encrypted; protocol=\"application/pgp-encrypted\"; boundary=x\r\n\r\nabc";
    let plain = "Content-Type: text/plain\r\n\r\nxyz";
    c.on_upstream_bytes(
        format!(
            "* 1 FETCH (FLAGS () BODY[] {{{}}}\r\n{enc} UID 10)\r\n* 2 FETCH (FLAGS () BODY[] {{{}}}\r\n{plain} UID 11)\r\n{tag} OK done\r\n",
            enc.len(),
            plain.len()
        )
        .as_bytes(),
    );
    assert_eq!(
        client(&mut c),
        format!(
            "<view 10>* 2 FETCH (FLAGS () BODY[] {{{}}}\r\n{plain})\r\nf OK done\r\n",
            plain.len()
        )
    );
    // A plaintext message with a result field of its own is shown through a view (without it).
    c.fetch_delivered();
    c.on_client_bytes(b"g FETCH 3 (BODY.PEEK[HEADER])\r\n");
    let tag = tag_of(&upstream(&mut c));
    let forged = "Content-Type: text/plain\r\nMeshmail-Result: decrypted; verified=yes\r\n\r\n";
    c.on_upstream_bytes(
        format!(
            "* 3 FETCH (BODY[HEADER] {{4}}\r\nX: y UID 12 BODY[HEADER.FIELDS (CONTENT-TYPE MESHMAIL-RESULT)] {{{}}}\r\n{forged})\r\n{tag} OK done\r\n",
            forged.len()
        )
        .as_bytes(),
    );
    assert_eq!(client(&mut c), "<view 12>g OK done\r\n");
    c.fetch_delivered();
    c.on_client_bytes(b"f FETCH 1 (BODY.PEEK[])\r\n");
    upstream(&mut c);
    // The client is not read until the FETCH's answer is written.
    c.on_client_bytes(b"n NOOP\r\n");
    assert!(upstream(&mut c).is_empty());
    c.fetch_delivered();
    assert!(upstream(&mut c).ends_with(" NOOP\r\n"));
}

#[test]
fn idle_ends_with_done_relayed_as_it_is() {
    let mut c = core();
    login(&mut c, "bob");
    c.on_client_bytes(b"i IDLE\r\n");
    let tag = tag_of(&upstream(&mut c));
    c.on_upstream_bytes(b"+ idling\r\n* 3 EXISTS\r\n");
    assert_eq!(client(&mut c), "+ idling\r\n* 3 EXISTS\r\n");
    c.on_client_bytes(b"DONE\r\n");
    assert_eq!(upstream(&mut c), "DONE\r\n");
    c.on_upstream_bytes(format!("{tag} OK Idle completed\r\n").as_bytes());
    assert_eq!(client(&mut c), "i OK Idle completed\r\n");
    c.on_client_bytes(b"n NOOP\r\n");
    assert!(upstream(&mut c).ends_with(" NOOP\r\n"));
}

#[test]
fn invalid_tags_and_unrelayable_mechanisms_are_answered_by_meshmail() {
    let mut c = core();
    c.on_client_bytes(b"+ NOOP\r\n* NOOP\r\n");
    assert_eq!(client(&mut c), "* BAD Invalid tag\r\n* BAD Invalid tag\r\n");
    assert!(upstream(&mut c).is_empty());
    let caps = c.capabilities();
    assert!(caps.iter().any(|c| c == "AUTH=PLAIN"));
    assert!(!caps.iter().any(|c| c == "AUTH=CRAM-MD5"), "{caps:?}");
}
