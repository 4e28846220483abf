//! Table tests: one per rule and refusal of SPEC sections 1 and 7.

use serde_json::json;

use super::test_support::*;
use super::*;
use crate::domain::command::Command;
use crate::domain::time::format_instant;
use crate::domain::ErrorCode;

fn code(r: Result<Transition, DomainError>) -> ErrorCode {
    r.expect_err("expected a refusal").code()
}

fn cycles(events: &[Event]) -> Vec<(u64, String)> {
    events
        .iter()
        .filter(|e| e.event_type == EventType::OrderCycleStarted)
        .map(|e| {
            (
                e.data["cycleNumber"].as_u64().unwrap(),
                format_instant(&e.event_time),
            )
        })
        .collect()
}

const T0: &str = "2026-01-10T09:00:00Z";

#[test]
fn online_order_is_a_draft_until_its_first_payment() {
    let now = at(T0);
    let t = new_order(monthly("ONLINE", 12, "10.00", T0), now);
    assert_eq!(t.order.status, OrderStatus::Draft);
    assert_eq!(t.order.last_payment_status, PaymentStatus::Unpaid);
    assert_eq!(types(&t.events), ["orderCreated"]);
    assert_eq!(next_due(&t.order), None, "a cart has no timer");

    let paid = cmd(
        &t.order,
        "recordPayment",
        json!({"paymentId": "pay1", "amount": "10.00"}),
        now,
    )
    .unwrap();
    assert_eq!(
        types(&paid.events),
        [
            "orderPurchased",
            "orderStarted",
            "orderCycleStarted",
            "orderUpdated"
        ]
    );
    assert_eq!(
        paid.events[0].data,
        json!({"paymentId": "pay1", "amount": "10.00"})
    );
    assert_eq!(paid.order.status, OrderStatus::Active);
    assert_eq!(paid.order.last_payment_status, PaymentStatus::Paid);
    assert_eq!(paid.order.end_date, Some(at("2027-01-10T09:00:00Z")));
    let c = paid.order.current_cycle.clone().unwrap();
    assert_eq!(
        (c.index, c.ended_date),
        (1, Some(at("2026-02-10T09:00:00Z")))
    );
    let seqs: Vec<u64> = t
        .events
        .iter()
        .chain(&paid.events)
        .map(|e| e.sequence)
        .collect();
    assert_eq!(seqs, [1, 2, 3, 4, 5]);
}

#[test]
fn later_cycles_request_payment_and_grace_expiry_cancels() {
    let now = at(T0);
    let t = new_order(monthly("ONLINE", 12, "10.00", T0), now);
    let t = cmd(
        &t.order,
        "recordPayment",
        json!({"paymentId": "p1", "amount": "10.00"}),
        now,
    )
    .unwrap();
    let c2 = fire(&t.order, at("2026-02-10T09:00:00Z"), &policy());
    assert_eq!(types(&c2.events), ["orderCycleStarted", "orderUpdated"]);
    assert_eq!(c2.order.last_payment_status, PaymentStatus::Pending);
    assert_eq!(
        next_due(&c2.order),
        Some(at("2026-02-13T09:00:00Z")),
        "grace deadline"
    );

    let paid = cmd(
        &c2.order,
        "recordPayment",
        json!({"paymentId": "p2", "amount": "10.00"}),
        at("2026-02-12T00:00:00Z"),
    )
    .unwrap();
    assert_eq!(paid.order.last_payment_status, PaymentStatus::Paid);
    assert_eq!(paid.order.payments[1].cycle, 2);
    assert_eq!(types(&paid.events), ["orderUpdated"]);

    let expired = fire(&c2.order, at("2026-03-01T00:00:00Z"), &policy());
    assert_eq!(expired.order.status, OrderStatus::Canceled);
    let cancel = expired.order.cancellation.clone().unwrap();
    assert_eq!(cancel.cause, CancelCause::PaymentFailure);
    assert_eq!(cancel.requested_date, at("2026-02-13T09:00:00Z"));
    assert_eq!(expired.order.end_date, Some(at("2026-02-13T09:00:00Z")));
    assert_eq!(
        types(&expired.events),
        ["orderCanceled", "orderEnded", "orderUpdated"]
    );
    assert_eq!(next_due(&expired.order), None);
}

#[test]
fn the_earliest_unpaid_deadline_stands_and_a_pause_extends_it() {
    let long_grace = Policy {
        payment_grace: chrono::Duration::days(40),
        dunning: no_retries(),
    };
    let now = at(T0);
    let t = new_order(monthly("ONLINE", 12, "10.00", T0), now);
    let t = cmd(
        &t.order,
        "recordPayment",
        json!({"paymentId": "p1", "amount": "10.00"}),
        now,
    )
    .unwrap();
    let o = fire(&t.order, at("2026-03-10T09:00:00Z"), &long_grace).order;
    assert_eq!(o.payments_due.len(), 2, "cycles 2 and 3 unpaid");
    assert_eq!(
        next_due(&o),
        Some(at("2026-03-22T09:00:00Z")),
        "cycle 2's deadline, not reset"
    );
    let paused = apply(
        &o,
        &Command::Pause { resume_at: None },
        at("2026-03-11T09:00:00Z"),
        &long_grace,
    )
    .unwrap()
    .order;
    let resumed = apply(
        &paused,
        &Command::Resume,
        at("2026-03-16T09:00:00Z"),
        &long_grace,
    )
    .unwrap()
    .order;
    assert_eq!(
        next_due(&resumed),
        Some(at("2026-03-27T09:00:00Z")),
        "moved by the 5 paused days"
    );
    assert_eq!(resumed.last_payment_status, PaymentStatus::Pending);
}

#[test]
fn monthly_from_jan_31_of_a_leap_year_walks_14_cycles_without_drift() {
    let start = "2024-01-31T10:00:00Z";
    let t = new_order(monthly("OFFLINE", 14, "5.00", start), at(start));
    assert_eq!(t.order.end_date, Some(at("2025-03-31T10:00:00Z")));
    let all = t
        .clone()
        .then(fire(&t.order, at("2026-01-01T00:00:00Z"), &policy()));
    let expected = [
        "2024-01-31",
        "2024-02-29",
        "2024-03-31",
        "2024-04-30",
        "2024-05-31",
        "2024-06-30",
        "2024-07-31",
        "2024-08-31",
        "2024-09-30",
        "2024-10-31",
        "2024-11-30",
        "2024-12-31",
        "2025-01-31",
        "2025-02-28",
    ];
    let got = cycles(&all.events);
    assert_eq!(got.len(), 14);
    for (i, ((k, when), day)) in got.iter().zip(expected).enumerate() {
        assert_eq!(*k, i as u64 + 1);
        assert_eq!(when, &format!("{day}T10:00:00.000Z"));
    }
    assert_eq!(all.order.status, OrderStatus::Ended);
    let last = all
        .events
        .iter()
        .rev()
        .find(|e| e.event_type == EventType::OrderEnded)
        .unwrap();
    assert_eq!(last.event_time, at("2025-03-31T10:00:00Z"));
}

#[test]
fn offline_orders_are_purchased_at_creation_and_marked_paid_once() {
    let now = at(T0);
    let t = new_order(monthly("OFFLINE", 3, "20.00", T0), now);
    assert_eq!(
        types(&t.events),
        [
            "orderCreated",
            "orderPurchased",
            "orderStarted",
            "orderCycleStarted"
        ]
    );
    assert_eq!(t.order.status, OrderStatus::Active);
    assert_eq!(t.order.last_payment_status, PaymentStatus::Unpaid);
    let paid = cmd(&t.order, "markAsPaid", json!({}), now).unwrap();
    assert_eq!(types(&paid.events), ["orderMarkedAsPaid", "orderUpdated"]);
    assert_eq!(
        paid.events[0].data,
        json!({"paymentId": "offline-payment", "amount": "20.00"})
    );
    assert_eq!(
        code(cmd(&paid.order, "markAsPaid", json!({}), now)),
        ErrorCode::InvalidState
    );
    // Later cycles of an OFFLINE order request nothing.
    let later = fire(&paid.order, at("2026-03-15T00:00:00Z"), &policy());
    assert_eq!(later.order.last_payment_status, PaymentStatus::Paid);
    assert!(later.order.payments_due.is_empty());
}

#[test]
fn offline_created_paid_cannot_be_marked_paid_again() {
    let mut args = monthly("OFFLINE", 3, "20.00", T0);
    args["paid"] = json!(true);
    let t = new_order(args, at(T0));
    assert_eq!(t.order.last_payment_status, PaymentStatus::Paid);
    assert_eq!(t.order.money().0.to_string(), "20.00");
    assert_eq!(
        t.events[1].data,
        json!({"paymentId": "offline-payment", "amount": "20.00"})
    );
    assert_eq!(
        code(cmd(&t.order, "markAsPaid", json!({}), at(T0))),
        ErrorCode::InvalidState
    );
}

#[test]
fn mark_as_paid_on_online_is_refused() {
    let t = new_order(monthly("ONLINE", 3, "20.00", T0), at(T0));
    assert_eq!(
        code(cmd(&t.order, "markAsPaid", json!({}), at(T0))),
        ErrorCode::InvalidState
    );
}

#[test]
fn a_future_start_is_pending_and_starts_stamped_at_its_due_time() {
    let t = new_order(
        monthly("EXTERNAL", 2, "3.00", "2026-02-01T00:00:00Z"),
        at(T0),
    );
    assert_eq!(t.order.status, OrderStatus::Pending);
    assert_eq!(types(&t.events), ["orderCreated", "orderPurchased"]);
    assert_eq!(next_due(&t.order), Some(at("2026-02-01T00:00:00Z")));
    // Fired late (after downtime): still stamped with the due time.
    let s = fire(&t.order, at("2026-02-05T00:00:00Z"), &policy());
    assert_eq!(
        types(&s.events),
        ["orderStarted", "orderCycleStarted", "orderUpdated"]
    );
    assert!(s
        .events
        .iter()
        .all(|e| e.event_time == at("2026-02-01T00:00:00Z")));
}

#[test]
fn a_trial_is_cycle_zero_then_cycle_one_requests_payment() {
    let mut args = monthly("ONLINE", 2, "9.00", T0);
    args["freeTrialDays"] = json!(14);
    let t = new_order(args, at(T0));
    assert_eq!(
        types(&t.events),
        [
            "orderCreated",
            "orderPurchased",
            "orderStarted",
            "orderCycleStarted"
        ]
    );
    assert_eq!(t.events[3].data, json!({"cycleNumber": 0}));
    assert_eq!(t.order.last_payment_status, PaymentStatus::NotApplicable);
    assert_eq!(
        t.order.end_date,
        Some(at("2026-03-24T09:00:00Z")),
        "anchor Jan 24 + 2 months"
    );
    assert_eq!(
        code(cmd(
            &t.order,
            "pauseOrder",
            json!({}),
            at("2026-01-12T00:00:00Z")
        )),
        ErrorCode::InvalidState
    );
    let c1 = fire(&t.order, at("2026-01-24T09:00:00Z"), &policy());
    assert_eq!(
        cycles(&c1.events),
        [(1, "2026-01-24T09:00:00.000Z".to_string())]
    );
    assert_eq!(c1.order.last_payment_status, PaymentStatus::Pending);
}

#[test]
fn a_named_cart_with_a_trial_waits_for_a_zero_payment() {
    let mut args = monthly("ONLINE", 2, "9.00", T0);
    args["freeTrialDays"] = json!(7);
    args["name"] = json!("wishlist");
    let t = new_order(args, at(T0));
    assert_eq!(t.order.status, OrderStatus::Draft);
    let p = cmd(
        &t.order,
        "recordPayment",
        json!({"paymentId": "z", "amount": "0"}),
        at(T0),
    )
    .unwrap();
    assert_eq!(p.order.status, OrderStatus::Active);
    assert!(p.order.in_trial());
}

#[test]
fn a_free_plan_needs_no_payment() {
    let t = new_order(monthly("ONLINE", 2, "0", T0), at(T0));
    assert_eq!(t.order.status, OrderStatus::Active);
    assert_eq!(t.order.last_payment_status, PaymentStatus::NotApplicable);
    let later = fire(&t.order, at("2026-02-20T00:00:00Z"), &policy());
    assert_eq!(
        later.order.last_payment_status,
        PaymentStatus::NotApplicable
    );
    assert!(later.order.payments_due.is_empty());
}

#[test]
fn a_draft_paid_after_its_start_date_starts_at_payment_time() {
    let t = new_order(monthly("ONLINE", 2, "9.00", "2026-01-15T00:00:00Z"), at(T0));
    let paid_at = at("2026-01-20T12:00:00Z");
    let p = cmd(
        &t.order,
        "recordPayment",
        json!({"paymentId": "p", "amount": "9.00"}),
        paid_at,
    )
    .unwrap();
    assert_eq!(p.order.start_date, paid_at);
    assert_eq!(p.order.end_date, Some(at("2026-03-20T12:00:00Z")));
    assert_eq!(p.order.status, OrderStatus::Active);
}

#[test]
fn pause_and_resume_shift_every_later_date() {
    let t = new_order(monthly("OFFLINE", 3, "5.00", T0), at(T0));
    let p = cmd(
        &t.order,
        "pauseOrder",
        json!({}),
        at("2026-01-20T09:00:00Z"),
    )
    .unwrap();
    assert_eq!(types(&p.events), ["orderPaused", "orderUpdated"]);
    assert_eq!(
        p.events[0].data,
        json!({"pauseDate": "2026-01-20T09:00:00.000Z", "resumeAt": null})
    );
    assert_eq!(next_due(&p.order), None, "no cycle while paused");
    let r = cmd(
        &p.order,
        "resumeOrder",
        json!({}),
        at("2026-01-25T09:00:00Z"),
    )
    .unwrap();
    assert_eq!(
        r.events[0].data,
        json!({"resumeDate": "2026-01-25T09:00:00.000Z"})
    );
    assert_eq!(r.order.end_date, Some(at("2026-04-15T09:00:00Z")));
    assert_eq!(r.order.earliest_end_date, Some(at("2026-04-15T09:00:00Z")));
    assert_eq!(r.order.paused_total, 5 * 86_400_000);
    assert_eq!(next_due(&r.order), Some(at("2026-02-15T09:00:00Z")));
    let pp = &r.order.pause_periods[0];
    assert_eq!(
        (pp.status, pp.resume_date),
        (PauseStatus::Ended, Some(at("2026-01-25T09:00:00Z")))
    );
}

#[test]
fn a_scheduled_resume_fires_and_a_manual_one_clears_it() {
    let t = new_order(monthly("OFFLINE", 3, "5.00", T0), at(T0));
    let p = cmd(
        &t.order,
        "pauseOrder",
        json!({"resumeAt": "2026-01-30T00:00:00Z"}),
        at("2026-01-20T00:00:00Z"),
    )
    .unwrap();
    assert_eq!(
        p.order.pause_periods[0].resume_date,
        Some(at("2026-01-30T00:00:00Z"))
    );
    assert_eq!(next_due(&p.order), Some(at("2026-01-30T00:00:00Z")));
    let fired = fire(&p.order, at("2026-01-30T00:00:00Z"), &policy());
    assert_eq!(types(&fired.events), ["orderResumed", "orderUpdated"]);
    assert_eq!(fired.order.status, OrderStatus::Active);
    let manual = cmd(
        &p.order,
        "resumeOrder",
        json!({}),
        at("2026-01-22T00:00:00Z"),
    )
    .unwrap();
    assert_eq!(
        manual.order.pause_periods[0].resume_date,
        Some(at("2026-01-22T00:00:00Z"))
    );
    assert_ne!(next_due(&manual.order), Some(at("2026-01-30T00:00:00Z")));
}

#[test]
fn pause_and_resume_refusals() {
    let pending = new_order(
        monthly("OFFLINE", 3, "5.00", "2026-02-01T00:00:00Z"),
        at(T0),
    );
    assert_eq!(
        code(cmd(&pending.order, "pauseOrder", json!({}), at(T0))),
        ErrorCode::InvalidState
    );
    let active = new_order(monthly("OFFLINE", 3, "5.00", T0), at(T0));
    assert_eq!(
        code(cmd(&active.order, "resumeOrder", json!({}), at(T0))),
        ErrorCode::InvalidState
    );
    assert_eq!(
        code(cmd(
            &active.order,
            "pauseOrder",
            json!({"resumeAt": T0}),
            at(T0)
        )),
        ErrorCode::InvalidRequest
    );
    let paused = cmd(&active.order, "pauseOrder", json!({}), at(T0)).unwrap();
    assert_eq!(
        code(cmd(&paused.order, "pauseOrder", json!({}), at(T0))),
        ErrorCode::InvalidState
    );
}

#[test]
fn postponing_lengthens_the_last_cycle_without_adding_cycles() {
    let t = new_order(monthly("OFFLINE", 2, "5.00", T0), at(T0));
    let p = cmd(
        &t.order,
        "postponeEndDate",
        json!({"endDate": "2026-05-01T00:00:00Z"}),
        at(T0),
    )
    .unwrap();
    assert_eq!(types(&p.events), ["orderEndDatePostponed", "orderUpdated"]);
    assert_eq!(
        p.events[0].data,
        json!({"endDate": "2026-05-01T00:00:00.000Z", "previousEndDate": "2026-03-10T09:00:00.000Z"})
    );
    assert_eq!(p.order.earliest_end_date, Some(at("2026-03-10T09:00:00Z")));
    let all = fire(&p.order, at("2026-06-01T00:00:00Z"), &policy());
    assert_eq!(cycles(&all.events).len(), 1, "only cycle 2 more");
    assert_eq!(all.order.status, OrderStatus::Ended);
    assert_eq!(
        all.events.last().unwrap().event_time,
        at("2026-05-01T00:00:00Z")
    );
}

#[test]
fn bringing_the_end_forward_stops_later_cycles() {
    let t = new_order(monthly("OFFLINE", 6, "5.00", T0), at(T0));
    let p = cmd(
        &t.order,
        "postponeEndDate",
        json!({"endDate": "2026-03-10T09:00:00Z"}),
        at(T0),
    )
    .unwrap();
    let all = fire(&p.order, at("2026-12-01T00:00:00Z"), &policy());
    assert_eq!(
        cycles(&all.events),
        [(2, "2026-02-10T09:00:00.000Z".to_string())],
        "no cycle at endDate"
    );
    assert_eq!(all.order.status, OrderStatus::Ended);
}

#[test]
fn postpone_refusals() {
    let now = at(T0);
    let later = json!({"endDate": "2027-06-01T00:00:00Z"});
    let draft = new_order(monthly("ONLINE", 3, "5.00", T0), now);
    assert_eq!(
        code(cmd(&draft.order, "postponeEndDate", later.clone(), now)),
        ErrorCode::InvalidState
    );
    let forever = new_order(monthly("OFFLINE", 0, "5.00", T0), now);
    assert_eq!(
        code(cmd(&forever.order, "postponeEndDate", later.clone(), now)),
        ErrorCode::InvalidState
    );
    let mut unlimited = monthly("OFFLINE", 0, "5.00", T0);
    unlimited["pricing"] = json!({"singlePaymentUnlimited": true});
    let unlimited = new_order(unlimited, now);
    assert_eq!(
        code(cmd(&unlimited.order, "postponeEndDate", later.clone(), now)),
        ErrorCode::InvalidState
    );
    let active = new_order(monthly("OFFLINE", 3, "5.00", T0), now);
    let paused = cmd(&active.order, "pauseOrder", json!({}), now).unwrap();
    assert_eq!(
        code(cmd(&paused.order, "postponeEndDate", later.clone(), now)),
        ErrorCode::InvalidState
    );
    let canceled = cmd(
        &active.order,
        "cancelOrder",
        json!({"effectiveAt": "IMMEDIATELY"}),
        now,
    )
    .unwrap();
    assert_eq!(
        code(cmd(&canceled.order, "postponeEndDate", later.clone(), now)),
        ErrorCode::InvalidState
    );
    let ended = fire(&active.order, at("2027-01-01T00:00:00Z"), &policy());
    assert_eq!(
        code(cmd(
            &ended.order,
            "postponeEndDate",
            later.clone(),
            at("2027-01-01T00:00:00Z")
        )),
        ErrorCode::InvalidState
    );
    let no_renew = cmd(
        &active.order,
        "cancelOrder",
        json!({"effectiveAt": "NEXT_PAYMENT_DATE"}),
        now,
    )
    .unwrap();
    assert_eq!(
        code(cmd(&no_renew.order, "postponeEndDate", later, now)),
        ErrorCode::InvalidState
    );
    assert_eq!(
        code(cmd(
            &active.order,
            "postponeEndDate",
            json!({"endDate": T0}),
            now
        )),
        ErrorCode::InvalidRequest,
        "must be after now"
    );
}

#[test]
fn changing_the_start_date_recomputes_dates_before_the_start_only() {
    let now = at(T0);
    let pending = new_order(monthly("OFFLINE", 2, "5.00", "2026-02-01T00:00:00Z"), now);
    let c = cmd(
        &pending.order,
        "changeStartDate",
        json!({"startDate": "2026-03-31T00:00:00Z"}),
        now,
    )
    .unwrap();
    assert_eq!(types(&c.events), ["orderStartDateChanged", "orderUpdated"]);
    assert_eq!(
        c.events[0].data,
        json!({"startDate": "2026-03-31T00:00:00.000Z", "previousStartDate": "2026-02-01T00:00:00.000Z"})
    );
    assert_eq!(c.order.end_date, Some(at("2026-05-31T00:00:00Z")));
    let draft = new_order(monthly("ONLINE", 2, "5.00", T0), now);
    assert!(cmd(
        &draft.order,
        "changeStartDate",
        json!({"startDate": "2026-02-01T00:00:00Z"}),
        now
    )
    .is_ok());
    assert_eq!(
        code(cmd(
            &pending.order,
            "changeStartDate",
            json!({"startDate": "2026-01-01T00:00:00Z"}),
            now
        )),
        ErrorCode::InvalidRequest
    );
    let started = fire(&pending.order, at("2026-02-02T00:00:00Z"), &policy());
    assert_eq!(
        code(cmd(
            &started.order,
            "changeStartDate",
            json!({"startDate": "2026-03-01T00:00:00Z"}),
            at("2026-02-02T00:00:00Z")
        )),
        ErrorCode::InvalidState
    );
    // Moving the start to now starts the order in the same change.
    let now_start = cmd(
        &pending.order,
        "changeStartDate",
        json!({"startDate": T0}),
        now,
    )
    .unwrap();
    assert_eq!(
        types(&now_start.events),
        [
            "orderStartDateChanged",
            "orderStarted",
            "orderCycleStarted",
            "orderUpdated"
        ]
    );
}

#[test]
fn cancel_immediately_ends_now() {
    let t = new_order(monthly("OFFLINE", 3, "5.00", T0), at(T0));
    let when = at("2026-01-20T00:00:00Z");
    let c = cmd(
        &t.order,
        "cancelOrder",
        json!({"effectiveAt": "IMMEDIATELY"}),
        when,
    )
    .unwrap();
    assert_eq!(
        types(&c.events),
        ["orderCanceled", "orderEnded", "orderUpdated"]
    );
    assert_eq!(
        c.events[0].data,
        json!({"cancellation": {"requestedDate": "2026-01-20T00:00:00.000Z", "cause": "OWNER_ACTION", "effectiveAt": "IMMEDIATELY"}})
    );
    assert_eq!(c.order.status, OrderStatus::Canceled);
    assert_eq!(c.order.end_date, Some(when));
    assert_eq!(next_due(&c.order), None);
    assert_eq!(
        code(cmd(
            &c.order,
            "cancelOrder",
            json!({"effectiveAt": "IMMEDIATELY"}),
            when
        )),
        ErrorCode::InvalidState
    );
}

#[test]
fn cancel_at_the_next_payment_date_ends_the_current_cycle() {
    let t = new_order(monthly("ONLINE", 0, "5.00", T0), at(T0));
    let t = cmd(
        &t.order,
        "recordPayment",
        json!({"paymentId": "p", "amount": "5.00"}),
        at(T0),
    )
    .unwrap();
    let when = at("2026-01-20T00:00:00Z");
    let c = cmd(
        &t.order,
        "cancelOrder",
        json!({"effectiveAt": "NEXT_PAYMENT_DATE", "cause": "MEMBER_ACTION"}),
        when,
    )
    .unwrap();
    assert_eq!(types(&c.events), ["orderAutoRenewCanceled", "orderUpdated"]);
    assert!(c.order.auto_renew_canceled);
    assert_eq!(c.order.end_date, Some(at("2026-02-10T09:00:00Z")));
    assert_eq!(
        code(cmd(
            &c.order,
            "cancelOrder",
            json!({"effectiveAt": "NEXT_PAYMENT_DATE"}),
            when
        )),
        ErrorCode::InvalidState
    );
    let done = fire(&c.order, at("2026-03-01T00:00:00Z"), &policy());
    assert_eq!(
        types(&done.events),
        ["orderCanceled", "orderEnded", "orderUpdated"]
    );
    assert_eq!(done.order.status, OrderStatus::Canceled);
    assert!(
        cycles(&done.events).is_empty(),
        "no cycle starts at the cancellation date"
    );
    // IMMEDIATELY after NEXT_PAYMENT_DATE is allowed.
    assert!(cmd(
        &c.order,
        "cancelOrder",
        json!({"effectiveAt": "IMMEDIATELY"}),
        when
    )
    .is_ok());
}

#[test]
fn cancel_next_payment_date_during_a_trial_ends_the_trial() {
    let mut args = monthly("ONLINE", 0, "5.00", T0);
    args["freeTrialDays"] = json!(7);
    let t = new_order(args, at(T0));
    let c = cmd(
        &t.order,
        "cancelOrder",
        json!({"effectiveAt": "NEXT_PAYMENT_DATE"}),
        at(T0),
    )
    .unwrap();
    assert_eq!(c.order.end_date, Some(at("2026-01-17T09:00:00Z")));
}

#[test]
fn cancel_next_payment_date_on_a_paused_order_moves_with_the_resume() {
    let t = new_order(monthly("OFFLINE", 0, "5.00", T0), at(T0));
    let p = cmd(
        &t.order,
        "pauseOrder",
        json!({}),
        at("2026-01-15T09:00:00Z"),
    )
    .unwrap();
    let c = cmd(
        &p.order,
        "cancelOrder",
        json!({"effectiveAt": "NEXT_PAYMENT_DATE"}),
        at("2026-01-16T09:00:00Z"),
    )
    .unwrap();
    assert_eq!(c.order.end_date, Some(at("2026-02-10T09:00:00Z")));
    let r = cmd(
        &c.order,
        "resumeOrder",
        json!({}),
        at("2026-01-25T09:00:00Z"),
    )
    .unwrap();
    assert_eq!(r.order.end_date, Some(at("2026-02-20T09:00:00Z")));
    let done = fire(&r.order, at("2026-06-01T00:00:00Z"), &policy());
    assert_eq!(done.order.status, OrderStatus::Canceled);
    assert!(cycles(&done.events).is_empty());
}

#[test]
fn cancel_refusals() {
    let now = at(T0);
    let draft = new_order(monthly("ONLINE", 3, "5.00", T0), now);
    assert_eq!(
        code(cmd(
            &draft.order,
            "cancelOrder",
            json!({"effectiveAt": "IMMEDIATELY"}),
            now
        )),
        ErrorCode::InvalidState
    );
    let pending = new_order(monthly("OFFLINE", 3, "5.00", "2026-03-01T00:00:00Z"), now);
    assert_eq!(
        code(cmd(
            &pending.order,
            "cancelOrder",
            json!({"effectiveAt": "NEXT_PAYMENT_DATE"}),
            now
        )),
        ErrorCode::InvalidState
    );
    assert!(cmd(
        &pending.order,
        "cancelOrder",
        json!({"effectiveAt": "IMMEDIATELY"}),
        now
    )
    .is_ok());
    let mut single = monthly("OFFLINE", 0, "5.00", T0);
    single["pricing"] = json!({"singlePaymentForDuration": {"count": 6, "unit": "MONTH"}});
    let single = new_order(single, now);
    assert_eq!(
        code(cmd(
            &single.order,
            "cancelOrder",
            json!({"effectiveAt": "NEXT_PAYMENT_DATE"}),
            now
        )),
        ErrorCode::InvalidState
    );
    let active = new_order(monthly("OFFLINE", 3, "5.00", T0), now);
    for bad in [
        json!({"effectiveAt": "IMMEDIATELY", "cause": "PAYMENT_FAILURE"}),
        json!({"effectiveAt": "TOMORROW"}),
        json!({"cause": "OWNER_ACTION"}),
    ] {
        assert_eq!(
            code(cmd(&active.order, "cancelOrder", bad, now)),
            ErrorCode::InvalidRequest
        );
    }
}

#[test]
fn single_payment_for_duration_stays_in_cycle_one() {
    let mut args = monthly("OFFLINE", 0, "33.00", T0);
    args["pricing"] = json!({"singlePaymentForDuration": {"count": 6, "unit": "MONTH"}});
    let t = new_order(args, at(T0));
    assert_eq!(t.order.end_date, Some(at("2026-07-10T09:00:00Z")));
    let c = t.order.current_cycle.clone().unwrap();
    assert_eq!(
        (c.index, c.ended_date),
        (1, Some(at("2026-07-10T09:00:00Z")))
    );
    let done = fire(&t.order, at("2026-08-01T00:00:00Z"), &policy());
    assert_eq!(types(&done.events), ["orderEnded", "orderUpdated"]);
    assert_eq!(done.order.current_cycle.unwrap().index, 1);
}

#[test]
fn delete_emits_order_deleted_only() {
    let t = new_order(monthly("OFFLINE", 3, "5.00", T0), at(T0));
    let d = cmd(&t.order, "deleteOrder", json!({}), at(T0)).unwrap();
    assert!(d.deleted);
    assert_eq!(types(&d.events), ["orderDeleted"]);
    assert_eq!(d.events[0].sequence, t.order.sequence + 1);
}

#[test]
fn payments_are_idempotent_by_id() {
    let now = at(T0);
    let t = new_order(monthly("EXTERNAL", 3, "5.00", T0), now);
    let p = cmd(
        &t.order,
        "recordPayment",
        json!({"paymentId": "x", "amount": "5.00"}),
        now,
    )
    .unwrap();
    let again = cmd(
        &p.order,
        "recordPayment",
        json!({"paymentId": "x", "amount": "5"}),
        now,
    )
    .unwrap();
    assert!(again.is_noop());
    assert_eq!(again.order, p.order);
    assert_eq!(
        code(cmd(
            &p.order,
            "recordPayment",
            json!({"paymentId": "x", "amount": "6.00"}),
            now
        )),
        ErrorCode::Conflict
    );
}

#[test]
fn a_failed_payment_may_later_succeed() {
    let now = at(T0);
    let t = new_order(monthly("EXTERNAL", 3, "5.00", T0), now);
    let f = cmd(
        &t.order,
        "paymentFailed",
        json!({"paymentId": "x", "reason": "card declined"}),
        now,
    )
    .unwrap();
    assert_eq!(types(&f.events), ["orderUpdated"]);
    assert_eq!(f.order.last_payment_status, PaymentStatus::Failed);
    let ok = cmd(
        &f.order,
        "recordPayment",
        json!({"paymentId": "x", "amount": "5.00"}),
        now,
    )
    .unwrap();
    assert_eq!(ok.order.last_payment_status, PaymentStatus::Paid);
    assert_eq!(
        code(cmd(
            &ok.order,
            "paymentFailed",
            json!({"paymentId": "x"}),
            now
        )),
        ErrorCode::InvalidState
    );
}

#[test]
fn refunds_take_money_back_up_to_what_was_paid() {
    let now = at(T0);
    let t = new_order(monthly("EXTERNAL", 3, "5.00", T0), now);
    let p = cmd(
        &t.order,
        "recordPayment",
        json!({"paymentId": "x", "amount": "5.00"}),
        now,
    )
    .unwrap();
    let part = cmd(
        &p.order,
        "recordRefund",
        json!({"paymentId": "x", "amount": "2.00"}),
        now,
    )
    .unwrap();
    assert_eq!(types(&part.events), ["orderUpdated"]);
    assert_eq!(part.order.last_payment_status, PaymentStatus::Paid);
    assert_eq!(
        code(cmd(
            &part.order,
            "recordRefund",
            json!({"paymentId": "x", "amount": "3.01"}),
            now
        )),
        ErrorCode::InvalidRequest
    );
    let full = cmd(
        &part.order,
        "recordRefund",
        json!({"paymentId": "x", "amount": "3.00"}),
        now,
    )
    .unwrap();
    assert_eq!(full.order.last_payment_status, PaymentStatus::Refunded);
    assert_eq!(full.order.money(), (p.order.money().0, p.order.money().0));
    assert_eq!(
        code(cmd(
            &p.order,
            "recordRefund",
            json!({"paymentId": "nope", "amount": "1.00"}),
            now
        )),
        ErrorCode::NotFound
    );
}

#[test]
fn payments_on_ended_orders_are_credited_without_a_status_change() {
    let t = new_order(monthly("EXTERNAL", 1, "5.00", T0), at(T0));
    let ended = fire(&t.order, at("2026-03-01T00:00:00Z"), &policy());
    assert_eq!(ended.order.status, OrderStatus::Ended);
    let p = cmd(
        &ended.order,
        "recordPayment",
        json!({"paymentId": "late", "amount": "5.00"}),
        at("2026-03-01T00:00:00Z"),
    )
    .unwrap();
    assert_eq!(p.order.status, OrderStatus::Ended);
    assert_eq!(p.order.money().0.to_string(), "5.00");
}

#[test]
fn payment_amounts_are_validated_against_the_currency() {
    let now = at(T0);
    let t = new_order(monthly("EXTERNAL", 3, "5.00", T0), now);
    for bad in ["5.001", "-1.00", "0"] {
        let r = cmd(
            &t.order,
            "recordPayment",
            json!({"paymentId": "x", "amount": bad}),
            now,
        );
        assert_eq!(code(r), ErrorCode::InvalidRequest, "{bad}");
    }
    let r = cmd(
        &t.order,
        "recordPayment",
        json!({"paymentId": "x", "amount": 5.0}),
        now,
    );
    assert_eq!(
        code(r),
        ErrorCode::InvalidRequest,
        "floats never hold money"
    );
}

#[test]
fn resume_then_cycle_at_one_instant_is_one_change_in_order() {
    let t = new_order(monthly("OFFLINE", 3, "5.00", T0), at(T0));
    // Paused for exactly one day, resume planned on the (shifted) cycle boundary's eve.
    let p = cmd(
        &t.order,
        "pauseOrder",
        json!({"resumeAt": "2026-02-10T09:00:00Z"}),
        at("2026-02-09T09:00:00Z"),
    )
    .unwrap();
    let f = fire(&p.order, at("2026-02-11T09:00:00Z"), &policy());
    assert_eq!(
        types(&f.events),
        [
            "orderResumed",
            "orderUpdated",
            "orderCycleStarted",
            "orderUpdated"
        ]
    );
    assert_eq!(
        f.events[2].event_time,
        at("2026-02-11T09:00:00Z"),
        "cycle 2 moved by the paused day"
    );
}

#[test]
fn create_refusals_name_the_field() {
    let now = at(T0);
    let base = monthly("ONLINE", 3, "5.00", T0);
    let cases: Vec<(&str, serde_json::Value, &str)> = vec![
        ("no pricing", json!({"pricing": {}}), "pricing"),
        (
            "two pricings",
            json!({"pricing": {"subscription": {"cycleDuration": {"count": 1, "unit": "MONTH"}, "cycleCount": 3}, "singlePaymentUnlimited": true}}),
            "pricing",
        ),
        (
            "negative cycleCount",
            json!({"pricing": {"subscription": {"cycleDuration": {"count": 1, "unit": "MONTH"}, "cycleCount": -1}}}),
            "pricing.subscription.cycleCount",
        ),
        (
            "zero count",
            json!({"pricing": {"subscription": {"cycleDuration": {"count": 0, "unit": "MONTH"}, "cycleCount": 3}}}),
            "pricing.subscription.cycleDuration.count",
        ),
        (
            "unknown unit",
            json!({"pricing": {"subscription": {"cycleDuration": {"count": 1, "unit": "FORTNIGHT"}, "cycleCount": 3}}}),
            "pricing.subscription.cycleDuration.unit",
        ),
        (
            "gap",
            json!({"prices": [{"cycleFrom": 1, "numberOfCycles": 1, "amount": "5"}, {"cycleFrom": 3, "amount": "9"}]}),
            "prices[1].cycleFrom",
        ),
        (
            "overlap",
            json!({"prices": [{"cycleFrom": 1, "numberOfCycles": 2, "amount": "5"}, {"cycleFrom": 2, "amount": "9"}]}),
            "prices[1].cycleFrom",
        ),
        (
            "cycleFrom 0",
            json!({"prices": [{"cycleFrom": 0, "amount": "5"}]}),
            "prices[0].cycleFrom",
        ),
        (
            "negative amount",
            json!({"prices": [{"cycleFrom": 1, "amount": "-5"}]}),
            "prices[0].amount",
        ),
        (
            "too precise",
            json!({"prices": [{"cycleFrom": 1, "amount": "5.555"}]}),
            "prices[0].amount",
        ),
        (
            "short coverage",
            json!({"prices": [{"cycleFrom": 1, "numberOfCycles": 2, "amount": "5"}]}),
            "prices",
        ),
        (
            "beyond cycleCount",
            json!({"prices": [{"cycleFrom": 1, "numberOfCycles": 4, "amount": "5"}]}),
            "prices[0].numberOfCycles",
        ),
        ("no prices", json!({"prices": []}), "prices"),
        ("unknown currency", json!({"currency": "ABC"}), "currency"),
        ("unknown type", json!({"type": "BARTER"}), "type"),
        (
            "past start",
            json!({"startDate": "2026-01-01T00:00:00Z"}),
            "startDate",
        ),
        ("bad start", json!({"startDate": "tomorrow"}), "startDate"),
        (
            "negative trial",
            json!({"freeTrialDays": -1}),
            "freeTrialDays",
        ),
        (
            "bad customer id",
            json!({"customerId": "a b"}),
            "customerId",
        ),
        (
            "injection id",
            json!({"customerId": "x}{*\r\nFLUSHALL"}),
            "customerId",
        ),
        ("paid online", json!({"paid": true}), "paid"),
        ("unknown field", json!({"colour": "red"}), "args"),
    ];
    for (what, patch, field) in cases {
        let mut args = base.clone();
        for (k, v) in patch.as_object().unwrap() {
            args[k] = v.clone();
        }
        match try_new(args, now) {
            Err(DomainError::InvalidArgument { field: f, .. }) => assert_eq!(f, field, "{what}"),
            other => panic!("{what}: expected INVALID_REQUEST on {field}, got {other:?}"),
        }
    }
}

#[test]
fn trial_on_a_single_payment_plan_and_other_cross_field_refusals() {
    let now = at(T0);
    let mut args = monthly("OFFLINE", 0, "5.00", T0);
    args["pricing"] = json!({"singlePaymentUnlimited": true});
    args["freeTrialDays"] = json!(7);
    assert!(
        matches!(try_new(args, now), Err(DomainError::InvalidArgument { field, .. }) if field == "freeTrialDays")
    );
    let mut named = monthly("OFFLINE", 3, "5.00", T0);
    named["name"] = json!("cart");
    assert!(
        matches!(try_new(named, now), Err(DomainError::InvalidArgument { field, .. }) if field == "name")
    );
    let mut forever = monthly("OFFLINE", 0, "5.00", T0);
    forever["prices"] = json!([{"cycleFrom": 1, "numberOfCycles": 3, "amount": "5"}]);
    assert!(
        matches!(try_new(forever, now), Err(DomainError::InvalidArgument { field, .. }) if field == "prices")
    );
}

#[test]
fn tiered_prices_charge_each_cycle_its_range() {
    let mut args = monthly("ONLINE", 0, "0", T0);
    args["prices"] = json!([{"cycleFrom": 1, "numberOfCycles": 3, "amount": "5.00"}, {"cycleFrom": 4, "amount": "9.00"}]);
    let t = new_order(args, at(T0));
    assert_eq!(t.order.price_details.total.to_string(), "5.00");
    assert_eq!(cycle_charge(&t.order, 3).to_string(), "5.00");
    assert_eq!(cycle_charge(&t.order, 4).to_string(), "9.00");
    assert_eq!(cycle_charge(&t.order, 400).to_string(), "9.00");
}

#[test]
fn the_compact_form_leaves_out_defaults_and_keeps_everything_else() {
    let t = new_order(monthly("OFFLINE", 3, "5.00", T0), at(T0));
    let compact = crate::domain::order::compact_json(&t.order).unwrap();
    let v: serde_json::Value = serde_json::from_str(&compact).unwrap();
    for absent in [
        "freeTrialDays",
        "pausePeriods",
        "autoRenewCanceled",
        "cancellation",
        "lineItems",
        "promoCodes",
        "payments",
        "tenderLines",
        "addresses",
        "discounts",
        "name",
        "pausedTotal",
        "paymentsDue",
    ] {
        assert!(
            v.get(absent).is_none(),
            "{absent} at its default is left out"
        );
    }
    assert!(v["plan"].get("description").is_none());
    assert!(v["pricing"]["prices"][0].get("numberOfCycles").is_none());
    assert_eq!(v["pricing"]["prices"][0]["amount"], "5.00");
    assert_eq!(v["startDate"], "2026-01-10T09:00:00.000Z");
    assert_eq!(v["version"], t.order.version);
    let back: Order = serde_json::from_str(&compact).unwrap();
    assert_eq!(back, t.order);
    // What is not at its default is written.
    let p = cmd(
        &t.order,
        "pauseOrder",
        json!({}),
        at("2026-02-15T00:00:00Z"),
    )
    .unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&crate::domain::order::compact_json(&p.order).unwrap()).unwrap();
    assert_eq!(v["pausePeriods"].as_array().unwrap().len(), 1);
    let full = serde_json::to_string(&t.order).unwrap();
    assert!(
        compact.len() * 10 < full.len() * 8,
        "compact {} bytes, full {}",
        compact.len(),
        full.len()
    );
}

#[test]
fn the_order_round_trips_through_json_unchanged() {
    let t = new_order(monthly("ONLINE", 3, "5.00", T0), at(T0));
    let p = cmd(
        &t.order,
        "recordPayment",
        json!({"paymentId": "x", "amount": "5.00"}),
        at(T0),
    )
    .unwrap();
    let json = serde_json::to_string(&p.order).unwrap();
    let back: Order = serde_json::from_str(&json).unwrap();
    assert_eq!(back, p.order);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    for field in [
        "id",
        "customerId",
        "plan",
        "type",
        "channel",
        "status",
        "lastPaymentStatus",
        "pricing",
        "currency",
        "freeTrialDays",
        "startDate",
        "endDate",
        "earliestEndDate",
        "currentCycle",
        "pausePeriods",
        "autoRenewCanceled",
        "cancellation",
        "lineItems",
        "promoCodes",
        "payments",
        "addresses",
        "priceDetails",
        "name",
        "version",
        "createdDate",
        "updatedDate",
    ] {
        assert!(v.get(field).is_some(), "missing {field}");
    }
    assert_eq!(v["startDate"], "2026-01-10T09:00:00.000Z");
    assert_eq!(v["priceDetails"]["total"], "5.00");
    assert_eq!(
        v["pricing"]["subscription"]["cycleDuration"]["unit"],
        "MONTH"
    );
}

#[test]
fn grace_expiry_missed_during_downtime_is_deferred_not_fired() {
    let now = at(T0);
    let t = new_order(monthly("ONLINE", 12, "10.00", T0), now);
    let t = cmd(
        &t.order,
        "recordPayment",
        json!({"paymentId": "p1", "amount": "10.00"}),
        now,
    )
    .unwrap();
    let c2 = fire(&t.order, at("2026-02-10T09:00:00Z"), &policy()).order;
    // The daemon was down from Feb 11 to Feb 20; the deadline (Feb 13) passed meanwhile.
    let startup = at("2026-02-20T00:00:00Z");
    let later = at("2026-02-20T01:00:00Z");
    let after = fire_after_downtime(&c2, startup, &policy(), later);
    assert!(after.events.is_empty(), "the move is silent");
    assert_eq!(after.order.version, c2.version + 1, "but it is a change");
    assert_eq!(after.order.status, OrderStatus::Active);
    assert_eq!(next_due(&after.order), Some(later));
    let paid = cmd(
        &after.order,
        "recordPayment",
        json!({"paymentId": "p2", "amount": "10.00"}),
        at("2026-02-20T00:30:00Z"),
    )
    .unwrap();
    assert_eq!(paid.order.status, OrderStatus::Active);
    // Unpaid, it is canceled at the deferred instant, stamped with it.
    let canceled = fire(&after.order, later, &policy());
    assert_eq!(canceled.order.status, OrderStatus::Canceled);
    assert!(canceled.events.iter().all(|e| e.event_time == later));
    // Not yet overdue at start-up: nothing moves, nothing changes.
    let early = fire_after_downtime(&c2, at("2026-02-12T00:00:00Z"), &policy(), startup);
    assert!(early.is_noop());
    assert_eq!(early.order, c2);
}

#[test]
fn grace_of_a_cycle_that_started_during_downtime_is_deferred_too() {
    let now = at(T0);
    let t = new_order(monthly("ONLINE", 12, "10.00", T0), now);
    let paid = cmd(
        &t.order,
        "recordPayment",
        json!({"paymentId": "p1", "amount": "10.00"}),
        now,
    )
    .unwrap()
    .order;
    // Down from Jan 20 to Mar 1: cycle 2 started (Feb 10) and its grace ran out (Feb 13)
    // unseen. Cycle 2 still starts at its own instant; the cancellation waits.
    let startup = at("2026-03-01T00:00:00Z");
    let later = at("2026-03-01T01:00:00Z");
    let after = fire_after_downtime(&paid, startup, &policy(), later);
    let kinds: Vec<EventType> = after.events.iter().map(|e| e.event_type).collect();
    assert_eq!(
        kinds,
        [EventType::OrderCycleStarted, EventType::OrderUpdated]
    );
    assert_eq!(after.events[0].event_time, at("2026-02-10T09:00:00Z"));
    assert_eq!(after.order.status, OrderStatus::Active);
    assert_eq!(after.order.current_cycle.as_ref().map(|c| c.index), Some(2));
    assert_eq!(next_due(&after.order), Some(later));
    // Without the deferral the same catch-up cancels for non-payment.
    let plain = fire(&paid, startup, &policy());
    assert_eq!(plain.order.status, OrderStatus::Canceled);
}

// ---------------------------------------------------------------------------------------------
// Time zones (SPEC 8)

#[test]
fn a_new_york_order_renews_at_local_time_across_dst() {
    let mut args = monthly("OFFLINE", 12, "9.99", "2026-01-15T14:00:00Z");
    args["timeZone"] = json!("America/New_York");
    let t = new_order(args, at("2026-01-15T14:00:00Z"));
    assert_eq!(t.order.time_zone.name(), "America/New_York");
    // 12 local months from 15 Jan 09:00 EST: 15 Jan 2027 09:00 EST.
    assert_eq!(t.order.end_date, Some(at("2027-01-15T14:00:00Z")));
    let mut o = t.order;
    let mut starts = Vec::new();
    while let Some(due) = crate::domain::next_due(&o) {
        if due > at("2026-12-31T00:00:00Z") {
            break;
        }
        o = crate::domain::fire(&o, due, &policy()).order;
        starts.push(format_instant(
            &o.current_cycle.as_ref().unwrap().started_date,
        ));
    }
    // EDT from 8 Mar to 1 Nov: 09:00 local is 13:00 UTC then.
    assert_eq!(starts[0], "2026-02-15T14:00:00.000Z");
    assert_eq!(starts[1], "2026-03-15T13:00:00.000Z");
    assert_eq!(starts[8], "2026-10-15T13:00:00.000Z");
    assert_eq!(starts[9], "2026-11-15T14:00:00.000Z");
    assert_eq!(starts.len(), 11);
}

#[test]
fn a_trial_counts_local_days() {
    let mut args = monthly("OFFLINE", 0, "9.99", "2026-03-01T14:00:00Z");
    args["timeZone"] = json!("America/New_York");
    args["freeTrialDays"] = json!(14);
    let t = new_order(args, at("2026-03-01T14:00:00Z"));
    // 14 local days later is 15 Mar 09:00 EDT, one UTC hour earlier than 14 x 24 h.
    assert_eq!(
        crate::domain::next_due(&t.order),
        Some(at("2026-03-15T13:00:00Z"))
    );
}

#[test]
fn an_unknown_time_zone_is_refused() {
    let mut args = monthly("OFFLINE", 3, "9.99", "2026-01-15T14:00:00Z");
    args["timeZone"] = json!("Mars/Olympus_Mons");
    let e = try_new(args, at("2026-01-15T14:00:00Z")).unwrap_err();
    assert!(e.to_string().contains("timeZone"), "{e}");
}

#[test]
fn utc_is_the_default_and_is_left_out_of_the_stored_form() {
    let t = new_order(
        monthly("OFFLINE", 3, "9.99", "2026-01-15T14:00:00Z"),
        at("2026-01-15T14:00:00Z"),
    );
    assert!(t.order.time_zone.is_utc());
    let full = serde_json::to_value(&t.order).unwrap();
    assert_eq!(full["timeZone"], "UTC");
    let compact = crate::domain::order::compact_json(&t.order).unwrap();
    assert!(!compact.contains("timeZone"));
    let mut args = monthly("OFFLINE", 3, "9.99", "2026-01-15T14:00:00Z");
    args["timeZone"] = json!("Europe/Paris");
    let t = new_order(args, at("2026-01-15T14:00:00Z"));
    let compact = crate::domain::order::compact_json(&t.order).unwrap();
    assert!(
        compact.contains("\"timeZone\":\"Europe/Paris\""),
        "{compact}"
    );
    let back: Order = serde_json::from_str(&compact).unwrap();
    assert_eq!(back, t.order);
}

#[test]
fn a_pause_across_spring_forward_adds_its_elapsed_hours() {
    let mut args = monthly("OFFLINE", 0, "9.99", "2026-02-15T14:00:00Z");
    args["timeZone"] = json!("America/New_York");
    let t = new_order(args, at("2026-02-15T14:00:00Z"));
    // Paused 1 March 09:00 EST, resumed 8 March 09:00 EDT: 167 hours.
    let p = cmd(
        &t.order,
        "pauseOrder",
        json!({}),
        at("2026-03-01T14:00:00Z"),
    )
    .unwrap();
    let r = cmd(
        &p.order,
        "resumeOrder",
        json!({}),
        at("2026-03-08T13:00:00Z"),
    )
    .unwrap();
    assert_eq!(r.order.paused_total, 167 * 3_600_000);
    // 15 March 09:00 EDT (13:00 UTC) + 167 h = 22 March 12:00 UTC, 08:00 EDT.
    assert_eq!(
        crate::domain::next_due(&r.order),
        Some(at("2026-03-22T12:00:00Z"))
    );
}

// ---------------------------------------------------------------------------------------------
// Dunning (SPEC 8)

fn dunning(final_action: crate::domain::order::FinalAction) -> Policy {
    Policy {
        payment_grace: chrono::Duration::days(3),
        dunning: DunningRules {
            retries: vec![chrono::Duration::days(1), chrono::Duration::days(2)],
            final_action,
        },
    }
}

/// An ONLINE monthly order paid for cycle 1 and fired into cycle 2 (requested 2026-02-10 09:00).
fn unpaid_cycle_2(policy: &Policy) -> Transition {
    let now = at(T0);
    let t = new_order(monthly("ONLINE", 12, "10.00", T0), now);
    let t = cmd(
        &t.order,
        "recordPayment",
        json!({"paymentId": "p1", "amount": "10.00"}),
        now,
    )
    .unwrap();
    fire(&t.order, at("2026-02-10T09:00:00Z"), policy)
}

#[test]
fn retries_fire_at_their_offsets_then_the_order_is_canceled() {
    use crate::domain::order::FinalAction;
    let p = dunning(FinalAction::Cancel);
    let c2 = unpaid_cycle_2(&p);
    let due = &c2.order.payments_due[0];
    assert_eq!(
        due.retries,
        [at("2026-02-11T09:00:00Z"), at("2026-02-12T09:00:00Z")]
    );
    assert_eq!(due.deadline, at("2026-02-13T09:00:00Z"));
    assert_eq!(next_due(&c2.order), Some(at("2026-02-11T09:00:00Z")));
    let r1 = fire(&c2.order, at("2026-02-11T09:00:00Z"), &p);
    assert_eq!(
        types(&r1.events),
        ["orderPaymentRetryRequested", "orderUpdated"]
    );
    let data = &r1.events[0].data;
    assert_eq!(data["cycleNumber"], 2);
    assert_eq!(data["attempt"], 1);
    assert_eq!(data["amount"], "10.00");
    assert_eq!(data["kind"], "CYCLE");
    assert_eq!(data["nextRetryDate"], "2026-02-12T09:00:00.000Z");
    assert_eq!(data["deadline"], "2026-02-13T09:00:00.000Z");
    assert_eq!(r1.events[0].event_time, at("2026-02-11T09:00:00Z"));
    let all = fire(&c2.order, at("2026-03-01T00:00:00Z"), &p);
    assert_eq!(
        types(&all.events),
        [
            "orderPaymentRetryRequested",
            "orderUpdated",
            "orderPaymentRetryRequested",
            "orderUpdated",
            "orderCanceled",
            "orderEnded",
            "orderUpdated"
        ]
    );
    assert_eq!(all.events[2].data["attempt"], 2);
    assert_eq!(all.events[2].data["nextRetryDate"], json!(null));
    assert_eq!(all.order.status, OrderStatus::Canceled);
    assert_eq!(
        all.order.cancellation.as_ref().unwrap().cause,
        CancelCause::PaymentFailure
    );
}

#[test]
fn a_payment_stops_the_later_retries() {
    use crate::domain::order::FinalAction;
    let p = dunning(FinalAction::Cancel);
    let c2 = unpaid_cycle_2(&p);
    let r1 = fire(&c2.order, at("2026-02-11T12:00:00Z"), &p);
    let paid = cmd(
        &r1.order,
        "recordPayment",
        json!({"paymentId": "p2", "amount": "10.00"}),
        at("2026-02-11T13:00:00Z"),
    )
    .unwrap();
    assert!(paid.order.payments_due.is_empty());
    let later = fire(&paid.order, at("2026-02-28T00:00:00Z"), &p);
    assert!(
        types(&later.events).is_empty(),
        "{:?}",
        types(&later.events)
    );
    assert_eq!(later.order.status, OrderStatus::Active);
}

#[test]
fn a_pause_moves_the_retries_and_the_deadline() {
    use crate::domain::order::FinalAction;
    let p = dunning(FinalAction::Cancel);
    let c2 = unpaid_cycle_2(&p);
    // Paused 2026-02-10 21:00 for 5 days (after cycle 2's request, before its first retry).
    let paused = cmd(
        &c2.order,
        "pauseOrder",
        json!({}),
        at("2026-02-10T21:00:00Z"),
    )
    .unwrap();
    assert_eq!(
        next_due(&paused.order),
        None,
        "a pause without resumeAt waits"
    );
    let resumed = cmd(
        &paused.order,
        "resumeOrder",
        json!({}),
        at("2026-02-15T21:00:00Z"),
    )
    .unwrap();
    let due = &resumed.order.payments_due[0];
    assert_eq!(
        due.retries,
        [at("2026-02-16T09:00:00Z"), at("2026-02-17T09:00:00Z")]
    );
    assert_eq!(due.deadline, at("2026-02-18T09:00:00Z"));
}

#[test]
fn pause_as_final_action_then_a_resume_restarts_dunning_once() {
    use crate::domain::order::FinalAction;
    let p = dunning(FinalAction::Pause);
    let c2 = unpaid_cycle_2(&p);
    let at_deadline = fire(&c2.order, at("2026-02-13T09:00:00Z"), &p);
    let o = &at_deadline.order;
    assert_eq!(o.status, OrderStatus::Paused);
    assert_eq!(o.last_payment_status, PaymentStatus::Failed);
    let pause = o.active_pause().unwrap();
    assert_eq!(pause.cause, Some(CancelCause::PaymentFailure));
    assert_eq!(pause.resume_date, None);
    let paused = at_deadline
        .events
        .iter()
        .find(|e| e.event_type == EventType::OrderPaused)
        .unwrap();
    assert_eq!(paused.data["cause"], "PAYMENT_FAILURE");
    assert_eq!(next_due(o), None, "no timer while paused for payment");
    // A resume restarts dunning from the resume, once.
    let resumed = cmd_with(o, "resumeOrder", json!({}), at("2026-02-20T00:00:00Z"), &p).unwrap();
    let due = &resumed.order.payments_due[0];
    assert_eq!(due.requested_date, at("2026-02-20T00:00:00Z"));
    assert_eq!(
        due.retries,
        [at("2026-02-21T00:00:00Z"), at("2026-02-22T00:00:00Z")]
    );
    assert_eq!(due.deadline, at("2026-02-23T00:00:00Z"));
    assert_eq!(resumed.order.last_payment_status, PaymentStatus::Pending);
    // The second expiry cancels.
    let second = fire(&resumed.order, at("2026-02-23T00:00:00Z"), &p);
    assert_eq!(second.order.status, OrderStatus::Canceled);
    assert_eq!(
        second.order.cancellation.as_ref().unwrap().cause,
        CancelCause::PaymentFailure
    );
}

#[test]
fn paying_everything_due_resumes_a_payment_pause() {
    use crate::domain::order::FinalAction;
    let p = dunning(FinalAction::Pause);
    let c2 = unpaid_cycle_2(&p);
    let at_deadline = fire(&c2.order, at("2026-02-13T09:00:00Z"), &p);
    let paid = crate::domain::apply(
        &at_deadline.order,
        &crate::domain::command::Command::parse(
            "recordPayment",
            &json!({"orderId": "o1", "paymentId": "p2", "amount": "10.00"}),
        )
        .unwrap()
        .unwrap()
        .1,
        at("2026-02-14T00:00:00Z"),
        &p,
    )
    .unwrap();
    assert_eq!(paid.order.status, OrderStatus::Active);
    assert_eq!(paid.order.last_payment_status, PaymentStatus::Paid);
    assert!(types(&paid.events).contains(&"orderResumed".to_string()));
    assert!(paid.order.payments_due.is_empty());
}

#[test]
fn keep_as_final_action_marks_the_due_final_and_bills_on() {
    use crate::domain::order::FinalAction;
    let p = dunning(FinalAction::Keep);
    let c2 = unpaid_cycle_2(&p);
    let kept = fire(&c2.order, at("2026-02-13T09:00:00Z"), &p);
    assert_eq!(
        types(&kept.events),
        [
            "orderPaymentRetryRequested",
            "orderUpdated",
            "orderPaymentRetryRequested",
            "orderUpdated",
            "orderUpdated"
        ]
    );
    assert_eq!(kept.order.status, OrderStatus::Active);
    assert_eq!(kept.order.last_payment_status, PaymentStatus::Failed);
    assert!(kept.order.payments_due[0].is_final);
    assert_eq!(next_due(&kept.order), Some(at("2026-03-10T09:00:00Z")));
    // Cycle 3 bills with its own dunning; a payment settles the oldest (final) due first.
    let c3 = fire(&kept.order, at("2026-03-10T09:00:00Z"), &p);
    assert_eq!(c3.order.payments_due.len(), 2);
    assert!(!c3.order.payments_due[1].is_final);
    let paid = cmd(
        &c3.order,
        "recordPayment",
        json!({"paymentId": "p2", "amount": "10.00"}),
        at("2026-03-10T10:00:00Z"),
    )
    .unwrap();
    assert_eq!(paid.order.payments_due.len(), 1);
    assert_eq!(paid.order.payments_due[0].cycle, 3);
    assert_eq!(paid.order.payments[1].cycle, 2);
}

#[test]
fn after_downtime_only_the_latest_overdue_retry_fires() {
    use crate::domain::order::FinalAction;
    let p = Policy {
        payment_grace: chrono::Duration::days(3),
        dunning: DunningRules {
            retries: vec![
                chrono::Duration::hours(6),
                chrono::Duration::hours(12),
                chrono::Duration::days(2),
            ],
            final_action: FinalAction::Cancel,
        },
    };
    let c2 = unpaid_cycle_2(&p);
    // Down from before the first retry until 2026-02-11 00:00 (after the 6 h and 12 h ones).
    let up = crate::domain::fire_after_downtime(
        &c2.order,
        at("2026-02-11T00:00:00Z"),
        &p,
        at("2026-02-11T01:00:00Z"),
    );
    let retries: Vec<&Event> = up
        .events
        .iter()
        .filter(|e| e.event_type == EventType::OrderPaymentRetryRequested)
        .collect();
    assert_eq!(retries.len(), 1);
    assert_eq!(retries[0].data["attempt"], 2);
    assert_eq!(retries[0].event_time, at("2026-02-10T21:00:00Z"));
    assert_eq!(next_due(&up.order), Some(at("2026-02-12T09:00:00Z")));
}

#[test]
fn an_order_override_replaces_the_configured_dunning() {
    let mut args = monthly("ONLINE", 12, "10.00", T0);
    args["dunning"] = json!({"retries": ["12h", "36h", "60h"], "finalAction": "KEEP"});
    let t = new_order(args, at(T0));
    let t = cmd(
        &t.order,
        "recordPayment",
        json!({"paymentId": "p1", "amount": "10.00"}),
        at(T0),
    )
    .unwrap();
    let c2 = fire(&t.order, at("2026-02-10T09:00:00Z"), &policy());
    assert_eq!(
        c2.order.payments_due[0].retries,
        [
            at("2026-02-10T21:00:00Z"),
            at("2026-02-11T21:00:00Z"),
            at("2026-02-12T21:00:00Z")
        ]
    );
    let kept = fire(&c2.order, at("2026-02-13T09:00:00Z"), &policy());
    assert_eq!(
        kept.order.status,
        OrderStatus::Active,
        "KEEP, not the policy's CANCEL"
    );
    for bad in [
        json!({"retries": ["2d", "1d"]}),
        json!({"retries": ["3d"]}),
        json!({"retries": ["0s"]}),
        json!({"retries": ["soon"]}),
        json!({"finalAction": "SOMETIMES"}),
    ] {
        let mut args = monthly("ONLINE", 12, "10.00", T0);
        args["dunning"] = bad.clone();
        let e = try_new(args, at(T0)).unwrap_err();
        assert!(e.to_string().contains("dunning"), "{bad}: {e}");
    }
    let mut offline = monthly("OFFLINE", 12, "10.00", T0);
    offline["dunning"] = json!({"finalAction": "PAUSE"});
    assert!(try_new(offline, at(T0)).is_err());
}

#[test]
fn dues_survive_the_end_retries_fire_and_the_deadline_marks_them_failed() {
    use crate::domain::order::FinalAction;
    let p = dunning(FinalAction::Cancel);
    // Two cycles: cycle 2 is requested on 10 Feb and the order ends on 10 Mar.
    let now = at(T0);
    let t = new_order(monthly("ONLINE", 2, "10.00", T0), now);
    let t = cmd_with(
        &t.order,
        "recordPayment",
        json!({"paymentId": "p1", "amount": "10.00"}),
        now,
        &p,
    )
    .unwrap();
    let c2 = fire(&t.order, at("2026-02-10T09:00:00Z"), &p);
    // Canceled at the next payment date (10 Mar): until then the due is dunned as usual.
    let canceled = cmd_with(
        &c2.order,
        "cancelOrder",
        json!({"effectiveAt": "NEXT_PAYMENT_DATE", "cause": "MEMBER_ACTION"}),
        at("2026-02-10T10:00:00Z"),
        &p,
    )
    .unwrap();
    // The due keeps its retries and its deadline while the order is still ACTIVE.
    let later = fire(&canceled.order, at("2026-02-11T09:00:00Z"), &p);
    assert_eq!(
        types(&later.events),
        ["orderPaymentRetryRequested", "orderUpdated"]
    );
    // An IMMEDIATELY cancellation stops the retries; the due stays payable.
    let stopped = cmd_with(
        &c2.order,
        "cancelOrder",
        json!({"effectiveAt": "IMMEDIATELY", "cause": "MEMBER_ACTION"}),
        at("2026-02-10T10:00:00Z"),
        &p,
    )
    .unwrap();
    assert_eq!(stopped.order.status, OrderStatus::Canceled);
    assert_eq!(next_due(&stopped.order), None);
    assert_eq!(stopped.order.payments_due.len(), 1);
    let paid = cmd_with(
        &stopped.order,
        "recordPayment",
        json!({"paymentId": "p2", "amount": "10.00"}),
        at("2026-02-11T00:00:00Z"),
        &p,
    )
    .unwrap();
    assert!(paid.order.payments_due.is_empty(), "still payable");
}

#[test]
fn an_ended_order_keeps_dunning_its_last_cycle() {
    use crate::domain::order::FinalAction;
    // Weekly, two cycles, a 10-day grace: cycle 2 (requested 17 Jan) outlives the end (24 Jan).
    let p = Policy {
        payment_grace: chrono::Duration::days(10),
        dunning: DunningRules {
            retries: vec![chrono::Duration::days(2), chrono::Duration::days(9)],
            final_action: FinalAction::Cancel,
        },
    };
    let mut args = monthly("ONLINE", 2, "10.00", T0);
    args["pricing"]["subscription"]["cycleDuration"]["unit"] = json!("WEEK");
    let t = new_order(args, at(T0));
    let t = cmd_with(
        &t.order,
        "recordPayment",
        json!({"paymentId": "p1", "amount": "10.00"}),
        at(T0),
        &p,
    )
    .unwrap();
    let ended = fire(&t.order, at("2026-01-24T09:00:00Z"), &p);
    assert_eq!(ended.order.status, OrderStatus::Ended);
    assert_eq!(ended.order.payments_due.len(), 1);
    // The 9-day retry (26 Jan) fires after the end, then the deadline (27 Jan) marks it failed.
    assert_eq!(next_due(&ended.order), Some(at("2026-01-26T09:00:00Z")));
    let after = fire(&ended.order, at("2026-02-28T00:00:00Z"), &p);
    assert_eq!(
        types(&after.events),
        ["orderPaymentRetryRequested", "orderUpdated", "orderUpdated"],
        "the retry's change, then the deadline's (orderUpdated alone)"
    );
    assert_eq!(after.order.status, OrderStatus::Ended, "no status change");
    assert_eq!(after.order.last_payment_status, PaymentStatus::Failed);
    assert!(after.order.payments_due[0].is_final);
    assert_eq!(next_due(&after.order), None);
}

// ---------------------------------------------------------------------------------------------
// Plan changes (SPEC 8)

fn plan_args(amount: &str, count: u32, unit: &str, cycles: u32) -> serde_json::Value {
    json!({
        "plan": {"id": format!("p-{amount}"), "name": format!("Plan {amount}")},
        "pricing": {"subscription": {"cycleDuration": {"count": count, "unit": unit}, "cycleCount": cycles}},
        "prices": [{"cycleFrom": 1, "amount": amount}],
    })
}

/// An ONLINE order on a 30-day plan at `amount`, started and paid at T0 (2026-01-10 09:00).
fn thirty_day_paid(amount: &str) -> Order {
    let mut args = monthly("ONLINE", 0, amount, T0);
    args["pricing"]["subscription"]["cycleDuration"] = json!({"count": 30, "unit": "DAY"});
    let t = new_order(args, at(T0));
    cmd(
        &t.order,
        "recordPayment",
        json!({"paymentId": "p1", "amount": amount}),
        at(T0),
    )
    .unwrap()
    .order
}

fn change(
    order: &Order,
    mut args: serde_json::Value,
    now: &str,
) -> Result<Transition, DomainError> {
    if args.get("effectiveAt").is_none() {
        args["effectiveAt"] = json!("IMMEDIATELY");
    }
    cmd(order, "changePlan", args, at(now))
}

#[test]
fn an_upgrade_at_half_a_30_day_cycle_charges_the_difference() {
    let o = thirty_day_paid("10.00");
    // Cycle 1 is [10 Jan 09:00, 9 Feb 09:00): half is 25 Jan 09:00.
    let t = change(&o, plan_args("30.00", 30, "DAY", 0), "2026-01-25T09:00:00Z").unwrap();
    assert_eq!(types(&t.events), ["orderPlanChanged", "orderUpdated"]);
    let data = &t.events[0].data;
    assert_eq!(
        data["proration"],
        json!({"credit": "5.00", "charge": "15.00", "net": "10.00"})
    );
    assert_eq!(data["previousPlan"]["id"], "p1");
    assert_eq!(data["plan"]["id"], "p-30.00");
    assert_eq!(data["effectiveAt"], "IMMEDIATELY");
    let due = &t.order.payments_due[0];
    assert_eq!(due.kind, crate::domain::order::DueKind::Proration);
    assert_eq!(due.amount.to_string(), "10.00");
    assert_eq!(due.cycle, 1);
    assert_eq!(t.order.last_payment_status, PaymentStatus::Pending);
    assert_eq!(t.order.plan.id, "p-30.00");
    // The dates stay: cycle 2 still starts on 9 Feb, at the new price.
    assert_eq!(
        next_due(&t.order),
        Some(at("2026-01-28T09:00:00Z")),
        "the proration's deadline"
    );
    let paid = cmd(
        &t.order,
        "recordPayment",
        json!({"paymentId": "p2", "amount": "10.00"}),
        at("2026-01-26T00:00:00Z"),
    )
    .unwrap();
    assert_eq!(next_due(&paid.order), Some(at("2026-02-09T09:00:00Z")));
    let c2 = fire(&paid.order, at("2026-02-09T09:00:00Z"), &policy());
    assert_eq!(c2.order.payments_due[0].amount.to_string(), "30.00");
}

#[test]
fn the_downgrade_mirror_leaves_a_credit_that_zeroes_the_next_charge() {
    let o = thirty_day_paid("30.00");
    let t = change(&o, plan_args("10.00", 30, "DAY", 0), "2026-01-25T09:00:00Z").unwrap();
    assert_eq!(
        t.events[0].data["proration"],
        json!({"credit": "15.00", "charge": "5.00", "net": "-10.00"})
    );
    assert_eq!(t.order.credit_balance.to_string(), "10.00");
    assert!(t.order.payments_due.is_empty());
    let c2 = fire(&t.order, at("2026-02-09T09:00:00Z"), &policy());
    let cycle = c2.order.current_cycle.as_ref().unwrap();
    assert_eq!(cycle.index, 2);
    assert_eq!(
        cycle.credit_applied.map(|d| d.to_string()).as_deref(),
        Some("10.00")
    );
    assert!(
        c2.order.payments_due.is_empty(),
        "a charge reduced to zero requests nothing"
    );
    assert_eq!(c2.order.last_payment_status, PaymentStatus::Paid);
    assert!(c2.order.credit_balance.is_zero());
    // Cycle 3 is charged again.
    let c3 = fire(&c2.order, at("2026-03-11T09:00:00Z"), &policy());
    assert_eq!(c3.order.payments_due[0].amount.to_string(), "10.00");
}

#[test]
fn a_change_on_an_unpaid_cycle_reprices_its_own_due() {
    let long_grace = Policy {
        payment_grace: chrono::Duration::days(20),
        dunning: no_retries(),
    };
    let o = thirty_day_paid("10.00");
    // Cycle 2 [9 Feb, 11 Mar) is requested (10.00) and unpaid; half is 24 Feb 09:00.
    let c2 = fire(&o, at("2026-02-09T09:00:00Z"), &long_grace);
    let mut args = plan_args("30.00", 30, "DAY", 0);
    args["effectiveAt"] = json!("IMMEDIATELY");
    let t = cmd_with(
        &c2.order,
        "changePlan",
        args,
        at("2026-02-24T09:00:00Z"),
        &long_grace,
    )
    .unwrap();
    assert_eq!(t.order.payments_due.len(), 1, "no PRORATION entry");
    let due = &t.order.payments_due[0];
    assert_eq!(
        due.amount.to_string(),
        "20.00",
        "5.00 used of the old + 15.00 of the new"
    );
    assert_eq!(
        due.deadline,
        at("2026-03-01T09:00:00Z"),
        "its deadline stands"
    );
    assert_eq!(
        t.events[0].data["proration"],
        json!({"credit": "0.00", "charge": "15.00", "net": "15.00"})
    );
}

#[test]
fn proration_none_charges_nothing_now_and_the_new_price_next() {
    let o = thirty_day_paid("10.00");
    let mut args = plan_args("30.00", 30, "DAY", 0);
    args["proration"] = json!("NONE");
    let t = change(&o, args, "2026-01-25T09:00:00Z").unwrap();
    assert_eq!(
        t.events[0].data["proration"],
        json!({"credit": "0.00", "charge": "0.00", "net": "0.00"})
    );
    assert!(t.order.payments_due.is_empty());
    let c2 = fire(&t.order, at("2026-02-09T09:00:00Z"), &policy());
    assert_eq!(c2.order.payments_due[0].amount.to_string(), "30.00");
}

#[test]
fn a_yearly_change_from_a_monthly_plan_starts_a_new_anchor() {
    let now = at(T0);
    let t = new_order(monthly("ONLINE", 0, "10.00", T0), now);
    let o = cmd(
        &t.order,
        "recordPayment",
        json!({"paymentId": "p1", "amount": "10.00"}),
        now,
    )
    .unwrap()
    .order;
    // Cycle 1 is [10 Jan 09:00, 10 Feb 09:00), 31 days; 16 are left on 25 Jan 09:00.
    let t = change(
        &o,
        plan_args("120.00", 1, "YEAR", 0),
        "2026-01-25T09:00:00Z",
    )
    .unwrap();
    assert_eq!(
        types(&t.events),
        ["orderPlanChanged", "orderCycleStarted", "orderUpdated"]
    );
    // credit = round(16/31 x 10.00) = 5.16; cycle 2 starts now, charged 120.00 - 5.16.
    assert_eq!(t.events[0].data["proration"]["credit"], "5.16");
    let cycle = t.order.current_cycle.as_ref().unwrap();
    assert_eq!(cycle.index, 2);
    assert_eq!(cycle.started_date, at("2026-01-25T09:00:00Z"));
    assert_eq!(cycle.ended_date, Some(at("2027-01-25T09:00:00Z")));
    assert_eq!(t.order.payments_due[0].amount.to_string(), "114.84");
    assert!(t.order.credit_balance.is_zero());
    assert_eq!(t.order.anchor, Some(at("2026-01-25T09:00:00Z")));
    assert_eq!(t.order.anchor_cycle, 2);
    assert_eq!(
        next_due(&t.order),
        Some(at("2026-01-28T09:00:00Z")),
        "the due's deadline"
    );
    // A finite new plan: cycleCount 3 means cycles 2 and 3 under it, so it ends 2 years on.
    let t = change(
        &o,
        plan_args("120.00", 1, "YEAR", 3),
        "2026-01-25T09:00:00Z",
    )
    .unwrap();
    assert_eq!(t.order.end_date, Some(at("2028-01-25T09:00:00Z")));
    let e = change(
        &o,
        plan_args("120.00", 1, "YEAR", 1),
        "2026-01-25T09:00:00Z",
    )
    .unwrap_err();
    assert!(e.to_string().contains("cycleCount"), "{e}");
}

#[test]
fn a_scheduled_change_applies_at_the_next_payment_date_and_can_be_canceled() {
    let now = at(T0);
    let t = new_order(monthly("ONLINE", 0, "10.00", T0), now);
    let o = cmd(
        &t.order,
        "recordPayment",
        json!({"paymentId": "p1", "amount": "10.00"}),
        now,
    )
    .unwrap()
    .order;
    let mut args = plan_args("20.00", 1, "MONTH", 0);
    args["effectiveAt"] = json!("NEXT_PAYMENT_DATE");
    let s = change(&o, args.clone(), "2026-01-20T00:00:00Z").unwrap();
    assert_eq!(
        types(&s.events),
        ["orderPlanChangeScheduled", "orderUpdated"]
    );
    let sc = s.order.scheduled_change.as_ref().unwrap();
    assert_eq!(sc.effective_date, at("2026-02-10T09:00:00Z"));
    assert_eq!(s.order.plan.id, "p1", "not yet");
    let c2 = fire(&s.order, at("2026-02-10T09:00:00Z"), &policy());
    assert_eq!(
        types(&c2.events),
        ["orderPlanChanged", "orderCycleStarted", "orderUpdated"]
    );
    assert_eq!(c2.events[0].data["effectiveAt"], "NEXT_PAYMENT_DATE");
    assert_eq!(c2.order.plan.id, "p-20.00");
    assert_eq!(c2.order.payments_due[0].amount.to_string(), "20.00");
    assert!(c2.order.scheduled_change.is_none());
    // cancelScheduledChange removes it; with nothing scheduled it is refused.
    let canceled = cmd(
        &s.order,
        "cancelScheduledChange",
        json!({}),
        at("2026-01-21T00:00:00Z"),
    )
    .unwrap();
    assert!(canceled.order.scheduled_change.is_none());
    assert_eq!(canceled.events[0].data["scheduledChange"], json!(null));
    let e = cmd(
        &canceled.order,
        "cancelScheduledChange",
        json!({}),
        at("2026-01-22T00:00:00Z"),
    )
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidState);
    // A pause moves the effective date with the cycle.
    let paused = cmd(
        &s.order,
        "pauseOrder",
        json!({}),
        at("2026-01-21T00:00:00Z"),
    )
    .unwrap();
    let resumed = cmd(
        &paused.order,
        "resumeOrder",
        json!({}),
        at("2026-01-26T00:00:00Z"),
    )
    .unwrap();
    assert_eq!(
        resumed
            .order
            .scheduled_change
            .as_ref()
            .unwrap()
            .effective_date,
        at("2026-02-15T09:00:00Z")
    );
    // A cancellation drops it in the same change.
    let c = cmd(
        &s.order,
        "cancelOrder",
        json!({"effectiveAt": "NEXT_PAYMENT_DATE"}),
        at("2026-01-21T00:00:00Z"),
    )
    .unwrap();
    assert!(c.order.scheduled_change.is_none());
    assert_eq!(
        types(&c.events),
        [
            "orderPlanChangeScheduled",
            "orderAutoRenewCanceled",
            "orderUpdated"
        ]
    );
}

#[test]
fn during_a_trial_the_plan_is_replaced_and_nothing_is_prorated() {
    let mut args = monthly("ONLINE", 0, "10.00", T0);
    args["freeTrialDays"] = json!(14);
    let o = new_order(args, at(T0)).order;
    assert!(o.in_trial(), "nothing to pay: it starts in its trial");
    let t = change(
        &o,
        plan_args("30.00", 1, "MONTH", 0),
        "2026-01-12T00:00:00Z",
    )
    .unwrap();
    assert_eq!(
        t.events[0].data["proration"],
        json!({"credit": "0.00", "charge": "0.00", "net": "0.00"})
    );
    assert!(t.order.payments_due.is_empty());
    assert_eq!(
        next_due(&t.order),
        Some(at("2026-01-24T09:00:00Z")),
        "trial end stays"
    );
    let c1 = fire(&t.order, at("2026-01-24T09:00:00Z"), &policy());
    assert_eq!(c1.order.payments_due[0].amount.to_string(), "30.00");
    // NEXT_PAYMENT_DATE during a trial takes effect at the trial's end.
    let mut next = plan_args("20.00", 1, "WEEK", 0);
    next["effectiveAt"] = json!("NEXT_PAYMENT_DATE");
    let s = change(&o, next, "2026-01-12T00:00:00Z").unwrap();
    assert_eq!(
        s.order.scheduled_change.as_ref().unwrap().effective_date,
        at("2026-01-24T09:00:00Z")
    );
    let c1 = fire(&s.order, at("2026-01-24T09:00:00Z"), &policy());
    assert_eq!(c1.order.plan.id, "p-20.00");
    assert_eq!(c1.order.current_cycle.as_ref().unwrap().index, 1);
    assert_eq!(c1.order.payments_due[0].amount.to_string(), "20.00");
    assert_eq!(
        next_cycle_start(&c1.order),
        Some(at("2026-01-31T09:00:00Z")),
        "weekly from the trial end"
    );
}

#[test]
fn plan_changes_are_refused_where_spec_8_says() {
    let o = thirty_day_paid("10.00");
    let e = change(
        &o,
        {
            let mut a = plan_args("30.00", 30, "DAY", 0);
            a["currency"] = json!("EUR");
            a
        },
        "2026-01-25T09:00:00Z",
    )
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidRequest);
    let e = change(
        &o,
        json!({
            "plan": {"id": "x", "name": "X"},
            "pricing": {"singlePaymentUnlimited": true},
            "prices": [{"cycleFrom": 1, "amount": "1.00"}],
        }),
        "2026-01-25T09:00:00Z",
    )
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidRequest);
    let paused = cmd(&o, "pauseOrder", json!({}), at("2026-01-20T00:00:00Z"))
        .unwrap()
        .order;
    let e = change(
        &paused,
        plan_args("30.00", 30, "DAY", 0),
        "2026-01-25T09:00:00Z",
    )
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidState);
    // OFFLINE: PRORATE is refused, NONE works.
    let off = new_order(monthly("OFFLINE", 0, "10.00", T0), at(T0)).order;
    let e = change(
        &off,
        plan_args("30.00", 1, "MONTH", 0),
        "2026-01-25T09:00:00Z",
    )
    .unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidRequest);
    let mut none = plan_args("30.00", 1, "MONTH", 0);
    none["proration"] = json!("NONE");
    assert!(change(&off, none, "2026-01-25T09:00:00Z").is_ok());
    // A cycleCount below the current cycle.
    let c2 = fire(&off, at("2026-03-10T09:00:00Z"), &policy()).order;
    let mut short = plan_args("30.00", 1, "MONTH", 2);
    short["proration"] = json!("NONE");
    let e = change(&c2, short, "2026-03-11T00:00:00Z").unwrap_err();
    assert!(e.to_string().contains("cycleCount"), "{e}");
    // PENDING: IMMEDIATELY only.
    let pending = new_order(
        monthly("OFFLINE", 0, "10.00", "2026-03-01T00:00:00Z"),
        at(T0),
    )
    .order;
    assert_eq!(pending.status, OrderStatus::Pending);
    let mut next = plan_args("30.00", 1, "MONTH", 0);
    next["proration"] = json!("NONE");
    next["effectiveAt"] = json!("NEXT_PAYMENT_DATE");
    let e = change(&pending, next, "2026-01-25T09:00:00Z").unwrap_err();
    assert_eq!(e.code(), ErrorCode::InvalidState);
    let mut now = plan_args("30.00", 1, "MONTH", 0);
    now["proration"] = json!("NONE");
    let p = change(&pending, now, "2026-01-25T09:00:00Z").unwrap();
    assert_eq!(p.order.price_details.total.to_string(), "30.00", "repriced");
}

#[test]
fn payments_are_allocated_to_dues_by_amount_oldest_first() {
    let o = thirty_day_paid("10.00");
    // Upgrade: a 10.00 PRORATION due for cycle 1; then cycle 2 (9 Feb) asks 30.00.
    let t = change(&o, plan_args("30.00", 30, "DAY", 0), "2026-01-25T09:00:00Z").unwrap();
    let long = Policy {
        payment_grace: chrono::Duration::days(40),
        dunning: no_retries(),
    };
    let mut o = t.order;
    o.payments_due[0].deadline = at("2026-03-05T09:00:00Z");
    let c2 = fire(&o, at("2026-02-09T09:00:00Z"), &long);
    assert_eq!(c2.order.payments_due.len(), 2);
    // A partial payment reduces the oldest due and keeps its deadline.
    let p = cmd_with(
        &c2.order,
        "recordPayment",
        json!({"paymentId": "p2", "amount": "4.00"}),
        at("2026-02-10T00:00:00Z"),
        &long,
    )
    .unwrap();
    assert_eq!(p.order.payments_due[0].amount.to_string(), "6.00");
    assert_eq!(p.order.payments_due[0].deadline, at("2026-03-05T09:00:00Z"));
    assert_eq!(p.order.last_payment_status, PaymentStatus::Pending);
    // Naming a due pays it first.
    let named = cmd_with(
        &p.order,
        "recordPayment",
        json!({"paymentId": "p3", "amount": "30.00", "due": {"cycle": 2, "kind": "CYCLE"}}),
        at("2026-02-10T00:00:00Z"),
        &long,
    )
    .unwrap();
    assert_eq!(named.order.payments_due.len(), 1);
    assert_eq!(
        named.order.payments_due[0].kind,
        crate::domain::order::DueKind::Proration
    );
    assert_eq!(named.order.payments[2].cycle, 2);
    // What exceeds every due goes to creditBalance.
    let over = cmd_with(
        &named.order,
        "recordPayment",
        json!({"paymentId": "p4", "amount": "10.00"}),
        at("2026-02-10T00:00:00Z"),
        &long,
    )
    .unwrap();
    assert!(over.order.payments_due.is_empty());
    assert_eq!(over.order.credit_balance.to_string(), "4.00");
    assert_eq!(over.order.last_payment_status, PaymentStatus::Paid);
    let e = cmd_with(
        &named.order,
        "recordPayment",
        json!({"paymentId": "p5", "amount": "1.00", "due": {"cycle": 7}}),
        at("2026-02-10T00:00:00Z"),
        &long,
    )
    .unwrap_err();
    assert!(e.to_string().contains("no CYCLE due for cycle 7"), "{e}");
}

#[test]
fn credit_balance_keeps_the_currencys_decimals_after_a_prorated_downgrade() {
    for (currency, amount, weekly, zero) in [
        ("USD", "10.00", "3.00", "0.00"),
        ("KWD", "10.000", "3.000", "0.000"),
    ] {
        let mut args = monthly("EXTERNAL", 0, amount, "2028-01-31T10:00:00Z");
        args["currency"] = json!(currency);
        let t = new_order(args, at("2028-01-31T10:00:00Z"));
        let t = fire(&t.order, at("2028-02-10T10:00:00Z"), &policy());
        let mut plan = plan_args(weekly, 1, "WEEK", 0);
        plan["effectiveAt"] = json!("IMMEDIATELY");
        plan["proration"] = json!("PRORATE");
        let c = cmd(&t.order, "changePlan", plan, at("2028-02-10T10:00:00Z")).unwrap();
        assert_eq!(c.order.credit_balance.to_string(), zero, "{currency}");
        let json = serde_json::to_value(&c.order).unwrap();
        assert_eq!(json["creditBalance"], json!(zero), "{currency}");
    }
}

#[test]
fn a_due_asked_at_the_start_moves_with_a_changed_start_date() {
    // A free PENDING order (paid 5.00 ahead) moved to a priced plan is asked its proration at
    // its start; the
    // start then moves three days later: the due's deadline counts from the new start, so the
    // order starts and is not canceled for a deadline of a start that never came.
    let mut args = monthly("ONLINE", 0, "0.00", "2023-01-28T00:00:00Z");
    args["pricing"]["subscription"]["cycleDuration"] = json!({"count": 1, "unit": "DAY"});
    let now = at("2023-01-23T14:43:00Z");
    let o = new_order(args, now).order;
    let o = cmd(
        &o,
        "recordPayment",
        json!({"paymentId": "p0", "amount": "5.00"}),
        now,
    )
    .unwrap()
    .order;
    let o = cmd(&o, "changePlan", json!({"plan": {"id": "c500", "name": "Changed"},
        "pricing": {"subscription": {"cycleDuration": {"count": 1, "unit": "DAY"}, "cycleCount": 0}},
        "prices": [{"cycleFrom": 1, "amount": "5.00"}], "effectiveAt": "IMMEDIATELY"}), now)
    .unwrap()
    .order;
    assert_eq!(o.payments_due[0].requested_date, at("2023-01-28T00:00:00Z"));
    let o = cmd(
        &o,
        "changeStartDate",
        json!({"startDate": "2023-01-31T00:00:00Z"}),
        now,
    )
    .unwrap()
    .order;
    assert_eq!(o.payments_due[0].requested_date, at("2023-01-31T00:00:00Z"));
    assert_eq!(o.payments_due[0].deadline, at("2023-02-03T00:00:00Z"));
    let started = fire(&o, at("2023-01-31T00:01:00Z"), &policy());
    assert_eq!(started.order.status, OrderStatus::Active);
    assert!(started.order.cancellation.is_none());
}
