//! The private Redis servers the benches run on, and what they read off them (INFO, commandstats,
//! bytes, memory, AOF).

use super::*;

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

pub(crate) fn free_port() -> Result<u16, BenchError> {
    for _ in 0..20 {
        let listener = TcpListener::bind("127.0.0.1:0").map_err(setup("free port"))?;
        let port = listener.local_addr().map_err(setup("free port"))?.port();
        if port != 6379 {
            return Ok(port);
        }
    }
    Err(BenchError::Setup("no free TCP port".into()))
}

pub(crate) fn signal_term(pid: Option<u32>) {
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
