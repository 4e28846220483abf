//! An endpoint's health (SPEC 11.2), as a pure state machine the delivery loop feeds with the
//! outcome of every attempt: what an answer means ([`classify`]), when the endpoint counts as
//! down, how long a `Retry-After` pauses it, and how many attempts may be in flight now. No
//! I/O and no clock of its own: the caller passes the instants.
//!
//! - A 2xx is a delivery.
//! - A transport failure (connection refused or reset, DNS, TLS, timeout) or a 429, 502, 503 or
//!   504 is the endpoint's failure: 8 of them in a row (over all orders) and the endpoint is
//!   down, probed one delivery at a time after pauses that grow like a delivery's backoff.
//! - A `Retry-After` on a 429 or 503 pauses the whole endpoint for that long, at most
//!   `retry_max`.
//! - Any other answer (400, 401, 404, 409, 500, ...) is that event's failure only: the endpoint
//!   answers, so it breaks a row of endpoint failures and brings a down endpoint back up.

use std::time::{Duration, Instant, SystemTime};

use super::backoff;

/// Endpoint failures in a row (over all orders) after which the endpoint counts as down.
pub const DOWN_AFTER_FAILURES: u32 = 8;

/// What one attempt came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attempt {
    /// A 2xx answer.
    Delivered,
    /// An answer that is this event's failure only (`error`: `HTTP 500`).
    EventFailed { error: String },
    /// A failure that counts against the endpoint: `error` is `HTTP 503`, `timeout` or the
    /// connection error; `retry_after` is the pause a 429 or 503 asked for.
    EndpointFailed {
        error: String,
        retry_after: Option<Duration>,
    },
}

impl Attempt {
    /// The error recorded with the event (retry state, dead letter); `None` for a delivery.
    pub fn error(&self) -> Option<&str> {
        match self {
            Attempt::Delivered => None,
            Attempt::EventFailed { error } | Attempt::EndpointFailed { error, .. } => Some(error),
        }
    }
}

/// What an HTTP answer with `status` (and its `Retry-After` header, if any) means, at `now`
/// (the wall clock, for a `Retry-After` that is a date).
pub fn classify(status: u16, retry_after: Option<&str>, now: SystemTime) -> Attempt {
    let error = format!("HTTP {status}");
    match status {
        200..=299 => Attempt::Delivered,
        429 | 503 => Attempt::EndpointFailed {
            error,
            retry_after: retry_after.and_then(|v| parse_retry_after(v, now)),
        },
        502 | 504 => Attempt::EndpointFailed {
            error,
            retry_after: None,
        },
        _ => Attempt::EventFailed { error },
    }
}

/// A request that got no answer (refused, reset, DNS, TLS, timeout): the endpoint's failure.
pub fn transport_failure(error: String) -> Attempt {
    Attempt::EndpointFailed {
        error,
        retry_after: None,
    }
}

/// A `Retry-After` value (RFC 9110 10.2.3): delay-seconds (digits only; more than fit is "very
/// long") or an HTTP date (the time until then, zero when it has passed). `None` when it is
/// neither, so the answer counts as if it had none.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// How the endpoint's state changed with an attempt (each worth one log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// It counts as down now: `failures` endpoint failures in a row.
    WentDown { failures: u32 },
    /// It answered again after being down.
    CameUp,
}

/// The endpoint's health: failures in a row, down or not, and the pauses.
#[derive(Debug, Clone)]
pub struct Health {
    retry_initial: Duration,
    retry_max: Duration,
    max_in_flight: usize,
    /// Endpoint failures in a row, over every order.
    failures_in_a_row: u32,
    /// While down: failed probes since it went down, and when the next probe may go.
    down: Option<Down>,
    /// A `Retry-After` pause: no attempt starts before this.
    paused_until: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Down {
    failed_probes: u32,
    probe_at: Instant,
}

impl Health {
    /// An endpoint that is up, with the delivery settings' backoff and in-flight limit.
    pub fn new(retry_initial: Duration, retry_max: Duration, max_in_flight: usize) -> Health {
        Health {
            retry_initial,
            retry_max,
            max_in_flight: max_in_flight.max(1),
            failures_in_a_row: 0,
            down: None,
            paused_until: None,
        }
    }

    /// Whether the endpoint counts as down.
    pub fn is_down(&self) -> bool {
        self.down.is_some()
    }

    /// Endpoint failures in a row so far.
    pub fn failures_in_a_row(&self) -> u32 {
        self.failures_in_a_row
    }

    /// How many attempts may be in flight at `now`: none during a pause, one (the probe)
    /// while down, else `max_in_flight`.
    pub fn limit(&self, now: Instant) -> usize {
        if self.paused_until.is_some_and(|until| now < until) {
            return 0;
        }
        match self.down {
            Some(down) if now < down.probe_at => 0,
            Some(_) => 1,
            None => self.max_in_flight,
        }
    }

    /// When [`Health::limit`] next grows by itself (a pause ends), if it will.
    pub fn resumes_at(&self, now: Instant) -> Option<Instant> {
        let pause = self.paused_until.filter(|until| now < *until);
        let probe = self.down.map(|d| d.probe_at).filter(|at| now < *at);
        match (pause, probe) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Takes in what an attempt came to at `now`; `probe`: it was sent while the endpoint was
    /// down (only a failed probe makes the next pause longer: attempts that were in flight
    /// when it went down do not). The change of state, if any.
    pub fn record(&mut self, attempt: &Attempt, probe: bool, now: Instant) -> Option<Change> {
        let retry_after = match attempt {
            // The endpoint answers: the row is broken, and a down endpoint is up again.
            Attempt::Delivered | Attempt::EventFailed { .. } => {
                self.failures_in_a_row = 0;
                return self.down.take().map(|_| Change::CameUp);
            }
            Attempt::EndpointFailed { retry_after, .. } => {
                retry_after.map(|pause| pause.min(self.retry_max))
            }
        };
        self.failures_in_a_row = self.failures_in_a_row.saturating_add(1);
        if let Some(pause) = retry_after {
            let until = now + pause;
            self.paused_until = Some(self.paused_until.map_or(until, |u| u.max(until)));
        }
        match &mut self.down {
            Some(down) if probe => {
                down.failed_probes = down.failed_probes.saturating_add(1);
                let pause = retry_after.unwrap_or_else(|| {
                    backoff(down.failed_probes + 1, self.retry_initial, self.retry_max)
                });
                down.probe_at = now + pause;
                None
            }
            Some(_) => None,
            None if self.failures_in_a_row >= DOWN_AFTER_FAILURES => {
                let pause =
                    retry_after.unwrap_or_else(|| backoff(1, self.retry_initial, self.retry_max));
                self.down = Some(Down {
                    failed_probes: 0,
                    probe_at: now + pause,
                });
                Some(Change::WentDown {
                    failures: self.failures_in_a_row,
                })
            }
            None => None,
        }
    }
}

/// At most one log line per `every`; the lines left out in between are counted and reported
/// with the next one.
#[derive(Debug, Clone)]
pub struct LogLimit {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    pub fn new(every: Duration) -> LogLimit {
        LogLimit {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Whether to log a line at `now`: `Some(n)` with the `n` lines left out since the last
    /// one, or `None` (this one is left out and counted).
    pub fn check(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    fn refused() -> Attempt {
        transport_failure("connection refused".into())
    }

    fn status(code: u16) -> Attempt {
        classify(code, None, SystemTime::now())
    }

    fn health() -> Health {
        Health::new(secs(10), secs(3600), 16)
    }

    #[test]
    fn only_transport_failures_and_429_502_503_504_are_the_endpoint_s() {
        let now = SystemTime::now();
        for code in [200, 201, 204, 299] {
            assert_eq!(classify(code, None, now), Attempt::Delivered, "{code}");
        }
        for code in [
            301, 304, 400, 401, 403, 404, 408, 409, 410, 422, 500, 501, 505,
        ] {
            assert_eq!(
                classify(code, Some("5"), now),
                Attempt::EventFailed {
                    error: format!("HTTP {code}")
                },
                "{code}"
            );
        }
        for code in [429, 502, 503, 504] {
            assert!(
                matches!(classify(code, None, now), Attempt::EndpointFailed { retry_after: None, ref error } if *error == format!("HTTP {code}")),
                "{code}"
            );
        }
        assert_eq!(
            refused(),
            Attempt::EndpointFailed {
                error: "connection refused".into(),
                retry_after: None
            }
        );
        assert_eq!(refused().error(), Some("connection refused"));
        assert_eq!(Attempt::Delivered.error(), None);
    }

    #[test]
    fn retry_after_counts_on_429_and_503_only() {
        let now = SystemTime::now();
        for code in [429, 503] {
            assert_eq!(
                classify(code, Some("7"), now),
                Attempt::EndpointFailed {
                    error: format!("HTTP {code}"),
                    retry_after: Some(secs(7))
                }
            );
        }
        for code in [502, 504] {
            assert_eq!(
                classify(code, Some("7"), now),
                Attempt::EndpointFailed {
                    error: format!("HTTP {code}"),
                    retry_after: None
                }
            );
        }
        assert_eq!(
            classify(503, Some("soon"), now),
            Attempt::EndpointFailed {
                error: "HTTP 503".into(),
                retry_after: None
            }
        );
    }

    #[test]
    fn retry_after_is_seconds_or_an_http_date() {
        let now = SystemTime::UNIX_EPOCH + secs(784_111_777); // Sun, 06 Nov 1994 08:49:37 GMT
        let p = |v: &str| parse_retry_after(v, now);
        assert_eq!(p("0"), Some(Duration::ZERO));
        assert_eq!(p("120"), Some(secs(120)));
        assert_eq!(p(" 120 "), Some(secs(120)));
        assert_eq!(p("99999999999999999999999"), Some(secs(u64::MAX)));
        // The three forms of RFC 9110's HTTP-date, 23 s later.
        assert_eq!(p("Sun, 06 Nov 1994 08:50:00 GMT"), Some(secs(23)));
        assert_eq!(p("Sunday, 06-Nov-94 08:50:00 GMT"), Some(secs(23)));
        assert_eq!(p("Sun Nov  6 08:50:00 1994"), Some(secs(23)));
        // A date that has passed: no pause.
        assert_eq!(p("Sun, 06 Nov 1994 08:00:00 GMT"), Some(Duration::ZERO));
        for bad in [
            "",
            " ",
            "-5",
            "1.5",
            "5s",
            "+5",
            "tomorrow",
            "Sun, 06 Nov 1994",
        ] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn eight_endpoint_failures_in_a_row_make_it_down_and_it_is_probed_one_at_a_time() {
        let t0 = Instant::now();
        let mut h = health();
        for i in 1..DOWN_AFTER_FAILURES {
            assert_eq!(h.record(&refused(), false, t0), None, "failure {i}");
            assert_eq!(h.limit(t0), 16);
        }
        assert_eq!(
            h.record(&status(503), false, t0),
            Some(Change::WentDown { failures: 8 })
        );
        assert!(h.is_down());
        // The first pause is retry_initial; no attempt before it ends, then one.
        assert_eq!(h.limit(t0), 0);
        assert_eq!(h.resumes_at(t0), Some(t0 + secs(10)));
        assert_eq!(h.limit(t0 + secs(10) - MS), 0);
        assert_eq!(h.limit(t0 + secs(10)), 1);
        // Attempts in flight when it went down fail too: no longer pause for that.
        let t1 = t0 + secs(1);
        for _ in 0..15 {
            assert_eq!(h.record(&refused(), false, t1), None);
        }
        assert_eq!(h.resumes_at(t1), Some(t0 + secs(10)));
        // Failed probes: pauses of 20 s, 40 s, 80 s, ... at most retry_max.
        let mut t = t0 + secs(10);
        for pause in [20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600] {
            assert_eq!(h.limit(t), 1);
            assert_eq!(h.record(&status(504), true, t), None);
            assert_eq!(h.limit(t), 0);
            assert_eq!(h.resumes_at(t), Some(t + secs(pause)));
            t += secs(pause);
        }
        // A probe that is answered brings it back up, at full speed at once.
        assert_eq!(h.record(&Attempt::Delivered, true, t), Some(Change::CameUp));
        assert!(!h.is_down());
        assert_eq!(h.failures_in_a_row(), 0);
        assert_eq!(h.limit(t), 16);
        assert_eq!(h.resumes_at(t), None);
        assert_eq!(h.record(&Attempt::Delivered, false, t), None);
    }

    #[test]
    fn other_answers_are_the_event_s_failure_and_break_the_row() {
        let t = Instant::now();
        let mut h = health();
        // 500 (or 400, 401, 404, 409, ...) to everything: never down, full speed.
        for code in [500, 400, 401, 404, 409].repeat(20) {
            assert_eq!(h.record(&status(code), false, t), None);
            assert_eq!(h.limit(t), 16);
        }
        // 7 endpoint failures, one event failure, 7 more: still not in a row.
        for _ in 0..2 {
            for _ in 0..7 {
                h.record(&refused(), false, t);
            }
            assert_eq!(h.failures_in_a_row(), 7);
            h.record(&status(500), false, t);
        }
        assert!(!h.is_down());
        // Down, then a probe answered 500: the endpoint answers, so it is up again (the event
        // is retried on its own backoff).
        for _ in 0..8 {
            h.record(&refused(), false, t);
        }
        assert!(h.is_down());
        assert_eq!(
            h.record(&status(500), true, t + secs(10)),
            Some(Change::CameUp)
        );
        assert_eq!(h.limit(t + secs(10)), 16);
    }

    #[test]
    fn retry_after_pauses_the_whole_endpoint_at_most_retry_max() {
        let t = Instant::now();
        let mut h = Health::new(secs(10), secs(60), 16);
        let answer = |code, v: &str| classify(code, Some(v), SystemTime::now());
        // Up: a 429 with Retry-After 30 stops every attempt for 30 s, then full speed.
        assert_eq!(h.record(&answer(429, "30"), false, t), None);
        assert!(!h.is_down());
        assert_eq!(h.limit(t), 0);
        assert_eq!(h.resumes_at(t), Some(t + secs(30)));
        assert_eq!(h.limit(t + secs(30) - MS), 0);
        assert_eq!(h.limit(t + secs(30)), 16);
        // A shorter one answered meanwhile does not shorten it; a longer one is capped.
        assert_eq!(h.record(&answer(503, "1"), false, t), None);
        assert_eq!(h.resumes_at(t), Some(t + secs(30)));
        h.record(&answer(503, "86400"), false, t);
        assert_eq!(h.resumes_at(t), Some(t + secs(60)));
        // An answer does not lift the pause the endpoint asked for.
        h.record(&Attempt::Delivered, false, t + secs(1));
        assert_eq!(h.limit(t + secs(1)), 0);
        assert_eq!(h.limit(t + secs(60)), 16);
        // A 429 without Retry-After pauses nothing (it counts towards down).
        let mut h = Health::new(secs(10), secs(60), 16);
        h.record(&status(429), false, t);
        assert_eq!((h.limit(t), h.failures_in_a_row()), (16, 1));
    }

    #[test]
    fn while_down_retry_after_sets_the_probe_s_pause() {
        let t = Instant::now();
        let mut h = Health::new(secs(10), secs(3600), 16);
        for _ in 0..7 {
            h.record(&refused(), false, t);
        }
        let ra = |s: u64| Attempt::EndpointFailed {
            error: "HTTP 503".into(),
            retry_after: Some(secs(s)),
        };
        // Going down on a Retry-After: that pause, not retry_initial.
        assert_eq!(
            h.record(&ra(3), false, t),
            Some(Change::WentDown { failures: 8 })
        );
        assert_eq!(h.resumes_at(t), Some(t + secs(3)));
        // A failed probe with Retry-After 5: 5 s (not the 20 s of the growing pauses).
        let t = t + secs(3);
        h.record(&ra(5), true, t);
        assert_eq!(h.resumes_at(t), Some(t + secs(5)));
        // Without one, the growing pause goes on from where it was.
        let t = t + secs(5);
        h.record(&refused(), true, t);
        assert_eq!(h.resumes_at(t), Some(t + secs(40)));
    }

    #[test]
    fn a_log_limit_lets_one_line_through_per_interval_and_counts_the_rest() {
        let t = Instant::now();
        let mut l = LogLimit::new(secs(10));
        assert_eq!(l.check(t), Some(0));
        assert_eq!(l.check(t), None);
        assert_eq!(l.check(t + secs(9)), None);
        assert_eq!(l.check(t + secs(10)), Some(2));
        assert_eq!(l.check(t + secs(11)), None);
        assert_eq!(l.check(t + secs(30)), Some(1));
        assert_eq!(l.check(t + secs(41)), Some(0));
    }
}
