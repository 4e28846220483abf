//! Fired timers of one partition are committed by one `fire.lua` call (issue 26): the lease is
//! checked once for the call, and each order keeps its own version guard, change entry, timer
//! and outbox entries, exactly as if it were committed alone.

use redis::AsyncCommands;

use recur::store::{self, Commit, CommitOutcome, CommitterConfig, Keys, OrderWrite, Store};

use crate::support::*;

#[tokio::test]
async fn the_fires_of_a_partition_share_one_call_and_each_keeps_its_own_guard() {
    // The commit batcher runs on a local task set, as in the daemon.
    tokio::task::LocalSet::new()
        .run_until(fires_in_one_call())
        .await;
}

/// A commit of `id` from `from` to `from + 1` (a creation when `from` is 0).
fn commit(id: &str, from: u64, due_ms: Option<i64>, deltas: usize, lease: &str) -> Commit {
    Commit {
        order_id: id.into(),
        expected_version: from,
        write: OrderWrite::Save {
            json: format!("{{\"id\":\"{id}\",\"version\":{}}}", from + 1),
            version: from + 1,
            due_ms,
            customer_id: "c1".into(),
            created_ms: 1,
        },
        change: Some(format!(
            "{{\"orderId\":\"{id}\",\"version\":{},\"entity\":",
            from + 1
        )),
        event_count: 1,
        deltas: (0..deltas).map(|i| format!("{{\"d\":{i}}}")).collect(),
        reply: None,
        lease: lease.into(),
        test_clock: None,
    }
}

async fn evalsha_calls(conn: &mut store::RedisConn) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("commandstats")
        .query_async(conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("cmdstat_evalsha:calls="))
        .and_then(|l| l.split(',').next())
        .map_or(0, |n| n.parse().unwrap())
}

async fn fires_in_one_call() {
    let redis = TestRedis::start().await;
    let mut conn = store::connect(&redis.url).await.unwrap();
    let config = CommitterConfig {
        max_batch: 16,
        max_in_flight: 1,
        reply_ttl_secs: 60,
        publish_events: false,
        wait: None,
    };
    let metrics = std::sync::Arc::new(recur::metrics::Metrics::default());
    let keys = Keys::new("t", 4);
    let store = Store::open(
        conn.clone(),
        conn.clone(),
        keys.clone(),
        config,
        16,
        metrics,
    )
    .await
    .unwrap();
    // Three orders of one partition.
    let ids: Vec<String> = (0..)
        .map(|i| format!("o{i}"))
        .filter(|id| keys.partition(id) == 1)
        .take(3)
        .collect();
    let p = 1;
    let a = store
        .lease_store()
        .acquire_lease(p, "a", 60_000)
        .await
        .unwrap()
        .expect("free");
    let orders = store.order_store();
    for id in &ids {
        let created = orders.commit(commit(id, 0, Some(100), 0, &a.token)).await;
        assert!(matches!(created, Ok(CommitOutcome::Committed { .. })));
    }

    // The three fire at once: the first moves its timer and sends a delta, the second expects
    // a version the order does not have, the third ends (no timer).
    let calls = evalsha_calls(&mut conn).await;
    let (first, second, third) = futures_util::join!(
        orders.commit_bulk(commit(&ids[0], 1, Some(200), 1, &a.token)),
        orders.commit_bulk(commit(&ids[1], 4, Some(200), 1, &a.token)),
        orders.commit_bulk(commit(&ids[2], 1, None, 0, &a.token)),
    );
    assert_eq!(
        evalsha_calls(&mut conn).await - calls,
        1,
        "one call for the partition's fires"
    );
    let Ok(CommitOutcome::Committed { outbox_ids }) = first else {
        panic!("{first:?}")
    };
    assert_eq!(outbox_ids.len(), 1, "its delta's outbox entry");
    assert_eq!(second.unwrap(), CommitOutcome::VersionConflict);
    assert_eq!(
        third.unwrap(),
        CommitOutcome::Committed {
            outbox_ids: Vec::new()
        }
    );
    let order = |id: &str| keys.order_keys().order(id);
    let (v0, d0): (String, String) = (
        conn.hget(order(&ids[0]), "v").await.unwrap(),
        conn.hget(order(&ids[0]), "d").await.unwrap(),
    );
    assert_eq!(
        (v0.as_str(), d0),
        ("2", format!("{{\"id\":\"{}\",\"version\":2}}", ids[0]))
    );
    let v1: String = conn.hget(order(&ids[1]), "v").await.unwrap();
    assert_eq!(v1, "1", "the refused order is untouched");
    let v2: String = conn.hget(order(&ids[2]), "v").await.unwrap();
    assert_eq!(v2, "2");
    let timers: Vec<(String, i64)> = conn
        .zrange_withscores(keys.order_keys().timers(p), 0, -1)
        .await
        .unwrap();
    let mut expected = vec![(ids[0].clone(), 200), (ids[1].clone(), 100)];
    expected.sort_by(|x, y| x.1.cmp(&y.1).then(x.0.cmp(&y.0)));
    let mut timers = timers;
    timers.sort_by(|x, y| x.1.cmp(&y.1).then(x.0.cmp(&y.0)));
    assert_eq!(timers, expected, "moved, left, and removed");
    let changes: redis::streams::StreamRangeReply =
        conn.xrange_all(keys.order_keys().events(p)).await.unwrap();
    let texts: Vec<String> = changes
        .ids
        .iter()
        .map(|e| e.get::<String>("change").unwrap())
        .collect();
    assert_eq!(texts.len(), 5, "three creations and two fires");
    assert_eq!(
        texts[3..],
        [
            format!(
                "{{\"orderId\":\"{0}\",\"version\":2,\"entity\":{{\"id\":\"{0}\",\"version\":2}}}}",
                ids[0]
            ),
            format!(
                "{{\"orderId\":\"{0}\",\"version\":2,\"entity\":{{\"id\":\"{0}\",\"version\":2}}}}",
                ids[2]
            ),
        ]
    );
    let outbox: usize = conn.xlen(keys.stats_keys().outbox(p)).await.unwrap();
    assert_eq!(outbox, 1);

    // a loses the lease and b takes it: a's fires are all fenced and nothing is written.
    assert!(store.lease_store().release_lease(&a).await.unwrap());
    let b = store
        .lease_store()
        .acquire_lease(p, "b", 60_000)
        .await
        .unwrap()
        .expect("free again");
    let before = snapshot(&redis, "t").await;
    let (first, second) = futures_util::join!(
        orders.commit_bulk(commit(&ids[0], 2, Some(300), 1, &a.token)),
        orders.commit_bulk(commit(&ids[1], 1, Some(300), 0, &a.token)),
    );
    assert_eq!(first.unwrap(), CommitOutcome::Fenced);
    assert_eq!(second.unwrap(), CommitOutcome::Fenced);
    assert_eq!(snapshot(&redis, "t").await, before, "nothing written");
    // The holder's go through.
    assert!(matches!(
        orders
            .commit_bulk(commit(&ids[1], 1, Some(300), 0, &b.token))
            .await,
        Ok(CommitOutcome::Committed { .. })
    ));
}
