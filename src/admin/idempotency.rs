//! Idempotency by request id (SPEC 4, 10), the one place it is decided for every way a
//! request comes in (pub/sub, a command stream, the HTTP API, a forwarded request): a request
//! id is claimed with its body's hash, a kept reply is answered again (confirmed first), an
//! in-flight duplicate waits for the first attempt, and a fresh run's reply is kept under the
//! id before it is sent — in the shape of `try_processing -> NextAction` and `save_response`.

use std::collections::HashMap;
use std::sync::Mutex;

use tokio::sync::oneshot;

use super::{AdminState, AdminStores};
use crate::domain::ErrorCode;
use crate::store::StoreError;
use crate::wire::{Reply, StoredReply};

/// What a request does next, once its id is looked up.
pub(super) enum NextAction {
    /// Answer this (a kept reply, or a refusal: another body under the id, Redis failing).
    Return(Reply),
    /// Another attempt of the same request is running here: wait for its reply.
    Wait(oneshot::Receiver<Option<Reply>>),
    /// The first attempt: run it, then [`save_response`].
    Proceed,
}

/// How the run went, for [`save_response`].
pub(super) struct Done {
    /// The order commit kept the reply already (in the same atomic write as the change).
    pub kept: bool,
    /// That commit's WAIT confirmed it.
    pub confirmed: bool,
    /// The reply reports data (it is confirmed with the replicas before it is sent).
    pub reports_data: bool,
}

/// Claims `req`'s id for its body (`hash`) in `partition` and decides what happens next.
pub(super) async fn try_processing(
    state: &AdminState,
    req: &crate::wire::Request,
    hash: &str,
    partition: u16,
    reports_data: bool,
) -> NextAction {
    let ttl = state.config.reply_retention.as_secs().max(1);
    // The id's first body, wherever it routed (another body is a CONFLICT), and its kept
    // reply, in one round trip.
    let kept = match state
        .stores
        .commands
        .claim_request(partition, &req.id, hash, ttl)
        .await
    {
        Ok((Some(_), _)) => return NextAction::Return(conflict(&req.id)),
        Ok((None, kept)) => kept,
        Err(e) => {
            return NextAction::Return(Reply::error(
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
                return NextAction::Return(reply);
            }
        }
        return NextAction::Return(match serde_json::from_str::<StoredReply>(&json) {
            Ok(s) if s.body_hash == hash => s.reply,
            Ok(_) => conflict(&req.id),
            Err(e) => Reply::error(
                Some(req.id.clone()),
                ErrorCode::Internal,
                format!("kept reply is corrupt: {e}"),
            ),
        });
    }
    match state.inflight.begin(&req.id, hash) {
        Begin::First => NextAction::Proceed,
        Begin::Conflict => NextAction::Return(conflict(&req.id)),
        Begin::Duplicate(rx) => NextAction::Wait(rx),
    }
}

/// Keeps a fresh run's reply under its request id (unless its order commit did) and confirms
/// it with the replicas when that is asked for; the reply to send (an UNAVAILABLE or INTERNAL
/// one when it could not be kept or confirmed: the retry gets the kept one).
pub(super) async fn save_response(
    state: &AdminState,
    request_id: &str,
    hash: String,
    partition: u16,
    mut reply: Reply,
    done: Done,
) -> Reply {
    let ttl = state.config.reply_retention.as_secs().max(1);
    if !done.kept && reply.is_kept() {
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
                .keep_reply(partition, request_id, &json, ttl, &token)
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
            reply = Reply::error(Some(request_id.to_string()), code, e);
        }
    }
    // What an order commit did not confirm (a reply kept here, or by another daemon) is
    // confirmed before it is sent: the reply kept, and everything it read.
    if !done.confirmed && reply.is_kept() && done.reports_data {
        if let Err(refused) = confirm(state, partition, request_id).await {
            reply = refused;
        }
    }
    reply
}

/// Confirms (redis.wait_replicas) everything the routing partition's master held before a
/// reply is sent; the UNAVAILABLE or INTERNAL reply when it cannot be (the reply stays kept:
/// the retry gets it once it is confirmed).
pub(super) async fn confirm(
    state: &AdminState,
    partition: u16,
    request_id: &str,
) -> Result<(), Reply> {
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

pub(super) fn conflict(id: &str) -> Reply {
    Reply::error(
        Some(id.to_string()),
        ErrorCode::Conflict,
        format!("request id {id} was already used with another body"),
    )
}

/// Whether the reply of a forwarded request is kept: in its routing partition, or (an
/// updateOrder by cart name) in the partition of the order it was resolved to.
pub(super) async fn forwarded_reply_kept(
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

/// One request being handled: its body hash and the duplicates waiting for its reply (none
/// when it was forwarded to another daemon).
pub(super) type Waiters = (String, Vec<oneshot::Sender<Option<Reply>>>);

/// Requests being handled, by id: a duplicate waits for the first one's reply.
#[derive(Default)]
pub struct Inflight {
    waiting: Mutex<HashMap<String, Waiters>>,
}

pub(super) enum Begin {
    First,
    Duplicate(oneshot::Receiver<Option<Reply>>),
    Conflict,
}

impl Inflight {
    pub(super) fn begin(&self, id: &str, hash: &str) -> Begin {
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

    pub(super) fn finish(&self, id: &str, reply: Option<&Reply>) {
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
