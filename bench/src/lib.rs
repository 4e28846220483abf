//! recur's benchmarks: scenarios that measure the daemon against a private redis-server they
//! start themselves. The daemon under test is the real `recur serve` binary as a child process,
//! so its RSS is its own; the bench process seeds Redis directly (through the daemon's own
//! commit script, with orders built by the pure `domain::create` at a chosen `now`) so the
//! measurement covers the scenario, not the seeding.
//!
//! A crate of its own, outside the daemon's library: `recur-bench <scenario>` (or
//! `recur bench <scenario>`, which runs it). One module per scenario; each prints one line of
//! figures. [`run`] dispatches by name.

pub mod admin;
pub mod bullmq;
pub mod burst;
pub mod cluster;
pub mod forecast;
pub mod http;
pub mod memory;
pub mod recovery;
pub mod shapes;
pub mod sizing;
pub mod steady;
pub mod testclock;

mod daemon;
mod seed;
mod servers;
mod util;

pub use daemon::*;
pub use seed::*;
pub use servers::*;
pub use util::*;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant as WallInstant};

use serde_json::{json, Value};

use recur::admin::client::{AdminClient, RequestOptions};
use recur::domain::command::{parse_args, Command, CreateOrderArgs, NewOrder};
use recur::domain::stats::contribution;
use recur::domain::time::{parse_instant, to_millis, Instant};
use recur::domain::{self, Policy};
use recur::metrics::Metrics;
use recur::store::embedded::{EmbeddedOptions, EmbeddedRedis};
use recur::store::stats::Delta;
use recur::store::{
    self, Commit, CommitterConfig, Keys, OrderWrite, RedisAddress, RedisNodes, Store,
    DEFAULT_PARTITIONS,
};

pub use burst::{burst, burst_end, BurstOptions, BurstReport};

/// The simulated instant the simulated-clock benches start at.
pub const BENCH_START: &str = "2026-01-01T00:00:00Z";
/// Key prefix of every bench.
pub const PREFIX: &str = "bench";
/// The scenarios [`run`] knows.
pub const SCENARIOS: [&str; 12] = [
    "burst",
    "burst-end",
    "steady",
    "recovery",
    "admin",
    "memory",
    "forecast",
    "sizing",
    "testclock",
    "http",
    "bullmq",
    "shapes",
];

/// Why a bench could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("{0}")]
    Setup(String),
}

pub(crate) fn setup<E: std::fmt::Display>(what: &str) -> impl FnOnce(E) -> BenchError + '_ {
    move |e| BenchError::Setup(format!("{what}: {e}"))
}

/// What `recur bench` was asked for.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// N; `None` = the scenario's default.
    pub orders: Option<usize>,
    /// The `recur` binary to run as the daemon (normally the current executable).
    pub binary: PathBuf,
    /// BullMQ worker concurrency (`bullmq` scenario).
    pub peer_concurrency: Option<usize>,
    /// Run Redis as a private 3-master Redis Cluster (`burst`, `burst-end`).
    pub cluster: bool,
    /// How many daemons share the work (`burst`, `burst-end`; default 1).
    pub daemons: usize,
    /// `burst`: deliver every event to a webhook endpoint that answers 200, or to one that is
    /// down.
    pub webhook: Option<burst::WebhookTarget>,
    /// Run Redis on a loopback TCP port with one local replica (`burst`, `burst-end`): what
    /// `redis.wait_replicas` waits for (`RECUR_REDIS__WAIT_REPLICAS=1` in the environment).
    pub replica: bool,
    /// `http`: requests per command, way and phase (`None` = its default).
    pub requests: Option<usize>,
    /// `http`: concurrent HTTP connections, and pub/sub requests in flight.
    pub connections: Option<usize>,
    /// `http`: requests per second of the fixed-rate phases.
    pub rate: Option<u32>,
}

/// Runs the scenario `name` and returns its line of figures.
///
/// # Errors
/// [`BenchError`] for an unknown scenario or when a step fails.
pub async fn run(name: &str, opts: &RunOptions) -> Result<String, BenchError> {
    let n = |default: usize| opts.orders.unwrap_or(default);
    let bursts = |orders: usize| BurstOptions {
        cluster: opts.cluster,
        replica: opts.replica,
        daemons: opts.daemons.max(1),
        webhook: opts.webhook,
        ..BurstOptions::new(orders, &opts.binary)
    };
    if opts.daemons > 1 && !matches!(name, "burst" | "burst-end") {
        return Err(BenchError::Setup(format!(
            "--daemons runs burst and burst-end only, not `{name}`"
        )));
    }
    if opts.webhook.is_some() && name != "burst" {
        return Err(BenchError::Setup(format!(
            "--webhook runs burst only, not `{name}`"
        )));
    }
    if opts.cluster && !matches!(name, "burst" | "burst-end") {
        return Err(BenchError::Setup(format!(
            "--cluster runs burst and burst-end only, not `{name}`"
        )));
    }
    if opts.replica && !matches!(name, "burst" | "burst-end") {
        return Err(BenchError::Setup(format!(
            "--replica runs burst and burst-end only, not `{name}`"
        )));
    }
    if (opts.requests.is_some() || opts.connections.is_some() || opts.rate.is_some())
        && name != "http"
    {
        return Err(BenchError::Setup(format!(
            "--requests, --connections and --rate run http only, not `{name}`"
        )));
    }
    if opts.orders.is_some() && name == "http" {
        return Err(BenchError::Setup(
            "http creates its orders as it goes: give --requests, not --orders".into(),
        ));
    }
    if opts.replica && opts.cluster {
        return Err(BenchError::Setup(
            "--replica is one server with a replica; --cluster has none".into(),
        ));
    }
    match name {
        "burst" => Ok(burst(&bursts(n(100_000))).await?.line()),
        "burst-end" => Ok(burst_end(&bursts(n(100_000))).await?.line()),
        "steady" => Ok(
            steady::run(&steady::SteadyOptions::new(n(10_000), &opts.binary))
                .await?
                .line(),
        ),
        "recovery" => Ok(
            recovery::run(&recovery::RecoveryOptions::new(n(100_000), &opts.binary))
                .await?
                .line(),
        ),
        "admin" => Ok(
            admin::run(&admin::AdminOptions::new(n(100_000), &opts.binary))
                .await?
                .line(),
        ),
        "memory" => Ok(
            memory::run(&memory::MemoryOptions::new(n(1_000_000), &opts.binary))
                .await?
                .line(),
        ),
        "forecast" => Ok(forecast::run(&forecast::ForecastOptions::new(
            n(1_000_000),
            &opts.binary,
        ))
        .await?
        .line()),
        "sizing" => Ok(
            sizing::run(&sizing::SizingOptions::new(n(10_000), &opts.binary))
                .await?
                .line(),
        ),
        "testclock" => Ok(testclock::run(&testclock::TestClockOptions::new(
            n(10_000),
            &opts.binary,
        ))
        .await?
        .line()),
        "http" => {
            let mut o =
                http::HttpOptions::new(opts.requests.unwrap_or(http::REQUESTS), &opts.binary);
            o.connections = opts.connections.unwrap_or(http::CONNECTIONS);
            o.rate = opts.rate.unwrap_or(http::RATE);
            Ok(http::run(&o).await?.text())
        }
        "shapes" => shapes::run(n(100_000), 3).await,
        "bullmq" | "compare" => {
            let mut o = bullmq::CompareOptions::new(n(100_000), &opts.binary);
            if let Some(c) = opts.peer_concurrency {
                o.concurrencies = vec![c];
            }
            bullmq::compare(&o).await
        }
        other => Err(BenchError::Setup(format!(
            "unknown scenario `{other}` (available: {})",
            SCENARIOS.join(", ")
        ))),
    }
}

// ---------------------------------------------------------------------------------------------
// Redis

// ---------------------------------------------------------------------------------------------
// Seeding

// ---------------------------------------------------------------------------------------------
// The daemon
