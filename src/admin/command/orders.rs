//! The order commands that are more than one actor message: createOrder (its derived id),
//! listOrders (its query and pages), and the previews (SPEC 11.6).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::*;
use crate::actors::order::{Execute, OrderOp, RequestMeta};
use crate::actors::ActorError;
use crate::admin::reply::{AdminError, Outcome};
use crate::admin::{carts, AdminState};
use crate::domain::command::{check_id, parse_args, Command, CreateOrderArgs, NewOrder};
use crate::domain::order::OrderStatus;
use crate::domain::time::Instant;
use crate::domain::{DomainError, Order};
use crate::store::StoreError;
use crate::wire::Request;

/// listOrders' arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct ListQuery {
    pub customer_id: Option<String>,
    /// None: every status but DRAFT.
    pub status: Option<OrderStatus>,
    pub limit: usize,
    /// After this row (creation ms, order id) of the newest-first listing; the cursor is
    /// `<ms>:<id>`, opaque to clients.
    pub after: Option<(i64, String)>,
    /// Only this test clock's orders (SPEC 11.5); None: only live orders.
    pub test_clock: Option<String>,
}

/// createOrder: a named cart keeps its customer's cart names until it is committed (and
/// releases them when the create is refused).
pub(super) async fn create_order(
    state: &AdminState,
    new: Box<NewOrder>,
    request: RequestMeta,
) -> Result<Outcome, AdminError> {
    check_customer_clock(state, &new).await?;
    let _cart_name = carts::claim_cart_name(state, &new).await?;
    let id = new.id.clone();
    let named = new.name.is_some().then(|| new.clone());
    let created = state
        .actors
        .execute(
            &id,
            Execute {
                op: OrderOp::Create(new),
                request,
            },
        )
        .await
        .map(Outcome::Kept)
        .map_err(AdminError::from);
    let refused = match &created {
        Ok(Outcome::Kept(reply)) => !reply.ok,
        // Committed but not confirmed by the replicas (redis.wait_replicas): the order may
        // well stand, and its retry is answered from the kept reply; the claim stays (one
        // whose order is gone is taken over anyway).
        Err(AdminError::Actor {
            source: ActorError::Store(StoreError::Unconfirmed { .. }),
            ..
        }) => false,
        _ => true,
    };
    if let (true, Some(new)) = (refused, named) {
        carts::release_cart_name(state, &new).await;
    }
    created
}

/// The order id of a createOrder: the client's `orderId`, or one derived from the request id
/// (so a retried createOrder creates one order).
pub(super) fn derived_order_id(request_id: &str) -> String {
    derived_id("recur-order", request_id)
}

/// An id derived from the request id under `kind` (a retry makes the same one).
pub(super) fn derived_id(kind: &str, request_id: &str) -> String {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("{kind}:{request_id}").as_bytes(),
    )
    .to_string()
}

/// A page size: default [`LIST_DEFAULT_LIMIT`], at most [`LIST_MAX_LIMIT`].
pub(super) fn page_limit(limit: Option<i64>) -> Result<usize, DomainError> {
    match limit {
        None => Ok(LIST_DEFAULT_LIMIT),
        Some(l) if (1..=LIST_MAX_LIMIT as i64).contains(&l) => Ok(l as usize),
        Some(_) => Err(DomainError::invalid(
            "limit",
            format!("must be between 1 and {LIST_MAX_LIMIT}"),
        )),
    }
}

/// A listing's cursor, `<ms>:<id>`.
pub(super) fn page_cursor(cursor: Option<&str>) -> Result<Option<(i64, String)>, DomainError> {
    cursor
        .map(|c| {
            c.split_once(':')
                .and_then(|(ms, id)| Some((ms.parse::<i64>().ok()?, id.to_string())))
                .filter(|(_, id)| !id.is_empty())
                .ok_or_else(|| DomainError::invalid("cursor", "is not a cursor from a listing"))
        })
        .transpose()
}

pub(super) fn parse_create(req: &Request) -> Result<NewOrder, DomainError> {
    let args: CreateOrderArgs = parse_args(&req.args)?;
    let id = args
        .order_id
        .clone()
        .unwrap_or_else(|| derived_order_id(&req.id));
    let channel = if req.channel.is_empty() {
        "admin".to_string()
    } else {
        req.channel.clone()
    };
    NewOrder::parse(args, id, channel)
}

impl ListQuery {
    pub(super) fn parse(args: &Value) -> Result<ListQuery, DomainError> {
        let a: ListArgs = parse_args(args)?;
        if let Some(c) = &a.customer_id {
            check_id("customerId", c)?;
        }
        let status =
            match a.status.as_deref() {
                None => None,
                Some(s) => Some(OrderStatus::parse(s).ok_or_else(|| {
                    DomainError::invalid("status", format!("unknown status '{s}'"))
                })?),
            };
        let limit = page_limit(a.limit)?;
        let after = page_cursor(a.cursor.as_deref())?;
        if let Some(c) = &a.test_clock_id {
            check_id("testClockId", c)?;
        }
        Ok(ListQuery {
            customer_id: a.customer_id,
            status,
            limit,
            after,
            test_clock: a.test_clock_id,
        })
    }

    pub(super) fn wants(&self, o: &Order) -> bool {
        let status = match self.status {
            Some(s) => o.status == s,
            None => o.status != OrderStatus::Draft,
        };
        status && o.test_clock_id == self.test_clock
    }
}

/// previewOrder's arguments.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct PreviewArgs {
    pub(super) order_id: String,
    pub(super) until: String,
}

/// The commands that take `preview: true` (SPEC 11.6): their args without the flag, and the
/// flag. None for other commands (their args are parsed as they are).
pub(super) fn preview_flag(name: &str, args: &Value) -> Result<Option<(Value, bool)>, DomainError> {
    if !matches!(name, "changePlan" | "cancelOrder" | "pauseOrder") {
        return Ok(None);
    }
    let Some(map) = args.as_object() else {
        return Ok(None);
    };
    let Some(flag) = map.get("preview") else {
        return Ok(None);
    };
    let preview = flag
        .as_bool()
        .ok_or_else(|| DomainError::invalid("preview", "must be true or false"))?;
    let mut rest = map.clone();
    rest.remove("preview");
    Ok(Some((Value::Object(rest), preview)))
}

/// The order as it stands (read from Redis; its owner commits before it answers) and the time
/// a command on it would see: the clock, never before the order's last change.
pub(super) async fn order_now(
    state: &AdminState,
    order_id: &str,
) -> Result<(Order, Instant), AdminError> {
    match state.stores.orders.load(order_id).await? {
        crate::store::Loaded::Present(o) => {
            // A test clock's order sees the clock's time (its last change's, if the clock is
            // being deleted).
            let base = match &o.test_clock_id {
                None => state.clock.now(),
                Some(c) => state
                    .stores
                    .test_clocks
                    .test_clock(c)
                    .await?
                    .map_or(o.updated_date, |tc| tc.frozen),
            };
            let now = base.max(o.updated_date);
            Ok((*o, now))
        }
        _ => Err(DomainError::NotFound(format!("order {order_id} not found")).into()),
    }
}

/// previewOrder: `{order, events, dues}` as of `until`, written nowhere.
pub(super) async fn preview_order(
    state: &AdminState,
    order_id: &str,
    until: Instant,
) -> Result<Value, AdminError> {
    use crate::domain::lifecycle::preview;
    let (order, now) = order_now(state, order_id).await?;
    let t = preview::preview_until(&order, now, until, state.actors.policy())?;
    Ok(json!({
        "order": t.order,
        "events": t.events.iter().map(preview::event_json).collect::<Vec<_>>(),
        "dues": preview::requested_dues(&order, &t),
    }))
}

/// A command with `preview: true`: `{order, events}` it would give now (the order after it;
/// a plan change's proration is in its orderPlanChanged event), written nowhere.
pub(super) async fn preview_command(
    state: &AdminState,
    order_id: &str,
    command: &Command,
) -> Result<Value, AdminError> {
    use crate::domain::lifecycle::preview;
    let (order, now) = order_now(state, order_id).await?;
    let t = preview::preview_command(&order, command, now, state.actors.policy())?;
    let proration = t
        .events
        .iter()
        .find_map(|e| e.data.get("proration").cloned())
        .unwrap_or(Value::Null);
    Ok(json!({
        "preview": true,
        "order": t.order,
        "proration": proration,
        "events": t.events.iter().map(preview::event_json).collect::<Vec<_>>(),
    }))
}

/// listOrders: newest first (ties by id, descending); DRAFT orders only when `status` asks for
/// them. Reads `limit` ids at a time after the cursor from the customer's index, or from every
/// partition's index merged, and keeps those that match, until the page is full or the indexes
/// end; after [`LIST_MAX_SCANNED_PAGES`] reads it returns a shorter page with `nextCursor` still
/// set (SPEC 10 allows it), so a rare status costs a bounded amount of work per request.
pub(super) async fn list_orders(state: &AdminState, q: ListQuery) -> Result<Value, StoreError> {
    let mut after = q.after.clone();
    let mut orders: Vec<Value> = Vec::new();
    for _ in 0..LIST_MAX_SCANNED_PAGES {
        let (rows, more) = state
            .stores
            .orders
            .orders_before(
                q.customer_id.as_deref(),
                q.test_clock.as_deref(),
                after.as_ref(),
                q.limit,
            )
            .await?;
        let ids: Vec<String> = rows.iter().map(|(_, id)| id.clone()).collect();
        let loaded = state.stores.orders.load_readable(&ids).await?;
        let by_id: HashMap<&str, &Order> = loaded.iter().map(|o| (o.id.as_str(), o)).collect();
        for row in &rows {
            after = Some(row.clone());
            let Some(o) = by_id.get(row.1.as_str()).filter(|o| q.wants(o)) else {
                continue;
            };
            orders.push(serde_json::to_value(o).unwrap_or(Value::Null));
            if orders.len() == q.limit {
                let next = match (&after, more || row != rows.last().unwrap_or(row)) {
                    (Some((ms, id)), true) => json!(format!("{ms}:{id}")),
                    _ => Value::Null,
                };
                return Ok(json!({"orders": orders, "nextCursor": next}));
            }
        }
        if !more {
            return Ok(json!({"orders": orders, "nextCursor": null}));
        }
    }
    let next = after.map_or(Value::Null, |(ms, id)| json!(format!("{ms}:{id}")));
    Ok(json!({"orders": orders, "nextCursor": next}))
}
