//! Malformed and hostile admin messages: each gets the right error code and changes nothing,
//! and the daemon keeps running.

use std::time::Duration;

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn malformed_and_hostile_requests_get_clear_errors_and_change_nothing() {
    let h = Harness::start().await;
    h.ok("createOrder", monthly("o1", "ONLINE", 12, "10.00"))
        .await;
    let before = h.snapshot().await;
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "unknown command",
            json!({"command": "launchRockets", "args": {}}),
            "UNKNOWN_COMMAND",
        ),
        (
            "unknown order",
            json!({"command": "pauseOrder", "args": {"orderId": "nope"}}),
            "NOT_FOUND",
        ),
        (
            "missing args",
            json!({"command": "pauseOrder", "args": {}}),
            "INVALID_REQUEST",
        ),
        (
            "args not an object",
            json!({"command": "pauseOrder", "args": [1, 2]}),
            "INVALID_REQUEST",
        ),
        (
            "wrong type",
            json!({"command": "recordPayment", "args": {"orderId": "o1", "paymentId": 7, "amount": "1.00"}}),
            "INVALID_REQUEST",
        ),
        (
            "float money",
            json!({"command": "recordPayment", "args": {"orderId": "o1", "paymentId": "p", "amount": 1.5}}),
            "INVALID_REQUEST",
        ),
        (
            "unknown arg",
            json!({"command": "pauseOrder", "args": {"orderId": "o1", "force": true}}),
            "INVALID_REQUEST",
        ),
        (
            "injection id",
            json!({"command": "getOrder", "args": {"orderId": "o1\r\nFLUSHALL\r\n"}}),
            "INVALID_REQUEST",
        ),
        (
            "hash tag id",
            json!({"command": "getOrder", "args": {"orderId": "{p1}:x"}}),
            "INVALID_REQUEST",
        ),
        (
            "lua-looking id",
            json!({"command": "getOrder", "args": {"orderId": "');redis.call('flushall"}}),
            "INVALID_REQUEST",
        ),
        (
            "huge id",
            json!({"command": "getOrder", "args": {"orderId": "x".repeat(10_000)}}),
            "INVALID_REQUEST",
        ),
        (
            "bad date",
            json!({"command": "postponeEndDate", "args": {"orderId": "o1", "endDate": "soon"}}),
            "INVALID_REQUEST",
        ),
        (
            "state refusal",
            json!({"command": "resumeOrder", "args": {"orderId": "o1"}}),
            "INVALID_STATE",
        ),
        (
            "advance backwards",
            json!({"command": "advanceClock", "args": {"to": "2020-01-01T00:00:00Z"}}),
            "INVALID_REQUEST",
        ),
        (
            "negative limit",
            json!({"command": "listOrders", "args": {"limit": -1}}),
            "INVALID_REQUEST",
        ),
        (
            "create with gaps",
            json!({"command": "createOrder", "args": {
                "customerId": "c1", "plan": {"id": "p", "name": "P"}, "type": "ONLINE", "currency": "USD",
                "pricing": {"subscription": {"cycleDuration": {"count": 1, "unit": "MONTH"}, "cycleCount": 5}},
                "prices": [{"cycleFrom": 1, "numberOfCycles": 1, "amount": "1"}, {"cycleFrom": 3, "amount": "2"}]}}),
            "INVALID_REQUEST",
        ),
    ];
    for (i, (what, body, code)) in cases.into_iter().enumerate() {
        let mut req = body.clone();
        req["id"] = json!(format!("bad-{i}"));
        req["replyTo"] = json!(h.client.reply_channel());
        h.client.send_raw(&req.to_string()).await.unwrap();
        let reply = h
            .client
            .wait_reply(Some(&format!("bad-{i}")), Duration::from_secs(10))
            .await;
        let reply = reply.unwrap_or_else(|| panic!("{what}: no reply"));
        assert!(!reply.ok, "{what}");
        assert_eq!(
            reply.error.as_ref().unwrap().code.as_str(),
            code,
            "{what}: {:?}",
            reply.error
        );
        assert!(!reply.error.unwrap().message.is_empty());
    }
    assert_eq!(h.snapshot().await, before, "refusals changed stored state");
    assert_eq!(h.ok("ping", json!({})).await["pong"], true);
}

#[tokio::test]
async fn unreadable_requests_are_answered_when_a_reply_channel_can_be_read() {
    let h = Harness::start().await;
    let before = h.snapshot().await;
    let ch = h.client.reply_channel().to_string();
    // Invalid JSON with a readable id and replyTo.
    h.client
        .send_raw(&format!(
            r#"{{"id": "m1", "replyTo": "{ch}", "command": "ping", "args": {{"#
        ))
        .await
        .unwrap();
    let r = h
        .client
        .wait_reply(Some("m1"), Duration::from_secs(10))
        .await
        .expect("reply");
    assert_eq!(r.error.unwrap().code.as_str(), "INVALID_REQUEST");
    // No id at all: the reply's id is null.
    h.client
        .send_raw(&format!(r#"{{"replyTo": "{ch}", "command": "ping"}}"#))
        .await
        .unwrap();
    let r = h
        .client
        .wait_reply(None, Duration::from_secs(10))
        .await
        .expect("reply");
    assert_eq!(r.id, None);
    assert_eq!(r.error.unwrap().code.as_str(), "INVALID_REQUEST");
    // A payload over the size limit.
    let huge = format!(
        r#"{{"id": "big", "replyTo": "{ch}", "command": "ping", "args": {{"x": "{}"}}}}"#,
        "a".repeat(2_000_000)
    );
    h.client.send_raw(&huge).await.unwrap();
    let r = h
        .client
        .wait_reply(Some("big"), Duration::from_secs(10))
        .await
        .expect("reply");
    assert!(r.error.unwrap().message.contains("limit"));
    // Garbage with no reply channel: only a logged warning; the daemon keeps going.
    h.client.send_raw("\u{0}\u{1}garbage").await.unwrap();
    h.client.send_raw("").await.unwrap();
    assert_eq!(h.ok("ping", json!({})).await["pong"], true);
    assert_eq!(h.snapshot().await, before);
}

#[tokio::test]
async fn advance_clock_needs_the_simulated_clock() {
    let h = Harness::start_with(|s| {
        s.clock.mode = recur::clock::ClockMode::System;
        s.clock.start = None;
    })
    .await;
    let e = h
        .err("advanceClock", json!({"to": "2030-01-01T00:00:00Z"}))
        .await;
    assert_eq!(e.code.as_str(), "CLOCK_NOT_SIMULATED");
    assert!(h.ok("getClock", json!({})).await["now"].is_string());
}

#[tokio::test]
async fn a_daemon_refuses_data_made_with_another_clock_mode() {
    let mut h = Harness::start().await;
    h.stop().await;
    let mut s = h.settings.clone();
    s.clock.mode = recur::clock::ClockMode::System;
    let shutdown = recur::shutdown::Shutdown::new();
    let result = std::thread::spawn(move || actix::System::new().block_on(recur::run(s, shutdown)))
        .join()
        .unwrap();
    let message = result.expect_err("refused").to_string();
    assert!(message.contains("simulated clock"), "{message}");
}

/// A reply aimed at recur's own channels (admin requests, events) is refused: nothing is
/// applied and nothing but the request itself appears on those channels.
#[tokio::test]
async fn a_reply_channel_of_recurs_own_is_refused() {
    use futures_util::StreamExt;

    let h = Harness::start().await;
    let before = h.snapshot().await;
    let client = redis::Client::open(h.redis.url.as_str()).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe(&["t:admin", "t:events"]).await.unwrap();
    let mut conn = h.redis.conn().await;
    for (i, reply_to) in ["t:admin", "t:events"].into_iter().enumerate() {
        let request = json!({
            "id": format!("own-{i}"),
            "replyTo": reply_to,
            "command": "createOrder",
            "args": monthly(&format!("o{i}"), "OFFLINE", 3, "10.00"),
        });
        let _: usize = redis::AsyncCommands::publish(&mut conn, "t:admin", request.to_string())
            .await
            .unwrap();
    }
    // Something that does get a reply, to know the two before it were handled.
    assert_eq!(h.ok("ping", json!({})).await["pong"], true);
    let mut seen = Vec::new();
    let mut messages = pubsub.on_message();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), messages.next()).await
    {
        seen.push((
            m.get_channel_name().to_string(),
            m.get_payload::<String>().unwrap(),
        ));
    }
    let replies: Vec<_> = seen.iter().filter(|(_, p)| p.contains("\"ok\"")).collect();
    assert!(
        replies.is_empty(),
        "replies published on recur's channels: {replies:?}"
    );
    assert!(
        seen.iter().all(|(c, _)| c == "t:admin"),
        "only the requests themselves, on the admin channel: {seen:?}"
    );
    assert_eq!(seen.iter().filter(|(_, p)| p.contains("own-")).count(), 2);
    // Nothing applied: no order, no kept reply.
    assert_eq!(h.snapshot().await, before);
    for id in ["own-0", "own-1"] {
        let kept: Vec<String> = redis::AsyncCommands::keys(&mut conn, format!("t:*{id}*"))
            .await
            .unwrap();
        assert!(kept.is_empty(), "{id} left no reply and no claim: {kept:?}");
    }
    let e = h.err("getOrder", json!({"orderId": "o0"})).await;
    assert_eq!(e.code.as_str(), "NOT_FOUND");
}

/// The clock the randomized testing ran on (issue: far-future dates, a jammed stream, a
/// creditBalance without decimals).
const FUZZ_START: &str = "2028-01-31T10:00:00Z";

fn far_order(id: &str, start: &str) -> serde_json::Value {
    json!({"orderId": id, "customerId": format!("c-{id}"), "type": "OFFLINE",
        "plan": {"id": "monthly", "name": "Monthly"},
        "pricing": {"subscription": {"cycleDuration": {"count": 1, "unit": "MONTH"}, "cycleCount": 11}},
        "prices": [{"cycleFrom": 1, "amount": "10.00"}], "currency": "USD", "startDate": start})
}

#[tokio::test]
async fn dates_past_year_9999_are_refused_and_change_nothing() {
    let mut h = Harness::start().await;
    h.advance(FUZZ_START).await;
    // A pending order and an active one to try changeStartDate and pauseOrder on.
    h.ok("createOrder", far_order("pending", "2029-01-01T00:00:00Z"))
        .await;
    h.ok("createOrder", far_order("live", FUZZ_START)).await;
    let before = h.snapshot().await;
    let cases = [
        ("createOrder", far_order("far", "9999-12-31T23:59:59Z")),
        (
            "changeStartDate",
            json!({"orderId": "pending", "startDate": "9999-12-31T23:59:59Z"}),
        ),
        (
            "pauseOrder",
            json!({"orderId": "live", "resumeAt": "9999-12-31T23:59:59.999-01:00"}),
        ),
        (
            "postponeEndDate",
            json!({"orderId": "live", "endDate": "9999-12-31T23:30:00-01:00"}),
        ),
        (
            "advanceClock",
            json!({"to": "9999-12-31T23:59:59.999-01:00"}),
        ),
    ];
    for (command, args) in cases {
        let e = h.err(command, args.clone()).await;
        assert_eq!(
            e.code.as_str(),
            "INVALID_REQUEST",
            "{command} {args}: {e:?}"
        );
        assert!(
            e.message.contains("9999") || e.message.contains("range"),
            "{command}: the refusal names the range: {}",
            e.message
        );
    }
    assert_eq!(h.snapshot().await, before, "nothing changed");
    // Every listing and read still works, also after a restart (orders read from Redis).
    h.restart().await;
    let all = h.ok("listOrders", json!({})).await;
    assert_eq!(all["orders"].as_array().unwrap().len(), 2);
    h.ok("getOrder", json!({"orderId": "live"})).await;
    h.ok("recomputeCustomerStats", json!({"customerId": "c-live"}))
        .await;
    // A long pause whose shifted dates stay representable is taken.
    let paused = h
        .ok(
            "pauseOrder",
            json!({"orderId": "live", "resumeAt": "5000-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(paused["status"], "PAUSED");
}

#[tokio::test]
async fn an_unreadable_order_is_skipped_by_listings_and_its_failing_stream_entry_does_not_jam_the_stream(
) {
    let mut h = Harness::start().await;
    h.advance(FUZZ_START).await;
    h.ok("createOrder", far_order("good", FUZZ_START)).await;
    h.ok("createOrder", far_order("bad", FUZZ_START)).await;
    // Damage "bad" the way revision 2 stored far-future dates (year 10000 is not RFC 3339).
    let keys = recur::store::Keys::new("t", partitions(&h.redis, "t").await);
    let mut conn = h.redis.conn().await;
    let stored: String = redis::AsyncCommands::hget(&mut conn, keys.order_keys().order("bad"), "d")
        .await
        .unwrap();
    let mut damaged: serde_json::Value = serde_json::from_str(&stored).unwrap();
    damaged["endDate"] = json!("+10000-11-30T23:59:59.000Z");
    let _: () = redis::AsyncCommands::hset(
        &mut conn,
        keys.order_keys().order("bad"),
        "d",
        damaged.to_string(),
    )
    .await
    .unwrap();
    h.restart().await; // no actor holds it in memory any more

    // Listings go on without it; the order itself answers a clear error.
    let all = h.ok("listOrders", json!({})).await;
    let ids: Vec<&str> = all["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["good"]);
    let e = h.err("getOrder", json!({"orderId": "bad"})).await;
    assert!(e.message.contains("bad"), "names the order: {}", e.message);
    let m = h.ok("getMetrics", json!({})).await;
    assert!(recur::metrics::total(&m["metrics"], "recur_orders_unreadable_total") >= 1.0);

    // On the command stream: the failing entry, then a ping behind it.
    let mut failing = h.client.new_request("getOrder", json!({"orderId": "bad"}));
    failing.id = "L1".into();
    h.client.enqueue(&failing).await.unwrap();
    let mut ping = h.client.new_request("ping", json!({}));
    ping.id = "after".into();
    h.client.enqueue(&ping).await.unwrap();
    let pong = h
        .client
        .wait_reply(Some("after"), Duration::from_secs(20))
        .await
        .expect("the ping behind a failing entry is answered");
    assert!(pong.ok);
    // The failing one is delivered a bounded number of times, then answered and dead-lettered.
    let mut dead: Vec<(String, std::collections::HashMap<String, redis::Value>)> = Vec::new();
    for _ in 0..600 {
        let r: redis::streams::StreamRangeReply =
            redis::AsyncCommands::xrange_all(&mut conn, "t:commands:dead")
                .await
                .unwrap();
        dead = r.ids.into_iter().map(|s| (s.id, s.map)).collect();
        if !dead.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(dead.len(), 1, "the failing entry is dead-lettered");
    let field = |name: &str| -> String {
        redis::from_redis_value(dead[0].1.get(name).cloned().unwrap()).unwrap()
    };
    assert!(field("request").contains("\"L1\""));
    assert!(field("error").starts_with("INTERNAL"), "{}", field("error"));
    assert_eq!(
        field("deliveries"),
        recur::admin::MAX_DELIVERIES.to_string()
    );
    let pending: redis::streams::StreamPendingReply =
        redis::AsyncCommands::xpending(&mut conn, "t:commands", "recur")
            .await
            .unwrap();
    assert_eq!(pending.count(), 0, "nothing left pending");
}

#[tokio::test]
async fn credit_balance_keeps_the_currency_decimals_through_a_prorated_downgrade() {
    let h = Harness::start().await;
    h.advance(FUZZ_START).await;
    for (id, currency, amount) in [("usd", "USD", "10.00"), ("kwd", "KWD", "10.000")] {
        let mut args = far_order(id, FUZZ_START);
        args["type"] = json!("EXTERNAL");
        args["currency"] = json!(currency);
        args["prices"] = json!([{"cycleFrom": 1, "amount": amount}]);
        args["pricing"]["subscription"]["cycleCount"] = json!(0);
        h.ok("createOrder", args).await;
    }
    h.advance("2028-02-10T10:00:00Z").await;
    for (id, weekly, zero) in [("usd", "3.00", "0.00"), ("kwd", "3.000", "0.000")] {
        let changed = h
            .ok(
                "changePlan",
                json!({"orderId": id, "plan": {"id": "weekly", "name": "Weekly"},
                    "pricing": {"subscription": {"cycleDuration": {"count": 1, "unit": "WEEK"}, "cycleCount": 0}},
                    "prices": [{"cycleFrom": 1, "amount": weekly}],
                    "effectiveAt": "IMMEDIATELY", "proration": "PRORATE"}),
            )
            .await;
        let order = if changed.get("order").is_some() {
            changed["order"].clone()
        } else {
            changed
        };
        assert_eq!(order["creditBalance"], zero, "{id}: {order}");
        let read = h.ok("getOrder", json!({"orderId": id})).await;
        assert_eq!(read["creditBalance"], zero, "{id}");
    }
}
