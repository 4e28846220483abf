//! `burst` and `burst-end`: N orders due at the same simulated instant, one advanceClock past
//! it, measured until the reply (which comes only when every transition is committed).
//!
//! - burst: monthly OFFLINE orders of 12 cycles created at [`BENCH_START`]; cycle 2 of every
//!   one starts on 2026-02-01 (orderCycleStarted + orderUpdated; no stats delta).
//! - burst-end: monthly OFFLINE orders of ONE cycle, so every order ENDS on 2026-02-01
//!   (orderEnded + orderUpdated) and, since it leaves ACTIVE, also sends its customer a stats
//!   delta (applied exactly once through the outbox and the customer's actor).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as WallInstant};

use serde_json::{json, Value};

use recur::admin::client::AdminClient;

use super::{
    aof_rewrites, command_stats, long_request, mb, metric_delta, monthly_args, order_id,
    ready_client_to, seed_monthly_kind_to, seed_to, settle_aof, setup, BenchError, BenchRedis,
    BurstOrders, CpuSplit, DaemonClock, DaemonProcess, RedisBytes, SeedOptions, SeedOrder, TempDir,
    BENCH_START,
};
use recur::domain::time::parse_instant;
use recur::store::RedisAddress;

/// The instant the advance goes to: just past 2026-02-01, when every seeded order is due.
pub const BURST_TO: &str = "2026-02-01T00:00:01Z";

/// Options of the burst scenarios.
#[derive(Debug, Clone)]
pub struct BurstOptions {
    pub orders: usize,
    /// The `recur` binary to run as the daemon (normally the current executable).
    pub binary: PathBuf,
    /// Run Redis on a loopback TCP port instead of the unix socket (to compare with a peer
    /// that needs TCP on the same kind of server).
    pub tcp: bool,
    /// Run Redis as a private 3-master Redis Cluster on loopback TCP ports (`--cluster`).
    pub cluster: bool,
    /// Run Redis on a loopback TCP port with one local replica (`--replica`).
    pub replica: bool,
    /// How many daemons share the partitions (`--daemons`, default 1).
    pub daemons: usize,
    /// Redis append-only (`appendfsync everysec`, the default) or not.
    pub aof: bool,
    /// A webhook endpoint every event goes to (`--webhook`).
    pub webhook: Option<WebhookTarget>,
    /// burst: which orders come due (`RECUR_BENCH_BURST_ORDERS`, OFFLINE by default).
    pub kind: BurstOrders,
}

/// The endpoint of `--webhook`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WebhookTarget {
    /// A local receiver that answers 200 to every delivery.
    Ok,
    /// A local port nothing listens on (every attempt is a refused connection).
    Down,
}

/// The bench's webhook receiver: counts deliveries and when the last one came.
#[derive(Clone)]
struct Receiver {
    count: Arc<AtomicU64>,
    last: Arc<Mutex<Option<WallInstant>>>,
}

async fn receive(axum::extract::State(rx): axum::extract::State<Receiver>) -> &'static str {
    rx.count.fetch_add(1, Ordering::Relaxed);
    *rx.last
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(WallInstant::now());
    "ok"
}

/// Starts the receiver (`Ok`) or finds a port that refuses connections (`Down`): the URL, and
/// the receiver when there is one.
async fn webhook_endpoint(target: WebhookTarget) -> Result<(String, Option<Receiver>), BenchError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(setup("bind the webhook receiver"))?;
    let addr = listener
        .local_addr()
        .map_err(setup("webhook receiver address"))?;
    let url = format!("http://{addr}/hook");
    if target == WebhookTarget::Down {
        drop(listener);
        return Ok((url, None));
    }
    let rx = Receiver {
        count: Arc::default(),
        last: Arc::default(),
    };
    let app = axum::Router::new()
        .route("/hook", axum::routing::post(receive))
        .with_state(rx.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((url, Some(rx)))
}

impl BurstOptions {
    /// `orders` orders, unix socket.
    pub fn new(orders: usize, binary: &Path) -> BurstOptions {
        BurstOptions {
            orders,
            binary: binary.to_path_buf(),
            tcp: false,
            cluster: false,
            replica: false,
            daemons: 1,
            aof: true,
            webhook: None,
            kind: BurstOrders::from_env(),
        }
    }
}

/// What a burst measured.
#[derive(Debug, Clone)]
pub struct BurstReport {
    /// "burst" or "burst-end".
    pub scenario: &'static str,
    /// burst: which orders came due (burst-end: OFFLINE).
    pub kind: BurstOrders,
    pub orders: usize,
    pub transitions: u64,
    pub events: u64,
    pub stats_deltas: u64,
    pub elapsed: Duration,
    pub peak_rss_kb: Option<u64>,
    pub seed_elapsed: Duration,
    /// How Redis was reached: unix, tcp or cluster3.
    pub redis: &'static str,
    /// `redis.wait_replicas` of the daemons (`RECUR_REDIS__WAIT_REPLICAS`, 0 when unset).
    pub wait_replicas: String,
    /// How many daemons shared the work.
    pub daemons: usize,
    /// Whether Redis was append-only.
    pub aof: bool,
    /// CPU use of the daemon and Redis during the advance (`daemon_cpu_pct=.. redis_cpu_pct=..`).
    pub cpu: String,
    /// The daemons' and Redis's CPU time per transition, µs (what a transition costs whatever
    /// else the machine runs).
    pub cpu_us_per_transition: f64,
    /// With `--webhook`: ` webhook=ok deliveries=.. deliveries_per_s=..` or ` webhook=down`.
    pub webhook: String,
}

impl BurstReport {
    /// Transitions committed per second.
    pub fn transitions_per_s(&self) -> f64 {
        self.transitions as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    /// The one line the bench prints.
    pub fn line(&self) -> String {
        let secs = self.elapsed.as_secs_f64().max(1e-9);
        let stats = if self.scenario == "burst-end" {
            format!(
                " stats_deltas={} stats_deltas_per_s={:.0}",
                self.stats_deltas,
                self.stats_deltas as f64 / secs
            )
        } else {
            String::new()
        };
        format!(
            "{} orders={} kind={} daemons={} transitions={} events={} elapsed_s={:.3} transitions_per_s={:.0} events_per_s={:.0}{} daemon_peak_rss_mb={} {} redis={} wait_replicas={} aof={}{} (seeding took {:.1}s)",
            self.scenario,
            self.orders,
            self.kind.name(),
            self.daemons,
            self.transitions,
            self.events,
            secs,
            self.transitions_per_s(),
            self.events as f64 / secs,
            stats,
            mb(self.peak_rss_kb),
            self.cpu,
            self.redis,
            self.wait_replicas,
            if self.aof { "on" } else { "off" },
            self.webhook,
            self.seed_elapsed.as_secs_f64(),
        )
    }
}

/// The burst scenario: `orders` orders whose next cycle is due at the same simulated instant;
/// one advanceClock past it; transitions and events committed per second, daemon peak RSS.
///
/// # Errors
/// [`BenchError`] when any step fails.
pub async fn burst(opts: &BurstOptions) -> Result<BurstReport, BenchError> {
    run(opts, "burst").await
}

/// The burst-end scenario: `orders` one-cycle orders that all end at the same instant; every
/// transition also applies a customer-stats delta.
///
/// # Errors
/// [`BenchError`] when any step fails.
pub async fn burst_end(opts: &BurstOptions) -> Result<BurstReport, BenchError> {
    run(opts, "burst-end").await
}

async fn run(opts: &BurstOptions, scenario: &'static str) -> Result<BurstReport, BenchError> {
    let temp = TempDir::new()?;
    let redis = start_redis(opts, &temp).await?;
    let address = redis.address();
    // Per-server figures and AOF handling: every node of a cluster.
    let servers = redis.server_urls();
    let seeded = WallInstant::now();
    seed_burst(opts, scenario, &address).await?;
    if opts.aof {
        for url in &servers {
            settle_aof(url).await?;
        }
    }
    redis.wait_replica_caught_up().await?;
    let seed_elapsed = seeded.elapsed();

    let n = opts.daemons.max(1);
    let ids: Vec<String> = (0..n).map(|i| format!("bench-d{i}")).collect();
    let (hook_env, receiver) = match opts.webhook {
        Some(target) => {
            let (url, rx) = webhook_endpoint(target).await?;
            let endpoints =
                format!(r#"[{{id="bench", url="{url}", secret="bench-secret", events=["*"]}}]"#);
            (Some(endpoints), rx)
        }
        None => (None, None),
    };
    let daemons = start_daemons(opts, &address, &ids, hook_env.as_deref())?;
    let client = ready_client_to(&address).await?;
    // The figures of every daemon, once they share the partitions fairly.
    wait_balanced(&client, &ids).await?;
    let before = group_metrics(&client, &ids).await?;
    let rewrites = all_aof_rewrites(&servers).await?;
    for url in &servers {
        command_stats(url, true).await?;
    }
    let bytes_before = RedisBytes::now(&servers).await?;
    let cpu_before = CpuSplit::now_group(&daemons, &redis);
    let started = WallInstant::now();
    let r = client
        .request_with(long_request(), "advanceClock", json!({ "to": BURST_TO }))
        .await
        .map_err(setup("advanceClock"))?;
    let elapsed = started.elapsed();
    let cpu_after = CpuSplit::now_group(&daemons, &redis);
    let bytes_after = RedisBytes::now(&servers).await?;
    let rewrites = all_aof_rewrites(&servers).await?.saturating_sub(rewrites);
    for url in &servers {
        command_stats(url, false).await?;
    }
    if !r.ok {
        return Err(BenchError::Setup(format!(
            "advanceClock failed: {:?}",
            r.error
        )));
    }
    let after = group_metrics(&client, &ids).await?;
    let transitions = metric_delta(&before, &after, "transitions");
    let events = metric_delta(&before, &after, "eventsWritten");
    let webhook = webhook_figures(opts.webhook, receiver.as_ref(), events, started).await;
    let cpu = format!(
        "{} daemon_cpu_us_per_transition={:.1} redis_cpu_us_per_transition={:.1} {} aof_rewrites_during={rewrites}",
        cpu_before.figures(&cpu_after, elapsed),
        cpu_before.daemon_us_per(&cpu_after, transitions),
        cpu_before.redis_us_per(&cpu_after, transitions),
        bytes_before.figures(&bytes_after, transitions),
    );
    let cpu_us_per_transition = cpu_before.daemon_us_per(&cpu_after, transitions)
        + cpu_before.redis_us_per(&cpu_after, transitions);
    let peak_rss_kb = daemons.iter().filter_map(DaemonProcess::peak_rss_kb).max();
    drop(client);
    for daemon in daemons {
        daemon.stop().await;
    }
    let redis_kind = redis.kind();
    redis.stop().await;
    Ok(BurstReport {
        scenario,
        kind: if scenario == "burst" {
            opts.kind
        } else {
            BurstOrders::Offline
        },
        orders: opts.orders,
        transitions,
        events,
        stats_deltas: metric_delta(&before, &after, "statsDeltasApplied"),
        elapsed,
        peak_rss_kb,
        seed_elapsed,
        redis: redis_kind,
        wait_replicas: std::env::var("RECUR_REDIS__WAIT_REPLICAS").unwrap_or_else(|_| "0".into()),
        daemons: n,
        aof: opts.aof,
        cpu,
        cpu_us_per_transition,
        webhook,
    })
}

/// The burst's private Redis: a cluster, a master with its replica, or one server.
async fn start_redis(opts: &BurstOptions, temp: &TempDir) -> Result<BenchRedis, BenchError> {
    if opts.cluster {
        BenchRedis::start_cluster(&temp.redis_dir()).await
    } else if opts.replica {
        BenchRedis::start_replicated(&temp.redis_dir(), opts.aof).await
    } else {
        BenchRedis::start_with(&temp.redis_dir(), opts.tcp, opts.aof).await
    }
}

/// Seeds the burst's orders: `burst` those of its kind, `burst-end` one-cycle OFFLINE orders
/// whose customers' statistics are kept.
async fn seed_burst(
    opts: &BurstOptions,
    scenario: &str,
    address: &RedisAddress,
) -> Result<(), BenchError> {
    if scenario == "burst" {
        return seed_monthly_kind_to(address, opts.orders, opts.kind).await;
    }
    let start = parse_instant(BENCH_START).map_err(setup("start"))?;
    let options = SeedOptions {
        stats: true,
        ..SeedOptions::simulated()
    };
    seed_to(address, opts.orders, &options, move |i| SeedOrder {
        id: order_id(i),
        args: monthly_args(&format!("c{}", i % 10_000), "OFFLINE", 1),
        created: start,
        payment: None,
    })
    .await
}

/// One daemon per id, on the simulated clock, with the webhook endpoints if any.
fn start_daemons(
    opts: &BurstOptions,
    address: &RedisAddress,
    ids: &[String],
    hook_env: Option<&str>,
) -> Result<Vec<DaemonProcess>, BenchError> {
    let mut daemons = Vec::new();
    for id in ids {
        let mut env = vec![("RECUR_CLUSTER__DAEMON_ID", id.as_str())];
        if let Some(endpoints) = hook_env {
            env.push(("RECUR_WEBHOOKS__ENDPOINTS", endpoints));
        }
        daemons.push(DaemonProcess::start_on(
            &opts.binary,
            address,
            DaemonClock::Simulated,
            &env,
        )?);
    }
    Ok(daemons)
}

/// The webhook part of the line: with an endpoint that answers 200, waits until every event
/// of the burst was delivered (the receiver counts attempts that got 200).
async fn webhook_figures(
    target: Option<WebhookTarget>,
    receiver: Option<&Receiver>,
    events: u64,
    started: WallInstant,
) -> String {
    match (target, receiver) {
        (Some(WebhookTarget::Ok), Some(rx)) => {
            let deadline = WallInstant::now() + Duration::from_secs(900);
            while rx.count.load(Ordering::Relaxed) < events && WallInstant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let delivered = rx.count.load(Ordering::Relaxed);
            let last = rx
                .last
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .unwrap_or(started);
            let secs = last.duration_since(started).as_secs_f64().max(1e-9);
            format!(
                " webhook=ok deliveries={delivered} deliveries_per_s={:.0} all_delivered_after_s={secs:.3}",
                delivered as f64 / secs
            )
        }
        (Some(_), _) => " webhook=down".to_string(),
        (None, _) => String::new(),
    }
}

/// The counters of every daemon of `ids` (getMetrics `daemonId`), summed.
async fn group_metrics(client: &AdminClient, ids: &[String]) -> Result<Value, BenchError> {
    let mut sum = json!({});
    for id in ids {
        let m = daemon_metrics(client, id).await?;
        for k in [
            "transitions",
            "eventsWritten",
            "statsDeltasApplied",
            "partitionsOwned",
        ] {
            let total = sum[k].as_u64().unwrap_or(0) + m[k].as_u64().unwrap_or(0);
            sum[k] = json!(total);
        }
    }
    Ok(sum)
}

async fn daemon_metrics(client: &AdminClient, id: &str) -> Result<Value, BenchError> {
    let r = client
        .request("getMetrics", json!({ "daemonId": id }))
        .await
        .map_err(setup("getMetrics"))?;
    r.result
        .as_ref()
        .map(super::figures)
        .ok_or_else(|| BenchError::Setup(format!("getMetrics of {id} failed: {:?}", r.error)))
}

/// Waits until the daemons `ids` hold every partition, each at most its fair share.
async fn wait_balanced(client: &AdminClient, ids: &[String]) -> Result<(), BenchError> {
    for _ in 0..600 {
        let mut owned = Vec::new();
        let mut partitions = 0;
        for id in ids {
            let m = daemon_metrics(client, id).await?;
            owned.push(m["partitionsOwned"].as_u64().unwrap_or(0));
            partitions = m["partitions"].as_u64().unwrap_or(partitions);
        }
        let total: u64 = owned.iter().sum();
        let share = total.div_ceil(ids.len() as u64);
        if partitions > 0 && total == partitions && owned.iter().all(|o| *o <= share && *o > 0) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(BenchError::Setup(
        "the daemons did not share the partitions fairly in 60 s".into(),
    ))
}

/// AOF rewrites over every server.
async fn all_aof_rewrites(servers: &[String]) -> Result<u64, BenchError> {
    let mut total = 0;
    for url in servers {
        total += aof_rewrites(url).await?;
    }
    Ok(total)
}
