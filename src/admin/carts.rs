//! Carts on the admin side: routing updateOrder to its order's actor (resolving a cart's name to
//! its order id first), keeping cart names unique per customer, and turning config into the
//! domain's [`BasketRules`]. The update itself runs in the order's actor, serialized with
//! everything else that happens to the order.
//!
//! A cart is found by name through its claim (`{pC}:cart:<customer>:<name>`), else by scanning
//! the customer's order index (newest first). Names are claimed in Redis (SET NX, so two
//! daemons cannot both take one; a claim whose order no longer is a cart of that name is taken
//! over), under a per-customer lock of this daemon held until the create or rename is
//! committed. An updateOrder by name is resolved by the customer's owner, which records the
//! resolution per request id and forwards the request to the order's owner when that is
//! another daemon (SPEC 10).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::reply::{AdminError, Outcome};
use super::AdminState;
use super::AdminStores;
use crate::actors::order::{Execute, OrderOp, RequestMeta};
use crate::actors::ActorError;
use crate::domain::basket::{not_a_cart, Stage, StagedError, Target, UpdateOrder};
use crate::domain::command::NewOrder;
use crate::domain::order::{Order, OrderStatus};
use crate::domain::DomainError;
use crate::store::carts::NameClaim;
use crate::store::{Loaded, StoreError};
use crate::wire::Request;

/// How many order ids one scan of a customer's index reads per round trip.
const SCAN_CHUNK: usize = 200;

fn staged(stage: Stage, error: DomainError) -> AdminError {
    AdminError::Staged(StagedError { stage, error })
}

fn at_stage(stage: Stage) -> impl Fn(StoreError) -> AdminError {
    move |source| AdminError::Store {
        source,
        stage: Some(stage),
    }
}

/// updateOrder: finds the order (a cart by name), checks a new cart name is free, and runs the
/// pipeline in the order's actor — or, when another daemon owns the order, forwards the
/// request to it with the resolved order id. Errors carry their stage.
///
/// # Errors
/// [`AdminError`] when the cart cannot be found, the new name is taken, or Redis fails.
pub async fn update_order(
    state: &AdminState,
    update: Box<UpdateOrder>,
    resolved: Option<String>,
    request: RequestMeta,
    raw: &Request,
) -> Result<Outcome, AdminError> {
    let store = &state.stores;
    let customer = update.criteria.customer_id.clone();
    let order_id = match (&update.criteria.target, resolved) {
        (Target::Id(id), _) => id.clone(),
        (Target::Name(_), Some(id)) => id,
        (Target::Name(name), None) => {
            let found = resolve(state, &customer, name, &request.id).await?;
            if !state.ownership.owns(store.keys().partition(&found)) {
                let mut forwarded = raw.clone();
                forwarded.resolved_order_id = Some(found);
                let json = serde_json::to_string(&forwarded).map_err(|e| {
                    staged(Stage::Load, DomainError::invalid("request", e.to_string()))
                })?;
                store
                    .commands
                    .publish(&store.keys().admin_keys().forward_channel(), &json)
                    .await
                    .map_err(at_stage(Stage::Load))?;
                return Ok(Outcome::Forwarded);
            }
            found
        }
    };
    let _names = match &update.fields.new_name {
        Some(new_name) => {
            let lock = NameLock::acquire(&state.cart_names, &customer).await;
            let other = claim_name(store, &customer, new_name, &order_id)
                .await
                .map_err(at_stage(Stage::Fields))?;
            if let Some(other) = other {
                return Err(staged(
                    Stage::Fields,
                    name_taken(&customer, new_name, &other),
                ));
            }
            Some(lock)
        }
        None => None,
    };
    let op = OrderOp::Update {
        update,
        rules: Arc::clone(&state.config.basket_rules),
    };
    let reply = state
        .actors
        .execute(&order_id, Execute { op, request })
        .await
        .map_err(|source| AdminError::Actor {
            source,
            stage: Some(Stage::Commit),
        })?;
    Ok(Outcome::Kept(reply))
}

/// The order a cart name of `customer` names for request `request_id`: recorded once per
/// request id (so a retry reaches the same order whatever happened to the names meanwhile).
async fn resolve(
    state: &AdminState,
    customer: &str,
    name: &str,
    request_id: &str,
) -> Result<String, AdminError> {
    let store = &state.stores;
    let partition = store.keys().partition(customer);
    if let Some(id) = store
        .carts
        .resolution(partition, request_id)
        .await
        .map_err(at_stage(Stage::Load))?
    {
        return Ok(id);
    }
    let found = find_cart(store, customer, name)
        .await
        .map_err(at_stage(Stage::Load))?
        .map_err(AdminError::Staged)?;
    let token = state.ownership.token(partition).ok_or(AdminError::Actor {
        source: ActorError::NotOwner { partition },
        stage: Some(Stage::Load),
    })?;
    let ttl = state.config.reply_retention.as_secs().max(1);
    store
        .carts
        .record_resolution(customer, request_id, &found, ttl, &token)
        .await
        .map_err(at_stage(Stage::Load))
}

/// createOrder of a named cart: holds the customer's cart-name lock (to be kept until the
/// create is committed) and claims the name, refusing one another cart of the customer has
/// (CONFLICT). A create retried with its client-chosen `orderId` finds its own claim, which
/// does not count. `None` for an unnamed order.
///
/// # Errors
/// [`AdminError`] instead of creating the order.
pub async fn claim_cart_name(
    state: &AdminState,
    new: &NewOrder,
) -> Result<Option<NameLock>, AdminError> {
    let Some(name) = &new.name else {
        return Ok(None);
    };
    let lock = NameLock::acquire(&state.cart_names, &new.customer_id).await;
    match claim_name(&state.stores, &new.customer_id, name, &new.id).await? {
        None => Ok(Some(lock)),
        Some(other) => Err(name_taken(&new.customer_id, name, &other).into()),
    }
}

/// Claims `customer`'s cart name `name` for `order_id`: Ok(Some(other)) when another cart
/// has it. A claim whose order is no longer a cart of that name is taken over; carts made
/// before names were claimed are found in the customer's index.
async fn claim_name(
    store: &AdminStores,
    customer: &str,
    name: &str,
    order_id: &str,
) -> Result<Option<String>, StoreError> {
    if let Some(other) = cart_named(store, customer, name, order_id).await? {
        return Ok(Some(other));
    }
    let mut stale: Option<String> = None;
    for _ in 0..3 {
        let Some(holder) = store
            .carts
            .claim_cart_name(customer, name, order_id, stale.as_deref())
            .await?
        else {
            return Ok(None);
        };
        if holds_name(store, customer, name, &holder).await? {
            return Ok(Some(holder.order_id));
        }
        stale = Some(holder.order_id);
    }
    Ok(stale)
}

/// How long a claim of an order that does not exist yet stands (its create is under way on
/// some daemon); after that it is taken over.
const CLAIM_GRACE_MS: i64 = 30_000;

/// Whether a claim still holds: its order is a cart (DRAFT) of `customer` named `name`, or
/// does not exist yet and was claimed less than [`CLAIM_GRACE_MS`] ago.
async fn holds_name(
    store: &AdminStores,
    customer: &str,
    name: &str,
    claim: &NameClaim,
) -> Result<bool, StoreError> {
    Ok(match store.orders.load(&claim.order_id).await? {
        Loaded::Present(o) => {
            o.customer_id == customer
                && o.status == OrderStatus::Draft
                && o.name.as_deref() == Some(name)
        }
        Loaded::Missing => chrono::Utc::now().timestamp_millis() - claim.since_ms < CLAIM_GRACE_MS,
        Loaded::Deleted => false,
    })
}

/// Gives the name back when the create that claimed it was refused (and no order of that id
/// exists: a refused duplicate create leaves the existing cart's claim alone).
pub async fn release_cart_name(state: &AdminState, new: &NewOrder) {
    let store = &state.stores;
    if let Some(name) = &new.name {
        if !matches!(store.orders.load(&new.id).await, Ok(Loaded::Missing)) {
            return;
        }
        if let Err(e) = store
            .carts
            .release_cart_name(&new.customer_id, name, &new.id)
            .await
        {
            tracing::warn!(error = %e, order_id = %new.id, "cannot release a cart name claim; it lapses on its own");
        }
    }
}

fn name_taken(customer: &str, name: &str, other: &str) -> DomainError {
    DomainError::Conflict(format!(
        "customer {customer} already has a cart named '{name}' (order {other})"
    ))
}

/// The customer's orders named `name`, newest first.
async fn orders_named(
    store: &AdminStores,
    customer: &str,
    name: &str,
) -> Result<Vec<Order>, StoreError> {
    let mut out = Vec::new();
    let mut position = 0;
    loop {
        let ids = store
            .orders
            .order_ids_page(customer, position, SCAN_CHUNK)
            .await?;
        let read = ids.len();
        let orders = store.orders.load_many(&ids).await?;
        out.extend(
            orders
                .into_iter()
                .filter(|o| o.name.as_deref() == Some(name)),
        );
        if read < SCAN_CHUNK {
            return Ok(out);
        }
        position += read;
    }
}

/// The id of another cart (DRAFT order) of the customer named `name`, if any.
async fn cart_named(
    store: &AdminStores,
    customer: &str,
    name: &str,
    except: &str,
) -> Result<Option<String>, StoreError> {
    Ok(orders_named(store, customer, name)
        .await?
        .into_iter()
        .find(|o| o.status == OrderStatus::Draft && o.id != except)
        .map(|o| o.id))
}

/// The order id of the customer's cart named `name`. A name only finds carts: a purchased
/// order of that name is INVALID_REQUEST, no order at all NOT_FOUND (both at stage `load`).
async fn find_cart(
    store: &AdminStores,
    customer: &str,
    name: &str,
) -> Result<Result<String, StagedError>, StoreError> {
    if let Some(holder) = store.carts.cart_name_holder(customer, name).await? {
        // The claim finds a cart the customer's index may not list yet (its creation's
        // statistics are applied by another daemon).
        let is_cart = matches!(store.orders.load(&holder.order_id).await?, Loaded::Present(o)
            if o.customer_id == customer && o.status == OrderStatus::Draft && o.name.as_deref() == Some(name));
        if is_cart
            && cart_named(store, customer, name, &holder.order_id)
                .await?
                .is_none()
        {
            return Ok(Ok(holder.order_id));
        }
    }
    let named = orders_named(store, customer, name).await?;
    let carts: Vec<&Order> = named
        .iter()
        .filter(|o| o.status == OrderStatus::Draft)
        .collect();
    let error = match (carts.as_slice(), named.first()) {
        ([one], _) => return Ok(Ok(one.id.clone())),
        ([], Some(bought)) => not_a_cart(bought, name),
        ([], None) => {
            DomainError::NotFound(format!("customer {customer} has no cart named '{name}'"))
        }
        (many, _) => DomainError::Conflict(format!(
            "customer {customer} has {} carts named '{name}'; find one by id",
            many.len()
        )),
    };
    Ok(Err(StagedError {
        stage: Stage::Load,
        error,
    }))
}

/// Per-customer cart-name locks of one daemon (held by the [`AdminState`]). Entries are dropped
/// when their last holder lets go.
#[derive(Default)]
pub struct CartNameLocks {
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
}

/// Holds a customer's cart names: while it lives, no other create or rename of one of the
/// customer's carts runs in this daemon.
pub struct NameLock {
    locks: Arc<Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>>,
    customer: String,
    guard: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl NameLock {
    async fn acquire(names: &CartNameLocks, customer: &str) -> NameLock {
        let locks = Arc::clone(&names.locks);
        let mutex = {
            let mut held = locks.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(held.entry(customer.to_string()).or_default())
        };
        let guard = mutex.lock_owned().await;
        NameLock {
            locks,
            customer: customer.to_string(),
            guard: Some(guard),
        }
    }
}

impl Drop for NameLock {
    fn drop(&mut self) {
        drop(self.guard.take());
        let mut held = self.locks.lock().unwrap_or_else(PoisonError::into_inner);
        if held
            .get(&self.customer)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            held.remove(&self.customer);
        }
    }
}
