//! The sidecar under load with real Postfix and Dovecot: every recipient delivered exactly
//! once through the whole path; a graceful stop mid-load loses and duplicates nothing; a
//! `kill -9` mid-load loses nothing and duplicates at most the transactions in flight.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::sidecar::{Setup, Sidecar};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// meshfilter's process limit in master.cf: at most this many transactions are in flight.
const IN_FLIGHT: u64 = 10;

fn sidecar_with_alice() -> (tempfile::TempDir, Sidecar) {
    let root = common::tempdir();
    let alice = common::init_account(root.path(), "alice@example.test");
    let sc = Sidecar::start(Setup::default());
    sc.add_key("alice@example.test", &alice.home);
    (root, sc)
}

/// Waits until `user` holds `n` messages or `limit` passes.
fn wait_count(sc: &Sidecar, user: &str, n: usize, limit: Duration) -> usize {
    let deadline = Instant::now() + limit;
    loop {
        let got = sc.maildir_count(user);
        if got >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Message-IDs `<prefix-0..n>` missing from `counts`, and the number of extra copies.
fn missing_and_extra(counts: &BTreeMap<String, u64>, prefix: &str, n: usize) -> (Vec<usize>, u64) {
    let missing = (0..n)
        .filter(|i| !counts.contains_key(&format!("<{prefix}-{i}@load.test>")))
        .collect();
    let extra = counts.values().map(|c| c.saturating_sub(1)).sum();
    (missing, extra)
}

#[test]
fn a_thousand_messages_reach_every_recipient_exactly_once() {
    let (_root, sc) = sidecar_with_alice();
    let n = 1000;
    assert_eq!(
        sc.send_many(n, "k", &["alice@example.test", "bob@example.test"]),
        n
    );
    for user in ["alice", "bob"] {
        assert_eq!(
            wait_count(&sc, user, n, Duration::from_secs(300)),
            n,
            "{user}: {}",
            sc.queue()
        );
        let counts = sc.count_ids(user);
        let (missing, extra) = missing_and_extra(&counts, "k", n);
        assert!(
            missing.is_empty() && extra == 0,
            "{user}: missing {missing:?}, {extra} duplicates"
        );
    }
    assert!(
        sc.wait_queue_empty(Duration::from_secs(30)),
        "{}",
        sc.queue()
    );
    let log = sc.log();
    assert_eq!(
        log.matches("\"at-rest\"").count(),
        n,
        "one encryption per message for alice"
    );
}

#[test]
fn a_graceful_stop_mid_load_loses_and_duplicates_nothing() {
    let (_root, mut sc) = sidecar_with_alice();
    let n = 300;
    assert_eq!(sc.send_many(n, "g", &["alice@example.test"]), n);
    assert!(wait_count(&sc, "alice", 30, Duration::from_secs(60)) >= 30);
    let meshmail = sc.meshmail.as_mut().unwrap();
    meshmail.stop();
    let at_stop = sc.maildir_count("alice");
    assert!(at_stop < n, "stopped mid-load ({at_stop} of {n} delivered)");
    sc.restart_meshmail();
    sc.flush();
    assert_eq!(
        wait_count(&sc, "alice", n, Duration::from_secs(300)),
        n,
        "{}",
        sc.queue()
    );
    assert!(
        sc.wait_queue_empty(Duration::from_secs(60)),
        "{}",
        sc.queue()
    );
    let (missing, extra) = missing_and_extra(&sc.count_ids("alice"), "g", n);
    assert!(missing.is_empty(), "lost: {missing:?}");
    assert_eq!(extra, 0, "a graceful stop duplicates nothing");
}

#[test]
fn kill_9_mid_load_loses_nothing_and_duplicates_at_most_what_was_in_flight() {
    let (_root, mut sc) = sidecar_with_alice();
    let n = 300;
    assert_eq!(sc.send_many(n, "x", &["alice@example.test"]), n);
    assert!(wait_count(&sc, "alice", 30, Duration::from_secs(60)) >= 30);
    let pid = sc.meshmail.as_ref().unwrap().pid();
    common::run(std::process::Command::new("kill").args(["-9", &pid.to_string()])).ok();
    let at_kill = sc.maildir_count("alice");
    assert!(at_kill < n, "killed mid-load ({at_kill} of {n} delivered)");
    sc.restart_meshmail();
    sc.flush();
    let deadline = Instant::now() + Duration::from_secs(300);
    while !sc.queue().contains("Mail queue is empty") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(500));
        sc.flush();
    }
    let counts = sc.count_ids("alice");
    let (missing, extra) = missing_and_extra(&counts, "x", n);
    assert!(missing.is_empty(), "lost: {missing:?}");
    eprintln!("kill -9 mid-load: {extra} duplicate(s)");
    assert!(
        extra <= IN_FLIGHT,
        "{extra} duplicates, more than the {IN_FLIGHT} transactions in flight"
    );
}
