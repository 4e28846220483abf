//! Instants: UTC, millisecond precision, RFC 3339 in and `...Z` with milliseconds out.

use chrono::{DateTime, SecondsFormat, Utc};

/// A point in time. Always UTC, always truncated to whole milliseconds.
pub type Instant = DateTime<Utc>;

/// The earliest instant recur takes, stores and prints: `0000-01-01T00:00:00.000Z`.
pub const MIN_MILLIS: i64 = -62_167_219_200_000;
/// The latest: `9999-12-31T23:59:59.999Z`. RFC 3339 has four-digit years, so nothing later can
/// be written as one and read back; every instant recur takes or computes stays in between.
pub const MAX_MILLIS: i64 = 253_402_300_799_999;

/// The latest instant recur represents (`9999-12-31T23:59:59.999Z`).
pub fn max_instant() -> Instant {
    DateTime::from_timestamp_millis(MAX_MILLIS).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// The earliest instant recur represents (`0000-01-01T00:00:00.000Z`).
pub fn min_instant() -> Instant {
    DateTime::from_timestamp_millis(MIN_MILLIS).unwrap_or(DateTime::<Utc>::MIN_UTC)
}

/// True when `t` lies within what RFC 3339 can write (years 0000 to 9999 in UTC).
pub fn representable(t: &Instant) -> bool {
    (MIN_MILLIS..=MAX_MILLIS).contains(&t.timestamp_millis())
}

/// `t` if representable, else None.
pub fn within_range(t: Instant) -> Option<Instant> {
    representable(&t).then_some(t)
}

/// `t + span`, held within the representable range: a computed deadline, retry or shifted end
/// that would pass year 9999 is the last representable instant, never an unwritable date.
pub fn saturating_add(t: Instant, span: chrono::Duration) -> Instant {
    t.checked_add_signed(span)
        .filter(representable)
        .unwrap_or_else(|| {
            if span < chrono::Duration::zero() {
                min_instant()
            } else {
                max_instant()
            }
        })
}

/// Parses an RFC 3339 timestamp with any offset into a UTC instant truncated to milliseconds.
///
/// # Errors
/// Returns the parser's message when `s` is not RFC 3339, or names the range when it is but
/// falls outside 0000-01-01T00:00:00Z..9999-12-31T23:59:59.999Z in UTC (such an instant
/// could not be written back as RFC 3339).
pub fn parse_instant(s: &str) -> Result<Instant, String> {
    if let Some(t) = parse_canonical(s) {
        return Ok(t);
    }
    let t = DateTime::parse_from_rfc3339(s)
        .map(|t| truncate_ms(t.with_timezone(&Utc)))
        .map_err(|e| format!("'{s}' is not an RFC 3339 timestamp ({e})"))?;
    within_range(t).ok_or_else(|| {
        format!(
            "'{s}' is outside the supported range (0000-01-01T00:00:00Z to \
             9999-12-31T23:59:59.999Z in UTC)"
        )
    })
}

/// Formats an instant as RFC 3339 UTC with milliseconds (`2026-01-31T09:00:00.000Z`).
pub fn format_instant(t: &Instant) -> String {
    let mut buf = [0u8; CANONICAL_LEN];
    match write_canonical(t, &mut buf) {
        Some(s) => s.to_string(),
        None => t.to_rfc3339_opts(SecondsFormat::Millis, true),
    }
}

/// The length of recur's own form of an instant, `YYYY-MM-DDTHH:MM:SS.mmmZ`.
const CANONICAL_LEN: usize = 24;

/// Where that form has its separators, and which.
const SEPARATORS: [(usize, u8); 7] = [
    (4, b'-'),
    (7, b'-'),
    (10, b'T'),
    (13, b':'),
    (16, b':'),
    (19, b'.'),
    (23, b'Z'),
];

/// Writes `t` in recur's own form into `buf` without allocating (the stored order holds seven
/// instants, written at every commit); None for a year outside 0000-9999 (then chrono's
/// formatter, which is the reference, writes it).
fn write_canonical<'a>(t: &Instant, buf: &'a mut [u8; CANONICAL_LEN]) -> Option<&'a str> {
    use chrono::{Datelike, Timelike};
    let year = u32::try_from(t.year()).ok().filter(|y| *y <= 9999)?;
    let mut put = |at: usize, value: u32, digits: usize| {
        let mut v = value;
        for i in (0..digits).rev() {
            buf[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(0, year, 4);
    put(5, t.month(), 2);
    put(8, t.day(), 2);
    put(11, t.hour(), 2);
    put(14, t.minute(), 2);
    put(17, t.second(), 2);
    put(20, t.timestamp_subsec_millis().min(999), 3);
    for (at, c) in SEPARATORS {
        buf[at] = c;
    }
    std::str::from_utf8(&buf[..]).ok()
}

/// Parses recur's own form (`YYYY-MM-DDTHH:MM:SS.mmmZ`, what it writes) without the general
/// RFC 3339 parser; None for anything else (then that parser decides).
fn parse_canonical(s: &str) -> Option<Instant> {
    let b = s.as_bytes();
    if b.len() != CANONICAL_LEN {
        return None;
    }
    for (at, c) in SEPARATORS {
        if b[at] != c {
            return None;
        }
    }
    let num = |at: usize, digits: usize| -> Option<u32> {
        b[at..at + digits].iter().try_fold(0u32, |n, d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    };
    let date =
        chrono::NaiveDate::from_ymd_opt(i32::try_from(num(0, 4)?).ok()?, num(5, 2)?, num(8, 2)?)?;
    let time =
        chrono::NaiveTime::from_hms_milli_opt(num(11, 2)?, num(14, 2)?, num(17, 2)?, num(20, 3)?)?;
    Some(date.and_time(time).and_utc())
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

/// Parses a humane duration: one or more `<integer><unit>` groups, units `ms`, `s`, `m`, `h`,
/// `d` (`"500ms"`, `"30s"`, `"1h30m"`, `"7d"`).
///
/// # Errors
/// A message saying what is malformed.
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration; write e.g. \"30s\"".to_string());
    }
    let mut rest = trimmed;
    let mut total = std::time::Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(format!("`{text}`: expected a number at `{rest}`"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{text}`: number too large"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit_ms: u64 = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("`{text}`: missing unit (ms, s, m, h or d)")),
            other => {
                return Err(format!(
                    "`{text}`: unknown unit `{other}` (ms, s, m, h or d)"
                ))
            }
        };
        rest = &rest[unit_len..];
        let ms = number
            .checked_mul(unit_ms)
            .ok_or_else(|| format!("`{text}`: too long"))?;
        total = total
            .checked_add(std::time::Duration::from_millis(ms))
            .ok_or_else(|| format!("`{text}`: too long"))?;
    }
    Ok(total)
}

/// serde for `Instant` fields: RFC 3339 in, `Z` with milliseconds out.
pub mod ts {
    use super::{format_instant, parse_instant, Instant};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Instant, s: S) -> Result<S::Ok, S::Error> {
        let mut buf = [0u8; super::CANONICAL_LEN];
        match super::write_canonical(t, &mut buf) {
            Some(text) => s.serialize_str(text),
            None => s.serialize_str(&format_instant(t)),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Instant, D::Error> {
        // Borrowed when the JSON has no escapes (always, for recur's own form).
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        parse_instant(&s).map_err(serde::de::Error::custom)
    }
}

/// serde for `Vec<Instant>` fields.
pub mod ts_vec {
    use super::Instant;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct One(#[serde(with = "super::ts")] Instant);

    pub fn serialize<S: Serializer>(t: &[Instant], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(t.iter().map(|i| One(*i)))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Instant>, D::Error> {
        Ok(Vec::<One>::deserialize(d)?
            .into_iter()
            .map(|o| o.0)
            .collect())
    }
}

/// serde for `Option<Instant>` fields (null when absent).
pub mod ts_opt {
    use super::{parse_instant, Instant};
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<Instant>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::ts::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Instant>, D::Error> {
        let s = Option::<std::borrow::Cow<'de, str>>::deserialize(d)?;
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

    proptest::proptest! {
        /// recur's own fast form is exactly chrono's RFC 3339 with milliseconds, both ways.
        #[test]
        fn the_fast_form_is_chronos(ms in -62_135_596_800_000i64..253_402_300_799_999i64) {
            let t = from_millis(ms).unwrap();
            let reference = t.to_rfc3339_opts(SecondsFormat::Millis, true);
            proptest::prop_assert_eq!(format_instant(&t), reference.clone());
            proptest::prop_assert_eq!(parse_canonical(&reference), Some(t));
            let slow = DateTime::parse_from_rfc3339(&reference).unwrap().with_timezone(&Utc);
            proptest::prop_assert_eq!(parse_instant(&reference).unwrap(), slow);
        }
    }

    #[test]
    fn the_fast_parser_leaves_everything_else_to_rfc3339() {
        assert_eq!(parse_canonical("2024-01-31T08:00:00.123+00:00"), None);
        assert_eq!(
            parse_canonical("2024-02-30T08:00:00.123Z"),
            None,
            "no Feb 30"
        );
        assert_eq!(parse_canonical("2024-01-31T24:00:00.000Z"), None);
        assert_eq!(parse_canonical("2024-01-31t08:00:00.123Z"), None);
        assert_eq!(parse_canonical("2024-0a-31T08:00:00.123Z"), None);
        assert!(parse_instant("2024-02-30T08:00:00.123Z").is_err());
        assert_eq!(
            format_instant(&parse_instant("2024-01-31T08:00:00.123Z").unwrap()),
            "2024-01-31T08:00:00.123Z"
        );
    }

    #[test]
    fn refuses_instants_past_year_9999_in_utc() {
        assert!(parse_instant("9999-12-31T23:59:59.999Z").is_ok());
        assert!(parse_instant("0000-01-01T00:00:00Z").is_ok());
        let late = parse_instant("9999-12-31T23:59:59.999-01:00").unwrap_err();
        assert!(late.contains("outside the supported range"), "{late}");
        assert!(parse_instant("0000-01-01T00:00:00+01:00").is_err());
        assert_eq!(format_instant(&max_instant()), "9999-12-31T23:59:59.999Z");
        assert_eq!(format_instant(&min_instant()), "0000-01-01T00:00:00.000Z");
    }

    proptest::proptest! {
        /// Whatever a saturating addition gives can be written and read back unchanged.
        #[test]
        fn saturating_additions_round_trip(
            ms in MIN_MILLIS..=MAX_MILLIS,
            add in -400_000_000_000_000i64..400_000_000_000_000i64,
        ) {
            let t = from_millis(ms).unwrap();
            let u = saturating_add(t, chrono::Duration::milliseconds(add));
            proptest::prop_assert!(representable(&u));
            proptest::prop_assert_eq!(parse_instant(&format_instant(&u)).unwrap(), u);
        }
    }

    #[test]
    fn refuses_non_rfc3339() {
        assert!(parse_instant("2024-01-31").is_err());
        assert!(parse_instant("yesterday").is_err());
    }
}
