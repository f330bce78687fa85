//! What a store has done since it opened, for `/metrics`: how writes were grouped into durable
//! batches (group commit at work), and the time spent making them durable.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A snapshot of a store's counters. All of them only grow while the store is open.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct StoreStats {
    /// Durable batches written (one `fdatasync` each).
    pub batches: u64,
    /// Writes (creates, updates, deletes) in those batches; `writes / batches` is the mean
    /// number of writers that shared one sync.
    pub writes: u64,
    /// Time spent writing and syncing those batches, in seconds.
    pub sync_seconds: f64,
    /// Checkpoints (the log made redundant by a durable redb commit).
    pub checkpoints: u64,
}

/// The counters behind [`StoreStats`], updated by the thread that commits.
#[derive(Debug, Default)]
pub struct StoreCounters {
    batches: AtomicU64,
    writes: AtomicU64,
    sync_nanos: AtomicU64,
    checkpoints: AtomicU64,
}

impl StoreCounters {
    /// Counts one durable batch of `writes` writes that took `took` to make durable.
    pub fn batch(&self, writes: usize, took: Duration) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.writes.fetch_add(writes as u64, Ordering::Relaxed);
        let nanos = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        self.sync_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Counts one checkpoint.
    pub fn checkpoint(&self) {
        self.checkpoints.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StoreStats {
        StoreStats {
            batches: self.batches.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            sync_seconds: self.sync_nanos.load(Ordering::Relaxed) as f64 / 1e9,
            checkpoints: self.checkpoints.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_add_up() {
        let c = StoreCounters::default();
        c.batch(3, Duration::from_millis(2));
        c.batch(1, Duration::from_millis(1));
        c.checkpoint();
        let s = c.snapshot();
        assert_eq!((s.batches, s.writes, s.checkpoints), (2, 4, 1));
        assert!((s.sync_seconds - 0.003).abs() < 1e-9);
    }
}
