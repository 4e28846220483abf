//! updateOrder end to end: carts built up over several requests, refusals that leave Redis
//! untouched and name their stage, per-channel status permissions from config, cart names, and
//! concurrent updates of one order.

use std::collections::BTreeSet;
use std::str::FromStr;

use futures_util::future::join_all;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use recur::admin::client::RequestOptions;
use recur::config::{PromoCode, PromoKind, Settings};
use recur::wire::Reply;

use crate::support::*;

fn promo(kind: PromoKind, value: &str, first_cycles: Option<u32>) -> PromoCode {
    PromoCode {
        kind,
        value: Decimal::from_str(value).unwrap(),
        first_cycles,
        expires: None,
    }
}

/// The status manager and promotion codes every test here runs with.
fn basket_config(s: &mut Settings) {
    let table = |rows: &[(&str, &[&str])]| {
        rows.iter()
            .map(|(from, tos)| {
                (
                    from.to_string(),
                    tos.iter().map(|t| t.to_string()).collect(),
                )
            })
            .collect()
    };
    s.status_manager.insert(
        "backoffice".into(),
        table(&[
            ("ACTIVE", &["PAUSED", "CANCELED", "ENDED"]),
            ("PAUSED", &["ACTIVE"]),
        ]),
    );
    s.status_manager
        .insert("web".into(), table(&[("ACTIVE", &["CANCELED"])]));
    s.promo_codes
        .insert("HALF3".into(), promo(PromoKind::Percent, "50", Some(3)));
    s.promo_codes
        .insert("FIVEOFF".into(), promo(PromoKind::Fixed, "5.00", None));
    s.promo_codes
        .insert("HALFCENT".into(), promo(PromoKind::Fixed, "0.005", None));
    s.promo_codes.insert(
        "EXPIRED".into(),
        PromoCode {
            expires: Some(at("2025-12-31T00:00:00Z")),
            ..promo(PromoKind::Percent, "10", None)
        },
    );
}

async fn start() -> Harness {
    Harness::start_with(basket_config).await
}

/// createOrder args of a named ONLINE cart: monthly, 12 cycles at 10.00.
fn cart(order_id: &str, name: &str) -> Value {
    let mut a = monthly(order_id, "ONLINE", 12, "10.00");
    a["name"] = json!(name);
    a
}

fn item(id: &str, quantity: i64, price: &str) -> Value {
    json!({"id": id, "sku": format!("SKU-{id}"), "name": id, "quantity": quantity, "unitPrice": price})
}

/// updateOrder args for customer c1's order `id`, merged with `more`.
fn by_id(id: &str, more: Value) -> Value {
    let mut a = json!({"customerId": "c1", "id": id});
    a.as_object_mut()
        .unwrap()
        .extend(more.as_object().unwrap().clone());
    a
}

/// updateOrder args for customer c1's cart `name`, merged with `more`.
fn by_name(name: &str, more: Value) -> Value {
    let mut a = json!({"customerId": "c1", "name": name});
    a.as_object_mut()
        .unwrap()
        .extend(more.as_object().unwrap().clone());
    a
}

async fn as_channel(h: &Harness, channel: &str, command: &str, args: Value) -> Reply {
    let options = RequestOptions {
        channel: channel.to_string(),
        ..RequestOptions::default()
    };
    h.client
        .request_with(options, command, args)
        .await
        .expect("a reply")
}

fn stage_of(r: &Reply) -> Option<&str> {
    r.error.as_ref().and_then(|e| e.stage.as_deref())
}

#[tokio::test]
async fn a_cart_is_built_up_checked_out_and_charged_its_new_prices_each_cycle() {
    let h = start().await;
    let created = h.ok("createOrder", cart("cart-1", "weekly box")).await;
    assert_eq!(created["status"], "DRAFT");
    assert_eq!(created["name"], "weekly box");

    let o = h
        .ok(
            "updateOrder",
            by_name(
                "weekly box",
                json!({"lineItems": {"create": [item("mug", 2, "3.00")]}}),
            ),
        )
        .await;
    assert_eq!(o["priceDetails"]["subtotal"], "16.00");
    assert_eq!(o["priceDetails"]["total"], "16.00");

    let o = h
        .ok(
            "updateOrder",
            by_name(
                "weekly box",
                json!({
                    "promoCodes": {"create": [{"code": "half3"}]},
                    "addresses": {"create": [{"id": "ship", "kind": "SHIPPING", "lines": ["1 Main St"], "city": "Springfield", "country": "US"}]}
                }),
            ),
        )
        .await;
    assert_eq!(o["promoCodes"], json!([{"code": "HALF3"}]));
    assert_eq!(o["priceDetails"]["discount"], "8.00");
    assert_eq!(o["priceDetails"]["total"], "8.00");

    let version = o["version"].as_u64().unwrap();
    let short = h
        .ok(
            "updateOrder",
            by_id(
                "cart-1",
                json!({
                    "expectedVersion": version,
                    "lineItems": {"update": [{"id": "mug", "quantity": 1}], "create": [item("tote", 1, "4.00")]},
                    "payments": {"create": [{"id": "card", "method": "CARD", "amount": "8.50"}]},
                    "options": {"returnModel": false}
                }),
            ),
        )
        .await;
    assert_eq!(short, json!({"id": "cart-1", "version": version + 1}));

    let o = h.ok("getOrder", json!({"orderId": "cart-1"})).await;
    assert_eq!(
        o["priceDetails"],
        json!({"subtotal": "17.00", "discount": "8.50", "total": "8.50", "currency": "USD"})
    );
    assert_eq!(
        o["discounts"],
        json!([{"code": "HALF3", "kind": "PERCENT", "value": "50", "firstCycles": 3}])
    );
    assert_eq!(
        o["tenderLines"],
        json!([{"id": "card", "method": "CARD", "amount": "8.50"}])
    );
    assert_eq!(o["payments"], json!([]), "tender lines move no money");
    assert_eq!(o["status"], "DRAFT");

    // Checkout: paying the purchase charge.
    let paid = h
        .ok(
            "recordPayment",
            json!({"orderId": "cart-1", "paymentId": "pay-1", "amount": "8.50"}),
        )
        .await;
    assert_eq!(paid["status"], "ACTIVE");
    assert_eq!(paid["lastPaymentStatus"], "PAID");

    // The name no longer finds it: it is not a cart any more.
    let r = h
        .reply("updateOrder", by_name("weekly box", json!({})))
        .await;
    let e = r.error.as_ref().expect("refused");
    assert_eq!(e.code.as_str(), "INVALID_REQUEST");
    assert_eq!(stage_of(&r), Some("load"));
    assert!(e.message.contains("name finds only carts"), "{}", e.message);

    // Each later cycle charges its price less the promotion (first 3 cycles at half price).
    let mut charged = Vec::new();
    for month in 2..=5 {
        h.advance(&format!("2026-{month:02}-01T00:00:00Z")).await;
        let o = h.ok("getOrder", json!({"orderId": "cart-1"})).await;
        assert_eq!(o["currentCycle"]["index"], month);
        assert_eq!(o["lastPaymentStatus"], "PENDING");
        let amount = o["paymentsDue"][0]["amount"].as_str().unwrap().to_string();
        charged.push(amount.clone());
        h.ok(
            "recordPayment",
            json!({"orderId": "cart-1", "paymentId": format!("pay-{month}"), "amount": amount}),
        )
        .await;
    }
    assert_eq!(charged, ["5.00", "5.00", "10.00", "10.00"]);

    let t = h.timeline("cart-1").await;
    let mut expected = vec![
        "orderCreated",
        "orderUpdated",
        "orderUpdated",
        "orderUpdated",
        "orderPurchased",
        "orderStarted",
        "orderCycleStarted",
        "orderUpdated",
    ];
    for _ in 2..=5 {
        expected.extend(["orderCycleStarted", "orderUpdated", "orderUpdated"]);
    }
    assert_eq!(types(&t), expected);
}

#[tokio::test]
async fn every_refusal_names_its_stage_and_leaves_redis_unchanged() {
    let h = start().await;
    h.ok("createOrder", cart("cart-1", "box")).await;
    h.ok("createOrder", cart("cart-2", "box 2")).await;
    h.ok(
        "updateOrder",
        by_id(
            "cart-1",
            json!({"lineItems": {"create": [item("mug", 1, "3.00")]}}),
        ),
    )
    .await;
    h.ok("createOrder", cart("bought", "old box")).await;
    h.ok(
        "recordPayment",
        json!({"orderId": "bought", "paymentId": "p1", "amount": "10.00"}),
    )
    .await;
    let before = h.snapshot().await;

    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({"customerId": "c1", "id": "cart-1", "name": "box"}),
            "INVALID_REQUEST",
            "load",
        ),
        (json!({"customerId": "c1"}), "INVALID_REQUEST", "load"),
        (json!({"id": "cart-1"}), "INVALID_REQUEST", "load"),
        (
            json!({"customerId": "c1", "name": "old box"}),
            "INVALID_REQUEST",
            "load",
        ),
        (
            json!({"customerId": "c1", "name": "nope"}),
            "NOT_FOUND",
            "load",
        ),
        (
            json!({"customerId": "c2", "id": "cart-1"}),
            "NOT_FOUND",
            "load",
        ),
        (
            json!({"customerId": "c1", "id": "missing"}),
            "NOT_FOUND",
            "load",
        ),
        (
            by_id("cart-1", json!({"expectedVersion": 99})),
            "CONFLICT",
            "load",
        ),
        (
            by_id("cart-1", json!({"colour": "red"})),
            "INVALID_REQUEST",
            "validate",
        ),
        (
            by_id("cart-1", json!({"status": "FROZEN"})),
            "INVALID_REQUEST",
            "validate",
        ),
        (
            by_id("bought", json!({"status": "PAUSED"})),
            "FORBIDDEN_STATUS_CHANGE",
            "fields",
        ),
        (
            by_id("bought", json!({"plan": {"id": "p2", "name": "Other"}})),
            "INVALID_STATE",
            "fields",
        ),
        (
            by_id("cart-1", json!({"newName": "box 2"})),
            "CONFLICT",
            "fields",
        ),
        (
            by_id(
                "cart-1",
                json!({"prices": [{"cycleFrom": 2, "amount": "1.00"}]}),
            ),
            "INVALID_REQUEST",
            "fields",
        ),
        (
            by_id(
                "cart-1",
                json!({"lineItems": {"create": [item("tote", 1, "1.00")], "delete": ["tote"]}}),
            ),
            "INVALID_REQUEST",
            "lineItems",
        ),
        (
            by_id(
                "cart-1",
                json!({"lineItems": {"update": [{"id": "mug", "quantity": 2}], "delete": ["mug"]}}),
            ),
            "INVALID_REQUEST",
            "lineItems",
        ),
        (
            by_id(
                "cart-1",
                json!({"lineItems": {"update": [{"id": "nope", "quantity": 1}]}}),
            ),
            "NOT_FOUND",
            "lineItems",
        ),
        (
            by_id(
                "cart-1",
                json!({"lineItems": {"create": [item("x", -1, "1.00")]}}),
            ),
            "INVALID_REQUEST",
            "lineItems",
        ),
        (
            by_id(
                "cart-1",
                json!({"lineItems": {"create": [item("x", 1, "-1.00")]}}),
            ),
            "INVALID_REQUEST",
            "lineItems",
        ),
        (
            by_id(
                "cart-1",
                json!({"lineItems": {"create": [item("mug", 1, "1.00")]}}),
            ),
            "CONFLICT",
            "lineItems",
        ),
        (
            by_id(
                "bought",
                json!({"lineItems": {"create": [item("x", 1, "1.00")]}}),
            ),
            "INVALID_STATE",
            "lineItems",
        ),
        (
            by_id("cart-1", json!({"addresses": {"delete": ["nope"]}})),
            "NOT_FOUND",
            "addresses",
        ),
        (
            by_id(
                "cart-1",
                json!({"promoCodes": {"create": [{"code": "NOPE"}]}}),
            ),
            "INVALID_REQUEST",
            "promoCodes",
        ),
        (
            by_id(
                "cart-1",
                json!({"promoCodes": {"create": [{"code": "EXPIRED"}]}}),
            ),
            "INVALID_REQUEST",
            "promoCodes",
        ),
        (
            by_id(
                "cart-1",
                json!({"payments": {"create": [{"id": "t", "method": "CARD", "amount": "-1.00"}]}}),
            ),
            "INVALID_REQUEST",
            "payments",
        ),
        (
            by_id(
                "cart-1",
                json!({"promoCodes": {"create": [{"code": "HALFCENT"}]}}),
            ),
            "INVALID_REQUEST",
            "pricing",
        ),
        // A failure in a late stage discards the earlier stages' changes too.
        (
            by_id(
                "cart-1",
                json!({"lineItems": {"create": [item("tote", 1, "1.00")]}, "payments": {"delete": ["nope"]}}),
            ),
            "NOT_FOUND",
            "payments",
        ),
    ];
    for (args, code, stage) in cases {
        let r = h.reply("updateOrder", args.clone()).await;
        let e = r
            .error
            .as_ref()
            .unwrap_or_else(|| panic!("{args} should be refused"));
        assert_eq!(e.code.as_str(), code, "{args}: {}", e.message);
        assert_eq!(stage_of(&r), Some(stage), "{args}: {}", e.message);
        assert_eq!(h.snapshot().await, before, "{args} changed Redis");
    }

    // A duplicate cart name on createOrder: CONFLICT, and no stage (not an updateOrder).
    let r = h.reply("createOrder", cart("cart-3", "box")).await;
    assert_eq!(r.error.as_ref().unwrap().code.as_str(), "CONFLICT");
    assert_eq!(stage_of(&r), None);
    assert_eq!(h.snapshot().await, before);
}

#[tokio::test]
async fn status_changes_are_allowed_for_one_channel_and_refused_for_another() {
    let h = start().await;
    let mut args = monthly("off", "OFFLINE", 12, "20.00");
    args["paid"] = json!(true);
    assert_eq!(h.ok("createOrder", args).await["status"], "ACTIVE");
    let pause = by_id("off", json!({"status": "PAUSED"}));

    let before = h.snapshot().await;
    for channel in ["web", "cli"] {
        let r = as_channel(&h, channel, "updateOrder", pause.clone()).await;
        let e = r.error.as_ref().expect("forbidden");
        assert_eq!(e.code.as_str(), "FORBIDDEN_STATUS_CHANGE");
        assert_eq!(
            e.message,
            format!("channel {channel} may not change status from ACTIVE to PAUSED")
        );
        assert_eq!(stage_of(&r), Some("fields"));
        assert_eq!(h.snapshot().await, before);
    }

    let r = as_channel(&h, "backoffice", "updateOrder", pause.clone()).await;
    assert!(r.ok, "{:?}", r.error);
    assert_eq!(r.result.unwrap()["status"], "PAUSED");

    let resume = by_id("off", json!({"status": "ACTIVE"}));
    let r = as_channel(&h, "web", "updateOrder", resume.clone()).await;
    assert_eq!(
        r.error.unwrap().code.as_str(),
        "FORBIDDEN_STATUS_CHANGE",
        "web may not resume"
    );
    let r = as_channel(&h, "backoffice", "updateOrder", resume).await;
    assert_eq!(r.result.unwrap()["status"], "ACTIVE");

    // Listed, but no lifecycle command ends an order on request.
    let before = h.snapshot().await;
    let r = as_channel(
        &h,
        "backoffice",
        "updateOrder",
        by_id("off", json!({"status": "ENDED"})),
    )
    .await;
    assert_eq!(r.error.as_ref().unwrap().code.as_str(), "INVALID_STATE");
    assert_eq!(stage_of(&r), Some("fields"));
    assert_eq!(h.snapshot().await, before);

    // web may cancel: CANCELED runs cancelOrder IMMEDIATELY.
    let r = as_channel(
        &h,
        "web",
        "updateOrder",
        by_id("off", json!({"status": "CANCELED"})),
    )
    .await;
    let o = r.result.expect("canceled");
    assert_eq!(o["status"], "CANCELED");
    assert_eq!(o["cancellation"]["effectiveAt"], "IMMEDIATELY");
    assert_eq!(o["endDate"], "2026-01-01T00:00:00.000Z");

    let t = h.timeline("off").await;
    assert_eq!(
        &types(&t)[4..],
        [
            "orderPaused",
            "orderUpdated",
            "orderResumed",
            "orderUpdated",
            "orderCanceled",
            "orderEnded",
            "orderUpdated"
        ]
    );
    let stats = h.ok("getCustomerStats", json!({"customerId": "c1"})).await;
    assert_eq!(stats["activeOrdersCount"], 0, "{stats}");
}

#[tokio::test]
async fn concurrent_updates_of_one_order_are_all_applied_in_turn() {
    let h = start().await;
    let created = h.ok("createOrder", cart("cart-1", "box")).await;
    let v0 = created["version"].as_u64().unwrap();
    const N: u64 = 24;
    let replies = join_all((0..N).map(|i| {
        h.reply(
            "updateOrder",
            by_id(
                "cart-1",
                json!({"lineItems": {"create": [item(&format!("i{i}"), 1, "1.00")]}, "options": {"returnModel": false}}),
            ),
        )
    }))
    .await;
    let versions: BTreeSet<u64> = replies
        .iter()
        .map(|r| {
            assert!(r.ok, "{:?}", r.error);
            r.result.as_ref().unwrap()["version"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(
        versions,
        (v0 + 1..=v0 + N).collect::<BTreeSet<u64>>(),
        "each update saw the one before it"
    );

    let o = h.ok("getOrder", json!({"orderId": "cart-1"})).await;
    let ids: BTreeSet<String> = o["lineItems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, (0..N).map(|i| format!("i{i}")).collect());
    assert_eq!(o["priceDetails"]["total"], "34.00", "10.00 + 24 x 1.00");

    // In the event stream, sequences strictly increase, and so do the versions of its changes
    // (the events of one change share its entity).
    let events: Vec<Value> = h
        .events()
        .await
        .into_iter()
        .filter(|e| e["entityId"] == "cart-1")
        .collect();
    assert_eq!(events.len() as u64, 1 + N);
    for pair in events.windows(2) {
        assert!(pair[0]["sequence"].as_u64() < pair[1]["sequence"].as_u64());
        assert!(pair[0]["entity"]["version"].as_u64() <= pair[1]["entity"]["version"].as_u64());
    }
    let versions: Vec<u64> = h
        .changes()
        .await
        .into_iter()
        .filter(|c| c["orderId"] == "cart-1")
        .map(|c| c["version"].as_u64().unwrap())
        .collect();
    assert!(versions.windows(2).all(|w| w[0] < w[1]), "{versions:?}");
    assert_eq!(versions.len() as u64, 1 + N, "one change per request");

    // With expectedVersion, only one of several concurrent writers of a version wins.
    let v = o["version"].as_u64().unwrap();
    let replies = join_all((0..6).map(|i| {
        h.reply(
            "updateOrder",
            by_id(
                "cart-1",
                json!({"expectedVersion": v, "lineItems": {"create": [item(&format!("j{i}"), 1, "1.00")]}}),
            ),
        )
    }))
    .await;
    assert_eq!(replies.iter().filter(|r| r.ok).count(), 1);
    for r in replies.iter().filter(|r| !r.ok) {
        assert_eq!(r.error.as_ref().unwrap().code.as_str(), "CONFLICT");
        assert_eq!(stage_of(r), Some("load"));
    }
}

#[tokio::test]
async fn cart_names_are_unique_per_customer_among_carts() {
    let h = start().await;
    h.ok("createOrder", cart("a", "box")).await;
    // A retried create with the same client-chosen id returns the first cart.
    assert_eq!(h.ok("createOrder", cart("a", "box")).await["id"], "a");
    let e = h.err("createOrder", cart("b", "box")).await;
    assert_eq!(e.code.as_str(), "CONFLICT");
    assert!(
        e.message.contains("already has a cart named 'box'"),
        "{}",
        e.message
    );

    let mut other = cart("c", "box");
    other["customerId"] = json!("c2");
    h.ok("createOrder", other).await;

    // Renames: to a free name, then back; to a taken one is refused.
    h.ok("createOrder", cart("d", "bag")).await;
    let r = h
        .reply("updateOrder", by_name("bag", json!({"newName": "box"})))
        .await;
    assert_eq!(r.error.as_ref().unwrap().code.as_str(), "CONFLICT");
    assert_eq!(stage_of(&r), Some("fields"));
    let renamed = h
        .ok("updateOrder", by_name("bag", json!({"newName": "tote"})))
        .await;
    assert_eq!(renamed["name"], "tote");
    assert_eq!(
        h.ok("updateOrder", by_name("tote", json!({}))).await["id"],
        "d"
    );

    // Once a cart is bought, its name is free for a new cart, and finds the new one.
    h.ok(
        "recordPayment",
        json!({"orderId": "a", "paymentId": "p1", "amount": "10.00"}),
    )
    .await;
    h.ok("createOrder", cart("e", "box")).await;
    assert_eq!(
        h.ok("updateOrder", by_name("box", json!({}))).await["id"],
        "e"
    );
}

#[tokio::test]
async fn a_retried_update_applies_once() {
    let h = start().await;
    h.ok("createOrder", cart("cart-1", "box")).await;
    let args = by_id(
        "cart-1",
        json!({"lineItems": {"create": [item("mug", 1, "3.00")]}}),
    );
    let first = h.reply_with_id("upd-1", "updateOrder", args.clone()).await;
    assert!(first.ok);
    let again = h.reply_with_id("upd-1", "updateOrder", args).await;
    assert_eq!(
        again, first,
        "the kept reply, not a CONFLICT on the existing item"
    );
    let o = h.ok("getOrder", json!({"orderId": "cart-1"})).await;
    assert_eq!(o["lineItems"].as_array().unwrap().len(), 1);
    assert_eq!(o["version"], first.result.unwrap()["version"]);
}
