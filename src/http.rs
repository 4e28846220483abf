//! The operator's HTTP listener (SPEC 9): `GET /healthz`, `GET /readyz` and `GET /metrics`,
//! served by axum on the daemon's runtime. It only reads: [`Health`] answers readiness and
//! refreshes the gauges read off Redis; the metrics registry renders itself.

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;

use crate::config::HttpListen;
use crate::health::Health;
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

/// Binds `listen` and serves the endpoints until `shutdown`; the address bound (`None` when
/// off, or when the default address was taken).
///
/// # Errors
/// [`BindError`] when a configured address cannot be bound.
pub async fn start(
    listen: HttpListen,
    health: Health,
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
    let app = router(health);
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

fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
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

async fn readyz(State(health): State<Health>) -> Response {
    match health.readiness().await {
        Ok(body) => json_response(StatusCode::OK, &body),
        Err(not) => json_response(StatusCode::SERVICE_UNAVAILABLE, &not.json()),
    }
}

async fn metrics(State(health): State<Health>) -> Response {
    health.refresh().await;
    (
        [(header::CONTENT_TYPE, PROMETHEUS_TEXT)],
        health.metrics().render(),
    )
        .into_response()
}
