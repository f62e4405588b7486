//! The indexer's loop (log in, look at every watched mailbox, IDLE, look again) and one look
//! at a mailbox: expunged records removed, then every message past the checkpoint listed
//! (UID, size, top-level Content-Type), and the encrypted ones not yet indexed fetched in
//! batches, each message decrypted on a blocking thread as soon as it has arrived (so
//! decryption overlaps the transfer of the rest), indexed, and the checkpoint moved past the
//! batch only once all of it is written.

use super::{IndexerContext, IndexerSettings, News};
use crate::imap::index::{now, Checkpoint};
use crate::imap::owned::{Credentials, FetchError, Session};
use crate::imap::view::{Claim, View, ViewKey};
use async_imap::extensions::idle::IdleResponse;
use futures_util::StreamExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, watch};

/// Messages fetched in one command at most, and their bytes (as the server counts them).
const BATCH: usize = 100;
const BATCH_BYTES: u64 = 16 * 1024 * 1024;
/// A catch-up this long logs its progress every this many messages.
const PROGRESS_EVERY: usize = 1000;
const BACKOFF_MIN: Duration = Duration::from_secs(5);
const BACKOFF_MAX: Duration = Duration::from_secs(300);

type Error = String;

fn err(e: impl std::fmt::Display) -> Error {
    e.to_string()
}

/// Runs the account's indexer until shutdown.
pub(super) async fn run(
    ctx: IndexerContext,
    credentials: Arc<Mutex<Arc<Credentials>>>,
    mut news: mpsc::UnboundedReceiver<News>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut watched = ctx.settings.mailboxes.clone();
    let mut refused: Option<Arc<Credentials>> = None;
    let mut backoff = BACKOFF_MIN;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let Ok(login) = credentials.lock().map(|c| c.clone()) else {
            return;
        };
        if refused.as_ref().is_some_and(|r| Arc::ptr_eq(r, &login)) {
            // The server refused this login: wait for a session to bring a newer one.
            tokio::select! {
                n = news.recv() => match n {
                    None => return,
                    Some(News::Selected(m)) => {
                        follow(&ctx.settings, &mut watched, m);
                    }
                    Some(News::Login) => {}
                },
                _ = shutdown.changed() => return,
            }
            continue;
        }
        let session = match crate::imap::owned::login(&ctx.target, &login).await {
            Ok(s) => s,
            Err(FetchError::Refused(reason)) => {
                tracing::warn!(user = %ctx.user, %reason, "IMAP indexer: the server refused the login; waiting for a client to log in again");
                refused = Some(login);
                continue;
            }
            Err(e) => {
                tracing::warn!(user = %ctx.user, error = %e, "IMAP indexer: cannot connect; trying again later");
                if pause(backoff, &mut shutdown).await {
                    return;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        match watch_loop(&ctx, session, &mut watched, &mut news, &mut shutdown).await {
            Ok(()) => return,
            Err(e) => {
                tracing::warn!(user = %ctx.user, error = %e, "IMAP indexer: connection lost; trying again later");
                if pause(backoff, &mut shutdown).await {
                    return;
                }
            }
        }
    }
}

/// Sleeps, or returns true at shutdown.
async fn pause(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = shutdown.changed() => true,
    }
}

/// Mailboxes followed because a session selected them, at most (the oldest is dropped): a
/// client selecting thousands of mailboxes must not make the indexer poll them all.
const MAX_FOLLOWED: usize = 32;

/// Adds a mailbox a session selected; true when it is new.
fn follow(settings: &IndexerSettings, watched: &mut Vec<String>, mailbox: String) -> bool {
    if !settings.follow_selected || watched.contains(&mailbox) {
        return false;
    }
    let configured = settings.mailboxes.len().min(watched.len());
    if watched.len() - configured >= MAX_FOLLOWED {
        watched.remove(configured);
    }
    watched.push(mailbox);
    true
}

enum Wake {
    /// The server told of a change in the mailbox in IDLE.
    Primary,
    /// Time to look at every watched mailbox.
    Poll,
    Selected(String),
    Nothing,
    Stop,
}

/// Looks at the watched mailboxes, then IDLEs on the first; returns at shutdown.
async fn watch_loop(
    ctx: &IndexerContext,
    mut session: Session,
    watched: &mut Vec<String>,
    news: &mut mpsc::UnboundedReceiver<News>,
    shutdown: &mut watch::Receiver<bool>,
) -> Result<(), Error> {
    let t = ctx.target.timeout;
    let mut due: Vec<String> = watched.clone();
    loop {
        for mailbox in std::mem::take(&mut due) {
            look(ctx, &mut session, &mailbox).await?;
        }
        let primary = watched.first().cloned();
        let in_idle = match &primary {
            Some(p) => timed(t, session.examine(p)).await.is_ok(),
            None => false,
        };
        let wake = if in_idle {
            let mut idle = session.idle();
            timed(t, idle.init()).await?;
            let wake = {
                let (wait, _stop) = idle.wait_with_timeout(ctx.settings.poll);
                tokio::select! {
                    r = wait => match r.map_err(err)? {
                        IdleResponse::NewData(_) | IdleResponse::ManualInterrupt => Wake::Primary,
                        IdleResponse::Timeout => Wake::Poll,
                    },
                    n = news.recv() => on_news(n),
                    _ = shutdown.changed() => Wake::Stop,
                }
            };
            session = timed(t, idle.done()).await?;
            wake
        } else {
            tokio::select! {
                _ = tokio::time::sleep(ctx.settings.poll) => Wake::Poll,
                n = news.recv() => on_news(n),
                _ = shutdown.changed() => Wake::Stop,
            }
        };
        match wake {
            Wake::Primary => due.extend(primary),
            Wake::Poll => due = watched.clone(),
            Wake::Selected(m) => {
                if follow(&ctx.settings, watched, m.clone()) {
                    due.push(m);
                }
            }
            Wake::Nothing => {}
            Wake::Stop => {
                let _ = tokio::time::timeout(t, session.logout()).await;
                return Ok(());
            }
        }
    }
}

fn on_news(n: Option<News>) -> Wake {
    match n {
        None => Wake::Stop,
        Some(News::Login) => Wake::Nothing,
        Some(News::Selected(m)) => Wake::Selected(m),
    }
}

/// An IMAP step within the upstream timeout.
async fn timed<T, E: std::fmt::Display>(
    t: Duration,
    f: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, Error> {
    match tokio::time::timeout(t, f).await {
        Ok(r) => r.map_err(err),
        Err(_) => Err("the server did not answer in time".into()),
    }
}

/// One message past the checkpoint.
struct Listed {
    uid: u32,
    size: u64,
    encrypted: bool,
}

/// One look at a mailbox: expunged records removed, new encrypted messages indexed.
async fn look(ctx: &IndexerContext, session: &mut Session, mailbox: &str) -> Result<(), Error> {
    let t = ctx.target.timeout;
    let mbox = match tokio::time::timeout(t, session.examine(mailbox)).await {
        Err(_) => return Err("EXAMINE timed out".into()),
        // The connection is gone: the caller logs in again.
        Ok(Err(
            e @ (async_imap::error::Error::Io(_) | async_imap::error::Error::ConnectionLost),
        )) => return Err(err(e)),
        // No such mailbox (yet), or a name the server or async-imap refuses: nothing to index
        // there, the other mailboxes go on.
        Ok(Err(e)) => {
            tracing::debug!(mailbox, error = %e, "IMAP indexer: cannot examine the mailbox");
            return Ok(());
        }
        Ok(Ok(m)) => m,
    };
    let Some(validity) = mbox.uid_validity else {
        return Ok(());
    };
    let index = ctx.index.clone();
    let (mut checkpoint, indexed) = {
        let index = index.clone();
        let mailbox = mailbox.to_owned();
        blocking(move || {
            let checkpoint = match index.checkpoint(&mailbox, validity) {
                Some(c) => c,
                None => {
                    // A new mailbox, or a new UIDVALIDITY: earlier records name no message.
                    index.forget_other_validities(&mailbox, validity);
                    Checkpoint::start(&mailbox, validity)
                }
            };
            (checkpoint, index.uids(&mailbox, validity))
        })
        .await?
    };
    let uidnext = mbox.uid_next.unwrap_or(0);
    let unchanged = checkpoint.uidnext == uidnext && checkpoint.messages == mbox.exists;
    if uidnext != 0 && uidnext <= checkpoint.scanned_to.saturating_add(1) && unchanged {
        // Nothing new, and as many messages as last time: nothing went either.
        return Ok(());
    }
    let mut listing = list(session, checkpoint.scanned_to.saturating_add(1), t).await?;
    if uidnext != 0 {
        // What arrived after the EXAMINE waits for the next look, so that the message count
        // the checkpoint keeps covers exactly the UIDs below its UIDNEXT.
        listing.retain(|m| m.uid < uidnext);
    }
    // The server has what it had at the last look, plus what is new, minus what was
    // expunged: fewer means some indexed message may be gone (a first look cannot tell).
    let first_look = checkpoint.uidnext == 0 || uidnext == 0;
    let expected = checkpoint.messages as usize + listing.len();
    if !indexed.is_empty() && (first_look || (mbox.exists as usize) < expected) {
        let live = timed(t, session.uid_search("ALL")).await?;
        let gone: Vec<u32> = indexed.into_iter().filter(|u| !live.contains(u)).collect();
        if !gone.is_empty() {
            tracing::info!(
                mailbox,
                count = gone.len(),
                "IMAP index: records of expunged messages removed"
            );
            let (index, mailbox) = (index.clone(), mailbox.to_owned());
            blocking(move || index.remove(&mailbox, validity, &gone)).await?;
        }
    }
    checkpoint.uidnext = uidnext;
    checkpoint.messages = mbox.exists;
    if listing.is_empty() {
        if !unchanged {
            checkpoint.at = now();
            let index = index.clone();
            blocking(move || index.set_checkpoint(checkpoint)).await?;
        }
        return Ok(());
    }
    let started = Instant::now();
    let total = listing.len();
    if total >= BATCH {
        tracing::info!(
            mailbox,
            messages = total,
            from_uid = checkpoint.scanned_to + 1,
            "IMAP index: catching up"
        );
    }
    let (mut done, mut decrypted) = (0usize, 0usize);
    for batch in batches(&listing, ctx.max_message as u64) {
        let Some(last) = batch.last().map(|m| m.uid) else {
            continue;
        };
        let wanted: Vec<u32> = {
            let index = index.clone();
            let mailbox = mailbox.to_owned();
            let candidates: Vec<u32> = batch
                .iter()
                .filter(|m| m.encrypted && m.size <= ctx.max_message as u64)
                .map(|m| m.uid)
                .collect();
            blocking(move || {
                candidates
                    .into_iter()
                    .filter(|u| !index.contains(&mailbox, validity, *u))
                    .collect()
            })
            .await?
        };
        if !wanted.is_empty() {
            decrypted += fetch_and_index(ctx, session, mailbox, validity, &wanted).await?;
        }
        checkpoint.scanned_to = last;
        checkpoint.at = now();
        let (index, c) = (index.clone(), checkpoint.clone());
        blocking(move || index.set_checkpoint(c)).await?;
        let before = done;
        done += batch.len();
        if total >= PROGRESS_EVERY && done / PROGRESS_EVERY > before / PROGRESS_EVERY {
            tracing::info!(mailbox, done, of = total, "IMAP index: catching up");
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    tracing::info!(
        mailbox,
        indexed = decrypted,
        scanned = total,
        seconds = format!("{seconds:.3}"),
        per_second = format!("{:.0}", decrypted as f64 / seconds.max(1e-6)),
        "IMAP index caught up"
    );
    Ok(())
}

/// Runs index file I/O off the reactor.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| "the index stopped".to_string())
}

/// Batches of at most [`BATCH`] messages and [`BATCH_BYTES`] (a larger message alone).
fn batches(listing: &[Listed], max_message: u64) -> Vec<&[Listed]> {
    let mut out = Vec::new();
    let (mut start, mut bytes) = (0usize, 0u64);
    for (i, m) in listing.iter().enumerate() {
        let size = if m.encrypted && m.size <= max_message {
            m.size
        } else {
            0
        };
        if i > start && (i - start >= BATCH || bytes + size > BATCH_BYTES) {
            out.push(&listing[start..i]);
            start = i;
            bytes = 0;
        }
        bytes += size;
    }
    if start < listing.len() {
        out.push(&listing[start..]);
    }
    out
}

/// Every message from UID `from` on: UID, size, and whether its top-level Content-Type says
/// encrypted.
async fn list(session: &mut Session, from: u32, t: Duration) -> Result<Vec<Listed>, Error> {
    let mut out = Vec::new();
    let fetch = async {
        let mut stream = session
            .uid_fetch(
                format!("{from}:*"),
                "(UID RFC822.SIZE BODY.PEEK[HEADER.FIELDS (CONTENT-TYPE)])",
            )
            .await
            .map_err(err)?;
        while let Some(item) = stream.next().await {
            let item = item.map_err(err)?;
            // `n:*` names the last message even when its UID is below n.
            let Some(uid) = item.uid.filter(|u| *u >= from) else {
                continue;
            };
            out.push(Listed {
                uid,
                size: u64::from(item.size.unwrap_or(0)),
                encrypted: item
                    .header()
                    .is_some_and(|h| crate::imap::view::mime::parse(h).is_encrypted()),
            });
        }
        Ok::<_, Error>(())
    };
    match tokio::time::timeout(t * 4, fetch).await {
        Ok(r) => r?,
        Err(_) => return Err("listing the mailbox timed out".into()),
    }
    out.sort_by_key(|m| m.uid);
    Ok(out)
}

/// Fetches the messages and indexes each as it arrives; how many were decrypted.
async fn fetch_and_index(
    ctx: &IndexerContext,
    session: &mut Session,
    mailbox: &str,
    validity: u32,
    uids: &[u32],
) -> Result<usize, Error> {
    let set: Vec<String> = uids.iter().map(|u| u.to_string()).collect();
    let mut tasks = tokio::task::JoinSet::new();
    if let Some(device) = &ctx.device {
        // A split account's device: each message with the store's partials for it.
        let fetched = crate::imap::recrypt_fetch::fetch(
            session,
            &set.join(","),
            device,
            ctx.target.timeout * 4,
        )
        .await
        .map_err(|e| e.to_string())?;
        for (uid, message) in fetched {
            let Some(crate::store::item::Answer::Partials(partials)) = message.recrypt else {
                // No partial now: left to the sessions, which say so to their clients.
                continue;
            };
            let key = ViewKey {
                user: ctx.user.clone(),
                mailbox: mailbox.to_owned(),
                uidvalidity: validity,
                uid,
            };
            tasks.spawn(index_one(ctx.clone(), key, message.bytes, Some(partials)));
        }
        let mut decrypted = 0;
        while let Some(r) = tasks.join_next().await {
            decrypted += usize::from(r.unwrap_or(false));
        }
        return Ok(decrypted);
    }
    let fetch = async {
        let mut stream = session
            .uid_fetch(set.join(","), "(UID BODY.PEEK[])")
            .await
            .map_err(err)?;
        while let Some(item) = stream.next().await {
            let item = item.map_err(err)?;
            let (Some(uid), Some(body)) = (item.uid, item.body()) else {
                continue;
            };
            let key = ViewKey {
                user: ctx.user.clone(),
                mailbox: mailbox.to_owned(),
                uidvalidity: validity,
                uid,
            };
            tasks.spawn(index_one(ctx.clone(), key, body.to_vec(), None));
        }
        Ok::<_, Error>(())
    };
    let fetched = tokio::time::timeout(ctx.target.timeout * 4, fetch).await;
    // What was handed to decryption is finished either way (a checkpoint waits for it).
    let mut decrypted = 0;
    while let Some(r) = tasks.join_next().await {
        decrypted += usize::from(r.unwrap_or(false));
    }
    match fetched {
        Ok(r) => r?,
        Err(_) => return Err("fetching messages to index timed out".into()),
    }
    Ok(decrypted)
}

/// Decrypts and indexes one fetched message; true when it was decrypted here. The slot is
/// taken before the view is claimed, so a session waiting for this view never waits behind
/// the indexer's lower priority; the view is handed over before its record is built.
async fn index_one(
    ctx: IndexerContext,
    key: ViewKey,
    raw: Vec<u8>,
    partials: Option<Vec<(usize, crate::crypto::recrypt::Partial)>>,
) -> bool {
    let slot = crate::imap::slots::background_slot().await;
    let building = match ctx.views.claim(&key) {
        // A session decrypts it right now; its view is indexed when built.
        Claim::Wait(_) => return false,
        Claim::Ready(view) => Err(view),
        Claim::Build(building) => Ok(building),
    };
    let max = ctx.max_message.saturating_mul(2);
    tokio::task::spawn_blocking(move || {
        let ViewKey {
            mailbox,
            uidvalidity,
            uid,
            ..
        } = key;
        let (view, decrypted) = match building {
            Err(cached) => (cached, false),
            Ok(building) => {
                if let Some(p) = &partials {
                    // Partials that do not fit this device's share make no view (the
                    // sessions say why to their clients).
                    if !ctx.keys.split_opens(&crate::store::item::pkesks(&raw), p) {
                        drop(building);
                        drop(slot);
                        return false;
                    }
                }
                let view = Arc::new(View::build_with(&raw, &ctx.keys, partials.as_deref(), max));
                building.finish(view.clone());
                tracing::debug!(mailbox = %mailbox, uid, by = "indexer", "decrypted");
                (view, true)
            }
        };
        ctx.index
            .insert(&mailbox, uidvalidity, uid, view.index_entry());
        drop(slot);
        decrypted
    })
    .await
    .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(uid: u32, size: u64, encrypted: bool) -> Listed {
        Listed {
            uid,
            size,
            encrypted,
        }
    }

    #[test]
    fn batches_are_bounded_in_count_and_bytes() {
        let many: Vec<Listed> = (1..=250).map(|u| listed(u, 1000, true)).collect();
        let b = batches(&many, 1 << 30);
        assert_eq!(
            b.iter().map(|b| b.len()).collect::<Vec<_>>(),
            [100, 100, 50]
        );
        let big: Vec<Listed> = (1..=5).map(|u| listed(u, 10 << 20, true)).collect();
        assert!(batches(&big, 1 << 30).iter().all(|b| b.len() == 1));
        // Plaintext and oversized messages are not fetched: they weigh nothing.
        let skipped: Vec<Listed> = (1..=50).map(|u| listed(u, 100 << 20, u % 2 == 0)).collect();
        assert_eq!(batches(&skipped, 1 << 20).len(), 1);
        assert!(batches(&[], 1).is_empty());
    }

    #[test]
    fn followed_mailboxes_are_bounded_and_configured_ones_stay() {
        let settings = IndexerSettings::default();
        let mut watched = settings.mailboxes.clone();
        for i in 0..100 {
            assert!(follow(&settings, &mut watched, format!("Folder{i}")));
        }
        assert_eq!(watched.len(), settings.mailboxes.len() + MAX_FOLLOWED);
        assert_eq!(
            &watched[..settings.mailboxes.len()],
            &settings.mailboxes[..]
        );
        assert_eq!(watched.last().map(String::as_str), Some("Folder99"));
        assert!(!follow(&settings, &mut watched, "INBOX".into()));
        let off = IndexerSettings {
            follow_selected: false,
            ..IndexerSettings::default()
        };
        assert!(!follow(&off, &mut watched, "Elsewhere".into()));
    }
}
