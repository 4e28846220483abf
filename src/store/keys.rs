//! Redis key and channel names: one function each, prefix and partition hash tag in one place.
//!
//! Per-order keys carry their partition's hash tag (`{p3}`), so a partition's keys can live on
//! one Redis Cluster slot later. The event stream, the admin channel and stream, replies and the
//! clock are global names fixed by the spec.

/// Partitions of new data unless `partitions` says otherwise (SPEC 6).
pub const DEFAULT_PARTITIONS: u16 = 64;
/// The most partitions a data set may have.
pub const MAX_PARTITIONS: u16 = 1024;
/// Partitions of data made before the count was recorded in `<prefix>:meta` (SPEC 10).
pub const REVISION_1_PARTITIONS: u16 = 16;

/// FNV-1a (32-bit) of `id`'s UTF-8 bytes, mod `partitions`: an order's partition from its
/// order id, a customer's from its customer id (SPEC 6). Stable across versions and daemons.
pub fn partition_of(id: &str, partitions: u16) -> u16 {
    let mut h: u32 = 0x811c_9dc5;
    for b in id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    // The remainder is below `partitions`, itself a u16.
    (h % u32::from(partitions.max(1))) as u16
}

/// Builds every key name from the configured prefix and the data's partition count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keys {
    prefix: String,
    partitions: u16,
}

impl Keys {
    /// Keys under `prefix` (without the trailing colon) for data split into `partitions`.
    pub fn new(prefix: &str, partitions: u16) -> Keys {
        Keys {
            prefix: prefix.to_string(),
            partitions: partitions.clamp(1, MAX_PARTITIONS),
        }
    }

    /// The prefix itself.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// How many partitions the data is split into.
    pub fn partitions(&self) -> u16 {
        self.partitions
    }

    /// The partition an order (or a customer) belongs to.
    pub fn partition(&self, id: &str) -> u16 {
        partition_of(id, self.partitions)
    }

    /// Hash `{partitions}`: what the data was made with (SPEC 6).
    pub fn meta(&self) -> String {
        format!("{}:meta", self.prefix)
    }

    /// Sorted set of live daemons: member = daemon id, score = last heartbeat (Unix ms).
    pub fn daemons(&self) -> String {
        format!("{}:daemons", self.prefix)
    }

    /// A partition's lease: `<daemon id>:<epoch>`, with a TTL (SPEC 6).
    pub fn lease(&self, partition: u16) -> String {
        format!("{}:{{p{partition}}}:lease", self.prefix)
    }

    /// A partition's lease epoch counter (INCR at each acquisition).
    pub fn epoch(&self, partition: u16) -> String {
        format!("{}:{{p{partition}}}:epoch", self.prefix)
    }

    /// Until when (Unix ms) the last holder of a partition's lease had it, as of its last
    /// renewal: a new owner learns how long the partition had no owner.
    pub fn held_until(&self, partition: u16) -> String {
        format!("{}:{{p{partition}}}:heldUntil", self.prefix)
    }

    fn customer_key(&self, customer_id: &str, what: &str) -> String {
        format!(
            "{}:{{p{}}}:customer:{customer_id}:{what}",
            self.prefix,
            self.partition(customer_id)
        )
    }

    /// Hash of a daemon's status for `GET /v1/daemons` (`started`, `ready`, `reasons`),
    /// written with its heartbeat and expiring with it.
    pub fn daemon_status(&self, daemon_id: &str) -> String {
        format!("{}:daemon:{daemon_id}", self.prefix)
    }

    /// The orders' key names.
    pub fn order_keys(&self) -> OrderKeys<'_> {
        OrderKeys(self)
    }

    /// The customer statistics' key names.
    pub fn stats_keys(&self) -> StatsKeys<'_> {
        StatsKeys(self)
    }

    /// The admin commands' key names.
    pub fn admin_keys(&self) -> AdminKeys<'_> {
        AdminKeys(self)
    }

    /// The shared clock's and the cron jobs' key names.
    pub fn clock_keys(&self) -> ClockKeys<'_> {
        ClockKeys(self)
    }

    /// The test clocks' key names (SPEC 11.5).
    pub fn test_clock_keys(&self) -> TestClockKeys<'_> {
        TestClockKeys(self)
    }

    /// The webhooks' key names (SPEC 11.2).
    pub fn webhook_keys(&self) -> WebhookKeys<'_> {
        WebhookKeys(self)
    }
}

/// The orders' key names: the order hashes, the timers, the indexes and the event streams.
#[derive(Debug, Clone, Copy)]
pub struct OrderKeys<'k>(&'k Keys);

impl std::ops::Deref for OrderKeys<'_> {
    type Target = Keys;

    fn deref(&self) -> &Keys {
        self.0
    }
}

impl OrderKeys<'_> {
    /// Hash `{v: version, d: order JSON}` of one order.
    pub fn order(&self, order_id: &str) -> String {
        format!(
            "{}:{{p{}}}:order:{order_id}",
            self.prefix,
            self.partition(order_id)
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

    /// Sorted set of a partition's order ids by creation time (listOrders over all orders
    /// reads every partition's and merges them).
    pub fn orders(&self, partition: u16) -> String {
        format!("{}:{{p{partition}}}:orders", self.prefix)
    }

    /// Where revision 1 kept every order id by creation time (moved into the partitions'
    /// indexes by the upgrade).
    pub fn legacy_all_orders(&self) -> String {
        format!("{}:orders", self.prefix)
    }

    /// Sorted set of a customer's order ids by creation time (in the customer's partition,
    /// kept by the stats apply).
    pub fn customer_orders(&self, customer_id: &str) -> String {
        self.customer_key(customer_id, "orders")
    }

    /// A partition's event stream: one entry (field `change`) per committed change (SPEC 4).
    pub fn events(&self, partition: u16) -> String {
        format!("{}:{{p{partition}}}:events", self.prefix)
    }

    /// The channel every change is also published on (best effort).
    pub fn events_channel(&self) -> String {
        format!("{}:events", self.prefix)
    }

    /// Sorted set of the pending timers of a partition's orders: the live ones, or those of
    /// one test clock (SPEC 11.5), which only that clock's advances fire.
    pub fn timers_of(&self, partition: u16, test_clock: Option<&str>) -> String {
        match test_clock {
            None => self.timers(partition),
            Some(c) => format!("{}:{{p{partition}}}:tc:{c}:timers", self.prefix),
        }
    }

    /// Sorted set of a partition's order ids by creation time: the live ones, or those of one
    /// test clock (listOrders shows a clock's orders only when asked).
    pub fn orders_of(&self, partition: u16, test_clock: Option<&str>) -> String {
        match test_clock {
            None => self.orders(partition),
            Some(c) => format!("{}:{{p{partition}}}:tc:{c}:orders", self.prefix),
        }
    }
}

/// The customer statistics' key names: the outboxes and inboxes, the figures and contributions.
#[derive(Debug, Clone, Copy)]
pub struct StatsKeys<'k>(&'k Keys);

impl std::ops::Deref for StatsKeys<'_> {
    type Target = Keys;

    fn deref(&self) -> &Keys {
        self.0
    }
}

impl StatsKeys<'_> {
    /// Stream of a partition's customer-stats deltas, written in the order's commit.
    pub fn outbox(&self, partition: u16) -> String {
        format!("{}:{{p{partition}}}:outbox", self.prefix)
    }

    /// Stream of stats deltas relayed to a customer partition by the owners of the orders'
    /// partitions (field `delta`), applied by the customer partition's owner (SPEC 10).
    pub fn inbox(&self, partition: u16) -> String {
        format!("{}:{{p{partition}}}:inbox", self.prefix)
    }

    /// The channel that tells a customer partition's owner its inbox has entries (payload =
    /// the partition number).
    pub fn inbox_channel(&self) -> String {
        format!("{}:inbox", self.prefix)
    }

    /// Hash of a customer's statistics (in the customer's partition).
    pub fn customer_stats(&self, customer_id: &str) -> String {
        self.customer_key(customer_id, "stats")
    }

    /// Hash of each order's latest contribution to a customer's statistics.
    pub fn customer_contributions(&self, customer_id: &str) -> String {
        self.customer_key(customer_id, "contrib")
    }

    /// Set of a partition's customers that have statistics (the reconcile job's sample).
    pub fn customers(&self, partition: u16) -> String {
        format!("{}:{{p{partition}}}:customers", self.prefix)
    }
}

/// The admin commands' key names: channels, command streams, claims, kept replies, carts.
#[derive(Debug, Clone, Copy)]
pub struct AdminKeys<'k>(&'k Keys);

impl std::ops::Deref for AdminKeys<'_> {
    type Target = Keys;

    fn deref(&self) -> &Keys {
        self.0
    }
}

impl AdminKeys<'_> {
    /// The claim of a customer's cart name: the order id that has it (in the customer's
    /// partition).
    pub fn cart_name(&self, customer_id: &str, name: &str) -> String {
        self.customer_key(customer_id, &format!("cart:{name}"))
    }

    /// Which order an updateOrder by cart name was resolved to, by request id (in the
    /// customer's partition).
    pub fn resolution(&self, partition: u16, request_id: &str) -> String {
        format!("{}:{{p{partition}}}:resolve:{request_id}", self.prefix)
    }

    /// The admin request channel.
    pub fn admin_channel(&self) -> String {
        format!("{}:admin", self.prefix)
    }

    /// The durable admin request stream.
    pub fn commands(&self) -> String {
        format!("{}:commands", self.prefix)
    }

    /// An application's own request channel when identities are enforced (SPEC 11.4): the
    /// requests read there are that channel's.
    pub fn admin_channel_of(&self, channel: &str) -> String {
        format!("{}:admin:{channel}", self.prefix)
    }

    /// An application's own request stream when identities are enforced (SPEC 11.4).
    pub fn commands_of(&self, channel: &str) -> String {
        format!("{}:commands:{channel}", self.prefix)
    }

    /// What the `replyTo` of an application's requests must begin with when identities are
    /// enforced (SPEC 11.4): `<prefix>:reply:<channel>:`.
    pub fn reply_namespace(&self, channel: &str) -> String {
        format!("{}:reply:{channel}:", self.prefix)
    }

    /// The channel daemons forward requests to each other on (a request taken by a daemon that
    /// does not own its partition: the command stream's entries, the HTTP API's requests, an
    /// updateOrder by cart name). Its requests carry the channel the taking daemon established;
    /// only daemons may publish here (deploy/redis/users.acl).
    pub fn forward_channel(&self) -> String {
        format!("{}:forward", self.prefix)
    }

    /// Where malformed stream requests are copied.
    pub fn commands_dead(&self) -> String {
        format!("{}:commands:dead", self.prefix)
    }

    /// The kept reply of a request id, in the partition of the request's routing key (the
    /// partition whose owner answers it).
    pub fn reply(&self, partition: u16, request_id: &str) -> String {
        format!("{}:{{p{partition}}}:reply:{request_id}", self.prefix)
    }

    /// Where data made before revision 2 kept replies (read for one retention period).
    pub fn legacy_reply(&self, request_id: &str) -> String {
        format!("{}:reply:{request_id}", self.prefix)
    }

    /// The body hash a request id was first used with, in the request id's own partition, so
    /// that the same id with another body is a CONFLICT wherever the bodies route.
    pub fn request_claim(&self, request_id: &str) -> String {
        format!(
            "{}:{{p{}}}:req:{request_id}",
            self.prefix,
            self.partition(request_id)
        )
    }
}

/// The shared clock's and the cron jobs' key names.
#[derive(Debug, Clone, Copy)]
pub struct ClockKeys<'k>(&'k Keys);

impl std::ops::Deref for ClockKeys<'_> {
    type Target = Keys;

    fn deref(&self) -> &Keys {
        self.0
    }
}

impl ClockKeys<'_> {
    /// Hash `{mode, now}`: the clock mode the data was made with and the simulated time
    /// (partition 0's, written by its owner).
    pub fn clock(&self) -> String {
        format!("{}:{{p0}}:clock", self.prefix)
    }

    /// The channel partition 0's owner announces clock changes on (an advance began or was
    /// completed), so every daemon fires its partitions and follows the shared clock.
    pub fn clock_channel(&self) -> String {
        format!("{}:clock", self.prefix)
    }

    /// The channel partition 0's owner announces each cron run on (payload = the job), so
    /// every daemon runs it over its own partitions.
    pub fn cron_channel(&self) -> String {
        format!("{}:cron", self.prefix)
    }

    /// How far partition `p` has fired the simulated clock (Unix ms), written by its owner.
    pub fn fired(&self, partition: u16) -> String {
        format!("{}:{{p{partition}}}:fired", self.prefix)
    }

    /// Hash of cron job bookkeeping (last run per job), partition 0's.
    pub fn cron(&self) -> String {
        format!("{}:{{p0}}:cron", self.prefix)
    }

    /// Where data made before revision 2 kept the clock and the cron bookkeeping.
    pub fn legacy_clock_and_cron(&self) -> (String, String) {
        (
            format!("{}:clock", self.prefix),
            format!("{}:cron", self.prefix),
        )
    }
}

/// The test clocks' key names (SPEC 11.5).
#[derive(Debug, Clone, Copy)]
pub struct TestClockKeys<'k>(&'k Keys);

impl std::ops::Deref for TestClockKeys<'_> {
    type Target = Keys;

    fn deref(&self) -> &Keys {
        self.0
    }
}

impl TestClockKeys<'_> {
    /// Hash of a test clock (`name`, `frozen`, `created` ms; while a job runs: `job`, `target`,
    /// `req`, `hash`, `seq`, and for a deletion `orders`, `customers`), in the clock's partition.
    pub fn test_clock(&self, clock: &str) -> String {
        format!("{}:{{p{}}}:tc:{clock}", self.prefix, self.partition(clock))
    }

    /// Sorted set of a partition's test clocks by creation time (listTestClocks).
    pub fn test_clocks(&self, partition: u16) -> String {
        format!("{}:{{p{partition}}}:testclocks", self.prefix)
    }

    /// Set of a partition's test clocks with a job (advance or deletion) under way.
    pub fn test_clock_jobs(&self, partition: u16) -> String {
        format!("{}:{{p{partition}}}:tc:jobs", self.prefix)
    }

    /// The last job of a test clock that partition `p`'s owner has done there (its `seq`).
    pub fn test_clock_done(&self, partition: u16, clock: &str) -> String {
        format!("{}:{{p{partition}}}:tc:{clock}:done", self.prefix)
    }

    /// Set of a test clock's customers whose keys are in partition `p`.
    pub fn test_clock_customers(&self, partition: u16, clock: &str) -> String {
        format!("{}:{{p{partition}}}:tc:{clock}:customers", self.prefix)
    }

    /// The test clock a customer belongs to (in the customer's partition), if any.
    pub fn customer_clock(&self, customer_id: &str) -> String {
        self.customer_key(customer_id, "testClock")
    }
}

/// The webhooks' key names (SPEC 11.2).
#[derive(Debug, Clone, Copy)]
pub struct WebhookKeys<'k>(&'k Keys);

impl std::ops::Deref for WebhookKeys<'_> {
    type Target = Keys;

    fn deref(&self) -> &Keys {
        self.0
    }
}

impl WebhookKeys<'_> {
    /// Hash of one webhook endpoint's delivery progress in a partition (`cursor`, `n`, and
    /// `d:` done / `r:` retrying / `x:` redelivered entries above the cursor).
    pub fn webhook_progress(&self, partition: u16, endpoint: &str) -> String {
        format!(
            "{}:{{p{partition}}}:webhooks:progress:{endpoint}",
            self.prefix
        )
    }

    /// Stream of a partition's dead-lettered webhook deliveries.
    pub fn webhooks_dead(&self, partition: u16) -> String {
        format!("{}:{{p{partition}}}:webhooks:dead", self.prefix)
    }

    /// Stream of retryDeadWebhooks requests (written by partition 0's owner, read by every
    /// owner for its partitions).
    pub fn webhooks_redeliver(&self) -> String {
        format!("{}:{{p0}}:webhooks:redeliver", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_keys_carry_their_partition_tag() {
        let k = Keys::new("recur", DEFAULT_PARTITIONS);
        let p = k.partition("o-1");
        assert_eq!(
            k.order_keys().order("o-1"),
            format!("recur:{{p{p}}}:order:o-1")
        );
        assert_eq!(k.order_keys().timers(p), format!("recur:{{p{p}}}:timers"));
        assert!(p < DEFAULT_PARTITIONS);
        assert_eq!(k.order_keys().events(p), format!("recur:{{p{p}}}:events"));
        assert_eq!(k.order_keys().events_channel(), "recur:events");
        assert_eq!(k.admin_keys().reply(5, "r1"), "recur:{p5}:reply:r1");
        assert_eq!(k.clock_keys().clock(), "recur:{p0}:clock");
        let claim = k.admin_keys().request_claim("r1");
        assert_eq!(claim, format!("recur:{{p{}}}:req:r1", k.partition("r1")));
        assert_eq!(k.meta(), "recur:meta");
    }

    #[test]
    fn the_partition_is_fnv1a_of_the_id_mod_the_count() {
        // FNV-1a 32 of "a" is 0xe40c292c, of "" the offset basis 0x811c9dc5.
        assert_eq!(partition_of("a", 1024), (0xe40c_292c_u32 % 1024) as u16);
        assert_eq!(partition_of("", 64), (0x811c_9dc5_u32 % 64) as u16);
        assert_eq!(partition_of("anything", 1), 0);
    }

    proptest::proptest! {
        #[test]
        fn every_id_has_one_partition_below_the_count(id in ".{0,40}", n in 1u16..=MAX_PARTITIONS) {
            let p = partition_of(&id, n);
            proptest::prop_assert!(p < n);
            proptest::prop_assert_eq!(p, partition_of(&id, n));
            let k = Keys::new("x", n);
            proptest::prop_assert_eq!(k.partition(&id), p);
        }
    }
}
