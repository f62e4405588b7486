//! Decryption slots: at most one decryption per core runs at a time, process-wide (more only
//! adds thread switches and memory). Client sessions go first: the background indexer takes a
//! slot only while no client is waiting for one, so a client's FETCH waits at most for the
//! decryptions already running. The index's own thread can see when no decryption runs and
//! no client view is being opened, and builds its records in those gaps.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The process's slots (one per core), shared by every account and session.
pub fn shared() -> &'static Arc<Slots> {
    static SLOTS: LazyLock<Arc<Slots>> =
        LazyLock::new(|| Slots::new(std::thread::available_parallelism().map_or(2, |n| n.get())));
    &SLOTS
}

/// A client session's slot from the shared ones (see [`Slots::client`]).
pub async fn decryption_slot() -> Option<Slot> {
    shared().client().await
}

/// The background indexer's slot from the shared ones (see [`Slots::background`]).
pub async fn background_slot() -> Option<Slot> {
    shared().background().await
}

/// See [`Slots::quiet_for`].
pub fn quiet_for(d: Duration) -> bool {
    shared().quiet_for(d)
}

/// Decryption slots and what the index's thread needs to know about them.
pub struct Slots {
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

/// A decryption slot, held until dropped.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    slots: Arc<Slots>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.mark_release();
    }
}

/// A client's view being opened (from anywhere: cache, index or decryption); the index's
/// thread waits while any is.
pub struct Opening(Arc<Slots>);

impl Opening {
    pub fn start() -> Opening {
        let slots = shared().clone();
        slots.opening.fetch_add(1, Ordering::AcqRel);
        Opening(slots)
    }
}

impl Drop for Opening {
    fn drop(&mut self) {
        self.0.opening.fetch_sub(1, Ordering::AcqRel);
        self.0.mark_release();
    }
}

impl Slots {
    pub fn new(total: usize) -> Arc<Slots> {
        Arc::new(Slots {
            permits: Arc::new(Semaphore::new(total)),
            total,
            clients_waiting: AtomicUsize::new(0),
            opening: AtomicUsize::new(0),
            last_release: AtomicU64::new(0),
            epoch: Instant::now(),
        })
    }

    fn mark_release(&self) {
        let now = self.epoch.elapsed().as_micros() as u64;
        self.last_release.store(now, Ordering::Release);
    }

    /// A client session's slot: waits for a free one. `None` only if the semaphore were
    /// closed, which it never is (then the caller goes ahead without one).
    pub async fn client(self: &Arc<Self>) -> Option<Slot> {
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        self.clients_waiting.fetch_add(1, Ordering::AcqRel);
        let _waiting = Waiting(&self.clients_waiting);
        let permit = self.permits.clone().acquire_owned().await.ok()?;
        Some(Slot {
            _permit: permit,
            slots: self.clone(),
        })
    }

    /// The background indexer's slot: taken only when no client session waits for one.
    pub async fn background(self: &Arc<Self>) -> Option<Slot> {
        loop {
            let permit = self.permits.clone().acquire_owned().await.ok()?;
            if self.clients_waiting.load(Ordering::Acquire) == 0 {
                return Some(Slot {
                    _permit: permit,
                    slots: self.clone(),
                });
            }
            // A client came first: the slot is its (the semaphore is fair, the client is
            // queued).
            drop(permit);
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// No decryption is running or waiting for a slot right now.
    pub fn idle(&self) -> bool {
        self.permits.available_permits() == self.total
    }

    /// No decryption has run and no client's view been opened for `d`: a client's FETCH of
    /// many messages is over (its views come back to back), not just between two of them.
    pub fn quiet_for(&self, d: Duration) -> bool {
        let last = self.last_release.load(Ordering::Acquire);
        let now = self.epoch.elapsed().as_micros() as u64;
        self.idle()
            && self.opening.load(Ordering::Acquire) == 0
            && now.saturating_sub(last) >= d.as_micros() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_waiting_client_gets_the_next_slot_before_the_indexer() {
        let slots = Slots::new(1);
        let held = slots.client().await.expect("slot");
        // The indexer asks first, then a client.
        let background = tokio::spawn({
            let s = slots.clone();
            async move {
                let slot = s.background().await;
                (Instant::now(), slot.is_some())
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        let client = tokio::spawn({
            let s = slots.clone();
            async move {
                let slot = s.client().await;
                let at = Instant::now();
                // Held a while, as a decryption would be.
                tokio::time::sleep(Duration::from_millis(30)).await;
                drop(slot);
                at
            }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!slots.quiet_for(Duration::ZERO), "a slot is held");
        drop(held);
        let client_at = client.await.expect("client");
        let (background_at, got) = background.await.expect("background");
        assert!(got);
        assert!(
            client_at < background_at,
            "the indexer took the slot before the waiting client"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert!(slots.quiet_for(Duration::from_millis(1)));
        assert!(
            !slots.quiet_for(Duration::from_secs(60)),
            "released just now"
        );
    }
}
