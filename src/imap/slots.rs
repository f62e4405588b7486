//! Decryption slots: at most one decryption per core runs at a time, process-wide (more only
//! adds thread switches and memory). Client sessions go first: the background indexer takes a
//! slot only while no client is waiting for one, so a client's FETCH waits at most for the
//! decryptions already running. The index's own thread can see when no decryption runs at
//! all, and builds its records in the gaps.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

struct Slots {
    permits: Arc<Semaphore>,
    total: usize,
    /// Client sessions waiting for a slot right now.
    clients_waiting: AtomicUsize,
    /// Views being opened for clients right now (decrypted, or read from cache or index).
    opening: AtomicUsize,
    /// When a slot was last given back or an open finished (microseconds since `epoch`).
    last_release: AtomicU64,
    epoch: Instant,
}

static SLOTS: LazyLock<Slots> = LazyLock::new(|| {
    let total = std::thread::available_parallelism().map_or(2, |n| n.get());
    Slots {
        permits: Arc::new(Semaphore::new(total)),
        total,
        clients_waiting: AtomicUsize::new(0),
        opening: AtomicUsize::new(0),
        last_release: AtomicU64::new(0),
        epoch: Instant::now(),
    }
});

/// A decryption slot, held until dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
}

impl Drop for Slot {
    fn drop(&mut self) {
        mark_release();
    }
}

fn mark_release() {
    let now = SLOTS.epoch.elapsed().as_micros() as u64;
    SLOTS.last_release.store(now, Ordering::Release);
}

/// A client's view being opened (from anywhere: cache, index or decryption); the index's
/// thread waits while any is.
pub struct Opening(());

impl Opening {
    pub fn start() -> Opening {
        SLOTS.opening.fetch_add(1, Ordering::AcqRel);
        Opening(())
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        SLOTS.opening.fetch_sub(1, Ordering::AcqRel);
        mark_release();
    }
}

/// A client session's slot: waits for a free one; held until the permit drops. `None` only
/// if the semaphore were closed, which it never is (then the caller goes ahead without one).
pub async fn decryption_slot() -> Option<Slot> {
    struct Waiting;
    impl Drop for Waiting {
        fn drop(&mut self) {
            SLOTS.clients_waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
    SLOTS.clients_waiting.fetch_add(1, Ordering::AcqRel);
    let _waiting = Waiting;
    let permit = SLOTS.permits.clone().acquire_owned().await.ok()?;
    Some(Slot { _permit: permit })
}

/// The background indexer's slot: taken only when no client session waits for one.
pub async fn background_slot() -> Option<Slot> {
    loop {
        let permit = SLOTS.permits.clone().acquire_owned().await.ok()?;
        if SLOTS.clients_waiting.load(Ordering::Acquire) == 0 {
            return Some(Slot { _permit: permit });
        }
        // A client came first: the slot is its (the semaphore is fair, the client is queued).
        drop(permit);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// No decryption is running or waiting for a slot right now.
pub fn idle() -> bool {
    SLOTS.permits.available_permits() == SLOTS.total
}

/// No decryption has run and no client's view been opened for `d`: a client's FETCH of
/// many messages is over (its views come back to back), not just between two of them.
pub fn quiet_for(d: Duration) -> bool {
    let last = SLOTS.last_release.load(Ordering::Acquire);
    let now = SLOTS.epoch.elapsed().as_micros() as u64;
    idle()
        && SLOTS.opening.load(Ordering::Acquire) == 0
        && now.saturating_sub(last) >= d.as_micros() as u64
}
