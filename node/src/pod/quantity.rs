//! Kubernetes resource quantities as the agent needs them: `limits.memory` in bytes and
//! `limits.cpu` in millicores.

/// Bytes of a memory quantity (`64Mi`, `1G`, `128974848`, `129e6`); `None` if malformed.
pub fn memory_bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    let split = q
        .find(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E')
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(split);
    let factor: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        "m" => 1e-3,
        _ => return None,
    };
    let n: f64 = number.parse().ok()?;
    (n >= 0.0).then(|| (n * factor).ceil() as u64)
}

/// Millicores of a CPU quantity (`500m`, `1`, `0.25`); `None` if malformed.
pub fn cpu_millis(q: &str) -> Option<u64> {
    let q = q.trim();
    let millis = match q.strip_suffix('m') {
        Some(n) => n.parse::<f64>().ok()?,
        None => q.parse::<f64>().ok()? * 1000.0,
    };
    (millis >= 0.0).then(|| millis.ceil() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_parse() {
        let mem = [
            ("64Mi", Some(64 << 20)),
            ("1Gi", Some(1 << 30)),
            ("1G", Some(1_000_000_000)),
            ("128974848", Some(128_974_848)),
            ("129e6", Some(129_000_000)),
            ("1.5Ki", Some(1536)),
            ("lots", None),
            ("5X", None),
        ];
        for (q, want) in mem {
            assert_eq!(memory_bytes(q), want, "{q}");
        }
        let cpu = [
            ("500m", Some(500)),
            ("1", Some(1000)),
            ("0.25", Some(250)),
            ("x", None),
        ];
        for (q, want) in cpu {
            assert_eq!(cpu_millis(q), want, "{q}");
        }
    }
}
