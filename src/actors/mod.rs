//! Virtual actors: one [`order::OrderActor`] per order and one [`customer::CustomerStatsActor`]
//! per customer, activated when a message or a due timer needs them and passivated when idle.
//! State lives in Redis; an actor only caches it and serializes everything that happens to its
//! order (or customer).
//!
//! Everything outside reaches them through the [`Actors`] handle: it holds the registries and
//! exactly what an actor uses (store, clock, lifecycle policy, metrics, idle time, the
//! scheduler's timer wake-up), nothing else.

pub mod customer;
pub mod order;
mod registry;

use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::clock::{Clock, TimerWake};
use crate::domain::{Instant, Order, Policy};
use crate::metrics::Metrics;
use crate::ownership::Ownership;
use crate::store::orders::OrderStore;
use crate::store::stats::Delta;
use crate::store::stats::StatsStore;
use crate::store::test_clock::TestClockStore;
use crate::store::timers::TimerStore;
use crate::store::{Keys, Store, StoreError};
use crate::wire::Reply;
use customer::{ApplyDelta, CustomerStatsActor, DeltaSource};
use order::{Execute, Fire, OrderActor};
use registry::{deliver, Registry};

/// Why an actor could not do what it was asked (transient: reply INTERNAL, retry).
#[derive(Debug, thiserror::Error)]
pub enum ActorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the {kind} actor of {id} is unavailable")]
    Mailbox {
        kind: &'static str,
        id: String,
        #[source]
        source: Option<MailboxError>,
    },
    #[error("the order changed concurrently too many times; retry")]
    Contended,
    /// This daemon does not hold the partition's lease (any more): another daemon writes there.
    #[error("this daemon does not hold partition {partition}; retry (its owner answers)")]
    NotOwner { partition: u16 },
    /// Serializing the order, an event or a reply failed; nothing was committed.
    #[error("cannot encode the commit")]
    Encode(#[source] serde_json::Error),
}

/// The parts of Redis the actors use, each a narrow handle.
#[derive(Clone)]
pub struct ActorStores {
    pub keys: Keys,
    pub orders: OrderStore,
    pub timers: TimerStore,
    pub stats: StatsStore,
    pub test_clocks: TestClockStore,
}

impl ActorStores {
    /// The handles, made from the daemon's store at start-up.
    pub fn of(store: &Store) -> ActorStores {
        ActorStores {
            keys: store.keys().clone(),
            orders: store.order_store(),
            timers: store.timer_store(),
            stats: store.stats_store(),
            test_clocks: store.test_clock_store(),
        }
    }
}

/// What the actors are built from (see [`Actors::new`]).
pub struct ActorsConfig {
    pub stores: ActorStores,
    pub clock: Clock,
    pub policy: Policy,
    pub metrics: Arc<Metrics>,
    /// An actor used by messages stops after this long without one.
    pub idle_passivation: Duration,
    /// Told about every timer a commit writes.
    pub wake: TimerWake,
    /// The leases this daemon holds: every commit carries its partition's fencing token.
    pub ownership: Ownership,
}

/// The way to the order and customer actors. Cheap to clone (one shared inner value).
#[derive(Clone)]
pub struct Actors {
    shared: Arc<Shared>,
}

/// What every actor of this daemon shares.
struct Shared {
    config: ActorsConfig,
    orders: Registry<OrderActor>,
    customers: Registry<CustomerStatsActor>,
}

/// How a delta taken from an outbox was settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Applied to the customer's statistics by this daemon.
    Applied,
    /// Handed to the customer partition's inbox; its owner applies it.
    Relayed,
}

/// The scheduler's request to fire one order (see [`Actors::fire`]).
pub struct FireOrder {
    /// Fire every change due at or before this instant.
    pub until: Instant,
    /// System-clock start-up only: overdue grace expiries move to this instant.
    pub defer_grace_to: Option<Instant>,
    /// The order as the scheduler read it in bulk for this round (saves a round trip for an
    /// actor that is not resident; a stale copy fails its version check and is reloaded).
    pub preloaded: Option<Box<Order>>,
    /// The test clock whose timer set this timer was read from (None: the live timers).
    pub test_clock: Option<String>,
}

impl Actors {
    /// A handle with no resident actors yet.
    pub fn new(config: ActorsConfig) -> Actors {
        Actors {
            shared: Arc::new(Shared {
                config,
                orders: Registry::default(),
                customers: Registry::default(),
            }),
        }
    }

    /// The daemon's figures the actors update.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.config().metrics
    }

    /// The lifecycle rules orders run by (previews compute with the same).
    pub fn policy(&self) -> &Policy {
        &self.shared.config.policy
    }

    fn config(&self) -> &ActorsConfig {
        &self.shared.config
    }

    /// Runs an admin operation in the order's actor; its reply is already kept in Redis.
    ///
    /// # Errors
    /// [`ActorError`] when the actor cannot be reached or its commit fails.
    pub async fn execute(&self, order_id: &str, msg: Execute) -> Result<Reply, ActorError> {
        let start = self.order_actor(order_id);
        deliver(&self.shared.orders, "order", order_id, start, || {
            msg.clone()
        })
        .await?
    }

    /// Fires the order's due changes.
    ///
    /// # Errors
    /// [`ActorError`] when the actor cannot be reached or its commit fails.
    pub async fn fire(&self, order_id: &str, fire: FireOrder) -> Result<(), ActorError> {
        let FireOrder {
            until,
            defer_grace_to,
            mut preloaded,
            test_clock,
        } = fire;
        let msg = move || Fire {
            until,
            defer_grace_to,
            preloaded: preloaded.take(),
            test_clock: test_clock.clone(),
        };
        let start = self.order_actor(order_id);
        deliver(&self.shared.orders, "order", order_id, start, msg).await?
    }

    /// Sends any message to a customer's CustomerStats actor.
    ///
    /// # Errors
    /// [`ActorError`] when the actor cannot be reached.
    pub async fn to_customer<M>(&self, customer_id: &str, msg: M) -> Result<M::Result, ActorError>
    where
        CustomerStatsActor: Handler<M>,
        M: Message + Clone + Send + 'static,
        M::Result: Send,
    {
        let start = self.customer_actor(customer_id);
        let registry = &self.shared.customers;
        deliver(registry, "customer", customer_id, start, || msg.clone()).await
    }

    /// Applies one stats delta through its customer's actor and removes the entry that
    /// carried it.
    ///
    /// # Errors
    /// [`ActorError`] when the actor or Redis fails (the entry stays for the next sweep).
    pub async fn apply_delta(&self, msg: ApplyDelta) -> Result<(), ActorError> {
        let customer = msg.delta.c.clone();
        self.to_customer(&customer, msg).await?
    }

    /// Settles a delta taken from an order partition's outbox: applied here when this daemon
    /// owns the customer's partition too, else relayed to that partition's inbox for its
    /// owner (SPEC 10). Returns how it went.
    ///
    /// # Errors
    /// [`ActorError`] when the actor or Redis fails (the entry stays for the next sweep).
    pub async fn settle_delta(
        &self,
        delta: Delta,
        outbox_entry: String,
    ) -> Result<Settle, ActorError> {
        let config = self.config();
        let customer_partition = config.stores.keys.partition(&delta.c);
        if config.ownership.owns(customer_partition) {
            let from = DeltaSource::Outbox(outbox_entry);
            self.apply_delta(ApplyDelta { delta, from }).await?;
            return Ok(Settle::Applied);
        }
        config
            .stores
            .stats
            .relay_delta(&delta, &outbox_entry)
            .await?;
        Ok(Settle::Relayed)
    }

    /// How many order actors are resident.
    pub fn resident_orders(&self) -> usize {
        self.shared.orders.resident()
    }

    /// Forgets the resident actors of partitions this daemon lost: a later message starts a
    /// fresh actor that loads the order from Redis (what the new owner wrote). An actor still
    /// working finds its commits fenced.
    pub fn forget_partitions(&self, lost: &[u16]) {
        if lost.is_empty() {
            return;
        }
        let keys = self.config().stores.keys.clone();
        self.shared
            .orders
            .retain(|id| !lost.contains(&keys.partition(id)));
    }

    fn order_actor(&self, id: &str) -> impl Fn(u64) -> Addr<OrderActor> {
        let (actors, id) = (self.clone(), id.to_string());
        move |generation| OrderActor::new(id.clone(), generation, actors.clone()).start()
    }

    fn customer_actor(&self, id: &str) -> impl Fn(u64) -> Addr<CustomerStatsActor> {
        let (actors, id) = (self.clone(), id.to_string());
        move |generation| CustomerStatsActor::new(id.clone(), generation, actors.clone()).start()
    }
}

/// Stops an actor once it has been idle for `idle` (checked every half of it).
fn passivate_when_idle<A>(
    ctx: &mut Context<A>,
    idle: Duration,
    last_used: fn(&A) -> std::time::Instant,
) where
    A: Actor<Context = Context<A>>,
{
    let every = (idle / 2).max(Duration::from_millis(20));
    ctx.run_interval(every, move |act, ctx| {
        if last_used(act).elapsed() >= idle {
            ctx.stop();
        }
    });
}
