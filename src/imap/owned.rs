//! meshmail's own upstream connection for a mapped session: it fetches ciphertext by UID in
//! EXAMINE mode, so it never collides with the client's IDLE, never causes EXPUNGE responses
//! in the client's session and never sets a flag. It logs in by replaying the client's own
//! login (LOGIN, or a one-shot SASL exchange such as PLAIN, XOAUTH2 or OAUTHBEARER), held in
//! memory only and zeroized on drop.
//!
//! Requests are batched: every UID asked for while a fetch runs goes into the next
//! `UID FETCH` of the same mailbox.

use crate::secret::{SecretBytes, SecretString};
use crate::smtp::upstream::UpstreamTarget;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot};

/// How the client logged in, replayed for meshmail's connection.
pub enum Credentials {
    Login {
        user: String,
        password: SecretString,
    },
    /// A SASL exchange: the mechanism and each client response (decoded), in order.
    Sasl {
        mechanism: String,
        responses: Vec<SecretBytes>,
    },
}

/// Why ciphertext could not be fetched: always temporary for the client.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct FetchError(pub String);

struct Request {
    mailbox: String,
    uidvalidity: Option<u32>,
    uid: u32,
    reply: oneshot::Sender<Result<Vec<u8>, FetchError>>,
}

/// A handle on the session's own connection; the connection closes when the handle drops.
#[derive(Clone)]
pub struct OwnedConnection {
    tx: mpsc::Sender<Request>,
}

/// UIDs fetched in one command at most.
const BATCH: usize = 64;

impl OwnedConnection {
    pub fn start(target: UpstreamTarget, credentials: Arc<Credentials>) -> OwnedConnection {
        let (tx, rx) = mpsc::channel(BATCH * 4);
        tokio::spawn(actor(target, credentials, rx));
        OwnedConnection { tx }
    }

    /// The message `uid` of `mailbox` as the server holds it.
    pub async fn fetch(
        &self,
        mailbox: &str,
        uidvalidity: Option<u32>,
        uid: u32,
    ) -> Result<Vec<u8>, FetchError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Request {
                mailbox: mailbox.to_owned(),
                uidvalidity,
                uid,
                reply,
            })
            .await
            .map_err(|_| FetchError("meshmail's upstream connection stopped".into()))?;
        answer
            .await
            .map_err(|_| FetchError("meshmail's upstream connection stopped".into()))?
    }
}

/// async-imap wants a Debug stream.
struct Link(Box<dyn crate::smtp::session::io::Stream>);

impl std::fmt::Debug for Link {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("upstream")
    }
}

impl tokio::io::AsyncRead for Link {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Link {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        std::pin::Pin::new(&mut self.0).poll_write(cx, buf)
    }
    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_flush(cx)
    }
    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

type Session = async_imap::Session<Link>;

struct Replay {
    responses: Vec<Vec<u8>>,
    next: usize,
}

impl async_imap::Authenticator for &mut Replay {
    type Response = Vec<u8>;
    fn process(&mut self, _challenge: &[u8]) -> Vec<u8> {
        let r = self.responses.get(self.next).cloned().unwrap_or_default();
        self.next += 1;
        r
    }
}

async fn login(target: &UpstreamTarget, credentials: &Credentials) -> Result<Session, FetchError> {
    let up = super::upstream::connect(target)
        .await
        .map_err(|e| FetchError(e.to_string()))?;
    let client = async_imap::Client::new(Link(up.stream));
    let t = target.timeout;
    let result = match credentials {
        Credentials::Login { user, password } => {
            tokio::time::timeout(t, client.login(user, password.expose())).await
        }
        Credentials::Sasl {
            mechanism,
            responses,
        } => {
            let mut replay = Replay {
                responses: responses.iter().map(|r| r.expose().clone()).collect(),
                next: 0,
            };
            let r = tokio::time::timeout(t, client.authenticate(mechanism, &mut replay)).await;
            for r in &mut replay.responses {
                zeroize::Zeroize::zeroize(r);
            }
            r
        }
    };
    match result {
        Ok(Ok(session)) => Ok(session),
        Ok(Err((e, _))) => Err(FetchError(format!("login for meshmail's connection: {e}"))),
        Err(_) => Err(FetchError("login timed out".into())),
    }
}

async fn actor(
    target: UpstreamTarget,
    credentials: Arc<Credentials>,
    mut rx: mpsc::Receiver<Request>,
) {
    let mut session: Option<Session> = None;
    let mut examined: Option<(String, Option<u32>)> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        // One mailbox per command; others wait for the next round.
        let mailbox = batch[0].mailbox.clone();
        let (now, later): (Vec<_>, Vec<_>) = batch.into_iter().partition(|r| r.mailbox == mailbox);
        let result = serve_batch(&target, &credentials, &mut session, &mut examined, &now).await;
        match result {
            Ok(mut bodies) => {
                for r in now {
                    let answer = bodies.remove(&r.uid).ok_or_else(|| {
                        FetchError(format!("message UID {} is gone from the server", r.uid))
                    });
                    let _ = r.reply.send(answer);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "meshmail's upstream connection failed");
                session = None;
                examined = None;
                for r in now {
                    let _ = r.reply.send(Err(e.clone()));
                }
            }
        }
        for r in later {
            // Rare (two mailboxes at once): served one by one.
            let result =
                serve_batch(&target, &credentials, &mut session, &mut examined, &[&r]).await;
            let answer = result.and_then(|mut b| {
                b.remove(&r.uid)
                    .ok_or_else(|| FetchError(format!("message UID {} is gone", r.uid)))
            });
            let _ = r.reply.send(answer);
        }
    }
    if let Some(mut s) = session {
        let _ = tokio::time::timeout(target.timeout, s.logout()).await;
    }
}

async fn serve_batch<R: std::borrow::Borrow<Request>>(
    target: &UpstreamTarget,
    credentials: &Credentials,
    session: &mut Option<Session>,
    examined: &mut Option<(String, Option<u32>)>,
    batch: &[R],
) -> Result<HashMap<u32, Vec<u8>>, FetchError> {
    let Some(first) = batch.first() else {
        return Ok(HashMap::new());
    };
    let first = first.borrow();
    let t = target.timeout;
    if session.is_none() {
        *session = Some(login(target, credentials).await?);
        *examined = None;
    }
    let Some(s) = session.as_mut() else {
        return Err(FetchError("no connection".into()));
    };
    if examined.as_ref().map(|(m, _)| m) != Some(&first.mailbox) {
        let mailbox = tokio::time::timeout(t, s.examine(&first.mailbox))
            .await
            .map_err(|_| FetchError("EXAMINE timed out".into()))?
            .map_err(|e| FetchError(format!("EXAMINE: {e}")))?;
        *examined = Some((first.mailbox.clone(), mailbox.uid_validity));
    }
    let validity = examined.as_ref().and_then(|(_, v)| *v);
    if first.uidvalidity.is_some() && validity != first.uidvalidity {
        return Err(FetchError("the mailbox changed (UIDVALIDITY)".into()));
    }
    let set: Vec<String> = batch.iter().map(|r| r.borrow().uid.to_string()).collect();
    let mut out = HashMap::new();
    let fetch = async {
        let mut stream = s
            .uid_fetch(set.join(","), "(UID BODY.PEEK[])")
            .await
            .map_err(|e| FetchError(format!("UID FETCH: {e}")))?;
        while let Some(item) = stream.next().await {
            let item = item.map_err(|e| FetchError(format!("UID FETCH: {e}")))?;
            if let (Some(uid), Some(body)) = (item.uid, item.body()) {
                out.insert(uid, body.to_vec());
            }
        }
        Ok::<_, FetchError>(())
    };
    tokio::time::timeout(t, fetch)
        .await
        .map_err(|_| FetchError("UID FETCH timed out".into()))??;
    Ok(out)
}
