//! Figures a production user needs: resident actors, transitions, events written, commit
//! latency. Plain atomics, read by `getMetrics` and the periodic log line.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{json, Value};

/// Counters shared by every part of the daemon.
#[derive(Debug, Default)]
pub struct Metrics {
    pub resident_actors: AtomicU64,
    pub activations: AtomicU64,
    pub passivations: AtomicU64,
    pub transitions: AtomicU64,
    pub events_written: AtomicU64,
    pub timers_fired: AtomicU64,
    pub commit_batches: AtomicU64,
    pub commits: AtomicU64,
    pub commit_micros_total: AtomicU64,
    pub commit_micros_max: AtomicU64,
    pub admin_requests: AtomicU64,
    pub stats_deltas_applied: AtomicU64,
}

impl Metrics {
    /// Records one pipeline of `size` commits that took `elapsed`.
    pub fn record_commit_batch(&self, size: usize, elapsed: Duration) {
        let micros = elapsed.as_micros().min(u128::from(u64::MAX)) as u64;
        self.commit_batches.fetch_add(1, Ordering::Relaxed);
        self.commits.fetch_add(size as u64, Ordering::Relaxed);
        self.commit_micros_total
            .fetch_add(micros, Ordering::Relaxed);
        self.commit_micros_max.fetch_max(micros, Ordering::Relaxed);
    }

    /// A JSON snapshot (the `getMetrics` result).
    pub fn snapshot(&self) -> Value {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let batches = get(&self.commit_batches).max(1);
        json!({
            "residentActors": get(&self.resident_actors),
            "activations": get(&self.activations),
            "passivations": get(&self.passivations),
            "transitions": get(&self.transitions),
            "eventsWritten": get(&self.events_written),
            "timersFired": get(&self.timers_fired),
            "commitBatches": get(&self.commit_batches),
            "commits": get(&self.commits),
            "commitLatencyAvgMicros": get(&self.commit_micros_total) / batches,
            "commitLatencyMaxMicros": get(&self.commit_micros_max),
            "adminRequests": get(&self.admin_requests),
            "statsDeltasApplied": get(&self.stats_deltas_applied),
        })
    }
}
