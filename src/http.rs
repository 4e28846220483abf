//! The operator's HTTP listener (SPEC 9): `GET /healthz`, `GET /readyz` and `GET /metrics`,
//! served by axum on the daemon's runtime. It only reads: [`Health`] answers readiness and
//! refreshes the gauges read off Redis; the metrics registry renders itself.
//!
//! It listens from the very start, before Redis answers (the embedded redis-server may take
//! seconds to load a large data set): until the daemon hands it its [`Health`]
//! ([`Probes::serve`]), `/healthz` is 200 (the process is alive: a liveness probe must not kill
//! it), `/readyz` is a 503 saying start-up is under way, and `/metrics` renders the daemon's
//! figures without the ones read off Redis.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::config::HttpListen;
use crate::health::{Health, NotReady};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;

/// The Prometheus text format's content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for HTTP on {addr} (http.listen)")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// What the endpoints answer from: the daemon's figures from the start, its [`Health`] once
/// start-up has reached Redis. Cheap to clone.
#[derive(Clone)]
pub struct Probes {
    metrics: Arc<Metrics>,
    health: Arc<OnceLock<Health>>,
}

impl Probes {
    /// Probes of a daemon that is starting (Redis not reached yet).
    pub fn starting(metrics: Arc<Metrics>) -> Probes {
        Probes {
            metrics,
            health: Arc::new(OnceLock::new()),
        }
    }

    /// From now on `/readyz` and `/metrics` ask `health` (a second call is ignored).
    pub fn serve(&self, health: Health) {
        let _ = self.health.set(health);
    }

    fn health(&self) -> Option<&Health> {
        self.health.get()
    }
}

/// Why `/readyz` is 503 before the daemon has reached Redis.
pub const STARTING: &str =
    "start-up: waiting for Redis (an embedded redis-server may be loading its data)";

/// Binds `listen` and serves the endpoints until `shutdown`; the address bound (`None` when
/// off, or when the default address was taken).
///
/// # Errors
/// [`BindError`] when a configured address cannot be bound.
pub async fn start(
    listen: HttpListen,
    probes: Probes,
    shutdown: &Shutdown,
    tasks: &TaskTracker,
) -> Result<Option<SocketAddr>, BindError> {
    let (addr, default) = match listen {
        HttpListen::Off => return Ok(None),
        HttpListen::Default(addr) => (addr, true),
        HttpListen::Configured(addr) => (addr, false),
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) if default => {
            tracing::warn!(%addr, error = %e, "the default HTTP address is taken; no health or metrics endpoint (set http.listen)");
            return Ok(None);
        }
        Err(source) => return Err(BindError { addr, source }),
    };
    let bound = listener
        .local_addr()
        .map_err(|source| BindError { addr, source })?;
    let app = router(probes);
    let stop = shutdown.clone();
    tasks.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.wait().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the HTTP listener stopped");
        }
    });
    tracing::info!(addr = %bound, "HTTP listening (/healthz, /readyz, /metrics)");
    Ok(Some(bound))
}

fn router(probes: Probes) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(probes)
}

fn json_response(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

async fn healthz() -> Response {
    json_response(StatusCode::OK, &json!({"status": "ok"}))
}

async fn readyz(State(probes): State<Probes>) -> Response {
    let readiness = match probes.health() {
        Some(health) => health.readiness().await,
        None => Err(NotReady {
            reasons: vec![STARTING.to_string()],
        }),
    };
    match readiness {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(not) => json_response(StatusCode::SERVICE_UNAVAILABLE, &not.json()),
    }
}

async fn metrics(State(probes): State<Probes>) -> Response {
    if let Some(health) = probes.health() {
        health.refresh().await;
    }
    (
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        probes.metrics.render(),
    )
        .into_response()
}
