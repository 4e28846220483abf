//! Webhook delivery (SPEC 9, 10): every event of the partitions this daemon owns, POSTed to
//! each endpoint that wants its type, signed, retried with exponential backoff on the wall
//! clock, dead-lettered after `webhooks.max_age`.
//!
//! One loop per endpoint reads the partition streams after its progress (kept in Redis with
//! the partition, so a takeover resumes it) and keeps a queue per order: an order's events go
//! one at a time, in stream (= sequence) order, while other orders' go at once, up to
//! `webhooks.max_in_flight` per endpoint. A receiver that is slow or down only fills that
//! endpoint's queues (bounded per partition); commits and admin replies never wait for it.
//!
//! Progress: `cursor` is the last stream entry whose deliveries are all finished; deliveries
//! finished above it are marked `d:<key>` until the cursor passes them, so a restart redoes
//! only what was in flight (at least once; receivers dedupe on `Recur-Event-Id`).
//!
//! What an answer means for the endpoint (down, paused by `Retry-After`) or only for the
//! event (SPEC 11.2) is decided by [`health`], a pure state machine.

mod cursor;
mod endpoint;
pub mod health;
mod queue;

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;
use tokio_util::task::TaskTracker;

use crate::config::WebhookSettings;
use crate::metrics::Metrics;
use crate::ownership::Ownership;
use crate::shutdown::Shutdown;
use crate::store::webhooks::WebhookStore;
use crate::store::{RedisAddress, Store, StoreError};

use endpoint::*;
use health::{Attempt, Health, LogLimit};
use queue::Queues;

/// How often the streams are read for new entries when the last read found none.
const POLL: Duration = Duration::from_millis(200);
/// Entries read per partition per round trip.
const READ_BATCH: usize = 256;
/// Deliveries queued per partition, and per endpoint, before the streams are read further
/// (the rest waits in Redis): bounds memory (each holds its body) while a receiver is slow
/// or down.
const PARTITION_QUEUE_CAP: usize = 256;
const ENDPOINT_QUEUE_CAP: usize = 4096;
/// At most one warning per endpoint per this long for failed attempts, and one for
/// dead-lettered events (each saying how many were left out since the last).
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(10);
/// How often retryDeadWebhooks requests are looked for.
const REDELIVER_POLL: Duration = Duration::from_secs(1);
/// How often each partition's backlog is compared with `events.max_len`.
const TRIM_CHECK: Duration = Duration::from_secs(5);

/// `Recur-Signature`'s `v1`: the hex HMAC-SHA256 of `"<t>.<body>"` keyed with the secret.
pub fn signature(secret: &str, t: i64, body: &str) -> String {
    // HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `Recur-Signature` header value for a body sent at Unix second `t`.
pub fn signature_header(secret: &str, t: i64, body: &str) -> String {
    format!("t={t},v1={}", signature(secret, t, body))
}

/// The pause before attempt `attempts + 1` (after `attempts` failures): `initial` doubling,
/// at most `max`.
pub fn backoff(attempts: u32, initial: Duration, max: Duration) -> Duration {
    let doublings = attempts.saturating_sub(1).min(30);
    initial.saturating_mul(1u32 << doublings).min(max)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// What the delivery loops are configured with.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub settings: WebhookSettings,
    /// `events.max_len`: undelivered events the trim would force out are dead-lettered first.
    pub events_max_len: u64,
    /// Sent as `Recur-Daemon-Id` (which owner delivered it).
    pub daemon_id: String,
}

/// Why delivery could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot set up the webhook HTTP client")]
    Client(#[source] reqwest::Error),
    #[error("cannot record where new webhook endpoints start")]
    Store(#[source] StoreError),
    #[error("cannot start the webhook delivery thread")]
    Runtime(#[source] std::io::Error),
    #[error("the webhook delivery thread stopped while starting")]
    Gone,
}

/// Starts delivery on a thread of its own (its own runtime and Redis connection to
/// `redis`), one loop per endpoint; nothing when no endpoint is configured. A new endpoint
/// starts at the ends of the streams of the partitions held now, recorded before this returns
/// (so before the daemon takes requests: no event made after start-up is skipped). The thread
/// stops on `shutdown`; `tasks` waits for it.
///
/// # Errors
/// [`StartError`] when the HTTP client cannot be built or Redis fails.
pub async fn start(
    redis: RedisAddress,
    store: Store,
    ownership: Ownership,
    metrics: Arc<Metrics>,
    config: WebhookConfig,
    shutdown: &Shutdown,
    tasks: &TaskTracker,
) -> Result<(), StartError> {
    if config.settings.endpoints.is_empty() {
        return Ok(());
    }
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let (done_tx, done_rx) = tokio::sync::oneshot::channel::<()>();
    let shutdown = shutdown.clone();
    let thread = std::thread::Builder::new()
        .name("recur-webhooks".into())
        .spawn(move || {
            yield_cpu_to_commits();
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    let _ = ready_tx.send(Err(StartError::Runtime(e)));
                    return;
                }
            };
            let local = tokio::task::LocalSet::new();
            local.block_on(&runtime, async move {
                let loops = match prepare(redis, store, ownership, metrics, config).await {
                    Ok(loops) => loops,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let running = TaskTracker::new();
                for run in loops {
                    running.spawn_local(run.run(shutdown.clone()));
                }
                running.close();
                let _ = ready_tx.send(Ok(()));
                running.wait().await;
            });
            let _ = done_tx.send(());
        })
        .map_err(StartError::Runtime)?;
    let started = ready_rx.await.unwrap_or(Err(StartError::Gone));
    if started.is_err() {
        let _ = thread.join();
        return started;
    }
    tasks.spawn(async move {
        let _ = done_rx.await;
    });
    Ok(())
}

/// Lowers this thread's scheduling priority (nice 10) so that on a saturated machine
/// deliveries take the CPU commits and admin replies leave over, not theirs.
fn yield_cpu_to_commits() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority changes only the scheduling
        // priority of this thread (a Linux thread id is a valid PRIO_PROCESS target).
        let rc = unsafe { libc::setpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t, 10) };
        if rc != 0 {
            tracing::debug!("cannot lower the webhook thread's priority");
        }
    }
}

/// The delivery loops, once every new endpoint's start is recorded.
async fn prepare(
    redis: RedisAddress,
    store: Store,
    ownership: Ownership,
    metrics: Arc<Metrics>,
    config: WebhookConfig,
) -> Result<Vec<EndpointLoop>, StartError> {
    let conn = crate::store::connect_to(&redis)
        .await
        .map_err(StartError::Store)?;
    let store = store.with_webhook_conn(conn).webhook_store();
    for ep in &config.settings.endpoints {
        for (p, token) in ownership.tokens(&ownership.owned()) {
            let progress = store
                .webhook_progress(p, ep.id())
                .await
                .map_err(StartError::Store)?;
            if progress.cursor.is_none() {
                start_at_end(&store, p, ep.id(), &token)
                    .await
                    .map_err(StartError::Store)?;
            }
        }
    }
    let pending = Arc::new(AtomicU64::new(0));
    let mut loops = Vec::new();
    for ep in &config.settings.endpoints {
        let client = reqwest::Client::builder()
            .timeout(config.settings.timeout)
            .pool_max_idle_per_host(config.settings.max_in_flight)
            .build()
            .map_err(StartError::Client)?;
        loops.push(EndpointLoop {
            ep: Arc::new(ep.clone()),
            id: ep.id().to_string(),
            client,
            store: store.clone(),
            ownership: ownership.clone(),
            metrics: Arc::clone(&metrics),
            config: config.clone(),
            pending: Arc::clone(&pending),
            parts: BTreeMap::new(),
            queues: Queues::default(),
            generation: 0,
            redeliver_seen: "0-0".to_string(),
            last_request: None,
            staged: BTreeMap::new(),
            health: Health::new(
                config.settings.retry_initial,
                config.settings.retry_max,
                config.settings.max_in_flight,
            ),
            failure_log: LogLimit::new(FAILURE_LOG_EVERY),
            dead_log: LogLimit::new(FAILURE_LOG_EVERY),
        });
    }
    Ok(loops)
}

/// Records the stream's end as the start of an endpoint that has no cursor in `p` (SPEC 10:
/// a new endpoint starts at the streams' ends); the cursor, or `None` when another start
/// recorded one first (read it again).
async fn start_at_end(
    store: &WebhookStore,
    p: u16,
    endpoint: &str,
    token: &str,
) -> Result<Option<(String, u64)>, StoreError> {
    let end = store.stream_end(p).await?;
    let recorded = store
        .webhook_init(p, endpoint, token, &end.last_id, end.added)
        .await?;
    Ok(recorded.then_some((end.last_id, end.added)))
}

/// The order of a change entry in its whole form (every field, as getOrder and `recur admin
/// watch` print it; the stream holds the compact form). What does not read as an order is
/// sent as it is.
fn whole_entity(entity: &Value) -> String {
    crate::domain::Order::deserialize(entity)
        .ok()
        .and_then(|o| serde_json::to_string(&o).ok())
        .unwrap_or_else(|| entity.to_string())
}

/// An event's body: the event with `"entity": <entity JSON>` added (the shape `recur admin
/// watch` prints), spliced as text so the entity is not copied per event.
fn event_body(event: &Value, entity: &str) -> String {
    let mut body = event.to_string();
    if body.ends_with('}') {
        body.pop();
        if body.len() > 1 {
            body.push(',');
        }
        body.push_str("\"entity\":");
        body.push_str(entity);
        body.push('}');
    }
    body
}

/// A request that got no usable answer: a timeout or a transport failure (connection refused
/// or reset, DNS, TLS: the endpoint's failure), or a redirect loop (3xx answers: the event's).
/// The error names no URL (an endpoint's URL may hold credentials).
fn send_failure(e: reqwest::Error) -> Attempt {
    if e.is_timeout() {
        return health::transport_failure("timeout".to_string());
    }
    let redirect = e.is_redirect();
    let error = error_chain(&e.without_url());
    if redirect {
        Attempt::EventFailed { error }
    } else {
        health::transport_failure(error)
    }
}

/// An endpoint's URL for the logs: a password in it and its query (where tokens go) masked.
fn masked_url(url: &str) -> String {
    let Ok(mut parsed) = reqwest::Url::parse(url) else {
        return "(unparsable URL)".to_string();
    };
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query().is_some() {
        parsed.set_query(Some("***"));
    }
    parsed.to_string()
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    // The error names the URL, which may hold credentials (`https://user:pass@host`): the
    // text goes into dead letters and logs.
    crate::telemetry::mask_secrets(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_stripe_s_scheme() {
        // Python's hmac.new(b"whsec_test", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        let body = r#"{"a":1}"#;
        assert_eq!(
            signature("whsec_test", 1_700_000_000, body),
            "38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
        assert_eq!(
            signature_header("whsec_test", 1_700_000_000, body),
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
        assert_ne!(signature("a", 1, "{}"), signature("b", 1, "{}"));
        assert_ne!(signature("a", 1, "{}"), signature("a", 2, "{}"));
    }

    proptest::proptest! {
        #[test]
        fn backoff_starts_at_the_initial_pause_never_shrinks_and_stays_under_the_cap(
            initial_ms in 1u64..100_000,
            extra_ms in 0u64..10_000_000,
            attempts in 1u32..200,
        ) {
            let (i, m) = (Duration::from_millis(initial_ms), Duration::from_millis(initial_ms + extra_ms));
            proptest::prop_assert_eq!(backoff(1, i, m), i);
            let (a, b) = (backoff(attempts, i, m), backoff(attempts + 1, i, m));
            proptest::prop_assert!(a <= b && b <= m && a >= i);
            proptest::prop_assert!(b <= a * 2);
        }
    }

    #[test]
    fn a_body_is_the_event_with_the_whole_entity_as_watch_prints_it() {
        let change = serde_json::json!({
            "events": [{"id": "e1", "type": "orderCreated", "sequence": 1}],
            "entity": {"weird": true},
        });
        let body = event_body(&change["events"][0], &whole_entity(&change["entity"]));
        let parsed: Value = serde_json::from_str(&body).expect("JSON");
        let mut watch = crate::wire::change_events(&change);
        assert_eq!(parsed, watch.remove(0));
        assert_eq!(event_body(&serde_json::json!({}), "1"), r#"{"entity":1}"#);
    }

    #[test]
    fn a_url_is_logged_without_its_password_or_query() {
        assert_eq!(
            masked_url("https://user:pw@hooks.example/h?token=abc"),
            "https://user:***@hooks.example/h?***"
        );
        assert_eq!(
            masked_url("http://127.0.0.1:8080/recur"),
            "http://127.0.0.1:8080/recur"
        );
        assert_eq!(masked_url("not a url"), "(unparsable URL)");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let (i, m) = (Duration::from_secs(10), Duration::from_secs(3600));
        let pauses: Vec<u64> = (1..=12).map(|a| backoff(a, i, m).as_secs()).collect();
        assert_eq!(
            pauses,
            [10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600, 3600]
        );
        assert_eq!(backoff(100, i, m), m);
    }
}
