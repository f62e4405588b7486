//! Delivery status notifications (RFC 3464, RFC 3462 multipart/report) for recipients whose
//! copy failed after the client already heard `250`: the sender learns about them this way.
//! Sent with `MAIL FROM:<>`.
//!
//! A report never repeats what the message said: it names the original Message-ID and the
//! recipients, nothing of the header section or the content (a protected Subject must not
//! come back in the clear). When the sender is the session's mapped account and its keys are
//! unlocked, the report is signed and encrypted to the sender's own key, like any other copy.

use super::copy::Payload;
use super::plan::SenderKeys;
use crate::crypto::seal::{self, SealRequest};
use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;

/// A recipient that was not delivered, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// The address as the sender wrote it.
    pub recipient: String,
    /// The reply code the server gave (or meshmail's, when the server was gone).
    pub code: u16,
    /// The enhanced status (`5.1.1`).
    pub status: String,
    /// The reply text, one line.
    pub diagnostic: String,
}

/// A report, ready to relay to the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    bytes: Vec<u8>,
    /// Encrypted to the sender's own key.
    pub sealed: bool,
}

impl Report {
    pub fn payload(&self) -> Payload<'_> {
        Payload::of(&self.bytes)
    }

    /// The bytes, for the spool (which encrypts them at rest).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// A report read back from the spool.
    pub fn from_spool(bytes: Vec<u8>, sealed: bool) -> Report {
        Report { bytes, sealed }
    }
}

/// Builds the report to `sender` about `failed` recipients of the message `message_id`. With
/// `keys` of the sender's own account, it is signed and encrypted to that account's key; CPU
/// work then: call it on a blocking thread.
pub fn build(
    hostname: &str,
    sender: &str,
    failed: &[Failed],
    message_id: Option<&str>,
    keys: Option<&SenderKeys>,
) -> Report {
    let plain = compose(hostname, sender, failed, message_id);
    let Some(own) = keys.and_then(|k| k.self_openpgp.clone().map(|c| (c, k.signer.clone()))) else {
        return Report {
            bytes: plain,
            sealed: false,
        };
    };
    let request = SealRequest::PgpMime {
        recipients: vec![own.0],
        signer: own.1.map(Box::new),
    };
    match seal::seal(&plain, &request) {
        Ok(sealed) => Report {
            bytes: sealed.bytes().to_vec(),
            sealed: true,
        },
        Err(e) => {
            // The report carries no content of the message, so sending it plain leaks nothing
            // the envelope does not already show.
            tracing::warn!(error = %e, "cannot encrypt a delivery report to the sender; sent plain");
            Report {
                bytes: plain,
                sealed: false,
            }
        }
    }
}

/// Keeps a header value on one line and short.
fn one_line(text: &str) -> String {
    let t: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(400)
        .collect();
    t.trim().to_owned()
}

fn compose(hostname: &str, sender: &str, failed: &[Failed], message_id: Option<&str>) -> Vec<u8> {
    let now = OffsetDateTime::now_utc();
    let date = now.format(&Rfc2822).unwrap_or_default();
    let mut id_bytes = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut id_bytes);
    let id = data_encoding::HEXLOWER.encode(&id_bytes);
    let boundary = format!("meshmail-dsn-{id}");
    let about = message_id
        .map(|m| format!("your message {}", one_line(m)))
        .unwrap_or_else(|| "your message".to_owned());
    let mut human = String::new();
    for f in failed {
        human.push_str(&format!(
            "  {}: {} {}\r\n",
            one_line(&f.recipient),
            f.code,
            one_line(&f.diagnostic)
        ));
    }
    let mut machine = format!("Reporting-MTA: dns; {hostname}\r\nArrival-Date: {date}\r\n");
    for f in failed {
        machine.push_str(&format!(
            // `failed` even for a temporary reason: meshmail does not try that copy again.
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: failed\r\nStatus: {}\r\nDiagnostic-Code: smtp; {} {}\r\n",
            one_line(&f.recipient),
            one_line(&f.status),
            f.code,
            one_line(&f.diagnostic)
        ));
    }
    let headers_part = match message_id {
        Some(m) => format!("Message-ID: {}\r\n", one_line(m)),
        None => String::new(),
    };
    format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\nTo: {sender}\r\nSubject: Undelivered Mail Returned to Sender\r\nDate: {date}\r\nMessage-ID: <{id}.dsn@{hostname}>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         meshmail could not deliver {about} to these recipients,\r\nalthough other copies of it were sent:\r\n\r\n{human}\r\n\
         --{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n{machine}\r\n\
         --{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n{headers_part}\r\n\
         --{boundary}--\r\n"
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failed() -> Vec<Failed> {
        vec![Failed {
            recipient: "bob@example.test".into(),
            code: 550,
            status: "5.1.1".into(),
            diagnostic: "5.1.1 <bob@example.test>: Recipient address rejected".into(),
        }]
    }

    #[test]
    fn names_the_recipients_and_the_message_id_only() {
        let report = build(
            "localhost",
            "alice@example.test",
            &failed(),
            Some("<1@example.test>"),
            None,
        );
        assert!(!report.sealed);
        let dsn = String::from_utf8(report.bytes().to_vec()).unwrap();
        assert!(dsn.contains("Final-Recipient: rfc822; bob@example.test\r\n"));
        assert!(dsn.contains("Status: 5.1.1\r\n"));
        assert!(dsn.contains("Action: failed\r\n"));
        assert!(dsn.contains("report-type=delivery-status"));
        assert!(dsn.contains("Message-ID: <1@example.test>\r\n"));
        // Nothing else of the original message: it is not even passed in.
        assert_eq!(dsn.matches("Subject:").count(), 1);
    }

    #[test]
    fn a_report_to_the_mapped_account_is_sealed_to_its_own_key() {
        let (cert, _) =
            sequoia_openpgp::cert::CertBuilder::general_purpose(Some("alice@example.test"))
                .generate()
                .unwrap();
        let keys = SenderKeys {
            self_openpgp: Some(cert.clone().strip_secret_key_material()),
            self_smime: None,
            signer: Some(cert),
        };
        let report = build(
            "localhost",
            "alice@example.test",
            &failed(),
            Some("<1@example.test>"),
            Some(&keys),
        );
        assert!(report.sealed);
        let text = String::from_utf8(report.bytes().to_vec()).unwrap();
        assert!(text.contains("multipart/encrypted"));
        assert!(!text.contains("bob@example.test"), "{text}");
        assert!(!text.contains("Recipient address rejected"));
    }
}
