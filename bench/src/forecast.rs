//! `forecast`: a 36-month forecast over N orders (default 1,000,000): how long the daemon takes
//! to answer and how much memory it uses doing it.
//!
//! N monthly orders are seeded (no events), a mix of paid ONLINE, EXTERNAL and OFFLINE in USD
//! and EUR, unlimited and 12-cycle. The daemon starts (simulated clock) and answers one
//! `forecast` of 36 months; its VmRSS before and its peak (VmHWM) after are read from /proc.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant as WallInstant};

use serde_json::json;

use super::{
    mb, monthly_args, order_id, ready_client, redis_cpu_time, seed, settle_aof, setup, BenchError,
    BenchRedis, DaemonClock, DaemonProcess, SeedOptions, SeedOrder, TempDir, BENCH_START,
};
use recur::admin::client::RequestOptions;
use recur::domain::time::parse_instant;

/// Options of the forecast scenario.
#[derive(Debug, Clone)]
pub struct ForecastOptions {
    pub orders: usize,
    pub binary: PathBuf,
}

impl ForecastOptions {
    pub fn new(orders: usize, binary: &Path) -> ForecastOptions {
        ForecastOptions {
            orders,
            binary: binary.to_path_buf(),
        }
    }
}

/// What the forecast scenario measured.
#[derive(Debug, Clone)]
pub struct ForecastReport {
    pub orders: usize,
    pub elapsed: Duration,
    pub rss_before_kb: Option<u64>,
    pub peak_rss_kb: Option<u64>,
    pub cycle_starts: u64,
    pub seed_elapsed: Duration,
    /// CPU time the daemon used answering (all its threads).
    pub daemon_cpu: Option<Duration>,
    /// CPU time Redis used meanwhile.
    pub redis_cpu: Option<Duration>,
    /// The reply's totals over its months: charges per currency, ends, cancellations, and a
    /// digest (FNV-1a) of the reply's JSON, to check two daemons answer the same figures.
    pub totals: String,
}

impl ForecastReport {
    /// The one line the bench prints.
    pub fn line(&self) -> String {
        format!(
            "forecast orders={} months=36 took_s={:.2} orders_per_s={:.0} cycle_starts={} daemon_cpu_s={} redis_cpu_s={} daemon_rss_before_mb={} daemon_peak_rss_mb={} {} (seeding took {:.1}s)",
            self.orders,
            self.elapsed.as_secs_f64(),
            self.orders as f64 / self.elapsed.as_secs_f64().max(1e-9),
            self.cycle_starts,
            secs(self.daemon_cpu),
            secs(self.redis_cpu),
            mb(self.rss_before_kb),
            mb(self.peak_rss_kb),
            self.totals,
            self.seed_elapsed.as_secs_f64(),
        )
    }
}

/// Seconds with two decimals, `-` when not known.
fn secs(d: Option<Duration>) -> String {
    d.map_or_else(|| "-".to_string(), |d| format!("{:.2}", d.as_secs_f64()))
}

/// The reply's totals (see [`ForecastReport::totals`]).
fn totals(result: &serde_json::Value) -> String {
    use std::collections::BTreeMap;
    let months = result["months"].as_array().map_or(&[][..], Vec::as_slice);
    // Per currency: the sum in thousandths (no currency has more decimals) and the most
    // decimals written.
    let mut charges: BTreeMap<String, (i128, u32)> = BTreeMap::new();
    let (mut ends, mut cancellations) = (0, 0);
    for m in months {
        for (c, a) in m["charges"].as_object().into_iter().flatten() {
            let text = a.as_str().unwrap_or("0");
            let (whole, frac) = text.split_once('.').unwrap_or((text, ""));
            let digits = u32::try_from(frac.len()).unwrap_or(3).min(3);
            let value: i128 = format!("{whole}{frac}").parse().unwrap_or(0);
            let sum = charges.entry(c.clone()).or_default();
            sum.0 += value * 10_i128.pow(3 - digits);
            sum.1 = sum.1.max(digits);
        }
        ends += m["ends"].as_u64().unwrap_or(0);
        cancellations += m["cancellations"].as_u64().unwrap_or(0);
    }
    let charges: Vec<String> = charges
        .iter()
        .map(|(c, (sum, digits))| {
            let unit = 10_i128.pow(3);
            let frac = format!(".{:03}", (sum % unit).abs());
            format!(
                "{c}:{}{}",
                sum / unit,
                &frac[..(*digits as usize + 1).min(4) * usize::from(*digits > 0)]
            )
        })
        .collect();
    let digest = result
        .to_string()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!(
        "charges={} ends={ends} cancellations={cancellations} reply_fnv={digest:016x}",
        charges.join(",")
    )
}

/// The daemon binary: `RECUR_BENCH_FORECAST_DAEMON` when set (another build's, to compare two
/// daemons' answers and times with the same bench), else `binary`.
fn daemon_binary(binary: &Path) -> PathBuf {
    std::env::var_os("RECUR_BENCH_FORECAST_DAEMON")
        .map_or_else(|| binary.to_path_buf(), PathBuf::from)
}

/// Runs the forecast scenario.
///
/// # Errors
/// [`BenchError`] when any step fails.
pub async fn run(opts: &ForecastOptions) -> Result<ForecastReport, BenchError> {
    let temp = TempDir::new()?;
    let redis = BenchRedis::start(&temp.redis_dir(), false).await?;
    let url = redis.url();
    let start = parse_instant(BENCH_START).map_err(setup("start"))?;
    let seeded = WallInstant::now();
    let options = SeedOptions {
        events: false,
        ..SeedOptions::simulated()
    };
    seed(&url, opts.orders, &options, move |i| {
        let kind = ["ONLINE", "EXTERNAL", "OFFLINE"][i % 3];
        let mut args = monthly_args(&format!("c{}", i % 100_000), kind, [0, 12][i % 2]);
        if i % 4 == 0 {
            args["currency"] = json!("EUR");
        }
        SeedOrder {
            id: order_id(i),
            args,
            created: start,
            payment: (kind == "ONLINE").then(|| "9.99".to_string()),
        }
    })
    .await?;
    settle_aof(&url).await?;
    let seed_elapsed = seeded.elapsed();

    let daemon = DaemonProcess::start_with(
        &daemon_binary(&opts.binary),
        &url,
        DaemonClock::Simulated,
        &[],
    )?;
    let client = ready_client(&url).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before_kb = daemon.rss_kb();
    let options = RequestOptions {
        attempt_timeout: Duration::from_secs(600),
        total_timeout: Duration::from_secs(1800),
        ..RequestOptions::default()
    };
    let cpu_before = (daemon.cpu_time(), redis_cpu_time(&url).await.ok());
    let asked = WallInstant::now();
    let reply = client
        .request_with(
            options,
            "forecast",
            json!({"from": "2026-01-01T00:00:00Z", "to": "2028-12-31T00:00:00Z"}),
        )
        .await
        .map_err(|e| BenchError::Setup(format!("forecast: {e}")))?;
    let elapsed = asked.elapsed();
    let cpu_after = (daemon.cpu_time(), redis_cpu_time(&url).await.ok());
    let spent =
        |before: Option<Duration>, after: Option<Duration>| Some(after?.saturating_sub(before?));
    let daemon_cpu = spent(cpu_before.0, cpu_after.0);
    let redis_cpu = spent(cpu_before.1, cpu_after.1);
    let result = reply
        .result
        .ok_or_else(|| BenchError::Setup(format!("forecast refused: {:?}", reply.error)))?;
    let cycle_starts = result["months"].as_array().map_or(0, |m| {
        m.iter().filter_map(|m| m["cycleStarts"].as_u64()).sum()
    });
    let totals = totals(&result);
    let peak_rss_kb = daemon.peak_rss_kb();
    drop(client);
    daemon.stop().await;
    redis.stop().await;
    Ok(ForecastReport {
        orders: opts.orders,
        elapsed,
        rss_before_kb,
        peak_rss_kb,
        cycle_starts,
        seed_elapsed,
        daemon_cpu,
        redis_cpu,
        totals,
    })
}
