//! Commands: `apply` and one function per command, each taking the order as of now and
//! returning its change or a refusal that changes nothing.

use rust_decimal::Decimal;
use serde_json::json;

use super::*;
use crate::domain::command::Command;
use crate::domain::error::DomainError;
use crate::domain::event::EventType;
use crate::domain::order::{
    CancelCause, Cancellation, DueKind, EffectiveAt, Order, OrderStatus, OrderType, PausePeriod,
    PauseStatus, Payment, PaymentDue, PaymentStatus,
};
use crate::domain::time::{format_instant, Instant};

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
pub(super) fn apply_in_place(
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
pub(super) enum Ran {
    Changed,
    /// An idempotent replay (the same payment again): nothing to save.
    Unchanged,
    /// deleteOrder: the order must be removed.
    Deleted,
}

/// A command's rules: checks, then changes `o` in place and emits its events into `d`, without
/// closing the change (the caller seals it, once).
pub(super) fn run_command(
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
pub(super) fn record_payment_command(
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
pub(super) fn payment_failed(o: &mut Order, payment_id: &str) -> Result<Ran, DomainError> {
    if o.payment(payment_id).is_some() {
        return Err(DomainError::state(format!(
            "payment {payment_id} has already succeeded"
        )));
    }
    o.last_payment_status = PaymentStatus::Failed;
    Ok(Ran::Changed)
}

/// recordRefund: up to what the payment has left to refund.
pub(super) fn record_refund(
    o: &mut Order,
    payment_id: &str,
    amount: Decimal,
) -> Result<Ran, DomainError> {
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
pub(super) fn mark_as_paid(
    o: &mut Order,
    now: Instant,
    d: &mut Drafts,
) -> Result<Ran, DomainError> {
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
pub(super) fn pause(
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
pub(super) fn resume_command(
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
pub(super) fn postpone_end_date(
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
pub(super) fn change_start_date(
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

pub(super) fn unchanged(order: &Order) -> Transition {
    Transition {
        order: order.clone(),
        events: Vec::new(),
        deleted: false,
    }
}

pub(super) fn record_payment(
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

pub(super) fn cancel(
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
