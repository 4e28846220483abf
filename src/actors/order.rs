//! The order actor: loads its order on first use, applies overdue timers before every
//! command, runs the pure lifecycle, and commits the result (state, timer, events, reply) in
//! one atomic write before it answers.
//!
//! Each message has two halves: a pure decision ([`decide`] for an admin operation,
//! [`decide_fire`] for a due timer) that says what to commit and what to answer, and one
//! commit-with-retry ([`commit_with_retry`]) shared by both, which reloads the order and decides
//! again after a version conflict.

use std::time::Instant as WallInstant;

use actix::prelude::*;
use tracing::Instrument;

use super::{passivate_when_idle, ActorError, Actors, Settle};
use crate::domain::basket::Stage;
pub use crate::domain::decide::OrderOp;
use crate::domain::decide::{command_time, decide, decide_fire, stats_delta, FireDecision};
use crate::domain::stats::Delta;
use crate::domain::time::{to_millis, Instant};
use crate::domain::{self, change_head_json, DomainError, Order, Transition};
use crate::store::test_clock::{JobKind, TestClock};
use crate::store::{Commit, CommitOutcome, Loaded, OrderWrite, StoreError};
use crate::wire::{Reply, StoredReply};

/// How many times a commit is retried after a version conflict (reloading each time).
const MAX_COMMIT_ATTEMPTS: usize = 3;

/// The request an operation answers, so its reply is kept in the same commit.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestMeta {
    pub id: String,
    pub body_hash: String,
}

/// Runs an admin operation on the order and returns the reply (already kept in Redis).
#[derive(Message, Clone)]
#[rtype(result = "Result<Reply, ActorError>")]
pub struct Execute {
    pub op: OrderOp,
    pub request: RequestMeta,
}

/// Fires every change of the order due at or before `until` (the scheduler's message).
#[derive(Message)]
#[rtype(result = "Result<(), ActorError>")]
pub(super) struct Fire {
    pub until: Instant,
    /// The order as the scheduler read it in bulk for this round, when the actor has no state
    /// yet (saves a round trip per order; a stale copy fails its version check and is reloaded).
    pub preloaded: Option<Box<Order>>,
    /// System-clock start-up only: overdue grace expiries move to this instant.
    pub defer_grace_to: Option<Instant>,
    /// The test clock whose timer this is (None: a live timer), so a timer without an order
    /// is dropped from the set it is in.
    pub test_clock: Option<String>,
}

/// One order's actor.
pub struct OrderActor {
    id: String,
    /// The order's partition, computed once.
    partition: u16,
    generation: u64,
    actors: Actors,
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
    pub(super) fn new(id: String, generation: u64, actors: Actors) -> Self {
        OrderActor {
            partition: actors.config().stores.keys.partition(&id),
            id,
            generation,
            actors,
            state: None,
            last_used: WallInstant::now(),
            handled: 0,
            idle_check: false,
        }
    }

    /// Starts the idle check that passivates the actor after `actors.idle_passivation`.
    fn ensure_idle_check(&mut self, ctx: &mut Context<Self>) {
        if !self.idle_check {
            self.idle_check = true;
            let idle = self.actors.config().idle_passivation;
            passivate_when_idle(ctx, idle, |act: &Self| act.last_used);
        }
    }
}

impl Actor for OrderActor {
    type Context = Context<Self>;

    fn started(&mut self, _ctx: &mut Self::Context) {
        self.actors.config().metrics.actor_started();
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.actors.config().metrics.actor_stopped();
        self.actors.shared.orders.remove(&self.id, self.generation);
    }
}

impl Handler<Execute> for OrderActor {
    type Result = AtomicResponse<Self, Result<Reply, ActorError>>;

    fn handle(&mut self, msg: Execute, ctx: &mut Self::Context) -> Self::Result {
        let (actors, id, state) = (self.actors.clone(), self.id.clone(), self.state.take());
        let partition = self.partition;
        self.handled += 1;
        self.ensure_idle_check(ctx);
        let span = tracing::info_span!(
            "order",
            order_id = %id,
            partition = self.partition,
            request_id = %msg.request.id,
        );
        AtomicResponse::new(Box::pin(
            async move { execute(&actors, (&id, partition), state, msg).await }
                .instrument(span)
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
        let (actors, id, partition) = (self.actors.clone(), self.id.clone(), self.partition);
        let state = self.state.take().or(preloaded);
        // An actor woken only by its timer goes back to sleep right after: a burst of due
        // orders flows through without keeping them all resident.
        let woken_by_timer = self.handled == 0;
        self.handled += 1;
        if !woken_by_timer {
            self.ensure_idle_check(ctx);
        }
        let (until, defer, clock) = (msg.until, msg.defer_grace_to, msg.test_clock);
        // Debug level: a span per fired timer is measurable at a burst's rate (warnings on
        // this path name the order themselves).
        let span = tracing::debug_span!(
            "fire",
            order_id = %id,
            partition = self.partition,
        );
        AtomicResponse::new(Box::pin(
            async move { fire(&actors, (&id, partition), state, until, defer, clock).await }
                .instrument(span)
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

/// The body of [`Execute`]: returns the state to cache (None = reload next time) and the reply.
async fn execute(
    actors: &Actors,
    (id, partition): (&str, u16),
    state: Option<Loaded>,
    msg: Execute,
) -> (Option<Loaded>, Result<Reply, ActorError>) {
    let config = actors.config();
    let state = match state {
        Some(s) => s,
        None => match config.stores.orders.load(id).await {
            Ok(l) => l,
            Err(e) => return (None, Err(e.into())),
        },
    };
    // A test-clock order sees its clock's time (SPEC 11.5).
    let clock = match test_clock_of(&state, &msg.op) {
        Some(c) => match config.stores.test_clocks.test_clock(&c).await {
            Ok(found) => Some((c, found)),
            Err(e) => return (Some(state), Err(e.into())),
        },
        None => None,
    };
    let refusal = clock
        .as_ref()
        .and_then(|(id, found)| clock_refusal(id, found.as_ref(), &msg.op));
    let plan = |loaded: &Loaded| {
        if let Some(e) = &refusal {
            let reply = Reply::error(Some(msg.request.id.clone()), e.code(), e.to_string());
            return Plan::Commit {
                transition: None,
                kept: Some((msg.request.clone(), reply.clone())),
                answer: reply,
            };
        }
        let base = match (&clock, loaded) {
            (Some((_, Some(c))), _) => c.frozen,
            // The clock is being deleted with its orders: the order's own last instant.
            (Some((_, None)), Loaded::Present(o)) => o.updated_date,
            _ => config.clock.now(),
        };
        let now = command_time(base, loaded);
        let d = decide(id, loaded, &msg.op, now, &config.policy);
        let reply = match d.outcome {
            Ok(v) => Reply::ok(Some(msg.request.id.clone()), v),
            Err(e) => Reply::error(Some(msg.request.id.clone()), e.code(), e.to_string()),
        }
        .with_stage(d.stage.map(Stage::as_str));
        Plan::Commit {
            transition: d.transition,
            kept: Some((msg.request.clone(), reply.clone())),
            answer: reply,
        }
    };
    match commit_with_retry(actors, (id, partition), Some(state), None, plan).await {
        (state, Ok(Settled::Answered(reply))) => (state, Ok(reply)),
        // Another attempt of this request id won: answer with its reply.
        (state, Ok(Settled::AlreadyReplied(json))) => {
            let kept = serde_json::from_str::<StoredReply>(&json)
                .map(|s| s.reply)
                .map_err(|e| StoreError::Corrupt(format!("kept reply of {}: {e}", msg.request.id)));
            (state, kept.map_err(ActorError::from))
        }
        (state, Err(e)) => (state, Err(e)),
    }
}

/// The test clock an operation runs on: the order's, or a createOrder's.
fn test_clock_of(loaded: &Loaded, op: &OrderOp) -> Option<String> {
    match (loaded, op) {
        (Loaded::Present(o), _) => o.test_clock_id.clone(),
        (Loaded::Missing, OrderOp::Create(new)) => new.test_clock_id.clone(),
        _ => None,
    }
}

/// Why an operation on a test clock's order is refused, if it is: a createOrder on a clock
/// that does not exist or has a job under way, a change while the clock advances (its orders
/// are being fired; reads go on).
fn clock_refusal(id: &str, clock: Option<&TestClock>, op: &OrderOp) -> Option<DomainError> {
    match (clock, op) {
        (None, OrderOp::Create(_)) => {
            Some(DomainError::NotFound(format!("test clock {id} not found")))
        }
        (Some(c), OrderOp::Create(_)) if c.job.is_some() => Some(DomainError::InvalidState(
            format!("test clock {id} is advancing or being deleted; retry when it is READY"),
        )),
        (Some(c), OrderOp::Command(_) | OrderOp::Update { .. })
            if c.job.as_ref().is_some_and(|j| j.kind == JobKind::Advance) =>
        {
            Some(DomainError::InvalidState(format!(
                "test clock {id} is advancing; retry when it is READY"
            )))
        }
        _ => None,
    }
}

/// The body of [`Fire`].
async fn fire(
    actors: &Actors,
    (id, partition): (&str, u16),
    state: Option<Loaded>,
    until: Instant,
    defer_grace_to: Option<Instant>,
    test_clock: Option<String>,
) -> (Option<Loaded>, Result<(), ActorError>) {
    let config = actors.config();
    config.metrics.timer_fired();
    let plan = |loaded: &Loaded| match decide_fire(loaded, until, defer_grace_to, &config.policy) {
        FireDecision::Commit(t) => Plan::Commit {
            transition: Some(t),
            kept: None,
            answer: (),
        },
        FireDecision::RepairTimer(due) => Plan::RepairTimer(due, ()),
    };
    let (state, result) =
        commit_with_retry(actors, (id, partition), state, test_clock.as_deref(), plan).await;
    (state, result.map(|_| ()))
}

/// What [`commit_with_retry`] is asked to do with the order it loaded.
#[allow(clippy::large_enum_variant)] // short-lived, as FireDecision
enum Plan<T> {
    /// Commit the transition (None: only the kept reply) and then answer `answer`.
    Commit {
        transition: Option<Transition>,
        /// The admin reply to keep in the same write (a fired timer keeps none).
        kept: Option<(RequestMeta, Reply)>,
        answer: T,
    },
    /// Nothing to commit: set the order's timer (see [`FireDecision::RepairTimer`]), then
    /// answer.
    RepairTimer(Option<i64>, T),
}

/// How a commit-with-retry ended.
enum Settled<T> {
    /// Committed (or nothing to commit): the answer.
    Answered(T),
    /// The request id already had a kept reply (its JSON); nothing was written.
    AlreadyReplied(String),
}

/// Loads the order (unless cached), asks `plan` what to do with it, and commits that; after a
/// version conflict it reloads and asks again, up to [`MAX_COMMIT_ATTEMPTS`] times. Returns the
/// state to cache (None = reload next time) and how it ended. `timer_clock` is the timer set
/// a timer repair of a missing order writes to (an existing order's is its own).
async fn commit_with_retry<T>(
    actors: &Actors,
    (id, partition): (&str, u16),
    state: Option<Loaded>,
    timer_clock: Option<&str>,
    mut plan: impl FnMut(&Loaded) -> Plan<T>,
) -> (Option<Loaded>, Result<Settled<T>, ActorError>) {
    let store = &actors.config().stores;
    let mut state = state;
    for _ in 0..MAX_COMMIT_ATTEMPTS {
        let loaded = match state.take() {
            Some(s) => s,
            None => match store.orders.load(id).await {
                Ok(l) => l,
                Err(e) => return (None, Err(e.into())),
            },
        };
        let (transition, kept, answer) = match plan(&loaded) {
            Plan::RepairTimer(due, answer) => {
                let Some(lease) = actors.config().ownership.token(partition) else {
                    return (None, Err(ActorError::NotOwner { partition }));
                };
                let clock = match &loaded {
                    Loaded::Present(o) => o.test_clock_id.as_deref(),
                    _ => timer_clock,
                };
                let r = store.timers.set_timer(id, clock, due, &lease).await;
                return (
                    Some(loaded),
                    r.map(|()| Settled::Answered(answer)).map_err(Into::into),
                );
            }
            Plan::Commit {
                transition,
                kept,
                answer,
            } => (transition, kept, answer),
        };
        let before = match &loaded {
            Loaded::Present(o) => Some(o.as_ref()),
            _ => None,
        };
        match commit_and_settle(actors, (id, partition), before, transition.as_ref(), kept).await {
            Ok(CommitOutcome::Committed { .. }) => {
                let next = transition.as_ref().map_or(loaded, after);
                return (Some(next), Ok(Settled::Answered(answer)));
            }
            Ok(CommitOutcome::AlreadyReplied(json)) => {
                return (None, Ok(Settled::AlreadyReplied(json)));
            }
            Ok(CommitOutcome::Fenced) => {
                return (None, Err(ActorError::NotOwner { partition }));
            }
            Ok(CommitOutcome::VersionConflict | CommitOutcome::Deleted) => {
                tracing::debug!(order_id = %id, "version conflict; reloading");
            }
            Err(e) => return (None, Err(e)),
        }
    }
    (None, Err(ActorError::Contended))
}

/// Commits a transition (and the reply to keep with it); once Redis has it, wakes the
/// scheduler for an earlier timer and settles the stats delta with the customer's actor.
///
/// A reply to keep marks an admin command, committed over the store's admin connection; a
/// fired timer goes over the scheduler's bulk connection.
async fn commit_and_settle(
    actors: &Actors,
    (id, partition): (&str, u16),
    before: Option<&Order>,
    t: Option<&Transition>,
    kept: Option<(RequestMeta, Reply)>,
) -> Result<CommitOutcome, ActorError> {
    let config = actors.config();
    let lease = config
        .ownership
        .token(partition)
        .ok_or(ActorError::NotOwner { partition })?;
    let bulk = kept.is_none();
    let delta = t.and_then(|t| stats_delta(before, t));
    let commit = commit_of(id, before, t, delta.as_ref(), kept.as_ref(), lease)?;
    let due = match &commit.write {
        OrderWrite::Save { due_ms, .. } => *due_ms,
        _ => None,
    };
    let test_clock = commit.test_clock.clone();
    // A test clock's fired timers go over the test clocks' own connection, so its advance
    // never holds up the live timers' commits.
    let outcome = match (bulk, &test_clock) {
        (true, Some(_)) => config.stores.orders.commit_test_clock(commit).await?,
        (true, None) => config.stores.orders.commit_bulk(commit).await?,
        (false, _) => config.stores.orders.commit(commit).await?,
    };
    if outcome == CommitOutcome::Fenced {
        config.ownership.fenced(partition);
        return Err(ActorError::NotOwner { partition });
    }
    if let CommitOutcome::Committed { outbox_ids } = &outcome {
        // A test clock's timers are fired by its advances, not by the scheduler's loop.
        if let (Some(due), None) = (due, &test_clock) {
            config.wake.timer_committed(due);
        }
        if let (Some(delta), Some(entry_id)) = (delta, outbox_ids.first()) {
            settle_delta(actors, delta, entry_id.clone(), !bulk).await;
        }
    }
    Ok(outcome)
}

/// Builds the commit of a transition (plus the reply to keep with it).
///
/// The order is serialized once: that JSON is both the stored order and the `entity` of the
/// change entry, which the commit script splices in after [`change_head_json`]. Every commit
/// that writes a version writes its change entry, also one without events (a silent change).
///
/// # Errors
/// [`ActorError::Encode`] when the order, an event, a delta or the reply cannot be serialized
/// (then nothing is committed).
fn commit_of(
    id: &str,
    before: Option<&Order>,
    t: Option<&Transition>,
    delta: Option<&Delta>,
    kept: Option<&(RequestMeta, Reply)>,
    lease: String,
) -> Result<Commit, ActorError> {
    let expected_version = before.map_or(0, |o| o.version);
    let change = |t: &Transition| {
        change_head_json(&t.order, &t.events)
            .map(Some)
            .map_err(ActorError::Encode)
    };
    let (write, change) = match t {
        Some(t) if t.deleted => (
            OrderWrite::Delete {
                customer_id: t.order.customer_id.clone(),
                json: stored(&t.order)?,
            },
            change(t)?,
        ),
        Some(t) if !t.events.is_empty() || t.order.version != expected_version => (
            OrderWrite::Save {
                json: stored(&t.order)?,
                version: t.order.version,
                due_ms: domain::next_due(&t.order).map(|d| to_millis(&d)),
                customer_id: t.order.customer_id.clone(),
                created_ms: to_millis(&t.order.created_date),
            },
            change(t)?,
        ),
        _ => (OrderWrite::None, None),
    };
    let reply = match kept {
        Some((request, reply)) => {
            let s = StoredReply {
                body_hash: request.body_hash.clone(),
                reply: reply.clone(),
            };
            Some((request.id.clone(), encode(&s)?))
        }
        None => None,
    };
    Ok(Commit {
        order_id: id.to_string(),
        expected_version,
        write,
        event_count: if change.is_some() {
            t.map_or(0, |t| t.events.len())
        } else {
            0
        },
        change,
        deltas: delta.map(encode).transpose()?.into_iter().collect(),
        reply,
        lease,
        test_clock: t
            .map(|t| &t.order)
            .or(before)
            .and_then(|o| o.test_clock_id.clone()),
    })
}

/// The order's stored form, also its change entry's entity (`domain::order::compact_json`).
fn stored(order: &Order) -> Result<String, ActorError> {
    domain::order::compact_json(order).map_err(ActorError::Encode)
}

fn encode<T: serde::Serialize>(value: &T) -> Result<String, ActorError> {
    serde_json::to_string(value).map_err(ActorError::Encode)
}

/// How long an admin command's reply waits for a customer partition another daemon owns to
/// apply its delta (best effort: a client then usually reads its own writes, SPEC 10).
const CUSTOMER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Hands a committed stats delta to its customer's actor (or, when another daemon owns the
/// customer's partition, to that partition's inbox), which applies it exactly once and removes
/// its outbox entry. A failure leaves the entry for the outbox sweep. An admin command
/// (`wait`) then waits up to [`CUSTOMER_WAIT`] for a relayed delta to be applied.
async fn settle_delta(actors: &Actors, delta: Delta, entry_id: String, wait: bool) {
    let (customer, order, version) = (delta.c.clone(), delta.o.clone(), delta.v);
    match actors.settle_delta(delta, entry_id).await {
        Ok(Settle::Relayed) if wait => {
            let store = &actors.config().stores;
            let deadline = tokio::time::Instant::now() + CUSTOMER_WAIT;
            while tokio::time::Instant::now() < deadline {
                match store.stats.applied_version(&customer, &order).await {
                    Ok(Some(v)) if v >= version => return,
                    Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(5)).await,
                    Err(e) => {
                        tracing::debug!(error = %e, "cannot read whether the customer applied a delta");
                        return;
                    }
                }
            }
        }
        Ok(_) => {}
        Err(e) => {
            tracing::warn!(error = %e, "stats delta not applied yet; the outbox sweep will retry");
        }
    }
}

/// The state after a committed transition.
fn after(t: &Transition) -> Loaded {
    if t.deleted {
        Loaded::Deleted
    } else {
        Loaded::Present(Box::new(t.order.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lifecycle::test_support::{at, monthly, new_order};
    use serde_json::json;

    const START: &str = "2026-01-01T00:00:00Z";

    fn request() -> RequestMeta {
        RequestMeta {
            id: "r1".into(),
            body_hash: "h".into(),
        }
    }

    #[test]
    fn a_commit_never_carries_an_empty_order() {
        let t = new_order(monthly("OFFLINE", 3, "10.00", START), at(START));
        let c = commit_of(
            "o1",
            None,
            Some(&t),
            None,
            Some(&(request(), Reply::ok(None, json!({})))),
            "d1:7".to_string(),
        )
        .unwrap();
        assert_eq!(c.lease, "d1:7", "the commit carries its fencing token");
        let OrderWrite::Save { json, .. } = &c.write else {
            panic!("a create saves the order");
        };
        let back: Order = serde_json::from_str(json).unwrap();
        assert_eq!(back, t.order);
        assert_eq!(c.expected_version, 0);
        assert_eq!(c.reply.as_ref().map(|(id, _)| id.as_str()), Some("r1"));
        let kept: StoredReply = serde_json::from_str(&c.reply.unwrap().1).unwrap();
        assert_eq!(kept.body_hash, "h");
    }
}
