//! meshmail's own upstream connection for a mapped session: it fetches ciphertext by UID in
//! EXAMINE mode, so it never collides with the client's IDLE, never causes EXPUNGE responses
//! in the client's session and never sets a flag. It logs in by replaying the client's own
//! login (LOGIN, or a one-shot SASL exchange such as PLAIN, XOAUTH2 or OAUTHBEARER), held in
//! memory only and zeroized on drop.
//!
//! Requests are batched: every UID asked for while a fetch runs goes into the next
//! `UID FETCH` of the same mailbox.
//!
//! One connection serves every session of a mapped account ([`SharedConnection`]): it logs in
//! with the newest session's login, sends NOOP when idle so the server keeps it, and logs out
//! when the account's last session ends.

use crate::secret::{SecretBytes, SecretString};
use crate::upstream::UpstreamTarget;
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

/// Why ciphertext could not be fetched.
#[derive(Debug, Clone, thiserror::Error)]
pub enum FetchError {
    /// The message was expunged meanwhile: that message alone is left out.
    #[error("message UID {0} is gone from the server")]
    Gone(u32),
    /// Temporary for the client: it asks again later.
    #[error("{0}")]
    Failed(String),
    /// The server refused the login meshmail replayed (a changed password): not tried again
    /// with the same login.
    #[error("the server refused meshmail's login: {0}")]
    Refused(String),
}

struct Request {
    mailbox: String,
    uidvalidity: Option<u32>,
    uid: u32,
    /// A device of a split account asks its store for the partials too (its name).
    recrypt: Option<String>,
    reply: oneshot::Sender<Result<Fetched, FetchError>>,
}

/// A message as the server holds it, and the store's answer when one was asked for.
pub struct Fetched {
    pub bytes: Vec<u8>,
    pub recrypt: Option<crate::store::item::Answer>,
}

/// One message of a mailbox listing: what SEARCH needs besides the content.
#[derive(Debug, Clone)]
pub struct Listed {
    pub seq: u32,
    pub uid: u32,
    pub flags: Vec<String>,
    /// INTERNALDATE's calendar date (year, month, day) as the server gives it.
    pub internal_date: Option<(i32, u32, u32)>,
    pub encrypted: bool,
}

enum Job {
    Fetch(Request),
    List {
        mailbox: String,
        uidvalidity: Option<u32>,
        reply: oneshot::Sender<Result<Vec<Listed>, FetchError>>,
    },
}

/// A handle on meshmail's own connection; the connection closes when the last handle drops.
#[derive(Clone)]
pub struct OwnedConnection {
    tx: mpsc::Sender<Job>,
}

/// UIDs fetched in one command at most.
const BATCH: usize = 64;
/// An idle connection sends NOOP this often (servers log out after 30 minutes, RFC 9051 §5.4).
const KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(10 * 60);

/// The login the connection uses, replaced by each newer session's.
type SharedCredentials = Arc<std::sync::Mutex<Arc<Credentials>>>;

/// The account's one connection, while any of its sessions holds a handle.
#[derive(Default)]
pub struct SharedConnection {
    running: std::sync::Mutex<Option<(mpsc::WeakSender<Job>, SharedCredentials)>>,
}

impl SharedConnection {
    /// A handle on the account's connection, started when there is none.
    pub fn get(&self, target: &UpstreamTarget, credentials: Arc<Credentials>) -> OwnedConnection {
        let Ok(mut running) = self.running.lock() else {
            return OwnedConnection::start(
                target.clone(),
                Arc::new(std::sync::Mutex::new(credentials)),
            );
        };
        if let Some((weak, shared)) = running.as_ref() {
            if let Some(tx) = weak.upgrade() {
                if let Ok(mut c) = shared.lock() {
                    *c = credentials;
                }
                return OwnedConnection { tx };
            }
        }
        let shared = Arc::new(std::sync::Mutex::new(credentials));
        let connection = OwnedConnection::start(target.clone(), shared.clone());
        *running = Some((connection.tx.downgrade(), shared));
        connection
    }
}

impl OwnedConnection {
    fn start(target: UpstreamTarget, credentials: SharedCredentials) -> OwnedConnection {
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
        Ok(self
            .fetch_with(mailbox, uidvalidity, uid, None)
            .await?
            .bytes)
    }

    /// The message `uid` and the store's partials for `device` (a split account's device,
    /// whose upstream is its store).
    pub async fn fetch_recrypt(
        &self,
        mailbox: &str,
        uidvalidity: Option<u32>,
        uid: u32,
        device: &str,
    ) -> Result<(Vec<u8>, crate::store::item::Answer), FetchError> {
        let fetched = self
            .fetch_with(mailbox, uidvalidity, uid, Some(device.to_owned()))
            .await?;
        let answer = fetched.recrypt.ok_or_else(|| {
            FetchError::Failed(
                "the store did not answer X-MESH-RECRYPT (not a meshmail store?)".into(),
            )
        })?;
        Ok((fetched.bytes, answer))
    }

    async fn fetch_with(
        &self,
        mailbox: &str,
        uidvalidity: Option<u32>,
        uid: u32,
        recrypt: Option<String>,
    ) -> Result<Fetched, FetchError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Job::Fetch(Request {
                mailbox: mailbox.to_owned(),
                uidvalidity,
                uid,
                recrypt,
                reply,
            }))
            .await
            .map_err(|_| FetchError::Failed("meshmail's upstream connection stopped".into()))?;
        answer
            .await
            .map_err(|_| FetchError::Failed("meshmail's upstream connection stopped".into()))?
    }
}

impl OwnedConnection {
    /// Every message of `mailbox`: sequence number, UID, flags, date, and whether it is
    /// encrypted (from its top-level Content-Type).
    pub async fn list(
        &self,
        mailbox: &str,
        uidvalidity: Option<u32>,
    ) -> Result<Vec<Listed>, FetchError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || FetchError::Failed("meshmail's upstream connection stopped".into());
        self.tx
            .send(Job::List {
                mailbox: mailbox.to_owned(),
                uidvalidity,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

/// async-imap wants a Debug stream.
pub struct Link(Box<dyn crate::smtp::session::io::Stream>);

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

pub(crate) type Session = async_imap::Session<Link>;

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

pub(crate) async fn login(
    target: &UpstreamTarget,
    credentials: &Credentials,
) -> Result<Session, FetchError> {
    let up = super::upstream::connect(target)
        .await
        .map_err(|e| FetchError::Failed(e.to_string()))?;
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
        Ok(Err((async_imap::error::Error::No(text), _))) => Err(FetchError::Refused(text)),
        Ok(Err((e, _))) => Err(FetchError::Failed(format!(
            "login for meshmail's connection: {e}"
        ))),
        Err(_) => Err(FetchError::Failed("login timed out".into())),
    }
}

async fn actor(target: UpstreamTarget, shared: SharedCredentials, mut rx: mpsc::Receiver<Job>) {
    let mut session: Option<Session> = None;
    let mut examined: Option<(String, Option<u32>)> = None;
    let mut waiting: Option<Job> = None;
    loop {
        let job = match waiting.take() {
            Some(j) => j,
            None => match tokio::time::timeout(KEEPALIVE, rx.recv()).await {
                Ok(Some(j)) => j,
                Ok(None) => break,
                Err(_) => {
                    // Idle: keep the connection, or drop it if the server let it go.
                    if let Some(s) = session.as_mut() {
                        let alive = tokio::time::timeout(target.timeout, s.noop()).await;
                        if !matches!(alive, Ok(Ok(_))) {
                            session = None;
                            examined = None;
                        }
                    }
                    continue;
                }
            },
        };
        let credentials = match shared.lock() {
            Ok(c) => c.clone(),
            Err(_) => break,
        };
        let first = match job {
            Job::List {
                mailbox,
                uidvalidity,
                reply,
            } => {
                let r = list(
                    &target,
                    &credentials,
                    &mut session,
                    &mut examined,
                    &mailbox,
                    uidvalidity,
                )
                .await;
                if r.is_err() {
                    session = None;
                    examined = None;
                }
                let _ = reply.send(r);
                continue;
            }
            Job::Fetch(r) => r,
        };
        // Fetches asked for meanwhile, of the same mailbox, go into the same command.
        let mut batch = vec![first];
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(Job::Fetch(r))
                    if r.mailbox == batch[0].mailbox && r.recrypt == batch[0].recrypt =>
                {
                    batch.push(r)
                }
                Ok(other) => {
                    waiting = Some(other);
                    break;
                }
                Err(_) => break,
            }
        }
        match serve_batch(&target, &credentials, &mut session, &mut examined, &batch).await {
            Ok(mut bodies) => {
                for r in batch {
                    let answer = bodies.remove(&r.uid).ok_or(FetchError::Gone(r.uid));
                    let _ = r.reply.send(answer);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "meshmail's upstream connection failed");
                session = None;
                examined = None;
                for r in batch {
                    let _ = r.reply.send(Err(e.clone()));
                }
            }
        }
    }
    if let Some(mut s) = session {
        let _ = tokio::time::timeout(target.timeout, s.logout()).await;
    }
}

/// Logs in (once) and EXAMINEs `mailbox` unless it is the one examined already; checks that
/// the mailbox is still the one the client's UIDs refer to.
async fn ready<'a>(
    target: &UpstreamTarget,
    credentials: &Credentials,
    session: &'a mut Option<Session>,
    examined: &mut Option<(String, Option<u32>)>,
    mailbox: &str,
    uidvalidity: Option<u32>,
) -> Result<&'a mut Session, FetchError> {
    let t = target.timeout;
    if session.is_none() {
        *session = Some(login(target, credentials).await?);
        *examined = None;
    }
    let Some(s) = session.as_mut() else {
        return Err(FetchError::Failed("no connection".into()));
    };
    if examined.as_ref().map(|(m, _)| m.as_str()) != Some(mailbox) {
        let mbox = tokio::time::timeout(t, s.examine(mailbox))
            .await
            .map_err(|_| FetchError::Failed("EXAMINE timed out".into()))?
            .map_err(|e| FetchError::Failed(format!("EXAMINE: {e}")))?;
        *examined = Some((mailbox.to_owned(), mbox.uid_validity));
    }
    let validity = examined.as_ref().and_then(|(_, v)| *v);
    if uidvalidity.is_some() && validity != uidvalidity {
        return Err(FetchError::Failed(
            "the mailbox changed (UIDVALIDITY)".into(),
        ));
    }
    Ok(s)
}

async fn list(
    target: &UpstreamTarget,
    credentials: &Credentials,
    session: &mut Option<Session>,
    examined: &mut Option<(String, Option<u32>)>,
    mailbox: &str,
    uidvalidity: Option<u32>,
) -> Result<Vec<Listed>, FetchError> {
    let s = ready(target, credentials, session, examined, mailbox, uidvalidity).await?;
    let mut out = Vec::new();
    let fetch = async {
        // NOOP first: the EXAMINEd view catches up with messages that arrived since.
        s.noop()
            .await
            .map_err(|e| FetchError::Failed(format!("NOOP: {e}")))?;
        let mut stream = s
            // The top-level Content-Type tells encrypted messages apart; a BODYSTRUCTURE could
            // be nested deeper than any parser accepts (the sender chooses it).
            .uid_fetch(
                "1:*",
                "(UID FLAGS INTERNALDATE BODY.PEEK[HEADER.FIELDS (CONTENT-TYPE)])",
            )
            .await
            .map_err(|e| FetchError::Failed(format!("UID FETCH: {e}")))?;
        while let Some(item) = stream.next().await {
            let item = item.map_err(|e| FetchError::Failed(format!("UID FETCH: {e}")))?;
            let Some(uid) = item.uid else { continue };
            use chrono::Datelike;
            out.push(Listed {
                seq: item.message,
                uid,
                flags: item.flags().map(|f| flag_text(&f)).collect(),
                internal_date: item.internal_date().map(|d| (d.year(), d.month(), d.day())),
                encrypted: item
                    .header()
                    .is_some_and(|h| crate::imap::view::mime::parse(h).is_encrypted()),
            });
        }
        Ok::<_, FetchError>(())
    };
    tokio::time::timeout(target.timeout, fetch)
        .await
        .map_err(|_| FetchError::Failed("UID FETCH timed out".into()))??;
    Ok(out)
}

pub(crate) fn flag_text(f: &async_imap::types::Flag<'_>) -> String {
    use async_imap::types::Flag;
    match f {
        Flag::Seen => "\\Seen".into(),
        Flag::Answered => "\\Answered".into(),
        Flag::Flagged => "\\Flagged".into(),
        Flag::Deleted => "\\Deleted".into(),
        Flag::Draft => "\\Draft".into(),
        Flag::Recent => "\\Recent".into(),
        Flag::MayCreate => "\\*".into(),
        Flag::Custom(c) => c.to_string(),
    }
}

async fn serve_batch(
    target: &UpstreamTarget,
    credentials: &Credentials,
    session: &mut Option<Session>,
    examined: &mut Option<(String, Option<u32>)>,
    batch: &[Request],
) -> Result<HashMap<u32, Fetched>, FetchError> {
    let Some(first) = batch.first() else {
        return Ok(HashMap::new());
    };
    let t = target.timeout;
    let s = ready(
        target,
        credentials,
        session,
        examined,
        &first.mailbox,
        first.uidvalidity,
    )
    .await?;
    let set: Vec<String> = batch.iter().map(|r| r.uid.to_string()).collect();
    if let Some(device) = &first.recrypt {
        return super::recrypt_fetch::fetch(s, &set.join(","), device, t).await;
    }
    let mut out = HashMap::new();
    let fetch = async {
        // NOOP first: a message that arrived after the EXAMINE is not in this session's view
        // until the server has told it (new mail is shown decrypted on its first FETCH).
        s.noop()
            .await
            .map_err(|e| FetchError::Failed(format!("NOOP: {e}")))?;
        let mut stream = s
            .uid_fetch(set.join(","), "(UID BODY.PEEK[])")
            .await
            .map_err(|e| FetchError::Failed(format!("UID FETCH: {e}")))?;
        while let Some(item) = stream.next().await {
            let item = item.map_err(|e| FetchError::Failed(format!("UID FETCH: {e}")))?;
            if let (Some(uid), Some(body)) = (item.uid, item.body()) {
                out.insert(
                    uid,
                    Fetched {
                        bytes: body.to_vec(),
                        recrypt: None,
                    },
                );
            }
        }
        Ok::<_, FetchError>(())
    };
    tokio::time::timeout(t, fetch)
        .await
        .map_err(|_| FetchError::Failed("UID FETCH timed out".into()))??;
    Ok(out)
}
