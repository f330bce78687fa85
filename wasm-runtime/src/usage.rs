//! What a service's or a command's instances use: the linear memory they hold right now and
//! the CPU time they have consumed, for the node agent's resource metrics (`kubectl top`).
//!
//! Every instance's [`Guard`](crate::limits) reports into the [`Usage`] of its owner:
//!
//! - **memory**: each linear memory's size as the `ResourceLimiter` allows it to be created
//!   and to grow, given back when the instance's store is dropped. This is the memory the guest
//!   asked for (its working set as the guest sees it), not the host pages behind it, which the
//!   pooling allocator keeps for the next instance. An idle HTTP service (no request in flight,
//!   no warm instance) holds none.
//! - **CPU**: the epoch ticks that land while the guest runs wasm code, times the tick — the
//!   same sampling the CPU-time budget uses, and the way an operating system's tick-based
//!   accounting works. A request shorter than a tick usually sees none and sometimes one, so
//!   the total is an unbiased estimate over many requests rather than an exact count. Time in
//!   host calls (WASI, outgoing HTTP) is not counted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Shared counters of one service or command; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Usage(Arc<Counters>);

#[derive(Debug, Default)]
struct Counters {
    memory_bytes: AtomicU64,
    cpu_nanos: AtomicU64,
    instances: AtomicU64,
}

impl Usage {
    /// Bytes of linear memory the live instances hold.
    pub fn memory_bytes(&self) -> u64 {
        self.0.memory_bytes.load(Ordering::Relaxed)
    }

    /// CPU time spent in wasm code so far (sampled at each epoch tick).
    pub fn cpu_time(&self) -> Duration {
        Duration::from_nanos(self.0.cpu_nanos.load(Ordering::Relaxed))
    }

    /// Instances alive now (requests in flight and warm instances, or the running command).
    pub fn instances(&self) -> u64 {
        self.0.instances.load(Ordering::Relaxed)
    }

    pub(crate) fn instance_created(&self) {
        self.0.instances.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn instance_dropped(&self, memory_bytes: u64) {
        self.0.instances.fetch_sub(1, Ordering::Relaxed);
        self.release_memory(memory_bytes);
    }

    pub(crate) fn hold_memory(&self, bytes: u64) {
        self.0.memory_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn release_memory(&self, bytes: u64) {
        // Saturating: never wraps even if a release raced ahead of its hold.
        let _ = self
            .0
            .memory_bytes
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |m| {
                Some(m.saturating_sub(bytes))
            });
    }

    pub(crate) fn add_cpu(&self, time: Duration) {
        self.0
            .cpu_nanos
            .fetch_add(time.as_nanos() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_is_held_until_its_instance_goes_and_cpu_only_grows() {
        let u = Usage::default();
        u.instance_created();
        u.hold_memory(128 << 10);
        u.add_cpu(Duration::from_millis(2));
        let clone = u.clone();
        clone.instance_created();
        clone.hold_memory(64 << 10);
        assert_eq!(u.memory_bytes(), 192 << 10);
        assert_eq!(u.instances(), 2);
        u.instance_dropped(128 << 10);
        assert_eq!(u.memory_bytes(), 64 << 10);
        assert_eq!(u.instances(), 1);
        clone.instance_dropped(64 << 10);
        assert_eq!(u.memory_bytes(), 0);
        assert_eq!(u.cpu_time(), Duration::from_millis(2));
        u.release_memory(1);
        assert_eq!(u.memory_bytes(), 0, "never below zero");
    }
}
