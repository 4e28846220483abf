//! The CustomerStats actor (SPEC section 2): one per customer, virtual like order actors. It
//! applies the stats deltas order actors send it (each exactly once, by order version), answers
//! getCustomerStats, and rebuilds the figures from the orders that exist
//! (recomputeCustomerStats, and the reconcile cron job).

use std::time::Instant as WallInstant;

use actix::prelude::*;
use serde_json::{json, Value};

use super::ActorStores;
use super::{passivate_when_idle, ActorError, Actors};
use crate::domain::stats::{contribution, Figures};
use crate::store::stats::{Applied, Delta};
use crate::store::StoreError;

/// Applies one order's contribution (fenced by the customer partition's lease), then removes
/// the entry that carried it.
#[derive(Message, Clone)]
#[rtype(result = "Result<(), ActorError>")]
pub struct ApplyDelta {
    pub delta: Delta,
    /// Where it came from.
    pub from: DeltaSource,
}

/// The stream entry a delta was read from (removed once it is applied).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeltaSource {
    /// The order partition's outbox (this daemon owns both partitions).
    Outbox(String),
    /// The customer partition's inbox (relayed by the order's owner).
    Inbox(String),
}

/// Reads the customer's figures (the getCustomerStats result).
#[derive(Message, Clone)]
#[rtype(result = "Result<Value, ActorError>")]
pub struct GetStats;

/// Rebuilds the figures from the orders that exist; `{stats, differences}`.
#[derive(Message, Clone)]
#[rtype(result = "Result<Value, ActorError>")]
pub struct Recompute;

/// One customer's statistics actor.
pub struct CustomerStatsActor {
    id: String,
    generation: u64,
    actors: Actors,
    last_used: WallInstant,
}

impl CustomerStatsActor {
    /// A new actor for customer `id`.
    pub(super) fn new(id: String, generation: u64, actors: Actors) -> Self {
        CustomerStatsActor {
            id,
            generation,
            actors,
            last_used: WallInstant::now(),
        }
    }
}

impl Actor for CustomerStatsActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        let idle = self.actors.config().idle_passivation;
        passivate_when_idle(ctx, idle, |act: &Self| act.last_used);
    }

    fn stopped(&mut self, _ctx: &mut Self::Context) {
        self.actors
            .shared
            .customers
            .remove(&self.id, self.generation);
    }
}

impl Handler<ApplyDelta> for CustomerStatsActor {
    type Result = AtomicResponse<Self, Result<(), ActorError>>;

    fn handle(&mut self, msg: ApplyDelta, _ctx: &mut Self::Context) -> Self::Result {
        self.last_used = WallInstant::now();
        let actors = self.actors.clone();
        AtomicResponse::new(Box::pin(
            async move {
                let config = actors.config();
                let store = &config.stores;
                let partition = store.keys.partition(&msg.delta.c);
                let token = config
                    .ownership
                    .token(partition)
                    .ok_or(ActorError::NotOwner { partition })?;
                let inbox_entry = match &msg.from {
                    DeltaSource::Inbox(entry) => Some(entry.as_str()),
                    DeltaSource::Outbox(_) => None,
                };
                // An inbox entry goes in the same script as the apply.
                let applied = match store
                    .stats
                    .apply_delta(&msg.delta, &token, inbox_entry)
                    .await
                {
                    Err(StoreError::Fenced { partition }) => {
                        config.ownership.fenced(partition);
                        return Err(ActorError::NotOwner { partition });
                    }
                    other => other?,
                };
                if applied == Applied::Changed {
                    config.metrics.stats_delta_applied();
                }
                // An outbox entry is in the order's partition (another slot): removed after,
                // once the apply is confirmed (redis.wait_replicas; on a cluster the two
                // partitions may be on two masters, and a failover of the customer's must not
                // lose an apply whose outbox entry is gone).
                if let DeltaSource::Outbox(entry) = &msg.from {
                    match store.stats.confirmer().confirm(partition, &token).await {
                        Err(StoreError::Fenced { partition }) => {
                            config.ownership.fenced(partition);
                            return Err(ActorError::NotOwner { partition });
                        }
                        other => other?,
                    }
                    let order_partition = store.keys.partition(&msg.delta.o);
                    store
                        .stats
                        .remove_outbox_entry(order_partition, entry)
                        .await?;
                }
                Ok(())
            }
            .into_actor(self),
        ))
    }
}

impl Handler<GetStats> for CustomerStatsActor {
    type Result = AtomicResponse<Self, Result<Value, ActorError>>;

    fn handle(&mut self, _msg: GetStats, _ctx: &mut Self::Context) -> Self::Result {
        self.last_used = WallInstant::now();
        let (store, id) = (self.actors.config().stores.clone(), self.id.clone());
        AtomicResponse::new(Box::pin(
            async move { Ok(store.stats.figures(&id).await?.to_json(&id)) }.into_actor(self),
        ))
    }
}

impl Handler<Recompute> for CustomerStatsActor {
    type Result = AtomicResponse<Self, Result<Value, ActorError>>;

    fn handle(&mut self, _msg: Recompute, _ctx: &mut Self::Context) -> Self::Result {
        self.last_used = WallInstant::now();
        let (store, id) = (self.actors.config().stores.clone(), self.id.clone());
        let partition = store.keys.partition(&id);
        let owned = self.actors.config().ownership.owns(partition);
        AtomicResponse::new(Box::pin(
            async move {
                if !owned {
                    return Err(ActorError::NotOwner { partition });
                }
                recompute(&store, &id).await
            }
            .into_actor(self),
        ))
    }
}

/// Rebuilds a customer's figures from the orders that exist and reports what differed.
async fn recompute(store: &ActorStores, customer_id: &str) -> Result<Value, ActorError> {
    let ids = store.stats.customer_order_ids(customer_id).await?;
    let orders = store.orders.load_many(&ids).await?;
    let orders: Vec<_> = orders
        .into_iter()
        .filter(|o| o.customer_id == customer_id)
        .collect();
    let gone: Vec<String> = ids
        .iter()
        .filter(|id| !orders.iter().any(|o| &o.id == *id))
        .cloned()
        .collect();
    let recomputed = Figures::of(&orders);
    let kept = store.stats.figures(customer_id).await?;
    let differences = kept.differences(&recomputed, customer_id);
    let contributions: Vec<_> = orders
        .iter()
        .map(|o| (o.id.clone(), contribution(o)))
        .collect();
    store
        .stats
        .rewrite_figures(customer_id, &contributions, &recomputed)
        .await?;
    store
        .stats
        .forget_customer_orders(customer_id, &gone)
        .await?;
    Ok(json!({"stats": recomputed.to_json(customer_id), "differences": differences}))
}
