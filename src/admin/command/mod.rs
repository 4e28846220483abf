//! Admin commands, typed: each request is parsed once into an [`AdminCommand`] with validated
//! arguments ([`AdminCommand::parse`]) and run against the [`AdminState`]
//! ([`AdminCommand::run`]); its outcome or error becomes a reply in one place
//! ([`super::reply::reply_of`]).
//!
//! The commands come in families, one file each (in the shape of mini-redis's `cmd/`):
//! `daemon.rs` (ping, getClock, getMetrics, advanceClock), `orders.rs` (createOrder, getOrder,
//! the lifecycle commands, previews, updateOrder, listOrders), `customers.rs`, `forecast.rs`,
//! `test_clocks.rs` and `webhooks.rs`. Each family is an enum implementing [`Family`]: its
//! commands' parsing, routing key, flags and run live together, so a new command touches its
//! family's file only. [`AdminCommand`] holds one family's command and hands every question to
//! it.

use super::reply::{AdminError, Outcome};
use super::AdminState;
use crate::actors::order::RequestMeta;
use crate::store::Keys;
use crate::wire::Request;

/// Default and largest page size of listOrders.
pub const LIST_DEFAULT_LIMIT: usize = 50;
pub const LIST_MAX_LIMIT: usize = 500;
/// How many reads of `limit` ids one listOrders page makes at most before it returns a shorter
/// page (with a cursor) rather than scanning on.
pub const LIST_MAX_SCANNED_PAGES: usize = 10;

pub use crate::wire::COMMAND_NAMES;

/// A daemon's part of a forecast: the figures of one partition, asked by the daemon that
/// answers the forecast of the partition's owner (SPEC 11.6). Internal: accepted only on
/// `<prefix>:forward`, where daemons hand requests to each other; not in [`COMMAND_NAMES`].
pub const FORECAST_PARTITION: &str = "forecastPartition";

/// How long one forwarded attempt waits for the owner's reply before it is published again
/// (with the same id: the owner answers a duplicate from its kept reply).
pub(crate) const FORWARD_ATTEMPT: std::time::Duration = std::time::Duration::from_secs(2);

/// Whether `command` is one only daemons send each other (see [`FORECAST_PARTITION`]).
pub fn is_internal(command: &str) -> bool {
    command == FORECAST_PARTITION
}

/// One family of admin commands (one file of this folder): everything the server asks of a
/// command, answered by the family for its own commands.
trait Family: Sized {
    /// Parses and validates a request named `name`: `None` when the name is not one of this
    /// family's commands.
    fn parse(name: &str, req: &Request) -> Option<Result<Self, AdminError>>;

    /// The order the command is about, when it names one (the logs' `order_id`).
    fn order_id(&self) -> Option<&str> {
        None
    }

    /// The partition whose owner applies the command (SPEC 6): the order's, else the
    /// customer's, else partition 0.
    fn routing_partition(&self, _keys: &Keys) -> u16 {
        0
    }

    /// The daemon a request names to answer it, which answers it whatever partitions it holds.
    fn addressed_daemon(&self) -> Option<&str> {
        None
    }

    /// Whether its reply reports what Redis holds (SPEC 11.1: confirmed by the replicas before
    /// it is sent).
    fn reports_data(&self) -> bool {
        true
    }

    /// Whether the command waits while an advance of the daemon's clock runs (it takes the
    /// scheduler's command gate shared). No default: each family says it for each command.
    fn waits_for_advance(&self) -> bool;

    /// Runs the command.
    async fn run(
        self,
        state: &AdminState,
        request: RequestMeta,
        raw: &Request,
    ) -> Result<Outcome, AdminError>;

    /// The schema of `name`'s args, when it is this family's and has a fixed shape.
    fn args_schema(_name: &str) -> Option<ArgsSchema> {
        None
    }
}

/// One admin request, parsed and validated: a command of one family.
#[derive(Debug)]
pub enum AdminCommand {
    Daemon(DaemonCommand),
    Orders(OrderCommand),
    Customers(CustomerCommand),
    Forecast(ForecastCommand),
    TestClocks(TestClockCommand),
    Webhooks(WebhookCommand),
}

/// `$body` with `$c` bound to the family's command, whichever family `$command` holds.
macro_rules! per_family {
    ($command:expr, $c:ident => $body:expr) => {
        match $command {
            AdminCommand::Daemon($c) => $body,
            AdminCommand::Orders($c) => $body,
            AdminCommand::Customers($c) => $body,
            AdminCommand::Forecast($c) => $body,
            AdminCommand::TestClocks($c) => $body,
            AdminCommand::Webhooks($c) => $body,
        }
    };
}

/// One family's parse of `req`, its command wrapped into an [`AdminCommand`].
fn parse_as<F: Family>(
    name: &str,
    req: &Request,
    wrap: fn(F) -> AdminCommand,
) -> Option<Result<AdminCommand, AdminError>> {
    F::parse(name, req).map(|parsed| parsed.map(wrap))
}

/// One schema and the named schemas it refers to, for the HTTP API's OpenAPI document.
pub type ArgsSchema = (
    utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    Vec<(
        String,
        utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>,
    )>,
);

fn args_schema_of<T: utoipa::ToSchema>() -> ArgsSchema {
    let mut named = vec![(T::name().into_owned(), T::schema())];
    T::schemas(&mut named);
    let reference = utoipa::openapi::Ref::from_schema_name(T::name());
    (utoipa::openapi::RefOr::Ref(reference), named)
}

/// The schema of `command`'s args, from the types its arguments are read into (the HTTP
/// API's OpenAPI document, SPEC 11.3); `None` for a command without a fixed shape (updateOrder,
/// whose related items are read by its pipeline) or one this daemon does not know.
pub fn args_schema(command: &str) -> Option<ArgsSchema> {
    DaemonCommand::args_schema(command)
        .or_else(|| OrderCommand::args_schema(command))
        .or_else(|| CustomerCommand::args_schema(command))
        .or_else(|| ForecastCommand::args_schema(command))
        .or_else(|| TestClockCommand::args_schema(command))
        .or_else(|| WebhookCommand::args_schema(command))
}

impl AdminCommand {
    /// Parses and validates a request's command and arguments: each family in turn, the first
    /// that knows the name (the families' names do not overlap).
    ///
    /// # Errors
    /// [`AdminError`] with the code the reply carries (INVALID_REQUEST, UNKNOWN_COMMAND, or an
    /// updateOrder refusal with its stage).
    pub fn parse(req: &Request) -> Result<AdminCommand, AdminError> {
        let name = req.command.as_str();
        parse_as(name, req, AdminCommand::Orders)
            .or_else(|| parse_as(name, req, AdminCommand::Daemon))
            .or_else(|| parse_as(name, req, AdminCommand::Customers))
            .or_else(|| parse_as(name, req, AdminCommand::Forecast))
            .or_else(|| parse_as(name, req, AdminCommand::TestClocks))
            .or_else(|| parse_as(name, req, AdminCommand::Webhooks))
            .unwrap_or_else(|| Err(AdminError::UnknownCommand(name.to_string())))
    }

    /// The order the command is about, when it names one (the logs' `order_id`).
    pub fn order_id(&self) -> Option<&str> {
        per_family!(self, c => c.order_id())
    }

    /// The partition whose owner applies the command (SPEC 6): the order's, else the
    /// customer's, else partition 0.
    pub fn routing_partition(&self, keys: &Keys) -> u16 {
        per_family!(self, c => c.routing_partition(keys))
    }

    /// The daemon a request names to answer it (getMetrics with `daemonId`), which answers it
    /// whatever partitions it holds; such a reply is not kept (it is a read of that daemon).
    pub fn addressed_daemon(&self) -> Option<&str> {
        per_family!(self, c => c.addressed_daemon())
    }

    /// Whether its reply reports what Redis holds (SPEC 11.1: confirmed by the replicas before
    /// it is sent); see [`DaemonCommand`] for the commands that do not.
    pub fn reports_data(&self) -> bool {
        per_family!(self, c => c.reports_data())
    }

    /// Whether the command waits while an advance runs: all but advanceClock itself (whose
    /// completion the clock follower, which holds commands back, works towards) and the reads
    /// that fire nothing (ping, getClock, getMetrics, listOrders, getCustomerStats), which are
    /// answered during an advance with what is committed so far. getOrder waits: it fires the
    /// order up to now first, like any order command.
    ///
    /// Test clocks live beside the daemon's clock (SPEC 11.5): their commands and the
    /// creation of their orders never wait for its advance (and commands on their orders do
    /// not either: `server::route` tells them apart while an advance runs). Each family's
    /// `waits_for_advance` says it for its commands.
    pub fn waits_for_advance(&self) -> bool {
        per_family!(self, c => c.waits_for_advance())
    }

    /// Runs the command.
    ///
    /// # Errors
    /// [`AdminError`] when it is refused or Redis or an actor fails.
    pub async fn run(
        self,
        state: &AdminState,
        request: RequestMeta,
        raw: &Request,
    ) -> Result<Outcome, AdminError> {
        per_family!(self, c => c.run(state, request, raw).await)
    }
}

mod args;
mod customers;
mod daemon;
mod forecast;
mod orders;
mod test_clocks;
mod webhooks;

use customers::*;
use daemon::*;
use forecast::*;
use orders::*;
use test_clocks::*;
use webhooks::*;

#[cfg(test)]
mod tests;
