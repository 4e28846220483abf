//! Redis key and channel names: one function each, prefix and partition hash tag in one place.
//!
//! Per-order keys carry their partition's hash tag (`{p3}`), so a partition's keys can live on
//! one Redis Cluster slot later. The event stream, the admin channel and stream, replies and the
//! clock are global names fixed by the spec.

/// Number of partitions orders are split into (by a stable hash of the order id).
pub const PARTITIONS: u16 = 16;

/// Builds every key name from the configured prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (without the trailing colon).
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_string(),
        }
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The partition an order belongs to (FNV-1a of its id; stable across versions).
    pub fn partition(order_id: &str) -> u16 {
        let mut h: u32 = 0x811c_9dc5;
        for b in order_id.bytes() {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
        (h % u32::from(PARTITIONS)) as u16
    }

    /// Hash `{v: version, d: order JSON}` of one order.
    pub fn order(&self, order_id: &str) -> String {
        format!(
            "{}:{{p{}}}:order:{order_id}",
            self.prefix,
            Self::partition(order_id)
        )
    }

    /// Sorted set of a partition's pending timers (member = order id, score = due ms).
    pub fn timers(&self, partition: u16) -> String {
        format!("{}:{{p{partition}}}:timers", self.prefix)
    }

    /// Set of a partition's deleted order ids (their ids may never be reused).
    pub fn deleted(&self, partition: u16) -> String {
        format!("{}:{{p{partition}}}:deleted", self.prefix)
    }

    /// Stream of a partition's customer-stats deltas, written in the order's commit.
    pub fn outbox(&self, partition: u16) -> String {
        format!("{}:{{p{partition}}}:outbox", self.prefix)
    }

    /// Sorted set of every order id by creation time (listOrders).
    pub fn all_orders(&self) -> String {
        format!("{}:orders", self.prefix)
    }

    /// Sorted set of a customer's order ids by creation time.
    pub fn customer_orders(&self, customer_id: &str) -> String {
        format!("{}:customer:{customer_id}:orders", self.prefix)
    }

    /// Hash of a customer's statistics.
    pub fn customer_stats(&self, customer_id: &str) -> String {
        format!("{}:customer:{customer_id}:stats", self.prefix)
    }

    /// The event stream (and, as a channel name, the event channel).
    pub fn events(&self) -> String {
        format!("{}:events", self.prefix)
    }

    /// The admin request channel.
    pub fn admin_channel(&self) -> String {
        format!("{}:admin", self.prefix)
    }

    /// The durable admin request stream.
    pub fn commands(&self) -> String {
        format!("{}:commands", self.prefix)
    }

    /// Where malformed stream requests are copied.
    pub fn commands_dead(&self) -> String {
        format!("{}:commands:dead", self.prefix)
    }

    /// The kept reply of a request id.
    pub fn reply(&self, request_id: &str) -> String {
        format!("{}:reply:{request_id}", self.prefix)
    }

    /// Hash `{mode, now}`: the clock mode the data was made with and the simulated time.
    pub fn clock(&self) -> String {
        format!("{}:clock", self.prefix)
    }

    /// Hash of cron job bookkeeping (last run per job).
    pub fn cron(&self) -> String {
        format!("{}:cron", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_keys_carry_their_partition_tag() {
        let k = Keys::new("recur");
        let p = Keys::partition("o-1");
        assert_eq!(k.order("o-1"), format!("recur:{{p{p}}}:order:o-1"));
        assert_eq!(k.timers(p), format!("recur:{{p{p}}}:timers"));
        assert!(p < PARTITIONS);
        assert_eq!(k.events(), "recur:events");
        assert_eq!(k.reply("r1"), "recur:reply:r1");
    }
}
