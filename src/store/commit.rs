//! The commit batcher: many orders' commits go to Redis in one pipeline of EVALSHA calls, each
//! one atomic for its order (`commit.lua`). A commit is acknowledged only after Redis answered.

use std::sync::Arc;
use std::time::Instant as WallInstant;

use redis::Value;
use tokio::sync::{mpsc, oneshot, Semaphore};

use super::keys::Keys;
use super::RedisConn;
use super::StoreError;
use crate::metrics::{Metrics, TransitionKind};

/// The Lua source of the per-order commit.
pub const COMMIT_SCRIPT: &str = include_str!("commit.lua");
/// The Lua source of the lean commit of an existing order with a change and no reply (a timer
/// firing): the same writes as [`COMMIT_SCRIPT`]'s, with fewer keys and arguments.
pub const FIRE_SCRIPT: &str = include_str!("fire.lua");

/// The SHAs of the two commit scripts, as loaded into Redis.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scripts {
    pub commit: String,
    pub fire: String,
}

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

struct Pending {
    commit: Commit,
    done: oneshot::Sender<Result<CommitOutcome, StoreError>>,
}

/// Handle to the batcher task.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<Pending>,
}

/// Settings of the batcher.
#[derive(Debug, Clone)]
pub struct CommitterConfig {
    pub max_batch: usize,
    pub max_in_flight: usize,
    pub reply_ttl_secs: u64,
    pub publish_events: bool,
}

impl Committer {
    /// Starts the batcher on the current runtime. It stops when every handle is dropped,
    /// after committing what it was given.
    pub fn start(
        conn: RedisConn,
        keys: Keys,
        sha: Scripts,
        config: CommitterConfig,
        metrics: Arc<Metrics>,
    ) -> Committer {
        let (tx, rx) = mpsc::channel(config.max_batch * 4);
        tokio::task::spawn_local(run_batcher(rx, conn, keys, sha, config, metrics));
        Committer { tx }
    }

    /// Commits and waits until Redis has it.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails or the batcher is gone.
    pub async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Pending { commit, done })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }
}

async fn run_batcher(
    mut rx: mpsc::Receiver<Pending>,
    conn: RedisConn,
    keys: Keys,
    sha: Scripts,
    config: CommitterConfig,
    metrics: Arc<Metrics>,
) {
    let permits = Arc::new(Semaphore::new(config.max_in_flight));
    let config = Arc::new(config);
    let keys = Arc::new(keys);
    let sha = Arc::new(sha);
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
        let (conn, keys, sha, config, metrics) = (
            conn.clone(),
            Arc::clone(&keys),
            Arc::clone(&sha),
            Arc::clone(&config),
            Arc::clone(&metrics),
        );
        tokio::task::spawn_local(async move {
            send_batch(batch, conn, &keys, &sha, &config, &metrics).await;
            drop(permit);
        });
    }
    // Wait for the batches still in flight (the semaphore is never closed).
    let in_flight = u32::try_from(config.max_in_flight).unwrap_or(u32::MAX);
    if permits.acquire_many(in_flight).await.is_err() {
        tracing::debug!("commit batcher stopped with batches in flight");
    }
}

async fn send_batch(
    batch: Vec<Pending>,
    mut conn: RedisConn,
    keys: &Keys,
    sha: &Scripts,
    config: &CommitterConfig,
    metrics: &Metrics,
) {
    let started = WallInstant::now();
    let mut results = run_pipeline(&batch, &mut conn, keys, sha, config).await;
    // A restarted Redis forgets scripts: load it again and retry once.
    if results.as_ref().is_ok_and(|r| r.iter().any(is_noscript))
        || results
            .as_ref()
            .is_err_and(|e| e.code() == Some("NOSCRIPT"))
    {
        if let Err(e) = load_script(&mut conn).await {
            results = Err(e);
        } else {
            results = run_pipeline(&batch, &mut conn, keys, sha, config).await;
        }
    }
    let elapsed = started.elapsed();
    metrics.commit_batch(batch.len(), elapsed);
    match results {
        Ok(values) => {
            for (p, v) in batch.into_iter().zip(values) {
                let outcome = parse_outcome(v);
                // A version written is a transition: with a reply to keep, an admin
                // command's; without, a fired timer's.
                if p.commit.change.is_some()
                    && matches!(outcome, Ok(CommitOutcome::Committed { .. }))
                {
                    let kind = if p.commit.reply.is_some() {
                        TransitionKind::Command
                    } else {
                        TransitionKind::Fire
                    };
                    metrics.committed(kind, p.commit.event_count);
                }
                // A caller that stopped waiting learns the outcome on its next load.
                p.done.send(outcome).ok();
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, size = batch.len(), "commit batch failed");
            metrics.redis_error();
            let e = StoreError::from(e);
            for p in batch {
                p.done.send(Err(e.clone())).ok();
            }
        }
    }
}

fn is_noscript(v: &Value) -> bool {
    matches!(v, Value::ServerError(e) if e.code() == "NOSCRIPT")
}

/// The SHAs of the commit scripts, computed (what [`load_script`] returns once loaded; a
/// batcher loads them on NOSCRIPT).
pub fn script_hashes() -> Scripts {
    Scripts {
        commit: redis::Script::new(COMMIT_SCRIPT).get_hash().to_string(),
        fire: redis::Script::new(FIRE_SCRIPT).get_hash().to_string(),
    }
}

/// Loads the commit scripts into Redis and returns their SHAs.
///
/// # Errors
/// The Redis error.
pub async fn load_script(conn: &mut RedisConn) -> Result<Scripts, redis::RedisError> {
    let load = |source: &'static str| {
        let mut c = redis::cmd("SCRIPT");
        c.arg("LOAD").arg(source);
        c
    };
    Ok(Scripts {
        commit: load(COMMIT_SCRIPT).query_async(conn).await?,
        fire: load(FIRE_SCRIPT).query_async(conn).await?,
    })
}

async fn run_pipeline(
    batch: &[Pending],
    conn: &mut RedisConn,
    keys: &Keys,
    sha: &Scripts,
    config: &CommitterConfig,
) -> Result<Vec<Value>, redis::RedisError> {
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    for p in batch {
        let c = &p.commit;
        let partition = keys.partition(&c.order_id);
        let clock = c.test_clock.as_deref();
        // An existing order saved with a change and no reply (a timer firing): the lean script.
        if let (
            OrderWrite::Save {
                json,
                version,
                due_ms,
                ..
            },
            Some(change),
            None,
        ) = (&c.write, &c.change, &c.reply)
        {
            if c.expected_version > 0 {
                let cmd = pipe.cmd("EVALSHA").arg(&sha.fire).arg(5);
                cmd.arg(keys.order(&c.order_id))
                    .arg(keys.timers_of(partition, clock))
                    .arg(keys.events(partition))
                    .arg(keys.outbox(partition))
                    .arg(keys.lease(partition));
                cmd.arg(&c.lease)
                    .arg(c.expected_version)
                    .arg(*version)
                    .arg(json.as_str())
                    .arg(due_ms.map(|d| d.to_string()).unwrap_or_default())
                    .arg(&c.order_id)
                    .arg(change.as_str())
                    .arg(if config.publish_events {
                        keys.events_channel()
                    } else {
                        String::new()
                    });
                for d in &c.deltas {
                    cmd.arg(d);
                }
                continue;
            }
        }
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
        let cmd = pipe.cmd("EVALSHA").arg(&sha.commit).arg(8);
        cmd.arg(keys.order(&c.order_id))
            .arg(keys.timers_of(partition, clock))
            .arg(keys.events(partition))
            .arg(keys.reply(partition, request_id))
            .arg(keys.deleted(partition))
            .arg(keys.orders_of(partition, clock))
            .arg(keys.outbox(partition))
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
            .arg(if config.publish_events { "1" } else { "0" })
            .arg(c.change.as_deref().unwrap_or(""))
            .arg(c.deltas.len())
            .arg(&c.lease)
            .arg(keys.events_channel());
        for d in &c.deltas {
            cmd.arg(d);
        }
    }
    pipe.query_async(conn).await
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
