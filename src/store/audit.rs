//! The store's per-device audit log: one line per message a device asked partials for
//! (time, mailbox, UID, answer), in `audit_dir/<account>/<device>.log`, and an ALARM in the
//! service log when one device asks for more than its hourly allowance: a stolen device
//! bulk-fetching the mailbox is the main threat to a split account, and this is where it shows.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(3600);

/// Per-device counting for the alarm.
struct Window {
    started: Instant,
    count: u64,
    alarmed: bool,
}

pub struct Audit {
    dir: PathBuf,
    per_hour: u64,
    windows: Mutex<HashMap<(String, String), Window>>,
}

impl Audit {
    pub fn new(dir: PathBuf, per_hour: u32) -> Audit {
        Audit {
            dir,
            per_hour: u64::from(per_hour.max(1)),
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Records one answer; true when this device is over its allowance (the ALARM was logged).
    pub fn record(
        &self,
        account: &str,
        device: &str,
        mailbox: &str,
        uid: Option<u32>,
        answer: &str,
    ) -> bool {
        let line = format!(
            "{} mailbox={:?} uid={} answer={answer}\n",
            time::OffsetDateTime::now_utc()
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            mailbox,
            uid.map_or_else(|| "-".to_owned(), |u| u.to_string()),
        );
        if let Err(e) = self.append(account, device, &line) {
            // The answer is still given: the log is evidence, not a gate; but say so loudly.
            tracing::error!(account, device, error = %e, "the audit log cannot be written");
        }
        let Ok(mut windows) = self.windows.lock() else {
            return false;
        };
        let now = Instant::now();
        let w = windows
            .entry((account.to_owned(), device.to_owned()))
            .or_insert(Window {
                started: now,
                count: 0,
                alarmed: false,
            });
        if now.duration_since(w.started) > WINDOW {
            *w = Window {
                started: now,
                count: 0,
                alarmed: false,
            };
        }
        w.count += 1;
        let over = w.count > self.per_hour;
        if over && !w.alarmed {
            w.alarmed = true;
            tracing::error!(
                account,
                device,
                count = w.count,
                per_hour = self.per_hour,
                "ALARM: a device is asking for more messages than its hourly allowance (a \
                 stolen device bulk-fetching?); revoke it with `meshmail store revoke` if it \
                 is not its owner"
            );
        }
        over
    }

    fn append(&self, account: &str, device: &str, line: &str) -> std::io::Result<()> {
        let dir = self.dir.join(safe_name(account));
        crate::keys::account::make_private_dir(&dir)
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.join(format!("{}.log", safe_name(device))))?;
        file.write_all(line.as_bytes())
    }
}

/// A name usable as a file name (device names are restricted at enrolment; this is a guard).
fn safe_name(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@') {
                c
            } else {
                '_'
            }
        })
        .collect::<String>()
        .trim_start_matches('.')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_answer_is_logged_and_the_alarm_rings_once_past_the_allowance() {
        let dir = tempfile::tempdir().unwrap();
        let audit = Audit::new(dir.path().to_owned(), 3);
        for uid in 1..=3 {
            assert!(!audit.record("a@x.test", "laptop", "INBOX", Some(uid), "partials"));
        }
        assert!(audit.record("a@x.test", "laptop", "INBOX\r\nforged", Some(4), "partials"));
        assert!(!audit.record("a@x.test", "phone", "INBOX", Some(1), "partials"));
        let log = std::fs::read_to_string(dir.path().join("a@x.test/laptop.log")).unwrap();
        assert_eq!(log.lines().count(), 4);
        assert!(log.contains("uid=4"));
        // A mailbox name cannot forge a line.
        assert!(log.contains("\"INBOX\\r\\nforged\""));
        assert_eq!(safe_name("../../etc"), "_.._etc");
    }
}
