//! [`RedisConn`]: the store's connection, to one Redis server or to a Redis Cluster
//! ([`RedisAddress`]). Over one server it is a reconnecting connection manager; over a cluster,
//! the redis crate's cluster client, which follows the slot map (MOVED / ASK) itself. Either way
//! a call which failed only because the connection dropped under it (Redis restarted, a network
//! blip) is retried with a short bounded backoff, once the connection is back. Such a failure is
//! not the caller's problem; retrying is safe because every commit is guarded by the order's
//! version and the request id, and every other call is a read or an idempotent write.
//!
//! Through Sentinel ([`RedisNodes::Sentinel`]), the connection is to the master the Sentinels
//! name; when a call fails because the master went away, went read-only (a demoted master) or
//! is down (`READONLY`, `MASTERDOWN`, a dropped connection, a timeout), the Sentinels are asked
//! again and the call retried on the promoted replica, with a longer backoff (a failover takes
//! seconds). Scripts are reloaded on NOSCRIPT by their callers, leases re-verified by the
//! lease loop (a lease that did not reach the promoted replica is simply not held there).
//!
//! On a cluster, a pipeline that is not a transaction may hold commands of many hash slots (the
//! commit batcher sends many partitions' commits at once): it is sent as one sub-pipeline per
//! slot, all at once, and the replies are put back in the pipeline's order. Commands of one slot
//! keep their order; commands of different slots may run in any order relative to each other
//! (no script, transaction or multi-key command of recur spans two slots, so nothing relies on
//! it). A transaction (MULTI/EXEC) is sent as it is and must touch one slot.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{
    MultipleNodeRoutingInfo, Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr,
};
use redis::{Arg, Cmd, Pipeline, RedisError, RedisFuture, RedisResult, Value};

pub use super::access::{ConnectError, Problem, RedisAccess, TlsOptions};
use crate::telemetry::mask_secrets;

/// The first pause before a retry; each further one doubles, up to [`RETRY_LAST_MS`].
pub const RETRY_FIRST_MS: u64 = 50;
/// The longest pause: with 50 ms doubling, a call is tried 6 times over about 1.5 s.
pub const RETRY_LAST_MS: u64 = 800;
/// How long connecting to a server (or to each node of a cluster) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// How long one request over a cluster connection may take before it is given up and the
/// connection replaced (see [`ClusterConn`]). Longer than any reply recur waits for (blocking
/// reads block for a second at most, sub-pipelines are a slot's share of a batch).
const CLUSTER_REQUEST_BOUND: Duration = Duration::from_secs(30);

/// A cluster connection that is replaced when it stops answering. The cluster client bounds
/// each reply by its response timeout, but CI runs (under load) saw a daemon stop for good
/// right after a failover (a master killed, its replica promoted, the killed node back as a
/// replica): the daemon's connections went silent (Redis saw no command from them for
/// minutes) while the servers answered others, and every lease lapsed. So a request that gets
/// no reply within [`CLUSTER_REQUEST_BOUND`] fails like a timeout, and the connection shared by
/// every clone is rebuilt from the client (a new slot map, new node connections); the next
/// request goes over the new one.
#[derive(Clone)]
struct ClusterConn {
    shared: Arc<ClusterShared>,
}

struct ClusterShared {
    client: Option<ClusterClient>,
    current: std::sync::Mutex<ClusterConnection>,
    bound: Duration,
    rebuilding: std::sync::atomic::AtomicBool,
}

impl ClusterConn {
    fn new(conn: ClusterConnection, client: Option<ClusterClient>, bound: Duration) -> Self {
        ClusterConn {
            shared: Arc::new(ClusterShared {
                client,
                current: std::sync::Mutex::new(conn),
                bound,
                rebuilding: std::sync::atomic::AtomicBool::new(false),
            }),
        }
    }

    /// The connection in use now.
    fn conn(&self) -> ClusterConnection {
        self.shared
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Runs `request` on the current connection; without a reply within the bound it fails
    /// with a timeout and the connection is replaced.
    async fn request<T, F, Fut>(&self, request: F) -> RedisResult<T>
    where
        F: FnOnce(ClusterConnection) -> Fut,
        Fut: std::future::Future<Output = RedisResult<T>>,
    {
        let bound = self.shared.bound;
        match tokio::time::timeout(bound, request(self.conn())).await {
            Ok(result) => result,
            Err(_) => {
                self.rebuild().await;
                Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no reply from the cluster within {bound:?}; reconnected"),
                )))
            }
        }
    }

    /// Replaces the shared connection with a new one from the client (one rebuild at a time;
    /// the others go on with the connection they have).
    async fn rebuild(&self) {
        use std::sync::atomic::Ordering;
        let Some(client) = &self.shared.client else {
            return;
        };
        if self.shared.rebuilding.swap(true, Ordering::AcqRel) {
            return;
        }
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, client.get_async_connection()).await {
            Ok(Ok(conn)) => {
                *self
                    .shared
                    .current
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = conn;
                tracing::warn!(bound = ?self.shared.bound, "a cluster connection gave no reply in time: replaced by a new one");
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "a cluster connection gave no reply in time, and a new one cannot be made yet");
            }
            Err(_) => {
                tracing::warn!(
                    "a cluster connection gave no reply in time, and making a new one timed out"
                );
            }
        }
        self.shared.rebuilding.store(false, Ordering::Release);
    }
}

/// `WAIT <replicas> <timeout_ms>` sent after a pipeline's commands (`redis.wait_replicas`,
/// `redis.wait_timeout`): how many replicas must have the writes before they count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WaitFor {
    /// How many replicas must confirm (at least 1).
    pub replicas: u32,
    /// How long Redis waits for them, in ms (at least 1: `WAIT n 0` would block forever).
    pub timeout_ms: u64,
}

impl WaitFor {
    fn cmd(self) -> Cmd {
        let mut wait = redis::cmd("WAIT");
        wait.arg(self.replicas).arg(self.timeout_ms.max(1));
        wait
    }
}

/// How many replicas a WAIT answered (`-1`: it answered an error, e.g. on a replica).
fn replicas_of(v: &Value) -> i64 {
    match v {
        Value::Int(n) => *n,
        _ => -1,
    }
}

/// Where Redis is (`redis.url`, read with `redis.cluster`) and how to get in (the ACL user and
/// password, TLS: [`RedisAccess`]). Printed (`Display`, `Debug`) with passwords masked.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisAddress {
    nodes: RedisNodes,
    access: RedisAccess,
}

/// The URL of one server, or the seed nodes of a cluster, or the Sentinels of a master.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RedisNodes {
    /// One server (`redis://host:port/db`, `rediss://...`, `redis+unix:///path`, ...).
    Single(String),
    /// A Redis Cluster: the URLs of some of its nodes (seeds); the client learns the others
    /// from them.
    Cluster(Vec<String>),
    /// A master found through its Sentinels.
    Sentinel(SentinelNodes),
}

/// The Sentinels of one master, and their own credentials. `Debug` masks the password.
#[derive(Clone, PartialEq, Eq)]
pub struct SentinelNodes {
    /// The master's name as the Sentinels monitor it.
    pub master: String,
    /// The Sentinels' URLs (`redis://s1:26379`, `rediss://...`).
    pub sentinels: Vec<String>,
    /// The Sentinels' ACL user and password, when they need their own.
    pub username: Option<String>,
    pub password: Option<String>,
}

impl fmt::Debug for SentinelNodes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SentinelNodes")
            .field("master", &self.master)
            .field(
                "sentinels",
                &self
                    .sentinels
                    .iter()
                    .map(|u| mask_secrets(u))
                    .collect::<Vec<_>>(),
            )
            .field("username", &self.username)
            .field(
                "password",
                &self.password.as_ref().map(|_| crate::telemetry::MASK),
            )
            .finish()
    }
}

impl RedisAddress {
    /// One server, reached with the URL's credentials alone.
    pub fn single(url: impl Into<String>) -> RedisAddress {
        RedisAddress {
            nodes: RedisNodes::Single(url.into()),
            access: RedisAccess::default(),
        }
    }

    /// A Redis Cluster through these seed nodes, reached with the URLs' credentials alone.
    pub fn cluster(seeds: Vec<String>) -> RedisAddress {
        RedisAddress {
            nodes: RedisNodes::Cluster(seeds),
            access: RedisAccess::default(),
        }
    }

    /// The master `master` of these Sentinels (reached with the Sentinels' own user and
    /// password, if any, and the same TLS settings as the master).
    pub fn sentinel(
        master: &str,
        sentinels: Vec<String>,
        username: Option<String>,
        password: Option<String>,
    ) -> RedisAddress {
        RedisAddress {
            nodes: RedisNodes::Sentinel(SentinelNodes {
                master: master.to_string(),
                sentinels,
                username,
                password,
            }),
            access: RedisAccess::default(),
        }
    }

    /// Whether the master is found through Sentinels.
    pub fn is_sentinel(&self) -> bool {
        matches!(self.nodes, RedisNodes::Sentinel(_))
    }

    /// The master's URL, as the Sentinels name it now: each Sentinel is asked in turn
    /// (`SENTINEL get-master-addr-by-name`), and the server it names must say it is a master
    /// (`ROLE`), so a Sentinel that has not seen a failover yet is passed over.
    ///
    /// # Errors
    /// The last error when no Sentinel names a master that answers as one.
    pub async fn sentinel_master(&self) -> RedisResult<String> {
        let RedisNodes::Sentinel(nodes) = &self.nodes else {
            return Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "not a Sentinel address",
            )));
        };
        let asking = RedisAccess {
            username: nodes.username.clone(),
            password: nodes.password.clone(),
            tls: self.access.tls.clone(),
        };
        let mut last: Option<RedisError> = None;
        for sentinel in &nodes.sentinels {
            let attempt = async {
                let client = asking.client(sentinel).map_err(config_error)?;
                let mut conn = client
                    .get_multiplexed_async_connection_with_config(&short_config())
                    .await?;
                let addr: Option<(String, u16)> = redis::cmd("SENTINEL")
                    .arg("get-master-addr-by-name")
                    .arg(&nodes.master)
                    .query_async(&mut conn)
                    .await?;
                let (host, port) = addr.ok_or_else(|| {
                    RedisError::from((
                        redis::ErrorKind::Client,
                        "the Sentinel does not know the master",
                        nodes.master.clone(),
                    ))
                })?;
                let scheme = if sentinel.starts_with("rediss://") {
                    "rediss"
                } else {
                    "redis"
                };
                let host = if host.contains(':') {
                    format!("[{host}]")
                } else {
                    host
                };
                let url = format!("{scheme}://{host}:{port}");
                let client = self.client(&url)?;
                let mut master = client
                    .get_multiplexed_async_connection_with_config(&short_config())
                    .await?;
                let role: Vec<Value> = redis::cmd("ROLE").query_async(&mut master).await?;
                let role: String = role
                    .into_iter()
                    .next()
                    .map(redis::from_redis_value)
                    .transpose()?
                    .unwrap_or_default();
                if role == "master" {
                    Ok(url)
                } else {
                    Err(RedisError::from((
                        redis::ErrorKind::Client,
                        "the server the Sentinel names is not a master (a failover under way)",
                        url,
                    )))
                }
            };
            match attempt.await {
                Ok(url) => return Ok(url),
                Err(e) => {
                    tracing::debug!(sentinel = %mask_secrets(sentinel), error = %e, "no master from this Sentinel; trying the next");
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| RedisError::from((redis::ErrorKind::Client, "no Sentinel URL"))))
    }

    /// The same Redis, reached with `access` (user, password, TLS).
    #[must_use]
    pub fn with_access(mut self, access: RedisAccess) -> RedisAddress {
        self.access = access;
        self
    }

    /// The server's URL or the cluster's seeds.
    pub fn nodes(&self) -> &RedisNodes {
        &self.nodes
    }

    /// The user, password and TLS settings.
    pub fn access(&self) -> &RedisAccess {
        &self.access
    }

    /// `url` as one server's URL, or with `cluster` as a comma-separated list of seed nodes.
    ///
    /// # Errors
    /// What is wrong with it, in a sentence (the URL masked): not a Redis URL, an empty seed,
    /// a seed that is not TCP (a cluster's nodes talk TCP), seeds of which some use TLS and
    /// some not, or a list of nodes without `cluster`.
    pub fn parse(url: &str, cluster: bool) -> Result<RedisAddress, String> {
        if !cluster {
            if url.contains(',') {
                return Err(
                    "holds a comma: a list of seed nodes needs redis.cluster = true \
                     (--redis-cluster, RECUR_REDIS__CLUSTER=true)"
                        .to_string(),
                );
            }
            check_url(url)?;
            return Ok(RedisAddress::single(url));
        }
        let seeds: Vec<String> = url.split(',').map(|s| s.trim().to_string()).collect();
        if seeds.iter().any(String::is_empty) {
            return Err(
                "with redis.cluster = true it must be a comma-separated list of seed node URLs \
                 (redis://host:port,redis://host:port), with no empty entry"
                    .to_string(),
            );
        }
        for seed in &seeds {
            check_url(seed)?;
            if !(seed.starts_with("redis://") || seed.starts_with("rediss://")) {
                return Err(format!(
                    "seed `{}` is not a redis:// or rediss:// URL: the nodes of a Redis \
                     Cluster are reached over TCP",
                    mask_secrets(seed)
                ));
            }
        }
        let tls = seeds.iter().filter(|s| s.starts_with("rediss://")).count();
        if tls != 0 && tls != seeds.len() {
            return Err(
                "mixes rediss:// and redis:// seeds: a cluster's nodes all use TLS or none does"
                    .to_string(),
            );
        }
        Ok(RedisAddress::cluster(seeds))
    }

    /// Whether this is a cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.nodes, RedisNodes::Cluster(_))
    }

    /// The URLs to try, in order: the server's, or each seed's.
    pub fn urls(&self) -> Vec<&str> {
        match &self.nodes {
            RedisNodes::Single(url) => vec![url.as_str()],
            RedisNodes::Cluster(seeds) => seeds.iter().map(String::as_str).collect(),
            RedisNodes::Sentinel(s) => s.sentinels.iter().map(String::as_str).collect(),
        }
    }

    /// Whether the URLs are `rediss://` (TLS).
    pub fn uses_tls(&self) -> bool {
        self.urls().iter().any(|u| u.starts_with("rediss://"))
    }

    /// A client for one server's URL (of this address), with the credentials and certificates.
    ///
    /// # Errors
    /// The redis crate's error when the URL is invalid or a certificate file cannot be used.
    pub fn client(&self, url: &str) -> RedisResult<redis::Client> {
        self.access.client(url).map_err(|problem| {
            RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "cannot set up the connection",
                problem.to_string(),
            ))
        })
    }

    /// Connects once to the server (to each seed of a cluster in turn, until one answers) and
    /// PINGs, without retrying: start-up and `recur admin` call this first, so that a wrong
    /// certificate, password or address stops them with one clear line.
    ///
    /// # Errors
    /// The [`ConnectError`] of the server, or of the first seed when no seed answers.
    pub async fn check(&self) -> Result<(), ConnectError> {
        if self.is_sentinel() {
            // The Sentinels name the master; then the master itself is checked like a server.
            let master = self.sentinel_master().await.map_err(|e| {
                ConnectError::new(
                    &self.urls().join(","),
                    Problem::Config(format!(
                        "no Sentinel names a master that answers: {}",
                        mask_secrets(&e.to_string())
                    )),
                )
            })?;
            return self.access.check(&master, CONNECT_TIMEOUT).await;
        }
        let mut first = None;
        for url in self.urls() {
            match self.access.check(url, CONNECT_TIMEOUT).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if self.is_cluster() {
                        tracing::debug!(seed = %mask_secrets(url), error = %e, "seed node does not answer; trying the next");
                    }
                    first.get_or_insert(e);
                }
            }
        }
        Err(first
            .unwrap_or_else(|| ConnectError::new("", Problem::Config("no Redis URL".to_string()))))
    }

    /// A reconnecting connection for the store: `response_timeout` bounds one reply (big
    /// pipelines, or a blocking read, need a long one).
    ///
    /// # Errors
    /// The Redis error when a URL is invalid or Redis (no seed of a cluster) does not answer.
    pub async fn connect(&self, response_timeout: Duration) -> RedisResult<RedisConn> {
        match &self.nodes {
            RedisNodes::Single(url) => {
                let client = self.client(url)?;
                let config = ConnectionManagerConfig::new()
                    .set_response_timeout(Some(response_timeout))
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_number_of_retries(6);
                Ok(RedisConn::new(
                    ConnectionManager::new_with_config(client, config).await?,
                ))
            }
            RedisNodes::Cluster(_) => {
                let client = self.cluster_client(response_timeout)?;
                let conn = client.get_async_connection().await?;
                Ok(RedisConn {
                    inner: Inner::Cluster(ClusterConn::new(
                        conn,
                        Some(client),
                        CLUSTER_REQUEST_BOUND,
                    )),
                })
            }
            RedisNodes::Sentinel(_) => {
                let conn = SentinelConn {
                    shared: Arc::new(SentinelShared {
                        address: self.clone(),
                        response_timeout,
                        current: tokio::sync::Mutex::new(None),
                    }),
                };
                // Connected now, so that start-up fails if no master can be found.
                conn.connection().await?;
                Ok(RedisConn {
                    inner: Inner::Sentinel(conn),
                })
            }
        }
    }

    /// The cluster client: every node, including those learned from the slot map and from
    /// redirects, is reached with the same user, password and TLS settings.
    fn cluster_client(&self, response_timeout: Duration) -> RedisResult<ClusterClient> {
        let problem = |p: Problem| {
            RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "cannot set up the connection",
                p.to_string(),
            ))
        };
        let infos = self
            .urls()
            .into_iter()
            .map(|url| self.access.connection_info(url))
            .collect::<RedisResult<Vec<_>>>()?;
        let mut builder = ClusterClient::builder(infos)
            .connection_timeout(CONNECT_TIMEOUT)
            .response_timeout(response_timeout);
        if self.uses_tls() {
            if let Some(certificates) = self.access.certificates().map_err(problem)? {
                builder = builder.certs(certificates);
            }
            if self.access.tls.insecure {
                builder = builder.tls(redis::TlsMode::Insecure);
            }
        }
        builder.build()
    }

    /// A pub/sub connection. On a cluster, to the first seed that answers: a classic PUBLISH on
    /// any node reaches the subscribers of every node.
    ///
    /// # Errors
    /// The last seed's error when none answers.
    pub async fn pubsub(&self) -> RedisResult<redis::aio::PubSub> {
        if self.is_sentinel() {
            let master = self.sentinel_master().await?;
            let client = self.client(&master)?;
            return tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
                .await
                .map_err(|_| {
                    RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!(
                            "no answer from {} within {CONNECT_TIMEOUT:?}",
                            mask_secrets(&master)
                        ),
                    ))
                })?;
        }
        let mut last = None;
        for url in self.urls() {
            let attempt = async {
                let client = self.client(url)?;
                tokio::time::timeout(CONNECT_TIMEOUT, client.get_async_pubsub())
                    .await
                    .map_err(|_| {
                        RedisError::from(std::io::Error::new(
                            std::io::ErrorKind::TimedOut,
                            format!(
                                "no answer from {} within {CONNECT_TIMEOUT:?}",
                                mask_secrets(url)
                            ),
                        ))
                    })?
            };
            match attempt.await {
                Ok(p) => return Ok(p),
                Err(e) => {
                    if self.is_cluster() {
                        tracing::debug!(seed = %mask_secrets(url), error = %e, "seed node does not answer; trying the next");
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| RedisError::from((redis::ErrorKind::Client, "no Redis URL"))))
    }
}

/// The URL (or `cluster` and the seeds), passwords masked.
impl fmt::Display for RedisAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.nodes {
            RedisNodes::Single(url) => f.write_str(&mask_secrets(url)),
            RedisNodes::Cluster(seeds) => write!(f, "cluster {}", mask_secrets(&seeds.join(","))),
            RedisNodes::Sentinel(s) => write!(
                f,
                "master {} of Sentinels {}",
                s.master,
                mask_secrets(&s.sentinels.join(","))
            ),
        }
    }
}

impl fmt::Debug for RedisAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisAddress")
            .field("nodes", &self.to_string())
            .field("access", &self.access)
            .finish()
    }
}

/// A connection that gives up quickly: asking a Sentinel, checking a master's role.
fn short_config() -> redis::AsyncConnectionConfig {
    redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(CONNECT_TIMEOUT))
}

fn config_error(problem: Problem) -> RedisError {
    RedisError::from((
        redis::ErrorKind::InvalidClientConfig,
        "cannot set up the connection",
        problem.to_string(),
    ))
}

fn check_url(url: &str) -> Result<(), String> {
    redis::IntoConnectionInfo::into_connection_info(url)
        .map(|_| ())
        .map_err(|e| format!("`{}` is not a Redis URL: {e}", mask_secrets(url)))
}

/// A connection whose calls survive a dropped connection, to one server or a cluster. Cheap to
/// clone (clones share the connection).
#[derive(Clone)]
pub struct RedisConn {
    inner: Inner,
}

#[derive(Clone)]
enum Inner {
    Single(ConnectionManager),
    /// The cluster connection, replaced when it stops answering (see [`ClusterConn`]).
    Cluster(ClusterConn),
    Sentinel(SentinelConn),
}

/// A connection to the master the Sentinels name, found again after a failover.
#[derive(Clone)]
struct SentinelConn {
    shared: Arc<SentinelShared>,
}

struct SentinelShared {
    address: RedisAddress,
    response_timeout: Duration,
    /// The master's URL and the connection to it; `None` after a failure: the next call asks
    /// the Sentinels again.
    current: tokio::sync::Mutex<Option<(String, redis::aio::MultiplexedConnection)>>,
}

/// The pauses between attempts through Sentinel: a failover takes seconds (the Sentinels'
/// `down-after-milliseconds`, then an election), so 100 ms doubling up to 3.2 s, 6.3 s in all.
fn sentinel_pauses() -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(100u64), |ms| Some(ms * 2))
        .take_while(|ms| *ms <= 3_200)
        .map(Duration::from_millis)
}

/// Whether a failure through Sentinel means the master went away (then ask the Sentinels
/// again): a dropped or refused connection, a timeout, or a server that is no master any more.
fn is_failover(e: &RedisError) -> bool {
    is_reconnectable(e)
        || e.is_timeout()
        || matches!(e.code(), Some("READONLY" | "MASTERDOWN" | "LOADING"))
}

impl SentinelConn {
    /// The connection to the current master, asking the Sentinels when there is none.
    async fn connection(&self) -> RedisResult<redis::aio::MultiplexedConnection> {
        let mut current = self.shared.current.lock().await;
        if let Some((_, conn)) = current.as_ref() {
            return Ok(conn.clone());
        }
        let url = self.shared.address.sentinel_master().await?;
        let client = self.shared.address.client(&url)?;
        let conn = client
            .get_multiplexed_async_connection_with_config(
                &redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(self.shared.response_timeout)),
            )
            .await?;
        tracing::info!(master = %mask_secrets(&url), "connected to the master the Sentinels name");
        *current = Some((url, conn.clone()));
        Ok(conn)
    }

    /// Forgets the connection after a failure that means the master went away.
    async fn forget(&self) {
        *self.shared.current.lock().await = None;
    }
}

/// Runs `$call` on the Sentinel connection's master until it succeeds, fails for another
/// reason than a failover, or the pauses run out; the Sentinels are asked again after each
/// failover-like failure.
macro_rules! through_sentinel {
    ($sentinel:expr, |$conn:ident| $call:expr) => {{
        let mut pauses = sentinel_pauses();
        loop {
            let result = match $sentinel.connection().await {
                Ok(mut $conn) => $call.await,
                Err(e) => Err(e),
            };
            match result {
                Err(e) if is_failover(&e) => {
                    $sentinel.forget().await;
                    match pauses.next() {
                        Some(pause) => tokio::time::sleep(pause).await,
                        None => break Err(e),
                    }
                }
                result => break result,
            }
        }
    }};
}

impl RedisConn {
    /// Wraps a connection manager (one server).
    pub fn new(inner: ConnectionManager) -> RedisConn {
        RedisConn {
            inner: Inner::Single(inner),
        }
    }

    /// Wraps a cluster connection (not replaced when it stops answering: there is no client
    /// to make another; [`RedisAddress::connect`] makes one that is).
    pub fn cluster(inner: ClusterConnection) -> RedisConn {
        RedisConn {
            inner: Inner::Cluster(ClusterConn::new(inner, None, CLUSTER_REQUEST_BOUND)),
        }
    }

    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self.inner, Inner::Cluster(..))
    }

    /// One SCAN step over the keys matching `pattern`, on every server holding keys: the one
    /// server, or each master of a cluster. `cursors` is empty at the start; the keys of the
    /// step are returned with the cursors to pass next, empty when the scan is done.
    ///
    /// # Errors
    /// The Redis error.
    pub async fn scan_step(
        &mut self,
        pattern: &str,
        cursors: &[(String, u64)],
    ) -> RedisResult<(Vec<String>, Vec<(String, u64)>)> {
        let scan = |cursor: u64| {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1000);
            cmd
        };
        let mut found = Vec::new();
        let mut next = Vec::new();
        let cluster = match &self.inner {
            Inner::Single(_) | Inner::Sentinel(_) => None,
            Inner::Cluster(c) => Some(c.conn()),
        };
        match cluster {
            None => {
                let cursor = cursors.first().map_or(0, |(_, c)| *c);
                let (cursor, keys): (u64, Vec<String>) = scan(cursor).query_async(self).await?;
                found = keys;
                if cursor != 0 {
                    next.push((String::new(), cursor));
                }
            }
            Some(mut conn) => {
                // The first step asks every master (and learns their addresses); the next ones
                // go on where each master left off.
                let pages: Vec<(String, Value)> = if cursors.is_empty() {
                    let all = RoutingInfo::MultiNode((MultipleNodeRoutingInfo::AllMasters, None));
                    match conn.route_command(scan(0), all).await? {
                        Value::Map(rows) => rows
                            .into_iter()
                            .map(|(addr, page)| {
                                Ok((redis::from_redis_value::<String>(addr)?, page))
                            })
                            .collect::<RedisResult<_>>()?,
                        other => {
                            return Err(RedisError::from((
                                redis::ErrorKind::UnexpectedReturnType,
                                "SCAN on every master",
                                format!("{other:?}"),
                            )))
                        }
                    }
                } else {
                    let mut pages = Vec::with_capacity(cursors.len());
                    for (addr, cursor) in cursors {
                        let (host, port) = addr
                            .rsplit_once(':')
                            .and_then(|(h, p)| Some((h.to_string(), p.parse::<u16>().ok()?)))
                            .ok_or_else(|| {
                                RedisError::from((
                                    redis::ErrorKind::Client,
                                    "not a node address",
                                    addr.clone(),
                                ))
                            })?;
                        let node = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress {
                            host,
                            port,
                        });
                        pages.push((addr.clone(), conn.route_command(scan(*cursor), node).await?));
                    }
                    pages
                };
                for (addr, page) in pages {
                    let (cursor, keys): (u64, Vec<String>) = redis::from_redis_value(page)?;
                    found.extend(keys);
                    if cursor != 0 {
                        next.push((addr, cursor));
                    }
                }
            }
        }
        Ok((found, next))
    }
}

/// Whether `e` means the connection was lost (or not back yet), not that Redis refused the
/// command: then the same call may succeed on the reconnected connection.
pub fn is_reconnectable(e: &RedisError) -> bool {
    e.is_connection_dropped() || e.is_connection_refusal()
}

/// The pauses between attempts: 50, 100, 200, 400, 800 ms.
pub fn retry_pauses() -> impl Iterator<Item = Duration> {
    std::iter::successors(Some(RETRY_FIRST_MS), |ms| Some(ms * 2))
        .take_while(|ms| *ms <= RETRY_LAST_MS)
        .map(Duration::from_millis)
}

/// Runs `$call` (an expression giving a future of a RedisResult) until it succeeds, fails for
/// another reason than a lost connection, or the pauses run out.
macro_rules! with_retry {
    ($call:expr) => {{
        let mut pauses = retry_pauses();
        loop {
            match $call.await {
                Err(e) if is_reconnectable(&e) => match pauses.next() {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => break Err(e),
                },
                result => break result,
            }
        }
    }};
}

impl RedisConn {
    /// Sends `pipeline` (not a transaction) followed by `WAIT`: on one server one WAIT after
    /// every command; on a cluster one after the commands of each hash slot, in the same
    /// sub-pipeline, so it reaches the master those commands went to over the same connection
    /// (WAIT counts the replicas that have every write of its connection so far). Returns each
    /// command's reply and, for each command, how many replicas the WAIT after it answered
    /// (`-1` for a command sent alone, which no WAIT follows: a keyless or multi-slot command).
    ///
    /// A WAIT confirms the writes *of its connection* only; a command that only read (a kept
    /// reply found, a version refused) is confirmed by it only if a write of the same connection
    /// follows the read (recur's scripts write their lease back, `SET ... KEEPTTL`, for that).
    ///
    /// # Errors
    /// The Redis error when the pipeline fails as a whole.
    pub async fn query_waited(
        &mut self,
        pipeline: &Pipeline,
        wait: WaitFor,
    ) -> RedisResult<(Vec<Value>, Vec<i64>)> {
        match &mut self.inner {
            Inner::Single(c) => {
                let mut waited = pipeline.clone();
                waited.add_command(wait.cmd());
                let n = waited.len();
                let mut values = with_retry!(c.req_packed_commands(&waited, 0, n))?;
                let replicas = values.pop().as_ref().map_or(-1, replicas_of);
                Ok((values, vec![replicas; pipeline.len()]))
            }
            Inner::Sentinel(s) => {
                let mut waited = pipeline.clone();
                waited.add_command(wait.cmd());
                let n = waited.len();
                let mut values = through_sentinel!(s, |c| c.req_packed_commands(&waited, 0, n))?;
                let replicas = values.pop().as_ref().map_or(-1, replicas_of);
                Ok((values, vec![replicas; pipeline.len()]))
            }
            Inner::Cluster(c) => per_slot(c, pipeline, Some(wait)).await,
        }
    }
}

impl ConnectionLike for RedisConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(async move {
            match &mut self.inner {
                Inner::Single(c) => with_retry!(c.req_packed_command(cmd)),
                Inner::Cluster(c) => {
                    with_retry!(
                        c.request(|mut conn| async move { conn.req_packed_command(cmd).await })
                    )
                }
                Inner::Sentinel(s) => through_sentinel!(s, |c| c.req_packed_command(cmd)),
            }
        })
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(async move {
            match &mut self.inner {
                Inner::Single(c) => with_retry!(c.req_packed_commands(pipeline, offset, count)),
                Inner::Sentinel(s) => {
                    through_sentinel!(s, |c| c.req_packed_commands(pipeline, offset, count))
                }
                Inner::Cluster(c) if pipeline.is_transaction() => {
                    with_retry!(c.request(|mut conn| async move {
                        conn.req_packed_commands(pipeline, offset, count).await
                    }))
                }
                Inner::Cluster(c) => per_slot(c, pipeline, None).await.map(|(values, _)| values),
            }
        })
    }

    fn get_db(&self) -> i64 {
        match &self.inner {
            Inner::Single(c) => c.get_db(),
            Inner::Cluster(c) => c.conn().get_db(),
            Inner::Sentinel(_) => 0,
        }
    }
}

/// A part of a pipeline bound for one slot (or one command the cluster client routes itself):
/// the positions of its commands in the pipeline, and the sub-pipeline.
struct Part {
    at: Vec<usize>,
    pipeline: Pipeline,
    /// Sent as a single command (keyless, or a multi-key command the client splits).
    single: bool,
}

/// Sends a non-transaction pipeline over a cluster: one sub-pipeline per hash slot, all at once,
/// each retried on its own after a lost connection; the replies in the pipeline's order. With
/// `wait`, each slot's sub-pipeline ends with that WAIT (sent with it, so to the same master
/// over the same connection): the second vector says, per command, how many replicas the
/// WAIT of its sub-pipeline answered (`-1` for a command sent alone).
async fn per_slot(
    cluster: &ClusterConn,
    pipeline: &Pipeline,
    wait: Option<WaitFor>,
) -> RedisResult<(Vec<Value>, Vec<i64>)> {
    let mut parts: Vec<Part> = Vec::new();
    let mut by_slot: HashMap<Route, usize> = HashMap::new();
    for (i, cmd) in pipeline.cmd_iter().enumerate() {
        let slot = slot_key(cmd).map(|key| Route::with_key(key, SlotAddr::Master));
        let part = match slot {
            Some(route) => *by_slot.entry(route).or_insert_with(|| {
                parts.push(Part {
                    at: Vec::new(),
                    pipeline: Pipeline::new(),
                    single: false,
                });
                parts.len() - 1
            }),
            None => {
                parts.push(Part {
                    at: Vec::new(),
                    pipeline: Pipeline::new(),
                    single: true,
                });
                parts.len() - 1
            }
        };
        parts[part].at.push(i);
        parts[part].pipeline.add_command(cmd.clone());
    }
    if let Some(wait) = wait {
        for part in parts.iter_mut().filter(|p| !p.single) {
            part.pipeline.add_command(wait.cmd());
        }
    }
    let sent = parts.iter().map(|part| async move {
        if part.single {
            let cmd = part.pipeline.cmd_iter().next().expect("one command");
            with_retry!(
                cluster.request(|mut conn| async move { conn.req_packed_command(cmd).await })
            )
            .map(|v| vec![v])
        } else {
            let n = part.pipeline.len();
            with_retry!(cluster.request(|mut conn| async move {
                conn.req_packed_commands(&part.pipeline, 0, n).await
            }))
        }
    });
    let replies = futures_util::future::join_all(sent).await;
    let mut out = vec![Value::Nil; pipeline.len()];
    let mut confirmed = vec![-1; pipeline.len()];
    for (part, values) in parts.iter().zip(replies) {
        let mut values = values?;
        let replicas = if wait.is_some() && !part.single {
            values.pop().as_ref().map_or(-1, replicas_of)
        } else {
            -1
        };
        for &i in &part.at {
            confirmed[i] = replicas;
        }
        if values.len() != part.at.len() {
            return Err(RedisError::from((
                redis::ErrorKind::UnexpectedReturnType,
                "a sub-pipeline got another number of replies than it has commands",
            )));
        }
        for (&i, v) in part.at.iter().zip(values) {
            out[i] = v;
        }
    }
    Ok((out, confirmed))
}

/// The key a command's hash slot comes from (only to group a pipeline by slot; the cluster
/// client routes each part itself). None for a keyless command and for a multi-key command that
/// the cluster client splits by slot on its own (sent alone).
fn slot_key(cmd: &Cmd) -> Option<&[u8]> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|a| match a {
            Arg::Simple(s) => Some(s),
            _ => None,
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    match name.as_slice() {
        b"EVAL" | b"EVALSHA" | b"EVAL_RO" | b"EVALSHA_RO" | b"FCALL" | b"FCALL_RO" => {
            let keys: usize = std::str::from_utf8(args.get(2)?).ok()?.parse().ok()?;
            if keys == 0 {
                None
            } else {
                args.get(3).copied()
            }
        }
        b"XREAD" | b"XREADGROUP" => {
            let at = args
                .iter()
                .position(|a| a.eq_ignore_ascii_case(b"STREAMS"))?;
            args.get(at + 1).copied()
        }
        b"XGROUP" | b"XINFO" | b"OBJECT" | b"MEMORY" => args.get(2).copied(),
        b"MGET" | b"MSET" | b"DEL" | b"UNLINK" | b"EXISTS" | b"TOUCH" | b"PING" | b"INFO"
        | b"SCRIPT" | b"CONFIG" | b"CLUSTER" | b"TIME" | b"WAIT" | b"DBSIZE" | b"SCAN"
        | b"KEYS" | b"FLUSHALL" | b"FLUSHDB" | b"ECHO" => None,
        _ => args.get(1).copied(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_are_bounded_and_back_off() {
        let pauses: Vec<u64> = retry_pauses().map(|d| d.as_millis() as u64).collect();
        assert_eq!(pauses, [50, 100, 200, 400, 800]);
        assert!(pauses.iter().sum::<u64>() < 2_000);
    }

    #[test]
    fn only_lost_connections_are_retried() {
        let io = |kind| RedisError::from(std::io::Error::new(kind, "x"));
        assert!(is_reconnectable(&io(std::io::ErrorKind::BrokenPipe)));
        assert!(is_reconnectable(&io(std::io::ErrorKind::ConnectionReset)));
        assert!(is_reconnectable(&io(std::io::ErrorKind::ConnectionRefused)));
        let unreadable = RedisError::from((redis::ErrorKind::Parse, "bad reply"));
        assert!(!is_reconnectable(&unreadable));
    }

    #[test]
    fn addresses_parse_with_and_without_cluster() {
        assert_eq!(
            RedisAddress::parse("redis://127.0.0.1:6380/0", false),
            Ok(RedisAddress::single("redis://127.0.0.1:6380/0"))
        );
        assert_eq!(
            RedisAddress::parse("redis://a:7000, redis://b:7001", true),
            Ok(RedisAddress::cluster(vec![
                "redis://a:7000".into(),
                "redis://b:7001".into()
            ]))
        );
        let mixed = RedisAddress::parse("rediss://a:7000,redis://b:7001", true).unwrap_err();
        assert!(mixed.contains("all use TLS or none"), "{mixed}");
        let secret =
            RedisAddress::parse("redis://u:s3cret@a:7000,redis://u:s3cret@b:7000", true).unwrap();
        assert_eq!(
            secret.to_string(),
            "cluster redis://u:***@a:7000,redis://u:***@b:7000"
        );
        assert!(!format!("{secret:?}").contains("s3cret"));
        let bad = RedisAddress::parse("http://u:s3cret@a", false).unwrap_err();
        assert!(!bad.contains("s3cret"), "{bad}");
        let one = RedisAddress::parse("redis://a:7000", true).unwrap();
        assert!(one.is_cluster());
        assert_eq!(one.to_string(), "cluster redis://a:7000");
        let comma = RedisAddress::parse("redis://a:7000,redis://b:7001", false).unwrap_err();
        assert!(comma.contains("redis.cluster = true"), "{comma}");
        let empty = RedisAddress::parse("redis://a:7000,", true).unwrap_err();
        assert!(empty.contains("no empty entry"), "{empty}");
        let unix = RedisAddress::parse("redis+unix:///tmp/r.sock", true).unwrap_err();
        assert!(unix.contains("over TCP"), "{unix}");
        let bad = RedisAddress::parse("http://nope", true).unwrap_err();
        assert!(bad.contains("not a Redis URL"), "{bad}");
    }

    fn key_of(cmd: &Cmd) -> Option<String> {
        slot_key(cmd).map(|k| String::from_utf8_lossy(k).into_owned())
    }

    #[test]
    fn pipelines_are_grouped_by_the_slot_of_each_command_key() {
        let mut evalsha = redis::cmd("EVALSHA");
        evalsha
            .arg("sha")
            .arg(2)
            .arg("t:{p1}:order:o")
            .arg("t:{p1}:timers");
        assert_eq!(key_of(&evalsha).as_deref(), Some("t:{p1}:order:o"));
        let mut keyless = redis::cmd("EVAL");
        keyless.arg("return 1").arg(0);
        assert_eq!(key_of(&keyless), None);
        let mut read = redis::cmd("XREADGROUP");
        read.arg("GROUP")
            .arg("g")
            .arg("c")
            .arg("COUNT")
            .arg(1)
            .arg("STREAMS")
            .arg("t:commands")
            .arg(">");
        assert_eq!(key_of(&read).as_deref(), Some("t:commands"));
        let mut group = redis::cmd("XGROUP");
        group.arg("CREATE").arg("t:commands").arg("g").arg("$");
        assert_eq!(key_of(&group).as_deref(), Some("t:commands"));
        let mut zrange = redis::cmd("ZRANGE");
        zrange.arg("t:{p2}:timers").arg(0).arg(0);
        assert_eq!(key_of(&zrange).as_deref(), Some("t:{p2}:timers"));
        // The cluster client splits these by slot itself: sent alone.
        let mut del = redis::cmd("DEL");
        del.arg("t:{p1}:a").arg("t:{p2}:b");
        assert_eq!(key_of(&del), None);
        assert_eq!(key_of(&redis::cmd("PING")), None);
    }
}
