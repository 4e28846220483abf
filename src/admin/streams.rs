//! The command streams (SPEC 11.4): each channel's `<prefix>:commands:<channel>` read by a
//! consumer group, entries answered once, redelivered with a backoff, dead-lettered after
//! [`MAX_DELIVERIES`]; and requests handed to a partition's owner over `<prefix>:forward`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use redis::streams::{StreamReadOptions, StreamReadReply};
use redis::AsyncCommands;
use tokio_util::task::TaskTracker;

use super::command::AdminCommand;
use super::idempotency::forwarded_reply_kept;
use super::intake::{intake, publish_reply, Intake, Source};
use super::server::{handle, CONSUMER_GROUP};

use super::{AdminState, AdminStores};
use crate::config::Identity;
use crate::domain::command::check_id;
use crate::domain::ErrorCode;
use crate::shutdown::Shutdown;
use crate::store::{Outage, StoreError};
use crate::wire::{Reply, Request};

/// A command stream read by the consumer group, and where its entries' channel comes from.
#[derive(Debug, Clone)]
pub(super) struct CommandStream {
    pub(super) key: String,
    pub(super) source: Source,
}

/// The command streams this daemon reads: `<prefix>:commands` (declared identities), or each
/// enforced channel's `<prefix>:commands:<channel>`.
pub(super) fn command_streams(state: &AdminState) -> Vec<CommandStream> {
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
pub(super) enum Handled {
    /// Answered and acknowledged (or dead-lettered and acknowledged).
    Done,
    /// Failed with a transient error; still pending, to be delivered again after a pause.
    Failed,
    /// Forwarded to another daemon, whose reply is not kept yet; still pending.
    Waiting,
}

/// When each pending entry of this consumer may be delivered again.
#[derive(Default)]
pub(super) struct Redeliveries {
    pub(super) due: HashMap<String, std::time::Instant>,
}

impl Redeliveries {
    /// The next instant one is due, if any.
    fn next(&self) -> Option<std::time::Instant> {
        self.due.values().min().copied()
    }
}

pub(super) async fn consume_stream(
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
pub(super) async fn redeliver(
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
pub(super) async fn handle_all(
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
pub(super) enum EntryOutcome {
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
pub(super) async fn answer_entry(
    state: &AdminState,
    stream: &CommandStream,
    payload: &[u8],
) -> EntryOutcome {
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
pub(super) async fn give_up(
    state: &AdminState,
    stream: &CommandStream,
    entry_id: &str,
    deliveries: usize,
) {
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
pub(super) async fn dead_letter(
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
pub(super) async fn handle_entry(
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
pub(super) const FORWARD_WAIT: Duration = Duration::from_secs(5);

/// Forwards a command-stream request whose routing partition another daemon owns (SPEC 10): it
/// is published, with the channel this daemon established, on `<prefix>:forward`, where its
/// owner applies it and replies, and the entry is acknowledged once the owner's reply is kept.
/// With no owner yet (a takeover), it stays pending and is read again.
pub(super) async fn forward(
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

pub(super) async fn ack(store: &AdminStores, stream: &CommandStream, entry_id: &str) {
    if let Err(e) = store
        .commands
        .ack_command(&stream.key, CONSUMER_GROUP, entry_id)
        .await
    {
        // Read again after a restart, and answered from its kept reply.
        tracing::warn!(error = %e, entry = %entry_id, "cannot acknowledge a command entry");
    }
}
