//! The fast-forward of an order's steady stretches: while an order is ACTIVE with nothing due,
//! no scheduled plan change and no credit, each of its next cycle starts is decided by the
//! calendar alone, and the forecast's walk would take it the same way every time: the cycle
//! starts (one change: orderCycleStarted, orderUpdated), an ONLINE order requests its charge
//! and the forecast pays it at once (a second change: orderUpdated). This module takes those
//! steps without running `fire_at` and recordPayment's rules for each: it computes the next
//! start, counts the cycle and leaves the order exactly as the two changes would (the same
//! cycle, versions, sequence, payment and payment status), up to the first instant anything
//! else could happen (the end date, the last cycle, the window's end), where the walk takes
//! over. A property test holds the walk with and without it equal, figure for figure and in
//! the order it leaves.

use chrono::Duration as Span;

use super::super::{cycle_charge, next_cycle_start, with_currency_scale, DunningRules, Policy};
use super::Counter;
use crate::domain::order::{CurrentCycle, Order, OrderStatus, OrderType, Payment, PaymentStatus};
use crate::domain::time::{representable, Instant};

/// The prefix of the payment ids the forecast records (`forecast-1`, `forecast-2`, ...).
pub(super) const PAYMENT_PREFIX: &str = "forecast-";

/// True when the walk's steps from `o` on are the calendar's alone, as long as the next
/// cycle start comes before anything else (checked per cycle by [`fast_forward`]):
///
/// - ACTIVE (not pending, paused, ended or canceled), in a cycle;
/// - nothing due (so no deadline, retry or dunning), no plan change scheduled, no credit (a
///   charge would be reduced by it);
/// - every date of the order can be written (each payment's change checks them all);
/// - an ONLINE order's dunning retries all come after the cycle start that requests the due
///   (a retry at the start itself would fire in the same change).
fn steady(o: &Order, policy: &Policy) -> bool {
    o.status == OrderStatus::Active
        && o.current_cycle.is_some()
        && o.payments_due.is_empty()
        && o.scheduled_change.is_none()
        && o.credit_balance.is_zero()
        && (o.order_type != OrderType::Online
            || DunningRules::of(o, policy)
                .retries
                .iter()
                .all(|r| *r > Span::zero()))
        && o.instants().all(|t| representable(&t))
}

/// Takes the cycle starts of `o`'s steady stretch, at most `budget` of them, each as the walk
/// would (counted into `counter`, its due paid with payment id `forecast-{paid}`), and returns
/// how many it took (each is one step of the walk). Takes none when `o` is not steady. Stops
/// before a cycle start past `to` (where the walk stops too) and before any step the calendar
/// alone does not decide: no next cycle (the last one, or the end date comes first), a next
/// start at or before this one (two cycles in one change), a charge recordPayment would refuse,
/// a date that cannot be written.
///
/// The caller makes sure no payment id of the order itself starts with [`PAYMENT_PREFIX`]: a
/// forecast payment under an id already used is refused by recordPayment and leaves the due.
pub(super) fn fast_forward(
    o: &mut Order,
    to: Instant,
    policy: &Policy,
    counter: &mut Counter<'_>,
    paid: &mut u64,
    budget: usize,
) -> usize {
    if budget == 0 || !steady(o, policy) {
        return 0;
    }
    let currency = o.currency;
    let online = o.order_type == OrderType::Online;
    let mut taken = 0;
    // The next cycle's start when the previous step computed it (it depends only on the
    // cycle's index among what a steady step changes).
    let mut known_next: Option<Instant> = None;
    while taken < budget {
        let Some(current) = o.current_cycle.clone() else {
            break;
        };
        let Some(start) = known_next.or_else(|| next_cycle_start(o)) else {
            break;
        };
        if start > to || !representable(&start) {
            break;
        }
        let k = current.index + 1;
        // start_cycle's charge (no credit: steady); an ONLINE order requests it when not zero,
        // and the forecast pays the due's amount (at the currency's scale, as the change's seal
        // leaves it) by recordPayment, which first checks it.
        let charge = cycle_charge(o, k);
        let payment = if online && !charge.is_zero() {
            let mut due = charge;
            if due.scale() < currency.minor_units() {
                due.rescale(currency.minor_units());
            }
            match currency.check_amount(due) {
                Ok(amount) => Some(amount),
                Err(_) => break,
            }
        } else {
            None
        };
        // The cycle's end: the start of the one after it, or endDate.
        o.current_cycle = Some(CurrentCycle {
            index: k,
            started_date: start,
            ended_date: None,
            credit_applied: None,
        });
        let next = next_cycle_start(o);
        if next.is_some_and(|n| n <= start || !representable(&n)) {
            o.current_cycle = Some(current);
            break;
        }
        if taken == 0 {
            // What the first change's seal does (later ones find every amount at its scale).
            with_currency_scale(o);
        }
        if let Some(c) = o.current_cycle.as_mut() {
            c.ended_date = next.or(o.end_date);
        }
        // The cycle start's change.
        o.version += 1;
        o.updated_date = start;
        o.sequence += 2;
        counter.cycle_started(start, || charge);
        // The payment's change.
        if let Some(amount) = payment {
            *paid += 1;
            o.payments.push(Payment {
                id: format!("{PAYMENT_PREFIX}{paid}"),
                amount,
                date: start,
                cycle: k,
                refunded: currency.zero(),
            });
            o.last_payment_status = PaymentStatus::Paid;
            o.version += 1;
            o.sequence += 1;
        }
        known_next = next;
        taken += 1;
    }
    taken
}

#[cfg(test)]
mod tests {
    use super::super::{Counter, Forecast};
    use super::*;
    use crate::domain::lifecycle::test_support::*;
    use serde_json::json;

    /// A paid monthly ONLINE order, unlimited, started at 2026-01-01.
    fn paid_monthly(cycles: u32) -> Order {
        let o = new_order(
            monthly("ONLINE", cycles, "10.00", "2026-01-01T00:00:00Z"),
            at("2026-01-01T00:00:00Z"),
        );
        cmd(
            &o.order,
            "recordPayment",
            json!({"paymentId": "p1", "amount": "10.00"}),
            at("2026-01-01T00:00:00Z"),
        )
        .unwrap()
        .order
    }

    fn counter<'a>(into: &'a mut Forecast, o: &Order, to: &str) -> Counter<'a> {
        Counter {
            into,
            from: at("2026-01-01T00:00:00Z"),
            to: at(to),
            currency: o.currency,
            bills: true,
        }
    }

    #[test]
    fn a_steady_order_is_fast_forwarded_to_the_window_end_in_one_call() {
        let mut o = paid_monthly(0);
        let mut f = Forecast::default();
        let mut paid = 0;
        let mut c = counter(&mut f, &o, "2028-12-31T00:00:00Z");
        let taken = fast_forward(
            &mut o,
            at("2028-12-31T00:00:00Z"),
            &policy(),
            &mut c,
            &mut paid,
            usize::MAX,
        );
        // Cycles 2..=36 start Feb 2026..Dec 2028, each paid at once.
        assert_eq!((taken, paid), (35, 35));
        let c = o.current_cycle.as_ref().unwrap();
        assert_eq!((c.index, c.started_date), (36, at("2028-12-01T00:00:00Z")));
        assert_eq!(c.ended_date, Some(at("2029-01-01T00:00:00Z")));
        assert_eq!(o.payments.last().unwrap().id, "forecast-35");
        assert_eq!(f.months.values().map(|m| m.cycle_starts).sum::<u64>(), 35);
        let total: rust_decimal::Decimal = f.months.values().map(|m| m.charges["USD"]).sum();
        assert_eq!(total.to_string(), "350.00");
    }

    #[test]
    fn it_stops_before_the_last_cycle_ends_and_within_its_budget() {
        // 12 cycles: 2..=12 are taken, the end (Jan 2027) is the walk's.
        let mut o = paid_monthly(12);
        let mut f = Forecast::default();
        let mut paid = 0;
        let mut c = counter(&mut f, &o, "2028-12-31T00:00:00Z");
        let taken = fast_forward(
            &mut o,
            at("2028-12-31T00:00:00Z"),
            &policy(),
            &mut c,
            &mut paid,
            usize::MAX,
        );
        assert_eq!(taken, 11);
        assert_eq!(o.status, OrderStatus::Active);
        let mut o = paid_monthly(12);
        let taken = fast_forward(
            &mut o,
            at("2028-12-31T00:00:00Z"),
            &policy(),
            &mut c,
            &mut paid,
            4,
        );
        assert_eq!(taken, 4);
        // Not steady: something is due (cycle 2's charge, requested and not paid).
        let mut o = paid_monthly(0);
        let mut due = crate::domain::fire(&o, at("2026-02-01T00:00:00Z"), &policy()).order;
        assert!(!due.payments_due.is_empty());
        assert_eq!(
            fast_forward(
                &mut due,
                at("2028-12-31T00:00:00Z"),
                &policy(),
                &mut c,
                &mut paid,
                usize::MAX
            ),
            0
        );
        o.status = OrderStatus::Paused;
        assert_eq!(
            fast_forward(
                &mut o,
                at("2028-12-31T00:00:00Z"),
                &policy(),
                &mut c,
                &mut paid,
                usize::MAX
            ),
            0
        );
    }

    #[test]
    fn cycles_of_no_length_are_left_to_the_walk() {
        // Every start at the same instant: the walk starts them in one change.
        let mut o = paid_monthly(5);
        if let crate::domain::order::PricingKind::Subscription { cycle_duration, .. } =
            &mut o.pricing.kind
        {
            cycle_duration.count = 0;
        }
        let before = o.clone();
        let mut f = Forecast::default();
        let mut paid = 0;
        let mut c = counter(&mut f, &o, "2028-12-31T00:00:00Z");
        let taken = fast_forward(
            &mut o,
            at("2028-12-31T00:00:00Z"),
            &policy(),
            &mut c,
            &mut paid,
            usize::MAX,
        );
        assert_eq!((taken, paid), (0, 0));
        assert_eq!(o, before);
        assert!(f.months.is_empty());
    }
}
