//! The scheduler: fires due orders. On the system clock it sleeps until the next due instant
//! (or until a commit sets an earlier one); on the simulated clock it runs only inside
//! `advanceClock`. Both read the timer sets in rounds, in `scheduler.lanes` loops at once that
//! share `scheduler.batch_size` orders, so only the near future is ever in memory, and run the
//! cron jobs on the same clock.
//!
//! The unit of work is [`Scheduler::pass`]: one round of one lane, which says what happened.
//! [`Scheduler::drain`] is the one loop of passes; start-up catch-up, `advanceClock` and the
//! system-clock loop only differ in how far they drain and what a stalled round means.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use crate::actors::customer::{ApplyDelta, Recompute};
use crate::actors::{ActorError, Actors, FireOrder};
use crate::clock::{Clock, ClockError, TimerWake};
use crate::config::{CronSettings, SchedulerSettings};
use crate::domain::time::{from_millis, to_millis, Instant};
use crate::ownership::{Ownership, Tick};
use crate::shutdown::Shutdown;
use crate::store::{Store, StoreError};

/// How long a lane waits before retrying a round of which nothing could be fired.
const STALLED_ROUND_PAUSE_MS: u64 = 200;
/// Outbox entries read per partition per round trip of a sweep.
const OUTBOX_SWEEP_CHUNK: usize = 256;
/// How many customers the reconcile job checks per run.
pub const RECONCILE_SAMPLE: usize = 100;

/// Why the scheduler could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    /// advanceClock on the system clock, or to an instant before now.
    #[error(transparent)]
    Clock(#[from] ClockError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("{failed} order(s) could not be fired; retry the advance")]
    Failed {
        failed: usize,
        #[source]
        source: ActorError,
    },
    #[error("{failed} stats delta(s) could not be applied")]
    Deltas {
        failed: usize,
        #[source]
        source: ActorError,
    },
    /// advanceClock while this daemon does not hold every partition (a takeover is under way).
    #[error(
        "this daemon holds {held} of {partitions} partitions; retry when the takeover is done"
    )]
    NotAllOwned { held: usize, partitions: u16 },
}

/// What the scheduler is built from (see [`Scheduler::new`]).
pub struct SchedulerConfig {
    pub settings: SchedulerSettings,
    pub cron: CronSettings,
    /// What the trimEvents job trims the event stream to.
    pub events_max_len: u64,
    /// System-clock start-up: how long grace expiries missed while down still wait.
    pub payment_restart_grace: Duration,
}

/// The scheduler handle: fires due timers through the actors. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
}

struct Shared {
    actors: Actors,
    store: Store,
    clock: Clock,
    wake: TimerWake,
    ownership: Ownership,
    config: SchedulerConfig,
    /// Lanes of one advance move the simulated clock one at a time, so it only goes forward.
    clock_step: tokio::sync::Mutex<()>,
}

/// How far a pass fires.
#[derive(Debug, Clone, Copy)]
enum Until {
    /// Every order due at or before this instant fires up to it (catch-up, system clock).
    Now(Instant),
    /// Every order due at or before this instant fires at its own due instant, and the
    /// simulated clock steps to each round's last due instant (advanceClock).
    EachAtItsDue(Instant),
}

impl Until {
    fn instant(self) -> Instant {
        match self {
            Until::Now(t) | Until::EachAtItsDue(t) => t,
        }
    }
}

/// What one pass over a lane did.
#[derive(Debug)]
enum Pass {
    /// Nothing is due in the lane.
    Idle,
    /// A round was fired: how many orders fired and, if any failed, how many and the first
    /// error.
    Fired {
        fired: usize,
        failed: Option<(usize, ActorError)>,
    },
}

/// What a round of which nothing fired means to the loop around it.
#[derive(Debug, Clone, Copy)]
enum OnStall {
    /// Wait a moment and try again (catch-up, the system-clock loop).
    Retry,
    /// Give up with [`SchedulerError::Failed`] (advanceClock: the client retries).
    Fail,
}

impl Scheduler {
    /// A scheduler over `actors`.
    pub fn new(
        actors: Actors,
        store: Store,
        clock: Clock,
        wake: TimerWake,
        ownership: Ownership,
        config: SchedulerConfig,
    ) -> Scheduler {
        Scheduler {
            shared: Arc::new(Shared {
                actors,
                store,
                clock,
                wake,
                ownership,
                config,
                clock_step: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// Fires everything due at or before the clock's now (start-up after downtime). Returns the
    /// number of orders fired.
    ///
    /// # Errors
    /// [`SchedulerError`] when Redis fails.
    pub async fn catch_up(&self) -> Result<usize, SchedulerError> {
        let s = &self.shared;
        let now = s.clock.now();
        // With the system clock, grace expiries missed while down get payment_restart_grace
        // more, counted from the first whole millisecond after start-up (instants are whole
        // milliseconds, and now is truncated), so it is never shorter than configured. (The
        // simulated clock does not move while the daemon is down.)
        let defer = (!s.clock.is_simulated()).then(|| {
            now + chrono::Duration::milliseconds(1)
                + chrono::Duration::from_std(s.config.payment_restart_grace)
                    .unwrap_or(chrono::Duration::hours(1))
        });
        self.drain(Until::Now(now), defer, OnStall::Retry, None)
            .await
    }

    /// advanceClock: fires every timer due up to `to`, each order at its own due instant, in
    /// time order within each lane, then sets the clock to `to`, applies the stats outbox and
    /// runs the cron jobs due by then. The caller keeps commands out meanwhile.
    ///
    /// # Errors
    /// [`SchedulerError::Clock`] when the clock is not simulated or `to` is before now;
    /// otherwise when Redis or a round fails (the clock stays at the last round's instant, and
    /// the same advance can be retried).
    pub async fn advance(&self, to: Instant) -> Result<Instant, SchedulerError> {
        let clock = &self.shared.clock;
        if !clock.is_simulated() {
            return Err(ClockError::NotSimulated.into());
        }
        let ownership = &self.shared.ownership;
        if !ownership.owns_all() {
            return Err(SchedulerError::NotAllOwned {
                held: ownership.owned().len(),
                partitions: self.shared.store.partitions(),
            });
        }
        let now = clock.now();
        if to < now {
            return Err(ClockError::Backwards { now, to }.into());
        }
        self.drain(Until::EachAtItsDue(to), None, OnStall::Fail, None)
            .await?;
        clock.advance_to(to)?;
        self.shared.store.save_clock("simulated", Some(to)).await?;
        self.sweep_outbox().await?;
        self.run_cron(to).await;
        Ok(to)
    }

    /// The system-clock loop: fire what is due, sleep until the next due instant, a cron job,
    /// an earlier timer committed, or shutdown.
    pub async fn run(self, shutdown: Shutdown) {
        let s = &self.shared;
        let window = s.config.settings.window;
        while !shutdown.is_triggered() {
            let now = s.clock.now();
            let next_due = match self.tick(now, &shutdown).await {
                Ok(next) => next,
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler pass failed; retrying");
                    Some(to_millis(&now) + 1000)
                }
            };
            let horizon = to_millis(&now) + i64::try_from(window.as_millis()).unwrap_or(60_000);
            let cron_next = self
                .next_cron(now)
                .map(|t| to_millis(&t))
                .unwrap_or(i64::MAX);
            let wake = next_due.unwrap_or(i64::MAX).min(horizon).min(cron_next);
            s.wake.plan(wake);
            let sleep_ms = u64::try_from(wake - to_millis(&s.clock.now())).unwrap_or(0);
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {}
                _ = s.wake.woken() => {}
            }
        }
    }

    /// The lease loop: every `cluster.renew_interval`, renews this daemon's leases and
    /// acquires free ones ([`Ownership::tick`]); forgets the actors of partitions it lost, and
    /// takes over those it acquired (their outbox, their overdue timers, the shared clock).
    pub async fn keep_leases(self, shutdown: Shutdown) {
        let ownership = self.shared.ownership.clone();
        let every = ownership.config().renew_interval;
        let mut outage = crate::store::Outage::new("renewing the partition leases");
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(every) => {}
            }
            match ownership.tick().await {
                Ok(tick) => {
                    outage.log_success();
                    self.apply_tick(&tick).await;
                }
                Err(e) => {
                    outage.log_failure(&e);
                }
            }
        }
    }

    /// What a lease step means for the rest of the daemon.
    async fn apply_tick(&self, tick: &Tick) {
        let s = &self.shared;
        if !tick.lost.is_empty() {
            tracing::warn!(partitions = ?tick.lost, "lost partition leases; their actors are dropped");
            s.actors.forget_partitions(&tick.lost);
        }
        if tick.acquired.is_empty() {
            return;
        }
        tracing::info!(partitions = ?tick.acquired, "took over partitions");
        if let Err(e) = self.take_over(tick).await {
            tracing::warn!(error = %e, "take-over work failed; the next pass retries it");
        }
    }

    /// Picks up partitions this daemon just acquired: the simulated clock as the last owner
    /// left it (partition 0 keeps it), the stats deltas left in their outboxes, and a wake-up
    /// so the system-clock loop fires their overdue timers (each at its own due instant).
    ///
    /// # Errors
    /// [`SchedulerError`] when Redis fails.
    pub async fn take_over(&self, tick: &Tick) -> Result<(), SchedulerError> {
        let s = &self.shared;
        if tick.acquired.contains(&0) && s.clock.is_simulated() {
            if let (_, Some(now)) = s.store.clock_record().await? {
                if now > s.clock.now() {
                    s.clock.advance_to(now)?;
                }
            }
        }
        self.sweep_outbox().await?;
        s.wake.wake_now();
        Ok(())
    }

    /// One turn of the system-clock loop: everything due by `now`, the outbox, the cron jobs;
    /// returns the earliest timer left.
    async fn tick(&self, now: Instant, shutdown: &Shutdown) -> Result<Option<i64>, SchedulerError> {
        self.drain(Until::Now(now), None, OnStall::Retry, Some(shutdown))
            .await?;
        if let Err(e) = self.sweep_outbox().await {
            tracing::warn!(error = %e, "outbox sweep failed");
        }
        self.run_cron(now).await;
        let owned = self.shared.ownership.owned();
        Ok(self.shared.store.earliest_due(&owned).await?)
    }

    /// The one loop of passes: every lane at once, each passing until nothing is due by
    /// `until` (or shutdown). Returns how many orders fired.
    async fn drain(
        &self,
        until: Until,
        defer: Option<Instant>,
        on_stall: OnStall,
        shutdown: Option<&Shutdown>,
    ) -> Result<usize, SchedulerError> {
        let lanes = lanes(&self.shared.config.settings, &self.shared.ownership.owned());
        let drained = join_all(lanes.iter().map(|lane| async move {
            let mut total = 0;
            loop {
                let (fired, failed) = match self.pass(lane, until, defer).await? {
                    Pass::Idle => return Ok(total),
                    Pass::Fired { fired, failed } => (fired, failed),
                };
                total += fired;
                if let (0, Some((failed, source))) = (fired, failed) {
                    match on_stall {
                        OnStall::Fail => return Err(SchedulerError::Failed { failed, source }),
                        OnStall::Retry => {
                            tokio::time::sleep(Duration::from_millis(STALLED_ROUND_PAUSE_MS)).await;
                        }
                    }
                }
                if shutdown.is_some_and(Shutdown::is_triggered) {
                    return Ok(total);
                }
            }
        }))
        .await;
        drained.into_iter().sum()
    }

    /// One pass over a lane: reads its next round (its earliest due entries by `until`, a
    /// prefix of the lane's due order) and fires it.
    async fn pass(
        &self,
        lane: &[u16],
        until: Until,
        defer: Option<Instant>,
    ) -> Result<Pass, SchedulerError> {
        let s = &self.shared;
        let size = round_size(&s.config.settings);
        let per_partition = (size / lane.len().max(1)).max(16);
        let mut round = s
            .store
            .due_in(lane, to_millis(&until.instant()), per_partition)
            .await?;
        round.truncate(size);
        let Some(&(last_due, _)) = round.last() else {
            return Ok(Pass::Idle);
        };
        if let Until::EachAtItsDue(_) = until {
            if let Some(last) = from_millis(last_due) {
                let _step = s.clock_step.lock().await;
                if last > s.clock.now() {
                    s.clock.advance_to(last)?;
                    s.store.save_clock("simulated", Some(last)).await?;
                }
            }
        }
        Ok(self.fire_round(&round, until, defer).await)
    }

    /// Fires one round, every `(due, id)` entry at once.
    async fn fire_round(
        &self,
        round: &[(i64, String)],
        until: Until,
        defer: Option<Instant>,
    ) -> Pass {
        let s = &self.shared;
        // One pipeline reads every order of the round; actors that are not resident start
        // from it.
        let ids: Vec<String> = round.iter().map(|(_, id)| id.clone()).collect();
        let mut preloaded = match s.store.load_map(&ids).await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "bulk load failed; actors load one by one");
                Default::default()
            }
        };
        let fires = round.iter().map(|(due, id)| {
            let until = match until {
                Until::Now(t) => t,
                Until::EachAtItsDue(_) => from_millis(*due).unwrap_or_else(|| s.clock.now()),
            };
            let fire = FireOrder {
                until,
                defer_grace_to: defer,
                preloaded: preloaded.remove(id).map(Box::new),
            };
            s.actors.fire(id, fire)
        });
        let results = join_all(fires).await;
        let total = results.len();
        let mut errors = results.into_iter().filter_map(Result::err);
        let failed = errors.next().map(|first| (1 + errors.count(), first));
        if let Some((n, e)) = &failed {
            tracing::warn!(error = %e, failed = n, "some due orders could not be fired");
        }
        Pass::Fired {
            fired: total - failed.as_ref().map_or(0, |(n, _)| *n),
            failed,
        }
    }

    /// Applies every stats delta still in the outbox (left by a crash between an order's commit
    /// and its stats update, or a failed apply). Each is applied exactly once: the stats script
    /// ignores versions it has already seen. Returns how many entries were settled.
    ///
    /// # Errors
    /// [`SchedulerError`] when Redis fails or a delta cannot be applied (it stays for the next
    /// sweep).
    pub async fn sweep_outbox(&self) -> Result<usize, SchedulerError> {
        let s = &self.shared;
        let mut settled = 0;
        for partition in s.ownership.owned() {
            loop {
                let entries = s
                    .store
                    .outbox_entries(partition, OUTBOX_SWEEP_CHUNK)
                    .await?;
                if entries.is_empty() {
                    break;
                }
                let applies = entries.into_iter().map(|(entry_id, delta)| {
                    let entry_id = Some(entry_id);
                    s.actors.apply_delta(ApplyDelta { delta, entry_id })
                });
                let results = join_all(applies).await;
                let n = results.len();
                let mut errors = results.into_iter().filter_map(Result::err);
                if let Some(source) = errors.next() {
                    let failed = 1 + errors.count();
                    return Err(SchedulerError::Deltas { failed, source });
                }
                settled += n;
            }
        }
        Ok(settled)
    }

    /// The cron jobs recur runs, by name, with their schedules from config.
    fn jobs(&self) -> [(&'static str, &cron::Schedule); 2] {
        let c = &self.shared.config.cron;
        [
            ("trimEvents", &c.trim_events),
            ("reconcileStats", &c.reconcile_stats),
        ]
    }

    fn next_cron(&self, now: Instant) -> Option<Instant> {
        self.jobs()
            .iter()
            .filter_map(|(_, s)| s.after(&now).next())
            .min()
    }

    /// Runs each cron job whose schedule fired since its last run, once (however many times it
    /// fired), and records the run. A job that fails, or whose bookkeeping cannot be read, is
    /// logged and tried again on the next pass.
    async fn run_cron(&self, now: Instant) {
        // The cron bookkeeping belongs to partition 0's owner.
        if !self.shared.ownership.owns(0) {
            return;
        }
        for (name, schedule) in self.jobs() {
            if let Err(e) = self.run_cron_job(name, schedule, now).await {
                tracing::warn!(job = name, error = %e, "cron job failed");
            }
        }
    }

    async fn run_cron_job(
        &self,
        name: &'static str,
        schedule: &cron::Schedule,
        now: Instant,
    ) -> Result<(), SchedulerError> {
        let store = &self.shared.store;
        match store.cron_last_run(name).await? {
            // Never ran: its schedule counts from now.
            None => {}
            Some(last) if schedule.after(&last).next().is_some_and(|t| t <= now) => {
                self.run_job(name).await?;
            }
            Some(_) => return Ok(()),
        }
        Ok(store.record_cron_run(name, now).await?)
    }

    async fn run_job(&self, name: &str) -> Result<(), SchedulerError> {
        let s = &self.shared;
        match name {
            "trimEvents" => {
                let owned = s.ownership.owned();
                let removed = s.store.trim_events(&owned, s.config.events_max_len).await?;
                tracing::info!(job = name, removed, "trimmed the event stream");
            }
            "reconcileStats" => self.reconcile_sample().await?,
            other => tracing::warn!(job = other, "unknown cron job"),
        }
        Ok(())
    }

    /// The reconcile job: recompute a sample of customers and log any drift (then fix it).
    async fn reconcile_sample(&self) -> Result<(), SchedulerError> {
        let s = &self.shared;
        let owned = s.ownership.owned();
        for customer in s.store.sample_customers(&owned, RECONCILE_SAMPLE).await? {
            match s.actors.to_customer(&customer, Recompute).await {
                Ok(Ok(report)) => {
                    let drift = report["differences"].as_array().map_or(0, Vec::len);
                    if drift > 0 {
                        tracing::warn!(customer_id = %customer, differences = %report["differences"], "customer stats drifted; fixed");
                    }
                }
                Ok(Err(e)) | Err(e) => {
                    tracing::warn!(customer_id = %customer, error = %e, "cannot reconcile customer stats");
                }
            }
        }
        Ok(())
    }
}

/// The scheduler's lanes: `scheduler.lanes` disjoint shares of the partitions. Each lane runs
/// its own loop of rounds, so one lane computes while another's commits are in Redis (a single
/// loop left the daemon and Redis taking turns). Orders are independent of each other, so lanes
/// need no order between them; within a lane, rounds stay in due order.
fn lanes(settings: &SchedulerSettings, owned: &[u16]) -> Vec<Vec<u16>> {
    let n = settings.lanes.clamp(1, owned.len().max(1));
    let mut lanes = vec![Vec::new(); n];
    for (i, p) in owned.iter().enumerate() {
        lanes[i % n].push(*p);
    }
    lanes.retain(|l| !l.is_empty());
    lanes
}

/// Orders per round in one lane: the batch shared by the lanes.
pub fn round_size(s: &SchedulerSettings) -> usize {
    (s.batch_size / s.lanes.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(batch_size: usize, lanes: usize) -> SchedulerSettings {
        SchedulerSettings {
            window: Duration::from_secs(60),
            batch_size,
            lanes,
        }
    }

    #[test]
    fn lanes_share_every_partition_once() {
        for partitions in [1, 16, 64, 1024] {
            let owned: Vec<u16> = (0..partitions).collect();
            for n in [1, 5, 16, 100] {
                let lanes = lanes(&settings(1024, n), &owned);
                assert_eq!(lanes.len(), n.min(usize::from(partitions)));
                assert!(lanes.iter().all(|l| !l.is_empty()));
                let mut all: Vec<u16> = lanes.concat();
                all.sort_unstable();
                assert_eq!(all, owned);
            }
        }
        assert!(
            lanes(&settings(1024, 16), &[]).is_empty(),
            "a standby has no lanes"
        );
        assert_eq!(lanes(&settings(1024, 16), &[3, 9]), vec![vec![3], vec![9]]);
    }

    #[test]
    fn rounds_share_the_batch_between_lanes() {
        assert_eq!(round_size(&settings(1024, 16)), 64);
        assert_eq!(round_size(&settings(10, 16)), 1);
    }
}
