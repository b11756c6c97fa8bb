//! Kubernetes time values: RFC 3339 timestamps at second precision, Go-style
//! durations (`window`), and kubectl's short human ages (`5m`, `3d`).

use std::fmt;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A `metav1.Time`: serialised as `2006-01-02T15:04:05Z`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Time(pub Timestamp);

impl Time {
    /// The current time, truncated to whole seconds as Kubernetes stores it.
    pub fn now() -> Self {
        Self::from_millis(now_millis())
    }

    /// A time from milliseconds since the Unix epoch (truncated to seconds).
    pub fn from_millis(ms: i64) -> Self {
        let secs = ms.div_euclid(1000);
        Time(Timestamp::from_second(secs).unwrap_or(Timestamp::UNIX_EPOCH))
    }

    /// Milliseconds since the Unix epoch.
    pub fn as_millis(&self) -> i64 {
        self.0.as_millisecond()
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.strftime("%Y-%m-%dT%H:%M:%SZ"))
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        let ts: Timestamp = text.parse().map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid timestamp {text:?} (want RFC 3339, e.g. 2024-01-15T10:30:00Z): {e}"
            ))
        })?;
        Ok(Time::from_millis(ts.as_millisecond()))
    }
}

/// Milliseconds since the Unix epoch, now.
pub fn now_millis() -> i64 {
    Timestamp::now().as_millisecond()
}

/// Formats a duration the way Go's `time.Duration.String()` does (`"15.012s"`,
/// `"1m0.5s"`, `"0s"`), as metrics-server writes `window`.
pub fn go_duration(d: Duration) -> String {
    let total_ns = d.as_nanos();
    if total_ns == 0 {
        return "0s".to_string();
    }
    if total_ns < 1_000 {
        return format!("{total_ns}ns");
    }
    if total_ns < 1_000_000 {
        return format!("{}µs", trim_fraction(total_ns, 1_000));
    }
    if total_ns < 1_000_000_000 {
        return format!("{}ms", trim_fraction(total_ns, 1_000_000));
    }
    let hours = total_ns / 3_600_000_000_000;
    let rem = total_ns % 3_600_000_000_000;
    let minutes = rem / 60_000_000_000;
    let sec_ns = rem % 60_000_000_000;
    let secs = trim_fraction(sec_ns, 1_000_000_000);
    match (hours, minutes) {
        (0, 0) => format!("{secs}s"),
        (0, m) => format!("{m}m{secs}s"),
        (h, m) => format!("{h}h{m}m{secs}s"),
    }
}

/// `value / unit` as a decimal with trailing zeros removed (`1500, 1000` → `"1.5"`).
fn trim_fraction(value: u128, unit: u128) -> String {
    let whole = value / unit;
    let frac = value % unit;
    if frac == 0 {
        return whole.to_string();
    }
    let width = unit.ilog10() as usize;
    let digits = format!("{frac:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

/// kubectl's `duration.HumanDuration`: the short age shown in an AGE column.
pub fn human_age(d: Duration) -> String {
    let secs = d.as_secs();
    let minutes = secs / 60;
    let hours = secs / 3600;
    let days = hours / 24;
    let years = days / 365;
    if secs < 60 * 2 {
        format!("{secs}s")
    } else if minutes < 10 {
        let s = secs % 60;
        if s == 0 {
            format!("{minutes}m")
        } else {
            format!("{minutes}m{s}s")
        }
    } else if minutes < 60 * 3 {
        format!("{minutes}m")
    } else if hours < 8 {
        let m = minutes % 60;
        if m == 0 {
            format!("{hours}h")
        } else {
            format!("{hours}h{m}m")
        }
    } else if hours < 48 {
        format!("{hours}h")
    } else if hours < 24 * 8 {
        let h = hours % 24;
        if h == 0 {
            format!("{days}d")
        } else {
            format!("{days}d{h}h")
        }
    } else if hours < 24 * 365 * 2 {
        format!("{days}d")
    } else if hours < 24 * 365 * 8 {
        let dy = days % 365;
        if dy == 0 {
            format!("{years}y")
        } else {
            format!("{years}y{dy}d")
        }
    } else {
        format!("{years}y")
    }
}

/// The age of something created at `created_ms`, seen at `now_ms` (never negative).
pub fn age(created_ms: i64, now_ms: i64) -> String {
    let ms = now_ms.saturating_sub(created_ms).max(0) as u64;
    human_age(Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations_match_go() {
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_millis(15_012)), "15.012s");
        assert_eq!(go_duration(Duration::from_secs(15)), "15s");
        assert_eq!(go_duration(Duration::from_millis(60_500)), "1m0.5s");
        assert_eq!(go_duration(Duration::from_millis(1)), "1ms");
        assert_eq!(go_duration(Duration::from_micros(1500)), "1.5ms");
        assert_eq!(go_duration(Duration::from_secs(3723)), "1h2m3s");
    }

    #[test]
    fn human_ages_match_kubectl() {
        assert_eq!(human_age(Duration::from_secs(5)), "5s");
        assert_eq!(human_age(Duration::from_secs(119)), "119s");
        assert_eq!(human_age(Duration::from_secs(150)), "2m30s");
        assert_eq!(human_age(Duration::from_secs(600)), "10m");
        assert_eq!(human_age(Duration::from_secs(4 * 3600 + 60)), "4h1m");
        assert_eq!(human_age(Duration::from_secs(30 * 3600)), "30h");
        assert_eq!(human_age(Duration::from_secs(3 * 86400)), "3d");
        assert_eq!(human_age(Duration::from_secs(20 * 86400)), "20d");
    }

    #[test]
    fn time_round_trips_at_second_precision() {
        let t: Time = serde_json::from_str("\"2024-01-15T10:30:00Z\"").unwrap();
        assert_eq!(
            serde_json::to_string(&t).unwrap(),
            "\"2024-01-15T10:30:00Z\""
        );
        assert!(serde_json::from_str::<Time>("\"yesterday\"").is_err());
    }
}
