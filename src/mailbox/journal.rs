//! The journal of `mailbox encrypt`: one JSON line per step, written and synced before the
//! step's effect on the server, so a run killed at any moment resumes without losing or
//! doubling a message.
//!
//! For each message: `start` (its UID, the SHA-256 of its bytes, the random value its
//! encrypted copy carries in `Meshmail-Reencrypt`), then `appended` (the copy's UID from
//! APPENDUID), then `done` (the original expunged by its UID alone). A torn last line is
//! ignored: the step it described is found again on the server.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", rename_all = "lowercase")]
pub enum Entry {
    Start {
        uidvalidity: u32,
        uid: u32,
        sha256: String,
        nonce: String,
    },
    Appended {
        uidvalidity: u32,
        uid: u32,
        appenduid: u32,
    },
    Done {
        uidvalidity: u32,
        uid: u32,
    },
}

/// Where one message stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Progress {
    pub sha256: String,
    pub nonce: String,
    pub appenduid: Option<u32>,
    pub done: bool,
}

pub struct Journal {
    path: PathBuf,
    file: std::fs::File,
}

impl Journal {
    /// Opens (or starts) the journal of `mailbox` of `user` under `home`, and what it says of
    /// the mailbox at `uidvalidity` (entries of another UIDVALIDITY name other messages).
    pub fn open(
        home: &Path,
        user: &str,
        mailbox: &str,
        uidvalidity: u32,
    ) -> std::io::Result<(Journal, BTreeMap<u32, Progress>)> {
        let dir = home.join("mailbox-encrypt");
        crate::keys::account::make_private_dir(&dir)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        let name = data_encoding::HEXLOWER.encode(
            &aws_lc_rs::digest::digest(
                &aws_lc_rs::digest::SHA256,
                format!("{user}\0{mailbox}").as_bytes(),
            )
            .as_ref()[..12],
        );
        let path = dir.join(format!("{name}.journal"));
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut state: BTreeMap<u32, Progress> = BTreeMap::new();
        for line in text.lines() {
            let Ok(entry) = serde_json::from_str::<Entry>(line) else {
                continue;
            };
            match entry {
                Entry::Start {
                    uidvalidity: v,
                    uid,
                    sha256,
                    nonce,
                } if v == uidvalidity => {
                    state.insert(
                        uid,
                        Progress {
                            sha256,
                            nonce,
                            appenduid: None,
                            done: false,
                        },
                    );
                }
                Entry::Appended {
                    uidvalidity: v,
                    uid,
                    appenduid,
                } if v == uidvalidity => {
                    if let Some(p) = state.get_mut(&uid) {
                        p.appenduid = Some(appenduid);
                    }
                }
                Entry::Done {
                    uidvalidity: v,
                    uid,
                } if v == uidvalidity => {
                    if let Some(p) = state.get_mut(&uid) {
                        p.done = true;
                    }
                }
                _ => {}
            }
        }
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&path)?;
        if !text.is_empty() && !text.ends_with('\n') {
            // A torn line: end it, so the next entry starts on a line of its own.
            file.write_all(b"\n")?;
        }
        Ok((Journal { path, file }, state))
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `entry` and syncs it before the caller acts on the server.
    pub fn write(&mut self, entry: &Entry) -> std::io::Result<()> {
        let mut line = serde_json::to_vec(entry).map_err(std::io::Error::other)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reopened_journal_knows_each_step_and_ignores_a_torn_line_and_other_validities() {
        let dir = tempfile::tempdir().unwrap();
        let (mut j, state) = Journal::open(dir.path(), "alice", "INBOX", 7).unwrap();
        assert!(state.is_empty());
        for e in [
            Entry::Start {
                uidvalidity: 7,
                uid: 1,
                sha256: "AA".into(),
                nonce: "n1".into(),
            },
            Entry::Appended {
                uidvalidity: 7,
                uid: 1,
                appenduid: 11,
            },
            Entry::Done {
                uidvalidity: 7,
                uid: 1,
            },
            Entry::Start {
                uidvalidity: 7,
                uid: 2,
                sha256: "BB".into(),
                nonce: "n2".into(),
            },
            Entry::Start {
                uidvalidity: 6,
                uid: 3,
                sha256: "CC".into(),
                nonce: "n3".into(),
            },
        ] {
            j.write(&e).unwrap();
        }
        let path = j.path().to_owned();
        drop(j);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"step\":\"appended\",\"uidval").unwrap();
        drop(f);
        let (mut j, state) = Journal::open(dir.path(), "alice", "INBOX", 7).unwrap();
        assert_eq!(state.len(), 2);
        assert!(state[&1].done && state[&1].appenduid == Some(11));
        assert_eq!(
            state[&2],
            Progress {
                sha256: "BB".into(),
                nonce: "n2".into(),
                appenduid: None,
                done: false
            }
        );
        j.write(&Entry::Done {
            uidvalidity: 7,
            uid: 2,
        })
        .unwrap();
        drop(j);
        let (_, state) = Journal::open(dir.path(), "alice", "INBOX", 7).unwrap();
        assert!(state[&2].done, "the entry after a torn line is read");
    }
}
