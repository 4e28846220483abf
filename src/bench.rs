//! `recur bench`: scenarios that measure the daemon against a private redis-server it starts
//! itself. The daemon under test is the real `recur serve` binary as a child process, so its
//! peak RSS is its own; the bench process seeds Redis directly (through the same commit
//! script) so the measurement covers the scenario, not the seeding.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant as WallInstant};

use serde_json::{json, Value};

use crate::admin::client::{AdminClient, RequestOptions};
use crate::domain::command::{parse_args, CreateOrderArgs, NewOrder};
use crate::domain::time::{format_instant, parse_instant, to_millis, Instant};
use crate::domain::{self, Policy};
use crate::metrics::Metrics;
use crate::store::embedded::{EmbeddedOptions, EmbeddedRedis};
use crate::store::{self, Commit, CommitterConfig, Keys, OrderWrite, Store};

/// The simulated instant every bench starts at.
pub const BENCH_START: &str = "2026-01-01T00:00:00Z";
const PREFIX: &str = "bench";

/// Why a bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Setup(String),
}

fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> BenchError + '_ {
    move |e| BenchError::Setup(format!("{what}: {e}"))
}

/// Options of the burst scenario.
#[derive(Debug, Clone)]
pub struct BurstOptions {
    pub orders: usize,
    /// The `recur` binary to run as the daemon (normally the current executable).
    pub binary: PathBuf,
    /// Where the private Redis keeps its data (a temp dir when None).
    pub data_dir: Option<PathBuf>,
}

/// What the burst scenario measured.
#[derive(Debug, Clone)]
pub struct BurstReport {
    pub orders: usize,
    pub transitions: u64,
    pub events: u64,
    pub elapsed: Duration,
    pub peak_rss_kb: Option<u64>,
    pub seed_elapsed: Duration,
}

impl BurstReport {
    /// The one line the bench prints.
    pub fn line(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        format!(
            "burst orders={} transitions={} events={} elapsed_s={:.3} transitions_per_s={:.0} events_per_s={:.0} daemon_peak_rss_mb={} (seeding took {:.1}s)",
            self.orders,
            self.transitions,
            self.events,
            secs,
            self.transitions as f64 / secs,
            self.events as f64 / secs,
            self.peak_rss_kb.map_or("n/a".to_string(), |kb| format!("{:.1}", kb as f64 / 1024.0)),
            self.seed_elapsed.as_secs_f64(),
        )
    }
}

/// Seeds `n` monthly OFFLINE orders created at [`BENCH_START`] (so cycle 2 of every one is due
/// at the same instant), writing them with the daemon's own commit script.
///
/// # Errors
/// [`BenchError`] when Redis fails.
pub async fn seed_monthly(url: &str, n: usize) -> Result<(), BenchError> {
    let local = tokio::task::LocalSet::new();
    local
        .run_until(async move {
            let conn = store::connect(url).await.map_err(setup("connect"))?;
            let config = CommitterConfig {
                max_batch: 512,
                max_in_flight: 4,
                reply_ttl_secs: 60,
                publish_events: false,
            };
            let store = Store::open(
                conn,
                Keys::new(PREFIX),
                config,
                std::sync::Arc::new(Metrics::default()),
            )
            .await
            .map_err(setup("open store"))?;
            let start = parse_instant(BENCH_START).map_err(setup("start"))?;
            store
                .save_clock("simulated", Some(start))
                .await
                .map_err(setup("clock"))?;
            let policy = Policy::default();
            let mut pending = Vec::with_capacity(4096);
            for i in 0..n {
                let commit = seed_commit(i, start, &policy)?;
                pending.push(store.commit(commit));
                if pending.len() == 4096 || i + 1 == n {
                    for r in futures_util::future::join_all(pending.drain(..)).await {
                        r.map_err(setup("seed commit"))?;
                    }
                }
            }
            Ok(())
        })
        .await
}

fn seed_commit(i: usize, now: Instant, policy: &Policy) -> Result<Commit, BenchError> {
    let args: CreateOrderArgs = parse_args(&json!({
        "customerId": format!("c{}", i % 10_000),
        "plan": {"id": "monthly", "name": "Monthly"},
        "type": "OFFLINE",
        "pricing": {"subscription": {"cycleDuration": {"count": 1, "unit": "MONTH"}, "cycleCount": 12}},
        "prices": [{"cycleFrom": 1, "amount": "9.99"}],
        "currency": "USD",
    }))
    .map_err(setup("args"))?;
    let id = format!("o{i:07}");
    let new = NewOrder::parse(args, id.clone(), "bench".into()).map_err(setup("parse"))?;
    let t = domain::create(new, now, policy).map_err(setup("create"))?;
    Ok(Commit {
        order_id: id,
        expected_version: 0,
        write: OrderWrite::Save {
            json: serde_json::to_string(&t.order).map_err(setup("json"))?,
            version: t.order.version,
            due_ms: domain::next_due(&t.order).map(|d| to_millis(&d)),
            customer_id: t.order.customer_id.clone(),
            created_ms: to_millis(&t.order.created_date),
        },
        events: t
            .events
            .iter()
            .map(|e| serde_json::to_string(e).unwrap_or_default())
            .collect(),
        deltas: Vec::new(),
        reply: None,
    })
}

/// A `recur serve` child process on the bench's Redis.
pub struct DaemonProcess {
    child: tokio::process::Child,
}

impl DaemonProcess {
    /// Starts the daemon binary with the simulated clock.
    ///
    /// # Errors
    /// [`BenchError`] when it cannot be spawned.
    pub fn start(binary: &Path, url: &str) -> Result<DaemonProcess, BenchError> {
        let child = tokio::process::Command::new(binary)
            .args([
                "serve",
                "--redis-url",
                url,
                "--prefix",
                PREFIX,
                "--clock",
                "simulated",
                "--clock-start",
                BENCH_START,
            ])
            .env("RECUR_LOG__LEVEL", "warn")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .map_err(setup("spawn the daemon"))?;
        Ok(DaemonProcess { child })
    }

    /// Peak resident set size (VmHWM) in KiB, from /proc.
    pub fn peak_rss_kb(&self) -> Option<u64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse().ok())
    }

    /// Stops the daemon with SIGTERM (graceful) and waits.
    pub async fn stop(mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: signalling our own child process by pid.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
        let _ = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await;
    }
}

/// Waits until the daemon answers ping.
///
/// # Errors
/// [`BenchError`] when it does not answer in time.
pub async fn wait_ready(client: &AdminClient) -> Result<(), BenchError> {
    let options = RequestOptions {
        attempt_timeout: Duration::from_millis(300),
        total_timeout: Duration::from_secs(120),
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

/// The burst scenario: `orders` orders whose next cycle is due at the same simulated instant;
/// one advanceClock past it; transitions and events committed per second, daemon peak RSS.
///
/// # Errors
/// [`BenchError`] when any step fails.
pub async fn burst(opts: &BurstOptions) -> Result<BurstReport, BenchError> {
    let temp = tempfile_dir()?;
    let data_dir = opts.data_dir.clone().unwrap_or_else(|| temp.join("redis"));
    let redis = EmbeddedRedis::start(&EmbeddedOptions {
        binary: PathBuf::from("redis-server"),
        data_dir,
        appendonly: true,
    })
    .await
    .map_err(setup("redis-server"))?;
    let url = redis.url();
    let seeded = WallInstant::now();
    seed_monthly(&url, opts.orders).await?;
    let seed_elapsed = seeded.elapsed();

    let daemon = DaemonProcess::start(&opts.binary, &url)?;
    let client = AdminClient::connect(&url, PREFIX)
        .await
        .map_err(setup("client"))?;
    wait_ready(&client).await?;
    let before = metrics(&client).await?;
    let due = parse_instant("2026-02-01T00:00:01Z").map_err(setup("due"))?;
    let options = RequestOptions {
        attempt_timeout: Duration::from_secs(600),
        total_timeout: Duration::from_secs(3600),
        ..RequestOptions::default()
    };
    let started = WallInstant::now();
    let r = client
        .request_with(options, "advanceClock", json!({"to": format_instant(&due)}))
        .await
        .map_err(setup("advanceClock"))?;
    let elapsed = started.elapsed();
    if !r.ok {
        return Err(BenchError::Setup(format!(
            "advanceClock failed: {:?}",
            r.error
        )));
    }
    let after = metrics(&client).await?;
    let peak_rss_kb = daemon.peak_rss_kb();
    daemon.stop().await;
    let _ = redis.stop().await;
    let _ = std::fs::remove_dir_all(&temp);
    let count = |k: &str| {
        after[k]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(before[k].as_u64().unwrap_or(0))
    };
    Ok(BurstReport {
        orders: opts.orders,
        transitions: count("transitions"),
        events: count("eventsWritten"),
        elapsed,
        peak_rss_kb,
        seed_elapsed,
    })
}

async fn metrics(client: &AdminClient) -> Result<Value, BenchError> {
    let r = client
        .request("getMetrics", json!({}))
        .await
        .map_err(setup("getMetrics"))?;
    r.result
        .ok_or_else(|| BenchError::Setup("getMetrics failed".into()))
}

fn tempfile_dir() -> Result<PathBuf, BenchError> {
    let dir = std::env::temp_dir().join(format!("recur-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).map_err(setup("temp dir"))?;
    Ok(dir)
}
