//! Events: what every change announces, with stable ids and a per-order sequence.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::order::Order;
use super::time::{ts, Instant};

/// Every event type recur emits (SPEC section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EventType {
    OrderCreated,
    OrderPurchased,
    OrderMarkedAsPaid,
    OrderStarted,
    OrderCycleStarted,
    OrderPaused,
    OrderResumed,
    OrderEndDatePostponed,
    OrderStartDateChanged,
    OrderAutoRenewCanceled,
    OrderCanceled,
    OrderEnded,
    OrderDeleted,
    OrderUpdated,
    OrderPaymentRetryRequested,
    OrderPlanChanged,
    OrderPlanChangeScheduled,
}

/// One event as written to the stream and published on the channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// UUID v5 of `<orderId>:<sequence>`: the same on every retry, so consumers can dedupe.
    pub id: String,
    #[serde(rename = "type")]
    pub event_type: EventType,
    pub entity_id: String,
    #[serde(with = "ts")]
    pub event_time: Instant,
    /// Per order, starting at 1, no gaps.
    pub sequence: u64,
    pub triggered_by_anonymize_request: bool,
    pub data: serde_json::Value,
    /// The order after the change this event belongs to.
    pub entity: Arc<Order>,
}

/// An event without its entity, serialized in the same field order as [`Event`].
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EventHead<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    event_type: EventType,
    entity_id: &'a str,
    #[serde(with = "ts")]
    event_time: Instant,
    sequence: u64,
    triggered_by_anonymize_request: bool,
    data: &'a serde_json::Value,
}

impl Event {
    /// The event's JSON up to its entity: `{"id":...,"data":{...},"entity":` — append the
    /// entity's JSON and `}` to get exactly `serde_json::to_string(self)`. Lets one
    /// serialization of the order serve as the stored order and every event's entity.
    ///
    /// # Errors
    /// The serializer's error (the data holds only strings, numbers and JSON values, so in
    /// practice none).
    pub fn head_json(&self) -> Result<String, serde_json::Error> {
        let mut json = serde_json::to_string(&self.head())?;
        json.pop();
        json.push_str(",\"entity\":");
        Ok(json)
    }

    fn head(&self) -> EventHead<'_> {
        EventHead {
            id: &self.id,
            event_type: self.event_type,
            entity_id: &self.entity_id,
            event_time: self.event_time,
            sequence: self.sequence,
            triggered_by_anonymize_request: self.triggered_by_anonymize_request,
            data: &self.data,
        }
    }
}

/// A change entry of a partition's event stream (SPEC 4), without its entity:
/// `{"orderId", "customerId", "version", "events": [...]}`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ChangeHead<'a> {
    order_id: &'a str,
    customer_id: &'a str,
    version: u64,
    /// The order's test clock (SPEC 11.5): webhooks and listings tell its changes apart.
    #[serde(skip_serializing_if = "Option::is_none")]
    test_clock_id: Option<&'a str>,
    events: Vec<EventHead<'a>>,
}

/// The JSON of a change entry up to its entity — `{"orderId":...,"events":[...],"entity":` —
/// for the committed `order` (after the change, or as deleted) and the change's `events`
/// (without their entities): append the order's JSON and `}` to complete it, so the order is
/// serialized once per commit and written once per change.
///
/// # Errors
/// The serializer's error (in practice none).
pub fn change_head_json(order: &Order, events: &[Event]) -> Result<String, serde_json::Error> {
    let head = ChangeHead {
        order_id: &order.id,
        customer_id: &order.customer_id,
        version: order.version,
        test_clock_id: order.test_clock_id.as_deref(),
        events: events.iter().map(Event::head).collect(),
    };
    let mut json = serde_json::to_string(&head)?;
    json.pop();
    json.push_str(",\"entity\":");
    Ok(json)
}

/// The namespace of event ids (UUID v5 of `<orderId>:<sequence>` under the OID namespace).
pub const EVENT_ID_NAMESPACE: Uuid = Uuid::NAMESPACE_OID;

/// The stable id of an order's `sequence`-th event.
pub fn event_id(order_id: &str, sequence: u64) -> String {
    Uuid::new_v5(
        &EVENT_ID_NAMESPACE,
        format!("{order_id}:{sequence}").as_bytes(),
    )
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_are_stable_and_distinct() {
        assert_eq!(event_id("o1", 1), event_id("o1", 1));
        assert_ne!(event_id("o1", 1), event_id("o1", 2));
        assert_ne!(event_id("o1", 12), event_id("o11", 2));
    }

    #[test]
    fn head_plus_entity_is_the_whole_event() {
        use crate::domain::lifecycle::test_support::*;
        let t = new_order(
            monthly("OFFLINE", 3, "5.00", "2026-01-01T00:00:00Z"),
            at("2026-01-01T00:00:00Z"),
        );
        let entity = serde_json::to_string(&t.order).unwrap();
        for e in &t.events {
            let spliced = format!("{}{}}}", e.head_json().unwrap(), entity);
            assert_eq!(spliced, serde_json::to_string(e).unwrap());
        }
    }

    #[test]
    fn a_change_is_its_events_without_entities_and_the_order_once() {
        use crate::domain::lifecycle::test_support::*;
        let t = new_order(
            monthly("OFFLINE", 3, "5.00", "2026-01-01T00:00:00Z"),
            at("2026-01-01T00:00:00Z"),
        );
        let entity = crate::domain::order::compact_json(&t.order).unwrap();
        let change = format!(
            "{}{}}}",
            change_head_json(&t.order, &t.events).unwrap(),
            entity
        );
        let v: serde_json::Value = serde_json::from_str(&change).unwrap();
        assert_eq!(v["orderId"], "o1");
        assert_eq!(v["customerId"], "c1");
        assert_eq!(v["version"], t.order.version);
        let entity: Order = serde_json::from_value(v["entity"].clone()).unwrap();
        assert_eq!(
            entity, t.order,
            "the entity is the order, in its compact form"
        );
        let events = v["events"].as_array().unwrap();
        assert_eq!(events.len(), t.events.len());
        for (e, want) in events.iter().zip(&t.events) {
            assert!(
                e.get("entity").is_none(),
                "the entity is written once, on the change"
            );
            let mut full = e.clone();
            full["entity"] = v["entity"].clone();
            let mut want = serde_json::to_value(want).unwrap();
            want["entity"] = v["entity"].clone();
            assert_eq!(full, want);
        }
        assert_eq!(
            change.matches("\"plan\"").count(),
            1,
            "the order appears once"
        );
    }

    #[test]
    fn types_use_the_wire_names() {
        let t = serde_json::to_string(&EventType::OrderEndDatePostponed).unwrap();
        assert_eq!(t, "\"orderEndDatePostponed\"");
    }
}
