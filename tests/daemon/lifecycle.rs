//! End to end over pub/sub: each lifecycle from creation to its end, checking the exact event
//! sequence, dates and final state.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn online_monthly_subscription_lives_a_year() {
    let h = Harness::start().await;
    let created = h
        .ok("createOrder", monthly("o1", "ONLINE", 12, "10.00"))
        .await;
    assert_eq!(created["status"], "DRAFT");
    let paid = h
        .ok(
            "recordPayment",
            json!({"orderId": "o1", "paymentId": "pay-1", "amount": "10.00"}),
        )
        .await;
    assert_eq!(paid["status"], "ACTIVE");
    assert_eq!(paid["endDate"], "2027-01-01T00:00:00.000Z");
    for k in 2..=12 {
        let start = format!("2026-{k:02}-01T00:00:00Z");
        h.advance(&start).await;
        let o = h.ok("getOrder", json!({"orderId": "o1"})).await;
        assert_eq!(o["currentCycle"]["index"], k);
        assert_eq!(
            o["lastPaymentStatus"], "PENDING",
            "cycle {k} requests payment"
        );
        let o = h
            .ok(
                "recordPayment",
                json!({"orderId": "o1", "paymentId": format!("pay-{k}"), "amount": "10.00"}),
            )
            .await;
        assert_eq!(o["lastPaymentStatus"], "PAID");
    }
    h.advance("2027-02-01T00:00:00Z").await;
    let o = h.ok("getOrder", json!({"orderId": "o1"})).await;
    assert_eq!(o["status"], "ENDED");
    assert_eq!(o["payments"].as_array().unwrap().len(), 12);

    let t = h.timeline("o1").await;
    let mut expected = vec![
        "orderCreated",
        "orderPurchased",
        "orderStarted",
        "orderCycleStarted",
        "orderUpdated",
    ];
    for _ in 2..=12 {
        expected.extend(["orderCycleStarted", "orderUpdated", "orderUpdated"]);
    }
    expected.extend(["orderEnded", "orderUpdated"]);
    assert_eq!(types(&t), expected);
    let cycle_times: Vec<&str> = t
        .iter()
        .filter(|(ty, _)| ty == "orderCycleStarted")
        .map(|(_, at)| at.as_str())
        .collect();
    let months: Vec<String> = (1..=12)
        .map(|m| format!("2026-{m:02}-01T00:00:00.000Z"))
        .collect();
    assert_eq!(cycle_times, months);
    assert_eq!(
        t.last().unwrap().1,
        "2027-01-01T00:00:00.000Z",
        "ended at its endDate, not at the advance"
    );

    // Sequences 1..n, ids stable (UUID v5 of orderId:sequence), entity is the order after.
    let events = h.events().await;
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e["sequence"], i as u64 + 1);
        assert_eq!(e["triggeredByAnonymizeRequest"], false);
        assert_eq!(e["entity"]["id"], "o1");
    }
}

#[tokio::test]
async fn unpaid_online_cycle_is_canceled_after_the_grace_period() {
    let h = Harness::start_with(|s| {
        s.lifecycle.payment_grace_period = std::time::Duration::from_secs(2 * 86400);
        s.lifecycle.dunning.retries = vec!["1d".into()];
    })
    .await;
    h.ok("createOrder", monthly("o1", "ONLINE", 12, "10.00"))
        .await;
    h.ok(
        "recordPayment",
        json!({"orderId": "o1", "paymentId": "p1", "amount": "10.00"}),
    )
    .await;
    h.advance("2026-03-01T00:00:00Z").await;
    let o = h.ok("getOrder", json!({"orderId": "o1"})).await;
    assert_eq!(o["status"], "CANCELED");
    assert_eq!(o["cancellation"]["cause"], "PAYMENT_FAILURE");
    assert_eq!(o["endDate"], "2026-02-03T00:00:00.000Z");
    let t = h.timeline("o1").await;
    assert_eq!(
        &types(&t)[5..],
        [
            "orderCycleStarted",
            "orderUpdated",
            "orderPaymentRetryRequested",
            "orderUpdated",
            "orderCanceled",
            "orderEnded",
            "orderUpdated"
        ]
    );
    assert_eq!(
        t[7].1, "2026-02-02T00:00:00.000Z",
        "the retry, a day after the request"
    );
}

#[tokio::test]
async fn offline_order_is_marked_paid_once_and_ends() {
    let h = Harness::start().await;
    let o = h
        .ok("createOrder", monthly("off", "OFFLINE", 3, "20.00"))
        .await;
    assert_eq!(o["status"], "ACTIVE");
    assert_eq!(o["lastPaymentStatus"], "UNPAID");
    let o = h.ok("markAsPaid", json!({"orderId": "off"})).await;
    assert_eq!(o["lastPaymentStatus"], "PAID");
    assert_eq!(
        h.err("markAsPaid", json!({"orderId": "off"}))
            .await
            .code
            .as_str(),
        "INVALID_STATE"
    );
    h.advance("2026-06-01T00:00:00Z").await;
    let o = h.ok("getOrder", json!({"orderId": "off"})).await;
    assert_eq!(o["status"], "ENDED");
    assert_eq!(
        o["lastPaymentStatus"], "PAID",
        "later OFFLINE cycles request nothing"
    );
    assert_eq!(
        types(&h.timeline("off").await),
        [
            "orderCreated",
            "orderPurchased",
            "orderStarted",
            "orderCycleStarted",
            "orderMarkedAsPaid",
            "orderUpdated",
            "orderCycleStarted",
            "orderUpdated",
            "orderCycleStarted",
            "orderUpdated",
            "orderEnded",
            "orderUpdated",
        ]
    );
}

#[tokio::test]
async fn trial_then_paid_cycles() {
    let h = Harness::start().await;
    let mut args = monthly("tr", "ONLINE", 2, "9.00");
    args["freeTrialDays"] = json!(14);
    let o = h.ok("createOrder", args).await;
    assert_eq!(o["status"], "ACTIVE");
    assert_eq!(o["currentCycle"]["index"], 0);
    assert_eq!(o["endDate"], "2026-03-15T00:00:00.000Z");
    assert_eq!(
        h.err("pauseOrder", json!({"orderId": "tr"}))
            .await
            .code
            .as_str(),
        "INVALID_STATE"
    );
    h.advance("2026-01-15T00:00:00Z").await;
    let o = h.ok("getOrder", json!({"orderId": "tr"})).await;
    assert_eq!(o["currentCycle"]["index"], 1);
    assert_eq!(o["lastPaymentStatus"], "PENDING");
    h.ok(
        "recordPayment",
        json!({"orderId": "tr", "paymentId": "a", "amount": "9.00"}),
    )
    .await;
    h.advance("2026-02-15T00:00:00Z").await;
    h.ok(
        "recordPayment",
        json!({"orderId": "tr", "paymentId": "b", "amount": "9.00"}),
    )
    .await;
    h.advance("2026-04-01T00:00:00Z").await;
    assert_eq!(
        h.ok("getOrder", json!({"orderId": "tr"})).await["status"],
        "ENDED"
    );
    let t = h.timeline("tr").await;
    let cycles: Vec<&str> = t
        .iter()
        .filter(|(ty, _)| ty == "orderCycleStarted")
        .map(|(_, a)| a.as_str())
        .collect();
    assert_eq!(
        cycles,
        [
            "2026-01-01T00:00:00.000Z",
            "2026-01-15T00:00:00.000Z",
            "2026-02-15T00:00:00.000Z"
        ]
    );
}

#[tokio::test]
async fn pause_with_scheduled_resume_shifts_the_dates() {
    let h = Harness::start().await;
    h.ok("createOrder", monthly("p", "OFFLINE", 3, "5.00"))
        .await;
    h.advance("2026-01-10T00:00:00Z").await;
    let o = h
        .ok(
            "pauseOrder",
            json!({"orderId": "p", "resumeAt": "2026-01-20T00:00:00Z"}),
        )
        .await;
    assert_eq!(o["status"], "PAUSED");
    h.advance("2026-01-25T00:00:00Z").await;
    let o = h.ok("getOrder", json!({"orderId": "p"})).await;
    assert_eq!(o["status"], "ACTIVE");
    assert_eq!(o["endDate"], "2026-04-11T00:00:00.000Z");
    assert_eq!(o["earliestEndDate"], "2026-04-11T00:00:00.000Z");
    assert_eq!(o["pausePeriods"][0]["status"], "ENDED");
    assert_eq!(
        o["pausePeriods"][0]["resumeDate"],
        "2026-01-20T00:00:00.000Z"
    );
    h.advance("2026-05-01T00:00:00Z").await;
    let t = h.timeline("p").await;
    let cycles: Vec<&str> = t
        .iter()
        .filter(|(ty, _)| ty == "orderCycleStarted")
        .map(|(_, a)| a.as_str())
        .collect();
    assert_eq!(
        cycles,
        [
            "2026-01-01T00:00:00.000Z",
            "2026-02-11T00:00:00.000Z",
            "2026-03-11T00:00:00.000Z"
        ]
    );
    assert_eq!(t.last().unwrap().1, "2026-04-11T00:00:00.000Z");
    let resumed = t.iter().find(|(ty, _)| ty == "orderResumed").unwrap();
    assert_eq!(resumed.1, "2026-01-20T00:00:00.000Z");
}

#[tokio::test]
async fn postpone_and_change_start_date() {
    let h = Harness::start().await;
    let mut args = monthly("s", "OFFLINE", 2, "5.00");
    args["startDate"] = json!("2026-02-01T00:00:00Z");
    assert_eq!(h.ok("createOrder", args).await["status"], "PENDING");
    let o = h
        .ok(
            "changeStartDate",
            json!({"orderId": "s", "startDate": "2026-03-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(o["endDate"], "2026-05-01T00:00:00.000Z");
    let o = h
        .ok(
            "postponeEndDate",
            json!({"orderId": "s", "endDate": "2026-06-15T00:00:00Z"}),
        )
        .await;
    assert_eq!(o["endDate"], "2026-06-15T00:00:00.000Z");
    h.advance("2026-03-02T00:00:00Z").await;
    assert_eq!(
        h.err(
            "changeStartDate",
            json!({"orderId": "s", "startDate": "2026-04-01T00:00:00Z"})
        )
        .await
        .code
        .as_str(),
        "INVALID_STATE"
    );
    h.advance("2026-07-01T00:00:00Z").await;
    let t = h.timeline("s").await;
    assert_eq!(
        types(&t),
        [
            "orderCreated",
            "orderPurchased",
            "orderStartDateChanged",
            "orderUpdated",
            "orderEndDatePostponed",
            "orderUpdated",
            "orderStarted",
            "orderCycleStarted",
            "orderUpdated",
            "orderCycleStarted",
            "orderUpdated",
            "orderEnded",
            "orderUpdated",
        ]
    );
    assert_eq!(t[6].1, "2026-03-01T00:00:00.000Z");
    assert_eq!(t.last().unwrap().1, "2026-06-15T00:00:00.000Z");
}

#[tokio::test]
async fn cancel_now_and_at_the_next_payment_date() {
    let h = Harness::start().await;
    h.ok("createOrder", monthly("now", "OFFLINE", 0, "5.00"))
        .await;
    h.ok("createOrder", monthly("next", "OFFLINE", 0, "5.00"))
        .await;
    h.advance("2026-01-10T00:00:00Z").await;
    let o = h
        .ok(
            "cancelOrder",
            json!({"orderId": "now", "effectiveAt": "IMMEDIATELY"}),
        )
        .await;
    assert_eq!(o["status"], "CANCELED");
    assert_eq!(o["endDate"], "2026-01-10T00:00:00.000Z");
    let o = h
        .ok("cancelOrder", json!({"orderId": "next", "effectiveAt": "NEXT_PAYMENT_DATE", "cause": "MEMBER_ACTION"}))
        .await;
    assert_eq!(o["status"], "ACTIVE");
    assert_eq!(o["autoRenewCanceled"], true);
    assert_eq!(o["endDate"], "2026-02-01T00:00:00.000Z");
    h.advance("2026-04-01T00:00:00Z").await;
    let o = h.ok("getOrder", json!({"orderId": "next"})).await;
    assert_eq!(o["status"], "CANCELED");
    assert_eq!(o["cancellation"]["cause"], "MEMBER_ACTION");
    assert_eq!(
        types(&h.timeline("next").await)[4..],
        [
            "orderAutoRenewCanceled",
            "orderUpdated",
            "orderCanceled",
            "orderEnded",
            "orderUpdated"
        ]
    );
    assert_eq!(
        types(&h.timeline("now").await)[4..],
        ["orderCanceled", "orderEnded", "orderUpdated"]
    );
}

#[tokio::test]
async fn delete_removes_the_order_and_its_id_is_never_reused() {
    let h = Harness::start().await;
    h.ok("createOrder", monthly("d", "OFFLINE", 3, "5.00"))
        .await;
    let deleted = h.ok("deleteOrder", json!({"orderId": "d"})).await;
    assert_eq!(deleted["id"], "d");
    assert_eq!(
        h.err("getOrder", json!({"orderId": "d"}))
            .await
            .code
            .as_str(),
        "NOT_FOUND"
    );
    assert_eq!(
        h.err("createOrder", monthly("d", "OFFLINE", 3, "5.00"))
            .await
            .code
            .as_str(),
        "CONFLICT"
    );
    let t = h.timeline("d").await;
    assert_eq!(types(&t).last(), Some(&"orderDeleted"));
    h.advance("2026-06-01T00:00:00Z").await;
    assert_eq!(
        h.timeline("d").await.len(),
        t.len(),
        "no timer survives the delete"
    );
    let listed = h.ok("listOrders", json!({})).await;
    assert_eq!(listed["orders"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn retried_request_ids_get_the_first_reply_and_change_nothing() {
    let h = Harness::start().await;
    h.ok("createOrder", monthly("o", "OFFLINE", 3, "5.00"))
        .await;
    let first = h
        .reply_with_id("req-1", "pauseOrder", json!({"orderId": "o"}))
        .await;
    assert!(first.ok);
    let again = h
        .reply_with_id("req-1", "pauseOrder", json!({"orderId": "o"}))
        .await;
    assert_eq!(again, first, "the first reply, not INVALID_STATE");
    let other = h
        .reply_with_id("req-1", "resumeOrder", json!({"orderId": "o"}))
        .await;
    assert_eq!(other.error.unwrap().code.as_str(), "CONFLICT");
    assert_eq!(
        h.ok("getOrder", json!({"orderId": "o"})).await["status"],
        "PAUSED"
    );
    // createOrder without orderId: the id derives from the request id, so a retry makes one order.
    let mut args = monthly("x", "OFFLINE", 3, "5.00");
    args.as_object_mut().unwrap().remove("orderId");
    let a = h
        .reply_with_id("create-1", "createOrder", args.clone())
        .await;
    let b = h.reply_with_id("create-1", "createOrder", args).await;
    assert_eq!(a, b);
    let listed = h.ok("listOrders", json!({})).await;
    assert_eq!(listed["orders"].as_array().unwrap().len(), 2);
    // A client-chosen orderId created twice (different request ids) returns the first order.
    let again = h
        .ok("createOrder", monthly("o", "OFFLINE", 3, "5.00"))
        .await;
    assert_eq!(again["status"], "PAUSED");
}

#[tokio::test]
async fn concurrent_duplicates_of_one_request_apply_once() {
    let h = Harness::start().await;
    h.ok("createOrder", monthly("o", "EXTERNAL", 3, "5.00"))
        .await;
    let args = json!({"orderId": "o", "paymentId": "p", "amount": "5.00"});
    let replies = futures_util::future::join_all(
        (0..8).map(|_| h.reply_with_id("same", "recordPayment", args.clone())),
    )
    .await;
    assert!(replies.iter().all(|r| r == &replies[0]));
    let o = h.ok("getOrder", json!({"orderId": "o"})).await;
    assert_eq!(o["payments"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn list_orders_pages_newest_first_and_hides_carts() {
    let h = Harness::start().await;
    for i in 0..5 {
        h.ok(
            "createOrder",
            monthly(&format!("o{i}"), "OFFLINE", 3, "5.00"),
        )
        .await;
        h.advance(&format!("2026-01-01T00:00:0{}Z", i + 1)).await;
    }
    h.ok("createOrder", monthly("cart", "ONLINE", 3, "5.00"))
        .await;
    let page = h
        .ok("listOrders", json!({"customerId": "c1", "limit": 2}))
        .await;
    let ids: Vec<&str> = page["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["o4", "o3"]);
    let cursor = page["nextCursor"].as_str().unwrap().to_string();
    let page2 = h
        .ok(
            "listOrders",
            json!({"customerId": "c1", "limit": 10, "cursor": cursor}),
        )
        .await;
    let ids: Vec<&str> = page2["orders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["o2", "o1", "o0"]);
    assert!(page2["nextCursor"].is_null());
    let drafts = h.ok("listOrders", json!({"status": "DRAFT"})).await;
    assert_eq!(drafts["orders"][0]["id"], "cart");
}

#[tokio::test]
async fn requests_on_the_command_stream_are_answered_and_acknowledged() {
    let h = Harness::start().await;
    let mut req = h
        .client
        .new_request("createOrder", monthly("s1", "OFFLINE", 3, "5.00"));
    req.id = "stream-1".into();
    h.client.enqueue(&req).await.unwrap();
    let reply = h
        .client
        .wait_reply(Some("stream-1"), std::time::Duration::from_secs(10))
        .await
        .expect("reply");
    assert!(reply.ok);
    let mut conn = h.redis.conn().await;
    // Acknowledged once the reply was kept.
    for _ in 0..50 {
        let pending: redis::streams::StreamPendingReply =
            redis::AsyncCommands::xpending(&mut conn, "t:commands", "recur")
                .await
                .unwrap();
        if pending.count() == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let pending: redis::streams::StreamPendingReply =
        redis::AsyncCommands::xpending(&mut conn, "t:commands", "recur")
            .await
            .unwrap();
    assert_eq!(pending.count(), 0);
    let kept = kept_reply(&h.redis, "t", "stream-1").await.expect("kept");
    assert!(kept.contains("\"ok\":true"));
    // A malformed entry is acknowledged and copied to the dead-letter stream.
    let _: String =
        redis::AsyncCommands::xadd(&mut conn, "t:commands", "*", &[("request", "{nope")])
            .await
            .unwrap();
    let mut dead = 0usize;
    for _ in 0..50 {
        dead = redis::AsyncCommands::xlen(&mut conn, "t:commands:dead")
            .await
            .unwrap();
        if dead > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(dead, 1);
}

#[tokio::test]
async fn the_clock_survives_a_restart_and_never_goes_back() {
    let mut h = Harness::start().await;
    h.advance("2026-03-01T00:00:00Z").await;
    h.restart().await;
    assert_eq!(
        h.ok("getClock", json!({})).await["now"],
        "2026-03-01T00:00:00.000Z"
    );
    assert_eq!(
        h.err("advanceClock", json!({"to": "2026-02-01T00:00:00Z"}))
            .await
            .code
            .as_str(),
        "INVALID_REQUEST"
    );
    let ping = h.ok("ping", json!({})).await;
    assert_eq!(ping["pong"], true);
}

#[tokio::test]
async fn a_cron_job_trims_the_event_stream_once_per_advance() {
    // One partition, so that every change goes to one stream, trimmed to 3 entries.
    let h = Harness::start_with(|s| {
        s.partitions = 1;
        s.events.max_len = 3;
        s.cron.trim_events = "0 0 * * * *".parse().unwrap();
    })
    .await;
    h.advance("2026-01-01T00:00:01Z").await;
    for i in 0..4 {
        h.ok(
            "createOrder",
            monthly(&format!("o{i}"), "OFFLINE", 3, "5.00"),
        )
        .await;
    }
    assert!(h.changes().await.len() > 3);
    h.advance("2026-01-02T00:00:00Z").await;
    assert_eq!(h.changes().await.len(), 3);
}

/// SPEC 8: an order created in New York at local midnight renews at local midnight, across
/// both DST changes, through the daemon on the simulated clock.
#[tokio::test]
async fn a_time_zone_order_renews_at_local_midnight_through_the_daemon() {
    let h = Harness::start().await;
    let mut args = monthly("ny", "OFFLINE", 12, "10.00");
    args["timeZone"] = json!("America/New_York");
    // 2026-01-01T05:00Z is midnight EST.
    args["startDate"] = json!("2026-01-01T05:00:00Z");
    let created = h.ok("createOrder", args).await;
    assert_eq!(created["timeZone"], "America/New_York");
    assert_eq!(created["endDate"], "2027-01-01T05:00:00.000Z");
    let bad = h
        .err("createOrder", {
            let mut a = monthly("bad", "OFFLINE", 12, "10.00");
            a["timeZone"] = json!("Atlantis/Capital");
            a
        })
        .await;
    assert_eq!(bad.code.as_str(), "INVALID_REQUEST");
    h.advance("2026-12-31T00:00:00Z").await;
    let starts: Vec<String> = h
        .timeline("ny")
        .await
        .into_iter()
        .filter(|(ty, _)| ty == "orderCycleStarted")
        .map(|(_, at)| at)
        .collect();
    let mut want: Vec<String> = Vec::new();
    for m in 1..=12 {
        // EDT (UTC-4) from 8 March 02:00 to 1 November 02:00 local: local midnight is 04:00
        // UTC from April to November (1 November 00:00 is still EDT).
        let hour = if (4..=11).contains(&m) { 4 } else { 5 };
        want.push(format!("2026-{m:02}-01T{hour:02}:00:00.000Z"));
    }
    assert_eq!(starts, want);
    // The stored order and the event's entity keep the zone.
    let o = h.ok("getOrder", json!({"orderId": "ny"})).await;
    assert_eq!(o["timeZone"], "America/New_York");
    assert_eq!(o["currentCycle"]["index"], 12);
}

/// SPEC 8 dunning through the daemon: an order's own dunning (retry after 12 h, PAUSE at the
/// deadline), then a payment of everything due resumes it; another order KEEPs.
#[tokio::test]
async fn dunning_retries_pauses_and_keeps_through_the_daemon() {
    let h = Harness::start().await;
    let mut paused = monthly("dp", "ONLINE", 12, "10.00");
    paused["dunning"] = json!({"retries": ["12h"], "finalAction": "PAUSE"});
    let created = h.ok("createOrder", paused).await;
    assert_eq!(created["dunning"]["finalAction"], "PAUSE");
    let mut kept = monthly("dk", "ONLINE", 12, "10.00");
    kept["dunning"] = json!({"finalAction": "KEEP"});
    h.ok("createOrder", kept).await;
    for id in ["dp", "dk"] {
        h.ok(
            "recordPayment",
            json!({"orderId": id, "paymentId": format!("{id}-1"), "amount": "10.00"}),
        )
        .await;
    }
    let bad = h
        .err("createOrder", {
            let mut a = monthly("bad", "ONLINE", 12, "10.00");
            a["dunning"] = json!({"retries": ["5d"]});
            a
        })
        .await;
    assert_eq!(bad.code.as_str(), "INVALID_REQUEST");
    // Cycle 2 is requested on 1 Feb; the 72 h deadline is 4 Feb.
    h.advance("2026-02-05T00:00:00Z").await;
    let o = h.ok("getOrder", json!({"orderId": "dp"})).await;
    assert_eq!(o["status"], "PAUSED");
    assert_eq!(o["lastPaymentStatus"], "FAILED");
    assert_eq!(o["pausePeriods"][0]["cause"], "PAYMENT_FAILURE");
    let t = h.timeline("dp").await;
    let retry = t
        .iter()
        .find(|(ty, _)| ty == "orderPaymentRetryRequested")
        .expect("a retry");
    assert_eq!(retry.1, "2026-02-01T12:00:00.000Z");
    let k = h.ok("getOrder", json!({"orderId": "dk"})).await;
    assert_eq!(k["status"], "ACTIVE");
    assert_eq!(k["lastPaymentStatus"], "FAILED");
    assert_eq!(k["paymentsDue"][0]["final"], true);
    assert_eq!(
        h.timeline("dk")
            .await
            .iter()
            .filter(|(ty, _)| ty == "orderPaymentRetryRequested")
            .count(),
        2,
        "the configured retries, 1 and 2 days after the request"
    );
    // Paying what is due resumes the paused one.
    let resumed = h
        .ok(
            "recordPayment",
            json!({"orderId": "dp", "paymentId": "dp-2", "amount": "10.00"}),
        )
        .await;
    assert_eq!(resumed["status"], "ACTIVE");
    assert_eq!(resumed["lastPaymentStatus"], "PAID");
    assert_eq!(types(&h.timeline("dp").await).last(), Some(&"orderUpdated"));
    assert!(types(&h.timeline("dp").await).contains(&"orderResumed"));
}

/// SPEC 8 through the daemon: a change scheduled for the next payment date, canceled, scheduled
/// again, then applied at the cycle start on the simulated clock.
#[tokio::test]
async fn a_scheduled_plan_change_applies_at_the_next_payment_date_through_the_daemon() {
    let h = Harness::start().await;
    h.ok("createOrder", monthly("sc", "OFFLINE", 0, "10.00"))
        .await;
    let yearly = json!({
        "orderId": "sc",
        "plan": {"id": "yearly", "name": "Yearly"},
        "pricing": {"subscription": {"cycleDuration": {"count": 1, "unit": "YEAR"}, "cycleCount": 0}},
        "prices": [{"cycleFrom": 1, "amount": "100.00"}],
        "effectiveAt": "NEXT_PAYMENT_DATE",
        "proration": "NONE",
    });
    let o = h.ok("changePlan", yearly.clone()).await;
    assert_eq!(
        o["scheduledChange"]["effectiveDate"],
        "2026-02-01T00:00:00.000Z"
    );
    assert_eq!(o["scheduledChange"]["plan"]["id"], "yearly");
    assert_eq!(o["plan"]["id"], "monthly", "not yet");
    let o = h
        .ok("cancelScheduledChange", json!({"orderId": "sc"}))
        .await;
    assert_eq!(o["scheduledChange"], json!(null));
    let e = h
        .err("cancelScheduledChange", json!({"orderId": "sc"}))
        .await;
    assert_eq!(e.code.as_str(), "INVALID_STATE");
    h.ok("changePlan", yearly).await;
    h.advance("2026-02-01T00:00:01Z").await;
    let o = h.ok("getOrder", json!({"orderId": "sc"})).await;
    assert_eq!(o["plan"]["id"], "yearly");
    assert_eq!(o["currentCycle"]["index"], 2);
    assert_eq!(o["currentCycle"]["startedDate"], "2026-02-01T00:00:00.000Z");
    assert_eq!(o["currentCycle"]["endedDate"], "2027-02-01T00:00:00.000Z");
    assert_eq!(o["anchorCycle"], 2);
    let t = types(&h.timeline("sc").await)
        .into_iter()
        .map(str::to_string)
        .collect::<Vec<_>>();
    let tail: Vec<&str> = t[t.len() - 3..].iter().map(String::as_str).collect();
    assert_eq!(
        tail,
        ["orderPlanChanged", "orderCycleStarted", "orderUpdated"]
    );
    assert_eq!(
        t.iter()
            .filter(|ty| *ty == "orderPlanChangeScheduled")
            .count(),
        3,
        "scheduled, canceled (null), scheduled again"
    );
}

#[tokio::test]
async fn the_command_stream_works_again_after_redis_lost_its_data() {
    let h = Harness::start().await;
    h.ok("ping", json!({})).await;
    // Redis restarted without its data: the stream and its consumer group are gone.
    let mut conn = h.redis.conn().await;
    let _: () = redis::cmd("FLUSHALL").query_async(&mut conn).await.unwrap();
    let mut answered = false;
    for attempt in 0..30 {
        let mut req = h.client.new_request("ping", json!({}));
        req.id = format!("after-loss-{attempt}");
        h.client.enqueue(&req).await.unwrap();
        if let Some(reply) = h
            .client
            .wait_reply(Some(&req.id), std::time::Duration::from_secs(2))
            .await
        {
            // UNAVAILABLE while the daemon takes its leases again; then answered.
            if reply.ok {
                answered = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    assert!(answered, "a stream request is answered after the data loss");
}
