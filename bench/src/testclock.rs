//! `testclock`: an advance of N orders (default 10,000) on a test clock over a year, while live
//! orders on the system clock keep coming due (SPEC 11.5, issue 28).
//!
//! N monthly OFFLINE orders (12 cycles) are seeded on test clock `bench`, created at
//! [`BENCH_START`]. The daemon runs on the system clock. A probe creates a live order every
//! 20 ms whose start is due 300 ms later; each start's lateness is the time between its due
//! instant and its commit (the millisecond of its event-stream entry id, Redis's clock). The
//! probe runs 5 s alone, then during one `advanceTestClock` of the clock by a year. Reported:
//! the advance's time and rate, and the live starts' lateness p50 / p99 / max alone and during.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant as WallInstant};

use serde_json::{json, Value};

use super::{
    monthly_args, order_id, ready_client, seed, settle_aof, setup, BenchError, BenchRedis,
    DaemonClock, DaemonProcess, SeedOptions, SeedOrder, TempDir, BENCH_START, PREFIX,
};
use recur::admin::client::{AdminClient, RequestOptions};
use recur::domain::time::{format_instant, parse_instant};

/// How often the probe creates a live order, and how far ahead its start is due.
const PROBE_EVERY: Duration = Duration::from_millis(20);
const PROBE_AHEAD_MS: i64 = 300;

/// Options of the testclock scenario.
#[derive(Debug, Clone)]
pub struct TestClockOptions {
    pub orders: usize,
    pub binary: PathBuf,
}

impl TestClockOptions {
    pub fn new(orders: usize, binary: &Path) -> TestClockOptions {
        TestClockOptions {
            orders,
            binary: binary.to_path_buf(),
        }
    }
}

/// Lateness figures of one phase, in ms.
#[derive(Debug, Clone, Default)]
pub struct Lateness {
    pub samples: usize,
    pub p50: i64,
    pub p99: i64,
    pub max: i64,
}

impl Lateness {
    fn of(mut late: Vec<i64>) -> Lateness {
        late.sort_unstable();
        let at = |q: f64| {
            late.get(((late.len() as f64 * q).ceil() as usize).saturating_sub(1))
                .copied()
                .unwrap_or(0)
        };
        Lateness {
            samples: late.len(),
            p50: at(0.5),
            p99: at(0.99),
            max: late.last().copied().unwrap_or(0),
        }
    }
}

/// What the testclock scenario measured.
#[derive(Debug, Clone)]
pub struct TestClockReport {
    pub orders: usize,
    pub advance: Duration,
    pub changes: usize,
    pub alone: Lateness,
    pub during: Lateness,
}

impl TestClockReport {
    /// The one line the bench prints.
    pub fn line(&self) -> String {
        format!(
            "testclock orders={} span=1y changes={} advance_s={:.2} changes_per_s={:.0} live_late_ms_alone p50={} p99={} max={} n={} live_late_ms_during p50={} p99={} max={} n={}",
            self.orders,
            self.changes,
            self.advance.as_secs_f64(),
            self.changes as f64 / self.advance.as_secs_f64().max(1e-9),
            self.alone.p50,
            self.alone.p99,
            self.alone.max,
            self.alone.samples,
            self.during.p50,
            self.during.p99,
            self.during.max,
            self.during.samples,
        )
    }
}

/// Runs the testclock scenario.
///
/// # Errors
/// [`BenchError`] when any step fails.
pub async fn run(opts: &TestClockOptions) -> Result<TestClockReport, BenchError> {
    let temp = TempDir::new()?;
    let redis = BenchRedis::start(&temp.redis_dir(), false).await?;
    let url = redis.url();
    let start = parse_instant(BENCH_START).map_err(setup("start"))?;
    let options = SeedOptions {
        events: false,
        ..SeedOptions::system()
    };
    seed(&url, opts.orders, &options, move |i| {
        let mut args = monthly_args(&format!("tc{i}"), "OFFLINE", 12);
        args["paid"] = json!(true);
        args["testClockId"] = json!("bench");
        SeedOrder {
            id: order_id(i),
            args,
            created: start,
            payment: None,
        }
    })
    .await?;
    settle_aof(&url).await?;

    let daemon = DaemonProcess::start_with(&opts.binary, &url, DaemonClock::System, &[])?;
    let client = ready_client(&url).await?;
    let clock = client
        .request(
            "createTestClock",
            json!({"testClockId": "bench", "frozenTime": BENCH_START}),
        )
        .await
        .map_err(setup("createTestClock"))?;
    if !clock.ok {
        return Err(BenchError::Setup(format!(
            "createTestClock: {:?}",
            clock.error
        )));
    }

    // Alone: the live starts for 5 s.
    let stop = tokio::sync::watch::channel(false);
    let alone_ids = probe(&client, "a", stop.1.clone(), Some(Duration::from_secs(5))).await?;
    tokio::time::sleep(Duration::from_millis(PROBE_AHEAD_MS as u64 + 500)).await;

    // During: the same, while the test clock advances a year.
    let advancer = AdminClient::connect(&url, PREFIX)
        .await
        .map_err(setup("client"))?;
    let (done_tx, done_rx) = (stop.0, stop.1);
    let advance = async move {
        let options = RequestOptions {
            attempt_timeout: Duration::from_secs(600),
            total_timeout: Duration::from_secs(1800),
            ..RequestOptions::default()
        };
        let asked = WallInstant::now();
        let reply = advancer
            .request_with(
                options,
                "advanceTestClock",
                json!({"testClockId": "bench", "to": "2027-01-01T00:00:00Z"}),
            )
            .await;
        let took = asked.elapsed();
        done_tx.send(true).ok();
        (reply, took)
    };
    let (advanced, during_ids) = tokio::join!(advance, probe(&client, "d", done_rx, None));
    let (reply, took) = advanced;
    let reply = reply.map_err(setup("advanceTestClock"))?;
    if !reply.ok {
        return Err(BenchError::Setup(format!(
            "advanceTestClock: {:?}",
            reply.error
        )));
    }
    let during_ids = during_ids?;
    tokio::time::sleep(Duration::from_millis(PROBE_AHEAD_MS as u64 + 500)).await;

    let changes = stream_changes(&url).await?;
    let on_clock = changes
        .iter()
        .filter(|(_, c)| c.get("testClockId").is_some())
        .count();
    let late = |ids: &HashSet<String>| {
        Lateness::of(
            changes
                .iter()
                .filter(|(_, c)| {
                    c["version"].as_u64() > Some(1)
                        && c["orderId"].as_str().is_some_and(|id| ids.contains(id))
                })
                // One sample per fired change: its first event's instant is the due one.
                .filter_map(|(at, c)| {
                    let due = parse_instant(c["events"][0]["eventTime"].as_str()?).ok()?;
                    Some(at - due.timestamp_millis())
                })
                .collect(),
        )
    };
    let report = TestClockReport {
        orders: opts.orders,
        advance: took,
        changes: on_clock,
        alone: late(&alone_ids),
        during: late(&during_ids),
    };
    drop(client);
    daemon.stop().await;
    redis.stop().await;
    Ok(report)
}

/// Creates a live order every [`PROBE_EVERY`], its start due [`PROBE_AHEAD_MS`] later, for
/// `for_at_most` or until `stop` turns true; returns their ids.
async fn probe(
    client: &AdminClient,
    tag: &str,
    mut stop: tokio::sync::watch::Receiver<bool>,
    for_at_most: Option<Duration>,
) -> Result<HashSet<String>, BenchError> {
    let started = WallInstant::now();
    let mut ids = HashSet::new();
    let mut tick = tokio::time::interval(PROBE_EVERY);
    for i in 0.. {
        if *stop.borrow() || for_at_most.is_some_and(|d| started.elapsed() >= d) {
            break;
        }
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => continue,
        }
        let due = chrono::Utc::now() + chrono::Duration::milliseconds(PROBE_AHEAD_MS);
        let id = format!("live-{tag}{i}");
        let mut args = monthly_args(&format!("lc-{tag}{i}"), "OFFLINE", 12);
        args["orderId"] = json!(id);
        args["paid"] = json!(true);
        args["startDate"] = json!(format_instant(&due));
        let reply = client
            .request("createOrder", args)
            .await
            .map_err(setup("probe createOrder"))?;
        if reply.ok {
            ids.insert(id);
        }
    }
    Ok(ids)
}

/// Every change entry of every partition's stream: (its entry's ms, the change).
async fn stream_changes(url: &str) -> Result<Vec<(i64, Value)>, BenchError> {
    let client = redis::Client::open(url).map_err(setup("redis"))?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(setup("redis"))?;
    let partitions: Option<u16> = redis::cmd("HGET")
        .arg(format!("{PREFIX}:meta"))
        .arg("partitions")
        .query_async(&mut conn)
        .await
        .map_err(setup("meta"))?;
    let mut out = Vec::new();
    for p in 0..partitions.unwrap_or(64) {
        let rows: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
            .arg(format!("{PREFIX}:{{p{p}}}:events"))
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .map_err(setup("xrange"))?;
        for (id, fields) in rows {
            let ms = id
                .split('-')
                .next()
                .and_then(|m| m.parse::<i64>().ok())
                .unwrap_or(0);
            if let Some((_, change)) = fields.into_iter().find(|(k, _)| k == "change") {
                out.push((ms, serde_json::from_str(&change).unwrap_or(Value::Null)));
            }
        }
    }
    Ok(out)
}
