//! Resource quantities as users write them ("100m", "64Mi", "30s") and as the
//! scheduler and runtime use them (millicores, bytes, durations).
//!
//! Each newtype parses on deserialisation, so a bad quantity is rejected with the
//! field path (API) or line and column (manifest) where it was written, and
//! serialises back to a canonical string so stored objects read naturally.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::time::Duration;

/// CPU in millicores: "100m", "0.5", "2".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cpu(pub u64);

/// Memory in bytes: "64Mi", "1Gi", "500M", "1048576".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Memory(pub u64);

/// A duration written as "30s", "500ms", "2m", "1h".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timeout(pub Duration);

impl Cpu {
    pub fn millis(self) -> u64 {
        self.0
    }
}

impl Memory {
    pub fn bytes(self) -> u64 {
        self.0
    }
}

/// Splits "12.5Mi" into ("12.5", "Mi").
fn split_number(s: &str) -> (&str, &str) {
    let end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    (&s[..end], &s[end..])
}

/// Parses a non-negative decimal and multiplies it by `scale`, rejecting results that
/// are not whole units (e.g. "0.5m" of CPU) or that overflow.
fn scaled(number: &str, scale: u64) -> Option<u64> {
    if number.is_empty() || number.starts_with('.') || number.ends_with('.') {
        return None;
    }
    let (whole, frac) = number.split_once('.').unwrap_or((number, ""));
    if frac.contains('.') {
        return None;
    }
    let whole: u64 = whole.parse().ok()?;
    let mut value = whole.checked_mul(scale)?;
    let mut divisor = 1u64;
    let mut frac_value = 0u64;
    for digit in frac.chars() {
        divisor = divisor.checked_mul(10)?;
        frac_value = frac_value * 10 + u64::from(digit.to_digit(10)?);
    }
    let frac_scaled = (frac_value as u128) * (scale as u128);
    if !frac_scaled.is_multiple_of(divisor as u128) {
        return None;
    }
    value = value.checked_add((frac_scaled / divisor as u128) as u64)?;
    Some(value)
}

impl std::str::FromStr for Cpu {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid cpu quantity {s:?}: write millicores like \"250m\" or cores like \"0.5\" or \"2\""
            )
        };
        let (number, unit) = split_number(s.trim());
        let millis = match unit {
            "m" => scaled(number, 1),
            "" => scaled(number, 1000),
            _ => None,
        }
        .ok_or_else(bad)?;
        Ok(Cpu(millis))
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_multiple_of(1000) && self.0 > 0 {
            write!(f, "{}", self.0 / 1000)
        } else {
            write!(f, "{}m", self.0)
        }
    }
}

const MEMORY_UNITS: [(&str, u64); 10] = [
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("k", 1_000),
    ("K", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
    ("", 1),
];

impl std::str::FromStr for Memory {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || {
            format!(
                "invalid memory quantity {s:?}: write bytes with a unit like \"64Mi\", \"1Gi\" or \"500M\""
            )
        };
        let (number, unit) = split_number(s.trim());
        let scale = MEMORY_UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, scale)| *scale)
            .ok_or_else(bad)?;
        scaled(number, scale).map(Memory).ok_or_else(bad)
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (unit, scale) in [
            ("Ti", 1u64 << 40),
            ("Gi", 1 << 30),
            ("Mi", 1 << 20),
            ("Ki", 1 << 10),
        ] {
            if self.0 >= scale && self.0.is_multiple_of(scale) {
                return write!(f, "{}{unit}", self.0 / scale);
            }
        }
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for Timeout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let parsed = humantime::parse_duration(s.trim()).map_err(|e| {
            format!("invalid duration {s:?} ({e}): write a number with a unit like \"30s\", \"500ms\" or \"2m\"")
        })?;
        if parsed.is_zero() {
            return Err(format!("invalid duration {s:?}: must be greater than zero"));
        }
        Ok(Timeout(parsed))
    }
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        match millis {
            m if m % 3_600_000 == 0 => write!(f, "{}h", m / 3_600_000),
            m if m % 60_000 == 0 => write!(f, "{}m", m / 60_000),
            m if m % 1000 == 0 => write!(f, "{}s", m / 1000),
            m => write!(f, "{m}ms"),
        }
    }
}

/// Serialises as the canonical string; deserialises from a string (or a bare number
/// for CPU cores and memory bytes, as Kubernetes accepts).
macro_rules! string_quantity {
    ($ty:ty, $expecting:literal) => {
        impl Serialize for $ty {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $ty {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct Visit;
                impl serde::de::Visitor<'_> for Visit {
                    type Value = $ty;
                    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                        f.write_str($expecting)
                    }
                    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$ty, E> {
                        v.parse().map_err(E::custom)
                    }
                    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<$ty, E> {
                        v.to_string().parse().map_err(E::custom)
                    }
                    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<$ty, E> {
                        v.to_string().parse().map_err(E::custom)
                    }
                    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<$ty, E> {
                        v.to_string().parse().map_err(E::custom)
                    }
                }
                d.deserialize_any(Visit)
            }
        }
    };
}

string_quantity!(Cpu, "a cpu quantity such as \"250m\" or \"2\"");
string_quantity!(Memory, "a memory quantity such as \"64Mi\"");
string_quantity!(Timeout, "a duration such as \"30s\"");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_parses_millis_and_cores() {
        assert_eq!("100m".parse::<Cpu>(), Ok(Cpu(100)));
        assert_eq!("0.5".parse::<Cpu>(), Ok(Cpu(500)));
        assert_eq!("2".parse::<Cpu>(), Ok(Cpu(2000)));
        assert_eq!("1.25".parse::<Cpu>(), Ok(Cpu(1250)));
        for bad in ["12 parsecs", "", "m", "0.5m", "-1", "1.2.3", "1e3", ".5"] {
            assert!(bad.parse::<Cpu>().is_err(), "{bad} should be rejected");
        }
        assert_eq!(Cpu(100).to_string(), "100m");
        assert_eq!(Cpu(2000).to_string(), "2");
        assert_eq!(Cpu(0).to_string(), "0m");
    }

    #[test]
    fn memory_parses_binary_and_decimal_units() {
        assert_eq!("64Mi".parse::<Memory>(), Ok(Memory(64 << 20)));
        assert_eq!("1Gi".parse::<Memory>(), Ok(Memory(1 << 30)));
        assert_eq!("1.5Gi".parse::<Memory>(), Ok(Memory(3 << 29)));
        assert_eq!("500M".parse::<Memory>(), Ok(Memory(500_000_000)));
        assert_eq!("4096".parse::<Memory>(), Ok(Memory(4096)));
        for bad in ["64 MB", "Mi", "1.5", "12 parsecs", "64mi"] {
            assert!(bad.parse::<Memory>().is_err(), "{bad} should be rejected");
        }
        assert_eq!(Memory(64 << 20).to_string(), "64Mi");
        assert_eq!(Memory(1000).to_string(), "1000");
    }

    #[test]
    fn timeout_roundtrips() {
        let t: Timeout = "30s".parse().expect("valid");
        assert_eq!(t.0, Duration::from_secs(30));
        assert_eq!(t.to_string(), "30s");
        assert_eq!(
            "1500ms".parse::<Timeout>().map(|t| t.to_string()),
            Ok("1500ms".into())
        );
        assert!("0s".parse::<Timeout>().is_err());
        assert!("soon".parse::<Timeout>().is_err());
    }

    #[test]
    fn deserialises_numbers_and_strings() {
        let cpu: Cpu = serde_json::from_str("2").expect("number");
        assert_eq!(cpu, Cpu(2000));
        let mem: Memory = serde_json::from_str("\"32Mi\"").expect("string");
        assert_eq!(mem, Memory(32 << 20));
        assert!(serde_json::from_str::<Cpu>("\"fast\"").is_err());
    }
}
