//! Small statistics the `flotilla bench ...` reports share.

use std::time::Duration;

/// The `p` quantile (0.0–1.0) of `sorted` by nearest rank; zero when it is empty.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// `d` in milliseconds.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The median of `sorted`; zero when it is empty.
pub fn median(sorted: &[Duration]) -> Duration {
    percentile(sorted, 0.5)
}
