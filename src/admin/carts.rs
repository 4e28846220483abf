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

use crate::actors::order::{Execute, OrderOp, RequestMeta};
use crate::actors::registry;
use crate::admin::dispatch::Routed;
use crate::admin::protocol::{Reply, Request};
use crate::config::{PromoKind, Settings};
use crate::daemon::Daemon;
use crate::domain::basket::{
    not_a_cart, BasketRules, Promotion, Stage, StagedError, Target, UpdateOrder,
};
use crate::domain::command::NewOrder;
use crate::domain::order::{DiscountKind, Order, OrderStatus};
use crate::domain::{DomainError, ErrorCode};
use crate::store::StoreError;

/// How many order ids one scan of a customer's index reads per round trip.
const SCAN_CHUNK: usize = 200;

/// The status manager and promotion codes of `settings`, as the domain's plain values. Status
/// names were validated when the settings loaded.
pub fn basket_rules(settings: &Settings) -> BasketRules {
    let mut rules = BasketRules::default();
    for (channel, table) in &settings.status_manager {
        for (from, tos) in table {
            let Some(from) = OrderStatus::parse(from) else {
                continue;
            };
            for to in tos.iter().filter_map(|t| OrderStatus::parse(t)) {
                rules.statuses.allow(channel, from, to);
            }
        }
    }
    for (code, p) in &settings.promo_codes {
        let kind = match p.kind {
            PromoKind::Percent => DiscountKind::Percent,
            PromoKind::Fixed => DiscountKind::Fixed,
        };
        rules.promotions.insert(
            code.clone(),
            Promotion {
                kind,
                value: p.value,
                first_cycles: p.first_cycles,
                expires: p.expires,
            },
        );
    }
    rules
}

fn staged(req: &Request, e: &StagedError) -> Routed {
    Routed {
        reply: Reply::error(Some(req.id.clone()), e.code(), e.error.to_string())
            .with_stage(Some(e.stage.as_str())),
        kept: false,
    }
}

fn internal(req: &Request, stage: Option<Stage>, e: &StoreError) -> Routed {
    Routed {
        reply: Reply::error(Some(req.id.clone()), ErrorCode::Internal, e.to_string())
            .with_stage(stage.map(Stage::as_str)),
        kept: false,
    }
}

/// updateOrder: validates the request, finds the order (a cart by name), checks a new cart
/// name is free, and runs the pipeline in the order's actor. Errors carry their stage.
pub async fn update_order(daemon: &Arc<Daemon>, req: &Request, request: RequestMeta) -> Routed {
    let update = match UpdateOrder::parse(&req.args, &req.channel) {
        Ok(u) => u,
        Err(e) => return staged(req, &e),
    };
    let customer = update.criteria.customer_id.clone();
    let _names = match update.fields.new_name {
        Some(_) => Some(NameLock::acquire(daemon, &customer).await),
        None => None,
    };
    let order_id = match &update.criteria.target {
        Target::Id(id) => id.clone(),
        Target::Name(name) => match find_cart(daemon, &customer, name).await {
            Ok(Ok(id)) => id,
            Ok(Err(e)) => return staged(req, &e),
            Err(e) => return internal(req, Some(Stage::Load), &e),
        },
    };
    if let Some(new_name) = &update.fields.new_name {
        match cart_named(daemon, &customer, new_name, &order_id).await {
            Ok(None) => {}
            Ok(Some(other)) => {
                let error = name_taken(&customer, new_name, &other);
                return staged(
                    req,
                    &StagedError {
                        stage: Stage::Fields,
                        error,
                    },
                );
            }
            Err(e) => return internal(req, Some(Stage::Fields), &e),
        }
    }
    let op = OrderOp::Update {
        update: Box::new(update),
        rules: Arc::new(basket_rules(&daemon.settings)),
    };
    match registry::execute(daemon, &order_id, Execute { op, request }).await {
        Ok(reply) => Routed { reply, kept: true },
        Err(e) => Routed {
            reply: Reply::error(Some(req.id.clone()), ErrorCode::Internal, e.to_string())
                .with_stage(Some(Stage::Commit.as_str())),
            kept: false,
        },
    }
}

/// createOrder of a named cart: holds the customer's cart-name lock (to be kept until the
/// create is committed) and refuses a name another cart of the customer already has
/// (CONFLICT). A create retried with its client-chosen `orderId` finds its own cart, which
/// does not count. `None` for an unnamed order.
///
/// # Errors
/// The reply to send instead of creating the order.
pub async fn claim_cart_name(
    daemon: &Arc<Daemon>,
    req: &Request,
    new: &NewOrder,
) -> Result<Option<NameLock>, Routed> {
    let Some(name) = &new.name else {
        return Ok(None);
    };
    let lock = NameLock::acquire(daemon, &new.customer_id).await;
    match cart_named(daemon, &new.customer_id, name, &new.id).await {
        Ok(None) => Ok(Some(lock)),
        Ok(Some(other)) => {
            let e = name_taken(&new.customer_id, name, &other);
            Err(Routed {
                reply: Reply::error(Some(req.id.clone()), e.code(), e.to_string()),
                kept: false,
            })
        }
        Err(e) => Err(internal(req, None, &e)),
    }
}

fn name_taken(customer: &str, name: &str, other: &str) -> DomainError {
    DomainError::Conflict(format!(
        "customer {customer} already has a cart named '{name}' (order {other})"
    ))
}

/// The customer's orders named `name`, newest first.
async fn orders_named(
    daemon: &Daemon,
    customer: &str,
    name: &str,
) -> Result<Vec<Order>, StoreError> {
    let mut out = Vec::new();
    let mut position = 0;
    loop {
        let ids = daemon
            .store
            .order_ids_page(Some(customer), position, SCAN_CHUNK)
            .await?;
        let read = ids.len();
        let orders = daemon.store.load_many(&ids).await?;
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
    daemon: &Daemon,
    customer: &str,
    name: &str,
    except: &str,
) -> Result<Option<String>, StoreError> {
    Ok(orders_named(daemon, customer, name)
        .await?
        .into_iter()
        .find(|o| o.status == OrderStatus::Draft && o.id != except)
        .map(|o| o.id))
}

/// The order id of the customer's cart named `name`. A name only finds carts: a purchased
/// order of that name is INVALID_REQUEST, no order at all NOT_FOUND (both at stage `load`).
async fn find_cart(
    daemon: &Daemon,
    customer: &str,
    name: &str,
) -> Result<Result<String, StagedError>, StoreError> {
    let named = orders_named(daemon, customer, name).await?;
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

/// Per-customer cart-name locks of one daemon (a field of [`Daemon`]). Entries are dropped
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
    async fn acquire(daemon: &Arc<Daemon>, customer: &str) -> NameLock {
        let locks = Arc::clone(&daemon.cart_names.locks);
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

#[cfg(test)]
mod tests {
    use super::*;
    use rust_decimal::Decimal;

    #[test]
    fn config_becomes_basket_rules() {
        let mut s = Settings::defaults().unwrap();
        s.status_manager.insert(
            "backoffice".into(),
            [("ACTIVE".to_string(), vec!["PAUSED".to_string()])]
                .into_iter()
                .collect(),
        );
        s.promo_codes.insert(
            "WELCOME10".into(),
            crate::config::PromoCode {
                kind: PromoKind::Percent,
                value: Decimal::TEN,
                first_cycles: Some(3),
                expires: None,
            },
        );
        let r = basket_rules(&s);
        assert!(r
            .statuses
            .allows("backoffice", OrderStatus::Active, OrderStatus::Paused));
        assert!(!r
            .statuses
            .allows("backoffice", OrderStatus::Paused, OrderStatus::Active));
        let (code, p) = r.promotion("welcome10").unwrap();
        assert_eq!(code, "WELCOME10");
        assert_eq!(
            (p.kind, p.value, p.first_cycles),
            (DiscountKind::Percent, Decimal::TEN, Some(3))
        );
    }
}
