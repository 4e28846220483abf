//! The commit batcher: many orders' commits go to Redis in one pipeline. A timer firing (the
//! bulk of all commits) goes with the other fired orders of its partition in the pipeline: one
//! `fire.lua` call per partition, which checks the partition's lease once and each order's
//! version on its own, so every order is written or refused exactly as if it were committed
//! alone. Every other commit is one `commit.lua` call, atomic for its order. A commit is
//! acknowledged only after Redis answered and, with `redis.wait_replicas` n > 0 (SPEC 11.1),
//! after the one `WAIT n timeout` that ends the pipeline confirmed it (on a cluster, one WAIT
//! per hash slot of the pipeline, each sent with that slot's commits). The same pipelines carry
//! confirmations of reads and single writes that must be confirmed before their callers go on
//! (see [`super::replication`]).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant as WallInstant;

use redis::Value;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::conn::WaitFor;
use super::keys::Keys;
use super::replication::{Publisher, Replication};
use super::scripts;
use super::RedisConn;
use super::StoreError;
use crate::metrics::{Metrics, TransitionKind};

/// What a commit does to the order's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderWrite {
    /// Nothing (a reply-only commit: a refused command, a read).
    None,
    /// Write the order and set or clear its timer.
    Save {
        json: String,
        version: u64,
        due_ms: Option<i64>,
        customer_id: String,
        created_ms: i64,
    },
    /// Remove the order and its timer; its id can never be used again. `json` is the order as
    /// deleted (the entity of its orderDeleted event).
    Delete { customer_id: String, json: String },
}

/// One order's atomic commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commit {
    pub order_id: String,
    /// The version the order has in Redis now (0 = it must not exist yet).
    pub expected_version: u64,
    pub write: OrderWrite,
    /// The change entry of the partition's event stream up to its entity (the script appends
    /// the order JSON and `}`); None for a commit that changes no version (only a reply).
    pub change: Option<String>,
    /// How many events the change carries (for the metrics).
    pub event_count: usize,
    /// Customer-stats deltas (JSON), applied exactly once by the stats consumer.
    pub deltas: Vec<String>,
    /// The admin reply to keep under its request id: (request id, stored JSON).
    pub reply: Option<(String, String)>,
    /// The writer's lease token for the order's partition (fencing: the script refuses the
    /// commit unless the lease still holds it).
    pub lease: String,
    /// The test clock of the order (SPEC 11.5): its timer and index entry go to that clock's
    /// keys of the partition, which only the clock's advances read. None for a live order.
    pub test_clock: Option<String>,
}

/// How a commit ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitOutcome {
    /// Written; the ids of the outbox entries it appended (one per stats delta).
    Committed { outbox_ids: Vec<String> },
    /// The request id already has a kept reply (its JSON); nothing was written.
    AlreadyReplied(String),
    /// Redis holds another version than expected; nothing was written.
    VersionConflict,
    /// The order id was deleted before and cannot be created again.
    Deleted,
    /// The writer no longer holds the partition's lease; nothing was written.
    Fenced,
}

/// One piece of work for the batcher.
enum Job {
    /// An order's commit.
    Commit(Commit, oneshot::Sender<Result<CommitOutcome, StoreError>>),
    /// A confirmation of everything the partition's master held before it: the lease written
    /// back unchanged under the lease check ([`scripts::LEASE_TOUCH`]), then the pipeline's WAIT.
    Confirm {
        partition: u16,
        lease: String,
        done: oneshot::Sender<Result<(), StoreError>>,
    },
    /// A write of one key that must be confirmed before its caller goes on (a stats delta
    /// relayed to another partition's inbox).
    Write(redis::Cmd, oneshot::Sender<Result<Value, StoreError>>),
}

/// Handle to the batcher task.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Job>,
}

/// Settings of the batcher.
#[derive(Debug, Clone)]
pub struct CommitterConfig {
    pub max_batch: usize,
    pub max_in_flight: usize,
    pub reply_ttl_secs: u64,
    pub publish_events: bool,
    /// `redis.wait_replicas` / `redis.wait_timeout`: every pipeline ends with this WAIT, and
    /// nothing in it is acknowledged unless it confirms (`None`: no WAIT).
    pub wait: Option<WaitFor>,
}

/// What a batcher shares with the rest of the store.
#[derive(Clone)]
pub struct Shared {
    pub metrics: Arc<Metrics>,
    /// The WAIT outcomes (readiness, metrics).
    pub replication: Arc<Replication>,
    /// Publishes confirmed changes on the events channel when a WAIT comes between the commit
    /// and the publication (the scripts publish when nothing waits).
    pub publisher: Option<Publisher>,
}

impl Committer {
    /// Starts the batcher on the current runtime. It stops when every handle is dropped,
    /// after committing what it was given.
    pub fn start(
        conn: RedisConn,
        keys: Keys,
        config: CommitterConfig,
        shared: Shared,
    ) -> Committer {
        let (tx, rx) = mpsc::channel(config.max_batch * 4);
        tokio::task::spawn_local(run_batcher(rx, conn, keys, config, shared));
        Committer { tx }
    }

    /// Commits and waits until Redis has it (and, with `redis.wait_replicas`, its replicas).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails or the batcher is gone; [`StoreError::Unconfirmed`]
    /// when the commit was written (or its kept reply found) but not confirmed by enough
    /// replicas: nothing may be acknowledged, the client retries.
    pub async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        let (done, rx) = oneshot::channel();
        self.send(Job::Commit(commit, done)).await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Confirms everything partition `partition`'s master held before this call (a read's
    /// source, a lease just acquired, a reply kept by another connection): the lease written
    /// back unchanged, then the WAIT of the pipeline it goes in.
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when `lease` is not the partition's lease any more;
    /// [`StoreError::Unconfirmed`] when the WAIT fell short; [`StoreError`] when Redis fails.
    pub async fn confirm(&self, partition: u16, lease: String) -> Result<(), StoreError> {
        let (done, rx) = oneshot::channel();
        self.send(Job::Confirm {
            partition,
            lease,
            done,
        })
        .await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Sends one write command in the next pipeline and returns its reply once it is
    /// confirmed (at once when nothing waits).
    ///
    /// # Errors
    /// As [`Committer::confirm`], or the command's own error.
    pub async fn write(&self, cmd: redis::Cmd) -> Result<Value, StoreError> {
        let (done, rx) = oneshot::channel();
        self.send(Job::Write(cmd, done)).await?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn send(&self, job: Job) -> Result<(), StoreError> {
        self.tx.send(job).await.map_err(|_| StoreError::Closed)
    }
}

async fn run_batcher(
    mut rx: mpsc::Receiver<Job>,
    conn: RedisConn,
    keys: Keys,
    config: CommitterConfig,
    shared: Shared,
) {
    let permits = Arc::new(Semaphore::new(config.max_in_flight));
    let config = Arc::new(config);
    let keys = Arc::new(keys);
    // Pipelines publish their confirmed changes in the order they were sent: each waits for
    // the turn the one before it hands on.
    let mut turn: Option<oneshot::Receiver<()>> = None;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < config.max_batch {
            match rx.try_recv() {
                Ok(p) => batch.push(p),
                Err(_) => break,
            }
        }
        let Ok(permit) = Arc::clone(&permits).acquire_owned().await else {
            break; // never: the semaphore is not closed
        };
        let (next_tx, next_rx) = oneshot::channel();
        let order = Turn {
            mine: turn.replace(next_rx),
            next: next_tx,
        };
        let (conn, keys, config, shared) = (
            conn.clone(),
            Arc::clone(&keys),
            Arc::clone(&config),
            shared.clone(),
        );
        tokio::task::spawn_local(async move {
            send_batch(batch, conn, &keys, &config, &shared, order).await;
            drop(permit);
        });
    }
    // Wait for the batches still in flight (the semaphore is never closed).
    let in_flight = u32::try_from(config.max_in_flight).unwrap_or(u32::MAX);
    if permits.acquire_many(in_flight).await.is_err() {
        tracing::debug!("commit batcher stopped with batches in flight");
    }
}

/// A batch's place in the order of publication: it waits for `mine` (the batch before it
/// handed over its changes) and hands on `next` once its own are handed over.
struct Turn {
    mine: Option<oneshot::Receiver<()>>,
    next: oneshot::Sender<()>,
}

async fn send_batch(
    batch: Vec<Job>,
    mut conn: RedisConn,
    keys: &Keys,
    config: &CommitterConfig,
    shared: &Shared,
    turn: Turn,
) {
    let started = WallInstant::now();
    let results = send_reloading(&batch, &mut conn, keys, config).await;
    let commits = batch
        .iter()
        .filter(|j| matches!(j, Job::Commit(..)))
        .count();
    let metrics = &shared.metrics;
    metrics.commit_batch(commits, started.elapsed());
    let (values, replicas) = match results {
        Ok(r) => r,
        Err(e) => return fail_batch(batch, e, config, shared, turn).await,
    };
    // Whether each job's WAIT confirmed it (always, when nothing waits).
    let wanted = config.wait.map_or(0, |w| i64::from(w.replicas));
    if config.wait.is_some() {
        // One outcome per pipeline: the fewest replicas over the masters it went to.
        let fewest = replicas.iter().copied().min().unwrap_or(-1);
        shared.replication.record(fewest);
    }
    let mut outcomes = Vec::with_capacity(batch.len());
    let mut publish = Vec::new();
    for (i, (job, v)) in batch.into_iter().zip(values).enumerate() {
        let r = replicas.get(i).copied().unwrap_or(-1);
        let confirmed = config.wait.is_none() || r >= wanted;
        outcomes.push(settle(
            job,
            v,
            (confirmed, r),
            keys,
            config,
            shared,
            &mut publish,
        ));
    }
    // Confirmed changes are handed to the publisher before any of their commits is
    // acknowledged (so an order's next change is published after this one), in the order the
    // pipelines were sent. Without a publisher nothing waits for its turn.
    if let Some(publisher) = &shared.publisher {
        if let Some(mine) = turn.mine {
            let _ = mine.await;
        }
        publisher.send(publish);
    }
    let _ = turn.next.send(());
    for done in outcomes {
        // A caller that stopped waiting learns the outcome on its next load.
        match done {
            Done::Commit(tx, r) => {
                tx.send(r).ok();
            }
            Done::Confirm(tx, r) => {
                tx.send(r).ok();
            }
            Done::Write(tx, r) => {
                tx.send(r).ok();
            }
        }
    }
}

/// A job's outcome, to hand back once the batch's changes are handed to the publisher.
enum Done {
    Commit(
        oneshot::Sender<Result<CommitOutcome, StoreError>>,
        Result<CommitOutcome, StoreError>,
    ),
    Confirm(
        oneshot::Sender<Result<(), StoreError>>,
        Result<(), StoreError>,
    ),
    Write(
        oneshot::Sender<Result<Value, StoreError>>,
        Result<Value, StoreError>,
    ),
}

fn fail(job: Job, e: StoreError) {
    match job {
        Job::Commit(_, done) => {
            done.send(Err(e)).ok();
        }
        Job::Confirm { done, .. } => {
            done.send(Err(e)).ok();
        }
        Job::Write(_, done) => {
            done.send(Err(e)).ok();
        }
    }
}

/// The id of the change entry a commit script appended (the second item of its `OK`).
fn change_entry(v: &Value) -> Option<String> {
    let Value::Array(items) = v else {
        return None;
    };
    match items.get(1)? {
        Value::BulkString(b) if !b.is_empty() => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) if !s.is_empty() => Some(s.clone()),
        _ => None,
    }
}

/// Sends the batch's pipeline; a Redis that forgot the scripts (restarted, promoted) gets
/// them loaded, and the pipeline is sent again once.
async fn send_reloading(
    batch: &[Job],
    conn: &mut RedisConn,
    keys: &Keys,
    config: &CommitterConfig,
) -> Result<(Vec<Value>, Vec<i64>), redis::RedisError> {
    let results = run_pipeline(batch, conn, keys, config).await;
    let forgot = results
        .as_ref()
        .is_ok_and(|(r, _)| r.iter().any(scripts::is_noscript))
        || results.as_ref().is_err_and(scripts::is_noscript_error);
    if !forgot {
        return results;
    }
    scripts::load_all(conn).await?;
    run_pipeline(batch, conn, keys, config).await
}

/// The whole pipeline failed: every job fails with the error (its turn to publish is passed
/// on, so the batches after it are not held up).
async fn fail_batch(
    batch: Vec<Job>,
    e: redis::RedisError,
    config: &CommitterConfig,
    shared: &Shared,
    turn: Turn,
) {
    tracing::warn!(error = %e, size = batch.len(), "commit batch failed");
    shared.metrics.redis_error();
    if config.wait.is_some() {
        // Nothing could be confirmed: readiness says so until a WAIT is enough.
        shared.replication.record(-1);
    }
    let e = StoreError::from(e);
    if shared.publisher.is_some() {
        if let Some(mine) = turn.mine {
            let _ = mine.await;
        }
    }
    let _ = turn.next.send(());
    for job in batch {
        fail(job, e.clone());
    }
}

/// One job's outcome from its reply `v` and its WAIT (`confirmed`, and how many replicas
/// answered); a commit written and confirmed adds its change entry to `publish`.
fn settle(
    job: Job,
    v: Value,
    (confirmed, replicas): (bool, i64),
    keys: &Keys,
    config: &CommitterConfig,
    shared: &Shared,
    publish: &mut Vec<(u16, String)>,
) -> Done {
    let unconfirmed = || StoreError::Unconfirmed {
        replicas: replicas.max(0),
        wanted: config.wait.map_or(0, |w| w.replicas),
        timeout_ms: config.wait.map_or(0, |w| w.timeout_ms),
    };
    match job {
        Job::Commit(commit, done) => {
            let entry = shared.publisher.as_ref().and_then(|_| change_entry(&v));
            let outcome = parse_outcome(v);
            let written = matches!(outcome, Ok(CommitOutcome::Committed { .. }));
            // A version written is a transition: with a reply to keep, an admin command's;
            // without, a fired timer's.
            if commit.change.is_some() && written {
                let kind = if commit.reply.is_some() {
                    TransitionKind::Command
                } else {
                    TransitionKind::Fire
                };
                shared.metrics.committed(kind, commit.event_count);
            }
            let acknowledged = matches!(
                outcome,
                Ok(CommitOutcome::Committed { .. } | CommitOutcome::AlreadyReplied(_))
            );
            let outcome = if acknowledged && !confirmed {
                Err(unconfirmed())
            } else {
                outcome
            };
            if let (true, true, Some(entry)) = (written, confirmed, entry) {
                publish.push((keys.partition(&commit.order_id), entry));
            }
            Done::Commit(done, outcome)
        }
        Job::Confirm {
            partition, done, ..
        } => {
            let result = match v {
                Value::Int(1) if confirmed => Ok(()),
                Value::Int(1) => Err(unconfirmed()),
                Value::Int(_) => Err(StoreError::Fenced { partition }),
                other => Err(StoreError::UnexpectedReply(format!("{other:?}"))),
            };
            Done::Confirm(done, result)
        }
        Job::Write(_, done) => {
            let result = match v {
                Value::ServerError(e) => Err(StoreError::from(redis::RedisError::from(e))),
                v if confirmed => Ok(v),
                _ => Err(unconfirmed()),
            };
            Done::Write(done, result)
        }
    }
}

/// Sends the batch's pipeline (with its WAIT, when one is configured): each job's reply and
/// how many replicas confirmed it (`i64::MAX` when nothing waits), in the batch's order.
async fn run_pipeline(
    batch: &[Job],
    conn: &mut RedisConn,
    keys: &Keys,
    config: &CommitterConfig,
) -> Result<(Vec<Value>, Vec<i64>), redis::RedisError> {
    let (pipe, places) = build_pipeline(batch, keys, config);
    let (values, replicas) = match config.wait {
        Some(wait) => conn.query_waited(&pipe, wait).await?,
        None => {
            let values: Vec<Value> = pipe.query_async(conn).await?;
            let n = values.len();
            (values, vec![i64::MAX; n])
        }
    };
    Ok(job_replies(values, &replicas, &places))
}

/// Where a job's reply is among its pipeline's replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// The reply of a command of its own (the command's index).
    Own(usize),
    /// Item `at` of the reply of the `fire.lua` call at index `cmd` (a fire group's).
    Grouped { cmd: usize, at: usize },
}

/// The most orders one `fire.lua` call commits (a batch is at most `max_batch` jobs anyway;
/// this bounds one script's run when that is set high).
const MAX_FIRE_GROUP: usize = 256;

/// The fired orders of one partition in one batch, committed by one `fire.lua` call, in the
/// batch's order. Its members share the partition, the timers key (the live one or a test
/// clock's) and the lease token, and never name an order twice (so each order's writes in the
/// call are exactly its own commit's).
struct FireGroup<'a> {
    partition: u16,
    test_clock: Option<&'a str>,
    lease: &'a str,
    members: Vec<&'a Commit>,
}

impl FireGroup<'_> {
    /// Whether `c` may join: same partition, timers and token, room left, and not an order
    /// already in it.
    fn takes(&self, partition: u16, c: &Commit) -> bool {
        self.partition == partition
            && self.test_clock == c.test_clock.as_deref()
            && self.lease == c.lease
            && self.members.len() < MAX_FIRE_GROUP
            && self.members.iter().all(|m| m.order_id != c.order_id)
    }
}

/// A lean commit: an existing order saved with a change and no kept reply (a timer firing).
fn is_fire(c: &Commit) -> bool {
    matches!(
        (&c.write, &c.change, &c.reply),
        (OrderWrite::Save { .. }, Some(_), None)
    ) && c.expected_version > 0
}

/// The fire groups of a batch, in the order of their first member, and for each job its
/// group and place in it (None: a command of its own).
fn fire_groups<'a>(
    batch: &'a [Job],
    keys: &Keys,
) -> (Vec<FireGroup<'a>>, Vec<Option<(usize, usize)>>) {
    let mut groups: Vec<FireGroup<'a>> = Vec::new();
    let mut of_job = Vec::with_capacity(batch.len());
    for job in batch {
        let c = match job {
            Job::Commit(c, _) if is_fire(c) => c,
            _ => {
                of_job.push(None);
                continue;
            }
        };
        let partition = keys.partition(&c.order_id);
        // A batch spans a few partitions: the last group that takes it, else a new one.
        let g = match groups.iter().rposition(|g| g.takes(partition, c)) {
            Some(g) => g,
            None => {
                groups.push(FireGroup {
                    partition,
                    test_clock: c.test_clock.as_deref(),
                    lease: &c.lease,
                    members: Vec::new(),
                });
                groups.len() - 1
            }
        };
        of_job.push(Some((g, groups[g].members.len())));
        groups[g].members.push(c);
    }
    (groups, of_job)
}

/// The batch's pipeline, and where each job's reply will be in its replies. A fire group's
/// call goes where its first member is; the jobs between are independent (nothing in one batch
/// was acknowledged yet, so none waits for another).
fn build_pipeline(
    batch: &[Job],
    keys: &Keys,
    config: &CommitterConfig,
) -> (redis::Pipeline, Vec<Place>) {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    // With a WAIT, the change is published once confirmed (by the batcher), not by the script.
    let publish = config.publish_events && config.wait.is_none();
    let channel = if publish {
        keys.order_keys().events_channel()
    } else {
        String::new()
    };
    let (groups, of_job) = fire_groups(batch, keys);
    // Each group's command index, once sent.
    let mut sent: Vec<Option<usize>> = vec![None; groups.len()];
    let mut places = Vec::with_capacity(batch.len());
    for (job, group) in batch.iter().zip(of_job) {
        if let Some((g, at)) = group {
            let cmd = *sent[g].get_or_insert_with(|| {
                add_fire_group(&mut pipe, &groups[g], keys, &channel);
                pipe.len() - 1
            });
            places.push(Place::Grouped { cmd, at });
            continue;
        }
        places.push(Place::Own(pipe.len()));
        match job {
            Job::Commit(c, _) => add_commit(&mut pipe, c, keys, config, publish),
            Job::Confirm {
                partition, lease, ..
            } => {
                pipe.cmd("EVALSHA")
                    .arg(scripts::LEASE_TOUCH.sha())
                    .arg(1)
                    .arg(keys.lease(*partition))
                    .arg(lease);
            }
            Job::Write(cmd, _) => {
                pipe.add_command(cmd.clone());
            }
        }
    }
    (pipe, places)
}

/// A change entry as one argument, written straight into the command: its head, the order JSON
/// (its entity) and the closing brace.
struct ChangeEntry<'a> {
    head: &'a str,
    json: &'a str,
}

impl redis::ToRedisArgs for ChangeEntry<'_> {
    fn write_redis_args<W>(&self, out: &mut W)
    where
        W: ?Sized + redis::RedisWrite,
    {
        use std::io::Write;
        let mut arg = out.writer_for_next_arg();
        // Writes into the command's own buffer, which cannot fail.
        let _ = arg.write_all(self.head.as_bytes());
        let _ = arg.write_all(self.json.as_bytes());
        let _ = arg.write_all(b"}");
    }
}

/// One `fire.lua` call committing a fire group (see the script for its keys and arguments).
fn add_fire_group(pipe: &mut redis::Pipeline, group: &FireGroup<'_>, keys: &Keys, channel: &str) {
    let p = group.partition;
    let order_keys: Vec<String> = group
        .members
        .iter()
        .map(|c| keys.order_keys().order(&c.order_id))
        .collect();
    // The order keys of a partition differ only in the order id at their end: the script
    // reads each id back from its key.
    let common = order_keys
        .first()
        .zip(group.members.first())
        .map_or(0, |(k, c)| k.len() - c.order_id.len());
    let cmd = pipe
        .cmd("EVALSHA")
        .arg(scripts::FIRE.sha())
        .arg(4 + group.members.len());
    cmd.arg(keys.lease(p))
        .arg(keys.order_keys().timers_of(p, group.test_clock))
        .arg(keys.order_keys().events(p))
        .arg(keys.stats_keys().outbox(p));
    for k in &order_keys {
        cmd.arg(k);
    }
    cmd.arg(group.lease).arg(channel).arg(common);
    for c in &group.members {
        let (
            OrderWrite::Save {
                json,
                version,
                due_ms,
                ..
            },
            Some(change),
        ) = (&c.write, &c.change)
        else {
            continue; // never: a group holds fires only
        };
        // The whole change entry, the order JSON at its end: one string for the script's
        // XADD, which cuts the hash's copy out of it.
        cmd.arg(c.expected_version)
            .arg(*version)
            .arg(ChangeEntry { head: change, json })
            .arg(change.len())
            .arg(due_ms.map(|d| d.to_string()).unwrap_or_default())
            .arg(c.deltas.len());
        for d in &c.deltas {
            cmd.arg(d);
        }
    }
}

/// One `commit.lua` call: a commit that is not a timer firing (a command's, with its kept
/// reply, or a creation).
fn add_commit(
    pipe: &mut redis::Pipeline,
    c: &Commit,
    keys: &Keys,
    config: &CommitterConfig,
    publish: bool,
) {
    let partition = keys.partition(&c.order_id);
    let clock = c.test_clock.as_deref();
    let (op, version, json, due, created) = match &c.write {
        OrderWrite::None => ("none", String::new(), "", String::new(), String::new()),
        OrderWrite::Save {
            json,
            version,
            due_ms,
            created_ms,
            ..
        } => (
            "save",
            version.to_string(),
            json.as_str(),
            due_ms.map(|d| d.to_string()).unwrap_or_default(),
            created_ms.to_string(),
        ),
        OrderWrite::Delete { json, .. } => (
            "delete",
            String::new(),
            json.as_str(),
            String::new(),
            String::new(),
        ),
    };
    let (request_id, reply) = c
        .reply
        .as_ref()
        .map_or(("-", ""), |(id, json)| (id.as_str(), json.as_str()));
    let cmd = pipe.cmd("EVALSHA").arg(scripts::COMMIT.sha()).arg(8);
    cmd.arg(keys.order_keys().order(&c.order_id))
        .arg(keys.order_keys().timers_of(partition, clock))
        .arg(keys.order_keys().events(partition))
        .arg(keys.admin_keys().reply(partition, request_id))
        .arg(keys.order_keys().deleted(partition))
        .arg(keys.order_keys().orders_of(partition, clock))
        .arg(keys.stats_keys().outbox(partition))
        .arg(keys.lease(partition));
    cmd.arg(c.expected_version)
        .arg(op)
        .arg(version)
        .arg(json)
        .arg(due)
        .arg(&c.order_id)
        .arg(created)
        .arg(reply)
        .arg(config.reply_ttl_secs)
        .arg(if publish { "1" } else { "0" })
        .arg(c.change.as_deref().unwrap_or(""))
        .arg(c.deltas.len())
        .arg(&c.lease)
        .arg(keys.order_keys().events_channel());
    for d in &c.deltas {
        cmd.arg(d);
    }
}

/// Each job's reply and replica count from the pipeline's, by `places`. A fire group's reply
/// is split among its members: one reply per order, or, when the call was fenced, FENCED for
/// each; an error reply of the call (NOSCRIPT, a failed write) is every member's.
fn job_replies(values: Vec<Value>, replicas: &[i64], places: &[Place]) -> (Vec<Value>, Vec<i64>) {
    let fenced = || {
        Value::Array(vec![
            Value::BulkString(b"FENCED".to_vec()),
            Value::BulkString(Vec::new()),
        ])
    };
    let grouped: HashSet<usize> = places
        .iter()
        .filter_map(|p| match p {
            Place::Grouped { cmd, .. } => Some(*cmd),
            Place::Own(_) => None,
        })
        .collect();
    // Each command's reply, taken by its job; a group's split into its members' replies.
    let mut own: Vec<Option<Value>> = Vec::with_capacity(values.len());
    let mut split: HashMap<usize, Vec<Option<Value>>> = HashMap::new();
    for (cmd, v) in values.into_iter().enumerate() {
        match v {
            Value::Array(items) if grouped.contains(&cmd) => {
                split.insert(cmd, items.into_iter().map(Some).collect());
                own.push(None);
            }
            v => own.push(Some(v)),
        }
    }
    let mut out = Vec::with_capacity(places.len());
    let mut confirmed = Vec::with_capacity(places.len());
    for place in places {
        let (cmd, v) = match *place {
            Place::Own(cmd) => (cmd, own.get_mut(cmd).and_then(Option::take)),
            Place::Grouped { cmd, at } => {
                let v = match split.get_mut(&cmd) {
                    // {'FENCED'}: nothing of the call was written.
                    Some(items) if matches!(items.first(), Some(Some(Value::BulkString(s))) if s == b"FENCED") => {
                        Some(fenced())
                    }
                    Some(items) => items.get_mut(at).and_then(Option::take),
                    // Not an array: the call's error (or an unexpected reply), each member's.
                    None => own.get(cmd).cloned().flatten(),
                };
                (cmd, v)
            }
        };
        out.push(v.unwrap_or(Value::Nil));
        confirmed.push(replicas.get(cmd).copied().unwrap_or(-1));
    }
    (out, confirmed)
}

fn parse_outcome(v: Value) -> Result<CommitOutcome, StoreError> {
    let Value::Array(items) = v else {
        return Err(StoreError::UnexpectedReply(format!("{v:?}")));
    };
    let text = |v: &Value| match v {
        Value::BulkString(b) => String::from_utf8_lossy(b).into_owned(),
        Value::SimpleString(s) => s.clone(),
        _ => String::new(),
    };
    match items.first().map(text).as_deref() {
        Some("OK") => Ok(CommitOutcome::Committed {
            outbox_ids: items.iter().skip(2).map(text).collect(),
        }),
        Some("REPLIED") => Ok(CommitOutcome::AlreadyReplied(
            items.get(1).map(text).unwrap_or_default(),
        )),
        Some("VERSION") => Ok(CommitOutcome::VersionConflict),
        Some("DELETED") => Ok(CommitOutcome::Deleted),
        Some("FENCED") => Ok(CommitOutcome::Fenced),
        _ => Err(StoreError::UnexpectedReply(format!("{items:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Keys {
        Keys::new("t", 4)
    }

    /// Order ids of partition `p`, as many as asked.
    fn ids_of(p: u16, n: usize) -> Vec<String> {
        let keys = keys();
        (0..)
            .map(|i| format!("o{i}"))
            .filter(|id| keys.partition(id) == p)
            .take(n)
            .collect()
    }

    fn fire(id: &str, lease: &str) -> Job {
        Job::Commit(
            Commit {
                order_id: id.to_string(),
                expected_version: 3,
                write: OrderWrite::Save {
                    json: format!("{{\"id\":\"{id}\"}}"),
                    version: 4,
                    due_ms: Some(1_000),
                    customer_id: "c".into(),
                    created_ms: 1,
                },
                change: Some("{\"entity\":".into()),
                event_count: 1,
                deltas: Vec::new(),
                reply: None,
                lease: lease.to_string(),
                test_clock: None,
            },
            oneshot::channel().0,
        )
    }

    fn command(id: &str) -> Job {
        let Job::Commit(mut c, done) = fire(id, "d:1") else {
            unreachable!()
        };
        c.reply = Some(("r1".into(), "{}".into()));
        Job::Commit(c, done)
    }

    fn config() -> CommitterConfig {
        CommitterConfig {
            max_batch: 128,
            max_in_flight: 1,
            reply_ttl_secs: 60,
            publish_events: true,
            wait: None,
        }
    }

    fn args(pipe: &redis::Pipeline, cmd: usize) -> Vec<String> {
        pipe.cmd_iter()
            .nth(cmd)
            .unwrap()
            .args_iter()
            .map(|a| match a {
                redis::Arg::Simple(s) => String::from_utf8_lossy(s).into_owned(),
                _ => "<cursor>".into(),
            })
            .collect()
    }

    #[test]
    fn the_fires_of_a_partition_go_in_one_call_and_other_commits_alone() {
        let (a, b) = (ids_of(0, 2), ids_of(1, 1));
        let batch = vec![
            fire(&a[0], "d:1"),
            command(&a[1]),
            fire(&a[1], "d:1"),
            fire(&b[0], "d:1"),
            Job::Confirm {
                partition: 0,
                lease: "d:1".into(),
                done: oneshot::channel().0,
            },
        ];
        let (pipe, places) = build_pipeline(&batch, &keys(), &config());
        assert_eq!(pipe.len(), 4);
        assert_eq!(
            places,
            [
                Place::Grouped { cmd: 0, at: 0 },
                Place::Own(1),
                Place::Grouped { cmd: 0, at: 1 },
                Place::Grouped { cmd: 2, at: 0 },
                Place::Own(3),
            ]
        );
        let group = args(&pipe, 0);
        assert_eq!(group[1], scripts::FIRE.sha());
        assert_eq!(
            group[2], "6",
            "the lease, timers, events, outbox and two orders"
        );
        let keys = keys();
        assert_eq!(group[3], keys.lease(0));
        assert_eq!(group[7], keys.order_keys().order(&a[0]));
        assert_eq!(group[8], keys.order_keys().order(&a[1]));
        // The token and channel once, then each order's id as the rest of its key.
        assert_eq!(group[9], "d:1");
        assert_eq!(group[10], keys.order_keys().events_channel());
        let common: usize = group[11].parse().unwrap();
        assert_eq!(&group[7][common..], a[0]);
        assert_eq!(&group[8][common..], a[1]);
        let entry = |id: &str| format!("{{\"entity\":{{\"id\":\"{id}\"}}}}");
        assert_eq!(
            group[12..],
            [
                "3",
                "4",
                &entry(&a[0]),
                "10",
                "1000",
                "0",
                "3",
                "4",
                &entry(&a[1]),
                "10",
                "1000",
                "0",
            ]
        );
        assert_eq!(args(&pipe, 1)[1], scripts::COMMIT.sha());
    }

    #[test]
    fn an_order_named_twice_or_another_token_gets_another_call() {
        let a = ids_of(2, 2);
        let batch = vec![
            fire(&a[0], "d:1"),
            fire(&a[0], "d:1"),
            fire(&a[1], "d:2"),
            fire(&a[1], "d:1"),
        ];
        let (pipe, places) = build_pipeline(&batch, &keys(), &config());
        assert_eq!(pipe.len(), 3);
        assert_eq!(
            places,
            [
                Place::Grouped { cmd: 0, at: 0 },
                Place::Grouped { cmd: 1, at: 0 },
                Place::Grouped { cmd: 2, at: 0 },
                Place::Grouped { cmd: 1, at: 1 },
            ]
        );
    }

    fn text(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn a_call_is_split_among_its_orders_and_fenced_or_failed_for_each() {
        let places = [
            Place::Grouped { cmd: 0, at: 0 },
            Place::Own(1),
            Place::Grouped { cmd: 0, at: 1 },
            Place::Grouped { cmd: 2, at: 0 },
            Place::Grouped { cmd: 2, at: 1 },
            Place::Grouped { cmd: 3, at: 0 },
        ];
        let values = vec![
            Value::Array(vec![
                Value::Array(vec![text("OK"), text("1-0")]),
                Value::Array(vec![text("VERSION"), text("7")]),
            ]),
            Value::Int(1),
            Value::Array(vec![text("FENCED")]),
            redis::parse_redis_value(b"-ERR failed\r\n").unwrap(),
        ];
        let (replies, replicas) = job_replies(values, &[5, 6, 7, 8], &places);
        assert_eq!(replicas, [5, 6, 5, 7, 7, 8]);
        assert_eq!(replies[1], Value::Int(1));
        let outcomes: Vec<Option<CommitOutcome>> =
            replies.into_iter().map(|v| parse_outcome(v).ok()).collect();
        assert_eq!(
            outcomes[0],
            Some(CommitOutcome::Committed {
                outbox_ids: Vec::new()
            })
        );
        assert_eq!(outcomes[2], Some(CommitOutcome::VersionConflict));
        assert_eq!(outcomes[3], Some(CommitOutcome::Fenced));
        assert_eq!(outcomes[4], Some(CommitOutcome::Fenced));
        assert_eq!(outcomes[5], None, "the call's error is its order's");
    }
}
