//! The accept loop both listeners (SMTP, IMAP) share: a connection permit taken before
//! accept (a flood waits in the kernel's backlog), one task per client, stop on shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

/// Accepts clients until `shutdown` turns true; `session(tcp, peer, loopback)` serves one.
pub async fn accept_loop<F, Fut>(
    listener: TcpListener,
    connections: Arc<Semaphore>,
    mut shutdown: watch::Receiver<bool>,
    session: F,
) where
    F: Fn(TcpStream, SocketAddr, bool) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let loopback = listener
        .local_addr()
        .map(|a| a.ip().is_loopback())
        .unwrap_or(false);
    loop {
        let permit = tokio::select! {
            p = connections.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = shutdown.changed() => return,
        };
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = tcp.set_nodelay(true);
        let served = session(tcp, peer, loopback);
        tokio::spawn(async move {
            let _permit = permit;
            served.await;
        });
    }
}
