//! Unit types used throughout experiments: durations, percentages, sizes and rates.
//!
//! Each type parses from the human form used in experiment files (`250ms`, `0.5%`,
//! `256MiB`, `200/s`, `10Mbit/s`) and displays back in a canonical form, so a value
//! survives a round trip through YAML, JSON and the agent wire format unchanged.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Why a unit string could not be parsed. The message says what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct UnitError {
    /// Human explanation, e.g. "expected a duration like `250ms`, `5s` or `2m`, found `5 parsecs`".
    pub message: String,
}

impl UnitError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

/// Splits `"250ms"` into `("250", "ms")`, accepting a decimal point in the number.
fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .char_indices()
        .find(|(_, c)| !(c.is_ascii_digit() || *c == '.'))
        .map_or(s.len(), |(i, _)| i);
    (&s[..end], s[end..].trim_start())
}

fn parse_non_negative(num: &str, whole: &str, expected: &str) -> Result<f64, UnitError> {
    let value: f64 = num
        .parse()
        .map_err(|_| UnitError::new(format!("expected {expected}, found `{whole}`")))?;
    if !value.is_finite() || value < 0.0 {
        return Err(UnitError::new(format!(
            "expected {expected}, found `{whole}`"
        )));
    }
    Ok(value)
}

macro_rules! string_serde {
    ($ty:ty) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let s = String::deserialize(deserializer)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A non-negative span of time, written `250ms`, `5s`, `2m` or `1h` (also `us`, `ns`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Duration(pub std::time::Duration);

impl Duration {
    /// The zero duration.
    pub const ZERO: Duration = Duration(std::time::Duration::ZERO);

    /// Builds a duration from whole milliseconds.
    pub const fn from_millis(ms: u64) -> Self {
        Self(std::time::Duration::from_millis(ms))
    }

    /// Builds a duration from whole seconds.
    pub const fn from_secs(s: u64) -> Self {
        Self(std::time::Duration::from_secs(s))
    }

    /// The standard library value.
    pub const fn std(self) -> std::time::Duration {
        self.0
    }
}

impl From<std::time::Duration> for Duration {
    fn from(d: std::time::Duration) -> Self {
        Self(d)
    }
}

impl From<Duration> for std::time::Duration {
    fn from(d: Duration) -> Self {
        d.0
    }
}

/// The longest duration any field takes: no experiment, window, timeout or lease needs
/// more than a day, and a larger value is a typo, not a plan.
pub const MAX_DURATION: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// The largest size any field takes (memory stress above the host's free memory is refused
/// by the agent; this bounds what a file can ask at all).
pub const MAX_BYTE_SIZE: u64 = 1 << 40;

/// The largest bandwidth cap, in bits per second.
pub const MAX_BANDWIDTH_BITS: u64 = 1_000_000_000_000;

impl FromStr for Duration {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "a duration like `250ms`, `5s` or `2m`";
        let t = s.trim();
        let (num, unit) = split_number(t);
        if num.is_empty() {
            return Err(UnitError::new(format!("expected {EXPECTED}, found `{s}`")));
        }
        let value = parse_non_negative(num, s, EXPECTED)?;
        let nanos_per_unit: f64 = match unit {
            "ns" => 1.0,
            "us" | "µs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            "" => {
                return Err(UnitError::new(format!(
                    "expected {EXPECTED}: `{s}` has no unit (add `ms`, `s`, `m` or `h`)"
                )));
            }
            other => {
                return Err(UnitError::new(format!(
                    "expected {EXPECTED}: unknown unit `{other}` in `{s}` (use `ns`, `us`, `ms`, `s`, `m` or `h`)"
                )));
            }
        };
        let nanos = value * nanos_per_unit;
        if nanos > MAX_DURATION.as_nanos() as f64 {
            return Err(UnitError::new(format!(
                "duration `{s}` is too long: at most 24h (no experiment, window, timeout or lease needs more)"
            )));
        }
        Ok(Self(std::time::Duration::from_nanos(nanos.round() as u64)))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let nanos = self.0.as_nanos();
        if nanos == 0 {
            return f.write_str("0s");
        }
        for (unit, per) in [
            ("h", 3_600_000_000_000u128),
            ("m", 60_000_000_000),
            ("s", 1_000_000_000),
            ("ms", 1_000_000),
            ("us", 1_000),
        ] {
            if nanos % per == 0 {
                return write!(f, "{}{unit}", nanos / per);
            }
        }
        write!(f, "{nanos}ns")
    }
}

string_serde!(Duration);

/// A fraction in `[0, 1]`, written `0.5%` or as a plain fraction such as `0.005`.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Percent(f64);

impl Percent {
    /// Builds a percentage from a fraction; `None` unless it is finite and in `[0, 1]`.
    pub fn from_fraction(fraction: f64) -> Option<Self> {
        (fraction.is_finite() && (0.0..=1.0).contains(&fraction)).then_some(Self(fraction))
    }

    /// The value as a fraction, e.g. `0.005` for `0.5%`.
    pub fn fraction(self) -> f64 {
        self.0
    }

    /// The value in percent, e.g. `0.5` for `0.5%`.
    pub fn percent(self) -> f64 {
        self.0 * 100.0
    }
}

impl FromStr for Percent {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "a percentage like `0.5%` or a fraction like `0.005`";
        let t = s.trim();
        let fraction = if let Some(num) = t.strip_suffix('%') {
            parse_non_negative(num.trim(), s, EXPECTED)? / 100.0
        } else {
            parse_non_negative(t, s, EXPECTED)?
        };
        Self::from_fraction(fraction).ok_or_else(|| {
            UnitError::new(format!(
                "expected a percentage between 0% and 100%, found `{s}`"
            ))
        })
    }
}

impl fmt::Display for Percent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Round away float noise such as 0.5% -> 0.49999999.
        let p = (self.0 * 100.0 * 1e9).round() / 1e9;
        write!(f, "{p}%")
    }
}

string_serde!(Percent);

/// A number of bytes, written `512B`, `64KiB`, `256MiB`, `1GiB` (or SI `MB`, `GB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct ByteSize(pub u64);

impl ByteSize {
    /// The size in bytes.
    pub fn bytes(self) -> u64 {
        self.0
    }
}

const BYTE_UNITS: &[(&str, u64)] = &[
    ("B", 1),
    ("KiB", 1 << 10),
    ("MiB", 1 << 20),
    ("GiB", 1 << 30),
    ("TiB", 1 << 40),
    ("KB", 1_000),
    ("MB", 1_000_000),
    ("GB", 1_000_000_000),
    ("TB", 1_000_000_000_000),
];

impl FromStr for ByteSize {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "a size like `256MiB`, `1GiB` or `512KB`";
        let t = s.trim();
        let (num, unit) = split_number(t);
        if num.is_empty() {
            return Err(UnitError::new(format!("expected {EXPECTED}, found `{s}`")));
        }
        let value = parse_non_negative(num, s, EXPECTED)?;
        let Some((_, per)) = BYTE_UNITS.iter().find(|(u, _)| *u == unit) else {
            return Err(UnitError::new(format!(
                "expected {EXPECTED}: unknown unit `{unit}` in `{s}` (use B, KiB, MiB, GiB, TiB, KB, MB, GB or TB)"
            )));
        };
        let bytes = value * *per as f64;
        if bytes > MAX_BYTE_SIZE as f64 {
            return Err(UnitError::new(format!(
                "size `{s}` is too large: at most 1TiB"
            )));
        }
        Ok(Self(bytes.round() as u64))
    }
}

impl fmt::Display for ByteSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, per) in [("GiB", 1u64 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)] {
            if self.0 >= per && self.0 % per == 0 {
                return write!(f, "{}{unit}", self.0 / per);
            }
        }
        write!(f, "{}B", self.0)
    }
}

string_serde!(ByteSize);

/// An event rate, written `200/s`, `12000/m` or `5/h`; stored per second.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd, Default)]
pub struct Rate(f64);

impl Rate {
    /// Builds a rate from events per second; `None` unless finite and positive.
    pub fn per_second(value: f64) -> Option<Self> {
        (value.is_finite() && value > 0.0).then_some(Self(value))
    }

    /// Events per second.
    pub fn as_per_second(self) -> f64 {
        self.0
    }
}

impl FromStr for Rate {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "a rate like `200/s`, `1200/m` or `10/h`";
        let t = s.trim();
        let Some((num, per)) = t.split_once('/') else {
            return Err(UnitError::new(format!(
                "expected {EXPECTED}: `{s}` has no `/s`, `/m` or `/h`"
            )));
        };
        let value = parse_non_negative(num.trim(), s, EXPECTED)?;
        let divisor = match per.trim() {
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            other => {
                return Err(UnitError::new(format!(
                    "expected {EXPECTED}: unknown period `/{other}` in `{s}`"
                )));
            }
        };
        Self::per_second(value / divisor)
            .ok_or_else(|| UnitError::new(format!("expected a rate above zero, found `{s}`")))
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/s", (self.0 * 1e6).round() / 1e6)
    }
}

string_serde!(Rate);

/// A network bandwidth, written `10Mbit/s`, `512kbit`, `1MiB/s` or `100KB/s`; stored in bits per second.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bandwidth(pub u64);

impl Bandwidth {
    /// Bits per second.
    pub fn bits_per_second(self) -> u64 {
        self.0
    }

    /// Bytes per second, rounded down.
    pub fn bytes_per_second(self) -> u64 {
        self.0 / 8
    }
}

impl FromStr for Bandwidth {
    type Err = UnitError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        const EXPECTED: &str = "a bandwidth like `10Mbit/s`, `512kbit` or `1MiB/s`";
        let t = s.trim();
        let t_unit = t.strip_suffix("/s").unwrap_or(t);
        let (num, unit) = split_number(t_unit);
        if num.is_empty() {
            return Err(UnitError::new(format!("expected {EXPECTED}, found `{s}`")));
        }
        let value = parse_non_negative(num, s, EXPECTED)?;
        let bits_per_unit: f64 = match unit {
            "bit" | "bps" => 1.0,
            "kbit" | "Kbit" => 1e3,
            "mbit" | "Mbit" => 1e6,
            "gbit" | "Gbit" => 1e9,
            other => match BYTE_UNITS.iter().find(|(u, _)| *u == other) {
                Some((_, per)) => *per as f64 * 8.0,
                None => {
                    return Err(UnitError::new(format!(
                        "expected {EXPECTED}: unknown unit `{other}` in `{s}` (use bit, kbit, Mbit, Gbit, B, KiB, MiB, KB or MB)"
                    )));
                }
            },
        };
        let bits = value * bits_per_unit;
        if bits < 1.0 {
            return Err(UnitError::new(format!(
                "expected a bandwidth of at least 1bit/s, found `{s}`"
            )));
        }
        if bits > MAX_BANDWIDTH_BITS as f64 {
            return Err(UnitError::new(format!(
                "bandwidth `{s}` is too large: at most 1000Gbit/s (a cap above any link caps nothing)"
            )));
        }
        Ok(Self(bits.round() as u64))
    }
}

impl fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, per) in [
            ("Gbit", 1_000_000_000u64),
            ("Mbit", 1_000_000),
            ("kbit", 1_000),
        ] {
            if self.0 >= per && self.0 % per == 0 {
                return write!(f, "{}{unit}/s", self.0 / per);
            }
        }
        write!(f, "{}bit/s", self.0)
    }
}

string_serde!(Bandwidth);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_and_round_trip() {
        assert_eq!(
            "250ms".parse::<Duration>().unwrap(),
            Duration::from_millis(250)
        );
        assert_eq!("2m".parse::<Duration>().unwrap(), Duration::from_secs(120));
        assert_eq!(
            "1.5s".parse::<Duration>().unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(Duration::from_millis(1500).to_string(), "1500ms");
        assert_eq!(Duration::from_secs(120).to_string(), "2m");
    }

    #[test]
    fn duration_errors_say_what_is_wrong() {
        let e = "5".parse::<Duration>().unwrap_err().to_string();
        assert!(e.contains("has no unit"), "{e}");
        let e = "5 parsecs".parse::<Duration>().unwrap_err().to_string();
        assert!(e.contains("unknown unit `parsecs`"), "{e}");
        let e = "-5s".parse::<Duration>().unwrap_err().to_string();
        assert!(e.contains("expected a duration"), "{e}");
    }

    #[test]
    fn percentages_accept_both_forms_and_reject_out_of_range() {
        assert_eq!("0.5%".parse::<Percent>().unwrap().fraction(), 0.005);
        assert_eq!("0.005".parse::<Percent>().unwrap().fraction(), 0.005);
        assert_eq!("0.5%".parse::<Percent>().unwrap().to_string(), "0.5%");
        assert!("120%".parse::<Percent>().is_err());
        assert!("1.5".parse::<Percent>().is_err());
    }

    #[test]
    fn sizes_rates_and_bandwidths_parse() {
        assert_eq!("256MiB".parse::<ByteSize>().unwrap().bytes(), 256 << 20);
        assert_eq!("200/s".parse::<Rate>().unwrap().as_per_second(), 200.0);
        assert_eq!("120/m".parse::<Rate>().unwrap().as_per_second(), 2.0);
        assert_eq!(
            "10Mbit/s".parse::<Bandwidth>().unwrap().bits_per_second(),
            10_000_000
        );
        assert_eq!(
            "1MiB/s".parse::<Bandwidth>().unwrap().bytes_per_second(),
            1 << 20
        );
        assert!("0/s".parse::<Rate>().is_err());
    }
}
