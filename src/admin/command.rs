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
use crate::store::test_clock::{JobKind, TestClock};
use crate::store::{Keys, StoreError};
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
struct CreateTestClockArgs {
    #[serde(default)]
    test_clock_id: Option<String>,
    frozen_time: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TestClockArgs {
    test_clock_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AdvanceTestClockArgs {
    test_clock_id: String,
    to: String,
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
                if partition >= state.store.partitions() {
                    return Err(DomainError::invalid(
                        "partition",
                        format!("there are {} partitions", state.store.partitions()),
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
                match state
                    .store
                    .test_clock_store()
                    .test_clock(&test_clock_id)
                    .await?
                {
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
    if let Some(advance) = state.store.clock_store().clock_state().await?.advance {
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
    let live = state.store.lease_store().live_daemons(ttl).await?;
    Ok(json!({
        "daemonId": ownership.daemon_id(),
        "metrics": state.health.metrics().json(),
        "partitionsOwned": ownership.owned().len(),
        "partitions": ownership.partitions(),
        "liveDaemons": live.into_iter().map(|(id, _)| id).collect::<Vec<_>>(),
        "registryResident": state.actors.resident_orders(),
    }))
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

/// listTestClocks: a page of clocks, oldest first, and the cursor of the next page.
async fn list_test_clocks(
    state: &AdminState,
    after: Option<(i64, String)>,
    limit: usize,
) -> Result<Value, AdminError> {
    let (clocks, next) = state
        .store
        .test_clock_store()
        .list_test_clocks(after.as_ref(), limit)
        .await?;
    let next = next.map_or(Value::Null, |(ms, id)| json!(format!("{ms}:{id}")));
    Ok(json!({
        "testClocks": clocks.iter().map(TestClock::json).collect::<Vec<_>>(),
        "nextCursor": next,
    }))
}

/// advanceTestClock, deleteTestClock: a job on the clock every owner does (its reply kept).
async fn test_clock_job(
    state: &AdminState,
    test_clock_id: &str,
    kind: JobKind,
    to: Option<Instant>,
    request: &RequestMeta,
) -> Result<Outcome, AdminError> {
    let reply = state
        .scheduler
        .test_clock_job(test_clock_id, kind, to, &request.id, &request.body_hash)
        .await?;
    Ok(Outcome::Kept(reply))
}

fn clock_not_found(id: &str) -> AdminError {
    DomainError::NotFound(format!("test clock {id} not found")).into()
}

/// createTestClock: the clock, READY at `frozen` (CONFLICT when the id exists).
async fn create_test_clock(
    state: &AdminState,
    id: String,
    frozen: Instant,
    name: Option<String>,
) -> Result<Outcome, AdminError> {
    let p = state.store.keys().partition(&id);
    let token = state
        .ownership
        .token(p)
        .ok_or(StoreError::Fenced { partition: p })?;
    let clock = TestClock {
        id,
        name,
        frozen,
        created: state.clock.now(),
        job: None,
    };
    if !state
        .store
        .test_clock_store()
        .create_test_clock(&token, &clock)
        .await?
    {
        return Err(
            DomainError::Conflict(format!("test clock {} already exists", clock.id)).into(),
        );
    }
    Ok(Outcome::Answer(clock.json()))
}

/// A customer belongs to the test clock of its first order (SPEC 11.5): an order on another
/// clock, or on none, is refused, and so is a test-clock order for a customer with live
/// orders (INVALID_STATE). A test-clock order binds its customer to the clock.
async fn check_customer_clock(state: &AdminState, new: &NewOrder) -> Result<(), AdminError> {
    let customer = &new.customer_id;
    match &new.test_clock_id {
        None => match state
            .store
            .test_clock_store()
            .customer_clock(customer)
            .await?
        {
            None => Ok(()),
            Some(clock) => Err(DomainError::InvalidState(format!(
                "customer {customer} belongs to test clock {clock}: its orders live on that clock"
            ))
            .into()),
        },
        Some(clock) => {
            if state
                .store
                .test_clock_store()
                .test_clock(clock)
                .await?
                .is_none()
            {
                return Err(clock_not_found(clock));
            }
            match state.store.test_clock_store().bind_customer_clock(customer, clock).await? {
                None => Ok(()),
                Some(live) if live == "LIVE" => Err(DomainError::InvalidState(format!(
                    "customer {customer} has live orders: a test clock's customers have orders on that clock only"
                ))
                .into()),
                Some(other) => Err(DomainError::InvalidState(format!(
                    "customer {customer} belongs to test clock {other}"
                ))
                .into()),
            }
        }
    }
}

/// The order id of a createOrder: the client's `orderId`, or one derived from the request id
/// (so a retried createOrder creates one order).
fn derived_order_id(request_id: &str) -> String {
    derived_id("recur-order", request_id)
}

/// An id derived from the request id under `kind` (a retry makes the same one).
fn derived_id(kind: &str, request_id: &str) -> String {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("{kind}:{request_id}").as_bytes(),
    )
    .to_string()
}

/// A page size: default [`LIST_DEFAULT_LIMIT`], at most [`LIST_MAX_LIMIT`].
fn page_limit(limit: Option<i64>) -> Result<usize, DomainError> {
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
fn page_cursor(cursor: Option<&str>) -> Result<Option<(i64, String)>, DomainError> {
    cursor
        .map(|c| {
            c.split_once(':')
                .and_then(|(ms, id)| Some((ms.parse::<i64>().ok()?, id.to_string())))
                .filter(|(_, id)| !id.is_empty())
                .ok_or_else(|| DomainError::invalid("cursor", "is not a cursor from a listing"))
        })
        .transpose()
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

/// A command without arguments (`{}`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

/// getWebhookEndpoints: per configured endpoint, the change entries its cursors have not passed
/// yet (`pending`, over every partition), the events waiting for a retry (`retrying`) and the
/// dead letters (`dead`).
async fn webhook_endpoints(state: &AdminState) -> Result<Value, AdminError> {
    let ids: Vec<&str> = state
        .config
        .webhook_endpoints
        .iter()
        .map(String::as_str)
        .collect();
    let dead = state.store.webhook_store().count_dead(&ids).await?;
    let mut ends = Vec::new();
    for p in 0..state.store.partitions() {
        ends.push(state.store.webhook_store().stream_end(p).await?.added);
    }
    let mut out = Vec::new();
    for id in ids {
        let (mut pending, mut retrying) = (0u64, 0usize);
        for (p, added) in ends.iter().enumerate() {
            let partition = u16::try_from(p).unwrap_or(u16::MAX);
            let progress = state
                .store
                .webhook_store()
                .webhook_progress(partition, id)
                .await?;
            let passed = progress.cursor.as_ref().map_or(*added, |(_, n)| *n);
            pending += added.saturating_sub(passed);
            retrying += progress.retrying.len();
        }
        out.push(json!({
            "id": id,
            "pending": pending,
            "retrying": retrying,
            "dead": dead.get(id).copied().unwrap_or(0),
        }));
    }
    Ok(json!({ "endpoints": out }))
}

/// forecast's arguments.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ForecastArgs {
    from: String,
    to: String,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    test_clock_id: Option<String>,
}

/// forecastPartition's arguments (a daemon's own request, see [`FORECAST_PARTITION`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ForecastPartitionArgs {
    partition: u16,
    now: String,
    start: String,
    to: String,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    test_clock_id: Option<String>,
}

/// How many orders a forecast reads and computes at a time.
const FORECAST_CHUNK: usize = 2_000;

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

/// How long the daemon answering a forecast waits for another daemon's part of it (the
/// request is published again every [`super::handle::FORWARD_ATTEMPT`] meanwhile, so a new
/// owner answers it after a takeover) before computing that partition itself.
const FORECAST_PART_TOTAL: std::time::Duration = std::time::Duration::from_secs(300);

/// forecast: every order of every partition walked forward from now (each due paid), counted
/// per month. Each partition is computed by its owner (SPEC 11.6): this daemon computes its
/// own and asks the owners of the others for theirs (`forecastPartition` on
/// `<prefix>:forward`, all at once), and adds them up. A part that does not come (its owner
/// gone and nobody taking over in time, or a refusal) is computed here: a forecast only
/// reads, any daemon can.
async fn forecast(
    state: &AdminState,
    from: Instant,
    to: Instant,
    currency: Option<&str>,
    test_clock: Option<&str>,
    channel: &str,
) -> Result<Value, AdminError> {
    use crate::domain::lifecycle::forecast::month_of;
    // A test clock's orders are walked from the clock's time.
    let now = match test_clock {
        None => state.clock.now(),
        Some(c) => match state.store.test_clock_store().test_clock(c).await? {
            Some(tc) => tc.frozen,
            None => return Err(clock_not_found(c)),
        },
    };
    // As written to the owners (milliseconds), so that every part starts from the same now.
    let now = parse_instant(&format_instant(&now)).unwrap_or(now);
    let query = ForecastQuery {
        now,
        start: from.max(now),
        to,
        currency: currency.map(str::to_string),
        test_clock: test_clock.map(str::to_string),
    };
    let (mine, theirs): (Vec<u16>, Vec<u16>) =
        (0..state.store.partitions()).partition(|p| state.ownership.owns(*p));
    let asked = futures_util::future::join_all(
        theirs
            .iter()
            .map(|p| forecast_part_of_owner(state, *p, &query, channel)),
    );
    let (total, parts) = tokio::join!(forecast_partitions(state, &mine, &query), asked);
    let mut total = total?;
    let mut missing = Vec::new();
    for (p, part) in theirs.into_iter().zip(parts) {
        match part {
            Some(part) => total.merge(&part),
            None => missing.push(p),
        }
    }
    if !missing.is_empty() {
        total.merge(&forecast_partitions(state, &missing, &query).await?);
    }
    Ok(total.to_json(month_of(&from), month_of(&to), currency))
}

/// Partition `partition`'s part of a forecast, from its owner: None when it did not come (no
/// answer in [`FORECAST_PART_TOTAL`], a refusal, a reply that cannot be read), logged.
async fn forecast_part_of_owner(
    state: &AdminState,
    partition: u16,
    query: &ForecastQuery,
    channel: &str,
) -> Option<crate::domain::lifecycle::forecast::Forecast> {
    use crate::domain::lifecycle::forecast::Forecast;
    let forwarder = state.forwarder.get()?;
    let options = super::client::RequestOptions {
        id: Some(format!("forecast-{}-{partition}", Uuid::new_v4())),
        channel: channel.to_string(),
        attempt_timeout: super::handle::FORWARD_ATTEMPT,
        total_timeout: FORECAST_PART_TOTAL,
    };
    let args = json!({
        "partition": partition,
        "now": format_instant(&query.now),
        "start": format_instant(&query.start),
        "to": format_instant(&query.to),
        "currency": query.currency,
        "testClockId": query.test_clock,
    });
    let why = match forwarder
        .request_with(options, FORECAST_PARTITION, args)
        .await
    {
        Ok(reply) if reply.ok => match reply.result.as_ref().and_then(Forecast::from_json) {
            Some(part) => return Some(part),
            None => "its reply cannot be read".to_string(),
        },
        Ok(reply) => format!(
            "refused: {}",
            reply.error.map_or_else(String::new, |e| e.message)
        ),
        Err(e) => e.to_string(),
    };
    tracing::warn!(partition, reason = %why, "no forecast part from the partition's owner; computing it here");
    None
}

/// The forecast of `partitions`' orders, computed here: their ids are read a chunk at a time
/// and each chunk's orders are parsed and walked on the blocking thread pool, as many chunks
/// at once as the daemon's forecast slots allow (one per core, and one being read), shared by
/// every forecast it computes; the daemon's own thread only reads and merges.
async fn forecast_partitions(
    state: &AdminState,
    partitions: &[u16],
    query: &ForecastQuery,
) -> Result<crate::domain::lifecycle::forecast::Forecast, AdminError> {
    use crate::domain::lifecycle::forecast::Forecast;
    use std::collections::VecDeque;
    type Part = (Forecast, Vec<(String, String)>);
    let policy = std::sync::Arc::new(state.actors.policy().clone());
    let shared = std::sync::Arc::new(query.clone());
    let mut running: VecDeque<tokio::task::JoinHandle<Part>> = VecDeque::new();
    let mut total = Forecast::default();
    let take = |total: &mut Forecast, part: Result<Part, tokio::task::JoinError>| {
        let (f, unreadable) =
            part.map_err(|e| StoreError::Corrupt(format!("forecast worker: {e}")))?;
        for (id, e) in unreadable {
            state.store.unreadable(&id, &e);
        }
        total.merge(&f);
        Ok::<_, AdminError>(())
    };
    for &p in partitions {
        let mut rank = 0;
        loop {
            let ids = state
                .store
                .partition_order_ids(p, query.test_clock.as_deref(), rank, FORECAST_CHUNK)
                .await?;
            rank += ids.len();
            let last = ids.len() < FORECAST_CHUNK;
            // A slot for the chunk, from its read to the end of its computing; while none is
            // free, the oldest chunk of this forecast is merged first.
            let slot = loop {
                match std::sync::Arc::clone(&state.forecast_slots).try_acquire_owned() {
                    Ok(slot) => break slot,
                    Err(_) => match running.pop_front() {
                        Some(oldest) => take(&mut total, oldest.await)?,
                        None => {
                            break std::sync::Arc::clone(&state.forecast_slots)
                                .acquire_owned()
                                .await
                                .map_err(|e| StoreError::Corrupt(format!("forecast slots: {e}")))?
                        }
                    },
                }
            };
            let rows = state.store.order_rows(&ids).await?;
            let (policy, query) = (
                std::sync::Arc::clone(&policy),
                std::sync::Arc::clone(&shared),
            );
            running.push_back(tokio::task::spawn_blocking(move || {
                let part = forecast_rows(&ids, rows, &query, &policy);
                drop(slot);
                part
            }));
            if last {
                break;
            }
        }
    }
    while let Some(next) = running.pop_front() {
        take(&mut total, next.await)?;
    }
    Ok(total)
}

/// One chunk's orders parsed and walked (on the blocking pool); the ids whose JSON cannot be
/// read, with why, are handed back to be logged and counted.
fn forecast_rows(
    ids: &[String],
    rows: Vec<Option<String>>,
    query: &ForecastQuery,
    policy: &crate::domain::lifecycle::Policy,
) -> (
    crate::domain::lifecycle::forecast::Forecast,
    Vec<(String, String)>,
) {
    use crate::domain::lifecycle::forecast::{add_owned_order, Forecast};
    let mut f = Forecast::default();
    let mut unreadable = Vec::new();
    if query.start > query.to {
        return (f, unreadable);
    }
    for (id, row) in ids.iter().zip(rows) {
        let Some(json) = row else { continue };
        let o: Order = match serde_json::from_str(&json) {
            Ok(o) => o,
            Err(e) => {
                unreadable.push((id.clone(), e.to_string()));
                continue;
            }
        };
        if query
            .currency
            .as_deref()
            .is_some_and(|c| c != o.currency.code())
        {
            continue;
        }
        let now = query.now.max(o.updated_date);
        add_owned_order(&mut f, o, now, query.start, query.to, policy);
    }
    (f, unreadable)
}

/// forecast's arguments: at most [`MAX_MONTHS`] calendar months, a known currency.
///
/// [`MAX_MONTHS`]: crate::domain::lifecycle::forecast::MAX_MONTHS
fn parse_forecast(args: &Value) -> Result<AdminCommand, AdminError> {
    use crate::domain::lifecycle::forecast::{month_of, MAX_MONTHS};
    let a: ForecastArgs = parse_args(args)?;
    let from = parse_instant(&a.from).map_err(|e| DomainError::invalid("from", e))?;
    let to = parse_instant(&a.to).map_err(|e| DomainError::invalid("to", e))?;
    if to < from {
        return Err(DomainError::invalid("to", "must not be before from").into());
    }
    let months = month_of(&to) - month_of(&from) + 1;
    if usize::try_from(months).unwrap_or(usize::MAX) > MAX_MONTHS {
        return Err(DomainError::invalid(
            "to",
            format!("a forecast covers at most {MAX_MONTHS} months ({months} asked)"),
        )
        .into());
    }
    let currency = a
        .currency
        .map(|c| {
            crate::domain::money::Currency::parse(&c)
                .map(|_| c)
                .map_err(|e| DomainError::invalid("currency", e.to_string()))
        })
        .transpose()?;
    if let Some(c) = &a.test_clock_id {
        check_id("testClockId", c)?;
    }
    Ok(AdminCommand::Forecast {
        from,
        to,
        currency,
        test_clock: a.test_clock_id,
    })
}

/// forecastPartition's arguments (a part of a forecast, forwarded to a partition's owner).
fn parse_forecast_partition(args: &Value) -> Result<AdminCommand, AdminError> {
    let a: ForecastPartitionArgs = parse_args(args)?;
    let instant = |field: &'static str, text: &str| {
        parse_instant(text).map_err(|e| DomainError::invalid(field, e))
    };
    if let Some(c) = &a.test_clock_id {
        check_id("testClockId", c)?;
    }
    Ok(AdminCommand::ForecastPartition {
        partition: a.partition,
        query: ForecastQuery {
            now: instant("now", &a.now)?,
            start: instant("start", &a.start)?,
            to: instant("to", &a.to)?,
            currency: a.currency,
            test_clock: a.test_clock_id,
        },
    })
}

/// The test-clock commands' arguments (SPEC 11.5).
fn parse_test_clock_command(req: &Request) -> Result<AdminCommand, AdminError> {
    let name = req.command.as_str();
    Ok(match name {
        "createTestClock" => {
            let a: CreateTestClockArgs = parse_args(&req.args)?;
            let test_clock_id = a
                .test_clock_id
                .unwrap_or_else(|| derived_id("recur-test-clock", &req.id));
            check_id("testClockId", &test_clock_id)?;
            let frozen =
                parse_instant(&a.frozen_time).map_err(|e| DomainError::invalid("frozenTime", e))?;
            if let Some(name) = &a.name {
                crate::domain::command::check_text("name", name, 200)?;
            }
            AdminCommand::CreateTestClock {
                test_clock_id,
                frozen,
                name: a.name,
            }
        }
        "getTestClock" | "deleteTestClock" => {
            let a: TestClockArgs = parse_args(&req.args)?;
            check_id("testClockId", &a.test_clock_id)?;
            let test_clock_id = a.test_clock_id;
            if name == "getTestClock" {
                AdminCommand::GetTestClock { test_clock_id }
            } else {
                AdminCommand::DeleteTestClock { test_clock_id }
            }
        }
        "advanceTestClock" => {
            let a: AdvanceTestClockArgs = parse_args(&req.args)?;
            check_id("testClockId", &a.test_clock_id)?;
            let to = parse_instant(&a.to).map_err(|e| DomainError::invalid("to", e))?;
            AdminCommand::AdvanceTestClock {
                test_clock_id: a.test_clock_id,
                to,
            }
        }
        "listTestClocks" => {
            let a: PageArgs = parse_args(&req.args)?;
            AdminCommand::ListTestClocks {
                limit: page_limit(a.limit)?,
                after: page_cursor(a.cursor.as_deref())?,
            }
        }
        other => return Err(AdminError::UnknownCommand(other.to_string())),
    })
}

/// previewOrder's arguments.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PreviewArgs {
    order_id: String,
    until: String,
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
    match state.store.load(order_id).await? {
        crate::store::Loaded::Present(o) => {
            // A test clock's order sees the clock's time (its last change's, if the clock is
            // being deleted).
            let base = match &o.test_clock_id {
                None => state.clock.now(),
                Some(c) => state
                    .store
                    .test_clock_store()
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
            .store
            .orders_before(
                q.customer_id.as_deref(),
                q.test_clock.as_deref(),
                after.as_ref(),
                q.limit,
            )
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
    let counts = state.store.webhook_store().count_dead(&endpoints).await?;
    let total: u64 = counts.values().sum();
    if total > 0 {
        let token = state
            .ownership
            .token(0)
            .ok_or(StoreError::Fenced { partition: 0 })?;
        state
            .store
            .webhook_store()
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
