//! `admin`: reply latency of pauseOrder / resumeOrder while a burst runs.
//!
//! On the simulated clock every command waits for an advance in progress (SPEC 7), so a burst
//! driven by advanceClock would measure the advance, not the command. This scenario therefore
//! runs the burst on the SYSTEM clock: N orders are seeded so that their next cycle falls due
//! at the same wall-clock instant T a few seconds after the daemon is ready; at T the daemon's
//! scheduler fires all of them while a few clients alternate pauseOrder / resumeOrder on a
//! separate set of ACTIVE orders, each waiting for its reply before sending the next.
//!
//! Reported: p50 / p99 / max latency of the commands SENT between T and the end of the burst
//! (no timer left due at T), the same before T (idle), and the burst's transitions per second.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant as WallInstant};

use serde_json::{json, Value};

use super::{
    due_count, mb, metric_delta, metrics, ms, order_id, quantile, ready_client, seed, settle_aof,
    setup, BenchError, BenchRedis, CpuSplit, DaemonClock, DaemonProcess, SeedOptions, SeedOrder,
    TempDir,
};
use recur::admin::client::{AdminClient, RequestOptions};
use recur::domain::time::{to_millis, truncate_ms};
use recur::store;

/// How many clients send commands at once, each waiting for its reply.
pub const WORKERS: usize = 8;
/// How long before the burst the clients start (the idle reference figures).
pub const IDLE_WINDOW: Duration = Duration::from_secs(1);

/// Options of the admin-latency scenario.
#[derive(Debug, Clone)]
pub struct AdminOptions {
    /// Orders in the burst.
    pub orders: usize,
    pub binary: PathBuf,
}

impl AdminOptions {
    /// A burst of `orders` orders.
    pub fn new(orders: usize, binary: &Path) -> AdminOptions {
        AdminOptions {
            orders,
            binary: binary.to_path_buf(),
        }
    }
}

/// What the admin scenario measured.
#[derive(Debug, Clone)]
pub struct AdminReport {
    pub orders: usize,
    /// Latencies of commands sent during the burst, sorted.
    pub during: Vec<Duration>,
    /// Latencies of commands sent before the burst (idle), sorted.
    pub idle: Vec<Duration>,
    pub errors: usize,
    pub burst: Duration,
    /// Every commit during the run: the burst's transitions and the commands'.
    pub transitions: u64,
    pub peak_rss_kb: Option<u64>,
    /// CPU use of the daemon and Redis during the burst.
    pub cpu: String,
}

impl AdminReport {
    /// The one line the bench prints.
    pub fn line(&self) -> String {
        let max = self.during.last().copied().unwrap_or_default();
        format!(
            "admin orders={} clock=system commands_during_burst={} p50_ms={} p99_ms={} max_ms={} idle_commands={} idle_p50_ms={} idle_p99_ms={} errors={} burst_s={:.3} burst_transitions_per_s={:.0} transitions={} daemon_peak_rss_mb={} {}",
            self.orders,
            self.during.len(),
            ms(quantile(&self.during, 0.50)),
            ms(quantile(&self.during, 0.99)),
            ms(max),
            self.idle.len(),
            ms(quantile(&self.idle, 0.50)),
            ms(quantile(&self.idle, 0.99)),
            self.errors,
            self.burst.as_secs_f64(),
            self.orders as f64 / self.burst.as_secs_f64().max(1e-9),
            self.transitions,
            mb(self.peak_rss_kb),
            self.cpu,
        )
    }
}

struct Sample {
    sent: WallInstant,
    latency: Duration,
    ok: bool,
}

/// Runs the admin-latency scenario.
///
/// # Errors
/// [`BenchError`] when any step fails.
pub async fn run(opts: &AdminOptions) -> Result<AdminReport, BenchError> {
    let temp = TempDir::new()?;
    let redis = BenchRedis::start(&temp.redis_dir(), false).await?;
    let url = redis.url();
    let options = SeedOptions {
        events: false,
        ..SeedOptions::system()
    };

    // The orders the clients pause and resume: ACTIVE since yesterday, renewing monthly.
    let targets = (opts.orders / 10).clamp(10, 1000);
    let now = truncate_ms(chrono::Utc::now());
    let t0 = WallInstant::now();
    seed(&url, targets, &options, move |i| SeedOrder {
        id: format!("a{i:06}"),
        args: super::monthly_args(&format!("a{}", i % 100), "OFFLINE", 0),
        created: now - chrono::Duration::days(1),
        payment: None,
    })
    .await?;
    // Seeding rate, to place the burst's instant after the rest of the seeding and start-up.
    let rate = targets as f64 / t0.elapsed().as_secs_f64().max(1e-3);
    let lead = Duration::from_secs_f64(6.0 + 2.5 * opts.orders as f64 / rate.max(1000.0));
    let due =
        truncate_ms(chrono::Utc::now() + chrono::Duration::from_std(lead).unwrap_or_default());
    let created = due - chrono::Duration::days(7);
    seed(&url, opts.orders, &options, move |i| SeedOrder {
        id: order_id(i),
        args: weekly_args(&format!("c{}", i % 10_000)),
        created,
        payment: None,
    })
    .await?;
    settle_aof(&url).await?;

    let mut conn = store::connect(&url).await.map_err(setup("connect"))?;
    let due_ms = to_millis(&due);
    let scheduled = due_count(&mut conn, due_ms).await?;
    if scheduled != opts.orders as u64 {
        return Err(BenchError::Setup(format!(
            "{scheduled} of {} burst orders are due at the burst instant",
            opts.orders
        )));
    }

    let daemon = DaemonProcess::start_with(&opts.binary, &url, DaemonClock::System, &[])?;
    let client = ready_client(&url).await?;
    let before = metrics(&client).await?;
    let until_due = (due - chrono::Utc::now()).to_std().unwrap_or_default();
    if until_due < Duration::from_millis(500) {
        return Err(BenchError::Setup(format!(
            "seeding and start-up took longer than planned ({lead:?}); the burst began before \
             the daemon was ready: run again"
        )));
    }
    let burst_at = WallInstant::now() + until_due;

    let stop = AtomicBool::new(false);
    let workers = (0..WORKERS).map(|w| {
        let ids: Vec<String> = (w..targets)
            .step_by(WORKERS)
            .map(|i| format!("a{i:06}"))
            .collect();
        worker(&client, ids, &stop, burst_at.checked_sub(IDLE_WINDOW))
    });
    let monitor = async {
        tokio::time::sleep_until(burst_at.into()).await;
        let rewrites = super::aof_rewrites(&url).await?;
        let cpu_before = CpuSplit::now(&daemon, &redis);
        let end = loop {
            if due_count(&mut conn, due_ms).await? == 0 {
                break WallInstant::now();
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let cpu = format!(
            "{} aof_rewrites_during={}",
            cpu_before.figures(&CpuSplit::now(&daemon, &redis), end - burst_at),
            super::aof_rewrites(&url).await?.saturating_sub(rewrites)
        );
        // A little more, so the commands sent at the end of the burst are answered.
        tokio::time::sleep(Duration::from_millis(300)).await;
        stop.store(true, Ordering::Relaxed);
        Ok::<_, BenchError>((end, cpu))
    };
    let (samples, end) = tokio::join!(futures_util::future::join_all(workers), monitor);
    let (end, cpu) = end?;
    let after = metrics(&client).await?;
    let peak_rss_kb = daemon.peak_rss_kb();
    drop(client);
    daemon.stop().await;
    redis.stop().await;

    let samples: Vec<Sample> = samples.into_iter().flatten().collect();
    let errors = samples.iter().filter(|s| !s.ok).count();
    let mut during: Vec<Duration> = samples
        .iter()
        .filter(|s| s.sent >= burst_at && s.sent <= end)
        .map(|s| s.latency)
        .collect();
    let mut idle: Vec<Duration> = samples
        .iter()
        .filter(|s| s.sent < burst_at)
        .map(|s| s.latency)
        .collect();
    during.sort();
    idle.sort();
    Ok(AdminReport {
        orders: opts.orders,
        during,
        idle,
        errors,
        burst: end.saturating_duration_since(burst_at),
        transitions: metric_delta(&before, &after, "transitions"),
        peak_rss_kb,
        cpu,
    })
}

async fn worker(
    client: &AdminClient,
    ids: Vec<String>,
    stop: &AtomicBool,
    start_at: Option<WallInstant>,
) -> Vec<Sample> {
    if let Some(at) = start_at {
        tokio::time::sleep_until(at.into()).await;
    }
    let options = RequestOptions {
        attempt_timeout: Duration::from_secs(10),
        total_timeout: Duration::from_secs(120),
        ..RequestOptions::default()
    };
    let mut samples = Vec::new();
    'outer: loop {
        for id in &ids {
            for command in ["pauseOrder", "resumeOrder"] {
                if stop.load(Ordering::Relaxed) {
                    break 'outer;
                }
                let sent = WallInstant::now();
                let r = client
                    .request_with(options.clone(), command, json!({ "orderId": id }))
                    .await;
                let latency = sent.elapsed();
                let ok = matches!(&r, Ok(reply) if reply.ok);
                if !ok {
                    tracing::warn!(command, order = %id, reply = ?r.as_ref().map(|r| r.error.clone()), "admin bench command failed");
                }
                samples.push(Sample { sent, latency, ok });
            }
        }
        if ids.is_empty() {
            break;
        }
    }
    samples
}

/// A weekly OFFLINE subscription of 12 cycles.
fn weekly_args(customer: &str) -> Value {
    json!({
        "customerId": customer,
        "plan": {"id": "weekly", "name": "Weekly"},
        "type": "OFFLINE",
        "pricing": {"subscription": {"cycleDuration": {"count": 1, "unit": "WEEK"}, "cycleCount": 12}},
        "prices": [{"cycleFrom": 1, "amount": "2.50"}],
        "currency": "USD",
    })
}
