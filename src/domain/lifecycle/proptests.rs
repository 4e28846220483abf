//! Property tests of the lifecycle's invariants over random plans, start dates (29th-31st and
//! leap days included) and random sequences of commands and clock advances.

use chrono::{Duration as Span, NaiveDate, TimeZone, Utc};
use proptest::prelude::*;
use rust_decimal::Decimal;
use serde_json::json;

use super::test_support::*;
use super::*;
use crate::domain::calendar::Duration;
use crate::domain::order::DiscountKind;
use crate::domain::time::format_instant;

#[derive(Debug, Clone)]
enum Op {
    Advance(i64),
    Pay {
        id: u8,
        cents: u32,
    },
    Fail {
        id: u8,
    },
    Refund {
        id: u8,
        cents: u32,
    },
    Pause {
        resume_in_minutes: Option<i64>,
    },
    Resume,
    Postpone {
        minutes: i64,
    },
    CancelNext,
    CancelNow,
    MarkAsPaid,
    ChangeStart {
        minutes: i64,
    },
    ChangePlan {
        cents: u32,
        unit: usize,
        immediate: bool,
        prorate: bool,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1i64..60 * 24 * 45).prop_map(Op::Advance),
        3 => (0u8..3, prop_oneof![Just(500u32), Just(999), 1u32..5000]).prop_map(|(id, cents)| Op::Pay { id, cents }),
        1 => (0u8..4).prop_map(|id| Op::Fail { id }),
        1 => (0u8..3, 1u32..800).prop_map(|(id, cents)| Op::Refund { id, cents }),
        2 => proptest::option::of(1i64..60 * 24 * 40).prop_map(|resume_in_minutes| Op::Pause { resume_in_minutes }),
        2 => Just(Op::Resume),
        1 => (-60i64 * 24 * 60..60 * 24 * 200).prop_map(|minutes| Op::Postpone { minutes }),
        1 => Just(Op::CancelNext),
        1 => Just(Op::CancelNow),
        1 => Just(Op::MarkAsPaid),
        1 => (0i64..60 * 24 * 30).prop_map(|minutes| Op::ChangeStart { minutes }),
        2 => (prop_oneof![Just(500u32), Just(2000), 1u32..5000], 0usize..4, any::<bool>(), any::<bool>())
            .prop_map(|(cents, unit, immediate, prorate)| Op::ChangePlan { cents, unit, immediate, prorate }),
    ]
}

#[derive(Debug, Clone)]
struct Plan {
    kind: &'static str,
    pricing: serde_json::Value,
    trial: u32,
    start: Instant,
    created: Instant,
    cents: u32,
    zone: &'static str,
    currency: &'static str,
}

fn start_instant() -> impl Strategy<Value = Instant> {
    (
        2023i32..=2026,
        1u32..=12,
        prop_oneof![28u32..=31, 1u32..=31],
        0u32..24,
        0u32..60,
    )
        .prop_map(|(y, m, d, h, min)| {
            let day = (1..=d)
                .rev()
                .find_map(|d| NaiveDate::from_ymd_opt(y, m, d))
                .unwrap();
            Utc.from_utc_datetime(&day.and_hms_opt(h, min, 0).unwrap())
        })
}

fn plan() -> impl Strategy<Value = Plan> {
    let unit = prop_oneof![Just("DAY"), Just("WEEK"), Just("MONTH"), Just("YEAR")];
    let pricing = prop_oneof![
        4 => (unit.clone(), 1u32..4, 0u32..8).prop_map(|(unit, count, cycles)| json!({
            "subscription": {"cycleDuration": {"count": count, "unit": unit}, "cycleCount": cycles}
        })),
        1 => (unit, 1u32..4).prop_map(|(unit, count)| json!({"singlePaymentForDuration": {"count": count, "unit": unit}})),
        1 => Just(json!({"singlePaymentUnlimited": true})),
    ];
    (
        prop_oneof![Just("ONLINE"), Just("OFFLINE"), Just("EXTERNAL")],
        pricing,
        prop_oneof![3 => Just(0u32), 1 => 1u32..20],
        start_instant(),
        0i64..60 * 24 * 10,
        prop_oneof![Just(0u32), Just(500), 1u32..10_000],
        prop_oneof![
            3 => Just("UTC"),
            1 => Just("America/New_York"),
            1 => Just("Europe/Paris"),
            1 => Just("Australia/Sydney"),
            1 => Just("Asia/Kolkata"),
        ],
        prop_oneof![3 => Just("USD"), 1 => Just("KWD")],
    )
        .prop_map(
            |(kind, pricing, trial, start, lead, cents, zone, currency)| {
                let trial = if pricing.get("subscription").is_some() {
                    trial
                } else {
                    0
                };
                Plan {
                    kind,
                    pricing,
                    trial,
                    start,
                    created: start - Span::minutes(lead),
                    cents,
                    zone,
                    currency,
                }
            },
        )
}

/// `cents` hundredths of a unit, or whole units in a currency without decimals (JPY).
fn amount_of(cents: u32, minor_units: u32) -> Decimal {
    Decimal::new(i64::from(cents), minor_units.min(2))
}

fn minor_units(code: &str) -> u32 {
    crate::domain::money::Currency::parse(code).map_or(2, |c| c.minor_units())
}

fn create_plan(p: &Plan) -> Transition {
    new_order(
        json!({
            "customerId": "c1",
            "plan": {"id": "p", "name": "P"},
            "type": p.kind,
            "pricing": p.pricing,
            "prices": [{"cycleFrom": 1, "amount": amount_of(p.cents, minor_units(p.currency))}],
            "currency": p.currency,
            "freeTrialDays": p.trial,
            "startDate": format_instant(&p.start),
            "timeZone": p.zone,
        }),
        p.created,
    )
}

fn command(o: &Order, op: &Op, now: Instant) -> Option<(&'static str, serde_json::Value)> {
    let money = |cents: u32| amount_of(cents, o.currency.minor_units()).to_string();
    Some(match op {
        Op::Advance(_) => return None,
        Op::Pay { id, cents } => (
            "recordPayment",
            json!({"paymentId": format!("p{id}"), "amount": money(*cents)}),
        ),
        Op::Fail { id } => ("paymentFailed", json!({"paymentId": format!("p{id}")})),
        Op::Refund { id, cents } => (
            "recordRefund",
            json!({"paymentId": format!("p{id}"), "amount": money(*cents)}),
        ),
        Op::Pause { resume_in_minutes } => (
            "pauseOrder",
            match resume_in_minutes {
                Some(m) => json!({"resumeAt": format_instant(&(now + Span::minutes(*m)))}),
                None => json!({}),
            },
        ),
        Op::Resume => ("resumeOrder", json!({})),
        Op::Postpone { minutes } => {
            let base = o.end_date.unwrap_or(now);
            (
                "postponeEndDate",
                json!({"endDate": format_instant(&(base + Span::minutes(*minutes)))}),
            )
        }
        Op::CancelNext => ("cancelOrder", json!({"effectiveAt": "NEXT_PAYMENT_DATE"})),
        Op::CancelNow => ("cancelOrder", json!({"effectiveAt": "IMMEDIATELY"})),
        Op::MarkAsPaid => ("markAsPaid", json!({})),
        Op::ChangeStart { minutes } => (
            "changeStartDate",
            json!({"startDate": format_instant(&(now + Span::minutes(*minutes)))}),
        ),
        Op::ChangePlan {
            cents,
            unit,
            immediate,
            prorate,
        } => {
            let unit = ["DAY", "WEEK", "MONTH", "YEAR"][*unit];
            (
                "changePlan",
                json!({
                    "plan": {"id": format!("c{cents}"), "name": "Changed"},
                    "pricing": {"subscription": {"cycleDuration": {"count": 1, "unit": unit}, "cycleCount": 0}},
                    "prices": [{"cycleFrom": 1, "amount": money(*cents)}],
                    "effectiveAt": if *immediate { "IMMEDIATELY" } else { "NEXT_PAYMENT_DATE" },
                    "proration": if *prorate { "PRORATE" } else { "NONE" },
                }),
            )
        }
    })
}

/// Everything that happened in one random run.
struct Run {
    order: Order,
    events: Vec<Event>,
    postponed: bool,
}

impl Run {
    /// A plan change applied (IMMEDIATELY, or a scheduled one at its date).
    fn plan_changed(&self) -> bool {
        self.events
            .iter()
            .any(|e| e.event_type == crate::domain::EventType::OrderPlanChanged)
    }
}

/// The 3-day grace with dunning retries after 6 h, 1 day and 2 days.
fn prop_policy() -> Policy {
    Policy {
        payment_grace: Span::days(3),
        dunning: crate::domain::lifecycle::DunningRules {
            retries: vec![Span::hours(6), Span::days(1), Span::days(2)],
            final_action: crate::domain::order::FinalAction::Cancel,
        },
    }
}

fn run(p: &Plan, ops: &[Op], splits: &[u16]) -> Result<Run, TestCaseError> {
    let created = create_plan(p);
    let mut o = created.order.clone();
    let mut events = created.events;
    let mut now = p.created;
    let mut postponed = false;
    for (i, op) in ops.iter().enumerate() {
        if let Op::Advance(minutes) = op {
            let to = now + Span::minutes(*minutes);
            let direct = fire(&o, to, &prop_policy());
            // Firing in several steps equals one catch-up pass.
            let mut stepped = Transition {
                order: o.clone(),
                events: vec![],
                deleted: false,
            };
            let split = splits.get(i).copied().unwrap_or(0);
            for frac in [split % 7, split % 13 + 7, 20] {
                let mid = now + Span::minutes(*minutes * i64::from(frac) / 20);
                let next = fire(&stepped.order, mid, &prop_policy());
                stepped = stepped.then(next);
            }
            prop_assert_eq!(&direct.order, &stepped.order);
            prop_assert_eq!(&direct.events, &stepped.events);
            if let Some(due) = next_due(&direct.order) {
                prop_assert!(due > to, "next_due {} is not after {}", due, to);
            }
            o = direct.order;
            events.extend(direct.events);
            now = to;
            continue;
        }
        let (name, args) = command(&o, op, now).unwrap();
        let before_money = o.money();
        let replay = match op {
            Op::Pay { id, cents } => o
                .payment(&format!("p{id}"))
                .map(|pay| pay.amount == amount_of(*cents, o.currency.minor_units())),
            _ => None,
        };
        let caught_up = fire(&o, now, &prop_policy());
        match cmd_with(&o, name, args, now, &prop_policy()) {
            Ok(t) => {
                if replay == Some(true) {
                    prop_assert_eq!(
                        &t.order,
                        &caught_up.order,
                        "replayed payment changed the order"
                    );
                    prop_assert_eq!(t.order.money(), before_money);
                }
                if name == "postponeEndDate" {
                    postponed = true;
                }
                o = t.order;
                events.extend(t.events);
            }
            Err(_) => {
                prop_assert!(
                    replay != Some(true),
                    "a replayed payment must be accepted as a no-op"
                );
                o = caught_up.order;
                events.extend(caught_up.events);
            }
        }
    }
    Ok(Run {
        order: o,
        events,
        postponed,
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn lifecycle_invariants(p in plan(), ops in prop::collection::vec(op(), 1..40), splits in prop::collection::vec(any::<u16>(), 40)) {
        let r = run(&p, &ops, &splits)?;

        // Sequences start at 1 and have no gaps; versions never go back.
        for (i, e) in r.events.iter().enumerate() {
            prop_assert_eq!(e.sequence, i as u64 + 1);
            prop_assert_eq!(&e.id, &crate::domain::event::event_id(&r.order.id, e.sequence));
        }
        for w in r.events.windows(2) {
            prop_assert!(w[0].entity.version <= w[1].entity.version);
            prop_assert!(w[0].event_time <= w[1].event_time, "events go forward in time");
        }

        // Cycle indexes increase by one with no gaps; no cycle starts at or after endDate.
        let starts: Vec<&Event> = r.events.iter().filter(|e| e.event_type == EventType::OrderCycleStarted).collect();
        for w in starts.windows(2) {
            prop_assert_eq!(w[1].data["cycleNumber"].as_u64(), w[0].data["cycleNumber"].as_u64().map(|k| k + 1));
        }
        if let Some(first) = starts.first() {
            let k = first.data["cycleNumber"].as_u64().unwrap();
            prop_assert_eq!(k, if p.trial > 0 { 0 } else { 1 });
        }
        for e in &starts {
            if let Some(end) = e.entity.end_date {
                prop_assert!(e.event_time < end, "cycle started at {} with endDate {}", e.event_time, end);
            }
        }

        // Every cycle k >= 1 of a subscription starts at clamp(anchor + (k-1) x duration) on
        // the order's local calendar, plus the pauses taken before it; in UTC, that is
        // section 7's calendar from the anchor. After a plan change to another duration, the
        // cycles count from its anchor.
        for e in &starts {
            let o = &e.entity;
            if let PricingKind::Subscription { cycle_duration, .. } = o.pricing.kind {
                let k = e.data["cycleNumber"].as_u64().unwrap();
                if let (Some(anchor), true) = (o.anchor, k >= u64::from(o.anchor_cycle.max(1))) {
                    let base = o.time_zone
                        .calendar(anchor, 0, Some(cycle_duration), k - u64::from(o.anchor_cycle.max(1)))
                        .unwrap();
                    prop_assert_eq!(e.event_time, base + Span::milliseconds(o.paused_total));
                } else if k >= 1 {
                    let base = o.time_zone
                        .calendar(o.start_date, o.free_trial_days, Some(cycle_duration), k - 1)
                        .unwrap();
                    if o.time_zone.is_utc() {
                        prop_assert_eq!(base, cycle_duration.times_after(o.anchor(), k - 1).unwrap());
                    }
                    prop_assert_eq!(e.event_time, base + Span::milliseconds(e.entity.paused_total));
                }
            }
        }

        // Plan changes: the credit is never more than what was paid in, never below zero, and
        // the order's creditBalance never goes below zero.
        for e in r.events.iter().filter(|e| e.event_type == crate::domain::EventType::OrderPlanChanged) {
            let credit: Decimal = e.data["proration"]["credit"].as_str().unwrap().parse().unwrap();
            let charge: Decimal = e.data["proration"]["charge"].as_str().unwrap().parse().unwrap();
            let (paid, _) = e.entity.money();
            prop_assert!(credit >= Decimal::ZERO && charge >= Decimal::ZERO);
            prop_assert!(credit <= paid, "credit {} above the {} paid", credit, paid);
        }
        for e in &r.events {
            prop_assert!(e.entity.credit_balance >= Decimal::ZERO);
        }

        // Money always carries the currency's decimals ("0.00", "0.000"), in every version of
        // the order and in every event's data.
        for o in r.events.iter().map(|e| &*e.entity).chain([&r.order]) {
            let scale = o.currency.minor_units();
            let json = serde_json::to_value(o).unwrap();
            let text = json["creditBalance"].as_str().unwrap();
            let d: Decimal = text.parse().unwrap();
            prop_assert_eq!(d.scale(), scale, "creditBalance = {}", text);
            for (name, d) in [
                ("subtotal", o.price_details.subtotal),
                ("discount", o.price_details.discount),
                ("total", o.price_details.total),
            ] {
                prop_assert_eq!(d.scale(), scale, "priceDetails.{} = {}", name, d);
            }
            for p in &o.payments {
                prop_assert!(p.amount.scale() >= scale && p.refunded.scale() == scale, "{:?}", p);
            }
            for due in &o.payments_due {
                prop_assert_eq!(due.amount.scale(), scale, "{:?}", due);
            }
        }
        for e in &r.events {
            let scale = e.entity.currency.minor_units();
            for key in ["credit", "charge", "net"] {
                if let Some(text) = e.data["proration"][key].as_str() {
                    let d: Decimal = text.parse().unwrap();
                    prop_assert_eq!(d.scale(), scale, "proration.{} = {}", key, text);
                }
            }
        }

        // earliestEndDate = original end + pauses; endDate too unless postponed or canceled
        // (the rules of a plan change recompute them from its anchor instead).
        let o = &r.order;
        if !r.plan_changed() {
        let original = scheduled_end(o.pricing.kind, o.start_date, o.free_trial_days, o.time_zone).unwrap();
        let shifted = original.map(|t| t + Span::milliseconds(o.paused_total));
        if o.pause_periods.iter().all(|pp| pp.status == PauseStatus::Ended) {
            prop_assert_eq!(o.earliest_end_date, shifted);
        }
        if !r.postponed && o.cancellation.is_none() && o.status != OrderStatus::Paused {
            prop_assert_eq!(o.end_date, shifted);
        }
        let total_paused: i64 = o.pause_periods.iter()
            .filter(|pp| pp.status == PauseStatus::Ended)
            .map(|pp| (pp.resume_date.unwrap() - pp.pause_date).num_milliseconds())
            .sum();
        if o.cancellation.is_none() {
            prop_assert_eq!(o.paused_total, total_paused);
        }
        }

        // Dunning: each due's retries strictly increase, all before its deadline, and no more
        // fired than there are; every retry event names a due's attempt in order.
        for due in &o.payments_due {
            prop_assert!(due.retries.windows(2).all(|w| w[0] < w[1]), "{:?}", due.retries);
            prop_assert!(due.retries.iter().all(|r| *r < due.deadline && *r > due.requested_date));
            prop_assert!(due.attempts as usize <= due.retries.len());
        }
        for e in r.events.iter().filter(|e| e.event_type == crate::domain::EventType::OrderPaymentRetryRequested) {
            let attempt = e.data["attempt"].as_u64().unwrap();
            prop_assert!((1..=3).contains(&attempt));
            let deadline = crate::domain::time::parse_instant(e.data["deadline"].as_str().unwrap()).unwrap();
            prop_assert!(e.event_time < deadline, "a retry at {} after its deadline {}", e.event_time, deadline);
        }

        // Money: never negative, refunds never exceed payments, payment ids unique.
        let (paid, refunded) = o.money();
        prop_assert!(paid >= Decimal::ZERO && refunded <= paid);
        let mut ids: Vec<&str> = o.payments.iter().map(|p| p.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        prop_assert_eq!(ids.len(), o.payments.len());

        // The order survives a JSON round trip unchanged (what Redis will store).
        let back: Order = serde_json::from_str(&serde_json::to_string(o).unwrap()).unwrap();
        prop_assert_eq!(&back, o);
        // And through its compact stored form (defaults left out), which is never longer.
        let compact = crate::domain::order::compact_json(o).unwrap();
        let back: Order = serde_json::from_str(&compact).unwrap();
        prop_assert_eq!(&back, o);
        prop_assert!(compact.len() <= serde_json::to_string(o).unwrap().len());
    }

    #[test]
    fn cycle_dates_never_drift(start in start_instant(), count in 1u32..4, unit in 0usize..4, k in 1u64..60) {
        let unit = [Unit::Day, Unit::Week, Unit::Month, Unit::Year][unit];
        let d = Duration { count, unit };
        let a = d.times_after(start, k).unwrap();
        let b = d.times_after(start, k + 1).unwrap();
        prop_assert!(a < b);
        prop_assert_eq!(a.time(), start.time(), "time of day is kept");
        if matches!(unit, Unit::Month | Unit::Year) {
            use chrono::Datelike;
            let day = start.day().min(days_in_month(a.year(), a.month()));
            prop_assert_eq!(a.day(), day, "clamped from the anchor, not chained");
        }
    }
}

fn days_in_month(y: i32, m: u32) -> u32 {
    use chrono::Datelike;
    let first_next = if m == 12 {
        NaiveDate::from_ymd_opt(y + 1, 1, 1)
    } else {
        NaiveDate::from_ymd_opt(y, m + 1, 1)
    };
    first_next.unwrap().pred_opt().unwrap().day()
}

use crate::domain::calendar::Unit;

proptest! {
    /// The money a customer is asked for over a sequence of IMMEDIATELY PRORATE plan changes
    /// within one paid 30-day cycle (each proration paid when asked) equals a millisecond
    /// accounting of the plans in force, within a cent per change.
    #[test]
    fn prorated_changes_match_an_accounting_of_the_plans_in_force(
        first in 100u32..10_000,
        changes in proptest::collection::vec((100u32..10_000, 1i64..30 * 24 * 60), 1..6),
    ) {
        let start = "2026-01-10T09:00:00Z";
        let s = crate::domain::time::parse_instant(start).unwrap();
        let e = s + Span::days(30);
        let price = |cents: u32| Decimal::new(i64::from(cents), 2);
        let mut args = json!({
            "customerId": "c1",
            "plan": {"id": "p0", "name": "P0"},
            "type": "ONLINE",
            "pricing": {"subscription": {"cycleDuration": {"count": 30, "unit": "DAY"}, "cycleCount": 0}},
            "prices": [{"cycleFrom": 1, "amount": price(first)}],
            "currency": "USD",
            "startDate": start,
        });
        args["timeZone"] = json!("UTC");
        let p = prop_policy();
        let mut o = new_order(args, s).order;
        o = cmd_with(&o, "recordPayment", json!({"paymentId": "p0", "amount": price(first)}), s, &p).unwrap().order;
        let mut times: Vec<i64> = changes.iter().map(|(_, m)| *m).collect();
        times.sort_unstable();
        times.dedup();
        let mut in_force = vec![(s, price(first))];
        for (i, minutes) in times.iter().enumerate() {
            let at = s + Span::minutes(*minutes);
            let cents = changes[i].0;
            let t = cmd_with(&o, "changePlan", json!({
                "plan": {"id": format!("p{}", i + 1), "name": "P"},
                "pricing": {"subscription": {"cycleDuration": {"count": 30, "unit": "DAY"}, "cycleCount": 0}},
                "prices": [{"cycleFrom": 1, "amount": price(cents)}],
                "effectiveAt": "IMMEDIATELY",
            }), at, &p).unwrap();
            o = t.order;
            // Pay whatever the change asked for, at once.
            for (j, due) in o.payments_due.clone().iter().enumerate() {
                o = cmd_with(&o, "recordPayment", json!({"paymentId": format!("x{i}-{j}"), "amount": due.amount}), at, &p).unwrap().order;
            }
            prop_assert!(o.payments_due.is_empty());
            in_force.push((at, price(cents)));
        }
        let (paid, _) = o.money();
        let asked = paid - o.credit_balance;
        let total_ms = Decimal::from((e - s).num_milliseconds());
        let mut expected = Decimal::ZERO;
        for (i, (from, amount)) in in_force.iter().enumerate() {
            let to = in_force.get(i + 1).map_or(e, |(t, _)| *t);
            expected += *amount * Decimal::from((to - *from).num_milliseconds()) / total_ms;
        }
        let tolerance = Decimal::new(1, 2) * Decimal::from(in_force.len() as u64);
        prop_assert!((asked - expected).abs() <= tolerance,
            "asked {} for an accounting of {} (changes {:?})", asked, expected, in_force);
    }
}

/// An instant in the last years recur can represent, or just past the end in some offset.
fn edge_text() -> impl Strategy<Value = String> {
    (
        9990i32..=9999,
        1u32..=12,
        1u32..=31,
        0u32..24,
        prop_oneof![Just("Z"), Just("-01:00"), Just("+14:00"), Just("-12:00")],
    )
        .prop_map(|(y, m, d, h, off)| {
            let d = d.min(days_in_month(y, m));
            format!("{y:04}-{m:02}-{d:02}T{h:02}:59:59.999{off}")
        })
}

/// The order can be written as JSON and read back unchanged: every date is RFC 3339.
fn round_trips(o: &Order) -> Result<(), TestCaseError> {
    let json = serde_json::to_string(o).unwrap();
    let back: Result<Order, _> = serde_json::from_str(&json);
    prop_assert!(back.is_ok(), "unreadable: {:?}\n{}", back.err(), json);
    prop_assert_eq!(&back.unwrap(), o);
    let compact = crate::domain::order::compact_json(o).unwrap();
    prop_assert!(
        serde_json::from_str::<Order>(&compact).is_ok(),
        "{}",
        compact
    );
    Ok(())
}

/// A refusal is INVALID_REQUEST or INVALID_STATE; an acceptance leaves an order that round-trips, also after
/// firing everything up to the last representable instant.
fn accepted_or_refused(r: Result<Transition, DomainError>) -> Result<(), TestCaseError> {
    match r {
        Ok(t) => {
            round_trips(&t.order)?;
            let fired = fire(&t.order, crate::domain::time::max_instant(), &prop_policy());
            round_trips(&fired.order)?;
            for e in &fired.events {
                prop_assert!(crate::domain::time::representable(&e.event_time));
            }
        }
        // Refused for its dates (INVALID_REQUEST) or for the order's state (a canceled order
        // cannot be paused): a refusal, never a corrupt order.
        Err(e) => prop_assert!(
            matches!(
                e.code(),
                crate::domain::ErrorCode::InvalidRequest | crate::domain::ErrorCode::InvalidState
            ),
            "{}",
            e
        ),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every date-taking command, given instants up to (and past, in some offset) the end of
    /// year 9999, either refuses with INVALID_REQUEST or leaves an order that can be stored and
    /// read back, before and after its timers fire.
    #[test]
    fn dates_at_the_edge_of_the_range_never_corrupt_an_order(
        start in edge_text(),
        other in edge_text(),
        unit in prop_oneof![Just("DAY"), Just("MONTH"), Just("YEAR")],
        cycles in 0u32..24,
        kind in prop_oneof![Just("ONLINE"), Just("OFFLINE"), Just("EXTERNAL")],
    ) {
        let now = at("9989-06-15T00:00:00Z");
        let args = |start: &str| json!({
            "customerId": "c1",
            "plan": {"id": "p", "name": "P"},
            "type": kind,
            "pricing": {"subscription": {"cycleDuration": {"count": 1, "unit": unit}, "cycleCount": cycles}},
            "prices": [{"cycleFrom": 1, "amount": "10.00"}],
            "currency": "USD",
            "startDate": start,
        });
        // createOrder at the edge.
        accepted_or_refused(try_new(args(&start), now))?;
        // changeStartDate of a pending order to the edge.
        // (A plan whose own dates pass year 9999 is refused at creation: nothing more to try.)
        let Ok(pending) = try_new(args("9990-01-01T00:00:00Z"), now) else {
            return Ok(());
        };
        accepted_or_refused(cmd(&pending.order, "changeStartDate", json!({"startDate": other}), now))?;
        // An order started now, then paid, paused with resumeAt at the edge, postponed to it.
        let live = new_order(args("9989-06-15T00:00:00Z"), now).order;
        let live = match kind {
            "ONLINE" => cmd(&live, "recordPayment", json!({"paymentId": "p1", "amount": "10.00"}), now).unwrap().order,
            _ => live,
        };
        let later = now + Span::days(40);
        let live = fire(&live, later, &prop_policy()).order;
        accepted_or_refused(cmd(&live, "pauseOrder", json!({"resumeAt": other}), later))?;
        accepted_or_refused(cmd(&live, "postponeEndDate", json!({"endDate": other}), later))?;
        // An indefinite pause resumed at the edge of the clock.
        if let Ok(paused) = cmd(&live, "pauseOrder", json!({}), later) {
            let edge = crate::domain::time::parse_instant(&start).unwrap_or(later);
            accepted_or_refused(cmd(&paused.order, "resumeOrder", json!({}), edge.max(later)))?;
        }
    }
}

/// Dunning's three final actions, with [`prop_policy`]'s grace and retries.
fn any_policy() -> impl Strategy<Value = Policy> {
    use crate::domain::order::FinalAction;
    prop_oneof![
        Just(FinalAction::Cancel),
        Just(FinalAction::Pause),
        Just(FinalAction::Keep)
    ]
    .prop_map(|final_action| Policy {
        dunning: DunningRules {
            final_action,
            ..prop_policy().dunning
        },
        ..prop_policy()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// The forecast's counting walk (the timers' code on one order changed in place, changes
    /// counted as they are sealed, no events built) gives exactly the figures of the walk over
    /// `fire`'s and `apply`'s events, for orders with random histories (trials, scheduled and
    /// immediate plan changes, pauses with and without resumeAt, cancellations now and at the
    /// next payment date, postponed ends, unpaid and failed dues) in currencies of 0, 2 and 3
    /// decimals, under each dunning final action, over windows of up to 36 months.
    #[test]
    fn the_counting_forecast_equals_the_walk_over_events(
        p in plan(),
        currency in prop_oneof![Just("USD"), Just("EUR"), Just("JPY"), Just("KWD")],
        ops in prop::collection::vec(op(), 0..10),
        last in prop_oneof![
            2 => Just(None),
            1 => Just(Some(Op::CancelNext)),
            1 => (1u32..5000, 0usize..4).prop_map(|(cents, unit)| Some(Op::ChangePlan { cents, unit, immediate: false, prorate: false })),
            1 => (1i64..60 * 24 * 90).prop_map(|m| Some(Op::Pause { resume_in_minutes: Some(m) })),
        ],
        splits in prop::collection::vec(any::<u16>(), 12),
        later in prop_oneof![2 => Just(0i64), 1 => 0i64..60 * 24 * 60],
        lead in 0i64..60 * 24 * 90,
        months in 1i64..=36,
        policy in any_policy(),
    ) {
        use super::forecast::{add_order, add_order_by_events, month_of, Forecast};
        let p = Plan { currency, ..p };
        // Mostly live orders: purchased (an ONLINE cart pays its price first), a short
        // history, then maybe a cancellation or plan change scheduled or a pause with resumeAt.
        let ops: Vec<Op> = std::iter::once(Op::Pay { id: 0, cents: p.cents })
            .chain(ops)
            .chain(last)
            .collect();
        let r = run(&p, &ops, &splits)?;
        let now = r.order.updated_date + Span::minutes(later);
        let from = now + Span::minutes(lead);
        let to = from + Span::days(30 * months) - Span::days(1);
        for (from, to) in [(now, to), (from, to)] {
            let mut fast = Forecast::default();
            add_order(&mut fast, &r.order, now, from, to, &policy);
            let mut reference = Forecast::default();
            add_order_by_events(&mut reference, &r.order, now, from, to, &policy);
            prop_assert_eq!(&fast, &reference);
            let (a, b) = (month_of(&from), month_of(&to));
            prop_assert_eq!(fast.to_json(a, b, None), reference.to_json(a, b, None));
        }
    }

    /// The fast-forward of steady stretches ([`super::forecast`]'s `steady`: cycle starts
    /// taken from the calendar alone, their dues paid, without the lifecycle's step) leaves
    /// the forecast exactly as the walk step by step: the same figures (cycle starts, charges
    /// per currency per month, ends, cancellations), the same reply, and the walk ends on the
    /// same order (every field, amounts' scales included: compared as stored JSON) having
    /// recorded the same payments (but those of a last stretch that ends the walk, which are
    /// not written: the same number of them, the stepped walk's last ones). Over the orders of the test above, with besides promotions
    /// for the first cycles, prices that change after some cycles, line items, an order's own
    /// dunning, a policy whose first retry comes at the request itself, payments already
    /// under the forecast's own ids, and amounts below their currency's scale. The stretch's
    /// own calendar gives the cycle starts `cycle_start` gives.
    #[test]
    fn the_fast_forwarded_forecast_equals_the_walk_step_by_step(
        p in plan(),
        currency in prop_oneof![Just("USD"), Just("EUR"), Just("JPY"), Just("KWD")],
        ops in prop_oneof![2 => prop::collection::vec(op(), 0..2), 1 => prop::collection::vec(op(), 0..10)],
        last in prop_oneof![
            3 => Just(None),
            1 => Just(Some(Op::CancelNext)),
            1 => (1u32..5000, 0usize..4).prop_map(|(cents, unit)| Some(Op::ChangePlan { cents, unit, immediate: false, prorate: false })),
            1 => (1i64..60 * 24 * 90).prop_map(|m| Some(Op::Pause { resume_in_minutes: Some(m) })),
        ],
        splits in prop::collection::vec(any::<u16>(), 12),
        later in prop_oneof![2 => Just(0i64), 1 => 0i64..60 * 24 * 60],
        lead in 0i64..60 * 24 * 90,
        months in prop_oneof![1 => 1i64..=36, 1 => Just(36i64)],
        policy in any_policy(),
        extras in (
            proptest::option::of((prop_oneof![Just(true), Just(false)], 1u32..60, proptest::option::of(0u32..6))),
            proptest::option::of((1u32..8, 0u32..100_000)),
            proptest::option::of(1u32..3000),
            (0u8..6, 0u8..6, 0u8..6, 0u8..6),
        ),
    ) {
        use super::forecast::{month_of, walk, FastForward, Forecast};
        let (promotion, price_step, line_item, flags) = extras;
        let p = Plan { currency, ..p };
        let ops: Vec<Op> = std::iter::once(Op::Pay { id: 0, cents: p.cents })
            .chain(ops)
            .chain(last)
            .collect();
        let r = run(&p, &ops, &splits)?;
        let mut order = r.order;
        let minor = order.currency.minor_units();
        // Terms the random histories do not make, written onto the order as a stored one
        // could hold them.
        if let Some((percent, value, first_cycles)) = promotion {
            order.discounts.push(crate::domain::order::Discount {
                code: "PROMO".into(),
                kind: if percent { DiscountKind::Percent } else { DiscountKind::Fixed },
                value: if percent { Decimal::from(value.min(100)) } else { amount_of(value * 10, minor) },
                first_cycles,
            });
        }
        if let Some((after, cents)) = price_step {
            let first = order.pricing.prices[0].clone();
            order.pricing.prices = vec![
                crate::domain::order::PriceRange { number_of_cycles: Some(after), ..first },
                crate::domain::order::PriceRange { cycle_from: 1 + after, number_of_cycles: None, amount: amount_of(cents, minor) },
            ];
        }
        if let Some(cents) = line_item {
            order.line_items.push(crate::domain::order::LineItem {
                id: "li".into(),
                sku: String::new(),
                name: String::new(),
                quantity: 2,
                unit_price: amount_of(cents, minor),
            });
        }
        let (own_dunning, zero_retry, foreign_id, unscaled) =
            (flags.0 == 0, flags.1 == 0, flags.2 == 0, flags.3 == 0);
        if unscaled {
            // Amounts without their currency's decimals ("10" for "10.00"): the first change
            // of a walk writes them at scale.
            for p in &mut order.payments {
                p.amount = p.amount.normalize();
                p.refunded = p.refunded.normalize();
            }
            order.price_details.total = order.price_details.total.normalize();
            order.credit_balance = order.credit_balance.normalize();
        }
        if own_dunning {
            order.dunning = Some(crate::domain::order::Dunning {
                retries: vec!["2h".into(), "1d".into()],
                final_action: crate::domain::order::FinalAction::Keep,
            });
        }
        let mut policy = policy;
        if zero_retry {
            policy.dunning.retries.insert(0, Span::zero());
        }
        if foreign_id {
            order.payments.push(crate::domain::order::Payment {
                id: "forecast-2".into(),
                amount: amount_of(100, minor),
                date: order.updated_date,
                cycle: 1,
                refunded: order.currency.zero(),
            });
        }
        // The stretch's calendar gives the cycle starts `cycle_start` gives.
        if let Some(calendar) = super::forecast::steady::Calendar::of(&order) {
            let first = order.current_cycle.as_ref().map_or(1, |c| c.index.max(1));
            for k in first..first + 40 {
                prop_assert_eq!(calendar.start(k), cycle_start(&order, k), "cycle {}", k);
            }
        }
        let now = order.updated_date + Span::minutes(later);
        let from = now + Span::minutes(lead);
        let to = from + Span::days(30 * months) - Span::days(1);
        for (from, to) in [(now, to), (from, to)] {
            let mut fast = Forecast::default();
            let (fast_order, fast_paid, unwritten) = walk(&mut fast, order.clone(), now, from, to, &policy, FastForward::On);
            let mut stepped = Forecast::default();
            let (mut stepped_order, stepped_paid, none) = walk(&mut stepped, order.clone(), now, from, to, &policy, FastForward::Off);
            prop_assert_eq!(none, 0);
            prop_assert_eq!(&fast, &stepped);
            let (a, b) = (month_of(&from), month_of(&to));
            prop_assert_eq!(fast.to_json(a, b, None), stepped.to_json(a, b, None));
            prop_assert_eq!(fast_paid, stepped_paid);
            // But the payments of a last stretch that ended the walk, which are not written.
            let written = stepped_order.payments.len() - unwritten;
            for p in &stepped_order.payments[written..] {
                prop_assert!(p.id.starts_with("forecast-"), "{:?}", p);
            }
            stepped_order.payments.truncate(written);
            prop_assert_eq!(
                serde_json::to_string(&fast_order).unwrap(),
                serde_json::to_string(&stepped_order).unwrap()
            );
        }
    }
}
