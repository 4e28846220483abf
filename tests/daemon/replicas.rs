//! Several daemons on one Redis: each holds its fair share of the partition leases. Every
//! request gets exactly one reply, every timer fires once, a killed daemon's partitions are
//! taken over within the lease TTL, a paused one is fenced when it wakes up, and a scripted
//! book gives the same events and customer figures as one daemon, with daemons killed and
//! joining on the way.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};

use recur::admin::client::AdminClient;
use recur::metrics;

use crate::support::*;

/// Publishes each request once on the admin channel with its own reply channel and counts,
/// per request id, the replies that come within `wait`.
async fn replies_per_request(
    url: &str,
    prefix: &str,
    requests: &[(String, &str, Value)],
    wait: Duration,
) -> HashMap<String, Vec<Value>> {
    let client = redis::Client::open(url).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    let channel = format!("{prefix}-test-replies-{}", uuid::Uuid::new_v4());
    pubsub.subscribe(&channel).await.unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    for (id, command, args) in requests {
        // The CLI's channel, so that a retry through the client has the same body.
        let request = json!({"id": id, "replyTo": channel, "channel": "cli", "command": command, "args": args});
        let _: usize = redis::AsyncCommands::publish(
            &mut conn,
            format!("{prefix}:admin"),
            request.to_string(),
        )
        .await
        .unwrap();
    }
    let mut replies: HashMap<String, Vec<Value>> = HashMap::new();
    let mut messages = pubsub.on_message();
    let deadline = tokio::time::Instant::now() + wait;
    while let Ok(Some(m)) = tokio::time::timeout_at(deadline, messages.next()).await {
        let reply: Value = serde_json::from_str(&m.get_payload::<String>().unwrap()).unwrap();
        let id = reply["id"].as_str().unwrap().to_string();
        replies.entry(id).or_default().push(reply);
    }
    replies
}

fn assert_no_duplicate_event_ids(events: &[Value]) {
    let mut seen = HashSet::new();
    for e in events {
        assert!(
            seen.insert(e["id"].as_str().unwrap().to_string()),
            "event {e} written twice"
        );
    }
}

/// Each order's cycle starts, by order id.
fn cycle_starts(events: &[Value]) -> BTreeMap<String, Vec<i64>> {
    let mut out: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for e in events.iter().filter(|e| e["type"] == "orderCycleStarted") {
        out.entry(e["entityId"].as_str().unwrap().to_string())
            .or_default()
            .push(e["data"]["cycleNumber"].as_i64().unwrap());
    }
    out
}

async fn holders(redis: &TestRedis, prefix: &str) -> BTreeMap<String, usize> {
    let mut conn = redis.conn().await;
    let mut count = BTreeMap::new();
    for p in 0..recur::store::DEFAULT_PARTITIONS {
        let v: Option<String> =
            redis::AsyncCommands::get(&mut conn, format!("{prefix}:{{p{p}}}:lease"))
                .await
                .unwrap();
        let daemon = v.map_or("-".to_string(), |v| {
            v.split(':').next().unwrap().to_string()
        });
        *count.entry(daemon).or_default() += 1;
    }
    count
}

#[tokio::test]
async fn three_daemons_answer_each_request_once_and_fire_each_timer_once() {
    let redis = TestRedis::start().await;
    let daemons = [
        Daemon::start(settings(&redis.url, "t")).await,
        Daemon::start(settings(&redis.url, "t")).await,
        Daemon::start(settings(&redis.url, "t")).await,
    ];
    let mut requests: Vec<(String, &str, Value)> = (0..30)
        .map(|i| {
            (
                format!("c{i}"),
                "createOrder",
                monthly(&format!("o{i}"), "OFFLINE", 3, "10.00"),
            )
        })
        .collect();
    requests.push(("ping".into(), "ping", json!({})));
    requests.push(("missing".into(), "getOrder", json!({"orderId": "nope"})));
    requests.push(("bad".into(), "noSuchCommand", json!({})));
    // Each takes its fair share (ceil(64 / 3) = 22 at most), and all three announce themselves.
    wait_for_balance(&redis, "t", 3).await;
    let replies = replies_per_request(&redis.url, "t", &requests, Duration::from_secs(2)).await;
    for (id, _, _) in &requests {
        let n = replies.get(id).map_or(0, Vec::len);
        assert_eq!(n, 1, "request {id}: {:?}", replies.get(id));
    }
    assert_eq!(replies["missing"][0]["error"]["code"], "NOT_FOUND");
    assert_eq!(replies["bad"][0]["error"]["code"], "UNKNOWN_COMMAND");
    let held = holders(&redis, "t").await;
    let mut conn = redis.conn().await;
    let live: Vec<String> = redis::AsyncCommands::zrange(&mut conn, "t:daemons", 0, -1)
        .await
        .unwrap();
    assert_eq!(live.len(), 3, "{live:?}");
    let metrics = vec![("m".to_string(), "getMetrics", json!({}))];
    let replies = replies_per_request(&redis.url, "t", &metrics, Duration::from_secs(1)).await;
    let m = &replies["m"][0]["result"];
    let answering = m["daemonId"].as_str().unwrap();
    assert_eq!(
        json!(metrics::total(&m["metrics"], "recur_partitions_owned") as u64),
        held[answering],
        "partition 0's owner answers: {m}"
    );
    assert_eq!(m["liveDaemons"].as_array().map(Vec::len), Some(3), "{m}");
    // Each daemon answers for itself when asked by id; together they hold every partition.
    let by_id: Vec<(String, &str, Value)> = live
        .iter()
        .map(|id| (format!("m-{id}"), "getMetrics", json!({"daemonId": id})))
        .collect();
    let replies = replies_per_request(&redis.url, "t", &by_id, Duration::from_secs(1)).await;
    let mut owned = 0;
    for (request, _, args) in &by_id {
        let got = &replies[request];
        assert_eq!(got.len(), 1, "{request}: {got:?}");
        assert_eq!(got[0]["result"]["daemonId"], args["daemonId"]);
        owned += metrics::total(&got[0]["result"]["metrics"], "recur_partitions_owned") as u64;
    }
    assert_eq!(owned, u64::from(recur::store::DEFAULT_PARTITIONS));

    let advance = vec![(
        "adv".to_string(),
        "advanceClock",
        json!({"to": "2026-04-01T00:00:00Z"}),
    )];
    let replies = replies_per_request(&redis.url, "t", &advance, Duration::from_secs(5)).await;
    assert_eq!(replies["adv"].len(), 1, "{replies:?}");
    assert_eq!(replies["adv"][0]["ok"], true, "{replies:?}");
    let events = stream_events(&redis, "t").await;
    assert_no_duplicate_event_ids(&events);
    let starts = cycle_starts(&events);
    assert_eq!(starts.len(), 30);
    assert!(starts.values().all(|c| c == &vec![1, 2, 3]), "{starts:?}");
    for d in daemons {
        d.stop().await;
    }
    let live: usize = redis::AsyncCommands::zcard(&mut conn, "t:daemons")
        .await
        .unwrap();
    assert_eq!(live, 0, "a daemon that stops leaves");
}

fn child_env(id: &'static str) -> [(&'static str, &'static str); 1] {
    [("RECUR_CLUSTER__DAEMON_ID", id)]
}

/// Daemons `a` and `b` (child processes) sharing the partitions, a client, and `n` monthly
/// orders.
async fn two_daemons(redis: &TestRedis, n: usize) -> (ChildDaemon, ChildDaemon, AdminClient) {
    let a = ChildDaemon::start(&redis.url, "t", &child_env("a")).await;
    let b = ChildDaemon::start(&redis.url, "t", &child_env("b")).await;
    wait_for_holders(redis, "t", &["a", "b"]).await;
    let client = AdminClient::connect(&redis.url, "t").await.unwrap();
    for i in 0..n {
        let r = client
            .request(
                "createOrder",
                monthly(&format!("o{i}"), "OFFLINE", 6, "10.00"),
            )
            .await
            .unwrap();
        assert!(r.ok, "{:?}", r.error);
    }
    (a, b, client)
}

/// Child daemons named `ids`, once they share the partitions.
async fn start_group(
    redis: &TestRedis,
    ids: &[&'static str],
) -> BTreeMap<&'static str, ChildDaemon> {
    let mut daemons = BTreeMap::new();
    for &id in ids {
        daemons.insert(
            id,
            ChildDaemon::start(&redis.url, "t", &child_env(id)).await,
        );
    }
    wait_for_holders(redis, "t", ids).await;
    daemons
}

/// Whether every partition is held, by `n` daemons, none above its fair share.
fn balanced(held: &BTreeMap<String, usize>, n: usize) -> bool {
    let partitions = usize::from(recur::store::DEFAULT_PARTITIONS);
    let share = partitions.div_ceil(n);
    !held.contains_key("-")
        && held.len() == n
        && held.values().all(|c| *c <= share)
        && held.values().sum::<usize>() == partitions
}

/// Waits until `n` daemons hold every partition in fair shares.
async fn wait_for_balance(redis: &TestRedis, prefix: &str, n: usize) {
    for _ in 0..200 {
        if balanced(&holders(redis, prefix).await, n) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "the partitions are not shared fairly by {n} daemons: {:?}",
        holders(redis, prefix).await
    );
}

/// Waits until exactly the daemons `ids` hold every partition in fair shares.
async fn wait_for_holders(redis: &TestRedis, prefix: &str, ids: &[&str]) {
    for _ in 0..200 {
        let held = holders(redis, prefix).await;
        if balanced(&held, ids.len()) && ids.iter().all(|id| held.contains_key(*id)) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "{ids:?} do not share the partitions: {:?}",
        holders(redis, prefix).await
    );
}

#[tokio::test]
async fn a_killed_daemons_partitions_are_taken_over_and_nothing_is_lost_or_doubled() {
    let redis = TestRedis::start().await;
    let (a, b, client) = two_daemons(&redis, 20).await;
    let r = client
        .request("advanceClock", json!({"to": "2026-02-15T00:00:00Z"}))
        .await
        .unwrap();
    assert!(r.ok, "{:?}", r.error);

    a.kill().await;
    // The client retries until b has taken a's partitions over (lease TTL 2 s + one renewal).
    let started = std::time::Instant::now();
    let r = client
        .request("advanceClock", json!({"to": "2026-04-15T00:00:00Z"}))
        .await
        .unwrap();
    assert!(r.ok, "{:?}", r.error);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "took over in {:?}",
        started.elapsed()
    );
    wait_for_holders(&redis, "t", &["b"]).await;
    let events = stream_events(&redis, "t").await;
    assert_no_duplicate_event_ids(&events);
    let starts = cycle_starts(&events);
    assert_eq!(starts.len(), 20);
    assert!(
        starts.values().all(|c| c == &vec![1, 2, 3, 4]),
        "{starts:?}"
    );
    let o = client
        .request("getOrder", json!({"orderId": "o7"}))
        .await
        .unwrap()
        .result
        .unwrap();
    assert_eq!(o["currentCycle"]["index"], 4, "{o}");
    b.kill().await;
}

#[tokio::test]
async fn a_daemon_paused_past_its_lease_is_fenced_and_rejoins_when_it_wakes() {
    let redis = TestRedis::start().await;
    let (a, b, client) = two_daemons(&redis, 10).await;
    let pid = a.child.id().unwrap().to_string();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap();
        assert!(status.success());
    };
    signal("-STOP");
    // Requests published while a is frozen reach its socket and wait there (b answers those
    // of its own partitions at once).
    let frozen: Vec<(String, &str, Value)> = (0..10)
        .map(|i| {
            (
                format!("p{i}"),
                "pauseOrder",
                json!({"orderId": format!("o{i}")}),
            )
        })
        .collect();
    let redis_url = redis.url.clone();
    let pending = tokio::spawn(async move {
        replies_per_request(&redis_url, "t", &frozen, Duration::from_secs(8)).await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    wait_for_holders(&redis, "t", &["b"]).await;
    // b now answers; the same request ids get b's answers.
    for i in 0..10 {
        let options = recur::admin::client::RequestOptions {
            id: Some(format!("p{i}")),
            ..Default::default()
        };
        let r = client
            .request_with(options, "pauseOrder", json!({"orderId": format!("o{i}")}))
            .await
            .unwrap();
        assert!(r.ok, "{:?}", r.error);
    }
    signal("-CONT");
    // The woken daemon's late attempts are fenced: no second reply, no second event.
    let replies = pending.await.unwrap();
    for i in 0..10 {
        let id = format!("p{i}");
        let got = replies.get(&id).map_or(0, Vec::len);
        assert!(
            got <= 1,
            "{id} answered {got} times: {:?}",
            replies.get(&id)
        );
    }
    // a finds its leases gone, drops their actors, and gets its share back from b.
    wait_for_holders(&redis, "t", &["a", "b"]).await;
    let events = stream_events(&redis, "t").await;
    assert_no_duplicate_event_ids(&events);
    let paused = events.iter().filter(|e| e["type"] == "orderPaused").count();
    assert_eq!(paused, 10, "each order paused once");
    // The group goes on: an advance through b.
    let r = client
        .request("advanceClock", json!({"to": "2026-03-01T00:00:00Z"}))
        .await
        .unwrap();
    assert!(r.ok, "{:?}", r.error);
    a.kill().await;
    b.kill().await;
}

#[tokio::test]
async fn a_commit_with_a_lost_lease_token_writes_nothing() {
    // The commit batcher runs on a local task set, as in the daemon.
    tokio::task::LocalSet::new()
        .run_until(stale_token_is_fenced())
        .await;
}

async fn stale_token_is_fenced() {
    use recur::store::{self, Commit, CommitOutcome, CommitterConfig, Keys, OrderWrite, Store};

    let redis = TestRedis::start().await;
    let conn = store::connect(&redis.url).await.unwrap();
    let config = CommitterConfig {
        max_batch: 16,
        max_in_flight: 1,
        reply_ttl_secs: 60,
        publish_events: false,
        wait: None,
    };
    let metrics = std::sync::Arc::new(recur::metrics::Metrics::default());
    let keys = Keys::new("t", 4);
    let store = Store::open(conn.clone(), conn, keys.clone(), config, 16, metrics)
        .await
        .unwrap();
    let p = keys.partition("o1");
    let a = store
        .lease_store()
        .acquire_lease(p, "a", 60_000)
        .await
        .unwrap()
        .expect("free");
    assert!(
        store
            .lease_store()
            .acquire_lease(p, "b", 60_000)
            .await
            .unwrap()
            .is_none(),
        "held by a"
    );
    let commit = |lease: &str| Commit {
        order_id: "o1".into(),
        expected_version: 0,
        write: OrderWrite::Save {
            json: "{}".into(),
            version: 1,
            due_ms: Some(1),
            customer_id: "c1".into(),
            created_ms: 1,
        },
        change: Some("{\"orderId\":\"o1\",\"entity\":".into()),
        event_count: 1,
        deltas: vec!["{}".into()],
        reply: Some(("r1".into(), "{}".into())),
        lease: lease.to_string(),
        test_clock: None,
    };
    // a loses the lease (released here as if it expired) and b takes it: a is fenced.
    assert!(store.lease_store().release_lease(&a).await.unwrap());
    let b = store
        .lease_store()
        .acquire_lease(p, "b", 60_000)
        .await
        .unwrap()
        .expect("free again");
    assert_ne!(a.token, b.token, "a new epoch");
    let before = snapshot(&redis, "t").await;
    assert_eq!(
        store.order_store().commit(commit(&a.token)).await.unwrap(),
        CommitOutcome::Fenced
    );
    assert_eq!(snapshot(&redis, "t").await, before, "nothing written");
    assert_eq!(kept_reply(&redis, "t", "r1").await, None, "no reply kept");
    assert!(matches!(
        store.order_store().commit(commit(&b.token)).await.unwrap(),
        CommitOutcome::Committed { .. }
    ));
    // Renewal with a stale token fails; with the holder's, it holds.
    assert_eq!(
        store
            .lease_store()
            .renew_leases(&[a.clone(), b.clone()], 60_000)
            .await
            .unwrap(),
        [false, true]
    );
    assert!(
        !store.lease_store().release_lease(&a).await.unwrap(),
        "a cannot release b's lease"
    );
}

/// Three daemons share a burst advance; the holder of partition 0 (which began the advance) is
/// SIGKILLed mid-burst: the retried advance id is completed by the daemons left (its
/// partitions are taken over and finished), every order has each cycle exactly once, the
/// leases end balanced over the two, and the events and orders are exactly those of one
/// uninterrupted daemon.
#[tokio::test]
async fn killing_one_of_three_during_a_burst_changes_nothing_but_who_finishes_it() {
    use crate::durability::{
        by_order, create_book, reference_run, start_burst, stored_orders, totals,
    };
    const N: usize = 2000;
    let to = "2026-02-20T00:00:00Z";
    let (expected_events, expected_orders) = reference_run(N, &[to]).await;
    let (expected_total, expected_changes) = totals(&expected_events);

    let redis = TestRedis::start().await;
    let mut daemons = start_group(&redis, &["a", "b", "c"]).await;
    let client = AdminClient::connect(&redis.url, "t").await.unwrap();
    create_book(&client, N).await;
    let created = stream_len(&redis, "t").await;

    let mut conn = redis.conn().await;
    let lease0: String = redis::AsyncCommands::get(&mut conn, "t:{p0}:lease")
        .await
        .unwrap();
    let leader = lease0.split(':').next().unwrap().to_string();
    start_burst(&client, &redis, to, "advance-1", created).await;
    daemons.remove(leader.as_str()).unwrap().kill().await;
    let after_kill = stream_len(&redis, "t").await;
    assert!(
        after_kill > created && after_kill < expected_changes,
        "killed mid-burst: {after_kill} of {expected_changes} changes"
    );

    let options = recur::admin::client::RequestOptions {
        id: Some("advance-1".into()),
        total_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let reply = client
        .request_with(options, "advanceClock", json!({ "to": to }))
        .await
        .unwrap();
    assert!(reply.ok, "{:?}", reply.error);
    let left: Vec<&str> = daemons.keys().copied().collect();
    wait_for_holders(&redis, "t", &left).await;

    let events = stream_events(&redis, "t").await;
    assert_no_duplicate_event_ids(&events);
    assert_eq!(events.len(), expected_total, "no event missing");
    assert_eq!(by_order(&events), expected_events);
    assert_eq!(stored_orders(&redis, "t").await, expected_orders);
    for d in daemons.into_values() {
        d.kill().await;
    }
}

/// Orders in the scripted book.
const BOOK: usize = 300;

/// One step of a scripted book (creations, payments, pauses, cancels, resumes, advances), the
/// same whatever daemons run it. Every request goes through the retrying client.
async fn book_step(client: &AdminClient, step: usize) {
    use crate::durability::create_book;
    let ok = |command: &'static str, args: Value| async move {
        let r = client.request(command, args).await.unwrap();
        assert!(
            r.ok || r
                .error
                .as_ref()
                .is_some_and(|e| e.code != recur::domain::ErrorCode::Unavailable),
            "{command}: {:?}",
            r.error
        );
    };
    let order = |i: usize| format!("o{i:05}");
    match step {
        0 => create_book(client, BOOK).await,
        1 => ok("advanceClock", json!({"to": "2026-02-10T00:00:00Z"})).await,
        2 => {
            let requests = (0..BOOK).map(|i| {
                let (command, args) = match i % 10 {
                    2 | 5 | 8 => (
                        "recordPayment",
                        json!({"orderId": order(i), "paymentId": format!("pay-{i}-2"), "amount": "7.50"}),
                    ),
                    3 => ("pauseOrder", json!({"orderId": order(i)})),
                    7 => (
                        "cancelOrder",
                        json!({"orderId": order(i), "effectiveAt": "NEXT_PAYMENT_DATE", "cause": "MEMBER_ACTION"}),
                    ),
                    9 => ("cancelOrder", json!({"orderId": order(i), "effectiveAt": "IMMEDIATELY"})),
                    _ => ("getOrder", json!({"orderId": order(i)})),
                };
                ok(command, args)
            });
            futures_util::future::join_all(requests).await;
        }
        3 => ok("advanceClock", json!({"to": "2026-04-05T00:00:00Z"})).await,
        4 => {
            let requests = (0..BOOK).filter(|i| i % 10 == 3 || i % 10 == 2).map(|i| {
                if i % 10 == 3 {
                    ok("resumeOrder", json!({"orderId": order(i)}))
                } else {
                    ok(
                        "recordPayment",
                        json!({"orderId": order(i), "paymentId": format!("pay-{i}-4"), "amount": "7.50"}),
                    )
                }
            });
            futures_util::future::join_all(requests).await;
            ok("advanceClock", json!({"to": "2026-07-01T00:00:00Z"})).await;
        }
        _ => unreachable!(),
    }
}

/// Every customer's figures, as getCustomerStats answers them.
async fn customer_figures(client: &AdminClient) -> BTreeMap<String, Value> {
    let mut out = BTreeMap::new();
    for c in 0..17 {
        let id = format!("c{c}");
        let r = client
            .request("getCustomerStats", json!({"customerId": id}))
            .await
            .unwrap();
        assert!(r.ok, "{:?}", r.error);
        out.insert(id, r.result.unwrap());
    }
    out
}

/// The scripted book on three daemons, one SIGKILLed half-way and a fourth joining later,
/// gives exactly the events (id, type, time, sequence, data) and customer figures one daemon
/// gives, and the figures equal a recomputation.
#[tokio::test]
async fn a_scripted_book_on_three_daemons_with_a_kill_and_a_join_matches_one_daemon() {
    use crate::durability::{by_order, stored_orders};
    let reference = Harness::start().await;
    for step in 0..5 {
        book_step(&reference.client, step).await;
    }
    let expected_events = by_order(&reference.events().await);
    let expected_orders = stored_orders(&reference.redis, "t").await;
    let expected_figures = customer_figures(&reference.client).await;

    let redis = TestRedis::start().await;
    let mut daemons = start_group(&redis, &["a", "b", "c"]).await;
    let client = AdminClient::connect(&redis.url, "t").await.unwrap();
    book_step(&client, 0).await;
    book_step(&client, 1).await;
    // b dies without a word; the client's retries reach the daemons that take its partitions.
    daemons.remove("b").unwrap().kill().await;
    book_step(&client, 2).await;
    // d joins: partitions are handed over to it while the script goes on.
    daemons.insert(
        "d",
        ChildDaemon::start(&redis.url, "t", &child_env("d")).await,
    );
    book_step(&client, 3).await;
    wait_for_holders(&redis, "t", &["a", "c", "d"]).await;
    book_step(&client, 4).await;

    let events = stream_events(&redis, "t").await;
    assert_no_duplicate_event_ids(&events);
    assert_eq!(by_order(&events), expected_events);
    assert_eq!(stored_orders(&redis, "t").await, expected_orders);
    let figures = customer_figures(&client).await;
    assert_eq!(figures, expected_figures);
    for c in 0..17 {
        let r = client
            .request(
                "recomputeCustomerStats",
                json!({"customerId": format!("c{c}")}),
            )
            .await
            .unwrap();
        let report = r.result.unwrap();
        assert_eq!(report["differences"], json!([]), "c{c}: {report}");
    }
    for d in daemons.into_values() {
        d.kill().await;
    }
}

/// Cart names across two daemons, with the cart's partition owned by the daemon that does not
/// own the customer's: updateOrder by name is resolved by the customer's owner and applied by
/// the order's (once, also when retried), and names stay unique when creates race on both.
#[tokio::test]
async fn carts_by_name_work_when_the_customer_and_the_cart_live_on_different_daemons() {
    let redis = TestRedis::start().await;
    let daemons = [
        Daemon::start(settings(&redis.url, "t")).await,
        Daemon::start(settings(&redis.url, "t")).await,
    ];
    wait_for_balance(&redis, "t", 2).await;
    let client = AdminClient::connect(&redis.url, "t").await.unwrap();
    let mut conn = redis.conn().await;
    let holder = |p: u16| {
        let mut conn = conn.clone();
        async move {
            let v: String = redis::AsyncCommands::get(&mut conn, format!("t:{{p{p}}}:lease"))
                .await
                .unwrap();
            v.split(':').next().unwrap().to_string()
        }
    };
    let partition =
        |id: &str| recur::store::keys::partition_of(id, recur::store::DEFAULT_PARTITIONS);
    let customer_owner = holder(partition("c1")).await;
    let mut elsewhere = Vec::new();
    for k in 0..200 {
        let id = format!("cart-{k}");
        if holder(partition(&id)).await != customer_owner {
            elsewhere.push(id);
        }
    }
    assert!(elsewhere.len() > 10, "ids on the other daemon");
    let cart = |id: &str, name: &str| {
        let mut a = monthly(id, "ONLINE", 12, "10.00");
        a["name"] = json!(name);
        a
    };
    let ok = |r: recur::wire::Reply| {
        assert!(r.ok, "{:?}", r.error);
        r.result.unwrap()
    };
    let created = ok(client
        .request("createOrder", cart(&elsewhere[0], "box"))
        .await
        .unwrap());
    assert_eq!(created["status"], "DRAFT");
    let item =
        json!({"id": "mug", "sku": "SKU-mug", "name": "mug", "quantity": 2, "unitPrice": "3.00"});
    let update = json!({"customerId": "c1", "name": "box", "lineItems": {"create": [item]}});
    let options = || recur::admin::client::RequestOptions {
        id: Some("upd-by-name".into()),
        ..Default::default()
    };
    let first = client
        .request_with(options(), "updateOrder", update.clone())
        .await
        .unwrap();
    let o = ok(first.clone());
    assert_eq!(o["id"], json!(elsewhere[0]));
    assert_eq!(o["priceDetails"]["subtotal"], "16.00");
    let again = client
        .request_with(options(), "updateOrder", update)
        .await
        .unwrap();
    assert_eq!(
        again, first,
        "the retry gets the kept reply, not a second line item"
    );

    // Another cart of c1 may not take the name, whichever daemon creates it.
    let e = client
        .request("createOrder", cart(&elsewhere[1], "box"))
        .await
        .unwrap();
    assert_eq!(e.error.unwrap().code.as_str(), "CONFLICT");
    // Creates racing for one name on both daemons: exactly one wins.
    let racing = (0..12).map(|k| {
        let id = format!("race-{k}");
        let client = &client;
        let args = cart(&id, "bag");
        async move { client.request("createOrder", args).await.unwrap() }
    });
    let replies = futures_util::future::join_all(racing).await;
    let won = replies.iter().filter(|r| r.ok).count();
    assert_eq!(won, 1, "{replies:?}");
    assert!(replies
        .iter()
        .filter(|r| !r.ok)
        .all(|r| r.error.as_ref().unwrap().code.as_str() == "CONFLICT"));

    // A rename by name, then the new name finds the cart.
    let renamed = ok(client
        .request(
            "updateOrder",
            json!({"customerId": "c1", "name": "box", "newName": "tote"}),
        )
        .await
        .unwrap());
    assert_eq!(renamed["name"], "tote");
    let found = ok(client
        .request("updateOrder", json!({"customerId": "c1", "name": "tote"}))
        .await
        .unwrap());
    assert_eq!(found["id"], json!(elsewhere[0]));
    let events = stream_events(&redis, "t").await;
    assert_no_duplicate_event_ids(&events);
    let _: () = redis::AsyncCommands::ping(&mut conn).await.unwrap();
    for d in daemons {
        d.stop().await;
    }
}

/// Daemons of one group must agree on the behaviour settings: one started with another payment
/// grace refuses to start while the group runs, and starts once it has stopped.
#[tokio::test]
async fn a_daemon_with_other_behaviour_settings_refuses_to_join_a_live_group() {
    let redis = TestRedis::start().await;
    let a = Daemon::start(settings(&redis.url, "t")).await;
    let url = redis.url.clone();
    let start_other = move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_recur"))
            .args([
                "serve",
                "--redis-url",
                &url,
                "--prefix",
                "t",
                "--clock",
                "simulated",
            ])
            .env_remove("RUST_LOG")
            .env("RECUR_LIFECYCLE__PAYMENT_GRACE_PERIOD", "5h")
            .env("RECUR_LIFECYCLE__DUNNING__RETRIES", "[\"1h\", \"2h\"]")
            .env("RECUR_CLUSTER__LEASE_TTL", "2s")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let refused = tokio::task::spawn_blocking(move || start_other().wait_with_output().unwrap());
    let out = tokio::time::timeout(Duration::from_secs(20), refused)
        .await
        .expect("it exits at once")
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("other behaviour settings"), "{stderr}");
    // Once the group has stopped, the new settings are taken.
    a.stop().await;
    let mut s = settings(&redis.url, "t");
    s.lifecycle.payment_grace_period = Duration::from_secs(5 * 3600);
    s.lifecycle.dunning.retries = vec!["1h".into(), "2h".into()];
    let b = Daemon::start(s).await;
    let client = AdminClient::connect(&redis.url, "t").await.unwrap();
    assert!(client.request("ping", json!({})).await.unwrap().ok);
    b.stop().await;
}

/// Two daemons started at once on new data with different simulated start instants agree on
/// one clock (the first recorded wins): every order they create carries the same instant.
#[tokio::test]
async fn daemons_started_together_share_one_simulated_clock() {
    let redis = TestRedis::start().await;
    let mut later = settings(&redis.url, "t");
    later.clock.start = Some(at("2026-06-01T00:00:00Z"));
    let (a, b) = tokio::join!(
        Daemon::start(settings(&redis.url, "t")),
        Daemon::start(later)
    );
    wait_for_balance(&redis, "t", 2).await;
    let client = AdminClient::connect(&redis.url, "t").await.unwrap();
    let mut created = std::collections::BTreeSet::new();
    for i in 0..16 {
        let r = client
            .request(
                "createOrder",
                monthly(&format!("o{i}"), "OFFLINE", 3, "10.00"),
            )
            .await
            .unwrap();
        created.insert(
            r.result.unwrap()["createdDate"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(created.len(), 1, "one clock: {created:?}");
    a.stop().await;
    b.stop().await;
}

/// The trimEvents job runs on partition 0's owner and, announced, on every other daemon over
/// its own partitions: every partition's stream is trimmed, whoever owns it.
#[tokio::test]
async fn every_daemon_trims_the_streams_of_its_own_partitions() {
    let redis = TestRedis::start().await;
    let tweak = |mut s: recur::config::Settings| {
        s.events.max_len = 1;
        s.cron.trim_events = "0 0 * * * *".parse().unwrap();
        s
    };
    let a = Daemon::start(tweak(settings(&redis.url, "t"))).await;
    let b = Daemon::start(tweak(settings(&redis.url, "t"))).await;
    wait_for_balance(&redis, "t", 2).await;
    let client = AdminClient::connect(&redis.url, "t").await.unwrap();
    // Starts the cron schedule (a job counts from its first look).
    let r = client
        .request("advanceClock", json!({"to": "2026-01-01T00:00:01Z"}))
        .await
        .unwrap();
    assert!(r.ok, "{:?}", r.error);
    for i in 0..200 {
        let r = client
            .request(
                "createOrder",
                monthly(&format!("o{i}"), "OFFLINE", 3, "5.00"),
            )
            .await
            .unwrap();
        assert!(r.ok, "{:?}", r.error);
    }
    let mut conn = redis.conn().await;
    let lengths = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        async move {
            let mut out = Vec::new();
            for p in 0..recur::store::DEFAULT_PARTITIONS {
                let n: usize = redis::AsyncCommands::xlen(&mut conn, format!("t:{{p{p}}}:events"))
                    .await
                    .unwrap();
                out.push(n);
            }
            out
        }
    };
    assert!(lengths(&mut conn).await.iter().any(|n| *n > 1));
    let r = client
        .request("advanceClock", json!({"to": "2026-01-01T02:00:00Z"}))
        .await
        .unwrap();
    assert!(r.ok, "{:?}", r.error);
    let mut trimmed = false;
    for _ in 0..50 {
        if lengths(&mut conn).await.iter().all(|n| *n <= 1) {
            trimmed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(trimmed, "{:?}", lengths(&mut conn).await);
    a.stop().await;
    b.stop().await;
}
