//! Previews write nothing and say exactly what happens: previewOrder equals what an advance to
//! `until` then writes, event for event, over varied orders and command histories; a command
//! with `preview: true` answers what the command then does.

use serde_json::{json, Value};

use crate::support::*;

/// A small deterministic generator: the histories vary with the seed, and a failure names it.
struct Rng(u64);

impl Rng {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn order_args(id: &str, rng: &mut Rng) -> Value {
    let kind = ["ONLINE", "OFFLINE", "EXTERNAL"][rng.next(3) as usize];
    let unit = ["DAY", "WEEK", "MONTH", "YEAR"][rng.next(4) as usize];
    let count = 1 + rng.next(2);
    let cycles = rng.next(6);
    let mut args = monthly(id, kind, cycles as u32, "12.50");
    args["customerId"] = json!(format!("cust-{id}"));
    args["pricing"]["subscription"]["cycleDuration"] = json!({"count": count, "unit": unit});
    if rng.next(3) == 0 {
        args["freeTrialDays"] = json!(1 + rng.next(10));
    }
    args
}

/// The events of `order_id` after `after` (its sequence then), as a preview shows them.
async fn written_after(h: &Harness, order_id: &str, after: u64) -> Vec<Value> {
    h.events()
        .await
        .into_iter()
        .filter(|e| e["entityId"] == order_id && e["sequence"].as_u64().unwrap() > after)
        .map(|e| {
            json!({"type": e["type"], "eventTime": e["eventTime"], "sequence": e["sequence"], "data": e["data"]})
        })
        .collect()
}

#[tokio::test]
async fn previews_equal_what_the_advance_then_writes_and_change_nothing() {
    for seed in 1..=3u64 {
        let h = Harness::start().await;
        let mut rng = Rng(seed);
        let ids: Vec<String> = (0..8).map(|i| format!("o{seed}-{i}")).collect();
        for id in &ids {
            h.ok("createOrder", order_args(id, &mut rng)).await;
        }
        // A history: payments, pauses, cancellations, plan changes, time passing.
        h.advance("2026-01-05T00:00:00Z").await;
        for id in &ids {
            let when = ["IMMEDIATELY", "NEXT_PAYMENT_DATE"][rng.next(2) as usize];
            let (command, args) = match rng.next(6) {
                0 => (
                    "recordPayment",
                    json!({"orderId": id, "paymentId": "p1", "amount": "12.50"}),
                ),
                1 => (
                    "pauseOrder",
                    json!({"orderId": id, "resumeAt": "2026-02-10T00:00:00Z"}),
                ),
                2 => (
                    "cancelOrder",
                    json!({"orderId": id, "effectiveAt": "NEXT_PAYMENT_DATE"}),
                ),
                3 => (
                    "changePlan",
                    json!({"orderId": id, "plan": {"id": "w", "name": "Weekly"},
                        "pricing": {"subscription": {"cycleDuration": {"count": 1, "unit": "WEEK"}, "cycleCount": 0}},
                        "prices": [{"cycleFrom": 1, "amount": "3.00"}],
                        "effectiveAt": when}),
                ),
                4 => ("markAsPaid", json!({"orderId": id})),
                _ => ("getOrder", json!({"orderId": id})),
            };
            // Refusals (a state that does not allow it) are part of a history too.
            let _ = h.reply(command, args).await;
        }
        let until = [
            "2026-03-01T00:00:00Z",
            "2026-07-15T12:00:00Z",
            "2027-02-01T00:00:00Z",
        ][seed as usize - 1];
        let before = h.snapshot().await;
        let mut previews = Vec::new();
        for id in &ids {
            let p = h
                .ok("previewOrder", json!({"orderId": id, "until": until}))
                .await;
            let now = h.ok("getOrder", json!({"orderId": id})).await;
            previews.push((id.clone(), now["sequence"].as_u64().unwrap(), p));
        }
        assert_eq!(
            h.snapshot()
                .await
                .into_iter()
                .filter(|(k, _)| k.contains(":order:"))
                .collect::<Vec<_>>(),
            before
                .into_iter()
                .filter(|(k, _)| k.contains(":order:"))
                .collect::<Vec<_>>(),
            "seed {seed}: a preview changes no order"
        );
        h.advance(until).await;
        let previewed: usize = previews
            .iter()
            .map(|(_, _, p)| p["events"].as_array().unwrap().len())
            .sum();
        assert!(
            previewed >= 8,
            "seed {seed}: the previews foresee changes ({previewed})"
        );
        for (id, seq, p) in previews {
            let written = written_after(&h, &id, seq).await;
            assert_eq!(
                p["events"].as_array().unwrap(),
                &written,
                "seed {seed}, order {id}: the preview's events are the advance's"
            );
            let after = h.ok("getOrder", json!({"orderId": id})).await;
            assert_eq!(
                p["order"], after,
                "seed {seed}, order {id}: the order as of until"
            );
        }
    }
}

#[tokio::test]
async fn a_command_with_preview_true_answers_what_the_command_then_does() {
    let h = Harness::start().await;
    h.ok("createOrder", monthly("o1", "ONLINE", 12, "30.00"))
        .await;
    h.ok(
        "recordPayment",
        json!({"orderId": "o1", "paymentId": "p1", "amount": "30.00"}),
    )
    .await;
    h.advance("2026-01-16T00:00:00Z").await;
    let change = json!({"orderId": "o1", "plan": {"id": "small", "name": "Small"},
        "pricing": {"subscription": {"cycleDuration": {"count": 1, "unit": "MONTH"}, "cycleCount": 12}},
        "prices": [{"cycleFrom": 1, "amount": "10.00"}], "effectiveAt": "IMMEDIATELY"});
    let cases = [
        ("changePlan", change),
        (
            "pauseOrder",
            json!({"orderId": "o1", "resumeAt": "2026-02-01T00:00:00Z"}),
        ),
        (
            "cancelOrder",
            json!({"orderId": "o1", "effectiveAt": "IMMEDIATELY"}),
        ),
    ];
    for (command, args) in cases {
        let before = h.snapshot().await;
        let mut previewed = args.clone();
        previewed["preview"] = json!(true);
        let p = h.ok(command, previewed).await;
        assert_eq!(h.snapshot().await.len(), before.len());
        let order_key_before: Vec<_> = before
            .iter()
            .filter(|(k, _)| k.contains(":order:"))
            .collect();
        let now = h.snapshot().await;
        let order_key_after: Vec<_> = now.iter().filter(|(k, _)| k.contains(":order:")).collect();
        assert_eq!(
            order_key_before, order_key_after,
            "{command}: nothing applied"
        );
        assert_eq!(p["preview"], true);
        let seq = h.ok("getOrder", json!({"orderId": "o1"})).await["sequence"]
            .as_u64()
            .unwrap();
        let done = h.ok(command, args).await;
        assert_eq!(
            p["order"], done,
            "{command}: the order the command then gives"
        );
        assert_eq!(
            p["events"].as_array().unwrap(),
            &written_after(&h, "o1", seq).await,
            "{command}: its events"
        );
        if command == "changePlan" {
            // A downgrade half way through a paid cycle: a credit, shown before it is applied.
            assert!(
                p["proration"]["net"].as_str().unwrap().starts_with('-'),
                "{p}"
            );
            assert_eq!(p["proration"], p["events"][0]["data"]["proration"]);
        }
        // Back to a state the next case can run on.
        if command == "pauseOrder" {
            h.ok("resumeOrder", json!({"orderId": "o1"})).await;
        }
    }
    // A preview is refused like the command.
    let e = h
        .err("pauseOrder", json!({"orderId": "o1", "preview": true}))
        .await;
    assert_eq!(e.code.as_str(), "INVALID_STATE");
    let e = h
        .err("pauseOrder", json!({"orderId": "o1", "preview": "yes"}))
        .await;
    assert_eq!(e.code.as_str(), "INVALID_REQUEST");
    let e = h
        .err(
            "previewOrder",
            json!({"orderId": "o1", "until": "2040-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(e.code.as_str(), "INVALID_REQUEST");
    let e = h
        .err(
            "previewOrder",
            json!({"orderId": "nope", "until": "2027-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(e.code.as_str(), "NOT_FOUND");
}

#[tokio::test]
async fn the_forecast_counts_what_the_book_will_do_month_by_month() {
    let h = Harness::start().await;
    // Paid ONLINE monthly, 12 cycles at 10.00 USD: cycles 2..12 bill Feb..Dec.
    h.ok("createOrder", monthly("online", "ONLINE", 12, "10.00"))
        .await;
    h.ok(
        "recordPayment",
        json!({"orderId": "online", "paymentId": "p1", "amount": "10.00"}),
    )
    .await;
    // EXTERNAL weekly at 3.000 KWD, unlimited.
    let mut weekly = monthly("kwd", "EXTERNAL", 0, "3.000");
    weekly["currency"] = json!("KWD");
    weekly["customerId"] = json!("c2");
    weekly["pricing"]["subscription"]["cycleDuration"] = json!({"count": 1, "unit": "WEEK"});
    h.ok("createOrder", weekly).await;
    // OFFLINE monthly for 3 cycles: starts but bills nothing, ends in April.
    let mut offline = monthly("offline", "OFFLINE", 3, "99.00");
    offline["customerId"] = json!("c3");
    h.ok("createOrder", offline).await;
    // EXTERNAL monthly canceled at the next payment date: one cancellation in February.
    let mut leaving = monthly("leaving", "EXTERNAL", 0, "5.00");
    leaving["customerId"] = json!("c4");
    h.ok("createOrder", leaving).await;
    h.ok(
        "cancelOrder",
        json!({"orderId": "leaving", "effectiveAt": "NEXT_PAYMENT_DATE"}),
    )
    .await;

    let f = h
        .ok(
            "forecast",
            json!({"from": "2026-01-01T00:00:00Z", "to": "2026-12-31T00:00:00Z"}),
        )
        .await;
    let months = f["months"].as_array().unwrap();
    assert_eq!(months.len(), 12);
    assert_eq!(months[0]["month"], "2026-01");
    assert_eq!(months[11]["month"], "2026-12");
    assert_eq!(months[1]["charges"]["USD"], "10.00", "{}", months[1]);
    assert_eq!(months[11]["charges"]["USD"], "10.00");
    let usd: rust_decimal::Decimal = months
        .iter()
        .filter_map(|m| m["charges"]["USD"].as_str())
        .map(|a| a.parse::<rust_decimal::Decimal>().unwrap())
        .sum();
    assert_eq!(usd.to_string(), "110.00", "cycles 2 to 12");
    assert_eq!(
        months[3]["ends"], 1,
        "the OFFLINE order ends on Apr 1: {}",
        months[3]
    );
    assert_eq!(months[1]["cancellations"], 1, "{}", months[1]);
    assert!(months[5]["charges"]["KWD"]
        .as_str()
        .unwrap()
        .ends_with(".000"));
    let only_kwd = h
        .ok(
            "forecast",
            json!({"from": "2026-01-01T00:00:00Z", "to": "2026-03-31T00:00:00Z", "currency": "KWD"}),
        )
        .await;
    assert!(only_kwd["months"][1]["charges"].get("USD").is_none());
    assert_eq!(
        h.err(
            "forecast",
            json!({"from": "2026-01-01T00:00:00Z", "to": "2029-02-01T00:00:00Z"})
        )
        .await
        .code
        .as_str(),
        "INVALID_REQUEST",
        "37 months"
    );

    // What the forecast says of the orders without dunning is what the timers then do.
    h.advance("2026-12-31T00:00:00Z").await;
    let events = h.events().await;
    for (i, m) in months.iter().enumerate() {
        let month = m["month"].as_str().unwrap();
        let starts = events
            .iter()
            .filter(|e| {
                // (The cycle starts of the creations, at the forecast's now, had happened.)
                e["type"] == "orderCycleStarted"
                    && e["entityId"] != "online"
                    && e["eventTime"] != "2026-01-01T00:00:00.000Z"
                    && e["eventTime"].as_str().unwrap().starts_with(month)
            })
            .count() as u64;
        let online = u64::from((1..=11).contains(&i));
        assert_eq!(
            m["cycleStarts"].as_u64().unwrap(),
            starts + online,
            "{month}"
        );
    }

    // The CLI prints it as a table and a chart.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(["admin", "--redis-url", &h.redis.url, "--prefix", "t"])
        .args([
            "forecast",
            "--from",
            "2027-01-01",
            "--to",
            "2027-03-01",
            "--output",
            "table",
            "--chart",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("MONTH") && stdout.contains("2027-02") && stdout.contains("KWD"),
        "{stdout}"
    );
    assert!(
        stdout.contains("charges in KWD") && stdout.contains('█'),
        "{stdout}"
    );
}

/// A book over many partitions: every kind and duration, trials, three currencies, and
/// histories (payments, pauses with resumeAt, cancellations, plan changes now and scheduled).
async fn varied_book(h: &Harness, n: usize) {
    let mut rng = Rng(11);
    let mut ids = Vec::new();
    for i in 0..n {
        let id = format!("book-{i}");
        let mut args = order_args(&id, &mut rng);
        args["currency"] = json!(["USD", "EUR", "KWD"][rng.next(3) as usize]);
        h.ok("createOrder", args).await;
        ids.push(id);
    }
    h.advance("2026-01-05T00:00:00Z").await;
    for id in &ids {
        let when = ["IMMEDIATELY", "NEXT_PAYMENT_DATE"][rng.next(2) as usize];
        let (command, args) = match rng.next(5) {
            0 => (
                "pauseOrder",
                json!({"orderId": id, "resumeAt": "2026-03-10T00:00:00Z"}),
            ),
            1 => (
                "cancelOrder",
                json!({"orderId": id, "effectiveAt": "NEXT_PAYMENT_DATE"}),
            ),
            2 => (
                "changePlan",
                json!({"orderId": id, "plan": {"id": "w", "name": "Weekly"},
                    "pricing": {"subscription": {"cycleDuration": {"count": 1, "unit": "WEEK"}, "cycleCount": 0}},
                    "prices": [{"cycleFrom": 1, "amount": "3.00"}],
                    "effectiveAt": when}),
            ),
            _ => (
                "recordPayment",
                json!({"orderId": id, "paymentId": "p1", "amount": "12.50"}),
            ),
        };
        // Refusals (a state that does not allow it) are part of a history too.
        let _ = h.reply(command, args).await;
    }
}

const FORECAST_ALL: (&str, &str) = ("2026-01-01T00:00:00Z", "2028-12-31T00:00:00Z");

async fn forecast_all(h: &Harness) -> Value {
    h.ok(
        "forecast",
        json!({"from": FORECAST_ALL.0, "to": FORECAST_ALL.1}),
    )
    .await
}

/// Waits until `n` daemons are live and share the partitions (this one owns at most `most`).
async fn spread_over(h: &Harness, n: usize, most: u64) {
    for _ in 0..200 {
        let m = h.ok("getMetrics", json!({})).await;
        if m["liveDaemons"].as_array().unwrap().len() == n
            && m["partitionsOwned"].as_u64().unwrap() <= most
        {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("{n} daemons do not share the partitions");
}

#[tokio::test]
async fn a_forecast_over_several_daemons_is_computed_by_the_owners_and_equals_one_daemon_s() {
    let h = Harness::start().await;
    varied_book(&h, 60).await;
    let alone = forecast_all(&h).await;
    let starts: u64 = alone["months"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["cycleStarts"].as_u64().unwrap())
        .sum();
    assert!(starts > 100, "the book starts cycles ({starts})");

    // A second daemon in process and a third as its own process: the partitions spread.
    let second = Daemon::start(h.settings.clone()).await;
    let third = ChildDaemon::start(&h.redis.url, "t", &[]).await;
    spread_over(&h, 3, 30).await;
    assert_eq!(
        forecast_all(&h).await,
        alone,
        "merged from the owners' parts"
    );
    // Each of the others computed the parts of its partitions.
    let m = h.ok("getMetrics", json!({})).await;
    let me = m["daemonId"].as_str().unwrap().to_string();
    let mut asked = 0;
    for id in m["liveDaemons"].as_array().unwrap() {
        let theirs = h.ok("getMetrics", json!({"daemonId": id})).await;
        if theirs["metrics"].to_string().contains("forecastPartition") {
            asked += 1;
        }
    }
    assert!(
        asked >= 2,
        "the owners answered parts ({asked} daemons, this one {me})"
    );
    // Only one currency, the same way.
    let usd = json!({"from": FORECAST_ALL.0, "to": FORECAST_ALL.1, "currency": "USD"});
    let usd_merged = h.ok("forecast", usd.clone()).await;
    assert_eq!(usd_merged["months"].as_array().unwrap().len(), 36);

    // An owner gone mid-forecast (killed, its leases still held): its parts come from the
    // daemons that take its partitions over, and the figures are the same.
    third.kill().await;
    assert_eq!(forecast_all(&h).await, alone, "after an owner is gone");
    assert_eq!(h.ok("forecast", usd).await, usd_merged);
    second.stop().await;
    assert_eq!(forecast_all(&h).await, alone, "one daemon again");
}
