//! The admin interface: the client (used by `recur admin`, the benchmarks and the tests), and
//! the server side: typed commands parsed once ([`command`]), carts ([`carts`]), and the
//! listeners on pub/sub and the command stream with idempotent replies ([`server`]), and the
//! [`AdminHandle`] through which the HTTP API runs the same requests from its own tasks.
//!
//! The server reaches the rest of the daemon only through [`AdminState`]: the actors, the
//! scheduler (for advanceClock), the store (kept replies, listings), the clock and
//! [`Health`] (the metrics, refreshed for getMetrics).

mod carts;
pub mod client;
mod command;
mod handle;
mod idempotency;
mod intake;
mod reply;
mod server;
mod streams;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::actors::Actors;
use crate::clock::Clock;
use crate::config::Identity;
use crate::domain::basket::BasketRules;
use crate::health::Health;
use crate::ownership::Ownership;
use crate::scheduler::Scheduler;
use crate::store::carts::CartStore;
use crate::store::clock::ClockStore;
use crate::store::commands::CommandStore;
use crate::store::lease::LeaseStore;
use crate::store::orders::OrderStore;
use crate::store::test_clock::TestClockStore;
use crate::store::webhooks::WebhookStore;
use crate::store::{Keys, RedisAddress, Store};
pub use command::{args_schema, ArgsSchema, COMMAND_NAMES, LIST_MAX_LIMIT};
pub use handle::AdminHandle;
pub use intake::Source;
pub use server::start;
pub use streams::MAX_DELIVERIES;

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
    /// Where requests are read and what their channel is (SPEC 11.4).
    pub identity: Identity,
    /// With [`Identity::Enforced`]: the channels whose own names are read.
    pub channels: Vec<String>,
    /// Per channel, the only commands it may run (`[admin.commands]`).
    pub allowed: BTreeMap<String, Vec<String>>,
}

/// The parts of Redis the admin commands use, each a narrow handle made at start-up.
pub(crate) struct AdminStores {
    keys: Keys,
    orders: OrderStore,
    clock: ClockStore,
    leases: LeaseStore,
    test_clocks: TestClockStore,
    webhooks: WebhookStore,
    commands: CommandStore,
    carts: CartStore,
}

impl AdminStores {
    fn of(store: &Store) -> AdminStores {
        AdminStores {
            keys: store.keys().clone(),
            orders: store.order_store(),
            clock: store.clock_store(),
            leases: store.lease_store(),
            test_clocks: store.test_clock_store(),
            webhooks: store.webhook_store(),
            commands: store.command_store(),
            carts: store.cart_store(),
        }
    }

    /// The key names.
    fn keys(&self) -> &Keys {
        &self.keys
    }
}

/// What the admin server holds: one handle per dependency, shared by every request.
pub struct AdminState {
    actors: Actors,
    scheduler: Scheduler,
    stores: AdminStores,
    clock: Clock,
    health: Health,
    /// Which partitions this daemon answers for.
    ownership: Ownership,
    config: AdminConfig,
    /// Admin requests being handled, by request id (a retried id waits for the first).
    inflight: idempotency::Inflight,
    /// Serializes creates and renames of one customer's carts (names are unique per customer).
    cart_names: carts::CartNameLocks,
    /// The client through which this daemon hands requests to other daemons on
    /// `<prefix>:forward` (set by [`start`]; a forecast asks the owners for their partitions).
    forwarder: std::sync::OnceLock<Arc<client::AdminClient>>,
    /// The chunks of orders a forecast may read and compute at once on this daemon, over every
    /// forecast it runs (its own and the partitions other daemons ask it for): memory and
    /// threads stay bounded however many come in.
    forecast_slots: Arc<tokio::sync::Semaphore>,
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
            stores: AdminStores::of(&store),
            clock,
            health,
            ownership,
            config,
            inflight: idempotency::Inflight::default(),
            cart_names: carts::CartNameLocks::default(),
            forwarder: std::sync::OnceLock::new(),
            // One chunk per core computing, and one being read.
            forecast_slots: Arc::new(tokio::sync::Semaphore::new(
                std::thread::available_parallelism().map_or(2, std::num::NonZero::get) + 1,
            )),
        }
    }

    /// Whether `channel` is one of recur's own pub/sub channels (admin requests, events), on
    /// which no reply may be published.
    fn is_own_channel(&self, channel: &str) -> bool {
        let keys = self.stores.keys();
        [
            keys.admin_keys().admin_channel(),
            keys.admin_keys().forward_channel(),
            keys.order_keys().events_channel(),
            keys.stats_keys().inbox_channel(),
            keys.clock_keys().clock_channel(),
            keys.clock_keys().cron_channel(),
        ]
        .iter()
        .any(|c| c == channel)
            || channel.starts_with(&keys.admin_keys().admin_channel_of(""))
    }

    /// Whether `channel` may run `command` (`[admin.commands]`: a channel listed there runs
    /// only the commands listed for it; a request without a channel is channel `admin`).
    ///
    /// # Errors
    /// [`reply::AdminError::Forbidden`] naming the channel and the command.
    fn check_allowed(&self, channel: &str, command: &str) -> Result<(), reply::AdminError> {
        let channel = if channel.is_empty() { "admin" } else { channel };
        // A daemon's part of a forecast runs under the forecast's own permission.
        let command = match command {
            command::FORECAST_PARTITION => "forecast",
            other => other,
        };
        match self.config.allowed.get(channel) {
            Some(list) if !list.iter().any(|c| c == command) => {
                Err(reply::AdminError::Forbidden(format!(
                    "channel '{channel}' may not run {command} (admin.commands.{channel} lists {})",
                    if list.is_empty() {
                        "none".to_string()
                    } else {
                        list.join(", ")
                    }
                )))
            }
            _ => Ok(()),
        }
    }
}
