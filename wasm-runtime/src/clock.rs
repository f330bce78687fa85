//! The engine's epoch clock: a thread that advances wasmtime's epoch every tick while any
//! instance exists, and sleeps (parked, no timer) once none has existed for a while.
//!
//! Epoch interruption is how guests are metered, throttled and stopped, but only a live
//! instance can run guest code. Every instance's [`Guard`](crate::limits) holds the clock
//! ([`EpochClock::hold`]) for its whole life, so the clock always ticks under a running guest,
//! and an idle node (HTTP services between requests, no command running) is not woken a
//! thousand times a second. Parking waits for [`IDLE_TICKS`] quiet ticks, so a busy service,
//! whose instances come and go with each request, keeps the thread ticking and its requests
//! never pay for waking it.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use crate::error::{Error, Result};

/// Ticks with no instance alive before the clock thread parks.
pub(crate) const IDLE_TICKS: u32 = 100;

#[derive(Debug)]
struct Shared {
    tick: Duration,
    /// Instances alive (guards holding the clock).
    holders: AtomicUsize,
    /// The thread is parked, or about to park: a new holder must wake it.
    parked: AtomicBool,
    stop: AtomicBool,
    thread: OnceLock<Thread>,
}

/// A handle to the epoch clock; clones share it.
#[derive(Debug, Clone)]
pub(crate) struct EpochClock {
    shared: Arc<Shared>,
}

/// Keeps the clock ticking while it lives (see [`EpochClock::hold`]).
#[derive(Debug)]
pub(crate) struct ClockHold {
    shared: Arc<Shared>,
}

impl EpochClock {
    fn with_tick(tick: Duration) -> EpochClock {
        EpochClock {
            shared: Arc::new(Shared {
                tick,
                holders: AtomicUsize::new(0),
                parked: AtomicBool::new(false),
                stop: AtomicBool::new(false),
                thread: OnceLock::new(),
            }),
        }
    }

    /// Starts the thread that advances `engine`'s epoch every `tick`.
    pub(crate) fn start(engine: wasmtime::Engine, tick: Duration) -> Result<EpochClock> {
        let clock = EpochClock::with_tick(tick);
        let shared = clock.shared.clone();
        let handle = std::thread::Builder::new()
            .name("flotilla-wasm-epoch".into())
            .spawn(move || run(&shared, || engine.increment_epoch()))
            .map_err(|e| Error::io("spawning the epoch ticker", e))?;
        let _ = clock.shared.thread.set(handle.thread().clone());
        Ok(clock)
    }

    /// A clock with no thread behind it, for tests of what reads only its tick.
    #[cfg(test)]
    pub(crate) fn detached(tick: Duration) -> EpochClock {
        EpochClock::with_tick(tick)
    }

    /// How often the epoch advances.
    pub(crate) fn tick(&self) -> Duration {
        self.shared.tick
    }

    /// Keeps the clock ticking until the returned hold is dropped; wakes it if it sleeps.
    pub(crate) fn hold(&self) -> ClockHold {
        // SeqCst pairs with the thread's store of `parked` then load of `holders`: either it
        // sees this holder and does not park, or this sees it parked and wakes it.
        self.shared.holders.fetch_add(1, Ordering::SeqCst);
        if self.shared.parked.load(Ordering::SeqCst)
            && let Some(thread) = self.shared.thread.get()
        {
            thread.unpark();
        }
        ClockHold {
            shared: self.shared.clone(),
        }
    }

    /// Stops the thread (the engine is gone).
    pub(crate) fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.shared.thread.get() {
            thread.unpark();
        }
    }

    /// Whether the thread is parked (or about to park).
    #[cfg(test)]
    fn is_parked(&self) -> bool {
        self.shared.parked.load(Ordering::SeqCst)
    }
}

impl Drop for ClockHold {
    fn drop(&mut self) {
        self.shared.holders.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The clock thread: `advance` every tick while held, park after [`IDLE_TICKS`] idle ones.
fn run(shared: &Shared, advance: impl Fn()) {
    let mut idle = 0;
    while !shared.stop.load(Ordering::SeqCst) {
        std::thread::sleep(shared.tick);
        advance();
        if shared.holders.load(Ordering::SeqCst) > 0 {
            idle = 0;
            continue;
        }
        idle += 1;
        if idle < IDLE_TICKS {
            continue;
        }
        shared.parked.store(true, Ordering::SeqCst);
        while shared.holders.load(Ordering::SeqCst) == 0 && !shared.stop.load(Ordering::SeqCst) {
            // Spurious wake-ups just look again.
            std::thread::park();
        }
        shared.parked.store(false, Ordering::SeqCst);
        idle = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;
    use std::time::Instant;

    fn wait(what: &str, f: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting: {what}");
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_clock_ticks_while_held_and_sleeps_when_idle() {
        let clock = EpochClock::with_tick(Duration::from_millis(1));
        let ticks = Arc::new(AtomicU64::new(0));
        let (shared, counter) = (clock.shared.clone(), ticks.clone());
        let handle = std::thread::spawn(move || {
            run(&shared, || {
                counter.fetch_add(1, Ordering::SeqCst);
            })
        });
        let _ = clock.shared.thread.set(handle.thread().clone());
        wait("the idle clock parks", || clock.is_parked());
        let parked_at = ticks.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(30));
        assert_eq!(
            ticks.load(Ordering::SeqCst),
            parked_at,
            "no tick while parked"
        );

        let hold = clock.hold();
        wait("a hold wakes the clock", || {
            ticks.load(Ordering::SeqCst) >= parked_at + 20
        });
        // Held past the idle threshold: it keeps ticking.
        std::thread::sleep(Duration::from_millis(u64::from(IDLE_TICKS) * 2));
        assert!(!clock.is_parked(), "a held clock does not park");
        drop(hold);
        wait("released, it parks again", || clock.is_parked());

        clock.stop();
        handle.join().unwrap();
    }
}
