//! Builders shared by the lifecycle's table tests and property tests.

use serde_json::{json, Value};

use crate::domain::command::{parse_args, CreateOrderArgs, NewOrder};
use crate::domain::event::Event;
use crate::domain::time::{parse_instant, Instant};
use crate::domain::{create, DomainError, Order, Policy, Transition};

pub fn at(s: &str) -> Instant {
    parse_instant(s).expect("test instant")
}

pub fn policy() -> Policy {
    Policy {
        payment_grace: chrono::Duration::days(3),
        dunning: no_retries(),
    }
}

/// The policy of the table tests written before dunning: the 3-day grace, no retries, CANCEL
/// (section 7's grace rule). Dunning's tests give their own rules.
pub fn no_retries() -> crate::domain::lifecycle::DunningRules {
    crate::domain::lifecycle::DunningRules {
        retries: Vec::new(),
        final_action: crate::domain::order::FinalAction::Cancel,
    }
}

/// createOrder args for a monthly subscription of `count` cycles at `amount` USD.
pub fn monthly(kind: &str, count: u32, amount: &str, start: &str) -> Value {
    json!({
        "customerId": "c1",
        "plan": {"id": "p1", "name": "Monthly"},
        "type": kind,
        "pricing": {"subscription": {"cycleDuration": {"count": 1, "unit": "MONTH"}, "cycleCount": count}},
        "prices": [{"cycleFrom": 1, "amount": amount}],
        "currency": "USD",
        "startDate": start,
    })
}

pub fn try_new(args: Value, now: Instant) -> Result<Transition, DomainError> {
    let args: CreateOrderArgs = parse_args(&args)?;
    let new = NewOrder::parse(args, "o1".into(), "web".into())?;
    create(new, now, &policy())
}

pub fn new_order(args: Value, now: Instant) -> Transition {
    try_new(args, now).expect("createOrder")
}

pub fn types(events: &[Event]) -> Vec<String> {
    events
        .iter()
        .map(|e| {
            serde_json::to_value(e.event_type)
                .unwrap()
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect()
}

pub fn cmd(
    order: &Order,
    name: &str,
    args: Value,
    now: Instant,
) -> Result<Transition, DomainError> {
    cmd_with(order, name, args, now, &policy())
}

/// [`cmd`] under `policy`.
pub fn cmd_with(
    order: &Order,
    name: &str,
    mut args: Value,
    now: Instant,
    policy: &Policy,
) -> Result<Transition, DomainError> {
    args["orderId"] = json!(order.id);
    let (_, c) = crate::domain::command::Command::parse(name, &args).expect("known command")?;
    let caught_up = crate::domain::fire(order, now, policy);
    let applied = crate::domain::apply(&caught_up.order, &c, now, policy)?;
    Ok(caught_up.then(applied))
}
