//! Where a request comes from and what its raw payload is: the channel it came in on (SPEC
//! 11.4), the payload read into a request whose channel is established (or the refusal it
//! gets), and the reply published on its `replyTo`. Shared by the pub/sub listener
//! (`server.rs`) and the command streams (`streams.rs`).

use serde_json::Value;

use super::AdminState;
use crate::domain::ErrorCode;
use crate::wire::{Reply, Request};

/// Reads the string value of `"key": "..."` out of text that may not be valid JSON, so a
/// malformed request can still be answered on its reply channel.
pub(super) fn sniff(text: &str, key: &str) -> Option<String> {
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
pub(super) enum Intake {
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
pub(super) fn intake(state: &AdminState, payload: &[u8], source: &Source) -> Intake {
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

pub(super) async fn publish_reply(state: &AdminState, reply_to: Option<String>, reply: &Reply) {
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
