//! The operator's HTTP endpoints (SPEC 9) over real HTTP: probes, and the metrics text read
//! by a Prometheus-format parser, moving by what a scripted burst did.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use prometheus_parse::{Scrape, Value as Sample};
use redis::AsyncCommands;
use serde_json::{json, Value};

use recur::metrics;

use crate::support::*;

async fn http_harness() -> Harness {
    Harness::start_with(|s| s.http.listen = "127.0.0.1:0".to_string()).await
}

fn http_addr(h: &Harness) -> SocketAddr {
    h.daemon
        .as_ref()
        .and_then(|d| d.ready.http)
        .expect("the HTTP listener is bound")
}

/// Every sample of a scrape, by name and sorted labels; a histogram's `_count` and `_sum`
/// are samples of their own.
type Samples = HashMap<(String, Vec<(String, String)>), f64>;

async fn scrape(addr: SocketAddr) -> Samples {
    let (status, body) = http_get(addr, "/metrics").await;
    assert_eq!(status, 200, "{body}");
    let parsed =
        Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("valid Prometheus text");
    let mut out = Samples::new();
    for s in parsed.samples {
        let mut labels: Vec<(String, String)> = s
            .labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        labels.sort();
        let value = match s.value {
            Sample::Counter(v) | Sample::Gauge(v) | Sample::Untyped(v) => v,
            // The buckets are checked through getMetrics; here a histogram counts by _count.
            Sample::Histogram(_) | Sample::Summary(_) => continue,
        };
        out.insert((s.metric, labels), value);
    }
    out
}

fn sample(samples: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut labels: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    labels.sort();
    samples
        .get(&(name.to_string(), labels))
        .copied()
        .unwrap_or(0.0)
}

fn moved(before: &Samples, after: &Samples, name: &str, labels: &[(&str, &str)]) -> f64 {
    sample(after, name, labels) - sample(before, name, labels)
}

async fn wait_ready(addr: SocketAddr, ready: bool) -> (u16, Value) {
    let want = if ready { 200 } else { 503 };
    let mut last = (0, String::new());
    for _ in 0..300 {
        last = http_get(addr, "/readyz").await;
        if last.0 == want {
            return (last.0, serde_json::from_str(&last.1).expect("JSON body"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("/readyz never answered {want}: last {last:?}");
}

#[tokio::test]
async fn probes_answer_and_counters_move_by_what_a_burst_did() {
    let h = http_harness().await;
    let addr = http_addr(&h);
    let (status, body) = http_get(addr, "/healthz").await;
    assert_eq!((status, body.as_str()), (200, r#"{"status":"ok"}"#));
    let (_, ready) = wait_ready(addr, true).await;
    assert_eq!(ready["ready"], true, "{ready}");
    let (status, _) = http_get(addr, "/nope").await;
    assert_eq!(status, 404);

    let before = scrape(addr).await;
    let n = 25;
    for i in 0..n {
        h.ok(
            "createOrder",
            monthly(&format!("o{i}"), "OFFLINE", 3, "5.00"),
        )
        .await;
    }
    let bad = h.err("createOrder", json!({"orderId": "bad"})).await;
    assert_eq!(bad.code.as_str(), "INVALID_REQUEST");
    let unknown = h.err("frobnicate", json!({})).await;
    assert_eq!(unknown.code.as_str(), "UNKNOWN_COMMAND");
    h.advance("2026-03-15T00:00:00Z").await;
    let after = scrape(addr).await;

    // What Redis holds is what the counters say: every change entry is one transition, the
    // creates are the commands' and the rest the timers'.
    let changes = h.changes().await;
    let events = h.events().await;
    let commands = moved(
        &before,
        &after,
        "recur_transitions_total",
        &[("kind", "command")],
    );
    let fires = moved(
        &before,
        &after,
        "recur_transitions_total",
        &[("kind", "fire")],
    );
    assert_eq!(commands, n as f64);
    assert_eq!(
        commands + fires,
        changes.len() as f64,
        "{} changes",
        changes.len()
    );
    assert!(
        fires >= 2.0 * n as f64,
        "two cycles fired per order: {fires}"
    );
    assert_eq!(
        moved(&before, &after, "recur_events_total", &[]),
        events.len() as f64
    );
    let ok = [("command", "createOrder"), ("code", "OK")];
    assert_eq!(
        moved(&before, &after, "recur_admin_requests_total", &ok),
        n as f64
    );
    let invalid = [("command", "createOrder"), ("code", "INVALID_REQUEST")];
    assert_eq!(
        moved(&before, &after, "recur_admin_requests_total", &invalid),
        1.0
    );
    let unknown = [("command", "unknown"), ("code", "UNKNOWN_COMMAND")];
    assert_eq!(
        moved(&before, &after, "recur_admin_requests_total", &unknown),
        1.0
    );
    let advanced = [("command", "advanceClock"), ("code", "OK")];
    assert_eq!(
        moved(&before, &after, "recur_admin_requests_total", &advanced),
        1.0
    );
    assert_eq!(
        moved(
            &before,
            &after,
            "recur_admin_duration_seconds_count",
            &[("command", "createOrder")]
        ),
        n as f64 + 1.0
    );
    let pipelines = moved(&before, &after, "recur_commit_duration_seconds_count", &[]);
    let commits = moved(&before, &after, "recur_commits_total", &[]);
    assert!(
        pipelines >= 1.0 && pipelines <= commits,
        "{pipelines} pipelines of {commits} commits"
    );
    assert!(commits >= commands + fires);
    assert_eq!(sample(&after, "recur_partitions_owned", &[]), 64.0);
    assert_eq!(sample(&after, "recur_timers_due", &[]), 0.0);
    assert_eq!(sample(&after, "recur_timer_lag_seconds", &[]), 0.0);
    assert_eq!(sample(&after, "recur_redis_errors_total", &[]), 0.0);
    assert_eq!(sample(&after, "recur_webhook_pending", &[]), 0.0);

    // getMetrics reads the same registry, as JSON.
    let m = h.ok("getMetrics", json!({})).await;
    let json = &m["metrics"];
    assert_eq!(
        metrics::series(json, "recur_transitions_total", &[("kind", "fire")]),
        sample(&after, "recur_transitions_total", &[("kind", "fire")])
    );
    assert_eq!(
        metrics::total(json, "recur_events_total"),
        sample(&after, "recur_events_total", &[])
    );
    let hist = &json["recur_commit_duration_seconds"];
    let buckets = hist["buckets"].as_array().expect("buckets");
    assert_eq!(buckets.last().unwrap()["le"], "+Inf");
    assert_eq!(buckets.last().unwrap()["count"], hist["count"]);
    assert!(
        hist["count"].as_f64().unwrap()
            >= sample(&after, "recur_commit_duration_seconds_count", &[])
    );
    assert_eq!(m["daemonId"].as_str().map(str::is_empty), Some(false));
}

/// The lag gauge is the lifecycle clock's now less the earliest timer of the partitions held:
/// a clock that moved on without firing (the shared now set by hand) shows every order late,
/// and the advance that fires them brings it back to zero.
#[tokio::test]
async fn timer_lag_is_how_late_the_most_overdue_timer_is() {
    let h = http_harness().await;
    let addr = http_addr(&h);
    for i in 0..5 {
        h.ok(
            "createOrder",
            monthly(&format!("o{i}"), "OFFLINE", 3, "5.00"),
        )
        .await;
    }
    let mut conn = h.redis.conn().await;
    let mut earliest = i64::MAX;
    for p in 0..64 {
        let first: Vec<(String, i64)> = conn
            .zrange_withscores(format!("t:{{p{p}}}:timers"), 0, 0)
            .await
            .unwrap();
        earliest = first.iter().map(|(_, s)| *s).fold(earliest, i64::min);
    }
    assert!(earliest < i64::MAX, "the orders have timers");
    let now = earliest + 3_600_000;
    let _: () = conn.hset("t:{p0}:clock", "now", now).await.unwrap();
    let _: () = conn.publish("t:clock", "now").await.unwrap();
    let mut lag = 0.0;
    for _ in 0..100 {
        let s = scrape(addr).await;
        lag = sample(&s, "recur_timer_lag_seconds", &[]);
        if lag > 0.0 {
            assert_eq!(
                sample(&s, "recur_timers_due", &[]),
                5.0,
                "every order is late"
            );
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(lag, 3600.0, "an hour late");
    let to =
        recur::domain::time::format_instant(&recur::domain::time::from_millis(now + 1000).unwrap());
    h.advance(&to).await;
    let s = scrape(addr).await;
    assert_eq!(sample(&s, "recur_timer_lag_seconds", &[]), 0.0);
    assert_eq!(sample(&s, "recur_timers_due", &[]), 0.0);
}

/// Redis killed: /readyz says why with a 503, /healthz stays 200 and the daemon runs on;
/// readiness and requests come back with Redis.
#[tokio::test]
async fn readiness_follows_redis_while_health_stays_up() {
    let mut h = http_harness().await;
    let addr = http_addr(&h);
    wait_ready(addr, true).await;
    h.ok("createOrder", monthly("o1", "OFFLINE", 3, "5.00"))
        .await;
    h.redis.kill();
    let (_, why) = wait_ready(addr, false).await;
    assert_eq!(why["ready"], false);
    let reasons = why["reasons"].as_array().expect("reasons");
    assert!(
        reasons
            .iter()
            .any(|r| r.as_str().is_some_and(|r| r.starts_with("redis"))),
        "{why}"
    );
    let (status, _) = http_get(addr, "/healthz").await;
    assert_eq!(status, 200, "alive while Redis is down");
    // Metrics still render (the Redis-read gauges keep their last values) and count errors.
    let s = scrape(addr).await;
    assert!(sample(&s, "recur_redis_errors_total", &[]) >= 1.0);
    tokio::time::sleep(Duration::from_millis(500)).await;
    h.redis.restart().await;
    let (_, ready) = wait_ready(addr, true).await;
    assert_eq!(ready["ready"], true, "{ready}");
    // Ready does not wait for every lease (SPEC 10): the lease loop takes them back in turn.
    assert!(ready["partitionsOwned"].as_u64().is_some(), "{ready}");
    let order = h.ok("getOrder", json!({"orderId": "o1"})).await;
    assert_eq!(order["id"], "o1", "{order}");
    h.ok("createOrder", monthly("o2", "OFFLINE", 3, "5.00"))
        .await;
}

/// A configured address that is taken stops start-up with a clear error.
#[tokio::test]
async fn a_configured_address_that_is_taken_stops_start_up() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let redis = TestRedis::start().await;
    let mut settings = settings(&redis.url, "t");
    settings.http.listen = addr.to_string();
    let shutdown = recur::shutdown::Shutdown::new();
    let result = std::thread::spawn(move || {
        actix::System::new().block_on(async move { recur::run(settings, shutdown).await })
    })
    .join()
    .unwrap();
    let e = result.expect_err("start-up fails");
    let chain = format!("{e}: {:?}", std::error::Error::source(&e));
    assert!(
        chain.contains(&addr.to_string()) && chain.contains("http.listen"),
        "{chain}"
    );
}

/// JSON logs carry `request_id`, `order_id` and `partition` as span fields on the admin path.
#[tokio::test]
async fn json_logs_carry_the_request_order_and_partition() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let redis = TestRedis::start().await;
    let mut daemon = ChildDaemon::start_logged(
        &redis.url,
        "t",
        &[
            ("RECUR_LOG__FORMAT", "json"),
            ("RECUR_LOG__LEVEL", "recur::admin=debug,warn"),
        ],
    )
    .await;
    let stderr = daemon.child.stderr.take().expect("piped stderr");
    let client = recur::admin::client::AdminClient::connect(&redis.url, "t")
        .await
        .expect("client");
    let options = recur::admin::client::RequestOptions {
        id: Some("req-logged".to_string()),
        ..Default::default()
    };
    let reply = client
        .request_with(
            options,
            "createOrder",
            monthly("o-logged", "OFFLINE", 3, "5.00"),
        )
        .await
        .expect("a reply");
    assert!(reply.ok, "{reply:?}");
    let partition = recur::store::Keys::new("t", 64).partition("o-logged");
    let mut lines = BufReader::new(stderr).lines();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        while let Some(line) = lines.next_line().await.expect("read the log") {
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                panic!("a log line that is not JSON: {line}");
            };
            if v["span"]["request_id"] == "req-logged" && v["message"] == "admin request answered" {
                return v;
            }
        }
        panic!("the daemon's log ended");
    })
    .await
    .expect("the request's log line");
    assert_eq!(found["span"]["order_id"], "o-logged", "{found}");
    assert_eq!(found["span"]["partition"], partition, "{found}");
    assert_eq!(found["span"]["command"], "createOrder", "{found}");
    assert_eq!(found["code"], "OK", "{found}");
    daemon.kill().await;
}
