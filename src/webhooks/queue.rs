//! An endpoint's delivery queues as a state machine of their own, without Redis or HTTP: one
//! queue per order (its events in order, one attempt in flight at a time), the queues whose
//! head may be sent now, and those whose head waits for a retry instant. The endpoint loop
//! feeds it what it reads, asks it what to send next, and tells it how each attempt ended.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::sync::Arc;

use tokio::time::Instant;

/// A queue's key: (partition, order id), or (partition, `x:<dead id>`) for a dead letter
/// delivered again (on its own, ordered with nothing).
pub(crate) type QueueKey = (u16, String);

#[derive(Debug)]
pub(crate) struct Delivery {
    pub(crate) key: String,
    /// The ordinal of its stream entry (`None`: a requeued dead letter).
    pub(crate) entry_n: Option<u64>,
    pub(crate) order_id: String,
    pub(crate) event_id: String,
    pub(crate) event_type: String,
    pub(crate) body: Arc<str>,
    pub(crate) attempts: u32,
    pub(crate) first_ms: Option<i64>,
    pub(crate) in_flight: bool,
}

/// The queues of one endpoint.
#[derive(Debug, Default)]
pub(crate) struct Queues {
    queues: HashMap<QueueKey, VecDeque<Delivery>>,
    /// Queues whose head may be sent now.
    ready: VecDeque<QueueKey>,
    /// Queues whose head waits for its retry.
    waiting: BinaryHeap<Reverse<(Instant, QueueKey)>>,
    /// Attempts sent and not finished.
    in_flight: usize,
}

impl Queues {
    /// Whether `queue` has deliveries.
    pub(crate) fn contains(&self, queue: &QueueKey) -> bool {
        self.queues.contains_key(queue)
    }

    /// Appends `d` to `queue`; a queue that was empty is ready at once.
    pub(crate) fn push(&mut self, queue: QueueKey, d: Delivery) {
        let q = self.queues.entry(queue.clone()).or_default();
        q.push_back(d);
        if q.len() == 1 {
            self.ready.push_back(queue);
        }
    }

    /// Forgets partition `p`'s queues (its lease was lost: the new owner delivers them).
    pub(crate) fn drop_partition(&mut self, p: u16) {
        self.queues.retain(|k, _| k.0 != p);
        self.ready.retain(|k| k.0 != p);
    }

    /// Attempts sent and not finished.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// Whether an attempt of an entry of `p` at or below ordinal `limit` is in flight.
    pub(crate) fn in_flight_up_to(&self, p: u16, limit: u64) -> bool {
        self.queues.iter().any(|((qp, _), q)| {
            *qp == p
                && q.front()
                    .is_some_and(|d| d.in_flight && d.entry_n.is_some_and(|n| n <= limit))
        })
    }

    /// Takes out of `p`'s queues every delivery, not in flight, of an entry at or below
    /// ordinal `limit` (what a stream trim would remove); a queue left with deliveries is ready.
    pub(crate) fn pop_up_to(&mut self, p: u16, limit: u64) -> Vec<Delivery> {
        let mut out: Vec<Delivery> = Vec::new();
        let keys: Vec<QueueKey> = self.queues.keys().filter(|k| k.0 == p).cloned().collect();
        for key in keys {
            let Some(q) = self.queues.get_mut(&key) else {
                continue;
            };
            let before = out.len();
            while q
                .front()
                .is_some_and(|d| !d.in_flight && d.entry_n.is_some_and(|n| n <= limit))
            {
                if let Some(d) = q.pop_front() {
                    out.push(d);
                }
            }
            if q.is_empty() {
                self.queues.remove(&key);
            } else if out.len() > before {
                self.ready.push_back(key);
            }
        }
        out
    }

    /// Moves the queues whose retry instant has come (at or before `now`) to the ready ones.
    pub(crate) fn wake(&mut self, now: Instant) {
        while let Some(Reverse((at, _))) = self.waiting.peek() {
            if *at > now {
                break;
            }
            if let Some(Reverse((_, queue))) = self.waiting.pop() {
                self.ready.push_back(queue);
            }
        }
    }

    /// The earliest retry instant waited for.
    pub(crate) fn next_retry(&self) -> Option<Instant> {
        self.waiting.peek().map(|w| w.0 .0)
    }

    /// The next delivery to send, marked in flight, with its queue and the generation of its
    /// partition (`generation_of`; a queue of a partition no longer held is skipped); `None`
    /// when nothing is ready.
    pub(crate) fn start_next(
        &mut self,
        generation_of: impl Fn(u16) -> Option<u64>,
    ) -> Option<(QueueKey, u64, &Delivery)> {
        loop {
            let queue = self.ready.pop_front()?;
            let Some(generation) = generation_of(queue.0) else {
                continue;
            };
            let Some(d) = self.queues.get_mut(&queue).and_then(VecDeque::front_mut) else {
                continue;
            };
            if d.in_flight {
                continue;
            }
            d.in_flight = true;
            self.in_flight += 1;
            let d = self.queues.get(&queue).and_then(VecDeque::front)?;
            return Some((queue, generation, d));
        }
    }

    /// An attempt ended (whatever became of its delivery).
    pub(crate) fn attempt_ended(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// The head of `queue`.
    pub(crate) fn front_mut(&mut self, queue: &QueueKey) -> Option<&mut Delivery> {
        self.queues.get_mut(queue).and_then(VecDeque::front_mut)
    }

    /// The head of `queue` is tried again at `at`.
    pub(crate) fn retry_at(&mut self, queue: QueueKey, at: Instant) {
        if let Some(d) = self.front_mut(&queue) {
            d.in_flight = false;
        }
        self.waiting.push(Reverse((at, queue)));
    }

    /// The head of `queue` is finished (delivered or given up): taken off, and the order's
    /// next delivery, if any, is ready.
    pub(crate) fn complete(&mut self, queue: &QueueKey) -> Option<Delivery> {
        let q = self.queues.get_mut(queue)?;
        let d = q.pop_front();
        if q.is_empty() {
            self.queues.remove(queue);
        } else {
            self.ready.push_back(queue.clone());
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn delivery(order: &str, n: u64) -> Delivery {
        Delivery {
            key: format!("{order}:{n}"),
            entry_n: Some(n),
            order_id: order.to_string(),
            event_id: format!("e{n}"),
            event_type: "orderUpdated".into(),
            body: Arc::from("{}"),
            attempts: 0,
            first_ms: None,
            in_flight: false,
        }
    }

    fn q(p: u16, order: &str) -> QueueKey {
        (p, order.to_string())
    }

    fn held(_: u16) -> Option<u64> {
        Some(1)
    }

    /// Sends what is ready, in order: the events' ordinals.
    fn send_all(qs: &mut Queues) -> Vec<u64> {
        let mut sent = Vec::new();
        while let Some((_, _, d)) = qs.start_next(held) {
            sent.push(d.entry_n.unwrap());
        }
        sent
    }

    #[test]
    fn an_order_s_events_go_one_at_a_time_in_order_and_orders_go_side_by_side() {
        let mut qs = Queues::default();
        qs.push(q(0, "a"), delivery("a", 1));
        qs.push(q(0, "a"), delivery("a", 2));
        qs.push(q(0, "b"), delivery("b", 3));
        // a's second event waits for its first; b goes beside it.
        assert_eq!(send_all(&mut qs), vec![1, 3]);
        assert_eq!(qs.in_flight(), 2);
        qs.attempt_ended();
        assert_eq!(qs.complete(&q(0, "a")).unwrap().entry_n, Some(1));
        assert_eq!(send_all(&mut qs), vec![2]);
        qs.attempt_ended();
        qs.complete(&q(0, "a"));
        assert!(!qs.contains(&q(0, "a")));
        assert!(qs.contains(&q(0, "b")));
    }

    #[test]
    fn a_retried_head_waits_for_its_instant_and_holds_its_order_back() {
        let mut qs = Queues::default();
        qs.push(q(0, "a"), delivery("a", 1));
        qs.push(q(0, "a"), delivery("a", 2));
        assert_eq!(send_all(&mut qs), vec![1]);
        qs.attempt_ended();
        let now = Instant::now();
        let at = now + Duration::from_secs(5);
        qs.retry_at(q(0, "a"), at);
        assert_eq!(qs.next_retry(), Some(at));
        qs.wake(now);
        assert!(
            send_all(&mut qs).is_empty(),
            "nothing before the retry instant"
        );
        qs.wake(at);
        assert_eq!(
            send_all(&mut qs),
            vec![1],
            "the same head, not the next event"
        );
    }

    #[test]
    fn a_lost_partition_s_queues_are_forgotten_and_skipped() {
        let mut qs = Queues::default();
        qs.push(q(0, "a"), delivery("a", 1));
        qs.push(q(1, "b"), delivery("b", 2));
        // Partition 0 is no longer held: its ready queue is skipped.
        let only_1 = |p: u16| (p == 1).then_some(7);
        let (queue, generation, d) = qs.start_next(only_1).unwrap();
        assert_eq!((queue, generation, d.entry_n), (q(1, "b"), 7, Some(2)));
        assert!(qs.start_next(only_1).is_none());
        qs.drop_partition(0);
        assert!(!qs.contains(&q(0, "a")));
        assert!(qs.contains(&q(1, "b")));
    }

    #[test]
    fn a_trim_takes_what_is_not_in_flight_up_to_its_limit() {
        let mut qs = Queues::default();
        qs.push(q(0, "a"), delivery("a", 1));
        qs.push(q(0, "a"), delivery("a", 4));
        qs.push(q(0, "b"), delivery("b", 2));
        qs.push(q(0, "c"), delivery("c", 3));
        // b's head is in flight; c's is not sent yet.
        let (first, _, _) = qs.start_next(held).unwrap();
        assert_eq!(first, q(0, "a"));
        let (second, _, _) = qs.start_next(held).unwrap();
        assert_eq!(second, q(0, "b"));
        assert!(qs.in_flight_up_to(0, 2));
        assert!(!qs.in_flight_up_to(1, 2));
        let mut popped: Vec<u64> = qs
            .pop_up_to(0, 3)
            .iter()
            .filter_map(|d| d.entry_n)
            .collect();
        popped.sort_unstable();
        // Only c's 3: a's 1 and b's 2 are in flight (a's 4 is above the limit, behind 1).
        assert_eq!(popped, vec![3]);
        assert!(!qs.contains(&q(0, "c")));
    }
}
