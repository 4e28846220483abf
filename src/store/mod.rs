//! Redis storage: key names, the atomic per-order commit and its batcher, loading orders,
//! kept replies, the persisted clock and the timer sets. Nothing here knows the lifecycle
//! rules; it stores what the domain decided.

pub mod access;
pub mod carts;
pub mod clock;
pub mod commit;
pub mod conn;
pub mod daemons;
pub mod embedded;
pub mod keys;
pub mod lease;
pub mod meta;
pub mod outage;
pub mod replication;
pub mod scripts;
pub mod stats;
pub mod test_clock;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;

pub use conn::{
    ConnectError, RedisAccess, RedisAddress, RedisConn, RedisNodes, TlsOptions, WaitFor,
};

use crate::domain::time::{from_millis, to_millis, Instant};
use crate::domain::Order;
use crate::metrics::Metrics;
pub use commit::{Commit, CommitOutcome, Committer, CommitterConfig, OrderWrite};
pub use keys::{Keys, DEFAULT_PARTITIONS, MAX_PARTITIONS};
pub use lease::LeaseToken;
pub use meta::{settle_partitions, upgrade_layout, PartitionsError};
pub use outage::Outage;
pub use replication::Replication;

/// Why a storage operation failed. Transient: the caller replies INTERNAL and the client
/// retries with the same request id.
///
/// Clone, so that one failed pipeline can fail every commit in it with the same error.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    #[error("redis: {0}")]
    Redis(#[source] Arc<redis::RedisError>),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A reply of the commit script recur cannot read.
    #[error("unexpected commit result {0}")]
    UnexpectedReply(String),
    #[error("the commit batcher has stopped")]
    Closed,
    /// The writer does not hold the partition's lease; nothing was written.
    #[error("partition {partition}'s lease is held by another daemon; nothing was written")]
    Fenced { partition: u16 },
    /// A write (or what a reply read) was not confirmed by `redis.wait_replicas` replicas
    /// within `redis.wait_timeout` (SPEC 11.1): it may be in Redis, but nothing may be
    /// acknowledged; the client retries with the same request id.
    #[error(
        "replication: {replicas} of {wanted} replicas confirmed the write within {timeout_ms} ms \
         (redis.wait_replicas); retry with the same request id"
    )]
    Unconfirmed {
        replicas: i64,
        wanted: u32,
        timeout_ms: u64,
    },
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Redis(Arc::new(e))
    }
}

/// One page of index entries (score ms, member) from several sorted sets, newest first,
/// before `cursor`; and whether there are more.
///
/// # Errors
/// [`StoreError`] when Redis fails.
pub(crate) async fn index_page(
    mut conn: RedisConn,
    keys: Vec<String>,
    cursor: Option<&(i64, String)>,
    count: usize,
) -> Result<(Vec<(i64, String)>, bool), StoreError> {
    // Entries created in the cursor's millisecond may sort before or after it: read them
    // all, on top of `count`.
    let ties: Vec<usize> = match cursor {
        Some((ms, _)) => {
            let mut pipe = redis::pipe();
            for k in &keys {
                pipe.zcount(k, ms, ms);
            }
            pipe.query_async(&mut conn).await?
        }
        None => vec![0; keys.len()],
    };
    let max = cursor.map_or_else(|| "+inf".to_string(), |(ms, _)| ms.to_string());
    let mut pipe = redis::pipe();
    for (k, t) in keys.iter().zip(&ties) {
        pipe.cmd("ZRANGE")
            .arg(k)
            .arg(&max)
            .arg("-inf")
            .arg("BYSCORE")
            .arg("REV")
            .arg("LIMIT")
            .arg(0)
            .arg(count + t)
            .arg("WITHSCORES");
    }
    let rows: Vec<Vec<(String, i64)>> = pipe.query_async(&mut conn).await?;
    let mut more = false;
    let mut all: Vec<(i64, String)> = Vec::new();
    for (row, t) in rows.into_iter().zip(&ties) {
        more |= row.len() >= count + t;
        all.extend(row.into_iter().map(|(id, ms)| (ms, id)));
    }
    if let Some((ms, id)) = cursor {
        all.retain(|(m, i)| m < ms || (m == ms && i < id));
    }
    all.sort_by(|a, b| b.cmp(a));
    more |= all.len() > count;
    all.truncate(count);
    Ok((all, more))
}

/// What Redis holds under an order id.
#[derive(Debug, Clone, PartialEq)]
pub enum Loaded {
    Present(Box<Order>),
    Missing,
    /// The id belonged to an order that was deleted; it may not be reused.
    Deleted,
}

/// The store: two connection managers (multiplexed, reconnecting), each with its own commit
/// batcher. Redis answers one connection's commands in order, so the scheduler's big rounds
/// (timer reads, bulk loads, fired commits) go over `bulk`, and admin commands, reads and
/// stats over `conn`: an admin command never queues behind a burst's pipelines.
#[derive(Clone)]
pub struct Store {
    conn: RedisConn,
    bulk: RedisConn,
    keys: Keys,
    committer: Committer,
    bulk_committer: Committer,
    /// The test clocks' own connection and batcher (SPEC 11.5): an advance of a test clock
    /// never queues the live scheduler's reads and commits behind its pipelines. `None`: the
    /// bulk ones.
    test_clocks: Option<(RedisConn, Committer)>,
    /// What every batcher shares (metrics, WAIT outcomes, the confirmed-change publisher).
    commit_shared: commit::Shared,
    /// Until when (Unix ms) replies kept by revision 1 are read too.
    legacy_replies_until: Option<i64>,
    /// Webhook delivery's own connection (reads of the streams, progress writes), so that it
    /// never queues admin traffic behind it; `None`: the admin connection.
    hooks: Option<RedisConn>,
    metrics: Arc<Metrics>,
    /// `redis.wait_replicas` and what the last WAIT said.
    replication: Arc<Replication>,
}

/// The connections a [`Store`] is opened with.
pub struct StoreConns {
    /// Admin commands, reads, leases, stats.
    pub admin: RedisConn,
    /// The scheduler's rounds (timer reads, bulk loads; may be a clone of `admin`).
    pub bulk: RedisConn,
    /// The two commit batchers' own connections (admin, bulk), when their pipelines end with
    /// a WAIT: a WAIT blocks its connection until the replicas answer, which must not hold up
    /// the reads, renewals and replies of the others. `None`: `admin` and `bulk`.
    pub commits: Option<(RedisConn, RedisConn)>,
}

/// How long the store waits for one reply: big pipelines (a burst's commits, bulk loads) take
/// a while.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Opens a connection to one Redis server with timeouts fit for big pipelines.
///
/// # Errors
/// The Redis error when the URL is invalid or Redis does not answer.
pub async fn connect(url: &str) -> Result<RedisConn, StoreError> {
    connect_to(&RedisAddress::single(url.to_string())).await
}

/// Opens a connection to one Redis server or to a Redis Cluster, with timeouts fit for big
/// pipelines.
///
/// # Errors
/// The Redis error when a URL is invalid or Redis (no seed node of a cluster) does not answer.
pub async fn connect_to(address: &RedisAddress) -> Result<RedisConn, StoreError> {
    Ok(address.connect(RESPONSE_TIMEOUT).await?)
}

impl Store {
    /// Loads the commit script and starts the batcher (on the current actix/tokio local set).
    ///
    /// # Errors
    /// The Redis error when the script cannot be loaded.
    /// `bulk` carries the scheduler's traffic (it may be a clone of `conn`); its batcher sends
    /// pipelines of at most `bulk_max_batch` commits.
    ///
    /// # Errors
    /// The Redis error when the script cannot be loaded.
    pub async fn open(
        conn: RedisConn,
        bulk: RedisConn,
        keys: Keys,
        config: CommitterConfig,
        bulk_max_batch: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Store, StoreError> {
        let conns = StoreConns {
            admin: conn,
            bulk,
            commits: None,
        };
        Store::open_with(conns, keys, config, bulk_max_batch, metrics).await
    }

    /// [`Store::open`] with the commit batchers on connections of their own (see
    /// [`StoreConns`]).
    ///
    /// # Errors
    /// The Redis error when the scripts cannot be loaded.
    pub async fn open_with(
        conns: StoreConns,
        keys: Keys,
        config: CommitterConfig,
        bulk_max_batch: usize,
        metrics: Arc<Metrics>,
    ) -> Result<Store, StoreError> {
        let StoreConns {
            admin: mut conn,
            bulk,
            commits,
        } = conns;
        scripts::load_all(&mut conn).await?;
        let (commit_conn, bulk_commit_conn) =
            commits.unwrap_or_else(|| (conn.clone(), bulk.clone()));
        let replication = Replication::new(config.wait, Arc::clone(&metrics));
        // With a WAIT, confirmed changes are published by one publisher for both batchers,
        // over the admin connection (no WAIT ever blocks it).
        let publisher = (config.wait.is_some() && config.publish_events)
            .then(|| replication::Publisher::start(conn.clone(), keys.clone()));
        let shared = commit::Shared {
            metrics: Arc::clone(&metrics),
            replication: Arc::clone(&replication),
            publisher,
        };
        let committer = Committer::start(commit_conn, keys.clone(), config.clone(), shared.clone());
        let bulk_config = CommitterConfig {
            max_batch: bulk_max_batch.max(1),
            ..config
        };
        let bulk_committer =
            Committer::start(bulk_commit_conn, keys.clone(), bulk_config, shared.clone());
        Ok(Store {
            conn,
            bulk,
            keys,
            committer,
            bulk_committer,
            test_clocks: None,
            legacy_replies_until: None,
            hooks: None,
            metrics,
            replication,
            commit_shared: shared,
        })
    }

    /// `redis.wait_replicas` and what the last WAIT said.
    pub fn replication(&self) -> &Arc<Replication> {
        &self.replication
    }

    /// Whether acknowledgements wait for replicas (`redis.wait_replicas` > 0).
    pub fn waits(&self) -> bool {
        self.replication.wait().is_some()
    }

    /// Confirms everything partition `partition`'s master held before this call (what a reply
    /// read, a lease just acquired): the lease written back under the lease check and a WAIT,
    /// batched with the admin commits. Nothing to do (`Ok`) when `redis.wait_replicas` is 0.
    ///
    /// # Errors
    /// [`StoreError::Unconfirmed`] when the WAIT fell short; [`StoreError::Fenced`] when
    /// `token` no longer holds the partition; [`StoreError`] when Redis fails.
    pub async fn confirm(&self, partition: u16, token: &str) -> Result<(), StoreError> {
        if !self.waits() {
            return Ok(());
        }
        self.committer.confirm(partition, token.to_string()).await
    }

    /// [`Store::confirm`] for many partitions at once (they share the WAIT of one pipeline):
    /// each one's outcome, in order.
    pub async fn confirm_many(&self, held: &[(u16, String)]) -> Vec<Result<(), StoreError>> {
        futures_util::future::join_all(held.iter().map(|(p, token)| self.confirm(*p, token))).await
    }

    /// Sends one write command through the admin batcher and returns its reply once
    /// `redis.wait_replicas` replicas have it (at once when that is 0).
    ///
    /// # Errors
    /// [`StoreError::Unconfirmed`] when the WAIT fell short; [`StoreError`] when Redis fails
    /// or the command is refused.
    pub async fn write_confirmed(&self, cmd: redis::Cmd) -> Result<redis::Value, StoreError> {
        if !self.waits() {
            let mut conn = self.conn.clone();
            return Ok(cmd.query_async(&mut conn).await?);
        }
        self.committer.write(cmd).await
    }

    /// The key names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A connection for ad-hoc commands.
    pub fn conn(&self) -> RedisConn {
        self.conn.clone()
    }

    /// Commits through the batcher and waits until Redis has it.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn commit(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        self.committer.commit(commit).await
    }

    /// [`Store::commit`] for the scheduler: over the bulk connection.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn commit_bulk(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        self.bulk_committer.commit(commit).await
    }

    /// Reads an order (and whether its id was deleted).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails or the stored JSON does not parse.
    pub async fn load(&self, order_id: &str) -> Result<Loaded, StoreError> {
        let mut conn = self.conn.clone();
        let (json, deleted): (Option<String>, bool) = redis::pipe()
            .hget(self.keys.order(order_id), "d")
            .sismember(self.keys.deleted(self.keys.partition(order_id)), order_id)
            .query_async(&mut conn)
            .await?;
        match json {
            Some(j) => serde_json::from_str(&j)
                .map(|o| Loaded::Present(Box::new(o)))
                .map_err(|e| StoreError::Corrupt(format!("order {order_id}: {e}"))),
            None if deleted => Ok(Loaded::Deleted),
            None => Ok(Loaded::Missing),
        }
    }

    /// Reads many orders at once (missing ones are skipped).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails or stored JSON does not parse.
    pub async fn load_many(&self, ids: &[String]) -> Result<Vec<Order>, StoreError> {
        self.load_many_on(self.conn.clone(), ids).await
    }

    /// Ids of partition `partition`'s orders, oldest first, from rank `start`, at most `count`
    /// (a walk over every order, e.g. a forecast).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn partition_order_ids(
        &self,
        partition: u16,
        test_clock: Option<&str>,
        start: usize,
        count: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.bulk.clone();
        let end = isize::try_from(start + count).unwrap_or(isize::MAX) - 1;
        let start = isize::try_from(start).unwrap_or(isize::MAX);
        let key = self.keys.orders_of(partition, test_clock);
        Ok(conn.zrange(key, start, end).await?)
    }

    /// Reads many orders at once for a listing: missing ones and ones that cannot be read are
    /// skipped, each unreadable one logged at error level and counted
    /// (`recur_orders_unreadable_total`), so one damaged order never fails a listing of others
    /// (reading it by id answers the error).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn load_readable(&self, ids: &[String]) -> Result<Vec<Order>, StoreError> {
        let rows = self.rows(self.conn.clone(), ids).await?;
        Ok(ids
            .iter()
            .zip(rows)
            .filter_map(|(id, row)| {
                let json = row?;
                serde_json::from_str(&json)
                    .inspect_err(|e| self.unreadable(id, e))
                    .ok()
            })
            .collect())
    }

    /// The stored JSON of many orders, by id (None: missing), not parsed: for a walk over
    /// many orders that parses them off the daemon's own thread (the forecast). One that
    /// cannot be parsed is skipped and reported with [`Store::unreadable`].
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn order_rows(&self, ids: &[String]) -> Result<Vec<Option<String>>, StoreError> {
        self.rows(self.conn.clone(), ids).await
    }

    /// An order whose stored JSON cannot be read, skipped by a listing or a walk: logged at
    /// error level and counted (`recur_orders_unreadable_total`).
    pub fn unreadable(&self, order_id: &str, error: &dyn std::fmt::Display) {
        self.metrics.order_unreadable();
        tracing::error!(order_id = %order_id, error = %error, "stored order cannot be read; skipped");
    }

    async fn rows(
        &self,
        mut conn: RedisConn,
        ids: &[String],
    ) -> Result<Vec<Option<String>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for id in ids {
            pipe.hget(self.keys.order(id), "d");
        }
        Ok(pipe.query_async(&mut conn).await?)
    }

    async fn load_many_on(
        &self,
        conn: RedisConn,
        ids: &[String],
    ) -> Result<Vec<Order>, StoreError> {
        let rows = self.rows(conn, ids).await?;
        ids.iter()
            .zip(rows)
            .filter_map(|(id, row)| row.map(|j| (id, j)))
            .map(|(id, j)| {
                serde_json::from_str(&j)
                    .map_err(|e| StoreError::Corrupt(format!("order {id}: {e}")))
            })
            .collect()
    }

    /// Reads many orders at once, by id (missing ones are absent from the map), over the bulk
    /// connection (the scheduler's round preload).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails or stored JSON does not parse.
    pub async fn load_map(
        &self,
        ids: &[String],
    ) -> Result<std::collections::HashMap<String, Order>, StoreError> {
        Ok(self
            .load_many_on(self.bulk.clone(), ids)
            .await?
            .into_iter()
            .map(|o| (o.id.clone(), o))
            .collect())
    }

    /// Reads replies kept under revision 1's key (`<prefix>:reply:<id>`) too, until
    /// `until_ms` (one reply retention after the upgrade; see [`meta::upgrade_layout`]).
    pub fn with_legacy_replies(mut self, until_ms: Option<i64>) -> Store {
        self.legacy_replies_until = until_ms;
        self
    }

    /// This store with `conn` and a batcher of its own (`config`) for test clock advances'
    /// reads and commits (starts the batcher on the current local set).
    pub fn with_test_clock_conn(mut self, conn: RedisConn, config: CommitterConfig) -> Store {
        let committer = Committer::start(
            conn.clone(),
            self.keys.clone(),
            config,
            self.commit_shared.clone(),
        );
        self.test_clocks = Some((conn, committer));
        self
    }

    /// [`Store::commit`] for a fired timer of a test clock's order: over the test clocks' own
    /// connection (the bulk one when there is none).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn commit_test_clock(&self, commit: Commit) -> Result<CommitOutcome, StoreError> {
        match &self.test_clocks {
            Some((_, committer)) => committer.commit(commit).await,
            None => self.bulk_committer.commit(commit).await,
        }
    }

    /// The connection a scheduler lane reads over: the test clocks' own for a test clock's
    /// timers, else the bulk one.
    fn lane_conn(&self, test_clock: Option<&str>) -> RedisConn {
        match (&self.test_clocks, test_clock) {
            (Some((conn, _)), Some(_)) => conn.clone(),
            _ => self.bulk.clone(),
        }
    }

    /// [`Store::load_map`] over the connection of `test_clock`'s lane.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails or stored JSON does not parse.
    pub async fn load_map_for(
        &self,
        ids: &[String],
        test_clock: Option<&str>,
    ) -> Result<std::collections::HashMap<String, Order>, StoreError> {
        Ok(self
            .load_many_on(self.lane_conn(test_clock), ids)
            .await?
            .into_iter()
            .map(|o| (o.id.clone(), o))
            .collect())
    }

    /// This store with `conn` for webhook delivery's reads and writes.
    pub fn with_webhook_conn(mut self, conn: RedisConn) -> Store {
        self.hooks = Some(conn);
        self
    }

    /// The connection webhook delivery uses.
    pub fn webhook_conn(&self) -> RedisConn {
        self.hooks.clone().unwrap_or_else(|| self.conn.clone())
    }

    /// Claims `request_id` for the request body `body_hash` (SET NX, `ttl_secs`, in the id's
    /// own partition) and reads the reply kept for it in `partition`, in one round trip.
    /// Returns the hash of an earlier claim with another body, if any, and the kept reply's
    /// JSON, if any.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn claim_request(
        &self,
        partition: u16,
        request_id: &str,
        body_hash: &str,
        ttl_secs: u64,
    ) -> Result<(Option<String>, Option<String>), StoreError> {
        let mut conn = self.conn.clone();
        let claim = self.keys.request_claim(request_id);
        let (_set, claimed, kept): (Option<String>, Option<String>, Option<String>) = redis::pipe()
            .cmd("SET")
            .arg(&claim)
            .arg(body_hash)
            .arg("NX")
            .arg("EX")
            .arg(ttl_secs)
            .get(&claim)
            .get(self.keys.reply(partition, request_id))
            .query_async(&mut conn)
            .await?;
        let other = claimed.filter(|h| h != body_hash);
        let legacy = self
            .legacy_replies_until
            .is_some_and(|until| chrono::Utc::now().timestamp_millis() < until);
        if kept.is_none() && legacy {
            let old: Option<String> = conn.get(self.keys.legacy_reply(request_id)).await?;
            return Ok((other, old));
        }
        Ok((other, kept))
    }

    /// Keeps a reply that no order commit carried (reads, clock, refusals before any order).
    /// Never overwrites a reply already kept.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn keep_reply(
        &self,
        partition: u16,
        request_id: &str,
        json: &str,
        ttl_secs: u64,
        token: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let kept: i64 = scripts::KEEP_REPLY
            .script()
            .key(self.keys.reply(partition, request_id))
            .key(self.keys.lease(partition))
            .arg(token)
            .arg(json)
            .arg(ttl_secs)
            .invoke_async(&mut conn)
            .await?;
        if kept == 0 {
            return Err(StoreError::Fenced { partition });
        }
        Ok(())
    }

    /// The clock mode and simulated time the data was made with, if recorded.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn clock_record(&self) -> Result<(Option<String>, Option<Instant>), StoreError> {
        let mut conn = self.conn.clone();
        let (mode, now): (Option<String>, Option<i64>) = redis::pipe()
            .hget(self.keys.clock(), "mode")
            .hget(self.keys.clock(), "now")
            .query_async(&mut conn)
            .await?;
        Ok((mode, now.and_then(from_millis)))
    }

    /// Records the clock mode and (simulated) start instant unless recorded already (HSETNX
    /// each, so of daemons starting together the first one's win).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn record_clock_if_new(
        &self,
        mode: &str,
        now: Option<Instant>,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.hset_nx(self.keys.clock(), "mode", mode);
        if let Some(now) = now {
            pipe.hset_nx(self.keys.clock(), "now", to_millis(&now));
        }
        let _: Vec<bool> = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// Records the clock mode (and the simulated time, when given).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn save_clock(&self, mode: &str, now: Option<Instant>) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        pipe.hset(self.keys.clock(), "mode", mode);
        if let Some(now) = now {
            pipe.hset(self.keys.clock(), "now", to_millis(&now));
        }
        let _: () = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// The earliest due instant over `partitions`, if any timer is set there.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn earliest_due(&self, partitions: &[u16]) -> Result<Option<i64>, StoreError> {
        if partitions.is_empty() {
            return Ok(None);
        }
        let mut conn = self.bulk.clone();
        let mut pipe = redis::pipe();
        for &p in partitions {
            pipe.cmd("ZRANGE")
                .arg(self.keys.timers(p))
                .arg(0)
                .arg(0)
                .arg("WITHSCORES");
        }
        let rows: Vec<Vec<(String, i64)>> = pipe.query_async(&mut conn).await?;
        Ok(rows.into_iter().flatten().map(|(_, s)| s).min())
    }

    /// The timers of `partitions` for the metrics: how many are due at or before `now_ms`, and
    /// the earliest due instant (Unix ms), over the admin connection (a scrape never waits
    /// behind the scheduler's pipelines).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn timer_figures(
        &self,
        partitions: &[u16],
        now_ms: i64,
    ) -> Result<(u64, Option<i64>), StoreError> {
        if partitions.is_empty() {
            return Ok((0, None));
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for &p in partitions {
            let key = self.keys.timers(p);
            pipe.zcount(&key, "-inf", now_ms)
                .cmd("ZRANGE")
                .arg(&key)
                .arg(0)
                .arg(0)
                .arg("WITHSCORES");
        }
        let rows: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
        let (mut due, mut earliest) = (0, None::<i64>);
        let mut rows = rows.into_iter();
        while let (Some(count), Some(first)) = (rows.next(), rows.next()) {
            let corrupt = |e: redis::ParsingError| StoreError::Corrupt(format!("timers: {e}"));
            due += redis::from_redis_value::<u64>(count).map_err(corrupt)?;
            let first: Vec<(String, i64)> = redis::from_redis_value(first).map_err(corrupt)?;
            if let Some((_, at)) = first.first() {
                earliest = Some(earliest.map_or(*at, |e| e.min(*at)));
            }
        }
        Ok((due, earliest))
    }

    /// Those of `partitions` with no timer due at or before `until_ms`.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn without_due(
        &self,
        partitions: &[u16],
        test_clock: Option<&str>,
        until_ms: i64,
    ) -> Result<Vec<u16>, StoreError> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.lane_conn(test_clock);
        let mut pipe = redis::pipe();
        for &p in partitions {
            pipe.zcount(self.keys.timers_of(p, test_clock), "-inf", until_ms);
        }
        let due: Vec<u64> = pipe.query_async(&mut conn).await?;
        Ok(partitions
            .iter()
            .zip(due)
            .filter(|(_, n)| *n == 0)
            .map(|(p, _)| *p)
            .collect())
    }

    /// Whether Redis answers a PING.
    ///
    /// # Errors
    /// [`StoreError`] when it does not.
    pub async fn ping(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// Order ids due at or before `until_ms` in `partitions` (a scheduler lane's share), sorted
    /// by (due, order id): up to `limit` per partition, cut so that nothing later than an entry
    /// left unread is returned (the result is always a prefix of those partitions' due order).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn due_in(
        &self,
        partitions: &[u16],
        test_clock: Option<&str>,
        until_ms: i64,
        limit: usize,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let mut conn = self.lane_conn(test_clock);
        let mut pipe = redis::pipe();
        for &p in partitions {
            pipe.cmd("ZRANGE")
                .arg(self.keys.timers_of(p, test_clock))
                .arg("-inf")
                .arg(until_ms)
                .arg("BYSCORE")
                .arg("LIMIT")
                .arg(0)
                .arg(limit)
                .arg("WITHSCORES");
        }
        let rows: Vec<Vec<(String, i64)>> = pipe.query_async(&mut conn).await?;
        let cutoff = rows
            .iter()
            .filter(|r| r.len() >= limit)
            .filter_map(|r| r.last().map(|(_, s)| *s))
            .min()
            .unwrap_or(i64::MAX);
        let mut due: Vec<(i64, String)> = rows
            .into_iter()
            .flatten()
            .filter(|(_, s)| *s <= cutoff)
            .map(|(id, s)| (s, id))
            .collect();
        due.sort();
        Ok(due)
    }

    /// Sets an order's timer outside a commit (repairs a timer that disagrees with its order),
    /// fenced by the writer's lease token like a commit.
    ///
    /// # Errors
    /// [`StoreError::Fenced`] when the lease is not held by `lease`; [`StoreError`] when Redis
    /// fails.
    pub async fn set_timer(
        &self,
        order_id: &str,
        test_clock: Option<&str>,
        due_ms: Option<i64>,
        lease: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let p = self.keys.partition(order_id);
        let done: i64 = scripts::SET_TIMER
            .script()
            .key(self.keys.timers_of(p, test_clock))
            .key(self.keys.lease(p))
            .arg(lease)
            .arg(order_id)
            .arg(due_ms.map(|d| d.to_string()).unwrap_or_default())
            .invoke_async(&mut conn)
            .await?;
        if done == 1 {
            Ok(())
        } else {
            Err(StoreError::Fenced { partition: p })
        }
    }

    /// A page of a customer's order ids, newest first, by position in its index.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn order_ids_page(
        &self,
        customer_id: &str,
        start: usize,
        count: usize,
    ) -> Result<Vec<String>, StoreError> {
        let mut conn = self.conn.clone();
        let key = self.keys.customer_orders(customer_id);
        let stop = start + count.max(1) - 1;
        Ok(conn.zrevrange(key, start as isize, stop as isize).await?)
    }

    /// Up to `count` orders of a customer's index (or, with None, of every partition's index,
    /// merged), newest first (ties by id, descending), strictly after `cursor` (the creation
    /// ms and id of the last one seen). The bool says whether the indexes may hold more.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn orders_before(
        &self,
        customer_id: Option<&str>,
        test_clock: Option<&str>,
        cursor: Option<&(i64, String)>,
        count: usize,
    ) -> Result<(Vec<(i64, String)>, bool), StoreError> {
        let keys: Vec<String> = match customer_id {
            Some(c) => vec![self.keys.customer_orders(c)],
            None => (0..self.keys.partitions())
                .map(|p| self.keys.orders_of(p, test_clock))
                .collect(),
        };
        self.index_before(keys, cursor, count).await
    }

    /// Up to `count` members of the sorted sets `keys` (scored by creation ms), merged newest
    /// first (ties by member, descending), strictly after `cursor`. The bool says whether the
    /// sets may hold more.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn index_before(
        &self,
        keys: Vec<String>,
        cursor: Option<&(i64, String)>,
        count: usize,
    ) -> Result<(Vec<(i64, String)>, bool), StoreError> {
        index_page(self.conn.clone(), keys, cursor, count).await
    }

    /// Publishes `message` on `channel` (admin replies).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn publish(&self, channel: &str, message: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _receivers: u64 = conn.publish(channel, message).await?;
        Ok(())
    }

    /// Appends an unreadable command-stream entry to `<prefix>:commands:dead`.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn dead_letter_command(&self, fields: &[(&str, &[u8])]) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _id: String = conn.xadd(self.keys.commands_dead(), "*", fields).await?;
        Ok(())
    }

    /// Acknowledges a command-stream entry for `group`.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn ack_command(
        &self,
        stream: &str,
        group: &str,
        entry_id: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _acked: u64 = conn.xack(stream, group, &[entry_id]).await?;
        Ok(())
    }

    /// Claims for `consumer` the command-stream entries another consumer of `group` has left
    /// pending for at least `idle` (XAUTOCLAIM); returns how many.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn claim_idle_commands(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        idle: Duration,
    ) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        let mut start = "0-0".to_string();
        let mut claimed = 0;
        loop {
            let (next, entries, _deleted): (String, Vec<redis::Value>, redis::Value) =
                redis::cmd("XAUTOCLAIM")
                    .arg(stream)
                    .arg(group)
                    .arg(consumer)
                    .arg(u64::try_from(idle.as_millis()).unwrap_or(u64::MAX))
                    .arg(&start)
                    .arg("COUNT")
                    .arg(256)
                    .arg("JUSTID")
                    .query_async(&mut conn)
                    .await?;
            claimed += entries.len();
            if next == "0-0" {
                return Ok(claimed);
            }
            start = next;
        }
    }

    /// The command-stream entries `consumer` of `group` holds pending, oldest first, at most
    /// `count`: each id with how many times it has been delivered (XPENDING; reading this
    /// delivers nothing).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn pending_commands(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        count: usize,
    ) -> Result<Vec<(String, usize)>, StoreError> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamPendingCountReply = conn
            .xpending_consumer_count(stream, group, "-", "+", count, consumer)
            .await?;
        Ok(reply
            .ids
            .into_iter()
            .map(|p| (p.id, p.times_delivered))
            .collect())
    }

    /// Delivers the pending command-stream entries `ids` to `consumer` again (XCLAIM with no
    /// idle minimum, which counts a delivery); entries deleted meanwhile are left out.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn redeliver_commands(
        &self,
        stream: &str,
        group: &str,
        consumer: &str,
        ids: &[String],
    ) -> Result<Vec<redis::streams::StreamId>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamClaimReply =
            conn.xclaim(stream, group, consumer, 0, ids).await?;
        Ok(reply.ids)
    }

    /// The command-stream entry `entry_id`, if the stream still has it.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn command_entry(
        &self,
        stream: &str,
        entry_id: &str,
    ) -> Result<Option<redis::streams::StreamId>, StoreError> {
        let mut conn = self.conn.clone();
        let reply: redis::streams::StreamRangeReply =
            conn.xrange_count(stream, entry_id, entry_id, 1).await?;
        Ok(reply.ids.into_iter().next())
    }

    /// Creates the consumer group `group` of the command stream (and the stream) if it is
    /// missing, reading from `from` (`$`: new entries only; `0`: every entry the stream has).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails (an existing group is not an error).
    pub async fn ensure_command_group(
        &self,
        stream: &str,
        group: &str,
        from: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let created: Result<(), redis::RedisError> =
            conn.xgroup_create_mkstream(stream, group, from).await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// When the cron job `name` last ran (None: never).
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails or the record is not an instant.
    pub async fn cron_last_run(&self, name: &str) -> Result<Option<Instant>, StoreError> {
        let mut conn = self.conn.clone();
        let last: Option<i64> = conn.hget(self.keys.cron(), name).await?;
        last.map(|ms| {
            from_millis(ms).ok_or_else(|| StoreError::Corrupt(format!("cron record {name}: {ms}")))
        })
        .transpose()
    }

    /// Records that the cron job `name` ran at `at`.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn record_cron_run(
        &self,
        name: &str,
        at: Instant,
        token: &str,
    ) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let done: i64 = scripts::FENCED_HSET
            .script()
            .key(self.keys.cron())
            .key(self.keys.lease(0))
            .arg(token)
            .arg(name)
            .arg(to_millis(&at))
            .invoke_async(&mut conn)
            .await?;
        if done == 0 {
            return Err(StoreError::Fenced { partition: 0 });
        }
        Ok(())
    }

    /// Trims each of `partitions`' event streams to `max_len` change entries (exactly, so tests
    /// can rely on it), keeping every entry one of the webhook `endpoints` has not finished
    /// with (SPEC 10); returns how many entries went.
    ///
    /// # Errors
    /// [`StoreError`] when Redis fails.
    pub async fn trim_events(
        &self,
        held: &[(u16, String)],
        max_len: u64,
        endpoints: &[String],
    ) -> Result<u64, StoreError> {
        if held.is_empty() {
            return Ok(0);
        }
        let mut conn = self.conn.clone();
        let mut pipe = redis::pipe();
        for (p, token) in held {
            // Fenced: only the partition's owner trims its stream (-1 when it is not).
            pipe.cmd("EVAL")
                .arg(scripts::FENCED_TRIM.source())
                .arg(2 + endpoints.len())
                .arg(self.keys.events(*p))
                .arg(self.keys.lease(*p));
            for e in endpoints {
                pipe.arg(self.keys.webhook_progress(*p, e));
            }
            pipe.arg(token).arg(max_len);
        }
        let removed: Vec<i64> = pipe.query_async(&mut conn).await?;
        Ok(removed
            .into_iter()
            .filter_map(|r| u64::try_from(r).ok())
            .sum())
    }
}
