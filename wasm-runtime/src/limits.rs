//! Per-instance limits: linear memory, table elements, instance counts and CPU
//! time, and the `Guard` that enforces them inside a wasmtime `Store`.
//!
//! Memory and tables are enforced by a `ResourceLimiter`; a refused growth makes
//! `memory.grow` return -1 (as the spec allows) and is remembered, so the trap or
//! abort that usually follows is reported as [`Error::OutOfMemory`] rather than
//! a bare trap. CPU time is metered with epoch interruption: the engine's ticker
//! advances the epoch every tick, and each tick that lands while the guest runs
//! wasm code costs one tick of budget. Between ticks the guest yields to the
//! async runtime, which is also what lets a stop interrupt a guest spinning in a
//! loop. The meter counts wall time spent in wasm code, which equals CPU time
//! unless the host itself is starved of CPU.
//!
//! Long-running guests also take turns: once a store has run wasm for longer
//! than `Throttle`'s threshold, each further tick of wasm needs one of a few
//! engine-wide "background" slots (by default one core fewer than the machine
//! has). A spinning or memory-bombing guest therefore never holds every core,
//! and short requests — which finish well under the threshold — always find a
//! worker free. A long runner gives its slot back while it is in a host call,
//! which may wait as long as it likes (for stdin, a timer, a response), and
//! takes it back on return, or, when another guest has it, queues for it at once. Commands also run on the engine's lower-priority threads
//! (`command_pool`), so the kernel preempts them when a request wakes up; the
//! two together are what keep neighbours' latency flat.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use wasmtime::{CallHook, ResourceLimiter, Store, UpdateDeadline};

use crate::clock::{ClockHold, EpochClock};
use crate::error::Error;
use crate::usage::Usage;

/// Limits for one instance (one command run, or one HTTP request).
///
/// Defaults are deliberately modest, because a node packs many pods: 128 MiB of
/// linear memory, 100 000 table elements, 100 instances/tables/memories per
/// store, and no CPU-time budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest size any one linear memory may reach, in bytes. It is also capped
    /// by the engine's pool slot size ([`crate::EngineConfig::max_memory_bytes`]).
    pub memory_bytes: u64,
    /// Largest number of elements any one table may hold.
    pub table_elements: u64,
    /// Most core instances the guest may create (a component counts each of
    /// its inner core instances).
    pub instances: usize,
    /// Most tables the guest may create.
    pub tables: usize,
    /// Most linear memories the guest may create.
    pub memories: usize,
    /// CPU-time budget; `None` means unbounded (a command may run forever until
    /// stopped).
    pub cpu_time: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 128 << 20,
            table_elements: 100_000,
            instances: 100,
            tables: 100,
            memories: 100,
            cpu_time: None,
        }
    }
}

/// Which limit an instance ran into. It doubles as the error a host callback
/// returns to stop the guest, so it can be recognised in the trap afterwards.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum LimitHit {
    #[error("memory limit of {limit} bytes exceeded")]
    Memory { limit: u64 },
    #[error("table limit of {limit} elements exceeded")]
    Table { limit: u64 },
    #[error("CPU-time budget of {budget_ms} ms exceeded")]
    Deadline { budget_ms: u64 },
    #[error("stopped by its owner")]
    Stopped,
}

impl From<LimitHit> for Error {
    fn from(hit: LimitHit) -> Error {
        match hit {
            LimitHit::Memory { limit } => Error::OutOfMemory { limit },
            LimitHit::Table { limit } => Error::TableLimit { limit },
            LimitHit::Deadline { budget_ms } => Error::DeadlineExceeded { budget_ms },
            LimitHit::Stopped => Error::Stopped,
        }
    }
}

/// A flag another task sets to interrupt a running guest at its next epoch tick.
#[derive(Clone, Debug, Default)]
pub(crate) struct KillSwitch(Arc<AtomicBool>);

impl KillSwitch {
    pub(crate) fn kill(&self) {
        self.0.store(true, Ordering::Release);
    }

    pub(crate) fn is_killed(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// The engine-wide turn-taking of long-running guests (see the module docs).
#[derive(Debug)]
pub(crate) struct Throttle {
    slots: Arc<Semaphore>,
    after_ticks: u64,
}

impl Throttle {
    /// `slots` guests at a time may run past `after` of wasm time.
    pub(crate) fn new(slots: usize, after: Duration, tick: Duration) -> Arc<Throttle> {
        Arc::new(Throttle {
            slots: Arc::new(Semaphore::new(slots.max(1))),
            after_ticks: ticks(after, tick),
        })
    }
}

fn ticks(duration: Duration, tick: Duration) -> u64 {
    let tick = tick.as_nanos().max(1);
    (duration.as_nanos().div_ceil(tick)).max(1) as u64
}

/// The enforcement state kept in each store: the limits, the CPU meter, the
/// kill switch, and the first limit that was hit.
pub(crate) struct Guard {
    limits: Limits,
    budget_ticks: Option<u64>,
    used_ticks: u64,
    kill: KillSwitch,
    hit: Option<LimitHit>,
    throttle: Option<Arc<Throttle>>,
    /// The background slot this guest holds while it runs long; filled by the
    /// future that waited for it, emptied at the next tick.
    slot: Arc<Mutex<Option<OwnedSemaphorePermit>>>,
    tick: Duration,
    /// Whether the slot was given back for the host call in progress.
    released_for_host: bool,
    /// Whether the next epoch callback is a forced one, to queue for the slot
    /// (not a tick: it costs no budget).
    queue_for_slot: bool,
    /// Where this instance's memory and CPU time are counted, if anywhere.
    usage: Option<Usage>,
    /// Linear memory this instance holds (as counted in `usage`).
    held_bytes: u64,
    /// The last growth allowed, taken back if it then fails.
    pending_bytes: u64,
    /// Keeps the epoch advancing while this instance exists.
    _clock: ClockHold,
}

impl Guard {
    /// A guard for `limits` on an engine whose epoch `clock` it keeps ticking while it lives.
    pub(crate) fn new(
        limits: Limits,
        clock: &EpochClock,
        kill: KillSwitch,
        throttle: Option<Arc<Throttle>>,
    ) -> Guard {
        let tick = clock.tick();
        let budget_ticks = limits.cpu_time.map(|cpu| ticks(cpu, tick));
        Guard {
            limits,
            budget_ticks,
            used_ticks: 0,
            kill,
            hit: None,
            throttle,
            slot: Arc::default(),
            tick,
            released_for_host: false,
            queue_for_slot: false,
            usage: None,
            held_bytes: 0,
            pending_bytes: 0,
            _clock: clock.hold(),
        }
    }

    /// Counts this instance's memory and CPU time into `usage` (see [`Usage`]).
    pub(crate) fn with_usage(mut self, usage: Usage) -> Guard {
        usage.instance_created();
        self.usage = Some(usage);
        self
    }

    /// The first limit hit so far, if any.
    pub(crate) fn hit(&self) -> Option<LimitHit> {
        self.hit.clone()
    }

    /// Starts a fresh budget (a warm instance taking its next request).
    pub(crate) fn reset(&mut self) {
        self.used_ticks = 0;
        self.hit = None;
        self.release_slot();
    }

    fn release_slot(&self) {
        drop(self.slot.lock().unwrap_or_else(|p| p.into_inner()).take());
    }

    fn record(&mut self, hit: LimitHit) {
        if self.hit.is_none() {
            self.hit = Some(hit);
        }
    }

    /// Whether the guest runs long enough to need a background slot.
    fn long_running(&self) -> bool {
        self.throttle
            .as_ref()
            .is_some_and(|t| self.used_ticks >= t.after_ticks)
    }

    /// The guest calls the host: a long runner gives its slot back for the
    /// call, which may wait for as long as it likes.
    fn calling_host(&mut self) {
        if self.long_running() {
            self.released_for_host = self
                .slot
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take()
                .is_some();
        }
    }

    /// The host call returns: the slot is taken back when free. Returns
    /// whether the guest must instead queue for it at its next epoch check.
    /// (The epoch callback is a host call too: one that queued has the slot
    /// again already.)
    fn returning_from_host(&mut self) -> bool {
        if !std::mem::take(&mut self.released_for_host) {
            return false;
        }
        let Some(throttle) = &self.throttle else {
            return false;
        };
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_some() {
            return false;
        }
        match throttle.slots.clone().try_acquire_owned() {
            Ok(permit) => {
                *slot = Some(permit);
                false
            }
            Err(_) => {
                self.queue_for_slot = true;
                true
            }
        }
    }

    /// Called on every epoch tick the guest is running through, and when it
    /// must queue for its slot ([`Guard::returning_from_host`]).
    fn on_tick(&mut self) -> wasmtime::Result<UpdateDeadline> {
        if self.kill.is_killed() {
            self.record(LimitHit::Stopped);
            return Err(wasmtime::Error::new(LimitHit::Stopped));
        }
        if !std::mem::take(&mut self.queue_for_slot) {
            self.count_tick()?;
        }
        if let Some(throttle) = &self.throttle
            && self.used_ticks >= throttle.after_ticks
        {
            // Give the slot back and queue for it again: long runners take
            // turns, one tick each, on the background slots.
            self.release_slot();
            let slots = throttle.slots.clone();
            let slot = self.slot.clone();
            return Ok(UpdateDeadline::YieldCustom(
                1,
                Box::pin(async move {
                    // Always yield, even when the slot is free at once, so
                    // the runtime's other tasks on this worker get a turn.
                    tokio::task::yield_now().await;
                    if let Ok(permit) = slots.acquire_owned().await {
                        *slot.lock().unwrap_or_else(|p| p.into_inner()) = Some(permit);
                    }
                }),
            ));
        }
        Ok(UpdateDeadline::Yield(1))
    }

    /// One tick of wasm time: counted, and checked against the budget.
    fn count_tick(&mut self) -> wasmtime::Result<()> {
        self.used_ticks += 1;
        if let Some(usage) = &self.usage {
            usage.add_cpu(self.tick);
        }
        if let Some(budget) = self.budget_ticks
            && self.used_ticks > budget
        {
            let hit = LimitHit::Deadline {
                budget_ms: self.limits.cpu_time.unwrap_or_default().as_millis() as u64,
            };
            self.record(hit.clone());
            return Err(wasmtime::Error::new(hit));
        }
        Ok(())
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(usage) = &self.usage {
            usage.instance_dropped(self.held_bytes);
        }
    }
}

impl ResourceLimiter for Guard {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.limits.memory_bytes {
            self.record(LimitHit::Memory {
                limit: self.limits.memory_bytes,
            });
            return Ok(false);
        }
        if let Some(usage) = &self.usage {
            let grow = desired.saturating_sub(current) as u64;
            usage.hold_memory(grow);
            self.held_bytes += grow;
            self.pending_bytes = grow;
        }
        Ok(true)
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        if let Some(usage) = &self.usage {
            usage.release_memory(self.pending_bytes);
            self.held_bytes -= self.pending_bytes;
            self.pending_bytes = 0;
        }
        Ok(())
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired as u64 > self.limits.table_elements {
            self.record(LimitHit::Table {
                limit: self.limits.table_elements,
            });
            return Ok(false);
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        self.limits.instances
    }

    fn tables(&self) -> usize {
        self.limits.tables
    }

    fn memories(&self) -> usize {
        self.limits.memories
    }
}

/// Store data that carries a [`Guard`].
pub(crate) trait Guarded: Send + 'static {
    fn guard(&mut self) -> &mut Guard;
}

/// Wires a store's guard in: the limiter, and the epoch callback that meters
/// CPU time, yields between ticks and honours the kill switch.
pub(crate) fn install<T: Guarded>(store: &mut Store<T>) {
    store.limiter(|data| data.guard());
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| ctx.data_mut().guard().on_tick());
    if store.data_mut().guard().throttle.is_some() {
        store.call_hook(|mut ctx, hook| {
            match hook {
                CallHook::CallingHost => ctx.data_mut().guard().calling_host(),
                CallHook::ReturningFromHost => {
                    if ctx.data_mut().guard().returning_from_host() {
                        // Its next epoch check calls `on_tick`, which queues.
                        ctx.set_epoch_deadline(0);
                    }
                }
                CallHook::CallingWasm | CallHook::ReturningFromWasm => {}
            }
            Ok(())
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(limits: Limits) -> Guard {
        Guard::new(
            limits,
            &EpochClock::detached(Duration::from_millis(1)),
            KillSwitch::default(),
            None,
        )
    }

    #[test]
    fn cpu_budget_counts_whole_ticks() {
        let mut g = guard(Limits {
            cpu_time: Some(Duration::from_micros(2500)),
            ..Limits::default()
        });
        for _ in 0..3 {
            assert!(g.on_tick().is_ok());
        }
        assert!(g.on_tick().is_err());
        assert_eq!(g.hit(), Some(LimitHit::Deadline { budget_ms: 2 }));
        g.reset();
        assert!(g.on_tick().is_ok());
    }

    #[test]
    fn kill_switch_stops_at_next_tick() {
        let kill = KillSwitch::default();
        let mut g = Guard::new(
            Limits::default(),
            &EpochClock::detached(Duration::from_millis(1)),
            kill.clone(),
            None,
        );
        assert!(g.on_tick().is_ok());
        kill.kill();
        assert!(g.on_tick().is_err());
        assert_eq!(g.hit(), Some(LimitHit::Stopped));
    }

    #[tokio::test]
    async fn long_runners_need_a_background_slot_after_the_threshold() {
        let tick = Duration::from_millis(1);
        let throttle = Throttle::new(1, Duration::from_millis(2), tick);
        let mut g = Guard::new(
            Limits::default(),
            &EpochClock::detached(tick),
            KillSwitch::default(),
            Some(throttle.clone()),
        );
        assert!(matches!(g.on_tick(), Ok(UpdateDeadline::Yield(1))));
        let Ok(UpdateDeadline::YieldCustom(1, wait)) = g.on_tick() else {
            panic!("expected to queue for a slot");
        };
        wait.await;
        assert_eq!(
            throttle.slots.available_permits(),
            0,
            "slot held while running"
        );
        let Ok(UpdateDeadline::YieldCustom(1, wait)) = g.on_tick() else {
            panic!("expected to queue for a slot");
        };
        assert_eq!(
            throttle.slots.available_permits(),
            1,
            "slot given back each tick"
        );
        wait.await;
        drop(g);
        assert_eq!(
            throttle.slots.available_permits(),
            1,
            "slot released with the store"
        );
    }

    #[tokio::test]
    async fn a_long_runner_gives_its_slot_back_for_host_calls() {
        let tick = Duration::from_millis(1);
        let throttle = Throttle::new(1, Duration::from_millis(1), tick);
        let mut g = Guard::new(
            Limits::default(),
            &EpochClock::detached(tick),
            KillSwitch::default(),
            Some(throttle.clone()),
        );
        // Before the threshold, host calls leave the slots alone.
        g.calling_host();
        assert!(!g.returning_from_host());
        let Ok(UpdateDeadline::YieldCustom(1, wait)) = g.on_tick() else {
            panic!("expected to queue for a slot");
        };
        wait.await;
        // The epoch callback is a host call too: having queued, it has the slot.
        assert!(!g.returning_from_host());
        assert_eq!(throttle.slots.available_permits(), 0);
        // A host call gives it back, and takes it back on return when free.
        g.calling_host();
        assert_eq!(
            throttle.slots.available_permits(),
            1,
            "free during the call"
        );
        assert!(!g.returning_from_host());
        assert_eq!(throttle.slots.available_permits(), 0, "taken back");
        // When another guest took it meanwhile, the guest queues at its next
        // epoch check, which costs it no tick of budget.
        g.calling_host();
        let other = throttle.slots.clone().try_acquire_owned().unwrap();
        assert!(g.returning_from_host(), "must queue");
        let used = g.used_ticks;
        let Ok(UpdateDeadline::YieldCustom(1, wait)) = g.on_tick() else {
            panic!("expected to queue for a slot");
        };
        assert_eq!(g.used_ticks, used, "queueing is not a tick");
        let mut wait = wait;
        assert!(
            tokio::time::timeout(Duration::from_millis(50), &mut wait)
                .await
                .is_err(),
            "waits while the other guest has the slot"
        );
        drop(other);
        wait.await;
        assert_eq!(throttle.slots.available_permits(), 0, "its turn now");
    }

    #[test]
    fn memory_growth_past_the_cap_is_refused_and_remembered() {
        let mut g = guard(Limits {
            memory_bytes: 1 << 20,
            ..Limits::default()
        });
        assert!(g.memory_growing(0, 1 << 20, None).unwrap());
        assert!(!g.memory_growing(1 << 20, 2 << 20, None).unwrap());
        assert_eq!(g.hit(), Some(LimitHit::Memory { limit: 1 << 20 }));
    }

    #[test]
    fn table_growth_past_the_cap_is_refused_and_remembered() {
        let mut g = guard(Limits {
            table_elements: 10,
            ..Limits::default()
        });
        assert!(g.table_growing(0, 10, None).unwrap());
        assert!(!g.table_growing(10, 11, None).unwrap());
        assert_eq!(g.hit(), Some(LimitHit::Table { limit: 10 }));
    }
}
