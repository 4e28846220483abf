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
