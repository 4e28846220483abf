//! The scheduler: fires due orders. On the system clock it sleeps until the next due instant
//! (or until a commit sets an earlier one); on the simulated clock it runs only inside
//! `advanceClock`. Both read the timer sets in rounds, in `scheduler.lanes` loops at once that
//! share `scheduler.batch_size` orders, so only the near future is ever in memory, and run the
//! cron jobs on the same clock.
//!
//! The unit of work is [`Scheduler::pass`]: one round of one lane, which says what happened.
//! [`Scheduler::drain`] is the one loop of passes; start-up catch-up, `advanceClock` and the
//! system-clock loop only differ in how far they drain and what a stalled round means.

mod settle;
mod test_clocks;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;

use crate::actors::customer::{ApplyDelta, DeltaSource, Recompute};
use crate::actors::{ActorError, Actors, FireOrder};
use crate::clock::{Clock, ClockError, TimerWake};
use crate::config::{CronSettings, SchedulerSettings};
use crate::domain::time::format_instant;
use crate::domain::time::{from_millis, to_millis, Instant};
use crate::ownership::{Ownership, Tick};
use crate::shutdown::Shutdown;
use crate::store::clock::ClockStore;
use crate::store::clock::{Advance, Begun};
use crate::store::orders::OrderStore;
use crate::store::stats::StatsStore;
use crate::store::test_clock::TestClockStore;
use crate::store::timers::TimerStore;
use crate::store::webhooks::WebhookStore;
use crate::store::{Keys, Store, StoreError};
use crate::wire::{Reply, StoredReply};

/// At most this many lanes fire a test clock's advance (each with the live lanes' round size).
const TEST_CLOCK_LANES: usize = 2;
/// On the system clock a test clock's lanes start no round while the live loop fires, or when
/// it is due to within this many ms (about one round of theirs): live timers go first.
const LIVE_FIRST_MS: i64 = 10;
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
    /// advanceClock while this daemon does not hold partition 0 (any more).
    #[error("this daemon does not hold partition 0 (it moved to another daemon); retry")]
    NotClockOwner,
    /// The advance did not complete in time (an owner is being replaced); retry with the same
    /// request id: it completes in the background and the retry gets its one reply.
    #[error("the advance to {to} is still under way (a partition is being taken over); retry with the same request id")]
    AdvancePending { to: String },
    /// A kept advance reply recur cannot read.
    #[error("the kept reply of the advance is corrupt: {0}")]
    CorruptReply(String),
    /// A test clock command refused (SPEC 11.5): the domain error says the code.
    #[error(transparent)]
    Refused(#[from] crate::domain::DomainError),
    /// The daemon is stopping: the advance goes on with partition 0's next owner; retry with
    /// the same request id.
    #[error("this daemon is stopping; the advance to {to} goes on with the next owner of partition 0: retry with the same request id")]
    Stopping { to: String },
}

/// How long an advanceClock request waits for its advance to complete before answering
/// UNAVAILABLE (the advance goes on; a retry with the same id gets its reply).
const ADVANCE_WAIT: Duration = Duration::from_secs(60);
/// How often the clock follower looks again while an advance waits for other daemons.
const ADVANCE_POLL: Duration = Duration::from_millis(25);
/// How long a completing advance waits for relayed statistics to settle (best effort).
const ADVANCE_SETTLE_WAIT: Duration = Duration::from_secs(2);

/// What the scheduler is built from (see [`Scheduler::new`]).
pub struct SchedulerConfig {
    pub settings: SchedulerSettings,
    pub cron: CronSettings,
    /// What the trimEvents job trims the event stream to.
    pub events_max_len: u64,
    /// System-clock start-up: how long grace expiries missed while down still wait.
    pub payment_restart_grace: Duration,
    /// How long replies are kept (an advance's reply is kept when it completes).
    pub reply_retention: Duration,
    /// The webhook endpoints' ids: the trim keeps what they have not delivered.
    pub webhook_endpoints: Vec<String>,
    /// The daemon's shutdown: an advanceClock request waiting for its advance stops waiting
    /// (UNAVAILABLE, retry the same id) and the clock follower stops between rounds.
    pub shutdown: Shutdown,
}

/// The scheduler handle: fires due timers through the actors. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    shared: Arc<Shared>,
}

/// The parts of Redis the scheduler uses, each a narrow handle made at start-up.
struct Stores {
    keys: Keys,
    clock: ClockStore,
    timers: TimerStore,
    orders: OrderStore,
    stats: StatsStore,
    test_clocks: TestClockStore,
    webhooks: WebhookStore,
}

impl Stores {
    fn of(store: &Store) -> Stores {
        Stores {
            keys: store.keys().clone(),
            clock: store.clock_store(),
            timers: store.timer_store(),
            orders: store.order_store(),
            stats: store.stats_store(),
            test_clocks: store.test_clock_store(),
            webhooks: store.webhook_store(),
        }
    }
}

struct Shared {
    actors: Actors,
    stores: Stores,
    clock: Clock,
    wake: TimerWake,
    ownership: Ownership,
    config: SchedulerConfig,
    /// Lanes of one advance move the simulated clock one at a time, so it only goes forward.
    clock_step: tokio::sync::Mutex<()>,
    /// Customer partitions whose inbox was announced to have entries (see
    /// [`Scheduler::inbox_has_entries`]), and the wake-up of the settle loop.
    inbox_pending: std::sync::Mutex<std::collections::BTreeSet<u16>>,
    inbox_kick: tokio::sync::Notify,
    /// Commands hold it shared; the clock follower holds it exclusively while an advance it
    /// knows of runs, so commands wait for the advance (SPEC 7).
    gate: tokio::sync::RwLock<()>,
    /// Wakes the clock follower (an advance began, a partition fired, one was acquired).
    clock_kick: tokio::sync::Notify,
    /// Wakes an advanceClock request waiting for its advance to complete.
    advance_done: tokio::sync::Notify,
    /// Partitions taken over after a long time without an owner, whose overdue timers a
    /// catch-up of their own fires (with the restart grace); the system-clock loop leaves them.
    catching_up: std::sync::Mutex<std::collections::BTreeSet<u16>>,
    /// Wakes the test clock follower (a job began or completed somewhere).
    test_clock_kick: tokio::sync::Notify,
    /// Wakes the tasks driving test clock jobs (a partition did its part somewhere).
    test_clock_step: tokio::sync::Notify,
    /// Wakes requests waiting for a test clock job this daemon completed.
    test_clock_done: tokio::sync::Notify,
    /// The test clocks a task of this daemon drives now.
    test_clocks_driven: std::sync::Mutex<std::collections::HashSet<String>>,
    /// Whether the system-clock loop is firing, and its end (test clock rounds wait for it).
    live_ticking: std::sync::atomic::AtomicBool,
    live_idle: tokio::sync::Notify,
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
                stores: Stores::of(&store),
                clock,
                wake,
                ownership,
                config,
                clock_step: tokio::sync::Mutex::new(()),
                inbox_pending: std::sync::Mutex::default(),
                inbox_kick: tokio::sync::Notify::new(),
                gate: tokio::sync::RwLock::new(()),
                clock_kick: tokio::sync::Notify::new(),
                advance_done: tokio::sync::Notify::new(),
                catching_up: std::sync::Mutex::default(),
                test_clock_kick: tokio::sync::Notify::new(),
                test_clock_step: tokio::sync::Notify::new(),
                test_clock_done: tokio::sync::Notify::new(),
                test_clocks_driven: std::sync::Mutex::default(),
                live_ticking: std::sync::atomic::AtomicBool::new(false),
                live_idle: tokio::sync::Notify::new(),
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
        let defer = (!s.clock.is_simulated()).then(|| self.restart_grace_until(now));
        let owned = s.ownership.owned();
        self.drain(&owned, Until::Now(now), defer, OnStall::Retry, None)
            .await
    }

    /// advanceClock (SPEC 6, 10), run by partition 0's owner: records the target in the
    /// shared clock, lets every owner fire its partitions up to it (this daemon's follower
    /// among them), and returns the reply kept when the advance completed. A retried request
    /// id of an advance under way waits for the same advance.
    ///
    /// # Errors
    /// [`SchedulerError::Clock`] when the clock is not simulated or `to` is before now;
    /// [`SchedulerError::NotClockOwner`] when this daemon does not hold partition 0;
    /// [`SchedulerError::AdvancePending`] when it did not complete within [`ADVANCE_WAIT`].
    pub async fn advance(
        &self,
        to: Instant,
        request_id: &str,
        body_hash: &str,
    ) -> Result<Reply, SchedulerError> {
        let s = &self.shared;
        if !s.clock.is_simulated() {
            return Err(ClockError::NotSimulated.into());
        }
        let deadline = tokio::time::Instant::now() + ADVANCE_WAIT;
        // Another request's advance goes first.
        loop {
            let record = s.stores.clock.clock_state().await?;
            let now = record.now.unwrap_or_else(|| s.clock.now());
            match &record.advance {
                Some(a) if a.request_id != request_id => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(SchedulerError::AdvancePending {
                            to: format_instant(&to),
                        });
                    }
                    self.clock_moved();
                    self.wait_advance(ADVANCE_POLL * 4).await;
                    if s.config.shutdown.is_triggered() {
                        return Err(SchedulerError::Stopping {
                            to: format_instant(&to),
                        });
                    }
                    continue;
                }
                Some(_) => break,
                None if to < now => return Err(ClockError::Backwards { now, to }.into()),
                None => {}
            }
            let token = s.ownership.token(0).ok_or(SchedulerError::NotClockOwner)?;
            match s
                .stores
                .clock
                .begin_advance(&token, to, request_id, body_hash)
                .await?
            {
                Begun::Begun => break,
                Begun::Busy => continue,
                Begun::Fenced => {
                    s.ownership.fenced(0);
                    return Err(SchedulerError::NotClockOwner);
                }
            }
        }
        if let Err(e) = s.stores.clock.announce_clock().await {
            tracing::warn!(error = %e, "cannot announce the advance; other daemons see it on their next look");
        }
        self.clock_moved();
        loop {
            let waited = self.wait_advance(ADVANCE_POLL * 4);
            if let Some(json) = s.stores.clock.kept_reply(0, request_id).await? {
                let stored: StoredReply = serde_json::from_str(&json)
                    .map_err(|e| SchedulerError::CorruptReply(e.to_string()))?;
                return Ok(stored.reply);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(SchedulerError::AdvancePending {
                    to: format_instant(&to),
                });
            }
            tokio::select! {
                () = waited => {}
                () = s.config.shutdown.wait() => {
                    return Err(SchedulerError::Stopping { to: format_instant(&to) });
                }
            }
        }
    }

    /// Waits until this daemon completes an advance, or `at_most`.
    fn wait_advance(&self, at_most: Duration) -> impl std::future::Future<Output = ()> + '_ {
        let done = self.shared.advance_done.notified();
        async move {
            tokio::select! {
                _ = done => {}
                _ = tokio::time::sleep(at_most) => {}
            }
        }
    }

    /// The shared clock may have moved (an advance began or completed, a partition fired, one
    /// was taken over): the clock follower looks again.
    pub fn clock_moved(&self) {
        self.shared.clock_kick.notify_one();
    }

    /// Commands hold this while they run: they wait while an advance this daemon knows of
    /// runs.
    pub async fn command_gate(&self) -> tokio::sync::RwLockReadGuard<'_, ()> {
        self.shared.gate.read().await
    }

    /// The command gate if it is free now (no advance under way), without waiting.
    pub fn try_command_gate(&self) -> Option<tokio::sync::RwLockReadGuard<'_, ()>> {
        self.shared.gate.try_read().ok()
    }

    /// The clock follower (simulated clock only): whenever the shared clock has an advance
    /// under way, holds commands back, fires the partitions this daemon owns up to its target
    /// (each order at its own due instant) and records how far each has fired; partition 0's
    /// owner completes the advance once every partition has fired up to the target (also an
    /// advance a daemon that died began). Without an advance, it follows the shared now.
    pub async fn follow_clock(self, shutdown: Shutdown) {
        let s = &self.shared;
        let every = s.ownership.config().renew_interval;
        let mut outage = crate::store::Outage::counted(
            "following the shared clock",
            Arc::clone(s.actors.metrics()),
        );
        loop {
            match self.follow_once(&shutdown).await {
                Ok(()) => outage.log_success(),
                Err(e) => {
                    outage.log_failure(&e);
                }
            }
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = s.clock_kick.notified() => {}
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// One look at the shared clock (see [`Scheduler::follow_clock`]).
    async fn follow_once(&self, shutdown: &Shutdown) -> Result<(), SchedulerError> {
        let s = &self.shared;
        let record = s.stores.clock.clock_state().await?;
        if record.advance.is_none() {
            self.follow_now(record.now)?;
            return Ok(());
        }
        let _exclusive = s.gate.write().await;
        let mut settling_since: Option<tokio::time::Instant> = None;
        // An advance is never silent: its start here and its progress every 5 s are logged.
        let mut reported: Option<tokio::time::Instant> = None;
        while !shutdown.is_triggered() {
            let record = s.stores.clock.clock_state().await?;
            let Some(advance) = record.advance else {
                self.follow_now(record.now)?;
                s.advance_done.notify_waiters();
                return Ok(());
            };
            let target = advance.target;
            if reported.is_none_or(|t| t.elapsed() >= Duration::from_secs(5)) {
                tracing::info!(
                    to = %format_instant(&target),
                    reached = %format_instant(&s.clock.now()),
                    request_id = %advance.request_id,
                    "advance under way"
                );
                reported = Some(tokio::time::Instant::now());
            }
            let owned = s.ownership.owned();
            let behind = s.stores.clock.not_fired(&owned, target).await?;
            if !behind.is_empty() {
                let drain = self.drain(
                    &behind,
                    Until::EachAtItsDue(target),
                    None,
                    OnStall::Fail,
                    Some(shutdown),
                );
                // Progress every 5 s while the partitions fire (a long advance, or one a
                // restarted daemon finishes, is never silent).
                let progress = async {
                    loop {
                        tokio::time::sleep(Duration::from_secs(5)).await;
                        tracing::info!(
                            to = %format_instant(&target),
                            reached = %format_instant(&s.clock.now()),
                            "advance under way"
                        );
                    }
                };
                let drained = tokio::select! {
                    r = drain => r,
                    () = progress => unreachable!("the progress loop never ends"),
                };
                match drained {
                    // Stopping: what is left is fired by the partitions' next owners.
                    Ok(_) if shutdown.is_triggered() => return Ok(()),
                    Ok(_) => {
                        self.settle_deltas().await?;
                        // Only partitions with nothing left due by the target count as fired:
                        // a lane that ended early (one of its partitions moved to another
                        // daemon) leaves its other partitions' timers for the next look.
                        let drained = s
                            .stores
                            .timers
                            .without_due(&behind, None, to_millis(&target))
                            .await?;
                        let held = s.ownership.tokens(&drained);
                        for p in s.stores.clock.mark_fired(&held, target).await? {
                            s.ownership.fenced(p);
                        }
                        s.stores.clock.announce_clock().await?;
                    }
                    // A partition lost on the way: its new owner fires it.
                    Err(e) => {
                        tracing::warn!(error = %e, "a round of the advance failed; looking again")
                    }
                }
            }
            if s.ownership.owns(0) {
                let all: Vec<u16> = (0..s.stores.stats.partitions()).collect();
                if s.stores.clock.not_fired(&all, target).await?.is_empty() {
                    // Every partition fired: statistics relayed between daemons settle (best
                    // effort, bounded), then the advance completes.
                    self.settle_deltas().await?;
                    let since = *settling_since.get_or_insert_with(tokio::time::Instant::now);
                    let settled = s.stores.stats.unsettled_deltas(&all).await? == 0;
                    if settled || since.elapsed() >= ADVANCE_SETTLE_WAIT {
                        self.complete_advance(&advance).await?;
                        continue;
                    }
                }
            }
            tokio::select! {
                _ = s.clock_kick.notified() => {}
                _ = tokio::time::sleep(ADVANCE_POLL) => {}
                _ = shutdown.wait() => {}
            }
        }
        Ok(())
    }

    /// Partition 0's owner completes an advance every partition has fired: the local clock and
    /// the cron jobs move to the target, then the shared clock does, with the reply kept.
    async fn complete_advance(&self, advance: &Advance) -> Result<(), SchedulerError> {
        let s = &self.shared;
        let target = advance.target;
        if target > s.clock.now() {
            s.clock.advance_to(target)?;
        }
        self.run_cron(target).await;
        let reply = Reply::ok(
            Some(advance.request_id.clone()),
            serde_json::json!({"now": format_instant(&target)}),
        );
        let stored = StoredReply {
            body_hash: advance.body_hash.clone(),
            reply,
        };
        let json = serde_json::to_string(&stored)
            .map_err(|e| SchedulerError::CorruptReply(e.to_string()))?;
        let token = s.ownership.token(0).ok_or(SchedulerError::NotClockOwner)?;
        let ttl = s.config.reply_retention.as_secs().max(1);
        match s
            .stores
            .clock
            .finish_advance(&token, target, &advance.request_id, &json, ttl)
            .await
        {
            Err(StoreError::Fenced { .. }) => {
                s.ownership.fenced(0);
                return Err(SchedulerError::NotClockOwner);
            }
            other => {
                other?;
            }
        }
        tracing::info!(to = %format_instant(&target), "advance completed");
        if let Err(e) = s.stores.clock.announce_clock().await {
            tracing::warn!(error = %e, "cannot announce the completed advance");
        }
        Ok(())
    }

    /// Moves this daemon's simulated clock up to the shared now (never back).
    fn follow_now(&self, now: Option<Instant>) -> Result<(), SchedulerError> {
        let clock = &self.shared.clock;
        if let Some(now) = now {
            if now > clock.now() {
                clock.advance_to(now)?;
            }
        }
        Ok(())
    }

    /// The system-clock loop: one [`Scheduler::live_step`], then sleep until the instant it
    /// names, an earlier timer committed, or shutdown.
    pub async fn run(self, shutdown: Shutdown) {
        let s = &self.shared;
        while !shutdown.is_triggered() {
            let wake = self.live_step(&shutdown).await;
            s.wake.plan(wake);
            let sleep_ms = u64::try_from(wake - to_millis(&s.clock.now())).unwrap_or(0);
            tokio::select! {
                _ = shutdown.wait() => break,
                _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {}
                _ = s.wake.woken() => {}
            }
        }
    }

    /// One step of the system-clock loop: fire what is due now; the instant (ms) to look again:
    /// the next due timer, the end of the loaded window, or the next cron job, whichever
    /// comes first (a second from now after a failed pass).
    async fn live_step(&self, shutdown: &Shutdown) -> i64 {
        let s = &self.shared;
        let window = s.config.settings.window;
        let now = s.clock.now();
        s.live_ticking
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let ticked = self.tick(now, shutdown).await;
        s.live_ticking
            .store(false, std::sync::atomic::Ordering::Relaxed);
        s.live_idle.notify_waiters();
        let next_due = match ticked {
            Ok(next) => next,
            Err(e) => {
                s.actors.metrics().redis_error();
                tracing::warn!(error = %e, "scheduler pass failed; retrying");
                Some(to_millis(&now) + 1000)
            }
        };
        let horizon = to_millis(&now) + i64::try_from(window.as_millis()).unwrap_or(60_000);
        let cron_next = self
            .next_cron(now)
            .map(|t| to_millis(&t))
            .unwrap_or(i64::MAX);
        next_due.unwrap_or(i64::MAX).min(horizon).min(cron_next)
    }

    /// The lease loop: every `cluster.renew_interval`, renews this daemon's leases and
    /// acquires free ones ([`Ownership::tick`]); forgets the actors of partitions it lost, and
    /// takes over those it acquired (their outbox, their overdue timers, the shared clock).
    ///
    /// `shutdown` is its own stop, given after the daemon's in-flight work has finished: the
    /// leases stay renewed while the last commits land, then they are released at once. It
    /// acquires nothing once the daemon is stopping.
    pub async fn keep_leases(self, shutdown: Shutdown) {
        let every = self.shared.ownership.config().renew_interval;
        // The lease loop counts its Redis errors itself (Ownership::tick).
        let mut outage = crate::store::Outage::new("renewing the partition leases");
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(every) => {}
            }
            self.lease_step(&mut outage).await;
        }
    }

    /// One step of the lease loop: renew (only renew, once the daemon is stopping) and
    /// acquire, then act on what changed.
    async fn lease_step(&self, outage: &mut crate::store::Outage) {
        let ownership = &self.shared.ownership;
        let step = if self.shared.config.shutdown.is_triggered() {
            ownership.renew_only().await
        } else {
            ownership.tick().await
        };
        match step {
            Ok(tick) => {
                outage.log_success();
                self.apply_tick(&tick).await;
            }
            Err(e) => {
                outage.log_failure(&e);
            }
        }
    }

    /// What a lease step means for the rest of the daemon.
    async fn apply_tick(&self, tick: &Tick) {
        let s = &self.shared;
        if !tick.lost.is_empty() {
            tracing::warn!(partitions = ?tick.lost, "lost partition leases; their actors are dropped");
        }
        if !tick.draining.is_empty() {
            tracing::info!(partitions = ?tick.draining, "above the fair share: handing partitions over");
        }
        if !tick.released.is_empty() {
            tracing::info!(partitions = ?tick.released, "handed partitions over");
        }
        s.actors.forget_partitions(&tick.gone());
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
            if let (_, Some(now)) = s.stores.clock.clock_record().await? {
                if now > s.clock.now() {
                    s.clock.advance_to(now)?;
                }
            }
        }
        self.sweep_outbox().await?;
        self.sweep_inbox(&tick.acquired).await?;
        if !s.clock.is_simulated() && !tick.orphaned.is_empty() {
            let partitions: Vec<u16> = tick.orphaned.iter().map(|(p, _)| *p).collect();
            self.catching_up().extend(partitions.iter().copied());
            let this = self.clone();
            tokio::task::spawn_local(async move { this.catch_up_orphans(partitions).await });
        }
        s.wake.wake_now();
        // An advance under way needs these partitions fired too.
        self.clock_moved();
        Ok(())
    }

    /// Partitions taken over whose catch-up of overdue timers is still running (readiness).
    pub fn catching_up_partitions(&self) -> Vec<u16> {
        self.catching_up().iter().copied().collect()
    }

    fn catching_up(&self) -> std::sync::MutexGuard<'_, std::collections::BTreeSet<u16>> {
        self.shared
            .catching_up
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The partitions the system-clock loop fires: those owned, less those in a catch-up.
    fn loop_partitions(&self) -> Vec<u16> {
        let catching_up = self.catching_up().clone();
        self.shared
            .ownership
            .owned()
            .into_iter()
            .filter(|p| !catching_up.contains(p))
            .collect()
    }

    /// Until when payment grace missed while nobody fired is deferred: `payment_restart_grace`
    /// from the first whole millisecond after `now` (instants are whole milliseconds, and now
    /// is truncated), so it is never shorter than configured.
    fn restart_grace_until(&self, now: Instant) -> Instant {
        crate::domain::time::saturating_add(
            now,
            chrono::Duration::milliseconds(1)
                + chrono::Duration::from_std(self.shared.config.payment_restart_grace)
                    .unwrap_or(chrono::Duration::hours(1)),
        )
    }

    /// Fires the overdue timers of partitions that had no owner for longer than the lease TTL
    /// plus one renewal interval (SPEC 10): payment grace that ran out meanwhile gets
    /// `payment_restart_grace` more from now, as after a restart.
    async fn catch_up_orphans(&self, partitions: Vec<u16>) {
        let s = &self.shared;
        let now = s.clock.now();
        let defer = self.restart_grace_until(now);
        tracing::info!(partitions = ?partitions, "catching up partitions that had no owner; missed payment grace is deferred");
        if let Err(e) = self
            .drain(
                &partitions,
                Until::Now(now),
                Some(defer),
                OnStall::Retry,
                None,
            )
            .await
        {
            tracing::warn!(error = %e, "catch-up of taken-over partitions failed; the scheduler fires them");
        }
        let mut catching_up = self.catching_up();
        for p in &partitions {
            catching_up.remove(p);
        }
        drop(catching_up);
        s.wake.wake_now();
    }

    /// One turn of the system-clock loop: everything due by `now`, the outbox, the cron jobs;
    /// returns the earliest timer left.
    async fn tick(&self, now: Instant, shutdown: &Shutdown) -> Result<Option<i64>, SchedulerError> {
        let owned = self.loop_partitions();
        self.drain(
            &owned,
            Until::Now(now),
            None,
            OnStall::Retry,
            Some(shutdown),
        )
        .await?;
        if let Err(e) = self.settle_deltas().await {
            tracing::warn!(error = %e, "outbox sweep failed");
        }
        self.run_cron(now).await;
        let owned = self.loop_partitions();
        Ok(self.shared.stores.timers.earliest_due(&owned).await?)
    }

    /// The one loop of passes: every lane at once, each passing until nothing is due by
    /// `until` (or shutdown). Returns how many orders fired.
    async fn drain(
        &self,
        partitions: &[u16],
        until: Until,
        defer: Option<Instant>,
        on_stall: OnStall,
        shutdown: Option<&Shutdown>,
    ) -> Result<usize, SchedulerError> {
        self.drain_on(partitions, None, until, defer, on_stall, shutdown)
            .await
    }

    /// [`Scheduler::drain`] over the timers of the live orders (`test_clock` None) or of one
    /// test clock's orders (SPEC 11.5: each fired at its own due instant, the daemon's clock
    /// left alone).
    async fn drain_on(
        &self,
        partitions: &[u16],
        test_clock: Option<&str>,
        until: Until,
        defer: Option<Instant>,
        on_stall: OnStall,
        shutdown: Option<&Shutdown>,
    ) -> Result<usize, SchedulerError> {
        // A test clock's advance runs in fewer lanes than the live scheduler: it shares the
        // daemon's thread with the live timers, which must stay on time (SPEC 11.5).
        let settings = match test_clock {
            None => self.shared.config.settings.clone(),
            Some(_) => SchedulerSettings {
                lanes: self.shared.config.settings.lanes.min(TEST_CLOCK_LANES),
                ..self.shared.config.settings.clone()
            },
        };
        let lanes = lanes(&settings, partitions);
        let drained = join_all(lanes.iter().map(|lane| async move {
            let mut total = 0;
            loop {
                let (fired, failed) = match self.pass(lane, test_clock, until, defer).await? {
                    Pass::Idle => return Ok(total),
                    Pass::Fired { fired, failed } => (fired, failed),
                };
                total += fired;
                if let (0, Some((_, ActorError::NotOwner { partition }))) = (fired, &failed) {
                    // A partition of the lane moved to another daemon: its owner fires it, and
                    // the next drain runs over what this daemon still owns.
                    tracing::debug!(partition, "a lane's partition moved on; ending the lane");
                    return Ok(total);
                }
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
        test_clock: Option<&str>,
        until: Until,
        defer: Option<Instant>,
    ) -> Result<Pass, SchedulerError> {
        let s = &self.shared;
        if test_clock.is_some() {
            self.live_first().await;
        }
        let size = round_size(&s.config.settings);
        let per_partition = (size / lane.len().max(1)).max(16);
        let mut round = s
            .stores
            .timers
            .due_in(lane, test_clock, to_millis(&until.instant()), per_partition)
            .await?;
        round.truncate(size);
        let Some(&(last_due, _)) = round.last() else {
            return Ok(Pass::Idle);
        };
        if let (Until::EachAtItsDue(_), None) = (until, test_clock) {
            if let Some(last) = from_millis(last_due) {
                let _step = s.clock_step.lock().await;
                if last > s.clock.now() {
                    s.clock.advance_to(last)?;
                }
            }
        }
        Ok(self.fire_round(&round, test_clock, until, defer).await)
    }

    /// On the system clock, a test clock's round waits while the live loop fires or is about
    /// to (at most 10 looks of 2 ms, so a busy live book slows an advance but never stops it).
    async fn live_first(&self) {
        let s = &self.shared;
        if s.clock.is_simulated() {
            return;
        }
        for _ in 0..10 {
            let soon = s.wake.planned() <= to_millis(&s.clock.now()) + LIVE_FIRST_MS;
            if !soon && !s.live_ticking.load(std::sync::atomic::Ordering::Relaxed) {
                return;
            }
            let idle = s.live_idle.notified();
            tokio::select! {
                _ = idle => {}
                _ = tokio::time::sleep(Duration::from_millis(2)) => {}
            }
        }
    }

    /// Fires one round, every `(due, id)` entry at once.
    async fn fire_round(
        &self,
        round: &[(i64, String)],
        test_clock: Option<&str>,
        until: Until,
        defer: Option<Instant>,
    ) -> Pass {
        let s = &self.shared;
        // One pipeline reads every order of the round; actors that are not resident start
        // from it.
        let ids: Vec<String> = round.iter().map(|(_, id)| id.clone()).collect();
        let mut preloaded = match s.stores.orders.load_map_for(&ids, test_clock).await {
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
                test_clock: test_clock.map(str::to_string),
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
        let store = &self.shared.stores;
        match store.clock.cron_last_run(name).await? {
            // Never ran: its schedule counts from now.
            None => {}
            Some(last) if schedule.after(&last).next().is_some_and(|t| t <= now) => {
                self.run_job(name).await?;
                // The other daemons run it over their own partitions.
                if let Err(e) = store.clock.announce_cron(name).await {
                    tracing::warn!(job = name, error = %e, "cannot announce a cron run; other daemons run it next time");
                }
            }
            Some(_) => return Ok(()),
        }
        let token = self
            .shared
            .ownership
            .token(0)
            .ok_or(SchedulerError::NotClockOwner)?;
        Ok(store.clock.record_cron_run(name, now, &token).await?)
    }

    /// Partition 0's owner ran cron job `name` (`<prefix>:cron`): this daemon runs it over the
    /// partitions it owns (each daemon trims and reconciles its own).
    pub fn cron_announced(&self, name: &str) {
        if self.shared.ownership.owns(0) {
            return;
        }
        let Some((job, _)) = self.jobs().into_iter().find(|(j, _)| *j == name) else {
            tracing::debug!(job = name, "an unknown cron job was announced");
            return;
        };
        let this = self.clone();
        tokio::task::spawn_local(async move {
            if let Err(e) = this.run_job(job).await {
                tracing::warn!(job, error = %e, "cron job failed");
            }
        });
    }

    async fn run_job(&self, name: &str) -> Result<(), SchedulerError> {
        let s = &self.shared;
        match name {
            "trimEvents" => {
                let held = s.ownership.tokens(&s.ownership.owned());
                let removed = s
                    .stores
                    .webhooks
                    .trim_events(&held, s.config.events_max_len, &s.config.webhook_endpoints)
                    .await?;
                tracing::info!(job = name, removed, "trimmed the event stream");
            }
            "reconcileStats" => self.reconcile_sample().await?,
            other => tracing::warn!(job = other, "unknown cron job"),
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
