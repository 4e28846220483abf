//! Restarts, crashes and passivation: stop or SIGKILL the daemon mid-work, start it again, and
//! find every order where an uninterrupted run puts it, with no event lost or written twice.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use futures_util::future::join_all;
use redis::AsyncCommands;
use serde_json::{json, Value};

use recur::admin::client::{AdminClient, RequestOptions};
use recur::metrics;

use crate::support::*;

/// A mixed book of orders: monthly and weekly, online and offline, trials, pauses.
pub(crate) async fn create_book(client: &AdminClient, n: usize) {
    for chunk in (0..n).collect::<Vec<_>>().chunks(200) {
        let creates = chunk.iter().map(|i| {
            let mut args = monthly(
                &format!("o{i:05}"),
                ["OFFLINE", "EXTERNAL", "ONLINE"][i % 3],
                6 + (i % 5) as u32,
                "7.50",
            );
            if i % 4 == 1 {
                args["pricing"]["subscription"]["cycleDuration"] =
                    json!({"count": 2, "unit": "WEEK"});
            }
            if i % 7 == 3 {
                args["freeTrialDays"] = json!(10);
            }
            args["customerId"] = json!(format!("c{}", i % 17));
            async move {
                let r = client.request("createOrder", args).await.unwrap();
                assert!(r.ok, "{:?}", r.error);
            }
        });
        join_all(creates).await;
    }
}

/// Every order's events by order id, in sequence order.
pub(crate) fn by_order(events: &[Value]) -> BTreeMap<String, Vec<Value>> {
    let mut m: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for e in events {
        m.entry(e["entityId"].as_str().unwrap().to_string())
            .or_default()
            .push(e.clone());
    }
    m
}

pub(crate) async fn stored_orders(redis: &TestRedis, prefix: &str) -> BTreeMap<String, Value> {
    let mut conn = redis.conn().await;
    let keys: Vec<String> = conn.keys(format!("{prefix}:{{p*}}:order:*")).await.unwrap();
    let mut out = BTreeMap::new();
    for k in keys {
        let json: String = conn.hget(&k, "d").await.unwrap();
        let v: Value = serde_json::from_str(&json).unwrap();
        out.insert(v["id"].as_str().unwrap().to_string(), v);
    }
    out
}

pub(crate) fn assert_no_duplicate_ids(events: &[Value]) {
    let mut seen = HashSet::new();
    for e in events {
        assert!(
            seen.insert(e["id"].as_str().unwrap().to_string()),
            "event {} written twice",
            e["id"]
        );
    }
}

/// What one uninterrupted daemon makes of a book: every order's events, the stored orders.
pub(crate) async fn reference_run(
    n: usize,
    steps: &[&str],
) -> (BTreeMap<String, Vec<Value>>, BTreeMap<String, Value>) {
    let h = Harness::start().await;
    create_book(&h.client, n).await;
    for to in steps {
        h.advance(to).await;
    }
    let events = h.events().await;
    (by_order(&events), stored_orders(&h.redis, "t").await)
}

/// How many events and how many changes a reference run made.
pub(crate) fn totals(events: &BTreeMap<String, Vec<Value>>) -> (usize, usize) {
    let all: Vec<Value> = events.values().flatten().cloned().collect();
    (all.len(), change_count(&all))
}

/// Sends advanceClock `to` once, with request id `id`, and returns once its burst has written
/// at least 100 change entries more than `created` (the moment to kill a daemon mid-burst).
pub(crate) async fn start_burst(
    client: &AdminClient,
    redis: &TestRedis,
    to: &str,
    id: &str,
    created: usize,
) {
    let mut request = client.new_request("advanceClock", json!({ "to": to }));
    request.id = id.into();
    client
        .send_raw(&serde_json::to_string(&request).unwrap())
        .await
        .unwrap();
    for _ in 0..20_000 {
        if stream_len(redis, "t").await > created + 100 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

#[tokio::test]
async fn a_restart_halfway_gives_the_same_event_stream_as_an_uninterrupted_run() {
    let steps = [
        "2026-04-10T12:00:00Z",
        "2026-09-01T00:00:00Z",
        "2027-02-01T00:00:00Z",
    ];
    let (expected_events, expected_orders) = reference_run(60, &steps).await;

    let mut h = Harness::start().await;
    create_book(&h.client, 60).await;
    h.advance(steps[0]).await;
    // Some commands between the advances, the same in both runs would change both alike;
    // here the restart itself is the only difference.
    h.restart().await;
    h.advance(steps[1]).await;
    h.restart().await;
    h.advance(steps[2]).await;
    let events = h.events().await;
    assert_no_duplicate_ids(&events);
    assert_eq!(by_order(&events), expected_events);
    assert_eq!(stored_orders(&h.redis, "t").await, expected_orders);
}

#[tokio::test]
async fn sigkill_during_a_burst_loses_nothing_and_repeats_nothing() {
    const N: usize = 3000;
    let to = "2026-02-20T00:00:00Z";
    let (expected_events, expected_orders) = reference_run(N, &[to]).await;
    let (expected_total, expected_changes) = totals(&expected_events);

    let redis = TestRedis::start().await;
    let daemon = ChildDaemon::start(&redis.url, "t", &[]).await;
    let client = AdminClient::connect(&redis.url, "t").await.unwrap();
    create_book(&client, N).await;
    let created = stream_len(&redis, "t").await;

    // Start the burst (every order has a cycle due in February), then kill it mid-way.
    let advance = RequestOptions {
        id: Some("advance-1".into()),
        ..RequestOptions::default()
    };
    start_burst(&client, &redis, to, "advance-1", created).await;
    daemon.kill().await;
    let after_kill = stream_len(&redis, "t").await;
    assert!(after_kill > created, "the burst had started");
    assert!(
        after_kill < expected_changes,
        "the kill came before the burst finished ({after_kill} of {expected_changes} changes)"
    );

    // Restart and retry the same advance id: it completes from where the crash left it.
    let daemon = ChildDaemon::start(&redis.url, "t", &[]).await;
    let reply = client
        .request_with(advance, "advanceClock", json!({ "to": to }))
        .await
        .unwrap();
    assert!(reply.ok, "{:?}", reply.error);

    let events = stream_events(&redis, "t").await;
    assert_no_duplicate_ids(&events);
    assert_eq!(events.len(), expected_total, "no event missing");
    assert_eq!(by_order(&events), expected_events);
    assert_eq!(stored_orders(&redis, "t").await, expected_orders);
    daemon.kill().await;
}

#[tokio::test]
async fn idle_actors_passivate_and_timers_still_fire() {
    let h = Harness::start_with(|s| s.actors.idle_passivation = Duration::from_millis(200)).await;
    for i in 0..20 {
        h.ok(
            "createOrder",
            monthly(&format!("o{i}"), "OFFLINE", 3, "5.00"),
        )
        .await;
    }
    let resident = |m: &Value| {
        (
            metrics::total(&m["metrics"], "recur_resident_actors") as u64,
            m["registryResident"].as_u64().unwrap(),
        )
    };
    // Every order got an actor (some may already have passivated on a loaded machine).
    let m = h.ok("getMetrics", json!({})).await;
    assert!(
        metrics::total(&m["metrics"], "recur_actor_activations_total") >= 20.0,
        "{m}"
    );
    assert!(resident(&m).0 <= 20, "{m}");
    let mut m = json!({});
    for _ in 0..100 {
        m = h.ok("getMetrics", json!({})).await;
        if resident(&m) == (0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(resident(&m), (0, 0), "idle actors passivated");
    let before = h.events().await.len();
    h.advance("2026-02-02T00:00:00Z").await;
    assert_eq!(
        h.events().await.len(),
        before + 40,
        "each order's cycle 2 fired"
    );
    let m = h.ok("getMetrics", json!({})).await;
    assert_eq!(resident(&m).1, 0, "timer-woken actors went back to sleep");
    assert!(metrics::total(&m["metrics"], "recur_actor_passivations_total") >= 40.0);
}

/// Scheduler lanes (and round sizes) change how the work is cut, never its outcome: one lane
/// with big rounds, sixteen lanes with rounds of one order, and five lanes with odd rounds end
/// with the same events per order, the same stored orders and the same customer figures.
#[tokio::test]
async fn lanes_and_round_sizes_change_nothing_but_speed() {
    let steps = ["2026-03-15T00:00:00Z", "2026-11-01T00:00:00Z"];
    let run = |lanes: usize, batch: usize| async move {
        let h = Harness::start_with(|s| {
            s.scheduler.lanes = lanes;
            s.scheduler.batch_size = batch;
        })
        .await;
        create_book(&h.client, 80).await;
        for to in steps {
            h.advance(to).await;
        }
        let events = h.events().await;
        assert_no_duplicate_ids(&events);
        let mut figures = Vec::new();
        for c in 0..17 {
            let stats = h
                .ok("getCustomerStats", json!({ "customerId": format!("c{c}") }))
                .await;
            figures.push(stats);
        }
        let clock = h.ok("getClock", json!({})).await;
        (
            by_order(&events),
            stored_orders(&h.redis, "t").await,
            figures,
            clock,
        )
    };
    let one_lane = run(1, 1024).await;
    assert_eq!(one_lane.3["now"], "2026-11-01T00:00:00.000Z");
    assert!(
        one_lane.0.values().map(Vec::len).sum::<usize>() > 80 * 4,
        "the book moves"
    );
    assert_eq!(run(16, 16).await, one_lane);
    assert_eq!(run(5, 7).await, one_lane);
}

/// Seeds an ONLINE order (paid once) and an OFFLINE one of customer c1, both bought at
/// `created` by a daemon on the system clock.
async fn seed_bought_pair(redis: &TestRedis, created: chrono::DateTime<chrono::Utc>) {
    use recur_bench::{monthly_args, seed, SeedOptions, SeedOrder};
    let options = SeedOptions {
        stats: true,
        ..SeedOptions::system()
    };
    seed(&redis.url, 2, &options, move |i| SeedOrder {
        id: ["online", "offline"][i].to_string(),
        args: monthly_args("c1", ["ONLINE", "OFFLINE"][i], 12),
        created,
        payment: (i == 0).then(|| "9.99".to_string()),
    })
    .await
    .unwrap();
}

/// A daemon on the system clock with a 2 s payment_restart_grace.
fn system_clock_settings(redis: &TestRedis) -> recur::config::Settings {
    let mut s = settings(&redis.url, recur_bench::PREFIX);
    s.clock.mode = recur::clock::ClockMode::System;
    s.clock.start = None;
    s.lifecycle.payment_restart_grace = Duration::from_secs(2);
    s
}

/// SPEC 7, system clock: a payment-grace cancellation that fell due while no daemon ran waits
/// for `payment_restart_grace` after start-up, also when the cycle whose payment was missed
/// started during the downtime; every other overdue change fires stamped with its own due time.
#[tokio::test]
async fn grace_missed_while_down_waits_payment_restart_grace_after_start_up() {
    use recur_bench::PREFIX;

    let redis = TestRedis::start().await;
    // Bought 40 days ago by a daemon on the system clock, which then stopped: cycle 2 of both
    // started about 9 days ago, and the ONLINE one's 72 h grace ran out about 6 days ago.
    let created = chrono::Utc::now() - chrono::Duration::days(40);
    let cycle2 = created.checked_add_months(chrono::Months::new(1)).unwrap();
    seed_bought_pair(&redis, created).await;

    let s = system_clock_settings(&redis);
    let started = chrono::Utc::now();
    let daemon = Daemon::start(s).await;
    let client = AdminClient::connect(&redis.url, PREFIX).await.unwrap();
    let get = |id: &'static str| {
        let client = &client;
        async move {
            let r = client
                .request("getOrder", json!({ "orderId": id }))
                .await
                .unwrap();
            assert!(r.ok, "{:?}", r.error);
            r.result.unwrap()
        }
    };
    let near = |t: &Value, expected: chrono::DateTime<chrono::Utc>| {
        let t = at(t.as_str().unwrap());
        (t - expected).num_milliseconds().abs() <= 1
    };

    // Caught up at start-up: cycle 2 started at its own instant, but no cancellation yet.
    let online = get("online").await;
    assert_eq!(online["status"], "ACTIVE", "{online}");
    assert_eq!(online["currentCycle"]["index"], 2);
    let offline = get("offline").await;
    assert_eq!(offline["currentCycle"]["index"], 2);
    let cycle_starts: Vec<Value> = stream_events(&redis, PREFIX)
        .await
        .into_iter()
        .filter(|e| e["type"] == "orderCycleStarted" && e["data"]["cycleNumber"] == 2)
        .collect();
    assert_eq!(cycle_starts.len(), 2);
    assert!(cycle_starts.iter().all(|e| near(&e["eventTime"], cycle2)));

    // Then, unpaid, it is canceled for non-payment once the restart grace has passed.
    let mut canceled = Value::Null;
    for _ in 0..100 {
        let o = get("online").await;
        if o["status"] == "CANCELED" {
            canceled = o;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        canceled["cancellation"]["cause"], "PAYMENT_FAILURE",
        "{canceled}"
    );
    let event = stream_events(&redis, PREFIX)
        .await
        .into_iter()
        .find(|e| e["type"] == "orderCanceled")
        .expect("an orderCanceled event");
    let at_time = at(event["eventTime"].as_str().unwrap());
    assert!(
        at_time >= started + chrono::Duration::seconds(2),
        "canceled at {at_time}, before start-up ({started}) + the restart grace"
    );
    assert_eq!(get("offline").await["status"], "ACTIVE");
    // And the customer's figures still equal a recomputation.
    let r = client
        .request("recomputeCustomerStats", json!({ "customerId": "c1" }))
        .await
        .unwrap();
    assert_eq!(r.result.unwrap()["differences"], json!([]));
    daemon.stop().await;
}

/// A dropped connection that the connection manager re-establishes is not the client's
/// problem: after Redis is SIGKILLed and comes back on the same socket, the very first attempt
/// of a command (no client retry) is answered, not INTERNAL "broken pipe".
#[tokio::test]
async fn the_first_command_after_redis_comes_back_succeeds() {
    let mut redis = TestRedis::start().await;
    // A restart shorter than the lease TTL (the AOF keeps the leases): the daemon keeps its
    // partitions and only its connections drop.
    let mut s = settings(&redis.url, "t");
    s.cluster.lease_ttl = Duration::from_secs(20);
    let daemon = Daemon::start(s).await;
    let client = AdminClient::connect(&redis.url, "t").await.unwrap();
    let r = client
        .request("createOrder", monthly("o1", "OFFLINE", 3, "10.00"))
        .await
        .unwrap();
    assert!(r.ok, "{:?}", r.error);

    redis.kill_and_restart(Duration::from_secs(2)).await;
    // A fresh client (the old one's reply subscription died with the server); wait until the
    // daemon listens again, then send each command exactly once and take its first reply.
    let client = AdminClient::connect(&redis.url, "t").await.unwrap();
    let mut listening = false;
    for _ in 0..100 {
        let ping = client.new_request("ping", json!({}));
        client
            .send_raw(&serde_json::to_string(&ping).unwrap())
            .await
            .unwrap();
        if client
            .wait_reply(Some(&ping.id), Duration::from_millis(200))
            .await
            .is_some()
        {
            listening = true;
            break;
        }
    }
    assert!(listening, "the daemon resubscribed to the admin channel");
    // Leases renewed less than a second before the kill may not be in the AOF (everysec): the
    // daemon then re-acquires them at its next renewal. Commands go once it holds them all.
    let mut conn = redis.conn().await;
    for _ in 0..100 {
        let mut held = 0;
        for p in 0..recur::store::DEFAULT_PARTITIONS {
            let exists: bool = conn.exists(format!("t:{{p{p}}}:lease")).await.unwrap();
            held += usize::from(exists);
        }
        if held == usize::from(recur::store::DEFAULT_PARTITIONS) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for (command, args) in [
        ("advanceClock", json!({"to": "2026-02-01T00:00:00Z"})),
        ("getOrder", json!({"orderId": "o1"})),
        ("pauseOrder", json!({"orderId": "o1"})),
    ] {
        let request = client.new_request(command, args);
        client
            .send_raw(&serde_json::to_string(&request).unwrap())
            .await
            .unwrap();
        let reply = client
            .wait_reply(Some(&request.id), Duration::from_secs(10))
            .await
            .unwrap_or_else(|| panic!("{command}: no reply"));
        assert!(reply.ok, "{command}: {:?}", reply.error);
    }
    // The advance fired cycle 2 exactly once, and the order went on from the AOF.
    let order = client
        .request("getOrder", json!({"orderId": "o1"}))
        .await
        .unwrap()
        .result
        .unwrap();
    assert_eq!(order["currentCycle"]["index"], 2, "{order}");
    assert_eq!(order["status"], "PAUSED");
    daemon.stop().await;
}

/// A partition whose lease lapsed `unowned_for` ago (its daemon died) is taken over by a daemon
/// on the system clock; returns when the ONLINE order's unpaid cycle 2 was canceled, and the
/// instant the ghost leases ran out.
async fn takeover_cancellation(
    unowned_for: chrono::Duration,
) -> (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) {
    use recur_bench::PREFIX;

    let redis = TestRedis::start().await;
    let created = chrono::Utc::now() - chrono::Duration::days(40);
    seed_bought_pair(&redis, created).await;
    // A daemon that died: its leases run out 1.5 s from now, and it last renewed them
    // `unowned_for` before that.
    let mut conn = redis.conn().await;
    let lapse = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let held_until = (lapse - unowned_for).timestamp_millis();
    for p in 0..recur::store::DEFAULT_PARTITIONS {
        let _: () = redis::cmd("SET")
            .arg(format!("{PREFIX}:{{p{p}}}:lease"))
            .arg("ghost:1")
            .arg("PX")
            .arg(1500)
            .query_async(&mut conn)
            .await
            .unwrap();
        let _: () = conn
            .set(format!("{PREFIX}:{{p{p}}}:heldUntil"), held_until)
            .await
            .unwrap();
    }
    let s = system_clock_settings(&redis);
    let daemon = Daemon::start(s).await;
    let mut canceled = None;
    for _ in 0..150 {
        let events = stream_events(&redis, PREFIX).await;
        if let Some(e) = events.iter().find(|e| e["type"] == "orderCanceled") {
            canceled = Some(at(e["eventTime"].as_str().unwrap()));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.stop().await;
    (canceled.expect("the unpaid order is canceled"), lapse)
}

#[tokio::test]
async fn grace_missed_while_a_partition_had_no_owner_waits_the_restart_grace_after_takeover() {
    // Ownerless for a minute (longer than the lease TTL + one renewal): the grace that ran out
    // meanwhile gets payment_restart_grace more, counted from the takeover.
    let (canceled, lapse) = takeover_cancellation(chrono::Duration::seconds(60)).await;
    assert!(
        canceled >= lapse + chrono::Duration::seconds(2),
        "canceled at {canceled}, before the takeover ({lapse}) + the restart grace"
    );
}

#[tokio::test]
async fn grace_missed_by_a_prompt_takeover_is_not_deferred() {
    // Taken over as soon as the lease ran out: the expired grace is applied at once, stamped
    // with its own deadline (days ago).
    let (canceled, lapse) = takeover_cancellation(chrono::Duration::zero()).await;
    assert!(
        canceled < lapse - chrono::Duration::days(1),
        "canceled at {canceled}: deferred although the partition was taken over at once"
    );
}
