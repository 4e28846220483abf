//! The registry of resident actors (orders, customers): activates an actor on first use,
//! forgets it when it passivates, and re-sends a message whose actor stopped before handling
//! it (safe: the message was never handled, and the state is in Redis).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use actix::dev::ToEnvelope;
use actix::prelude::*;

use super::ActorError;

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

    /// Forgets every actor whose id `keep` refuses (it passivates on its own).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        let mut actors = self.actors.lock().unwrap_or_else(|e| e.into_inner());
        actors.retain(|id, _| keep(id));
    }

    /// Number of resident actors.
    pub fn resident(&self) -> usize {
        self.actors.lock().map(|a| a.len()).unwrap_or(0)
    }
}

/// Sends the message `msg()` builds to the actor of `id`, activating it (and re-sending a
/// fresh one each time the actor stopped before handling it) as needed.
pub(super) async fn deliver<A, M>(
    registry: &Registry<A>,
    kind: &'static str,
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
            Err(e) => {
                return Err(ActorError::Mailbox {
                    kind,
                    id: id.to_string(),
                    source: Some(e),
                })
            }
        }
    }
    // The actor kept stopping before it handled the message.
    Err(ActorError::Mailbox {
        kind,
        id: id.to_string(),
        source: None,
    })
}
