//! A device's own commands to its store (`X-MESH-REVOKE`, `X-MESH-DEVICES`), for
//! `meshmail device revoke` and `meshmail device list`: logged in as the account, over TLS
//! with the device's key, one raw command whose untagged answers are returned.

use super::owned::{Credentials, FetchError};
use crate::upstream::UpstreamTarget;
use tokio::io::AsyncWriteExt;

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
        let mut responses = super::raw::Responses::new(1 << 20);
        let mut lines = Vec::new();
        loop {
            let r = responses.next(stream).await?;
            if let Some(rest) = super::raw::completion(&r, "S1") {
                let text = String::from_utf8_lossy(rest).trim_end().to_owned();
                return if super::raw::is_ok(rest) {
                    Ok(lines)
                } else {
                    Err(format!("the store answered: {text}"))
                };
            }
            let text = String::from_utf8_lossy(&r).trim_end().to_owned();
            if text.starts_with("* X-MESH-") {
                lines.push(text);
            }
        }
    };
    let result = tokio::time::timeout(target.timeout, run)
        .await
        .map_err(|_| "the store did not answer in time".to_string())?;
    let _ = session.logout().await;
    result
}
