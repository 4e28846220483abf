//! The order commands: createOrder (its derived id), getOrder, the lifecycle commands
//! (markAsPaid, pauseOrder, ...), previewOrder and the commands with `preview: true`
//! (SPEC 11.6), updateOrder (its pipeline is `carts.rs`'s), and listOrders (its query and
//! pages).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Value};

use super::args::{derived_id, page_cursor, page_limit};
use super::test_clocks::check_customer_clock;
use super::{args_schema_of, ArgsSchema, Family, LIST_MAX_SCANNED_PAGES};
use crate::actors::order::{Execute, OrderOp, RequestMeta};
use crate::actors::ActorError;
use crate::admin::reply::{AdminError, Outcome};
use crate::admin::{carts, AdminState};
use crate::domain::basket::{Target, UpdateOrder};
use crate::domain::command::{check_id, parse_args, Command, CreateOrderArgs, NewOrder};
use crate::domain::order::OrderStatus;
use crate::domain::time::{parse_instant, Instant};
use crate::domain::{DomainError, Order};
use crate::store::{Keys, StoreError};
use crate::wire::Request;

/// An order command, parsed and validated.
#[derive(Debug)]
pub enum OrderCommand {
    CreateOrder(Box<NewOrder>),
    GetOrder {
        order_id: String,
    },
    /// A lifecycle command of one order (markAsPaid, pauseOrder, ...).
    Lifecycle {
        order_id: String,
        command: Command,
    },
    /// previewOrder: what the order does until `until` if no command arrives.
    PreviewOrder {
        order_id: String,
        until: Instant,
    },
    /// changePlan, cancelOrder or pauseOrder with `preview: true`: what it would do now.
    PreviewCommand {
        order_id: String,
        command: Command,
    },
    UpdateOrder {
        update: Box<UpdateOrder>,
        /// The order a cart name was resolved to by the customer's owner (a forwarded
        /// request), applied here by its owner.
        resolved: Option<String>,
    },
    ListOrders(ListQuery),
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct OrderIdArgs {
    order_id: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ListArgs {
    #[serde(default)]
    customer_id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    cursor: Option<String>,
    #[serde(default)]
    test_clock_id: Option<String>,
}

/// previewOrder's arguments.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PreviewArgs {
    order_id: String,
    until: String,
}

impl OrderCommand {
    /// A lifecycle command, or one of those taking `preview: true` with the flag: the flag is
    /// read (and taken out of the args) before the command's own arguments are.
    fn parse_lifecycle(name: &str, args: &Value) -> Result<Option<Self>, AdminError> {
        if let Some((args, preview)) = preview_flag(name, args)? {
            if let Some(parsed) = Command::parse(name, &args) {
                let (order_id, command) = parsed?;
                return Ok(Some(if preview {
                    OrderCommand::PreviewCommand { order_id, command }
                } else {
                    OrderCommand::Lifecycle { order_id, command }
                }));
            }
        }
        match Command::parse(name, args) {
            Some(parsed) => {
                let (order_id, command) = parsed?;
                Ok(Some(OrderCommand::Lifecycle { order_id, command }))
            }
            None => Ok(None),
        }
    }

    fn parse_named(name: &str, req: &Request) -> Result<Option<Self>, AdminError> {
        if let Some(lifecycle) = Self::parse_lifecycle(name, &req.args)? {
            return Ok(Some(lifecycle));
        }
        Ok(Some(match name {
            "previewOrder" => {
                let a: PreviewArgs = parse_args(&req.args)?;
                check_id("orderId", &a.order_id)?;
                let until =
                    parse_instant(&a.until).map_err(|e| DomainError::invalid("until", e))?;
                OrderCommand::PreviewOrder {
                    order_id: a.order_id,
                    until,
                }
            }
            "createOrder" => OrderCommand::CreateOrder(Box::new(parse_create(req)?)),
            "getOrder" => {
                let a: OrderIdArgs = parse_args(&req.args)?;
                check_id("orderId", &a.order_id)?;
                OrderCommand::GetOrder {
                    order_id: a.order_id,
                }
            }
            "updateOrder" => {
                let update =
                    UpdateOrder::parse(&req.args, &req.channel).map_err(AdminError::Staged)?;
                let resolved = match (&update.criteria.target, &req.resolved_order_id) {
                    (Target::Name(_), Some(id)) => {
                        check_id("resolvedOrderId", id)?;
                        Some(id.clone())
                    }
                    _ => None,
                };
                OrderCommand::UpdateOrder {
                    update: Box::new(update),
                    resolved,
                }
            }
            "listOrders" => OrderCommand::ListOrders(ListQuery::parse(&req.args)?),
            _ => return Ok(None),
        }))
    }
}

impl Family for OrderCommand {
    fn parse(name: &str, req: &Request) -> Option<Result<Self, AdminError>> {
        Self::parse_named(name, req).transpose()
    }

    /// The order named, or an updateOrder's once its cart name is resolved; listOrders names
    /// none.
    fn order_id(&self) -> Option<&str> {
        match self {
            OrderCommand::CreateOrder(new) => Some(&new.id),
            OrderCommand::GetOrder { order_id }
            | OrderCommand::Lifecycle { order_id, .. }
            | OrderCommand::PreviewOrder { order_id, .. }
            | OrderCommand::PreviewCommand { order_id, .. } => Some(order_id),
            OrderCommand::UpdateOrder { update, resolved } => {
                match (&update.criteria.target, resolved) {
                    (Target::Id(id), _) | (Target::Name(_), Some(id)) => Some(id),
                    (Target::Name(_), None) => None,
                }
            }
            OrderCommand::ListOrders(_) => None,
        }
    }

    /// The order's partition; an updateOrder naming a cart not resolved yet goes to its
    /// customer's, and so does listOrders of one customer (of every customer: partition 0).
    fn routing_partition(&self, keys: &Keys) -> u16 {
        match self {
            OrderCommand::UpdateOrder {
                update,
                resolved: None,
            } if matches!(update.criteria.target, Target::Name(_)) => {
                keys.partition(&update.criteria.customer_id)
            }
            OrderCommand::ListOrders(q) => {
                q.customer_id.as_deref().map_or(0, |c| keys.partition(c))
            }
            _ => self.order_id().map_or(0, |id| keys.partition(id)),
        }
    }

    /// Every order command waits (getOrder too: it fires the order up to now first, like any
    /// order command), but not the creation of a test clock's order (test clocks live beside
    /// the daemon's clock, SPEC 11.5), nor listOrders, a read that fires nothing (answered
    /// during an advance with what is committed so far).
    fn waits_for_advance(&self) -> bool {
        match self {
            OrderCommand::CreateOrder(new) => new.test_clock_id.is_none(),
            OrderCommand::ListOrders(_) => false,
            _ => true,
        }
    }

    async fn run(
        self,
        state: &AdminState,
        request: RequestMeta,
        raw: &Request,
    ) -> Result<Outcome, AdminError> {
        match self {
            OrderCommand::CreateOrder(new) => create_order(state, new, request).await,
            OrderCommand::GetOrder { order_id } => {
                execute(state, &order_id, OrderOp::Get, request).await
            }
            OrderCommand::Lifecycle { order_id, command } => {
                execute(state, &order_id, OrderOp::Command(command), request).await
            }
            OrderCommand::PreviewOrder { order_id, until } => Ok(Outcome::Answer(
                preview_order(state, &order_id, until).await?,
            )),
            OrderCommand::PreviewCommand { order_id, command } => Ok(Outcome::Answer(
                preview_command(state, &order_id, &command).await?,
            )),
            OrderCommand::UpdateOrder { update, resolved } => {
                carts::update_order(state, update, resolved, request, raw).await
            }
            OrderCommand::ListOrders(query) => {
                Ok(Outcome::Answer(list_orders(state, query).await?))
            }
        }
    }

    fn args_schema(name: &str) -> Option<ArgsSchema> {
        use crate::domain::command as c;
        Some(match name {
            "createOrder" => args_schema_of::<c::CreateOrderArgs>(),
            "getOrder" => args_schema_of::<OrderIdArgs>(),
            "listOrders" => args_schema_of::<ListArgs>(),
            "changePlan" => args_schema_of::<c::ChangePlanArgs>(),
            "recordPayment" | "recordRefund" => args_schema_of::<c::PaymentArgs>(),
            "paymentFailed" => args_schema_of::<c::FailureArgs>(),
            "markAsPaid" | "resumeOrder" | "deleteOrder" | "cancelScheduledChange" => {
                args_schema_of::<c::OrderOnlyArgs>()
            }
            "pauseOrder" => args_schema_of::<c::PauseArgs>(),
            "postponeEndDate" => args_schema_of::<c::EndDateArgs>(),
            "changeStartDate" => args_schema_of::<c::StartDateArgs>(),
            "cancelOrder" => args_schema_of::<c::CancelArgs>(),
            _ => return None,
        })
    }
}

/// getOrder, a lifecycle command: a message to the order's actor, whose commit keeps the reply.
async fn execute(
    state: &AdminState,
    order_id: &str,
    op: OrderOp,
    request: RequestMeta,
) -> Result<Outcome, AdminError> {
    let reply = state
        .actors
        .execute(order_id, Execute { op, request })
        .await?;
    Ok(Outcome::Kept(reply))
}

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
async fn create_order(
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
fn derived_order_id(request_id: &str) -> String {
    derived_id("recur-order", request_id)
}

fn parse_create(req: &Request) -> Result<NewOrder, DomainError> {
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
    fn parse(args: &Value) -> Result<ListQuery, DomainError> {
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

    fn wants(&self, o: &Order) -> bool {
        let status = match self.status {
            Some(s) => o.status == s,
            None => o.status != OrderStatus::Draft,
        };
        status && o.test_clock_id == self.test_clock
    }
}

/// The commands that take `preview: true` (SPEC 11.6): their args without the flag, and the
/// flag. None for other commands (their args are parsed as they are).
fn preview_flag(name: &str, args: &Value) -> Result<Option<(Value, bool)>, DomainError> {
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
async fn order_now(state: &AdminState, order_id: &str) -> Result<(Order, Instant), AdminError> {
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
async fn preview_order(
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
async fn preview_command(
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
async fn list_orders(state: &AdminState, q: ListQuery) -> Result<Value, StoreError> {
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
