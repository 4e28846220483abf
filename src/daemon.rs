//! The running daemon: wires Redis, the clock, the actors, the scheduler and the admin
//! listeners together, and takes them down gracefully. [`run`] is what `recur serve` and the
//! integration tests start.

use std::sync::Arc;

use tokio_util::task::TaskTracker;

use crate::actors::{ActorStores, Actors, ActorsConfig};
use crate::admin::{self, AdminConfig, AdminState};
use crate::clock::{Clock, ClockMode, TimerWake};
use crate::config::Settings;
use crate::domain::time::{format_instant, truncate_ms};
use crate::health::Health;
use crate::metrics::Metrics;
use crate::ownership::{Ownership, OwnershipConfig};
use crate::scheduler::{self, Scheduler, SchedulerConfig, SchedulerError};
use crate::shutdown::Shutdown;
use crate::store::embedded::{EmbeddedError, EmbeddedRedis};
use crate::store::{
    self, CommitterConfig, ConnectError, Keys, PartitionsError, RedisAddress, Store, StoreError,
};

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Embedded(#[from] EmbeddedError),
    /// The first connection failed: which server (masked) and what (certificate, handshake,
    /// NOAUTH / WRONGPASS, unreachable), on one line.
    #[error(transparent)]
    Connect(#[from] ConnectError),
    #[error("cannot use redis at {url}")]
    Redis {
        /// The address, passwords masked.
        url: String,
        #[source]
        source: StoreError,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error(transparent)]
    Partitions(#[from] PartitionsError),
    #[error(transparent)]
    Behaviour(#[from] store::lease::BehaviourError),
    #[error(
        "this Redis data was made with the {stored} clock but recur was started with the {configured} clock; \
         start it with --clock {stored}, or use another prefix or Redis"
    )]
    ClockMismatch { stored: String, configured: String },
    #[error("cannot listen for admin requests")]
    Admin(#[source] redis::RedisError),
    #[error("lifecycle.dunning.retries: {0}")]
    Dunning(String),
    #[error(transparent)]
    Http(#[from] crate::http::BindError),
    #[error(transparent)]
    Webhooks(#[from] crate::webhooks::StartError),
}

/// What `run` reports once it is ready to take requests.
#[derive(Debug, Clone)]
pub struct Ready {
    /// The Redis URL (`cluster <seeds>` for a cluster), passwords masked.
    pub redis_url: String,
    /// The address the HTTP listener bound (`None`: off, or the default address was taken).
    pub http: Option<std::net::SocketAddr>,
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
    // The HTTP listener answers from the start: /healthz while the embedded redis-server
    // loads a large data set (seconds), /readyz as "starting" (see crate::http).
    let metrics = Arc::new(Metrics::default());
    let probes = crate::http::Probes::starting(Arc::clone(&metrics));
    let http_stop = shutdown.child();
    let http_task = TaskTracker::new();
    let http = crate::http::start(
        crate::http::HttpConfig {
            listen: settings.http.listen(),
            tokens: settings.http.tokens.clone(),
            lease_ttl: settings.cluster.lease_ttl,
        },
        probes.clone(),
        &http_stop,
        &http_task,
    )
    .await?;
    let started = Started {
        metrics,
        probes,
        http,
    };
    // A cluster always has a URL (settings refuse `redis.cluster` without one), so it never
    // gets here without an address.
    let (embedded, redis) = match settings.redis_address() {
        Some(address) => (None, address),
        None => {
            let options = settings.redis.embedded.options();
            let starting = EmbeddedRedis::start(&options);
            let started = tokio::select! {
                started = starting => started,
                // Asked to stop while the server loads its data: dropping the start sends it
                // SIGTERM (Redis stops loading and exits); nothing of ours ran yet.
                () = shutdown.wait() => {
                    tracing::info!("shutdown requested while the embedded redis-server was starting");
                    stop_http(&http_stop, &http_task).await;
                    return Ok(());
                }
            };
            match started {
                Ok(server) => {
                    let address = RedisAddress::single(server.url());
                    (Some(server), address)
                }
                Err(e) => {
                    stop_http(&http_stop, &http_task).await;
                    return Err(e.into());
                }
            }
        }
    };
    let result = serve(settings, redis, shutdown, started, on_ready).await;
    // Its last requests may read Redis: it stops before the embedded server.
    stop_http(&http_stop, &http_task).await;
    if let Some(server) = embedded {
        if let Err(e) = server.stop().await {
            tracing::warn!(error = %e, "embedded redis-server did not stop cleanly");
        }
    }
    result
}

/// What `run_with` set up before Redis: the daemon's figures and the HTTP listener.
struct Started {
    metrics: Arc<Metrics>,
    probes: crate::http::Probes,
    http: crate::http::Http,
}

/// How long a stopping daemon waits for the HTTP requests in flight.
const HTTP_STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

async fn stop_http(stop: &Shutdown, task: &TaskTracker) {
    stop.trigger();
    task.close();
    if tokio::time::timeout(HTTP_STOP_GRACE, task.wait())
        .await
        .is_err()
    {
        tracing::warn!(grace = ?HTTP_STOP_GRACE, "HTTP requests still in flight; abandoned");
    }
}

async fn serve(
    settings: Settings,
    redis: RedisAddress,
    shutdown: Shutdown,
    started: Started,
    on_ready: impl FnOnce(&Ready),
) -> Result<(), RunError> {
    let Started {
        metrics,
        probes,
        http,
    } = started;
    // Masked: it is logged and reported.
    let redis_url = redis.to_string();
    let store = open_store(&settings, &redis, &metrics).await?;
    let clock = open_clock(&store, &settings).await?;
    let parts = build(&settings, store, clock, &metrics, &shutdown)?;
    tracing::info!(redis_url = %redis_url, prefix = %settings.prefix, partitions = parts.store.keys().partitions(), daemon_id = %parts.ownership.daemon_id(), clock = %parts.clock.mode(), now = %parts.clock.now(), wait_replicas = settings.redis.wait_replicas, "recur starting");
    // The probes ask Redis from here on; /readyz answers 200 once start-up is done.
    probes.serve(parts.health.clone());
    start_up(&parts).await?;
    let running = spawn(&settings, &redis, parts, &metrics, &shutdown).await?;
    http.serve_api(running.admin.clone(), running.api_store.clone());
    running.health.started();
    on_ready(&Ready {
        redis_url,
        http: http.addr,
    });
    tracing::info!("recur ready");

    shutdown.wait().await;
    stop(running, &metrics).await;
    Ok(())
}

/// Connects to Redis (one clear line when it cannot), settles the data's partition count,
/// layout and behaviour settings, and opens the store with its batchers.
async fn open_store(
    settings: &Settings,
    redis: &RedisAddress,
    metrics: &Arc<Metrics>,
) -> Result<Store, RunError> {
    let redis_url = redis.to_string();
    if redis.access().tls.insecure {
        tracing::warn!(redis_url = %redis_url, "redis.tls.insecure = true: the Redis server's TLS certificate and name are NOT verified; anyone on the network path can read and change recur's data (never use it in production)");
    }
    // One attempt first, so that a wrong address, certificate or password stops start-up with
    // one clear line rather than the reconnecting connections' retries.
    redis.check().await?;
    let connect = || async {
        store::connect_to(redis)
            .await
            .map_err(|source| RunError::Redis {
                url: redis_url.clone(),
                source,
            })
    };
    // Admin traffic and the scheduler's rounds each get their own connection (see Store).
    let (mut conn, bulk) = (connect().await?, connect().await?);
    let partitions =
        store::settle_partitions(&mut conn, &settings.prefix, settings.partitions).await?;
    let keys = Keys::new(&settings.prefix, partitions);
    let legacy_replies =
        store::upgrade_layout(&mut conn, &keys, settings.admin.reply_retention).await?;
    let wait = settings.redis_wait();
    let committer = CommitterConfig {
        max_batch: settings.scheduler.batch_size.max(1),
        // A WAIT blocks its connection until the replicas answer, so pipelines behind it only
        // queue there: two in flight keep the connection busy (the next one runs as soon as a
        // WAIT returns), and everything else merges into the next pipeline (one WAIT for all,
        // and a shorter wait for an UNAVAILABLE when the replicas are gone).
        max_in_flight: if wait.is_some() { 2 } else { 4 },
        reply_ttl_secs: settings.admin.reply_retention.as_secs().max(1),
        publish_events: settings.events.publish,
        wait,
    };
    // A WAIT blocks its connection until the replicas answer: the commit batchers then get
    // connections of their own, so reads, lease renewals and replies never queue behind one.
    let commits = match committer.wait {
        Some(_) => Some((connect().await?, connect().await?)),
        None => None,
    };
    // The scheduler's pipelines hold two rounds: when one comes back, the actix thread settles
    // that many commits in a row while admin commands wait, so they stay small (docs/BENCHMARKS.md).
    let bulk_max_batch = 2 * scheduler::round_size(&settings.scheduler);
    // Test clock advances get a connection and a batcher of their own (SPEC 11.5).
    let test_clocks = CommitterConfig {
        max_batch: bulk_max_batch,
        ..committer.clone()
    };
    let store = Store::open_with(
        store::StoreConns {
            admin: conn,
            bulk,
            commits,
        },
        keys,
        committer,
        bulk_max_batch,
        Arc::clone(metrics),
    )
    .await?
    .with_legacy_replies(legacy_replies)
    .with_test_clock_conn(connect().await?, test_clocks);
    let lease_ttl_ms = u64::try_from(settings.cluster.lease_ttl.as_millis()).unwrap_or(u64::MAX);
    if let Some(before) = store
        .lease_store()
        .settle_behaviour(&settings.behaviour_fingerprint(), lease_ttl_ms)
        .await?
    {
        tracing::info!(before = %before, "behaviour settings changed since the last daemons ran");
    }
    Ok(store)
}

/// The daemon's parts, built bottom-up on an open store: ownership, the actors, the scheduler
/// that fires through them, and the health view.
struct Parts {
    store: Store,
    clock: Clock,
    ownership: Ownership,
    actors: Actors,
    scheduler: Scheduler,
    health: Health,
    webhook_ids: Vec<String>,
}

fn build(
    settings: &Settings,
    store: Store,
    clock: Clock,
    metrics: &Arc<Metrics>,
    shutdown: &Shutdown,
) -> Result<Parts, RunError> {
    let ownership = Ownership::new(
        store.clone(),
        OwnershipConfig {
            daemon_id: settings
                .cluster
                .daemon_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string()),
            lease_ttl: settings.cluster.lease_ttl,
            renew_interval: settings.cluster.renew_interval(),
        },
        Arc::clone(metrics),
    );
    let webhook_ids: Vec<String> = settings
        .webhooks
        .endpoints
        .iter()
        .map(|e| e.id().to_string())
        .collect();
    let wake = TimerWake::default();
    let actors = Actors::new(ActorsConfig {
        stores: ActorStores::of(&store),
        clock: clock.clone(),
        policy: settings.lifecycle.policy().map_err(RunError::Dunning)?,
        metrics: Arc::clone(metrics),
        idle_passivation: settings.actors.idle_passivation,
        wake: wake.clone(),
        ownership: ownership.clone(),
    });
    let scheduler = Scheduler::new(
        actors.clone(),
        store.clone(),
        clock.clone(),
        wake,
        ownership.clone(),
        SchedulerConfig {
            settings: settings.scheduler.clone(),
            cron: settings.cron.clone(),
            events_max_len: settings.events.max_len,
            payment_restart_grace: settings.lifecycle.payment_restart_grace,
            reply_retention: settings.admin.reply_retention,
            webhook_endpoints: webhook_ids.clone(),
            shutdown: shutdown.clone(),
        },
    );
    let health = Health::new(
        store.clone(),
        clock.clone(),
        ownership.clone(),
        scheduler.clone(),
        Arc::clone(metrics),
    );
    Ok(Parts {
        store,
        clock,
        ownership,
        actors,
        scheduler,
        health,
        webhook_ids,
    })
}

/// Takes the free leases (all of them, when no other daemon leads), picks up their partitions
/// as the last owner left them, applies the stats deltas a crash left, and fires what fell due
/// while the daemon was down.
async fn start_up(parts: &Parts) -> Result<(), RunError> {
    let mut first = parts.ownership.tick().await?;
    // Start-up's catch-up below defers every payment grace missed while down.
    first.orphaned.clear();
    tracing::info!(
        partitions = first.acquired.len(),
        "partition leases acquired"
    );
    parts.scheduler.take_over(&first).await?;
    // Stats deltas a crash left between an order's commit and its stats update go first.
    let settled = parts.scheduler.settle_deltas().await?;
    if settled > 0 {
        tracing::info!(deltas = settled, "applied stats deltas left in the outbox");
    }
    // Whatever fell due while the daemon was down fires next, stamped with its due time.
    let caught_up = parts.scheduler.catch_up().await?;
    if caught_up > 0 {
        tracing::info!(orders = caught_up, "caught up overdue timers");
    }
    Ok(())
}

/// A running daemon: its loops and listeners, and what stopping it needs.
struct Running {
    admin: admin::AdminHandle,
    api_store: Store,
    health: Health,
    ownership: Ownership,
    /// Every loop but the lease loop, and the admin requests in flight.
    tasks: TaskTracker,
    requests: TaskTracker,
    /// The lease loop stops last, on a signal of its own.
    leases_stop: Shutdown,
    lease_loop: TaskTracker,
}

/// Spawns the loops (leases, stats, announcements, test clocks, the clock or the timers,
/// webhooks) and the admin listeners.
async fn spawn(
    settings: &Settings,
    redis: &RedisAddress,
    parts: Parts,
    metrics: &Arc<Metrics>,
    shutdown: &Shutdown,
) -> Result<Running, RunError> {
    let Parts {
        store,
        clock,
        ownership,
        actors,
        scheduler,
        health,
        webhook_ids,
    } = parts;
    let tasks = TaskTracker::new();
    let requests = TaskTracker::new();
    // The lease loop stops last, on a signal of its own: the leases stay renewed while the
    // in-flight work of a stopping daemon lands, then they are released at once.
    let leases_stop = Shutdown::new();
    let lease_loop = TaskTracker::new();
    lease_loop.spawn_local(scheduler.clone().keep_leases(leases_stop.clone()));
    tasks.spawn_local(scheduler.clone().keep_settled(shutdown.clone()));
    tasks.spawn_local(
        health
            .clone()
            .keep_announced(settings.cluster.renew_interval(), shutdown.clone()),
    );
    // Test clocks advance on either clock, beside it (SPEC 11.5).
    tasks.spawn_local(scheduler.clone().follow_test_clocks(shutdown.clone()));
    if clock.is_simulated() {
        tasks.spawn_local(scheduler.clone().follow_clock(shutdown.clone()));
    } else {
        tasks.spawn_local(scheduler.clone().run(shutdown.clone()));
    }
    // Webhook deliveries run on a thread and a connection of their own: a slow receiver
    // never takes time from commits or admin replies.
    if !settings.webhooks.endpoints.is_empty() {
        crate::webhooks::start(
            redis.clone(),
            store.clone(),
            ownership.clone(),
            Arc::clone(metrics),
            crate::webhooks::WebhookConfig {
                settings: settings.webhooks.clone(),
                events_max_len: settings.events.max_len,
                daemon_id: ownership.daemon_id().to_string(),
            },
            shutdown,
            &tasks,
        )
        .await?;
    }
    let api_store = store.clone();
    let admin = AdminState::new(
        actors,
        scheduler,
        store,
        clock,
        health.clone(),
        ownership.clone(),
        AdminConfig {
            redis: redis.clone(),
            reply_retention: settings.admin.reply_retention,
            max_request_bytes: settings.admin.max_request_bytes,
            basket_rules: Arc::new(settings.basket_rules()),
            webhook_endpoints: webhook_ids,
            identity: settings.admin.identity,
            channels: settings.admin.channels.clone(),
            allowed: settings.admin.commands.clone(),
        },
    );
    let admin = admin::start(Arc::new(admin), shutdown, &tasks, &requests)
        .await
        .map_err(RunError::Admin)?;
    Ok(Running {
        admin,
        api_store,
        health,
        ownership,
        tasks,
        requests,
        leases_stop,
        lease_loop,
    })
}

/// Stops taking work, waits for what is in flight (at most [`STOP_GRACE`]), stops the lease
/// loop and releases the leases at once.
async fn stop(running: Running, metrics: &Metrics) {
    tracing::info!("shutting down: no new requests; finishing what is in flight");
    let Running {
        ownership,
        tasks,
        requests,
        leases_stop,
        lease_loop,
        ..
    } = running;
    tasks.close();
    requests.close();
    let in_flight = async {
        tasks.wait().await;
        requests.wait().await;
    };
    if tokio::time::timeout(STOP_GRACE, in_flight).await.is_err() {
        // Whatever is still running is abandoned: its commits are fenced once the leases are
        // released, so nothing is half-applied, and its clients retry the same request ids.
        tracing::warn!(
            grace = ?STOP_GRACE,
            "in-flight work did not finish in time; abandoned (the next owners take it up)"
        );
    }
    leases_stop.trigger();
    lease_loop.close();
    lease_loop.wait().await;
    // In-flight work is committed: hand the partitions over at once.
    let released = ownership.release_all().await;
    tracing::info!(
        released,
        transitions = metrics.transitions_total(),
        "stopped"
    );
}

/// How long a stopping daemon waits for its in-flight work (requests, a round of an advance,
/// webhook deliveries) before it releases its leases anyway: well inside the 30 s grace of
/// systemd, compose and Kubernetes.
const STOP_GRACE: std::time::Duration = std::time::Duration::from_secs(8);

/// Restores the clock: the mode must match the one the data was made with; a simulated clock
/// goes on from the time kept in Redis (or starts at `clock.start`, else now).
async fn open_clock(store: &Store, settings: &Settings) -> Result<Clock, RunError> {
    let configured = settings.clock.mode;
    // Only new data gets its clock recorded (HSETNX: of daemons starting together on new data,
    // the first one's mode and start instant win), and every daemon goes on from what is
    // recorded, so a daemon joining others never moves theirs.
    let start = match configured {
        ClockMode::Simulated => Some(
            settings
                .clock
                .start
                .unwrap_or_else(|| truncate_ms(chrono::Utc::now())),
        ),
        ClockMode::System => None,
    };
    store
        .clock_store()
        .record_clock_if_new(configured.as_str(), None)
        .await?;
    let (stored_mode, _) = store.clock_store().clock_record().await?;
    if let Some(stored) = &stored_mode {
        if stored != configured.as_str() {
            return Err(RunError::ClockMismatch {
                stored: stored.clone(),
                configured: configured.as_str().to_string(),
            });
        }
    }
    if start.is_some() {
        store
            .clock_store()
            .record_clock_if_new(configured.as_str(), start)
            .await?;
    }
    let (_, stored_now) = store.clock_store().clock_record().await?;
    if let Some(asked) = settings.clock.start {
        match (configured, stored_now) {
            (ClockMode::System, _) => tracing::warn!(
                clock_start = %format_instant(&asked),
                "clock.start (--clock-start) is ignored: the clock is the system clock (use --clock simulated)"
            ),
            (ClockMode::Simulated, Some(kept)) if kept != asked => tracing::warn!(
                clock_start = %format_instant(&asked),
                now = %format_instant(&kept),
                "clock.start (--clock-start) is ignored: this data's simulated clock is kept in Redis and goes on from its now; start afresh with another --prefix or Redis (or data directory)"
            ),
            _ => {}
        }
    }
    match configured {
        ClockMode::Simulated => Ok(Clock::simulated(
            stored_now
                .or(start)
                .unwrap_or_else(|| truncate_ms(chrono::Utc::now())),
        )),
        ClockMode::System => Ok(Clock::system()),
    }
}
