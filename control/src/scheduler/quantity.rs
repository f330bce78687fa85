//! Kubernetes resource quantities (`100m`, `2`, `64Mi`, `1G`, `1e3`, `0.5`), parsed exactly.
//!
//! `k8s-openapi`'s `Quantity` only wraps the string, so the scheduler parses it here. A quantity
//! is kept as an exact decimal mantissa with a power of ten and a power of two, and converted to
//! whole units (bytes, pods) or thousandths (millicores) rounding *up*, as Kubernetes'
//! `Value()`/`MilliValue()` do, so `0.1m` CPU still counts as one millicore.

use serde_json::Value;

/// Why a quantity string was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QuantityError {
    /// The string does not follow the quantity grammar.
    #[error(
        "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$': {0:?}"
    )]
    Syntax(String),
}

/// A parsed quantity: `mantissa × 10^exp10 × 2^exp2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quantity {
    mantissa: i128,
    exp10: i32,
    exp2: u32,
}

impl Quantity {
    /// Parses the Kubernetes quantity grammar: a signed decimal number followed by a binary SI
    /// suffix (`Ki`…`Ei`), a decimal SI suffix (`n`, `u`, `m`, `k`, `M`…`E`) or a decimal exponent
    /// (`e3`, `E-2`).
    pub fn parse(s: &str) -> Result<Quantity, QuantityError> {
        let err = || QuantityError::Syntax(s.to_string());
        let t = s.trim();
        let (negative, rest) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(num_end);
        if number.is_empty() || number == "." || number.matches('.').count() > 1 {
            return Err(err());
        }
        let (int_part, frac_part) = number.split_once('.').unwrap_or((number, ""));
        let mut mantissa: i128 = 0;
        let mut exp10: i32 = 0;
        for d in int_part.bytes().chain(frac_part.bytes()) {
            // Beyond 30 significant digits the rest only shifts the exponent (precision far past
            // anything a node or pod asks for).
            if mantissa >= 10i128.pow(30) {
                exp10 += 1;
            } else {
                mantissa = mantissa * 10 + i128::from(d - b'0');
            }
        }
        exp10 -= i32::try_from(frac_part.len()).map_err(|_| err())?;
        let mut exp2 = 0;
        match suffix {
            "" => {}
            "Ki" => exp2 = 10,
            "Mi" => exp2 = 20,
            "Gi" => exp2 = 30,
            "Ti" => exp2 = 40,
            "Pi" => exp2 = 50,
            "Ei" => exp2 = 60,
            "n" => exp10 -= 9,
            "u" => exp10 -= 6,
            "m" => exp10 -= 3,
            "k" => exp10 += 3,
            "M" => exp10 += 6,
            "G" => exp10 += 9,
            "T" => exp10 += 12,
            "P" => exp10 += 15,
            "E" => exp10 += 18,
            other if other.starts_with(['e', 'E']) => {
                let e: i32 = other[1..].parse().map_err(|_| err())?;
                if !other[1..]
                    .trim_start_matches(['+', '-'])
                    .bytes()
                    .all(|b| b.is_ascii_digit())
                {
                    return Err(err());
                }
                exp10 = exp10.checked_add(e).ok_or_else(err)?;
            }
            _ => return Err(err()),
        }
        Ok(Quantity {
            mantissa: if negative { -mantissa } else { mantissa },
            exp10,
            exp2,
        })
    }

    /// The value in units of `10^-scale`, rounded up (towards positive infinity) and saturated
    /// to `i64`.
    fn scaled(&self, scale: i32) -> i64 {
        let mut v = self.mantissa;
        let shift = self.exp2;
        if shift > 0 {
            v = v.checked_mul(1i128 << shift.min(100)).unwrap_or(if v < 0 {
                i128::MIN
            } else {
                i128::MAX
            });
        }
        let e = self.exp10 + scale;
        if e >= 0 {
            for _ in 0..e.min(40) {
                v = v
                    .checked_mul(10)
                    .unwrap_or(if v < 0 { i128::MIN } else { i128::MAX });
            }
        } else {
            let neg = -e;
            if neg > 38 {
                return i64::from(v > 0);
            }
            let div = 10i128.pow(neg as u32);
            let q = v.div_euclid(div);
            v = if v.rem_euclid(div) != 0 { q + 1 } else { q };
        }
        v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64
    }

    /// Whole units (bytes, pods), rounded up.
    pub fn value(&self) -> i64 {
        self.scaled(0)
    }

    /// Thousandths of a unit (millicores), rounded up.
    pub fn milli_value(&self) -> i64 {
        self.scaled(3)
    }
}

/// Reads a quantity from JSON: a string (the normal form) or a bare number.
pub fn from_json(v: &Value) -> Option<Quantity> {
    match v {
        Value::String(s) => Quantity::parse(s).ok(),
        Value::Number(n) => Quantity::parse(&n.to_string()).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities_convert_to_millis_and_units_like_kubernetes() {
        let cases: &[(&str, i64, i64)] = &[
            // (input, milli_value, value)
            ("100m", 100, 1),
            ("2", 2000, 2),
            ("0.5", 500, 1),
            ("1.5", 1500, 2),
            ("64Mi", 64 * 1024 * 1024 * 1000, 64 * 1024 * 1024),
            ("1Gi", (1 << 30) * 1000, 1 << 30),
            ("1G", 1_000_000_000_000, 1_000_000_000),
            ("1k", 1_000_000, 1000),
            ("1e3", 1_000_000, 1000),
            ("1E3", 1_000_000, 1000),
            ("2e-3", 2, 1),
            ("0.1m", 1, 1),
            ("250u", 1, 1),
            ("0", 0, 0),
            ("+3", 3000, 3),
            ("-1", -1000, -1),
            ("110", 110_000, 110),
            ("1.25Ki", 1280 * 1000, 1280),
            ("12345678901234567890123", i64::MAX, i64::MAX),
        ];
        for (input, milli, units) in cases {
            let q = Quantity::parse(input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(q.milli_value(), *milli, "milli of {input}");
            assert_eq!(q.value(), *units, "value of {input}");
        }
    }

    #[test]
    fn malformed_quantities_are_rejected() {
        for bad in [
            "", "m", "1.2.3", "1Xi", "abc", "1e", "1ee3", ".", "1 Gi", "1e3m",
        ] {
            assert!(Quantity::parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }

    #[test]
    fn json_numbers_and_strings_both_parse() {
        assert_eq!(
            from_json(&serde_json::json!("500m")).map(|q| q.milli_value()),
            Some(500)
        );
        assert_eq!(from_json(&serde_json::json!(4)).map(|q| q.value()), Some(4));
        assert_eq!(from_json(&serde_json::json!(null)), None);
    }
}
