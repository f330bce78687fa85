//! Usage from two points, as metrics-server computes it: CPU is the rate of the cumulative
//! counter between the points, memory the later working set. Plus the text forms the API
//! answers with: quantities as `resource.Quantity` prints them and windows as Go's
//! `time.Duration` does.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::sample::Point;

/// The usage of a node or container over a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Usage {
    /// CPU, in nanocores (billionths of a core), truncated.
    pub nanocores: u64,
    /// Working-set memory at the end of the window, in bytes.
    pub memory_bytes: u64,
    /// The end of the window.
    pub timestamp: DateTime<Utc>,
    /// The window's length.
    pub window: Duration,
}

/// The usage between two points of the same node or container, or `None` when they do not
/// make a window: `last` is not later than `prev`, the CPU counter went down, or the
/// container restarted in between (its start time changed).
pub fn usage(prev: &Point, last: &Point) -> Option<Usage> {
    let window = (last.time - prev.time).to_std().ok()?;
    if window.is_zero() || last.cpu_seconds < prev.cpu_seconds {
        return None;
    }
    if let (Some(a), Some(b)) = (prev.start_time, last.start_time)
        && a != b
    {
        return None;
    }
    // As metrics-server: cumulative nanoseconds (whole), their difference over the window.
    let nanos = |s: f64| (s * 1e9) as u64;
    let used = nanos(last.cpu_seconds).saturating_sub(nanos(prev.cpu_seconds));
    let nanocores = (used as f64 / window.as_secs_f64()) as u64;
    Some(Usage {
        nanocores,
        memory_bytes: last.memory_bytes as u64,
        timestamp: last.time,
        window,
    })
}

/// CPU as metrics-server's `resource.Quantity` (DecimalSI, scale -9) prints it: the shortest
/// exact form among `n`, `u`, `m`, whole cores and `k`, e.g. `12345n`, `150u`, `12m`, `2`, `0`.
pub fn cpu_quantity(nanocores: u64) -> String {
    if nanocores == 0 {
        return "0".into();
    }
    let mut n = nanocores;
    let mut suffix = 0;
    const SUFFIXES: [&str; 7] = ["n", "u", "m", "", "k", "M", "G"];
    while n.is_multiple_of(1000) && suffix + 1 < SUFFIXES.len() {
        n /= 1000;
        suffix += 1;
    }
    format!("{n}{}", SUFFIXES[suffix])
}

/// Memory as metrics-server's `resource.Quantity` (BinarySI) prints it: a whole number of the
/// largest binary unit that divides it (`64Ki`, `3Mi`, `1Gi`), plain bytes when 1024 does not
/// divide it or it is under 1024 (`1234500000`, `512`).
pub fn memory_quantity(bytes: u64) -> String {
    if bytes < 1024 {
        return bytes.to_string();
    }
    let mut n = bytes;
    let mut suffix = 0;
    const SUFFIXES: [&str; 7] = ["", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei"];
    while n.is_multiple_of(1024) && suffix + 1 < SUFFIXES.len() {
        n /= 1024;
        suffix += 1;
    }
    format!("{n}{}", SUFFIXES[suffix])
}

/// A duration as Go's `time.Duration.String` writes it (the JSON form of `metav1.Duration`):
/// `1.5s`, `1m0.25s`, `1h2m3s`, `750ms`, `0s`.
pub fn go_duration(d: Duration) -> String {
    let nanos = d.as_nanos();
    if nanos == 0 {
        return "0s".into();
    }
    if nanos < 1_000_000_000 {
        let (unit, scale) = match nanos {
            n if n < 1_000 => return format!("{n}ns"),
            n if n < 1_000_000 => ("µs", 1_000),
            _ => ("ms", 1_000_000),
        };
        return format!("{}{unit}", fraction(nanos, scale));
    }
    let secs = nanos / 1_000_000_000;
    let (h, m) = (secs / 3600, secs / 60 % 60);
    let s = fraction(nanos % 60_000_000_000, 1_000_000_000);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, m) => format!("{m}m{s}s"),
        (h, m) => format!("{h}h{m}m{s}s"),
    }
}

/// `n / scale` with its fraction, trailing zeros dropped: `fraction(1_500, 1_000)` is `1.5`.
fn fraction(n: u128, scale: u128) -> String {
    let (whole, frac) = (n / scale, n % scale);
    if frac == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(cpu: f64, mem: f64, ms: i64, start: Option<f64>) -> Point {
        Point {
            cpu_seconds: cpu,
            memory_bytes: mem,
            time: DateTime::from_timestamp_millis(ms).unwrap(),
            start_time: start,
        }
    }

    #[test]
    fn cpu_is_the_counters_rate_and_memory_the_latest_reading() {
        let u = usage(
            &point(10.0, 100.0, 1_000, None),
            &point(10.5, 200.0, 3_000, None),
        )
        .unwrap();
        assert_eq!(
            u,
            Usage {
                nanocores: 250_000_000,
                memory_bytes: 200,
                timestamp: DateTime::from_timestamp_millis(3_000).unwrap(),
                window: Duration::from_secs(2),
            }
        );
        // A second and a bit: 12 ms of CPU over 1.2 s is 10 millicores.
        let u = usage(
            &point(0.0, 1.0, 0, Some(5.0)),
            &point(0.012, 1.0, 1_200, Some(5.0)),
        );
        assert_eq!(u.unwrap().nanocores, 10_000_000);
        // An idle container uses nothing.
        let u = usage(&point(3.0, 1.0, 0, None), &point(3.0, 1.0, 1_000, None));
        assert_eq!(u.unwrap().nanocores, 0);
    }

    #[test]
    fn points_that_make_no_window_give_no_usage() {
        let p = point(1.0, 1.0, 1_000, Some(5.0));
        // Same time, earlier time.
        assert_eq!(usage(&p, &p), None);
        assert_eq!(usage(&p, &point(2.0, 1.0, 500, Some(5.0))), None);
        // The counter went down (a reset).
        assert_eq!(usage(&p, &point(0.5, 1.0, 2_000, Some(5.0))), None);
        // The container restarted in between.
        assert_eq!(usage(&p, &point(2.0, 1.0, 2_000, Some(9.0))), None);
    }

    #[test]
    fn quantities_print_as_metrics_server_prints_them() {
        for (n, want) in [
            (0, "0"),
            (12_345, "12345n"),
            (1_500_000, "1500u"),
            (150_000, "150u"),
            (12_000_000, "12m"),
            (2_000_000_000, "2"),
            (2_500_000_000, "2500m"),
            (1_000, "1u"),
        ] {
            assert_eq!(cpu_quantity(n), want, "{n}");
        }
        for (b, want) in [
            (0, "0"),
            (512, "512"),
            (1023, "1023"),
            (1024, "1Ki"),
            (65_536, "64Ki"),
            (1_263_616, "1234Ki"),
            (67_108_864, "64Mi"),
            (1_234_500_000, "1234500000"),
            (3 << 30, "3Gi"),
        ] {
            assert_eq!(memory_quantity(b), want, "{b}");
        }
    }

    #[test]
    fn windows_print_as_go_durations() {
        for (d, want) in [
            (Duration::ZERO, "0s"),
            (Duration::from_nanos(12), "12ns"),
            (Duration::from_micros(1500), "1.5ms"),
            (Duration::from_nanos(2_500), "2.5µs"),
            (Duration::from_millis(750), "750ms"),
            (Duration::from_secs(1), "1s"),
            (Duration::from_millis(10_500), "10.5s"),
            (Duration::from_millis(1_002), "1.002s"),
            (Duration::from_millis(60_250), "1m0.25s"),
            (Duration::from_secs(120), "2m0s"),
            (Duration::from_secs(3723), "1h2m3s"),
            (Duration::from_secs(3600), "1h0m0s"),
        ] {
            assert_eq!(go_duration(d), want, "{d:?}");
        }
    }
}
