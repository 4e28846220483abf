//! Webhooks (SPEC 9, 10) to a real HTTP receiver started by the test: it checks every
//! signature with its own HMAC, fails attempts on purpose, and records what arrived.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use hmac::{Hmac, Mac};
use redis::AsyncCommands;
use serde_json::{json, Value};
use sha2::Sha256;

use recur::config::{EndpointSettings, Settings};
use recur::metrics;

use crate::support::*;

const SECRET: &str = "whsec_test_secret";

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Call {
    event_id: String,
    event_type: String,
    daemon: String,
    signature_ok: bool,
    body: Value,
    accepted: bool,
    /// When it arrived.
    at: Instant,
    /// What the receiver answered.
    status: u16,
}

#[derive(Default)]
struct ReceiverState {
    calls: Vec<Call>,
    /// Attempts so far per event id.
    attempts: HashMap<String, u32>,
}

/// How the receiver answers.
#[derive(Default)]
struct Behaviour {
    /// Refuse (500) the first this-many attempts of every event whose id ends in these hex
    /// digits (a deterministic third or so of the events).
    fail_first: u32,
    fail_suffixes: Vec<char>,
    /// Answer 503 to everything.
    down: bool,
    /// Answer 503 with this `Retry-After` to the first `unavailable_first` calls.
    unavailable_first: u32,
    retry_after: String,
    /// Wait this long before answering.
    delay: Duration,
}

#[derive(Clone)]
struct Receiver {
    state: Arc<Mutex<ReceiverState>>,
    behaviour: Arc<Mutex<Behaviour>>,
    addr: SocketAddr,
}

fn valid_signature(header: &str, body: &[u8]) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", x)) => t = Some(x.to_string()),
            Some(("v1", x)) => v1 = Some(x.to_string()),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    let now = chrono::Utc::now().timestamp();
    if t.parse::<i64>().map_or(true, |t| (now - t).abs() > 300) {
        return false;
    }
    let mut mac = Hmac::<Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(t.as_bytes());
    mac.update(b".");
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    expected == v1
}

/// Every hex digit: with `fail_suffixes`, every event.
const EVERY_EVENT: [char; 16] = [
    '0', '1', '2', '3', '4', '5', '6', '7', '8', '9', 'a', 'b', 'c', 'd', 'e', 'f',
];

async fn receive(State(rx): State<Receiver>, headers: HeaderMap, body: Bytes) -> Response {
    let h = |k: &str| {
        headers
            .get(k)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    let (down, delay, fail_first, suffixes, unavailable_first, retry_after) = {
        let b = rx.behaviour.lock().unwrap();
        (
            b.down,
            b.delay,
            b.fail_first,
            b.fail_suffixes.clone(),
            b.unavailable_first,
            b.retry_after.clone(),
        )
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let event_id = h("recur-event-id");
    let mut state = rx.state.lock().unwrap();
    let attempt = {
        let a = state.attempts.entry(event_id.clone()).or_default();
        *a += 1;
        *a
    };
    let flaky = event_id
        .chars()
        .last()
        .is_some_and(|c| suffixes.contains(&c));
    let unavailable = state.calls.len() < unavailable_first as usize;
    let status = if down || unavailable {
        StatusCode::SERVICE_UNAVAILABLE
    } else if flaky && attempt <= fail_first {
        StatusCode::INTERNAL_SERVER_ERROR
    } else {
        StatusCode::OK
    };
    let accepted = status == StatusCode::OK;
    state.calls.push(Call {
        event_id,
        event_type: h("recur-event-type"),
        daemon: h("recur-daemon-id"),
        signature_ok: valid_signature(&h("recur-signature"), &body)
            && h("content-type") == "application/json",
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
        accepted,
        at: Instant::now(),
        status: status.as_u16(),
    });
    if unavailable && !retry_after.is_empty() {
        (status, [("retry-after", retry_after)]).into_response()
    } else {
        status.into_response()
    }
}

impl Receiver {
    async fn start(behaviour: Behaviour) -> Receiver {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let rx = Receiver {
            state: Arc::default(),
            behaviour: Arc::new(Mutex::new(behaviour)),
            addr: listener.local_addr().unwrap(),
        };
        let app = Router::new()
            .route("/hook", post(receive))
            .with_state(rx.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        rx
    }

    fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    fn accepted(&self) -> Vec<Call> {
        self.calls().into_iter().filter(|c| c.accepted).collect()
    }

    /// Waits until `want` distinct event ids were accepted (30 s at most).
    async fn wait_accepted(&self, want: usize) -> Vec<Call> {
        self.wait_accepted_within(want, Duration::from_secs(30))
            .await
    }

    async fn wait_accepted_within(&self, want: usize, deadline: Duration) -> Vec<Call> {
        let polls = deadline.as_millis() / 50;
        for _ in 0..polls {
            let accepted = self.accepted();
            let distinct: HashSet<&str> = accepted.iter().map(|c| c.event_id.as_str()).collect();
            if distinct.len() >= want {
                return accepted;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let got: HashSet<String> = self.accepted().into_iter().map(|c| c.event_id).collect();
        panic!("only {} of {want} events were delivered", got.len());
    }
}

fn endpoint(id: &str, url: &str, events: &[&str]) -> EndpointSettings {
    EndpointSettings {
        id: Some(id.to_string()),
        url: url.to_string(),
        secret: SECRET.to_string(),
        events: events.iter().map(|e| e.to_string()).collect(),
        test_clocks: false,
    }
}

fn fast_retries(s: &mut Settings) {
    s.webhooks.retry_initial = Duration::from_millis(50);
    s.webhooks.retry_max = Duration::from_millis(200);
    s.webhooks.timeout = Duration::from_secs(2);
}

/// Each order's accepted events, first acceptance of each id, in arrival order.
fn per_order(calls: &[Call]) -> BTreeMap<String, Vec<u64>> {
    let mut seen = HashSet::new();
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for c in calls {
        if seen.insert(c.event_id.clone()) {
            let order = c.body["entityId"].as_str().unwrap_or_default().to_string();
            out.entry(order)
                .or_default()
                .push(c.body["sequence"].as_u64().unwrap());
        }
    }
    out
}

async fn some_activity(h: &Harness, orders: usize) {
    for i in 0..orders {
        let kind = if i % 2 == 0 { "ONLINE" } else { "OFFLINE" };
        h.ok("createOrder", monthly(&format!("o{i}"), kind, 3, "5.00"))
            .await;
        if i % 2 == 0 {
            h.ok(
                "recordPayment",
                json!({"orderId": format!("o{i}"), "paymentId": format!("p{i}"), "amount": "5.00"}),
            )
            .await;
        }
        if i % 5 == 0 {
            h.ok(
                "cancelOrder",
                json!({"orderId": format!("o{i}"), "effectiveAt": "NEXT_PAYMENT_DATE"}),
            )
            .await;
        }
    }
    h.advance("2026-03-15T00:00:00Z").await;
}

#[tokio::test]
async fn every_event_is_delivered_signed_in_order_per_order_and_filters_hold() {
    let all = Receiver::start(Behaviour {
        fail_first: 2,
        fail_suffixes: vec!['0', '3', '6', '9', 'c'],
        ..Behaviour::default()
    })
    .await;
    let some = Receiver::start(Behaviour::default()).await;
    let (all_url, some_url) = (all.url(), some.url());
    let h = Harness::start_with(move |s| {
        fast_retries(s);
        s.webhooks.endpoints = vec![
            endpoint("all", &all_url, &["*"]),
            endpoint("some", &some_url, &["orderCreated", "orderCanceled"]),
        ];
    })
    .await;
    some_activity(&h, 20).await;
    let events = h.events().await;
    assert!(events.len() > 60, "{} events", events.len());
    let calls = all.wait_accepted(events.len()).await;

    let stream_ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    let delivered: HashSet<&str> = calls.iter().map(|c| c.event_id.as_str()).collect();
    assert_eq!(delivered, stream_ids, "every event, nothing else");
    let every = all.calls();
    assert!(
        every.iter().all(|c| c.signature_ok),
        "every signature is valid"
    );
    let refused = every.iter().filter(|c| !c.accepted).count();
    assert!(refused > 10, "the receiver refused attempts: {refused}");
    for c in &every {
        assert_eq!(c.body["type"], c.event_type.as_str());
        assert_eq!(c.body["id"], c.event_id.as_str());
        assert!(
            c.body["entity"]["id"].is_string(),
            "the entity is attached: {}",
            c.body
        );
    }
    // In sequence order per order: an order's events are accepted 1, 2, 3, ... even though
    // some of them were refused twice first.
    for (order, seqs) in per_order(&calls) {
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "order {order}");
    }
    // The filtered endpoint gets exactly its types.
    let wanted: HashSet<&str> = events
        .iter()
        .filter(|e| ["orderCreated", "orderCanceled"].contains(&e["type"].as_str().unwrap()))
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let got = some.wait_accepted(wanted.len()).await;
    let got: HashSet<&str> = got.iter().map(|c| c.event_id.as_str()).collect();
    assert_eq!(got, wanted);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(some
        .calls()
        .iter()
        .all(|c| ["orderCreated", "orderCanceled"].contains(&c.event_type.as_str())));

    let m = h.ok("getMetrics", json!({})).await;
    let delivered = metrics::series(
        &m["metrics"],
        "recur_webhook_deliveries_total",
        &[("outcome", "delivered")],
    );
    assert_eq!(delivered as usize, events.len() + wanted.len());
    let failed = metrics::series(
        &m["metrics"],
        "recur_webhook_deliveries_total",
        &[("outcome", "failed")],
    );
    assert_eq!(failed as usize, refused);
    // Everything delivered: nothing pending, and the progress cursors are at the streams' ends.
    assert_eq!(metrics::total(&m["metrics"], "recur_webhook_pending"), 0.0);
}

async fn dead_letters(h: &Harness) -> Vec<HashMap<String, String>> {
    let mut conn = h.redis.conn().await;
    let mut out = Vec::new();
    for p in 0..64 {
        let rows: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(format!("t:{{p{p}}}:webhooks:dead"))
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .unwrap();
        out.extend(rows.into_iter().map(|(_, f)| f));
    }
    out
}

#[tokio::test]
async fn a_dead_endpoint_dead_letters_and_retry_dead_webhooks_delivers_after_it_recovers() {
    let rx = Receiver::start(Behaviour {
        down: true,
        ..Behaviour::default()
    })
    .await;
    let url = rx.url();
    let h = Harness::start_with(move |s| {
        fast_retries(s);
        s.webhooks.max_age = Duration::from_millis(400);
        s.webhooks.endpoints = vec![endpoint("rx", &url, &["*"])];
    })
    .await;
    for i in 0..4 {
        h.ok(
            "createOrder",
            monthly(&format!("o{i}"), "OFFLINE", 3, "5.00"),
        )
        .await;
    }
    let events = h.events().await;
    let mut dead = Vec::new();
    // The endpoint counts as down after 8 failures in a row: one probe at a time from then on.
    for _ in 0..600 {
        dead = dead_letters(&h).await;
        if dead.len() == events.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        dead.len(),
        events.len(),
        "every event dead-lettered: {dead:?}"
    );
    for d in &dead {
        assert_eq!(d["endpoint"], "rx");
        assert_eq!(d["error"], "HTTP 503");
        // At least one attempt (on a loaded machine one slow attempt can outlast max_age).
        assert!(d["attempts"].parse::<u32>().unwrap() >= 1, "{d:?}");
        let body: Value = serde_json::from_str(&d["body"]).unwrap();
        assert_eq!(body["id"], d["eventId"].as_str());
    }
    assert!(rx.accepted().is_empty());
    // getWebhookEndpoints counts them (what the console shows).
    let listed = h.ok("getWebhookEndpoints", json!({})).await;
    assert_eq!(listed["endpoints"][0]["id"], "rx", "{listed}");
    assert_eq!(listed["endpoints"][0]["dead"], events.len(), "{listed}");
    assert_eq!(listed["endpoints"][0]["pending"], 0, "{listed}");
    let e = h
        .err("retryDeadWebhooks", json!({"endpoint": "nope"}))
        .await;
    assert_eq!(e.code.as_str(), "NOT_FOUND");

    rx.behaviour.lock().unwrap().down = false;
    let reply = h.ok("retryDeadWebhooks", json!({"endpoint": "rx"})).await;
    assert_eq!(reply["requeued"], events.len(), "{reply}");
    assert_eq!(reply["endpoints"]["rx"], events.len(), "{reply}");
    let calls = rx.wait_accepted(events.len()).await;
    let ids: HashSet<&str> = calls.iter().map(|c| c.event_id.as_str()).collect();
    let stream_ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, stream_ids);
    assert!(calls.iter().all(|c| c.signature_ok));
    assert!(dead_letters(&h).await.is_empty(), "the dead letters went");
    let m = h.ok("getMetrics", json!({})).await;
    let dead_count = metrics::series(
        &m["metrics"],
        "recur_webhook_deliveries_total",
        &[("outcome", "dead")],
    );
    assert_eq!(dead_count as usize, events.len());
    // A second request finds nothing left to deliver.
    let again = h.ok("retryDeadWebhooks", json!({})).await;
    assert_eq!(again["requeued"], 0, "{again}");
    let listed = h.ok("getWebhookEndpoints", json!({})).await;
    assert_eq!(listed["endpoints"][0]["dead"], 0, "{listed}");
}

#[tokio::test]
async fn a_sigkilled_daemon_loses_no_delivery_and_repeats_only_what_was_in_flight() {
    let rx = Receiver::start(Behaviour {
        delay: Duration::from_millis(15),
        ..Behaviour::default()
    })
    .await;
    let redis = TestRedis::start().await;
    let config = redis.dir.path().join("hooks.toml");
    let in_flight = 4;
    std::fs::write(
        &config,
        format!(
            "[webhooks]\nmax_in_flight = {in_flight}\nretry_initial = \"50ms\"\nretry_max = \"200ms\"\n\
             [[webhooks.endpoints]]\nid = \"rx\"\nurl = \"{}\"\nsecret = \"{SECRET}\"\nevents = [\"*\"]\n",
            rx.url()
        ),
    )
    .unwrap();
    let config = config.to_string_lossy().to_string();
    let args = ["--config", config.as_str()];
    let daemon = ChildDaemon::start_with_args(&redis.url, "t", &args, &[]).await;
    let client = recur::admin::client::AdminClient::connect(&redis.url, "t")
        .await
        .expect("client");
    for i in 0..60 {
        let r = client
            .request(
                "createOrder",
                monthly(&format!("o{i}"), "OFFLINE", 2, "5.00"),
            )
            .await
            .expect("a reply");
        assert!(r.ok, "{r:?}");
    }
    let events = stream_events(&redis, "t").await;
    // Kill it while deliveries are under way.
    rx.wait_accepted(events.len() / 3).await;
    daemon.kill().await;
    let before_restart = rx.calls().len();
    assert!(
        before_restart < events.len(),
        "deliveries were still going on"
    );
    let daemon = ChildDaemon::start_with_args(&redis.url, "t", &args, &[]).await;
    let calls = rx.wait_accepted(events.len()).await;
    let ids: HashSet<&str> = calls.iter().map(|c| c.event_id.as_str()).collect();
    let stream_ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, stream_ids, "nothing lost");
    let duplicates = calls.len() - ids.len();
    assert!(
        duplicates <= in_flight,
        "{duplicates} duplicates, at most the {in_flight} in flight at the kill"
    );
    for (order, seqs) in per_order(&calls) {
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "order {order}");
    }
    daemon.kill().await;
}

#[tokio::test]
async fn with_several_daemons_each_event_is_delivered_once_by_its_partition_s_owner() {
    let rx = Receiver::start(Behaviour::default()).await;
    let redis = TestRedis::start().await;
    let with_hooks = |url: &str| {
        let mut s = settings(&redis.url, "t");
        fast_retries(&mut s);
        s.webhooks.endpoints = vec![endpoint("rx", url, &["*"])];
        s
    };
    let daemons = [
        Daemon::start(with_hooks(&rx.url())).await,
        Daemon::start(with_hooks(&rx.url())).await,
        Daemon::start(with_hooks(&rx.url())).await,
    ];
    let mut conn = redis.conn().await;
    let holder = |conn: &mut redis::aio::MultiplexedConnection, p: u16| {
        let mut c = conn.clone();
        async move {
            let v: Option<String> = c.get(format!("t:{{p{p}}}:lease")).await.unwrap();
            v.map(|v| v.split(':').next().unwrap().to_string())
        }
    };
    // Balanced first (22/21/21), so no partition changes hands while the events are made.
    for _ in 0..200 {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for p in 0..64 {
            if let Some(d) = holder(&mut conn, p).await {
                *counts.entry(d).or_default() += 1;
            }
        }
        if counts.len() == 3 && counts.values().all(|c| *c >= 21) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let client = recur::admin::client::AdminClient::connect(&redis.url, "t")
        .await
        .unwrap();
    for i in 0..40 {
        let r = client
            .request(
                "createOrder",
                monthly(&format!("o{i}"), "OFFLINE", 2, "5.00"),
            )
            .await
            .unwrap();
        assert!(r.ok, "{r:?}");
    }
    let events = stream_events(&redis, "t").await;
    let calls = rx.wait_accepted(events.len()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let calls_now = rx.calls();
    assert_eq!(calls_now.len(), events.len(), "each event once");
    assert_eq!(calls.len(), events.len());
    let keys = recur::store::Keys::new("t", 64);
    let mut by_daemon = HashSet::new();
    for c in &calls_now {
        let order = c.body["entityId"].as_str().unwrap();
        let owner = holder(&mut conn, keys.partition(order)).await.unwrap();
        assert_eq!(
            c.daemon, owner,
            "order {order}'s partition owner delivered it"
        );
        by_daemon.insert(c.daemon.clone());
    }
    assert_eq!(by_daemon.len(), 3, "every daemon delivered its share");
    for d in daemons {
        d.stop().await;
    }
}

/// SPEC 10: the trim never removes an entry an endpoint still has to deliver; when
/// `events.max_len` would force it, the undelivered events are first dead-lettered with error
/// "trimmed" and counted. With the endpoint down and one partition trimmed to 2 entries, the
/// events of the older entries go to the dead letters, the 2 newest entries' events are
/// delivered once the endpoint answers, and nothing is lost in between.
#[tokio::test]
async fn what_the_trim_would_force_out_is_dead_lettered_first() {
    let rx = Receiver::start(Behaviour {
        down: true,
        ..Behaviour::default()
    })
    .await;
    let url = rx.url();
    let h = Harness::start_with(move |s| {
        fast_retries(s);
        s.partitions = 1;
        s.events.max_len = 2;
        s.cron.trim_events = "0 0 * * * *".parse().unwrap();
        s.webhooks.endpoints = vec![endpoint("rx", &url, &["*"])];
    })
    .await;
    h.advance("2026-01-01T00:00:01Z").await;
    for i in 0..4 {
        h.ok(
            "createOrder",
            monthly(&format!("o{i}"), "OFFLINE", 3, "5.00"),
        )
        .await;
    }
    let changes = h.changes().await;
    assert!(changes.len() > 2);
    let kept: Vec<&Value> = changes.iter().rev().take(2).collect();
    let kept_events: HashSet<String> = kept
        .iter()
        .flat_map(|c| c["events"].as_array().unwrap())
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let all = h.events().await;
    let forced = all.len() - kept_events.len();
    // The trim job keeps the entries until their events are dead-lettered (every 5 s): a
    // trim before that keeps them all.
    h.advance("2026-01-01T01:00:00Z").await;
    let len = h.changes().await.len();
    assert!(
        len == changes.len() || dead_letters(&h).await.len() == forced,
        "{len} entries left before their events were dead-lettered"
    );
    let mut dead = Vec::new();
    for _ in 0..300 {
        dead = dead_letters(&h).await;
        if dead.len() >= forced {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(dead.len(), forced, "the older entries' events: {dead:?}");
    assert!(dead.iter().all(|d| d["error"] == "trimmed"), "{dead:?}");
    let dead_ids: HashSet<String> = dead.iter().map(|d| d["eventId"].clone()).collect();
    assert!(dead_ids.is_disjoint(&kept_events));
    let m = h.ok("getMetrics", json!({})).await;
    assert_eq!(
        metrics::total(&m["metrics"], "recur_webhook_trimmed_total") as usize,
        forced
    );
    // Now the trim may cut to max_len.
    h.advance("2026-01-01T02:00:00Z").await;
    assert_eq!(h.changes().await.len(), 2, "trimmed to max_len");
    rx.behaviour.lock().unwrap().down = false;
    let calls = rx.wait_accepted(kept_events.len()).await;
    let delivered: HashSet<String> = calls.iter().map(|c| c.event_id.clone()).collect();
    assert_eq!(delivered, kept_events, "the kept entries' events arrive");
    let every: HashSet<String> = all
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let accounted: HashSet<String> = delivered.union(&dead_ids).cloned().collect();
    assert_eq!(accounted, every, "each event delivered or dead-lettered");
}

/// On a Redis Cluster (progress, dead letters and leases of a partition share its slot):
/// every event delivered, in order per order, with refused attempts retried.
#[tokio::test]
async fn webhooks_are_delivered_in_order_on_a_redis_cluster() {
    let rx = Receiver::start(Behaviour {
        fail_first: 1,
        fail_suffixes: vec!['1', '5', 'a'],
        ..Behaviour::default()
    })
    .await;
    let url = rx.url();
    let h = Harness::start_on_cluster(move |s| {
        fast_retries(s);
        s.webhooks.endpoints = vec![endpoint("rx", &url, &["*"])];
    })
    .await;
    for i in 0..12 {
        h.ok(
            "createOrder",
            monthly(&format!("o{i}"), "OFFLINE", 3, "5.00"),
        )
        .await;
    }
    h.advance("2026-02-15T00:00:00Z").await;
    let events = h.events().await;
    let calls = rx.wait_accepted(events.len()).await;
    let ids: HashSet<&str> = calls.iter().map(|c| c.event_id.as_str()).collect();
    let stream_ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, stream_ids);
    assert!(
        rx.calls().iter().any(|c| !c.accepted),
        "some attempts were refused"
    );
    assert!(rx.calls().iter().all(|c| c.signature_ok));
    for (order, seqs) in per_order(&calls) {
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "order {order}");
    }
    let r = h.ok("retryDeadWebhooks", json!({})).await;
    assert_eq!(r["requeued"], 0, "{r}");
}

/// SPEC 11.2: any non-2xx answer but 429, 502, 503 and 504 is that event's failure only. A
/// receiver that answers 500 to the first two attempts of every event (so far more than 8
/// attempts in a row fail) never makes the endpoint count as down: each event is retried on
/// its own backoff, holding back only its order's later events, and every other order's go on
/// at full speed. (Counted as down, the endpoint was probed one delivery at a time, after
/// pauses growing to `retry_max`: 20 of 304 events in 30 s.)
#[tokio::test]
async fn a_receiver_refusing_every_event_twice_with_500_still_gets_everything_in_order() {
    let rx = Receiver::start(Behaviour {
        fail_first: 2,
        fail_suffixes: EVERY_EVENT.to_vec(),
        ..Behaviour::default()
    })
    .await;
    let url = rx.url();
    let h = Harness::start_with(move |s| {
        fast_retries(s);
        // A down endpoint's probe pauses would grow to this: seconds per event.
        s.webhooks.retry_max = Duration::from_secs(5);
        s.webhooks.endpoints = vec![endpoint("rx", &url, &["*"])];
    })
    .await;
    let started = Instant::now();
    some_activity(&h, 30).await;
    let events = h.events().await;
    assert!(events.len() > 250, "{} events", events.len());
    let calls = rx
        .wait_accepted_within(events.len(), Duration::from_secs(60))
        .await;
    let every = rx.calls();
    eprintln!(
        "flaky receiver: {} events made and delivered in {:.1} s ({} attempts)",
        events.len(),
        started.elapsed().as_secs_f64(),
        every.len()
    );
    let ids: HashSet<&str> = calls.iter().map(|c| c.event_id.as_str()).collect();
    let stream_ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, stream_ids, "every event, nothing else");
    // Each event: refused twice, then accepted (no attempt after the acceptance).
    let mut by_event: HashMap<&str, Vec<u16>> = HashMap::new();
    for c in &every {
        by_event.entry(&c.event_id).or_default().push(c.status);
    }
    for (id, statuses) in &by_event {
        assert_eq!(statuses, &[500, 500, 200], "event {id}");
    }
    for (order, seqs) in per_order(&calls) {
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "order {order}");
    }
    let m = h.ok("getMetrics", json!({})).await;
    let failed = metrics::series(
        &m["metrics"],
        "recur_webhook_deliveries_total",
        &[("outcome", "failed")],
    );
    assert_eq!(failed as usize, 2 * events.len());
    assert_eq!(metrics::total(&m["metrics"], "recur_webhook_pending"), 0.0);
}

/// SPEC 11.2: a 503 with `Retry-After` pauses the whole endpoint for that long, capped at
/// `webhooks.retry_max`. With one delivery in flight at a time, nothing at all is sent during
/// the pause (no retry of that event after `retry_initial`, no other order's event), and
/// an hour's `Retry-After` is cut to `retry_max`, so everything arrives, in order per order.
#[tokio::test]
async fn retry_after_on_a_503_pauses_the_whole_endpoint_for_at_most_retry_max() {
    let rx = Receiver::start(Behaviour {
        unavailable_first: 1,
        retry_after: "3600".to_string(),
        ..Behaviour::default()
    })
    .await;
    let url = rx.url();
    let retry_max = Duration::from_secs(2);
    let h = Harness::start_with(move |s| {
        fast_retries(s);
        s.webhooks.retry_max = retry_max;
        s.webhooks.max_in_flight = 1;
        s.webhooks.endpoints = vec![endpoint("rx", &url, &["*"])];
    })
    .await;
    for i in 0..6 {
        h.ok(
            "createOrder",
            monthly(&format!("o{i}"), "OFFLINE", 3, "5.00"),
        )
        .await;
    }
    let events = h.events().await;
    let calls = rx
        .wait_accepted_within(events.len(), Duration::from_secs(60))
        .await;
    let every = rx.calls();
    assert_eq!(every[0].status, 503);
    assert!(every[1..].iter().all(|c| c.status == 200));
    let pause = every[1].at - every[0].at;
    assert!(
        pause >= retry_max - Duration::from_millis(100),
        "the next attempt came {pause:?} after the 503"
    );
    let ids: HashSet<&str> = calls.iter().map(|c| c.event_id.as_str()).collect();
    let stream_ids: HashSet<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids, stream_ids);
    assert_eq!(calls.len(), events.len(), "each accepted once");
    for (order, seqs) in per_order(&calls) {
        let expected: Vec<u64> = (1..=seqs.len() as u64).collect();
        assert_eq!(seqs, expected, "order {order}");
    }
}

/// Issue 24: at the default log level (info) an endpoint's change of state is one warning
/// each way (up to down, down to up), failed attempts are warned about at most once per
/// endpoint per 10 s (saying how many lines were left out), and no line holds the secret.
#[tokio::test]
async fn an_endpoint_s_ups_and_downs_are_logged_once_each_and_failures_sparingly() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let rx = Receiver::start(Behaviour {
        down: true,
        ..Behaviour::default()
    })
    .await;
    let redis = TestRedis::start().await;
    let endpoints = format!(
        r#"[{{id="rx", url="{}", secret="{SECRET}", events=["*"]}}]"#,
        rx.url()
    );
    let mut daemon = ChildDaemon::start_logged(
        &redis.url,
        "t",
        &[
            ("RECUR_LOG__FORMAT", "json"),
            ("RECUR_LOG__LEVEL", "info"),
            ("RECUR_WEBHOOKS__ENDPOINTS", endpoints.as_str()),
            ("RECUR_WEBHOOKS__RETRY_INITIAL", "50ms"),
            ("RECUR_WEBHOOKS__RETRY_MAX", "200ms"),
        ],
    )
    .await;
    let stderr = daemon.child.stderr.take().expect("piped stderr");
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            out.push(line);
        }
        out
    });
    let started = Instant::now();
    let client = recur::admin::client::AdminClient::connect(&redis.url, "t")
        .await
        .expect("client");
    for i in 0..10 {
        let r = client
            .request(
                "createOrder",
                monthly(&format!("o{i}"), "OFFLINE", 3, "5.00"),
            )
            .await
            .expect("a reply");
        assert!(r.ok, "{r:?}");
    }
    let events = stream_events(&redis, "t").await;
    // Down (8 failures in a row), then probed a few times, then answering again.
    for _ in 0..600 {
        if rx.calls().len() >= 20 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rx.calls().len() >= 20, "{} attempts", rx.calls().len());
    rx.behaviour.lock().unwrap().down = false;
    rx.wait_accepted(events.len()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    daemon.kill().await;
    let elapsed = started.elapsed();
    let lines = reader.await.unwrap();
    assert!(
        lines.iter().all(|l| !l.contains(SECRET)),
        "a log line holds the secret"
    );
    let logged: Vec<Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["endpoint"] == "rx")
        .collect();
    let with = |prefix: &str| -> Vec<&Value> {
        logged
            .iter()
            .filter(|v| {
                v["message"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with(prefix)
            })
            .collect()
    };
    let down = with("webhook endpoint is down");
    let up = with("webhook endpoint answers again");
    assert_eq!(down.len(), 1, "{down:?}");
    assert_eq!(up.len(), 1, "{up:?}");
    assert_eq!(down[0]["level"], "WARN");
    assert_eq!(up[0]["level"], "WARN");
    assert_eq!(down[0]["failures"], 8, "{}", down[0]);
    let failed = with("webhook delivery failed");
    let refused = rx.calls().iter().filter(|c| !c.accepted).count();
    let most = 1 + (elapsed.as_secs() / 10) as usize;
    assert!(
        !failed.is_empty() && failed.len() <= most,
        "{} failure lines in {elapsed:?} for {refused} failed attempts",
        failed.len()
    );
    assert!(failed.iter().all(|v| v["level"] == "WARN"));
    let told: u64 = failed
        .iter()
        .map(|v| 1 + v["suppressed"].as_u64().unwrap())
        .sum();
    assert!(told as usize <= refused, "{told} of {refused}");
}

#[tokio::test]
async fn test_clock_events_go_only_to_endpoints_that_ask_for_them() {
    let live_only = Receiver::start(Behaviour::default()).await;
    let with_clocks = Receiver::start(Behaviour::default()).await;
    let (live_url, clocks_url) = (live_only.url(), with_clocks.url());
    let h = Harness::start_with(move |s| {
        fast_retries(s);
        let mut qa = endpoint("qa", &clocks_url, &["*"]);
        qa.test_clocks = true;
        s.webhooks.endpoints = vec![endpoint("live", &live_url, &["*"]), qa];
    })
    .await;
    h.ok(
        "createTestClock",
        json!({"testClockId": "qa", "frozenTime": "2026-01-01T00:00:00Z"}),
    )
    .await;
    for i in 0..6 {
        let mut args = monthly(&format!("t{i}"), "OFFLINE", 3, "5.00");
        args["customerId"] = json!(format!("tc{i}"));
        args["testClockId"] = json!("qa");
        h.ok("createOrder", args).await;
        let mut args = monthly(&format!("l{i}"), "OFFLINE", 3, "5.00");
        args["customerId"] = json!(format!("lc{i}"));
        h.ok("createOrder", args).await;
    }
    h.ok(
        "advanceTestClock",
        json!({"testClockId": "qa", "to": "2026-03-15T00:00:00Z"}),
    )
    .await;
    h.advance("2026-03-15T00:00:00Z").await;
    let events = h.events().await;
    let of = |prefix: char| -> HashSet<String> {
        events
            .iter()
            .filter(|e| e["entityId"].as_str().unwrap().starts_with(prefix))
            .map(|e| e["id"].as_str().unwrap().to_string())
            .collect()
    };
    let (clock_events, live_events) = (of('t'), of('l'));
    assert!(clock_events.len() >= 18 && live_events.len() >= 18);
    let everything: HashSet<String> = clock_events.union(&live_events).cloned().collect();
    let got = with_clocks.wait_accepted(everything.len()).await;
    let got: HashSet<String> = got.into_iter().map(|c| c.event_id).collect();
    assert_eq!(got, everything, "test_clocks = true: both");
    live_only.wait_accepted(live_events.len()).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got: HashSet<String> = live_only.calls().into_iter().map(|c| c.event_id).collect();
    assert_eq!(got, live_events, "by default: the live orders' only");
    let m = h.ok("getMetrics", json!({})).await;
    assert_eq!(metrics::total(&m["metrics"], "recur_webhook_pending"), 0.0);
}
