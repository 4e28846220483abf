//! Previews (what an order will do, what a command would do), computed by the same lifecycle
//! code that fires timers and applies commands, and written nowhere.

use chrono::Duration as Span;
use serde_json::{json, Value};

use super::{apply, fire, Policy, Transition};
use crate::domain::command::Command;
use crate::domain::error::DomainError;
use crate::domain::event::Event;
use crate::domain::order::{DueKind, Order};
use crate::domain::time::{format_instant, Instant};

/// How far ahead previewOrder looks at most: 10 years (3,653 days, leap days included).
pub const MAX_AHEAD_DAYS: i64 = 3_653;

/// previewOrder: what `order` (as of `now`) does until `until` if no command arrives: the
/// changes an advance to `until` would make, each stamped with its own due instant.
///
/// # Errors
/// [`DomainError::InvalidArgument`] (`until`) before now or more than 10 years after it.
pub fn preview_until(
    order: &Order,
    now: Instant,
    until: Instant,
    policy: &Policy,
) -> Result<Transition, DomainError> {
    if until < now {
        return Err(DomainError::invalid(
            "until",
            format!("must not be before now ({})", format_instant(&now)),
        ));
    }
    if until > now + Span::days(MAX_AHEAD_DAYS) {
        return Err(DomainError::invalid(
            "until",
            "must be at most 10 years after now",
        ));
    }
    Ok(fire(order, until, policy))
}

/// A command with `preview: true`: the change it would make now (after what is due by now),
/// applied nowhere. Returns the transition of the command alone.
///
/// # Errors
/// The command's refusal, exactly as the command itself would give it.
pub fn preview_command(
    order: &Order,
    cmd: &Command,
    now: Instant,
    policy: &Policy,
) -> Result<Transition, DomainError> {
    let fired = fire(order, now, policy);
    apply(&fired.order, cmd, now, policy)
}

/// An event as a preview shows it: type, eventTime, data and sequence (no id: nothing was
/// written, and the ids are those the events get when they happen).
pub fn event_json(e: &Event) -> Value {
    json!({
        "type": e.event_type,
        "eventTime": format_instant(&e.event_time),
        "sequence": e.sequence,
        "data": e.data,
    })
}

/// The payment dues a preview's changes request (a cycle's charge or a proration), each once,
/// as it stands at its last change within the preview (attempts, retries): what the order
/// would ask to be paid, and when.
pub fn requested_dues(before: &Order, t: &Transition) -> Vec<Value> {
    let known = |cycle: u32, kind: DueKind, at: &Instant| {
        before
            .payments_due
            .iter()
            .any(|d| d.cycle == cycle && d.kind == kind && d.requested_date == *at)
    };
    let mut out: Vec<(u32, DueKind, Instant, Value)> = Vec::new();
    for e in &t.events {
        for due in &e.entity.payments_due {
            if known(due.cycle, due.kind, &due.requested_date) {
                continue;
            }
            let value = serde_json::to_value(due).unwrap_or(Value::Null);
            match out.iter_mut().find(|(c, k, at, _)| {
                *c == due.cycle && *k == due.kind && *at == due.requested_date
            }) {
                Some(slot) => slot.3 = value,
                None => out.push((due.cycle, due.kind, due.requested_date, value)),
            }
        }
    }
    out.into_iter().map(|(_, _, _, v)| v).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lifecycle::test_support::*;

    #[test]
    fn a_preview_is_what_firing_would_do_and_changes_nothing() {
        let o = new_order(
            monthly("ONLINE", 12, "10.00", "2026-01-01T00:00:00Z"),
            at("2026-01-01T00:00:00Z"),
        );
        let paid = cmd(
            &o.order,
            "recordPayment",
            serde_json::json!({"paymentId": "p1", "amount": "10.00"}),
            at("2026-01-01T00:00:00Z"),
        )
        .unwrap()
        .order;
        let until = at("2026-04-15T00:00:00Z");
        let p = preview_until(&paid, at("2026-01-02T00:00:00Z"), until, &policy()).unwrap();
        assert_eq!(p, fire(&paid, until, &policy()));
        // Unpaid, cycle 2 is requested and the order canceled at the deadline: one due.
        let dues = requested_dues(&paid, &p);
        assert_eq!(dues.len(), 1, "{dues:?}");
        assert_eq!(dues[0]["cycle"], 2);
        assert_eq!(dues[0]["amount"], "10.00");
        assert!(preview_until(&paid, until, at("2026-01-01T00:00:00Z"), &policy()).is_err());
        assert!(preview_until(&paid, until, at("2037-01-01T00:00:00Z"), &policy()).is_err());
    }
}
