//! The cycles' calendar and money: when cycle k starts (memoized), the charge of a cycle, its
//! discount, the price details an order shows.

use rust_decimal::Decimal;

use super::*;
use crate::domain::calendar::Zone;
use crate::domain::order::{DiscountKind, Order, PriceDetails, PricingKind};
use crate::domain::time::Instant;

/// Start of cycle `k` (k >= 1) of a subscription: the clamped calendar date from the anchor,
/// plus every pause taken so far (all of which lie before any cycle not yet started).
pub(super) fn cycle_start(order: &Order, k: u32) -> Option<Instant> {
    let key = CycleKey {
        duration: match order.pricing.kind {
            PricingKind::Subscription { cycle_duration, .. } if k >= 1 => cycle_duration,
            _ => return None,
        },
        anchor: order.anchor,
        anchor_cycle: order.anchor_cycle,
        start_date: order.start_date,
        free_trial_days: order.free_trial_days,
        time_zone: order.time_zone,
        paused_total: order.paused_total,
        k,
    };
    CYCLE_STARTS.with(|memo| {
        let mut last = memo.borrow_mut();
        if let Some((_, start)) = last.iter().flatten().find(|(at, _)| *at == key) {
            return *start;
        }
        let start = key.compute();
        last[1] = last[0].take();
        last[0] = Some((key, start));
        start
    })
}

/// Everything the start of a subscription's cycle depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct CycleKey {
    duration: crate::domain::calendar::Duration,
    anchor: Option<Instant>,
    anchor_cycle: u32,
    start_date: Instant,
    free_trial_days: u32,
    time_zone: Zone,
    paused_total: i64,
    k: u32,
}

impl CycleKey {
    /// The calendar computation of [`cycle_start`].
    fn compute(&self) -> Option<Instant> {
        let k = self.k;
        match self.anchor {
            // After a plan change to another duration, cycles count from its anchor.
            Some(anchor) if k >= self.anchor_cycle.max(1) => self
                .time_zone
                .calendar(
                    anchor,
                    0,
                    Some(self.duration),
                    u64::from(k - self.anchor_cycle.max(1)),
                )
                .map(|t| shift(t, self.paused_total)),
            _ => self
                .time_zone
                .calendar(
                    self.start_date,
                    self.free_trial_days,
                    Some(self.duration),
                    u64::from(k - 1),
                )
                .map(|t| shift(t, self.paused_total)),
        }
    }
}

/// When the cycle after the current one starts, if it ever does: not beyond cycleCount, and
/// never at or after endDate.
pub fn next_cycle_start(order: &Order) -> Option<Instant> {
    let current = order.current_cycle.as_ref()?;
    let PricingKind::Subscription { cycle_count, .. } = order.pricing.kind else {
        return None;
    };
    let k = current.index + 1;
    if cycle_count != 0 && k > cycle_count {
        return None;
    }
    let start = cycle_start(order, k)?;
    match order.end_date {
        Some(end) if start >= end => None,
        _ => Some(start),
    }
}

/// When the current cycle ends: the next cycle's start, or endDate when there is none.
pub(super) fn current_cycle_end(order: &Order) -> Option<Instant> {
    next_cycle_start(order).or(order.end_date)
}

pub(super) fn refresh_cycle_end(order: &mut Order) {
    if order.status.is_final() {
        return;
    }
    let end = current_cycle_end(order);
    if let Some(c) = order.current_cycle.as_mut() {
        c.ended_date = end;
    }
    plan_change::refresh_scheduled(order);
}

/// The one-time add-ons of the purchase: the sum of quantity x unit price.
pub(super) fn line_items_total(order: &Order) -> Decimal {
    order
        .line_items
        .iter()
        .map(|i| i.unit_price * Decimal::from(i.quantity))
        .sum()
}

/// What the order's promotions take off a charge of `base` for cycle `k`: each promotion that
/// covers the cycle takes its percentage (rounded half-even) or its fixed amount; together
/// never more than `base`, so a charge never goes below zero. The trial (cycle 0) is free.
pub fn discount_for_cycle(order: &Order, base: Decimal, k: u32) -> Decimal {
    let c = order.currency;
    let off: Decimal = order
        .discounts
        .iter()
        .filter(|d| d.covers(k))
        .map(|d| match d.kind {
            DiscountKind::Percent => c.round(base * d.value / Decimal::ONE_HUNDRED),
            DiscountKind::Fixed => d.value,
        })
        .sum();
    c.round(off.min(base).max(Decimal::ZERO))
}

/// The charge of cycle `k`, rounded to the currency: its `prices[]` amount (plus the line
/// items for cycle 1, the purchase) less the promotions that cover it. Cycle 0, the trial, is
/// free. For an order without a trial, cycle 1's charge is `priceDetails.total`.
pub fn cycle_charge(order: &Order, k: u32) -> Decimal {
    let c = order.currency;
    if k == 0 {
        return c.zero();
    }
    let mut base = order.pricing.amount_for_cycle(k);
    if k == 1 {
        base += line_items_total(order);
    }
    let base = c.round(base);
    base - discount_for_cycle(order, base, k)
}

/// What must be paid to purchase the order: nothing during a trial, else the purchase charge.
pub(super) fn purchase_due(order: &Order) -> Decimal {
    if order.free_trial_days > 0 {
        order.currency.zero()
    } else {
        order.price_details.total
    }
}

/// The purchase charge: cycle 1's amount + line items - the promotions' discount (never more
/// than the subtotal, so the total is never below zero).
pub fn price_details(order: &Order) -> PriceDetails {
    let c = order.currency;
    let subtotal = c.round(order.pricing.amount_for_cycle(1) + line_items_total(order));
    let discount = discount_for_cycle(order, subtotal, 1);
    let total = subtotal - discount;
    PriceDetails {
        subtotal,
        discount,
        total,
        currency: c,
    }
}

/// A cycle start computed, with what it was computed from.
pub(super) type KnownStart = (CycleKey, Option<Instant>);

thread_local! {
    /// The last two cycle starts computed on this thread: a step of a walk asks for the same
    /// one several times (the next due instant, the cycle loop, each refresh of the cycle's
    /// end), and each is a calendar computation. Keyed by everything the start depends on, so
    /// a hit is the value the computation gives.
    static CYCLE_STARTS: std::cell::RefCell<[Option<KnownStart>; 2]> =
        const { std::cell::RefCell::new([None, None]) };
}
