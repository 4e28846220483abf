//! One endpoint's progress through one partition's event stream, as a state machine of its
//! own, without Redis or HTTP: which entries were read, which of their deliveries are still
//! owed, where the cursor (every entry at or below it finished) stands, and which progress
//! writes ([`Apply`]) each step means. The endpoint loop reads entries and sends deliveries;
//! it feeds this what it read and how each delivery ended, and writes what this answers.
//!
//! What Redis keeps per endpoint and partition (SPEC 10): the cursor and its ordinal,
//! `d:<key>` for a delivery finished above the cursor, `r:<key>` for one being retried.
//! After a restart or a take-over, [`Part::new`] starts from those: entries above the cursor
//! are read again, what is marked done is skipped, what was being retried keeps its count.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::queue::Delivery;
use super::{event_body, whole_entity};
use crate::config::EndpointSettings;
use crate::store::webhooks::Apply;

/// What is kept under `r:<key>` between attempts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub(super) struct RetryState {
    pub(super) attempts: u32,
    pub(super) first_ms: i64,
    pub(super) error: String,
}

/// A stream entry read and not finished.
#[derive(Debug, Default)]
pub(super) struct EntryState {
    pub(super) id: String,
    /// Its deliveries not finished yet.
    pub(super) remaining: usize,
    /// Keys finished while the entry is above the cursor (`d:` fields to drop with it).
    pub(super) done_keys: Vec<String>,
}

/// One partition's progress for one endpoint.
#[derive(Debug)]
pub(super) struct Part {
    /// Which holding of the partition this is: an attempt started under an earlier one
    /// (the partition was lost and taken again meanwhile) is not counted.
    pub(super) generation: u64,
    /// The last entry read, and its ordinal.
    pub(super) read_pos: String,
    pub(super) read_n: u64,
    /// Every entry at or below it is finished.
    pub(super) cursor: (String, u64),
    /// Entries read and not finished, by ordinal.
    pub(super) entries: BTreeMap<u64, EntryState>,
    /// Deliveries Redis says are finished above the cursor.
    pub(super) done: HashSet<String>,
    /// Retry states Redis holds for deliveries not read yet.
    pub(super) retrying: HashMap<String, RetryState>,
    /// Deliveries of this partition in the endpoint's queues.
    pub(super) queued: usize,
}

impl Part {
    /// Starts from what Redis holds: the cursor, the done marks and the retry states.
    pub(super) fn new(
        generation: u64,
        cursor: (String, u64),
        done: impl IntoIterator<Item = String>,
        retrying: HashMap<String, RetryState>,
    ) -> Part {
        Part {
            generation,
            read_pos: cursor.0.clone(),
            read_n: cursor.1,
            cursor,
            entries: BTreeMap::new(),
            done: done.into_iter().collect(),
            retrying,
            queued: 0,
        }
    }

    /// Takes the next stream entry (`id`, its change JSON): the deliveries it owes `ep`, in
    /// event order, each with the retry count Redis kept for it. Events the endpoint does not
    /// want, or that a test clock's order caused when it does not ask for those (SPEC 11.2),
    /// owe nothing; a delivery marked done is not owed again.
    pub(super) fn take_entry(
        &mut self,
        id: String,
        change: &str,
        ep: &EndpointSettings,
    ) -> Vec<Delivery> {
        self.read_n += 1;
        self.read_pos = id.clone();
        let n = self.read_n;
        let change: Value = serde_json::from_str(change).unwrap_or(Value::Null);
        let no_events = Vec::new();
        let skipped = change.get("testClockId").is_some() && !ep.test_clocks;
        let events = match change["events"].as_array() {
            Some(events) if !skipped => events,
            _ => &no_events,
        };
        // The entity in its whole form, built once per change and only if some event is sent.
        let mut entity: Option<String> = None;
        let mut entry = EntryState {
            id: id.clone(),
            ..EntryState::default()
        };
        let mut deliveries = Vec::new();
        for (i, event) in events.iter().enumerate() {
            let event_type = event["type"].as_str().unwrap_or_default();
            if !ep.wants(event_type) {
                continue;
            }
            let key = format!("{id}#{i}");
            if self.done.remove(&key) {
                entry.done_keys.push(key);
                continue;
            }
            let retry = self.retrying.remove(&key);
            let entity = entity.get_or_insert_with(|| whole_entity(&change["entity"]));
            let body: Arc<str> = Arc::from(event_body(event, entity));
            deliveries.push(Delivery {
                key,
                entry_n: Some(n),
                order_id: event["entityId"].as_str().unwrap_or_default().to_string(),
                event_id: event["id"].as_str().unwrap_or_default().to_string(),
                event_type: event_type.to_string(),
                body,
                attempts: retry.as_ref().map_or(0, |r| r.attempts),
                first_ms: retry.map(|r| r.first_ms),
                in_flight: false,
            });
        }
        entry.remaining = deliveries.len();
        self.entries.insert(n, entry);
        deliveries
    }

    /// The cursor's move past the finished entries at the bottom, with the `d:` fields it
    /// drops; `None` when the lowest entry still owes something.
    pub(super) fn advance(&mut self) -> Option<Apply> {
        let mut apply = Apply::default();
        while let Some(entry) = self.entries.first_entry() {
            if entry.get().remaining > 0 {
                break;
            }
            let n = *entry.key();
            let e = entry.remove();
            apply
                .delete
                .extend(e.done_keys.into_iter().map(|k| format!("d:{k}")));
            self.cursor = (e.id.clone(), n);
            apply.cursor = Some((e.id, n));
        }
        apply.cursor.is_some().then_some(apply)
    }

    /// Deliveries taken out of the queues unsent (dead-lettered because the stream trim would
    /// remove their entries): their entries owe them no more.
    pub(super) fn forced_out(&mut self, dead: &[Delivery]) {
        self.queued = self.queued.saturating_sub(dead.len());
        for d in dead {
            if let Some(entry) = d.entry_n.and_then(|n| self.entries.get_mut(&n)) {
                entry.remaining = entry.remaining.saturating_sub(1);
            }
        }
    }

    /// `d` is finished (delivered, or given up and dead-lettered): the progress writes it
    /// means. Its retry state goes; a requeued dead letter's `x:` field goes; a delivery of an
    /// entry either moves the cursor (when it was the last owed at the bottom) or is marked
    /// `d:` until the cursor passes it.
    pub(super) fn finished(&mut self, d: &Delivery) -> Apply {
        let mut apply = Apply::default();
        self.queued = self.queued.saturating_sub(1);
        let Some(n) = d.entry_n else {
            apply.delete.push(d.key.clone());
            return apply;
        };
        if d.attempts > 0 {
            apply.delete.push(format!("r:{}", d.key));
        }
        if let Some(entry) = self.entries.get_mut(&n) {
            entry.remaining = entry.remaining.saturating_sub(1);
            entry.done_keys.push(d.key.clone());
        }
        match self.advance() {
            Some(moved) => {
                apply.cursor = moved.cursor;
                // A key the cursor passed needs no `d:` mark (nor the removal of one).
                let mark = format!("d:{}", d.key);
                apply
                    .delete
                    .extend(moved.delete.into_iter().filter(|k| k != &mark));
            }
            None => apply.set.push((format!("d:{}", d.key), "1".into())),
        }
        apply
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(events: &[&str], test_clocks: bool) -> EndpointSettings {
        EndpointSettings {
            id: Some("hook".into()),
            url: "http://127.0.0.1:1/hook".into(),
            secret: "s".into(),
            events: events.iter().map(|e| (*e).to_string()).collect(),
            test_clocks,
        }
    }

    /// A change entry with events of the given types, all of order `o`.
    fn change(types: &[&str], test_clock: bool) -> String {
        let events: Vec<Value> = types
            .iter()
            .enumerate()
            .map(|(i, t)| serde_json::json!({"id": format!("e{i}"), "type": t, "entityId": "o"}))
            .collect();
        let mut c = serde_json::json!({"events": events, "entity": {}});
        if test_clock {
            c["testClockId"] = "clk".into();
        }
        c.to_string()
    }

    fn part() -> Part {
        Part::new(1, ("0-0".into(), 0), Vec::new(), HashMap::new())
    }

    #[test]
    fn the_cursor_moves_only_past_finished_entries_at_the_bottom() {
        let ep = endpoint(&["*"], false);
        let mut p = part();
        let first = p.take_entry("1-0".into(), &change(&["a", "b"], false), &ep);
        let second = p.take_entry("2-0".into(), &change(&["c"], false), &ep);
        p.queued = 3;
        assert_eq!(first.len(), 2);
        assert_eq!(first[1].key, "1-0#1");
        assert_eq!(second[0].entry_n, Some(2));
        assert!(p.advance().is_none(), "nothing finished yet");

        // The second entry finishes first: a done mark, the cursor stays.
        let a = p.finished(&second[0]);
        assert_eq!(a.cursor, None);
        assert_eq!(a.set, vec![("d:2-0#0".to_string(), "1".to_string())]);
        // One of the first entry's two: still owed the other.
        let a = p.finished(&first[0]);
        assert_eq!(a.cursor, None);
        assert_eq!(a.set, vec![("d:1-0#0".to_string(), "1".to_string())]);
        // The last: the cursor passes both entries and drops the marks it passed.
        let a = p.finished(&first[1]);
        assert_eq!(a.cursor, Some(("2-0".to_string(), 2)));
        assert!(a.set.is_empty());
        let mut deleted = a.delete.clone();
        deleted.sort();
        assert_eq!(deleted, vec!["d:1-0#0", "d:2-0#0"]);
        assert_eq!(p.cursor, ("2-0".to_string(), 2));
        assert!(p.entries.is_empty());
        assert_eq!(p.queued, 0);
    }

    #[test]
    fn an_entry_that_owes_nothing_is_passed_at_once() {
        let ep = endpoint(&["order.paid"], false);
        let mut p = part();
        assert!(p
            .take_entry("1-0".into(), &change(&["order.created"], false), &ep)
            .is_empty());
        // A test clock's change, to an endpoint that does not ask for them.
        let all = endpoint(&["*"], false);
        assert!(p
            .take_entry("2-0".into(), &change(&["order.paid"], true), &all)
            .is_empty());
        let moved = p.advance().expect("both entries owe nothing");
        assert_eq!(moved.cursor, Some(("2-0".to_string(), 2)));
        // One that asks for test clocks gets them.
        let with_clocks = endpoint(&["*"], true);
        assert_eq!(
            p.take_entry("3-0".into(), &change(&["order.paid"], true), &with_clocks)
                .len(),
            1
        );
    }

    #[test]
    fn after_a_restart_done_deliveries_are_skipped_and_retries_keep_their_count() {
        let ep = endpoint(&["*"], false);
        let retry = RetryState {
            attempts: 3,
            first_ms: 1_000,
            error: "HTTP 500".into(),
        };
        let mut p = Part::new(
            2,
            ("1-0".into(), 1),
            vec!["2-0#0".to_string()],
            HashMap::from([("2-0#1".to_string(), retry)]),
        );
        let owed = p.take_entry("2-0".into(), &change(&["a", "b"], false), &ep);
        assert_eq!(owed.len(), 1, "the done one is not owed again");
        assert_eq!(owed[0].key, "2-0#1");
        assert_eq!((owed[0].attempts, owed[0].first_ms), (3, Some(1_000)));
        assert!(p.done.is_empty() && p.retrying.is_empty());
        p.queued = 1;
        let a = p.finished(&owed[0]);
        // Its retry state goes, the cursor passes the entry, the old done mark goes with it.
        assert_eq!(a.cursor, Some(("2-0".to_string(), 2)));
        let mut deleted = a.delete.clone();
        deleted.sort();
        assert_eq!(deleted, vec!["d:2-0#0", "r:2-0#1"]);
    }

    #[test]
    fn a_requeued_dead_letter_only_drops_its_field_and_forced_out_deliveries_free_the_cursor() {
        let ep = endpoint(&["*"], false);
        let mut p = part();
        let dead_letter = Delivery {
            key: "x:9-0".into(),
            entry_n: None,
            order_id: "o".into(),
            event_id: "e".into(),
            event_type: "order.paid".into(),
            body: Arc::from("{}"),
            attempts: 2,
            first_ms: Some(5),
            in_flight: false,
        };
        p.queued = 1;
        let a = p.finished(&dead_letter);
        assert_eq!(a.delete, vec!["x:9-0"]);
        assert_eq!(a.cursor, None);
        assert!(a.set.is_empty());

        let owed = p.take_entry("1-0".into(), &change(&["a", "b"], false), &ep);
        p.queued = 2;
        p.forced_out(&owed);
        assert_eq!(p.queued, 0);
        assert_eq!(
            p.advance().and_then(|a| a.cursor),
            Some(("1-0".to_string(), 1))
        );
    }
}
