//! recur on Redis Cluster (SPEC 6): each test starts its own private 3-master cluster (free
//! loopback ports) and two daemons on it, and checks outcomes, never which daemon answered (the
//! daemons may split the partitions or one may hold them all). Every key of a partition carries
//! its hash tag, so the 64 partitions spread over the three masters: commits, kept replies,
//! carts resolved in the customer's partition, statistics applied across partitions, listOrders
//! merged over partitions, and each partition's event stream all cross nodes here.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::process::Stdio;
use std::time::Duration;

use redis::AsyncCommands;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, BufReader};

use recur::admin::client::{subscribe_events_to, watch_streams_to, AdminClient};

use crate::support::*;

/// The stream's change entries are whole: no event id twice, each order's change entries carry
/// versions 1, 2, 3, ... in stream order (one entry per version, none missing), and each order's
/// event sequences strictly increase.
fn assert_changes_whole(changes: &[Value]) {
    let mut ids = HashSet::new();
    let mut versions: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    let mut sequences: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for c in changes {
        let order = c["orderId"].as_str().unwrap().to_string();
        versions
            .entry(order.clone())
            .or_default()
            .push(c["version"].as_u64().unwrap());
        for e in c["events"].as_array().unwrap() {
            assert!(
                ids.insert(e["id"].as_str().unwrap().to_string()),
                "event {e} written twice"
            );
            sequences
                .entry(order.clone())
                .or_default()
                .push(e["sequence"].as_u64().unwrap());
        }
    }
    for (order, v) in &versions {
        let expected: Vec<u64> = (1..=v.len() as u64).collect();
        assert_eq!(v, &expected, "versions of {order}");
    }
    for (order, s) in &sequences {
        assert!(
            s.windows(2).all(|w| w[0] < w[1]),
            "sequences of {order}: {s:?}"
        );
    }
}

/// For every customer, getCustomerStats equals recomputeCustomerStats (which finds nothing to
/// fix), and each figure is the sum of what the customer's orders hold.
async fn assert_stats_recompute(client: &AdminClient, customers: &[&str]) {
    for c in customers {
        let r = client
            .request("getCustomerStats", json!({"customerId": c}))
            .await
            .unwrap();
        assert!(r.ok, "{:?}", r.error);
        let kept = r.result.unwrap();
        let r = client
            .request("recomputeCustomerStats", json!({"customerId": c}))
            .await
            .unwrap();
        assert!(r.ok, "{:?}", r.error);
        let recomputed = r.result.unwrap();
        assert_eq!(recomputed["differences"], json!([]), "customer {c}");
        assert_eq!(kept, recomputed["stats"], "customer {c}");
    }
}

/// Order ids of `n` orders spread over partitions on every master: o0, o1, ...
fn ids(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("o{i}")).collect()
}

/// Which master each partition's keys live on (by CLUSTER KEYSLOT and CLUSTER SLOTS), to check
/// the test really spans them.
async fn masters_of_partitions(cluster: &TestCluster, prefix: &str) -> BTreeSet<String> {
    let mut conn = cluster.conn().await;
    let slots: Vec<(i64, i64, (String, i64))> = {
        let rows: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await
            .unwrap();
        rows.into_iter()
            .map(|row| {
                let redis::Value::Array(items) = row else {
                    panic!("CLUSTER SLOTS row {row:?}")
                };
                let start: i64 = redis::from_redis_value(items[0].clone()).unwrap();
                let end: i64 = redis::from_redis_value(items[1].clone()).unwrap();
                let redis::Value::Array(node) = &items[2] else {
                    panic!("node {:?}", items[2])
                };
                let host: String = redis::from_redis_value(node[0].clone()).unwrap();
                let port: i64 = redis::from_redis_value(node[1].clone()).unwrap();
                (start, end, (host, port))
            })
            .collect()
    };
    let mut masters = BTreeSet::new();
    for p in 0..recur::store::DEFAULT_PARTITIONS {
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(format!("{prefix}:{{p{p}}}:events"))
            .query_async(&mut conn)
            .await
            .unwrap();
        let (_, _, (host, port)) = slots
            .iter()
            .find(|(s, e, _)| (*s..=*e).contains(&slot))
            .expect("every slot is served");
        masters.insert(format!("{host}:{port}"));
    }
    masters
}

#[tokio::test]
async fn two_daemons_on_a_cluster_run_lifecycles_stats_and_listings() {
    let h = Harness::start_on_cluster(|_| {}).await;
    let second = Daemon::start(h.redis.settings("t")).await;
    assert_eq!(
        masters_of_partitions(&h.redis, "t").await.len(),
        3,
        "the partitions spread over every master"
    );
    let mut published = subscribe_events_to(&h.redis.address(), "t").await.unwrap();

    // Orders of four customers, over partitions on every node.
    let customers = ["c0", "c1", "c2", "c3"];
    for (i, id) in ids(16).iter().enumerate() {
        let kind = if i % 2 == 0 { "ONLINE" } else { "OFFLINE" };
        let mut args = monthly(id, kind, 6, "10.00");
        args["customerId"] = json!(customers[i % 4]);
        let o = h.ok("createOrder", args).await;
        assert_eq!(o["id"], id.as_str());
        if kind == "ONLINE" {
            let o = h
                .ok(
                    "recordPayment",
                    json!({"orderId": id, "paymentId": format!("{id}-p1"), "amount": "10.00"}),
                )
                .await;
            assert_eq!(o["status"], "ACTIVE");
        }
    }
    // A master that lost its scripts (a restart, a failover to a replica that never loaded
    // them) answers NOSCRIPT: the commit batcher and the other scripts load them again.
    let mut conn = h.redis.conn().await;
    let () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query_async(&mut conn)
        .await
        .unwrap();
    // A retried request id gets its first reply, wherever it routes.
    let first = h
        .reply_with_id(
            "refund-1",
            "recordRefund",
            json!({"orderId": "o0", "paymentId": "o0-p1", "amount": "4.00"}),
        )
        .await;
    assert!(first.ok, "{:?}", first.error);
    let again = h
        .reply_with_id(
            "refund-1",
            "recordRefund",
            json!({"orderId": "o0", "paymentId": "o0-p1", "amount": "4.00"}),
        )
        .await;
    assert_eq!(again, first);

    h.advance("2026-02-10T00:00:00Z").await;
    for id in ids(16).iter().step_by(2) {
        let o = h
            .ok(
                "recordPayment",
                json!({"orderId": id, "paymentId": format!("{id}-p2"), "amount": "10.00"}),
            )
            .await;
        assert_eq!(o["lastPaymentStatus"], "PAID", "{o}");
    }
    let o = h
        .ok(
            "pauseOrder",
            json!({"orderId": "o1", "resumeAt": "2026-02-20T00:00:00Z"}),
        )
        .await;
    assert_eq!(o["status"], "PAUSED");
    let o = h
        .ok(
            "cancelOrder",
            json!({"orderId": "o3", "effectiveAt": "IMMEDIATELY"}),
        )
        .await;
    assert_eq!(o["status"], "CANCELED");
    let o = h
        .ok(
            "cancelOrder",
            json!({"orderId": "o5", "effectiveAt": "NEXT_PAYMENT_DATE"}),
        )
        .await;
    assert_eq!(o["autoRenewCanceled"], true);
    let deleted = h.ok("deleteOrder", json!({"orderId": "o7"})).await;
    assert_eq!(deleted["id"], "o7");

    // The durable command stream is read (XREADGROUP) on the cluster too.
    let mut req = h.client.new_request("getOrder", json!({"orderId": "o9"}));
    req.id = "stream-1".into();
    h.client.enqueue(&req).await.unwrap();
    let reply = h
        .client
        .wait_reply(Some("stream-1"), Duration::from_secs(10))
        .await
        .expect("a reply to the stream entry");
    assert!(reply.ok, "{:?}", reply.error);

    h.advance("2026-05-01T00:00:00Z").await;
    let o = h.ok("getOrder", json!({"orderId": "o1"})).await;
    assert_eq!(o["status"], "ACTIVE", "resumed on its date: {o}");
    assert_eq!(
        o["pausePeriods"][0]["resumeDate"],
        "2026-02-20T00:00:00.000Z"
    );
    let o = h.ok("getOrder", json!({"orderId": "o5"})).await;
    assert_eq!(o["status"], "CANCELED", "{o}");
    let o = h.ok("getOrder", json!({"orderId": "o9"})).await;
    assert_eq!(o["currentCycle"]["index"], 5, "{o}");
    let e = h.err("getOrder", json!({"orderId": "o7"})).await;
    assert_eq!(e.code.as_str(), "NOT_FOUND");

    assert_stats_recompute(&h.client, &customers).await;
    let stats = h.ok("getCustomerStats", json!({"customerId": "c0"})).await;
    // c0: o0, o4, o8, o12, all ONLINE: 4 x 10.00 paid at purchase, 4 x 10.00 for cycle 2,
    // o0's refund of 4.00.
    assert_eq!(stats["money"]["USD"]["paid"], "80.00", "{stats}");
    assert_eq!(stats["money"]["USD"]["refunded"], "4.00", "{stats}");
    assert_eq!(stats["ordersCount"], 4, "{stats}");

    // listOrders over all orders, paged, merges every partition's index: each order once,
    // newest first, the same as one big page.
    let all = h.ok("listOrders", json!({"limit": 100})).await;
    let all: Vec<String> = all["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(all.len(), 15, "16 orders, one deleted: {all:?}");
    assert_eq!(h.list_pages(4).await, all);
    let mine = h
        .ok("listOrders", json!({"customerId": "c1", "limit": 10}))
        .await;
    let mine: BTreeSet<&str> = mine["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(mine, BTreeSet::from(["o1", "o5", "o9", "o13"]));

    // Every change went to its partition's stream, whole; and each was also published, from
    // whichever node holds its partition, to the subscriber on one seed node.
    let changes = stream_changes(&h.redis, "t").await;
    assert_changes_whole(&changes);
    let events = stream_events(&h.redis, "t").await;
    let want: HashSet<String> = events
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect();
    let mut got = HashSet::new();
    while got.len() < want.len() {
        let e = tokio::time::timeout(Duration::from_secs(10), published.next())
            .await
            .expect("every change is published")
            .expect("the subscription holds");
        got.insert(e["id"].as_str().unwrap().to_string());
    }
    assert_eq!(got, want);

    second.stop().await;
    let mut h = h;
    h.stop().await;
}

#[tokio::test]
async fn carts_and_watch_work_across_partitions_on_a_cluster() {
    let h = Harness::start_on_cluster(|_| {}).await;
    let second = Daemon::start(h.redis.settings("t")).await;
    // A customer whose partition is not the cart's: the name is resolved in the customer's
    // partition and the update applied in the order's.
    let keys = recur::store::Keys::new("t", recur::store::DEFAULT_PARTITIONS);
    let customer = (0..100)
        .map(|i| format!("cust{i}"))
        .find(|c| keys.partition(c) != keys.partition("cart-1"))
        .unwrap();
    let mut cart = monthly("cart-1", "ONLINE", 12, "10.00");
    cart["customerId"] = json!(customer);
    cart["name"] = json!("weekly box");
    let created = h.ok("createOrder", cart).await;
    assert_eq!(created["status"], "DRAFT");
    let item =
        json!({"id": "mug", "sku": "SKU-mug", "name": "mug", "quantity": 2, "unitPrice": "3.00"});
    let o = h
        .ok(
            "updateOrder",
            json!({"customerId": customer, "name": "weekly box", "lineItems": {"create": [item]}}),
        )
        .await;
    assert_eq!(o["priceDetails"]["subtotal"], "16.00", "{o}");
    let version = o["version"].as_u64().unwrap();
    let o = h
        .ok(
            "updateOrder",
            json!({
                "customerId": customer, "id": "cart-1", "expectedVersion": version,
                "lineItems": {"update": [{"id": "mug", "quantity": 1}]}
            }),
        )
        .await;
    assert_eq!(o["priceDetails"]["total"], "13.00", "{o}");
    let stale = h
        .err(
            "updateOrder",
            json!({
                "customerId": customer, "id": "cart-1", "expectedVersion": version,
                "lineItems": {"update": [{"id": "mug", "quantity": 3}]}
            }),
        )
        .await;
    assert_eq!(stale.code.as_str(), "CONFLICT");
    let paid = h
        .ok(
            "recordPayment",
            json!({"orderId": "cart-1", "paymentId": "pay-1", "amount": "13.00"}),
        )
        .await;
    assert_eq!(paid["status"], "ACTIVE");
    for (i, id) in ids(8).iter().enumerate() {
        let mut args = monthly(id, "OFFLINE", 3, "5.00");
        args["customerId"] = json!(format!("w{}", i % 3));
        h.ok("createOrder", args).await;
    }
    h.advance("2026-03-01T00:00:00Z").await;
    assert_stats_recompute(&h.client, &[customer.as_str(), "w0", "w1", "w2"]).await;

    // The watcher (one cursor per partition) reads every event the streams hold, each once,
    // per order in sequence order.
    let events = stream_events(&h.redis, "t").await;
    let mut watcher = watch_streams_to(&h.redis.address(), "t", true)
        .await
        .unwrap();
    let mut watched = Vec::new();
    while watched.len() < events.len() {
        let e = tokio::time::timeout(Duration::from_secs(10), watcher.next())
            .await
            .expect("the watcher keeps up")
            .unwrap();
        watched.push(e);
    }
    let key = |e: &Value| e["id"].as_str().unwrap().to_string();
    let want: HashSet<String> = events.iter().map(key).collect();
    let got: HashSet<String> = watched.iter().map(key).collect();
    assert_eq!(got.len(), watched.len(), "no event twice");
    assert_eq!(got, want);
    let mut per_order: HashMap<String, Vec<u64>> = HashMap::new();
    for e in &watched {
        assert!(e["entity"]["id"].is_string(), "with its entity: {e}");
        per_order
            .entry(e["entityId"].as_str().unwrap().to_string())
            .or_default()
            .push(e["sequence"].as_u64().unwrap());
    }
    assert!(per_order
        .values()
        .all(|s| s.windows(2).all(|w| w[0] < w[1])));
    // And it follows what comes next.
    h.ok("pauseOrder", json!({"orderId": "o2"})).await;
    let next = tokio::time::timeout(Duration::from_secs(10), watcher.next())
        .await
        .expect("a new event is seen")
        .unwrap();
    assert_eq!(next["type"], "orderPaused");
    assert_eq!(next["entityId"], "o2");

    // The CLI on the cluster: `recur admin` and `recur admin watch` with --redis-cluster.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_recur"))
        .args([
            "admin",
            "getOrder",
            "--order-id",
            "cart-1",
            "--redis-cluster",
        ])
        .args(["--redis-url", &h.redis.seeds, "--prefix", "t"])
        .env_remove("RECUR_REDIS__URL")
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let reply: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(reply["result"]["id"], "cart-1", "{reply}");
    let mut watch = tokio::process::Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(["admin", "watch", "--from-start", "--prefix", "t"])
        .args(["--redis-url", &h.redis.seeds])
        .env("RECUR_REDIS__CLUSTER", "true")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let total = stream_events(&h.redis, "t").await.len();
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    let mut printed = HashSet::new();
    while printed.len() < total {
        let line = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
            .await
            .expect("recur admin watch prints every event")
            .unwrap()
            .expect("a line");
        let e: Value = serde_json::from_str(&line).unwrap();
        assert!(printed.insert(key(&e)), "printed twice: {e}");
    }
    watch.kill().await.unwrap();

    second.stop().await;
    let mut h = h;
    h.stop().await;
}

/// recur's connection on a cluster: a pipeline over many hash slots comes back in its order
/// (ignored commands left out, errors in place), commands of one slot run in order, and a
/// transaction must stay in one slot (CROSSSLOT otherwise, nothing written).
#[tokio::test]
async fn a_pipeline_over_many_slots_keeps_its_order_and_a_transaction_stays_in_one_slot() {
    let cluster = TestCluster::start().await;
    let mut conn = cluster.conn().await;
    let mut pipe = redis::pipe();
    for p in 0..64 {
        let key = format!("x:{{p{p}}}:n");
        pipe.cmd("SET").arg(&key).arg(p).ignore();
        pipe.cmd("INCR").arg(&key);
    }
    pipe.cmd("PING");
    let (rows, pong): (Vec<i64>, String) = {
        let mut all: Vec<redis::Value> = pipe.query_async(&mut conn).await.unwrap();
        let pong = redis::from_redis_value(all.pop().unwrap()).unwrap();
        let rows = all
            .into_iter()
            .map(|v| redis::from_redis_value(v).unwrap())
            .collect();
        (rows, pong)
    };
    assert_eq!(rows, (1..=64).collect::<Vec<i64>>());
    assert_eq!(pong, "PONG");
    // A server error stays with its command.
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    pipe.cmd("GET").arg("x:{p1}:n");
    pipe.cmd("HGET").arg("x:{p2}:n").arg("f");
    pipe.cmd("GET").arg("x:{p3}:n");
    let got: Vec<redis::RedisResult<Option<String>>> = pipe.query_async(&mut conn).await.unwrap();
    assert_eq!(got[0].as_ref().unwrap().as_deref(), Some("2"));
    assert_eq!(got[1].as_ref().unwrap_err().code(), Some("WRONGTYPE"));
    assert_eq!(got[2].as_ref().unwrap().as_deref(), Some("4"));
    // A multi-key DEL over slots is split by the cluster client itself.
    let keys: Vec<String> = (0..64).map(|p| format!("x:{{p{p}}}:n")).collect();
    let deleted: i64 = conn.del(&keys).await.unwrap();
    assert_eq!(deleted, 64);
    // One slot: atomic. Two slots: refused as a whole.
    let (a, b): (i64, i64) = redis::pipe()
        .atomic()
        .incr("x:{p1}:a", 1)
        .incr("x:{p1}:b", 2)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!((a, b), (1, 2));
    let crossed: redis::RedisResult<(i64, i64)> = redis::pipe()
        .atomic()
        .incr("x:{p1}:a", 1)
        .incr("x:{p2}:a", 1)
        .query_async(&mut conn)
        .await;
    let error = crossed.unwrap_err();
    assert_eq!(error.code(), Some("CROSSSLOT"), "{error:?}");
    let a: i64 = conn.get("x:{p1}:a").await.unwrap();
    assert_eq!(a, 1, "nothing of the refused transaction was written");
}

/// The holder of partition 0's lease (a daemon id), once there is one.
async fn partition_0_holder(cluster: &TestCluster) -> String {
    let mut conn = cluster.conn().await;
    for _ in 0..100 {
        let v: Option<String> = conn.get("t:{p0}:lease").await.unwrap();
        if let Some(v) = v {
            return v.split(':').next().unwrap().to_string();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("nobody holds partition 0");
}

#[tokio::test]
async fn a_daemon_killed_on_a_cluster_is_replaced_and_nothing_is_lost_or_doubled() {
    let cluster = TestCluster::start().await;
    // One daemon told by the flag, the other by the environment.
    let mut a = Some(
        ChildDaemon::start_with_args(
            &cluster.seeds,
            "t",
            &["--redis-cluster"],
            &[("RECUR_CLUSTER__DAEMON_ID", "a")],
        )
        .await,
    );
    let client = AdminClient::connect_to(&cluster.address(), "t")
        .await
        .unwrap();
    let r = client.request("ping", json!({})).await.unwrap();
    assert!(r.ok, "{:?}", r.error);
    let mut b = Some(
        ChildDaemon::start(
            &cluster.seeds,
            "t",
            &[
                ("RECUR_CLUSTER__DAEMON_ID", "b"),
                ("RECUR_REDIS__CLUSTER", "true"),
            ],
        )
        .await,
    );
    let customers = ["k0", "k1", "k2"];
    for (i, id) in ids(24).iter().enumerate() {
        let mut args = monthly(
            id,
            if i % 3 == 0 { "ONLINE" } else { "OFFLINE" },
            6,
            "10.00",
        );
        args["customerId"] = json!(customers[i % 3]);
        let r = client.request("createOrder", args).await.unwrap();
        assert!(r.ok, "{:?}", r.error);
        if i % 3 == 0 {
            let r = client
                .request(
                    "recordPayment",
                    json!({"orderId": id, "paymentId": format!("{id}-p1"), "amount": "10.00"}),
                )
                .await
                .unwrap();
            assert!(r.ok, "{:?}", r.error);
        }
    }
    let r = client
        .request("advanceClock", json!({"to": "2026-02-02T00:00:00Z"}))
        .await
        .unwrap();
    assert!(r.ok, "{:?}", r.error);
    // The ONLINE orders pay cycle 2; cycle 3 (after the kill) goes unpaid and is canceled at
    // the end of its grace period, by whichever daemon then holds the order.
    for id in ids(24).iter().step_by(3) {
        let r = client
            .request(
                "recordPayment",
                json!({"orderId": id, "paymentId": format!("{id}-p2"), "amount": "10.00"}),
            )
            .await
            .unwrap();
        assert!(r.ok, "{:?}", r.error);
    }
    let r = client
        .request("advanceClock", json!({"to": "2026-02-15T00:00:00Z"}))
        .await
        .unwrap();
    assert!(r.ok, "{:?}", r.error);

    // SIGKILL whichever holds partition 0 (the one that applies advanceClock).
    let victim = partition_0_holder(&cluster).await;
    let killed = if victim == "a" { a.take() } else { b.take() };
    killed.expect("the holder is one of the two").kill().await;
    // Requests keep coming while the other takes over; the client retries with the same ids.
    let started = std::time::Instant::now();
    for id in ids(24).iter().skip(1).step_by(6) {
        let r = client
            .request("pauseOrder", json!({"orderId": id}))
            .await
            .unwrap();
        assert!(r.ok, "{:?}", r.error);
    }
    let r = client
        .request("advanceClock", json!({"to": "2026-04-15T00:00:00Z"}))
        .await
        .unwrap();
    assert!(r.ok, "{:?}", r.error);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took over in {:?}",
        started.elapsed()
    );
    let survivor = partition_0_holder(&cluster).await;
    assert_ne!(survivor, victim);

    let mut conn = cluster.conn().await;
    let changes = {
        let mut all = Vec::new();
        for p in 0..recur::store::DEFAULT_PARTITIONS {
            let rows: redis::streams::StreamRangeReply =
                conn.xrange_all(format!("t:{{p{p}}}:events")).await.unwrap();
            for e in rows.ids {
                let raw: String = e.get("change").unwrap();
                all.push(serde_json::from_str::<Value>(&raw).unwrap());
            }
        }
        all
    };
    assert_changes_whole(&changes);
    let events: Vec<Value> = changes
        .iter()
        .flat_map(recur::wire::change_events)
        .collect();
    // Every order started each of its cycles exactly once, before and after the kill: the
    // running OFFLINE ones 1..4, the paused ones 1..2 (paused in cycle 2), the ONLINE ones
    // 1..3 (canceled for the unpaid cycle 3).
    let mut starts: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for e in events.iter().filter(|e| e["type"] == "orderCycleStarted") {
        starts
            .entry(e["entityId"].as_str().unwrap().to_string())
            .or_default()
            .push(e["data"]["cycleNumber"].as_i64().unwrap());
    }
    assert_eq!(starts.len(), 24, "{starts:?}");
    let paused: HashSet<String> = ids(24).into_iter().skip(1).step_by(6).collect();
    let online: HashSet<String> = ids(24).into_iter().step_by(3).collect();
    for (id, cycles) in &starts {
        let want: Vec<i64> = if paused.contains(id) {
            vec![1, 2]
        } else if online.contains(id) {
            vec![1, 2, 3]
        } else {
            vec![1, 2, 3, 4]
        };
        assert_eq!(cycles, &want, "{id}");
    }
    let count = |ty: &str| events.iter().filter(|e| e["type"] == ty).count();
    assert_eq!(
        count("orderPaused"),
        paused.len(),
        "each pause applied once"
    );
    assert_eq!(
        count("orderCanceled"),
        online.len(),
        "each cancel applied once"
    );
    assert_stats_recompute(&client, &customers).await;
    let o = client
        .request("getOrder", json!({"orderId": "o2"}))
        .await
        .unwrap()
        .result
        .unwrap();
    assert_eq!(o["currentCycle"]["index"], 4, "{o}");
    let o = client
        .request("getOrder", json!({"orderId": "o3"}))
        .await
        .unwrap()
        .result
        .unwrap();
    assert_eq!(o["status"], "CANCELED", "{o}");
    for d in [a, b].into_iter().flatten() {
        d.kill().await;
    }
}

/// Revision 1 data imported into a cluster: `{p*}` keys on some master, no meta, the clock
/// under its old untagged name. The check for tagged keys scans every master (so the data gets
/// 16 partitions), and the clock moves to `{p0}` across hash slots.
#[tokio::test]
async fn revision_1_data_on_a_cluster_is_found_on_any_master_and_upgraded() {
    let cluster = TestCluster::start().await;
    let mut conn = cluster.conn().await;
    let _: () = conn
        .hset_multiple(
            "t:clock",
            &[("mode", "simulated"), ("now", "1770000000000")],
        )
        .await
        .unwrap();
    // One tagged key (an old order's deleted id), on whichever master holds its partition.
    let keys = recur::store::Keys::new("t", 16);
    let _: () = conn
        .sadd(keys.order_keys().deleted(keys.partition("gone")), "gone")
        .await
        .unwrap();
    let mut s = cluster.settings("t");
    s.partitions = 16;
    let daemon = Daemon::start(s).await;
    let meta: Option<u16> = conn.hget("t:meta", "partitions").await.unwrap();
    assert_eq!(meta, Some(16), "found the tagged key, wherever it is");
    let client = AdminClient::connect_to(&cluster.address(), "t")
        .await
        .unwrap();
    let clock = client.request("getClock", json!({})).await.unwrap();
    assert_eq!(
        clock.result.unwrap()["now"],
        "2026-02-02T02:40:00.000Z",
        "the clock moved with its record"
    );
    let old: bool = conn.exists("t:clock").await.unwrap();
    assert!(!old, "the old clock key is gone");
    let r = client
        .request("createOrder", monthly("gone", "OFFLINE", 3, "5.00"))
        .await
        .unwrap();
    assert_eq!(
        r.error.map(|e| e.code.as_str().to_string()).as_deref(),
        Some("CONFLICT"),
        "a deleted id of the old data stays deleted"
    );
    daemon.stop().await;
}

/// `redis.cluster` without seed nodes is refused with a clear message, by `serve` (exit 1) and
/// `recur admin` (exit 2, no reply), before anything starts; the embedded Redis is not started.
#[tokio::test]
async fn a_cluster_without_seed_nodes_is_refused_by_serve_and_admin() {
    let dir = tempfile::tempdir().unwrap();
    let recur = env!("CARGO_BIN_EXE_recur");
    let data_dir = dir.path().join("redis");
    let serve = tokio::process::Command::new(recur)
        .args(["serve", "--redis-cluster"])
        .env_remove("RECUR_REDIS__URL")
        .env("RECUR_REDIS__EMBEDDED__DATA_DIR", &data_dir)
        .output()
        .await
        .unwrap();
    assert_eq!(serve.status.code(), Some(1), "{serve:?}");
    let message = String::from_utf8_lossy(&serve.stderr);
    assert!(
        message.contains("invalid setting `redis.cluster`") && message.contains("seed nodes"),
        "{message}"
    );
    assert!(!data_dir.exists(), "no embedded Redis was started");
    let admin = tokio::process::Command::new(recur)
        .args(["admin", "ping"])
        .env_remove("RECUR_REDIS__URL")
        .env("RECUR_REDIS__CLUSTER", "true")
        .output()
        .await
        .unwrap();
    assert_eq!(admin.status.code(), Some(2), "{admin:?}");
    let message = String::from_utf8_lossy(&admin.stderr);
    assert!(message.contains("redis.cluster"), "{message}");
    // A list of nodes without the setting names the setting.
    let admin = tokio::process::Command::new(recur)
        .args([
            "admin",
            "ping",
            "--redis-url",
            "redis://127.0.0.1:1,redis://127.0.0.1:2",
        ])
        .env_remove("RECUR_REDIS__CLUSTER")
        .output()
        .await
        .unwrap();
    assert_eq!(admin.status.code(), Some(2), "{admin:?}");
    let message = String::from_utf8_lossy(&admin.stderr);
    assert!(message.contains("redis.cluster = true"), "{message}");
}
