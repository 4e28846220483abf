//! The server side of the admin protocol: the pub/sub listener on `<prefix>:admin`, the
//! consumer-group reader of `<prefix>:commands`, idempotency by request id (kept replies and
//! in-flight duplicates), and publishing replies on `replyTo`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio_util::task::TaskTracker;

use super::command::AdminCommand;
use super::reply::{reply_of, AdminError, Routed};
use super::AdminState;
use crate::actors::order::RequestMeta;
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
async fn handle(state: &AdminState, req: Request) -> Option<Reply> {
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
        (Ok(command), Ok(())) => command.routing_partition(state.store.keys()),
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
    // The id's first body, wherever it routed (another body is a CONFLICT), and its kept
    // reply, in one round trip.
    let kept = match state
        .store
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
                .store
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
    state.inflight.finish(&req.id, Some(&reply));
    Some(reply)
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
    let meta = RequestMeta {
        id: req.id.clone(),
        body_hash: body_hash.to_string(),
    };
    let result = if command.waits_for_advance() {
        let _shared = state.scheduler.command_gate().await;
        command.run(state, meta, req).await
    } else {
        command.run(state, meta, req).await
    };
    reply_of(&req.id, result)
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

/// Turns a raw payload into (reply channel, reply). Never fails: bad input gets an error reply.
///
/// `None` when the request is not this daemon's to answer (see [`handle`]); a request that
/// cannot be routed is answered by partition 0's owner.
async fn handle_payload(state: &AdminState, payload: &[u8]) -> Option<(Option<String>, Reply)> {
    let unroutable = |reply_to: Option<String>, reply: Reply| {
        state.ownership.owns(0).then_some((reply_to, reply))
    };
    let max = state.config.max_request_bytes;
    let text = String::from_utf8_lossy(payload);
    if payload.len() > max {
        let reply_to = sniff(&text[..text.len().min(4096)], "replyTo");
        let id = sniff(&text[..text.len().min(4096)], "id");
        let msg = format!("request is {} bytes; the limit is {max}", payload.len());
        return unroutable(reply_to, Reply::error(id, ErrorCode::InvalidRequest, msg));
    }
    let value: Value = match serde_json::from_str(&text) {
        Ok(v) => v,
        Err(e) => {
            let reply = Reply::error(
                sniff(&text, "id"),
                ErrorCode::InvalidRequest,
                format!("malformed JSON: {e}"),
            );
            return unroutable(sniff(&text, "replyTo"), reply);
        }
    };
    let reply_to = value
        .get("replyTo")
        .and_then(Value::as_str)
        .map(str::to_string);
    let id = value.get("id").and_then(Value::as_str).map(str::to_string);
    match serde_json::from_value::<Request>(value) {
        Ok(req)
            if req
                .reply_to
                .as_deref()
                .is_some_and(|c| state.is_own_channel(c)) =>
        {
            // Replies on the admin or events channel would reach recur itself or every event
            // subscriber: refuse, and publish nothing there (the refusal is logged).
            let to = req.reply_to.unwrap_or_default();
            let msg =
                format!("replyTo may not be recur's own channel '{to}'; use a channel of your own");
            unroutable(
                None,
                Reply::error(Some(req.id), ErrorCode::InvalidRequest, msg),
            )
        }
        Ok(req) => {
            let reply_to = req.reply_to.clone();
            handle(state, req).await.map(|reply| (reply_to, reply))
        }
        Err(e) => unroutable(
            reply_to,
            Reply::error(
                id,
                ErrorCode::InvalidRequest,
                format!("invalid request envelope: {e}"),
            ),
        ),
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
    if let Err(e) = state.store.publish(&channel, &json).await {
        tracing::warn!(error = %e, %channel, "cannot publish reply");
    }
}

/// Starts the pub/sub listener and the stream consumer.
///
/// # Errors
/// The Redis error when the listeners cannot subscribe.
pub async fn start(
    state: Arc<AdminState>,
    shutdown: &Shutdown,
    tasks: &TaskTracker,
    requests: &TaskTracker,
) -> Result<(), redis::RedisError> {
    let pubsub = subscribe(&state).await?;
    tasks.spawn_local(listen_pubsub(
        Arc::clone(&state),
        pubsub,
        shutdown.clone(),
        requests.clone(),
    ));

    let mut conn = state.store.conn();
    let created: Result<(), redis::RedisError> = conn
        .xgroup_create_mkstream(state.store.keys().commands(), CONSUMER_GROUP, "$")
        .await;
    if let Err(e) = created {
        if e.code() != Some("BUSYGROUP") {
            return Err(e);
        }
    }
    // A connection of its own (on a cluster, a cluster connection of its own): XREADGROUP
    // BLOCK would stall every command queued behind it.
    let reader = state.config.redis.connect(Duration::from_secs(10)).await?;
    tasks.spawn_local(consume_stream(
        state,
        reader,
        shutdown.clone(),
        requests.clone(),
    ));
    Ok(())
}

async fn listen_pubsub(
    state: Arc<AdminState>,
    pubsub: redis::aio::PubSub,
    shutdown: Shutdown,
    requests: TaskTracker,
) {
    let mut pubsub = pubsub;
    let inbox_channel = state.store.keys().inbox_channel();
    let clock_channel = state.store.keys().clock_channel();
    let cron_channel = state.store.keys().cron_channel();
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
                            state.scheduler.clock_moved();
                        }
                        Some(msg) if msg.get_channel_name() == cron_channel => {
                            if let Ok(job) = msg.get_payload::<String>() {
                                state.scheduler.cron_announced(&job);
                            }
                        }
                        Some(msg) => {
                            let payload = msg.get_payload_bytes().to_vec();
                            let state = Arc::clone(&state);
                            requests.spawn_local(async move {
                                if let Some((reply_to, reply)) = handle_payload(&state, &payload).await {
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

/// What the daemon listens to: admin requests, and the announcements of other daemons (a
/// customer partition's inbox has entries; the shared clock moved).
fn channels(state: &AdminState) -> Vec<String> {
    let keys = state.store.keys();
    vec![
        keys.admin_channel(),
        keys.inbox_channel(),
        keys.clock_channel(),
        keys.cron_channel(),
    ]
}

async fn consume_stream(
    state: Arc<AdminState>,
    mut reader: crate::store::RedisConn,
    shutdown: Shutdown,
    requests: TaskTracker,
) {
    let key = state.store.keys().commands();
    let consumer = state.ownership.daemon_id().to_string();
    let every = state.ownership.config().lease_ttl;
    // First what this consumer holds pending (read before but not acknowledged), then new
    // entries; every lease TTL, entries another consumer left pending that long (a daemon that
    // died) are claimed, and the pending ones are read again.
    let mut from = "0".to_string();
    let mut last_claim: Option<std::time::Instant> = None;
    let mut outage = Outage::counted("reading the command stream", state.health.metrics_handle());
    while !shutdown.is_triggered() {
        if last_claim.is_none_or(|t| t.elapsed() >= every) {
            last_claim = Some(std::time::Instant::now());
            match state
                .store
                .claim_idle_commands(CONSUMER_GROUP, &consumer, every)
                .await
            {
                Ok(claimed) if claimed > 0 => {
                    tracing::info!(
                        entries = claimed,
                        "claimed command entries another daemon left pending"
                    );
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "cannot claim idle command entries"),
            }
            from = "0".to_string();
        }
        let opts = StreamReadOptions::default()
            .group(CONSUMER_GROUP, &consumer)
            .count(64)
            .block(500);
        let keys = [key.as_str()];
        let ids = [from.as_str()];
        let read: Result<Option<StreamReadReply>, _> = tokio::select! {
            _ = shutdown.wait() => return,
            r = reader.xread_options(&keys, &ids, &opts) => r,
        };
        let entries = match read {
            Ok(Some(reply)) => reply
                .keys
                .into_iter()
                .flat_map(|k| k.ids)
                .collect::<Vec<_>>(),
            Ok(None) => Vec::new(),
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
            if from == "0" {
                from = ">".to_string();
            }
            continue;
        }
        let handled = entries.into_iter().map(|entry| {
            let state = Arc::clone(&state);
            async move { handle_entry(&state, entry).await }
        });
        let batch = futures_util::future::join_all(handled);
        requests.spawn_local(batch).await.ok();
    }
}

/// Handles one entry of the command stream: runs it, dead-letters what cannot be read, replies,
/// and acknowledges it (except after a transient error: then it is read again after a restart).
async fn handle_entry(state: &AdminState, entry: redis::streams::StreamId) {
    let store = &state.store;
    let raw: Option<Vec<u8>> = entry.get("request");
    let Some(payload) = raw else {
        let dead = [
            ("id", entry.id.as_bytes()),
            ("error", b"no request field".as_slice()),
        ];
        if let Err(e) = store.dead_letter_command(&dead).await {
            tracing::warn!(error = %e, entry = %entry.id, "cannot dead-letter a command entry");
        }
        ack(store, &entry.id).await;
        return;
    };
    let Some((reply_to, reply)) = handle_payload(state, &payload).await else {
        // Another daemon's partition (or one in hand-over): forwarded to its owner.
        forward(state, &entry.id, &payload).await;
        return;
    };
    if reply.error.as_ref().is_some_and(|e| e.code.is_transient()) {
        // Not acknowledged: it will be read again after a restart.
        publish_reply(state, reply_to, &reply).await;
        return;
    }
    let malformed = reply
        .error
        .as_ref()
        .is_some_and(|e| e.code == ErrorCode::InvalidRequest)
        && serde_json::from_slice::<Request>(&payload).is_err();
    if malformed {
        let dead = [("request", payload.as_slice()), ("id", entry.id.as_bytes())];
        if let Err(e) = store.dead_letter_command(&dead).await {
            tracing::warn!(error = %e, entry = %entry.id, "cannot dead-letter a command entry");
        }
    }
    publish_reply(state, reply_to, &reply).await;
    ack(store, &entry.id).await;
}

/// How long a forwarded command-stream entry waits for its owner's kept reply before it is
/// left pending (and read again later).
const FORWARD_WAIT: Duration = Duration::from_secs(5);

/// Forwards a command-stream entry whose routing partition another daemon owns (SPEC 10): it is
/// published on the admin channel, where its owner applies it and replies, and acknowledged
/// once the owner's reply is kept. With no owner yet (a takeover), it stays pending and is read
/// again. An entry that cannot be routed is dead-lettered here; partition 0's owner answers it
/// from the admin channel.
async fn forward(state: &AdminState, entry_id: &str, payload: &[u8]) {
    let store = &state.store;
    let routed = serde_json::from_slice::<Request>(payload)
        .ok()
        .and_then(|req| {
            let command = AdminCommand::parse(&req).ok()?;
            check_id("id", &req.id).ok()?;
            Some((command.routing_partition(store.keys()), req.id))
        });
    // This daemon owns the routing partition when it resolved a cart name and forwarded the
    // request to the order's owner itself.
    let resolved_here = routed
        .as_ref()
        .is_some_and(|(p, _)| state.ownership.owns(*p));
    let text = String::from_utf8_lossy(payload);
    if !resolved_here {
        if let Err(e) = store.publish(&store.keys().admin_channel(), &text).await {
            tracing::warn!(error = %e, entry = %entry_id, "cannot forward a command entry; it stays pending");
            return;
        }
    }
    let Some((partition, request_id)) = routed else {
        if serde_json::from_slice::<Request>(payload).is_err() {
            let dead = [("request", payload), ("id", entry_id.as_bytes())];
            if let Err(e) = store.dead_letter_command(&dead).await {
                tracing::warn!(error = %e, entry = %entry_id, "cannot dead-letter a command entry");
            }
        }
        ack(store, entry_id).await;
        return;
    };
    let deadline = tokio::time::Instant::now() + FORWARD_WAIT;
    while tokio::time::Instant::now() < deadline {
        match forwarded_reply_kept(store, partition, &request_id).await {
            Ok(true) => {
                ack(store, entry_id).await;
                return;
            }
            Ok(false) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => {
                tracing::debug!(error = %e, entry = %entry_id, "cannot read a forwarded entry's reply");
                return;
            }
        }
    }
    tracing::debug!(entry = %entry_id, partition, "a forwarded command entry has no reply yet; it stays pending");
}

/// Whether the reply of a forwarded request is kept: in its routing partition, or (an
/// updateOrder by cart name) in the partition of the order it was resolved to.
async fn forwarded_reply_kept(
    store: &crate::store::Store,
    partition: u16,
    request_id: &str,
) -> Result<bool, StoreError> {
    if store.kept_reply(partition, request_id).await?.is_some() {
        return Ok(true);
    }
    match store.resolution(partition, request_id).await? {
        Some(order) => {
            let p = store.keys().partition(&order);
            Ok(store.kept_reply(p, request_id).await?.is_some())
        }
        None => Ok(false),
    }
}

async fn ack(store: &crate::store::Store, entry_id: &str) {
    if let Err(e) = store.ack_command(CONSUMER_GROUP, entry_id).await {
        // Read again after a restart, and answered from its kept reply.
        tracing::warn!(error = %e, entry = %entry_id, "cannot acknowledge a command entry");
    }
}
