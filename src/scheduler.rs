//! The scheduler: fires due orders. On the system clock it sleeps until the next due instant
//! (or until a commit sets an earlier one); on the simulated clock it runs only inside
//! `advanceClock`. Both read the timer sets in rounds, in `scheduler.lanes` loops at once that
//! share `scheduler.batch_size` orders, so only the near future is ever in memory, and run the
//! cron jobs on the same clock.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use crate::actors::customer::{ApplyDelta, Recompute};
use crate::actors::registry;
use crate::config::SchedulerSettings;
use crate::daemon::Daemon;
use crate::domain::time::{from_millis, to_millis, Instant};
use crate::shutdown::Shutdown;
use crate::store::{StoreError, PARTITIONS};

/// Why an advance failed.
#[derive(Debug, thiserror::Error)]
pub enum AdvanceError {
    #[error("cannot move the clock back from {now} to {to}")]
    Backwards { now: Instant, to: Instant },
    #[error("the clock is not simulated")]
    NotSimulated,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{0} order(s) could not be fired; retry the advance")]
    Failed(usize),
}

/// The scheduler's lanes: `scheduler.lanes` disjoint shares of the partitions. Each lane runs
/// its own loop of rounds, so one lane computes while another's commits are in Redis (a single
/// loop left the daemon and Redis taking turns). Orders are independent of each other, so lanes
/// need no order between them; within a lane, rounds stay in due order.
fn lanes(daemon: &Daemon) -> Vec<Vec<u16>> {
    let n = daemon
        .settings
        .scheduler
        .lanes
        .clamp(1, usize::from(PARTITIONS));
    let mut lanes = vec![Vec::new(); n];
    for p in 0..PARTITIONS {
        lanes[usize::from(p) % n].push(p);
    }
    lanes
}

/// Orders per round in one lane: the batch shared by the lanes.
pub fn round_size(s: &SchedulerSettings) -> usize {
    (s.batch_size / s.lanes.max(1)).max(1)
}

/// Fires one round: every `(due, id)` entry, concurrently; each order fires up to `until`, or
/// up to its own due instant when `until` is None (the simulated clock's time-ordered rounds).
/// Returns how many failed.
async fn fire_round(
    daemon: &Arc<Daemon>,
    entries: &[(i64, String)],
    until: Option<Instant>,
    defer_grace_to: Option<Instant>,
) -> usize {
    // One pipeline reads every order of the round; actors that are not resident start from it.
    let ids: Vec<String> = entries.iter().map(|(_, id)| id.clone()).collect();
    let mut preloaded = match daemon.store.load_map(&ids).await {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(error = %e, "bulk load failed; actors load one by one");
            Default::default()
        }
    };
    let fires = entries.iter().map(|(due, id)| {
        let until = until
            .or_else(|| from_millis(*due))
            .unwrap_or_else(|| daemon.clock.now());
        let order = preloaded.remove(id).map(Box::new);
        registry::fire(daemon, id, until, defer_grace_to, order)
    });
    let results = join_all(fires).await;
    let failed = results.iter().filter(|r| r.is_err()).count();
    if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
        tracing::warn!(error = %e, failed, "some due orders could not be fired");
    }
    failed
}

/// A lane's next round: its earliest due entries at or before `until` (at most one round).
async fn next_round(
    daemon: &Daemon,
    lane: &[u16],
    until: Instant,
) -> Result<Vec<(i64, String)>, StoreError> {
    let size = round_size(&daemon.settings.scheduler);
    let per_partition = (size / lane.len().max(1)).max(16);
    let due = daemon
        .store
        .due_in(lane, to_millis(&until), per_partition)
        .await?;
    Ok(due.into_iter().take(size).collect())
}

/// Runs `work` once per lane, all lanes at once, and returns the first error (after every lane
/// has stopped) or the lanes' results.
async fn in_lanes<'a, T, E, F, Fut>(daemon: &'a Daemon, work: F) -> Result<Vec<T>, E>
where
    F: Fn(Vec<u16>) -> Fut,
    Fut: std::future::Future<Output = Result<T, E>> + 'a,
{
    join_all(lanes(daemon).into_iter().map(work))
        .await
        .into_iter()
        .collect()
}

/// Fires everything due at or before the clock's now (start-up after downtime). Returns the
/// number of orders fired.
///
/// # Errors
/// [`StoreError`] when Redis fails.
pub async fn catch_up(daemon: &Arc<Daemon>) -> Result<usize, StoreError> {
    let now = daemon.clock.now();
    // With the system clock, grace expiries missed while down get payment_restart_grace more.
    // (The simulated clock does not move while the daemon is down.)
    let defer = (!daemon.clock.is_simulated()).then(|| {
        now + chrono::Duration::from_std(daemon.settings.lifecycle.payment_restart_grace)
            .unwrap_or(chrono::Duration::hours(1))
    });
    let fired = in_lanes(daemon, |lane| async move {
        let mut total = 0;
        loop {
            let round = next_round(daemon, &lane, now).await?;
            if round.is_empty() {
                return Ok::<_, StoreError>(total);
            }
            let failed = fire_round(daemon, &round, Some(now), defer).await;
            total += round.len() - failed;
            if failed == round.len() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    })
    .await?;
    Ok(fired.into_iter().sum())
}

/// advanceClock: fires every timer due up to `to`, each order at its own due instant, in time
/// order within each lane (rounds of the lane's earliest due entries; lanes run at once, see
/// [`lanes`]), then sets the clock to `to`. Commands wait meanwhile (the caller holds the
/// advance lock).
///
/// # Errors
/// [`AdvanceError`] when `to` is in the past, the clock is not simulated, or Redis fails.
pub async fn advance(daemon: &Arc<Daemon>, to: Instant) -> Result<Instant, AdvanceError> {
    let clock = &daemon.clock;
    if !clock.is_simulated() {
        return Err(AdvanceError::NotSimulated);
    }
    let now = clock.now();
    if to < now {
        return Err(AdvanceError::Backwards { now, to });
    }
    // The lanes move the clock to the last due instant of each round they fire, one at a time,
    // so the clock saved in Redis only moves forward.
    let clock_step = tokio::sync::Mutex::new(());
    let clock_step = &clock_step;
    in_lanes(daemon, |lane| async move {
        loop {
            let round = next_round(daemon, &lane, to).await?;
            if round.is_empty() {
                return Ok(());
            }
            if let Some(last) = round.last().and_then(|(d, _)| from_millis(*d)) {
                let _step = clock_step.lock().await;
                if last > clock.now() {
                    let _ = clock.advance_to(last);
                    daemon.store.save_clock("simulated", Some(last)).await?;
                }
            }
            let failed = fire_round(daemon, &round, None, None).await;
            if failed == round.len() {
                return Err(AdvanceError::Failed(failed));
            }
        }
    })
    .await?;
    let _ = clock.advance_to(to);
    daemon.store.save_clock("simulated", Some(to)).await?;
    sweep_outbox(daemon).await?;
    run_cron(daemon, to).await;
    Ok(to)
}

/// The system-clock loop: fire what is due, sleep until the next due instant, a cron job, an
/// earlier timer committed, or shutdown.
pub async fn run_system_clock(daemon: Arc<Daemon>, shutdown: Shutdown) {
    let window = daemon.settings.scheduler.window;
    while !shutdown.is_triggered() {
        let now = daemon.clock.now();
        let (daemon_ref, shutdown_ref) = (&daemon, &shutdown);
        let pass = async {
            in_lanes(daemon_ref, |lane| async move {
                loop {
                    let round = next_round(daemon_ref, &lane, now).await?;
                    if round.is_empty() {
                        return Ok::<_, StoreError>(());
                    }
                    if fire_round(daemon_ref, &round, Some(now), None).await == round.len() {
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    if shutdown_ref.is_triggered() {
                        return Ok(());
                    }
                }
            })
            .await?;
            if let Err(e) = sweep_outbox(&daemon).await {
                tracing::warn!(error = %e, "outbox sweep failed");
            }
            run_cron(&daemon, now).await;
            daemon.store.earliest_due().await
        };
        let next_due = match pass.await {
            Ok(next) => next,
            Err(e) => {
                tracing::warn!(error = %e, "scheduler pass failed; retrying");
                Some(to_millis(&now) + 1000)
            }
        };
        let horizon = to_millis(&now) + i64::try_from(window.as_millis()).unwrap_or(60_000);
        let cron_next = next_cron(&daemon, now)
            .map(|t| to_millis(&t))
            .unwrap_or(i64::MAX);
        let wake = next_due.unwrap_or(i64::MAX).min(horizon).min(cron_next);
        daemon.planned_wake_ms.store(wake, Ordering::Relaxed);
        let sleep_ms = (wake - to_millis(&daemon.clock.now())).max(0) as u64;
        tokio::select! {
            _ = shutdown.wait() => break,
            _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {}
            _ = daemon.wake.notified() => {}
        }
    }
}

/// The cron jobs recur runs, by name, with their schedules from config.
fn jobs(daemon: &Daemon) -> Vec<(&'static str, cron::Schedule)> {
    let c = &daemon.settings.cron;
    vec![
        ("trimEvents", c.trim_events.clone()),
        ("reconcileStats", c.reconcile_stats.clone()),
    ]
}

/// How many customers the reconcile job checks per run.
pub const RECONCILE_SAMPLE: usize = 100;

/// Applies every stats delta still in the outbox (left by a crash between an order's commit
/// and its stats update, or a failed apply). Each is applied exactly once: the stats script
/// ignores versions it has already seen. Returns how many entries were settled.
///
/// # Errors
/// [`StoreError`] when Redis fails.
pub async fn sweep_outbox(daemon: &Arc<Daemon>) -> Result<usize, StoreError> {
    let mut settled = 0;
    for partition in 0..PARTITIONS {
        loop {
            let entries = daemon.store.outbox_entries(partition, 256).await?;
            if entries.is_empty() {
                break;
            }
            let n = entries.len();
            let applies = entries.into_iter().map(|(entry_id, delta)| {
                registry::apply_delta(
                    daemon,
                    ApplyDelta {
                        delta,
                        entry_id: Some(entry_id),
                    },
                )
            });
            let failed = join_all(applies)
                .await
                .iter()
                .filter(|r| r.is_err())
                .count();
            settled += n - failed;
            if failed > 0 {
                return Err(StoreError::Redis(format!(
                    "{failed} stats deltas could not be applied"
                )));
            }
        }
    }
    Ok(settled)
}

/// The reconcile job: recompute a sample of customers and log any drift (then fix it).
async fn reconcile_sample(daemon: &Arc<Daemon>) -> Result<(), StoreError> {
    for customer in daemon.store.sample_customers(RECONCILE_SAMPLE).await? {
        match registry::to_customer(daemon, &customer, Recompute).await {
            Ok(Ok(report)) => {
                let drift = report["differences"].as_array().map_or(0, Vec::len);
                if drift > 0 {
                    tracing::warn!(customer_id = %customer, differences = %report["differences"], "customer stats drifted; fixed");
                }
            }
            Ok(Err(e)) | Err(e) => {
                tracing::warn!(customer_id = %customer, error = %e, "cannot reconcile customer stats")
            }
        }
    }
    Ok(())
}

fn next_cron(daemon: &Daemon, now: Instant) -> Option<Instant> {
    jobs(daemon)
        .iter()
        .filter_map(|(_, s)| s.after(&now).next())
        .min()
}

/// Runs each cron job whose schedule fired since its last run, once (however many times it
/// fired), and records the run.
pub async fn run_cron(daemon: &Arc<Daemon>, now: Instant) {
    let mut conn = daemon.store.conn();
    let key = daemon.keys.cron();
    for (name, schedule) in jobs(daemon) {
        let last: Option<i64> = redis::cmd("HGET")
            .arg(&key)
            .arg(name)
            .query_async(&mut conn)
            .await
            .unwrap_or(None);
        let due = match last.and_then(from_millis) {
            None => false,
            Some(last) => schedule.after(&last).next().is_some_and(|t| t <= now),
        };
        if due {
            if let Err(e) = run_job(daemon, name).await {
                tracing::warn!(job = name, error = %e, "cron job failed");
                continue;
            }
        }
        if due || last.is_none() {
            let _: Result<(), _> = redis::cmd("HSET")
                .arg(&key)
                .arg(name)
                .arg(to_millis(&now))
                .query_async(&mut conn)
                .await;
        }
    }
}

async fn run_job(daemon: &Arc<Daemon>, name: &str) -> Result<(), StoreError> {
    match name {
        "trimEvents" => {
            let removed = daemon
                .store
                .trim_events(daemon.settings.events.max_len)
                .await?;
            tracing::info!(job = name, removed, "trimmed the event stream");
        }
        "reconcileStats" => reconcile_sample(daemon).await?,
        other => tracing::warn!(job = other, "unknown cron job"),
    }
    Ok(())
}

/// Parses an advanceClock `to` (kept here so the admin side stays thin).
///
/// # Errors
/// A message when `to` is not RFC 3339.
pub fn parse_to(s: &str) -> Result<Instant, String> {
    crate::domain::time::parse_instant(s)
}
