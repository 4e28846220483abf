//! The forecast of a book of orders (SPEC 11.6): per calendar month (UTC) and currency, the
//! charges of the cycle starts that bill, the cycle starts, the orders reaching their end and
//! those canceled at a scheduled date. Pure: each order is walked forward by the timers' own
//! `fire`, every due paid as it is requested, so its plan changes, pauses, cancellations and
//! ends count exactly as they will happen.

use std::collections::BTreeMap;

use chrono::Datelike;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use super::{advance, apply_in_place, cycle_charge, next_due, Policy, Sink};
use crate::domain::command::Command;
use crate::domain::event::EventType;
use crate::domain::order::{CancelCause, Order, OrderType};
use crate::domain::time::Instant;

pub(super) mod steady;

/// At most this many months per forecast.
pub const MAX_MONTHS: usize = 36;

/// A month as `year * 12 + month0`.
pub type MonthKey = i32;

/// The month of an instant (UTC).
pub fn month_of(t: &Instant) -> MonthKey {
    // On the naive UTC date (the same date, without the offset conversion `DateTime` makes:
    // this runs once per cycle start counted).
    let t = t.naive_utc();
    t.year() * 12 + i32::try_from(t.month0()).unwrap_or(0)
}

/// `2031-01` for a month key.
pub fn month_label(m: MonthKey) -> String {
    format!("{:04}-{:02}", m.div_euclid(12), m.rem_euclid(12) + 1)
}

/// The month key of a `2031-01` label.
pub fn parse_month_label(label: &str) -> Option<MonthKey> {
    let (y, m) = label.split_once('-')?;
    let (y, m): (i32, i32) = (y.parse().ok()?, m.parse().ok()?);
    (1..=12).contains(&m).then_some(y * 12 + m - 1)
}

/// One month's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MonthFigures {
    /// Per currency code.
    pub charges: BTreeMap<String, Decimal>,
    pub cycle_starts: u64,
    pub ends: u64,
    pub cancellations: u64,
}

impl MonthFigures {
    fn add(&mut self, other: &MonthFigures) {
        for (c, a) in &other.charges {
            *self.charges.entry(c.clone()).or_default() += *a;
        }
        self.cycle_starts += other.cycle_starts;
        self.ends += other.ends;
        self.cancellations += other.cancellations;
    }
}

/// The figures of many orders, by month; merging is adding (so partitions, computed apart,
/// merge in any order).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forecast {
    pub months: BTreeMap<MonthKey, MonthFigures>,
}

impl Forecast {
    /// Adds another forecast's figures.
    pub fn merge(&mut self, other: &Forecast) {
        for (m, f) in &other.months {
            self.months.entry(*m).or_default().add(f);
        }
    }

    /// The reply: one entry per month from `from` to `to` inclusive, zeros included; charges
    /// at each currency's scale, only `currency` when given.
    pub fn to_json(&self, from: MonthKey, to: MonthKey, currency: Option<&str>) -> Value {
        let zero = MonthFigures::default();
        let months: Vec<Value> = (from..=to)
            .map(|m| {
                let f = self.months.get(&m).unwrap_or(&zero);
                let charges: serde_json::Map<String, Value> = f
                    .charges
                    .iter()
                    .filter(|(c, _)| currency.is_none_or(|only| only == c.as_str()))
                    .map(|(c, a)| (c.clone(), json!(a.to_string())))
                    .collect();
                json!({
                    "month": month_label(m),
                    "charges": charges,
                    "cycleStarts": f.cycle_starts,
                    "ends": f.ends,
                    "cancellations": f.cancellations,
                })
            })
            .collect();
        json!({ "months": months })
    }

    /// A forecast read back from its reply ([`Forecast::to_json`]; a daemon's part of a
    /// forecast comes this way): None when it is not one.
    pub fn from_json(v: &Value) -> Option<Forecast> {
        let mut f = Forecast::default();
        for m in v.get("months")?.as_array()? {
            let month = parse_month_label(m.get("month")?.as_str()?)?;
            let mut charges = BTreeMap::new();
            for (c, a) in m.get("charges")?.as_object()? {
                charges.insert(c.clone(), a.as_str()?.parse::<Decimal>().ok()?);
            }
            let figures = MonthFigures {
                charges,
                cycle_starts: m.get("cycleStarts")?.as_u64()?,
                ends: m.get("ends")?.as_u64()?,
                cancellations: m.get("cancellations")?.as_u64()?,
            };
            f.months.entry(month).or_default().add(&figures);
        }
        Some(f)
    }
}

/// Adds one order's figures between `from` and `to` (instants; `from` at or after `now`) to
/// `into`. Walks the order from its state at `now`, due by due, paying each due as it is
/// requested (ONLINE orders; the others are not dunned).
///
/// The walk is the timers' own: each due instant is taken by the code `fire` runs and each due
/// is paid by recordPayment's own rules, on one copy of the order changed in place; only the
/// changes are not turned into events (no event data, ids or copies of the order), they are
/// counted as they are sealed. [`add_order_by_events`] is the same walk over `fire`'s and
/// `apply`'s events; a property test holds the two equal. The steady stretches of the walk
/// (an ACTIVE order with nothing due but its next cycle starts) are fast-forwarded from the
/// calendar alone ([`steady`]); another property test holds the walk equal with and without.
pub fn add_order(
    into: &mut Forecast,
    order: &Order,
    now: Instant,
    from: Instant,
    to: Instant,
    policy: &Policy,
) {
    walk(into, order.clone(), now, from, to, policy, FastForward::On);
}

/// [`add_order`] of an order the caller no longer needs (the forecast's read path, which
/// parses each order only to walk it): walked in place, not copied.
pub fn add_owned_order(
    into: &mut Forecast,
    order: Order,
    now: Instant,
    from: Instant,
    to: Instant,
    policy: &Policy,
) {
    walk(into, order, now, from, to, policy, FastForward::On);
}

/// At most this many steps per order's walk (a step: one due instant taken, and its dues
/// paid); a guard only, a walk ends when nothing is due any more or past `to`.
const MAX_STEPS: usize = 100_000;

/// Whether a walk fast-forwards its steady stretches (always, but in the tests that hold it
/// equal to the walk step by step).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum FastForward {
    On,
    #[cfg(test)]
    Off,
}

/// The walk of [`add_order`] on `o` itself: the order as it leaves it, how many forecast
/// payments it recorded and how many of the last ones it left out of the order (a last
/// fast-forwarded stretch's, see [`steady::Stretch`]), for the tests that compare two walks.
pub(super) fn walk(
    into: &mut Forecast,
    mut o: Order,
    now: Instant,
    from: Instant,
    to: Instant,
    policy: &Policy,
    fast: FastForward,
) -> (Order, u64, usize) {
    // What is due by now has happened (or is about to): not counted.
    advance(&mut o, now, policy, |_| {}, &mut Discard);
    let currency = o.currency;
    let mut counter = Counter {
        into,
        from,
        to,
        currency: currency.code(),
        bills: o.order_type != OrderType::Offline,
    };
    // A forecast payment under an id the order already has would be refused (see
    // [`steady::fast_forward`]): such an order is walked step by step.
    let fast = fast == FastForward::On
        && !o
            .payments
            .iter()
            .any(|p| p.id.starts_with(steady::PAYMENT_PREFIX));
    let mut paid = 0u64;
    let mut steps = 0;
    loop {
        if fast {
            let stretch = steady::fast_forward(
                &mut o,
                to,
                policy,
                &mut counter,
                &mut paid,
                MAX_STEPS - steps,
            );
            steps += stretch.taken;
            // Its next due instant is the cycle start past `to`.
            if stretch.past_window {
                return (o, paid, stretch.unwritten);
            }
        }
        if steps >= MAX_STEPS {
            break;
        }
        let Some(due) = next_due(&o) else { break };
        if due > to {
            break;
        }
        steps += 1;
        advance(&mut o, due, policy, |_| {}, &mut counter);
        // As if every due is paid when it is requested.
        if o.payments_due.is_empty() {
            continue;
        }
        let dues: Vec<_> = o
            .payments_due
            .iter()
            .map(|d| (d.cycle, d.kind, d.amount))
            .collect();
        for (cycle, kind, amount) in dues {
            paid += 1;
            let pay = Command::RecordPayment {
                payment_id: steady::payment_id(paid),
                amount,
                due: Some((cycle, kind)),
            };
            // A refusal (this id already used by a payment of the order) comes before the
            // order is touched: the due then stays unpaid, as `apply`'s refusal leaves it.
            let _ = apply_in_place(&mut o, &pay, due, policy, &mut Discard);
        }
    }
    (o, paid, 0)
}

/// Changes nobody looks at (the walk up to now, the forecast's payments).
struct Discard;

impl Sink for Discard {
    fn with_data(&self) -> bool {
        false
    }

    fn change(&mut self, _: &Order, _: Instant, _: u64, _: Vec<(EventType, Value)>) {}
}

/// Counts one order's changes into a forecast as they are sealed: a cycle start (its number is
/// its quiet data) bills `cycle_charge − creditApplied` of the order after the change, an end
/// counts, a cancellation but for non-payment counts.
struct Counter<'a> {
    into: &'a mut Forecast,
    from: Instant,
    to: Instant,
    /// The order's currency code.
    currency: &'a str,
    bills: bool,
}

impl Counter<'_> {
    /// Cycle `k` started at `at` (a change of its own): counted when in the window, billed
    /// `amount()` when the order bills and it is above zero.
    fn cycle_started(&mut self, at: Instant, amount: impl FnOnce() -> Decimal) {
        if at < self.from || at > self.to {
            return;
        }
        let month = self.into.months.entry(month_of(&at)).or_default();
        count_cycle_start(month, self.currency, self.bills, amount);
    }
}

/// One cycle start in `month`, billing `amount()` in `currency` when `bills` and it is above
/// zero.
fn count_cycle_start(
    month: &mut MonthFigures,
    currency: &str,
    bills: bool,
    amount: impl FnOnce() -> Decimal,
) {
    month.cycle_starts += 1;
    if !bills {
        return;
    }
    let amount = amount();
    if amount > Decimal::ZERO {
        match month.charges.get_mut(currency) {
            Some(sum) => *sum += amount,
            None => {
                month.charges.insert(currency.to_string(), amount);
            }
        }
    }
}

impl Sink for Counter<'_> {
    fn with_data(&self) -> bool {
        false
    }

    fn change(&mut self, entity: &Order, at: Instant, _: u64, drafts: Vec<(EventType, Value)>) {
        if at < self.from || at > self.to {
            return;
        }
        // Every change in the window has its month (zeros included), as the walk over events.
        let month = self.into.months.entry(month_of(&at)).or_default();
        for (event_type, data) in &drafts {
            match event_type {
                EventType::OrderCycleStarted => {
                    let k = data
                        .as_u64()
                        .and_then(|k| u32::try_from(k).ok())
                        .unwrap_or(0);
                    count_cycle_start(month, self.currency, self.bills, || {
                        let credit = entity
                            .current_cycle
                            .as_ref()
                            .filter(|c| c.index == k)
                            .and_then(|c| c.credit_applied)
                            .unwrap_or_default();
                        cycle_charge(entity, k) - credit
                    });
                }
                EventType::OrderEnded => month.ends += 1,
                EventType::OrderCanceled
                    if entity
                        .cancellation
                        .as_ref()
                        .is_some_and(|c| c.cause != CancelCause::PaymentFailure) =>
                {
                    month.cancellations += 1;
                }
                _ => {}
            }
        }
    }
}

/// The forecast walk over events, as first built: `fire` one due at a time with its events
/// built, each due paid with `apply`. The reference [`add_order`] is held equal to.
#[cfg(test)]
pub fn add_order_by_events(
    into: &mut Forecast,
    order: &Order,
    now: Instant,
    from: Instant,
    to: Instant,
    policy: &Policy,
) {
    use super::{apply, fire};
    let currency = order.currency.code().to_string();
    let mut o = fire(order, now, policy).order;
    let mut paid = 0u64;
    for _ in 0..100_000 {
        let Some(due) = next_due(&o) else { break };
        if due > to {
            break;
        }
        let t = fire(&o, due, policy);
        for e in &t.events {
            if e.event_time < from || e.event_time > to {
                continue;
            }
            let month = into.months.entry(month_of(&e.event_time)).or_default();
            match e.event_type {
                EventType::OrderCycleStarted => {
                    month.cycle_starts += 1;
                    let k = e.data["cycleNumber"]
                        .as_u64()
                        .and_then(|k| u32::try_from(k).ok())
                        .unwrap_or(0);
                    if order.order_type != OrderType::Offline {
                        let entity = &e.entity;
                        let credit = entity
                            .current_cycle
                            .as_ref()
                            .filter(|c| c.index == k)
                            .and_then(|c| c.credit_applied)
                            .unwrap_or_default();
                        let amount = cycle_charge(entity, k) - credit;
                        if amount > Decimal::ZERO {
                            *month.charges.entry(currency.clone()).or_default() += amount;
                        }
                    }
                }
                EventType::OrderEnded => month.ends += 1,
                EventType::OrderCanceled
                    if e.entity
                        .cancellation
                        .as_ref()
                        .is_some_and(|c| c.cause != CancelCause::PaymentFailure) =>
                {
                    month.cancellations += 1;
                }
                _ => {}
            }
        }
        o = t.order;
        let dues: Vec<_> = o
            .payments_due
            .iter()
            .map(|d| (d.cycle, d.kind, d.amount))
            .collect();
        for (cycle, kind, amount) in dues {
            paid += 1;
            let pay = Command::RecordPayment {
                payment_id: format!("forecast-{paid}"),
                amount,
                due: Some((cycle, kind)),
            };
            if let Ok(t) = apply(&o, &pay, due, policy) {
                o = t.order;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lifecycle::test_support::*;
    use serde_json::json;

    fn forecast_of(order: &Order, now: &str, from: &str, to: &str) -> Forecast {
        let mut f = Forecast::default();
        add_order(&mut f, order, at(now), at(from), at(to), &policy());
        f
    }

    #[test]
    fn a_paid_monthly_online_order_bills_every_month_until_its_end() {
        let o = new_order(
            monthly("ONLINE", 6, "10.00", "2026-01-01T00:00:00Z"),
            at("2026-01-01T00:00:00Z"),
        );
        let o = cmd(
            &o.order,
            "recordPayment",
            json!({"paymentId": "p1", "amount": "10.00"}),
            at("2026-01-01T00:00:00Z"),
        )
        .unwrap()
        .order;
        let f = forecast_of(
            &o,
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00Z",
            "2026-12-31T23:59:59Z",
        );
        let v = f.to_json(
            month_of(&at("2026-01-01T00:00:00Z")),
            month_of(&at("2026-12-01T00:00:00Z")),
            None,
        );
        let months = v["months"].as_array().unwrap();
        assert_eq!(months.len(), 12);
        // Cycles 2..=6 start Feb..Jun (cycle 1 started before the forecast): 5 charges.
        let starts: Vec<u64> = months
            .iter()
            .map(|m| m["cycleStarts"].as_u64().unwrap())
            .collect();
        assert_eq!(starts, [0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0]);
        assert_eq!(months[1]["charges"], json!({"USD": "10.00"}));
        assert_eq!(months[0]["charges"], json!({}));
        // It ends on Jul 1.
        assert_eq!(months[6]["ends"], 1);
    }

    #[test]
    fn offline_orders_count_cycle_starts_but_bill_nothing_and_cancellations_count() {
        let o = new_order(
            monthly("OFFLINE", 0, "10.00", "2026-01-01T00:00:00Z"),
            at("2026-01-01T00:00:00Z"),
        );
        let f = forecast_of(
            &o.order,
            "2026-01-01T00:00:00Z",
            "2026-01-01T00:00:00Z",
            "2026-06-30T00:00:00Z",
        );
        let total: u64 = f.months.values().map(|m| m.cycle_starts).sum();
        assert_eq!(total, 5);
        assert!(f.months.values().all(|m| m.charges.is_empty()));
        let c = cmd(
            &o.order,
            "cancelOrder",
            json!({"effectiveAt": "NEXT_PAYMENT_DATE"}),
            at("2026-01-10T00:00:00Z"),
        )
        .unwrap()
        .order;
        let f = forecast_of(
            &c,
            "2026-01-10T00:00:00Z",
            "2026-01-10T00:00:00Z",
            "2026-06-30T00:00:00Z",
        );
        let cancellations: u64 = f.months.values().map(|m| m.cancellations).sum();
        assert_eq!(cancellations, 1);
        assert_eq!(f.months.values().map(|m| m.cycle_starts).sum::<u64>(), 0);
    }

    proptest::proptest! {
        /// Forecasts merge by adding: one over two books is the sum of the two, in any order,
        /// and a forecast split at a month boundary adds up to the whole.
        #[test]
        fn forecasts_merge_and_split_by_adding(cycles in 0u32..14, amount in 1u32..10_000, months in 1i64..30) {
            let price = Decimal::new(i64::from(amount), 2).to_string();
            let a = new_order(monthly("EXTERNAL", cycles, &price, "2026-01-01T00:00:00Z"), at("2026-01-01T00:00:00Z")).order;
            let b = new_order(monthly("OFFLINE", cycles, &price, "2026-02-15T00:00:00Z"), at("2026-01-01T00:00:00Z")).order;
            let now = at("2026-01-01T00:00:00Z");
            let end = now + chrono::Duration::days(30 * months);
            let mid = at("2026-07-01T00:00:00Z").min(end);
            let mut whole = Forecast::default();
            add_order(&mut whole, &a, now, now, end, &policy());
            add_order(&mut whole, &b, now, now, end, &policy());
            let mut fa = Forecast::default();
            add_order(&mut fa, &a, now, now, end, &policy());
            let mut fb = Forecast::default();
            add_order(&mut fb, &b, now, now, end, &policy());
            let mut merged = fb.clone();
            merged.merge(&fa);
            proptest::prop_assert_eq!(&merged, &whole);
            // A part sent as its reply and read back merges the same (how the owners' parts
            // come to the daemon that answers).
            let (m0, m1) = (month_of(&now), month_of(&end));
            let mut sent = Forecast::from_json(&fa.to_json(m0, m1, None)).unwrap();
            sent.merge(&Forecast::from_json(&fb.to_json(m0, m1, None)).unwrap());
            proptest::prop_assert_eq!(sent.to_json(m0, m1, None), whole.to_json(m0, m1, None));
            let mut first = Forecast::default();
            add_order(&mut first, &a, now, now, mid - chrono::Duration::milliseconds(1), &policy());
            let mut second = Forecast::default();
            add_order(&mut second, &a, now, mid, end, &policy());
            first.merge(&second);
            proptest::prop_assert_eq!(&first, &fa);
            // Without dunning (EXTERNAL, OFFLINE), the starts and ends are those the timers
            // make when they fire up to the end.
            for (o, f) in [(&a, &fa), (&b, &fb)] {
                let fired = crate::domain::lifecycle::fire(o, end, &policy());
                let starts = fired.events.iter().filter(|e| e.event_type == EventType::OrderCycleStarted && e.event_time >= now).count() as u64;
                let ends = fired.events.iter().filter(|e| e.event_type == EventType::OrderEnded).count() as u64;
                proptest::prop_assert_eq!(f.months.values().map(|m| m.cycle_starts).sum::<u64>(), starts);
                proptest::prop_assert_eq!(f.months.values().map(|m| m.ends).sum::<u64>(), ends);
            }
        }
    }
}
