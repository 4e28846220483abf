//! `redis.wait_replicas` (SPEC 11.1): nothing is acknowledged before `WAIT` confirms it.
//!
//! - One master with one replica: commands work; with the replica stopped (SIGSTOP, then
//!   SIGKILL) every write — and every read, whose reply is kept — is answered UNAVAILABLE,
//!   `/readyz` says why, the metric counts short WAITs, no webhook receives the unconfirmed
//!   change; with the replica back the same request ids are answered from their kept replies.
//! - A Redis Cluster with one replica per master: a retrying client streams createOrder and
//!   recordPayment commands (fixed request ids) while a master is SIGKILLed and its replica
//!   promoted (`CLUSTER FAILOVER TAKEOVER`); afterwards every acknowledged change is on the
//!   promoted master, every event a subscriber saw is in the streams with the same content,
//!   event ids are unique, versions and sequences have no gaps, and every customer's statistics
//!   equal a recomputation.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use redis::AsyncCommands;
use serde_json::{json, Value};

use recur::admin::client::{subscribe_events_to, AdminClient, RequestOptions};
use recur::config::{EndpointSettings, Settings};
use recur::metrics;
use recur::wire::Reply;
use recur_bench::cluster::LocalCluster;

use crate::support::*;

/// The event ids a local webhook receiver got (it answers 200 to everything).
type Received = Arc<Mutex<Vec<String>>>;

async fn receive(State(rx): State<Received>, body: Bytes) -> &'static str {
    if let Ok(v) = serde_json::from_slice::<Value>(&body) {
        if let Some(id) = v["id"].as_str() {
            rx.lock().unwrap().push(id.to_string());
        }
    }
    "ok"
}

async fn receiver() -> (String, Received) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let received = Received::default();
    let app = axum::Router::new()
        .route("/hook", post(receive))
        .with_state(Arc::clone(&received));
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, received)
}

fn waiting(s: &mut Settings, hook: &str) {
    s.redis.wait_replicas = 1;
    // Long enough for a loaded test machine's replica to answer in time.
    s.redis.wait_timeout = Duration::from_millis(500);
    s.http.listen = "127.0.0.1:0".into();
    s.webhooks.retry_initial = Duration::from_millis(50);
    s.webhooks.retry_max = Duration::from_millis(200);
    s.webhooks.endpoints = vec![EndpointSettings {
        id: Some("hook".into()),
        url: hook.to_string(),
        secret: "whsec_replication".into(),
        events: vec!["*".into()],
        test_clocks: false,
    }];
}

/// One attempt cycle short enough to return the UNAVAILABLE a stopped replica gives.
fn quick(id: &str) -> RequestOptions {
    RequestOptions {
        id: Some(id.to_string()),
        attempt_timeout: Duration::from_secs(4),
        total_timeout: Duration::from_secs(4),
        ..RequestOptions::default()
    }
}

fn assert_unavailable(r: &Reply, what: &str) {
    let e = r.error.as_ref().unwrap_or_else(|| panic!("{what}: {r:?}"));
    assert_eq!(e.code.as_str(), "UNAVAILABLE", "{what}: {e:?}");
}

/// Polls until `f` holds (10 s at most).
async fn eventually<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f().await {
        assert!(Instant::now() < deadline, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metrics_of(h: &Harness<ReplicatedRedis>) -> Value {
    h.ok("getMetrics", json!({})).await["metrics"].clone()
}

fn waits(m: &Value, outcome: &str) -> f64 {
    metrics::series(m, "recur_replication_waits_total", &[("outcome", outcome)])
}

#[tokio::test]
async fn writes_wait_for_the_replica_and_are_unavailable_without_it() {
    let (hook, received) = receiver().await;
    let mut h = Harness::start_on(ReplicatedRedis::start().await, |s| waiting(s, &hook)).await;
    let http = h.daemon.as_ref().unwrap().ready.http.expect("http bound");
    let mut published = subscribe_events_to(&h.redis.address(), "t").await.unwrap();

    // With the replica: commands work, every WAIT is confirmed, /readyz is 200.
    let o1 = h
        .ok("createOrder", monthly("o1", "ONLINE", 6, "10.00"))
        .await;
    assert_eq!(o1["version"], 1);
    let o1 = h
        .ok(
            "recordPayment",
            json!({"orderId": "o1", "paymentId": "p1", "amount": "10.00"}),
        )
        .await;
    assert_eq!(o1["status"], "ACTIVE");
    let (status, body) = http_get(http, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    let m = metrics_of(&h).await;
    assert!(waits(&m, "confirmed") > 0.0, "{m}");
    let short_before = waits(&m, "short");
    assert_eq!(metrics::total(&m, "recur_replication_replicas"), 1.0);
    // Every event of o1's two changes (orderCreated; orderPurchased, orderStarted, ...)
    // reaches the endpoint before the count is taken: each event is a delivery of its own, and
    // on a loaded machine the last ones may still be on their way after the first two.
    let o1_events: Vec<String> = h
        .events()
        .await
        .iter()
        .filter(|e| e["entityId"] == "o1")
        .filter_map(|e| e["id"].as_str().map(str::to_string))
        .collect();
    assert!(o1_events.len() >= 2, "{o1_events:?}");
    eventually("o1's events delivered", || async {
        let got = received.lock().unwrap();
        o1_events.iter().all(|id| got.contains(id))
    })
    .await;
    let delivered_before = received.lock().unwrap().len();
    // The events channel carries o1's confirmed changes (published by the daemon after the
    // WAIT, from the stream entries).
    let first = tokio::time::timeout(Duration::from_secs(5), published.next())
        .await
        .expect("an event published")
        .expect("the subscription holds");
    assert_eq!(first["type"], "orderCreated", "{first}");
    assert_eq!(first["entityId"], "o1", "{first}");
    assert_eq!(first["entity"]["version"], 1, "{first}");
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(300), published.next()).await
    {
        assert_eq!(e["entityId"], "o1", "{e}");
    }

    // Replica stopped: a write is committed on the master but not confirmed: UNAVAILABLE.
    h.redis.pause_replica();
    let r = h
        .client
        .request_with(
            quick("create-o2"),
            "createOrder",
            monthly("o2", "OFFLINE", 6, "10.00"),
        )
        .await
        .unwrap();
    assert_unavailable(&r, "createOrder without the replica");
    let message = &r.error.as_ref().unwrap().message;
    assert!(message.contains("replication: 0 of 1"), "{message}");
    // The change is in the master's stream (unconfirmed) ...
    assert!(
        h.changes().await.iter().any(|c| c["orderId"] == "o2"),
        "o2 committed on the master"
    );
    // ... and a read, whose reply would report it, is not answered either.
    let r = h
        .client
        .request_with(quick("get-o1"), "getOrder", json!({"orderId": "o1"}))
        .await
        .unwrap();
    assert_unavailable(&r, "getOrder without the replica");
    let (status, body) = http_get(http, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.contains("replication: 0 of 1 replicas confirmed"),
        "{body}"
    );
    let m = h
        .client
        .request_with(quick("metrics-1"), "getMetrics", json!({}))
        .await
        .unwrap();
    // getMetrics reads nothing of the data: answered (not kept) even now.
    let m = m.result.expect("getMetrics answered")["metrics"].clone();
    assert!(waits(&m, "short") > short_before, "{m}");
    assert_eq!(metrics::total(&m, "recur_replication_replicas"), 0.0);
    // Neither published nor delivered to the webhook while unconfirmed.
    if let Ok(Some(e)) = tokio::time::timeout(Duration::from_secs(1), published.next()).await {
        panic!("published while unconfirmed: {e}");
    }
    assert_eq!(
        received.lock().unwrap().len(),
        delivered_before,
        "nothing delivered while unconfirmed"
    );

    // Replica back: the same request id is answered from its kept reply (the commit
    // survived), o2 was created once, its event is delivered, /readyz is 200 again.
    h.redis.resume_replica();
    let o2 = h
        .reply_with_id(
            "create-o2",
            "createOrder",
            monthly("o2", "OFFLINE", 6, "10.00"),
        )
        .await;
    assert!(o2.ok, "{:?}", o2.error);
    assert_eq!(o2.result.as_ref().unwrap()["version"], 1);
    let created = h
        .events()
        .await
        .into_iter()
        .filter(|e| e["entityId"] == "o2" && e["type"] == "orderCreated")
        .count();
    assert_eq!(created, 1, "created once");
    eventually("o2's event delivered", || async {
        received.lock().unwrap().len() > delivered_before
    })
    .await;
    eventually("ready again", || async {
        http_get(http, "/readyz").await.0 == 200
    })
    .await;

    // Replica killed: the same; started again (a full resynchronization): writes work.
    h.redis.kill_replica().await;
    let pay = json!({"orderId": "o1", "paymentId": "p2", "amount": "10.00"});
    let r = h
        .client
        .request_with(quick("pay-2"), "recordPayment", pay.clone())
        .await
        .unwrap();
    assert_unavailable(&r, "recordPayment without the replica");
    let (status, body) = http_get(http, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    h.redis.restart_replica().await;
    let r = h.reply_with_id("pay-2", "recordPayment", pay).await;
    assert!(r.ok, "{:?}", r.error);
    let paid = r.result.unwrap();
    let payments = paid["payments"].as_array().expect("payments").len();
    assert_eq!(payments, 2, "{paid}");
    h.ok("createOrder", monthly("o3", "OFFLINE", 6, "10.00"))
        .await;
    eventually("ready after the restart", || async {
        http_get(http, "/readyz").await.0 == 200
    })
    .await;
    h.stop().await;
}

/// The one a retrying client sent, and what came back.
#[derive(Debug, Clone)]
struct Sent {
    id: String,
    command: &'static str,
    args: Value,
    order_id: String,
    payment_id: Option<String>,
    reply: Option<Reply>,
}

/// Sends every command of `orders` in turn (createOrder, then recordPayment for the ONLINE
/// ones), each retried with its fixed request id on UNAVAILABLE, INTERNAL and timeouts for up
/// to a minute.
async fn stream_commands(
    client: Arc<AdminClient>,
    orders: Vec<(String, String, bool)>,
    sent: Arc<Mutex<Vec<Sent>>>,
) {
    let options = |id: &str| RequestOptions {
        id: Some(id.to_string()),
        attempt_timeout: Duration::from_secs(2),
        total_timeout: Duration::from_secs(90),
        ..RequestOptions::default()
    };
    // A daemon that stops answering fails the test in minutes, not after every request's
    // own timeout in turn.
    let deadline = Instant::now() + Duration::from_secs(150);
    for (order, customer, online) in orders {
        if Instant::now() > deadline {
            break;
        }
        let mut args = monthly(
            &order,
            if online { "ONLINE" } else { "OFFLINE" },
            6,
            "10.00",
        );
        args["customerId"] = json!(customer);
        let id = format!("create-{order}");
        let reply = client
            .request_with(options(&id), "createOrder", args.clone())
            .await
            .ok();
        sent.lock().unwrap().push(Sent {
            id,
            command: "createOrder",
            args,
            order_id: order.clone(),
            payment_id: None,
            reply,
        });
        if online {
            let id = format!("pay-{order}");
            let payment = format!("{order}-p1");
            let args = json!({"orderId": order, "paymentId": payment, "amount": "10.00"});
            let reply = client
                .request_with(options(&id), "recordPayment", args.clone())
                .await
                .ok();
            sent.lock().unwrap().push(Sent {
                id,
                command: "recordPayment",
                args,
                order_id: order.clone(),
                payment_id: Some(payment),
                reply,
            });
        }
    }
}

fn acknowledged(s: &Sent) -> bool {
    s.reply.as_ref().is_some_and(|r| r.ok)
}

#[tokio::test]
async fn a_master_killed_mid_stream_loses_no_acknowledged_change_on_a_cluster() {
    recur::telemetry::init_for_tests();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = LocalCluster::start_with_replicas(dir.path(), 3, 1)
        .await
        .expect("a 3-master cluster with a replica each");
    let address = cluster.address();
    let mut settings = cluster_settings(&cluster.seeds(), "t");
    // TEST_WAIT_REPLICAS=0 runs it without the WAITs: acknowledged changes are lost and the
    // test fails (what it guards against).
    settings.redis.wait_replicas =
        std::env::var("TEST_WAIT_REPLICAS").map_or(1, |v| v.parse().unwrap());
    settings.redis.wait_timeout = Duration::from_millis(500);
    let daemon = Daemon::start(settings).await;
    let client = Arc::new(AdminClient::connect_to(&address, "t").await.unwrap());
    // The daemon, the client and the subscriber listen on the first seed: the master killed
    // is another one.
    let nodes = cluster.nodes().await.unwrap();
    let first = cluster.node_urls()[0]
        .trim_start_matches("redis://")
        .to_string();
    let victim = nodes
        .iter()
        .find(|n| n.master && n.addr != first)
        .expect("a master that is not the first seed")
        .clone();
    let replica = nodes
        .iter()
        .find(|n| n.master_id.as_deref() == Some(victim.id.as_str()))
        .expect("the victim's replica")
        .clone();
    assert_ne!(replica.addr, first, "the first seed stays up");
    let mut published = subscribe_events_to(&address, "t").await.unwrap();
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let collector = {
        let seen = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Some(e) = published.next().await {
                seen.lock().unwrap().push(e);
            }
        })
    };

    // 4 clients, 24 orders each over 6 customers; every other order ONLINE and paid.
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::default();
    let customers: Vec<String> = (0..6).map(|c| format!("k{c}")).collect();
    let workers: Vec<_> = (0..4)
        .map(|w| {
            let orders = (0..24)
                .map(|i| {
                    let n = w * 24 + i;
                    (
                        format!("o{n}"),
                        customers[n % 6].clone(),
                        n.is_multiple_of(2),
                    )
                })
                .collect();
            tokio::spawn(stream_commands(
                Arc::clone(&client),
                orders,
                Arc::clone(&sent),
            ))
        })
        .collect();

    // Mid-stream: the victim's replica falls behind (SIGSTOP, and its link cut: the writes the
    // victim takes meanwhile never reach it — with wait_replicas = 0 they are acknowledged and
    // lost, the test fails),
    // the victim is SIGKILLed, its replica resumes and is promoted, then the killed node
    // starts again (it comes back as the promoted master's replica, so that master's writes
    // can be confirmed again).
    let deadline = Instant::now() + Duration::from_secs(60);
    while sent
        .lock()
        .unwrap()
        .iter()
        .filter(|s| acknowledged(s))
        .count()
        < 30
    {
        assert!(Instant::now() < deadline, "the stream does not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let victim_at = cluster.index_of(&victim.addr).unwrap();
    let replica_at = cluster.index_of(&replica.addr).unwrap();
    let replica_pid = cluster.pids_by_node()[replica_at].expect("the replica runs");
    signal(replica_pid, "-STOP");
    // What the victim sent already sits in the stopped replica's socket: the link is cut, so
    // that nothing written from here on reaches it.
    let victim_url = cluster.node_urls()[victim_at].clone();
    let mut victim_conn = redis::Client::open(victim_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let cut: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("replica")
        .query_async(&mut victim_conn)
        .await
        .unwrap();
    assert_eq!(cut, 1, "the replica's link is cut");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let acked_at_kill = sent
        .lock()
        .unwrap()
        .iter()
        .filter(|s| acknowledged(s))
        .count();
    cluster.kill_node(victim_at);
    signal(replica_pid, "-CONT");
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster
        .takeover(replica_at)
        .await
        .expect("the replica takes over");
    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster
        .restart_node(victim_at)
        .await
        .expect("the killed node starts again");
    cluster
        .wait_replicas_online()
        .await
        .expect("every master has its replica again");
    for w in workers {
        w.await.unwrap();
    }
    // Timers fire after the failover too (cycle 2 of every order). The advance waits for
    // every partition to have an owner again: those whose lease lived on the killed master may
    // be taken over only after their TTL, which on a loaded machine takes a while.
    let r = client
        .request_with(
            RequestOptions {
                total_timeout: Duration::from_secs(180),
                ..RequestOptions::default()
            },
            "advanceClock",
            json!({"to": "2026-02-02T00:00:00Z"}),
        )
        .await
        .unwrap();
    assert!(r.ok, "{:?}", r.error);

    let sent = sent.lock().unwrap().clone();
    let acked: Vec<&Sent> = sent.iter().filter(|s| acknowledged(s)).collect();
    // Every acknowledged change is there: the order at the version the reply reported or
    // later, with the payment recorded; the same request id gets the same reply.
    let mut found = 0;
    for s in &acked {
        let acked_version = s.reply.as_ref().unwrap().result.as_ref().unwrap()["version"]
            .as_u64()
            .unwrap();
        let order = client
            .request("getOrder", json!({"orderId": s.order_id}))
            .await
            .unwrap();
        assert!(order.ok, "{} lost: {:?}", s.order_id, order.error);
        let order = order.result.unwrap();
        assert!(
            order["version"].as_u64().unwrap() >= acked_version,
            "{}: acknowledged version {acked_version}, found {order}",
            s.id
        );
        if let Some(payment) = &s.payment_id {
            let payments = order["payments"].as_array().unwrap();
            assert!(
                payments.iter().any(|p| p["id"] == payment.as_str()),
                "{payment} lost: {order}"
            );
        }
        let again = client
            .request_with(
                RequestOptions {
                    id: Some(s.id.clone()),
                    ..RequestOptions::default()
                },
                s.command,
                s.args.clone(),
            )
            .await
            .unwrap();
        assert_eq!(
            &again,
            s.reply.as_ref().unwrap(),
            "{}: the kept reply",
            s.id
        );
        found += 1;
    }

    // The streams: no event id twice, versions 1, 2, ... and sequences 1, 2, ... per order.
    let mut conn = cluster
        .address()
        .connect(Duration::from_secs(10))
        .await
        .unwrap();
    let mut changes = Vec::new();
    for p in 0..recur::store::DEFAULT_PARTITIONS {
        let rows: redis::streams::StreamRangeReply =
            conn.xrange_all(format!("t:{{p{p}}}:events")).await.unwrap();
        for e in rows.ids {
            let raw: String = e.get("change").unwrap();
            changes.push(serde_json::from_str::<Value>(&raw).unwrap());
        }
    }
    let mut by_id: HashMap<String, Value> = HashMap::new();
    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut sequences: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for c in &changes {
        let order = c["orderId"].as_str().unwrap().to_string();
        versions
            .entry(order.clone())
            .or_default()
            .push(c["version"].as_u64().unwrap());
        for e in recur::wire::change_events(c) {
            let id = e["id"].as_str().unwrap().to_string();
            sequences
                .entry(order.clone())
                .or_default()
                .push(e["sequence"].as_u64().unwrap());
            assert!(by_id.insert(id, e.clone()).is_none(), "event {e} twice");
        }
    }
    for (order, v) in &versions {
        let want: Vec<u64> = (1..=v.len() as u64).collect();
        assert_eq!(v, &want, "versions of {order}");
    }
    for (order, s) in &sequences {
        let want: Vec<u64> = (1..=s.len() as u64).collect();
        assert_eq!(s, &want, "sequences of {order}");
    }
    // Every event a subscriber saw is in the streams, the same event.
    tokio::time::sleep(Duration::from_millis(500)).await;
    collector.abort();
    let seen = seen.lock().unwrap().clone();
    assert!(!seen.is_empty(), "the subscriber saw events");
    for e in &seen {
        let id = e["id"].as_str().unwrap();
        let kept = by_id
            .get(id)
            .unwrap_or_else(|| panic!("event {id} seen but not in the streams"));
        assert_eq!(kept, e, "event {id} names another event now");
    }
    // Statistics equal a recomputation.
    for c in &customers {
        let kept = client
            .request("getCustomerStats", json!({"customerId": c}))
            .await
            .unwrap();
        assert!(kept.ok, "{:?}", kept.error);
        let recomputed = client
            .request("recomputeCustomerStats", json!({"customerId": c}))
            .await
            .unwrap();
        assert!(recomputed.ok, "{:?}", recomputed.error);
        let recomputed = recomputed.result.unwrap();
        assert_eq!(recomputed["differences"], json!([]), "customer {c}");
        assert_eq!(kept.result.unwrap(), recomputed["stats"], "customer {c}");
    }
    let orders: HashSet<&str> = acked.iter().map(|s| s.order_id.as_str()).collect();
    let m = client.request("getMetrics", json!({})).await.unwrap();
    let m = &m.result.expect("metrics")["metrics"];
    eprintln!(
        "failover: {} commands sent, {} acknowledged ({} before the kill, the replica stopped 1.5 s before it), {} found after the failover; {} UNAVAILABLE replies on the way ({} WAITs short, {} confirmed); {} orders, {} changes, {} events seen by a subscriber",
        sent.len(),
        acked.len(),
        acked_at_kill,
        found,
        metrics::series(m, "recur_admin_requests_total", &[("code", "UNAVAILABLE")]) as u64,
        metrics::series(m, "recur_replication_waits_total", &[("outcome", "short")]) as u64,
        metrics::series(m, "recur_replication_waits_total", &[("outcome", "confirmed")]) as u64,
        orders.len(),
        changes.len(),
        seen.len()
    );
    assert_eq!(found, acked.len());
    daemon.stop().await;
    drop(cluster);
}
