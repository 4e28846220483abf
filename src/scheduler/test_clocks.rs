//! Test clocks (SPEC 11.5): jobs (advances and deletions) on clocks of their own, beside the
//! daemon's clock. A job is begun by the owner of the clock's partition
//! ([`Scheduler::test_clock_job`]); every daemon's follower
//! ([`Scheduler::follow_test_clocks`]) finds the clocks with a job under way and drives each
//! in a task of its own over the partitions the daemon owns: an advance fires the clock's
//! timer sets (each order at its own due instant, exactly as advanceClock does, the daemon's
//! clock left alone), a deletion deletes the clock's orders. Partition by partition it
//! records that it is done; the owner of the clock's partition completes the job when all are.
//!
//! None of this takes the command gate: an advance of one clock never waits for, blocks or
//! stamps the daemon's clock or another test clock.

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;

use super::{
    OnStall, Scheduler, SchedulerError, Until, ADVANCE_POLL, ADVANCE_SETTLE_WAIT, ADVANCE_WAIT,
};
use crate::actors::order::{Execute, OrderOp, RequestMeta};
use crate::domain::command::Command;
use crate::domain::time::{format_instant, to_millis, Instant};
use crate::domain::{DomainError, ErrorCode};
use crate::shutdown::Shutdown;
use crate::store::test_clock::{JobBegun, JobKind, TestClock, TestClockJob};
use crate::store::StoreError;
use crate::wire::{Reply, StoredReply};

/// Orders a deletion deletes at once per partition.
const DELETE_CHUNK: usize = 256;

impl Scheduler {
    /// Begins job `kind` of request `request_id` on `clock` (this daemon owns the clock's
    /// partition) and returns the reply kept when it completed. A retried request id of a job
    /// under way waits for the same job; another request's job on the clock goes first.
    ///
    /// # Errors
    /// [`SchedulerError::Refused`] for a clock that does not exist (NOT_FOUND) or an advance
    /// before its time (INVALID_REQUEST); [`SchedulerError::AdvancePending`] when the job did
    /// not complete within [`ADVANCE_WAIT`] (it goes on; retry the same id).
    pub async fn test_clock_job(
        &self,
        clock: &str,
        kind: JobKind,
        target: Option<Instant>,
        request_id: &str,
        body_hash: &str,
    ) -> Result<Reply, SchedulerError> {
        let s = &self.shared;
        let home = s.stores.keys.partition(clock);
        let deadline = tokio::time::Instant::now() + ADVANCE_WAIT;
        let pending = || SchedulerError::AdvancePending {
            to: target.map_or_else(|| "deletion".to_string(), |t| format_instant(&t)),
        };
        loop {
            let Some(tc) = s.stores.test_clocks.test_clock(clock).await? else {
                return Err(not_found(clock));
            };
            if let Some(job) = &tc.job {
                if job.request_id != request_id {
                    // Another request's job goes first.
                    if tokio::time::Instant::now() >= deadline {
                        return Err(pending());
                    }
                    self.test_clocks_moved();
                    self.wait_test_clock(ADVANCE_POLL * 4).await;
                    if s.config.shutdown.is_triggered() {
                        return Err(SchedulerError::Stopping {
                            to: format_instant(&tc.frozen),
                        });
                    }
                    continue;
                }
                break;
            }
            let target = target.unwrap_or(tc.frozen);
            if target < tc.frozen {
                return Err(SchedulerError::Refused(DomainError::invalid(
                    "to",
                    format!(
                        "{} is before the test clock's frozenTime ({})",
                        format_instant(&target),
                        format_instant(&tc.frozen)
                    ),
                )));
            }
            let counts = match kind {
                JobKind::Delete => s.stores.test_clocks.test_clock_counts(clock).await?,
                JobKind::Advance => (0, 0),
            };
            let token = s
                .ownership
                .token(home)
                .ok_or(StoreError::Fenced { partition: home })?;
            match s
                .stores
                .test_clocks
                .begin_test_clock_job(&token, clock, kind, target, request_id, body_hash, counts)
                .await?
            {
                JobBegun::Begun => break,
                JobBegun::Busy | JobBegun::Backwards => continue,
                JobBegun::Missing => return Err(not_found(clock)),
                JobBegun::Fenced => {
                    s.ownership.fenced(home);
                    return Err(StoreError::Fenced { partition: home }.into());
                }
            }
        }
        if let Err(e) = s.stores.test_clocks.announce_test_clocks().await {
            tracing::warn!(error = %e, "cannot announce a test clock job; other daemons see it on their next look");
        }
        self.test_clocks_moved();
        loop {
            let waited = self.wait_test_clock(ADVANCE_POLL * 4);
            if let Some(json) = s.stores.clock.kept_reply(home, request_id).await? {
                let stored: StoredReply = serde_json::from_str(&json)
                    .map_err(|e| SchedulerError::CorruptReply(e.to_string()))?;
                return Ok(stored.reply);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(pending());
            }
            tokio::select! {
                () = waited => {}
                () = s.config.shutdown.wait() => {
                    return Err(pending());
                }
            }
        }
    }

    /// Waits until a test clock job completes here, or `at_most`.
    fn wait_test_clock(&self, at_most: Duration) -> impl std::future::Future<Output = ()> + '_ {
        let done = self.shared.test_clock_done.notified();
        async move {
            tokio::select! {
                _ = done => {}
                _ = tokio::time::sleep(at_most) => {}
            }
        }
    }

    /// A test clock job began, progressed or completed (here or on another daemon): the
    /// follower and the drivers look again.
    pub fn test_clocks_moved(&self) {
        self.shared.test_clock_kick.notify_one();
        self.shared.test_clock_step.notify_waiters();
    }

    /// The test clock follower: whenever a clock has a job under way, drives it over the
    /// partitions this daemon owns, one task per clock (clocks go side by side). Looks every
    /// renewal interval, and when kicked.
    pub async fn follow_test_clocks(self, shutdown: Shutdown) {
        let s = &self.shared;
        let every = s.ownership.config().renew_interval;
        let mut outage = crate::store::Outage::counted(
            "following the test clocks",
            std::sync::Arc::clone(s.actors.metrics()),
        );
        loop {
            match s.stores.test_clocks.test_clock_jobs().await {
                Ok(clocks) => {
                    outage.log_success();
                    for clock in clocks {
                        let fresh = s
                            .test_clocks_driven
                            .lock()
                            .unwrap_or_else(std::sync::PoisonError::into_inner)
                            .insert(clock.clone());
                        if fresh {
                            let (this, stop) = (self.clone(), shutdown.clone());
                            tokio::task::spawn_local(async move {
                                this.drive_test_clock(&clock, &stop).await;
                            });
                        }
                    }
                }
                Err(e) => {
                    outage.log_failure(&e);
                }
            }
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = s.test_clock_kick.notified() => {}
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Drives one clock's jobs until none is under way (or shutdown), then lets the follower
    /// know (a job begun meanwhile is picked up again).
    async fn drive_test_clock(&self, clock: &str, shutdown: &Shutdown) {
        let s = &self.shared;
        let mut settling_since = None;
        loop {
            match self
                .test_clock_round(clock, shutdown, &mut settling_since)
                .await
            {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(test_clock_id = %clock, error = %e, "a round of a test clock job failed; looking again");
                }
            }
            if shutdown.is_triggered() {
                break;
            }
            tokio::select! {
                _ = s.test_clock_step.notified() => {}
                _ = tokio::time::sleep(ADVANCE_POLL) => {}
                _ = shutdown.wait() => {}
            }
        }
        s.test_clocks_driven
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(clock);
        s.test_clock_kick.notify_one();
    }

    /// One look at a clock's job: this daemon's partitions that have not done it do it; the
    /// owner of the clock's partition completes it when every partition has. Ok(false) when
    /// there is no job (any more).
    async fn test_clock_round(
        &self,
        clock: &str,
        shutdown: &Shutdown,
        settling_since: &mut Option<tokio::time::Instant>,
    ) -> Result<bool, SchedulerError> {
        let s = &self.shared;
        let Some(tc) = s.stores.test_clocks.test_clock(clock).await? else {
            s.test_clock_done.notify_waiters();
            return Ok(false);
        };
        let Some(job) = tc.job.clone() else {
            s.test_clock_done.notify_waiters();
            return Ok(false);
        };
        let owned = s.ownership.owned();
        let behind = s
            .stores
            .test_clocks
            .test_clock_not_done(&owned, clock, job.seq)
            .await?;
        if !behind.is_empty() {
            let worked = match job.kind {
                JobKind::Advance => self
                    .drain_on(
                        &behind,
                        Some(clock),
                        Until::EachAtItsDue(job.target),
                        None,
                        OnStall::Fail,
                        Some(shutdown),
                    )
                    .await
                    .map(|_| ()),
                JobKind::Delete => self.delete_clock_orders(&behind, clock, &job).await,
            };
            match worked {
                Ok(()) if shutdown.is_triggered() => return Ok(true),
                Ok(()) => {
                    self.settle_deltas().await?;
                    // Only partitions with nothing left to do count as done (a lane that ended
                    // early leaves the rest for the next look).
                    let finished = match job.kind {
                        JobKind::Advance => {
                            s.stores
                                .timers
                                .without_due(&behind, Some(clock), to_millis(&job.target))
                                .await?
                        }
                        JobKind::Delete => {
                            s.stores
                                .test_clocks
                                .without_orders(&behind, Some(clock))
                                .await?
                        }
                    };
                    let held = s.ownership.tokens(&finished);
                    for p in s
                        .stores
                        .test_clocks
                        .mark_test_clock_done(&held, clock, job.seq)
                        .await?
                    {
                        s.ownership.fenced(p);
                    }
                    s.stores.test_clocks.announce_test_clocks().await?;
                }
                Err(e) => {
                    tracing::warn!(test_clock_id = %clock, error = %e, "a round of a test clock job failed; looking again");
                }
            }
        }
        if s.ownership.owns(s.stores.keys.partition(clock)) {
            let all: Vec<u16> = (0..s.stores.stats.partitions()).collect();
            if s.stores
                .test_clocks
                .test_clock_not_done(&all, clock, job.seq)
                .await?
                .is_empty()
            {
                // Statistics relayed between daemons settle (best effort, bounded) first.
                self.settle_deltas().await?;
                let since = *settling_since.get_or_insert_with(tokio::time::Instant::now);
                let settled = s.stores.stats.unsettled_deltas(&all).await? == 0;
                if settled || since.elapsed() >= ADVANCE_SETTLE_WAIT {
                    self.complete_test_clock_job(&tc, &job).await?;
                    *settling_since = None;
                }
            }
        }
        Ok(true)
    }

    /// Deletes the clock's orders in `partitions`, each through its actor (an orderDeleted
    /// event, its statistics withdrawn), under request ids derived from the job's, so a retry
    /// deletes nothing twice.
    async fn delete_clock_orders(
        &self,
        partitions: &[u16],
        clock: &str,
        job: &TestClockJob,
    ) -> Result<(), SchedulerError> {
        let s = &self.shared;
        for &p in partitions {
            loop {
                let ids = s
                    .stores
                    .orders
                    .partition_order_ids(p, Some(clock), 0, DELETE_CHUNK)
                    .await?;
                if ids.is_empty() {
                    break;
                }
                let deletes = ids.iter().map(|id| {
                    let request = RequestMeta {
                        id: format!("{}:delete:{id}", job.request_id),
                        body_hash: job.body_hash.clone(),
                    };
                    let op = OrderOp::Command(Command::Delete);
                    s.actors.execute(id, Execute { op, request })
                });
                let mut progressed = false;
                for (id, result) in ids.iter().zip(join_all(deletes).await) {
                    let reply =
                        result.map_err(|source| SchedulerError::Failed { failed: 1, source })?;
                    match reply.error {
                        None => progressed = true,
                        // An index entry without its order: dropped.
                        Some(e) if e.code == ErrorCode::NotFound => {
                            s.stores
                                .test_clocks
                                .drop_order_index_entry(p, Some(clock), id)
                                .await?;
                            progressed = true;
                        }
                        Some(e) => {
                            tracing::warn!(order_id = %id, test_clock_id = %clock, error = %e.message, "a test clock's order could not be deleted");
                        }
                    }
                }
                if !progressed {
                    break;
                }
            }
        }
        Ok(())
    }

    /// The owner of the clock's partition completes a job every partition has done: an
    /// advance moves the clock's time to its target; a deletion removes the clock's customers
    /// and keys, then the clock. The reply is kept with it.
    async fn complete_test_clock_job(
        &self,
        tc: &TestClock,
        job: &TestClockJob,
    ) -> Result<(), SchedulerError> {
        let s = &self.shared;
        let home = s.stores.keys.partition(&tc.id);
        let result = match job.kind {
            JobKind::Advance => {
                let mut after = tc.clone();
                after.frozen = job.target;
                after.job = None;
                after.json()
            }
            JobKind::Delete => {
                s.stores.test_clocks.remove_test_clock_rest(&tc.id).await?;
                json!({
                    "testClockId": tc.id,
                    "deletedOrders": job.orders,
                    "deletedCustomers": job.customers,
                })
            }
        };
        let stored = StoredReply {
            body_hash: job.body_hash.clone(),
            reply: Reply::ok(Some(job.request_id.clone()), result),
        };
        let json = serde_json::to_string(&stored)
            .map_err(|e| SchedulerError::CorruptReply(e.to_string()))?;
        let token = s
            .ownership
            .token(home)
            .ok_or(StoreError::Fenced { partition: home })?;
        let ttl = s.config.reply_retention.as_secs().max(1);
        match s
            .stores
            .test_clocks
            .finish_test_clock_job(&token, &tc.id, &job.request_id, &json, ttl)
            .await
        {
            Err(StoreError::Fenced { partition }) => {
                s.ownership.fenced(partition);
                return Err(StoreError::Fenced { partition }.into());
            }
            other => {
                other?;
            }
        }
        tracing::info!(test_clock_id = %tc.id, to = %format_instant(&job.target), job = ?job.kind, "test clock job completed");
        s.test_clock_done.notify_waiters();
        if let Err(e) = s.stores.test_clocks.announce_test_clocks().await {
            tracing::warn!(error = %e, "cannot announce a completed test clock job");
        }
        Ok(())
    }
}

fn not_found(clock: &str) -> SchedulerError {
    SchedulerError::Refused(DomainError::NotFound(format!(
        "test clock {clock} not found"
    )))
}
