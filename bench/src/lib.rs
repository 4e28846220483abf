//! recur's benchmarks: scenarios that measure the daemon against a private redis-server they
//! start themselves. The daemon under test is the real `recur serve` binary as a child process,
//! so its RSS is its own; the bench process seeds Redis directly (through the daemon's own
//! commit script, with orders built by the pure `domain::create` at a chosen `now`) so the
//! measurement covers the scenario, not the seeding.
//!
//! A crate of its own, outside the daemon's library: `recur-bench <scenario>` (or
//! `recur bench <scenario>`, which runs it). One module per scenario; each prints one line of
//! figures. [`run`] dispatches by name.

pub mod admin;
pub mod bullmq;
pub mod burst;
pub mod cluster;
pub mod forecast;
pub mod http;
pub mod memory;
pub mod recovery;
pub mod shapes;
pub mod sizing;
pub mod steady;
pub mod testclock;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant as WallInstant};

use serde_json::{json, Value};

use recur::admin::client::{AdminClient, RequestOptions};
use recur::domain::command::{parse_args, Command, CreateOrderArgs, NewOrder};
use recur::domain::stats::contribution;
use recur::domain::time::{parse_instant, to_millis, Instant};
use recur::domain::{self, Policy};
use recur::metrics::Metrics;
use recur::store::embedded::{EmbeddedOptions, EmbeddedRedis};
use recur::store::stats::Delta;
use recur::store::{
    self, Commit, CommitterConfig, Keys, OrderWrite, RedisAddress, RedisNodes, Store,
    DEFAULT_PARTITIONS,
};

pub use burst::{burst, burst_end, BurstOptions, BurstReport};

/// The simulated instant the simulated-clock benches start at.
pub const BENCH_START: &str = "2026-01-01T00:00:00Z";
/// Key prefix of every bench.
pub const PREFIX: &str = "bench";
/// The scenarios [`run`] knows.
pub const SCENARIOS: [&str; 12] = [
    "burst",
    "burst-end",
    "steady",
    "recovery",
    "admin",
    "memory",
    "forecast",
    "sizing",
    "testclock",
    "http",
    "bullmq",
    "shapes",
];

/// Why a bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Setup(String),
}

pub(crate) fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> BenchError + '_ {
    move |e| BenchError::Setup(format!("{what}: {e}"))
}

/// What `recur bench` was asked for.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// N; `None` = the scenario's default.
    pub orders: Option<usize>,
    /// The `recur` binary to run as the daemon (normally the current executable).
    pub binary: PathBuf,
    /// BullMQ worker concurrency (`bullmq` scenario).
    pub peer_concurrency: Option<usize>,
    /// Run Redis as a private 3-master Redis Cluster (`burst`, `burst-end`).
    pub cluster: bool,
    /// How many daemons share the work (`burst`, `burst-end`; default 1).
    pub daemons: usize,
    /// `burst`: deliver every event to a webhook endpoint that answers 200, or to one that is
    /// down.
    pub webhook: Option<burst::WebhookTarget>,
    /// Run Redis on a loopback TCP port with one local replica (`burst`, `burst-end`): what
    /// `redis.wait_replicas` waits for (`RECUR_REDIS__WAIT_REPLICAS=1` in the environment).
    pub replica: bool,
    /// `http`: requests per command, way and phase (`None` = its default).
    pub requests: Option<usize>,
    /// `http`: concurrent HTTP connections, and pub/sub requests in flight.
    pub connections: Option<usize>,
    /// `http`: requests per second of the fixed-rate phases.
    pub rate: Option<u32>,
}

/// Runs the scenario `name` and returns its line of figures.
///
/// # Errors
/// [`BenchError`] for an unknown scenario or when a step fails.
pub async fn run(name: &str, opts: &RunOptions) -> Result<String, BenchError> {
    let n = |default: usize| opts.orders.unwrap_or(default);
    let bursts = |orders: usize| BurstOptions {
        cluster: opts.cluster,
        replica: opts.replica,
        daemons: opts.daemons.max(1),
        webhook: opts.webhook,
        ..BurstOptions::new(orders, &opts.binary)
    };
    if opts.daemons > 1 && !matches!(name, "burst" | "burst-end") {
        return Err(BenchError::Setup(format!(
            "--daemons runs burst and burst-end only, not `{name}`"
        )));
    }
    if opts.webhook.is_some() && name != "burst" {
        return Err(BenchError::Setup(format!(
            "--webhook runs burst only, not `{name}`"
        )));
    }
    if opts.cluster && !matches!(name, "burst" | "burst-end") {
        return Err(BenchError::Setup(format!(
            "--cluster runs burst and burst-end only, not `{name}`"
        )));
    }
    if opts.replica && !matches!(name, "burst" | "burst-end") {
        return Err(BenchError::Setup(format!(
            "--replica runs burst and burst-end only, not `{name}`"
        )));
    }
    if (opts.requests.is_some() || opts.connections.is_some() || opts.rate.is_some())
        && name != "http"
    {
        return Err(BenchError::Setup(format!(
            "--requests, --connections and --rate run http only, not `{name}`"
        )));
    }
    if opts.orders.is_some() && name == "http" {
        return Err(BenchError::Setup(
            "http creates its orders as it goes: give --requests, not --orders".into(),
        ));
    }
    if opts.replica && opts.cluster {
        return Err(BenchError::Setup(
            "--replica is one server with a replica; --cluster has none".into(),
        ));
    }
    match name {
        "burst" => Ok(burst(&bursts(n(100_000))).await?.line()),
        "burst-end" => Ok(burst_end(&bursts(n(100_000))).await?.line()),
        "steady" => Ok(
            steady::run(&steady::SteadyOptions::new(n(10_000), &opts.binary))
                .await?
                .line(),
        ),
        "recovery" => Ok(
            recovery::run(&recovery::RecoveryOptions::new(n(100_000), &opts.binary))
                .await?
                .line(),
        ),
        "admin" => Ok(
            admin::run(&admin::AdminOptions::new(n(100_000), &opts.binary))
                .await?
                .line(),
        ),
        "memory" => Ok(
            memory::run(&memory::MemoryOptions::new(n(1_000_000), &opts.binary))
                .await?
                .line(),
        ),
        "forecast" => Ok(forecast::run(&forecast::ForecastOptions::new(
            n(1_000_000),
            &opts.binary,
        ))
        .await?
        .line()),
        "sizing" => Ok(
            sizing::run(&sizing::SizingOptions::new(n(10_000), &opts.binary))
                .await?
                .line(),
        ),
        "testclock" => Ok(testclock::run(&testclock::TestClockOptions::new(
            n(10_000),
            &opts.binary,
        ))
        .await?
        .line()),
        "http" => {
            let mut o =
                http::HttpOptions::new(opts.requests.unwrap_or(http::REQUESTS), &opts.binary);
            o.connections = opts.connections.unwrap_or(http::CONNECTIONS);
            o.rate = opts.rate.unwrap_or(http::RATE);
            Ok(http::run(&o).await?.text())
        }
        "shapes" => shapes::run(n(100_000), 3).await,
        "bullmq" | "compare" => {
            let mut o = bullmq::CompareOptions::new(n(100_000), &opts.binary);
            if let Some(c) = opts.peer_concurrency {
                o.concurrencies = vec![c];
            }
            bullmq::compare(&o).await
        }
        other => Err(BenchError::Setup(format!(
            "unknown scenario `{other}` (available: {})",
            SCENARIOS.join(", ")
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Redis

/// A private redis-server for one bench: the embedded one (unix socket), or one on a free
/// loopback TCP port (for peers that need TCP, and to run recur on the same kind of server), or
/// a private 3-master Redis Cluster.
pub enum BenchRedis {
    Unix(EmbeddedRedis),
    Tcp(TcpRedis),
    Cluster(cluster::LocalCluster),
    /// A TCP master and its replica (`--replica`).
    Replicated {
        master: TcpRedis,
        replica: TcpRedis,
    },
}

impl BenchRedis {
    /// Starts a private server with its data under `dir` (append-only, like the embedded one).
    ///
    /// # Errors
    /// [`BenchError`] when redis-server cannot be started.
    pub async fn start(dir: &Path, tcp: bool) -> Result<BenchRedis, BenchError> {
        BenchRedis::start_with(dir, tcp, true).await
    }

    /// As [`BenchRedis::start`], append-only (`appendfsync everysec`) or not (`aof`).
    ///
    /// # Errors
    /// [`BenchError`] when redis-server cannot be started.
    pub async fn start_with(dir: &Path, tcp: bool, aof: bool) -> Result<BenchRedis, BenchError> {
        if tcp {
            return Ok(BenchRedis::Tcp(TcpRedis::start_with(dir, aof).await?));
        }
        let server = EmbeddedRedis::start(&EmbeddedOptions {
            binary: PathBuf::from("redis-server"),
            data_dir: dir.to_path_buf(),
            appendonly: aof,
        })
        .await
        .map_err(setup("redis-server"))?;
        Ok(BenchRedis::Unix(server))
    }

    /// A TCP master with its data under `dir/master` and one replica of it under
    /// `dir/replica`, once the replica is synchronized.
    ///
    /// # Errors
    /// [`BenchError`] when either cannot be started.
    pub async fn start_replicated(dir: &Path, aof: bool) -> Result<BenchRedis, BenchError> {
        let master = TcpRedis::start_with(&dir.join("master"), aof).await?;
        let replica = TcpRedis::start_replica(&dir.join("replica"), &master, aof).await?;
        Ok(BenchRedis::Replicated { master, replica })
    }

    /// With a replica: until it has everything the master has (after seeding, so that the
    /// measurement does not share the replica with its catching up).
    ///
    /// # Errors
    /// [`BenchError`] when it does not catch up within 10 minutes.
    pub async fn wait_replica_caught_up(&self) -> Result<(), BenchError> {
        match self {
            BenchRedis::Replicated { master, .. } => master.wait_replicas_caught_up().await,
            _ => Ok(()),
        }
    }

    /// Starts a private 3-master Redis Cluster with its nodes' data under `dir`.
    ///
    /// # Errors
    /// [`BenchError`] when the cluster cannot be started.
    pub async fn start_cluster(dir: &Path) -> Result<BenchRedis, BenchError> {
        Ok(BenchRedis::Cluster(
            cluster::LocalCluster::start(dir, 3).await?,
        ))
    }

    /// The URL for the redis crate (a cluster's seed nodes, comma-separated).
    pub fn url(&self) -> String {
        match self {
            BenchRedis::Unix(s) => s.url(),
            BenchRedis::Tcp(s) | BenchRedis::Replicated { master: s, .. } => s.url(),
            BenchRedis::Cluster(c) => c.seeds(),
        }
    }

    /// recur's address of it.
    pub fn address(&self) -> RedisAddress {
        match self {
            BenchRedis::Cluster(c) => c.address(),
            other => RedisAddress::single(other.url()),
        }
    }

    /// Each server's own URL (one, or every node of the cluster), for per-server commands.
    pub fn server_urls(&self) -> Vec<String> {
        match self {
            BenchRedis::Cluster(c) => c.node_urls(),
            other => vec![other.url()],
        }
    }

    /// The server's pid (a cluster's first node).
    pub fn pid(&self) -> u32 {
        self.pids().first().copied().unwrap_or_default()
    }

    /// Every server's pid.
    pub fn pids(&self) -> Vec<u32> {
        match self {
            BenchRedis::Unix(s) => vec![s.pid()],
            BenchRedis::Tcp(s) => vec![s.pid],
            BenchRedis::Cluster(c) => c.pids(),
            BenchRedis::Replicated { master, replica } => vec![master.pid, replica.pid],
        }
    }

    /// How it is reached, for the report: unix, tcp or cluster3.
    pub fn kind(&self) -> &'static str {
        match self {
            BenchRedis::Unix(_) => "unix",
            BenchRedis::Tcp(_) => "tcp",
            BenchRedis::Cluster(_) => "cluster3",
            BenchRedis::Replicated { .. } => "tcp+replica",
        }
    }

    /// Stops it (SIGTERM, wait).
    pub async fn stop(self) {
        match self {
            BenchRedis::Unix(s) => {
                let _ = s.stop().await;
            }
            BenchRedis::Tcp(s) => s.stop().await,
            BenchRedis::Cluster(c) => c.stop().await,
            BenchRedis::Replicated { master, replica } => {
                replica.stop().await;
                master.stop().await;
            }
        }
    }
}

/// A `redis-server --port <free port> --bind 127.0.0.1` child (never 6379), append-only.
pub struct TcpRedis {
    child: tokio::process::Child,
    pid: u32,
    port: u16,
}

impl TcpRedis {
    /// Starts it with its data and log under `dir` and waits until it answers PING.
    ///
    /// # Errors
    /// [`BenchError`] when it cannot be started.
    pub async fn start(dir: &Path) -> Result<TcpRedis, BenchError> {
        TcpRedis::start_with(dir, true).await
    }

    /// As [`TcpRedis::start`], append-only or not (`aof`).
    ///
    /// # Errors
    /// [`BenchError`] when it cannot be started.
    pub async fn start_with(dir: &Path, aof: bool) -> Result<TcpRedis, BenchError> {
        TcpRedis::spawn(dir, aof, None, None).await
    }

    /// A replica of `master` (`--replicaof`), with its data and log under `dir`, once it has
    /// synchronized (the master lists it `online`).
    ///
    /// # Errors
    /// [`BenchError`] when it cannot be started or does not synchronize within 30 s.
    pub async fn start_replica(
        dir: &Path,
        master: &TcpRedis,
        aof: bool,
    ) -> Result<TcpRedis, BenchError> {
        let replica = TcpRedis::spawn(dir, aof, None, Some(master.port)).await?;
        master.wait_replicas_online(1).await?;
        Ok(replica)
    }

    /// Starts a replica of `master` again on `port` (a replica killed before), with its data
    /// under `dir`, and waits until it is synchronized.
    ///
    /// # Errors
    /// As [`TcpRedis::start_replica`].
    pub async fn restart_replica(
        dir: &Path,
        port: u16,
        master: &TcpRedis,
        aof: bool,
    ) -> Result<TcpRedis, BenchError> {
        let replica = TcpRedis::spawn(dir, aof, Some(port), Some(master.port)).await?;
        master.wait_replicas_online(1).await?;
        Ok(replica)
    }

    /// Until every replica has acknowledged the master's whole replication stream (10 minutes
    /// at most).
    ///
    /// # Errors
    /// [`BenchError`] when they do not.
    pub async fn wait_replicas_caught_up(&self) -> Result<(), BenchError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(600);
        loop {
            let caught_up = async {
                let client = redis::Client::open(self.url().as_str()).ok()?;
                let mut c = client.get_multiplexed_async_connection().await.ok()?;
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut c)
                    .await
                    .ok()?;
                let master: u64 = info
                    .lines()
                    .find_map(|l| l.strip_prefix("master_repl_offset:"))?
                    .trim()
                    .parse()
                    .ok()?;
                let replicas: Vec<u64> = info
                    .lines()
                    .filter(|l| l.starts_with("slave"))
                    .filter_map(|l| {
                        l.split(',')
                            .find_map(|kv| kv.strip_prefix("offset="))?
                            .parse()
                            .ok()
                    })
                    .collect();
                Some(!replicas.is_empty() && replicas.iter().all(|&r| r >= master))
            }
            .await
            .unwrap_or(false);
            if caught_up {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(BenchError::Setup(format!(
                    "the replicas of {} did not catch up within 10 minutes",
                    self.addr()
                )));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Until `INFO replication` lists at least `n` replicas `online` (30 s at most).
    ///
    /// # Errors
    /// [`BenchError`] when they do not come.
    pub async fn wait_replicas_online(&self, n: usize) -> Result<(), BenchError> {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let online = async {
                let client = redis::Client::open(self.url().as_str()).ok()?;
                let mut c = client.get_multiplexed_async_connection().await.ok()?;
                let info: String = redis::cmd("INFO")
                    .arg("replication")
                    .query_async(&mut c)
                    .await
                    .ok()?;
                Some(
                    info.lines()
                        .filter(|l| l.starts_with("slave") && l.contains("state=online"))
                        .count(),
                )
            }
            .await
            .unwrap_or(0);
            if online >= n {
                return Ok(());
            }
            if std::time::Instant::now() > deadline {
                return Err(BenchError::Setup(format!(
                    "{} has {online} replicas online, not {n}, after 30 s",
                    self.addr()
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn spawn(
        dir: &Path,
        aof: bool,
        port: Option<u16>,
        replica_of: Option<u16>,
    ) -> Result<TcpRedis, BenchError> {
        std::fs::create_dir_all(dir).map_err(setup("redis dir"))?;
        let port = match port {
            Some(p) => p,
            None => free_port()?,
        };
        let mut command = tokio::process::Command::new("redis-server");
        if let Some(master) = replica_of {
            command.args(["--replicaof", "127.0.0.1", &master.to_string()]);
        }
        let child = command
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .arg("--dir")
            .arg(dir)
            .args(["--appendonly", if aof { "yes" } else { "no" }])
            .args(["--save", "", "--daemonize", "no"])
            // A replica synchronizes at once (the default waits 5 s for more replicas).
            .args(["--repl-diskless-sync-delay", "0"])
            // The embedded server's settings, for recur and its peer alike.
            .args(
                recur::store::embedded::EMBEDDED_SETTINGS
                    .iter()
                    .flat_map(|(name, value)| [format!("--{name}"), (*value).to_string()]),
            )
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(setup("spawn redis-server (is it installed?)"))?;
        let pid = child.id().unwrap_or_default();
        let server = TcpRedis { child, pid, port };
        let url = server.url();
        for _ in 0..250 {
            if let Ok(client) = redis::Client::open(url.as_str()) {
                if let Ok(mut c) = client.get_multiplexed_async_connection().await {
                    let pong: Result<String, _> = redis::cmd("PING").query_async(&mut c).await;
                    if pong.is_ok() {
                        return Ok(server);
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Err(BenchError::Setup(format!(
            "redis-server on 127.0.0.1:{port} did not answer"
        )))
    }

    /// `host:port`.
    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// SIGKILL, and wait for it to be gone.
    pub async fn kill(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr())
    }

    /// SIGTERM and wait.
    pub async fn stop(mut self) {
        signal_term(self.child.id());
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

fn free_port() -> Result<u16, BenchError> {
    for _ in 0..20 {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(setup("free port"))?;
        let port = listener.local_addr().map_err(setup("free port"))?.port();
        if port != 6379 {
            return Ok(port);
        }
    }
    Err(BenchError::Setup("no free TCP port".into()))
}

fn signal_term(pid: Option<u32>) {
    if let Some(pid) = pid {
        // SAFETY: signalling our own child process by pid.
        unsafe {
            libc::kill(pid as libc::pid_t, libc::SIGTERM);
        }
    }
}

/// Rewrites the append-only file once the seeding is done and waits for it, so the rewrite that
/// the seeding's volume would trigger does not run during the measurement.
///
/// # Errors
/// [`BenchError`] when Redis fails.
pub async fn settle_aof(url: &str) -> Result<(), BenchError> {
    let mut conn = store::connect(url).await.map_err(setup("connect"))?;
    // RECUR_BENCH_AUTO_AOF_REWRITE=off: no automatic rewrite during the measurement either
    // (to see what the rewrite a burst triggers on a small data set costs).
    if std::env::var("RECUR_BENCH_AUTO_AOF_REWRITE").is_ok_and(|v| v == "off") {
        let _: () = redis::cmd("CONFIG")
            .arg("SET")
            .arg("auto-aof-rewrite-percentage")
            .arg(0)
            .query_async(&mut conn)
            .await
            .map_err(setup("CONFIG SET"))?;
    }
    let _: Result<String, _> = redis::cmd("BGREWRITEAOF").query_async(&mut conn).await;
    for _ in 0..6000 {
        let info: String = redis::cmd("INFO")
            .arg("persistence")
            .query_async(&mut conn)
            .await
            .map_err(setup("INFO"))?;
        let busy = info.lines().any(|l| {
            l.trim() == "aof_rewrite_in_progress:1" || l.trim() == "aof_rewrite_scheduled:1"
        });
        if !busy {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(BenchError::Setup("the AOF rewrite did not finish".into()))
}

/// How many AOF rewrites Redis has run (`aof_rewrites`), to tell whether one ran during a
/// measurement.
///
/// # Errors
/// [`BenchError`] when Redis fails.
pub async fn aof_rewrites(url: &str) -> Result<u64, BenchError> {
    let info = redis_info(url, Some("persistence")).await?;
    Ok(info_field(&info, "aof_rewrites:") + info_field(&info, "aof_rewrite_in_progress:"))
}

/// The CPU time the Redis server at `url` has used so far (`used_cpu_user` + `used_cpu_sys`
/// of `INFO cpu`, its main process).
///
/// # Errors
/// [`BenchError`] when Redis fails.
pub async fn redis_cpu_time(url: &str) -> Result<Duration, BenchError> {
    let info = redis_info(url, Some("cpu")).await?;
    let seconds = |name: &str| {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(Duration::from_secs_f64(
        seconds("used_cpu_user:") + seconds("used_cpu_sys:"),
    ))
}

/// `INFO` (or one section of it) of the server at `url`.
async fn redis_info(url: &str, section: Option<&str>) -> Result<String, BenchError> {
    let mut conn = store::connect(url).await.map_err(setup("connect"))?;
    let mut cmd = redis::cmd("INFO");
    if let Some(section) = section {
        cmd.arg(section);
    }
    cmd.query_async(&mut conn).await.map_err(setup("INFO"))
}

/// A numeric field (`name:` included) of an INFO text; 0 when absent.
fn info_field(info: &str, name: &str) -> u64 {
    info.lines()
        .find_map(|l| l.trim().strip_prefix(name))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0)
}

/// With `RECUR_BENCH_COMMANDSTATS=on`: resets Redis's per-command statistics (`before`) or
/// prints them to stderr (after), to see where Redis spends its time during a measurement.
///
/// # Errors
/// [`BenchError`] when Redis fails.
pub async fn command_stats(url: &str, before: bool) -> Result<(), BenchError> {
    if std::env::var("RECUR_BENCH_COMMANDSTATS").as_deref() != Ok("on") {
        return Ok(());
    }
    let mut conn = store::connect(url).await.map_err(setup("connect"))?;
    if before {
        let () = redis::cmd("CONFIG")
            .arg("RESETSTAT")
            .query_async(&mut conn)
            .await
            .map_err(setup("CONFIG RESETSTAT"))?;
    } else {
        let info: String = redis::cmd("INFO")
            .arg("commandstats")
            .query_async(&mut conn)
            .await
            .map_err(setup("INFO"))?;
        eprintln!("{info}");
    }
    Ok(())
}

/// Redis's traffic and memory at one moment: `total_net_input_bytes` (bytes clients sent),
/// `used_memory` and the main thread's CPU time (`used_cpu_{sys,user}_main_thread`, seconds),
/// summed over `servers` (every node of a cluster).
#[derive(Debug, Clone, Copy, Default)]
pub struct RedisBytes {
    pub input: u64,
    pub memory: u64,
    pub main_cpu: f64,
    /// `aof_current_size` (0 without AOF).
    pub aof: u64,
}

impl RedisBytes {
    /// Reads both figures of every server now.
    ///
    /// # Errors
    /// [`BenchError`] when Redis fails.
    pub async fn now(servers: &[String]) -> Result<RedisBytes, BenchError> {
        let mut total = RedisBytes::default();
        for url in servers {
            let info = redis_info(url, None).await?;
            total.input += info_field(&info, "total_net_input_bytes:");
            total.memory += info_field(&info, "used_memory:");
            total.aof += info_field(&info, "aof_current_size:");
            let seconds = |name: &str| {
                info.lines()
                    .find_map(|l| l.trim().strip_prefix(name))
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            total.main_cpu +=
                seconds("used_cpu_sys_main_thread:") + seconds("used_cpu_user_main_thread:");
        }
        Ok(total)
    }

    /// `redis_main_cpu_us_per_transition=.. redis_in_b_per_transition=..
    /// redis_mem_b_per_transition=.. redis_aof_b_per_transition=..` between `self` (before)
    /// and `after`, over `transitions`. The main thread's CPU is what one Redis core has to
    /// give (the process's, in the CPU figures, also counts the AOF's background fsync); the
    /// AOF's growth is 0 without AOF and meaningless across a rewrite (`aof_rewrites_during`).
    pub fn figures(&self, after: &RedisBytes, transitions: u64) -> String {
        let n = transitions.max(1) as f64;
        format!(
            "redis_main_cpu_us_per_transition={:.1} redis_in_b_per_transition={:.0} redis_mem_b_per_transition={:.0} redis_aof_b_per_transition={:.0}",
            (after.main_cpu - self.main_cpu).max(0.0) * 1e6 / n,
            after.input.saturating_sub(self.input) as f64 / n,
            (after.memory as f64 - self.memory as f64) / n,
            (after.aof as f64 - self.aof as f64) / n
        )
    }
}

/// Redis `used_memory` in bytes.
///
/// # Errors
/// [`BenchError`] when Redis fails.
pub async fn redis_used_memory(url: &str) -> Result<u64, BenchError> {
    let info = redis_info(url, Some("memory")).await?;
    Ok(info_field(&info, "used_memory:"))
}

/// How many timers are due at or before `until_ms`, over every partition.
///
/// # Errors
/// [`BenchError`] when Redis fails.
pub async fn due_count(
    conn: &mut recur::store::RedisConn,
    until_ms: i64,
) -> Result<u64, BenchError> {
    let keys = Keys::new(PREFIX, DEFAULT_PARTITIONS);
    let mut pipe = redis::pipe();
    for p in 0..keys.partitions() {
        pipe.cmd("ZCOUNT")
            .arg(keys.order_keys().timers(p))
            .arg("-inf")
            .arg(until_ms);
    }
    let counts: Vec<u64> = pipe.query_async(conn).await.map_err(setup("ZCOUNT"))?;
    Ok(counts.into_iter().sum())
}

// ---------------------------------------------------------------------------------------------
// Seeding

/// One order to seed: createOrder's args, created by `domain::create` at `created`, optionally
/// purchased by a first payment recorded at the same instant (ONLINE orders).
#[derive(Debug, Clone)]
pub struct SeedOrder {
    pub id: String,
    pub args: Value,
    pub created: Instant,
    /// Amount of a first payment (`recordPayment`) applied at `created`.
    pub payment: Option<String>,
}

/// How to seed.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    /// Write the orders' creation events to the event stream (as the daemon would).
    pub events: bool,
    /// Write each order's customer-stats contribution (as the daemon's stats actor would), so
    /// later deltas update existing figures.
    pub stats: bool,
    /// The clock record: mode and, for the simulated clock, its now.
    pub clock_mode: &'static str,
    pub clock_now: Option<Instant>,
}

impl SeedOptions {
    /// Events on, stats off, simulated clock at [`BENCH_START`].
    pub fn simulated() -> SeedOptions {
        SeedOptions {
            events: true,
            stats: false,
            clock_mode: "simulated",
            clock_now: parse_instant(BENCH_START).ok(),
        }
    }

    /// Events on, stats off, system clock.
    pub fn system() -> SeedOptions {
        SeedOptions {
            events: true,
            stats: false,
            clock_mode: "system",
            clock_now: None,
        }
    }
}

const SEED_CHUNK: usize = 8192;

/// Seeds `n` orders, the i-th from `make(i)`, writing each with the daemon's commit script.
/// Orders are built on a separate thread while the previous chunk is in Redis; commits go in
/// pipelines of 2048.
///
/// # Errors
/// [`BenchError`] when an order cannot be built or Redis fails.
pub async fn seed<F>(url: &str, n: usize, opts: &SeedOptions, make: F) -> Result<(), BenchError>
where
    F: Fn(usize) -> SeedOrder + Send + 'static,
{
    seed_to(&RedisAddress::single(url.to_string()), n, opts, make).await
}

/// [`seed`] on one server or a Redis Cluster.
///
/// # Errors
/// [`BenchError`] when an order cannot be built or Redis fails.
pub async fn seed_to<F>(
    redis: &RedisAddress,
    n: usize,
    opts: &SeedOptions,
    make: F,
) -> Result<(), BenchError>
where
    F: Fn(usize) -> SeedOrder + Send + 'static,
{
    let (tx, mut rx) =
        tokio::sync::mpsc::channel::<Result<Vec<(Commit, Option<Delta>)>, BenchError>>(2);
    let (events, stats) = (opts.events, opts.stats);
    let builder = std::thread::spawn(move || {
        let policy = Policy::default();
        let mut chunk = Vec::with_capacity(SEED_CHUNK);
        for i in 0..n {
            match build_seed(make(i), &policy, events, stats) {
                Ok(c) => chunk.push(c),
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
            if chunk.len() == SEED_CHUNK || i + 1 == n {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(SEED_CHUNK));
                if tx.blocking_send(Ok(full)).is_err() {
                    return;
                }
            }
        }
    });
    let (mode, now) = (opts.clock_mode, opts.clock_now);
    let local = tokio::task::LocalSet::new();
    let result = local
        .run_until(async move {
            let mut conn = store::connect_to(redis).await.map_err(setup("connect"))?;
            // The daemon's default count, recorded in meta as the daemon would.
            let partitions = store::settle_partitions(&mut conn, PREFIX, DEFAULT_PARTITIONS)
                .await
                .map_err(setup("partitions"))?;
            let config = CommitterConfig {
                max_batch: 2048,
                max_in_flight: 4,
                reply_ttl_secs: 60,
                publish_events: false,
                wait: None,
            };
            let store = Store::open(
                conn.clone(),
                conn,
                Keys::new(PREFIX, partitions),
                config,
                2048,
                Arc::new(Metrics::default()),
            )
            .await
            .map_err(setup("open store"))?;
            store
                .clock_store()
                .save_clock(mode, now)
                .await
                .map_err(setup("clock"))?;
            // Commits are fenced by partition leases: the seeder holds them all meanwhile, and
            // hands them back before the daemon starts.
            let mut leases = Vec::new();
            for p in 0..partitions {
                let lease = store
                    .lease_store()
                    .acquire_lease(p, "bench-seed", 600_000)
                    .await
                    .map_err(setup("lease"))?
                    .ok_or_else(|| {
                        BenchError::Setup(format!(
                            "partition {p} is held by a daemon: seed an empty Redis"
                        ))
                    })?;
                leases.push(lease);
            }
            let keys = store.keys().clone();
            let (orders, stats) = (store.order_store(), store.stats_store());
            while let Some(chunk) = rx.recv().await {
                let (commits, deltas): (Vec<_>, Vec<_>) = chunk?.into_iter().unzip();
                let results = futures_util::future::join_all(commits.into_iter().map(|mut c| {
                    c.lease = leases[usize::from(keys.partition(&c.order_id))]
                        .token
                        .clone();
                    orders.commit(c)
                }))
                .await;
                for r in results {
                    match r.map_err(setup("seed commit"))? {
                        store::CommitOutcome::Committed { .. } => {}
                        other => {
                            return Err(BenchError::Setup(format!(
                                "seed commit refused: {other:?} (is the Redis empty?)"
                            )))
                        }
                    }
                }
                let applied = futures_util::future::join_all(deltas.iter().flatten().map(|d| {
                    let lease = &leases[usize::from(keys.partition(&d.c))];
                    stats.apply_delta(d, &lease.token, None)
                }))
                .await;
                for r in applied {
                    r.map_err(setup("seed stats"))?;
                }
            }
            for lease in &leases {
                store
                    .lease_store()
                    .release_lease(lease)
                    .await
                    .map_err(setup("release lease"))?;
            }
            Ok(())
        })
        .await;
    let _ = builder.join();
    result
}

fn build_seed(
    s: SeedOrder,
    policy: &Policy,
    events: bool,
    stats: bool,
) -> Result<(Commit, Option<Delta>), BenchError> {
    let args: CreateOrderArgs = parse_args(&s.args).map_err(setup("args"))?;
    let new = NewOrder::parse(args, s.id.clone(), "bench".into()).map_err(setup("parse"))?;
    let mut t = domain::create(new, s.created, policy).map_err(setup("create"))?;
    if let Some(amount) = s.payment {
        let cmd = Command::RecordPayment {
            due: None,
            payment_id: format!("{}-p1", s.id),
            amount: amount.parse().map_err(setup("amount"))?,
        };
        let paid = domain::apply(&t.order, &cmd, s.created, policy).map_err(setup("payment"))?;
        t = t.then(paid);
    }
    let delta = stats.then(|| Delta {
        c: t.order.customer_id.clone(),
        o: t.order.id.clone(),
        v: t.order.version,
        k: Some(contribution(&t.order)),
    });
    let commit = Commit {
        order_id: s.id,
        expected_version: 0,
        write: OrderWrite::Save {
            json: recur::domain::order::compact_json(&t.order).map_err(setup("json"))?,
            version: t.order.version,
            due_ms: domain::next_due(&t.order).map(|d| to_millis(&d)),
            customer_id: t.order.customer_id.clone(),
            created_ms: to_millis(&t.order.created_date),
        },
        event_count: if events { t.events.len() } else { 0 },
        change: if events {
            Some(recur::domain::change_head_json(&t.order, &t.events).map_err(setup("change"))?)
        } else {
            None
        },
        deltas: Vec::new(),
        reply: None,
        // Set to the seeder's lease token when committed.
        lease: String::new(),
        // A test clock's order (args `testClockId`) keeps its timer in the clock's set.
        test_clock: t.order.test_clock_id.clone(),
    };
    Ok((commit, delta))
}

/// createOrder args of a monthly subscription of `cycles` cycles (0 = until canceled).
pub fn monthly_args(customer: &str, order_type: &str, cycles: u32) -> Value {
    json!({
        "customerId": customer,
        "plan": {"id": "monthly", "name": "Monthly"},
        "type": order_type,
        "pricing": {"subscription": {"cycleDuration": {"count": 1, "unit": "MONTH"}, "cycleCount": cycles}},
        "prices": [{"cycleFrom": 1, "amount": "9.99"}],
        "currency": "USD",
    })
}

/// Bench order ids: `o0000042`.
pub fn order_id(i: usize) -> String {
    format!("o{i:07}")
}

/// Seeds `n` monthly OFFLINE orders (12 cycles) created at [`BENCH_START`] (so cycle 2 of every
/// one is due at the same instant), writing them with the daemon's own commit script.
/// `RECUR_BENCH_SEED_EVENTS=off` leaves out their creation events (a 1M burst's Redis then
/// holds about 5 GB instead of 11).
///
/// # Errors
/// [`BenchError`] when Redis fails.
pub async fn seed_monthly(url: &str, n: usize) -> Result<(), BenchError> {
    seed_monthly_to(&RedisAddress::single(url.to_string()), n).await
}

/// [`seed_monthly`] on one server or a Redis Cluster, of the kind `RECUR_BENCH_BURST_ORDERS`
/// names ([`BurstOrders::from_env`]).
///
/// # Errors
/// [`BenchError`] when Redis fails.
pub async fn seed_monthly_to(redis: &RedisAddress, n: usize) -> Result<(), BenchError> {
    seed_monthly_kind_to(redis, n, BurstOrders::from_env()).await
}

/// The burst's orders: monthly, 12 cycles, created at [`BENCH_START`], cycle 2 due on
/// 2026-02-01 for every one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BurstOrders {
    /// OFFLINE, paid at creation: cycle 2 starts (orderCycleStarted + orderUpdated).
    #[default]
    Offline,
    /// ONLINE, paid for cycle 1: cycle 2 also requests a payment (a due with its dunning
    /// retries), what billing does.
    Online,
    /// ONLINE on New York's calendar (the instant is the same: 1 Jan 00:00 UTC is 31 Dec
    /// 19:00 local).
    OnlineZoned,
}

impl BurstOrders {
    /// `RECUR_BENCH_BURST_ORDERS`: `online`, `online-zoned`, else OFFLINE.
    pub fn from_env() -> BurstOrders {
        match std::env::var("RECUR_BENCH_BURST_ORDERS").as_deref() {
            Ok("online-zoned") => BurstOrders::OnlineZoned,
            Ok(k) if k.starts_with("online") => BurstOrders::Online,
            _ => BurstOrders::Offline,
        }
    }

    /// How the bench lines name it.
    pub fn name(self) -> &'static str {
        match self {
            BurstOrders::Offline => "offline",
            BurstOrders::Online => "online",
            BurstOrders::OnlineZoned => "online-zoned",
        }
    }
}

/// [`seed_monthly_to`] with the orders of `kind`.
///
/// # Errors
/// [`BenchError`] when Redis fails.
pub async fn seed_monthly_kind_to(
    redis: &RedisAddress,
    n: usize,
    kind: BurstOrders,
) -> Result<(), BenchError> {
    let start = parse_instant(BENCH_START).map_err(setup("start"))?;
    let options = SeedOptions {
        events: !std::env::var("RECUR_BENCH_SEED_EVENTS").is_ok_and(|v| v == "off"),
        ..SeedOptions::simulated()
    };
    let online = kind != BurstOrders::Offline;
    let zoned = kind == BurstOrders::OnlineZoned;
    seed_to(redis, n, &options, move |i| {
        let mut args = monthly_args(
            &format!("c{}", i % 10_000),
            if online { "ONLINE" } else { "OFFLINE" },
            12,
        );
        if zoned {
            args["timeZone"] = json!("America/New_York");
        }
        SeedOrder {
            id: order_id(i),
            args,
            created: start,
            payment: online.then(|| "9.99".to_string()),
        }
    })
    .await
}

// ---------------------------------------------------------------------------------------------
// The daemon

/// Which clock the daemon runs with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DaemonClock {
    /// Simulated, starting at [`BENCH_START`] (unless Redis holds a time).
    Simulated,
    /// The system clock.
    System,
}

/// A `recur serve` child process on the bench's Redis.
pub struct DaemonProcess {
    child: tokio::process::Child,
    /// When it was spawned.
    pub spawned: WallInstant,
}

impl DaemonProcess {
    /// Starts the daemon binary with the simulated clock.
    ///
    /// # Errors
    /// [`BenchError`] when it cannot be spawned.
    pub fn start(binary: &Path, url: &str) -> Result<DaemonProcess, BenchError> {
        Self::start_with(binary, url, DaemonClock::Simulated, &[])
    }

    /// Starts the daemon binary with `clock` and extra `RECUR_` environment settings.
    ///
    /// # Errors
    /// [`BenchError`] when it cannot be spawned.
    pub fn start_with(
        binary: &Path,
        url: &str,
        clock: DaemonClock,
        env: &[(&str, &str)],
    ) -> Result<DaemonProcess, BenchError> {
        Self::start_on(binary, &RedisAddress::single(url.to_string()), clock, env)
    }

    /// [`DaemonProcess::start_with`] on one server or a Redis Cluster (`--redis-cluster`).
    /// Only the URL is passed on: a password or TLS files of `redis` go in `env`
    /// (`RECUR_REDIS__PASSWORD`, `RECUR_REDIS__TLS__CA_FILE`).
    ///
    /// # Errors
    /// [`BenchError`] when it cannot be spawned.
    pub fn start_on(
        binary: &Path,
        redis: &RedisAddress,
        clock: DaemonClock,
        env: &[(&str, &str)],
    ) -> Result<DaemonProcess, BenchError> {
        let mut cmd = tokio::process::Command::new(binary);
        cmd.arg("serve");
        let url = match redis.nodes() {
            RedisNodes::Single(url) => url.clone(),
            RedisNodes::Cluster(seeds) => {
                cmd.arg("--redis-cluster");
                seeds.join(",")
            }
            RedisNodes::Sentinel(s) => {
                cmd.env("RECUR_REDIS__SENTINEL__MASTER", &s.master);
                s.sentinels.join(",")
            }
        };
        cmd.args(["--redis-url", &url, "--prefix", PREFIX]);
        match clock {
            DaemonClock::Simulated => {
                cmd.args(["--clock", "simulated", "--clock-start", BENCH_START]);
            }
            DaemonClock::System => {
                cmd.args(["--clock", "system"]);
            }
        }
        cmd.env("RECUR_LOG__LEVEL", "warn").env_remove("RUST_LOG");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(setup("spawn the daemon"))?;
        Ok(DaemonProcess {
            child,
            spawned: WallInstant::now(),
        })
    }

    fn status_kb(&self, field: &str) -> Option<u64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find(|l| l.starts_with(field))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse().ok())
    }

    /// Its process id (None once reaped).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Peak resident set size (VmHWM) in KiB, from /proc.
    pub fn peak_rss_kb(&self) -> Option<u64> {
        self.status_kb("VmHWM:")
    }

    /// Resident set size now (VmRSS) in KiB, from /proc.
    pub fn rss_kb(&self) -> Option<u64> {
        self.status_kb("VmRSS:")
    }

    /// The CPU time it has used so far (user + system, every thread), from /proc.
    pub fn cpu_time(&self) -> Option<Duration> {
        let pid = self.child.id()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // After the command name (in parentheses): state is field 3, utime 14, stime 15.
        let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
        let ticks: u64 =
            fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
        // SAFETY: sysconf reads a constant of the system; no memory is touched.
        let per_second = u64::try_from(unsafe { libc::sysconf(libc::_SC_CLK_TCK) })
            .ok()
            .filter(|t| *t > 0)?;
        Some(Duration::from_millis(ticks * 1000 / per_second))
    }

    /// Whether it has exited (and how).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Stops the daemon with SIGTERM (graceful) and waits.
    pub async fn stop(mut self) {
        signal_term(self.child.id());
        let _ = tokio::time::timeout(Duration::from_secs(60), self.child.wait()).await;
    }
}

/// An admin client on the bench's prefix, once the daemon answers ping.
///
/// # Errors
/// [`BenchError`] when it cannot connect or the daemon does not answer in time.
pub async fn ready_client(url: &str) -> Result<AdminClient, BenchError> {
    ready_client_to(&RedisAddress::single(url.to_string())).await
}

/// [`ready_client`] on one server or a Redis Cluster.
///
/// # Errors
/// [`BenchError`] when it cannot connect or the daemon does not answer in time.
pub async fn ready_client_to(redis: &RedisAddress) -> Result<AdminClient, BenchError> {
    let client = AdminClient::connect_to(redis, PREFIX)
        .await
        .map_err(setup("client"))?;
    wait_ready(&client).await?;
    Ok(client)
}

/// Waits until the daemon answers ping.
///
/// # Errors
/// [`BenchError`] when it does not answer in time.
pub async fn wait_ready(client: &AdminClient) -> Result<(), BenchError> {
    let options = RequestOptions {
        attempt_timeout: Duration::from_millis(300),
        total_timeout: Duration::from_secs(600),
        ..RequestOptions::default()
    };
    let r = client
        .request_with(options, "ping", json!({}))
        .await
        .map_err(setup("ping"))?;
    if r.ok {
        Ok(())
    } else {
        Err(BenchError::Setup(format!("ping refused: {:?}", r.error)))
    }
}

/// `getMetrics`.
///
/// # Errors
/// [`BenchError`] when it fails.
pub async fn metrics(client: &AdminClient) -> Result<Value, BenchError> {
    let r = client
        .request("getMetrics", json!({}))
        .await
        .map_err(setup("getMetrics"))?;
    r.result
        .as_ref()
        .map(figures)
        .ok_or_else(|| BenchError::Setup("getMetrics failed".into()))
}

/// The figures the benchmarks compare, out of a `getMetrics` result (Prometheus names, every
/// series summed): `transitions`, `eventsWritten`, `statsDeltasApplied`, `residentActors`,
/// `partitionsOwned`, and `partitions`.
pub fn figures(result: &Value) -> Value {
    let m = &result["metrics"];
    let n = |name: &str| recur::metrics::total(m, name) as u64;
    json!({
        "transitions": n("recur_transitions_total"),
        "eventsWritten": n("recur_events_total"),
        "statsDeltasApplied": n("recur_stats_deltas_applied_total"),
        "residentActors": n("recur_resident_actors"),
        "partitionsOwned": n("recur_partitions_owned"),
        "partitions": result["partitions"],
    })
}

/// `after[k] - before[k]` of two `getMetrics` snapshots.
pub fn metric_delta(before: &Value, after: &Value, k: &str) -> u64 {
    after[k]
        .as_u64()
        .unwrap_or(0)
        .saturating_sub(before[k].as_u64().unwrap_or(0))
}

/// Long timeouts for a request that does a lot (advanceClock over a burst).
pub fn long_request() -> RequestOptions {
    RequestOptions {
        attempt_timeout: Duration::from_secs(600),
        total_timeout: Duration::from_secs(3600),
        ..RequestOptions::default()
    }
}

/// A fresh temp directory for one bench (removed by [`TempDir`]'s drop).
pub struct TempDir(pub PathBuf);

impl TempDir {
    /// Creates it.
    ///
    /// # Errors
    /// [`BenchError`] when it cannot be created.
    pub fn new() -> Result<TempDir, BenchError> {
        let dir =
            std::env::temp_dir().join(format!("recur-bench-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).map_err(setup("temp dir"))?;
        Ok(TempDir(dir))
    }

    /// The private Redis's data directory under it.
    pub fn redis_dir(&self) -> PathBuf {
        self.0.join("redis")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `q`-quantile (0..=1) of sorted samples, nearest rank.
pub fn quantile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1000.0)
}

/// KiB as MB with one decimal, or n/a.
pub fn mb(kb: Option<u64>) -> String {
    kb.map_or("n/a".to_string(), |kb| format!("{:.1}", kb as f64 / 1024.0))
}

/// CPU time (user + system) a process has used so far, from /proc/<pid>/stat.
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    (hz > 0).then(|| Duration::from_secs_f64(ticks as f64 / hz as f64))
}

/// CPU use of the daemon and of Redis over a measured interval.
#[derive(Debug, Clone, Copy, Default)]
pub struct CpuSplit {
    pub daemon: Duration,
    pub redis: Duration,
}

impl CpuSplit {
    /// As [`CpuSplit::now`], with the CPU time of every daemon of a group summed.
    pub fn now_group(daemons: &[DaemonProcess], redis: &BenchRedis) -> CpuSplit {
        CpuSplit {
            daemon: daemons
                .iter()
                .filter_map(DaemonProcess::pid)
                .filter_map(cpu_time)
                .sum(),
            redis: redis.pids().into_iter().filter_map(cpu_time).sum(),
        }
    }

    /// Reads the daemon's and Redis's (every node's, on a cluster) CPU time now.
    pub fn now(daemon: &DaemonProcess, redis: &BenchRedis) -> CpuSplit {
        CpuSplit {
            daemon: daemon.pid().and_then(cpu_time).unwrap_or_default(),
            redis: redis.pids().into_iter().filter_map(cpu_time).sum(),
        }
    }

    /// Daemon CPU time between `self` (before) and `after`, in µs per transition.
    pub fn daemon_us_per(&self, after: &CpuSplit, transitions: u64) -> f64 {
        after.daemon.saturating_sub(self.daemon).as_secs_f64() * 1e6 / transitions.max(1) as f64
    }

    /// Redis CPU time (every server's) between `self` (before) and `after`, in µs per
    /// transition: 1e6 over it is what one Redis core would sustain.
    pub fn redis_us_per(&self, after: &CpuSplit, transitions: u64) -> f64 {
        after.redis.saturating_sub(self.redis).as_secs_f64() * 1e6 / transitions.max(1) as f64
    }

    /// `daemon_cpu=..% redis_cpu=..%` of `wall` between `self` (before) and `after`.
    pub fn figures(&self, after: &CpuSplit, wall: Duration) -> String {
        let pct = |a: Duration, b: Duration| {
            100.0 * a.saturating_sub(b).as_secs_f64() / wall.as_secs_f64().max(1e-9)
        };
        format!(
            "daemon_cpu_pct={:.0} redis_cpu_pct={:.0}",
            pct(after.daemon, self.daemon),
            pct(after.redis, self.redis)
        )
    }
}

/// A small deterministic generator (splitmix64) so every run makes the same choices.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded.
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// The next 64 bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }
}

/// splitmix64 of one value (a stable hash of an index).
pub fn mix(i: u64) -> u64 {
    Rng::new(i).next_u64()
}
