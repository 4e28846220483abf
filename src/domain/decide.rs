//! The order actor's decisions, pure: what an admin operation or a due timer does to an order
//! as loaded (the change to commit, the reply's result), what time a command runs at, and the
//! customer-statistics delta a change sends. The actor does the I/O around them.

use std::sync::Arc;

use serde_json::Value;

use super::basket::{self, BasketRules, Stage, UpdateOrder};
use super::command::{Command, NewOrder};
use super::stats::{contribution, Delta};
use super::time::{to_millis, Instant};
use super::{
    apply, create, fire, fire_after_downtime, next_due, DomainError, Order, Policy, Transition,
};

/// What Redis holds under an order id.
#[derive(Debug, Clone, PartialEq)]
pub enum Loaded {
    Present(Box<Order>),
    Missing,
    /// The id belonged to an order that was deleted; it may not be reused.
    Deleted,
}

/// What an admin request asks of one order.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderOp {
    /// createOrder; a second create of the same id returns the order.
    Create(Box<NewOrder>),
    /// A lifecycle command.
    Command(Command),
    /// updateOrder: the staged pipeline, with the status manager and promotions from config.
    Update {
        update: Box<UpdateOrder>,
        rules: Arc<BasketRules>,
    },
    /// getOrder.
    Get,
}

/// The instant a command runs at: the clock's `now`, but never before the order's last change,
/// so its times do not go backwards after a takeover by a daemon whose wall clock is slightly
/// behind (SPEC 10).
pub fn command_time(now: Instant, loaded: &Loaded) -> Instant {
    match loaded {
        Loaded::Present(o) => now.max(o.updated_date),
        _ => now,
    }
}

/// What an admin operation does to its order: the change to commit (None: only the reply) and
/// the reply to keep with it. Pure: the order as loaded, the operation and the time in.
#[derive(Debug)]
pub struct Decision {
    pub transition: Option<Transition>,
    /// The reply's result, or the refusal.
    pub outcome: Result<Value, DomainError>,
    /// The updateOrder stage a refusal names.
    pub stage: Option<Stage>,
}

/// Decides an admin operation on the order as loaded at `now`. Timers due before the command
/// fire first and commit even when the command is refused.
pub fn decide(id: &str, loaded: &Loaded, op: &OrderOp, now: Instant, policy: &Policy) -> Decision {
    let changed = |t: Transition| (!t.is_noop()).then_some(t);
    // updateOrder refusals name their pipeline stage.
    let mut stage: Option<Stage> = None;
    let (transition, result) = match (loaded, op) {
        (Loaded::Present(o), op) => {
            let fired = fire(o, now, policy);
            match op {
                OrderOp::Get | OrderOp::Create(_) => {
                    let v = order_value(&fired.order);
                    (changed(fired), Ok(v))
                }
                OrderOp::Command(c) => match apply(&fired.order, c, now, policy) {
                    Ok(t) => {
                        let v = order_value(&t.order);
                        (changed(fired.then(t)), Ok(v))
                    }
                    Err(e) => (changed(fired), Err(e)),
                },
                OrderOp::Update { update, rules } => {
                    match basket::update(&fired.order, update, rules, now, policy) {
                        Ok(u) => (changed(fired.then(u.transition)), Ok(u.reply)),
                        Err(e) => {
                            stage = Some(e.stage);
                            (changed(fired), Err(e.error))
                        }
                    }
                }
            }
        }
        (Loaded::Deleted, OrderOp::Create(_)) => (
            None,
            Err(DomainError::Conflict(format!(
                "order id {id} belonged to a deleted order and cannot be reused"
            ))),
        ),
        (Loaded::Missing, OrderOp::Create(new)) => {
            match create(new.as_ref().clone(), now, policy) {
                Ok(t) => {
                    let v = order_value(&t.order);
                    (Some(t), Ok(v))
                }
                Err(e) => (None, Err(e)),
            }
        }
        (Loaded::Missing | Loaded::Deleted, op) => {
            if matches!(op, OrderOp::Update { .. }) {
                stage = Some(Stage::Load);
            }
            (
                None,
                Err(DomainError::NotFound(format!("order {id} not found"))),
            )
        }
    };
    Decision {
        transition,
        outcome: result,
        stage,
    }
}

/// What a due timer does to its order (pure).
// Short-lived (decided, then committed at once): boxing the transition would only add an
// allocation per fired order.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum FireDecision {
    /// Commit the fired changes (a silent change, such as moved grace deadlines, has a new
    /// version and no event, and commits too).
    Commit(Transition),
    /// Nothing fired: set the timer to what the order says is next (`None`: drop it), because
    /// it disagreed with the order (a timer without an order, or due with nothing due).
    RepairTimer(Option<i64>),
}

/// Decides what firing the order as loaded up to `until` does.
pub fn decide_fire(
    loaded: &Loaded,
    until: Instant,
    defer_grace_to: Option<Instant>,
    policy: &Policy,
) -> FireDecision {
    let Loaded::Present(order) = loaded else {
        // A timer without an order (deleted out of band): drop it.
        return FireDecision::RepairTimer(None);
    };
    let t = match defer_grace_to {
        Some(to) => fire_after_downtime(order, until, policy, to),
        None => fire(order, until, policy),
    };
    if t.is_noop() && t.order.version == order.version {
        FireDecision::RepairTimer(next_due(order).map(|d| to_millis(&d)))
    } else {
        FireDecision::Commit(t)
    }
}

/// The customer-stats delta of a transition: the order's new contribution, when its figures
/// changed (a cycle start that moves no money and no status sends none).
pub fn stats_delta(before: Option<&Order>, t: &Transition) -> Option<Delta> {
    let after = (!t.deleted).then(|| contribution(&t.order));
    let changed = match (before.map(contribution), &after) {
        (Some(b), Some(a)) => !b.same_figures(a),
        (None, None) => false,
        _ => true,
    };
    changed.then(|| Delta {
        c: t.order.customer_id.clone(),
        o: t.order.id.clone(),
        v: t.order.version,
        k: after,
    })
}

pub fn order_value(o: &Order) -> Value {
    serde_json::to_value(o).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::command::{parse_args, CreateOrderArgs};
    use crate::domain::lifecycle::test_support::{at, monthly, new_order, policy};
    use crate::domain::ErrorCode;
    use serde_json::json;

    fn present(o: &Order) -> Loaded {
        Loaded::Present(Box::new(o.clone()))
    }

    fn command(name: &str) -> OrderOp {
        let (_, c) = Command::parse(name, &json!({"orderId": "o1"}))
            .expect("known")
            .expect("valid");
        OrderOp::Command(c)
    }

    fn create_op(args: serde_json::Value) -> OrderOp {
        let args: CreateOrderArgs = parse_args(&args).unwrap();
        OrderOp::Create(Box::new(
            NewOrder::parse(args, "o1".into(), "web".into()).unwrap(),
        ))
    }

    const START: &str = "2026-01-01T00:00:00Z";

    #[test]
    fn a_create_of_a_missing_order_commits_it_and_replies_with_it() {
        let op = create_op(monthly("OFFLINE", 3, "10.00", START));
        let d = decide("o1", &Loaded::Missing, &op, at(START), &policy());
        let t = d.transition.expect("a transition to commit");
        assert_eq!(t.order.version, 1);
        assert!(d.outcome.is_ok(), "{:?}", d.outcome);
        assert_eq!(d.outcome.unwrap()["id"], "o1");
    }

    #[test]
    fn a_create_of_a_deleted_id_is_a_conflict_and_commits_only_the_reply() {
        let op = create_op(monthly("OFFLINE", 3, "10.00", START));
        let d = decide("o1", &Loaded::Deleted, &op, at(START), &policy());
        assert!(d.transition.is_none());
        assert_eq!(d.outcome.unwrap_err().code(), ErrorCode::Conflict);
    }

    #[test]
    fn a_refused_command_still_commits_the_timers_due_before_it() {
        // ACTIVE from the 1st; a month later cycle 2 is due when a refused resumeOrder arrives.
        let created = new_order(monthly("OFFLINE", 3, "10.00", START), at(START)).order;
        let later = at("2026-02-01T00:00:01Z");
        let resume = command("resumeOrder");
        let d = decide("o1", &present(&created), &resume, later, &policy());
        assert_eq!(d.outcome.unwrap_err().code(), ErrorCode::InvalidState);
        let t = d
            .transition
            .expect("cycle 2 fired before the refused command");
        assert!(t
            .events
            .iter()
            .any(|e| e.event_type == crate::domain::EventType::OrderCycleStarted));
        // With nothing due, a refused command commits only its reply.
        let again = decide("o1", &present(&t.order), &resume, later, &policy());
        assert!(again.transition.is_none());
        assert_eq!(again.outcome.unwrap_err().code(), ErrorCode::InvalidState);
        // An accepted one commits the change and replies with the order.
        let paused = decide(
            "o1",
            &present(&t.order),
            &command("pauseOrder"),
            later,
            &policy(),
        );
        assert_eq!(paused.outcome.unwrap()["status"], "PAUSED");
        assert!(paused.transition.is_some());
    }

    #[test]
    fn an_update_of_a_missing_order_names_the_load_stage() {
        let args = json!({"customerId": "c1", "id": "o1"});
        let update = UpdateOrder::parse(&args, "web").unwrap();
        let op = OrderOp::Update {
            update: Box::new(update),
            rules: Arc::new(BasketRules::default()),
        };
        let d = decide("o1", &Loaded::Missing, &op, at(START), &policy());
        assert_eq!(
            (d.outcome.unwrap_err().code(), d.stage.map(Stage::as_str)),
            (ErrorCode::NotFound, Some("load"))
        );
    }

    #[test]
    fn firing_a_due_order_commits_and_firing_it_again_repairs_the_timer() {
        let created = new_order(monthly("OFFLINE", 3, "10.00", START), at(START)).order;
        let due = at("2026-02-01T00:00:00Z");
        let FireDecision::Commit(t) = decide_fire(&present(&created), due, None, &policy()) else {
            panic!("cycle 2 is due");
        };
        assert_eq!(t.order.version, created.version + 1);
        match decide_fire(&present(&t.order), due, None, &policy()) {
            FireDecision::RepairTimer(next) => {
                assert_eq!(next, next_due(&t.order).map(|d| to_millis(&d)));
            }
            FireDecision::Commit(t) => panic!("nothing is due twice: {:?}", t.events),
        }
        assert!(matches!(
            decide_fire(&Loaded::Missing, due, None, &policy()),
            FireDecision::RepairTimer(None)
        ));
    }

    #[test]
    fn a_command_never_runs_before_the_order_s_last_change() {
        let created = new_order(monthly("OFFLINE", 3, "10.00", START), at(START)).order;
        let before = at("2025-12-31T23:59:59Z");
        let after = at("2026-01-01T00:00:01Z");
        assert_eq!(
            command_time(before, &present(&created)),
            created.updated_date
        );
        assert_eq!(command_time(after, &present(&created)), after);
        assert_eq!(command_time(before, &Loaded::Missing), before);
        assert_eq!(command_time(before, &Loaded::Deleted), before);
    }

    #[test]
    fn a_change_sends_a_stats_delta_only_when_the_customer_s_figures_move() {
        let created = new_order(monthly("OFFLINE", 3, "10.00", START), at(START));
        let first = stats_delta(None, &created).expect("a new order counts");
        assert_eq!(
            (first.c.as_str(), first.o.as_str(), first.v),
            ("c1", created.order.id.as_str(), created.order.version)
        );
        assert!(first.k.is_some());
        // A getOrder-like no-op transition of the same order moves nothing.
        let same = fire(&created.order, at(START), &policy());
        assert!(stats_delta(Some(&created.order), &same).is_none());
        // Cancelled: its status moves, so the figures do.
        let cancel = Command::parse(
            "cancelOrder",
            &json!({"orderId": "o1", "effectiveAt": "IMMEDIATELY"}),
        )
        .expect("known")
        .expect("valid")
        .1;
        let t = apply(
            &created.order,
            &cancel,
            at("2026-01-02T00:00:00Z"),
            &policy(),
        )
        .unwrap();
        let d = stats_delta(Some(&created.order), &t).expect("a cancellation moves figures");
        assert_eq!(d.v, t.order.version);
    }
}
