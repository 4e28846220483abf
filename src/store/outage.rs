//! How a loop that talks to Redis lives through an outage: it backs off (exponentially, with jitter,
//! capped) instead of retrying at a fixed pace, logs the first failure of a streak, and logs
//! one summary (how long, how many attempts) when Redis answers again, instead of a line per
//! attempt.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::metrics::Metrics;

/// The first pause after a failure.
pub const BACKOFF_FIRST_MS: u64 = 100;
/// The longest pause between attempts.
pub const BACKOFF_MAX_MS: u64 = 5_000;

/// A streak of failures of one loop (`what` names it in the logs).
#[derive(Debug)]
pub struct Outage {
    what: &'static str,
    streak: Option<Streak>,
    /// Where each failure is counted (`recur_redis_errors_total`).
    metrics: Option<Arc<Metrics>>,
}

#[derive(Debug)]
struct Streak {
    since: Instant,
    attempts: u32,
}

/// What the loop should log for a failure.
#[derive(Debug, PartialEq, Eq)]
pub enum FailureLog {
    /// The first failure of a streak: log it.
    First,
    /// A later one: stay quiet.
    Quiet,
}

/// The summary of a streak that ended.
#[derive(Debug, PartialEq, Eq)]
pub struct Recovered {
    pub down_for: Duration,
    pub attempts: u32,
}

impl Outage {
    /// No failure yet.
    pub fn new(what: &'static str) -> Outage {
        Outage {
            what,
            streak: None,
            metrics: None,
        }
    }

    /// [`Outage::new`], counting every failure in `metrics`.
    pub fn counted(what: &'static str, metrics: Arc<Metrics>) -> Outage {
        Outage {
            metrics: Some(metrics),
            ..Outage::new(what)
        }
    }

    /// Records a failure; returns whether to log it and how long to pause before the next
    /// attempt (doubling from [`BACKOFF_FIRST_MS`] up to [`BACKOFF_MAX_MS`], less up to a
    /// quarter of jitter so that several daemons do not retry in step).
    pub fn failed(&mut self) -> (FailureLog, Duration) {
        let log = match &mut self.streak {
            None => {
                self.streak = Some(Streak {
                    since: Instant::now(),
                    attempts: 1,
                });
                FailureLog::First
            }
            Some(s) => {
                s.attempts += 1;
                FailureLog::Quiet
            }
        };
        let attempts = self.streak.as_ref().map_or(1, |s| s.attempts);
        (log, pause(attempts, jitter_seed()))
    }

    /// Records a success; the summary of the streak it ends, if any.
    pub fn succeeded(&mut self) -> Option<Recovered> {
        self.streak.take().map(|s| Recovered {
            down_for: s.since.elapsed(),
            attempts: s.attempts,
        })
    }

    /// [`Outage::failed`], logging the first failure; returns the pause.
    pub fn log_failure(&mut self, error: &dyn std::fmt::Display) -> Duration {
        if let Some(m) = &self.metrics {
            m.redis_error();
        }
        let (log, pause) = self.failed();
        if log == FailureLog::First {
            tracing::warn!(error = %error, "{} failed; retrying quietly with backoff", self.what);
        }
        pause
    }

    /// [`Outage::succeeded`], logging the summary of a streak that ended.
    pub fn log_success(&mut self) {
        if let Some(r) = self.succeeded() {
            tracing::info!(
                down_ms = u64::try_from(r.down_for.as_millis()).unwrap_or(u64::MAX),
                attempts = r.attempts,
                "{} works again",
                self.what
            );
        }
    }
}

/// The pause after the `attempts`-th failure in a row, with `seed` choosing the jitter.
fn pause(attempts: u32, seed: u64) -> Duration {
    let doubled = BACKOFF_FIRST_MS.saturating_mul(1 << attempts.saturating_sub(1).min(16));
    let base = doubled.min(BACKOFF_MAX_MS);
    let jitter = seed % (base / 4 + 1);
    Duration::from_millis(base - jitter)
}

fn jitter_seed() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_grow_to_a_cap_and_jitter_only_shortens_them() {
        for seed in [0, 1, 7, 999_999_937] {
            let pauses: Vec<u64> = (1..=12)
                .map(|a| pause(a, seed).as_millis() as u64)
                .collect();
            for (i, p) in pauses.iter().enumerate() {
                let base = (BACKOFF_FIRST_MS << i).min(BACKOFF_MAX_MS);
                assert!(
                    *p <= base && *p >= base - base / 4,
                    "attempt {}: {p} ms",
                    i + 1
                );
            }
            assert!(
                pauses[11] > 3_000,
                "capped near {BACKOFF_MAX_MS} ms, not at the first pause"
            );
        }
        assert_eq!(pause(1, 0), Duration::from_millis(BACKOFF_FIRST_MS));
        assert_eq!(pause(30, 0), Duration::from_millis(BACKOFF_MAX_MS));
    }

    #[test]
    fn a_streak_is_logged_once_and_summed_up_once() {
        let mut o = Outage::new("reading");
        assert_eq!(o.succeeded(), None, "no streak, no summary");
        assert_eq!(o.failed().0, FailureLog::First);
        assert_eq!(o.failed().0, FailureLog::Quiet);
        assert_eq!(o.failed().0, FailureLog::Quiet);
        let r = o.succeeded().expect("a summary");
        assert_eq!(r.attempts, 3);
        assert_eq!(o.succeeded(), None);
        assert_eq!(
            o.failed().0,
            FailureLog::First,
            "a new streak is logged again"
        );
    }
}
