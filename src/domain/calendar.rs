//! Calendar arithmetic for cycles: durations of DAY (24 h), WEEK (7 days), MONTH and YEAR (UTC
//! calendar, day of month clamped, time of day kept), always computed from the anchor.

use chrono::{Duration as Span, Months};
use serde::{Deserialize, Serialize};

use super::time::{within_range, Instant};

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
        // On the naive UTC date and time (what `DateTime<Utc>` does, without its offset
        // conversions: this runs several times per step of every order's walk).
        let anchor = anchor.naive_utc();
        let t = match self.unit {
            Unit::Day => anchor.checked_add_signed(days(steps)?),
            Unit::Week => anchor.checked_add_signed(days(steps.checked_mul(7)?)?),
            Unit::Month => anchor.checked_add_months(Months::new(u32::try_from(steps).ok()?)),
            Unit::Year => {
                anchor.checked_add_months(Months::new(u32::try_from(steps.checked_mul(12)?).ok()?))
            }
        }?;
        within_range(t.and_utc())
    }
}

fn days(n: u64) -> Option<Span> {
    Span::try_days(i64::try_from(n).ok()?)
}

/// The time zone whose local calendar an order's cycles follow (SPEC 8): an IANA name from the
/// tz database bundled with the binary (chrono-tz), "UTC" by default. Section 7's calendar is
/// the UTC case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Zone(Option<chrono_tz::Tz>);

impl Zone {
    /// UTC (the default): cycles on the UTC calendar.
    pub const UTC: Zone = Zone(None);

    /// The zone named `name` (any id the bundled tz database knows, links such as
    /// "US/Eastern" included); None for an unknown name.
    pub fn parse(name: &str) -> Option<Zone> {
        if name == "UTC" {
            return Some(Zone::UTC);
        }
        name.parse::<chrono_tz::Tz>().ok().map(|tz| Zone(Some(tz)))
    }

    /// Its IANA name, as given.
    pub fn name(&self) -> &'static str {
        self.0.map_or("UTC", |tz| tz.name())
    }

    /// True for the default, UTC.
    pub fn is_utc(&self) -> bool {
        self.0.is_none()
    }

    /// `start + extra_days local days + n x duration` on this zone's local calendar: the local
    /// date and time of day of `start`, moved in one step (never chained), then turned back into
    /// an instant. A local time that does not exist (a spring-forward gap) moves forward by the
    /// length of the gap; one that exists twice (a fall-back overlap) is the one with `start`'s
    /// own UTC offset when that is one of the two (so zero steps give `start` itself, also when
    /// it lies in the overlap's second hour), else the earlier instant.
    /// `None` past the representable range (year 9999, see [`within_range`]).
    pub fn calendar(
        &self,
        start: Instant,
        extra_days: u32,
        duration: Option<Duration>,
        n: u64,
    ) -> Option<Instant> {
        let Some(tz) = self.0 else {
            let anchor = start.checked_add_signed(days(u64::from(extra_days))?)?;
            return match duration {
                Some(d) => d.times_after(anchor, n),
                None => within_range(anchor),
            };
        };
        use chrono::{Days, NaiveDateTime};
        let mut local: NaiveDateTime = start.with_timezone(&tz).naive_local();
        local = local.checked_add_days(Days::new(u64::from(extra_days)))?;
        if let Some(d) = duration {
            let steps = n.checked_mul(u64::from(d.count))?;
            local = match d.unit {
                Unit::Day => local.checked_add_days(Days::new(steps))?,
                Unit::Week => local.checked_add_days(Days::new(steps.checked_mul(7)?))?,
                Unit::Month => local.checked_add_months(Months::new(u32::try_from(steps).ok()?))?,
                Unit::Year => local
                    .checked_add_months(Months::new(u32::try_from(steps.checked_mul(12)?).ok()?))?,
            };
        }
        let offset = {
            use chrono::Offset;
            start.with_timezone(&tz).offset().fix()
        };
        resolve(tz, local, offset).and_then(within_range)
    }
}

/// The instant of local time `local` on `tz`: the only one; of two (an overlap), the one with
/// offset `keep` if either has it, else the earlier; or, in a gap, the local time read with the
/// offset in force just before the gap (which is the local time moved forward by the gap's
/// length).
fn resolve(
    tz: chrono_tz::Tz,
    local: chrono::NaiveDateTime,
    keep: chrono::FixedOffset,
) -> Option<Instant> {
    use chrono::{LocalResult, Offset, TimeZone, Utc};
    match tz.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.with_timezone(&Utc)),
        LocalResult::Ambiguous(a, b) => {
            let kept = [a, b].into_iter().find(|t| t.offset().fix() == keep);
            Some(kept.unwrap_or(a.min(b)).with_timezone(&Utc))
        }
        LocalResult::None => {
            // Transitions are months apart: a day before, the old offset was in force.
            let before = local.checked_sub_signed(Span::days(1))?.and_utc();
            let offset = tz.offset_from_utc_datetime(&before.naive_utc()).fix();
            let utc =
                local.checked_sub_signed(Span::seconds(i64::from(offset.local_minus_utc())))?;
            Some(utc.and_utc())
        }
    }
}

impl Serialize for Zone {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for Zone {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Zone, D::Error> {
        let name = std::borrow::Cow::<'de, str>::deserialize(d)?;
        Zone::parse(&name)
            .ok_or_else(|| serde::de::Error::custom(format!("unknown time zone `{name}`")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::{format_instant, parse_instant};

    fn at(s: &str) -> Instant {
        parse_instant(s).unwrap()
    }

    /// Found by `lifecycle_invariants`: a daily order starting at 01:00 EST on New York's
    /// fall-back day (the second 01:00 of the night) got its first cycle at the first 01:00,
    /// an hour before its own start.
    #[test]
    fn the_second_hour_of_an_overlap_stays_itself_and_later_cycles_keep_local_time() {
        let ny = Zone::parse("America/New_York").unwrap();
        let day = Some(Duration {
            count: 1,
            unit: Unit::Day,
        });
        let second = at("2023-11-05T06:00:00Z"); // 01:00 EST, after 01:00 EDT (05:00Z)
        let first = at("2023-11-05T05:00:00Z");
        assert_eq!(ny.calendar(second, 0, day, 0), Some(second));
        assert_eq!(ny.calendar(first, 0, day, 0), Some(first));
        assert_eq!(ny.calendar(second, 0, None, 0), Some(second));
        // A day later it is 01:00 EST again, whichever hour the start was.
        assert_eq!(
            ny.calendar(second, 0, day, 1),
            Some(at("2023-11-06T06:00:00Z"))
        );
        assert_eq!(
            ny.calendar(first, 0, day, 1),
            Some(at("2023-11-06T06:00:00Z"))
        );
        // A month from 01:00 EDT on 5 October lands in the overlap: the earlier hour, as before.
        let month = Some(Duration {
            count: 1,
            unit: Unit::Month,
        });
        assert_eq!(
            ny.calendar(at("2023-10-05T05:00:00Z"), 0, month, 1),
            Some(first)
        );
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

    /// Instants worked out by hand from the tz database's 2026 transitions, not by chrono-tz:
    /// New York EST -5 / EDT -4, DST from Sun 8 Mar 02:00 to Sun 1 Nov 02:00 local; Paris CET +1
    /// / CEST +2, from Sun 29 Mar 02:00 to Sun 25 Oct 03:00 local; Sydney AEST +10 / AEDT +11,
    /// DST until Sun 5 Apr 03:00 and again from Sun 4 Oct 02:00 local; Kolkata IST +5:30 all
    /// year. Each row: zone, start (UTC), extra local days, duration, n, expected (UTC).
    #[test]
    fn local_calendars_match_a_hand_worked_table() {
        let day = Some(Duration {
            count: 1,
            unit: Unit::Day,
        });
        let week = Some(Duration {
            count: 1,
            unit: Unit::Week,
        });
        let month = Some(Duration {
            count: 1,
            unit: Unit::Month,
        });
        let year = Some(Duration {
            count: 1,
            unit: Unit::Year,
        });
        type Row = (
            &'static str,
            &'static str,
            u32,
            Option<Duration>,
            u64,
            &'static str,
        );
        let rows: &[Row] = &[
            // New York: 09:00 local every month, EST then EDT then EST.
            (
                "America/New_York",
                "2026-01-15T14:00:00Z",
                0,
                month,
                1,
                "2026-02-15T14:00:00Z",
            ),
            (
                "America/New_York",
                "2026-01-15T14:00:00Z",
                0,
                month,
                2,
                "2026-03-15T13:00:00Z",
            ),
            (
                "America/New_York",
                "2026-01-15T14:00:00Z",
                0,
                month,
                10,
                "2026-11-15T14:00:00Z",
            ),
            // Spring-forward gap: 02:30 on 8 Mar does not exist -> 03:30 EDT.
            (
                "America/New_York",
                "2026-03-07T07:30:00Z",
                0,
                day,
                1,
                "2026-03-08T07:30:00Z",
            ),
            (
                "America/New_York",
                "2026-03-07T07:30:00Z",
                0,
                day,
                2,
                "2026-03-09T06:30:00Z",
            ),
            // Fall-back overlap: 01:30 on 1 Nov exists twice -> the earlier, EDT.
            (
                "America/New_York",
                "2026-10-31T05:30:00Z",
                0,
                day,
                1,
                "2026-11-01T05:30:00Z",
            ),
            (
                "America/New_York",
                "2026-10-31T05:30:00Z",
                0,
                day,
                2,
                "2026-11-02T06:30:00Z",
            ),
            // The local date, not the UTC one: 30 Jan 21:00 EST (31 Jan 02:00 UTC) + 1 month is
            // 28 Feb 21:00 EST, where the UTC calendar would give 28 Feb 02:00 UTC.
            (
                "America/New_York",
                "2026-01-31T02:00:00Z",
                0,
                month,
                1,
                "2026-03-01T02:00:00Z",
            ),
            // A 14-day trial across spring-forward keeps 09:00 local.
            (
                "America/New_York",
                "2026-03-01T14:00:00Z",
                14,
                None,
                0,
                "2026-03-15T13:00:00Z",
            ),
            (
                "America/New_York",
                "2026-03-01T14:00:00Z",
                0,
                week,
                2,
                "2026-03-15T13:00:00Z",
            ),
            // Paris: a Jan 31 anchor clamps on the local calendar.
            (
                "Europe/Paris",
                "2026-01-31T09:00:00Z",
                0,
                month,
                1,
                "2026-02-28T09:00:00Z",
            ),
            (
                "Europe/Paris",
                "2026-01-31T09:00:00Z",
                0,
                month,
                2,
                "2026-03-31T08:00:00Z",
            ),
            (
                "Europe/Paris",
                "2026-01-31T09:00:00Z",
                0,
                month,
                3,
                "2026-04-30T08:00:00Z",
            ),
            (
                "Europe/Paris",
                "2026-01-31T09:00:00Z",
                0,
                year,
                1,
                "2027-01-31T09:00:00Z",
            ),
            // Paris gap (29 Mar 02:30 -> 03:30 CEST) and overlap (25 Oct 02:30 -> CEST).
            (
                "Europe/Paris",
                "2026-03-28T01:30:00Z",
                0,
                day,
                1,
                "2026-03-29T01:30:00Z",
            ),
            (
                "Europe/Paris",
                "2026-10-24T00:30:00Z",
                0,
                day,
                1,
                "2026-10-25T00:30:00Z",
            ),
            (
                "Europe/Paris",
                "2026-10-24T00:30:00Z",
                0,
                day,
                2,
                "2026-10-26T01:30:00Z",
            ),
            // Sydney (southern hemisphere): 09:00 local, AEDT in January, AEST in April.
            (
                "Australia/Sydney",
                "2026-01-09T22:00:00Z",
                0,
                month,
                3,
                "2026-04-09T23:00:00Z",
            ),
            (
                "Australia/Sydney",
                "2026-01-09T22:00:00Z",
                0,
                month,
                9,
                "2026-10-09T22:00:00Z",
            ),
            // Sydney gap: 4 Oct 02:30 does not exist -> 03:30 AEDT.
            (
                "Australia/Sydney",
                "2026-10-02T16:30:00Z",
                0,
                day,
                1,
                "2026-10-03T16:30:00Z",
            ),
            (
                "Australia/Sydney",
                "2026-10-02T16:30:00Z",
                0,
                day,
                2,
                "2026-10-04T15:30:00Z",
            ),
            // Sydney overlap: 5 Apr 02:30 exists twice -> the earlier, AEDT.
            (
                "Australia/Sydney",
                "2026-04-03T15:30:00Z",
                0,
                day,
                1,
                "2026-04-04T15:30:00Z",
            ),
            // Kolkata: no DST, a Jan 31 anchor at local midnight.
            (
                "Asia/Kolkata",
                "2026-01-30T18:30:00Z",
                0,
                month,
                1,
                "2026-02-27T18:30:00Z",
            ),
            (
                "Asia/Kolkata",
                "2026-01-30T18:30:00Z",
                0,
                month,
                2,
                "2026-03-30T18:30:00Z",
            ),
            // A link name is accepted.
            (
                "US/Eastern",
                "2026-01-15T14:00:00Z",
                0,
                month,
                2,
                "2026-03-15T13:00:00Z",
            ),
            // UTC is section 7's calendar.
            (
                "UTC",
                "2024-01-31T09:30:00Z",
                0,
                month,
                1,
                "2024-02-29T09:30:00Z",
            ),
        ];
        for (zone, start, extra, d, n, want) in rows {
            let z = Zone::parse(zone).unwrap();
            let got = z.calendar(at(start), *extra, *d, *n).unwrap();
            assert_eq!(
                format_instant(&got),
                format_instant(&at(want)),
                "{zone} {start} +{extra}d + {n} x {d:?}"
            );
        }
    }

    #[test]
    fn zones_parse_by_name_and_refuse_unknown_ones() {
        assert!(Zone::parse("Mars/Olympus").is_none());
        assert!(Zone::parse("").is_none());
        assert_eq!(Zone::parse("Europe/Paris").unwrap().name(), "Europe/Paris");
        assert!(Zone::parse("UTC").unwrap().is_utc());
        let z: Zone = serde_json::from_str("\"Asia/Kolkata\"").unwrap();
        assert_eq!(serde_json::to_string(&z).unwrap(), "\"Asia/Kolkata\"");
        assert!(serde_json::from_str::<Zone>("\"Nowhere/Else\"").is_err());
    }

    proptest::proptest! {
        /// A local calendar never drifts: cycle n's local time of day is the start's, except
        /// when that time falls in a gap (then it is later by the gap, at most 2 hours here),
        /// and its local date is the start's date moved by n x the duration.
        #[test]
        fn a_local_calendar_never_drifts(
            start_ms in 1_577_836_800_000i64..1_893_456_000_000i64,
            zone in 0usize..4,
            unit in 0usize..4,
            n in 0u64..120,
        ) {
            use chrono::{Months, Timelike};
            let zones = ["America/New_York", "Europe/Paris", "Australia/Sydney", "Asia/Kolkata"];
            let z = Zone::parse(zones[zone]).unwrap();
            let tz: chrono_tz::Tz = zones[zone].parse().unwrap();
            let unit = [Unit::Day, Unit::Week, Unit::Month, Unit::Year][unit];
            let d = Duration { count: 1, unit };
            let start = crate::domain::time::from_millis(start_ms).unwrap();
            let got = z.calendar(start, 0, Some(d), n).unwrap();
            let base = start.with_timezone(&tz).naive_local();
            let want_date = match unit {
                Unit::Day => base.date() + chrono::Days::new(n),
                Unit::Week => base.date() + chrono::Days::new(7 * n),
                Unit::Month => base.date().checked_add_months(Months::new(n as u32)).unwrap(),
                Unit::Year => base.date().checked_add_months(Months::new(12 * n as u32)).unwrap(),
            };
            let local = got.with_timezone(&tz).naive_local();
            let want = want_date.and_time(base.time());
            let late = (local - want).num_minutes();
            proptest::prop_assert!(
                local == want || (0 < late && late <= 120 && local.date() == want_date),
                "{} {start} + {n} {unit:?}: local {local}, want {want}", zones[zone]
            );
            // Never earlier than wanted; the seconds and milliseconds never move.
            proptest::prop_assert_eq!(local.second(), base.second());
            proptest::prop_assert_eq!(got.timestamp_subsec_millis(), start.timestamp_subsec_millis());
        }
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
