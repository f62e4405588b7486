//! The index's own tests: sealing, torn records, compaction, checkpoints.

use super::*;
use std::os::unix::fs::PermissionsExt;

fn entry(size: usize) -> IndexEntry {
    IndexEntry {
        size,
        bodystructure: b"(\"text\" \"plain\" NIL NIL NIL \"7bit\" 2 1 NIL NIL NIL NIL)".to_vec(),
        body: Vec::new(),
        envelope: Vec::new(),
        header: b"Subject: secret plans\r\n\r\n".to_vec(),
        message: Some(Zeroizing::new(
            b"Subject: secret plans\r\n\r\nthe body of the plans\r\n".repeat(20),
        )),
        search: SearchText::default(),
    }
}

fn files(home: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(home.join("imap-index"))
        .expect("dir")
        .map(|f| f.expect("entry").path())
        .collect()
}

#[test]
fn a_torn_record_at_the_end_costs_that_record_only() {
    let home = tempfile::tempdir().expect("tempdir");
    let index = Index::open_without_thread(home.path(), b"k").expect("index");
    for uid in 1..=10 {
        index.insert("INBOX", 3, uid, entry(uid as usize));
    }
    drop(index);
    let path = files(home.path()).pop().expect("a file");
    let len = std::fs::metadata(&path).expect("meta").len();
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    f.set_len(len - 7).expect("truncate");
    drop(f);

    let index = Index::open_without_thread(home.path(), b"k").expect("index");
    let mut uids = index.uids("INBOX", 3);
    uids.sort();
    assert_eq!(
        uids,
        (1..=9).collect::<Vec<_>>(),
        "only the torn record is lost"
    );
    // The next record starts on a boundary: everything reads back after a restart.
    index.insert("INBOX", 3, 10, entry(10));
    index.insert("INBOX", 3, 11, entry(11));
    drop(index);
    let index = Index::open_without_thread(home.path(), b"k").expect("index");
    for uid in 1..=11 {
        let e = index.get("INBOX", 3, uid, true).expect("record");
        assert_eq!(e.size, uid as usize);
        assert!(e
            .message
            .as_ref()
            .is_some_and(|m| m.starts_with(b"Subject: secret")));
    }
}

#[test]
fn expunged_records_are_removed_and_a_half_dead_file_is_compacted() {
    let home = tempfile::tempdir().expect("tempdir");
    let index = Index::open_without_thread(home.path(), b"k").expect("index");
    for uid in 1..=40 {
        index.insert("Archive", 9, uid, entry(uid as usize));
    }
    let path = files(home.path()).pop().expect("a file");
    let full = std::fs::metadata(&path).expect("meta").len();
    index.remove("Archive", 9, &[2, 3]);
    assert!(index.get("Archive", 9, 2, false).is_none(), "expunged");
    assert!(
        std::fs::metadata(&path).expect("meta").len() > full,
        "a tombstone appended"
    );
    index.remove("Archive", 9, &(4..=30).collect::<Vec<_>>());
    let compacted = std::fs::metadata(&path).expect("meta").len();
    assert!(compacted < full / 2, "compacted: {compacted} of {full}");
    drop(index);

    let index = Index::open_without_thread(home.path(), b"k").expect("index");
    let mut uids = index.uids("Archive", 9);
    uids.sort();
    let mut expected = vec![1];
    expected.extend(31..=40);
    assert_eq!(uids, expected);
    assert_eq!(index.get("Archive", 9, 35, false).map(|e| e.size), Some(35));
    let status = index.status();
    assert_eq!(status.len(), 1);
    assert_eq!(status[0].mailbox.as_deref(), Some("Archive"));
    assert_eq!(status[0].records, 11);
    assert_eq!(status[0].dead_records, 0);
}

#[test]
fn checkpoints_persist_and_old_validities_are_removed() {
    let home = tempfile::tempdir().expect("tempdir");
    let index = Index::open_without_thread(home.path(), b"k").expect("index");
    index.insert("INBOX", 1, 5, entry(5));
    let mut c = Checkpoint::start("INBOX", 1);
    c.scanned_to = 77;
    c.uidnext = 80;
    index.set_checkpoint(c.clone());
    drop(index);
    let index = Index::open_without_thread(home.path(), b"k").expect("index");
    assert_eq!(index.checkpoint("INBOX", 1), Some(c));
    index.insert("INBOX", 2, 1, entry(1));
    assert_eq!(files(home.path()).len(), 2);
    index.forget_other_validities("INBOX", 2);
    assert_eq!(files(home.path()).len(), 1);
    assert_eq!(index.uids("INBOX", 2), vec![1]);
}

#[test]
fn queued_records_are_written_sealed_and_read_back_only_with_the_key() {
    let home = tempfile::tempdir().expect("tempdir");
    let index = Index::open(home.path(), b"account secret").expect("index");
    for uid in 1..=50 {
        index.insert_later("INBOX", 7, uid, 100, move || entry(uid as usize));
    }
    assert!(index.flush(Duration::from_secs(10)));
    assert_eq!(index.get("INBOX", 7, 42, false).map(|e| e.size), Some(42));
    assert!(
        index.get("INBOX", 8, 42, false).is_none(),
        "another UIDVALIDITY"
    );
    drop(index);

    let files = files(home.path());
    assert_eq!(files.len(), 1);
    let bytes = std::fs::read(&files[0]).expect("read");
    let mode = std::fs::metadata(&files[0])
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(
        !bytes.windows(6).any(|w| w == b"secret"),
        "plaintext at rest"
    );

    let again = Index::open(home.path(), b"account secret").expect("index");
    assert_eq!(again.uids("INBOX", 7).len(), 50);
    assert_eq!(again.get("INBOX", 7, 9, false).map(|e| e.size), Some(9));
    let other = Index::open(home.path(), b"another key").expect("index");
    assert!(
        other.get("INBOX", 7, 9, false).is_none(),
        "opened with the wrong key"
    );
}
