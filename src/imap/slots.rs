//! Decryption slots: at most one decryption per core runs at a time, process-wide (more only
//! adds thread switches and memory). Client sessions go first: the background indexer takes a
//! slot only while no client is waiting for one, so a client's FETCH waits at most for the
//! decryptions already running. The index's own thread can see when no decryption runs at
//! all, and builds its records in the gaps.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

struct Slots {
    permits: Arc<Semaphore>,
    total: usize,
    /// Client sessions waiting for a slot right now.
    clients_waiting: AtomicUsize,
}

static SLOTS: LazyLock<Slots> = LazyLock::new(|| {
    let total = std::thread::available_parallelism().map_or(2, |n| n.get());
    Slots {
        permits: Arc::new(Semaphore::new(total)),
        total,
        clients_waiting: AtomicUsize::new(0),
    }
});

/// A client session's slot: waits for a free one; held until the permit drops. `None` only
/// if the semaphore were closed, which it never is (then the caller goes ahead without one).
pub async fn decryption_slot() -> Option<OwnedSemaphorePermit> {
    struct Waiting;
    impl Drop for Waiting {
        fn drop(&mut self) {
            SLOTS.clients_waiting.fetch_sub(1, Ordering::AcqRel);
        }
    }
    SLOTS.clients_waiting.fetch_add(1, Ordering::AcqRel);
    let _waiting = Waiting;
    SLOTS.permits.clone().acquire_owned().await.ok()
}

/// The background indexer's slot: taken only when no client session waits for one.
pub async fn background_slot() -> Option<OwnedSemaphorePermit> {
    loop {
        let permit = SLOTS.permits.clone().acquire_owned().await.ok()?;
        if SLOTS.clients_waiting.load(Ordering::Acquire) == 0 {
            return Some(permit);
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
