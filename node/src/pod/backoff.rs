//! Restart backoff: pure decisions on how long to wait, no sleeping here.
//!
//! Kubernetes' defaults: a crashed container restarts at once the first time, then after 10 s,
//! 20 s, 40 s ... capped at 5 minutes; a container that ran for twice the cap without crashing
//! starts the sequence again. Image pulls and container creation back off the same way from
//! their first failure.

use std::time::Duration;

/// Kubernetes' initial restart delay.
pub const DEFAULT_INITIAL: Duration = Duration::from_secs(10);
/// Kubernetes' largest restart delay.
pub const DEFAULT_MAX: Duration = Duration::from_secs(300);

/// The shape of a backoff: an initial delay doubling up to a cap (configurable for tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub initial: Duration,
    /// The largest delay.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: DEFAULT_INITIAL,
            max: DEFAULT_MAX,
        }
    }
}

impl Backoff {
    /// The delay after `step` earlier delays: `initial * 2^step`, capped at `max`.
    pub fn delay(&self, step: u32) -> Duration {
        let factor = 1u32.checked_shl(step.min(31)).unwrap_or(u32::MAX);
        self.initial
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }
}

/// The restart history of one container: how long to wait before the next restart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CrashLoop {
    /// Exits since the sequence last started.
    exits: u32,
}

impl CrashLoop {
    /// Records an exit after running for `ran_for`; returns the delay before restarting.
    pub fn next_delay(&mut self, backoff: &Backoff, ran_for: Duration) -> Duration {
        if ran_for >= backoff.max * 2 {
            self.exits = 0;
        }
        self.exits += 1;
        match self.exits {
            1 => Duration::ZERO,
            n => backoff.delay(n - 2),
        }
    }
}

/// Failures of one step that is retried (an image pull, a container creation).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Retries {
    failures: u32,
}

impl Retries {
    /// Records a failure; returns the delay before the next attempt.
    pub fn next_delay(&mut self, backoff: &Backoff) -> Duration {
        let delay = backoff.delay(self.failures);
        self.failures += 1;
        delay
    }

    /// Forgets the failures (the step succeeded).
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn delays_double_from_ten_seconds_up_to_five_minutes() {
        let b = Backoff::default();
        let table = [
            (0, 10),
            (1, 20),
            (2, 40),
            (3, 80),
            (4, 160),
            (5, 300),
            (6, 300),
            (40, 300),
        ];
        for (step, want) in table {
            assert_eq!(b.delay(step), S(want), "step {step}");
        }
    }

    #[test]
    fn a_crash_loop_restarts_at_once_then_backs_off() {
        let b = Backoff::default();
        let mut c = CrashLoop::default();
        let got: Vec<u64> = (0..8).map(|_| c.next_delay(&b, S(1)).as_secs()).collect();
        assert_eq!(got, [0, 10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn a_long_run_resets_the_crash_loop() {
        let b = Backoff::default();
        let mut c = CrashLoop::default();
        c.next_delay(&b, S(1));
        c.next_delay(&b, S(1));
        assert_eq!(c.next_delay(&b, S(1)), S(20));
        assert_eq!(c.next_delay(&b, S(600)), Duration::ZERO, "ran 10 minutes");
        assert_eq!(c.next_delay(&b, S(1)), S(10));
    }

    #[test]
    fn retries_back_off_from_the_first_failure_and_reset() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(350),
        };
        let mut r = Retries::default();
        let got: Vec<u128> = (0..4).map(|_| r.next_delay(&b).as_millis()).collect();
        assert_eq!(got, [100, 200, 350, 350]);
        r.reset();
        assert_eq!(r.next_delay(&b), Duration::from_millis(100));
    }
}
