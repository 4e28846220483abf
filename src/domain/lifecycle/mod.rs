//! The lifecycle rules: `create`, `apply` (commands), `fire` (time-driven changes) and
//! `next_due`. Each function takes an order and an instant and returns the order after the
//! change plus its events; a refusal returns an error and changes nothing.
//!
//! A *change* is one step of the order: it bumps `version`, stamps `updatedDate`, and emits its
//! events in the order SPEC section 7 fixes, ending with `orderUpdated` (creation and deletion
//! excepted). `fire` applies every due instant up to a bound as one change per instant, each
//! stamped with its own due time, so catching up after downtime equals firing one by one.

use std::sync::Arc;

use chrono::Duration as Span;
use rust_decimal::Decimal;
use serde_json::{json, Value};

use super::calendar::Zone;
use super::command::{Command, NewOrder};
use super::error::DomainError;
use super::event::{event_id, Event, EventType};
use super::order::{
    CancelCause, Cancellation, CurrentCycle, DiscountKind, DueKind, Dunning, EffectiveAt,
    FinalAction, Order, OrderStatus, OrderType, PausePeriod, PauseStatus, Payment, PaymentDue,
    PaymentStatus, PriceDetails, PricingKind,
};
use super::time::{format_instant, representable, saturating_add, Instant};

/// The id of the payment that markAsPaid and `paid: true` record.
pub const OFFLINE_PAYMENT_ID: &str = "offline-payment";

/// Settings the rules depend on (from config; the domain reads no config itself).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// How long an ONLINE order may leave a requested cycle unpaid before dunning's final
    /// action.
    pub payment_grace: Span,
    /// `[lifecycle.dunning]`: retries and final action, unless the order has its own.
    pub dunning: DunningRules,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            payment_grace: Span::hours(72),
            dunning: DunningRules::default(),
        }
    }
}

/// Dunning (SPEC 8): retry offsets from a due's requestedDate, then the final action at its
/// deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DunningRules {
    pub retries: Vec<Span>,
    pub final_action: FinalAction,
}

impl Default for DunningRules {
    /// Retries after one and two days; cancel at the deadline.
    fn default() -> Self {
        DunningRules {
            retries: vec![Span::days(1), Span::days(2)],
            final_action: FinalAction::Cancel,
        }
    }
}

impl DunningRules {
    /// Parses and checks retry offsets as written (config duration syntax): each above zero,
    /// strictly increasing, each shorter than `grace`.
    ///
    /// # Errors
    /// A message saying which offset is wrong.
    pub fn parse(
        retries: &[String],
        final_action: FinalAction,
        grace: Span,
    ) -> Result<DunningRules, String> {
        let mut parsed = Vec::with_capacity(retries.len());
        for text in retries {
            let d = super::time::parse_duration(text)?;
            let d = Span::from_std(d).map_err(|_| format!("`{text}` is too long"))?;
            if d <= Span::zero() {
                return Err(format!("`{text}`: a retry offset must be above zero"));
            }
            if parsed.last().is_some_and(|last| d <= *last) {
                return Err(format!(
                    "`{text}`: retry offsets must be strictly increasing"
                ));
            }
            if d >= grace {
                return Err(format!(
                    "`{text}`: every retry must come before the deadline (payment grace {} h)",
                    grace.num_hours()
                ));
            }
            parsed.push(d);
        }
        Ok(DunningRules {
            retries: parsed,
            final_action,
        })
    }

    /// The rules in force for `order`: its own, else the policy's (borrowed: this runs at every
    /// cycle an ONLINE order requests).
    fn of<'a>(order: &Order, policy: &'a Policy) -> std::borrow::Cow<'a, DunningRules> {
        use std::borrow::Cow;
        order
            .dunning
            .as_ref()
            .and_then(|d: &Dunning| {
                DunningRules::parse(&d.retries, d.final_action, policy.payment_grace).ok()
            })
            .map_or(Cow::Borrowed(&policy.dunning), Cow::Owned)
    }
}

/// A new due for `cycle`, requested at `at`: its deadline and retry instants from the rules
/// then in force (an offset at or after the deadline is skipped).
fn request_due(o: &Order, cycle: u32, amount: Decimal, at: Instant, policy: &Policy) -> PaymentDue {
    let deadline = saturating_add(at, policy.payment_grace);
    let rules = DunningRules::of(o, policy);
    PaymentDue {
        cycle,
        kind: DueKind::Cycle,
        requested_date: at,
        deadline,
        amount,
        retries: rules
            .retries
            .iter()
            .map(|off| saturating_add(at, *off))
            .filter(|t| *t < deadline)
            .collect(),
        attempts: 0,
        is_final: false,
        restarted: false,
    }
}

/// The outcome of a lifecycle step: the order after it and the events it emitted (empty when
/// nothing changed). `deleted` is set by deleteOrder: the order must be removed, not saved.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub order: Order,
    pub events: Vec<Event>,
    pub deleted: bool,
}

impl Transition {
    /// True when nothing changed (an idempotent replay, or nothing due).
    pub fn is_noop(&self) -> bool {
        self.events.is_empty() && !self.deleted
    }

    /// Appends `next` (a later step on the same order) to this one.
    pub fn then(mut self, next: Transition) -> Transition {
        self.events.extend(next.events);
        Transition {
            order: next.order,
            events: self.events,
            deleted: next.deleted,
        }
    }
}

/// The events one change has produced so far, before sequences are assigned, and whether the
/// order changed without an event of its own (then the change has only orderUpdated). A quiet
/// change (a [`Sink`] that only counts, the forecast) builds no event data: each draft's data
/// is null, but a cycle start's is its cycle number.
#[derive(Default)]
struct Drafts {
    events: Vec<(EventType, Value)>,
    touched: bool,
    quiet: bool,
}

impl Drafts {
    /// The drafts of a change whose events go to `out`.
    fn for_sink(out: &impl Sink) -> Drafts {
        Drafts {
            quiet: !out.with_data(),
            ..Drafts::default()
        }
    }

    /// An event of the change; its data is built only when the change is not quiet.
    fn emit(&mut self, event_type: EventType, data: impl FnOnce() -> Value) {
        let data = if self.quiet { Value::Null } else { data() };
        self.events.push((event_type, data));
    }

    /// orderCycleStarted for cycle `k` (quiet: the data is `k` itself).
    fn cycle_started(&mut self, k: u32) {
        let data = if self.quiet {
            Value::from(k)
        } else {
            json!({ "cycleNumber": k })
        };
        self.events.push((EventType::OrderCycleStarted, data));
    }

    /// The order changed with no event but orderUpdated.
    fn touch(&mut self) {
        self.touched = true;
    }

    fn changed(&self) -> bool {
        !self.events.is_empty() || self.touched
    }
}

/// Where the changes of a step go once sealed: the events in full (timers, commands,
/// previews: a `Vec<Event>`), or a walk that only looks at them (the forecast), which builds no
/// event data, no event ids and no copy of the order per change.
trait Sink {
    /// Whether the events' data is wanted (false: quiet drafts, see [`Drafts`]).
    fn with_data(&self) -> bool;
    /// One sealed change: the order after it, its instant, the sequence of its first event and
    /// its events (type, data) in order.
    fn change(&mut self, order: &Order, at: Instant, first: u64, drafts: Vec<(EventType, Value)>);
}

impl Sink for Vec<Event> {
    fn with_data(&self) -> bool {
        true
    }

    fn change(&mut self, order: &Order, at: Instant, first: u64, drafts: Vec<(EventType, Value)>) {
        let entity = Arc::new(order.clone());
        self.extend(
            drafts
                .into_iter()
                .enumerate()
                .map(|(i, (event_type, data))| {
                    let sequence = first + i as u64;
                    Event {
                        id: event_id(&order.id, sequence),
                        event_type,
                        entity_id: order.id.clone(),
                        event_time: at,
                        sequence,
                        triggered_by_anonymize_request: false,
                        data,
                        entity: Arc::clone(&entity),
                    }
                }),
        );
    }
}

/// Closes one change: bumps the version, stamps it, numbers the events (appending
/// orderUpdated when `updated`), and hands them to `out`.
fn seal(order: &mut Order, at: Instant, drafts: Drafts, updated: bool, out: &mut impl Sink) {
    with_currency_scale(order);
    let quiet = drafts.quiet;
    let mut drafts = drafts.events;
    if updated {
        let data = if quiet { Value::Null } else { json!({}) };
        drafts.push((EventType::OrderUpdated, data));
    }
    order.version += 1;
    order.updated_date = at;
    let first = order.sequence + 1;
    order.sequence += drafts.len() as u64;
    out.change(order, at, first, drafts);
}

/// Gives every money field of the order at least its currency's scale ("0" → "0.00"): a sum of
/// nothing or a `min` that picks a bare `Decimal::ZERO` has no decimals, and it spreads.
/// Values never change here, only how many decimals they show; every version goes through it.
fn with_currency_scale(o: &mut Order) {
    let scale = o.currency.minor_units();
    let fix = |d: &mut Decimal| {
        if d.scale() < scale {
            d.rescale(scale);
        }
    };
    fix(&mut o.credit_balance);
    fix(&mut o.price_details.subtotal);
    fix(&mut o.price_details.discount);
    fix(&mut o.price_details.total);
    if let Some(applied) = o
        .current_cycle
        .as_mut()
        .and_then(|c| c.credit_applied.as_mut())
    {
        fix(applied);
    }
    for p in &mut o.payments {
        fix(&mut p.amount);
        fix(&mut p.refunded);
    }
    for due in &mut o.payments_due {
        fix(&mut due.amount);
    }
}

// ---------------------------------------------------------------------------------------------
// Dates

/// Refuses a pause of `ms` whose resume would move a date of the order (endDate, a due's
/// deadline or retry) past the last representable instant (year 9999): it could not be
/// written as RFC 3339, so the command is refused rather than the date clamped.
fn pause_fits(o: &Order, ms: i64, field: &str) -> Result<(), DomainError> {
    let span = Span::milliseconds(ms);
    let fits = |t: &Instant| {
        t.checked_add_signed(span)
            .is_some_and(|u| representable(&u))
    };
    let dues = o
        .payments_due
        .iter()
        .flat_map(|due| std::iter::once(&due.deadline).chain(due.retries.iter()));
    if o.end_date
        .iter()
        .chain(o.earliest_end_date.iter())
        .chain(dues)
        .all(fits)
    {
        Ok(())
    } else {
        Err(DomainError::invalid(
            field,
            "the pause would move the order's dates past 9999-12-31T23:59:59.999Z",
        ))
    }
}

/// Refuses a change that leaves any of the order's dates outside what RFC 3339 can write
/// (years 0000-9999 in UTC): such an order could not be stored and read back.
fn dates_fit(o: &Order) -> Result<(), DomainError> {
    if o.instants().all(|t| representable(&t)) {
        Ok(())
    } else {
        Err(DomainError::invalid(
            "date",
            "the order's dates would fall outside 0000-01-01T00:00:00Z..9999-12-31T23:59:59.999Z",
        ))
    }
}

/// `t` moved by `ms` (a pause's length), held within the representable range.
fn shift(t: Instant, ms: i64) -> Instant {
    saturating_add(t, Span::milliseconds(ms))
}

/// endDate before any pause or postponement, from the start date.
fn scheduled_end(
    kind: PricingKind,
    start: Instant,
    trial_days: u32,
    zone: Zone,
) -> Result<Option<Instant>, DomainError> {
    let out_of_range = || {
        DomainError::invalid(
            "startDate",
            "the order's dates fall outside the supported range",
        )
    };
    match kind {
        PricingKind::Subscription { cycle_count: 0, .. } | PricingKind::SinglePaymentUnlimited => {
            Ok(None)
        }
        PricingKind::Subscription {
            cycle_duration,
            cycle_count,
        } => zone
            .calendar(
                start,
                trial_days,
                Some(cycle_duration),
                u64::from(cycle_count),
            )
            .map(Some)
            .ok_or_else(out_of_range),
        PricingKind::SinglePaymentForDuration(d) => zone
            .calendar(start, 0, Some(d), 1)
            .map(Some)
            .ok_or_else(out_of_range),
    }
}

/// Start of cycle `k` (k >= 1) of a subscription: the clamped calendar date from the anchor,
/// plus every pause taken so far (all of which lie before any cycle not yet started).
fn cycle_start(order: &Order, k: u32) -> Option<Instant> {
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

/// A cycle start computed, with what it was computed from.
type KnownStart = (CycleKey, Option<Instant>);

/// Everything the start of a subscription's cycle depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct CycleKey {
    duration: super::calendar::Duration,
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

thread_local! {
    /// The last two cycle starts computed on this thread: a step of a walk asks for the same
    /// one several times (the next due instant, the cycle loop, each refresh of the cycle's
    /// end), and each is a calendar computation. Keyed by everything the start depends on, so
    /// a hit is the value the computation gives.
    static CYCLE_STARTS: std::cell::RefCell<[Option<KnownStart>; 2]> =
        const { std::cell::RefCell::new([None, None]) };
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
fn current_cycle_end(order: &Order) -> Option<Instant> {
    next_cycle_start(order).or(order.end_date)
}

fn refresh_cycle_end(order: &mut Order) {
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
fn line_items_total(order: &Order) -> Decimal {
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
fn purchase_due(order: &Order) -> Decimal {
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

// ---------------------------------------------------------------------------------------------
// Timers

/// The order's next due instant, derived from its state alone: its start (PENDING), its
/// scheduled resume (PAUSED), or the earliest of payment-grace expiry, end (or scheduled
/// cancellation) and next cycle start (ACTIVE). None for DRAFT, ENDED and CANCELED.
pub fn next_due(order: &Order) -> Option<Instant> {
    match order.status {
        OrderStatus::Pending => Some(order.start_date),
        OrderStatus::Paused => order.active_pause().and_then(|p| p.resume_date),
        OrderStatus::Active => [
            next_deadline(order),
            next_retry(order),
            order.end_date,
            next_cycle_start(order),
        ]
        .into_iter()
        .flatten()
        .min(),
        OrderStatus::Ended | OrderStatus::Canceled if dunned_after_end(order) => {
            [next_deadline(order), next_retry(order)]
                .into_iter()
                .flatten()
                .min()
        }
        OrderStatus::Draft | OrderStatus::Ended | OrderStatus::Canceled => None,
    }
}

/// Dues survive the order's end (SPEC 10): after ENDED, or CANCELED at a NEXT_PAYMENT_DATE,
/// their retries still fire and their deadline still marks the payment FAILED (with no status
/// change). A cancelOrder IMMEDIATELY, or a cancellation for non-payment, stops them.
fn dunned_after_end(order: &Order) -> bool {
    match order.status {
        OrderStatus::Ended => true,
        OrderStatus::Canceled => order.cancellation.as_ref().is_some_and(|c| {
            c.effective_at == EffectiveAt::NextPaymentDate && c.cause != CancelCause::PaymentFailure
        }),
        _ => false,
    }
}

/// The earliest deadline of a due whose final action has not been taken.
fn next_deadline(order: &Order) -> Option<Instant> {
    order
        .payments_due
        .iter()
        .filter(|d| !d.is_final)
        .map(|d| d.deadline)
        .min()
}

/// The earliest retry still to fire, over every due.
fn next_retry(order: &Order) -> Option<Instant> {
    order
        .payments_due
        .iter()
        .filter_map(PaymentDue::next_retry)
        .min()
}

/// Applies every change due at or before `until`, one change per due instant, each stamped
/// with its own due time. Returns a no-op transition when nothing is due.
pub fn fire(order: &Order, until: Instant, policy: &Policy) -> Transition {
    walk(order, until, policy, |_| {})
}

/// System-clock start-up after downtime (SPEC section 7): fires every change due at or before
/// `until` (start-up) at its own due instant, except payment-grace cancellations. Every grace
/// deadline that fell due while the daemon was down moves to `deferred_to` (start-up +
/// `payment_restart_grace`) instead of canceling: one that was pending before the downtime,
/// and one a cycle started during the downtime (its deadline is that cycle's start + the
/// grace). The move is silent (no event): it only changes when a later change happens; when
/// nothing else fired, the order still gets a new version, since it changed.
pub fn fire_after_downtime(
    order: &Order,
    until: Instant,
    policy: &Policy,
    deferred_to: Instant,
) -> Transition {
    let mut moved = false;
    // Before each change: a deadline it would pass is moved first, so no grace cancellation
    // fires for the downtime (a cycle start may have just added one).
    let mut t = walk(order, until, policy, |o| {
        if o.status == OrderStatus::Active {
            for due in &mut o.payments_due {
                if due.deadline <= until && !due.is_final {
                    due.deadline = deferred_to;
                    moved = true;
                }
                // Of the retries that fell due meanwhile, only the latest fires (SPEC 10).
                while due
                    .retries
                    .get(due.attempts as usize + 1)
                    .is_some_and(|r| *r <= until)
                {
                    due.attempts += 1;
                    moved = true;
                }
            }
        }
    });
    if moved && t.order.version == order.version {
        t.order.version += 1;
    }
    t
}

/// The walk of [`fire`]: `before_each` may adjust the order before each due instant is taken.
fn walk(
    order: &Order,
    until: Instant,
    policy: &Policy,
    before_each: impl FnMut(&mut Order),
) -> Transition {
    let mut o = order.clone();
    let mut events = Vec::new();
    advance(&mut o, until, policy, before_each, &mut events);
    Transition {
        order: o,
        events,
        deleted: false,
    }
}

/// Takes every due instant of `o` up to `until`, in place, one change per instant, each
/// handed to `out` ([`walk`]'s loop, whatever receives the changes).
fn advance(
    o: &mut Order,
    until: Instant,
    policy: &Policy,
    mut before_each: impl FnMut(&mut Order),
    out: &mut impl Sink,
) {
    loop {
        before_each(o);
        let Some(due) = next_due(o) else { break };
        if due > until {
            break;
        }
        let version = o.version;
        fire_at(o, due, policy, out);
        if o.version == version {
            debug_assert!(false, "order {} was due at {due} but nothing fired", o.id);
            break;
        }
    }
}

/// One change at due instant `t`, in the order SPEC section 7 fixes: resume, (start), grace
/// cancellation, end or scheduled cancellation, cycle start.
fn fire_at(o: &mut Order, t: Instant, policy: &Policy, out: &mut impl Sink) {
    let mut d = Drafts::for_sink(out);
    if o.status == OrderStatus::Paused
        && o.active_pause()
            .and_then(|p| p.resume_date)
            .is_some_and(|r| r <= t)
    {
        resume(o, t, policy, &mut d);
    }
    if o.status == OrderStatus::Pending && o.start_date <= t {
        start(o, t, policy, &mut d);
    }
    if o.status == OrderStatus::Active && next_deadline(o).is_some_and(|at| at <= t) {
        final_action(o, t, policy, &mut d);
    }
    if o.status == OrderStatus::Active
        && o.scheduled_change
            .as_ref()
            .is_some_and(|sc| sc.effective_date <= t)
    {
        plan_change::apply_scheduled(o, t, &mut d);
    }
    if o.status == OrderStatus::Active && o.end_date.is_some_and(|e| e <= t) {
        reach_end(o, &mut d);
    }
    while o.status == OrderStatus::Active {
        match next_cycle_start(o) {
            Some(s) if s <= t => start_cycle(o, s, policy, &mut d),
            _ => break,
        }
    }
    if matches!(o.status, OrderStatus::Ended | OrderStatus::Canceled)
        && dunned_after_end(o)
        && next_deadline(o).is_some_and(|at| at <= t)
    {
        // After the end, a deadline only marks the payment failed (the due stays payable).
        for due in o
            .payments_due
            .iter_mut()
            .filter(|due| !due.is_final && due.deadline <= t)
        {
            due.is_final = true;
        }
        o.last_payment_status = PaymentStatus::Failed;
        d.touch();
    }
    if o.status == OrderStatus::Active || dunned_after_end(o) {
        request_retries(o, t, &mut d);
    }
    if d.changed() {
        refresh_cycle_end(o);
        seal(o, t, d, true, out);
    }
}

/// Dunning's final action for the dues whose deadline passed at `t` (SPEC 8): cancel, pause
/// with cause PAYMENT_FAILURE, or keep (the dues become final). A due whose dunning already
/// restarted after a PAUSE cancels.
fn final_action(o: &mut Order, t: Instant, policy: &Policy, d: &mut Drafts) {
    let expired = |due: &PaymentDue| !due.is_final && due.deadline <= t;
    let restarted = o
        .payments_due
        .iter()
        .any(|due| expired(due) && due.restarted);
    let action = if restarted {
        FinalAction::Cancel
    } else {
        DunningRules::of(o, policy).final_action
    };
    o.last_payment_status = PaymentStatus::Failed;
    match action {
        FinalAction::Cancel => cancel_now(o, t, CancelCause::PaymentFailure, d),
        FinalAction::Pause => {
            o.pause_periods.push(PausePeriod {
                status: PauseStatus::Active,
                pause_date: t,
                resume_date: None,
                cause: Some(CancelCause::PaymentFailure),
            });
            o.status = OrderStatus::Paused;
            d.emit(
                EventType::OrderPaused,
                || json!({ "pauseDate": format_instant(&t), "resumeAt": null, "cause": CancelCause::PaymentFailure }),
            );
        }
        FinalAction::Keep => {
            for due in o.payments_due.iter_mut().filter(|due| expired(due)) {
                due.is_final = true;
            }
            d.touch();
        }
    }
}

/// Every retry due at `t`: orderPaymentRetryRequested, the signal for the payment side to try
/// the charge again.
fn request_retries(o: &mut Order, t: Instant, d: &mut Drafts) {
    for due in &mut o.payments_due {
        while due.next_retry().is_some_and(|at| at <= t) {
            due.attempts += 1;
            let next = due.next_retry();
            d.emit(EventType::OrderPaymentRetryRequested, || {
                json!({
                    "cycleNumber": due.cycle,
                    "kind": due.kind,
                    "attempt": due.attempts,
                    "amount": due.amount,
                    "nextRetryDate": next.as_ref().map(format_instant),
                    "deadline": format_instant(&due.deadline),
                })
            });
        }
    }
}

fn start(o: &mut Order, t: Instant, policy: &Policy, d: &mut Drafts) {
    o.status = OrderStatus::Active;
    d.emit(EventType::OrderStarted, || json!({}));
    if o.free_trial_days > 0 {
        o.current_cycle = Some(CurrentCycle {
            index: 0,
            started_date: t,
            ended_date: None,
            credit_applied: None,
        });
        d.cycle_started(0);
    } else {
        // Cycle 1 is the purchase: it was paid (or is owed, offline) at purchase.
        o.current_cycle = Some(CurrentCycle {
            index: 1,
            started_date: t,
            ended_date: None,
            credit_applied: None,
        });
        d.cycle_started(1);
    }
    let _ = policy;
    refresh_cycle_end(o);
}

fn start_cycle(o: &mut Order, at: Instant, policy: &Policy, d: &mut Drafts) {
    let k = o.current_cycle.as_ref().map_or(1, |c| c.index + 1);
    o.current_cycle = Some(CurrentCycle {
        index: k,
        started_date: at,
        ended_date: None,
        credit_applied: None,
    });
    refresh_cycle_end(o);
    d.cycle_started(k);
    // Cycle 1 after a trial, and every later cycle, is charged (less the order's credit, SPEC
    // 8); ONLINE orders request it. A cycle the credit covers whole is settled.
    let mut charge = cycle_charge(o, k);
    if !o.credit_balance.is_zero() && !charge.is_zero() {
        let used = o.credit_balance.min(charge);
        o.credit_balance -= used;
        charge -= used;
        if let Some(c) = o.current_cycle.as_mut() {
            c.credit_applied = Some(used);
        }
        if charge.is_zero() && o.payments_due.is_empty() {
            o.last_payment_status = PaymentStatus::Paid;
        }
    }
    if o.order_type == OrderType::Online && !charge.is_zero() {
        let due = request_due(o, k, charge, at, policy);
        o.payments_due.push(due);
        o.last_payment_status = PaymentStatus::Pending;
    }
}

fn resume(o: &mut Order, t: Instant, policy: &Policy, d: &mut Drafts) {
    let Some(pause) = o
        .pause_periods
        .iter_mut()
        .rev()
        .find(|p| p.status == PauseStatus::Active)
    else {
        return;
    };
    let paused = (t - pause.pause_date).num_milliseconds().max(0);
    let for_payment = pause.cause == Some(CancelCause::PaymentFailure);
    pause.status = PauseStatus::Ended;
    pause.resume_date = Some(t);
    o.paused_total += paused;
    o.end_date = o.end_date.map(|e| shift(e, paused));
    o.earliest_end_date = o.earliest_end_date.map(|e| shift(e, paused));
    if for_payment {
        // Dunning's PAUSE resumed: it restarts once for the dues left, from now (SPEC 10).
        let dues = std::mem::take(&mut o.payments_due);
        for old in dues {
            let mut due = request_due(o, old.cycle, old.amount, t, policy);
            due.kind = old.kind;
            due.restarted = true;
            o.payments_due.push(due);
        }
        if !o.payments_due.is_empty() {
            o.last_payment_status = PaymentStatus::Pending;
        }
    } else {
        for due in &mut o.payments_due {
            due.deadline = shift(due.deadline, paused);
            for r in &mut due.retries {
                *r = shift(*r, paused);
            }
        }
    }
    o.status = OrderStatus::Active;
    refresh_cycle_end(o);
    d.emit(
        EventType::OrderResumed,
        || json!({ "resumeDate": format_instant(&t) }),
    );
}

fn cancel_now(o: &mut Order, t: Instant, cause: CancelCause, d: &mut Drafts) {
    if let Some(pause) = o
        .pause_periods
        .iter_mut()
        .rev()
        .find(|p| p.status == PauseStatus::Active)
    {
        pause.status = PauseStatus::Ended;
        pause.resume_date = Some(t);
    }
    let cancellation = Cancellation {
        requested_date: t,
        cause,
        effective_at: EffectiveAt::Immediately,
    };
    o.status = OrderStatus::Canceled;
    o.end_date = Some(t);
    if let Some(c) = o.current_cycle.as_mut() {
        c.ended_date = Some(t);
    }
    plan_change::drop_scheduled(o, d);
    d.emit(
        EventType::OrderCanceled,
        || json!({ "cancellation": &cancellation }),
    );
    d.emit(EventType::OrderEnded, || json!({}));
    o.cancellation = Some(cancellation);
}

fn reach_end(o: &mut Order, d: &mut Drafts) {
    if let Some(c) = o.current_cycle.as_mut() {
        c.ended_date = o.end_date;
    }
    if o.auto_renew_canceled {
        o.status = OrderStatus::Canceled;
        d.emit(
            EventType::OrderCanceled,
            || json!({ "cancellation": &o.cancellation }),
        );
    } else {
        o.status = OrderStatus::Ended;
    }
    d.emit(EventType::OrderEnded, || json!({}));
}

/// Purchase: orderPurchased, then PENDING, or ACTIVE at once when the start date has come (a
/// start date already past moves to `now`, and the dates are recomputed from there).
fn purchase(
    o: &mut Order,
    now: Instant,
    payment: Option<(&str, Decimal)>,
    policy: &Policy,
    d: &mut Drafts,
) {
    let (payment_id, amount) = payment.unwrap_or(("", o.currency.zero()));
    d.emit(EventType::OrderPurchased, || {
        json!({
            "paymentId": if payment_id.is_empty() { Value::Null } else { Value::from(payment_id) },
            "amount": amount,
        })
    });
    o.status = OrderStatus::Pending;
    if o.start_date < now {
        o.start_date = now;
        if let Ok(end) = scheduled_end(o.pricing.kind, now, o.free_trial_days, o.time_zone) {
            o.end_date = end;
            o.earliest_end_date = end;
        }
    }
    if o.start_date <= now {
        start(o, now, policy, d);
    }
}

// ---------------------------------------------------------------------------------------------
// Creation

/// Creates an order (SPEC section 1, createOrder): ONLINE orders are carts (DRAFT) until paid
/// unless nothing is due and they are not named carts; OFFLINE and EXTERNAL orders are
/// purchased at once. A start date of `now` starts the order in the same change.
///
/// # Errors
/// [`DomainError::InvalidArgument`] for a start date in the past or dates out of range.
pub fn create(new: NewOrder, now: Instant, policy: &Policy) -> Result<Transition, DomainError> {
    let start_date = new.start_date.unwrap_or(now);
    if start_date < now {
        return Err(DomainError::invalid("startDate", "must not be in the past"));
    }
    let end_date = scheduled_end(
        new.pricing.kind,
        start_date,
        new.free_trial_days,
        new.time_zone,
    )?;
    if let Some(own) = &new.dunning {
        if new.order_type != OrderType::Online {
            return Err(DomainError::invalid(
                "dunning",
                "only ONLINE orders are dunned (others are never asked to pay a cycle)",
            ));
        }
        DunningRules::parse(&own.retries, own.final_action, policy.payment_grace)
            .map_err(|e| DomainError::invalid("dunning.retries", e))?;
    }
    let c = new.currency;
    let mut o = Order {
        id: new.id,
        customer_id: new.customer_id,
        plan: new.plan,
        order_type: new.order_type,
        channel: new.channel,
        status: OrderStatus::Draft,
        last_payment_status: PaymentStatus::Unpaid,
        pricing: new.pricing,
        currency: c,
        time_zone: new.time_zone,
        dunning: new.dunning,
        free_trial_days: new.free_trial_days,
        start_date,
        end_date,
        earliest_end_date: end_date,
        current_cycle: None,
        pause_periods: Vec::new(),
        auto_renew_canceled: false,
        cancellation: None,
        line_items: Vec::new(),
        promo_codes: Vec::new(),
        payments: Vec::new(),
        tender_lines: Vec::new(),
        addresses: Vec::new(),
        price_details: PriceDetails {
            subtotal: c.zero(),
            discount: c.zero(),
            total: c.zero(),
            currency: c,
        },
        discounts: Vec::new(),
        name: new.name,
        credit_balance: c.zero(),
        scheduled_change: None,
        anchor: None,
        anchor_cycle: 0,
        version: 0,
        created_date: now,
        updated_date: now,
        paused_total: 0,
        payments_due: Vec::new(),
        sequence: 0,
        test_clock_id: new.test_clock_id,
    };
    o.price_details = price_details(&o);
    let nothing_due = purchase_due(&o).is_zero();
    if o.pricing.is_free() || (o.order_type == OrderType::Online && nothing_due) {
        o.last_payment_status = PaymentStatus::NotApplicable;
    }

    let mut d = Drafts::default();
    d.emit(EventType::OrderCreated, || json!({}));
    match o.order_type {
        OrderType::Online if nothing_due && o.name.is_none() => {
            purchase(&mut o, now, None, policy, &mut d)
        }
        OrderType::Online => {}
        OrderType::Offline if new.paid && !o.price_details.total.is_zero() => {
            let amount = o.price_details.total;
            o.payments.push(Payment {
                id: OFFLINE_PAYMENT_ID.to_string(),
                amount,
                date: now,
                cycle: 1,
                refunded: c.zero(),
            });
            o.last_payment_status = PaymentStatus::Paid;
            purchase(
                &mut o,
                now,
                Some((OFFLINE_PAYMENT_ID, amount)),
                policy,
                &mut d,
            );
        }
        OrderType::Offline | OrderType::External => purchase(&mut o, now, None, policy, &mut d),
    }
    dates_fit(&o)?;
    let mut events = Vec::new();
    seal(&mut o, now, d, false, &mut events);
    Ok(Transition {
        order: o,
        events,
        deleted: false,
    })
}

// ---------------------------------------------------------------------------------------------
// Commands

/// Applies a command at `now` to an order that has already fired everything due up to `now`
/// (see [`fire`]; the caller runs it first, so a command always sees the order as of now).
///
/// # Errors
/// A [`DomainError`] when the command is refused; the order is then unchanged.
pub fn apply(
    order: &Order,
    cmd: &Command,
    now: Instant,
    policy: &Policy,
) -> Result<Transition, DomainError> {
    let mut o = order.clone();
    let mut events = Vec::new();
    match apply_in_place(&mut o, cmd, now, policy, &mut events)? {
        Ran::Unchanged => Ok(unchanged(order)),
        ran => Ok(Transition {
            order: o,
            events,
            deleted: matches!(ran, Ran::Deleted),
        }),
    }
}

/// [`apply`] on `o` itself, its change handed to `out`. On a refusal `o` may be left partly
/// changed (callers that keep it clone it first, as [`apply`] does); on `Ran::Unchanged` it
/// is as it was.
fn apply_in_place(
    o: &mut Order,
    cmd: &Command,
    now: Instant,
    policy: &Policy,
    out: &mut impl Sink,
) -> Result<Ran, DomainError> {
    let mut d = Drafts::for_sink(out);
    let ran = run_command(o, cmd, now, policy, &mut d)?;
    match ran {
        Ran::Unchanged => {}
        Ran::Deleted => seal(o, now, d, false, out),
        Ran::Changed => {
            refresh_cycle_end(o);
            dates_fit(o)?;
            seal(o, now, d, true, out);
        }
    }
    Ok(ran)
}

/// What a command's rules did to the order.
enum Ran {
    Changed,
    /// An idempotent replay (the same payment again): nothing to save.
    Unchanged,
    /// deleteOrder: the order must be removed.
    Deleted,
}

/// A command's rules: checks, then changes `o` in place and emits its events into `d`, without
/// closing the change (the caller seals it, once).
fn run_command(
    o: &mut Order,
    cmd: &Command,
    now: Instant,
    policy: &Policy,
    d: &mut Drafts,
) -> Result<Ran, DomainError> {
    match cmd {
        Command::RecordPayment {
            payment_id,
            amount,
            due,
        } => record_payment_command(o, payment_id, *amount, *due, now, policy, d),
        Command::PaymentFailed { payment_id, .. } => payment_failed(o, payment_id),
        Command::RecordRefund { payment_id, amount } => record_refund(o, payment_id, *amount),
        Command::MarkAsPaid => mark_as_paid(o, now, d),
        Command::Pause { resume_at } => pause(o, *resume_at, now, d),
        Command::Resume => resume_command(o, now, policy, d),
        Command::PostponeEndDate { end_date } => postpone_end_date(o, *end_date, now, d),
        Command::ChangeStartDate { start_date } => {
            change_start_date(o, *start_date, now, policy, d)
        }
        Command::Cancel {
            effective_at,
            cause,
        } => cancel(o, *effective_at, *cause, now, d).map(|()| Ran::Changed),
        Command::Delete => {
            d.emit(EventType::OrderDeleted, || json!({}));
            Ok(Ran::Deleted)
        }
        Command::ChangePlan {
            plan,
            pricing_kind,
            prices,
            currency,
            effective_at,
            prorate,
        } => {
            let change = plan_change::PlanChange {
                plan,
                pricing_kind: *pricing_kind,
                prices,
                currency: *currency,
                effective_at: *effective_at,
                prorate: *prorate,
            };
            plan_change::change_plan(o, &change, now, policy, d).map(|()| Ran::Changed)
        }
        Command::CancelScheduledChange => {
            plan_change::cancel_scheduled(o, d).map(|()| Ran::Changed)
        }
    }
}

/// recordPayment: idempotent by payment id (the same amount again changes nothing; another amount is a CONFLICT).
fn record_payment_command(
    o: &mut Order,
    payment_id: &str,
    amount: Decimal,
    due: Option<(u32, DueKind)>,
    now: Instant,
    policy: &Policy,
    d: &mut Drafts,
) -> Result<Ran, DomainError> {
    let amount = o
        .currency
        .check_amount(amount)
        .map_err(|e| DomainError::invalid("amount", e.to_string()))?;
    if let Some(p) = o.payment(payment_id) {
        return if p.amount == amount {
            Ok(Ran::Unchanged)
        } else {
            Err(DomainError::Conflict(format!(
                "payment {payment_id} was recorded with amount {}, not {amount}",
                p.amount
            )))
        };
    }
    record_payment(o, payment_id, amount, due, now, policy, d)?;
    Ok(Ran::Changed)
}

/// paymentFailed: the last attempt failed (refused for a payment that succeeded).
fn payment_failed(o: &mut Order, payment_id: &str) -> Result<Ran, DomainError> {
    if o.payment(payment_id).is_some() {
        return Err(DomainError::state(format!(
            "payment {payment_id} has already succeeded"
        )));
    }
    o.last_payment_status = PaymentStatus::Failed;
    Ok(Ran::Changed)
}

/// recordRefund: up to what the payment has left to refund.
fn record_refund(o: &mut Order, payment_id: &str, amount: Decimal) -> Result<Ran, DomainError> {
    let amount = o
        .currency
        .check_amount(amount)
        .map_err(|e| DomainError::invalid("amount", e.to_string()))?;
    if amount.is_zero() {
        return Err(DomainError::invalid("amount", "must be greater than zero"));
    }
    let p = o
        .payments
        .iter_mut()
        .find(|p| p.id == payment_id)
        .ok_or_else(|| {
            DomainError::NotFound(format!("payment {payment_id} not found on order {}", o.id))
        })?;
    let refundable = p.amount - p.refunded;
    if amount > refundable {
        return Err(DomainError::invalid(
            "amount",
            format!("exceeds what payment {payment_id} has left to refund ({refundable})"),
        ));
    }
    p.refunded += amount;
    if p.refunded == p.amount {
        o.last_payment_status = PaymentStatus::Refunded;
    }
    Ok(Ran::Changed)
}

/// markAsPaid: the OFFLINE order's one payment.
fn mark_as_paid(o: &mut Order, now: Instant, d: &mut Drafts) -> Result<Ran, DomainError> {
    if o.order_type != OrderType::Offline {
        return Err(DomainError::state("markAsPaid is only for OFFLINE orders"));
    }
    if !o.payments.is_empty() || o.last_payment_status == PaymentStatus::Paid {
        return Err(DomainError::state("the order is already paid"));
    }
    let amount = o.price_details.total;
    if amount.is_zero() {
        return Err(DomainError::state(
            "the order is free: there is nothing to pay",
        ));
    }
    o.payments.push(Payment {
        id: OFFLINE_PAYMENT_ID.to_string(),
        amount,
        date: now,
        cycle: 1,
        refunded: o.currency.zero(),
    });
    o.last_payment_status = PaymentStatus::Paid;
    d.emit(
        EventType::OrderMarkedAsPaid,
        || json!({ "paymentId": OFFLINE_PAYMENT_ID, "amount": amount }),
    );
    Ok(Ran::Changed)
}

/// pauseOrder: ACTIVE orders out of their trial, until `resume_at` or a resumeOrder.
fn pause(
    o: &mut Order,
    resume_at: Option<Instant>,
    now: Instant,
    d: &mut Drafts,
) -> Result<Ran, DomainError> {
    if o.status != OrderStatus::Active {
        return Err(DomainError::state(format!(
            "only ACTIVE orders can be paused; this one is {}",
            o.status.as_str()
        )));
    }
    if o.in_trial() {
        return Err(DomainError::state(
            "an order cannot be paused during its free trial",
        ));
    }
    if resume_at.is_some_and(|r| r <= now) {
        return Err(DomainError::invalid("resumeAt", "must be after now"));
    }
    if let Some(r) = resume_at {
        pause_fits(o, (r - now).num_milliseconds(), "resumeAt")?;
    }
    o.pause_periods.push(PausePeriod {
        status: PauseStatus::Active,
        pause_date: now,
        resume_date: resume_at,
        cause: None,
    });
    o.status = OrderStatus::Paused;
    d.emit(
        EventType::OrderPaused,
        || json!({ "pauseDate": format_instant(&now), "resumeAt": resume_at.as_ref().map(format_instant) }),
    );
    Ok(Ran::Changed)
}

/// resumeOrder: PAUSED orders; every later date moves by the pause.
fn resume_command(
    o: &mut Order,
    now: Instant,
    policy: &Policy,
    d: &mut Drafts,
) -> Result<Ran, DomainError> {
    if o.status != OrderStatus::Paused {
        return Err(DomainError::state(format!(
            "only PAUSED orders can be resumed; this one is {}",
            o.status.as_str()
        )));
    }
    if let Some(pause) = o.active_pause() {
        pause_fits(
            o,
            (now - pause.pause_date).num_milliseconds(),
            "resumeOrder",
        )?;
    }
    resume(o, now, policy, d);
    Ok(Ran::Changed)
}

/// postponeEndDate: the end of a PENDING or ACTIVE order that still renews moves.
fn postpone_end_date(
    o: &mut Order,
    end_date: Instant,
    now: Instant,
    d: &mut Drafts,
) -> Result<Ran, DomainError> {
    if !matches!(o.status, OrderStatus::Pending | OrderStatus::Active) {
        return Err(DomainError::state(format!(
            "the end date of a {} order cannot change",
            o.status.as_str()
        )));
    }
    if o.auto_renew_canceled {
        return Err(DomainError::state("the order's auto-renewal is canceled"));
    }
    let Some(previous) = o.end_date else {
        return Err(DomainError::state(
            "the order has no end date (it renews until canceled)",
        ));
    };
    if end_date <= now {
        return Err(DomainError::invalid("endDate", "must be after now"));
    }
    if end_date <= o.start_date {
        return Err(DomainError::invalid(
            "endDate",
            "must be after the start date",
        ));
    }
    if end_date == previous {
        return Err(DomainError::invalid("endDate", "is the current end date"));
    }
    o.end_date = Some(end_date);
    d.emit(
        EventType::OrderEndDatePostponed,
        || json!({ "endDate": format_instant(&end_date), "previousEndDate": format_instant(&previous) }),
    );
    Ok(Ran::Changed)
}

/// changeStartDate: before the order starts; its end dates follow.
fn change_start_date(
    o: &mut Order,
    start_date: Instant,
    now: Instant,
    policy: &Policy,
    d: &mut Drafts,
) -> Result<Ran, DomainError> {
    if !matches!(o.status, OrderStatus::Draft | OrderStatus::Pending) {
        return Err(DomainError::state(format!(
            "the start date can change only before the order starts; this one is {}",
            o.status.as_str()
        )));
    }
    if start_date < now {
        return Err(DomainError::invalid("startDate", "must not be in the past"));
    }
    if start_date == o.start_date {
        return Err(DomainError::invalid(
            "startDate",
            "is the current start date",
        ));
    }
    let previous = o.start_date;
    let end = scheduled_end(o.pricing.kind, start_date, o.free_trial_days, o.time_zone)?;
    o.start_date = start_date;
    o.end_date = end;
    o.earliest_end_date = end;
    // A due asked "at the start" (a PENDING order's plan-change proration) moves with it: its
    // deadline and retries count from the new start, not from one that no longer comes.
    let moved: Vec<PaymentDue> = std::mem::take(&mut o.payments_due)
        .into_iter()
        .map(|due| {
            if due.requested_date == previous && due.attempts == 0 {
                let mut again = request_due(o, due.cycle, due.amount, start_date, policy);
                again.kind = due.kind;
                again
            } else {
                due
            }
        })
        .collect();
    o.payments_due = moved;
    d.emit(
        EventType::OrderStartDateChanged,
        || json!({ "startDate": format_instant(&start_date), "previousStartDate": format_instant(&previous) }),
    );
    if o.status == OrderStatus::Pending && o.start_date <= now {
        start(o, now, policy, d);
    }
    Ok(Ran::Changed)
}

/// One change built up step by step (updateOrder): lifecycle commands with their rules and
/// events, and direct edits of fields and related items, closed into a single transition with
/// one `orderUpdated` at the end. Dropping it discards everything.
pub struct Change {
    before: Order,
    order: Order,
    drafts: Drafts,
    now: Instant,
}

impl Change {
    /// Starts a change of `order` (already fired up to `now`) at `now`.
    pub fn begin(order: &Order, now: Instant) -> Change {
        Change {
            before: order.clone(),
            order: order.clone(),
            drafts: Drafts::default(),
            now,
        }
    }

    /// The order as changed so far.
    pub fn order(&self) -> &Order {
        &self.order
    }

    /// The order, for direct edits (fields, related items, pricing).
    pub fn order_mut(&mut self) -> &mut Order {
        &mut self.order
    }

    /// The instant the change happens at.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Runs a lifecycle command within the change: the same rules and events as the dedicated
    /// admin command.
    ///
    /// # Errors
    /// The command's [`DomainError`]; deleteOrder cannot be part of a change.
    pub fn command(&mut self, cmd: &Command, policy: &Policy) -> Result<(), DomainError> {
        if matches!(cmd, Command::Delete) {
            return Err(DomainError::state(
                "deleteOrder cannot be part of an update",
            ));
        }
        run_command(&mut self.order, cmd, self.now, policy, &mut self.drafts).map(|_| ())
    }

    /// Recomputes a cart's end dates from its start date, pricing and trial (after the plan
    /// changed).
    ///
    /// # Errors
    /// [`DomainError::InvalidArgument`] when the dates fall outside the supported range.
    pub fn reschedule(&mut self) -> Result<(), DomainError> {
        let o = &mut self.order;
        let end = scheduled_end(o.pricing.kind, o.start_date, o.free_trial_days, o.time_zone)?;
        o.end_date = end;
        o.earliest_end_date = end;
        Ok(())
    }

    /// Recomputes `priceDetails` from the plan, line items and discounts; a cart's
    /// `lastPaymentStatus` follows what its purchase will cost (NOT_APPLICABLE when nothing).
    pub fn reprice(&mut self) {
        let o = &mut self.order;
        o.price_details = price_details(o);
        if o.status == OrderStatus::Draft {
            o.last_payment_status = if purchase_due(o).is_zero() {
                PaymentStatus::NotApplicable
            } else {
                PaymentStatus::Unpaid
            };
        }
    }

    /// Closes the change: a no-op when nothing differs, else one new version whose events are
    /// the commands' followed by `orderUpdated`.
    ///
    /// # Errors
    /// [`DomainError::InvalidArgument`] when a date of the changed order falls outside the
    /// representable range.
    pub fn finish(self) -> Result<Transition, DomainError> {
        let Change {
            before,
            mut order,
            drafts,
            now,
        } = self;
        if drafts.events.is_empty() && order == before {
            return Ok(unchanged(&before));
        }
        let mut events = Vec::new();
        refresh_cycle_end(&mut order);
        dates_fit(&order)?;
        seal(&mut order, now, drafts, true, &mut events);
        Ok(Transition {
            order,
            events,
            deleted: false,
        })
    }
}

fn unchanged(order: &Order) -> Transition {
    Transition {
        order: order.clone(),
        events: Vec::new(),
        deleted: false,
    }
}

fn record_payment(
    o: &mut Order,
    payment_id: &str,
    amount: Decimal,
    first: Option<(u32, DueKind)>,
    now: Instant,
    policy: &Policy,
    d: &mut Drafts,
) -> Result<(), DomainError> {
    if o.status == OrderStatus::Draft {
        let due = purchase_due(o);
        if amount.is_zero() && !due.is_zero() {
            return Err(DomainError::invalid(
                "amount",
                format!("must be greater than zero: the purchase charge is {due}"),
            ));
        }
        o.payments.push(Payment {
            id: payment_id.to_string(),
            amount,
            date: now,
            cycle: 1,
            refunded: o.currency.zero(),
        });
        if !amount.is_zero() {
            o.last_payment_status = PaymentStatus::Paid;
        }
        purchase(o, now, Some((payment_id, amount)), policy, d);
        return Ok(());
    }
    if amount.is_zero() {
        return Err(DomainError::invalid("amount", "must be greater than zero"));
    }
    // A payment is allocated to the dues oldest first (the one it names first), by amount: a
    // partial payment reduces a due and keeps its deadline; what exceeds every due goes to
    // creditBalance (SPEC 10). With nothing due it is credited to the current cycle.
    let cycle = if o.payments_due.is_empty() {
        if first.is_some() {
            return Err(DomainError::invalid("due", "the order has nothing due"));
        }
        o.current_cycle.as_ref().map_or(1, |c| c.index.max(1))
    } else {
        let mut order: Vec<usize> = (0..o.payments_due.len()).collect();
        if let Some((cycle, kind)) = first {
            let Some(i) = o
                .payments_due
                .iter()
                .position(|due| due.cycle == cycle && due.kind == kind)
            else {
                let kind = match kind {
                    DueKind::Cycle => "CYCLE",
                    DueKind::Proration => "PRORATION",
                };
                return Err(DomainError::invalid(
                    "due",
                    format!("the order has no {kind} due for cycle {cycle}"),
                ));
            };
            order.retain(|j| *j != i);
            order.insert(0, i);
        }
        let cycle = o.payments_due[order[0]].cycle;
        let mut left = amount;
        for i in order {
            let due = &mut o.payments_due[i];
            let take = left.min(due.amount);
            due.amount -= take;
            left -= take;
        }
        o.payments_due.retain(|due| !due.amount.is_zero());
        o.credit_balance += left;
        cycle
    };
    o.payments.push(Payment {
        id: payment_id.to_string(),
        amount,
        date: now,
        cycle,
        refunded: o.currency.zero(),
    });
    o.last_payment_status = if o.payments_due.is_empty() {
        PaymentStatus::Paid
    } else {
        PaymentStatus::Pending
    };
    // Paying everything due resumes an order that dunning paused (SPEC 8).
    if o.status == OrderStatus::Paused
        && o.payments_due.is_empty()
        && o.active_pause()
            .is_some_and(|p| p.cause == Some(CancelCause::PaymentFailure))
    {
        resume(o, now, policy, d);
    }
    Ok(())
}

fn cancel(
    o: &mut Order,
    effective_at: EffectiveAt,
    cause: CancelCause,
    now: Instant,
    d: &mut Drafts,
) -> Result<(), DomainError> {
    match o.status {
        OrderStatus::Draft => {
            return Err(DomainError::state(
                "a DRAFT order cannot be canceled; delete it instead",
            ))
        }
        OrderStatus::Ended | OrderStatus::Canceled => {
            return Err(DomainError::state(format!(
                "the order is already {}",
                o.status.as_str()
            )))
        }
        _ => {}
    }
    match effective_at {
        EffectiveAt::Immediately => {
            cancel_now(o, now, cause, d);
            Ok(())
        }
        EffectiveAt::NextPaymentDate => {
            if o.status == OrderStatus::Pending {
                return Err(DomainError::state(
                    "a PENDING order can only be canceled IMMEDIATELY",
                ));
            }
            if !o.pricing.is_recurring() {
                return Err(DomainError::state(
                    "a single-payment order can only be canceled IMMEDIATELY",
                ));
            }
            if o.auto_renew_canceled {
                return Err(DomainError::state(
                    "the order's auto-renewal is already canceled",
                ));
            }
            let end = current_cycle_end(o)
                .ok_or_else(|| DomainError::state("the current cycle has no end"))?;
            let cancellation = Cancellation {
                requested_date: now,
                cause,
                effective_at: EffectiveAt::NextPaymentDate,
            };
            o.end_date = Some(end);
            o.auto_renew_canceled = true;
            plan_change::drop_scheduled(o, d);
            d.emit(
                EventType::OrderAutoRenewCanceled,
                || json!({ "cancellation": &cancellation }),
            );
            o.cancellation = Some(cancellation);
            Ok(())
        }
    }
}

pub mod forecast;
mod plan_change;
pub mod preview;
#[cfg(test)]
mod proptests;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;
