//! changePlan and cancelScheduledChange (SPEC 8, precise rules in SPEC 10): a recurring order
//! moves to another plan now (with or without proration) or at its next payment date.
//!
//! Proration, IMMEDIATELY, for the current cycle k = [s, e) at t: f = (e - t) / (e - s), exact
//! in milliseconds; credit = round(f x the old plan's billed charge for k) when k is settled and
//! unrefunded; charge = round(f x the new plan's charge for k). Same cycle duration: a paid
//! cycle's positive net is a PRORATION due, a negative one goes to creditBalance; an unpaid
//! cycle's due becomes round((1 - f) x old) + charge. Another duration: cycle k ends now and
//! k + 1 starts now under the new plan with a new anchor; the unused part of a paid k is credit.

use rust_decimal::Decimal;
use serde_json::json;

use super::{
    cycle_start, discount_for_cycle, next_cycle_start, price_details, refresh_cycle_end,
    request_due, scheduled_end, start_cycle, Drafts, Policy,
};
use crate::domain::calendar::Duration;
use crate::domain::command::{validate_prices, PriceArgs};
use crate::domain::error::DomainError;
use crate::domain::event::EventType;
use crate::domain::money::Currency;
use crate::domain::order::{
    DueKind, EffectiveAt, Order, OrderStatus, OrderType, PaymentStatus, Plan, Pricing, PricingKind,
    ScheduledChange,
};
use crate::domain::time::{saturating_add, Instant};

/// A validated changePlan.
pub(super) struct PlanChange<'a> {
    pub plan: &'a Plan,
    pub pricing_kind: PricingKind,
    pub prices: &'a [PriceArgs],
    pub currency: Option<Currency>,
    pub effective_at: EffectiveAt,
    pub prorate: bool,
}

/// The money of a change: `{credit, charge, net}` (zeros without proration).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Proration {
    credit: Decimal,
    charge: Decimal,
}

impl Proration {
    fn none(c: Currency) -> Proration {
        Proration {
            credit: c.zero(),
            charge: c.zero(),
        }
    }

    fn json(&self, c: Currency) -> serde_json::Value {
        json!({
            "credit": c.round(self.credit),
            "charge": c.round(self.charge),
            "net": c.round(self.charge - self.credit),
        })
    }
}

fn duration_of(kind: PricingKind) -> Option<Duration> {
    match kind {
        PricingKind::Subscription { cycle_duration, .. } => Some(cycle_duration),
        _ => None,
    }
}

fn cycle_count_of(kind: PricingKind) -> u32 {
    match kind {
        PricingKind::Subscription { cycle_count, .. } => cycle_count,
        _ => 1,
    }
}

/// "Same duration" after WEEK = 7 DAY and YEAR = 12 MONTH (SPEC 10).
fn same_duration(a: Duration, b: Duration) -> bool {
    use crate::domain::calendar::Unit;
    let norm = |d: Duration| match d.unit {
        Unit::Day => (0, d.count),
        Unit::Week => (0, d.count * 7),
        Unit::Month => (1, d.count),
        Unit::Year => (1, d.count * 12),
    };
    norm(a) == norm(b)
}

/// A plan's billed charge for cycle `k`: its prices[] amount less the order's promotions, never
/// line items (SPEC 10's credit basis).
fn billed(o: &Order, pricing: &Pricing, k: u32) -> Decimal {
    let c = o.currency;
    if k == 0 {
        return c.zero();
    }
    let base = c.round(pricing.amount_for_cycle(k));
    base - discount_for_cycle(o, base, k)
}

/// Whether `o` may change plan to `change` at all (its status, kind, renewal, currency and
/// type), before any arithmetic.
fn check_can_change(o: &Order, change: &PlanChange<'_>) -> Result<(), DomainError> {
    match o.status {
        OrderStatus::Active | OrderStatus::Pending => {}
        OrderStatus::Draft => {
            return Err(DomainError::state(
                "a DRAFT order changes plan with updateOrder",
            ))
        }
        other => {
            return Err(DomainError::state(format!(
                "only ACTIVE and PENDING orders change plan; this one is {}",
                other.as_str()
            )))
        }
    }
    if !o.pricing.is_recurring() {
        return Err(DomainError::state(
            "a single-payment order cannot change plan",
        ));
    }
    if o.auto_renew_canceled {
        return Err(DomainError::state("the order's auto-renewal is canceled"));
    }
    if change.currency.is_some_and(|c| c != o.currency) {
        return Err(DomainError::invalid(
            "currency",
            format!(
                "the order's currency is {}; a plan change keeps it",
                o.currency
            ),
        ));
    }
    if change.prorate && o.order_type == OrderType::Offline {
        return Err(DomainError::invalid(
            "proration",
            "OFFLINE orders are paid once: use NONE",
        ));
    }
    Ok(())
}

/// changePlan's rules.
pub(super) fn change_plan(
    o: &mut Order,
    change: &PlanChange<'_>,
    now: Instant,
    policy: &Policy,
    d: &mut Drafts,
) -> Result<(), DomainError> {
    check_can_change(o, change)?;
    let limit = match change.pricing_kind {
        PricingKind::Subscription { cycle_count: 0, .. } => None,
        PricingKind::Subscription { cycle_count, .. } => Some(cycle_count),
        _ => Some(1),
    };
    let prices = validate_prices(change.prices, limit, o.currency)?;
    let pricing = Pricing {
        kind: change.pricing_kind,
        prices,
    };
    let k = o.current_cycle.as_ref().map_or(0, |c| c.index);
    let old_duration = duration_of(o.pricing.kind);
    let new_duration = duration_of(pricing.kind);
    let same = match (old_duration, new_duration) {
        (Some(a), Some(b)) => same_duration(a, b),
        _ => false,
    };
    let count = cycle_count_of(pricing.kind);
    let trial = o.status == OrderStatus::Active && k == 0;
    let pending = o.status == OrderStatus::Pending;
    // Cycles keep their numbers: the new cycleCount counts from 1.
    let first_new = if pending || trial || (change.effective_at == EffectiveAt::Immediately && same)
    {
        k.max(1)
    } else {
        k + 1
    };
    if count != 0 && count < first_new {
        return Err(DomainError::invalid(
            "pricing.subscription.cycleCount",
            format!("must be 0 or at least {first_new}, the order's cycle under the new plan"),
        ));
    }
    // Any later changePlan drops a scheduled one.
    let dropped = o.scheduled_change.take().is_some();
    if change.effective_at == EffectiveAt::NextPaymentDate {
        if pending {
            return Err(DomainError::state(
                "a PENDING order changes plan IMMEDIATELY",
            ));
        }
        let Some(effective_date) = next_cycle_start(o) else {
            return Err(DomainError::state("the order has no next payment date"));
        };
        let scheduled = ScheduledChange {
            plan: change.plan.clone(),
            pricing,
            effective_date,
        };
        d.emit(
            EventType::OrderPlanChangeScheduled,
            || json!({ "scheduledChange": &scheduled }),
        );
        o.scheduled_change = Some(scheduled);
        return Ok(());
    }
    if dropped {
        d.emit(
            EventType::OrderPlanChangeScheduled,
            || json!({ "scheduledChange": null }),
        );
    }
    let previous = o.plan.clone();
    let c = o.currency;
    // Another duration (past a trial): cycle k ends now and k + 1 starts now, after the event,
    // under `later`'s pricing.
    let (proration, later) = if pending {
        (switch_pending(o, change, pricing, now, policy)?, None)
    } else if trial {
        // During a trial the plan is replaced; trial end and anchor stay; nothing is prorated.
        o.plan = change.plan.clone();
        o.pricing = pricing;
        recompute_end(o)?;
        (Proration::none(c), None)
    } else if same {
        let proration = switch_same_duration(o, change, pricing, k, now, policy)?;
        (proration, None)
    } else {
        (prorate_unused(o, change.prorate, k, now)?, Some(pricing))
    };
    plan_changed(
        d,
        &previous,
        change.plan,
        EffectiveAt::Immediately,
        proration,
        c,
    );
    match later {
        Some(pricing) => {
            re_anchor(o, change.plan.clone(), pricing, k, now)?;
            start_cycle(o, now, policy, d);
        }
        None => refresh_cycle_end(o),
    }
    Ok(())
}

/// orderPlanChanged `{previousPlan, plan, effectiveAt, proration}`.
fn plan_changed(
    d: &mut Drafts,
    previous: &Plan,
    plan: &Plan,
    effective_at: EffectiveAt,
    proration: Proration,
    c: Currency,
) {
    d.emit(EventType::OrderPlanChanged, || {
        json!({
            "previousPlan": previous,
            "plan": plan,
            "effectiveAt": effective_at,
            "proration": proration.json(c),
        })
    });
}

/// cancelScheduledChange's rules (allowed on PAUSED orders too).
pub(super) fn cancel_scheduled(o: &mut Order, d: &mut Drafts) -> Result<(), DomainError> {
    if o.scheduled_change.take().is_none() {
        return Err(DomainError::state("the order has no scheduled plan change"));
    }
    d.emit(
        EventType::OrderPlanChangeScheduled,
        || json!({ "scheduledChange": null }),
    );
    Ok(())
}

/// A cancellation (either kind) drops a scheduled change in the same change.
pub(super) fn drop_scheduled(o: &mut Order, d: &mut Drafts) {
    if o.scheduled_change.take().is_some() {
        d.emit(
            EventType::OrderPlanChangeScheduled,
            || json!({ "scheduledChange": null }),
        );
    }
}

/// The scheduled change applies at its effective date `t`, before the cycle that starts then
/// (which then starts under the new plan at its full price).
pub(super) fn apply_scheduled(o: &mut Order, t: Instant, d: &mut Drafts) {
    let Some(sc) = o.scheduled_change.take() else {
        return;
    };
    let c = o.currency;
    let previous = o.plan.clone();
    let k = o.current_cycle.as_ref().map_or(0, |c| c.index);
    let same = match (duration_of(o.pricing.kind), duration_of(sc.pricing.kind)) {
        (Some(a), Some(b)) => same_duration(a, b),
        _ => false,
    };
    plan_changed(
        d,
        &previous,
        &sc.plan,
        EffectiveAt::NextPaymentDate,
        Proration::none(c),
        c,
    );
    if same || k == 0 {
        o.plan = sc.plan;
        o.pricing = sc.pricing;
        // The anchor stays; endDate follows the new cycle count (an error only past the
        // representable range, where the old end stands).
        let _ = recompute_end(o);
    } else {
        // A new anchor at the effective date: cycle k + 1 starts there.
        let _ = re_anchor_at(o, sc.plan, sc.pricing, k + 1, t);
    }
}

/// The scheduled change's effective date follows the next cycle start (pauses, postponements).
pub(super) fn refresh_scheduled(o: &mut Order) {
    // On every change's path: only an order with a scheduled change computes its next start.
    if o.scheduled_change.is_none() {
        return;
    }
    if let Some(next) = next_cycle_start(o) {
        if let Some(sc) = o.scheduled_change.as_mut() {
            sc.effective_date = next;
        }
    }
}

/// endDate and earliestEndDate from the current anchor and the (new) cycle count, plus the
/// pauses since the anchor.
fn recompute_end(o: &mut Order) -> Result<(), DomainError> {
    let end = match o.pricing.kind {
        PricingKind::Subscription { cycle_count: 0, .. } => None,
        PricingKind::Subscription { cycle_count, .. } if o.anchor.is_some() => {
            cycle_start(o, cycle_count + 1)
        }
        kind => scheduled_end(kind, o.start_date, o.free_trial_days, o.time_zone)?
            .map(|e| saturating_add(e, chrono::Duration::milliseconds(o.paused_total))),
    };
    o.end_date = end;
    o.earliest_end_date = end;
    Ok(())
}

/// A PENDING order (IMMEDIATELY only): the plan is replaced and repriced; if its purchase was
/// paid, the difference is a PRORATION due (f = 1) or credit.
fn switch_pending(
    o: &mut Order,
    change: &PlanChange<'_>,
    pricing: Pricing,
    now: Instant,
    policy: &Policy,
) -> Result<Proration, DomainError> {
    let c = o.currency;
    let old_total = o.price_details.total;
    o.plan = change.plan.clone();
    o.pricing = pricing;
    o.price_details = price_details(o);
    recompute_end(o)?;
    let paid = o
        .payments
        .iter()
        .any(|p| p.cycle == 1 && !p.amount.is_zero());
    if !change.prorate || !paid {
        return Ok(Proration::none(c));
    }
    let proration = Proration {
        credit: old_total.min(paid_for(o, 1)),
        charge: o.price_details.total,
    };
    settle_net(o, proration, 1, now, policy);
    Ok(proration)
}

/// IMMEDIATELY, same cycle duration: the plan switches now; dates and the anchor stay.
fn switch_same_duration(
    o: &mut Order,
    change: &PlanChange<'_>,
    pricing: Pricing,
    k: u32,
    now: Instant,
    policy: &Policy,
) -> Result<Proration, DomainError> {
    let c = o.currency;
    let f = unused_fraction(o, now);
    let old_charge = billed(o, &o.pricing, k);
    let new_charge = billed(o, &pricing, k);
    let current_end = o.current_cycle.as_ref().and_then(|c| c.ended_date);
    o.plan = change.plan.clone();
    o.pricing = pricing;
    recompute_end(o)?;
    // A last cycle stretched by a postponement, moved to a plan with more cycles: the next one
    // would start in the past, so it starts where the current one was to end instead.
    if let Some(end) = current_end.filter(|_| next_cycle_start(o).is_some_and(|n| n < now)) {
        o.anchor = Some(end);
        o.anchor_cycle = k + 1;
        o.paused_total = 0;
        recompute_end(o)?;
    }
    if !change.prorate {
        return Ok(Proration::none(c));
    }
    let unpaid = o
        .payments_due
        .iter()
        .position(|due| due.cycle == k && due.kind == DueKind::Cycle);
    let charge = c.round(f * new_charge);
    match unpaid {
        // Unpaid: no PRORATION entry; the cycle's own due becomes the used part of the old
        // charge plus the new charge for the rest; its deadline stands.
        Some(i) => {
            let used = c.round((Decimal::ONE - f) * old_charge);
            o.payments_due[i].amount = used + charge;
            Ok(Proration {
                credit: c.zero(),
                charge,
            })
        }
        None => {
            let credit = if refunded(o, k) {
                c.zero()
            } else {
                c.round(f * old_charge).min(paid_for(o, k))
            };
            let proration = Proration { credit, charge };
            settle_net(o, proration, k, now, policy);
            Ok(proration)
        }
    }
}

/// IMMEDIATELY, another duration, before the re-anchor: with PRORATE, the unused part of a paid
/// current cycle goes to creditBalance; an unpaid one's due shrinks to the used part (and goes
/// if that is zero).
fn prorate_unused(
    o: &mut Order,
    prorate: bool,
    k: u32,
    now: Instant,
) -> Result<Proration, DomainError> {
    let c = o.currency;
    if !prorate {
        return Ok(Proration::none(c));
    }
    let f = unused_fraction(o, now);
    let old_charge = billed(o, &o.pricing, k);
    let unpaid = o
        .payments_due
        .iter()
        .position(|due| due.cycle == k && due.kind == DueKind::Cycle);
    match unpaid {
        Some(i) => {
            let used = c.round((Decimal::ONE - f) * old_charge);
            if used.is_zero() {
                o.payments_due.remove(i);
            } else {
                o.payments_due[i].amount = used;
            }
            Ok(Proration::none(c))
        }
        None if !refunded(o, k) => {
            let credit = c.round(f * old_charge).min(paid_for(o, k));
            o.credit_balance += credit;
            Ok(Proration {
                credit,
                charge: c.zero(),
            })
        }
        None => Ok(Proration::none(c)),
    }
}

/// The current cycle ends now and cycle k + 1 starts now under the new plan, from a new anchor.
fn re_anchor(
    o: &mut Order,
    plan: Plan,
    pricing: Pricing,
    k: u32,
    now: Instant,
) -> Result<(), DomainError> {
    if let Some(cycle) = o.current_cycle.as_mut() {
        cycle.ended_date = Some(now);
    }
    re_anchor_at(o, plan, pricing, k + 1, now)
}

fn re_anchor_at(
    o: &mut Order,
    plan: Plan,
    pricing: Pricing,
    cycle: u32,
    at: Instant,
) -> Result<(), DomainError> {
    o.plan = plan;
    o.pricing = pricing;
    o.anchor = Some(at);
    o.anchor_cycle = cycle;
    // pausedTotal counts the pauses since the anchor.
    o.paused_total = 0;
    recompute_end(o)
}

/// f = (e - t) / (e - s) for the current cycle [s, e) at t, exact in milliseconds.
fn unused_fraction(o: &Order, t: Instant) -> Decimal {
    let Some(cycle) = o.current_cycle.as_ref() else {
        return Decimal::ZERO;
    };
    let s = cycle.started_date;
    let Some(e) = cycle.ended_date.or_else(|| next_cycle_start(o)) else {
        return Decimal::ZERO;
    };
    let total = (e - s).num_milliseconds();
    let left = (e - t).num_milliseconds().clamp(0, total.max(0));
    if total <= 0 {
        return Decimal::ZERO;
    }
    Decimal::from(left) / Decimal::from(total)
}

/// What was paid for cycle `k`: its payments and the credit applied to it. A credit is never
/// more than this (a cycle bought by a payment below its charge is credited what was paid).
fn paid_for(o: &Order, k: u32) -> Decimal {
    // From the currency's zero, so that "nothing paid" is 0.00, not a bare 0.
    let paid: Decimal = o
        .payments
        .iter()
        .filter(|p| p.cycle == k)
        .fold(o.currency.zero(), |sum, p| sum + p.amount);
    let credited = o
        .current_cycle
        .as_ref()
        .filter(|c| c.index == k)
        .and_then(|c| c.credit_applied)
        .unwrap_or_default();
    paid + credited
}

/// True when a payment of cycle `k` was refunded (then nothing of it is credited).
fn refunded(o: &Order, k: u32) -> bool {
    o.payments
        .iter()
        .any(|p| p.cycle == k && !p.refunded.is_zero())
}

/// A paid cycle's net: above zero (after the order's credit) a PRORATION due, below zero credit.
fn settle_net(o: &mut Order, p: Proration, cycle: u32, now: Instant, policy: &Policy) {
    let net = p.charge - p.credit;
    if net < Decimal::ZERO {
        o.credit_balance += -net;
        return;
    }
    let used = o.credit_balance.min(net);
    o.credit_balance -= used;
    let owed = net - used;
    if owed.is_zero() {
        return;
    }
    // A PENDING order is asked at its start, as its first cycle would be.
    let at = if o.status == OrderStatus::Pending {
        o.start_date.max(now)
    } else {
        now
    };
    let mut due = request_due(o, cycle, owed, at, policy);
    due.kind = DueKind::Proration;
    match o.order_type {
        OrderType::Online => {
            o.last_payment_status = PaymentStatus::Pending;
        }
        // Recorded; never canceled or paused for non-payment.
        _ => {
            due.retries.clear();
            due.is_final = true;
        }
    }
    o.payments_due.push(due);
}
