//! Admin commands, typed: each request is parsed once into an [`AdminCommand`] with validated
//! arguments ([`AdminCommand::parse`]) and run against the [`AdminState`]
//! ([`AdminCommand::run`]); its outcome or error becomes a reply in one place
//! ([`super::reply::reply_of`]).

use serde::Deserialize;
use serde_json::{json, Value};

use super::reply::{AdminError, Outcome};
use super::{carts, AdminState};
use crate::actors::customer::{GetStats, Recompute};
use crate::actors::order::{Execute, OrderOp, RequestMeta};
use crate::domain::basket::{Target, UpdateOrder};
use crate::domain::command::{check_id, parse_args, Command, NewOrder};
use crate::domain::time::{format_instant, parse_instant, Instant};
use crate::domain::DomainError;
use crate::store::test_clock::JobKind;
use crate::store::Keys;
use crate::wire::Request;

/// Default and largest page size of listOrders.
pub const LIST_DEFAULT_LIMIT: usize = 50;
pub const LIST_MAX_LIMIT: usize = 500;
/// How many reads of `limit` ids one listOrders page makes at most before it returns a shorter
/// page (with a cursor) rather than scanning on.
pub const LIST_MAX_SCANNED_PAGES: usize = 10;

pub use crate::wire::COMMAND_NAMES;

/// A daemon's part of a forecast: the figures of one partition, asked by the daemon that
/// answers the forecast of the partition's owner (SPEC 11.6). Internal: accepted only on
/// `<prefix>:forward`, where daemons hand requests to each other; not in [`COMMAND_NAMES`].
pub const FORECAST_PARTITION: &str = "forecastPartition";

/// Whether `command` is one only daemons send each other (see [`FORECAST_PARTITION`]).
pub fn is_internal(command: &str) -> bool {
    command == FORECAST_PARTITION
}

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
    /// previewOrder: what the order does until `until` if no command arrives.
    PreviewOrder {
        order_id: String,
        until: Instant,
    },
    /// forecast: the book's figures per month (UTC) and currency (of one test clock's orders,
    /// from its time, when `test_clock` names one).
    Forecast {
        from: Instant,
        to: Instant,
        currency: Option<String>,
        test_clock: Option<String>,
    },
    /// forecastPartition: one partition's part of a forecast, computed by its owner.
    ForecastPartition {
        partition: u16,
        query: ForecastQuery,
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
    GetCustomerStats {
        customer_id: String,
    },
    RecomputeCustomerStats {
        customer_id: String,
    },
    ListOrders(ListQuery),
    /// Every configured webhook endpoint with what waits and what is dead-lettered.
    GetWebhookEndpoints,
    /// Deliver the dead-lettered webhooks of one endpoint (or of every one) again.
    RetryDeadWebhooks {
        endpoint: Option<String>,
    },
    /// createTestClock (SPEC 11.5); the id is the client's or derived from the request id.
    CreateTestClock {
        test_clock_id: String,
        frozen: Instant,
        name: Option<String>,
    },
    GetTestClock {
        test_clock_id: String,
    },
    ListTestClocks {
        limit: usize,
        after: Option<(i64, String)>,
    },
    AdvanceTestClock {
        test_clock_id: String,
        to: Instant,
    },
    DeleteTestClock {
        test_clock_id: String,
    },
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct OrderIdArgs {
    order_id: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CustomerArgs {
    customer_id: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RetryDeadArgs {
    #[serde(default)]
    endpoint: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MetricsArgs {
    #[serde(default)]
    daemon_id: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AdvanceArgs {
    to: String,
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

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PageArgs {
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    cursor: Option<String>,
}

/// One schema and the named schemas it refers to, for the HTTP API's OpenAPI document.
pub type ArgsSchema = (
    utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    Vec<(
        String,
        utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    )>,
);

fn args_schema_of<T: utoipa::ToSchema>() -> ArgsSchema {
    let mut named = vec![(T::name().into_owned(), T::schema())];
    T::schemas(&mut named);
    let reference = utoipa::openapi::Ref::from_schema_name(T::name());
    (utoipa::openapi::RefOr::Ref(reference), named)
}

/// The schema of `command`'s args, from the types its arguments are read into (the HTTP
/// API's OpenAPI document, SPEC 11.3); `None` for a command without a fixed shape (updateOrder,
/// whose related items are read by its pipeline) or one this daemon does not know.
pub fn args_schema(command: &str) -> Option<ArgsSchema> {
    use crate::domain::command as c;
    Some(match command {
        "ping" | "getClock" => {
            let empty = utoipa::openapi::ObjectBuilder::new()
                .additional_properties(Some(
                    utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
                ))
                .build();
            (empty.into(), Vec::new())
        }
        "getMetrics" => args_schema_of::<MetricsArgs>(),
        "advanceClock" => args_schema_of::<AdvanceArgs>(),
        "createOrder" => args_schema_of::<c::CreateOrderArgs>(),
        "getOrder" => args_schema_of::<OrderIdArgs>(),
        "getCustomerStats" | "recomputeCustomerStats" => args_schema_of::<CustomerArgs>(),
        "listOrders" => args_schema_of::<ListArgs>(),
        "retryDeadWebhooks" => args_schema_of::<RetryDeadArgs>(),
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

impl AdminCommand {
    /// Parses and validates a request's command and arguments.
    ///
    /// # Errors
    /// [`AdminError`] with the code the reply carries (INVALID_REQUEST, UNKNOWN_COMMAND, or an
    /// updateOrder refusal with its stage).
    pub fn parse(req: &Request) -> Result<AdminCommand, AdminError> {
        let name = req.command.as_str();
        if let Some((args, preview)) = preview_flag(name, &req.args)? {
            if let Some(parsed) = Command::parse(name, &args) {
                let (order_id, command) = parsed?;
                return Ok(if preview {
                    AdminCommand::PreviewCommand { order_id, command }
                } else {
                    AdminCommand::Lifecycle { order_id, command }
                });
            }
        }
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
            "getWebhookEndpoints" => {
                let _: NoArgs = parse_args(&req.args)?;
                AdminCommand::GetWebhookEndpoints
            }
            "forecast" => parse_forecast(&req.args)?,
            FORECAST_PARTITION => parse_forecast_partition(&req.args)?,
            "previewOrder" => {
                let a: PreviewArgs = parse_args(&req.args)?;
                check_id("orderId", &a.order_id)?;
                let until =
                    parse_instant(&a.until).map_err(|e| DomainError::invalid("until", e))?;
                AdminCommand::PreviewOrder {
                    order_id: a.order_id,
                    until,
                }
            }
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
            "createTestClock" | "getTestClock" | "deleteTestClock" | "advanceTestClock"
            | "listTestClocks" => parse_test_clock_command(req)?,
            other => return Err(AdminError::UnknownCommand(other.to_string())),
        })
    }

    /// The order the command is about, when it names one (the logs' `order_id`).
    pub fn order_id(&self) -> Option<&str> {
        match self {
            AdminCommand::CreateOrder(new) => Some(&new.id),
            AdminCommand::GetOrder { order_id }
            | AdminCommand::Lifecycle { order_id, .. }
            | AdminCommand::PreviewOrder { order_id, .. }
            | AdminCommand::PreviewCommand { order_id, .. } => Some(order_id),
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
            AdminCommand::GetOrder { order_id }
            | AdminCommand::Lifecycle { order_id, .. }
            | AdminCommand::PreviewOrder { order_id, .. }
            | AdminCommand::PreviewCommand { order_id, .. } => keys.partition(order_id),
            AdminCommand::UpdateOrder { update, resolved } => {
                match (&update.criteria.target, resolved) {
                    (Target::Id(id), _) | (Target::Name(_), Some(id)) => keys.partition(id),
                    (Target::Name(_), None) => keys.partition(&update.criteria.customer_id),
                }
            }
            AdminCommand::GetCustomerStats { customer_id }
            | AdminCommand::RecomputeCustomerStats { customer_id } => keys.partition(customer_id),
            AdminCommand::CreateTestClock { test_clock_id, .. }
            | AdminCommand::GetTestClock { test_clock_id }
            | AdminCommand::AdvanceTestClock { test_clock_id, .. }
            | AdminCommand::DeleteTestClock { test_clock_id } => keys.partition(test_clock_id),
            AdminCommand::ListOrders(q) => {
                q.customer_id.as_deref().map_or(0, |c| keys.partition(c))
            }
            // Out of range: partition 0's owner refuses it.
            AdminCommand::ForecastPartition { partition, .. } => {
                if *partition < keys.partitions() {
                    *partition
                } else {
                    0
                }
            }
            AdminCommand::Ping
            | AdminCommand::Forecast { .. }
            | AdminCommand::GetWebhookEndpoints
            | AdminCommand::GetClock
            | AdminCommand::GetMetrics { .. }
            | AdminCommand::AdvanceClock { .. }
            | AdminCommand::RetryDeadWebhooks { .. }
            | AdminCommand::ListTestClocks { .. } => 0,
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
    ///
    /// Test clocks live beside the daemon's clock (SPEC 11.5): their commands and the
    /// creation of their orders never wait for its advance (and commands on their orders do
    /// not either: `server::route` tells them apart while an advance runs).
    pub fn waits_for_advance(&self) -> bool {
        match self {
            AdminCommand::CreateOrder(new) => new.test_clock_id.is_none(),
            AdminCommand::Forecast { test_clock, .. } => test_clock.is_none(),
            // The forecast that asked for it waited (on its daemon); the part is a read from
            // a `now` it was given, which an advance does not change (a walk from now is the
            // same whether the timers up to now fired already or not).
            AdminCommand::ForecastPartition { .. } => false,
            _ => !matches!(
                self,
                AdminCommand::AdvanceClock { .. }
                    | AdminCommand::Ping
                    | AdminCommand::GetClock
                    | AdminCommand::GetMetrics { .. }
                    | AdminCommand::ListOrders(_)
                    | AdminCommand::GetCustomerStats { .. }
                    | AdminCommand::CreateTestClock { .. }
                    | AdminCommand::GetTestClock { .. }
                    | AdminCommand::ListTestClocks { .. }
                    | AdminCommand::AdvanceTestClock { .. }
                    | AdminCommand::DeleteTestClock { .. }
            ),
        }
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
            AdminCommand::GetClock => Ok(Outcome::Answer(get_clock(state).await?)),
            AdminCommand::GetMetrics { .. } => Ok(Outcome::Answer(get_metrics(state).await?)),
            AdminCommand::AdvanceClock { to } => {
                // Kept by partition 0's owner when the advance completed.
                let reply = state
                    .scheduler
                    .advance(to, &request.id, &request.body_hash)
                    .await?;
                Ok(Outcome::Found(reply))
            }
            AdminCommand::CreateOrder(new) => create_order(state, new, request).await,
            AdminCommand::GetOrder { order_id } => order(order_id, OrderOp::Get, request).await,
            AdminCommand::Lifecycle { order_id, command } => {
                order(order_id, OrderOp::Command(command), request).await
            }
            AdminCommand::GetWebhookEndpoints => {
                Ok(Outcome::Answer(webhook_endpoints(state).await?))
            }
            AdminCommand::Forecast {
                from,
                to,
                currency,
                test_clock,
            } => Ok(Outcome::Answer(
                forecast(
                    state,
                    from,
                    to,
                    currency.as_deref(),
                    test_clock.as_deref(),
                    &raw.channel,
                )
                .await?,
            )),
            AdminCommand::ForecastPartition { partition, query } => {
                use crate::domain::lifecycle::forecast::month_of;
                if partition >= state.stores.keys().partitions() {
                    return Err(DomainError::invalid(
                        "partition",
                        format!("there are {} partitions", state.stores.keys().partitions()),
                    )
                    .into());
                }
                let part = forecast_partitions(state, &[partition], &query).await?;
                Ok(Outcome::Answer(part.to_json(
                    month_of(&query.start),
                    month_of(&query.to),
                    query.currency.as_deref(),
                )))
            }
            AdminCommand::PreviewOrder { order_id, until } => Ok(Outcome::Answer(
                preview_order(state, &order_id, until).await?,
            )),
            AdminCommand::PreviewCommand { order_id, command } => Ok(Outcome::Answer(
                preview_command(state, &order_id, &command).await?,
            )),
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
            AdminCommand::CreateTestClock {
                test_clock_id,
                frozen,
                name,
            } => create_test_clock(state, test_clock_id, frozen, name).await,
            AdminCommand::GetTestClock { test_clock_id } => {
                match state.stores.test_clocks.test_clock(&test_clock_id).await? {
                    Some(c) => Ok(Outcome::Answer(c.json())),
                    None => Err(clock_not_found(&test_clock_id)),
                }
            }
            AdminCommand::ListTestClocks { limit, after } => Ok(Outcome::Answer(
                list_test_clocks(state, after, limit).await?,
            )),
            AdminCommand::AdvanceTestClock { test_clock_id, to } => {
                test_clock_job(state, &test_clock_id, JobKind::Advance, Some(to), &request).await
            }
            AdminCommand::DeleteTestClock { test_clock_id } => {
                test_clock_job(state, &test_clock_id, JobKind::Delete, None, &request).await
            }
        }
    }
}

/// getClock: now, and during an advance its target and how far this daemon's lanes have got.
async fn get_clock(state: &AdminState) -> Result<Value, AdminError> {
    let mut reply = json!({"now": format_instant(&state.clock.now())});
    if let Some(advance) = state.stores.clock.clock_state().await?.advance {
        reply["advance"] = json!({
            "to": format_instant(&advance.target),
            "requestId": advance.request_id,
            "reached": format_instant(&state.clock.now()),
            "transitions": state.health.metrics().transitions_total(),
        });
    }
    Ok(reply)
}

/// getMetrics: the same registry /metrics renders (SPEC 10's JSON shape), with the gauges
/// read off Redis refreshed first.
async fn get_metrics(state: &AdminState) -> Result<Value, AdminError> {
    state.health.refresh().await;
    let ownership = &state.ownership;
    let ttl = u64::try_from(ownership.config().lease_ttl.as_millis()).unwrap_or(u64::MAX);
    let live = state.stores.leases.live_daemons(ttl).await?;
    Ok(json!({
        "daemonId": ownership.daemon_id(),
        "metrics": state.health.metrics().json(),
        "partitionsOwned": ownership.owned().len(),
        "partitions": ownership.partitions(),
        "liveDaemons": live.into_iter().map(|(id, _)| id).collect::<Vec<_>>(),
        "registryResident": state.actors.resident_orders(),
    }))
}

/// A command without arguments (`{}`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// What one forecast computes, the same for every partition (and every daemon computing some
/// of them): the orders as of `now`, counted from `start` (`from`, or now when later) to `to`.
#[derive(Debug, Clone)]
pub(super) struct ForecastQuery {
    now: Instant,
    start: Instant,
    to: Instant,
    currency: Option<String>,
    test_clock: Option<String>,
}

mod forecast;
mod orders;
mod test_clocks;
mod webhooks;

use forecast::*;
use orders::*;
use test_clocks::*;
use webhooks::*;

#[cfg(test)]
mod tests;
