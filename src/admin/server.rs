//! The server side of the admin protocol: the pub/sub listener on `<prefix>:admin` (or, with
//! enforced identities, each channel's `<prefix>:admin:<channel>`) and on the daemons'
//! `<prefix>:forward`, the consumer-group readers of the command streams, where a request's
//! channel comes from (SPEC 11.4), idempotency by request id (kept replies and in-flight
//! duplicates), and publishing replies on `replyTo`. [`handle`] is the one way a request is
//! run, whichever way it came in (pub/sub, a stream, the HTTP API).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::mpsc;
use tokio_util::task::TaskTracker;

use super::client::{AdminClient, ClientError, Via};
use super::command::AdminCommand;
use super::handle::{AdminHandle, Job, QUEUE_DEPTH};
use super::idempotency::{self, NextAction};
use super::intake::{intake, publish_reply, Intake, Source};
use super::reply::{reply_of, AdminError, Routed};
use super::streams::*;
use super::AdminState;
use crate::actors::order::RequestMeta;
use crate::config::Identity;
use crate::domain::command::check_id;
use crate::domain::ErrorCode;
use crate::shutdown::Shutdown;
use crate::store::{Outage, StoreError};
use crate::wire::{Reply, Request};
use tracing::Instrument;

/// The consumer group that reads `<prefix>:commands`.
pub const CONSUMER_GROUP: &str = "recur";

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
pub(super) async fn answer(
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

pub(super) async fn handle_owned(
    state: &AdminState,
    req: Request,
    parsed: Result<AdminCommand, AdminError>,
    partition: u16,
) -> Option<Reply> {
    let hash = req.body_hash();
    let reports_data = parsed.as_ref().map_or(true, AdminCommand::reports_data);
    match idempotency::try_processing(state, &req, &hash, partition, reports_data).await {
        NextAction::Return(reply) => return Some(reply),
        NextAction::Wait(rx) => {
            return rx.await.unwrap_or_else(|_| {
                Some(Reply::error(
                    Some(req.id.clone()),
                    ErrorCode::Internal,
                    "the first attempt was lost; retry",
                ))
            })
        }
        NextAction::Proceed => {}
    }
    let routed = route(state, &req, parsed, &hash).await;
    let Some(reply) = routed.reply else {
        // Forwarded: the daemon that owns the order answers.
        state.inflight.finish(&req.id, None);
        return None;
    };
    let done = idempotency::Done {
        kept: routed.kept,
        confirmed: routed.confirmed,
        reports_data,
    };
    let reply = idempotency::save_response(state, &req.id, hash, partition, reply, done).await;
    state.inflight.finish(&req.id, Some(&reply));
    Some(reply)
}

/// Parses the request once and runs it: every command but advanceClock waits while an advance
/// runs.
pub(super) async fn route(
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
pub(super) async fn on_test_clock(state: &AdminState, command: &AdminCommand) -> bool {
    let Some(order_id) = command.order_id() else {
        return false;
    };
    matches!(
        state.stores.orders.load(order_id).await,
        Ok(crate::store::Loaded::Present(o)) if o.test_clock_id.is_some()
    )
}

/// Turns a raw pub/sub payload into (reply channel, reply). Never fails: bad input gets an
/// error reply.
///
/// `None` when the request is not this daemon's to answer (see [`handle`]) or is dropped; a
/// request that cannot be routed is answered by partition 0's owner (every daemon reads every
/// pub/sub message: one of them answers).
pub(super) async fn handle_payload(
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
pub(super) async fn take_jobs(
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

pub(super) async fn listen_pubsub(
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
pub(super) async fn subscribe(state: &AdminState) -> Result<redis::aio::PubSub, redis::RedisError> {
    let mut p = state.config.redis.pubsub().await?;
    p.subscribe(channels(state)).await?;
    Ok(p)
}

/// The channels requests are read from, each with where its requests' channel comes from:
/// `<prefix>:admin` (declared) or each enforced channel's `<prefix>:admin:<channel>`, and
/// the daemons' `<prefix>:forward`. With enforced identities plain `<prefix>:admin` is not
/// read (SPEC 11.4).
pub(super) fn request_channels(state: &AdminState) -> Vec<(String, Source)> {
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
pub(super) fn channels(state: &AdminState) -> Vec<String> {
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
