//! What `meshmail index status` shows of one mailbox's index file.

use super::Checkpoint;

/// One mailbox file of an account's index.
pub struct MailboxStatus {
    /// The mailbox's name, from the file's checkpoint (`None`: the file has none yet).
    pub mailbox: Option<String>,
    pub uidvalidity: u32,
    /// Messages with a live record.
    pub records: usize,
    /// Records replaced or expunged, still in the file until it is compacted.
    pub dead_records: usize,
    pub bytes: u64,
    pub dead_bytes: u64,
    pub checkpoint: Option<Checkpoint>,
}

impl MailboxStatus {
    /// One line for a person.
    pub fn line(&self) -> String {
        let name = self.mailbox.as_deref().unwrap_or("(unnamed)");
        let progress = match &self.checkpoint {
            Some(c) if c.uidnext > 0 => {
                let behind = c.uidnext.saturating_sub(c.scanned_to.saturating_add(1));
                let when = time::OffsetDateTime::from_unix_timestamp(c.at as i64)
                    .ok()
                    .and_then(|t| {
                        t.format(&time::format_description::well_known::Rfc3339)
                            .ok()
                    })
                    .unwrap_or_default();
                format!(
                    "scanned to UID {} (server UIDNEXT {}, {} messages; {}) at {when}",
                    c.scanned_to,
                    c.uidnext,
                    c.messages,
                    if behind == 0 {
                        "caught up".to_string()
                    } else {
                        format!("up to {behind} UIDs to go")
                    },
                )
            }
            _ => "not scanned by the indexer yet".to_string(),
        };
        format!(
            "{name} (UIDVALIDITY {}): {} indexed, {progress}; file {} KiB, {} dead records ({} KiB)",
            self.uidvalidity,
            self.records,
            self.bytes / 1024,
            self.dead_records,
            self.dead_bytes / 1024,
        )
    }

    /// The same for scripts.
    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "mailbox": self.mailbox,
            "uidvalidity": self.uidvalidity,
            "records": self.records,
            "dead_records": self.dead_records,
            "bytes": self.bytes,
            "dead_bytes": self.dead_bytes,
            "scanned_to": self.checkpoint.as_ref().map(|c| c.scanned_to),
            "uidnext": self.checkpoint.as_ref().map(|c| c.uidnext),
            "messages": self.checkpoint.as_ref().map(|c| c.messages),
            "checked_at": self.checkpoint.as_ref().map(|c| c.at),
        })
    }
}

/// What `meshmail index status` prints for one account: a line per mailbox, or one JSON
/// object (`--json`).
pub fn report(user: &str, mailboxes: &[MailboxStatus], json: bool) -> String {
    if json {
        let list: Vec<_> = mailboxes.iter().map(|m| m.json()).collect();
        return format!(
            "{}\n",
            serde_json::json!({ "user": user, "mailboxes": list })
        );
    }
    let mut out = format!("{user}:\n");
    if mailboxes.is_empty() {
        out.push_str("  nothing indexed yet\n");
    }
    for m in mailboxes {
        out.push_str(&format!("  {}\n", m.line()));
    }
    out
}
