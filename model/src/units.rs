//! Human units used in pipeline files: durations (`10s`, `250ms`, `2m`), byte sizes
//! (`512MiB`, `1G`, `4096`) and percentages (`25%`).
//!
//! Each is a newtype that (de)serializes from and to its human spelling, so a pipeline file
//! reads as a person would write it while code crossing module boundaries sees a named unit.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a unit string could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {kind} `{input}`: expected {expected}")]
pub struct UnitError {
    /// Which kind of value was being parsed (`duration`, `size`, `percentage`).
    pub kind: &'static str,
    /// The text that failed to parse.
    pub input: String,
    /// What would have been accepted.
    pub expected: &'static str,
}

/// Splits `"512MiB"` into `("512", "MiB")`.
fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.' || *c == '-' || *c == '+'))
        .map_or(s.len(), |(i, _)| i);
    (s[..end].trim(), s[end..].trim())
}

/// A wall-clock duration written as `500ms`, `10s`, `2m`, `1h` or `1.5s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    const EXPECTED: &'static str =
        "a positive number followed by a unit: us, ms, s, m or h (e.g. `10s`)";

    /// The duration in milliseconds, saturating.
    pub fn as_millis_u64(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }

    /// A duration of `ms` milliseconds.
    pub fn from_millis(ms: u64) -> Self {
        Self(Duration::from_millis(ms))
    }
}

impl FromStr for HumanDuration {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || UnitError {
            kind: "duration",
            input: s.to_owned(),
            expected: Self::EXPECTED,
        };
        let (num, unit) = split_number(s.trim());
        let value: f64 = num.parse().map_err(|_| err())?;
        if !value.is_finite() || value < 0.0 {
            return Err(err());
        }
        let secs = match unit {
            "us" | "µs" => value / 1e6,
            "ms" => value / 1e3,
            "s" => value,
            "m" | "min" => value * 60.0,
            "h" => value * 3600.0,
            _ => return Err(err()),
        };
        Ok(Self(Duration::try_from_secs_f64(secs).map_err(|_| err())?))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) && ms > 0 {
            write!(f, "{}s", ms / 1000)
        } else if self.0.subsec_nanos().is_multiple_of(1_000_000) {
            write!(f, "{ms}ms")
        } else {
            write!(f, "{}us", self.0.as_micros())
        }
    }
}

/// A size in bytes written as `4096`, `64KiB`, `512MiB`, `2GiB`, `1GB`, `100M`.
/// `K`, `M`, `G`, `T` without `i` are binary (as Docker and QEMU read them), `KB`, `MB`… decimal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub u64);

impl Bytes {
    const EXPECTED: &'static str = "a whole number of bytes, optionally with a unit: B, KiB, MiB, GiB, TiB, PiB, K, M, G, KB, MB, GB (e.g. `512MiB`)";

    /// The size in bytes.
    pub fn get(self) -> u64 {
        self.0
    }
}

impl FromStr for Bytes {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || UnitError {
            kind: "size",
            input: s.to_owned(),
            expected: Self::EXPECTED,
        };
        let (num, unit) = split_number(s.trim());
        let value: f64 = num.parse().map_err(|_| err())?;
        if !value.is_finite() || value < 0.0 {
            return Err(err());
        }
        let mult: f64 = match unit {
            "" | "B" => 1.0,
            "KiB" | "K" | "k" => 1024.0,
            "MiB" | "M" => 1024.0 * 1024.0,
            "GiB" | "G" => 1024.0 * 1024.0 * 1024.0,
            "TiB" | "T" => 1024.0_f64.powi(4),
            "PiB" | "P" => 1024.0_f64.powi(5),
            "KB" | "kB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            "TB" => 1e12,
            "PB" => 1e15,
            _ => return Err(err()),
        };
        let bytes = (value * mult).round();
        if bytes > u64::MAX as f64 {
            return Err(err());
        }
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Ok(Self(bytes as u64))
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(&str, u64); 4] = [
            ("TiB", 1 << 40),
            ("GiB", 1 << 30),
            ("MiB", 1 << 20),
            ("KiB", 1 << 10),
        ];
        for (name, size) in UNITS {
            if self.0 >= size && self.0.is_multiple_of(size) {
                return write!(f, "{}{name}", self.0 / size);
            }
        }
        write!(f, "{}", self.0)
    }
}

/// A percentage written as `25%` (or a bare fraction such as `0.25`), stored as a fraction.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Percent(pub f64);

impl Percent {
    const EXPECTED: &'static str = "a percentage such as `25%` or a fraction such as `0.25`";

    /// The value as a fraction (`25%` → 0.25).
    pub fn fraction(self) -> f64 {
        self.0
    }
}

impl FromStr for Percent {
    type Err = UnitError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || UnitError {
            kind: "percentage",
            input: s.to_owned(),
            expected: Self::EXPECTED,
        };
        let t = s.trim();
        let (num, div) = match t.strip_suffix('%') {
            Some(n) => (n.trim(), 100.0),
            None => (t, 1.0),
        };
        let value: f64 = num.parse().map_err(|_| err())?;
        if !value.is_finite() {
            return Err(err());
        }
        Ok(Self(value / div))
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}%", self.0 * 100.0)
    }
}

/// Implements serde and JSON Schema for a unit newtype; the schema admits bare numbers only
/// where the parser gives them a meaning (`Bytes`, `Percent`: yes; `HumanDuration`: no, a
/// duration needs its unit).
macro_rules! human_unit {
    ($ty:ty, $pattern:expr, $desc:expr) => {
        human_unit!($ty, $pattern, $desc, [ { "type": "string", "pattern": $pattern }, { "type": "number", "minimum": 0 } ]);
    };
    ($ty:ty, $pattern:expr, $desc:expr, $any_of:tt) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;
                impl serde::de::Visitor<'_> for V {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str(<$ty>::EXPECTED)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(|e: UnitError| E::custom(e))
                    }
                    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<$ty, E> {
                        self.visit_str(&v.to_string())
                    }
                    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<$ty, E> {
                        self.visit_str(&v.to_string())
                    }
                    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<$ty, E> {
                        self.visit_str(&v.to_string())
                    }
                }
                d.deserialize_any(V)
            }
        }
        impl JsonSchema for $ty {
            fn schema_name() -> std::borrow::Cow<'static, str> {
                stringify!($ty).into()
            }
            fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
                schemars::json_schema!({
                    "description": $desc,
                    "anyOf": $any_of
                })
            }
        }
    };
}

human_unit!(
    HumanDuration,
    r"^\s*[0-9.]+\s*(us|µs|ms|s|m|min|h)\s*$",
    "A duration with its unit, such as `10s`, `250ms`, `2m` (a bare number is refused).",
    [ { "type": "string", "pattern": r"^\s*[0-9.]+\s*(us|µs|ms|s|m|min|h)\s*$" } ]
);
human_unit!(
    Bytes,
    r"^\s*[0-9.]+\s*(B|KiB|MiB|GiB|TiB|K|k|M|G|T|KB|kB|MB|GB|TB)?\s*$",
    "A size such as `512MiB`, `1GiB`, `4096`."
);
human_unit!(
    Percent,
    r"^\s*-?[0-9.]+\s*%?\s*$",
    "A percentage such as `25%`."
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            "10s".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(10)
        );
        assert_eq!(
            "250ms".parse::<HumanDuration>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!(
            "1.5s".parse::<HumanDuration>().unwrap().0,
            Duration::from_millis(1500)
        );
        assert_eq!(
            "2m".parse::<HumanDuration>().unwrap().0,
            Duration::from_secs(120)
        );
        assert!("10 parsecs".parse::<HumanDuration>().is_err());
        assert!("10".parse::<HumanDuration>().is_err());
        assert!("-1s".parse::<HumanDuration>().is_err());
        assert_eq!(HumanDuration::from_millis(1500).to_string(), "1500ms");
        assert_eq!(HumanDuration::from_millis(2000).to_string(), "2s");
    }

    #[test]
    fn sizes() {
        assert_eq!("512MiB".parse::<Bytes>().unwrap().0, 512 << 20);
        assert_eq!("1G".parse::<Bytes>().unwrap().0, 1 << 30);
        assert_eq!("1GB".parse::<Bytes>().unwrap().0, 1_000_000_000);
        assert_eq!("4096".parse::<Bytes>().unwrap().0, 4096);
        assert!("12 furlongs".parse::<Bytes>().is_err());
        assert_eq!(Bytes(512 << 20).to_string(), "512MiB");
    }

    #[test]
    fn percents() {
        assert!(("25%".parse::<Percent>().unwrap().0 - 0.25).abs() < 1e-12);
        assert!(("0.5".parse::<Percent>().unwrap().0 - 0.5).abs() < 1e-12);
        assert!("lots".parse::<Percent>().is_err());
    }

    proptest::proptest! {
        #[test]
        fn bytes_round_trip(n in 0u64..(1u64 << 50)) {
            let b = Bytes(n);
            proptest::prop_assert_eq!(b.to_string().parse::<Bytes>().unwrap(), b);
        }
        #[test]
        fn durations_round_trip(ms in 1u64..10_000_000) {
            let d = HumanDuration::from_millis(ms);
            proptest::prop_assert_eq!(d.to_string().parse::<HumanDuration>().unwrap(), d);
        }
    }
}
