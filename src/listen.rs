//! The accept loop every listener (SMTP, IMAP, the filter) shares: a connection permit taken before
//! accept (a flood waits in the kernel's backlog), one task per client, and on shutdown: stop
//! accepting, let the sessions finish what they are doing (each sees the same shutdown signal
//! and says goodbye at its next quiet moment), and cut what is left after the grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream, UnixListener, UnixStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

/// Binds a TCP listener for the tokio runtime (std's bind sets SO_REUSEADDR, so a restart
/// finds its port free while old connections linger).
pub fn bind_tcp(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    TcpListener::from_std(listener)
}

/// A listening socket: TCP, or a Unix socket (the filter's, for Postfix).
pub trait Accept {
    type Stream: Send + 'static;
    type Peer: Send + 'static;
    fn accept(&self) -> impl Future<Output = std::io::Result<(Self::Stream, Self::Peer)>> + Send;
    /// Only local processes can connect.
    fn is_local(&self) -> bool;
}

impl Accept for TcpListener {
    type Stream = TcpStream;
    type Peer = SocketAddr;
    async fn accept(&self) -> std::io::Result<(TcpStream, SocketAddr)> {
        let (tcp, peer) = TcpListener::accept(self).await?;
        let _ = tcp.set_nodelay(true);
        Ok((tcp, peer))
    }
    fn is_local(&self) -> bool {
        self.local_addr()
            .map(|a| a.ip().is_loopback())
            .unwrap_or(false)
    }
}

impl Accept for UnixListener {
    type Stream = UnixStream;
    type Peer = ();
    async fn accept(&self) -> std::io::Result<(UnixStream, ())> {
        let (stream, _) = UnixListener::accept(self).await?;
        Ok((stream, ()))
    }
    fn is_local(&self) -> bool {
        true
    }
}

/// Accepts clients until `shutdown` turns true; `session(stream, peer, local, shutdown)` serves
/// one. Returns once every session has ended, or `grace` after shutdown.
pub async fn accept_loop<L, F, Fut>(
    listener: L,
    connections: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
    grace: Duration,
    session: F,
) where
    L: Accept,
    F: Fn(L::Stream, L::Peer, bool, watch::Receiver<bool>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let loopback = listener.is_local();
    let mut sessions = JoinSet::new();
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = shutdown.changed() => break,
            Some(_) = sessions.join_next(), if !sessions.is_empty() => continue,
        };
        let (tcp, peer) = loop {
            tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => break x,
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                },
                _ = shutdown.changed() => return drain(sessions, grace).await,
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
            }
        };
        let served = session(tcp, peer, loopback, shutdown.clone());
        sessions.spawn(async move {
            let _permit = permit;
            served.await;
        });
    }
    drain(sessions, grace).await
}

/// Waits up to `grace` for the sessions to end, then cuts the rest.
async fn drain(mut sessions: JoinSet<()>, grace: Duration) {
    if sessions.is_empty() {
        return;
    }
    tracing::info!(sessions = sessions.len(), "waiting for sessions to finish");
    let all = async { while sessions.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, all).await.is_err() {
        tracing::warn!(
            sessions = sessions.len(),
            "sessions still busy after the shutdown grace period; closed"
        );
        sessions.shutdown().await;
    }
}
