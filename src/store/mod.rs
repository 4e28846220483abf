//! Redis storage: key names, the atomic per-order commit and its batcher, loading orders,
//! kept replies, the persisted clock and the timer sets. Nothing here knows the lifecycle
//! rules; it stores what the domain decided.

pub mod access;
pub mod carts;
pub mod clock;
pub mod commands;
pub mod commit;
pub mod conn;
pub mod daemons;
pub mod embedded;
pub mod keys;
pub mod lease;
pub mod meta;
pub mod orders;
pub mod outage;
pub mod replication;
pub mod scripts;
pub mod stats;
pub mod test_clock;
pub mod timers;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

pub use conn::{
    ConnectError, RedisAccess, RedisAddress, RedisConn, RedisNodes, TlsOptions, WaitFor,
};

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

/// Replication confirmations (SPEC 11.1): what a partition's master held confirmed by
/// `redis.wait_replicas` replicas, and single writes acknowledged only once they have them.
/// A narrow handle (the admin connection and batcher), made by [`Store::confirmer`]; the
/// handles that write or read outside a commit hold one.
#[derive(Clone)]
pub struct Confirmer {
    conn: RedisConn,
    committer: Committer,
    waits: bool,
    replication: Arc<Replication>,
}

impl Confirmer {
    /// Whether acknowledgements wait for replicas (`redis.wait_replicas` > 0).
    pub fn waits(&self) -> bool {
        self.waits
    }

    /// `redis.wait_replicas` and what the last WAIT said.
    pub fn replication(&self) -> &Arc<Replication> {
        &self.replication
    }

    /// Confirms everything partition `partition`'s master held before this call (what a reply
    /// read, a lease just acquired): the lease written back under the lease check and a WAIT,
    /// batched with the admin commits. Nothing to do (`Ok`) when `redis.wait_replicas` is 0.
    ///
    /// # Errors
    /// [`StoreError::Unconfirmed`] when the WAIT fell short; [`StoreError::Fenced`] when
    /// `token` no longer holds the partition; [`StoreError`] when Redis fails.
    pub async fn confirm(&self, partition: u16, token: &str) -> Result<(), StoreError> {
        if !self.waits {
            return Ok(());
        }
        self.committer.confirm(partition, token.to_string()).await
    }

    /// [`Confirmer::confirm`] for many partitions at once (they share the WAIT of one
    /// pipeline): each one's outcome, in order.
    pub async fn confirm_many(&self, held: &[(u16, String)]) -> Vec<Result<(), StoreError>> {
        futures_util::future::join_all(held.iter().map(|(p, token)| self.confirm(*p, token))).await
    }

    async fn write_confirmed(&self, cmd: redis::Cmd) -> Result<redis::Value, StoreError> {
        if !self.waits {
            let mut conn = self.conn.clone();
            return Ok(cmd.query_async(&mut conn).await?);
        }
        self.committer.write(cmd).await
    }
}

/// The connection a scheduler lane reads over: the test clocks' own (`test_conn`) for a test
/// clock's timers, else the bulk one.
fn lane_conn(
    test_conn: Option<&RedisConn>,
    bulk: &RedisConn,
    test_clock: Option<&str>,
) -> RedisConn {
    match (test_conn, test_clock) {
        (Some(conn), Some(_)) => conn.clone(),
        _ => bulk.clone(),
    }
}

pub use crate::domain::decide::Loaded;

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
    /// The admin connection and batcher's confirmed writes.
    writes: Confirmer,
    /// Webhook delivery's own connection (reads of the streams, progress writes), so that it
    /// never queues admin traffic behind it; `None`: the admin connection.
    hooks: Option<RedisConn>,
    metrics: Arc<Metrics>,
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
        let writes = Confirmer {
            conn: conn.clone(),
            committer: committer.clone(),
            waits: replication.wait().is_some(),
            replication: Arc::clone(&replication),
        };
        Ok(Store {
            writes,
            conn,
            bulk,
            keys,
            committer,
            bulk_committer,
            test_clocks: None,
            legacy_replies_until: None,
            hooks: None,
            metrics,
            commit_shared: shared,
        })
    }

    /// Sends one write command through the admin batcher and returns its reply once
    /// `redis.wait_replicas` replicas have it (at once when that is 0).
    ///
    /// # Errors
    /// [`StoreError::Unconfirmed`] when the WAIT fell short; [`StoreError`] when Redis fails
    /// or the command is refused.
    pub async fn write_confirmed(&self, cmd: redis::Cmd) -> Result<redis::Value, StoreError> {
        self.writes.write_confirmed(cmd).await
    }

    /// The replication confirmations' handle.
    pub fn confirmer(&self) -> Confirmer {
        self.writes.clone()
    }

    /// The key names.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A connection for ad-hoc commands.
    pub fn conn(&self) -> RedisConn {
        self.conn.clone()
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

    /// This store with `conn` for webhook delivery's reads and writes.
    pub fn with_webhook_conn(mut self, conn: RedisConn) -> Store {
        self.hooks = Some(conn);
        self
    }

    /// The connection webhook delivery uses.
    pub fn webhook_conn(&self) -> RedisConn {
        self.hooks.clone().unwrap_or_else(|| self.conn.clone())
    }
}
