//! `steady`: a simulated year of N monthly subscriptions with a realistic spread, paid cycles,
//! pauses and cancellations.
//!
//! Seeded on 2026-01-01 (simulated clock): start dates spread over January (PENDING until
//! then); 80 % OFFLINE, 15 % EXTERNAL, 5 % ONLINE (purchased by a first payment); 10 % of the
//! non-ONLINE ones with a 14-day trial; a quarter of 12 cycles, the rest renewing until
//! canceled; about three orders per customer, with their customer statistics.
//!
//! Then the clock moves one day at a time to 2027-01-01 (365 advanceClock requests). After each
//! day, the ONLINE orders whose cycle started that day are paid (one in ten stops paying in
//! June and is canceled for non-payment after the grace period); on the 15th of each month the
//! manual pauses of the month before are resumed, N/50 orders are paused (half with a
//! `resumeAt` 10 days later, half until next month) and N/100 are canceled (half IMMEDIATELY,
//! half at the next payment date). Commands go through the admin client, 64 at a time; some are
//! refused by the rules (e.g. a pause during a trial), as they would be in real life.
//!
//! Reported: wall time of the simulated year (advances and commands), transitions per second,
//! how the time splits between advances and commands.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant as WallInstant};

use chrono::{Datelike, Months};
use futures_util::StreamExt;
use serde_json::{json, Value};

use super::{
    long_request, metric_delta, metrics, mix, order_id, ready_client, seed, settle_aof, setup,
    BenchError, BenchRedis, DaemonProcess, Rng, SeedOptions, SeedOrder, TempDir, BENCH_START,
};
use recur::admin::client::{AdminClient, RequestOptions};
use recur::domain::time::{format_instant, parse_instant, Instant};

/// Options of the steady scenario.
#[derive(Debug, Clone)]
pub struct SteadyOptions {
    pub orders: usize,
    pub binary: PathBuf,
    /// How many simulated days (one advanceClock each); 365 = the year.
    pub days: u32,
}

impl SteadyOptions {
    /// `orders` subscriptions.
    pub fn new(orders: usize, binary: &Path) -> SteadyOptions {
        SteadyOptions {
            orders,
            binary: binary.to_path_buf(),
            days: 365,
        }
    }
}

/// What the steady scenario measured.
#[derive(Debug, Clone, Default)]
pub struct SteadyReport {
    pub orders: usize,
    pub wall: Duration,
    pub advancing: Duration,
    pub advances: usize,
    pub commands: usize,
    pub refused: usize,
    pub transitions: u64,
    pub events: u64,
    pub timers_fired: u64,
    pub stats_deltas: u64,
    pub seed_elapsed: Duration,
}

impl SteadyReport {
    /// The one line the bench prints.
    pub fn line(&self) -> String {
        let secs = self.wall.as_secs_f64().max(1e-9);
        format!(
            "steady orders={} simulated_days={} wall_s={:.3} advancing_s={:.3} commands={} refused={} transitions={} transitions_per_s={:.0} events={} timers_fired={} stats_deltas={} (seeding took {:.1}s)",
            self.orders,
            self.advances,
            secs,
            self.advancing.as_secs_f64(),
            self.commands,
            self.refused,
            self.transitions,
            self.transitions as f64 / secs,
            self.events,
            self.timers_fired,
            self.stats_deltas,
            self.seed_elapsed.as_secs_f64(),
        )
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Online,
    External,
    Offline,
}

#[derive(Debug, Clone)]
struct Plan {
    kind: Kind,
    trial: bool,
    cycles: u32,
    start: Instant,
}

fn plan(i: usize, year: Instant) -> Plan {
    let h = mix(i as u64);
    let kind = match h % 20 {
        0 => Kind::Online,
        1..=3 => Kind::External,
        _ => Kind::Offline,
    };
    Plan {
        kind,
        trial: kind != Kind::Online && (h >> 8).is_multiple_of(10),
        cycles: if (h >> 16).is_multiple_of(4) { 12 } else { 0 },
        start: year + chrono::Duration::minutes(1 + ((h >> 24) % (31 * 24 * 60)) as i64),
    }
}

fn create_args(i: usize, p: &Plan, customers: usize) -> Value {
    let kind = match p.kind {
        Kind::Online => "ONLINE",
        Kind::External => "EXTERNAL",
        Kind::Offline => "OFFLINE",
    };
    let mut args = json!({
        "customerId": format!("c{}", i % customers),
        "plan": {"id": "monthly", "name": "Monthly"},
        "type": kind,
        "pricing": {"subscription": {"cycleDuration": {"count": 1, "unit": "MONTH"}, "cycleCount": p.cycles}},
        "prices": [{"cycleFrom": 1, "amount": "9.99"}],
        "currency": "USD",
        "startDate": format_instant(&p.start),
    });
    if p.trial {
        args["freeTrialDays"] = json!(14);
    }
    args
}

/// Runs the steady scenario.
///
/// # Errors
/// [`BenchError`] when any step fails (a refused command is counted, not an error).
pub async fn run(opts: &SteadyOptions) -> Result<SteadyReport, BenchError> {
    let n = opts.orders;
    let year = parse_instant(BENCH_START).map_err(setup("start"))?;
    let customers = (n / 3).max(1);
    let temp = TempDir::new()?;
    let redis = BenchRedis::start(&temp.redis_dir(), false).await?;
    let url = redis.url();
    let seeded = WallInstant::now();
    let options = SeedOptions {
        stats: true,
        ..SeedOptions::simulated()
    };
    seed(&url, n, &options, move |i| {
        let p = plan(i, year);
        SeedOrder {
            id: order_id(i),
            args: create_args(i, &p, customers),
            created: year,
            payment: (p.kind == Kind::Online).then(|| "9.99".to_string()),
        }
    })
    .await?;
    settle_aof(&url).await?;
    let seed_elapsed = seeded.elapsed();

    // The ONLINE orders' cycle starts (k >= 2), by the day they fall in, to pay them.
    let plans: Vec<Plan> = (0..n).map(|i| plan(i, year)).collect();
    let payments = payment_days(&plans);
    let mut churn = Churn {
        n,
        candidates: (0..n).filter(|&i| plans[i].kind != Kind::Online).collect(),
        rng: Rng::new(2026),
        paused_manual: Vec::new(),
        paused_until: HashMap::new(),
        canceled: BTreeSet::new(),
    };

    let daemon = DaemonProcess::start(&opts.binary, &url)?;
    let client = ready_client(&url).await?;
    let before = metrics(&client).await?;

    let mut report = SteadyReport {
        orders: n,
        seed_elapsed,
        ..SteadyReport::default()
    };
    let started = WallInstant::now();
    let mut day = year;
    while day < year + chrono::Duration::days(i64::from(opts.days)) {
        day += chrono::Duration::days(1);
        let t = WallInstant::now();
        let r = client
            .request_with(
                long_request(),
                "advanceClock",
                json!({ "to": format_instant(&day) }),
            )
            .await
            .map_err(setup("advanceClock"))?;
        if !r.ok {
            return Err(BenchError::Setup(format!(
                "advanceClock to {day} failed: {:?}",
                r.error
            )));
        }
        report.advancing += t.elapsed();
        report.advances += 1;

        let mut batch: Vec<(&'static str, Value)> = Vec::new();
        // Cycles that started since the previous day: pay them (one in ten stops in June).
        let yesterday = (day - chrono::Duration::days(1)).date_naive();
        for &(i, k) in payments.get(&yesterday).into_iter().flatten() {
            if i % 10 == 0 && day.month() >= 6 && day.year() == 2026 {
                continue;
            }
            batch.push((
                "recordPayment",
                json!({"orderId": order_id(i), "paymentId": format!("p{k}"), "amount": "9.99"}),
            ));
        }
        if day.day() == 15 {
            churn.mid_month(day, &mut batch);
        }
        let (sent, refused) = send_all(&client, batch).await?;
        report.commands += sent;
        report.refused += refused;
    }
    report.wall = started.elapsed();
    let after = metrics(&client).await?;
    report.transitions = metric_delta(&before, &after, "transitions");
    report.events = metric_delta(&before, &after, "eventsWritten");
    report.timers_fired = metric_delta(&before, &after, "timersFired");
    report.stats_deltas = metric_delta(&before, &after, "statsDeltasApplied");
    drop(client);
    daemon.stop().await;
    redis.stop().await;
    Ok(report)
}

/// The month's pauses, resumes and cancellations of the steady year (on the 15th).
struct Churn {
    n: usize,
    /// The orders that are not ONLINE (those are paid, never paused or canceled here).
    candidates: Vec<usize>,
    rng: Rng,
    paused_manual: Vec<usize>,
    paused_until: HashMap<usize, Instant>,
    canceled: BTreeSet<usize>,
}

impl Churn {
    /// Resumes last month's manual pauses, pauses 1 in 50 (half with a resumeAt) and cancels
    /// 1 in 100 of the orders still free.
    fn mid_month(&mut self, day: Instant, batch: &mut Vec<(&'static str, Value)>) {
        self.paused_until.retain(|_, until| *until > day);
        for i in self.paused_manual.drain(..) {
            batch.push(("resumeOrder", json!({ "orderId": order_id(i) })));
        }
        let free = |i: &usize, c: &BTreeSet<usize>, u: &HashMap<usize, Instant>| {
            !c.contains(i) && !u.contains_key(i)
        };
        let pauses = (self.n / 50).max(1);
        let cancels = (self.n / 100).max(1);
        let mut picked = BTreeSet::new();
        for _ in 0..pauses * 4 {
            if picked.len() == pauses || self.candidates.is_empty() {
                break;
            }
            let i = self.candidates[self.rng.below(self.candidates.len() as u64) as usize];
            if free(&i, &self.canceled, &self.paused_until) && picked.insert(i) {
                if picked.len() % 2 == 0 {
                    let resume = day + chrono::Duration::days(10);
                    self.paused_until.insert(i, resume);
                    batch.push((
                        "pauseOrder",
                        json!({"orderId": order_id(i), "resumeAt": format_instant(&resume)}),
                    ));
                } else {
                    self.paused_until
                        .insert(i, day + chrono::Duration::days(31));
                    self.paused_manual.push(i);
                    batch.push(("pauseOrder", json!({ "orderId": order_id(i) })));
                }
            }
        }
        let mut cancelled_now = 0;
        for _ in 0..cancels * 4 {
            if cancelled_now == cancels || self.candidates.is_empty() {
                break;
            }
            let i = self.candidates[self.rng.below(self.candidates.len() as u64) as usize];
            if free(&i, &self.canceled, &self.paused_until) && !picked.contains(&i) {
                self.canceled.insert(i);
                cancelled_now += 1;
                let effective = if cancelled_now % 2 == 0 {
                    "IMMEDIATELY"
                } else {
                    "NEXT_PAYMENT_DATE"
                };
                batch.push((
                    "cancelOrder",
                    json!({"orderId": order_id(i), "effectiveAt": effective}),
                ));
            }
        }
    }
}

/// The ONLINE orders' cycle starts (k >= 2), by the day they fall in.
fn payment_days(plans: &[Plan]) -> HashMap<chrono::NaiveDate, Vec<(usize, u32)>> {
    let mut payments: HashMap<chrono::NaiveDate, Vec<(usize, u32)>> = HashMap::new();
    for (i, p) in plans
        .iter()
        .enumerate()
        .filter(|(_, p)| p.kind == Kind::Online)
    {
        let last = if p.cycles == 0 { 13 } else { p.cycles };
        for k in 2..=last {
            if let Some(at) = p.start.checked_add_months(Months::new(k - 1)) {
                payments.entry(at.date_naive()).or_default().push((i, k));
            }
        }
    }
    payments
}

/// Sends the commands 64 at a time; returns (sent, refused by the rules).
async fn send_all(
    client: &AdminClient,
    batch: Vec<(&'static str, Value)>,
) -> Result<(usize, usize), BenchError> {
    let sent = batch.len();
    let options = RequestOptions {
        attempt_timeout: Duration::from_secs(10),
        total_timeout: Duration::from_secs(120),
        ..RequestOptions::default()
    };
    let replies: Vec<_> = futures_util::stream::iter(batch.into_iter().map(|(cmd, args)| {
        let options = options.clone();
        async move { client.request_with(options, cmd, args).await }
    }))
    .buffer_unordered(64)
    .collect()
    .await;
    let mut refused = 0;
    for r in replies {
        let r = r.map_err(setup("admin command"))?;
        if !r.ok {
            if let Some(e) = r.error.as_ref().filter(|e| e.code.is_transient()) {
                return Err(BenchError::Setup(format!(
                    "admin command failed: {:?} {}",
                    e.code, e.message
                )));
            }
            refused += 1;
        }
    }
    Ok((sent, refused))
}
