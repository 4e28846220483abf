//! Calendar arithmetic for cycles: durations of DAY (24 h), WEEK (7 days), MONTH and YEAR (UTC
//! calendar, day of month clamped, time of day kept), always computed from the anchor.

use chrono::{Duration as Span, Months};
use serde::{Deserialize, Serialize};

use super::time::Instant;

/// The unit of a cycle or plan duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Unit {
    Day,
    Week,
    Month,
    Year,
}

impl Unit {
    /// Parses the wire spelling (`DAY`, `WEEK`, `MONTH`, `YEAR`).
    pub fn parse(s: &str) -> Option<Unit> {
        match s {
            "DAY" => Some(Unit::Day),
            "WEEK" => Some(Unit::Week),
            "MONTH" => Some(Unit::Month),
            "YEAR" => Some(Unit::Year),
            _ => None,
        }
    }
}

/// `count` x `unit`, with `count >= 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Duration {
    pub count: u32,
    pub unit: Unit,
}

impl Duration {
    /// `anchor + n x self`, computed from the anchor in one step (never chained), with the day of
    /// month clamped for MONTH and YEAR (Jan 31 + 1 month = Feb 28/29). `None` past the
    /// representable range.
    pub fn times_after(&self, anchor: Instant, n: u64) -> Option<Instant> {
        let steps = n.checked_mul(u64::from(self.count))?;
        match self.unit {
            Unit::Day => anchor.checked_add_signed(days(steps)?),
            Unit::Week => anchor.checked_add_signed(days(steps.checked_mul(7)?)?),
            Unit::Month => anchor.checked_add_months(Months::new(u32::try_from(steps).ok()?)),
            Unit::Year => {
                anchor.checked_add_months(Months::new(u32::try_from(steps.checked_mul(12)?).ok()?))
            }
        }
    }
}

fn days(n: u64) -> Option<Span> {
    Span::try_days(i64::try_from(n).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::{format_instant, parse_instant};

    fn at(s: &str) -> Instant {
        parse_instant(s).unwrap()
    }

    #[test]
    fn months_clamp_without_drift() {
        let anchor = at("2024-01-31T09:30:00Z");
        let m = Duration {
            count: 1,
            unit: Unit::Month,
        };
        let got: Vec<String> = (0..5)
            .map(|n| format_instant(&m.times_after(anchor, n).unwrap()))
            .collect();
        assert_eq!(
            got,
            [
                "2024-01-31T09:30:00.000Z",
                "2024-02-29T09:30:00.000Z",
                "2024-03-31T09:30:00.000Z",
                "2024-04-30T09:30:00.000Z",
                "2024-05-31T09:30:00.000Z",
            ]
        );
    }

    #[test]
    fn leap_day_years() {
        let anchor = at("2024-02-29T00:00:00Z");
        let y = Duration {
            count: 1,
            unit: Unit::Year,
        };
        assert_eq!(
            y.times_after(anchor, 1).unwrap(),
            at("2025-02-28T00:00:00Z")
        );
        assert_eq!(
            y.times_after(anchor, 4).unwrap(),
            at("2028-02-29T00:00:00Z")
        );
    }

    #[test]
    fn days_and_weeks_are_fixed_lengths() {
        let anchor = at("2024-03-30T12:00:00Z");
        let d = Duration {
            count: 3,
            unit: Unit::Day,
        };
        assert_eq!(
            d.times_after(anchor, 2).unwrap(),
            at("2024-04-05T12:00:00Z")
        );
        let w = Duration {
            count: 2,
            unit: Unit::Week,
        };
        assert_eq!(
            w.times_after(anchor, 1).unwrap(),
            at("2024-04-13T12:00:00Z")
        );
    }

    #[test]
    fn overflow_is_none() {
        let y = Duration {
            count: 1_000_000,
            unit: Unit::Year,
        };
        assert!(y
            .times_after(at("2024-01-01T00:00:00Z"), 1_000_000)
            .is_none());
    }
}
