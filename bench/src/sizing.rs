//! `sizing`: what Redis holds per order and per retained change entry, to size Redis and
//! `events.max_len` (docs/OPERATIONS.md, "Sizing Redis").
//!
//! N monthly OFFLINE orders without end (one customer per 10 orders) are seeded as createOrder
//! makes them: the order, its timer and indexes, its customer's stats, and its creation event
//! (one change entry). The event streams are then trimmed to nothing (`XTRIM MAXLEN 0`). The
//! daemon (simulated clock, `events.max_len` out of reach so nothing is trimmed) advances the
//! clock `months` months: every order starts a new cycle each month, and every change appends
//! an entry to its partition's event stream. The daemon stops and the streams are trimmed to
//! nothing again. From Redis's `used_memory` at each step:
//! - bytes per new order = (after the first trim − the empty server) / N;
//! - bytes per creation entry = (seeded − after the first trim) / N;
//! - bytes per change entry = (after the advance − after the second trim) / entries trimmed;
//! - bytes per order at rest = (after the second trim − the empty server) / N: what an order
//!   costs with no change retained, after `months` cycles;
//! - the append-only file's growth per change during the advance (disk; before any rewrite).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant as WallInstant};

use serde_json::json;

use super::{
    aof_rewrites, long_request, monthly_args, order_id, ready_client, redis_used_memory, seed,
    settle_aof, setup, BenchError, BenchRedis, DaemonClock, DaemonProcess, SeedOptions, SeedOrder,
    TempDir, BENCH_START, PREFIX,
};
use recur::domain::time::parse_instant;
use recur::store::{Keys, DEFAULT_PARTITIONS};

/// Options of the sizing scenario.
#[derive(Debug, Clone)]
pub struct SizingOptions {
    pub orders: usize,
    pub binary: PathBuf,
    /// How many monthly cycles the advance fires per order.
    pub months: u32,
}

impl SizingOptions {
    /// `orders` orders, 12 months.
    pub fn new(orders: usize, binary: &Path) -> SizingOptions {
        SizingOptions {
            orders,
            binary: binary.to_path_buf(),
            months: 12,
        }
    }
}

/// What the sizing scenario measured (`used_memory` in bytes at each step).
#[derive(Debug, Clone)]
pub struct SizingReport {
    pub orders: usize,
    pub months: u32,
    pub empty: u64,
    pub seeded: u64,
    /// After the seeding's creation entries were trimmed.
    pub fresh: u64,
    pub advanced: u64,
    pub trimmed: u64,
    /// Change entries the advance wrote.
    pub entries: u64,
    /// Change entries the seeding wrote (one creation event per order).
    pub seeded_entries: u64,
    /// Bytes the append-only file grew by during the advance, if no rewrite ran meanwhile.
    pub aof_growth: Option<u64>,
    pub advance_elapsed: Duration,
}

impl SizingReport {
    /// Redis bytes per retained change entry.
    pub fn bytes_per_entry(&self) -> f64 {
        self.advanced.saturating_sub(self.trimmed) as f64 / self.entries.max(1) as f64
    }

    /// Redis bytes per order with no change retained, after the advance's cycles.
    pub fn bytes_per_order(&self) -> f64 {
        self.trimmed.saturating_sub(self.empty) as f64 / self.orders.max(1) as f64
    }

    /// Redis bytes per order as created, with no change retained.
    pub fn bytes_per_new_order(&self) -> f64 {
        self.fresh.saturating_sub(self.empty) as f64 / self.orders.max(1) as f64
    }

    /// Redis bytes per creation entry (an orderCreated change).
    pub fn bytes_per_creation_entry(&self) -> f64 {
        self.seeded.saturating_sub(self.fresh) as f64 / self.seeded_entries.max(1) as f64
    }

    /// The one line the bench prints.
    pub fn line(&self) -> String {
        let aof = self
            .aof_growth
            .map_or("n/a (a rewrite ran)".to_string(), |g| {
                format!("{:.0}", g as f64 / self.entries.max(1) as f64)
            });
        format!(
            "sizing orders={} months={} change_entries={} redis_b_per_change_entry={:.0} redis_b_per_creation_entry={:.0} redis_b_per_new_order={:.0} redis_b_per_order_at_rest={:.0} aof_b_per_change={} redis_used_mb: empty={:.1} seeded={:.1} fresh={:.1} advanced={:.1} trimmed={:.1} (advance took {:.1}s)",
            self.orders,
            self.months,
            self.entries,
            self.bytes_per_entry(),
            self.bytes_per_creation_entry(),
            self.bytes_per_new_order(),
            self.bytes_per_order(),
            aof,
            self.empty as f64 / 1_048_576.0,
            self.seeded as f64 / 1_048_576.0,
            self.fresh as f64 / 1_048_576.0,
            self.advanced as f64 / 1_048_576.0,
            self.trimmed as f64 / 1_048_576.0,
            self.advance_elapsed.as_secs_f64(),
        )
    }
}

/// Runs the sizing scenario.
///
/// # Errors
/// [`BenchError`] when any step fails.
pub async fn run(opts: &SizingOptions) -> Result<SizingReport, BenchError> {
    let temp = TempDir::new()?;
    let redis_dir = temp.redis_dir();
    let redis = BenchRedis::start(&redis_dir, false).await?;
    let url = redis.url();
    let start = parse_instant(BENCH_START).map_err(setup("start"))?;
    let empty = redis_used_memory(&url).await?;
    let options = SeedOptions {
        events: true,
        stats: true,
        ..SeedOptions::simulated()
    };
    seed(&url, opts.orders, &options, move |i| SeedOrder {
        id: order_id(i),
        // cycleCount 0: no end, a cycle every month.
        args: monthly_args(&format!("c{}", i / 10), "OFFLINE", 0),
        created: start,
        payment: None,
    })
    .await?;
    settle_aof(&url).await?;
    let keys = Keys::new(PREFIX, DEFAULT_PARTITIONS);
    let seeded = redis_used_memory(&url).await?;
    let seeded_entries = stream_entries(&url, &keys).await?;
    trim_streams(&url, &keys).await?;
    let fresh = redis_used_memory(&url).await?;

    // No trim during the advance (the trim job runs on the simulated clock too).
    let daemon = DaemonProcess::start_with(
        &opts.binary,
        &url,
        DaemonClock::Simulated,
        &[("RECUR_EVENTS__MAX_LEN", "1000000000000")],
    )?;
    let client = ready_client(&url).await?;
    let rewrites = aof_rewrites(&url).await?;
    let aof_before = aof_bytes(&redis_dir);
    let to = start
        .checked_add_months(chrono::Months::new(opts.months))
        .ok_or_else(|| BenchError::Setup("months out of range".into()))?;
    let advancing = WallInstant::now();
    let r = client
        .request_with(
            long_request(),
            "advanceClock",
            json!({ "to": to.to_rfc3339() }),
        )
        .await
        .map_err(setup("advanceClock"))?;
    let advance_elapsed = advancing.elapsed();
    if !r.ok {
        return Err(BenchError::Setup(format!(
            "advanceClock failed: {:?}",
            r.error
        )));
    }
    drop(client);
    daemon.stop().await;
    // Written at least once a second (appendfsync everysec).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let aof_growth = (aof_rewrites(&url).await? == rewrites)
        .then(|| aof_bytes(&redis_dir).saturating_sub(aof_before));
    let advanced = redis_used_memory(&url).await?;
    let entries = stream_entries(&url, &keys).await?;

    trim_streams(&url, &keys).await?;
    let trimmed = redis_used_memory(&url).await?;
    redis.stop().await;
    Ok(SizingReport {
        orders: opts.orders,
        months: opts.months,
        empty,
        seeded,
        fresh,
        advanced,
        trimmed,
        entries,
        seeded_entries,
        aof_growth,
        advance_elapsed,
    })
}

/// Entries in every partition's event stream.
async fn stream_entries(url: &str, keys: &Keys) -> Result<u64, BenchError> {
    let mut conn = recur::store::connect(url).await.map_err(setup("connect"))?;
    let mut pipe = redis::pipe();
    for p in 0..keys.partitions() {
        pipe.cmd("XLEN").arg(keys.order_keys().events(p));
    }
    let lens: Vec<u64> = pipe.query_async(&mut conn).await.map_err(setup("XLEN"))?;
    Ok(lens.into_iter().sum())
}

/// Trims every partition's event stream to nothing.
async fn trim_streams(url: &str, keys: &Keys) -> Result<(), BenchError> {
    let mut conn = recur::store::connect(url).await.map_err(setup("connect"))?;
    let mut pipe = redis::pipe();
    for p in 0..keys.partitions() {
        pipe.cmd("XTRIM")
            .arg(keys.order_keys().events(p))
            .arg("MAXLEN")
            .arg(0);
    }
    let _: Vec<u64> = pipe.query_async(&mut conn).await.map_err(setup("XTRIM"))?;
    Ok(())
}

/// Bytes of the append-only files.
fn aof_bytes(redis_dir: &Path) -> u64 {
    std::fs::read_dir(redis_dir.join("appendonlydir"))
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}
