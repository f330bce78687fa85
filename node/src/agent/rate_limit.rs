//! A token bucket that makes callers wait: kubelet's client-side limit on event writes
//! (`--event-qps`, `--event-burst`).

use std::time::Duration;

use tokio::time::Instant;

/// Allows `burst` operations at once, then `qps` per second; [`RateLimit::wait`] sleeps until
/// the next one is allowed. A `qps` of 0 (or less) means no limit.
#[derive(Debug)]
pub struct RateLimit {
    qps: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl RateLimit {
    /// A full bucket.
    pub fn new(qps: f64, burst: u32) -> RateLimit {
        let burst = f64::from(burst.max(1));
        RateLimit {
            qps,
            burst,
            tokens: burst,
            last: Instant::now(),
        }
    }

    /// Waits until one more operation is allowed, and takes it.
    pub async fn wait(&mut self) {
        if self.qps.is_nan() || self.qps <= 0.0 {
            return;
        }
        let now = Instant::now();
        let earned = now.duration_since(self.last).as_secs_f64() * self.qps;
        self.tokens = (self.tokens + earned).min(self.burst);
        self.last = now;
        if self.tokens < 1.0 {
            let missing = (1.0 - self.tokens) / self.qps;
            tokio::time::sleep(Duration::from_secs_f64(missing)).await;
            self.tokens = 1.0;
            self.last = Instant::now();
        }
        self.tokens -= 1.0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_burst_passes_at_once_then_the_rate_applies() {
        let mut limit = RateLimit::new(4.0, 10);
        let start = Instant::now();
        for _ in 0..10 {
            limit.wait().await;
        }
        // At 4/s without the burst these would take 2.25 s.
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "burst took {:?}",
            start.elapsed()
        );
        let before = Instant::now();
        limit.wait().await;
        limit.wait().await;
        let took = before.elapsed();
        assert!(
            took >= Duration::from_millis(450),
            "two more at 4/s took {took:?}"
        );
    }

    #[tokio::test]
    async fn zero_qps_is_unlimited() {
        let mut limit = RateLimit::new(0.0, 1);
        let start = Instant::now();
        for _ in 0..1000 {
            limit.wait().await;
        }
        assert!(start.elapsed() < Duration::from_secs(1));
    }
}
