//! `recovery`: N orders overdue after downtime. The orders are seeded as if they had been
//! created a month ago by a daemon on the SYSTEM clock (built by `domain::create` at that past
//! instant), so cycle 2 of each fell due within the last hour while no daemon ran. Then the
//! daemon starts (`--clock system`) and catches up: every overdue timer fires, stamped with its
//! own due time.
//!
//! Measured from the daemon's spawn: the first transition (the event stream grows) and all
//! caught up (no timer left due at or before the instant the seeding called now).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant as WallInstant};

use chrono::Months;

use super::{
    due_count, mb, metrics, mix, monthly_args, order_id, ready_client, seed, settle_aof, setup,
    BenchError, BenchRedis, CpuSplit, DaemonClock, DaemonProcess, SeedOptions, SeedOrder, TempDir,
    PREFIX,
};
use recur::domain::time::{to_millis, truncate_ms};
use recur::store::{self, Keys};

/// Options of the recovery scenario.
#[derive(Debug, Clone)]
pub struct RecoveryOptions {
    pub orders: usize,
    pub binary: PathBuf,
}

impl RecoveryOptions {
    /// `orders` overdue orders.
    pub fn new(orders: usize, binary: &Path) -> RecoveryOptions {
        RecoveryOptions {
            orders,
            binary: binary.to_path_buf(),
        }
    }
}

/// What the recovery scenario measured.
#[derive(Debug, Clone)]
pub struct RecoveryReport {
    pub orders: usize,
    pub first_transition: Duration,
    pub caught_up: Duration,
    pub ready: Duration,
    pub transitions: u64,
    pub peak_rss_kb: Option<u64>,
    pub seed_elapsed: Duration,
    /// CPU use of the daemon and Redis from spawn to caught up.
    pub cpu: String,
}

impl RecoveryReport {
    /// The one line the bench prints.
    pub fn line(&self) -> String {
        let catch_up = self.caught_up.saturating_sub(self.first_transition);
        format!(
            "recovery orders={} first_transition_s={:.3} all_caught_up_s={:.3} ready_s={:.3} transitions={} catch_up_transitions_per_s={:.0} daemon_peak_rss_mb={} {} (seeding took {:.1}s)",
            self.orders,
            self.first_transition.as_secs_f64(),
            self.caught_up.as_secs_f64(),
            self.ready.as_secs_f64(),
            self.transitions,
            self.transitions as f64 / catch_up.as_secs_f64().max(1e-9),
            mb(self.peak_rss_kb),
            self.cpu,
            self.seed_elapsed.as_secs_f64(),
        )
    }
}

/// Runs the recovery scenario.
///
/// # Errors
/// [`BenchError`] when any step fails.
pub async fn run(opts: &RecoveryOptions) -> Result<RecoveryReport, BenchError> {
    let temp = TempDir::new()?;
    let redis = BenchRedis::start(&temp.redis_dir(), false).await?;
    let url = redis.url();

    let now = truncate_ms(chrono::Utc::now());
    let month_ago = now
        .checked_sub_months(Months::new(1))
        .ok_or_else(|| BenchError::Setup("a month ago".into()))?;
    let seeded = WallInstant::now();
    let options = SeedOptions {
        events: false,
        ..SeedOptions::system()
    };
    seed(&url, opts.orders, &options, move |i| {
        // Due between 1 minute and 1 hour ago.
        let late_s = 60 + (mix(i as u64) % 3540) as i64;
        SeedOrder {
            id: order_id(i),
            args: monthly_args(&format!("c{}", i % 10_000), "OFFLINE", 12),
            created: month_ago - chrono::Duration::seconds(late_s),
            payment: None,
        }
    })
    .await?;
    settle_aof(&url).await?;
    let seed_elapsed = seeded.elapsed();

    let mut conn = store::connect(&url).await.map_err(setup("connect"))?;
    let overdue = due_count(&mut conn, to_millis(&now)).await?;
    if overdue != opts.orders as u64 {
        return Err(BenchError::Setup(format!(
            "{overdue} of {} seeded orders are overdue",
            opts.orders
        )));
    }
    // Change entries over every partition's event stream.
    let keys = Keys::new(PREFIX, recur::store::DEFAULT_PARTITIONS);
    let xlen = |mut c: recur::store::RedisConn| {
        let keys = keys.clone();
        async move {
            let mut pipe = redis::pipe();
            for p in 0..keys.partitions() {
                pipe.cmd("XLEN").arg(keys.order_keys().events(p));
            }
            let lens: Vec<u64> = pipe.query_async(&mut c).await.map_err(setup("XLEN"))?;
            Ok::<u64, BenchError>(lens.into_iter().sum())
        }
    };
    let base_len = xlen(conn.clone()).await?;

    let rewrites = super::aof_rewrites(&url).await?;
    let redis_cpu = super::cpu_time(redis.pid()).unwrap_or_default();
    let mut daemon = DaemonProcess::start_with(&opts.binary, &url, DaemonClock::System, &[])?;
    let spawned = daemon.spawned;
    let cpu_before = CpuSplit {
        daemon: Duration::ZERO,
        redis: redis_cpu,
    };
    let limit = Duration::from_secs(1800);
    let first_transition = loop {
        if xlen(conn.clone()).await? > base_len {
            break spawned.elapsed();
        }
        check_alive(&mut daemon, spawned, limit)?;
        tokio::time::sleep(Duration::from_millis(2)).await;
    };
    let caught_up = loop {
        if due_count(&mut conn, to_millis(&now)).await? == 0 {
            break spawned.elapsed();
        }
        check_alive(&mut daemon, spawned, limit)?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let cpu = format!(
        "{} aof_rewrites_during={}",
        cpu_before.figures(&CpuSplit::now(&daemon, &redis), caught_up),
        super::aof_rewrites(&url).await?.saturating_sub(rewrites)
    );
    let client = ready_client(&url).await?;
    let ready = spawned.elapsed();
    let m = metrics(&client).await?;
    let peak_rss_kb = daemon.peak_rss_kb();
    drop(client);
    daemon.stop().await;
    redis.stop().await;
    Ok(RecoveryReport {
        orders: opts.orders,
        first_transition,
        caught_up,
        ready,
        transitions: m["transitions"].as_u64().unwrap_or(0),
        peak_rss_kb,
        seed_elapsed,
        cpu,
    })
}

fn check_alive(
    daemon: &mut DaemonProcess,
    spawned: WallInstant,
    limit: Duration,
) -> Result<(), BenchError> {
    if let Some(status) = daemon.exited() {
        return Err(BenchError::Setup(format!("the daemon exited: {status}")));
    }
    if spawned.elapsed() > limit {
        return Err(BenchError::Setup(
            "the daemon did not catch up in time".into(),
        ));
    }
    Ok(())
}
