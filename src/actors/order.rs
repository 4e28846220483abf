//! The order actor: loads its order on first use, applies overdue timers before every
//! command, runs the pure lifecycle, and commits the result (state, timer, events, reply) in
//! one atomic write before it answers.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant as WallInstant;

use actix::prelude::*;
use serde_json::Value;

use super::customer::ApplyDelta;
use super::registry;
use super::ActorError;
use crate::admin::protocol::{Reply, StoredReply};
use crate::daemon::Daemon;
use crate::domain::basket::{self, BasketRules, Stage, UpdateOrder};
use crate::domain::command::{Command, NewOrder};
use crate::domain::stats::contribution;
use crate::domain::time::{to_millis, Instant};
use crate::domain::{self, DomainError, Order, Transition};
use crate::store::stats::Delta;
use crate::store::{Commit, CommitOutcome, Loaded, OrderWrite, StoreError};

/// How many times a commit is retried after a version conflict (reloading each time).
const MAX_COMMIT_ATTEMPTS: usize = 3;

/// The request an operation answers, so its reply is kept in the same commit.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestMeta {
    pub id: String,
    pub body_hash: String,
}

/// What an admin request asks of one order.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderOp {
    /// createOrder; `client_chosen_id` makes a second create return the first order.
    Create {
        new: NewOrder,
        client_chosen_id: bool,
    },
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

/// Runs an admin operation on the order and returns the reply (already kept in Redis).
#[derive(Message, Clone)]
#[rtype(result = "Result<Reply, ActorError>")]
pub struct Execute {
    pub op: OrderOp,
    pub request: RequestMeta,
}

/// Fires every change of the order due at or before `until` (the scheduler's message).
#[derive(Message, Clone)]
#[rtype(result = "Result<(), ActorError>")]
pub struct Fire {
    pub until: Instant,
    /// The order as the scheduler read it in bulk for this round, when the actor has no state
    /// yet (saves a round trip per order; a stale copy fails its version check and is reloaded).
    pub preloaded: Option<Box<Order>>,
    /// System-clock start-up only: overdue grace expiries move to this instant.
    pub defer_grace_to: Option<Instant>,
}

/// One order's actor.
pub struct OrderActor {
    id: String,
    generation: u64,
    daemon: Arc<Daemon>,
    /// None until loaded (or after a conflict: reload on next use).
    state: Option<Loaded>,
    last_used: WallInstant,
    handled: u64,
    /// Whether the idle-passivation check runs (not for actors woken only by their timer,
    /// which stop right after firing).
    idle_check: bool,
}

impl OrderActor {
    /// A new, not yet loaded actor for `id`.
    pub fn new(id: String, generation: u64, daemon: Arc<Daemon>) -> Self {
        OrderActor {
            id,
            generation,
            daemon,
            state: None,
            last_used: WallInstant::now(),
            handled: 0,
            idle_check: false,
        }
    }
}

impl Actor for OrderActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let m = &self.daemon.metrics;
        m.resident_actors.fetch_add(1, Ordering::Relaxed);
        m.activations.fetch_add(1, Ordering::Relaxed);
        let _ = ctx;
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        let m = &self.daemon.metrics;
        m.resident_actors.fetch_sub(1, Ordering::Relaxed);
        m.passivations.fetch_add(1, Ordering::Relaxed);
        self.daemon.registry.remove(&self.id, self.generation);
    }
}

impl OrderActor {
    /// Starts the idle check that passivates the actor after `actors.idle_passivation`.
    fn ensure_idle_check(&mut self, ctx: &mut Context<Self>) {
        if self.idle_check {
            return;
        }
        self.idle_check = true;
        let idle = self.daemon.settings.actors.idle_passivation;
        let every = (idle / 2).max(std::time::Duration::from_millis(20));
        ctx.run_interval(every, move |act, ctx| {
            if act.last_used.elapsed() >= idle {
                ctx.stop();
            }
        });
    }
}

impl Handler<Execute> for OrderActor {
    type Result = AtomicResponse<Self, Result<Reply, ActorError>>;

    fn handle(&mut self, msg: Execute, ctx: &mut Self::Context) -> Self::Result {
        let (daemon, id, state) = (Arc::clone(&self.daemon), self.id.clone(), self.state.take());
        self.handled += 1;
        self.ensure_idle_check(ctx);
        AtomicResponse::new(Box::pin(
            async move { execute(&daemon, &id, state, msg).await }
                .into_actor(self)
                .map(|(state, result), act, _ctx| {
                    act.state = state;
                    act.last_used = WallInstant::now();
                    result
                }),
        ))
    }
}

impl Handler<Fire> for OrderActor {
    type Result = AtomicResponse<Self, Result<(), ActorError>>;

    fn handle(&mut self, msg: Fire, ctx: &mut Self::Context) -> Self::Result {
        let preloaded = msg.preloaded.map(Loaded::Present);
        let (daemon, id) = (Arc::clone(&self.daemon), self.id.clone());
        let state = self.state.take().or(preloaded);
        // An actor woken only by its timer goes back to sleep right after: a burst of due
        // orders flows through without keeping them all resident.
        let woken_by_timer = self.handled == 0;
        self.handled += 1;
        if !woken_by_timer {
            self.ensure_idle_check(ctx);
        }
        AtomicResponse::new(Box::pin(
            async move { fire(&daemon, &id, state, msg.until, msg.defer_grace_to).await }
                .into_actor(self)
                .map(move |(state, result), act, ctx| {
                    act.state = state;
                    act.last_used = WallInstant::now();
                    if woken_by_timer && act.handled == 1 {
                        ctx.stop();
                    }
                    result
                }),
        ))
    }
}

async fn load(daemon: &Daemon, id: &str, state: Option<Loaded>) -> Result<Loaded, ActorError> {
    match state {
        Some(s) => Ok(s),
        None => Ok(daemon.store.load(id).await?),
    }
}

/// Builds the commit of a transition (plus the reply to keep with it).
///
/// The order is serialized once: that JSON is both the stored order and the `entity` of every
/// event of the final change, which the commit script splices in (see [`event_args`]).
fn commit_of(
    id: &str,
    before: Option<&Order>,
    t: Option<&Transition>,
    delta: Option<&Delta>,
    reply: Option<(String, String)>,
) -> Commit {
    let expected_version = before.map_or(0, |o| o.version);
    let (write, events) = match t {
        Some(t) if t.deleted => {
            let json = serde_json::to_string(&t.order).unwrap_or_default();
            (
                OrderWrite::Delete {
                    customer_id: t.order.customer_id.clone(),
                    json,
                },
                event_args(t),
            )
        }
        Some(t) if !t.events.is_empty() || t.order.version != expected_version => (
            OrderWrite::Save {
                json: serde_json::to_string(&t.order).unwrap_or_default(),
                version: t.order.version,
                due_ms: domain::next_due(&t.order).map(|d| to_millis(&d)),
                customer_id: t.order.customer_id.clone(),
                created_ms: to_millis(&t.order.created_date),
            },
            event_args(t),
        ),
        _ => (OrderWrite::None, Vec::new()),
    };
    Commit {
        order_id: id.to_string(),
        expected_version,
        write,
        events,
        deltas: delta
            .map(|d| serde_json::to_string(d).unwrap_or_default())
            .into_iter()
            .collect(),
        reply,
    }
}

/// The customer-stats delta of a transition: the order's new contribution, when its figures
/// changed (a cycle start that moves no money and no status sends none).
fn delta_of(before: Option<&Order>, t: &Transition) -> Option<Delta> {
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

/// Hands a committed stats delta to its customer's actor, which applies it exactly once and
/// removes its outbox entry. A failure leaves the entry for the outbox sweep.
async fn settle_delta(daemon: &Arc<Daemon>, delta: Delta, entry_id: String) {
    let msg = ApplyDelta {
        delta,
        entry_id: Some(entry_id),
    };
    if let Err(e) = registry::apply_delta(daemon, msg).await {
        tracing::warn!(error = %e, "stats delta not applied yet; the outbox sweep will retry");
    }
}

/// The commit script's event arguments: `+<head>` for an event whose entity is the order as
/// committed (the script appends the order JSON and `}`), or the whole event JSON for the
/// earlier changes of a catch-up, whose entity is an intermediate state.
fn event_args(t: &Transition) -> Vec<String> {
    let last = t.events.last().map(|e| &e.entity);
    let final_is_last = last.is_some_and(|l| **l == t.order);
    t.events
        .iter()
        .map(|e| match last {
            Some(l) if final_is_last && Arc::ptr_eq(l, &e.entity) => format!("+{}", e.head_json()),
            _ => serde_json::to_string(e).unwrap_or_default(),
        })
        .collect()
}

fn order_value(o: &Order) -> Value {
    serde_json::to_value(o).unwrap_or(Value::Null)
}

fn reply_of(request: &RequestMeta, result: Result<Value, DomainError>) -> Reply {
    match result {
        Ok(v) => Reply::ok(Some(request.id.clone()), v),
        Err(e) => Reply::error(Some(request.id.clone()), e.code(), e.to_string()),
    }
}

fn stored(request: &RequestMeta, reply: &Reply) -> (String, String) {
    let s = StoredReply {
        body_hash: request.body_hash.clone(),
        reply: reply.clone(),
    };
    (
        request.id.clone(),
        serde_json::to_string(&s).unwrap_or_default(),
    )
}

/// The state after a committed transition.
fn after(t: &Transition) -> Loaded {
    if t.deleted {
        Loaded::Deleted
    } else {
        Loaded::Present(Box::new(t.order.clone()))
    }
}

/// Commits a transition (and the reply to keep with it); once Redis has it, wakes the
/// scheduler for an earlier timer and settles the stats delta with the customer's actor.
///
/// A reply to keep marks an admin command, committed over the store's admin connection; a
/// fired timer goes over the scheduler's bulk connection.
async fn commit_and_settle(
    daemon: &Arc<Daemon>,
    id: &str,
    before: Option<&Order>,
    t: Option<&Transition>,
    reply: Option<(String, String)>,
) -> Result<CommitOutcome, StoreError> {
    let bulk = reply.is_none();
    let delta = t.and_then(|t| delta_of(before, t));
    let commit = commit_of(id, before, t, delta.as_ref(), reply);
    let due = match &commit.write {
        OrderWrite::Save { due_ms, .. } => *due_ms,
        _ => None,
    };
    let outcome = if bulk {
        daemon.store.commit_bulk(commit).await?
    } else {
        daemon.store.commit(commit).await?
    };
    if let CommitOutcome::Committed { outbox_ids } = &outcome {
        if let Some(due) = due {
            daemon.timer_committed(due);
        }
        if let (Some(delta), Some(entry_id)) = (delta, outbox_ids.first()) {
            settle_delta(daemon, delta, entry_id.clone()).await;
        }
    }
    Ok(outcome)
}

/// The body of [`Execute`]: returns the state to cache (None = reload next time) and the reply.
async fn execute(
    daemon: &Arc<Daemon>,
    id: &str,
    state: Option<Loaded>,
    msg: Execute,
) -> (Option<Loaded>, Result<Reply, ActorError>) {
    let mut state = state;
    for _ in 0..MAX_COMMIT_ATTEMPTS {
        let loaded = match load(daemon, id, state.take()).await {
            Ok(l) => l,
            Err(e) => return (None, Err(e)),
        };
        let now = daemon.clock.now();
        let policy = daemon.policy;
        // updateOrder refusals name their pipeline stage.
        let mut stage: Option<Stage> = None;
        let (expected, transition, result) = match (&loaded, &msg.op) {
            (Loaded::Present(o), op) => {
                // Timers due before the command fire first; they commit even if it is refused.
                let fired = domain::fire(o, now, &policy);
                let changed = |t: Transition| (!t.is_noop()).then_some(t);
                match op {
                    OrderOp::Get | OrderOp::Create { .. } => {
                        let v = order_value(&fired.order);
                        (o.version, changed(fired), Ok(v))
                    }
                    OrderOp::Command(c) => match domain::apply(&fired.order, c, now, &policy) {
                        Ok(t) => {
                            let v = order_value(&t.order);
                            (o.version, changed(fired.then(t)), Ok(v))
                        }
                        Err(e) => (o.version, changed(fired), Err(e)),
                    },
                    OrderOp::Update { update, rules } => {
                        match basket::update(&fired.order, update, rules, now, &policy) {
                            Ok(u) => (o.version, changed(fired.then(u.transition)), Ok(u.reply)),
                            Err(e) => {
                                stage = Some(e.stage);
                                (o.version, changed(fired), Err(e.error))
                            }
                        }
                    }
                }
            }
            (Loaded::Deleted, OrderOp::Create { .. }) => (
                0,
                None,
                Err(DomainError::Conflict(format!(
                    "order id {id} belonged to a deleted order and cannot be reused"
                ))),
            ),
            (Loaded::Missing, OrderOp::Create { new, .. }) => {
                match domain::create(new.clone(), now, &policy) {
                    Ok(t) => {
                        let v = order_value(&t.order);
                        (0, Some(t), Ok(v))
                    }
                    Err(e) => (0, None, Err(e)),
                }
            }
            (Loaded::Missing | Loaded::Deleted, op) => {
                if matches!(op, OrderOp::Update { .. }) {
                    stage = Some(Stage::Load);
                }
                (
                    0,
                    None,
                    Err(DomainError::NotFound(format!("order {id} not found"))),
                )
            }
        };
        let reply = reply_of(&msg.request, result).with_stage(stage.map(Stage::as_str));
        let before = match &loaded {
            Loaded::Present(o) if expected > 0 => Some(o.as_ref()),
            _ => None,
        };
        let kept = Some(stored(&msg.request, &reply));
        match commit_and_settle(daemon, id, before, transition.as_ref(), kept).await {
            Ok(CommitOutcome::Committed { .. }) => {
                let next = transition.as_ref().map_or(loaded, after);
                return (Some(next), Ok(reply));
            }
            Ok(CommitOutcome::AlreadyReplied(json)) => {
                // Another attempt of this request id won: answer with its reply, and reload.
                let kept = serde_json::from_str::<StoredReply>(&json).map(|s| s.reply);
                return (
                    None,
                    kept.map_err(|e| {
                        ActorError::Store(crate::store::StoreError::Corrupt(e.to_string()))
                    }),
                );
            }
            Ok(CommitOutcome::VersionConflict | CommitOutcome::Deleted) => {
                tracing::debug!(order_id = %id, "version conflict; reloading");
                state = None;
            }
            Err(e) => return (None, Err(e.into())),
        }
    }
    (None, Err(ActorError::Contended))
}

/// The body of [`Fire`].
async fn fire(
    daemon: &Arc<Daemon>,
    id: &str,
    state: Option<Loaded>,
    until: Instant,
    defer_grace_to: Option<Instant>,
) -> (Option<Loaded>, Result<(), ActorError>) {
    let mut state = state;
    daemon.metrics.timers_fired.fetch_add(1, Ordering::Relaxed);
    for _ in 0..MAX_COMMIT_ATTEMPTS {
        let loaded = match load(daemon, id, state.take()).await {
            Ok(l) => l,
            Err(e) => return (None, Err(e)),
        };
        let Loaded::Present(order) = &loaded else {
            // A timer without an order (deleted out of band): drop it.
            let r = daemon
                .store
                .set_timer(id, None)
                .await
                .map_err(ActorError::from);
            return (Some(loaded), r);
        };
        let t = match defer_grace_to {
            Some(to) => domain::fire_after_downtime(order, until, &daemon.policy, to),
            None => domain::fire(order, until, &daemon.policy),
        };
        // A silent change (grace deadlines moved, no event) has a new version and commits.
        if t.is_noop() && t.order.version == order.version {
            // The timer set disagrees with the order (it was due, nothing fired): repair it.
            let due = domain::next_due(order).map(|d| to_millis(&d));
            let r = daemon
                .store
                .set_timer(id, due)
                .await
                .map_err(ActorError::from);
            return (Some(loaded), r);
        }
        match commit_and_settle(daemon, id, Some(order.as_ref()), Some(&t), None).await {
            Ok(CommitOutcome::Committed { .. }) => {
                return (Some(after(&t)), Ok(()));
            }
            Ok(_) => state = None,
            Err(e) => return (None, Err(e.into())),
        }
    }
    (None, Err(ActorError::Contended))
}
