//! A device's own commands to its store (`X-MESH-REVOKE`, `X-MESH-DEVICES`), for
//! `meshmail device revoke` and `meshmail device list`: logged in as the account, over TLS
//! with the device's key, one raw command whose untagged answers are returned.

use super::frame::ResponseFramer;
use super::owned::{Credentials, FetchError};
use crate::upstream::UpstreamTarget;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Runs `command` (without a tag) at the store: the untagged lines, or the store's refusal.
pub async fn command(
    target: &UpstreamTarget,
    credentials: &Credentials,
    command: &str,
) -> Result<Vec<String>, String> {
    let mut session = super::owned::login(target, credentials)
        .await
        .map_err(|e| match e {
            FetchError::Refused(t) => format!("the store refused the login: {t}"),
            e => e.to_string(),
        })?;
    let run = async {
        let stream = session.get_mut();
        stream
            .write_all(format!("S1 {command}\r\n").as_bytes())
            .await
            .map_err(|e| e.to_string())?;
        stream.flush().await.map_err(|e| e.to_string())?;
        let mut framer = ResponseFramer::new(1 << 20);
        let mut lines = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = stream.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                return Err("the store closed the connection".to_string());
            }
            framer.push(&buf[..n]);
            while let Some(r) = framer.next_response() {
                let r = r.map_err(|_| "a response too large".to_string())?;
                let text = String::from_utf8_lossy(&r).trim_end().to_owned();
                if let Some(rest) = text.strip_prefix("S1 ") {
                    return if rest.get(..2).is_some_and(|s| s.eq_ignore_ascii_case("OK")) {
                        Ok(lines)
                    } else {
                        Err(format!("the store answered: {rest}"))
                    };
                }
                if text.starts_with("* X-MESH-") {
                    lines.push(text);
                }
            }
        }
    };
    let result = tokio::time::timeout(target.timeout, run)
        .await
        .map_err(|_| "the store did not answer in time".to_string())?;
    let _ = session.logout().await;
    result
}
