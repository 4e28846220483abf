//! The daemon's HTTP listener, served by axum on the daemon's runtime: the operator's
//! `GET /healthz`, `GET /readyz` and `GET /metrics` (SPEC 9), where [`Health`] answers
//! readiness and refreshes the gauges read off Redis; and the API under `/v1` (SPEC 11.3):
//! [`api`] (the routes), [`auth`] (bearer tokens and scopes), [`openapi`] (its document).
//!
//! The API is served to the bearers of `[[http.tokens]]`; with none configured, only on a
//! loopback address (as channel `http`, scope admin): a non-loopback listener without tokens
//! serves the health routes alone, and says so at start. The console (`/console`, see
//! [`crate::console`]) is served wherever the API is.
//!
//! It listens from the very start, before Redis answers (the embedded redis-server may take
//! seconds to load a large data set): until the daemon hands it its [`Health`]
//! ([`Probes::serve`]), `/healthz` is 200 (the process is alive: a liveness probe must not kill
//! it), `/readyz` is a 503 saying start-up is under way, and `/metrics` renders the daemon's
//! figures without the ones read off Redis; the API answers 503 until [`Http::serve_api`].

pub mod api;
pub mod auth;
pub mod openapi;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::admin::AdminHandle;
use crate::config::{HttpListen, TokenSettings};
use crate::health::{Health, NotReady};
use crate::metrics::Metrics;
use crate::shutdown::Shutdown;
use crate::store::Store;
use api::Api;
use auth::Access;

/// The Prometheus text format's content type.
const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

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

/// Why the listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen for HTTP on {addr} (http.listen)")]
pub struct BindError {
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

/// What the listener is configured with.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Where to listen.
    pub listen: HttpListen,
    /// The API's tokens (none: loopback only).
    pub tokens: Vec<TokenSettings>,
    /// How long a daemon counts as live after its last heartbeat (`/v1/daemons`).
    pub lease_ttl: Duration,
}

/// The running listener.
pub struct Http {
    /// The address bound (`None`: off, or the default address was taken).
    pub addr: Option<SocketAddr>,
    /// The API, when this listener serves it.
    api: Option<Arc<Api>>,
}

impl Http {
    /// Commands of the API run through `admin`, and its reads through `store`, from now on
    /// (before, they are answered 503).
    pub fn serve_api(&self, admin: AdminHandle, store: Store) {
        if let Some(api) = &self.api {
            api.serve(admin, store);
        }
    }
}

/// Binds `listen` and serves the endpoints until `shutdown`.
///
/// # Errors
/// [`BindError`] when a configured address cannot be bound.
pub async fn start(
    config: HttpConfig,
    probes: Probes,
    shutdown: &Shutdown,
    tasks: &TaskTracker,
) -> Result<Http, BindError> {
    let off = Http {
        addr: None,
        api: None,
    };
    let (addr, default) = match config.listen {
        HttpListen::Off => return Ok(off),
        HttpListen::Default(addr) => (addr, true),
        HttpListen::Configured(addr) => (addr, false),
    };
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) if default => {
            tracing::warn!(%addr, error = %e, "the default HTTP address is taken; no health or metrics endpoint and no API (set http.listen)");
            return Ok(off);
        }
        Err(source) => return Err(BindError { addr, source }),
    };
    let bound = listener
        .local_addr()
        .map_err(|source| BindError { addr, source })?;
    let access = if !config.tokens.is_empty() {
        Some(Access::tokens(&config.tokens))
    } else if bound.ip().is_loopback() {
        Some(Access::Loopback)
    } else {
        tracing::warn!(addr = %bound, "no [[http.tokens]] configured and http.listen is not a loopback address: the API (/v1) is not served, only /healthz, /readyz and /metrics");
        None
    };
    let api =
        access.map(|access| Arc::new(Api::new(access, config.lease_ttl, openapi::document_json())));
    let mut app = router(probes);
    if let Some(api) = &api {
        app = app
            .merge(api::router(Arc::clone(api)))
            .merge(crate::console::routes());
    }
    let stop = shutdown.clone();
    tasks.spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.wait().await })
            .await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "the HTTP listener stopped");
        }
    });
    let serves = match (&api, config.tokens.len()) {
        (None, _) => "/healthz, /readyz, /metrics".to_string(),
        (Some(_), 0) => {
            "/healthz, /readyz, /metrics, the API /v1 and /console without tokens (loopback)"
                .to_string()
        }
        (Some(_), n) => {
            format!("/healthz, /readyz, /metrics, the API /v1 and /console ({n} tokens)")
        }
    };
    tracing::info!(addr = %bound, serves = %serves, "HTTP listening");
    if api.is_some() {
        tracing::info!("console: http://{bound}/console");
    }
    Ok(Http {
        addr: Some(bound),
        api,
    })
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
