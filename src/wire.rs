//! The admin protocol's wire types (SPEC section 4): the request envelope, replies, and the
//! canonical body hash that makes a reused request id with another body a CONFLICT.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use crate::domain::ErrorCode;

/// Every admin command the daemon knows, by its wire name (the lifecycle commands of
/// `domain::command::Command::NAMES` included). `recur admin` has a subcommand for each and the
/// HTTP API a route (`POST /v1/commands/{command}`), both checked by their tests.
pub const COMMAND_NAMES: [&str; 31] = [
    "ping",
    "getClock",
    "getMetrics",
    "advanceClock",
    "createOrder",
    "getOrder",
    "previewOrder",
    "forecast",
    "updateOrder",
    "getCustomerStats",
    "recomputeCustomerStats",
    "listOrders",
    "retryDeadWebhooks",
    "getWebhookEndpoints",
    "createTestClock",
    "getTestClock",
    "listTestClocks",
    "advanceTestClock",
    "deleteTestClock",
    "changePlan",
    "cancelScheduledChange",
    "recordPayment",
    "paymentFailed",
    "recordRefund",
    "markAsPaid",
    "pauseOrder",
    "resumeOrder",
    "postponeEndDate",
    "changeStartDate",
    "cancelOrder",
    "deleteOrder",
];

/// A request as published on `<prefix>:admin` or appended to `<prefix>:commands`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Request {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<String>,
    /// The calling application (used by updateOrder's status manager).
    #[serde(default)]
    pub channel: String,
    pub command: String,
    #[serde(default)]
    pub args: Value,
    /// Internal: the order an updateOrder by cart name was resolved to by the customer
    /// partition's owner, which forwards the request to the order's owner (SPEC 10). Not part
    /// of the body hash.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved_order_id: Option<String>,
}

impl Request {
    /// A stable hash of what the request asks (command, channel, args): a retried id with the
    /// same body gets the first reply; with another body, CONFLICT.
    pub fn body_hash(&self) -> String {
        let canonical = serde_json::json!({
            "command": self.command,
            "channel": self.channel,
            "args": self.args,
        });
        Uuid::new_v5(&Uuid::NAMESPACE_OID, canonical.to_string().as_bytes()).to_string()
    }
}

/// The error part of a failed reply.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplyError {
    pub code: ErrorCode,
    pub message: String,
    /// Only updateOrder errors name the pipeline stage that failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage: Option<String>,
}

/// A reply, published on the request's `replyTo` and kept at `<prefix>:reply:<id>`; the body
/// of every HTTP API answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Reply {
    /// The request id, or null when it could not be read.
    pub id: Option<String>,
    pub ok: bool,
    /// The command's result (when `ok`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub result: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ReplyError>,
}

impl Reply {
    /// A successful reply.
    pub fn ok(id: Option<String>, result: Value) -> Reply {
        Reply {
            id,
            ok: true,
            result: Some(result),
            error: None,
        }
    }

    /// A failed reply.
    pub fn error(id: Option<String>, code: ErrorCode, message: impl Into<String>) -> Reply {
        Reply {
            id,
            ok: false,
            result: None,
            error: Some(ReplyError {
                code,
                // A library's error text may name a URL with its password (SPEC 11.1).
                message: crate::telemetry::mask_secrets(&message.into()).into_owned(),
                stage: None,
            }),
        }
    }

    /// The same reply, its error (if any) naming the updateOrder stage that refused it.
    pub fn with_stage(mut self, stage: Option<&str>) -> Reply {
        if let (Some(e), Some(stage)) = (self.error.as_mut(), stage) {
            e.stage = Some(stage.to_string());
        }
        self
    }

    /// True when the reply may be kept for idempotency (UNAVAILABLE and INTERNAL never are).
    pub fn is_kept(&self) -> bool {
        self.error.as_ref().is_none_or(|e| !e.code.is_transient())
    }
}

/// What is stored at `<prefix>:reply:<id>`: the reply plus the hash of the request body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredReply {
    pub body_hash: String,
    #[serde(flatten)]
    pub reply: Reply,
}

/// The events of a change entry (SPEC 4: `{orderId, customerId, version, events, entity}`),
/// each with the change's `entity` attached, as `recur admin watch` prints them. Not a change:
/// nothing.
///
/// The stream holds the entity in its compact stored form (defaults left out); it is printed
/// whole, every field present, as getOrder returns it.
pub fn change_events(change: &Value) -> Vec<Value> {
    let entity = change.get("entity").cloned().unwrap_or(Value::Null);
    let entity = serde_json::from_value::<crate::domain::order::Order>(entity.clone())
        .ok()
        .and_then(|o| serde_json::to_value(o).ok())
        .unwrap_or(entity);
    change
        .get("events")
        .and_then(Value::as_array)
        .map(|events| {
            events
                .iter()
                .map(|e| {
                    let mut e = e.clone();
                    if let Some(obj) = e.as_object_mut() {
                        obj.insert("entity".into(), entity.clone());
                    }
                    e
                })
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn req(args: Value) -> Request {
        Request {
            id: "r1".into(),
            reply_to: Some("x".into()),
            channel: "web".into(),
            command: "pauseOrder".into(),
            args,
            resolved_order_id: None,
        }
    }

    #[test]
    fn body_hash_ignores_key_order_and_reply_channel() {
        let a = req(json!({"orderId": "o1", "resumeAt": "2026-01-01T00:00:00Z"}));
        let mut b = req(json!({"resumeAt": "2026-01-01T00:00:00Z", "orderId": "o1"}));
        b.reply_to = Some("other".into());
        assert_eq!(a.body_hash(), b.body_hash());
        assert_ne!(a.body_hash(), req(json!({"orderId": "o2"})).body_hash());
    }

    #[test]
    fn error_replies_never_carry_a_url_password() {
        let r = Reply::error(
            None,
            ErrorCode::Internal,
            "error sending request for url (https://hook:tok3n@x.example/h)",
        );
        let message = r.error.unwrap().message;
        assert_eq!(
            message,
            "error sending request for url (https://hook:***@x.example/h)"
        );
    }

    #[test]
    fn replies_serialize_as_the_spec_says() {
        let r = Reply::error(None, ErrorCode::InvalidRequest, "bad");
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"id": null, "ok": false, "error": {"code": "INVALID_REQUEST", "message": "bad"}})
        );
        assert!(!Reply::error(None, ErrorCode::Unavailable, "x").is_kept());
    }

    #[test]
    fn a_change_becomes_its_events_with_the_entity_attached() {
        let change = json!({"orderId": "o1", "version": 3, "entity": {"id": "o1"},
            "events": [{"id": "e1", "sequence": 4}, {"id": "e2", "sequence": 5}]});
        let events = change_events(&change);
        assert_eq!(events.len(), 2);
        assert_eq!(
            events[1],
            json!({"id": "e2", "sequence": 5, "entity": {"id": "o1"}})
        );
        assert!(change_events(&json!({"not": "a change"})).is_empty());
    }

    #[test]
    fn a_compact_entity_is_printed_whole() {
        use crate::domain::lifecycle::test_support::*;
        let t = new_order(
            monthly("OFFLINE", 3, "5.00", "2026-01-01T00:00:00Z"),
            at("2026-01-01T00:00:00Z"),
        );
        let compact: Value =
            serde_json::from_str(&crate::domain::order::compact_json(&t.order).unwrap()).unwrap();
        assert!(compact.get("payments").is_none());
        let change = json!({"orderId": "o1", "version": 1, "entity": compact,
            "events": [{"id": "e1", "sequence": 1}]});
        let events = change_events(&change);
        assert_eq!(events[0]["entity"], serde_json::to_value(&t.order).unwrap());
        assert_eq!(events[0]["entity"]["payments"], json!([]));
    }

    #[test]
    fn only_error_replies_carry_a_stage() {
        let r = Reply::error(None, ErrorCode::Conflict, "stale").with_stage(Some("load"));
        assert_eq!(
            serde_json::to_value(&r).unwrap()["error"],
            json!({"code": "CONFLICT", "message": "stale", "stage": "load"})
        );
        let ok = Reply::ok(None, json!({})).with_stage(Some("load"));
        assert!(ok.error.is_none());
    }
}
