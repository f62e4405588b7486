//! One client session: the task around the sans-I/O [`core::Core`]. It reads both sides and
//! feeds the core, writes what the core queued for each side, and runs the core's jobs
//! (opening views, sealing an APPEND, meshmail's own SEARCH evaluation). It makes no protocol
//! decision of its own.
//!
//! Reading the core top to bottom: `core` (framing, queues), `command` (client commands),
//! `answer` (server responses), `state` (who the session is and what is selected), `tags`
//! (meshmail's own tags upstream), `known` / `open` / `search` / `seqmap` (views and SEARCH).

mod answer;
mod command;
mod core;
#[doc(hidden)]
pub mod fuzz;
mod known;
mod open;
mod search;
mod seqmap;
mod state;
mod tags;

#[cfg(test)]
mod store_tests;
#[cfg(test)]
mod tests;

use self::core::{Core, Job, Out};
use self::open::{Brought, OpenFailure};
use super::owned::{Credentials, OwnedConnection};
use super::ImapContext;
use crate::smtp::session::io::Stream;
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Items for the client waiting to be written at most (each may hold a decrypted message).
const MAX_OUT: usize = 32;
/// Bytes for the client waiting to be written before the server is no longer read (a view's
/// size is counted as its ciphertext's, or 1 MiB when meshmail fetches that itself).
const MAX_OUT_BYTES: usize = 16 * 1024 * 1024;
/// What an item whose size is not known yet counts for.
const UNKNOWN_SIZE: usize = 1024 * 1024;
/// Read buffer per direction.
const CHUNK: usize = 64 * 1024;
/// RFC 9051 §5.4: an authenticated client may stay idle for 30 minutes.
const AUTHENTICATED_IDLE: Duration = Duration::from_secs(31 * 60);

/// What is ready to be written to the client, in order.
enum Ready {
    Write(Vec<u8>),
    ViewFailed(String),
    /// A message of the running view FETCH was expunged meanwhile (left out of the answer);
    /// `uid`: the FETCH was a UID FETCH.
    Gone {
        uid: bool,
    },
    FetchDone(Vec<u8>),
    SearchDone(Vec<u8>),
    StartTls(String),
    Close(Vec<u8>),
}

type ReadyFuture = Pin<Box<dyn Future<Output = (usize, Ready)> + Send>>;

enum Exit {
    Close,
    StartTls,
}

/// The task's own state beside the core.
struct Task {
    core: Core,
    ready: FuturesOrdered<ReadyFuture>,
    /// meshmail's own connection for this session (started on first need).
    owned: Option<OwnedConnection>,
    /// The first reason a message of the running view FETCH could not be shown.
    fetch_failure: Option<String>,
    /// A message of the running (non-UID) view FETCH was expunged meanwhile.
    fetch_expunged: bool,
    search: Option<JoinHandle<Result<search::LocalSearch, String>>>,
    seal: Option<JoinHandle<Result<Vec<u8>, String>>>,
    /// Bytes were written upstream and not yet flushed.
    up_dirty: bool,
    /// What the items in `ready` count for (see [`MAX_OUT_BYTES`]).
    ready_bytes: usize,
    /// SIGTERM: the session says `* BYE` at its next quiet moment.
    shutdown: watch::Receiver<bool>,
    stopping: bool,
    /// The account's indexer was given this session's login.
    indexer_told: bool,
    /// The mailbox the indexer was last told this session selected.
    indexer_mailbox: Option<String>,
}

/// Runs a session to its end.
pub async fn run(
    ctx: Arc<ImapContext>,
    tcp: TcpStream,
    peer: SocketAddr,
    loopback: bool,
    implicit_tls: bool,
    shutdown: watch::Receiver<bool>,
) {
    let idle = Duration::from_secs(ctx.limits.idle_timeout_secs);
    let mut client_key = None;
    let mut client: Box<dyn Stream> = if implicit_tls {
        let Some(acceptor) = ctx.tls.clone() else {
            return;
        };
        match crate::tls::accept_within(&acceptor, tcp, idle).await {
            Some(tls) => {
                client_key = crate::tls::client_keys::peer_key(&tls);
                Box::new(tls)
            }
            None => return,
        }
    } else {
        Box::new(tcp)
    };
    let upstream = match super::upstream::connect(&ctx.upstream).await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(peer = %peer, error = %e, "IMAP upstream unavailable");
            let _ = client
                .write_all(
                    b"* BYE [UNAVAILABLE] The mail server is unavailable; try again later\r\n",
                )
                .await;
            return;
        }
    };
    let mut core = Core::new(
        ctx,
        peer.to_string(),
        upstream.capabilities,
        implicit_tls,
        loopback,
    );
    core.client_key = client_key;
    if client.write_all(&core.greeting()).await.is_err() {
        return;
    }
    let mut task = Task {
        core,
        ready: FuturesOrdered::new(),
        owned: None,
        fetch_failure: None,
        fetch_expunged: false,
        search: None,
        seal: None,
        up_dirty: false,
        ready_bytes: 0,
        shutdown,
        stopping: false,
        indexer_told: false,
        indexer_mailbox: None,
    };
    let (mut up_r, mut up_w) = tokio::io::split(upstream.stream);
    loop {
        let (mut cr, mut cw) = tokio::io::split(client);
        let exit = task.relay(&mut cr, &mut cw, &mut up_r, &mut up_w).await;
        client = cr.unsplit(cw);
        match exit {
            Exit::Close => break,
            Exit::StartTls => {
                let Some(acceptor) = task.core.ctx.tls.clone() else {
                    break;
                };
                match crate::tls::accept_within(&acceptor, client, idle).await {
                    Some(tls) => {
                        task.core.client_key = crate::tls::client_keys::peer_key(&tls);
                        client = Box::new(tls);
                    }
                    _ => return,
                }
                task.core.tls_started();
            }
        }
    }
    let _ = client.shutdown().await;
    let _ = up_w.shutdown().await;
}

impl Task {
    fn idle(&self) -> Duration {
        let configured = Duration::from_secs(self.core.ctx.limits.idle_timeout_secs);
        if self.core.state.is_authenticated() {
            AUTHENTICATED_IDLE.max(configured)
        } else {
            configured
        }
    }

    async fn relay(
        &mut self,
        cr: &mut ReadHalf<Box<dyn Stream>>,
        cw: &mut WriteHalf<Box<dyn Stream>>,
        up_r: &mut ReadHalf<Box<dyn Stream>>,
        up_w: &mut WriteHalf<Box<dyn Stream>>,
    ) -> Exit {
        let mut cbuf = vec![0u8; CHUNK];
        let mut ubuf = vec![0u8; CHUNK];
        loop {
            self.drain();
            if self.stopping && self.ready.is_empty() && self.seal.is_none() && self.core.is_quiet()
            {
                let _ = cw
                    .write_all(
                        b"* BYE [UNAVAILABLE] meshmail is shutting down; reconnect shortly\r\n",
                    )
                    .await;
                let _ = cw.flush().await;
                return Exit::Close;
            }
            let read_client = self.core.wants_client_bytes() && !self.stopping;
            let read_up = self.ready.len() < MAX_OUT && self.ready_bytes < MAX_OUT_BYTES;
            let front = self.core.upstream_front();
            let flush_up = self.up_dirty && front.is_none();
            // A server that stops in the middle of a response (a short literal, a line
            // without its end) will not go on: give up after the upstream timeout, not the
            // half-hour an idle client may wait.
            let stalled = read_up && self.core.upstream_mid_message();
            let idle = if stalled {
                self.idle().min(self.core.ctx.upstream.timeout)
            } else {
                self.idle()
            };
            tokio::select! {
                r = cr.read(&mut cbuf), if read_client => {
                    let n = match r { Ok(0) | Err(_) => return Exit::Close, Ok(n) => n };
                    self.core.on_client_bytes(&cbuf[..n]);
                }
                r = up_r.read(&mut ubuf), if read_up => {
                    match r {
                        Ok(0) | Err(_) => self.core.on_upstream_closed(),
                        Ok(n) => self.core.on_upstream_bytes(&ubuf[..n]),
                    }
                }
                r = write_upstream(up_w, front), if front.is_some() || flush_up => {
                    match r {
                        Err(_) => return Exit::Close,
                        Ok(UpWrite::Flushed) => self.up_dirty = false,
                        Ok(UpWrite::Wrote(n)) => {
                            self.core.upstream_wrote(n);
                            self.up_dirty = true;
                        }
                    }
                }
                Some((weight, ready)) = self.ready.next(), if !self.ready.is_empty() => {
                    self.ready_bytes = self.ready_bytes.saturating_sub(weight);
                    match self.deliver(ready, cw).await {
                        Ok(None) => {}
                        Ok(Some(exit)) => return exit,
                        Err(_) => return Exit::Close,
                    }
                }
                _ = self.shutdown.changed(), if !self.stopping => {
                    // A dropped sender also means the end.
                    self.stopping = true;
                }
                sealed = wait(&mut self.seal), if self.seal.is_some() => {
                    self.seal = None;
                    self.core.sealed(sealed);
                }
                _ = tokio::time::sleep(idle) => {
                    let bye: &[u8] = if stalled {
                        tracing::warn!(peer = %self.core.peer, "the server stopped in the middle of a response");
                        b"* BYE [UNAVAILABLE] The mail server stopped in the middle of a response\r\n"
                    } else {
                        b"* BYE Idle for too long\r\n"
                    };
                    let _ = cw.write_all(bye).await;
                    let _ = cw.flush().await;
                    return Exit::Close;
                }
            }
        }
    }

    /// Takes what the core queued: items for the client (views become futures, in order)
    /// and jobs.
    fn drain(&mut self) {
        self.tell_indexer();
        while let Some(job) = self.core.jobs.pop_front() {
            match job {
                Job::Seal(seal) => {
                    // Encrypting takes milliseconds of CPU: off the reactor.
                    self.seal = Some(tokio::task::spawn_blocking(move || {
                        // A split account's device signs with its own subkey of the account
                        // (when it was enrolled with one); a whole account with its own key.
                        let signer = match &seal.signer {
                            Some(device) => Some(device.as_ref()),
                            None => (!seal.keys.is_split()).then(|| seal.keys.secret_cert()),
                        };
                        crate::imap::append::seal_for_store(
                            &seal.message,
                            seal.keys.secret_cert(),
                            signer,
                        )
                        .map_err(|e| e.to_string())
                    }));
                }
                Job::Search(job) => {
                    let owned = self.owned(&job.source.credentials);
                    self.search = Some(tokio::spawn(search::search_local(*job, owned)));
                }
            }
        }
        while let Some(out) = self.core.out.pop_front() {
            let weight = match &out {
                Out::Bytes(b) | Out::FetchDone(b) | Out::Close(b) => b.len(),
                Out::View(job) => job.ciphertext.as_ref().map_or(UNKNOWN_SIZE, Vec::len),
                Out::SearchDone(_) => UNKNOWN_SIZE,
                Out::Recrypt(job) => job.response.len(),
                Out::RecryptTail(b, _) => b.len(),
                Out::ViewFailed(_) | Out::StartTls(_) => 0,
            };
            self.ready_bytes += weight;
            let ready = |r: Ready| -> ReadyFuture { Box::pin(std::future::ready((weight, r))) };
            let future: ReadyFuture = match out {
                Out::Bytes(b) => ready(Ready::Write(b)),
                Out::ViewFailed(r) => ready(Ready::ViewFailed(r)),
                Out::FetchDone(l) => ready(Ready::FetchDone(l)),
                Out::StartTls(t) => ready(Ready::StartTls(t)),
                Out::Close(b) => ready(Ready::Close(b)),
                Out::RecryptTail(bytes, item) => Box::pin(async move {
                    // The item the response's first part computed (none if that job failed:
                    // the device then asks on its own connection).
                    let item = item.await.unwrap_or_default();
                    (
                        weight,
                        Ready::Write(crate::store::role::insert_item(bytes, &item)),
                    )
                }),
                Out::Recrypt(job) => Box::pin(async move {
                    let response = tokio::task::spawn_blocking(move || {
                        let job = *job;
                        match job.streamed {
                            Some(start) => {
                                let item = job.role.item_for(
                                    &job.device,
                                    &job.mailbox,
                                    start.uid,
                                    &start.prefix,
                                );
                                let _ = start.item.send(item);
                                job.response
                            }
                            None => job.role.answer(&job.device, &job.mailbox, job.response),
                        }
                    })
                    .await;
                    match response {
                        Ok(r) => (weight, Ready::Write(r)),
                        Err(_) => (
                            weight,
                            Ready::Close(
                                b"* BYE [UNAVAILABLE] meshmail could not answer; reconnect\r\n"
                                    .to_vec(),
                            ),
                        ),
                    }
                }),
                Out::View(job) => {
                    let owned = self.owned(&job.source.credentials);
                    Box::pin(async move {
                        let complete = job.plan.needs_body();
                        let opened = job
                            .source
                            .open(
                                owned.as_ref(),
                                job.uid,
                                Brought {
                                    ciphertext: job.ciphertext,
                                    recrypt: job.recrypt,
                                },
                                complete,
                                job.forged,
                                job.plan.warm(),
                            )
                            .await;
                        let ready = match opened {
                            Ok(view) => Ready::Write(crate::imap::fetch::render_view(
                                job.seq,
                                job.passthrough,
                                &job.plan.requested,
                                &view,
                            )),
                            Err(OpenFailure::Gone) => Ready::Gone {
                                uid: job.plan.is_uid(),
                            },
                            Err(OpenFailure::Temporary(reason)) => Ready::ViewFailed(reason),
                        };
                        (weight, ready)
                    })
                }
                Out::SearchDone(done) => {
                    let handle = self.search.take();
                    Box::pin(async move {
                        let local = match handle {
                            Some(h) => h
                                .await
                                .unwrap_or_else(|_| Err("search stopped".to_string())),
                            None => Err("search stopped".to_string()),
                        };
                        (
                            weight,
                            Ready::SearchDone(search::merged_answer(&done, local)),
                        )
                    })
                }
            };
            self.ready.push_back(future);
        }
    }

    /// Starts the account's indexer with this session's login (or gives it the newer login),
    /// and tells it which mailbox the session selected.
    fn tell_indexer(&mut self) {
        let Some(mapped) = self.core.state.mapped() else {
            return;
        };
        let ctx = &self.core.ctx;
        if !self.indexer_told {
            self.indexer_told = true;
            let account = &mapped.account;
            if let (Some(credentials), Some(index), Some(keys)) = (
                mapped.credentials.clone(),
                account.index.clone(),
                account.keys.clone(),
            ) {
                let indexer = crate::imap::indexer::IndexerContext {
                    target: ctx.upstream.clone(),
                    views: ctx.views.clone(),
                    index,
                    keys,
                    user: mapped.user.clone(),
                    settings: ctx.indexer.clone(),
                    max_message: ctx.limits.max_message_size,
                    device: account.device.clone(),
                };
                account
                    .indexer
                    .start(indexer, credentials, self.shutdown.clone());
            }
        }
        if let Some((mapped, mailbox)) = self.core.state.mapped_selected() {
            if self.indexer_mailbox.as_deref() != Some(mailbox.name.as_str()) {
                self.indexer_mailbox = Some(mailbox.name.clone());
                mapped.account.indexer.selected(&mailbox.name);
            }
        }
    }

    /// meshmail's own connection for the session's account (shared by the account's sessions),
    /// taken once.
    fn owned(&mut self, credentials: &Option<Arc<Credentials>>) -> Option<OwnedConnection> {
        if self.owned.is_none() {
            let credentials = credentials.clone()?;
            let mapped = self.core.state.mapped()?;
            self.owned = Some(
                mapped
                    .account
                    .owned
                    .get(&self.core.ctx.upstream, credentials),
            );
        }
        self.owned.clone()
    }

    /// Writes one item for the client.
    async fn deliver(
        &mut self,
        ready: Ready,
        cw: &mut WriteHalf<Box<dyn Stream>>,
    ) -> std::io::Result<Option<Exit>> {
        match ready {
            Ready::Write(b) => cw.write_all(&b).await?,
            Ready::ViewFailed(reason) => {
                self.fetch_failure.get_or_insert(reason);
            }
            Ready::Gone { uid } => self.fetch_expunged |= !uid,
            Ready::FetchDone(line) => {
                let expunged = std::mem::take(&mut self.fetch_expunged);
                let ok = line
                    .split(|&b| b == b' ')
                    .nth(1)
                    .is_some_and(|w| w.eq_ignore_ascii_case(b"OK"));
                match self.fetch_failure.take() {
                    Some(reason) => {
                        // Never a partial view the client would cache: it asks again later.
                        let tag = String::from_utf8_lossy(
                            line.split(|&b| b == b' ').next().unwrap_or_default(),
                        )
                        .into_owned();
                        let no = format!("{tag} NO [UNAVAILABLE] {reason}; try again later\r\n");
                        cw.write_all(no.as_bytes()).await?;
                    }
                    // As Dovecot answers a FETCH by sequence number of a message another
                    // session expunged (the others were answered); a UID FETCH just leaves
                    // the message out.
                    None if expunged && ok => {
                        let tag = String::from_utf8_lossy(
                            line.split(|&b| b == b' ').next().unwrap_or_default(),
                        )
                        .into_owned();
                        let no = format!("{tag} NO [EXPUNGEISSUED] Some of the requested messages no longer exist\r\n");
                        cw.write_all(no.as_bytes()).await?;
                    }
                    None => cw.write_all(&line).await?,
                }
                // Commands the client pipelined behind the FETCH are handled now.
                self.core.fetch_delivered();
            }
            Ready::SearchDone(bytes) => {
                cw.write_all(&bytes).await?;
                self.core.search_delivered();
            }
            Ready::StartTls(tag) => {
                cw.write_all(format!("{tag} OK Begin TLS negotiation now\r\n").as_bytes())
                    .await?;
                cw.flush().await?;
                if self.core.client_pending > 0 {
                    // Plaintext pipelined after STARTTLS would be read as if it came over
                    // TLS (command injection): close instead.
                    tracing::warn!(peer = %self.core.peer, "plaintext after STARTTLS: closing");
                    return Ok(Some(Exit::Close));
                }
                return Ok(Some(Exit::StartTls));
            }
            Ready::Close(b) => {
                cw.write_all(&b).await?;
                cw.flush().await?;
                return Ok(Some(Exit::Close));
            }
        }
        if self.ready.is_empty() {
            cw.flush().await?;
        }
        Ok(None)
    }
}

enum UpWrite {
    Wrote(usize),
    Flushed,
}

/// Writes the next upstream bytes, or flushes when there are none. Cancel-safe: `write`
/// either took bytes (and the queue advances by exactly that many) or took none, and a
/// flush can always be started again.
async fn write_upstream(
    w: &mut WriteHalf<Box<dyn Stream>>,
    front: Option<&[u8]>,
) -> std::io::Result<UpWrite> {
    match front {
        Some(data) => match w.write(data).await? {
            0 => Err(std::io::ErrorKind::WriteZero.into()),
            n => Ok(UpWrite::Wrote(n)),
        },
        None => {
            w.flush().await?;
            Ok(UpWrite::Flushed)
        }
    }
}

/// The result of a sealing job (a job that stopped is an error).
async fn wait(handle: &mut Option<JoinHandle<Result<Vec<u8>, String>>>) -> Result<Vec<u8>, String> {
    match handle {
        Some(h) => h.await.unwrap_or_else(|_| Err("encryption stopped".into())),
        None => std::future::pending().await,
    }
}
