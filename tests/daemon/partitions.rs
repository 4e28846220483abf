//! Partitions: the count is fixed in `<prefix>:meta` when the data is first made; a daemon
//! configured otherwise refuses to start; data of an earlier recur (tagged keys, no meta) has 16;
//! every key of a partition carries its tag, whatever the count.

use redis::AsyncCommands;
use serde_json::json;

use recur::config::Settings;

use crate::support::*;

/// Runs the daemon to its first error (or to a clean stop right after start-up).
fn refusal(settings: Settings) -> String {
    let shutdown = recur::shutdown::Shutdown::new();
    let stop = shutdown.clone();
    std::thread::spawn(move || {
        actix::System::new().block_on(recur::run_with(settings, stop.clone(), |_| stop.trigger()))
    })
    .join()
    .unwrap()
    .expect_err("the daemon refuses to start")
    .to_string()
}

async fn meta_partitions(redis: &TestRedis, prefix: &str) -> Option<u16> {
    let mut conn = redis.conn().await;
    conn.hget(format!("{prefix}:meta"), "partitions")
        .await
        .unwrap()
}

#[tokio::test]
async fn the_count_is_fixed_when_the_data_is_made_and_another_is_refused() {
    let mut h = Harness::start_with(|s| s.partitions = 4).await;
    assert_eq!(meta_partitions(&h.redis, "t").await, Some(4));
    for i in 0..12 {
        let r = h
            .client
            .request(
                "createOrder",
                monthly(&format!("o{i}"), "OFFLINE", 3, "10.00"),
            )
            .await
            .unwrap();
        assert!(r.ok, "{:?}", r.error);
    }
    h.advance("2026-03-01T00:00:00Z").await;
    // Every tagged key is one of the 4 partitions, and the orders spread over more than one.
    let mut conn = h.redis.conn().await;
    let keys: Vec<String> = conn.keys("t:{p*").await.unwrap();
    let tags: std::collections::BTreeSet<u16> = keys
        .iter()
        .map(|k| {
            k["t:{p".len()..]
                .split('}')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(tags.iter().all(|p| *p < 4), "{tags:?}");
    assert!(tags.len() > 1, "{tags:?}");
    let o = h.ok("getOrder", json!({"orderId": "o7"})).await;
    assert_eq!(o["currentCycle"]["index"], 3, "{o}");
    h.stop().await;

    let mut s = h.settings.clone();
    s.partitions = 64;
    let message = refusal(s);
    assert!(
        message.contains("4 partitions") && message.contains("partitions = 64"),
        "{message}"
    );
    assert_eq!(
        meta_partitions(&h.redis, "t").await,
        Some(4),
        "meta is kept"
    );
    // With the recorded count it starts again and finds its orders.
    h.restart().await;
    let o = h.ok("getOrder", json!({"orderId": "o7"})).await;
    assert_eq!(o["currentCycle"]["index"], 3, "{o}");
}

#[tokio::test]
async fn data_without_meta_but_with_tagged_keys_has_16_partitions() {
    let redis = TestRedis::start().await;
    // A key of an earlier recur's layout: tagged, and no meta.
    let mut conn = redis.conn().await;
    let _: () = conn.hset("t:{p3}:order:old", "v", 1).await.unwrap();
    let s = settings(&redis.url, "t");
    assert_eq!(s.partitions, 64, "the default");
    let message = refusal(s.clone());
    assert!(
        message.contains("partitions = 16") && message.contains("migration"),
        "{message}"
    );
    assert_eq!(
        meta_partitions(&redis, "t").await,
        Some(16),
        "recorded as 16"
    );
    // Another prefix on the same Redis is new data: it gets the configured count.
    let daemon = Daemon::start(settings(&redis.url, "fresh")).await;
    daemon.stop().await;
    assert_eq!(meta_partitions(&redis, "fresh").await, Some(64));
    // And the old data runs with 16.
    let mut sixteen = s;
    sixteen.partitions = 16;
    let daemon = Daemon::start(sixteen).await;
    daemon.stop().await;
}

/// Data of revision 1's layout: no meta, 16 partitions, the clock and cron records under global
/// names, and replies kept at `<prefix>:reply:<id>`. The upgrade moves the clock and cron to
/// partition 0 and keeps answering a retried request id from its old kept reply, so a retried
/// recordRefund never refunds twice.
#[tokio::test]
async fn revision_1_data_is_upgraded_and_its_kept_replies_still_answer() {
    let mut h = Harness::start_with(|s| s.partitions = 16).await;
    h.ok("createOrder", monthly("o1", "ONLINE", 6, "10.00"))
        .await;
    h.ok(
        "recordPayment",
        json!({"orderId": "o1", "paymentId": "pay-1", "amount": "10.00"}),
    )
    .await;
    let refund = json!({"orderId": "o1", "paymentId": "pay-1", "amount": "4.00"});
    let first = h
        .reply_with_id("refund-1", "recordRefund", refund.clone())
        .await;
    assert!(first.ok, "{:?}", first.error);
    h.advance("2026-01-10T00:00:00Z").await;
    h.stop().await;

    let before = stream_events(&h.redis, "t").await.len();
    // Turn it into revision 1's layout, as an older recur left it.
    let mut conn = h.redis.conn().await;
    let kept = kept_reply(&h.redis, "t", "refund-1").await.expect("kept");
    let new_keys: Vec<String> = conn.keys("t:{p*}:reply:refund-1").await.unwrap();
    let claims: Vec<String> = conn.keys("t:{p*}:req:*").await.unwrap();
    // Revision 1 had one global order index.
    let indexes: Vec<String> = conn.keys("t:{p*}:orders").await.unwrap();
    for index in &indexes {
        let _: () = redis::cmd("ZUNIONSTORE")
            .arg("t:orders")
            .arg(2)
            .arg("t:orders")
            .arg(index)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let _: () = conn.del(&indexes).await.unwrap();
    // And untagged customer keys.
    let keys = recur::store::Keys::new("t", 16);
    for (new, old) in [
        (
            keys.stats_keys().customer_stats("c1"),
            "t:customer:c1:stats",
        ),
        (
            keys.stats_keys().customer_contributions("c1"),
            "t:customer:c1:contrib",
        ),
        (
            keys.order_keys().customer_orders("c1"),
            "t:customer:c1:orders",
        ),
        (
            keys.stats_keys().customers(keys.partition("c1")),
            "t:customers",
        ),
    ] {
        let _: () = conn.rename(&new, old).await.unwrap();
    }
    let _: () = redis::pipe()
        .del(&new_keys)
        .del(&claims)
        .del("t:meta")
        .rename("t:{p0}:clock", "t:clock")
        .rename("t:{p0}:cron", "t:cron")
        .set("t:reply:refund-1", &kept)
        .query_async(&mut conn)
        .await
        .unwrap();

    h.restart().await;
    assert_eq!(meta_partitions(&h.redis, "t").await, Some(16));
    let stats = h.ok("getCustomerStats", json!({"customerId": "c1"})).await;
    assert_eq!(stats["money"]["USD"]["paid"], "10.00", "{stats}");
    assert_eq!(stats["money"]["USD"]["refunded"], "4.00", "{stats}");
    let mine = h.ok("listOrders", json!({"customerId": "c1"})).await;
    assert_eq!(mine["orders"][0]["id"], "o1", "{mine}");
    let untagged: Vec<String> = conn.keys("t:customer*").await.unwrap();
    assert!(untagged.is_empty(), "{untagged:?}");
    let clock = h.ok("getClock", json!({})).await;
    assert_eq!(
        clock["now"], "2026-01-10T00:00:00.000Z",
        "the clock moved with its record"
    );
    let old: bool = conn.exists("t:clock").await.unwrap();
    assert!(!old, "the old clock key is gone");
    let retried = h.reply_with_id("refund-1", "recordRefund", refund).await;
    assert_eq!(retried, first, "the first reply, from the old key");
    assert_eq!(
        stream_events(&h.redis, "t").await.len(),
        before,
        "nothing applied again"
    );
    let o = h.ok("getOrder", json!({"orderId": "o1"})).await;
    assert_eq!(o["payments"][0]["refunded"], "4.00", "refunded once: {o}");
    // The old global order index moved into the partitions' indexes.
    let listed = h.ok("listOrders", json!({})).await;
    assert_eq!(listed["orders"][0]["id"], "o1", "{listed}");
    let old: bool = conn.exists("t:orders").await.unwrap();
    assert!(!old);
    h.stop().await;
}

/// A request id reused with another body is a CONFLICT even when the new body routes to
/// another partition (the first body is claimed in the request id's own partition).
#[tokio::test]
async fn a_reused_request_id_conflicts_across_partitions() {
    let h = Harness::start().await;
    h.ok("createOrder", monthly("o1", "OFFLINE", 3, "10.00"))
        .await;
    let keys = recur::store::Keys::new("t", recur::store::DEFAULT_PARTITIONS);
    // An order id in another partition than o1's.
    let other = (2..100)
        .map(|i| format!("o{i}"))
        .find(|id| keys.partition(id) != keys.partition("o1"))
        .unwrap();
    h.ok("createOrder", monthly(&other, "OFFLINE", 3, "10.00"))
        .await;
    let r = h
        .reply_with_id("same-id", "getOrder", json!({"orderId": "o1"}))
        .await;
    assert!(r.ok, "{:?}", r.error);
    let r = h
        .reply_with_id("same-id", "getOrder", json!({"orderId": other}))
        .await;
    assert_eq!(r.error.unwrap().code.as_str(), "CONFLICT");
    let r = h
        .reply_with_id("same-id", "getOrder", json!({"orderId": "o1"}))
        .await;
    assert!(r.ok, "the first body still gets its reply");
}

/// listOrders over all orders merges every partition's index, newest first and ties (orders
/// created in the same millisecond) by id descending; paging with the cursor returns each
/// order once.
#[tokio::test]
async fn list_orders_merges_the_partitions_and_pages_through_ties() {
    let h = Harness::start().await;
    let mut expected = Vec::new();
    for i in 0..30 {
        let id = format!("o{i:02}");
        h.ok("createOrder", monthly(&id, "OFFLINE", 3, "5.00"))
            .await;
        expected.push(id);
        if i % 10 == 9 {
            h.advance(&format!("2026-01-0{}T00:00:00Z", 2 + i / 10))
                .await;
        }
    }
    // Newest first: the last ten were created last; within a millisecond, id descending.
    expected.sort_by(|a, b| {
        let batch = |id: &str| id[1..].parse::<usize>().unwrap() / 10;
        batch(b).cmp(&batch(a)).then(b.cmp(a))
    });
    assert_eq!(h.list_pages(7).await, expected);
    let e = h.err("listOrders", json!({"cursor": "12"})).await;
    assert_eq!(e.code.as_str(), "INVALID_REQUEST", "a revision 1 cursor");
}
