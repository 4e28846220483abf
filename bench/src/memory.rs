//! `memory`: the daemon's RSS with N orders (default 1M) in Redis, and bytes per resident actor.
//!
//! N monthly orders are seeded (no events: only the orders, their timers and indexes), none
//! due soon. The daemon starts (simulated clock, `actors.idle_passivation` short) and:
//! 1. idle, nothing resident: VmRSS;
//! 2. K orders touched with getOrder (K actors resident): VmRSS and `residentActors`;
//!    bytes per resident actor = (RSS with K − RSS idle) / resident;
//! 3. after every actor passivated (`residentActors` back to 0): VmRSS and VmHWM.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant as WallInstant};

use futures_util::StreamExt;
use serde_json::json;

use super::{
    mb, metrics, monthly_args, order_id, ready_client, redis_used_memory, seed, settle_aof, setup,
    BenchError, BenchRedis, DaemonClock, DaemonProcess, SeedOptions, SeedOrder, TempDir,
    BENCH_START,
};
use recur::admin::client::RequestOptions;
use recur::domain::time::parse_instant;

/// Options of the memory scenario.
#[derive(Debug, Clone)]
pub struct MemoryOptions {
    pub orders: usize,
    pub binary: PathBuf,
    /// How many orders are made resident (getOrder) to weigh an actor.
    pub touch: usize,
    /// The daemon's `actors.idle_passivation`.
    pub passivation: Duration,
}

impl MemoryOptions {
    /// `orders` orders; 10,000 touched (at most all); passivation after 5 s idle.
    pub fn new(orders: usize, binary: &Path) -> MemoryOptions {
        MemoryOptions {
            orders,
            binary: binary.to_path_buf(),
            touch: orders.min(10_000),
            passivation: Duration::from_secs(5),
        }
    }
}

/// What the memory scenario measured.
#[derive(Debug, Clone)]
pub struct MemoryReport {
    pub orders: usize,
    pub redis_used_bytes: u64,
    /// Redis's `used_memory` growth from the empty server to the seeded one, per order (the
    /// order, its timer and its indexes; no events).
    pub redis_bytes_per_order: f64,
    pub rss_idle_kb: Option<u64>,
    pub resident: u64,
    pub rss_resident_kb: Option<u64>,
    pub rss_passivated_kb: Option<u64>,
    pub resident_after: u64,
    pub peak_rss_kb: Option<u64>,
    pub touch_elapsed: Duration,
    pub seed_elapsed: Duration,
}

impl MemoryReport {
    /// RSS growth per resident actor, in bytes.
    pub fn bytes_per_actor(&self) -> Option<u64> {
        let (idle, with) = (self.rss_idle_kb?, self.rss_resident_kb?);
        (self.resident > 0).then(|| with.saturating_sub(idle) * 1024 / self.resident)
    }

    /// The one line the bench prints.
    pub fn line(&self) -> String {
        format!(
            "memory orders={} redis_used_mb={:.0} redis_b_per_order={:.0} daemon_rss_idle_mb={} resident_actors={} daemon_rss_with_resident_mb={} bytes_per_resident_actor={} daemon_rss_after_passivation_mb={} resident_after={} daemon_peak_rss_mb={} (getOrder x{} took {:.2}s; seeding took {:.1}s)",
            self.orders,
            self.redis_used_bytes as f64 / 1_048_576.0,
            self.redis_bytes_per_order,
            mb(self.rss_idle_kb),
            self.resident,
            mb(self.rss_resident_kb),
            self.bytes_per_actor().map_or("n/a".into(), |b| b.to_string()),
            mb(self.rss_passivated_kb),
            self.resident_after,
            mb(self.peak_rss_kb),
            self.resident,
            self.touch_elapsed.as_secs_f64(),
            self.seed_elapsed.as_secs_f64(),
        )
    }
}

/// Runs the memory scenario.
///
/// # Errors
/// [`BenchError`] when any step fails.
pub async fn run(opts: &MemoryOptions) -> Result<MemoryReport, BenchError> {
    let temp = TempDir::new()?;
    let redis = BenchRedis::start(&temp.redis_dir(), false).await?;
    let url = redis.url();
    let start = parse_instant(BENCH_START).map_err(setup("start"))?;
    let empty_bytes = redis_used_memory(&url).await?;
    let seeded = WallInstant::now();
    let options = SeedOptions {
        events: false,
        ..SeedOptions::simulated()
    };
    seed(&url, opts.orders, &options, move |i| SeedOrder {
        id: order_id(i),
        args: monthly_args(&format!("c{}", i % 100_000), "OFFLINE", 0),
        created: start,
        payment: None,
    })
    .await?;
    settle_aof(&url).await?;
    let seed_elapsed = seeded.elapsed();
    let redis_used_bytes = redis_used_memory(&url).await?;

    let passivation = format!("{}ms", opts.passivation.as_millis());
    let daemon = DaemonProcess::start_with(
        &opts.binary,
        &url,
        DaemonClock::Simulated,
        &[("RECUR_ACTORS__IDLE_PASSIVATION", passivation.as_str())],
    )?;
    let client = ready_client(&url).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_idle_kb = daemon.rss_kb();

    // K actors resident: getOrder on K orders spread over the id space, 256 at a time.
    let touched = WallInstant::now();
    let step = (opts.orders / opts.touch.max(1)).max(1);
    let options = RequestOptions {
        attempt_timeout: Duration::from_secs(10),
        total_timeout: Duration::from_secs(120),
        ..RequestOptions::default()
    };
    let failed = futures_util::stream::iter((0..opts.touch).map(|k| {
        let options = options.clone();
        let client = &client;
        async move {
            let r = client
                .request_with(
                    options,
                    "getOrder",
                    json!({ "orderId": order_id(k * step) }),
                )
                .await;
            !matches!(r, Ok(reply) if reply.ok)
        }
    }))
    .buffer_unordered(256)
    .filter(|failed| std::future::ready(*failed))
    .count()
    .await;
    if failed > 0 {
        return Err(BenchError::Setup(format!(
            "{failed} getOrder requests failed"
        )));
    }
    let touch_elapsed = touched.elapsed();
    let rss_resident_kb = daemon.rss_kb();
    let resident = metrics(&client).await?["residentActors"]
        .as_u64()
        .unwrap_or(0);

    // Every actor idle for longer than the passivation: wait until none is resident.
    let deadline = WallInstant::now() + opts.passivation * 4 + Duration::from_secs(30);
    let resident_after = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let r = metrics(&client).await?["residentActors"]
            .as_u64()
            .unwrap_or(0);
        if r == 0 || WallInstant::now() > deadline {
            break r;
        }
    };
    let rss_passivated_kb = daemon.rss_kb();
    let peak_rss_kb = daemon.peak_rss_kb();
    drop(client);
    daemon.stop().await;
    redis.stop().await;
    Ok(MemoryReport {
        orders: opts.orders,
        redis_used_bytes,
        redis_bytes_per_order: redis_used_bytes.saturating_sub(empty_bytes) as f64
            / opts.orders.max(1) as f64,
        rss_idle_kb,
        resident,
        rss_resident_kb,
        rss_passivated_kb,
        resident_after,
        peak_rss_kb,
        touch_elapsed,
        seed_elapsed,
    })
}
