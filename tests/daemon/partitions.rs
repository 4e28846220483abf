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
