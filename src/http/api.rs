//! The HTTP API under `/v1` (SPEC 11.3): every admin command as `POST /v1/commands/{command}`,
//! the resource routes that name the same commands, and the reads that are no command (an
//! order's events, the daemons, the caller). A command goes through the admin server's one
//! way in ([`AdminHandle::execute`]): same routing (forwarded to its partition's owner),
//! idempotency (`Idempotency-Key` is the request id), rules and replies as over Redis; the
//! body of every answer is the reply object, its status code derived from the reply in one
//! place ([`status_of`]).

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get, post};
use axum::Router;
use serde_json::{json, Map, Value};

use super::auth::{required_scope, Access, AuthError, Caller};
use crate::admin::AdminHandle;
use crate::config::Scope;
use crate::domain::command::check_id;
use crate::domain::time::{format_instant, from_millis};
use crate::domain::ErrorCode;
use crate::store::daemons::StatusStore;
use crate::store::lease::LeaseStore;
use crate::store::orders::OrderStore;
use crate::store::Store;
use crate::wire::{Reply, Request};

/// The largest request body (SPEC 11.3): above it, 413.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Events an order's events route returns by default, and at most.
pub const EVENTS_DEFAULT_LIMIT: usize = 50;
pub const EVENTS_MAX_LIMIT: usize = 500;
/// How many entries of the order's partition stream one events request reads at most.
pub const EVENTS_MAX_SCANNED: usize = 20_000;

/// The parts of Redis the API reads itself, each a narrow handle.
struct ApiStores {
    status: StatusStore,
    orders: OrderStore,
    leases: LeaseStore,
}

/// What the API's handlers share.
pub struct Api {
    /// The admin server, once it runs (the listener answers probes before).
    admin: OnceLock<AdminHandle>,
    access: Access,
    /// Redis, for the reads the API makes itself (events, daemons), once start-up reached it.
    store: OnceLock<ApiStores>,
    /// How long a daemon counts as live after its last heartbeat.
    lease_ttl: Duration,
    /// `/v1/openapi.json`, rendered once.
    openapi: String,
}

impl Api {
    /// The API, its admin server to come ([`Api::serve`]); `openapi` is the document it serves
    /// at `/v1/openapi.json` (rendered by [`super::openapi::document_json`] from these routes).
    pub fn new(access: Access, lease_ttl: Duration, openapi: String) -> Api {
        Api {
            admin: OnceLock::new(),
            access,
            store: OnceLock::new(),
            lease_ttl,
            openapi,
        }
    }

    /// From now on commands run through `admin`.
    pub fn serve(&self, admin: AdminHandle, store: Store) {
        let _ = self.store.set(ApiStores {
            status: store.status_store(),
            orders: store.order_store(),
            leases: store.lease_store(),
        });
        if self.admin.set(admin).is_err() {
            tracing::warn!("the HTTP API was given its admin server twice; kept the first");
        }
    }
}

/// The `/v1` routes.
pub fn router(api: Arc<Api>) -> Router {
    Router::new()
        .route("/v1/commands/{command}", post(command))
        .route("/v1/orders", post(create_order).get(list_orders))
        .route("/v1/orders/{order_id}", get(get_order).delete(delete_order))
        .route("/v1/orders/{order_id}/events", get(order_events))
        .route("/v1/customers/{customer_id}/stats", get(customer_stats))
        .route("/v1/clock", get(clock))
        .route("/v1/whoami", get(whoami))
        .route("/v1/daemons", get(daemons))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1", any(no_route))
        .route("/v1/{*rest}", any(no_route))
        .with_state(api)
}

/// The HTTP status of a reply (SPEC 11.3): the one place it is chosen.
pub fn status_of(reply: &Reply) -> StatusCode {
    let Some(error) = &reply.error else {
        return StatusCode::OK;
    };
    match error.code {
        ErrorCode::InvalidRequest | ErrorCode::UnknownCommand => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthenticated => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden | ErrorCode::ForbiddenStatusChange => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::Conflict | ErrorCode::InvalidState | ErrorCode::ClockNotSimulated => {
            StatusCode::CONFLICT
        }
        ErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The reply as the answer's body, with `status`.
fn respond(status: StatusCode, reply: &Reply) -> Response {
    let body = serde_json::to_string(reply).unwrap_or_else(|_| {
        r#"{"id":null,"ok":false,"error":{"code":"INTERNAL","message":"cannot encode the reply"}}"#
            .to_string()
    });
    let mut response = (
        status,
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        body,
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    response
}

/// A request refused before (or instead of) running a command: answered as an error reply
/// with its status.
struct Refusal {
    id: Option<String>,
    status: StatusCode,
    code: ErrorCode,
    message: String,
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        respond(self.status, &Reply::error(self.id, self.code, self.message))
    }
}

fn refuse(
    id: Option<&str>,
    status: StatusCode,
    code: ErrorCode,
    message: impl Into<String>,
) -> Refusal {
    Refusal {
        id: id.map(str::to_string),
        status,
        code,
        message: message.into(),
    }
}

/// A request admitted: who makes it, and its id.
struct Admitted {
    caller: Caller,
    id: String,
}

/// Authenticates the caller (401), checks its scope covers `scope` (403), and reads the
/// request id from `Idempotency-Key` (400 when it is not an id; a fresh one without it).
fn admit(api: &Api, headers: &HeaderMap, scope: Scope, what: &str) -> Result<Admitted, Refusal> {
    let caller = api.access.authenticate(headers).map_err(|e| {
        let code = ErrorCode::Unauthenticated;
        if e != AuthError::Missing {
            tracing::debug!(reason = %e, "HTTP API request refused: unauthenticated");
        }
        refuse(None, StatusCode::UNAUTHORIZED, code, e.to_string())
    })?;
    if caller.scope < scope {
        return Err(refuse(
            None,
            StatusCode::FORBIDDEN,
            ErrorCode::Forbidden,
            format!(
                "{what} needs scope {}; this token has scope {}",
                scope.as_str(),
                caller.scope.as_str()
            ),
        ));
    }
    let mut keys = headers.get_all("idempotency-key").iter();
    let id = match (keys.next(), keys.next()) {
        (None, _) => uuid::Uuid::new_v4().to_string(),
        (Some(_), Some(_)) => {
            return Err(refuse(
                None,
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                "Idempotency-Key: give one key",
            ))
        }
        (Some(key), None) => {
            let key = key.to_str().unwrap_or_default();
            if let Err(e) = check_id("Idempotency-Key", key) {
                return Err(refuse(
                    None,
                    StatusCode::BAD_REQUEST,
                    ErrorCode::InvalidRequest,
                    e.to_string(),
                ));
            }
            key.to_string()
        }
    };
    Ok(Admitted { caller, id })
}

/// Runs `command` with `args` for the admitted caller, through the admin server (forwarded to
/// its partition's owner when that is another daemon), and answers its reply.
async fn run(api: &Api, admitted: Admitted, command: &str, args: Value) -> Response {
    let Some(admin) = api.admin.get() else {
        return refuse(
            Some(&admitted.id),
            StatusCode::SERVICE_UNAVAILABLE,
            ErrorCode::Unavailable,
            "the daemon is starting; retry",
        )
        .into_response();
    };
    let request = Request {
        id: admitted.id,
        reply_to: None,
        channel: admitted.caller.channel,
        command: command.to_string(),
        args,
        resolved_order_id: None,
    };
    let reply = admin.execute(request).await;
    let status = match status_of(&reply) {
        StatusCode::OK if command == "createOrder" => StatusCode::CREATED,
        other => other,
    };
    tracing::debug!(
        token = admitted.caller.name.as_deref().unwrap_or("-"),
        command,
        status = status.as_u16(),
        "HTTP API request answered"
    );
    respond(status, &reply)
}

/// Admits the caller for `command` and runs it.
async fn admit_and_run(api: &Api, headers: &HeaderMap, command: &str, args: Value) -> Response {
    match admit(api, headers, required_scope(command), command) {
        Ok(admitted) => run(api, admitted, command, args).await,
        Err(refused) => refused.into_response(),
    }
}

/// A JSON body as the command's args: at most [`MAX_BODY_BYTES`] (413), `application/json`
/// when not empty (415), a JSON object (400); empty = `{}`. A `channel` field is ignored (the
/// channel is the token's, SPEC 11.3).
async fn read_args(headers: &HeaderMap, body: Body) -> Result<Value, Refusal> {
    let too_large = || {
        refuse(
            None,
            StatusCode::PAYLOAD_TOO_LARGE,
            ErrorCode::InvalidRequest,
            format!("the body is larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(e) if e.to_string().contains("length limit") => return Err(too_large()),
        Err(e) => {
            return Err(refuse(
                None,
                StatusCode::BAD_REQUEST,
                ErrorCode::InvalidRequest,
                format!("cannot read the body: {e}"),
            ))
        }
    };
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    if !is_json(headers) {
        return Err(refuse(
            None,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ErrorCode::InvalidRequest,
            "the body must be JSON (Content-Type: application/json)",
        ));
    }
    let mut args: Value = serde_json::from_slice(&bytes).map_err(|e| {
        refuse(
            None,
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            format!("malformed JSON: {e}"),
        )
    })?;
    let Some(object) = args.as_object_mut() else {
        return Err(refuse(
            None,
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            "the body must be a JSON object (the command's args)",
        ));
    };
    object.remove("channel");
    Ok(args)
}

/// `application/json`, or `application/<something>+json`, parameters allowed.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(value) = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or_default().trim();
    let essence = essence.to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Any admin command: the body is its args (SPEC 4). The OpenAPI document lists one path per
/// command (`/v1/commands/<name>`, with its args' schema).
pub async fn command(
    State(api): State<Arc<Api>>,
    Path(command): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let admitted = match admit(&api, &headers, required_scope(&command), &command) {
        Ok(a) => a,
        Err(refused) => return refused.into_response(),
    };
    match read_args(&headers, body).await {
        Ok(args) => run(&api, admitted, &command, args).await,
        Err(refused) => refused.into_response(),
    }
}

/// createOrder.
#[utoipa::path(
    post,
    path = "/v1/orders",
    tag = "orders",
    operation_id = "createOrderResource",
    request_body(content = crate::domain::command::CreateOrderArgs, content_type = "application/json"),
    responses((status = 201, description = "The order created (or, for a retried key or an orderId created before, the first reply)", body = Reply))
)]
pub async fn create_order(State(api): State<Arc<Api>>, headers: HeaderMap, body: Body) -> Response {
    let admitted = match admit(&api, &headers, Scope::Write, "createOrder") {
        Ok(a) => a,
        Err(refused) => return refused.into_response(),
    };
    match read_args(&headers, body).await {
        Ok(args) => run(&api, admitted, "createOrder", args).await,
        Err(refused) => refused.into_response(),
    }
}

/// getOrder.
#[utoipa::path(
    get,
    path = "/v1/orders/{orderId}",
    tag = "orders",
    operation_id = "getOrderResource",
    params(("orderId" = String, Path)),
    responses((status = 200, description = "The order", body = Reply))
)]
pub async fn get_order(
    State(api): State<Arc<Api>>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    admit_and_run(&api, &headers, "getOrder", json!({"orderId": order_id})).await
}

/// deleteOrder.
#[utoipa::path(
    delete,
    path = "/v1/orders/{orderId}",
    tag = "orders",
    operation_id = "deleteOrderResource",
    params(("orderId" = String, Path)),
    responses((status = 200, description = "The deleted order", body = Reply))
)]
pub async fn delete_order(
    State(api): State<Arc<Api>>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    admit_and_run(&api, &headers, "deleteOrder", json!({"orderId": order_id})).await
}

/// The query as a map of its parameters (400 when it cannot be read, or names one twice or
/// one not in `known`).
fn query_args(
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
    known: &[&str],
) -> Result<BTreeMap<String, String>, Refusal> {
    let bad = |message: String| {
        refuse(
            None,
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            message,
        )
    };
    let Query(pairs) = query.map_err(|e| bad(format!("cannot read the query: {e}")))?;
    let mut out = BTreeMap::new();
    for (k, v) in pairs {
        if !known.contains(&k.as_str()) {
            return Err(bad(format!(
                "unknown query parameter '{k}' (known: {})",
                known.join(", ")
            )));
        }
        if out.insert(k.clone(), v).is_some() {
            return Err(bad(format!("query parameter '{k}' is given twice")));
        }
    }
    Ok(out)
}

/// A query number as JSON: the number when it is one, else the text (refused by the command).
fn number_or_text(text: &str) -> Value {
    text.parse::<i64>()
        .map_or_else(|_| json!(text), |n| json!(n))
}

/// listOrders.
#[utoipa::path(
    get,
    path = "/v1/orders",
    tag = "orders",
    operation_id = "listOrdersResource",
    params(
        ("customerId" = Option<String>, Query),
        ("status" = Option<String>, Query, description = "DRAFT | PENDING | ACTIVE | PAUSED | ENDED | CANCELED (default: all but DRAFT)"),
        ("limit" = Option<i64>, Query, description = "1-500, default 50"),
        ("cursor" = Option<String>, Query, description = "nextCursor of the previous page"),
    ),
    responses((status = 200, description = "`{orders, nextCursor}`, newest first", body = Reply))
)]
pub async fn list_orders(
    State(api): State<Arc<Api>>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let admitted = match admit(&api, &headers, Scope::Read, "listOrders") {
        Ok(a) => a,
        Err(refused) => return refused.into_response(),
    };
    let params = match query_args(query, &["customerId", "status", "limit", "cursor"]) {
        Ok(p) => p,
        Err(refused) => return refused.into_response(),
    };
    let mut args = Map::new();
    for (k, v) in params {
        let value = if k == "limit" {
            number_or_text(&v)
        } else {
            json!(v)
        };
        args.insert(k, value);
    }
    run(&api, admitted, "listOrders", Value::Object(args)).await
}

/// The order's events, newest first, each with its change's `version` and stream entry id.
#[utoipa::path(
    get,
    path = "/v1/orders/{orderId}/events",
    tag = "orders",
    operation_id = "listOrderEvents",
    params(
        ("orderId" = String, Path),
        ("limit" = Option<i64>, Query, description = "1-500, default 50"),
    ),
    responses((status = 200, description = "`{orderId, events}`: the order's events in its partition's stream, newest first", body = Reply))
)]
pub async fn order_events(
    State(api): State<Arc<Api>>,
    Path(order_id): Path<String>,
    headers: HeaderMap,
    query: Result<Query<Vec<(String, String)>>, QueryRejection>,
) -> Response {
    let admitted = match admit(&api, &headers, Scope::Read, "the order's events") {
        Ok(a) => a,
        Err(refused) => return refused.into_response(),
    };
    let id = admitted.id.as_str();
    let bad = |message: String| {
        refuse(
            Some(id),
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidRequest,
            message,
        )
        .into_response()
    };
    let params = match query_args(query, &["limit"]) {
        Ok(p) => p,
        Err(refused) => return refused.into_response(),
    };
    let Some(store) = api.store.get() else {
        return starting(id);
    };
    if let Err(e) = check_id("orderId", &order_id) {
        return bad(e.to_string());
    }
    let limit = match params.get("limit").map(|l| l.parse::<usize>()) {
        None => EVENTS_DEFAULT_LIMIT,
        Some(Ok(l)) if (1..=EVENTS_MAX_LIMIT).contains(&l) => l,
        Some(_) => return bad(format!("limit: must be between 1 and {EVENTS_MAX_LIMIT}")),
    };
    let internal = |e: crate::store::StoreError| {
        refuse(
            Some(id),
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            e.to_string(),
        )
        .into_response()
    };
    let changes = match store
        .status
        .order_changes(&order_id, limit, EVENTS_MAX_SCANNED)
        .await
    {
        Ok(c) => c,
        Err(e) => return internal(e),
    };
    if changes.is_empty() {
        match store
            .orders
            .load_readable(std::slice::from_ref(&order_id))
            .await
        {
            Ok(found) if found.is_empty() => {
                return refuse(
                    Some(id),
                    StatusCode::NOT_FOUND,
                    ErrorCode::NotFound,
                    format!("order {order_id} not found"),
                )
                .into_response()
            }
            Ok(_) => {}
            Err(e) => return internal(e),
        }
    }
    let mut events = Vec::new();
    for change in &changes {
        let version = change.change.get("version").cloned().unwrap_or(Value::Null);
        let listed = change.change.get("events").and_then(Value::as_array);
        for event in listed.into_iter().flatten().rev() {
            let mut event = event.clone();
            if let Some(obj) = event.as_object_mut() {
                obj.insert("version".into(), version.clone());
                obj.insert("streamId".into(), json!(change.entry_id));
            }
            events.push(event);
        }
    }
    events.truncate(limit);
    let result = json!({"orderId": order_id, "events": events});
    respond(StatusCode::OK, &Reply::ok(Some(admitted.id), result))
}

/// getCustomerStats.
#[utoipa::path(
    get,
    path = "/v1/customers/{customerId}/stats",
    tag = "customers",
    operation_id = "getCustomerStatsResource",
    params(("customerId" = String, Path)),
    responses((status = 200, description = "The customer's statistics", body = Reply))
)]
pub async fn customer_stats(
    State(api): State<Arc<Api>>,
    Path(customer_id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let args = json!({"customerId": customer_id});
    admit_and_run(&api, &headers, "getCustomerStats", args).await
}

/// getClock.
#[utoipa::path(
    get,
    path = "/v1/clock",
    tag = "clock",
    operation_id = "getClockResource",
    responses((status = 200, description = "`{now}` (and the advance under way, if any)", body = Reply))
)]
pub async fn clock(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    admit_and_run(&api, &headers, "getClock", json!({})).await
}

/// The caller: its token's name, channel and scope.
#[utoipa::path(
    get,
    path = "/v1/whoami",
    tag = "meta",
    operation_id = "whoami",
    responses((status = 200, description = "`{name, channel, scope}` of the token (name null without tokens)", body = Reply))
)]
pub async fn whoami(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    match admit(&api, &headers, Scope::Read, "whoami") {
        Ok(a) => {
            let result = json!({
                "name": a.caller.name,
                "channel": a.caller.channel,
                "scope": a.caller.scope.as_str(),
            });
            respond(StatusCode::OK, &Reply::ok(Some(a.id), result))
        }
        Err(refused) => refused.into_response(),
    }
}

/// Every live daemon: its id, the partitions it holds, when it started, and whether it is
/// ready, from the heartbeats, the leases and each daemon's status record.
#[utoipa::path(
    get,
    path = "/v1/daemons",
    tag = "meta",
    operation_id = "listDaemons",
    responses((status = 200, description = "`{daemons: [{daemonId, partitions, started, ready, reasons, lastHeartbeat}], partitions, unowned}`", body = Reply))
)]
pub async fn daemons(State(api): State<Arc<Api>>, headers: HeaderMap) -> Response {
    let admitted = match admit(&api, &headers, Scope::Read, "the daemons") {
        Ok(a) => a,
        Err(refused) => return refused.into_response(),
    };
    let Some(store) = api.store.get() else {
        return starting(&admitted.id);
    };
    match daemons_result(&api, store).await {
        Ok(result) => respond(StatusCode::OK, &Reply::ok(Some(admitted.id), result)),
        Err(e) => refuse(
            Some(&admitted.id),
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            e.to_string(),
        )
        .into_response(),
    }
}

/// 503 while the daemon has not reached Redis yet.
fn starting(id: &str) -> Response {
    refuse(
        Some(id),
        StatusCode::SERVICE_UNAVAILABLE,
        ErrorCode::Unavailable,
        "recur is starting; retry".to_string(),
    )
    .into_response()
}

async fn daemons_result(api: &Api, store: &ApiStores) -> Result<Value, crate::store::StoreError> {
    let ttl_ms = u64::try_from(api.lease_ttl.as_millis()).unwrap_or(u64::MAX);
    let live = store.leases.live_daemons(ttl_ms).await?;
    let holders = store.status.lease_holders().await?;
    let ids: Vec<String> = live.iter().map(|(id, _)| id.clone()).collect();
    let statuses = store.status.daemon_statuses(&ids).await?;
    let mut unowned = Vec::new();
    let mut held: BTreeMap<&str, Vec<u16>> = BTreeMap::new();
    for (p, holder) in (0u16..).zip(&holders) {
        match holder {
            Some(id) => held.entry(id.as_str()).or_default().push(p),
            None => unowned.push(p),
        }
    }
    let daemons: Vec<Value> = live
        .iter()
        .zip(statuses)
        .map(|((id, beat), status)| {
            let status: Value = status
                .and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or(Value::Null);
            let partitions = held.get(id.as_str()).cloned().unwrap_or_default();
            json!({
                "daemonId": id,
                "partitions": partitions,
                "partitionsHeld": partitions.len(),
                "started": status.get("started").cloned().unwrap_or(Value::Null),
                "ready": status.get("ready").cloned().unwrap_or(Value::Null),
                "reasons": status.get("reasons").cloned().unwrap_or(json!([])),
                "lastHeartbeat": from_millis(*beat).map(|t| format_instant(&t)),
            })
        })
        .collect();
    Ok(json!({
        "daemons": daemons,
        "partitions": holders.len(),
        "unowned": unowned,
    }))
}

/// This document.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    operation_id = "openapi",
    security(()),
    responses((status = 200, description = "The OpenAPI 3.1 document of the API", content_type = "application/json", body = Object))
)]
pub async fn openapi(State(api): State<Arc<Api>>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/json")],
        api.openapi.clone(),
    )
        .into_response()
}

async fn no_route() -> Response {
    refuse(
        None,
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        "no such route (GET /v1/openapi.json lists them)",
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_its_status() {
        let status = |code| status_of(&Reply::error(None, code, "x")).as_u16();
        assert_eq!(status_of(&Reply::ok(None, json!({}))).as_u16(), 200);
        for (code, want) in [
            (ErrorCode::InvalidRequest, 400),
            (ErrorCode::UnknownCommand, 400),
            (ErrorCode::Unauthenticated, 401),
            (ErrorCode::Forbidden, 403),
            (ErrorCode::ForbiddenStatusChange, 403),
            (ErrorCode::NotFound, 404),
            (ErrorCode::Conflict, 409),
            (ErrorCode::InvalidState, 409),
            (ErrorCode::ClockNotSimulated, 409),
            (ErrorCode::Unavailable, 503),
            (ErrorCode::Internal, 500),
        ] {
            assert_eq!(status(code), want, "{code}");
        }
    }

    #[test]
    fn json_content_types() {
        let with = |ct: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
            is_json(&h)
        };
        assert!(with("application/json"));
        assert!(with("Application/JSON; charset=utf-8"));
        assert!(with("application/merge-patch+json"));
        assert!(!with("text/plain"));
        assert!(!with("application/x-www-form-urlencoded"));
        assert!(!is_json(&HeaderMap::new()));
    }
}
