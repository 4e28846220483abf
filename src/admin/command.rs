//! Admin commands, typed: each request is parsed once into an [`AdminCommand`] with validated
//! arguments ([`AdminCommand::parse`]) and run against the [`AdminState`]
//! ([`AdminCommand::run`]); its outcome or error becomes a reply in one place
//! ([`super::reply::reply_of`]).

use std::collections::HashMap;

use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::reply::{AdminError, Outcome};
use super::{carts, AdminState};
use crate::actors::customer::{GetStats, Recompute};
use crate::actors::order::{Execute, OrderOp, RequestMeta};
use crate::actors::ActorError;
use crate::domain::basket::{Target, UpdateOrder};
use crate::domain::command::{check_id, parse_args, Command, CreateOrderArgs, NewOrder};
use crate::domain::order::OrderStatus;
use crate::domain::time::{format_instant, parse_instant, Instant};
use crate::domain::{DomainError, Order};
use crate::store::{Keys, StoreError};
use crate::wire::Request;

/// Default and largest page size of listOrders.
pub const LIST_DEFAULT_LIMIT: usize = 50;
pub const LIST_MAX_LIMIT: usize = 500;
/// How many reads of `limit` ids one listOrders page makes at most before it returns a shorter
/// page (with a cursor) rather than scanning on.
pub const LIST_MAX_SCANNED_PAGES: usize = 10;

/// Every admin command [`AdminCommand::parse`] knows, by its wire name (the lifecycle commands
/// of [`Command::NAMES`] included). `recur admin` has a subcommand for each (checked by its
/// tests).
pub const COMMAND_NAMES: [&str; 23] = [
    "ping",
    "getClock",
    "getMetrics",
    "advanceClock",
    "createOrder",
    "getOrder",
    "updateOrder",
    "getCustomerStats",
    "recomputeCustomerStats",
    "listOrders",
    "retryDeadWebhooks",
    "changePlan",
    "cancelScheduledChange",
    "recordPayment",
    "paymentFailed",
    "recordRefund",
    "markAsPaid",
    "pauseOrder",
    "resumeOrder",
    "postponeEndDate",
    "changeStartDate",
    "cancelOrder",
    "deleteOrder",
];

/// One admin request, parsed and validated.
#[derive(Debug)]
pub enum AdminCommand {
    Ping,
    GetClock,
    /// The answering daemon's figures; `daemon_id` asks a given daemon (SPEC 10).
    GetMetrics {
        daemon_id: Option<String>,
    },
    AdvanceClock {
        to: Instant,
    },
    CreateOrder(Box<NewOrder>),
    GetOrder {
        order_id: String,
    },
    /// A lifecycle command of one order (markAsPaid, pauseOrder, ...).
    Lifecycle {
        order_id: String,
        command: Command,
    },
    UpdateOrder {
        update: Box<UpdateOrder>,
        /// The order a cart name was resolved to by the customer's owner (a forwarded
        /// request), applied here by its owner.
        resolved: Option<String>,
    },
    GetCustomerStats {
        customer_id: String,
    },
    RecomputeCustomerStats {
        customer_id: String,
    },
    ListOrders(ListQuery),
    /// Deliver the dead-lettered webhooks of one endpoint (or of every one) again.
    RetryDeadWebhooks {
        endpoint: Option<String>,
    },
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
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OrderIdArgs {
    order_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CustomerArgs {
    customer_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RetryDeadArgs {
    #[serde(default)]
    endpoint: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MetricsArgs {
    #[serde(default)]
    daemon_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AdvanceArgs {
    to: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ListArgs {
    #[serde(default)]
    customer_id: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    cursor: Option<String>,
}

impl AdminCommand {
    /// Parses and validates a request's command and arguments.
    ///
    /// # Errors
    /// [`AdminError`] with the code the reply carries (INVALID_REQUEST, UNKNOWN_COMMAND, or an
    /// updateOrder refusal with its stage).
    pub fn parse(req: &Request) -> Result<AdminCommand, AdminError> {
        let name = req.command.as_str();
        if let Some(parsed) = Command::parse(name, &req.args) {
            let (order_id, command) = parsed?;
            return Ok(AdminCommand::Lifecycle { order_id, command });
        }
        let customer = || -> Result<String, DomainError> {
            let a: CustomerArgs = parse_args(&req.args)?;
            check_id("customerId", &a.customer_id)?;
            Ok(a.customer_id)
        };
        Ok(match name {
            "ping" => AdminCommand::Ping,
            "getClock" => AdminCommand::GetClock,
            "getMetrics" => {
                let a: MetricsArgs = parse_args(&req.args)?;
                if let Some(id) = &a.daemon_id {
                    check_id("daemonId", id)?;
                }
                AdminCommand::GetMetrics {
                    daemon_id: a.daemon_id,
                }
            }
            "advanceClock" => {
                let a: AdvanceArgs = parse_args(&req.args)?;
                let to = parse_instant(&a.to).map_err(|e| DomainError::invalid("to", e))?;
                AdminCommand::AdvanceClock { to }
            }
            "createOrder" => AdminCommand::CreateOrder(Box::new(parse_create(req)?)),
            "getOrder" => {
                let a: OrderIdArgs = parse_args(&req.args)?;
                check_id("orderId", &a.order_id)?;
                AdminCommand::GetOrder {
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
                AdminCommand::UpdateOrder {
                    update: Box::new(update),
                    resolved,
                }
            }
            "getCustomerStats" => AdminCommand::GetCustomerStats {
                customer_id: customer()?,
            },
            "recomputeCustomerStats" => AdminCommand::RecomputeCustomerStats {
                customer_id: customer()?,
            },
            "listOrders" => AdminCommand::ListOrders(ListQuery::parse(&req.args)?),
            "retryDeadWebhooks" => {
                let a: RetryDeadArgs = parse_args(&req.args)?;
                AdminCommand::RetryDeadWebhooks {
                    endpoint: a.endpoint,
                }
            }
            other => return Err(AdminError::UnknownCommand(other.to_string())),
        })
    }

    /// The order the command is about, when it names one (the logs' `order_id`).
    pub fn order_id(&self) -> Option<&str> {
        match self {
            AdminCommand::CreateOrder(new) => Some(&new.id),
            AdminCommand::GetOrder { order_id } | AdminCommand::Lifecycle { order_id, .. } => {
                Some(order_id)
            }
            AdminCommand::UpdateOrder { update, resolved } => {
                match (&update.criteria.target, resolved) {
                    (Target::Id(id), _) | (Target::Name(_), Some(id)) => Some(id),
                    (Target::Name(_), None) => None,
                }
            }
            _ => None,
        }
    }

    /// The partition whose owner applies the command (SPEC 6): the order's, else the
    /// customer's, else partition 0.
    pub fn routing_partition(&self, keys: &Keys) -> u16 {
        match self {
            AdminCommand::CreateOrder(new) => keys.partition(&new.id),
            AdminCommand::GetOrder { order_id } | AdminCommand::Lifecycle { order_id, .. } => {
                keys.partition(order_id)
            }
            AdminCommand::UpdateOrder { update, resolved } => {
                match (&update.criteria.target, resolved) {
                    (Target::Id(id), _) | (Target::Name(_), Some(id)) => keys.partition(id),
                    (Target::Name(_), None) => keys.partition(&update.criteria.customer_id),
                }
            }
            AdminCommand::GetCustomerStats { customer_id }
            | AdminCommand::RecomputeCustomerStats { customer_id } => keys.partition(customer_id),
            AdminCommand::ListOrders(q) => {
                q.customer_id.as_deref().map_or(0, |c| keys.partition(c))
            }
            AdminCommand::Ping
            | AdminCommand::GetClock
            | AdminCommand::GetMetrics { .. }
            | AdminCommand::AdvanceClock { .. }
            | AdminCommand::RetryDeadWebhooks { .. } => 0,
        }
    }

    /// The daemon a request names to answer it (getMetrics with `daemonId`), which answers it
    /// whatever partitions it holds; such a reply is not kept (it is a read of that daemon).
    pub fn addressed_daemon(&self) -> Option<&str> {
        match self {
            AdminCommand::GetMetrics { daemon_id } => daemon_id.as_deref(),
            _ => None,
        }
    }

    /// Whether its reply reports what Redis holds (SPEC 11.1: confirmed by the replicas before
    /// it is sent). ping and getMetrics report this daemon only: answered even while no
    /// replica confirms, so an operator can still look.
    pub fn reports_data(&self) -> bool {
        !matches!(self, AdminCommand::Ping | AdminCommand::GetMetrics { .. })
    }

    /// Whether the command waits while an advance runs: all but advanceClock itself (whose
    /// completion the clock follower, which holds commands back, works towards) and the reads
    /// that fire nothing (ping, getClock, getMetrics, listOrders, getCustomerStats), which are
    /// answered during an advance with what is committed so far. getOrder waits: it fires the
    /// order up to now first, like any order command.
    pub fn waits_for_advance(&self) -> bool {
        !matches!(
            self,
            AdminCommand::AdvanceClock { .. }
                | AdminCommand::Ping
                | AdminCommand::GetClock
                | AdminCommand::GetMetrics { .. }
                | AdminCommand::ListOrders(_)
                | AdminCommand::GetCustomerStats { .. }
        )
    }

    /// Runs the command.
    ///
    /// # Errors
    /// [`AdminError`] when it is refused or Redis or an actor fails.
    pub async fn run(
        self,
        state: &AdminState,
        request: RequestMeta,
        raw: &Request,
    ) -> Result<Outcome, AdminError> {
        let now = || json!({"now": format_instant(&state.clock.now())});
        let order = |order_id: String, op: OrderOp, request: RequestMeta| async move {
            let reply = state
                .actors
                .execute(&order_id, Execute { op, request })
                .await?;
            Ok::<_, AdminError>(Outcome::Kept(reply))
        };
        match self {
            AdminCommand::Ping => {
                let mut v = now();
                v["pong"] = json!(true);
                Ok(Outcome::Answer(v))
            }
            AdminCommand::GetClock => {
                // During an advance: its target and how far this daemon's lanes have got.
                let mut reply = now();
                if let Some(advance) = state.store.clock_state().await?.advance {
                    reply["advance"] = json!({
                        "to": format_instant(&advance.target),
                        "requestId": advance.request_id,
                        "reached": format_instant(&state.clock.now()),
                        "transitions": state.health.metrics().transitions_total(),
                    });
                }
                Ok(Outcome::Answer(reply))
            }
            AdminCommand::GetMetrics { .. } => {
                // The same registry /metrics renders (SPEC 10's JSON shape), with the gauges
                // read off Redis refreshed first.
                state.health.refresh().await;
                let ownership = &state.ownership;
                let ttl =
                    u64::try_from(ownership.config().lease_ttl.as_millis()).unwrap_or(u64::MAX);
                let live = state.store.live_daemons(ttl).await?;
                Ok(Outcome::Answer(json!({
                    "daemonId": ownership.daemon_id(),
                    "metrics": state.health.metrics().json(),
                    "partitionsOwned": ownership.owned().len(),
                    "partitions": ownership.partitions(),
                    "liveDaemons": live.into_iter().map(|(id, _)| id).collect::<Vec<_>>(),
                    "registryResident": state.actors.resident_orders(),
                })))
            }
            AdminCommand::AdvanceClock { to } => {
                // Kept by partition 0's owner when the advance completed.
                let reply = state
                    .scheduler
                    .advance(to, &request.id, &request.body_hash)
                    .await?;
                Ok(Outcome::Found(reply))
            }
            AdminCommand::CreateOrder(new) => {
                // A named cart keeps its customer's cart names until it is committed.
                let _cart_name = carts::claim_cart_name(state, &new).await?;
                let id = new.id.clone();
                let named = new.name.is_some().then(|| new.clone());
                let created = order(id, OrderOp::Create(new), request).await;
                let refused = match &created {
                    Ok(Outcome::Kept(reply)) => !reply.ok,
                    // Committed but not confirmed by the replicas (redis.wait_replicas): the
                    // order may well stand, and its retry is answered from the kept reply; the
                    // claim stays (one whose order is gone is taken over anyway).
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
            AdminCommand::GetOrder { order_id } => order(order_id, OrderOp::Get, request).await,
            AdminCommand::Lifecycle { order_id, command } => {
                order(order_id, OrderOp::Command(command), request).await
            }
            AdminCommand::UpdateOrder { update, resolved } => {
                carts::update_order(state, update, resolved, request, raw).await
            }
            AdminCommand::GetCustomerStats { customer_id } => {
                let stats = state.actors.to_customer(&customer_id, GetStats).await??;
                Ok(Outcome::Answer(stats))
            }
            AdminCommand::RecomputeCustomerStats { customer_id } => {
                let report = state.actors.to_customer(&customer_id, Recompute).await??;
                Ok(Outcome::Answer(report))
            }
            AdminCommand::ListOrders(query) => {
                Ok(Outcome::Answer(list_orders(state, query).await?))
            }
            AdminCommand::RetryDeadWebhooks { endpoint } => {
                retry_dead_webhooks(state, endpoint.as_deref()).await
            }
        }
    }
}

/// The order id of a createOrder: the client's `orderId`, or one derived from the request id
/// (so a retried createOrder creates one order).
fn derived_order_id(request_id: &str) -> String {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("recur-order:{request_id}").as_bytes(),
    )
    .to_string()
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
        let limit = match a.limit {
            None => LIST_DEFAULT_LIMIT,
            Some(l) if (1..=LIST_MAX_LIMIT as i64).contains(&l) => l as usize,
            Some(_) => {
                return Err(DomainError::invalid(
                    "limit",
                    format!("must be between 1 and {LIST_MAX_LIMIT}"),
                ))
            }
        };
        let after = match a.cursor.as_deref() {
            None => None,
            Some(c) => Some(
                c.split_once(':')
                    .and_then(|(ms, id)| Some((ms.parse::<i64>().ok()?, id.to_string())))
                    .filter(|(_, id)| !id.is_empty())
                    .ok_or_else(|| {
                        DomainError::invalid("cursor", "is not a cursor from listOrders")
                    })?,
            ),
        };
        Ok(ListQuery {
            customer_id: a.customer_id,
            status,
            limit,
            after,
        })
    }

    fn wants(&self, o: &Order) -> bool {
        match self.status {
            Some(s) => o.status == s,
            None => o.status != OrderStatus::Draft,
        }
    }
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
            .store
            .orders_before(q.customer_id.as_deref(), after.as_ref(), q.limit)
            .await?;
        let ids: Vec<String> = rows.iter().map(|(_, id)| id.clone()).collect();
        let loaded = state.store.load_readable(&ids).await?;
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

/// retryDeadWebhooks: counts the dead letters to deliver again and records the request in
/// partition 0; every owner queues its partitions' dead letters when it sees it (SPEC 10).
async fn retry_dead_webhooks(
    state: &AdminState,
    endpoint: Option<&str>,
) -> Result<Outcome, AdminError> {
    let configured = &state.config.webhook_endpoints;
    let endpoints: Vec<&str> = match endpoint {
        Some(e) if configured.iter().any(|c| c == e) => vec![e],
        Some(e) => {
            return Err(
                DomainError::NotFound(format!("no webhook endpoint '{e}' is configured")).into(),
            )
        }
        None => configured.iter().map(String::as_str).collect(),
    };
    let counts = state.store.count_dead(&endpoints).await?;
    let total: u64 = counts.values().sum();
    if total > 0 {
        let token = state
            .ownership
            .token(0)
            .ok_or(StoreError::Fenced { partition: 0 })?;
        state
            .store
            .add_redeliver_request(&token, &endpoints)
            .await?;
    }
    Ok(Outcome::Answer(
        json!({"requeued": total, "endpoints": counts}),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::reply::reply_of;
    use crate::domain::ErrorCode;

    fn req(command: &str, args: Value) -> Request {
        Request {
            id: "r1".into(),
            reply_to: None,
            channel: String::new(),
            command: command.into(),
            args,
            resolved_order_id: None,
        }
    }

    fn code(command: &str, args: Value) -> ErrorCode {
        AdminCommand::parse(&req(command, args)).unwrap_err().code()
    }

    #[test]
    fn requests_parse_into_typed_commands() {
        assert!(matches!(
            AdminCommand::parse(&req("ping", json!({}))).unwrap(),
            AdminCommand::Ping
        ));
        let c = AdminCommand::parse(&req(
            "advanceClock",
            json!({"to": "2026-01-01T00:00:00+01:00"}),
        ))
        .unwrap();
        assert!(!c.waits_for_advance());
        assert!(
            matches!(c, AdminCommand::AdvanceClock { to } if format_instant(&to) == "2025-12-31T23:00:00.000Z")
        );
        let c = AdminCommand::parse(&req("pauseOrder", json!({"orderId": "o1"}))).unwrap();
        assert!(matches!(c, AdminCommand::Lifecycle { ref order_id, .. } if order_id == "o1"));
        assert!(c.waits_for_advance());
        let cursor = json!({"limit": 5, "cursor": "1767225600000:o:7"});
        let c = AdminCommand::parse(&req("listOrders", cursor)).unwrap();
        let AdminCommand::ListOrders(q) = c else {
            panic!("listOrders")
        };
        let after = Some((1_767_225_600_000, "o:7".to_string()));
        assert_eq!((q.limit, q.after, q.status), (5, after, None));
    }

    #[test]
    fn every_listed_command_is_known_and_every_order_command_listed() {
        for name in COMMAND_NAMES {
            if let Err(e) = AdminCommand::parse(&req(name, json!({}))) {
                assert_ne!(e.code(), ErrorCode::UnknownCommand, "{name}");
            }
        }
        for name in Command::NAMES {
            assert!(COMMAND_NAMES.contains(&name), "{name} is not listed");
        }
    }

    #[test]
    fn bad_requests_get_their_codes() {
        assert_eq!(code("nope", json!({})), ErrorCode::UnknownCommand);
        assert_eq!(
            code("advanceClock", json!({"to": "tomorrow"})),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code("getOrder", json!({"orderId": ""})),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code("listOrders", json!({"limit": 501})),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code("listOrders", json!({"status": "NOPE"})),
            ErrorCode::InvalidRequest
        );
        assert_eq!(
            code("getCustomerStats", json!({"customer": "c1"})),
            ErrorCode::InvalidRequest
        );
        // updateOrder refusals name their stage: no search criteria is a `load` refusal.
        let e = AdminCommand::parse(&req("updateOrder", json!({"id": "o1"}))).unwrap_err();
        let e = reply_of("r1", Err(e)).reply.unwrap().error.unwrap();
        assert_eq!(
            (e.code, e.stage.as_deref()),
            (ErrorCode::InvalidRequest, Some("load"))
        );
    }

    #[test]
    fn a_retried_create_derives_the_same_order_id() {
        let args = crate::domain::lifecycle::test_support::monthly(
            "OFFLINE",
            3,
            "1.00",
            "2026-01-01T00:00:00Z",
        );
        let id = |r: &str| match AdminCommand::parse(&Request {
            id: r.into(),
            ..req("createOrder", args.clone())
        }) {
            Ok(AdminCommand::CreateOrder(new)) => new.id,
            other => panic!("{other:?}"),
        };
        assert_eq!(id("a"), id("a"));
        assert_ne!(id("a"), id("b"));
    }
}
