//! The session core: sans-I/O. It is fed the bytes each side sent and keeps what must be
//! written to each side; the task around it ([`super::run`]) only reads, writes and runs the
//! jobs the core hands out (opening views, sealing an APPEND, evaluating a SEARCH).
//!
//! Both directions are framed by imap-codec's fragmentizer (lines and literals). Bytes for
//! the upstream go through a queue that can wait for the upstream's continuation (`+`) before
//! a synchronizing literal; items for the client go out in order, views included.
//!
//! Client messages are handled in `command`, server messages in `answer`.

use super::super::caps::ClientLink;
use super::super::fetch::{FetchPlan, Passthrough};
use super::super::ImapContext;
use super::open::ViewSource;
use super::seqmap::SeqMap;
use super::state::{Mailbox, State};
use super::tags::Tags;
use crate::imap::frame::{Piece, ResponseFramer, TooLarge};
use imap_codec::fragmentizer::{FragmentInfo, Fragmentizer};
use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

/// Bytes queued for the upstream before the client is no longer read.
pub(super) const MAX_UP_QUEUE: usize = 4 * 1024 * 1024;
/// The longest command line (without literals) a client may send: long UID sets included.
pub(super) const MAX_COMMAND_LINE: usize = 256 * 1024;

/// An item for the upstream: bytes, or a wait for the upstream's continuation request.
pub(super) enum UpItem {
    Bytes { tag: Option<String>, data: Vec<u8> },
    Gate { tag: String },
}

/// An item for the client, written in order.
pub(super) enum Out {
    Bytes(Vec<u8>),
    /// Open a message's view and write its FETCH response.
    View(Box<ViewJob>),
    /// A message of the running view FETCH could not be shown now (temporary).
    ViewFailed(String),
    /// The tagged completion of the running view FETCH.
    FetchDone(Vec<u8>),
    /// The tagged completion of the running SEARCH, once meshmail's own evaluation is done.
    SearchDone(Box<SearchDone>),
    /// Answer STARTTLS and switch the client link to TLS.
    StartTls(String),
    /// Write and close.
    Close(Vec<u8>),
    /// At the store: a FETCH response to complete with the device's partials.
    Recrypt(Box<RecryptJob>),
    /// At the store: the last part of a streamed FETCH response, written with the item its
    /// first part's job computed.
    RecryptTail(Vec<u8>, tokio::sync::oneshot::Receiver<String>),
}

/// A FETCH response of a device's session at the store, with what answers it.
pub(super) struct RecryptJob {
    pub role: Arc<crate::store::role::StoreRole>,
    pub device: Arc<crate::store::role::DeviceBinding>,
    pub mailbox: String,
    /// The whole response; or, when `streamed`, its start (written as it is).
    pub response: Vec<u8>,
    pub streamed: Option<StreamedStart>,
}

/// The start of a FETCH response whose message goes on arriving: the partials come from the
/// message's first bytes, and the item goes to the response's last part.
pub(super) struct StreamedStart {
    pub uid: Option<u32>,
    /// The message's first [`crate::store::item::PREFIX`] bytes (or all of it).
    pub prefix: Vec<u8>,
    pub item: tokio::sync::oneshot::Sender<String>,
}

/// At the store, a device's FETCH response whose large literal is passed on as it arrives.
pub(super) enum StreamedFetch {
    /// The response up to its literal (`head` bytes) and the literal's first bytes, until
    /// there are enough to compute the partials from.
    Collecting {
        head: usize,
        literal: usize,
        bytes: Vec<u8>,
    },
    /// The rest is written as it comes; the last part gets the item (none: the literal was
    /// not the message, `BODY[]`).
    Forwarding(Option<tokio::sync::oneshot::Receiver<String>>),
}

/// A job for the task that is not a write to the client.
pub(super) enum Job {
    /// Encrypt an APPEND's message to the account's own key (`Core::sealed` takes the result).
    Seal(SealJob),
    /// Start meshmail's own evaluation of a SEARCH over the encrypted messages.
    Search(Box<SearchJob>),
}

/// A view to open and answer with.
pub(super) struct ViewJob {
    pub source: ViewSource,
    pub uid: u32,
    /// A plaintext message with a result header of its own (shown without it).
    pub forged: bool,
    pub ciphertext: Option<Vec<u8>>,
    /// The store's `X-MESH-RECRYPT` item that came with the ciphertext (a device's FETCH).
    pub recrypt: Option<String>,
    pub seq: u32,
    pub passthrough: Passthrough,
    pub plan: Arc<FetchPlan>,
}

/// An APPEND waiting for its message to be encrypted.
pub(super) struct SealJob {
    pub keys: Arc<crate::crypto::decrypt::DecryptionKeys>,
    /// A device's own signing subkey of a split account (whole accounts sign with `keys`).
    pub signer: Option<Arc<sequoia_openpgp::Cert>>,
    pub message: Vec<u8>,
}

/// An APPEND being sealed: how to send it once the ciphertext is there.
pub(super) struct Sealing {
    pub client_tag: String,
    /// The command's line(s) before the message literal, announcement included.
    pub head: Vec<u8>,
    /// The rest of the command after the literal (its line end, usually).
    pub tail: Vec<u8>,
}

/// meshmail's own SEARCH evaluation to start.
pub(super) struct SearchJob {
    pub source: ViewSource,
    pub criteria: Vec<imap_codec::imap_types::search::SearchKey<'static>>,
    pub numbering: Option<tokio::sync::oneshot::Receiver<ClientNumbering>>,
    /// For a query about `\Recent`: the UIDs the client's session holds as recent.
    pub recent: Option<tokio::sync::oneshot::Receiver<Vec<u32>>>,
}

/// The server finished a SEARCH: merge with meshmail's evaluation and answer.
pub(super) struct SearchDone {
    pub client_tag: String,
    pub line: Vec<u8>,
    pub upstream: Vec<u32>,
    /// UID → sequence number, for a SEARCH in sequence numbers.
    pub seq_of: Option<HashMap<u32, u32>>,
}

/// The client session's numbering: UID → sequence number, and the number of messages.
pub(super) type ClientNumbering = (HashMap<u32, u32>, u32);

/// How the bytes of the client message being read are handled.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Mode {
    /// Relayed fragment by fragment (the upstream answers continuation requests).
    Forward,
    /// Read whole (meshmail answers continuation requests), then handled.
    Collect,
    /// Relayed as it is: a SASL response, or `DONE` ending an IDLE.
    Raw,
    /// Dropped (an invalid tag was answered with BAD).
    Skip,
}

/// The running view FETCH (one at a time: the client is not read meanwhile).
pub(super) struct ActiveFetch {
    pub client_tag: String,
    pub plan: Arc<FetchPlan>,
    /// UIDs answered from views without asking the server for content.
    pub known: BTreeSet<u32>,
    /// The client's FETCH went upstream for the other UIDs.
    pub rest_sent: bool,
    /// Known UIDs answered so far (each is answered once).
    pub answered: BTreeSet<u32>,
    /// The command as sent when it asked the store for partials (sent again without them if
    /// the store refuses).
    pub with_partials: Option<imap_codec::imap_types::command::Command<'static>>,
}

/// The running SEARCH of a mapped session.
pub(super) struct ActiveSearch {
    pub uid: bool,
    pub upstream: Vec<u32>,
    /// For a query with a sequence-set criterion: the client's numbering, sent to the local
    /// evaluation once the session's map is complete.
    pub numbering: Option<tokio::sync::oneshot::Sender<ClientNumbering>>,
    /// meshmail's own `UID SEARCH RECENT` in the client's session: its tag, the UIDs so far,
    /// and where they go once it is answered.
    pub recent: Option<(String, Vec<u32>, tokio::sync::oneshot::Sender<Vec<u32>>)>,
}

/// A client message set aside until nothing else is in flight.
pub(super) struct Deferred {
    pub bytes: Vec<u8>,
    pub frags: Vec<FragmentInfo>,
}

/// One session's protocol logic.
pub(super) struct Core {
    pub ctx: Arc<ImapContext>,
    pub peer: String,
    pub tls: bool,
    pub loopback: bool,
    pub upstream_caps: Vec<String>,
    pub state: State,
    pub tags: Tags,
    // Client side.
    pub cfrag: Fragmentizer,
    pub mode: Mode,
    pub collected: Vec<FragmentInfo>,
    /// The current message's first line: its tag (as the client wrote it) and meshmail's.
    pub current: Option<(String, String)>,
    pub client_pending: usize,
    client_unframed: usize,
    client_in_literal: bool,
    pub errors: u32,
    pub deferred: Option<Deferred>,
    /// The message being relayed is a CANCELUPDATE (its tag arguments are rewritten).
    pub cancelupdate: bool,
    // Upstream side.
    pub ufrag: ResponseFramer,
    pub up_queue: VecDeque<UpItem>,
    pub up_written: usize,
    pub up_queued_bytes: usize,
    // Out.
    pub out: VecDeque<Out>,
    pub jobs: VecDeque<Job>,
    // Running commands that hold the client.
    pub fetch: Option<ActiveFetch>,
    pub search: Option<ActiveSearch>,
    pub sealing: Option<Sealing>,
    pub starttls: bool,
    /// Sequence numbers ↔ UIDs of the selected mailbox (mapped sessions).
    pub seqmap: SeqMap,
    /// meshmail's own `FETCH 1:* (UID)` is running (its answers only fill the map).
    pub mapping: Option<String>,
    /// The session's last complete view (see [`ViewSource::open`]).
    pub pinned: super::open::Pinned,
    /// The client's TLS key (SPKI SHA-256), when it presented a certificate.
    pub client_key: Option<String>,
    /// A device's FETCH line without `X-MESH-RECRYPT`, to send instead of the client's.
    pub recrypt_line: Option<Vec<u8>>,
    /// At a device: the store refused the partials asked with a FETCH, so none are asked
    /// with the session's later FETCHes.
    pub partials_refused: bool,
    /// At the store: a device's FETCH response being streamed.
    pub streamed: Option<StreamedFetch>,
    /// The command being forwarded is a FETCH: any later line of it that names the private
    /// item (after a literal) has the name overwritten (`store::item::mask`).
    pub mask_item: bool,
}

impl Core {
    pub fn new(
        ctx: Arc<ImapContext>,
        peer: String,
        upstream_caps: Vec<String>,
        tls: bool,
        loopback: bool,
    ) -> Core {
        let max = max_message(&ctx);
        Core {
            ctx,
            peer,
            tls,
            loopback,
            upstream_caps,
            state: State::NotAuthenticated,
            tags: Tags::default(),
            cfrag: Fragmentizer::new(max),
            mode: Mode::Forward,
            collected: Vec::new(),
            current: None,
            client_pending: 0,
            client_unframed: 0,
            client_in_literal: false,
            errors: 0,
            deferred: None,
            cancelupdate: false,
            ufrag: ResponseFramer::new(max as usize),
            up_queue: VecDeque::new(),
            up_written: 0,
            up_queued_bytes: 0,
            out: VecDeque::new(),
            jobs: VecDeque::new(),
            fetch: None,
            search: None,
            sealing: None,
            starttls: false,
            seqmap: SeqMap::default(),
            mapping: None,
            pinned: Default::default(),
            client_key: None,
            recrypt_line: None,
            partials_refused: false,
            streamed: None,
            mask_item: false,
        }
    }

    /// The greeting meshmail sends the client.
    pub fn greeting(&self) -> Vec<u8> {
        format!(
            "* OK [CAPABILITY {}] meshmail ready\r\n",
            self.capabilities().join(" ")
        )
        .into_bytes()
    }

    pub fn link(&self) -> ClientLink {
        ClientLink {
            tls: self.tls,
            can_starttls: self.ctx.tls.is_some(),
            loopback: self.loopback,
            authenticated: self.state.is_authenticated(),
            relayed: matches!(
                self.state.account(),
                Some(super::state::Account::Other | super::state::Account::Device(_))
            ),
            recrypting: self.state.device().is_some(),
        }
    }

    pub fn capabilities(&self) -> Vec<String> {
        super::super::caps::filter(self.upstream_caps.iter().map(String::as_str), self.link())
    }

    /// The client is read only when nothing it sent is waiting on meshmail.
    pub fn wants_client_bytes(&self) -> bool {
        let sasl_turn = match &self.state {
            State::Authenticating(login) => login.sasl.as_ref().is_some_and(|s| s.challenged),
            _ => false,
        };
        let held = self.fetch.is_some()
            || self.search.is_some()
            || self.sealing.is_some()
            || self.starttls
            || self.deferred.is_some()
            || matches!(self.state, State::Logout)
            || (self.tags.exclusive_in_flight() && !sasl_turn);
        !held && self.up_queued_bytes < MAX_UP_QUEUE
    }

    /// Nothing is in progress but the client's IDLE: no command waits for the server, no
    /// response is half read and nothing is queued either way. A goodbye now cuts nothing.
    pub fn is_quiet(&self) -> bool {
        self.tags.only_idle()
            && self.up_queue.is_empty()
            && self.out.is_empty()
            && self.fetch.is_none()
            && self.search.is_none()
            && self.sealing.is_none()
            && !self.ufrag.is_mid_response()
    }

    /// Part of an upstream message has arrived, not all of it.
    pub fn upstream_mid_message(&self) -> bool {
        self.ufrag.is_mid_response()
    }

    /// The bytes to write upstream next, if any.
    pub fn upstream_front(&self) -> Option<&[u8]> {
        match self.up_queue.front() {
            Some(UpItem::Bytes { data, .. }) => data.get(self.up_written..),
            _ => None,
        }
    }

    /// `n` bytes of [`Self::upstream_front`] were written.
    pub fn upstream_wrote(&mut self, n: usize) {
        self.up_written += n;
        self.up_queued_bytes = self.up_queued_bytes.saturating_sub(n);
        if let Some(UpItem::Bytes { data, .. }) = self.up_queue.front() {
            if self.up_written >= data.len() {
                self.up_queue.pop_front();
                self.up_written = 0;
            }
        }
    }

    pub fn push_out(&mut self, out: Out) {
        self.out.push_back(out);
    }

    pub fn push_up(&mut self, tag: Option<String>, data: Vec<u8>) {
        self.up_queued_bytes += data.len();
        self.up_queue.push_back(UpItem::Bytes { tag, data });
    }

    pub fn bad(&mut self, tag: &str, text: &str) {
        self.push_out(Out::Bytes(format!("{tag} BAD {text}\r\n").into_bytes()));
    }

    pub fn no(&mut self, tag: &str, text: &str) {
        self.push_out(Out::Bytes(format!("{tag} NO {text}\r\n").into_bytes()));
    }

    /// Feeds client bytes. A BYE to close with is queued as [`Out::Close`].
    pub fn on_client_bytes(&mut self, bytes: &[u8]) {
        self.cfrag.enqueue_bytes(bytes);
        self.client_pending += bytes.len();
        self.client_unframed += bytes.len();
        self.pump_client();
    }

    /// Handles the client bytes already received, as far as the session lets it.
    pub fn pump_client(&mut self) {
        if let Some(d) = self.deferred.take() {
            if !self.tags.is_empty() {
                self.deferred = Some(d);
                return;
            }
            self.collected = d.frags;
            if let Err(bye) = self.handle_collected(&d.bytes) {
                self.push_out(Out::Close(bye));
                return;
            }
        }
        let result = self.frame_client();
        // A line that never ends must not fill memory (literals are bounded by the message
        // size limit instead).
        let result = result.and_then(|_| {
            if !self.client_in_literal && self.client_unframed > MAX_COMMAND_LINE {
                Err(b"* BYE [TOOBIG] Command line too long\r\n".to_vec())
            } else {
                Ok(())
            }
        });
        if let Err(bye) = result {
            self.push_out(Out::Close(bye));
        }
    }

    fn frame_client(&mut self) -> Result<(), Vec<u8>> {
        while self.wants_client_bytes() || self.in_message() {
            let Some(frag) = self.cfrag.progress() else {
                break;
            };
            self.client_unframed = self.client_unframed.saturating_sub(frag.range().len());
            self.client_in_literal = matches!(
                frag,
                FragmentInfo::Line {
                    announcement: Some(_),
                    ..
                }
            );
            if self.cfrag.is_max_message_size_exceeded() {
                return Err(b"* BYE [TOOBIG] Command too large\r\n".to_vec());
            }
            let first = matches!(frag, FragmentInfo::Line { start: 0, .. });
            if first {
                let line = self.cfrag.fragment_bytes(frag).to_vec();
                if looks_like_http(&line) {
                    return Err(b"* BYE This is an IMAP server, not a web server\r\n".to_vec());
                }
                self.collected.clear();
                self.mode = self.classify(&line);
            }
            if let FragmentInfo::Line {
                announcement: Some(a),
                ..
            } = frag
            {
                if a.length as usize > self.ctx.limits.max_message_size {
                    let sync = a.mode == imap_codec::imap_types::core::LiteralMode::Sync;
                    if sync && first && self.mode != Mode::Forward {
                        // The client waits for our go-ahead: refuse, and it sends nothing.
                        let tag = self.current_client_tag();
                        self.finish_message();
                        self.cfrag.skip_message();
                        self.no(&tag, "[TOOBIG] Literal too large");
                        continue;
                    }
                    return Err(b"* BYE [TOOBIG] Literal too large\r\n".to_vec());
                }
            }
            match self.mode {
                Mode::Forward | Mode::Raw => {
                    let mut data = self.cfrag.fragment_bytes(frag).to_vec();
                    if first {
                        if let Some(line) = self.recrypt_line.take() {
                            data = line;
                        }
                    }
                    if first && self.mode == Mode::Forward {
                        let own = self.current.as_ref().map(|(_, own)| own.clone());
                        if let Some(own) = own {
                            data = super::tags::retag(&data, &own);
                        }
                        if self.cancelupdate {
                            data = self.tags.cancelupdate(&data);
                        }
                    }
                    if self.mask_item
                        && matches!(frag, FragmentInfo::Line { .. })
                        && crate::store::item::mentions(&data)
                    {
                        data = crate::store::item::mask(&data);
                    }
                    if self.mode == Mode::Raw {
                        if let Some(instead) = self.raw_line(&data) {
                            data = instead;
                        }
                    }
                    let own = self.current.as_ref().map(|(_, own)| own.clone());
                    self.push_up(own, data);
                }
                Mode::Collect => {
                    self.collected.push(frag);
                    if let FragmentInfo::Line {
                        announcement: Some(a),
                        ..
                    } = frag
                    {
                        if a.mode == imap_codec::imap_types::core::LiteralMode::Sync {
                            self.push_out(Out::Bytes(b"+ Ready for literal data\r\n".to_vec()));
                        }
                    }
                }
                Mode::Skip => {}
            }
            if self.cfrag.is_message_complete() {
                let bytes = self.cfrag.message_bytes().to_vec();
                self.finish_message();
                if self.mode == Mode::Collect {
                    if !self.tags.is_empty() && super::command::is_exclusive(&bytes) {
                        // A command that changes the session's state goes alone.
                        self.deferred = Some(Deferred {
                            bytes,
                            frags: std::mem::take(&mut self.collected),
                        });
                        break;
                    }
                    self.handle_collected(&bytes)?;
                }
            }
        }
        Ok(())
    }

    /// The fragmentizer is inside a message (its next fragments belong to it).
    fn in_message(&self) -> bool {
        !self.cfrag.is_message_complete() && !self.cfrag.message_bytes().is_empty()
    }

    fn finish_message(&mut self) {
        let len = self.cfrag.message_bytes().len();
        self.client_pending = self.client_pending.saturating_sub(len);
    }

    /// The client's tag of the message being read.
    pub fn current_client_tag(&self) -> String {
        self.current
            .as_ref()
            .map(|(t, _)| t.clone())
            .unwrap_or_else(|| "*".into())
    }

    /// Feeds upstream bytes. A BYE to close with is queued as [`Out::Close`].
    pub fn on_upstream_bytes(&mut self, bytes: &[u8]) {
        self.ufrag.push(bytes);
        loop {
            // A session meshmail passes on unread (another login, or a device's session at
            // the store with no partials to add) gets a large message as it arrives.
            // (A device's FETCH with partials at the store too: the partials come from the
            // message's first bytes.)
            let relay = self.state.mapped().is_none();
            let Some(piece) = self.ufrag.next_piece(relay) else {
                break;
            };
            match piece {
                Ok(Piece::Whole(message)) => self.on_upstream_message(message),
                Ok(Piece::Part { bytes, last }) => self.on_upstream_part(bytes, last),
                Err(TooLarge) => {
                    self.push_out(Out::Close(
                        b"* BYE [UNAVAILABLE] A server response was too large\r\n".to_vec(),
                    ));
                    return;
                }
            }
        }
    }

    /// The upstream closed the connection: after a LOGOUT or the server's own BYE, the
    /// client has its goodbye already; otherwise it is told why.
    pub fn on_upstream_closed(&mut self) {
        let bye: &[u8] = if matches!(self.state, State::Logout) {
            b""
        } else {
            b"* BYE [UNAVAILABLE] The mail server closed the connection\r\n"
        };
        self.push_out(Out::Close(bye.to_vec()));
    }

    /// TLS is now in place on the client link.
    pub fn tls_started(&mut self) {
        self.tls = true;
        self.starttls = false;
        self.cfrag = Fragmentizer::new(max_message(&self.ctx));
        self.client_pending = 0;
        self.client_unframed = 0;
        self.client_in_literal = false;
    }

    /// The view FETCH's tagged completion was written: the client is read again.
    pub fn fetch_delivered(&mut self) {
        self.fetch = None;
        self.pump_client();
    }

    /// The SEARCH's answer was written: the client is read again.
    pub fn search_delivered(&mut self) {
        self.search = None;
        self.pump_client();
    }

    /// How views of the selected mailbox are opened (`None` outside a mapped, selected
    /// session: an `Other` session never gets one).
    pub fn view_source(&self) -> Option<ViewSource> {
        let (mapped, mailbox) = self.state.mapped_selected()?;
        Some(ViewSource {
            device: mapped.account.device.clone(),
            views: self.ctx.views.clone(),
            index: mapped.account.index.clone(),
            keys: mapped.account.keys.clone(),
            credentials: mapped.credentials.clone(),
            user: mapped.user.clone(),
            selected: Mailbox::clone(mailbox),
            max: self.ctx.limits.max_message_size.saturating_mul(2),
            pinned: self.pinned.clone(),
        })
    }
}

fn max_message(ctx: &ImapContext) -> u32 {
    ctx.limits
        .max_message_size
        .saturating_mul(2)
        .min(u32::MAX as usize) as u32
}

/// An HTTP request line sent to the IMAP port (cross-protocol attacks): closed at once.
fn looks_like_http(line: &[u8]) -> bool {
    const METHODS: &[&[u8]] = &[
        b"GET ",
        b"POST ",
        b"HEAD ",
        b"PUT ",
        b"DELETE ",
        b"OPTIONS ",
        b"CONNECT ",
        b"PATCH ",
        b"TRACE ",
    ];
    METHODS.iter().any(|m| line.starts_with(m))
        || line.windows(6).any(|w| w.eq_ignore_ascii_case(b" HTTP/"))
}
