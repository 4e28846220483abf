//! The `Clock` every other module reads time through: the system clock, or a simulated clock
//! that moves only when told to.

use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

/// Which time source a daemon runs on (config `clock.mode`, flag `--clock`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClockMode {
    /// Wall-clock time (`Utc::now()`), for production.
    #[default]
    System,
    /// Time that moves only on `advance_to`, for tests and planning ahead.
    Simulated,
}

impl ClockMode {
    /// The config / CLI spelling of the mode.
    pub fn as_str(self) -> &'static str {
        match self {
            ClockMode::System => "system",
            ClockMode::Simulated => "simulated",
        }
    }
}

impl fmt::Display for ClockMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the clock refused to move.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClockError {
    /// Only a simulated clock can be moved (admin code CLOCK_NOT_SIMULATED).
    #[error("the clock is not simulated")]
    NotSimulated,
    /// A simulated clock never goes back in time.
    #[error("cannot move the clock backwards from {now} to {to}")]
    Backwards {
        /// The simulated time when the move was asked for.
        now: DateTime<Utc>,
        /// The earlier instant that was asked for.
        to: DateTime<Utc>,
    },
}

/// The one source of "now" in recur. Cheap to clone: clones share one simulated time.
///
/// Instants are always whole milliseconds, the precision recur stores and prints.
#[derive(Debug, Clone)]
pub struct Clock {
    source: Source,
}

#[derive(Debug, Clone)]
enum Source {
    System,
    Simulated(Arc<Mutex<DateTime<Utc>>>),
}

impl Clock {
    /// The wall clock.
    pub fn system() -> Self {
        Clock {
            source: Source::System,
        }
    }

    /// A simulated clock standing at `start` (truncated to milliseconds).
    pub fn simulated(start: DateTime<Utc>) -> Self {
        Clock {
            source: Source::Simulated(Arc::new(Mutex::new(truncate_to_millis(start)))),
        }
    }

    /// A clock of the given mode; `start` is the simulated start instant (ignored for the
    /// system clock; `None` starts a simulated clock at the current wall-clock time).
    pub fn new(mode: ClockMode, start: Option<DateTime<Utc>>) -> Self {
        match mode {
            ClockMode::System => Clock::system(),
            ClockMode::Simulated => Clock::simulated(start.unwrap_or_else(Utc::now)),
        }
    }

    /// The current instant, in whole milliseconds.
    pub fn now(&self) -> DateTime<Utc> {
        match &self.source {
            Source::System => truncate_to_millis(Utc::now()),
            Source::Simulated(current) => *lock(current),
        }
    }

    /// Which mode this clock runs in.
    pub fn mode(&self) -> ClockMode {
        match self.source {
            Source::System => ClockMode::System,
            Source::Simulated(_) => ClockMode::Simulated,
        }
    }

    /// Whether this is a simulated clock.
    pub fn is_simulated(&self) -> bool {
        self.mode() == ClockMode::Simulated
    }

    /// Moves a simulated clock forward to `to` (truncated to milliseconds); moving to the
    /// current instant is a no-op.
    ///
    /// # Errors
    /// [`ClockError::NotSimulated`] on the system clock; [`ClockError::Backwards`] when `to`
    /// is earlier than now (the clock is left unchanged).
    pub fn advance_to(&self, to: DateTime<Utc>) -> Result<(), ClockError> {
        let Source::Simulated(current) = &self.source else {
            return Err(ClockError::NotSimulated);
        };
        let to = truncate_to_millis(to);
        let mut now = lock(current);
        if to < *now {
            return Err(ClockError::Backwards { now: *now, to });
        }
        *now = to;
        Ok(())
    }

    /// Sets a simulated clock to `t` in either direction: for restoring the simulated time
    /// persisted in Redis at start-up, not for moving time during operation.
    ///
    /// # Errors
    /// [`ClockError::NotSimulated`] on the system clock.
    pub fn set(&self, t: DateTime<Utc>) -> Result<(), ClockError> {
        let Source::Simulated(current) = &self.source else {
            return Err(ClockError::NotSimulated);
        };
        *lock(current) = truncate_to_millis(t);
        Ok(())
    }
}

/// The scheduler's wake-up on the system clock: the commit path tells it about every timer it
/// wrote, and it is woken only when that timer is earlier than the wake it planned (mini-redis's
/// `background_task` notify). Cheap to clone: clones share one wake.
#[derive(Debug, Clone, Default)]
pub struct TimerWake {
    shared: Arc<WakeShared>,
}

#[derive(Debug)]
struct WakeShared {
    notify: tokio::sync::Notify,
    planned_ms: AtomicI64,
}

impl Default for WakeShared {
    fn default() -> Self {
        WakeShared {
            notify: tokio::sync::Notify::new(),
            planned_ms: AtomicI64::new(i64::MIN),
        }
    }
}

impl TimerWake {
    /// Called after a commit set a timer to `due_ms` (Unix milliseconds).
    pub fn timer_committed(&self, due_ms: i64) {
        if due_ms < self.shared.planned_ms.load(Ordering::Relaxed) {
            self.shared.notify.notify_one();
        }
    }

    /// Wakes the scheduler now (it took over partitions whose timers it has not read).
    pub fn wake_now(&self) {
        self.shared.notify.notify_one();
    }

    /// The scheduler plans to wake at `wake_ms`; earlier timers committed from now on wake it.
    pub fn plan(&self, wake_ms: i64) {
        self.shared.planned_ms.store(wake_ms, Ordering::Relaxed);
    }

    /// When the scheduler plans to wake (Unix ms): test clock advances pause for the live
    /// timers around it.
    pub fn planned(&self) -> i64 {
        self.shared.planned_ms.load(Ordering::Relaxed)
    }

    /// Waits until a timer earlier than the planned wake is committed.
    pub async fn woken(&self) {
        self.shared.notify.notified().await;
    }
}

/// Drops sub-millisecond precision, so instants round-trip through storage unchanged.
pub fn truncate_to_millis(t: DateTime<Utc>) -> DateTime<Utc> {
    // duration_trunc only fails for instants beyond ~262 000 years; keep them as they are.
    t.duration_trunc(TimeDelta::milliseconds(1)).unwrap_or(t)
}

fn lock(current: &Mutex<DateTime<Utc>>) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
    // The guarded value is a plain instant, always valid: a panic elsewhere cannot corrupt it.
    current.lock().unwrap_or_else(PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeZone, Timelike};

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("valid test instant")
            .with_timezone(&Utc)
    }

    #[test]
    fn system_clock_is_whole_milliseconds_and_not_simulated() {
        let clock = Clock::system();
        assert!(!clock.is_simulated());
        assert_eq!(clock.mode(), ClockMode::System);
        assert_eq!(clock.now().nanosecond() % 1_000_000, 0);
        let before = Utc::now() - TimeDelta::seconds(1);
        assert!(clock.now() > before);
    }

    #[test]
    fn system_clock_refuses_to_move() {
        let clock = Clock::system();
        assert_eq!(clock.advance_to(Utc::now()), Err(ClockError::NotSimulated));
        assert_eq!(clock.set(Utc::now()), Err(ClockError::NotSimulated));
    }

    #[test]
    fn simulated_clock_stands_still_until_advanced() {
        let start = at("2024-01-31T10:00:00.123456Z");
        let clock = Clock::simulated(start);
        assert!(clock.is_simulated());
        assert_eq!(clock.now(), at("2024-01-31T10:00:00.123Z"));
        assert_eq!(clock.now(), clock.now());
    }

    #[test]
    fn advance_moves_forward_and_clones_share_the_time() {
        let clock = Clock::simulated(at("2024-01-01T00:00:00Z"));
        let other = clock.clone();
        clock
            .advance_to(at("2024-03-01T00:00:00Z"))
            .expect("forward is allowed");
        assert_eq!(other.now(), at("2024-03-01T00:00:00Z"));
    }

    #[test]
    fn advance_to_now_is_a_no_op() {
        let t = at("2024-01-01T00:00:00Z");
        let clock = Clock::simulated(t);
        assert_eq!(clock.advance_to(t), Ok(()));
        assert_eq!(clock.now(), t);
    }

    #[test]
    fn advance_backwards_is_refused_and_changes_nothing() {
        let now = at("2024-06-01T00:00:00Z");
        let to = at("2024-05-01T00:00:00Z");
        let clock = Clock::simulated(now);
        assert_eq!(clock.advance_to(to), Err(ClockError::Backwards { now, to }));
        assert_eq!(clock.now(), now);
    }

    #[test]
    fn set_restores_a_persisted_time_in_either_direction() {
        let clock = Clock::simulated(at("2024-06-01T00:00:00Z"));
        clock
            .set(at("2023-01-01T00:00:00Z"))
            .expect("simulated clock");
        assert_eq!(clock.now(), at("2023-01-01T00:00:00Z"));
    }

    #[test]
    fn new_picks_the_source_by_mode() {
        let start = Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).single();
        assert!(!Clock::new(ClockMode::System, start).is_simulated());
        let simulated = Clock::new(ClockMode::Simulated, start);
        assert_eq!(Some(simulated.now()), start);
    }

    #[tokio::test]
    async fn timer_wake_fires_only_for_a_timer_before_the_planned_wake() {
        let wake = TimerWake::default();
        wake.plan(1_000);
        wake.timer_committed(5_000);
        let later = tokio::time::timeout(std::time::Duration::from_millis(20), wake.woken());
        assert!(
            later.await.is_err(),
            "a later timer must not wake the scheduler"
        );
        wake.timer_committed(500);
        let earlier = tokio::time::timeout(std::time::Duration::from_millis(200), wake.woken());
        assert!(earlier.await.is_ok(), "an earlier timer wakes it");
    }

    #[test]
    fn mode_uses_lowercase_names() {
        let mode: ClockMode = serde_json::from_str("\"simulated\"").expect("valid mode");
        assert_eq!(mode, ClockMode::Simulated);
        assert!(serde_json::from_str::<ClockMode>("\"Simulated\"").is_err());
        assert_eq!(ClockMode::System.to_string(), "system");
    }
}
