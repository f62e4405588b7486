//! One client session: the relay loop between the client and its upstream connection.
//!
//! Both directions are framed by imap-codec's fragmentizer (lines and literals). Bytes to the
//! upstream go through a queue that can wait for the upstream's continuation (`+`) before a
//! synchronizing literal; bytes to the client go through an ordered queue of futures, so
//! decrypted views are computed concurrently yet answered in order.
//!
//! Client messages are handled in `client`, upstream messages in `server`.

mod client;
mod known;
mod open;
mod search;
mod seqmap;
mod server;

use super::caps::ClientLink;
use super::owned::{Credentials, OwnedConnection};
use super::{ImapAccount, ImapContext};
use crate::imap::fetch::FetchPlan;
use futures_util::stream::FuturesOrdered;
use futures_util::StreamExt;
use imap_codec::fragmentizer::{FragmentInfo, Fragmentizer};
use search::search_local;
use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;

use crate::smtp::session::io::Stream;

/// Untagged responses waiting for the client at most (each may hold a decrypted message).
const MAX_OUT: usize = 32;
/// Bytes queued for the upstream before the client is no longer read.
const MAX_UP_QUEUE: usize = 4 * 1024 * 1024;
/// Read buffer per direction.
const CHUNK: usize = 64 * 1024;
/// RFC 3501 §5.4: an authenticated client may stay idle for 30 minutes.
const AUTHENTICATED_IDLE: Duration = Duration::from_secs(31 * 60);

/// An item for the upstream: bytes, or a wait for the upstream's continuation request.
enum UpItem {
    Bytes { tag: Option<String>, data: Vec<u8> },
    Gate { tag: String },
}

/// An item for the client, produced in order.
enum Out {
    Bytes(Vec<u8>),
    /// A message of the running view FETCH could not be shown now (temporary).
    ViewFailed(String),
    /// The tagged completion of the running view FETCH.
    FetchDone(Vec<u8>),
    /// Answer STARTTLS and switch the client link to TLS.
    StartTls(String),
    /// Write and close.
    Close(Vec<u8>),
}

type OutFuture = Pin<Box<dyn Future<Output = Out> + Send>>;

/// What a pending tagged command was.
enum Pending {
    Login {
        user: String,
        credentials: Option<Arc<Credentials>>,
    },
    Select(Selected),
    Deselect,
    Fetch,
    Search,
    /// meshmail's own UID FETCH of messages it knows are encrypted.
    KnownFetch,
    /// meshmail's own command whose answer the client does not see.
    Internal,
}

#[derive(Clone, Debug)]
struct Selected {
    mailbox: String,
    uidvalidity: Option<u32>,
    /// EXAMINE (or a READ-ONLY SELECT): meshmail sets no flag.
    read_only: bool,
}

/// How the bytes of the client message being read are handled.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    /// Relayed fragment by fragment (the upstream answers continuation requests).
    Forward,
    /// Read whole (meshmail answers continuation requests), then handled.
    Collect,
    /// A SASL response line during AUTHENTICATE.
    Sasl,
}

/// The running SEARCH of a mapped session: the upstream's numbers, and meshmail's own
/// evaluation of the encrypted messages (numbers that are encrypted, numbers that match).
struct ActiveSearch {
    /// UID SEARCH (else numbers are sequence numbers).
    uid: bool,
    upstream: Vec<u32>,
    local: tokio::task::JoinHandle<Result<LocalSearch, String>>,
    /// For a query with a sequence-set criterion: the client's numbering, sent to the local
    /// evaluation once the session's map is complete.
    numbering: Option<tokio::sync::oneshot::Sender<ClientNumbering>>,
}

type LocalSearch = (std::collections::HashSet<u32>, Vec<u32>);

/// The client session's numbering: UID → sequence number, and the number of messages.
type ClientNumbering = (HashMap<u32, u32>, u32);

/// The running view FETCH (one at a time: the client is not read meanwhile).
struct ActiveFetch {
    tag: String,
    plan: Arc<FetchPlan>,
    failure: Option<String>,
    /// UIDs answered from views without asking the server for content.
    known: std::collections::BTreeSet<u32>,
    /// The client's FETCH went upstream for the other UIDs.
    rest_sent: bool,
    /// Known UIDs answered so far (each is answered once).
    answered: std::collections::BTreeSet<u32>,
}

struct Session {
    ctx: Arc<ImapContext>,
    peer: SocketAddr,
    link: ClientLink,
    upstream_caps: Vec<String>,
    // Client side.
    cfrag: Fragmentizer,
    mode: Mode,
    collected: Vec<FragmentInfo>,
    client_pending: usize,
    /// Client bytes not yet returned as a fragment, and whether a literal is being read.
    client_unframed: usize,
    client_in_literal: bool,
    errors: u32,
    // Upstream side.
    ufrag: Fragmentizer,
    up_queue: VecDeque<UpItem>,
    up_written: usize,
    up_queued_bytes: usize,
    out: FuturesOrdered<OutFuture>,
    // Protocol state.
    pending: HashMap<String, Pending>,
    sasl: Option<(String, Vec<crate::secret::SecretBytes>, String)>,
    user: Option<String>,
    account: Option<Arc<ImapAccount>>,
    credentials: Option<Arc<Credentials>>,
    owned: Option<OwnedConnection>,
    selected: Option<Selected>,
    selecting: Option<String>,
    fetch: Option<ActiveFetch>,
    search: Option<ActiveSearch>,
    starttls: bool,
    /// Counter for meshmail's own tags.
    internal: u64,
    /// Sequence numbers ↔ UIDs of the selected mailbox (mapped sessions).
    seqmap: seqmap::SeqMap,
    /// meshmail's own `FETCH 1:* (UID)` is running (its answers only fill the map).
    mapping: Option<String>,
}

enum Exit {
    Close,
    StartTls,
}

/// Runs a session to its end.
pub async fn run(
    ctx: Arc<ImapContext>,
    tcp: TcpStream,
    peer: SocketAddr,
    loopback: bool,
    implicit_tls: bool,
) {
    let idle = Duration::from_secs(ctx.limits.idle_timeout_secs);
    let mut client: Box<dyn Stream> = if implicit_tls {
        let Some(acceptor) = ctx.tls.clone() else {
            return;
        };
        match tokio::time::timeout(idle, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => Box::new(tls),
            _ => return,
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
    let max = ctx
        .limits
        .max_message_size
        .saturating_mul(2)
        .min(u32::MAX as usize) as u32;
    let mut session = Session {
        link: ClientLink {
            tls: implicit_tls,
            can_starttls: ctx.tls.is_some(),
            loopback,
            authenticated: false,
        },
        ctx,
        peer,
        upstream_caps: upstream.capabilities,
        cfrag: Fragmentizer::new(max),
        mode: Mode::Forward,
        collected: Vec::new(),
        client_pending: 0,
        client_unframed: 0,
        client_in_literal: false,
        errors: 0,
        ufrag: Fragmentizer::new(max),
        up_queue: VecDeque::new(),
        up_written: 0,
        up_queued_bytes: 0,
        out: FuturesOrdered::new(),
        pending: HashMap::new(),
        sasl: None,
        user: None,
        account: None,
        credentials: None,
        owned: None,
        selected: None,
        selecting: None,
        fetch: None,
        search: None,
        starttls: false,
        internal: 0,
        seqmap: Default::default(),
        mapping: None,
    };
    let greeting = format!(
        "* OK [CAPABILITY {}] meshmail ready\r\n",
        session.capabilities().join(" ")
    );
    if client.write_all(greeting.as_bytes()).await.is_err() {
        return;
    }
    let (mut up_r, mut up_w) = tokio::io::split(upstream.stream);
    loop {
        let (mut cr, mut cw) = tokio::io::split(client);
        let exit = session.relay(&mut cr, &mut cw, &mut up_r, &mut up_w).await;
        client = cr.unsplit(cw);
        match exit {
            Exit::Close => break,
            Exit::StartTls => {
                let Some(acceptor) = session.ctx.tls.clone() else {
                    break;
                };
                match tokio::time::timeout(idle, acceptor.accept(client)).await {
                    Ok(Ok(tls)) => client = Box::new(tls),
                    _ => return,
                }
                session.link.tls = true;
                session.starttls = false;
                session.cfrag = Fragmentizer::new(max);
                session.client_pending = 0;
                session.client_unframed = 0;
                session.client_in_literal = false;
            }
        }
    }
    let _ = client.shutdown().await;
    let _ = up_w.shutdown().await;
}

impl Session {
    fn capabilities(&self) -> Vec<String> {
        super::caps::filter(self.upstream_caps.iter().map(String::as_str), self.link)
    }

    fn idle(&self) -> Duration {
        if self.link.authenticated {
            AUTHENTICATED_IDLE.max(Duration::from_secs(self.ctx.limits.idle_timeout_secs))
        } else {
            Duration::from_secs(self.ctx.limits.idle_timeout_secs)
        }
    }

    /// Part of an upstream message has arrived, not all of it.
    fn upstream_mid_message(&self) -> bool {
        !self.ufrag.is_message_complete() && !self.ufrag.message_bytes().is_empty()
    }

    /// The client is read only when nothing it sent is waiting on meshmail.
    fn reading_client(&self) -> bool {
        self.fetch.is_none()
            && self.search.is_none()
            && !self.starttls
            && self.up_queued_bytes < MAX_UP_QUEUE
    }

    fn push_out(&mut self, out: Out) {
        self.out.push_back(Box::pin(std::future::ready(out)));
    }

    fn push_up(&mut self, tag: Option<String>, data: Vec<u8>) {
        self.up_queued_bytes += data.len();
        self.up_queue.push_back(UpItem::Bytes { tag, data });
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
            let read_client = self.reading_client();
            let read_up = self.out.len() < MAX_OUT;
            let front: Option<&[u8]> = match self.up_queue.front() {
                Some(UpItem::Bytes { data, .. }) => Some(&data[self.up_written..]),
                _ => None,
            };
            // A server that stops in the middle of a response (a short literal, a line
            // without its end) will not go on: give up after the upstream timeout, not the
            // half-hour an idle client may wait.
            let stalled = read_up && self.upstream_mid_message();
            let idle = if stalled {
                self.idle().min(self.ctx.upstream.timeout)
            } else {
                self.idle()
            };
            tokio::select! {
                r = cr.read(&mut cbuf), if read_client => {
                    let n = match r { Ok(0) | Err(_) => return Exit::Close, Ok(n) => n };
                    if let Err(bye) = self.on_client_bytes(&cbuf[..n]) {
                        self.push_out(Out::Close(bye));
                    }
                }
                r = up_r.read(&mut ubuf), if read_up => {
                    match r {
                        Ok(0) | Err(_) => {
                            self.push_out(Out::Close(
                                b"* BYE [UNAVAILABLE] The mail server closed the connection\r\n".to_vec(),
                            ));
                        }
                        Ok(n) => {
                            if let Err(bye) = self.on_upstream_bytes(&ubuf[..n]) {
                                self.push_out(Out::Close(bye));
                            }
                        }
                    }
                }
                r = write_some(up_w, front.unwrap_or_default()), if front.is_some() => {
                    match r {
                        Ok(n) => self.advance_up_queue(n),
                        Err(_) => return Exit::Close,
                    }
                }
                Some(out) = self.out.next(), if !self.out.is_empty() => {
                    match self.deliver(out, cw).await {
                        Ok(None) => {}
                        Ok(Some(exit)) => return exit,
                        Err(_) => return Exit::Close,
                    }
                }
                _ = tokio::time::sleep(idle) => {
                    let bye: &[u8] = if stalled {
                        tracing::warn!(peer = %self.peer, "the server stopped in the middle of a response");
                        b"* BYE [UNAVAILABLE] The mail server stopped in the middle of a response\r\n"
                    } else {
                        b"* BYE Idle for too long\r\n"
                    };
                    let _ = cw.write_all(bye).await;
                    return Exit::Close;
                }
            }
        }
    }

    fn advance_up_queue(&mut self, n: usize) {
        self.up_written += n;
        self.up_queued_bytes = self.up_queued_bytes.saturating_sub(n);
        if let Some(UpItem::Bytes { data, .. }) = self.up_queue.front() {
            if self.up_written >= data.len() {
                self.up_queue.pop_front();
                self.up_written = 0;
            }
        }
    }

    /// Writes one item for the client.
    async fn deliver(
        &mut self,
        out: Out,
        cw: &mut WriteHalf<Box<dyn Stream>>,
    ) -> std::io::Result<Option<Exit>> {
        match out {
            Out::Bytes(b) => cw.write_all(&b).await?,
            Out::ViewFailed(reason) => {
                if let Some(f) = self.fetch.as_mut() {
                    f.failure.get_or_insert(reason);
                }
            }
            Out::FetchDone(line) => {
                let active = self.fetch.take();
                match active.and_then(|f| f.failure.map(|r| (f.tag, r))) {
                    Some((tag, reason)) => {
                        // Never a partial view the client would cache: it asks again later.
                        let no = format!("{tag} NO [UNAVAILABLE] {reason}; try again later\r\n");
                        cw.write_all(no.as_bytes()).await?;
                    }
                    None => cw.write_all(&line).await?,
                }
                // Commands the client pipelined behind the FETCH are handled now.
                if let Err(bye) = self.on_client_bytes(&[]) {
                    self.push_out(Out::Close(bye));
                }
            }
            Out::StartTls(tag) => {
                cw.write_all(format!("{tag} OK Begin TLS negotiation now\r\n").as_bytes())
                    .await?;
                cw.flush().await?;
                if self.client_pending > 0 {
                    // Plaintext pipelined after STARTTLS would be read as if it came over
                    // TLS (command injection): close instead.
                    tracing::warn!(peer = %self.peer, "plaintext after STARTTLS: closing");
                    return Ok(Some(Exit::Close));
                }
                return Ok(Some(Exit::StartTls));
            }
            Out::Close(b) => {
                cw.write_all(&b).await?;
                cw.flush().await?;
                return Ok(Some(Exit::Close));
            }
        }
        Ok(None)
    }

    /// How views of the selected mailbox are opened (`None` outside a mapped, selected
    /// session).
    fn view_source(&mut self) -> Option<open::ViewSource> {
        let selected = self.selected.clone()?;
        let account = self.account.clone()?;
        Some(open::ViewSource {
            views: self.ctx.views.clone(),
            index: account.index.clone(),
            keys: account.keys.clone(),
            owned: self.owned(),
            user: self.user.clone().unwrap_or_default(),
            selected,
            max: self.ctx.limits.max_message_size.saturating_mul(2),
        })
    }

    /// Starts (once) the session's own upstream connection.
    fn owned(&mut self) -> Option<OwnedConnection> {
        if self.owned.is_none() {
            let credentials = self.credentials.clone()?;
            self.owned = Some(OwnedConnection::start(
                self.ctx.upstream.clone(),
                credentials,
            ));
        }
        self.owned.clone()
    }
}

async fn write_some(w: &mut WriteHalf<Box<dyn Stream>>, data: &[u8]) -> std::io::Result<usize> {
    let n = w.write(data).await?;
    if n == 0 {
        return Err(std::io::ErrorKind::WriteZero.into());
    }
    if n == data.len() {
        w.flush().await?;
    }
    Ok(n)
}
