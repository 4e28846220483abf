//! One endpoint's delivery loop: its partitions' streams read from the endpoint's cursor,
//! one queue per order (in order, one attempt in flight each), retries with backoff and
//! `Retry-After`, dead letters, progress written under the partition's lease, and the
//! endpoint's health (down, probing, paused).

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::cursor::{Part, RetryState};
use super::health::{Attempt, Change, Health, LogLimit};
use super::queue::{Delivery, QueueKey, Queues};
use super::*;
use crate::config::EndpointSettings;
use crate::metrics::{DeliveryOutcome, Metrics};
use crate::ownership::Ownership;
use crate::shutdown::Shutdown;
use crate::store::webhooks::{Apply, WebhookStore};
use crate::store::StoreError;

/// A dead letter as `x:<id>` holds it (the dead entry's fields).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct DeadFields {
    pub(super) event_id: String,
    #[serde(rename = "type")]
    pub(super) event_type: String,
    pub(super) order_id: String,
    pub(super) body: String,
}

pub(super) struct Finished {
    pub(super) queue: QueueKey,
    pub(super) generation: u64,
    pub(super) started_ms: i64,
    /// Sent while the endpoint was down (a probe).
    pub(super) probe: bool,
    pub(super) attempt: Attempt,
}

pub(super) struct EndpointLoop {
    pub(super) ep: Arc<EndpointSettings>,
    pub(super) id: String,
    pub(super) client: reqwest::Client,
    pub(super) store: WebhookStore,
    pub(super) ownership: Ownership,
    pub(super) metrics: Arc<Metrics>,
    pub(super) config: WebhookConfig,
    /// Deliveries waiting, over every endpoint (`recur_webhook_pending`).
    pub(super) pending: Arc<AtomicU64>,
    pub(super) parts: BTreeMap<u16, Part>,
    /// The deliveries: one queue per order, ready or waiting for a retry.
    pub(super) queues: Queues,
    pub(super) generation: u64,
    pub(super) redeliver_seen: String,
    /// The latest retryDeadWebhooks request naming this endpoint: applied to a partition
    /// taken over later too (its previous owner may not have seen it).
    pub(super) last_request: Option<String>,
    /// Progress writes not sent yet, by partition (sent together by [`EndpointLoop::flush`]).
    pub(super) staged: BTreeMap<u16, Apply>,
    /// Down or not, paused by a `Retry-After` or not: how many attempts may be in flight.
    pub(super) health: Health,
    /// Rate limits of the warnings for failed attempts and for dead-lettered events.
    pub(super) failure_log: LogLimit,
    pub(super) dead_log: LogLimit,
}

/// When the endpoint loop next reads the streams, looks for retryDeadWebhooks requests, and
/// checks what the stream trim would remove.
struct Due {
    read: Instant,
    redeliver: Instant,
    trim_check: Instant,
}

impl EndpointLoop {
    /// The loop: one [`EndpointLoop::step`], then sleep until the instant it names, an
    /// attempt's outcome, or shutdown.
    pub(super) async fn run(mut self, shutdown: Shutdown) {
        let (tx, mut rx) = mpsc::unbounded_channel::<Finished>();
        let now = Instant::now();
        let mut due = Due {
            read: now,
            redeliver: now,
            trim_check: now + TRIM_CHECK,
        };
        tracing::info!(endpoint = %self.id, url = %masked_url(&self.ep.url), "delivering webhooks");
        while !shutdown.is_triggered() {
            let wake = self.step(&mut due, &tx).await;
            tokio::select! {
                _ = shutdown.wait() => break,
                Some(f) = rx.recv() => {
                    self.finish(f);
                    while let Ok(f) = rx.try_recv() {
                        self.finish(f);
                    }
                    self.flush().await;
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
        }
        self.add_pending(-(self.queued() as i64));
    }

    /// One step: follow the partitions owned, do what is due (trim check, redelivery
    /// requests, reading new entries), send what may go; the instant of the next step when
    /// no attempt comes back before (a read, a retry, the end of a pause).
    async fn step(&mut self, due: &mut Due, tx: &mpsc::UnboundedSender<Finished>) -> Instant {
        self.sync_partitions().await;
        let now = Instant::now();
        if now >= due.trim_check {
            self.force_out_what_the_trim_would_remove().await;
            due.trim_check = now + TRIM_CHECK;
        }
        if now >= due.redeliver {
            self.check_redeliver().await;
            due.redeliver = now + REDELIVER_POLL;
        }
        if now >= due.read {
            let more = self.read_new().await;
            due.read = if more { now } else { now + POLL };
        }
        self.wake_waiting();
        self.dispatch(tx);
        let retry_at = self.queues.next_retry();
        let mut wake = retry_at.map_or(due.read, |r| r.min(due.read));
        if let Some(resume) = self.health.resumes_at(Instant::now().into_std()) {
            wake = wake.min(Instant::from_std(resume));
        }
        wake
    }

    /// Picks up partitions this daemon took, drops those it lost.
    pub(super) async fn sync_partitions(&mut self) {
        let owned = self.ownership.owned();
        let lost: Vec<u16> = self
            .parts
            .keys()
            .filter(|p| !owned.contains(p))
            .copied()
            .collect();
        for p in lost {
            self.drop_partition(p);
        }
        for p in owned {
            if self.parts.contains_key(&p) {
                continue;
            }
            match self.load_partition(p).await {
                Ok(()) => {}
                Err(e) => {
                    self.metrics.redis_error();
                    tracing::warn!(endpoint = %self.id, partition = p, error = %e, "cannot load webhook progress; retrying");
                }
            }
        }
    }

    pub(super) fn drop_partition(&mut self, p: u16) {
        let Some(part) = self.parts.remove(&p) else {
            return;
        };
        self.add_pending(-(part.queued as i64));
        self.queues.drop_partition(p);
        tracing::debug!(endpoint = %self.id, partition = p, "stopped delivering a partition this daemon no longer owns");
    }

    /// Deliveries queued over every partition this loop holds.
    pub(super) fn queued(&self) -> usize {
        self.parts.values().map(|p| p.queued).sum()
    }

    pub(super) fn add_pending(&self, delta: i64) {
        let total = if delta >= 0 {
            self.pending.fetch_add(delta as u64, Ordering::Relaxed) + delta as u64
        } else {
            self.pending
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed)
                .saturating_sub(delta.unsigned_abs())
        };
        self.metrics.set_webhook_pending(total);
    }

    pub(super) async fn load_partition(&mut self, p: u16) -> Result<(), StoreError> {
        let Some(token) = self.ownership.token(p) else {
            return Ok(());
        };
        if let Some(request) = &self.last_request {
            // Once per request id per partition (the script keeps the last one applied).
            self.store
                .webhook_requeue(p, &self.id, &token, request)
                .await?;
        }
        let progress = self.store.webhook_progress(p, &self.id).await?;
        let cursor = match progress.cursor {
            Some(c) => c,
            None => match start_at_end(&self.store, p, &self.id, &token).await? {
                Some(c) => c,
                // Another start got there first: the next look reads what it recorded.
                None => return Ok(()),
            },
        };
        self.generation += 1;
        let mut retrying = HashMap::new();
        for (key, json) in progress.retrying {
            if let Ok(r) = serde_json::from_str::<RetryState>(&json) {
                retrying.insert(key, r);
            }
        }
        let part = Part::new(self.generation, cursor, progress.done, retrying);
        self.parts.insert(p, part);
        self.queue_requeued(p, progress.requeued);
        Ok(())
    }

    /// Dead letters queued again (`x:` fields): each delivered on its own.
    pub(super) fn queue_requeued(&mut self, p: u16, requeued: HashMap<String, String>) {
        for (dead_id, json) in requeued {
            let key = format!("x:{dead_id}");
            let queue = (p, key.clone());
            if self.queues.contains(&queue) {
                continue;
            }
            let Ok(f) = serde_json::from_str::<DeadFields>(&json) else {
                tracing::warn!(endpoint = %self.id, partition = p, dead = %dead_id, "skipping an unreadable dead letter");
                continue;
            };
            let d = Delivery {
                key,
                entry_n: None,
                order_id: f.order_id,
                event_id: f.event_id,
                event_type: f.event_type,
                body: Arc::from(f.body),
                attempts: 0,
                first_ms: None,
                in_flight: false,
            };
            self.enqueue(p, queue, d);
        }
    }

    pub(super) fn enqueue(&mut self, p: u16, queue: QueueKey, d: Delivery) {
        self.queues.push(queue, d);
        if let Some(part) = self.parts.get_mut(&p) {
            part.queued += 1;
        }
        self.add_pending(1);
    }

    /// Reads new entries of every partition with room in its queues; whether some partition
    /// has more to read at once.
    pub(super) async fn read_new(&mut self) -> bool {
        let mut more = false;
        if self.health.is_down() {
            // What is queued already waits for the endpoint; the rest stays in Redis.
            return false;
        }
        let partitions: Vec<u16> = self.parts.keys().copied().collect();
        let mut read = Vec::new();
        for p in partitions {
            let Some(part) = self.parts.get(&p) else {
                continue;
            };
            if part.queued >= PARTITION_QUEUE_CAP || self.queued() >= ENDPOINT_QUEUE_CAP {
                continue;
            }
            let after = part.read_pos.clone();
            let rows = match self.store.entries_after(p, &after, READ_BATCH).await {
                Ok(rows) => rows,
                Err(e) => {
                    self.metrics.redis_error();
                    tracing::warn!(endpoint = %self.id, partition = p, error = %e, "cannot read the event stream; retrying");
                    continue;
                }
            };
            more |= rows.len() == READ_BATCH;
            read.push((p, rows));
        }
        // SPEC 11.1: nothing is delivered before its commit is confirmed by the replicas. The
        // entries read may come from commits whose WAIT has not come back (or fell short, or
        // a previous owner's): they are all confirmed once the partition's master is, after
        // the read (one pipeline for every partition read). Unconfirmed entries are read
        // again next time.
        let confirmed = self.confirm_read(&read).await;
        for ((p, rows), ok) in read.into_iter().zip(confirmed) {
            if !ok {
                more = false;
                continue;
            }
            for (id, change) in rows {
                self.take_entry(p, id, &change);
            }
            if let Some(apply) = self.advance_cursor(p) {
                self.stage(p, apply);
            }
        }
        self.flush().await;
        more
    }

    /// Whether the entries read from each partition are confirmed by `redis.wait_replicas`
    /// replicas (always, when that is 0 or nothing was read).
    pub(super) async fn confirm_read(&self, read: &[(u16, Vec<(String, String)>)]) -> Vec<bool> {
        if !self.store.confirmer().waits() {
            return vec![true; read.len()];
        }
        let mut held = Vec::new();
        let mut at = Vec::with_capacity(read.len());
        for (p, rows) in read {
            let token = if rows.is_empty() {
                None
            } else {
                self.ownership.token(*p)
            };
            at.push(token.as_ref().map(|_| held.len()));
            if let Some(token) = token {
                held.push((*p, token));
            }
        }
        let results = self.store.confirmer().confirm_many(&held).await;
        if let Some(Err(e)) = results.iter().find(|r| r.is_err()) {
            tracing::debug!(endpoint = %self.id, error = %e, "events read are not confirmed yet; read again later");
        }
        read.iter()
            .zip(at)
            .map(|((_, rows), i)| match i {
                Some(i) => results.get(i).is_some_and(Result::is_ok),
                None => rows.is_empty(),
            })
            .collect()
    }

    /// SPEC 10: the stream trim keeps `events.max_len` entries; undelivered events older than
    /// that are dead-lettered with error "trimmed" (and counted) and the cursor moves past
    /// them, so the trim never has to remove an entry this endpoint still owes. A partition
    /// with such an event in flight waits for its outcome (the next check).
    pub(super) async fn force_out_what_the_trim_would_remove(&mut self) {
        let max_len = self.config.events_max_len;
        let partitions: Vec<u16> = self.parts.keys().copied().collect();
        for p in partitions {
            let end = match self.store.stream_end(p).await {
                Ok(end) => end,
                Err(e) => {
                    self.metrics.redis_error();
                    tracing::debug!(error = %e, "cannot read the stream's end");
                    return;
                }
            };
            let limit = end.added.saturating_sub(max_len);
            let Some(part) = self.parts.get(&p) else {
                continue;
            };
            if part.cursor.1 >= limit {
                continue;
            }
            if self.queues.in_flight_up_to(p, limit) {
                continue;
            }
            if let Err(e) = self.force_out(p, limit).await {
                self.metrics.redis_error();
                tracing::warn!(endpoint = %self.id, partition = p, error = %e, "cannot dead-letter what the trim would remove; retrying");
            }
        }
    }

    /// Dead-letters every undelivered event of partition `p` up to ordinal `limit`, and moves
    /// the cursor there; what was not read yet is read a batch at a time.
    pub(super) async fn force_out(&mut self, p: u16, limit: u64) -> Result<(), StoreError> {
        loop {
            let apply = self.pop_forced(p, limit);
            self.stage(p, apply);
            self.flush().await;
            let Some(part) = self.parts.get(&p) else {
                return Ok(());
            };
            if part.read_n >= limit {
                return Ok(());
            }
            let want = usize::try_from(limit - part.read_n)
                .unwrap_or(usize::MAX)
                .min(READ_BATCH);
            let after = part.read_pos.clone();
            let rows = self.store.entries_after(p, &after, want).await?;
            if rows.is_empty() {
                return Ok(());
            }
            // Taken entries may be sent before they are dead-lettered: confirmed first.
            if let Some(token) = self.ownership.token(p) {
                self.store.confirmer().confirm(p, &token).await?;
            }
            for (id, change) in rows {
                self.take_entry(p, id, &change);
            }
        }
    }

    /// Takes the queued deliveries of `p`'s entries up to ordinal `limit` out of their queues
    /// (none is in flight) as dead letters with error "trimmed", and moves the cursor.
    pub(super) fn pop_forced(&mut self, p: u16, limit: u64) -> Apply {
        let dead = self.queues.pop_up_to(p, limit);
        let mut apply = Apply::default();
        for d in &dead {
            self.metrics.webhook_trimmed();
            apply.dead.push(vec![
                ("endpoint".into(), self.id.clone()),
                ("eventId".into(), d.event_id.clone()),
                ("type".into(), d.event_type.clone()),
                ("orderId".into(), d.order_id.clone()),
                ("attempts".into(), d.attempts.to_string()),
                ("error".into(), "trimmed".into()),
                ("firstAttemptMs".into(), d.first_ms.unwrap_or(0).to_string()),
                ("body".into(), d.body.to_string()),
            ]);
            if d.attempts > 0 {
                apply.delete.push(format!("r:{}", d.key));
            }
        }
        if let Some(part) = self.parts.get_mut(&p) {
            part.forced_out(&dead);
        }
        self.add_pending(-(dead.len() as i64));
        if !dead.is_empty() {
            tracing::warn!(endpoint = %self.id, partition = p, events = dead.len(), "undelivered events the stream trim would remove were dead-lettered (error \"trimmed\")");
        }
        if let Some(moved) = self.advance_cursor(p) {
            apply.merge(moved);
        }
        apply
    }

    /// Queues the deliveries of one stream entry.
    pub(super) fn take_entry(&mut self, p: u16, id: String, change: &str) {
        let Some(part) = self.parts.get_mut(&p) else {
            return;
        };
        for d in part.take_entry(id, change, &self.ep) {
            let queue = (p, d.order_id.clone());
            self.enqueue(p, queue, d);
        }
    }

    /// The cursor move of the finished entries at the bottom, with the `d:` fields it drops.
    pub(super) fn advance_cursor(&mut self, p: u16) -> Option<Apply> {
        self.parts.get_mut(&p)?.advance()
    }

    pub(super) fn stage(&mut self, p: u16, apply: Apply) {
        if !apply.is_empty() {
            self.staged.entry(p).or_default().merge(apply);
        }
    }

    /// Sends the staged progress writes, one round trip for every partition.
    pub(super) async fn flush(&mut self) {
        let staged = std::mem::take(&mut self.staged);
        let mut writes = Vec::new();
        for (p, apply) in staged {
            match self.ownership.token(p) {
                Some(token) => writes.push((p, token, apply)),
                None => self.drop_partition(p),
            }
        }
        match self.store.webhook_apply_many(&self.id, &writes).await {
            Ok(results) => {
                for ((p, _, _), r) in writes.iter().zip(results) {
                    match r {
                        Ok(()) => {}
                        Err(StoreError::Fenced { .. }) => {
                            tracing::warn!(endpoint = %self.id, partition = p, "webhook progress fenced: the partition has another owner");
                            self.drop_partition(*p);
                        }
                        Err(e) => {
                            tracing::warn!(endpoint = %self.id, partition = p, error = %e, "cannot record webhook progress")
                        }
                    }
                }
            }
            Err(e) => {
                // Not lost: what was delivered is delivered again after a restart.
                self.metrics.redis_error();
                tracing::warn!(endpoint = %self.id, error = %e, "cannot record webhook progress");
            }
        }
    }

    pub(super) fn wake_waiting(&mut self) {
        self.queues.wake(Instant::now());
    }

    /// Sends the heads of ready queues, up to `max_in_flight` at once; none during a pause,
    /// one probe at a time while the endpoint is down.
    pub(super) fn dispatch(&mut self, tx: &mpsc::UnboundedSender<Finished>) {
        let limit = self.health.limit(Instant::now().into_std());
        let probe = self.health.is_down();
        while self.queues.in_flight() < limit {
            let parts = &self.parts;
            let Some((queue, generation, d)) = self
                .queues
                .start_next(|p| parts.get(&p).map(|part| part.generation))
            else {
                return;
            };
            let request = self
                .client
                .post(&self.ep.url)
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .header("Recur-Event-Id", &d.event_id)
                .header("Recur-Event-Type", &d.event_type)
                .header("Recur-Daemon-Id", &self.config.daemon_id);
            let (secret, body, tx) = (self.ep.secret.clone(), Arc::clone(&d.body), tx.clone());
            tokio::task::spawn_local(async move {
                let started_ms = now_ms();
                let t = started_ms / 1000;
                let result = request
                    .header("Recur-Signature", signature_header(&secret, t, &body))
                    .body(body.to_string())
                    .send()
                    .await;
                let attempt = match result {
                    Ok(r) => {
                        let retry_after = r
                            .headers()
                            .get(reqwest::header::RETRY_AFTER)
                            .and_then(|v| v.to_str().ok());
                        health::classify(r.status().as_u16(), retry_after, SystemTime::now())
                    }
                    Err(e) => send_failure(e),
                };
                let _ = tx.send(Finished {
                    queue,
                    generation,
                    started_ms,
                    probe,
                    attempt,
                });
            });
        }
    }

    /// Feeds an attempt's outcome to the endpoint's health; one warning per change of state.
    pub(super) fn record_health(&mut self, f: &Finished) {
        let now = Instant::now().into_std();
        match self.health.record(&f.attempt, f.probe, now) {
            Some(Change::WentDown { failures }) => {
                tracing::warn!(endpoint = %self.id, failures, error = f.attempt.error().unwrap_or_default(), "webhook endpoint is down: {failures} attempts in a row got no answer or a 429, 502, 503 or 504; probing it one delivery at a time, with growing pauses");
            }
            Some(Change::CameUp) => {
                tracing::warn!(endpoint = %self.id, "webhook endpoint answers again: delivering at full speed");
            }
            None => {}
        }
    }

    /// An attempt came back: retried later (a failure of an event younger than `max_age`), or
    /// finished (delivered, or given up and dead-lettered).
    pub(super) fn finish(&mut self, f: Finished) {
        self.queues.attempt_ended();
        // The endpoint's health counts every answer, also of a partition lost meanwhile.
        self.record_health(&f);
        let current = self.parts.get(&f.queue.0).map(|part| part.generation);
        if current != Some(f.generation) {
            // Lost meanwhile (the new owner delivers it again) or taken again since.
            return;
        }
        let Some(d) = self.queues.front_mut(&f.queue) else {
            return;
        };
        d.in_flight = false;
        let error = f.attempt.error().map(str::to_string);
        if let Some(error) = &error {
            if self.retry_later(&f, error) {
                return;
            }
        }
        self.complete(&f, error.as_deref());
    }

    /// Counts a failed attempt of the queue's first delivery and, while the event is younger
    /// than `max_age`, schedules its retry (its own backoff; a Retry-After pauses the whole
    /// endpoint besides) and keeps its retry state. False when it is to be given up.
    pub(super) fn retry_later(&mut self, f: &Finished, error: &str) -> bool {
        let settings = &self.config.settings;
        let Some(d) = self.queues.front_mut(&f.queue) else {
            return false;
        };
        d.attempts += 1;
        let first = *d.first_ms.get_or_insert(f.started_ms);
        let age = Duration::from_millis(u64::try_from(now_ms() - first).unwrap_or(0));
        if age >= settings.max_age {
            return false;
        }
        self.metrics.webhook_delivery(DeliveryOutcome::Failed);
        let pause = backoff(d.attempts, settings.retry_initial, settings.retry_max);
        let (endpoint_failure, paused_ms) = match &f.attempt {
            Attempt::EndpointFailed { retry_after, .. } => (
                true,
                retry_after.map(|r| r.min(settings.retry_max).as_millis() as u64),
            ),
            _ => (false, None),
        };
        match self.failure_log.check(Instant::now().into_std()) {
            Some(suppressed) => {
                tracing::warn!(endpoint = %self.id, event_id = %d.event_id, order_id = %d.order_id, attempts = d.attempts, %error, endpoint_failure, paused_ms, retry_in_ms = pause.as_millis() as u64, suppressed, "webhook delivery failed; retrying (at most one such line per endpoint per 10 s: `suppressed` counts those left out)");
            }
            None => {
                tracing::debug!(endpoint = %self.id, event_id = %d.event_id, attempts = d.attempts, %error, endpoint_failure, paused_ms, "webhook delivery failed; retrying");
            }
        }
        let state = RetryState {
            attempts: d.attempts,
            first_ms: first,
            error: error.to_string(),
        };
        let apply = Apply {
            set: d
                .entry_n
                .map(|_| {
                    (
                        format!("r:{}", d.key),
                        serde_json::to_string(&state).unwrap_or_default(),
                    )
                })
                .into_iter()
                .collect(),
            ..Apply::default()
        };
        self.queues
            .retry_at(f.queue.clone(), Instant::now() + pause);
        self.stage(f.queue.0, apply);
        true
    }

    /// The queue's first delivery is finished (`error`: given up with it, dead-lettered):
    /// off the queue, its entry's count and the cursor moved, the order's next event ready.
    pub(super) fn complete(&mut self, f: &Finished, error: Option<&str>) {
        let p = f.queue.0;
        // Off its queue; the order's next event, if any, may go now.
        let Some(d) = self.queues.complete(&f.queue) else {
            return;
        };
        let mut apply = Apply::default();
        match error {
            None => self.metrics.webhook_delivery(DeliveryOutcome::Delivered),
            Some(error) => {
                self.metrics.webhook_delivery(DeliveryOutcome::Dead);
                match self.dead_log.check(Instant::now().into_std()) {
                    Some(suppressed) => {
                        tracing::warn!(endpoint = %self.id, event_id = %d.event_id, order_id = %d.order_id, attempts = d.attempts, %error, suppressed, "webhook delivery given up: dead-lettered (at most one such line per endpoint per 10 s: `suppressed` counts those left out)");
                    }
                    None => {
                        tracing::debug!(endpoint = %self.id, event_id = %d.event_id, attempts = d.attempts, %error, "webhook delivery given up: dead-lettered");
                    }
                }
                apply.dead = vec![vec![
                    ("endpoint".into(), self.id.clone()),
                    ("eventId".into(), d.event_id.clone()),
                    ("type".into(), d.event_type.clone()),
                    ("orderId".into(), d.order_id.clone()),
                    ("attempts".into(), d.attempts.to_string()),
                    ("error".into(), error.to_string()),
                    ("firstAttemptMs".into(), d.first_ms.unwrap_or(0).to_string()),
                    ("body".into(), d.body.to_string()),
                ]];
            }
        }
        if let Some(part) = self.parts.get_mut(&p) {
            apply.merge(part.finished(&d));
        }
        self.add_pending(-1);
        self.stage(p, apply);
    }

    /// Applies retryDeadWebhooks requests to the partitions this daemon owns.
    pub(super) async fn check_redeliver(&mut self) {
        let requests = match self.store.redeliver_requests(&self.redeliver_seen).await {
            Ok(r) => r,
            Err(e) => {
                self.metrics.redis_error();
                tracing::debug!(error = %e, "cannot read retryDeadWebhooks requests");
                return;
            }
        };
        for (request, endpoints) in requests {
            if endpoints.iter().any(|e| e == &self.id) {
                self.last_request = Some(request.clone());
                let partitions: Vec<u16> = self.parts.keys().copied().collect();
                for p in partitions {
                    let Some(token) = self.ownership.token(p) else {
                        continue;
                    };
                    match self
                        .store
                        .webhook_requeue(p, &self.id, &token, &request)
                        .await
                    {
                        Ok(0) => {}
                        Ok(moved) => {
                            tracing::info!(endpoint = %self.id, partition = p, moved, "dead letters queued for delivery again");
                            // Delivered only once what was read is confirmed (SPEC 11.1); if
                            // it is not, they go after the next load of the partition.
                            let progress = match self.store.confirmer().confirm(p, &token).await {
                                Ok(()) => self.store.webhook_progress(p, &self.id).await,
                                Err(e) => Err(e),
                            };
                            match progress {
                                Ok(progress) => self.queue_requeued(p, progress.requeued),
                                Err(e) => {
                                    tracing::warn!(error = %e, "cannot read requeued dead letters; they go after a restart")
                                }
                            }
                        }
                        Err(e) => {
                            self.metrics.redis_error();
                            tracing::warn!(endpoint = %self.id, partition = p, error = %e, "cannot requeue dead letters; the next look retries");
                            return;
                        }
                    }
                }
            }
            self.redeliver_seen = request;
        }
    }
}
