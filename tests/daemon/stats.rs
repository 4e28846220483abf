//! CustomerStats: exact under create, pay, refund, delete, crashes and retries. Every check
//! compares getCustomerStats with a recomputation done here, independently, from the orders
//! stored in Redis.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::time::Duration;

use futures_util::future::join_all;
use redis::AsyncCommands;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use recur::admin::client::AdminClient;

use crate::support::*;

/// Recomputes every customer's figures from the stored orders (not through recur's code).
async fn recompute_here(redis: &TestRedis, prefix: &str) -> BTreeMap<String, Value> {
    let mut conn = redis.conn().await;
    let keys: Vec<String> = conn.keys(format!("{prefix}:{{p*}}:order:*")).await.unwrap();
    let mut by_customer: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for k in keys {
        let raw: String = conn.hget(&k, "d").await.unwrap();
        let o: Value = serde_json::from_str(&raw).unwrap();
        by_customer
            .entry(o["customerId"].as_str().unwrap().to_string())
            .or_default()
            .push(o);
    }
    let mut out = BTreeMap::new();
    for (customer, orders) in by_customer {
        let mut money: BTreeMap<String, (Decimal, Decimal)> = BTreeMap::new();
        let (mut paid_orders, mut active, mut last_order, mut last_payment) =
            (0, 0, String::new(), String::new());
        for o in &orders {
            // The stored form leaves out fields at their default: no payments, no key.
            let none = Vec::new();
            let payments = o["payments"].as_array().unwrap_or(&none);
            if payments.iter().any(|p| {
                !Decimal::from_str(p["amount"].as_str().unwrap())
                    .unwrap()
                    .is_zero()
            }) {
                paid_orders += 1;
            }
            if matches!(o["status"].as_str(), Some("ACTIVE" | "PAUSED")) {
                active += 1;
            }
            last_order = last_order.max(o["createdDate"].as_str().unwrap().to_string());
            for p in payments {
                let e = money
                    .entry(o["currency"].as_str().unwrap().to_string())
                    .or_default();
                e.0 += Decimal::from_str(p["amount"].as_str().unwrap()).unwrap();
                e.1 += Decimal::from_str(p["refunded"].as_str().unwrap()).unwrap();
                last_payment = last_payment.max(p["date"].as_str().unwrap().to_string());
            }
        }
        let money: serde_json::Map<String, Value> = money
            .into_iter()
            .filter(|(_, (p, r))| !(p.is_zero() && r.is_zero()))
            .map(|(c, (p, r))| (c, json!({"paid": p.to_string(), "refunded": r.to_string()})))
            .collect();
        out.insert(
            customer.clone(),
            json!({
                "customerId": customer,
                "money": money,
                "ordersCount": orders.len(),
                "paidOrdersCount": paid_orders,
                "activeOrdersCount": active,
                "lastOrderDate": last_order,
                "lastPaymentDate": if last_payment.is_empty() { Value::Null } else { Value::from(last_payment) },
            }),
        );
    }
    out
}

async fn assert_stats_exact(client: &AdminClient, redis: &TestRedis, prefix: &str) {
    let expected = recompute_here(redis, prefix).await;
    assert!(!expected.is_empty());
    for (customer, want) in &expected {
        let r = client
            .request("getCustomerStats", json!({"customerId": customer}))
            .await
            .unwrap();
        assert!(r.ok, "{:?}", r.error);
        assert_eq!(&r.result.unwrap(), want, "customer {customer}");
    }
    // Every delta was applied and acknowledged: no outbox entry is left behind.
    let mut conn = redis.conn().await;
    let partitions: u16 = conn
        .hget(format!("{prefix}:meta"), "partitions")
        .await
        .unwrap();
    assert_eq!(partitions, recur::store::DEFAULT_PARTITIONS);
    for p in 0..partitions {
        let left: usize = conn
            .xlen(format!("{prefix}:{{p{p}}}:outbox"))
            .await
            .unwrap();
        assert_eq!(left, 0, "outbox of partition {p}");
    }
}

/// Tiny deterministic PRNG so a failing run can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn order_args(i: usize, rng: &mut Rng) -> Value {
    let currency = ["USD", "EUR", "JPY"][rng.below(3) as usize];
    let kind = ["ONLINE", "OFFLINE", "EXTERNAL"][rng.below(3) as usize];
    let unit = ["WEEK", "MONTH"][rng.below(2) as usize];
    let amount = if currency == "JPY" {
        format!("{}", 100 + rng.below(900))
    } else {
        format!("{}.{:02}", 1 + rng.below(50), rng.below(100))
    };
    json!({
        "orderId": format!("o{i}"),
        "customerId": format!("c{}", rng.below(200)),
        "plan": {"id": "p", "name": "Plan"},
        "type": kind,
        "pricing": {"subscription": {"cycleDuration": {"count": 1, "unit": unit}, "cycleCount": rng.below(13)}},
        "prices": [{"cycleFrom": 1, "amount": amount}],
        "currency": currency,
    })
}

/// One random operation on order `i` (errors such as INVALID_STATE are expected and fine).
fn random_op(i: usize, rng: &mut Rng, amounts: &BTreeMap<usize, String>) -> (&'static str, Value) {
    let id = format!("o{i}");
    let amount = amounts.get(&i).cloned().unwrap_or_else(|| "1".into());
    match rng.below(12) {
        // Plan changes (SPEC 8): now or at the next payment date, prorated or not, to the same
        // or another cycle duration, at the order's own price (valid in its currency); some are
        // refused (OFFLINE with proration, a paused order), as in real life.
        10 => {
            let unit = ["MONTH", "WEEK", "YEAR"][rng.below(3) as usize];
            let effective_at = ["IMMEDIATELY", "NEXT_PAYMENT_DATE"][rng.below(2) as usize];
            let proration = ["PRORATE", "NONE"][rng.below(2) as usize];
            (
                "changePlan",
                json!({"orderId": id, "plan": {"id": "changed", "name": "Changed"},
                    "pricing": {"subscription": {"cycleDuration": {"count": 1, "unit": unit}, "cycleCount": 0}},
                    "prices": [{"cycleFrom": 1, "amount": amount}],
                    "effectiveAt": effective_at, "proration": proration}),
            )
        }
        11 => ("cancelScheduledChange", json!({"orderId": id})),
        0..=3 => (
            "recordPayment",
            json!({"orderId": id, "paymentId": format!("pay{}", rng.below(4)), "amount": amount}),
        ),
        4 => ("markAsPaid", json!({"orderId": id})),
        5 => ("pauseOrder", json!({"orderId": id})),
        6 => ("resumeOrder", json!({"orderId": id})),
        7 => {
            let effective_at = ["IMMEDIATELY", "NEXT_PAYMENT_DATE"][rng.below(2) as usize];
            (
                "cancelOrder",
                json!({"orderId": id, "effectiveAt": effective_at}),
            )
        }
        8 => (
            "recordRefund",
            json!({"orderId": id, "paymentId": format!("pay{}", rng.below(4)), "amount": "1"}),
        ),
        _ => ("deleteOrder", json!({"orderId": id})),
    }
}

async fn simulate(
    client: &AdminClient,
    orders: usize,
    seed: u64,
    months: &[&str],
    mut between: impl FnMut(usize),
) {
    let mut rng = Rng(seed);
    let mut amounts = BTreeMap::new();
    let mut creates = Vec::new();
    for i in 0..orders {
        let args = order_args(i, &mut rng);
        amounts.insert(i, args["prices"][0]["amount"].as_str().unwrap().to_string());
        creates.push(args);
    }
    for chunk in creates.chunks(250) {
        let replies = join_all(
            chunk
                .iter()
                .map(|a| client.request("createOrder", a.clone())),
        )
        .await;
        assert!(replies.iter().all(|r| r.as_ref().unwrap().ok));
    }
    for (step, to) in months.iter().enumerate() {
        let ops: Vec<(&str, Value)> = (0..orders / 2)
            .map(|_| {
                let i = rng.below(orders as u64) as usize;
                random_op(i, &mut rng, &amounts)
            })
            .collect();
        for chunk in ops.chunks(250) {
            let replies = join_all(chunk.iter().map(|(c, a)| client.request(c, a.clone()))).await;
            for r in replies {
                let r = r.unwrap();
                if let Some(e) = &r.error {
                    assert!(
                        !matches!(e.code.as_str(), "INTERNAL" | "UNAVAILABLE"),
                        "{e:?}"
                    );
                }
            }
        }
        client
            .request("advanceClock", json!({"to": to}))
            .await
            .unwrap();
        between(step);
    }
}

const YEAR: [&str; 6] = [
    "2026-02-15T00:00:00Z",
    "2026-04-01T00:00:00Z",
    "2026-06-01T00:00:00Z",
    "2026-08-15T00:00:00Z",
    "2026-10-01T00:00:00Z",
    "2027-01-15T00:00:00Z",
];

#[tokio::test]
async fn stats_equal_a_recomputation_after_a_year_of_random_activity() {
    let h = Harness::start().await;
    simulate(&h.client, 2000, 0x5eed_0001, &YEAR, |_| {}).await;
    assert_stats_exact(&h.client, &h.redis, "t").await;
    // recomputeCustomerStats agrees: nothing to fix.
    let r = h
        .ok("recomputeCustomerStats", json!({"customerId": "c7"}))
        .await;
    assert_eq!(r["differences"], json!([]));
}

#[tokio::test]
async fn stats_stay_exact_when_the_daemon_is_killed_at_random_points() {
    let redis = TestRedis::start().await;
    let mut daemon = Some(ChildDaemon::start(&redis.url, "t", &[]).await);
    let client = AdminClient::connect(&redis.url, "t").await.unwrap();
    let mut rng = Rng(0xdead_beef);
    // Kill it in the middle of each phase's traffic, then restart before going on.
    let redis_url = redis.url.clone();
    let phases = [
        "2026-03-01T00:00:00Z",
        "2026-06-01T00:00:00Z",
        "2026-09-01T00:00:00Z",
        "2027-01-15T00:00:00Z",
    ];
    let mut amounts = BTreeMap::new();
    let orders = 600;
    let mut creates = Vec::new();
    for i in 0..orders {
        let args = order_args(i, &mut rng);
        amounts.insert(i, args["prices"][0]["amount"].as_str().unwrap().to_string());
        creates.push(args);
    }
    for chunk in creates.chunks(200) {
        for r in join_all(
            chunk
                .iter()
                .map(|a| client.request("createOrder", a.clone())),
        )
        .await
        {
            assert!(r.unwrap().ok);
        }
    }
    for to in phases {
        let ops: Vec<(&str, Value)> = (0..orders)
            .map(|_| {
                let i = rng.below(orders as u64) as usize;
                random_op(i, &mut rng, &amounts)
            })
            .collect();
        let kill_after = Duration::from_millis(20 + rng.below(200));
        let traffic = async {
            // The client retries with the same request ids across the crash.
            for r in join_all(ops.iter().map(|(c, a)| client.request(c, a.clone()))).await {
                let r = r.unwrap();
                if let Some(e) = &r.error {
                    assert!(
                        !matches!(e.code.as_str(), "INTERNAL" | "UNAVAILABLE"),
                        "{e:?}"
                    );
                }
            }
        };
        let crash = async {
            tokio::time::sleep(kill_after).await;
            daemon.take().unwrap().kill().await;
            tokio::time::sleep(Duration::from_millis(50)).await;
            daemon = Some(ChildDaemon::start(&redis_url, "t", &[]).await);
        };
        tokio::join!(traffic, crash);
        let r = client
            .request("advanceClock", json!({"to": to}))
            .await
            .unwrap();
        assert!(r.ok, "{:?}", r.error);
    }
    assert_stats_exact(&client, &redis, "t").await;
    // No payment counted twice: every kept figure is a sum over unique payment ids.
    let mut conn = redis.conn().await;
    let keys: Vec<String> = conn.keys("t:{p*}:order:*").await.unwrap();
    for k in keys {
        let raw: String = conn.hget(&k, "d").await.unwrap();
        let o: Value = serde_json::from_str(&raw).unwrap();
        let none = Vec::new();
        let mut ids: Vec<&str> = o["payments"]
            .as_array()
            .unwrap_or(&none)
            .iter()
            .map(|p| p["id"].as_str().unwrap())
            .collect();
        let n = ids.len();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), n);
    }
    daemon.take().unwrap().kill().await;
}

#[tokio::test]
async fn deleting_an_order_subtracts_exactly_its_money() {
    let h = Harness::start().await;
    let mut a = monthly("a", "EXTERNAL", 3, "10.00");
    a["customerId"] = json!("cus");
    let mut b = monthly("b", "EXTERNAL", 3, "7.00");
    b["customerId"] = json!("cus");
    b["currency"] = json!("EUR");
    h.ok("createOrder", a).await;
    h.ok("createOrder", b).await;
    h.ok(
        "recordPayment",
        json!({"orderId": "a", "paymentId": "x", "amount": "10.00"}),
    )
    .await;
    h.ok(
        "recordPayment",
        json!({"orderId": "a", "paymentId": "y", "amount": "2.50"}),
    )
    .await;
    h.ok(
        "recordRefund",
        json!({"orderId": "a", "paymentId": "y", "amount": "1.25"}),
    )
    .await;
    h.ok(
        "recordPayment",
        json!({"orderId": "b", "paymentId": "z", "amount": "7.00"}),
    )
    .await;
    let s = h.ok("getCustomerStats", json!({"customerId": "cus"})).await;
    assert_eq!(
        s["money"],
        json!({"USD": {"paid": "12.50", "refunded": "1.25"}, "EUR": {"paid": "7.00", "refunded": "0.00"}})
    );
    assert_eq!(
        (
            s["ordersCount"].as_i64(),
            s["paidOrdersCount"].as_i64(),
            s["activeOrdersCount"].as_i64()
        ),
        (Some(2), Some(2), Some(2))
    );
    h.ok("deleteOrder", json!({"orderId": "a"})).await;
    let s = h.ok("getCustomerStats", json!({"customerId": "cus"})).await;
    assert_eq!(
        s["money"],
        json!({"EUR": {"paid": "7.00", "refunded": "0.00"}})
    );
    assert_eq!(s["ordersCount"], 1);
    assert_eq!(s["paidOrdersCount"], 1);
    assert_eq!(s["activeOrdersCount"], 1);
    // A customer with no orders: zeros, not an error.
    let empty = h
        .ok("getCustomerStats", json!({"customerId": "nobody"}))
        .await;
    assert_eq!(
        empty,
        json!({"customerId": "nobody", "money": {}, "ordersCount": 0, "paidOrdersCount": 0, "activeOrdersCount": 0, "lastOrderDate": null, "lastPaymentDate": null})
    );
}

#[tokio::test]
async fn recompute_fixes_stats_after_an_out_of_band_delete_and_reports_it() {
    let h = Harness::start().await;
    for (id, amount) in [("a", "10.00"), ("b", "4.00")] {
        let mut args = monthly(id, "EXTERNAL", 3, amount);
        args["customerId"] = json!("cus");
        h.ok("createOrder", args).await;
        h.ok(
            "recordPayment",
            json!({"orderId": id, "paymentId": "p", "amount": amount}),
        )
        .await;
    }
    // Remove order a's keys by hand, outside recur.
    let mut conn = h.redis.conn().await;
    let keys: Vec<String> = conn.keys("t:{p*}:order:a").await.unwrap();
    assert_eq!(keys.len(), 1);
    let _: () = conn.del(&keys[0]).await.unwrap();
    let stale = h.ok("getCustomerStats", json!({"customerId": "cus"})).await;
    assert_eq!(stale["money"]["USD"]["paid"], "14.00");
    let r = h
        .ok("recomputeCustomerStats", json!({"customerId": "cus"}))
        .await;
    assert_eq!(r["stats"]["money"]["USD"]["paid"], "4.00");
    assert_eq!(r["stats"]["ordersCount"], 1);
    let fields: Vec<&str> = r["differences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["field"].as_str().unwrap())
        .collect();
    assert!(
        fields.contains(&"ordersCount") && fields.contains(&"money.USD.paid"),
        "{fields:?}"
    );
    let paid = r["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["field"] == "money.USD.paid")
        .unwrap();
    assert_eq!(
        (paid["stored"].as_str(), paid["recomputed"].as_str()),
        (Some("14.00"), Some("4.00"))
    );
    assert_eq!(
        h.ok("getCustomerStats", json!({"customerId": "cus"})).await,
        r["stats"]
    );
    assert_eq!(
        h.ok("recomputeCustomerStats", json!({"customerId": "cus"}))
            .await["differences"],
        json!([])
    );
}

#[tokio::test]
async fn replayed_payments_and_request_ids_change_nothing() {
    let h = Harness::start().await;
    let mut a = monthly("a", "EXTERNAL", 3, "10.00");
    a["customerId"] = json!("cus");
    h.ok("createOrder", a).await;
    let pay = json!({"orderId": "a", "paymentId": "p1", "amount": "10.00"});
    h.reply_with_id("pay-req", "recordPayment", pay.clone())
        .await;
    let once = h.ok("getCustomerStats", json!({"customerId": "cus"})).await;
    h.reply_with_id("pay-req", "recordPayment", pay.clone())
        .await;
    h.ok("recordPayment", pay).await;
    assert_eq!(
        h.ok("getCustomerStats", json!({"customerId": "cus"})).await,
        once
    );
    assert_eq!(once["money"]["USD"]["paid"], "10.00");
}

#[tokio::test]
async fn deltas_left_in_the_outbox_are_applied_once_at_start_up() {
    let mut h = Harness::start().await;
    let mut a = monthly("a", "EXTERNAL", 3, "10.00");
    a["customerId"] = json!("cus");
    h.ok("createOrder", a).await;
    h.ok(
        "recordPayment",
        json!({"orderId": "a", "paymentId": "p", "amount": "10.00"}),
    )
    .await;
    let expected = h.ok("getCustomerStats", json!({"customerId": "cus"})).await;
    h.stop().await;
    // As if the daemon died after the order's commits but before any stats update: the stats
    // are gone and the outbox holds the order's deltas, one of them twice, and a stale one.
    let mut conn = h.redis.conn().await;
    let keys = recur::store::Keys::new("t", recur::store::DEFAULT_PARTITIONS);
    let (contrib_key, stats_key) = (
        keys.stats_keys().customer_contributions("cus"),
        keys.stats_keys().customer_stats("cus"),
    );
    let contrib: BTreeMap<String, String> = conn.hgetall(&contrib_key).await.unwrap();
    let latest: Value = serde_json::from_str(&contrib["a"]).unwrap();
    let _: () = conn.del(&[&contrib_key, &stats_key]).await.unwrap();
    let order_key: Vec<String> = conn.keys("t:{p*}:order:a").await.unwrap();
    let outbox_key = order_key[0].replace(":order:a", ":outbox");
    let mut stale = latest.clone();
    stale["v"] = json!(1);
    stale["p"] = json!(0);
    stale["m"] = json!({});
    for k in [&latest, &latest, &stale] {
        let delta = json!({"c": "cus", "o": "a", "v": k["v"], "k": k}).to_string();
        let _: String = conn
            .xadd(&outbox_key, "*", &[("delta", delta)])
            .await
            .unwrap();
    }
    h.restart().await;
    assert_eq!(
        h.ok("getCustomerStats", json!({"customerId": "cus"})).await,
        expected
    );
    let left: usize = conn.xlen(&outbox_key).await.unwrap();
    assert_eq!(left, 0, "every swept entry is acknowledged");
}

/// SPEC 8 through the daemon: an upgrade at half a 30-day cycle asks for the difference as a
/// PRORATION due; paying it is money, the credit of a downgrade is not; the customer's figures
/// still equal a recomputation from the stored orders.
#[tokio::test]
async fn plan_changes_keep_customer_stats_exact() {
    let h = Harness::start().await;
    let thirty = |id: &str, amount: &str| {
        let mut a = monthly(id, "ONLINE", 0, amount);
        a["customerId"] = json!("cus");
        a["pricing"]["subscription"]["cycleDuration"] = json!({"count": 30, "unit": "DAY"});
        a
    };
    h.ok("createOrder", thirty("up", "10.00")).await;
    h.ok("createOrder", thirty("down", "30.00")).await;
    for (id, amount) in [("up", "10.00"), ("down", "30.00")] {
        h.ok(
            "recordPayment",
            json!({"orderId": id, "paymentId": format!("{id}-1"), "amount": amount}),
        )
        .await;
    }
    // Half of [1 Jan, 31 Jan).
    h.advance("2026-01-16T00:00:00Z").await;
    let plan = |amount: &str| {
        json!({
            "plan": {"id": format!("p{amount}"), "name": "Thirty days"},
            "pricing": {"subscription": {"cycleDuration": {"count": 30, "unit": "DAY"}, "cycleCount": 0}},
            "prices": [{"cycleFrom": 1, "amount": amount}],
            "effectiveAt": "IMMEDIATELY",
        })
    };
    let mut args = plan("30.00");
    args["orderId"] = json!("up");
    let up = h.ok("changePlan", args).await;
    assert_eq!(up["paymentsDue"][0]["kind"], "PRORATION");
    assert_eq!(up["paymentsDue"][0]["amount"], "10.00");
    let mut args = plan("10.00");
    args["orderId"] = json!("down");
    let down = h.ok("changePlan", args).await;
    assert_eq!(down["creditBalance"], "10.00");
    let t = h.timeline("up").await;
    assert!(types(&t).contains(&"orderPlanChanged"));
    h.ok(
        "recordPayment",
        json!({"orderId": "up", "paymentId": "up-2", "amount": "10.00"}),
    )
    .await;
    let s = h.ok("getCustomerStats", json!({"customerId": "cus"})).await;
    assert_eq!(
        s["money"]["USD"]["paid"], "50.00",
        "10 + 30 + the 10.00 proration; no credit"
    );
    assert_stats_exact(&h.client, &h.redis, "t").await;
    // Cycle 2 of the downgraded order is covered by its credit: nothing is asked.
    h.advance("2026-02-01T00:00:00Z").await;
    let d = h.ok("getOrder", json!({"orderId": "down"})).await;
    assert_eq!(d["currentCycle"]["index"], 2);
    assert_eq!(d["currentCycle"]["creditApplied"], "10.00");
    assert_eq!(d["paymentsDue"], json!([]));
    let bad = h
        .err("changePlan", {
            let mut a = plan("20.00");
            a["orderId"] = json!("down");
            a["currency"] = json!("EUR");
            a
        })
        .await;
    assert_eq!(bad.code.as_str(), "INVALID_REQUEST");
}
