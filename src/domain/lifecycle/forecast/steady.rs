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
use rust_decimal::Decimal;

#[cfg(doc)]
use super::super::next_cycle_start;
use super::super::{cycle_charge, with_currency_scale, DunningRules, Policy};
use super::Counter;
use crate::domain::calendar::{Duration, Zone};
use crate::domain::order::{
    CurrentCycle, Order, OrderStatus, OrderType, Payment, PaymentStatus, PricingKind,
};
use crate::domain::time::{representable, saturating_add, Instant};

/// The prefix of the payment ids the forecast records (`forecast-1`, `forecast-2`, ...).
pub(super) const PAYMENT_PREFIX: &str = "forecast-";

/// Whether cycle `k` is charged as cycle `k - 1` ([`cycle_charge`]'s terms): neither is the
/// trial (free) nor the purchase (its line items), their listed prices are equal (the same
/// value rounds to the same charge), and each promotion covers both or neither.
fn charged_alike(o: &Order, k: u32, listed: Decimal, previous_listed: Decimal) -> bool {
    k >= 3
        && listed == previous_listed
        && o.discounts.iter().all(|d| d.covers(k) == d.covers(k - 1))
}

/// `forecast-{n}`, the id of the forecast's `n`th payment of an order (without `format!`: one
/// is written per ONLINE cycle start).
pub(super) fn payment_id(n: u64) -> String {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n;
    loop {
        at -= 1;
        digits[at] = b'0' + u8::try_from(rest % 10).unwrap_or(0);
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let mut id = String::with_capacity(PAYMENT_PREFIX.len() + digits.len() - at);
    id.push_str(PAYMENT_PREFIX);
    id.extend(digits[at..].iter().map(|d| char::from(*d)));
    id
}

/// True when the walk's steps from `o` on are the calendar's alone, as long as the next
/// cycle start comes before anything else (checked per cycle by [`fast_forward`]):
///
/// - ACTIVE (not pending, paused, ended or canceled), in a cycle;
/// - nothing due (so no deadline, retry or dunning), no plan change scheduled, no credit (a
///   charge would be reduced by it);
/// - for an ONLINE order (whose charges are paid, each payment a change that checks every date
///   of the order can be written): every date of the order can be written, and its dunning
///   retries all come after the cycle start that requests the due (a retry at the start
///   itself would fire in the same change).
fn steady(o: &Order, policy: &Policy) -> bool {
    o.status == OrderStatus::Active
        && o.current_cycle.is_some()
        && o.payments_due.is_empty()
        && o.scheduled_change.is_none()
        && o.credit_balance.is_zero()
        && (o.order_type != OrderType::Online
            || (DunningRules::of(o, policy)
                .retries
                .iter()
                .all(|r| *r > Span::zero())
                && o.instants().all(|t| representable(&t))))
}

/// What a fast-forward did: how many steps of the walk it took, and whether the walk is over
/// (it stopped at a cycle start past the window, which is then the order's next due instant:
/// the walk would stop there too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Stretch {
    pub(super) taken: usize,
    pub(super) past_window: bool,
    /// The forecast payments of the stretch left out of the order's `payments` (the last
    /// ones): only when the walk is over, which nothing reads then.
    pub(super) unwritten: usize,
}

/// A forecast payment of a stretch, until it is written into the order: its cycle, date and
/// amount (its id follows from its rank).
type Unwritten = (u32, Instant, Decimal);

thread_local! {
    /// The payments of the stretch being taken on this thread, written into the order when
    /// the walk goes on after the stretch: most stretches end the walk, and then nothing
    /// reads them, so their ids (one string each) are never made.
    static UNWRITTEN: std::cell::RefCell<Vec<Unwritten>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Takes the cycle starts of `o`'s steady stretch, at most `budget` of them, each as the walk
/// would (counted into `counter`, its due paid with payment id `forecast-{paid}`), and says how
/// many it took (each is one step of the walk) and whether it stopped past the window. Takes
/// none when `o` is not steady. Stops before a cycle start past `to` (where the walk stops
/// too) and before any step the calendar alone does not decide: no next cycle (the last one,
/// or the end date comes first), a next start at or before this one (two cycles in one
/// change), a charge recordPayment would refuse, a date that cannot be written.
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
) -> Stretch {
    let mut stretch = Stretch {
        taken: 0,
        past_window: false,
        unwritten: 0,
    };
    if budget == 0 || !steady(o, policy) {
        return stretch;
    }
    let Some(calendar) = Calendar::of(o) else {
        return stretch;
    };
    UNWRITTEN.with_borrow_mut(|unwritten| {
        unwritten.clear();
        take_stretch(o, to, &calendar, counter, budget, unwritten, &mut stretch);
        // The payments' ids are the walk's next ones, in order.
        if !stretch.past_window {
            let currency = o.currency;
            o.payments.reserve(unwritten.len());
            for &(cycle, date, amount) in unwritten.iter() {
                *paid += 1;
                o.payments.push(Payment {
                    id: payment_id(*paid),
                    amount,
                    date,
                    cycle,
                    refunded: currency.zero(),
                });
            }
        } else {
            stretch.unwritten = unwritten.len();
            *paid += unwritten.len() as u64;
        }
    });
    stretch
}

/// The loop of [`fast_forward`], its payments (but their ids) into `unwritten`.
fn take_stretch(
    o: &mut Order,
    to: Instant,
    calendar: &Calendar,
    counter: &mut Counter<'_>,
    budget: usize,
    unwritten: &mut Vec<Unwritten>,
    stretch: &mut Stretch,
) {
    let currency = o.currency;
    let online = o.order_type == OrderType::Online;
    // The next cycle's start when the previous step computed it.
    let mut known_next: Option<Instant> = None;
    // The previous cycle's charge and payment, and its listed price.
    let mut last: Option<(Decimal, Option<Decimal>)> = None;
    let mut previous_listed = Decimal::ZERO;
    while stretch.taken < budget {
        let Some(index) = o.current_cycle.as_ref().map(|c| c.index) else {
            break;
        };
        let Some(k) = index.checked_add(1) else {
            break;
        };
        let Some(start) = known_next.or_else(|| calendar.next_start(k)) else {
            break;
        };
        if start > to {
            stretch.past_window = true;
            break;
        }
        if !representable(&start) {
            break;
        }
        // The cycle's end: the start of the one after it, or endDate.
        let next = k.checked_add(1).and_then(|k| calendar.next_start(k));
        if next.is_some_and(|n| n <= start || !representable(&n)) {
            break;
        }
        // start_cycle's charge (no credit: steady); an ONLINE order requests it when not zero,
        // and the forecast pays the due's amount (at the currency's scale, as the change's seal
        // leaves it) by recordPayment, which first checks it. Both the previous cycle's when
        // the two are charged alike.
        let listed = o.pricing.amount_for_cycle(k);
        let (charge, payment) = match last {
            Some((charge, payment)) if charged_alike(o, k, listed, previous_listed) => {
                (charge, payment)
            }
            _ => {
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
                (charge, payment)
            }
        };
        if stretch.taken == 0 {
            // What the first change's seal does (later ones find every amount at its scale).
            with_currency_scale(o);
        }
        o.current_cycle = Some(CurrentCycle {
            index: k,
            started_date: start,
            ended_date: next.or(o.end_date),
            credit_applied: None,
        });
        // The cycle start's change.
        o.version += 1;
        o.updated_date = start;
        o.sequence += 2;
        counter.cycle_started(start, || charge);
        // The payment's change.
        if let Some(amount) = payment {
            unwritten.push((k, start, amount));
            o.last_payment_status = PaymentStatus::Paid;
            o.version += 1;
            o.sequence += 1;
        }
        known_next = next;
        (last, previous_listed) = (Some((charge, payment)), listed);
        stretch.taken += 1;
    }
}

/// The cycle starts of a steady stretch, from what its steps leave as it is (the pricing, the
/// dates the calendar counts from, the pauses' total, the end date): [`next_cycle_start`] for
/// each next cycle, on the same formula as `cycle_start`, without its memo (a stretch asks for
/// each start once, each a new one) and without adding a pause total of zero (each a date
/// computation). A property test holds the two equal.
#[derive(Debug, Clone, Copy)]
pub(in crate::domain::lifecycle) struct Calendar {
    duration: Duration,
    cycle_count: u32,
    zone: Zone,
    start_date: Instant,
    free_trial_days: u32,
    /// After a plan change to another duration: cycles from the second on count from the
    /// first.
    anchor: Option<(Instant, u32)>,
    paused_total: i64,
    end_date: Option<Instant>,
}

impl Calendar {
    /// The calendar of a subscription (None for the single-payment kinds, which have no next
    /// cycle).
    pub(in crate::domain::lifecycle) fn of(o: &Order) -> Option<Calendar> {
        let PricingKind::Subscription {
            cycle_duration,
            cycle_count,
        } = o.pricing.kind
        else {
            return None;
        };
        Some(Calendar {
            duration: cycle_duration,
            cycle_count,
            zone: o.time_zone,
            start_date: o.start_date,
            free_trial_days: o.free_trial_days,
            anchor: o.anchor.map(|a| (a, o.anchor_cycle.max(1))),
            paused_total: o.paused_total,
            end_date: o.end_date,
        })
    }

    /// The start of cycle `k` (k >= 1), as `cycle_start`: the zone's calendar from the anchor,
    /// or from the start date and the trial, plus every pause taken.
    pub(in crate::domain::lifecycle) fn start(&self, k: u32) -> Option<Instant> {
        let t = match self.anchor {
            Some((anchor, first)) if k >= first => {
                self.zone
                    .calendar(anchor, 0, Some(self.duration), u64::from(k - first))
            }
            _ => self.zone.calendar(
                self.start_date,
                self.free_trial_days,
                Some(self.duration),
                u64::from(k.checked_sub(1)?),
            ),
        }?;
        Some(if self.paused_total == 0 {
            // `t` is representable (the calendar's own range): adding nothing leaves it.
            t
        } else {
            saturating_add(t, Span::milliseconds(self.paused_total))
        })
    }

    /// The start of cycle `k` when it follows cycle `k - 1`, as [`next_cycle_start`]: not
    /// beyond cycleCount, never at or after endDate.
    fn next_start(&self, k: u32) -> Option<Instant> {
        if self.cycle_count != 0 && k > self.cycle_count {
            return None;
        }
        let start = self.start(k)?;
        match self.end_date {
            Some(end) if start >= end => None,
            _ => Some(start),
        }
    }
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

    fn counter<'a>(into: &'a mut Forecast, to: &str) -> Counter<'a> {
        Counter {
            into,
            from: at("2026-01-01T00:00:00Z"),
            to: at(to),
            currency: "USD",
            bills: true,
        }
    }

    /// A fast-forward to the end of 2028.
    fn to_2029(o: &mut Order, c: &mut Counter<'_>, paid: &mut u64, budget: usize) -> Stretch {
        fast_forward(o, at("2028-12-31T00:00:00Z"), &policy(), c, paid, budget)
    }

    fn stretch(taken: usize, past_window: bool, unwritten: usize) -> Stretch {
        Stretch {
            taken,
            past_window,
            unwritten,
        }
    }

    #[test]
    fn a_steady_order_is_fast_forwarded_to_the_window_end_in_one_call() {
        let mut o = paid_monthly(0);
        let mut f = Forecast::default();
        let mut paid = 0;
        let mut c = counter(&mut f, "2028-12-31T00:00:00Z");
        // Cycles 2..=36 start Feb 2026..Dec 2028, each paid at once; the next is past the
        // window.
        assert_eq!(
            to_2029(&mut o, &mut c, &mut paid, usize::MAX),
            stretch(35, true, 35)
        );
        // Their payments are not written: the walk is over.
        assert_eq!((paid, o.payments.len()), (35, 1));
        let c = o.current_cycle.as_ref().unwrap();
        assert_eq!((c.index, c.started_date), (36, at("2028-12-01T00:00:00Z")));
        assert_eq!(c.ended_date, Some(at("2029-01-01T00:00:00Z")));
        assert_eq!(f.months.values().map(|m| m.cycle_starts).sum::<u64>(), 35);
        let total: rust_decimal::Decimal = f.months.values().map(|m| m.charges["USD"]).sum();
        assert_eq!(total.to_string(), "350.00");
    }

    #[test]
    fn it_stops_before_the_last_cycle_ends_and_within_its_budget() {
        let mut f = Forecast::default();
        let mut paid = 0;
        let mut c = counter(&mut f, "2028-12-31T00:00:00Z");
        // 12 cycles: 2..=12 are taken, the end (Jan 2027) is the walk's.
        let mut o = paid_monthly(12);
        assert_eq!(
            to_2029(&mut o, &mut c, &mut paid, usize::MAX),
            stretch(11, false, 0)
        );
        assert_eq!(o.status, OrderStatus::Active);
        // The walk goes on: the payments are written, with the walk's ids.
        assert_eq!((paid, o.payments.len()), (11, 12));
        assert_eq!(o.payments[11].id, "forecast-11");
        assert_eq!(o.payments[11].date, at("2026-12-01T00:00:00Z"));
        let mut o = paid_monthly(12);
        assert_eq!(to_2029(&mut o, &mut c, &mut paid, 4), stretch(4, false, 0));
        assert_eq!(o.payments[4].id, "forecast-15");
        // Not steady: something is due (cycle 2's charge, requested and not paid).
        let mut o = paid_monthly(0);
        let mut due = crate::domain::fire(&o, at("2026-02-01T00:00:00Z"), &policy()).order;
        assert!(!due.payments_due.is_empty());
        assert_eq!(
            to_2029(&mut due, &mut c, &mut paid, usize::MAX),
            stretch(0, false, 0)
        );
        o.status = OrderStatus::Paused;
        assert_eq!(
            to_2029(&mut o, &mut c, &mut paid, usize::MAX),
            stretch(0, false, 0)
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
        let mut c = counter(&mut f, "2028-12-31T00:00:00Z");
        assert_eq!(
            to_2029(&mut o, &mut c, &mut paid, usize::MAX),
            stretch(0, false, 0)
        );
        assert_eq!((o, paid), (before, 0));
        assert!(f.months.is_empty());
    }

    #[test]
    fn payment_ids_are_written_as_format_writes_them() {
        for n in [0, 1, 9, 10, 99, 100, 12_345, u64::MAX] {
            assert_eq!(payment_id(n), format!("forecast-{n}"));
        }
    }
}
