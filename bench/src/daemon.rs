//! The daemon under test as a child process, and the admin client that talks to it.

use super::*;

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
