//! Carts on the admin side: routing updateOrder to its order's actor (resolving a cart's name to
//! its order id first), keeping cart names unique per customer, and turning config into the
//! domain's [`BasketRules`]. The update itself runs in the order's actor, serialized with
//! everything else that happens to the order.
//!
//! A cart is found by name by scanning the customer's order index (newest first); carts are few
//! per customer, and nothing has to be kept in step with the commit script. Names are claimed
//! under a per-customer lock held until the create or rename is committed, so two requests of
//! one daemon cannot both take a name.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use super::reply::AdminError;
use super::AdminState;
use crate::actors::order::{Execute, OrderOp, RequestMeta};
use crate::domain::basket::{not_a_cart, Stage, StagedError, Target, UpdateOrder};
use crate::domain::command::NewOrder;
use crate::domain::order::{Order, OrderStatus};
use crate::domain::DomainError;
use crate::store::{Store, StoreError};
use crate::wire::Reply;

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
/// pipeline in the order's actor. Errors carry their stage.
///
/// # Errors
/// [`AdminError`] when the cart cannot be found, the new name is taken, or Redis fails.
pub async fn update_order(
    state: &AdminState,
    update: Box<UpdateOrder>,
    request: RequestMeta,
) -> Result<Reply, AdminError> {
    let store = &state.store;
    let customer = update.criteria.customer_id.clone();
    let _names = match update.fields.new_name {
        Some(_) => Some(NameLock::acquire(&state.cart_names, &customer).await),
        None => None,
    };
    let order_id = match &update.criteria.target {
        Target::Id(id) => id.clone(),
        Target::Name(name) => find_cart(store, &customer, name)
            .await
            .map_err(at_stage(Stage::Load))?
            .map_err(AdminError::Staged)?,
    };
    if let Some(new_name) = &update.fields.new_name {
        let other = cart_named(store, &customer, new_name, &order_id)
            .await
            .map_err(at_stage(Stage::Fields))?;
        if let Some(other) = other {
            return Err(staged(
                Stage::Fields,
                name_taken(&customer, new_name, &other),
            ));
        }
    }
    let op = OrderOp::Update {
        update,
        rules: Arc::clone(&state.config.basket_rules),
    };
    state
        .actors
        .execute(&order_id, Execute { op, request })
        .await
        .map_err(|source| AdminError::Actor {
            source,
            stage: Some(Stage::Commit),
        })
}

/// createOrder of a named cart: holds the customer's cart-name lock (to be kept until the
/// create is committed) and refuses a name another cart of the customer already has
/// (CONFLICT). A create retried with its client-chosen `orderId` finds its own cart, which
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
    match cart_named(&state.store, &new.customer_id, name, &new.id).await? {
        None => Ok(Some(lock)),
        Some(other) => Err(name_taken(&new.customer_id, name, &other).into()),
    }
}

fn name_taken(customer: &str, name: &str, other: &str) -> DomainError {
    DomainError::Conflict(format!(
        "customer {customer} already has a cart named '{name}' (order {other})"
    ))
}

/// The customer's orders named `name`, newest first.
async fn orders_named(store: &Store, customer: &str, name: &str) -> Result<Vec<Order>, StoreError> {
    let mut out = Vec::new();
    let mut position = 0;
    loop {
        let ids = store.order_ids_page(customer, position, SCAN_CHUNK).await?;
        let read = ids.len();
        let orders = store.load_many(&ids).await?;
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
    store: &Store,
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
    store: &Store,
    customer: &str,
    name: &str,
) -> Result<Result<String, StagedError>, StoreError> {
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
