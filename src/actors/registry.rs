//! The registry of resident actors (orders, customers): activates an actor on first use,
//! forgets it when it passivates, and re-sends a message whose actor stopped before handling
//! it (safe: the message was never handled, and the state is in Redis).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix::dev::ToEnvelope;
use actix::prelude::*;

use super::customer::{ApplyDelta, CustomerStatsActor};
use super::order::{Execute, Fire, OrderActor};
use super::ActorError;
use crate::admin::protocol::Reply;
use crate::daemon::Daemon;
use crate::domain::{Instant, Order};

/// How often a message is re-sent to a fresh actor after its actor stopped under it.
const MAX_DELIVERY_ATTEMPTS: usize = 5;

/// Resident actors of one kind by id (with the generation that tells restarts apart).
pub struct Registry<A: Actor> {
    actors: Mutex<HashMap<String, (Addr<A>, u64)>>,
    generation: AtomicU64,
}

impl<A: Actor> Default for Registry<A> {
    fn default() -> Self {
        Registry {
            actors: Mutex::new(HashMap::new()),
            generation: AtomicU64::new(0),
        }
    }
}

impl<A: Actor> Registry<A> {
    /// The actor for `id`, started with `start(generation)` if it is not resident.
    pub fn get_or_start(&self, id: &str, start: impl FnOnce(u64) -> Addr<A>) -> (Addr<A>, u64) {
        let mut actors = self.actors.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((addr, generation)) = actors.get(id) {
            if addr.connected() {
                return (addr.clone(), *generation);
            }
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let addr = start(generation);
        actors.insert(id.to_string(), (addr.clone(), generation));
        (addr, generation)
    }

    /// Forgets the actor of `id` if it is still the one of `generation`.
    pub fn remove(&self, id: &str, generation: u64) {
        let mut actors = self.actors.lock().unwrap_or_else(|e| e.into_inner());
        if actors.get(id).is_some_and(|(_, g)| *g == generation) {
            actors.remove(id);
        }
    }

    /// Number of resident actors.
    pub fn resident(&self) -> usize {
        self.actors.lock().map(|a| a.len()).unwrap_or(0)
    }
}

/// Sends the message `msg()` builds to the actor of `id`, activating it (and re-sending a
/// fresh one each time the actor stopped before handling it) as needed.
async fn deliver<A, M>(
    registry: &Registry<A>,
    id: &str,
    start: impl Fn(u64) -> Addr<A>,
    mut msg: impl FnMut() -> M,
) -> Result<M::Result, ActorError>
where
    A: Actor + Handler<M>,
    A::Context: ToEnvelope<A, M>,
    M: Message + Send + 'static,
    M::Result: Send,
{
    for _ in 0..MAX_DELIVERY_ATTEMPTS {
        let (addr, generation) = registry.get_or_start(id, &start);
        match addr.send(msg()).await {
            Ok(r) => return Ok(r),
            Err(MailboxError::Closed) => registry.remove(id, generation),
            Err(e) => return Err(ActorError::Mailbox(e.to_string())),
        }
    }
    Err(ActorError::Mailbox(format!("{id}: actor kept stopping")))
}

fn order_actor(daemon: &Arc<Daemon>, id: &str) -> impl Fn(u64) -> Addr<OrderActor> {
    let (daemon, id) = (Arc::clone(daemon), id.to_string());
    move |generation| OrderActor::new(id.clone(), generation, Arc::clone(&daemon)).start()
}

fn customer_actor(daemon: &Arc<Daemon>, id: &str) -> impl Fn(u64) -> Addr<CustomerStatsActor> {
    let (daemon, id) = (Arc::clone(daemon), id.to_string());
    move |generation| CustomerStatsActor::new(id.clone(), generation, Arc::clone(&daemon)).start()
}

/// Sends an admin operation to the order's actor.
///
/// # Errors
/// [`ActorError`] when the actor cannot be reached or its commit fails.
pub async fn execute(daemon: &Arc<Daemon>, id: &str, msg: Execute) -> Result<Reply, ActorError> {
    deliver(&daemon.registry, id, order_actor(daemon, id), || {
        msg.clone()
    })
    .await?
}

/// Fires the order's due changes up to `until`.
///
/// # Errors
/// [`ActorError`] when the actor cannot be reached or its commit fails.
pub async fn fire(
    daemon: &Arc<Daemon>,
    id: &str,
    until: Instant,
    defer_grace_to: Option<Instant>,
    preloaded: Option<Box<Order>>,
) -> Result<(), ActorError> {
    let mut preloaded = preloaded;
    let msg = move || Fire {
        until,
        defer_grace_to,
        preloaded: preloaded.take(),
    };
    deliver(&daemon.registry, id, order_actor(daemon, id), msg).await?
}

/// Sends any message to a customer's CustomerStats actor.
///
/// # Errors
/// [`ActorError`] when the actor cannot be reached.
pub async fn to_customer<M>(
    daemon: &Arc<Daemon>,
    customer_id: &str,
    msg: M,
) -> Result<M::Result, ActorError>
where
    CustomerStatsActor: Handler<M>,
    M: Message + Clone + Send + 'static,
    M::Result: Send,
{
    deliver(
        &daemon.customers,
        customer_id,
        customer_actor(daemon, customer_id),
        || msg.clone(),
    )
    .await
}

/// Applies one stats delta through the customer's actor and acknowledges its outbox entry.
///
/// # Errors
/// [`ActorError`] when the actor or Redis fails (the outbox entry stays for the sweep).
pub async fn apply_delta(daemon: &Arc<Daemon>, msg: ApplyDelta) -> Result<(), ActorError> {
    let customer = msg.delta.c.clone();
    to_customer(daemon, &customer, msg).await?
}
