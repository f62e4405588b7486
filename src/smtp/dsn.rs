//! Delivery status notifications (RFC 3464, RFC 3462 multipart/report) for recipients whose
//! copy failed after another copy of the same message was accepted: the client already heard
//! `250`, so the sender learns about those recipients this way. Sent with `MAIL FROM:<>`.

use super::reply::Reply;
use time::format_description::well_known::Rfc2822;
use time::OffsetDateTime;

/// A recipient that was not delivered, and the upstream's reply.
#[derive(Debug, Clone)]
pub struct Failed {
    pub recipient: String,
    pub reply: Reply,
}

/// Builds the DSN message to `sender` about `failed` recipients of the message whose header
/// section is `original_headers`.
pub fn build(hostname: &str, sender: &str, failed: &[Failed], original_headers: &[u8]) -> Vec<u8> {
    let now = OffsetDateTime::now_utc();
    let date = now.format(&Rfc2822).unwrap_or_default();
    let mut id_bytes = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut id_bytes);
    let id = data_encoding::HEXLOWER.encode(&id_bytes);
    let boundary = format!("meshmail-dsn-{id}");
    let mut human = String::new();
    for f in failed {
        human.push_str(&format!(
            "  {}: {}\r\n",
            f.recipient,
            f.reply.to_string().trim_end().replace("\r\n", " ")
        ));
    }
    let mut machine = format!("Reporting-MTA: dns; {hostname}\r\nArrival-Date: {date}\r\n");
    for f in failed {
        let status = enhanced_status(&f.reply);
        let action = "failed";
        machine.push_str(&format!(
            "\r\nFinal-Recipient: rfc822; {}\r\nAction: {action}\r\nStatus: {status}\r\nDiagnostic-Code: smtp; {}\r\n",
            f.recipient,
            f.reply.to_string().trim_end().replace("\r\n", " ")
        ));
    }
    let mut out = format!(
        "From: Mail Delivery System <MAILER-DAEMON@{hostname}>\r\nTo: {sender}\r\nSubject: Undelivered Mail Returned to Sender\r\nDate: {date}\r\nMessage-ID: <{id}.dsn@{hostname}>\r\nAuto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=delivery-status;\r\n boundary=\"{boundary}\"\r\n\r\n\
         --{boundary}\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n\
         meshmail could not deliver your message to these recipients, although\r\nother copies of it were sent:\r\n\r\n{human}\r\n\
         --{boundary}\r\nContent-Type: message/delivery-status\r\n\r\n{machine}\r\n\
         --{boundary}\r\nContent-Type: text/rfc822-headers\r\n\r\n"
    )
    .into_bytes();
    out.extend_from_slice(original_headers);
    if !original_headers.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    out
}

/// The enhanced status of a reply (from its text, else from its code).
fn enhanced_status(reply: &Reply) -> String {
    if let Some(e) = &reply.enhanced {
        return e.clone();
    }
    let first = reply.lines.first().map(String::as_str).unwrap_or("");
    let word = first.split_whitespace().next().unwrap_or("");
    let looks_enhanced = word.split('.').count() == 3
        && word
            .split('.')
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()));
    if looks_enhanced {
        word.to_owned()
    } else if reply.code >= 500 {
        "5.0.0".into()
    } else {
        "4.0.0".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_every_failed_recipient() {
        let failed = vec![Failed {
            recipient: "bob@example.test".into(),
            reply: Reply::relayed(550, "5.1.1 <bob@example.test>: Recipient address rejected"),
        }];
        let dsn = String::from_utf8(build(
            "localhost",
            "alice@example.test",
            &failed,
            b"Subject: x\r\n",
        ))
        .unwrap();
        assert!(dsn.contains("Final-Recipient: rfc822; bob@example.test\r\n"));
        assert!(dsn.contains("Status: 5.1.1\r\n"));
        assert!(dsn.contains("Action: failed\r\n"));
        assert!(dsn.contains("report-type=delivery-status"));
        assert!(dsn.contains("Subject: x\r\n"));
    }
}
