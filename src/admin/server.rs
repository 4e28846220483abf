//! The server side of the admin protocol: the pub/sub listener on `<prefix>:admin` (or, with
//! enforced identities, each channel's `<prefix>:admin:<channel>`) and on the daemons'
//! `<prefix>:forward`, the consumer-group readers of the command streams, where a request's
//! channel comes from (SPEC 11.4), idempotency by request id (kept replies and in-flight
//! duplicates), and publishing replies on `replyTo`. [`handle`] is the one way a request is
//! run, whichever way it came in (pub/sub, a stream, the HTTP API).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tokio_util::task::TaskTracker;

use super::client::{AdminClient, ClientError, Via};
use super::command::AdminCommand;
use super::handle::{AdminHandle, Job, QUEUE_DEPTH};
use super::reply::{reply_of, AdminError, Routed};
use super::{AdminState, AdminStores};
use crate::actors::order::RequestMeta;
use crate::config::Identity;
use crate::domain::command::check_id;
use crate::domain::ErrorCode;
use crate::shutdown::Shutdown;
use crate::store::{Outage, StoreError};
use crate::wire::{Reply, Request, StoredReply};
use tracing::Instrument;

/// The consumer group that reads `<prefix>:commands`.
pub const CONSUMER_GROUP: &str = "recur";

/// One request being handled: its body hash and the duplicates waiting for its reply (none
/// when it was forwarded to another daemon).
type Waiters = (String, Vec<oneshot::Sender<Option<Reply>>>);

/// Requests being handled, by id: a duplicate waits for the first one's reply.
#[derive(Default)]
pub struct Inflight {
    waiting: Mutex<HashMap<String, Waiters>>,
}

enum Begin {
    First,
    Duplicate(oneshot::Receiver<Option<Reply>>),
    Conflict,
}

impl Inflight {
    fn begin(&self, id: &str, hash: &str) -> Begin {
        let mut w = self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        match w.get_mut(id) {
            None => {
                w.insert(id.to_string(), (hash.to_string(), Vec::new()));
                Begin::First
            }
            Some((h, _)) if h != hash => Begin::Conflict,
            Some((_, waiters)) => {
                let (tx, rx) = oneshot::channel();
                waiters.push(tx);
                Begin::Duplicate(rx)
            }
        }
    }

    fn finish(&self, id: &str, reply: Option<&Reply>) {
        let waiters = self
            .waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        for tx in waiters.map(|(_, w)| w).unwrap_or_default() {
            if tx.send(reply.cloned()).is_err() {
                tracing::debug!(request_id = %id, "a duplicate stopped waiting for its reply");
            }
        }
    }
}

fn conflict(id: &str) -> Reply {
    Reply::error(
        Some(id.to_string()),
        ErrorCode::Conflict,
        format!("request id {id} was already used with another body"),
    )
}

/// Handles a parsed request: kept reply, in-flight duplicate, or a fresh run.
///
/// Only the owner of the request's routing partition answers (SPEC 6): `None` when that is
/// another daemon, or nobody right now (a takeover; the client retries with the same id).
pub(super) async fn handle(state: &AdminState, req: Request) -> Option<Reply> {
    let parsed = AdminCommand::parse(&req);
    // Names recur does not know are one label, so a stray client cannot grow the series.
    let command = match &parsed {
        Err(AdminError::UnknownCommand(_)) => "unknown".to_string(),
        _ => req.command.clone(),
    };
    let order_id = parsed
        .as_ref()
        .ok()
        .and_then(AdminCommand::order_id)
        .map(str::to_string);
    let span = tracing::info_span!(
        "admin_request",
        request_id = %req.id,
        command = %command,
        order_id = tracing::field::Empty,
        partition = tracing::field::Empty,
    );
    if let Some(order_id) = &order_id {
        span.record("order_id", order_id.as_str());
    }
    let started = std::time::Instant::now();
    let reply = answer(state, req, parsed, &span)
        .instrument(span.clone())
        .await;
    if let Some(reply) = &reply {
        let code = reply.error.as_ref().map_or("OK", |e| e.code.as_str());
        let elapsed = started.elapsed();
        state
            .health
            .metrics()
            .admin_request(&command, code, elapsed);
        span.in_scope(|| {
            tracing::debug!(
                code,
                elapsed_us = u64::try_from(elapsed.as_micros()).unwrap_or(u64::MAX),
                "admin request answered"
            );
        });
    }
    reply
}

/// [`handle`] once parsed: `None` when another daemon (or nobody, during a takeover) answers.
async fn answer(
    state: &AdminState,
    req: Request,
    parsed: Result<AdminCommand, AdminError>,
    span: &tracing::Span,
) -> Option<Reply> {
    let id_ok = check_id("id", &req.id);
    let partition = match (&parsed, &id_ok) {
        (Ok(command), Ok(())) => command.routing_partition(state.stores.keys()),
        // What cannot be routed is answered by partition 0's owner.
        _ => 0,
    };
    // A request naming a daemon (getMetrics daemonId) is that daemon's, whatever it owns.
    let addressed = match &parsed {
        Ok(command) => command.addressed_daemon().map(str::to_string),
        Err(_) => None,
    };
    let answers = match &addressed {
        Some(daemon) => daemon == state.ownership.daemon_id() && id_ok.is_ok(),
        None => state.ownership.owns(partition),
    };
    if !answers {
        return None;
    }
    span.record("partition", partition);
    if let Err(e) = id_ok {
        let reply = Reply::error(
            Some(req.id.clone()),
            ErrorCode::InvalidRequest,
            e.to_string(),
        );
        return Some(reply);
    }
    if addressed.is_some() {
        // A read of this daemon: answered, not kept (no partition of its own to keep it in).
        return route(state, &req, parsed, &req.body_hash()).await.reply;
    }
    handle_owned(state, req, parsed, partition).await
}

async fn handle_owned(
    state: &AdminState,
    req: Request,
    parsed: Result<AdminCommand, AdminError>,
    partition: u16,
) -> Option<Reply> {
    let hash = req.body_hash();
    let ttl = state.config.reply_retention.as_secs().max(1);
    let reports_data = parsed.as_ref().map_or(true, AdminCommand::reports_data);
    // The id's first body, wherever it routed (another body is a CONFLICT), and its kept
    // reply, in one round trip.
    let kept = match state
        .stores
        .commands
        .claim_request(partition, &req.id, &hash, ttl)
        .await
    {
        Ok((Some(_), _)) => return Some(conflict(&req.id)),
        Ok((None, kept)) => kept,
        Err(e) => {
            return Some(Reply::error(
                Some(req.id.clone()),
                ErrorCode::Internal,
                e.to_string(),
            ))
        }
    };
    if let Some(json) = kept {
        // Another connection (a daemon that died before its WAIT came back) may have kept it:
        // confirmed before it is sent (redis.wait_replicas).
        if reports_data {
            if let Err(reply) = confirm(state, partition, &req.id).await {
                return Some(reply);
            }
        }
        return Some(match serde_json::from_str::<StoredReply>(&json) {
            Ok(s) if s.body_hash == hash => s.reply,
            Ok(_) => conflict(&req.id),
            Err(e) => Reply::error(
                Some(req.id.clone()),
                ErrorCode::Internal,
                format!("kept reply is corrupt: {e}"),
            ),
        });
    }
    match state.inflight.begin(&req.id, &hash) {
        Begin::First => {}
        Begin::Conflict => return Some(conflict(&req.id)),
        Begin::Duplicate(rx) => {
            return rx.await.unwrap_or_else(|_| {
                Some(Reply::error(
                    Some(req.id.clone()),
                    ErrorCode::Internal,
                    "the first attempt was lost; retry",
                ))
            })
        }
    }
    let routed = route(state, &req, parsed, &hash).await;
    let Some(mut reply) = routed.reply else {
        // Forwarded: the daemon that owns the order answers.
        state.inflight.finish(&req.id, None);
        return None;
    };
    if !routed.kept && reply.is_kept() {
        let stored = StoredReply {
            body_hash: hash,
            reply: reply.clone(),
        };
        let kept = match (
            serde_json::to_string(&stored),
            state.ownership.token(partition),
        ) {
            (Ok(json), Some(token)) => state
                .stores
                .commands
                .keep_reply(partition, &req.id, &json, ttl, &token)
                .await
                .map_err(|e| match e {
                    // Deposed meanwhile: the new owner answers the retry.
                    StoreError::Fenced { .. } => (ErrorCode::Unavailable, e.to_string()),
                    e => (ErrorCode::Internal, e.to_string()),
                }),
            (Ok(_), None) => Err((
                ErrorCode::Unavailable,
                format!("partition {partition} moved to another daemon; retry"),
            )),
            (Err(e), _) => Err((ErrorCode::Internal, format!("cannot encode the reply: {e}"))),
        };
        if let Err((code, e)) = kept {
            reply = Reply::error(Some(req.id.clone()), code, e);
        }
    }
    // What an order commit did not confirm (a reply kept here, or by another daemon) is
    // confirmed before it is sent: the reply kept, and everything it read.
    if !routed.confirmed && reply.is_kept() && reports_data {
        if let Err(refused) = confirm(state, partition, &req.id).await {
            reply = refused;
        }
    }
    state.inflight.finish(&req.id, Some(&reply));
    Some(reply)
}

/// Confirms (redis.wait_replicas) everything the routing partition's master held before a
/// reply is sent; the UNAVAILABLE or INTERNAL reply when it cannot be (the reply stays kept:
/// the retry gets it once it is confirmed).
async fn confirm(state: &AdminState, partition: u16, request_id: &str) -> Result<(), Reply> {
    if !state.stores.commands.confirmer().waits() {
        return Ok(());
    }
    let refused = |code, message: String| Reply::error(Some(request_id.to_string()), code, message);
    let Some(token) = state.ownership.token(partition) else {
        return Err(refused(
            ErrorCode::Unavailable,
            format!("partition {partition} moved to another daemon; retry"),
        ));
    };
    match state
        .stores
        .commands
        .confirmer()
        .confirm(partition, &token)
        .await
    {
        Ok(()) => Ok(()),
        Err(e @ (StoreError::Unconfirmed { .. } | StoreError::Fenced { .. })) => {
            Err(refused(ErrorCode::Unavailable, e.to_string()))
        }
        Err(e) => Err(refused(ErrorCode::Internal, e.to_string())),
    }
}

/// Parses the request once and runs it: every command but advanceClock waits while an advance
/// runs.
async fn route(
    state: &AdminState,
    req: &Request,
    parsed: Result<AdminCommand, AdminError>,
    body_hash: &str,
) -> Routed {
    let command = match parsed {
        Ok(c) => c,
        Err(e) => return reply_of(&req.id, Err(e)),
    };
    if let Err(e) = state.check_allowed(&req.channel, &req.command) {
        return reply_of(&req.id, Err(e));
    }
    let meta = RequestMeta {
        id: req.id.clone(),
        body_hash: body_hash.to_string(),
    };
    let result = if command.waits_for_advance() {
        match state.scheduler.try_command_gate() {
            Some(shared) => {
                let result = command.run(state, meta, req).await;
                drop(shared);
                result
            }
            // An advance of the daemon's clock runs: a test clock's order does not wait for
            // it (SPEC 11.5); any other order does.
            None if on_test_clock(state, &command).await => command.run(state, meta, req).await,
            None => {
                let _shared = state.scheduler.command_gate().await;
                command.run(state, meta, req).await
            }
        }
    } else {
        command.run(state, meta, req).await
    };
    reply_of(&req.id, result)
}

/// Whether the command is about an order on a test clock (read only while the daemon's clock
/// advances; an order that cannot be read waits like any other).
async fn on_test_clock(state: &AdminState, command: &AdminCommand) -> bool {
    let Some(order_id) = command.order_id() else {
        return false;
    };
    matches!(
        state.stores.orders.load(order_id).await,
        Ok(crate::store::Loaded::Present(o)) if o.test_clock_id.is_some()
    )
}

/// Reads the string value of `"key": "..."` out of text that may not be valid JSON, so a
/// malformed request can still be answered on its reply channel.
fn sniff(text: &str, key: &str) -> Option<String> {
    let needle = format!("\"{key}\"");
    let at = text.find(&needle)? + needle.len();
    let rest = text[at..].trim_start().strip_prefix(':')?.trim_start();
    serde_json::Deserializer::from_str(rest)
        .into_iter::<String>()
        .next()?
        .ok()
}

/// Where a request came in, which says what its channel (its application) is (SPEC 11.4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `<prefix>:admin` or `<prefix>:commands` (`admin.identity = "declared"`): the body's own
    /// `channel` field.
    Declared,
    /// `<prefix>:admin:<channel>` or `<prefix>:commands:<channel>` (`"enforced"`): that
    /// channel, whatever the body says; a body naming another is FORBIDDEN and `replyTo` must
    /// be in the channel's reply namespace.
    Channel(String),
    /// `<prefix>:forward`, or the HTTP API: a daemon took the request and established its
    /// channel (from the Redis name or the API token) before handing it on.
    Trusted,
}

/// What a raw payload is, once read.
enum Intake {
    /// A request with its channel established: handle it.
    Request(Request),
    /// Bad input or a forged channel: this reply (on this channel, if any), not kept.
    Refused(Option<String>, Reply),
    /// Nothing may be published for it (a `replyTo` outside its channel's namespace): logged
    /// and dropped.
    Dropped,
}

/// Reads a raw payload from `source` into a request whose channel is established, or the
/// refusal it gets. Never fails: bad input gets an error reply.
fn intake(state: &AdminState, payload: &[u8], source: &Source) -> Intake {
    let namespace = match source {
        Source::Channel(c) => Some(state.stores.keys().admin_keys().reply_namespace(c)),
        Source::Declared | Source::Trusted => None,
    };
    // Where a refusal may be published: nowhere outside the channel's namespace.
    let refuse = |reply_to: Option<String>, reply: Reply| match (&namespace, &reply_to) {
        (Some(ns), Some(to)) if !to.starts_with(ns.as_str()) => {
            tracing::warn!(reply_to = %to, namespace = %ns, request_id = ?reply.id, "request dropped: its replyTo is outside its channel's reply namespace");
            Intake::Dropped
        }
        _ => Intake::Refused(reply_to, reply),
    };
    let max = state.config.max_request_bytes;
    let text = String::from_utf8_lossy(payload);
    if payload.len() > max {
        let mut cut = text.len().min(4096);
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        let head = &text[..cut];
        let msg = format!("request is {} bytes; the limit is {max}", payload.len());
        let reply = Reply::error(sniff(head, "id"), ErrorCode::InvalidRequest, msg);
        return refuse(sniff(head, "replyTo"), reply);
    }
    let value: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            let reply = Reply::error(
                sniff(&text, "id"),
                ErrorCode::InvalidRequest,
                format!("malformed JSON: {e}"),
            );
            return refuse(sniff(&text, "replyTo"), reply);
        }
    };
    let reply_to = value
        .get("replyTo")
        .and_then(Value::as_str)
        .map(str::to_string);
    let id = value.get("id").and_then(Value::as_str).map(str::to_string);
    let mut req = match serde_json::from_value::<Request>(value) {
        Ok(req) => req,
        Err(e) => {
            let reply = Reply::error(
                id,
                ErrorCode::InvalidRequest,
                format!("invalid request envelope: {e}"),
            );
            return refuse(reply_to, reply);
        }
    };
    if let Some(to) = req.reply_to.as_deref() {
        if let Some(ns) = namespace.as_deref().filter(|ns| !to.starts_with(ns)) {
            tracing::warn!(reply_to = %to, namespace = %ns, request_id = %req.id, "request dropped: its replyTo is outside its channel's reply namespace");
            return Intake::Dropped;
        }
        if state.is_own_channel(to) {
            // Replies on the admin or events channel would reach recur itself or every event
            // subscriber: refuse, and publish nothing there (the refusal is logged).
            let msg =
                format!("replyTo may not be recur's own channel '{to}'; use a channel of your own");
            return Intake::Refused(
                None,
                Reply::error(Some(req.id), ErrorCode::InvalidRequest, msg),
            );
        }
    }
    if *source != Source::Trusted && super::command::is_internal(&req.command) {
        // Only daemons send these, on `<prefix>:forward`: to anyone else they do not exist.
        let reply = Reply::error(
            Some(req.id),
            ErrorCode::UnknownCommand,
            format!("unknown command '{}'", req.command),
        );
        return refuse(req.reply_to, reply);
    }
    if let Source::Channel(channel) = source {
        if !req.channel.is_empty() && req.channel != *channel {
            let msg = format!(
                "this request came in on channel '{channel}' and may not speak for channel '{}'",
                req.channel
            );
            let reply = Reply::error(Some(req.id), ErrorCode::Forbidden, msg);
            return Intake::Refused(req.reply_to, reply);
        }
        req.channel.clone_from(channel);
    }
    Intake::Request(req)
}

/// Turns a raw pub/sub payload into (reply channel, reply). Never fails: bad input gets an
/// error reply.
///
/// `None` when the request is not this daemon's to answer (see [`handle`]) or is dropped; a
/// request that cannot be routed is answered by partition 0's owner (every daemon reads every
/// pub/sub message: one of them answers).
async fn handle_payload(
    state: &AdminState,
    payload: &[u8],
    source: &Source,
) -> Option<(Option<String>, Reply)> {
    match intake(state, payload, source) {
        Intake::Request(req) => {
            let reply_to = req.reply_to.clone();
            handle(state, req).await.map(|reply| (reply_to, reply))
        }
        Intake::Refused(reply_to, reply) => state.ownership.owns(0).then_some((reply_to, reply)),
        Intake::Dropped => None,
    }
}

async fn publish_reply(state: &AdminState, reply_to: Option<String>, reply: &Reply) {
    let json = match serde_json::to_string(reply) {
        Ok(json) => json,
        Err(e) => {
            tracing::warn!(error = %e, request_id = ?reply.id, "cannot encode a reply");
            return;
        }
    };
    let Some(channel) = reply_to else {
        if !reply.ok {
            tracing::warn!(reply = %json, "request without replyTo refused");
        }
        return;
    };
    if let Err(e) = state.stores.commands.publish(&channel, &json).await {
        tracing::warn!(error = %e, %channel, "cannot publish reply");
    }
}

/// A command stream read by the consumer group, and where its entries' channel comes from.
#[derive(Debug, Clone)]
struct CommandStream {
    key: String,
    source: Source,
}

/// The command streams this daemon reads: `<prefix>:commands` (declared identities), or each
/// enforced channel's `<prefix>:commands:<channel>`.
fn command_streams(state: &AdminState) -> Vec<CommandStream> {
    let keys = state.stores.keys();
    match state.config.identity {
        Identity::Declared => vec![CommandStream {
            key: keys.admin_keys().commands(),
            source: Source::Declared,
        }],
        Identity::Enforced => state
            .config
            .channels
            .iter()
            .map(|c| CommandStream {
                key: keys.admin_keys().commands_of(c),
                source: Source::Channel(c.clone()),
            })
            .collect(),
    }
}

/// Starts the pub/sub listener, a consumer of each command stream, and the way in for other
/// threads (the HTTP API): the returned [`AdminHandle`].
///
/// # Errors
/// The Redis error when the listeners cannot subscribe.
pub async fn start(
    state: Arc<AdminState>,
    shutdown: &Shutdown,
    tasks: &TaskTracker,
    requests: &TaskTracker,
) -> Result<AdminHandle, redis::RedisError> {
    let forwarder = AdminClient::connect_via(
        &state.config.redis,
        state.stores.keys().prefix(),
        &Via::Forward,
    )
    .await
    .map_err(|e| match e {
        ClientError::Redis(e) => e,
        other => redis::RedisError::from((redis::ErrorKind::Io, "redis", other.to_string())),
    })?;
    let forwarder = Arc::new(forwarder);
    // Started once per state: a second start keeps the first client.
    let _ = state.forwarder.set(Arc::clone(&forwarder));
    let (jobs_tx, jobs_rx) = mpsc::channel(QUEUE_DEPTH);
    tasks.spawn_local(take_jobs(
        Arc::clone(&state),
        jobs_rx,
        shutdown.clone(),
        requests.clone(),
    ));

    let pubsub = subscribe(&state).await?;
    tasks.spawn_local(listen_pubsub(
        Arc::clone(&state),
        pubsub,
        shutdown.clone(),
        requests.clone(),
    ));

    for stream in command_streams(&state) {
        if let Err(e) = state
            .stores
            .commands
            .ensure_command_group(&stream.key, CONSUMER_GROUP, "$")
            .await
        {
            return Err(match e {
                StoreError::Redis(e) => Arc::try_unwrap(e).unwrap_or_else(|e| {
                    redis::RedisError::from((redis::ErrorKind::Io, "redis", e.to_string()))
                }),
                other => {
                    redis::RedisError::from((redis::ErrorKind::Io, "redis", other.to_string()))
                }
            });
        }
        // A connection of its own (on a cluster, a cluster connection of its own): XREADGROUP
        // BLOCK would stall every command queued behind it.
        let reader = state.config.redis.connect(Duration::from_secs(10)).await?;
        tasks.spawn_local(consume_stream(
            Arc::clone(&state),
            stream,
            reader,
            shutdown.clone(),
            requests.clone(),
        ));
    }
    Ok(AdminHandle::new(jobs_tx, forwarder))
}

/// Runs the requests other threads hand over (see [`AdminHandle`]) on this thread, each as
/// its own task, until shutdown; a request still waiting then is dropped (its caller answers
/// UNAVAILABLE).
async fn take_jobs(
    state: Arc<AdminState>,
    mut jobs_rx: mpsc::Receiver<Job>,
    shutdown: Shutdown,
    requests: TaskTracker,
) {
    loop {
        let job = tokio::select! {
            _ = shutdown.wait() => return,
            job = jobs_rx.recv() => match job {
                Some(job) => job,
                None => return,
            },
        };
        let state = Arc::clone(&state);
        requests.spawn_local(async move {
            let reply = handle(&state, job.request).await;
            // The caller may have gone (a client that hung up): nothing to do.
            let _ = job.reply_tx.send(reply);
        });
    }
}

async fn listen_pubsub(
    state: Arc<AdminState>,
    pubsub: redis::aio::PubSub,
    shutdown: Shutdown,
    requests: TaskTracker,
) {
    let mut pubsub = pubsub;
    let keys = state.stores.keys();
    let inbox_channel = keys.stats_keys().inbox_channel();
    let clock_channel = keys.clock_keys().clock_channel();
    let cron_channel = keys.clock_keys().cron_channel();
    // Where each request channel's requests get their channel from.
    let sources: HashMap<String, Source> = request_channels(&state).into_iter().collect();
    loop {
        {
            let mut messages = pubsub.on_message();
            loop {
                tokio::select! {
                    _ = shutdown.wait() => return,
                    msg = messages.next() => match msg {
                        Some(msg) if msg.get_channel_name() == inbox_channel => {
                            if let Ok(p) = msg.get_payload::<u16>() {
                                state.scheduler.inbox_has_entries(p);
                            }
                        }
                        Some(msg) if msg.get_channel_name() == clock_channel => {
                            if msg.get_payload_bytes() == b"tc" {
                                state.scheduler.test_clocks_moved();
                            } else {
                                state.scheduler.clock_moved();
                            }
                        }
                        Some(msg) if msg.get_channel_name() == cron_channel => {
                            if let Ok(job) = msg.get_payload::<String>() {
                                state.scheduler.cron_announced(&job);
                            }
                        }
                        Some(msg) => {
                            let Some(source) = sources.get(msg.get_channel_name()).cloned() else {
                                continue;
                            };
                            let payload = msg.get_payload_bytes().to_vec();
                            let state = Arc::clone(&state);
                            requests.spawn_local(async move {
                                if let Some((reply_to, reply)) = handle_payload(&state, &payload, &source).await {
                                    publish_reply(&state, reply_to, &reply).await;
                                }
                            });
                        }
                        None => break,
                    }
                }
            }
        }
        let mut outage = Outage::counted(
            "subscribing to the admin channel",
            state.health.metrics_handle(),
        );
        let mut pause = outage.log_failure(&"the pub/sub connection was lost");
        pubsub = loop {
            tokio::select! {
                _ = shutdown.wait() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            match subscribe(&state).await {
                Ok(p) => break p,
                Err(e) => pause = outage.log_failure(&e),
            }
        };
        outage.log_success();
    }
}

/// Subscribes to the daemon's channels. On a cluster, on the first seed node that answers: a
/// PUBLISH on any node reaches every node's subscribers.
async fn subscribe(state: &AdminState) -> Result<redis::aio::PubSub, redis::RedisError> {
    let mut p = state.config.redis.pubsub().await?;
    p.subscribe(channels(state)).await?;
    Ok(p)
}

/// The channels requests are read from, each with where its requests' channel comes from:
/// `<prefix>:admin` (declared) or each enforced channel's `<prefix>:admin:<channel>`, and
/// the daemons' `<prefix>:forward`. With enforced identities plain `<prefix>:admin` is not
/// read (SPEC 11.4).
fn request_channels(state: &AdminState) -> Vec<(String, Source)> {
    let keys = state.stores.keys();
    let mut out = vec![(keys.admin_keys().forward_channel(), Source::Trusted)];
    match state.config.identity {
        Identity::Declared => out.push((keys.admin_keys().admin_channel(), Source::Declared)),
        Identity::Enforced => out.extend(state.config.channels.iter().map(|c| {
            (
                keys.admin_keys().admin_channel_of(c),
                Source::Channel(c.clone()),
            )
        })),
    }
    out
}

/// What the daemon listens to: admin requests, and the announcements of other daemons (a
/// customer partition's inbox has entries; the shared clock moved).
fn channels(state: &AdminState) -> Vec<String> {
    let keys = state.stores.keys();
    let mut out: Vec<String> = request_channels(state)
        .into_iter()
        .map(|(c, _)| c)
        .collect();
    out.extend([
        keys.stats_keys().inbox_channel(),
        keys.clock_keys().clock_channel(),
        keys.clock_keys().cron_channel(),
    ]);
    out
}

/// How many times a command-stream entry that keeps failing with a transient error (INTERNAL,
/// UNAVAILABLE) is delivered before it is answered with its error, acknowledged and moved to
/// `<prefix>:commands:dead`.
pub const MAX_DELIVERIES: usize = 8;

/// The pause before a failed entry is delivered again: doubling from 100 ms, at most 5 s (eight
/// deliveries span about 11 s: long enough to ride out a Redis hiccup, short enough that the
/// client gets its answer).
pub fn redelivery_backoff(deliveries: usize) -> Duration {
    let doublings = u32::try_from(deliveries.saturating_sub(1))
        .unwrap_or(u32::MAX)
        .min(10);
    Duration::from_millis(100u64 << doublings).min(Duration::from_secs(5))
}

/// What became of one entry of the command stream.
enum Handled {
    /// Answered and acknowledged (or dead-lettered and acknowledged).
    Done,
    /// Failed with a transient error; still pending, to be delivered again after a pause.
    Failed,
    /// Forwarded to another daemon, whose reply is not kept yet; still pending.
    Waiting,
}

/// When each pending entry of this consumer may be delivered again.
#[derive(Default)]
struct Redeliveries {
    due: HashMap<String, std::time::Instant>,
}

impl Redeliveries {
    /// The next instant one is due, if any.
    fn next(&self) -> Option<std::time::Instant> {
        self.due.values().min().copied()
    }
}

async fn consume_stream(
    state: Arc<AdminState>,
    stream: CommandStream,
    mut reader: crate::store::RedisConn,
    shutdown: Shutdown,
    requests: TaskTracker,
) {
    let key = stream.key.clone();
    let consumer = state.ownership.daemon_id().to_string();
    let every = state.ownership.config().lease_ttl;
    // New entries are read as they come (`>`), so one failing entry never holds back the
    // others. Pending ones (left by a failure, a forward still waiting, a restart, or claimed
    // from a daemon that died: every lease TTL, entries another consumer left pending that long
    // are claimed) are delivered again each on its own backoff, and given up after
    // MAX_DELIVERIES.
    let mut last_claim: Option<std::time::Instant> = None;
    let mut retries = Redeliveries::default();
    // Pending entries not seen by this process yet (start-up, a claim) are delivered at once.
    let mut sweep_pending = true;
    let mut outage = Outage::counted("reading the command stream", state.health.metrics_handle());
    while !shutdown.is_triggered() {
        if last_claim.is_none_or(|t| t.elapsed() >= every) {
            last_claim = Some(std::time::Instant::now());
            match state
                .stores
                .commands
                .claim_idle_commands(&key, CONSUMER_GROUP, &consumer, every)
                .await
            {
                Ok(claimed) if claimed > 0 => {
                    tracing::info!(
                        entries = claimed,
                        "claimed command entries another daemon left pending"
                    );
                    sweep_pending = true;
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot claim idle command entries"),
            }
        }
        let now = std::time::Instant::now();
        if sweep_pending || retries.next().is_some_and(|t| t <= now) {
            match redeliver(
                &state,
                &stream,
                &consumer,
                &mut retries,
                sweep_pending,
                &requests,
            )
            .await
            {
                Ok(()) => sweep_pending = false,
                Err(e) => {
                    let pause = outage.log_failure(&e);
                    tokio::select! {
                        _ = shutdown.wait() => return,
                        _ = tokio::time::sleep(pause) => {}
                    }
                    continue;
                }
            }
        }
        // Block until a new entry comes, at most until the next redelivery is due.
        let block = retries.next().map_or(Duration::from_millis(500), |t| {
            t.saturating_duration_since(std::time::Instant::now())
                .clamp(Duration::from_millis(1), Duration::from_millis(500))
        });
        let opts = StreamReadOptions::default()
            .group(CONSUMER_GROUP, &consumer)
            .count(64)
            .block(usize::try_from(block.as_millis()).unwrap_or(500));
        let keys = [key.as_str()];
        let read: Result<Option<StreamReadReply>, _> = tokio::select! {
            _ = shutdown.wait() => return,
            r = reader.xread_options(&keys, &[">"], &opts) => r,
        };
        let entries = match read {
            Ok(Some(reply)) => reply
                .keys
                .into_iter()
                .flat_map(|k| k.ids)
                .collect::<Vec<_>>(),
            Ok(None) => Vec::new(),
            Err(e) if e.code() == Some("NOGROUP") => {
                // Redis lost its data (restarted without persistence, or flushed): the group
                // is made again, from the stream's start, so entries added since are read.
                match state.stores.commands.ensure_command_group(&key, CONSUMER_GROUP, "0").await {
                    Ok(()) => tracing::warn!(
                        "the command stream's consumer group was missing (Redis lost its data?); created it again"
                    ),
                    Err(e) => {
                        let pause = outage.log_failure(&e);
                        tokio::select! {
                            _ = shutdown.wait() => return,
                            _ = tokio::time::sleep(pause) => {}
                        }
                    }
                }
                retries.due.clear();
                continue;
            }
            Err(e) => {
                let pause = outage.log_failure(&e);
                tokio::select! {
                    _ = shutdown.wait() => return,
                    _ = tokio::time::sleep(pause) => {}
                }
                continue;
            }
        };
        outage.log_success();
        if entries.is_empty() {
            continue;
        }
        handle_all(&state, &stream, entries, &mut retries, &requests).await;
    }
}

/// Delivers again the pending entries whose pause is over (every pending entry when `all`),
/// oldest first; gives up on those delivered MAX_DELIVERIES times already.
async fn redeliver(
    state: &Arc<AdminState>,
    stream: &CommandStream,
    consumer: &str,
    retries: &mut Redeliveries,
    all: bool,
    requests: &TaskTracker,
) -> Result<(), StoreError> {
    let pending = state
        .stores
        .commands
        .pending_commands(&stream.key, CONSUMER_GROUP, consumer, 1024)
        .await?;
    let now = std::time::Instant::now();
    let known: std::collections::HashSet<&str> =
        pending.iter().map(|(id, _)| id.as_str()).collect();
    // Forget what is no longer pending (acknowledged elsewhere, the group made again).
    retries.due.retain(|id, _| known.contains(id.as_str()));
    let mut due = Vec::new();
    for (id, deliveries) in &pending {
        // One this process has not scheduled (start-up, claimed, or a pass that failed) is
        // due at once.
        let ready = all || retries.due.get(id).is_none_or(|at| *at <= now);
        if !ready {
            continue;
        }
        if *deliveries >= MAX_DELIVERIES {
            give_up(state, stream, id, *deliveries).await;
            retries.due.remove(id);
            continue;
        }
        due.push(id.clone());
    }
    let entries = state
        .stores
        .commands
        .redeliver_commands(&stream.key, CONSUMER_GROUP, consumer, &due)
        .await?;
    for id in &due {
        retries.due.remove(id);
    }
    if !entries.is_empty() {
        handle_all(state, stream, entries, retries, requests).await;
    }
    Ok(())
}

/// Handles a batch of entries concurrently and schedules the redelivery of those left pending.
async fn handle_all(
    state: &Arc<AdminState>,
    stream: &CommandStream,
    entries: Vec<redis::streams::StreamId>,
    retries: &mut Redeliveries,
    requests: &TaskTracker,
) {
    let handled = entries.into_iter().map(|entry| {
        let state = Arc::clone(state);
        let stream = stream.clone();
        async move {
            let outcome = handle_entry(&state, &stream, &entry).await;
            (entry.id, outcome)
        }
    });
    let batch = futures_util::future::join_all(handled);
    let Ok(outcomes) = requests.spawn_local(batch).await else {
        return;
    };
    let pending: Vec<&String> = outcomes
        .iter()
        .filter(|(_, o)| !matches!(o, Handled::Done))
        .map(|(id, _)| id)
        .collect();
    if pending.is_empty() {
        return;
    }
    // How often each was delivered decides its pause (a forward waiting for a new owner is
    // tried again every second and never given up).
    let counts: HashMap<String, usize> = match state
        .stores
        .commands
        .pending_commands(
            &stream.key,
            CONSUMER_GROUP,
            state.ownership.daemon_id(),
            1024,
        )
        .await
    {
        Ok(p) => p.into_iter().collect(),
        Err(_) => HashMap::new(),
    };
    let now = std::time::Instant::now();
    for (id, outcome) in &outcomes {
        let pause = match outcome {
            Handled::Done => continue,
            Handled::Waiting => Duration::from_secs(1),
            Handled::Failed => redelivery_backoff(counts.get(id).copied().unwrap_or(1)),
        };
        retries.due.insert(id.clone(), now + pause);
    }
}

/// What one command-stream entry comes to.
enum EntryOutcome {
    /// This reply, on this channel; `malformed` when the entry is no request at all (it is
    /// dead-lettered too).
    Answer {
        reply_to: Option<String>,
        reply: Reply,
        malformed: bool,
    },
    /// A request another daemon answers (its partition's owner): forward it.
    Elsewhere(Request),
    /// Nothing may be published for it (a `replyTo` outside its channel's namespace).
    Dropped,
}

/// Reads and runs one entry's payload. Only this daemon reads the entry (the consumer group
/// hands it to one consumer), so a refusal is answered here, whoever owns partition 0.
async fn answer_entry(state: &AdminState, stream: &CommandStream, payload: &[u8]) -> EntryOutcome {
    match intake(state, payload, &stream.source) {
        Intake::Request(req) => {
            let reply_to = req.reply_to.clone();
            match handle(state, req.clone()).await {
                Some(reply) => EntryOutcome::Answer {
                    reply_to,
                    reply,
                    malformed: false,
                },
                None => EntryOutcome::Elsewhere(req),
            }
        }
        Intake::Refused(reply_to, reply) => EntryOutcome::Answer {
            reply_to,
            reply,
            malformed: serde_json::from_slice::<Request>(payload).is_err(),
        },
        Intake::Dropped => EntryOutcome::Dropped,
    }
}

/// An entry delivered MAX_DELIVERIES times without an answer other than a transient error: it
/// is answered with that error once more (its final reply), copied to the dead-letter stream
/// with the error, and acknowledged.
async fn give_up(state: &AdminState, stream: &CommandStream, entry_id: &str, deliveries: usize) {
    let store = &state.stores;
    let entries = match store.commands.command_entry(&stream.key, entry_id).await {
        Ok(e) => e,
        Err(e) => {
            tracing::warn!(error = %e, entry = %entry_id, "cannot read a failing command entry");
            return;
        }
    };
    let payload: Vec<u8> = entries
        .and_then(|entry| entry.get::<Vec<u8>>("request"))
        .unwrap_or_default();
    let (reply_to, reply) = match answer_entry(state, stream, &payload).await {
        EntryOutcome::Answer {
            reply_to, reply, ..
        } => (reply_to, reply),
        EntryOutcome::Elsewhere(req) => (
            req.reply_to,
            Reply::error(
                Some(req.id),
                ErrorCode::Unavailable,
                "the request's partition has no owner",
            ),
        ),
        EntryOutcome::Dropped => {
            dead_letter(
                state,
                stream,
                entry_id,
                &payload,
                "dropped: replyTo outside the channel's reply namespace",
            )
            .await;
            ack(store, stream, entry_id).await;
            return;
        }
    };
    if reply.error.as_ref().is_some_and(|e| !e.code.is_transient()) {
        // It went through this time: an ordinary answer.
        publish_reply(state, reply_to, &reply).await;
        ack(store, stream, entry_id).await;
        return;
    }
    let error = reply.error.as_ref().map_or_else(String::new, |e| {
        format!("{}: {}", e.code.as_str(), e.message)
    });
    let count = deliveries.to_string();
    let dead = [
        ("request", payload.as_slice()),
        ("id", entry_id.as_bytes()),
        ("stream", stream.key.as_bytes()),
        ("error", error.as_bytes()),
        ("deliveries", count.as_bytes()),
    ];
    if let Err(e) = store.commands.dead_letter_command(&dead).await {
        tracing::warn!(error = %e, entry = %entry_id, "cannot dead-letter a command entry");
        return;
    }
    tracing::error!(entry = %entry_id, deliveries, error = %error, "a command entry kept failing; answered with its error and dead-lettered");
    publish_reply(state, reply_to, &reply).await;
    ack(store, stream, entry_id).await;
}

/// Copies an entry to `<prefix>:commands:dead` with why (logged when it cannot be).
async fn dead_letter(
    state: &AdminState,
    stream: &CommandStream,
    entry_id: &str,
    payload: &[u8],
    error: &str,
) {
    let dead = [
        ("request", payload),
        ("id", entry_id.as_bytes()),
        ("stream", stream.key.as_bytes()),
        ("error", error.as_bytes()),
    ];
    if let Err(e) = state.stores.commands.dead_letter_command(&dead).await {
        tracing::warn!(error = %e, entry = %entry_id, "cannot dead-letter a command entry");
    }
}

/// Handles one entry of a command stream: runs it, dead-letters what cannot be read, replies,
/// and acknowledges it (except after a transient error: then it stays pending and is delivered
/// again after a pause).
async fn handle_entry(
    state: &AdminState,
    stream: &CommandStream,
    entry: &redis::streams::StreamId,
) -> Handled {
    let store = &state.stores;
    let raw: Option<Vec<u8>> = entry.get("request");
    let Some(payload) = raw else {
        dead_letter(state, stream, &entry.id, b"", "no request field").await;
        ack(store, stream, &entry.id).await;
        return Handled::Done;
    };
    match answer_entry(state, stream, &payload).await {
        EntryOutcome::Dropped => {
            let why = "dropped: replyTo outside the channel's reply namespace";
            dead_letter(state, stream, &entry.id, &payload, why).await;
            ack(store, stream, &entry.id).await;
            Handled::Done
        }
        // Another daemon's partition (or one in hand-over): forwarded to its owner.
        EntryOutcome::Elsewhere(req) => {
            if forward(state, stream, &entry.id, &req).await {
                Handled::Done
            } else {
                Handled::Waiting
            }
        }
        EntryOutcome::Answer {
            reply_to,
            reply,
            malformed,
        } => {
            if reply.error.as_ref().is_some_and(|e| e.code.is_transient()) {
                // Not acknowledged: delivered again after a pause.
                publish_reply(state, reply_to, &reply).await;
                return Handled::Failed;
            }
            if malformed {
                dead_letter(state, stream, &entry.id, &payload, "malformed").await;
            }
            publish_reply(state, reply_to, &reply).await;
            ack(store, stream, &entry.id).await;
            Handled::Done
        }
    }
}

/// How long a forwarded command-stream entry waits for its owner's kept reply before it is
/// left pending (and read again later).
const FORWARD_WAIT: Duration = Duration::from_secs(5);

/// Forwards a command-stream request whose routing partition another daemon owns (SPEC 10): it
/// is published, with the channel this daemon established, on `<prefix>:forward`, where its
/// owner applies it and replies, and the entry is acknowledged once the owner's reply is kept.
/// With no owner yet (a takeover), it stays pending and is read again.
async fn forward(
    state: &AdminState,
    stream: &CommandStream,
    entry_id: &str,
    req: &Request,
) -> bool {
    let store = &state.stores;
    let routed = AdminCommand::parse(req)
        .ok()
        .filter(|_| check_id("id", &req.id).is_ok())
        .map(|command| command.routing_partition(store.keys()));
    // This daemon owns the routing partition when it resolved a cart name and forwarded the
    // request to the order's owner itself.
    let resolved_here = routed.is_some_and(|p| state.ownership.owns(p));
    if !resolved_here {
        let json = match serde_json::to_string(req) {
            Ok(json) => json,
            Err(e) => {
                tracing::warn!(error = %e, entry = %entry_id, "cannot encode a command entry to forward it");
                return false;
            }
        };
        if let Err(e) = store
            .commands
            .publish(&store.keys().admin_keys().forward_channel(), &json)
            .await
        {
            tracing::warn!(error = %e, entry = %entry_id, "cannot forward a command entry; it stays pending");
            return false;
        }
    }
    let Some(partition) = routed else {
        // Unroutable: partition 0's owner answers it from the forward channel.
        ack(store, stream, entry_id).await;
        return true;
    };
    let deadline = tokio::time::Instant::now() + FORWARD_WAIT;
    while tokio::time::Instant::now() < deadline {
        match forwarded_reply_kept(store, partition, &req.id).await {
            Ok(true) => {
                ack(store, stream, entry_id).await;
                return true;
            }
            Ok(false) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => {
                tracing::debug!(error = %e, entry = %entry_id, "cannot read a forwarded entry's reply");
                return false;
            }
        }
    }
    tracing::debug!(entry = %entry_id, partition, "a forwarded command entry has no reply yet; it stays pending");
    false
}

/// Whether the reply of a forwarded request is kept: in its routing partition, or (an
/// updateOrder by cart name) in the partition of the order it was resolved to.
async fn forwarded_reply_kept(
    store: &AdminStores,
    partition: u16,
    request_id: &str,
) -> Result<bool, StoreError> {
    if store
        .clock
        .kept_reply(partition, request_id)
        .await?
        .is_some()
    {
        return Ok(true);
    }
    match store.carts.resolution(partition, request_id).await? {
        Some(order) => {
            let p = store.keys().partition(&order);
            Ok(store.clock.kept_reply(p, request_id).await?.is_some())
        }
        None => Ok(false),
    }
}

async fn ack(store: &AdminStores, stream: &CommandStream, entry_id: &str) {
    if let Err(e) = store
        .commands
        .ack_command(&stream.key, CONSUMER_GROUP, entry_id)
        .await
    {
        // Read again after a restart, and answered from its kept reply.
        tracing::warn!(error = %e, entry = %entry_id, "cannot acknowledge a command entry");
    }
}
