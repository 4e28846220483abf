//! Customer statistics, the scheduler's part (SPEC 10): the settle loop that applies the deltas
//! other daemons relayed to this daemon's inboxes, the sweeps of every owned outbox and inbox
//! (what a lost announcement or a failed apply left), and the reconcile job that recomputes a
//! sample of customers from their orders. The customer actor applies each delta; this only
//! finds them.

use futures_util::future::join_all;

use super::*;

impl Scheduler {
    /// Another daemon relayed deltas to partition `p`'s inbox (`<prefix>:inbox`): the settle
    /// loop applies them if this daemon owns `p`.
    pub fn inbox_has_entries(&self, p: u16) {
        let s = &self.shared;
        if s.ownership.owns(p) {
            s.inbox_pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(p);
            s.inbox_kick.notify_one();
        }
    }

    /// The settle loop: applies relayed deltas as soon as their inbox is announced, and every
    /// renewal interval sweeps every owned outbox and inbox (what a lost announcement or a
    /// failed apply left).
    pub async fn keep_settled(self, shutdown: Shutdown) {
        let s = &self.shared;
        let every = s.ownership.config().renew_interval;
        let mut next_sweep = tokio::time::Instant::now() + every;
        loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = s.inbox_kick.notified() => {}
                _ = tokio::time::sleep_until(next_sweep) => {}
            }
            next_sweep = self.settle_step(next_sweep, every).await;
        }
    }

    /// One step of the settle loop: the announced inboxes, or, when `next_sweep` has come,
    /// every owned outbox and inbox; when the next sweep is due.
    pub(super) async fn settle_step(
        &self,
        next_sweep: tokio::time::Instant,
        every: Duration,
    ) -> tokio::time::Instant {
        let s = &self.shared;
        let pending: Vec<u16> = std::mem::take(
            &mut *s
                .inbox_pending
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
        .into_iter()
        .collect();
        let (result, next) = if tokio::time::Instant::now() >= next_sweep {
            let next = tokio::time::Instant::now() + every;
            (self.settle_deltas().await, next)
        } else {
            (self.sweep_inbox(&pending).await, next_sweep)
        };
        if let Err(e) = result {
            s.actors.metrics().redis_error();
            tracing::warn!(error = %e, "stats deltas not settled yet; retrying");
        }
        next
    }

    /// Settles every stats delta still in the outboxes of the partitions this daemon owns
    /// (left by a crash between an order's commit and its stats update, or a failed apply):
    /// applied here, or relayed to the customer partition's inbox when another daemon owns it.
    /// Each is applied exactly once: the stats script ignores versions it has already seen.
    /// Returns how many entries were settled.
    ///
    /// # Errors
    /// [`SchedulerError`] when Redis fails or a delta cannot be settled (it stays for the next
    /// sweep).
    pub async fn sweep_outbox(&self) -> Result<usize, SchedulerError> {
        let s = &self.shared;
        let (with_entries, _) = s.stores.stats.with_deltas(&s.ownership.owned()).await?;
        self.sweep_outboxes(&with_entries).await
    }

    pub(super) async fn sweep_outboxes(&self, partitions: &[u16]) -> Result<usize, SchedulerError> {
        let s = &self.shared;
        let mut settled = 0;
        for &partition in partitions {
            loop {
                let entries = s
                    .stores
                    .stats
                    .outbox_entries(partition, OUTBOX_SWEEP_CHUNK)
                    .await?;
                if entries.is_empty() {
                    break;
                }
                let settles = entries
                    .into_iter()
                    .map(|(entry_id, delta)| s.actors.settle_delta(delta, entry_id));
                settled += settle_all(join_all(settles).await)?;
            }
        }
        Ok(settled)
    }

    /// Applies the deltas other daemons relayed to the inboxes of the customer partitions this
    /// daemon owns (SPEC 10). Returns how many were applied.
    ///
    /// # Errors
    /// [`SchedulerError`] when Redis fails or a delta cannot be applied (it stays for the next
    /// sweep).
    pub async fn sweep_inbox(&self, partitions: &[u16]) -> Result<usize, SchedulerError> {
        let s = &self.shared;
        let mut applied = 0;
        for &partition in partitions {
            if !s.ownership.owns(partition) {
                continue;
            }
            loop {
                let entries = s
                    .stores
                    .stats
                    .inbox_entries(partition, OUTBOX_SWEEP_CHUNK)
                    .await?;
                if entries.is_empty() {
                    break;
                }
                let applies = entries.into_iter().map(|(entry, delta)| {
                    let from = DeltaSource::Inbox(entry);
                    s.actors.apply_delta(ApplyDelta { delta, from })
                });
                applied += settle_all(join_all(applies).await)?;
            }
        }
        Ok(applied)
    }

    /// Both sweeps over every partition this daemon owns.
    ///
    /// # Errors
    /// As [`Scheduler::sweep_outbox`] and [`Scheduler::sweep_inbox`].
    pub async fn settle_deltas(&self) -> Result<usize, SchedulerError> {
        // One round trip finds the streams with entries (usually none), then only those are
        // read (an advance settles twice, so this is two round trips instead of 256).
        let owned = self.shared.ownership.owned();
        let (outboxes, inboxes) = self.shared.stores.stats.with_deltas(&owned).await?;
        let relayed_or_applied = self.sweep_outboxes(&outboxes).await?;
        // Relayed deltas may have landed in inboxes this daemon owns meanwhile: look again.
        let inboxes = if relayed_or_applied > 0 {
            self.shared.stores.stats.with_deltas(&owned).await?.1
        } else {
            inboxes
        };
        Ok(relayed_or_applied + self.sweep_inbox(&inboxes).await?)
    }

    /// The reconcile job: recompute a sample of customers and log any drift (then fix it).
    pub(super) async fn reconcile_sample(&self) -> Result<(), SchedulerError> {
        let s = &self.shared;
        let owned = s.ownership.owned();
        let sample = s
            .stores
            .stats
            .sample_customers(&owned, RECONCILE_SAMPLE)
            .await?;
        // All at once: each customer's actor recomputes its own figures, so the sample costs
        // about one recomputation's round trips, not one per customer in turn.
        let reports = join_all(
            sample
                .iter()
                .map(|customer| s.actors.to_customer(customer, Recompute)),
        )
        .await;
        for (customer, result) in sample.iter().zip(reports) {
            match result {
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

/// How many of a batch of settles succeeded, or the first error (with how many failed).
pub(super) fn settle_all<T>(results: Vec<Result<T, ActorError>>) -> Result<usize, SchedulerError> {
    let n = results.len();
    let mut errors = results.into_iter().filter_map(Result::err);
    match errors.next() {
        Some(source) => Err(SchedulerError::Deltas {
            failed: 1 + errors.count(),
            source,
        }),
        None => Ok(n),
    }
}
