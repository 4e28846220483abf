//! The admin interface: the client (used by `recur admin`, the benchmarks and the tests), and
//! the server side: typed commands parsed once ([`command`]), carts ([`carts`]), and the
//! listeners on pub/sub and the command stream with idempotent replies ([`server`]).
//!
//! The server reaches the rest of the daemon only through [`AdminState`]: the actors, the
//! scheduler (for advanceClock), the store (kept replies, listings), the clock and
//! [`Health`] (the metrics, refreshed for getMetrics).

mod carts;
pub mod client;
mod command;
mod reply;
mod server;

use std::sync::Arc;
use std::time::Duration;

use crate::actors::Actors;
use crate::clock::Clock;
use crate::domain::basket::BasketRules;
use crate::health::Health;
use crate::ownership::Ownership;
use crate::scheduler::Scheduler;
use crate::store::{RedisAddress, Store};
pub use command::{COMMAND_NAMES, LIST_MAX_LIMIT};
pub use server::{start, MAX_DELIVERIES};

/// The admin settings the server uses.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Where the pub/sub listener and the command-stream reader connect.
    pub redis: RedisAddress,
    /// How long replies are kept for idempotent retries.
    pub reply_retention: Duration,
    /// Largest accepted request, in bytes.
    pub max_request_bytes: usize,
    /// updateOrder's status manager and promotion codes.
    pub basket_rules: Arc<BasketRules>,
    /// The webhook endpoints' ids (retryDeadWebhooks).
    pub webhook_endpoints: Vec<String>,
}

/// What the admin server holds: one handle per dependency, shared by every request.
pub struct AdminState {
    actors: Actors,
    scheduler: Scheduler,
    store: Store,
    clock: Clock,
    health: Health,
    /// Which partitions this daemon answers for.
    ownership: Ownership,
    config: AdminConfig,
    /// Admin requests being handled, by request id (a retried id waits for the first).
    inflight: server::Inflight,
    /// Serializes creates and renames of one customer's carts (names are unique per customer).
    cart_names: carts::CartNameLocks,
}

impl AdminState {
    /// The admin side of a daemon.
    pub fn new(
        actors: Actors,
        scheduler: Scheduler,
        store: Store,
        clock: Clock,
        health: Health,
        ownership: Ownership,
        config: AdminConfig,
    ) -> AdminState {
        AdminState {
            actors,
            scheduler,
            store,
            clock,
            health,
            ownership,
            config,
            inflight: server::Inflight::default(),
            cart_names: carts::CartNameLocks::default(),
        }
    }

    /// Whether `channel` is one of recur's own pub/sub channels (admin requests, events), on
    /// which no reply may be published.
    fn is_own_channel(&self, channel: &str) -> bool {
        let keys = self.store.keys();
        [
            keys.admin_channel(),
            keys.events_channel(),
            keys.inbox_channel(),
            keys.clock_channel(),
            keys.cron_channel(),
        ]
        .iter()
        .any(|c| c == channel)
    }
}
