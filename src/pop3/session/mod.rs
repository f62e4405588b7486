//! One POP3 client session: the task around the sans-I/O [`core::Core`]. It reads both sides
//! and feeds the core, writes what the core left for each side, builds the views the core asks
//! for (on a blocking thread, in a decryption slot), and switches the client link to TLS or to
//! a plain byte relay when the core says so. It makes no protocol decision of its own.
//!
//! Reading order: `core` (commands and replies), `state` (who the session is), `maildrop`
//! (the scan listing, sizes, TOP, CAPA).

mod core;
#[doc(hidden)]
pub mod fuzz;
mod maildrop;
mod state;

#[cfg(test)]
mod tests;

use self::core::{Answer, Control, Core, Job, JobResult};
use super::Pop3Context;
use crate::imap::view::{Claim, View, ViewKey};
use crate::smtp::session::io::Stream;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Read buffer per direction.
const CHUNK: usize = 64 * 1024;
/// Messages up to this size are hashed (for the view cache) on the reactor: about 0.2 ms.
const INLINE_HASH: usize = 256 * 1024;
/// RFC 1939 §3: a server's inactivity autologout timer is at least 10 minutes once logged in.
const TRANSACTION_IDLE: Duration = Duration::from_secs(10 * 60);

enum Exit {
    Close,
    StartTls,
    Relay,
}

/// Runs a session to its end.
pub async fn run(
    ctx: Arc<Pop3Context>,
    tcp: TcpStream,
    peer: SocketAddr,
    loopback: bool,
    implicit_tls: bool,
    shutdown: watch::Receiver<bool>,
) {
    let idle = Duration::from_secs(ctx.limits.idle_timeout_secs);
    let mut client: Box<dyn Stream> = match (implicit_tls, &ctx.tls) {
        (false, _) => Box::new(tcp),
        (true, Some(acceptor)) => match crate::tls::accept_within(acceptor, tcp, idle).await {
            Some(tls) => Box::new(tls),
            None => return,
        },
        (true, None) => return,
    };
    let upstream = match super::upstream::connect(&ctx.upstream).await {
        Ok(u) => u,
        Err(e) => {
            tracing::warn!(peer = %peer, error = %e, "POP3 upstream unavailable");
            let _ = client
                .write_all(b"-ERR [SYS/TEMP] The mail server is unavailable; try again later\r\n")
                .await;
            return;
        }
    };
    if client.write_all(&upstream.greeting).await.is_err() {
        return;
    }
    let mut task = Task {
        core: Core::new(ctx, peer.to_string(), implicit_tls, loopback),
        job: None,
        shutdown,
    };
    let (mut up_r, mut up_w) = tokio::io::split(upstream.stream);
    loop {
        let (mut cr, mut cw) = tokio::io::split(client);
        let exit = task.relay(&mut cr, &mut cw, &mut up_r, &mut up_w).await;
        client = cr.unsplit(cw);
        match exit {
            Exit::Close => break,
            Exit::Relay => {
                let upstream = up_r.unsplit(up_w);
                bytes_both_ways(client, upstream, idle).await;
                return;
            }
            Exit::StartTls => {
                let Some(acceptor) = task.core.ctx.tls.clone() else {
                    break;
                };
                match crate::tls::accept_within(&acceptor, client, idle).await {
                    Some(tls) => client = Box::new(tls),
                    None => return,
                }
                task.core.tls_started();
            }
        }
    }
    task.save_sizes().await;
    let _ = client.shutdown().await;
    let _ = up_w.shutdown().await;
}

/// A relayed (unmapped) session after its login: bytes copied as they come, until either
/// side closes or both are silent for the idle time.
async fn bytes_both_ways(
    mut client: Box<dyn Stream>,
    mut upstream: Box<dyn Stream>,
    idle: Duration,
) {
    let idle = idle.max(TRANSACTION_IDLE);
    let mut cbuf = vec![0u8; CHUNK];
    let mut ubuf = vec![0u8; CHUNK];
    loop {
        tokio::select! {
            r = client.read(&mut cbuf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => if upstream.write_all(&cbuf[..n]).await.is_err() { break },
            },
            r = upstream.read(&mut ubuf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => if client.write_all(&ubuf[..n]).await.is_err() { break },
            },
            _ = tokio::time::sleep(idle) => break,
        }
    }
    let _ = client.shutdown().await;
    let _ = upstream.shutdown().await;
}

struct Task {
    core: Core,
    /// The view being built, with the message number and what it answers.
    job: Option<(u32, Answer, JoinHandle<JobResult>)>,
    shutdown: watch::Receiver<bool>,
}

impl Task {
    async fn relay(
        &mut self,
        cr: &mut ReadHalf<Box<dyn Stream>>,
        cw: &mut WriteHalf<Box<dyn Stream>>,
        up_r: &mut ReadHalf<Box<dyn Stream>>,
        up_w: &mut WriteHalf<Box<dyn Stream>>,
    ) -> Exit {
        let mut cbuf = vec![0u8; CHUNK];
        let mut ubuf = vec![0u8; CHUNK];
        let upstream_timeout = self.core.ctx.upstream.timeout;
        loop {
            if !self.core.to_upstream.is_empty() {
                let bytes = std::mem::take(&mut self.core.to_upstream);
                let written = tokio::time::timeout(upstream_timeout, async {
                    up_w.write_all(&bytes).await?;
                    up_w.flush().await
                })
                .await;
                if !matches!(written, Ok(Ok(()))) {
                    self.core.on_upstream_closed();
                }
            }
            if !self.core.to_client.is_empty() {
                let bytes = std::mem::take(&mut self.core.to_client);
                let written = tokio::time::timeout(self.idle(), async {
                    cw.write_all(&bytes).await?;
                    cw.flush().await
                })
                .await;
                if !matches!(written, Ok(Ok(()))) {
                    return Exit::Close;
                }
                continue;
            }
            if let Some(job) = self.core.job.take() {
                let (n, answer) = (job.n, job.answer);
                // A small message's view in the cache is answered at once: no task, no
                // thread. A large one is hashed off the reactor, in `build_view`.
                let key = (job.raw.len() <= INLINE_HASH).then(|| view_key(&job));
                if let Some(view) = key.as_ref().and_then(|k| self.core.ctx.views.get(k)) {
                    self.core.job_done(n, answer, Ok(view));
                    continue;
                }
                let ctx = self.core.ctx.clone();
                self.job = Some((n, answer, tokio::spawn(build_view(ctx, job, key))));
            }
            match self.core.control {
                Control::Run => {}
                Control::Close => return Exit::Close,
                Control::StartTls => return Exit::StartTls,
                Control::Relay => {
                    // What either side sent beyond the login goes on first.
                    let (from_client, from_server) = self.core.take_unread();
                    if up_w.write_all(&from_client).await.is_err()
                        || cw.write_all(&from_server).await.is_err()
                        || up_w.flush().await.is_err()
                        || cw.flush().await.is_err()
                    {
                        return Exit::Close;
                    }
                    return Exit::Relay;
                }
            }
            let waiting = self.core.awaits_upstream();
            let timeout = if waiting {
                upstream_timeout
            } else {
                self.idle()
            };
            tokio::select! {
                r = cr.read(&mut cbuf), if self.core.wants_client_bytes() => {
                    match r {
                        Ok(0) | Err(_) => return Exit::Close,
                        Ok(n) => self.core.on_client_bytes(&cbuf[..n]),
                    }
                }
                r = up_r.read(&mut ubuf) => {
                    match r {
                        Ok(0) | Err(_) => self.core.on_upstream_closed(),
                        Ok(n) => self.core.on_upstream_bytes(&ubuf[..n]),
                    }
                }
                done = wait_job(&mut self.job), if self.job.is_some() => {
                    let (n, answer, result) = done;
                    self.job = None;
                    self.core.job_done(n, answer, result);
                }
                _ = self.shutdown.changed() => {
                    // Without QUIT the server deletes nothing: leaving now loses nothing.
                    let _ = cw.write_all(b"-ERR [SYS/TEMP] meshmail is shutting down; reconnect shortly\r\n").await;
                    let _ = cw.flush().await;
                    return Exit::Close;
                }
                _ = tokio::time::sleep(timeout), if self.job.is_none() => {
                    if waiting {
                        tracing::warn!(peer = %self.core.peer, "POP3: the server stopped answering");
                        self.core.on_upstream_closed();
                    } else {
                        let _ = cw.write_all(b"-ERR Idle for too long\r\n").await;
                        let _ = cw.flush().await;
                        return Exit::Close;
                    }
                }
            }
        }
    }

    fn idle(&self) -> Duration {
        let configured = Duration::from_secs(self.core.ctx.limits.idle_timeout_secs);
        if self.core.mapped().is_some() {
            configured.max(TRANSACTION_IDLE)
        } else {
            configured
        }
    }

    /// Writes what the session learned of sizes (file I/O, off the reactor).
    async fn save_sizes(&self) {
        if let Some(book) = self.core.size_book().cloned() {
            let _ = tokio::task::spawn_blocking(move || book.save()).await;
        }
    }
}

async fn wait_job(
    job: &mut Option<(u32, Answer, JoinHandle<JobResult>)>,
) -> (u32, Answer, JobResult) {
    match job.as_mut() {
        Some((n, answer, handle)) => {
            let result = handle
                .await
                .unwrap_or_else(|_| Err("decryption stopped".into()));
            (*n, *answer, result)
        }
        None => std::future::pending().await,
    }
}

/// Where the view of a job's message is cached. Keyed by the ciphertext itself: whatever the
/// server numbers or names it, the same bytes give the same view, and other bytes never get
/// this one.
fn view_key(job: &Job) -> ViewKey {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &job.raw);
    ViewKey {
        user: job.mapped.user.clone(),
        mailbox: format!("\0pop3 {}", data_encoding::HEXLOWER.encode(digest.as_ref())),
        uidvalidity: 0,
        uid: 0,
    }
}

/// The view of a message: the one another task is building for the same ciphertext (any
/// session of the account), else decrypted in a decryption slot on a blocking thread.
async fn build_view(ctx: Arc<Pop3Context>, job: Job, key: Option<ViewKey>) -> JobResult {
    if job.mapped.account.imap.device.is_some() {
        // A split account's device opens a message only with its store's partials, which
        // come over IMAP (the configuration refuses this pairing; never a failure view).
        return Err("a split account's device reads encrypted mail over IMAP".into());
    }
    let keys = job
        .mapped
        .account
        .imap
        .keys
        .clone()
        .ok_or_else(|| "the key store is locked".to_owned())?;
    let (key, job) = match key {
        Some(key) => (key, job),
        None => tokio::task::spawn_blocking(move || (view_key(&job), job))
            .await
            .map_err(|_| "decryption stopped".to_owned())?,
    };
    let building = match ctx.views.claim(&key) {
        Claim::Ready(view) => return Ok(view),
        Claim::Wait(rx) => match crate::imap::view::wait_for(rx).await {
            Some(view) => return Ok(view),
            None => None,
        },
        Claim::Build(b) => Some(b),
    };
    let max = ctx.limits.max_message_size;
    let slot = crate::imap::slots::decryption_slot().await;
    let raw = job.raw;
    let n = job.n;
    let view = tokio::task::spawn_blocking(move || {
        let view = Arc::new(View::build(&raw, &keys, max));
        drop(slot);
        // Tests count decryptions by these lines.
        tracing::debug!(n, by = "pop3", "decrypted");
        view
    })
    .await
    .map_err(|_| "decryption stopped".to_owned())?;
    ctx.views.insert(key, view.clone());
    if let Some(b) = building {
        b.finish(view.clone());
    }
    Ok(view)
}
