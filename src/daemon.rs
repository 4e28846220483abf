//! The running daemon: wires Redis, the clock, the actors, the scheduler and the admin
//! listeners together, and takes them down gracefully. [`run`] is what `recur serve` and the
//! integration tests start.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::actors::customer::CustomerStatsActor;
use crate::actors::order::OrderActor;
use crate::actors::registry::Registry;
use crate::admin::carts::CartNameLocks;
use crate::admin::server::Inflight;
use crate::clock::{Clock, ClockMode};
use crate::config::Settings;
use crate::domain::time::truncate_ms;
use crate::domain::Policy;
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::embedded::{EmbeddedError, EmbeddedOptions, EmbeddedRedis};
use crate::store::{self, CommitterConfig, Keys, Store, StoreError};
use crate::{admin, scheduler};

/// Everything the actors, the scheduler and the admin side share.
pub struct Daemon {
    pub settings: Settings,
    pub redis_url: String,
    pub store: Store,
    pub clock: Clock,
    pub policy: Policy,
    pub keys: Keys,
    pub metrics: Arc<Metrics>,
    pub registry: Registry<OrderActor>,
    pub customers: Registry<CustomerStatsActor>,
    /// Serializes creates and renames of one customer's carts (names are unique per customer).
    pub cart_names: CartNameLocks,
    /// Commands take it shared, advanceClock exclusively: commands wait for an advance.
    pub advance_lock: tokio::sync::RwLock<()>,
    /// Admin requests being handled, by request id (a retried id waits for the first).
    pub inflight: Inflight,
    /// Wakes the system-clock scheduler when a commit set a timer before its planned wake.
    pub wake: tokio::sync::Notify,
    pub planned_wake_ms: AtomicI64,
}

impl Daemon {
    /// Called after a commit that set the order's timer to `due_ms`.
    pub fn timer_committed(&self, due_ms: i64) {
        if due_ms < self.planned_wake_ms.load(Ordering::Relaxed) {
            self.wake.notify_one();
        }
    }
}

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    #[error("cannot use redis at {url}: {source}")]
    Redis { url: String, source: StoreError },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(
        "this Redis data was made with the {stored} clock but recur was started with the {configured} clock; \
         start it with --clock {stored}, or use another prefix or Redis"
    )]
    ClockMismatch { stored: String, configured: String },
    #[error("cannot listen for admin requests: {0}")]
    Admin(String),
}

/// What `run` reports once it is ready to take requests.
#[derive(Debug, Clone)]
pub struct Ready {
    pub redis_url: String,
}

/// Runs the daemon until `shutdown` is triggered, then stops taking work, finishes and commits
/// what is in flight, and returns. Must run inside an actix `System`.
///
/// # Errors
/// [`RunError`] when Redis cannot be started or reached, or the clock mode does not match.
pub async fn run(settings: Settings, shutdown: Shutdown) -> Result<(), RunError> {
    run_with(settings, shutdown, |_| {}).await
}

/// [`run`], calling `on_ready` once the admin listeners are up.
///
/// # Errors
/// As [`run`].
pub async fn run_with(
    settings: Settings,
    shutdown: Shutdown,
    on_ready: impl FnOnce(&Ready),
) -> Result<(), RunError> {
    let embedded = match &settings.redis.url {
        Some(_) => None,
        None => Some(EmbeddedRedis::start(&EmbeddedOptions::from(&settings.redis.embedded)).await?),
    };
    let redis_url = settings
        .redis
        .url
        .clone()
        .or_else(|| embedded.as_ref().map(|e| e.url()))
        .unwrap_or_default();
    let result = serve(settings, redis_url, shutdown, on_ready).await;
    if let Some(server) = embedded {
        if let Err(e) = server.stop().await {
            tracing::warn!(error = %e, "embedded redis-server did not stop cleanly");
        }
    }
    result
}

async fn serve(
    settings: Settings,
    redis_url: String,
    shutdown: Shutdown,
    on_ready: impl FnOnce(&Ready),
) -> Result<(), RunError> {
    let connect = || async {
        store::connect(&redis_url)
            .await
            .map_err(|source| RunError::Redis {
                url: redis_url.clone(),
                source,
            })
    };
    // Admin traffic and the scheduler's rounds each get their own connection (see Store).
    let (conn, bulk) = (connect().await?, connect().await?);
    let keys = Keys::new(&settings.prefix);
    let metrics = Arc::new(Metrics::default());
    let committer = CommitterConfig {
        max_batch: settings.scheduler.batch_size.max(1),
        max_in_flight: 4,
        reply_ttl_secs: settings.admin.reply_retention.as_secs().max(1),
        publish_events: settings.events.publish,
    };
    // The scheduler's pipelines hold two rounds: when one comes back, the actix thread settles
    // that many commits in a row while admin commands wait, so they stay small (docs/BENCHMARKS.md).
    let bulk_max_batch = 2 * scheduler::round_size(&settings.scheduler);
    let store = Store::open(
        conn,
        bulk,
        keys.clone(),
        committer,
        bulk_max_batch,
        Arc::clone(&metrics),
    )
    .await?;
    let clock = open_clock(&store, &settings).await?;
    let policy = Policy {
        payment_grace: chrono::Duration::from_std(settings.lifecycle.payment_grace_period)
            .unwrap_or(chrono::Duration::hours(72)),
    };
    let daemon = Arc::new(Daemon {
        settings,
        redis_url: redis_url.clone(),
        store,
        clock,
        policy,
        keys,
        metrics,
        registry: Registry::default(),
        customers: Registry::default(),
        cart_names: CartNameLocks::default(),
        advance_lock: tokio::sync::RwLock::new(()),
        inflight: Inflight::default(),
        wake: tokio::sync::Notify::new(),
        planned_wake_ms: AtomicI64::new(i64::MIN),
    });
    tracing::info!(redis_url = %redis_url, prefix = %daemon.keys.prefix(), clock = %daemon.clock.mode(), now = %daemon.clock.now(), "recur starting");

    // Stats deltas a crash left between an order's commit and its stats update go first.
    let settled = scheduler::sweep_outbox(&daemon).await?;
    if settled > 0 {
        tracing::info!(deltas = settled, "applied stats deltas left in the outbox");
    }
    // Whatever fell due while the daemon was down fires next, stamped with its due time.
    let caught_up = scheduler::catch_up(&daemon).await?;
    if caught_up > 0 {
        tracing::info!(orders = caught_up, "caught up overdue timers");
    }

    let tasks = TaskTracker::new();
    let requests = TaskTracker::new();
    if !daemon.clock.is_simulated() {
        tasks.spawn_local(scheduler::run_system_clock(
            Arc::clone(&daemon),
            shutdown.clone(),
        ));
    }
    admin::server::start(&daemon, &shutdown, &tasks, &requests)
        .await
        .map_err(|e| RunError::Admin(e.to_string()))?;
    on_ready(&Ready { redis_url });
    tracing::info!("recur ready");

    shutdown.wait().await;
    tracing::info!("shutting down: no new requests; finishing what is in flight");
    tasks.close();
    tasks.wait().await;
    requests.close();
    requests.wait().await;
    tracing::info!(metrics = %daemon.metrics.snapshot(), "stopped");
    Ok(())
}

/// Restores the clock: the mode must match the one the data was made with; a simulated clock
/// goes on from the time kept in Redis (or starts at `clock.start`, else now).
async fn open_clock(store: &Store, settings: &Settings) -> Result<Clock, RunError> {
    let (stored_mode, stored_now) = store.clock_record().await?;
    let configured = settings.clock.mode;
    if let Some(stored) = &stored_mode {
        if stored != configured.as_str() {
            return Err(RunError::ClockMismatch {
                stored: stored.clone(),
                configured: configured.as_str().to_string(),
            });
        }
    }
    match configured {
        ClockMode::Simulated => {
            let now = stored_now
                .or(settings.clock.start)
                .unwrap_or_else(|| truncate_ms(chrono::Utc::now()));
            store.save_clock(configured.as_str(), Some(now)).await?;
            Ok(Clock::simulated(now))
        }
        ClockMode::System => {
            store.save_clock(configured.as_str(), None).await?;
            Ok(Clock::system())
        }
    }
}
