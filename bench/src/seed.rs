//! Seeding: orders written straight into Redis through the daemon's own commit script, built by
//! the pure lifecycle at a chosen instant, so a bench measures its scenario and not the seeding.

use super::*;
use recur::store::lease::LeaseToken;

/// One order to seed: createOrder's args, created by `domain::create` at `created`, optionally
/// purchased by a first payment recorded at the same instant (ONLINE orders).
#[derive(Debug, Clone)]
pub struct SeedOrder {
    pub id: String,
    pub args: Value,
    pub created: Instant,
    /// Amount of a first payment (`recordPayment`) applied at `created`.
    pub payment: Option<String>,
}

/// How to seed.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    /// Write the orders' creation events to the event stream (as the daemon would).
    pub events: bool,
    /// Write each order's customer-stats contribution (as the daemon's stats actor would), so
    /// later deltas update existing figures.
    pub stats: bool,
    /// The clock record: mode and, for the simulated clock, its now.
    pub clock_mode: &'static str,
    pub clock_now: Option<Instant>,
}

impl SeedOptions {
    /// Events on, stats off, simulated clock at [`BENCH_START`].
    pub fn simulated() -> SeedOptions {
        SeedOptions {
            events: true,
            stats: false,
            clock_mode: "simulated",
            clock_now: parse_instant(BENCH_START).ok(),
        }
    }

    /// Events on, stats off, system clock.
    pub fn system() -> SeedOptions {
        SeedOptions {
            events: true,
            stats: false,
            clock_mode: "system",
            clock_now: None,
        }
    }
}

const SEED_CHUNK: usize = 8192;

/// Seeds `n` orders, the i-th from `make(i)`, writing each with the daemon's commit script.
/// Orders are built on a separate thread while the previous chunk is in Redis; commits go in
/// pipelines of 2048.
///
/// # Errors
/// [`BenchError`] when an order cannot be built or Redis fails.
pub async fn seed<F>(url: &str, n: usize, opts: &SeedOptions, make: F) -> Result<(), BenchError>
where
    F: Fn(usize) -> SeedOrder + Send + 'static,
{
    seed_to(&RedisAddress::single(url.to_string()), n, opts, make).await
}

/// [`seed`] on one server or a Redis Cluster.
///
/// # Errors
/// [`BenchError`] when an order cannot be built or Redis fails.
pub async fn seed_to<F>(
    redis: &RedisAddress,
    n: usize,
    opts: &SeedOptions,
    make: F,
) -> Result<(), BenchError>
where
    F: Fn(usize) -> SeedOrder + Send + 'static,
{
    let (builder, mut rx) = spawn_builder(n, opts, make);
    let (mode, now) = (opts.clock_mode, opts.clock_now);
    let local = tokio::task::LocalSet::new();
    let result = local
        .run_until(async move {
            let (store, leases) = open_seeding(redis, mode, now).await?;
            while let Some(chunk) = rx.recv().await {
                write_chunk(&store, &leases, chunk?).await?;
            }
            for lease in &leases {
                store
                    .lease_store()
                    .release_lease(lease)
                    .await
                    .map_err(setup("release lease"))?;
            }
            Ok(())
        })
        .await;
    let _ = builder.join();
    result
}

/// A chunk of built orders: each one's commit and its customer's statistics delta.
type SeedChunk = Vec<(Commit, Option<Delta>)>;

/// Builds the orders on a thread of their own (the pure lifecycle), in chunks of
/// [`SEED_CHUNK`], while the writer commits the previous chunk.
fn spawn_builder<F>(
    n: usize,
    opts: &SeedOptions,
    make: F,
) -> (
    std::thread::JoinHandle<()>,
    tokio::sync::mpsc::Receiver<Result<SeedChunk, BenchError>>,
)
where
    F: Fn(usize) -> SeedOrder + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<SeedChunk, BenchError>>(2);
    let (events, stats) = (opts.events, opts.stats);
    let builder = std::thread::spawn(move || {
        let policy = Policy::default();
        let mut chunk = Vec::with_capacity(SEED_CHUNK);
        for i in 0..n {
            match build_seed(make(i), &policy, events, stats) {
                Ok(c) => chunk.push(c),
                Err(e) => {
                    let _ = tx.blocking_send(Err(e));
                    return;
                }
            }
            if chunk.len() == SEED_CHUNK || i + 1 == n {
                let full = std::mem::replace(&mut chunk, Vec::with_capacity(SEED_CHUNK));
                if tx.blocking_send(Ok(full)).is_err() {
                    return;
                }
            }
        }
    });
    (builder, rx)
}

/// Opens the daemon's store on `redis`, records the clock, and takes every partition's lease:
/// commits are fenced by them, so the seeder holds them all meanwhile and hands them back before
/// the daemon starts.
async fn open_seeding(
    redis: &RedisAddress,
    mode: &str,
    now: Option<Instant>,
) -> Result<(Store, Vec<LeaseToken>), BenchError> {
    let mut conn = store::connect_to(redis).await.map_err(setup("connect"))?;
    // The daemon's default count, recorded in meta as the daemon would.
    let partitions = store::settle_partitions(&mut conn, PREFIX, DEFAULT_PARTITIONS)
        .await
        .map_err(setup("partitions"))?;
    let config = CommitterConfig {
        max_batch: 2048,
        max_in_flight: 4,
        reply_ttl_secs: 60,
        publish_events: false,
        wait: None,
    };
    let store = Store::open(
        conn.clone(),
        conn,
        Keys::new(PREFIX, partitions),
        config,
        2048,
        Arc::new(Metrics::default()),
    )
    .await
    .map_err(setup("open store"))?;
    store
        .clock_store()
        .save_clock(mode, now)
        .await
        .map_err(setup("clock"))?;
    let mut leases = Vec::new();
    for p in 0..partitions {
        let lease = store
            .lease_store()
            .acquire_lease(p, "bench-seed", 600_000)
            .await
            .map_err(setup("lease"))?
            .ok_or_else(|| {
                BenchError::Setup(format!(
                    "partition {p} is held by a daemon: seed an empty Redis"
                ))
            })?;
        leases.push(lease);
    }
    Ok((store, leases))
}

/// Commits one chunk of built orders under their partitions' leases, then applies their
/// customers' statistics deltas.
async fn write_chunk(
    store: &Store,
    leases: &[LeaseToken],
    chunk: SeedChunk,
) -> Result<(), BenchError> {
    let keys = store.keys().clone();
    let (orders, stats) = (store.order_store(), store.stats_store());
    let (commits, deltas): (Vec<_>, Vec<_>) = chunk.into_iter().unzip();
    let results = futures_util::future::join_all(commits.into_iter().map(|mut c| {
        c.lease = leases[usize::from(keys.partition(&c.order_id))]
            .token
            .clone();
        orders.commit(c)
    }))
    .await;
    for r in results {
        match r.map_err(setup("seed commit"))? {
            store::CommitOutcome::Committed { .. } => {}
            other => {
                return Err(BenchError::Setup(format!(
                    "seed commit refused: {other:?} (is the Redis empty?)"
                )))
            }
        }
    }
    let applied = futures_util::future::join_all(deltas.iter().flatten().map(|d| {
        let lease = &leases[usize::from(keys.partition(&d.c))];
        stats.apply_delta(d, &lease.token, None)
    }))
    .await;
    for r in applied {
        r.map_err(setup("seed stats"))?;
    }
    Ok(())
}

fn build_seed(
    s: SeedOrder,
    policy: &Policy,
    events: bool,
    stats: bool,
) -> Result<(Commit, Option<Delta>), BenchError> {
    let args: CreateOrderArgs = parse_args(&s.args).map_err(setup("args"))?;
    let new = NewOrder::parse(args, s.id.clone(), "bench".into()).map_err(setup("parse"))?;
    let mut t = domain::create(new, s.created, policy).map_err(setup("create"))?;
    if let Some(amount) = s.payment {
        let cmd = Command::RecordPayment {
            due: None,
            payment_id: format!("{}-p1", s.id),
            amount: amount.parse().map_err(setup("amount"))?,
        };
        let paid = domain::apply(&t.order, &cmd, s.created, policy).map_err(setup("payment"))?;
        t = t.then(paid);
    }
    let delta = stats.then(|| Delta {
        c: t.order.customer_id.clone(),
        o: t.order.id.clone(),
        v: t.order.version,
        k: Some(contribution(&t.order)),
    });
    let commit = Commit {
        order_id: s.id,
        expected_version: 0,
        write: OrderWrite::Save {
            json: recur::domain::order::compact_json(&t.order).map_err(setup("json"))?,
            version: t.order.version,
            due_ms: domain::next_due(&t.order).map(|d| to_millis(&d)),
            customer_id: t.order.customer_id.clone(),
            created_ms: to_millis(&t.order.created_date),
        },
        event_count: if events { t.events.len() } else { 0 },
        change: if events {
            Some(recur::domain::change_head_json(&t.order, &t.events).map_err(setup("change"))?)
        } else {
            None
        },
        deltas: Vec::new(),
        reply: None,
        // Set to the seeder's lease token when committed.
        lease: String::new(),
        // A test clock's order (args `testClockId`) keeps its timer in the clock's set.
        test_clock: t.order.test_clock_id.clone(),
    };
    Ok((commit, delta))
}

/// createOrder args of a monthly subscription of `cycles` cycles (0 = until canceled).
pub fn monthly_args(customer: &str, order_type: &str, cycles: u32) -> Value {
    json!({
        "customerId": customer,
        "plan": {"id": "monthly", "name": "Monthly"},
        "type": order_type,
        "pricing": {"subscription": {"cycleDuration": {"count": 1, "unit": "MONTH"}, "cycleCount": cycles}},
        "prices": [{"cycleFrom": 1, "amount": "9.99"}],
        "currency": "USD",
    })
}

/// Bench order ids: `o0000042`.
pub fn order_id(i: usize) -> String {
    format!("o{i:07}")
}

/// Seeds `n` monthly OFFLINE orders (12 cycles) created at [`BENCH_START`] (so cycle 2 of every
/// one is due at the same instant), writing them with the daemon's own commit script.
/// `RECUR_BENCH_SEED_EVENTS=off` leaves out their creation events (a 1M burst's Redis then
/// holds about 5 GB instead of 11).
///
/// # Errors
/// [`BenchError`] when Redis fails.
pub async fn seed_monthly(url: &str, n: usize) -> Result<(), BenchError> {
    seed_monthly_to(&RedisAddress::single(url.to_string()), n).await
}

/// [`seed_monthly`] on one server or a Redis Cluster, of the kind `RECUR_BENCH_BURST_ORDERS`
/// names ([`BurstOrders::from_env`]).
///
/// # Errors
/// [`BenchError`] when Redis fails.
pub async fn seed_monthly_to(redis: &RedisAddress, n: usize) -> Result<(), BenchError> {
    seed_monthly_kind_to(redis, n, BurstOrders::from_env()).await
}

/// The burst's orders: monthly, 12 cycles, created at [`BENCH_START`], cycle 2 due on
/// 2026-02-01 for every one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BurstOrders {
    /// OFFLINE, paid at creation: cycle 2 starts (orderCycleStarted + orderUpdated).
    #[default]
    Offline,
    /// ONLINE, paid for cycle 1: cycle 2 also requests a payment (a due with its dunning
    /// retries), what billing does.
    Online,
    /// ONLINE on New York's calendar (the instant is the same: 1 Jan 00:00 UTC is 31 Dec
    /// 19:00 local).
    OnlineZoned,
}

impl BurstOrders {
    /// `RECUR_BENCH_BURST_ORDERS`: `online`, `online-zoned`, else OFFLINE.
    pub fn from_env() -> BurstOrders {
        match std::env::var("RECUR_BENCH_BURST_ORDERS").as_deref() {
            Ok("online-zoned") => BurstOrders::OnlineZoned,
            Ok(k) if k.starts_with("online") => BurstOrders::Online,
            _ => BurstOrders::Offline,
        }
    }

    /// How the bench lines name it.
    pub fn name(self) -> &'static str {
        match self {
            BurstOrders::Offline => "offline",
            BurstOrders::Online => "online",
            BurstOrders::OnlineZoned => "online-zoned",
        }
    }
}

/// [`seed_monthly_to`] with the orders of `kind`.
///
/// # Errors
/// [`BenchError`] when Redis fails.
pub async fn seed_monthly_kind_to(
    redis: &RedisAddress,
    n: usize,
    kind: BurstOrders,
) -> Result<(), BenchError> {
    let start = parse_instant(BENCH_START).map_err(setup("start"))?;
    let options = SeedOptions {
        events: !std::env::var("RECUR_BENCH_SEED_EVENTS").is_ok_and(|v| v == "off"),
        ..SeedOptions::simulated()
    };
    let online = kind != BurstOrders::Offline;
    let zoned = kind == BurstOrders::OnlineZoned;
    seed_to(redis, n, &options, move |i| {
        let mut args = monthly_args(
            &format!("c{}", i % 10_000),
            if online { "ONLINE" } else { "OFFLINE" },
            12,
        );
        if zoned {
            args["timeZone"] = json!("America/New_York");
        }
        SeedOrder {
            id: order_id(i),
            args,
            created: start,
            payment: online.then(|| "9.99".to_string()),
        }
    })
    .await
}
