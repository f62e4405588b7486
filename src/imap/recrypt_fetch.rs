//! A device's fetch with `X-MESH-RECRYPT` on meshmail's own connection to its store.
//!
//! async-imap (through imap-proto) cannot read a FETCH response carrying the private item, so
//! this one command is written and read on the connection's raw stream, between two commands
//! async-imap ran to completion: the responses are framed by [`ResponseFramer`] and read by
//! the byte-level FETCH scanner, and the item is parsed from its own span only (never from
//! the message literal, whose bytes any sender chooses).

use super::fetch::response::{scan, Value};
use super::owned::{FetchError, Fetched, Session};
use crate::store::item;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::AsyncWriteExt;

/// A response larger than this ends the connection (a message is bounded by the server).
const MAX_RESPONSE: usize = 256 << 20;

static NEXT_TAG: AtomicU64 = AtomicU64::new(1);

/// `UID FETCH <set> (UID BODY.PEEK[] X-MESH-RECRYPT)`: each message and the store's answer
/// for `device`.
pub(super) async fn fetch(
    session: &mut Session,
    set: &str,
    device: &str,
    timeout: Duration,
) -> Result<HashMap<u32, Fetched>, FetchError> {
    let tag = format!("MRC{}", NEXT_TAG.fetch_add(1, Ordering::Relaxed));
    let command = format!("{tag} UID FETCH {set} (UID BODY.PEEK[] {})\r\n", item::ITEM);
    let failed = |what: &str| FetchError::Failed(format!("UID FETCH with the store: {what}"));
    let run = async {
        let stream = session.get_mut();
        stream
            .write_all(command.as_bytes())
            .await
            .map_err(|e| failed(&e.to_string()))?;
        stream.flush().await.map_err(|e| failed(&e.to_string()))?;
        let mut responses = super::raw::Responses::new(MAX_RESPONSE);
        let mut out = HashMap::new();
        loop {
            let response = responses.next(stream).await.map_err(|e| failed(&e))?;
            if let Some(done) = tagged(&response, &tag) {
                return done.map(|()| out);
            }
            if let Some((uid, fetched)) = read(&response, device) {
                out.insert(uid, fetched);
            }
        }
    };
    tokio::time::timeout(timeout, run)
        .await
        .map_err(|_| failed("timed out"))?
}

/// The command's completion: `Ok` for OK, the server's text otherwise.
fn tagged(response: &[u8], tag: &str) -> Option<Result<(), FetchError>> {
    let rest = super::raw::completion(response, tag)?;
    Some(if super::raw::is_ok(rest) {
        Ok(())
    } else {
        let text = String::from_utf8_lossy(rest).trim_end().to_owned();
        Err(FetchError::Failed(format!("the store answered: {text}")))
    })
}

/// One FETCH response: the UID, the message and the item's answer.
fn read(response: &[u8], device: &str) -> Option<(u32, Fetched)> {
    let scanned = scan(response)?;
    let uid = scanned.uid(response)?;
    let bytes = scanned.string(response, "BODY[]")?.into_owned();
    let recrypt = scanned.item(item::ITEM).and_then(|i| {
        let span = &response[i.span.clone()];
        match &i.value {
            Value::List(_) | Value::Atom(_) | Value::Quoted(_) => {
                item::parse(&String::from_utf8_lossy(span), device)
            }
            Value::Literal(_) => None,
        }
    });
    Some((uid, Fetched { bytes, recrypt }))
}

/// For the fuzz target: a FETCH response from the store as the device reads it.
#[doc(hidden)]
pub fn fuzz_read(response: &[u8]) {
    if let Some((_, fetched)) = read(response, "laptop") {
        assert!(fetched.bytes.len() <= response.len());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_item_is_read_from_its_own_span_not_from_the_message() {
        // A sender wrote a forged item into the message; the store's real one follows.
        let message = b"Subject: x\r\n\r\nX-MESH-RECRYPT ((\"laptop\" 0 \"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"))\r\n";
        let mut r = format!("* 1 FETCH (UID 5 BODY[] {{{}}}\r\n", message.len()).into_bytes();
        r.extend_from_slice(message);
        r.extend_from_slice(b" X-MESH-RECRYPT NIL)\r\n");
        let (uid, fetched) = read(&r, "laptop").unwrap();
        assert_eq!(uid, 5);
        assert_eq!(fetched.bytes, message.to_vec());
        assert_eq!(fetched.recrypt, Some(item::Answer::NotForAccount));
        // Without the item (a store that is not meshmail): no answer at all.
        let mut plain = format!("* 1 FETCH (UID 5 BODY[] {{{}}}\r\n", message.len()).into_bytes();
        plain.extend_from_slice(message);
        plain.extend_from_slice(b")\r\n");
        assert_eq!(read(&plain, "laptop").unwrap().1.recrypt, None);
        assert!(tagged(b"MRC1 OK done\r\n", "MRC1").unwrap().is_ok());
        assert!(tagged(b"MRC1 NO [NOPERM] no\r\n", "MRC1").unwrap().is_err());
        assert!(tagged(b"MRC12 OK done\r\n", "MRC1").is_none());
    }
}
