//! Decryption slots: at most one decryption per core runs at a time, process-wide (more only
//! adds thread switches and memory), and the index's own thread can see when none is running,
//! so that it builds its records in the gaps instead of delaying a client's FETCH.

use std::sync::{Arc, LazyLock};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

struct Slots {
    permits: Arc<Semaphore>,
    total: usize,
}

static SLOTS: LazyLock<Slots> = LazyLock::new(|| {
    let total = std::thread::available_parallelism().map_or(2, |n| n.get());
    Slots {
        permits: Arc::new(Semaphore::new(total)),
        total,
    }
});

/// Waits for a free slot; the slot is held until the permit drops. `None` only if the
/// semaphore were closed, which it never is (then the caller goes ahead without a slot).
pub async fn decryption_slot() -> Option<OwnedSemaphorePermit> {
    SLOTS.permits.clone().acquire_owned().await.ok()
}

/// No decryption is running or waiting for a slot right now.
pub fn idle() -> bool {
    SLOTS.permits.available_permits() == SLOTS.total
}
