//! Instants: UTC, millisecond precision, RFC 3339 in and `...Z` with milliseconds out.

use chrono::{DateTime, SecondsFormat, Utc};

/// A point in time. Always UTC, always truncated to whole milliseconds.
pub type Instant = DateTime<Utc>;

/// Parses an RFC 3339 timestamp with any offset into a UTC instant truncated to milliseconds.
///
/// # Errors
/// Returns the parser's message when `s` is not RFC 3339.
pub fn parse_instant(s: &str) -> Result<Instant, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| truncate_ms(t.with_timezone(&Utc)))
        .map_err(|e| format!("'{s}' is not an RFC 3339 timestamp ({e})"))
}

/// Formats an instant as RFC 3339 UTC with milliseconds (`2026-01-31T09:00:00.000Z`).
pub fn format_instant(t: &Instant) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Drops everything below the millisecond.
pub fn truncate_ms(t: Instant) -> Instant {
    let ms = t.timestamp_millis();
    DateTime::from_timestamp_millis(ms).unwrap_or(t)
}

/// Milliseconds since the Unix epoch (timer scores, clock persistence).
pub fn to_millis(t: &Instant) -> i64 {
    t.timestamp_millis()
}

/// The instant `ms` milliseconds after the Unix epoch, if representable.
pub fn from_millis(ms: i64) -> Option<Instant> {
    DateTime::from_timestamp_millis(ms)
}

/// serde for `Instant` fields: RFC 3339 in, `Z` with milliseconds out.
pub mod ts {
    use super::{format_instant, parse_instant, Instant};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Instant, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_instant(t))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Instant, D::Error> {
        let s = String::deserialize(d)?;
        parse_instant(&s).map_err(serde::de::Error::custom)
    }
}

/// serde for `Option<Instant>` fields (null when absent).
pub mod ts_opt {
    use super::{format_instant, parse_instant, Instant};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<Instant>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => s.serialize_str(&format_instant(t)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Instant>, D::Error> {
        let s = Option::<String>::deserialize(d)?;
        s.map(|s| parse_instant(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_any_offset_and_prints_utc_millis() {
        let t = parse_instant("2024-01-31T10:00:00.123456+02:00").unwrap();
        assert_eq!(format_instant(&t), "2024-01-31T08:00:00.123Z");
    }

    #[test]
    fn refuses_non_rfc3339() {
        assert!(parse_instant("2024-01-31").is_err());
        assert!(parse_instant("yesterday").is_err());
    }
}
