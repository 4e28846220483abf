//! Test clocks (SPEC 11.5): clocks of their own beside the daemon's, whose orders fire only
//! when their clock advances, exactly as the same orders do on the daemon's simulated clock.

use std::time::Duration;

use redis::AsyncCommands;
use serde_json::{json, Value};

use recur::admin::client::{AdminClient, RequestOptions};
use recur::clock::ClockMode;

use crate::support::*;

const YEAR_LATER: &str = "2027-01-01T00:00:00Z";

/// A varied order: the kind, cycle length, trial and cycle count vary with `i`.
fn varied(order_id: &str, customer: &str, i: usize) -> Value {
    let kind = ["ONLINE", "OFFLINE", "EXTERNAL"][i % 3];
    let unit = ["WEEK", "MONTH", "MONTH", "YEAR"][i % 4];
    let mut args = monthly(order_id, kind, (i % 5) as u32, "12.50");
    args["customerId"] = json!(customer);
    args["pricing"]["subscription"]["cycleDuration"] = json!({"count": 1 + i % 2, "unit": unit});
    if i % 4 == 1 {
        args["freeTrialDays"] = json!(7);
    }
    args
}

/// One order's events as (type, eventTime, sequence, data): what must match between a test
/// clock's order and its twin on the daemon's clock.
fn history(events: &[Value], order_id: &str) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e["entityId"] == order_id)
        .map(|e| json!([e["type"], e["eventTime"], e["sequence"], e["data"]]))
        .collect()
}

async fn redis_keys(h: &Harness, pattern: &str) -> Vec<String> {
    let mut conn = h.redis.conn().await;
    let mut keys: Vec<String> = conn.keys(pattern).await.unwrap();
    keys.sort();
    keys
}

#[tokio::test]
async fn a_year_on_a_test_clock_is_the_year_the_daemon_s_clock_gives_the_same_orders() {
    let h = Harness::start().await;
    let clock = h
        .ok(
            "createTestClock",
            json!({"testClockId": "qa", "frozenTime": START, "name": "QA year"}),
        )
        .await;
    assert_eq!(clock["status"], "READY");
    assert_eq!(clock["frozenTime"], "2026-01-01T00:00:00.000Z");
    assert_eq!(clock["name"], "QA year");
    let n = 12;
    for i in 0..n {
        let mut on_clock = varied(&format!("t{i}"), &format!("tc-{i}"), i);
        on_clock["testClockId"] = json!("qa");
        let order = h.ok("createOrder", on_clock).await;
        assert_eq!(order["testClockId"], "qa");
        h.ok(
            "createOrder",
            varied(&format!("l{i}"), &format!("lc-{i}"), i),
        )
        .await;
    }
    // Commands half-way see each clock's own time.
    let mid = "2026-03-10T00:00:00Z";
    h.ok("advanceTestClock", json!({"testClockId": "qa", "to": mid}))
        .await;
    h.advance(mid).await;
    for (i, prefix) in (0..n).flat_map(|i| [(i, "t"), (i, "l")]) {
        let id = format!("{prefix}{i}");
        let command = match i % 3 {
            0 => json!({"orderId": id, "paymentId": "p1", "amount": "12.50"}),
            1 => json!({"orderId": id, "resumeAt": "2026-05-01T00:00:00Z"}),
            _ => json!({"orderId": id, "effectiveAt": "NEXT_PAYMENT_DATE"}),
        };
        let name = ["recordPayment", "pauseOrder", "cancelOrder"][i % 3];
        h.reply(name, command).await;
    }
    let advanced = h
        .ok(
            "advanceTestClock",
            json!({"testClockId": "qa", "to": YEAR_LATER}),
        )
        .await;
    assert_eq!(advanced["frozenTime"], "2027-01-01T00:00:00.000Z");
    assert_eq!(advanced["status"], "READY");
    h.advance(YEAR_LATER).await;

    let events = h.events().await;
    for i in 0..n {
        let on_clock = history(&events, &format!("t{i}"));
        let live = history(&events, &format!("l{i}"));
        assert!(on_clock.len() > 2, "order t{i} lived: {on_clock:?}");
        assert_eq!(
            on_clock, live,
            "order {i}: the test clock's year is the live one"
        );
    }
    // Every change of a test clock's order says so at its top level; no live one does.
    let changes = h.changes().await;
    for c in &changes {
        let on_clock = c["orderId"].as_str().unwrap().starts_with('t');
        assert_eq!(c.get("testClockId").is_some(), on_clock, "{c}");
        if on_clock {
            assert_eq!(c["testClockId"], "qa");
            assert_eq!(c["entity"]["testClockId"], "qa");
        }
    }
    // Statistics are the same too.
    for i in 0..n {
        let mut a = h
            .ok("getCustomerStats", json!({"customerId": format!("tc-{i}")}))
            .await;
        let mut b = h
            .ok("getCustomerStats", json!({"customerId": format!("lc-{i}")}))
            .await;
        a["customerId"] = Value::Null;
        b["customerId"] = Value::Null;
        assert_eq!(a, b, "customer {i}");
    }
    // A command on a test clock's order sees the clock's time.
    let got = h.ok("getOrder", json!({"orderId": "t0"})).await;
    assert_eq!(got["testClockId"], "qa");
    let clock = h.ok("getTestClock", json!({"testClockId": "qa"})).await;
    assert_eq!(clock["frozenTime"], "2027-01-01T00:00:00.000Z");
    // listOrders and forecast show the clock's orders only when asked.
    let listed = h.list_pages(100).await;
    assert!(listed.iter().all(|id| id.starts_with('l')), "{listed:?}");
    let on_clock = h
        .ok("listOrders", json!({"testClockId": "qa", "limit": 100}))
        .await;
    let ids: Vec<&str> = on_clock["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert!(!ids.is_empty() && ids.iter().all(|id| id.starts_with('t')));
    let of_customer = h.ok("listOrders", json!({"customerId": "tc-0"})).await;
    assert_eq!(of_customer["orders"], json!([]), "not without testClockId");
    let range = json!({"from": "2027-01-01T00:00:00Z", "to": "2027-12-31T00:00:00Z"});
    let mut with_clock = range.clone();
    with_clock["testClockId"] = json!("qa");
    assert_eq!(
        h.ok("forecast", with_clock).await,
        h.ok("forecast", range).await,
        "the same orders from the same time forecast the same"
    );
}

#[tokio::test]
async fn two_clocks_and_the_daemon_s_clock_advance_side_by_side_each_with_its_own_time() {
    let h = Harness::start().await;
    h.ok(
        "createTestClock",
        json!({"testClockId": "a", "frozenTime": "2030-01-01T00:00:00Z"}),
    )
    .await;
    h.ok(
        "createTestClock",
        json!({"testClockId": "b", "frozenTime": "2040-01-01T00:00:00Z"}),
    )
    .await;
    let n = 40;
    for i in 0..n {
        for (clock, prefix) in [(Some("a"), "a"), (Some("b"), "b"), (None, "l")] {
            let mut args = monthly(&format!("{prefix}{i}"), "OFFLINE", 0, "5.00");
            args["customerId"] = json!(format!("{prefix}-c{i}"));
            args["pricing"]["subscription"]["cycleDuration"] = json!({"count": 1, "unit": "DAY"});
            if let Some(clock) = clock {
                args["testClockId"] = json!(clock);
            }
            h.ok("createOrder", args).await;
        }
    }
    let client = &h.client;
    let long = RequestOptions {
        total_timeout: Duration::from_secs(120),
        ..RequestOptions::default()
    };
    let advance = |command: &'static str, args: Value| {
        let options = long.clone();
        async move { client.request_with(options, command, args).await.unwrap() }
    };
    let (ra, rb, rl) = tokio::join!(
        advance(
            "advanceTestClock",
            json!({"testClockId": "a", "to": "2030-07-01T00:00:00Z"})
        ),
        advance(
            "advanceTestClock",
            json!({"testClockId": "b", "to": "2040-04-01T00:00:00Z"})
        ),
        advance("advanceClock", json!({"to": "2026-03-01T00:00:00Z"})),
    );
    for r in [&ra, &rb, &rl] {
        assert!(r.ok, "{:?}", r.error);
    }
    let events = h.events().await;
    for e in &events {
        let t = e["eventTime"].as_str().unwrap();
        let id = e["entityId"].as_str().unwrap();
        let (from, to) = match &id[..1] {
            "a" => ("2030-01-01", "2030-07-01T00:00:00.000Z"),
            "b" => ("2040-01-01", "2040-04-01T00:00:00.000Z"),
            _ => ("2026-01-01", "2026-03-01T00:00:00.000Z"),
        };
        assert!(
            t >= from && t <= to,
            "{id}'s event at {t} is not on its own clock"
        );
    }
    // Each clock fired every day of its span: 181, 91 and 59 daily cycles after the first.
    let count = |prefix: &str| {
        events
            .iter()
            .filter(|e| {
                e["type"] == "orderCycleStarted"
                    && e["entityId"].as_str().unwrap().starts_with(prefix)
            })
            .count()
    };
    assert_eq!(count("a"), n * (181 + 1));
    assert_eq!(count("b"), n * (91 + 1));
    assert_eq!(count("l"), n * (59 + 1));
    let clocks = h.ok("listTestClocks", json!({})).await;
    let listed: Vec<(&str, &str)> = clocks["testClocks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            (
                c["testClockId"].as_str().unwrap(),
                c["frozenTime"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed.len(), 2);
    assert!(listed.contains(&("a", "2030-07-01T00:00:00.000Z")));
    assert!(listed.contains(&("b", "2040-04-01T00:00:00.000Z")));
    let now = h.ok("getClock", json!({})).await;
    assert_eq!(now["now"], "2026-03-01T00:00:00.000Z");
}

#[tokio::test]
async fn customers_belong_to_one_clock_and_bad_requests_are_refused() {
    let h = Harness::start().await;
    h.ok(
        "createTestClock",
        json!({"testClockId": "x", "frozenTime": START}),
    )
    .await;
    h.ok(
        "createTestClock",
        json!({"testClockId": "y", "frozenTime": START}),
    )
    .await;
    let order = |id: &str, customer: &str, clock: Option<&str>| {
        let mut args = monthly(id, "OFFLINE", 3, "5.00");
        args["customerId"] = json!(customer);
        if let Some(c) = clock {
            args["testClockId"] = json!(c);
        }
        args
    };
    h.ok("createOrder", order("o1", "cx", Some("x"))).await;
    h.ok("createOrder", order("o2", "cx", Some("x"))).await;
    h.ok("createOrder", order("o3", "live", None)).await;
    let code = |e: recur::wire::ReplyError| e.code.as_str().to_string();
    // Another clock, no clock, or a test clock for a customer with live orders.
    assert_eq!(
        code(h.err("createOrder", order("o4", "cx", Some("y"))).await),
        "INVALID_STATE"
    );
    assert_eq!(
        code(h.err("createOrder", order("o5", "cx", None)).await),
        "INVALID_STATE"
    );
    assert_eq!(
        code(h.err("createOrder", order("o6", "live", Some("x"))).await),
        "INVALID_STATE"
    );
    // Unknown clocks, an advance backwards, a second clock with the same id.
    assert_eq!(
        code(h.err("createOrder", order("o7", "new", Some("nope"))).await),
        "NOT_FOUND"
    );
    for (command, args) in [
        ("getTestClock", json!({"testClockId": "nope"})),
        ("deleteTestClock", json!({"testClockId": "nope"})),
        (
            "advanceTestClock",
            json!({"testClockId": "nope", "to": YEAR_LATER}),
        ),
    ] {
        assert_eq!(code(h.err(command, args).await), "NOT_FOUND", "{command}");
    }
    assert_eq!(
        code(
            h.err(
                "advanceTestClock",
                json!({"testClockId": "x", "to": "2025-12-31T00:00:00Z"})
            )
            .await
        ),
        "INVALID_REQUEST"
    );
    assert_eq!(
        code(
            h.err(
                "createTestClock",
                json!({"testClockId": "x", "frozenTime": START})
            )
            .await
        ),
        "CONFLICT"
    );
    assert_eq!(
        code(
            h.err("createTestClock", json!({"frozenTime": "soon"}))
                .await
        ),
        "INVALID_REQUEST"
    );
    // A clock made without an id gets one, the same for a retried request id.
    let a = h
        .reply_with_id("mk-1", "createTestClock", json!({"frozenTime": START}))
        .await;
    let b = h
        .reply_with_id("mk-1", "createTestClock", json!({"frozenTime": START}))
        .await;
    assert!(a.ok && b.ok);
    assert_eq!(a.result, b.result);
    // The order kept its clock; the live one is untouched by the refusals.
    assert_eq!(
        h.ok("getOrder", json!({"orderId": "o2"})).await["testClockId"],
        "x"
    );
    assert!(h
        .ok("getOrder", json!({"orderId": "o3"}))
        .await
        .get("testClockId")
        .is_none());
}

#[tokio::test]
async fn deleting_a_clock_deletes_its_orders_and_customers() {
    let h = Harness::start().await;
    h.ok(
        "createTestClock",
        json!({"testClockId": "gone", "frozenTime": START}),
    )
    .await;
    for i in 0..10 {
        let mut args = monthly(&format!("g{i}"), "OFFLINE", 3, "5.00");
        args["customerId"] = json!(format!("gc-{}", i % 4));
        args["testClockId"] = json!("gone");
        args["paid"] = json!(true);
        h.ok("createOrder", args).await;
    }
    h.ok("createOrder", monthly("keep", "OFFLINE", 3, "5.00"))
        .await;
    h.ok(
        "advanceTestClock",
        json!({"testClockId": "gone", "to": "2026-02-15T00:00:00Z"}),
    )
    .await;
    let stats = h
        .ok("getCustomerStats", json!({"customerId": "gc-0"}))
        .await;
    assert_eq!(stats["ordersCount"], 3, "{stats}");

    let deleted = h
        .ok("deleteTestClock", json!({"testClockId": "gone"}))
        .await;
    assert_eq!(
        deleted,
        json!({"testClockId": "gone", "deletedOrders": 10, "deletedCustomers": 4})
    );
    let events = h.events().await;
    for i in 0..10 {
        let last = events
            .iter()
            .rfind(|e| e["entityId"] == format!("g{i}"))
            .unwrap();
        assert_eq!(last["type"], "orderDeleted");
        assert_eq!(last["eventTime"], "2026-02-15T00:00:00.000Z");
    }
    assert_eq!(
        h.err("getTestClock", json!({"testClockId": "gone"}))
            .await
            .code
            .as_str(),
        "NOT_FOUND"
    );
    assert_eq!(
        h.err("getOrder", json!({"orderId": "g1"}))
            .await
            .code
            .as_str(),
        "NOT_FOUND"
    );
    let prefix = &h.settings.prefix;
    assert_eq!(
        redis_keys(&h, &format!("{prefix}:*:tc:gone*")).await,
        Vec::<String>::new()
    );
    assert_eq!(
        redis_keys(&h, &format!("{prefix}:*:customer:gc-*")).await,
        Vec::<String>::new(),
        "the customers' statistics are gone"
    );
    let stats = h
        .ok("getCustomerStats", json!({"customerId": "gc-0"}))
        .await;
    assert_eq!(stats["ordersCount"], 0, "{stats}");
    // The customers are free again; the live order is untouched.
    h.ok("createOrder", {
        let mut a = monthly("again", "OFFLINE", 3, "5.00");
        a["customerId"] = json!("gc-0");
        a
    })
    .await;
    assert_eq!(
        h.ok("getOrder", json!({"orderId": "keep"})).await["version"],
        1
    );
    assert_eq!(
        h.ok("listTestClocks", json!({})).await["testClocks"],
        json!([])
    );
}

#[tokio::test]
async fn test_clocks_advance_with_the_daemon_on_the_system_clock() {
    let h = Harness::start_with(|s| {
        s.clock.mode = ClockMode::System;
        s.clock.start = None;
    })
    .await;
    h.ok(
        "createTestClock",
        json!({"testClockId": "sys", "frozenTime": "2020-01-01T00:00:00Z"}),
    )
    .await;
    let mut args = monthly("s1", "OFFLINE", 0, "5.00");
    args["customerId"] = json!("sc");
    args["testClockId"] = json!("sys");
    let created = h.ok("createOrder", args).await;
    assert_eq!(created["createdDate"], "2020-01-01T00:00:00.000Z");
    // A live order whose start comes due during the advance, on the system clock.
    let due = chrono::Utc::now() + chrono::Duration::milliseconds(300);
    let due = recur::domain::time::format_instant(&recur::clock::truncate_to_millis(due));
    let mut live = monthly("live1", "OFFLINE", 3, "5.00");
    live["customerId"] = json!("lc");
    live["paid"] = json!(true);
    live["startDate"] = json!(due);
    h.ok("createOrder", live).await;
    h.ok(
        "advanceTestClock",
        json!({"testClockId": "sys", "to": "2021-01-01T00:00:00Z"}),
    )
    .await;
    let mut started = Vec::new();
    for _ in 0..100 {
        started = h.timeline("live1").await;
        if started.iter().any(|(_, at)| *at == due) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        started.iter().any(|(_, at)| *at == due),
        "the live order started at its own due instant: {started:?}"
    );
    assert!(
        started.iter().all(|(_, at)| at.as_str() > "2026"),
        "nothing stamped with the test clock's time: {started:?}"
    );
    let t = h.timeline("s1").await;
    let cycles = t.iter().filter(|(ty, _)| ty == "orderCycleStarted").count();
    assert_eq!(cycles, 13, "{t:?}");
    assert!(t
        .iter()
        .all(|(_, at)| at.as_str() <= "2021-01-01T00:00:00.000Z"));
    // The system clock's live timers are not the test clock's: only live1 is in the live sets.
    let prefix = &h.settings.prefix;
    let mut conn = h.redis.conn().await;
    let mut live = 0;
    for key in redis_keys(&h, &format!("{prefix}:*:timers")).await {
        let n: usize = conn.zcard(&key).await.unwrap();
        if !key.contains(":tc:") {
            live += n;
        }
    }
    assert_eq!(live, 1);
    assert_eq!(
        h.err("advanceClock", json!({"to": "2099-01-01T00:00:00Z"}))
            .await
            .code
            .as_str(),
        "CLOCK_NOT_SIMULATED"
    );
}

#[tokio::test]
async fn three_daemons_fire_their_partitions_of_a_clock_and_agree_with_the_daemon_s_clock() {
    let mut h = Harness::start().await;
    let second = Daemon::start(h.settings.clone()).await;
    let third = Daemon::start(h.settings.clone()).await;
    // Wait until the three share the partitions.
    let mut spread = false;
    for _ in 0..100 {
        let m = h.ok("getMetrics", json!({})).await;
        if m["liveDaemons"].as_array().unwrap().len() == 3
            && m["partitionsOwned"].as_u64().unwrap() <= 22
        {
            spread = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(spread, "three daemons share the partitions");
    h.ok(
        "createTestClock",
        json!({"testClockId": "three", "frozenTime": START}),
    )
    .await;
    let n = 30;
    for i in 0..n {
        let mut on_clock = varied(&format!("t{i}"), &format!("tc-{i}"), i);
        on_clock["testClockId"] = json!("three");
        h.ok("createOrder", on_clock).await;
        h.ok(
            "createOrder",
            varied(&format!("l{i}"), &format!("lc-{i}"), i),
        )
        .await;
    }
    h.ok(
        "advanceTestClock",
        json!({"testClockId": "three", "to": YEAR_LATER}),
    )
    .await;
    h.advance(YEAR_LATER).await;
    let events = h.events().await;
    let mut fired = 0;
    for i in 0..n {
        let on_clock = history(&events, &format!("t{i}"));
        fired += on_clock.len() - 1;
        assert_eq!(on_clock, history(&events, &format!("l{i}")), "order {i}");
    }
    assert!(
        fired > 100,
        "the year fired on every daemon ({fired} events)"
    );
    second.stop().await;
    third.stop().await;
    h.stop().await;
}

#[tokio::test]
async fn a_sigkill_mid_advance_is_finished_by_the_retried_request_id() {
    let redis = TestRedis::start().await;
    let first = ChildDaemon::start(&redis.url, "t", &[]).await;
    let second = ChildDaemon::start(&redis.url, "t", &[]).await;
    let client = AdminClient::connect(&redis.url, "t").await.unwrap();
    let ok = |r: recur::wire::Reply| {
        assert!(r.ok, "{:?}", r.error);
        r.result.unwrap()
    };
    ok(client
        .request(
            "createTestClock",
            json!({"testClockId": "k", "frozenTime": START}),
        )
        .await
        .unwrap());
    let n = 80;
    for i in 0..n {
        let mut args = monthly(&format!("k{i}"), "OFFLINE", 0, "5.00");
        args["customerId"] = json!(format!("kc-{i}"));
        args["pricing"]["subscription"]["cycleDuration"] = json!({"count": 1, "unit": "DAY"});
        args["testClockId"] = json!("k");
        ok(client.request("createOrder", args).await.unwrap());
    }
    let created = stream_len(&redis, "t").await;
    // A year of daily cycles: 365 changes per order, killed a moment after the start.
    let to = YEAR_LATER;
    let options = RequestOptions {
        id: Some("adv-k".into()),
        total_timeout: Duration::from_secs(300),
        ..RequestOptions::default()
    };
    let waiting = {
        let client = AdminClient::connect(&redis.url, "t").await.unwrap();
        let options = options.clone();
        tokio::spawn(async move {
            client
                .request_with(
                    options,
                    "advanceTestClock",
                    json!({"testClockId": "k", "to": to}),
                )
                .await
        })
    };
    let mut started = false;
    for _ in 0..400 {
        if stream_len(&redis, "t").await > created + 500 {
            started = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(started, "the advance started");
    first.kill().await;
    let at_kill = stream_len(&redis, "t").await;
    let expected = created + n * 365;
    assert!(
        at_kill < expected,
        "killed mid-way ({at_kill} of {expected})"
    );
    // The same id, again (the first attempt may have been answered UNAVAILABLE by then).
    let _ = waiting.await;
    let third = ChildDaemon::start(&redis.url, "t", &[]).await;
    let mut reply = None;
    for _ in 0..10 {
        let r = client
            .request_with(
                options.clone(),
                "advanceTestClock",
                json!({"testClockId": "k", "to": to}),
            )
            .await
            .unwrap();
        if r.ok {
            reply = Some(r);
            break;
        }
        assert_eq!(
            r.error.as_ref().unwrap().code.as_str(),
            "UNAVAILABLE",
            "{:?}",
            r.error
        );
    }
    let reply = reply.expect("the retried advance completed");
    assert_eq!(
        reply.result.unwrap()["frozenTime"],
        "2027-01-01T00:00:00.000Z"
    );
    let events = stream_events(&redis, "t").await;
    let mut ids: Vec<&str> = events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), events.len(), "no event twice");
    for i in [0, n / 2, n - 1] {
        let cycles = events
            .iter()
            .filter(|e| e["entityId"] == format!("k{i}") && e["type"] == "orderCycleStarted")
            .count();
        assert_eq!(cycles, 366, "k{i} fired every day once");
    }
    second.kill().await;
    third.kill().await;
}

#[tokio::test]
async fn on_a_redis_cluster_a_clock_advances_and_is_deleted() {
    let h = Harness::start_on_cluster(|_| {}).await;
    h.ok(
        "createTestClock",
        json!({"testClockId": "cl", "frozenTime": START}),
    )
    .await;
    let n = 16;
    for i in 0..n {
        let mut on_clock = varied(&format!("t{i}"), &format!("tc-{i}"), i);
        on_clock["testClockId"] = json!("cl");
        h.ok("createOrder", on_clock).await;
        h.ok(
            "createOrder",
            varied(&format!("l{i}"), &format!("lc-{i}"), i),
        )
        .await;
    }
    // A preview of a test clock's order starts from the clock's time, like its twin's.
    let until = "2026-06-01T00:00:00Z";
    let preview = |id: &str| json!({"orderId": id, "until": until});
    assert_eq!(
        h.ok("previewOrder", preview("t1")).await["events"],
        h.ok("previewOrder", preview("l1")).await["events"]
    );
    h.ok(
        "advanceTestClock",
        json!({"testClockId": "cl", "to": YEAR_LATER}),
    )
    .await;
    h.advance(YEAR_LATER).await;
    let events = h.events().await;
    let mut fired = 0;
    for i in 0..n {
        let on_clock = history(&events, &format!("t{i}"));
        fired += on_clock.len() - 1;
        assert_eq!(on_clock, history(&events, &format!("l{i}")), "order {i}");
    }
    assert!(fired > 50, "{fired}");
    let deleted = h.ok("deleteTestClock", json!({"testClockId": "cl"})).await;
    assert_eq!(deleted["deletedOrders"], n);
    assert_eq!(deleted["deletedCustomers"], n);
    assert_eq!(
        h.err("getOrder", json!({"orderId": "t3"}))
            .await
            .code
            .as_str(),
        "NOT_FOUND"
    );
}

#[tokio::test]
async fn a_test_clock_s_orders_never_wait_for_an_advance_of_the_daemon_s_clock() {
    let h = Harness::start().await;
    h.ok(
        "createTestClock",
        json!({"testClockId": "free", "frozenTime": START}),
    )
    .await;
    let mut args = monthly("t1", "OFFLINE", 0, "5.00");
    args["customerId"] = json!("tc1");
    args["testClockId"] = json!("free");
    h.ok("createOrder", args).await;
    // A long advance of the daemon's clock: daily cycles of many live orders over a year.
    for i in 0..150 {
        let mut args = monthly(&format!("l{i}"), "OFFLINE", 0, "5.00");
        args["customerId"] = json!(format!("lc{i}"));
        args["pricing"]["subscription"]["cycleDuration"] = json!({"count": 1, "unit": "DAY"});
        h.ok("createOrder", args).await;
    }
    let client = AdminClient::connect_to(&h.redis.address(), &h.settings.prefix)
        .await
        .unwrap();
    let live = tokio::spawn(async move {
        let options = RequestOptions {
            total_timeout: Duration::from_secs(300),
            ..RequestOptions::default()
        };
        client
            .request_with(options, "advanceClock", json!({"to": YEAR_LATER}))
            .await
            .unwrap()
    });
    let mut running = false;
    for _ in 0..200 {
        if h.ok("getClock", json!({})).await.get("advance").is_some() {
            running = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(running, "the daemon's clock is advancing");
    // Meanwhile the test clock's order takes commands and its clock advances.
    let paused = h
        .ok(
            "pauseOrder",
            json!({"orderId": "t1", "resumeAt": "2026-03-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(paused["status"], "PAUSED");
    h.ok(
        "advanceTestClock",
        json!({"testClockId": "free", "to": "2026-06-01T00:00:00Z"}),
    )
    .await;
    assert_eq!(
        h.ok("getOrder", json!({"orderId": "t1"})).await["status"],
        "ACTIVE"
    );
    assert!(
        h.ok("getClock", json!({})).await.get("advance").is_some(),
        "all of it while the daemon's clock was still advancing"
    );
    let done = live.await.unwrap();
    assert!(done.ok, "{:?}", done.error);
}
