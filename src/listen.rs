//! The accept loop every listener (SMTP, IMAP, the filter) shares: a connection permit for each
//! client accepted (at the limit, one accepted client waits for a permit and a flood waits in the
//! kernel's backlog), one task per client, and on shutdown: stop
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
        // The permit is taken once a client is there, not while waiting for one: listeners
        // that share a limit (STARTTLS and implicit TLS) would otherwise each hold a permit
        // idle, and the busy one serve fewer clients than the limit.
        let permit = loop {
            tokio::select! {
                p = connections.clone().acquire_owned() => match p {
                    Ok(p) => break p,
                    Err(_) => return drain(sessions, grace).await,
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves a listener: each client is greeted, then held until it closes.
    fn serve(
        listener: TcpListener,
        connections: Arc<Semaphore>,
        shutdown: watch::Receiver<bool>,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(accept_loop(
            listener,
            connections,
            shutdown,
            Duration::from_secs(1),
            |mut tcp: TcpStream, _, _, _| async move {
                let _ = tcp.write_all(b"hello\n").await;
                let mut rest = Vec::new();
                let _ = tcp.read_to_end(&mut rest).await;
            },
        ))
    }

    async fn greeted(addr: SocketAddr) -> Option<TcpStream> {
        let mut tcp = TcpStream::connect(addr).await.ok()?;
        let mut greeting = [0u8; 6];
        tokio::time::timeout(Duration::from_secs(2), tcp.read_exact(&mut greeting))
            .await
            .ok()?
            .ok()?;
        Some(tcp)
    }

    #[tokio::test]
    async fn two_listeners_sharing_a_limit_serve_that_many_clients_on_either() {
        let connections = Arc::new(Semaphore::new(3));
        let (_tx, rx) = watch::channel(false);
        let busy = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let idle = bind_tcp("127.0.0.1:0".parse().unwrap()).unwrap();
        let busy_addr = busy.local_addr().unwrap();
        let idle_addr = idle.local_addr().unwrap();
        serve(busy, connections.clone(), rx.clone());
        serve(idle, connections.clone(), rx);
        // The idle listener holds no permit: all three are served on the busy one.
        let mut clients = Vec::new();
        for _ in 0..3 {
            clients.push(greeted(busy_addr).await.expect("served"));
        }
        // A fourth waits, on either listener, until one of them leaves.
        assert!(greeted(idle_addr).await.is_none());
        let waiting = tokio::spawn(greeted(busy_addr));
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(clients.pop());
        let late = tokio::time::timeout(Duration::from_secs(3), waiting)
            .await
            .expect("served once a permit is free")
            .unwrap();
        assert!(late.is_some());
    }
}
