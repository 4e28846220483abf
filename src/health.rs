//! Whether the daemon is ready for traffic (SPEC 9, 10), and the figures read off Redis just
//! before the metrics are rendered. `/readyz`, `/metrics` and `getMetrics` ask here.
//!
//! Ready means: Redis answers a PING, start-up's catch-up is done and no taken-over
//! partition is still catching up, the lease loop renewed through Redis within the lease
//! TTL (a daemon may hold no partition at all when there are more daemons than partitions),
//! and, with `redis.wait_replicas` > 0, the last WAIT was confirmed by enough replicas
//! (SPEC 11.1: without them every write is answered UNAVAILABLE).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use crate::clock::Clock;
use crate::domain::time::{format_instant, to_millis};
use crate::metrics::Metrics;
use crate::ownership::Ownership;
use crate::scheduler::Scheduler;
use crate::shutdown::Shutdown;
use crate::store::daemons::StatusStore;
use crate::store::timers::TimerStore;
use crate::store::{Confirmer, Store};

/// How long a readiness PING may take before Redis counts as not answering.
pub const PING_TIMEOUT: Duration = Duration::from_secs(1);

/// What readiness and the Redis-read gauges need. Cheap to clone.
#[derive(Clone)]
pub struct Health {
    shared: Arc<Shared>,
}

struct Shared {
    /// The parts of Redis the checks read: the daemons' status records, the timers, the
    /// replicas' confirmations.
    status: StatusStore,
    timers: TimerStore,
    confirmer: Confirmer,
    clock: Clock,
    ownership: Ownership,
    scheduler: Scheduler,
    metrics: Arc<Metrics>,
    started: AtomicBool,
    /// When this process started (its status record, `/v1/daemons`).
    started_at: chrono::DateTime<chrono::Utc>,
}

/// Why the daemon is not ready: short reasons, one per failed check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    pub reasons: Vec<String>,
}

impl NotReady {
    /// The `/readyz` body of a 503.
    pub fn json(&self) -> Value {
        json!({"ready": false, "reasons": self.reasons})
    }
}

impl Health {
    /// Not started yet (start-up's catch-up runs).
    pub fn new(
        store: Store,
        clock: Clock,
        ownership: Ownership,
        scheduler: Scheduler,
        metrics: Arc<Metrics>,
    ) -> Health {
        Health {
            shared: Arc::new(Shared {
                status: store.status_store(),
                timers: store.timer_store(),
                confirmer: store.confirmer(),
                clock,
                ownership,
                scheduler,
                metrics,
                started: AtomicBool::new(false),
                started_at: chrono::Utc::now(),
            }),
        }
    }

    /// Start-up's catch-up is done.
    pub fn started(&self) {
        self.shared.started.store(true, Ordering::Release);
    }

    /// The daemon's figures.
    pub fn metrics(&self) -> &Metrics {
        &self.shared.metrics
    }

    /// The daemon's figures, to keep (a loop that counts its Redis errors).
    pub fn metrics_handle(&self) -> Arc<Metrics> {
        Arc::clone(&self.shared.metrics)
    }

    /// `Ok` with a short summary when the daemon is ready, else every reason it is not.
    ///
    /// # Errors
    /// [`NotReady`] naming each failed check.
    pub async fn readiness(&self) -> Result<Value, NotReady> {
        let s = &self.shared;
        let mut reasons = Vec::new();
        match tokio::time::timeout(PING_TIMEOUT, s.status.ping()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                s.metrics.redis_error();
                reasons.push(format!("redis: {e}"));
            }
            Err(_) => {
                s.metrics.redis_error();
                reasons.push(format!(
                    "redis: no answer to PING within {} ms",
                    PING_TIMEOUT.as_millis()
                ));
            }
        }
        if !s.started.load(Ordering::Acquire) {
            reasons.push("start-up catch-up is running".to_string());
        }
        let catching_up = s.scheduler.catching_up_partitions();
        if !catching_up.is_empty() {
            reasons.push(format!("catching up taken-over partitions {catching_up:?}"));
        }
        let ttl = s.ownership.config().lease_ttl;
        match s.ownership.since_renewal() {
            None => reasons.push("the lease loop has not renewed yet".to_string()),
            Some(ago) if ago > ttl => reasons.push(format!(
                "the lease loop last renewed {} ms ago (lease TTL {} ms)",
                ago.as_millis(),
                ttl.as_millis()
            )),
            Some(_) => {}
        }
        if let Some(reason) = self.replication().await {
            reasons.push(reason);
        }
        s.metrics.set_ready(reasons.is_empty());
        if reasons.is_empty() {
            Ok(json!({
                "ready": true,
                "daemonId": s.ownership.daemon_id(),
                "partitionsOwned": s.ownership.owned().len(),
            }))
        } else {
            Err(NotReady { reasons })
        }
    }

    /// Writes this daemon's status record beside its heartbeat (`<prefix>:daemon:<id>`:
    /// `{started, ready, reasons}`, read by `GET /v1/daemons`) every `every` until `shutdown`;
    /// the record lapses `lease_ttl` after the last write, as the heartbeat does.
    pub async fn keep_announced(self, every: Duration, shutdown: Shutdown) {
        let s = &self.shared;
        let ttl = s.ownership.config().lease_ttl + every;
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let started = format_instant(&s.started_at);
        loop {
            let (ready, reasons) = match self.readiness().await {
                Ok(_) => (true, Vec::new()),
                Err(not) => (false, not.reasons),
            };
            let status = json!({"started": started, "ready": ready, "reasons": reasons});
            let written = s
                .status
                .announce_status(s.ownership.daemon_id(), &status.to_string(), ttl_ms)
                .await;
            if let Err(e) = written {
                s.metrics.redis_error();
                tracing::debug!(error = %e, "cannot write this daemon's status record");
            }
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// With `redis.wait_replicas` > 0: why writes are not confirmed now, if they are not. When
    /// the last WAIT fell short, or none came back for a renewal interval (an idle daemon), the
    /// partitions held are confirmed first (one pipeline: a probe whose WAIT says how many
    /// replicas answer now), so a replica that came back, or went away, shows here without
    /// waiting for the next write.
    async fn replication(&self) -> Option<String> {
        let s = &self.shared;
        let replication = s.confirmer.replication();
        let wait = replication.wait()?;
        let stale = replication.stale(s.ownership.config().renew_interval);
        if stale || replication.shortfall().is_some() {
            let held = s.ownership.tokens(&s.ownership.owned());
            if !held.is_empty() {
                let probe = Duration::from_millis(wait.timeout_ms) + PING_TIMEOUT;
                if tokio::time::timeout(probe, s.confirmer.confirm_many(&held))
                    .await
                    .is_err()
                {
                    tracing::debug!("the replication probe did not come back in time");
                }
            }
        }
        replication.shortfall()
    }

    /// Sets the gauges read off Redis and the ownership (readiness, timers due, timer lag,
    /// partitions owned). A Redis failure leaves the timer gauges as they were and counts an
    /// error.
    pub async fn refresh(&self) {
        let s = &self.shared;
        // Sets recur_ready; the reasons are /readyz's to tell.
        let _ = self.readiness().await;
        let owned = s.ownership.owned();
        s.metrics.set_partitions_owned(owned.len());
        let now = to_millis(&s.clock.now());
        let read = tokio::time::timeout(PING_TIMEOUT, s.timers.timer_figures(&owned, now)).await;
        match read {
            Ok(Ok((due, earliest))) => {
                let lag_ms = earliest.map_or(0, |e| (now - e).max(0));
                let lag = Duration::from_millis(u64::try_from(lag_ms).unwrap_or(0));
                s.metrics.set_timers(due, lag);
            }
            Ok(Err(e)) => {
                s.metrics.redis_error();
                tracing::debug!(error = %e, "cannot read the timer figures");
            }
            Err(_) => {
                s.metrics.redis_error();
                tracing::debug!("reading the timer figures timed out");
            }
        }
    }
}
