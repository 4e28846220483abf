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
use super::command::NewOrder;
use super::error::DomainError;
use super::event::{event_id, Event, EventType};
use super::order::{
    CancelCause, Cancellation, CurrentCycle, DueKind, Dunning, EffectiveAt, FinalAction, Order,
    OrderStatus, OrderType, PausePeriod, PauseStatus, Payment, PaymentDue, PaymentStatus,
    PriceDetails, PricingKind,
};
use super::time::{format_instant, representable, saturating_add, Instant};

pub use commands::*;
pub use cycles::*;

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
// Commands: see `commands.rs`.

mod commands;
mod cycles;
pub mod forecast;
mod plan_change;
pub mod preview;
#[cfg(test)]
mod proptests;
#[cfg(test)]
pub(crate) mod test_support;
#[cfg(test)]
mod tests;
