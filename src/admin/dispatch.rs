//! Routes one admin request to what answers it: an order's actor, the scheduler, the store.
//! Parsing of arguments is the domain's; this module only picks by command name.

use std::sync::Arc;

use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::carts;
use super::protocol::{Reply, Request};
use crate::actors::customer::{GetStats, Recompute};
use crate::actors::order::{Execute, OrderOp, RequestMeta};
use crate::actors::registry;
use crate::daemon::Daemon;
use crate::domain::command::{check_id, parse_args, Command, CreateOrderArgs, NewOrder};
use crate::domain::order::OrderStatus;
use crate::domain::time::format_instant;
use crate::domain::{DomainError, ErrorCode};
use crate::scheduler::{self, AdvanceError};

/// Default and largest page size of listOrders.
pub const LIST_DEFAULT_LIMIT: usize = 50;
pub const LIST_MAX_LIMIT: usize = 500;

/// A routed reply, and whether an order commit already kept it.
pub struct Routed {
    pub reply: Reply,
    pub kept: bool,
}

fn refused(req: &Request, e: DomainError) -> Routed {
    Routed {
        reply: Reply::error(Some(req.id.clone()), e.code(), e.to_string()),
        kept: false,
    }
}

fn answered(req: &Request, result: Value) -> Routed {
    Routed {
        reply: Reply::ok(Some(req.id.clone()), result),
        kept: false,
    }
}

/// Runs the request and returns its reply.
pub async fn route(daemon: &Arc<Daemon>, req: &Request, body_hash: &str) -> Routed {
    let meta = RequestMeta {
        id: req.id.clone(),
        body_hash: body_hash.to_string(),
    };
    let name = req.command.as_str();
    if let Some(parsed) = Command::parse(name, &req.args) {
        return match parsed {
            Ok((order_id, cmd)) => {
                to_actor(daemon, req, &order_id, OrderOp::Command(cmd), meta).await
            }
            Err(e) => refused(req, e),
        };
    }
    match name {
        "ping" => answered(
            req,
            json!({"pong": true, "now": format_instant(&daemon.clock.now())}),
        ),
        "getClock" => answered(req, json!({"now": format_instant(&daemon.clock.now())})),
        "getMetrics" => {
            let mut m = daemon.metrics.snapshot();
            m["registryResident"] = json!(daemon.registry.resident());
            answered(req, m)
        }
        "advanceClock" => advance(daemon, req).await,
        "createOrder" => match parse_create(req) {
            Ok((id, new, client_chosen_id)) => {
                // A named cart keeps its customer's cart names until it is committed.
                let _cart_name = match carts::claim_cart_name(daemon, req, &new).await {
                    Ok(lock) => lock,
                    Err(refusal) => return refusal,
                };
                to_actor(
                    daemon,
                    req,
                    &id,
                    OrderOp::Create {
                        new,
                        client_chosen_id,
                    },
                    meta,
                )
                .await
            }
            Err(e) => refused(req, e),
        },
        "getOrder" => match parse_args::<OrderIdArgs>(&req.args)
            .and_then(|a| check_id("orderId", &a.order_id).map(|_| a))
        {
            Ok(a) => to_actor(daemon, req, &a.order_id, OrderOp::Get, meta).await,
            Err(e) => refused(req, e),
        },
        "getCustomerStats" | "recomputeCustomerStats" => customer_stats(daemon, req).await,
        "updateOrder" => carts::update_order(daemon, req, meta).await,
        "listOrders" => match list_orders(daemon, &req.args).await {
            Ok(v) => answered(req, v),
            Err(ListError::Invalid(e)) => refused(req, e),
            Err(ListError::Store(e)) => Routed {
                reply: Reply::error(Some(req.id.clone()), ErrorCode::Internal, e),
                kept: false,
            },
        },
        other => Routed {
            reply: Reply::error(
                Some(req.id.clone()),
                ErrorCode::UnknownCommand,
                format!("unknown command '{other}'"),
            ),
            kept: false,
        },
    }
}

async fn to_actor(
    daemon: &Arc<Daemon>,
    req: &Request,
    order_id: &str,
    op: OrderOp,
    request: RequestMeta,
) -> Routed {
    match registry::execute(daemon, order_id, Execute { op, request }).await {
        Ok(reply) => Routed { reply, kept: true },
        Err(e) => Routed {
            reply: Reply::error(Some(req.id.clone()), ErrorCode::Internal, e.to_string()),
            kept: false,
        },
    }
}

/// The order id of a createOrder: the client's `orderId`, or one derived from the request id
/// (so a retried createOrder creates one order).
pub fn derived_order_id(request_id: &str) -> String {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("recur-order:{request_id}").as_bytes(),
    )
    .to_string()
}

fn parse_create(req: &Request) -> Result<(String, NewOrder, bool), DomainError> {
    let args: CreateOrderArgs = parse_args(&req.args)?;
    let client_chosen = args.order_id.is_some();
    let id = args
        .order_id
        .clone()
        .unwrap_or_else(|| derived_order_id(&req.id));
    let channel = if req.channel.is_empty() {
        "admin".to_string()
    } else {
        req.channel.clone()
    };
    let new = NewOrder::parse(args, id.clone(), channel)?;
    Ok((id, new, client_chosen))
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

/// getCustomerStats and recomputeCustomerStats, through the customer's CustomerStats actor.
async fn customer_stats(daemon: &Arc<Daemon>, req: &Request) -> Routed {
    let args = match parse_args::<CustomerArgs>(&req.args)
        .and_then(|a| check_id("customerId", &a.customer_id).map(|_| a))
    {
        Ok(a) => a,
        Err(e) => return refused(req, e),
    };
    let result = if req.command == "getCustomerStats" {
        registry::to_customer(daemon, &args.customer_id, GetStats).await
    } else {
        registry::to_customer(daemon, &args.customer_id, Recompute).await
    };
    match result.and_then(|r| r) {
        Ok(v) => answered(req, v),
        Err(e) => Routed {
            reply: Reply::error(Some(req.id.clone()), ErrorCode::Internal, e.to_string()),
            kept: false,
        },
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AdvanceArgs {
    to: String,
}

async fn advance(daemon: &Arc<Daemon>, req: &Request) -> Routed {
    if !daemon.clock.is_simulated() {
        return Routed {
            reply: Reply::error(
                Some(req.id.clone()),
                ErrorCode::ClockNotSimulated,
                "advanceClock needs the simulated clock (start recur with --clock simulated)",
            ),
            kept: false,
        };
    }
    let to = match parse_args::<AdvanceArgs>(&req.args)
        .and_then(|a| scheduler::parse_to(&a.to).map_err(|e| DomainError::invalid("to", e)))
    {
        Ok(to) => to,
        Err(e) => return refused(req, e),
    };
    let _exclusive = daemon.advance_lock.write().await;
    match scheduler::advance(daemon, to).await {
        Ok(now) => answered(req, json!({"now": format_instant(&now)})),
        Err(AdvanceError::Backwards { now, to }) => refused(
            req,
            DomainError::invalid(
                "to",
                format!(
                    "{} is earlier than now ({})",
                    format_instant(&to),
                    format_instant(&now)
                ),
            ),
        ),
        Err(AdvanceError::NotSimulated) => Routed {
            reply: Reply::error(
                Some(req.id.clone()),
                ErrorCode::ClockNotSimulated,
                "the clock is not simulated",
            ),
            kept: false,
        },
        Err(e) => Routed {
            reply: Reply::error(Some(req.id.clone()), ErrorCode::Internal, e.to_string()),
            kept: false,
        },
    }
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

enum ListError {
    Invalid(DomainError),
    Store(String),
}

/// listOrders: newest first; DRAFT orders only when `status` asks for them; the cursor is the
/// position in the (customer's or global) creation-time index.
async fn list_orders(daemon: &Arc<Daemon>, args: &Value) -> Result<Value, ListError> {
    let a: ListArgs = parse_args(args).map_err(ListError::Invalid)?;
    if let Some(c) = &a.customer_id {
        check_id("customerId", c).map_err(ListError::Invalid)?;
    }
    let status = match a.status.as_deref() {
        None => None,
        Some(s) => Some(OrderStatus::parse(s).ok_or_else(|| {
            ListError::Invalid(DomainError::invalid(
                "status",
                format!("unknown status '{s}'"),
            ))
        })?),
    };
    let limit = match a.limit {
        None => LIST_DEFAULT_LIMIT,
        Some(l) if (1..=LIST_MAX_LIMIT as i64).contains(&l) => l as usize,
        Some(_) => {
            return Err(ListError::Invalid(DomainError::invalid(
                "limit",
                format!("must be between 1 and {LIST_MAX_LIMIT}"),
            )))
        }
    };
    let mut position = match a.cursor.as_deref() {
        None => 0,
        Some(c) => c.parse::<usize>().map_err(|_| {
            ListError::Invalid(DomainError::invalid(
                "cursor",
                "is not a cursor from listOrders",
            ))
        })?,
    };
    let mut orders = Vec::new();
    let chunk = 200;
    loop {
        let ids = daemon
            .store
            .order_ids_page(a.customer_id.as_deref(), position, chunk)
            .await
            .map_err(|e| ListError::Store(e.to_string()))?;
        if ids.is_empty() {
            return Ok(json!({"orders": orders, "nextCursor": null}));
        }
        let loaded = daemon
            .store
            .load_many(&ids)
            .await
            .map_err(|e| ListError::Store(e.to_string()))?;
        let by_id: std::collections::HashMap<&str, &crate::domain::Order> =
            loaded.iter().map(|o| (o.id.as_str(), o)).collect();
        for id in &ids {
            position += 1;
            let Some(o) = by_id.get(id.as_str()) else {
                continue;
            };
            let wanted = match status {
                Some(s) => o.status == s,
                None => o.status != OrderStatus::Draft,
            };
            if wanted {
                orders.push(serde_json::to_value(o).unwrap_or(Value::Null));
                if orders.len() == limit {
                    return Ok(json!({"orders": orders, "nextCursor": position.to_string()}));
                }
            }
        }
        if ids.len() < chunk {
            return Ok(json!({"orders": orders, "nextCursor": null}));
        }
    }
}
