//! The registry of resident order actors: activates an actor on first use, forgets it when it
//! passivates, and retries a message whose actor stopped before handling it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use actix::prelude::*;

use super::order::{Execute, Fire, OrderActor};
use super::ActorError;
use crate::admin::protocol::Reply;
use crate::daemon::Daemon;
use crate::domain::Instant;

/// How often a message is re-sent to a fresh actor after its actor stopped under it.
const MAX_DELIVERY_ATTEMPTS: usize = 5;

/// Resident order actors by order id (with the generation that tells restarts apart).
#[derive(Default)]
pub struct Registry {
    actors: Mutex<HashMap<String, (Addr<OrderActor>, u64)>>,
    generation: AtomicU64,
}

impl Registry {
    /// The order's actor, started (not yet loaded) if it is not resident.
    pub fn get_or_start(&self, daemon: &Arc<Daemon>, id: &str) -> (Addr<OrderActor>, u64) {
        let mut actors = self.actors.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((addr, generation)) = actors.get(id) {
            if addr.connected() {
                return (addr.clone(), *generation);
            }
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let addr = OrderActor::new(id.to_string(), generation, Arc::clone(daemon)).start();
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

/// Sends an admin operation to the order's actor, activating it as needed.
///
/// # Errors
/// [`ActorError`] when the actor cannot be reached or its commit fails.
pub async fn execute(daemon: &Arc<Daemon>, id: &str, msg: Execute) -> Result<Reply, ActorError> {
    for _ in 0..MAX_DELIVERY_ATTEMPTS {
        let (addr, generation) = daemon.registry.get_or_start(daemon, id);
        match addr.send(msg.clone()).await {
            Ok(r) => return r,
            Err(MailboxError::Closed) => daemon.registry.remove(id, generation),
            Err(e) => return Err(ActorError::Mailbox(e.to_string())),
        }
    }
    Err(ActorError::Mailbox(format!(
        "order {id}: actor kept stopping"
    )))
}

/// Fires the order's due changes up to `until`.
///
/// # Errors
/// [`ActorError`] when the actor cannot be reached or its commit fails.
pub async fn fire(daemon: &Arc<Daemon>, id: &str, until: Instant, defer_grace_to: Option<Instant>) -> Result<(), ActorError> {
    for _ in 0..MAX_DELIVERY_ATTEMPTS {
        let (addr, generation) = daemon.registry.get_or_start(daemon, id);
        match addr.send(Fire { until, defer_grace_to }).await {
            Ok(r) => return r,
            Err(MailboxError::Closed) => daemon.registry.remove(id, generation),
            Err(e) => return Err(ActorError::Mailbox(e.to_string())),
        }
    }
    Err(ActorError::Mailbox(format!(
        "order {id}: actor kept stopping"
    )))
}
