//! `recur admin`'s subcommands: one per admin command, its arguments as typed flags checked
//! before anything is sent (ids, decimal amounts, dates, enumerations), turned into the
//! request's `args` object. `--json` gives the whole object (or what no flag covers, such as
//! createOrder's `pricing`); the flags win over it.

use std::io::Read;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use rust_decimal::Decimal;
use serde_json::{Map, Value};

use recur::admin::LIST_MAX_LIMIT;
use recur::config::parse_duration;
use recur::domain::calendar::Zone;
use recur::domain::command::{check_id, MAX_ID_LEN, MAX_TRIAL_DAYS};
use recur::domain::money::Currency;
use recur::domain::time::{format_instant, parse_instant};

use super::SettingsArgs;

/// `recur admin`: the settings and request options, then the command.
#[derive(Debug, Clone, Args)]
#[command(subcommand_required = true, arg_required_else_help = true)]
pub struct AdminArgs {
    #[command(flatten)]
    pub settings: SettingsArgs,
    #[command(flatten)]
    pub request: RequestArgs,
    /// The admin command.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// How a request is sent and its reply printed; accepted before or after the command.
#[derive(Debug, Clone, Args)]
#[command(next_help_heading = "Request options")]
pub struct RequestArgs {
    /// The request id (default: a new one). Retrying with the same id never repeats a change.
    #[arg(long, value_name = "ID", global = true)]
    pub request_id: Option<String>,
    /// The application name sent as the request's `channel` (updateOrder's status manager);
    /// with admin.identity = "enforced", the request goes on that channel's own names
    /// (<prefix>:admin:<NAME>, replies on <prefix>:reply:<NAME>:...).
    #[arg(long, value_name = "NAME", default_value = "cli", global = true)]
    pub channel: String,
    /// How long to keep re-sending before giving up, e.g. 10s, 2m.
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = duration_arg, global = true)]
    pub timeout: Duration,
    /// How to print the reply: the reply object as JSON, or its result as a table (key/value
    /// rows; listOrders one row per order; watch one line per event).
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = Output::Json, global = true)]
    pub output: Output,
}

/// `--output`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// The reply as indented JSON (`watch`: one JSON object per line).
    Json,
    /// For reading by eye.
    Table,
}

/// `--json`: the request's arguments as one JSON object.
#[derive(Debug, Clone, Default, Args)]
pub struct JsonArg {
    /// The command's arguments as a JSON object: inline, @FILE, or @- for stdin. Flags win
    /// over it.
    #[arg(long, value_name = "ARGS")]
    pub json: Option<String>,
}

/// The admin commands, by the names the daemon knows them by (SPEC 4, 8 and 9).
#[derive(Debug, Clone, Subcommand)]
#[command(rename_all = "camelCase")]
pub enum AdminCommand {
    /// Create an order (plan, pricing and prices in --json).
    ///
    /// The few flags set the top-level fields; the nested ones come in --json, e.g.
    /// --json '{"pricing":{"subscription":{"cycleDuration":{"count":1,"unit":"MONTH"},"cycleCount":12}},"prices":[{"cycleFrom":1,"amount":"10.00"}]}'.
    /// Creating an --order-id twice returns the first order.
    CreateOrder(CreateOrderArgs),
    /// Print an order.
    GetOrder(OrderArgs),
    /// Show what an order will do until --until if no command arrives (nothing is applied).
    PreviewOrder(PreviewOrderArgs),
    /// Forecast the book per month: charges per currency, cycle starts, ends, cancellations.
    Forecast(ForecastArgs),
    /// List orders, newest first (every status but DRAFT unless --status says).
    ListOrders(ListOrdersArgs),
    /// Change a cart's items, addresses, promotion codes, or an order's dates and status.
    ///
    /// The related items come in --json as {"lineItems": {"create": [...], "update": [...],
    /// "delete": [...]}} (the same for addresses, payments, promoCodes). A status change needs
    /// the request's --channel in [status_manager].
    UpdateOrder(UpdateOrderArgs),
    /// Delete an order (its figures leave the customer's statistics).
    DeleteOrder(OrderArgs),
    /// Record a payment (allocated to the oldest dues first, or the one --due-cycle names).
    RecordPayment(RecordPaymentArgs),
    /// Record a refund of a payment.
    RecordRefund(RecordRefundArgs),
    /// Record a failed payment attempt.
    PaymentFailed(PaymentFailedArgs),
    /// Mark an OFFLINE order as paid (once).
    MarkAsPaid(OrderArgs),
    /// Pause an order, until --resume-at or until resumeOrder.
    PauseOrder(PauseOrderArgs),
    /// Resume a paused order.
    ResumeOrder(OrderArgs),
    /// Move an order's end date later.
    PostponeEndDate(PostponeEndDateArgs),
    /// Move the start date of an order that has not started.
    ChangeStartDate(ChangeStartDateArgs),
    /// Cancel an order now, or stop its renewal at the next payment date.
    CancelOrder(CancelOrderArgs),
    /// Move an order to another subscription plan (pricing and prices in --json).
    ChangePlan(ChangePlanArgs),
    /// Drop a plan change scheduled for the next payment date.
    CancelScheduledChange(OrderArgs),
    /// Print a customer's statistics.
    GetCustomerStats(CustomerArgs),
    /// Rebuild a customer's statistics from its orders; prints the differences.
    RecomputeCustomerStats(CustomerArgs),
    /// Print the simulated (or system) time.
    GetClock(NoArgs),
    /// Move the simulated clock forward, firing every timer due on the way.
    AdvanceClock(AdvanceClockArgs),
    /// Check that a daemon answers.
    Ping(NoArgs),
    /// Print a daemon's metrics, partitions and the live daemons.
    GetMetrics(GetMetricsArgs),
    /// List the webhook endpoints with what waits (pending, retrying) and what is dead-lettered.
    GetWebhookEndpoints(NoArgs),
    /// Deliver dead-lettered webhooks again.
    RetryDeadWebhooks(RetryDeadWebhooksArgs),
    /// Create a test clock: a simulated clock of its own for a few customers' orders, beside
    /// the live ones (createOrder --test-clock-id puts an order on it).
    CreateTestClock(CreateTestClockArgs),
    /// Print a test clock (its frozenTime and whether it is advancing).
    GetTestClock(TestClockArgs),
    /// List test clocks, newest first.
    ListTestClocks(ListTestClocksArgs),
    /// Move a test clock forward, firing every timer of its orders due on the way.
    AdvanceTestClock(AdvanceTestClockArgs),
    /// Delete a test clock with its orders and customers.
    DeleteTestClock(TestClockArgs),
    /// Print every event as it is committed (one JSON line each) until Ctrl-C.
    ///
    /// Reads every partition's event stream (<prefix>:{p<N>}:events), each event with its
    /// change's entity, from now (or --from-start), so nothing committed meanwhile is missed.
    Watch(WatchArgs),
    /// Send a command by name with --json arguments (e.g. one of a newer daemon).
    Send(SendArgs),
}

/// No arguments of its own.
#[derive(Debug, Clone, Args)]
pub struct NoArgs {
    #[command(flatten)]
    pub json: JsonArg,
}

/// `--order-id` alone.
#[derive(Debug, Clone, Args)]
pub struct OrderArgs {
    /// The order's id.
    #[arg(long, value_name = "ID", value_parser = id_arg, required_unless_present = "json")]
    pub order_id: Option<String>,
    #[command(flatten)]
    pub json: JsonArg,
}

/// `--customer-id` alone.
#[derive(Debug, Clone, Args)]
pub struct CustomerArgs {
    /// The customer's id.
    #[arg(long, value_name = "ID", value_parser = id_arg, required_unless_present = "json")]
    pub customer_id: Option<String>,
    #[command(flatten)]
    pub json: JsonArg,
}

/// createOrder
#[derive(Debug, Clone, Args)]
pub struct CreateOrderArgs {
    /// The order's id [default: one derived from the request id].
    #[arg(long, value_name = "ID", value_parser = id_arg)]
    pub order_id: Option<String>,
    /// The customer's id.
    #[arg(long, value_name = "ID", value_parser = id_arg)]
    pub customer_id: Option<String>,
    /// How it is paid for.
    #[arg(long = "type", value_enum, value_name = "TYPE", ignore_case = true)]
    pub order_type: Option<OrderType>,
    /// ISO 4217 code, e.g. USD.
    #[arg(long, value_name = "CODE", value_parser = currency_arg)]
    pub currency: Option<String>,
    /// plan.id
    #[arg(long, value_name = "ID", value_parser = id_arg)]
    pub plan_id: Option<String>,
    /// plan.name
    #[arg(long, value_name = "TEXT")]
    pub plan_name: Option<String>,
    /// plan.description
    #[arg(long, value_name = "TEXT")]
    pub plan_description: Option<String>,
    /// When the order starts [default: now]: 2026-05-01 (midnight UTC) or RFC 3339.
    #[arg(long, value_name = "DATE", value_parser = date_arg)]
    pub start_date: Option<String>,
    /// Days of free trial before the first cycle (subscriptions).
    #[arg(long, value_name = "DAYS", value_parser = clap::value_parser!(u32).range(0..=MAX_TRIAL_DAYS))]
    pub free_trial_days: Option<u32>,
    /// The IANA time zone of the order's calendar, e.g. Europe/Paris [default: UTC].
    #[arg(long, value_name = "ZONE", value_parser = zone_arg)]
    pub time_zone: Option<String>,
    /// A cart name (ONLINE orders; unique among the customer's carts).
    #[arg(long, value_name = "TEXT")]
    pub name: Option<String>,
    /// Created paid (OFFLINE orders).
    #[arg(long)]
    pub paid: bool,
    /// Put the order on this test clock (its time, its advances).
    #[arg(long, value_name = "ID", value_parser = id_arg)]
    pub test_clock_id: Option<String>,
    #[command(flatten)]
    pub json: JsonArg,
}

/// updateOrder
#[derive(Debug, Clone, Args)]
pub struct UpdateOrderArgs {
    /// The customer whose order it is.
    #[arg(long, value_name = "ID", value_parser = id_arg)]
    pub customer_id: Option<String>,
    /// The order, by id (args.id).
    #[arg(long, value_name = "ID", value_parser = id_arg, conflicts_with = "name")]
    pub order_id: Option<String>,
    /// The cart, by name.
    #[arg(long, value_name = "TEXT")]
    pub name: Option<String>,
    /// The cart's new name.
    #[arg(long, value_name = "TEXT")]
    pub new_name: Option<String>,
    /// A status change (allowed by [status_manager] for --channel).
    #[arg(long, value_enum, value_name = "STATUS", ignore_case = true)]
    pub status: Option<Status>,
    /// A new start date: 2026-05-01 (midnight UTC) or RFC 3339.
    #[arg(long, value_name = "DATE", value_parser = date_arg)]
    pub start_date: Option<String>,
    /// A new end date: 2026-05-01 (midnight UTC) or RFC 3339.
    #[arg(long, value_name = "DATE", value_parser = date_arg)]
    pub end_date: Option<String>,
    /// Refused with CONFLICT unless the order is at this version.
    #[arg(long, value_name = "N")]
    pub expected_version: Option<u64>,
    #[command(flatten)]
    pub json: JsonArg,
}

/// listOrders
#[derive(Debug, Clone, Args)]
pub struct ListOrdersArgs {
    /// Only this customer's orders.
    #[arg(long, value_name = "ID", value_parser = id_arg)]
    pub customer_id: Option<String>,
    /// Only orders in this status (DRAFT orders are listed only when asked for).
    #[arg(long, value_enum, value_name = "STATUS", ignore_case = true)]
    pub status: Option<Status>,
    /// Page size [default: 50].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=LIST_MAX_LIMIT as i64))]
    pub limit: Option<u32>,
    /// The nextCursor of the previous page.
    #[arg(long, value_name = "CURSOR")]
    pub cursor: Option<String>,
    /// Only this test clock's orders (they are listed only when asked for).
    #[arg(long, value_name = "ID", value_parser = id_arg)]
    pub test_clock_id: Option<String>,
    #[command(flatten)]
    pub json: JsonArg,
}

/// recordPayment
#[derive(Debug, Clone, Args)]
pub struct RecordPaymentArgs {
    /// The order's id.
    #[arg(long, value_name = "ID", value_parser = id_arg, required_unless_present = "json")]
    pub order_id: Option<String>,
    /// The payment's id (recording it again changes nothing).
    #[arg(long, value_name = "ID", value_parser = id_arg, required_unless_present = "json")]
    pub payment_id: Option<String>,
    /// The amount, a decimal such as 10.00.
    #[arg(long, value_name = "DECIMAL", value_parser = decimal_arg, required_unless_present = "json", allow_hyphen_values = true)]
    pub amount: Option<Decimal>,
    /// The cycle whose due this payment pays first.
    #[arg(long, value_name = "N")]
    pub due_cycle: Option<u32>,
    /// Which due of --due-cycle [default: CYCLE].
    #[arg(
        long,
        value_enum,
        value_name = "KIND",
        ignore_case = true,
        requires = "due_cycle"
    )]
    pub due_kind: Option<DueKind>,
    #[command(flatten)]
    pub json: JsonArg,
}

/// recordRefund
#[derive(Debug, Clone, Args)]
pub struct RecordRefundArgs {
    /// The order's id.
    #[arg(long, value_name = "ID", value_parser = id_arg, required_unless_present = "json")]
    pub order_id: Option<String>,
    /// The refunded payment's id.
    #[arg(long, value_name = "ID", value_parser = id_arg, required_unless_present = "json")]
    pub payment_id: Option<String>,
    /// The amount, a decimal such as 10.00.
    #[arg(long, value_name = "DECIMAL", value_parser = decimal_arg, required_unless_present = "json", allow_hyphen_values = true)]
    pub amount: Option<Decimal>,
    #[command(flatten)]
    pub json: JsonArg,
}

/// paymentFailed
#[derive(Debug, Clone, Args)]
pub struct PaymentFailedArgs {
    /// The order's id.
    #[arg(long, value_name = "ID", value_parser = id_arg, required_unless_present = "json")]
    pub order_id: Option<String>,
    /// The failed payment's id.
    #[arg(long, value_name = "ID", value_parser = id_arg, required_unless_present = "json")]
    pub payment_id: Option<String>,
    /// Why it failed (at most 1024 characters).
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
    #[command(flatten)]
    pub json: JsonArg,
}

/// forecast
#[derive(Debug, Clone, Args)]
pub struct ForecastArgs {
    /// The first month (its date): 2026-05-01 or RFC 3339.
    #[arg(long, value_name = "DATE", value_parser = date_arg, required_unless_present = "json")]
    pub from: Option<String>,
    /// The last month (its date), at most 36 months after --from's.
    #[arg(long, value_name = "DATE", value_parser = date_arg, required_unless_present = "json")]
    pub to: Option<String>,
    /// Only this currency (ISO 4217 code).
    #[arg(long, value_name = "CODE")]
    pub currency: Option<String>,
    /// Only this test clock's orders, from its time.
    #[arg(long, value_name = "ID", value_parser = id_arg)]
    pub test_clock_id: Option<String>,
    /// Also draw the charges and cycle starts per month as bars in the terminal.
    #[arg(long)]
    pub chart: bool,
    #[command(flatten)]
    pub json: JsonArg,
}

/// previewOrder
#[derive(Debug, Clone, Args)]
pub struct PreviewOrderArgs {
    /// The order's id.
    #[arg(long, value_name = "ID", value_parser = id_arg, required_unless_present = "json")]
    pub order_id: Option<String>,
    /// How far to look: 2026-05-01 (midnight UTC) or RFC 3339, at most 10 years ahead.
    #[arg(long, value_name = "DATE", value_parser = date_arg, required_unless_present = "json")]
    pub until: Option<String>,
    #[command(flatten)]
    pub json: JsonArg,
}

/// pauseOrder
#[derive(Debug, Clone, Args)]
pub struct PauseOrderArgs {
    /// The order's id.
    #[arg(long, value_name = "ID", value_parser = id_arg, required_unless_present = "json")]
    pub order_id: Option<String>,
    /// When it resumes by itself: 2026-05-01 (midnight UTC) or RFC 3339 [default: never].
    #[arg(long, value_name = "DATE", value_parser = date_arg)]
    pub resume_at: Option<String>,
    /// Show what it would do now (the order after it, its events, a plan change's proration)
    /// without applying it.
    #[arg(long)]
    pub preview: bool,
    #[command(flatten)]
    pub json: JsonArg,
}

/// postponeEndDate
#[derive(Debug, Clone, Args)]
pub struct PostponeEndDateArgs {
    /// The order's id.
    #[arg(long, value_name = "ID", value_parser = id_arg, required_unless_present = "json")]
    pub order_id: Option<String>,
    /// The new end date: 2026-05-01 (midnight UTC) or RFC 3339.
    #[arg(long, value_name = "DATE", value_parser = date_arg, required_unless_present = "json")]
    pub end_date: Option<String>,
    #[command(flatten)]
    pub json: JsonArg,
}

/// changeStartDate
#[derive(Debug, Clone, Args)]
pub struct ChangeStartDateArgs {
    /// The order's id.
    #[arg(long, value_name = "ID", value_parser = id_arg, required_unless_present = "json")]
    pub order_id: Option<String>,
    /// The new start date: 2026-05-01 (midnight UTC) or RFC 3339.
    #[arg(long, value_name = "DATE", value_parser = date_arg, required_unless_present = "json")]
    pub start_date: Option<String>,
    #[command(flatten)]
    pub json: JsonArg,
}

/// cancelOrder
#[derive(Debug, Clone, Args)]
pub struct CancelOrderArgs {
    /// The order's id.
    #[arg(long, value_name = "ID", value_parser = id_arg, required_unless_present = "json")]
    pub order_id: Option<String>,
    /// Now, or at the end of the current cycle.
    #[arg(
        long,
        value_enum,
        value_name = "WHEN",
        ignore_case = true,
        required_unless_present = "json"
    )]
    pub effective_at: Option<EffectiveAt>,
    /// Who asked [default: OWNER_ACTION].
    #[arg(long, value_enum, value_name = "CAUSE", ignore_case = true)]
    pub cause: Option<CancelCause>,
    /// Show what it would do now (the order after it, its events, a plan change's proration)
    /// without applying it.
    #[arg(long)]
    pub preview: bool,
    #[command(flatten)]
    pub json: JsonArg,
}

/// changePlan
#[derive(Debug, Clone, Args)]
pub struct ChangePlanArgs {
    /// The order's id.
    #[arg(long, value_name = "ID", value_parser = id_arg)]
    pub order_id: Option<String>,
    /// Now (prorating the current cycle), or at the next payment date.
    #[arg(long, value_enum, value_name = "WHEN", ignore_case = true)]
    pub effective_at: Option<EffectiveAt>,
    /// Whether the current cycle is prorated [default: PRORATE].
    #[arg(long, value_enum, value_name = "HOW", ignore_case = true)]
    pub proration: Option<Proration>,
    /// A new currency (ISO 4217) [default: the order's].
    #[arg(long, value_name = "CODE", value_parser = currency_arg)]
    pub currency: Option<String>,
    /// plan.id
    #[arg(long, value_name = "ID", value_parser = id_arg)]
    pub plan_id: Option<String>,
    /// plan.name
    #[arg(long, value_name = "TEXT")]
    pub plan_name: Option<String>,
    /// plan.description
    #[arg(long, value_name = "TEXT")]
    pub plan_description: Option<String>,
    /// Show what it would do now (the order after it, its events, a plan change's proration)
    /// without applying it.
    #[arg(long)]
    pub preview: bool,
    #[command(flatten)]
    pub json: JsonArg,
}

/// advanceClock
#[derive(Debug, Clone, Args)]
pub struct AdvanceClockArgs {
    /// Where to move the clock: 2026-05-01 (midnight UTC) or RFC 3339.
    #[arg(long, value_name = "DATE", value_parser = date_arg, required_unless_present = "json")]
    pub to: Option<String>,
    #[command(flatten)]
    pub json: JsonArg,
}

/// getMetrics
#[derive(Debug, Clone, Args)]
pub struct GetMetricsArgs {
    /// The daemon that answers [default: partition 0's owner].
    #[arg(long, value_name = "ID", value_parser = id_arg)]
    pub daemon_id: Option<String>,
    #[command(flatten)]
    pub json: JsonArg,
}

/// createTestClock
#[derive(Debug, Clone, Args)]
pub struct CreateTestClockArgs {
    /// The clock's id [default: derived from the request id].
    #[arg(long, value_name = "ID", value_parser = id_arg)]
    pub test_clock_id: Option<String>,
    /// The clock's time: 2026-05-01 (midnight UTC) or RFC 3339.
    #[arg(long, value_name = "DATE", value_parser = date_arg, required_unless_present = "json")]
    pub frozen_time: Option<String>,
    /// A name to tell it by.
    #[arg(long, value_name = "TEXT")]
    pub name: Option<String>,
    #[command(flatten)]
    pub json: JsonArg,
}

/// `--test-clock-id` alone.
#[derive(Debug, Clone, Args)]
pub struct TestClockArgs {
    /// The test clock's id.
    #[arg(long, value_name = "ID", value_parser = id_arg, required_unless_present = "json")]
    pub test_clock_id: Option<String>,
    #[command(flatten)]
    pub json: JsonArg,
}

/// listTestClocks
#[derive(Debug, Clone, Args)]
pub struct ListTestClocksArgs {
    /// Page size [default: 50].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=LIST_MAX_LIMIT as i64))]
    pub limit: Option<u32>,
    /// The nextCursor of the previous page.
    #[arg(long, value_name = "CURSOR")]
    pub cursor: Option<String>,
    #[command(flatten)]
    pub json: JsonArg,
}

/// advanceTestClock
#[derive(Debug, Clone, Args)]
pub struct AdvanceTestClockArgs {
    /// The test clock's id.
    #[arg(long, value_name = "ID", value_parser = id_arg, required_unless_present = "json")]
    pub test_clock_id: Option<String>,
    /// Where to move it: 2026-05-01 (midnight UTC) or RFC 3339.
    #[arg(long, value_name = "DATE", value_parser = date_arg, required_unless_present = "json")]
    pub to: Option<String>,
    #[command(flatten)]
    pub json: JsonArg,
}

/// retryDeadWebhooks
#[derive(Debug, Clone, Args)]
pub struct RetryDeadWebhooksArgs {
    /// Only this endpoint's (its id) [default: every endpoint's].
    #[arg(long, value_name = "ID")]
    pub endpoint: Option<String>,
    #[command(flatten)]
    pub json: JsonArg,
}

/// watch
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// Start at the oldest event kept instead of now.
    #[arg(long)]
    pub from_start: bool,
}

/// send
#[derive(Debug, Clone, Args)]
pub struct SendArgs {
    /// The command's name, as the daemon knows it.
    #[arg(value_name = "COMMAND")]
    pub name: String,
    #[command(flatten)]
    pub json: JsonArg,
}

/// `--type`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderType {
    /// Paid online through recordPayment.
    Online,
    /// Paid outside (markAsPaid).
    Offline,
    /// Bought elsewhere; money arrives through recordPayment.
    External,
}

/// `--status`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Draft,
    Pending,
    Active,
    Paused,
    Ended,
    Canceled,
}

/// `--effective-at`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EffectiveAt {
    Immediately,
    NextPaymentDate,
}

/// `--cause`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CancelCause {
    OwnerAction,
    MemberAction,
    Unknown,
}

/// `--proration`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Proration {
    #[value(name = "PRORATE")]
    Prorate,
    #[value(name = "NONE")]
    Skip,
}

/// `--due-kind`
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[value(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DueKind {
    Cycle,
    Proration,
}

/// Why the request's arguments could not be assembled (all before anything is sent).
#[derive(Debug, thiserror::Error)]
pub enum AdminArgsError {
    /// `--json` is not valid JSON.
    #[error("--json is not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The file named by `--json @FILE` is not valid JSON.
    #[error("--json @{}: not valid JSON: {source}", path.display())]
    JsonFile {
        /// The file.
        path: PathBuf,
        /// Where the JSON is broken.
        #[source]
        source: serde_json::Error,
    },
    /// The file named by `--json @FILE` (or stdin, for `@-`) cannot be read.
    #[error("--json @{}: cannot read it: {source}", path.display())]
    Read {
        /// The file (`-` for stdin).
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// `--json` is valid JSON but not an object.
    #[error("--json must be a JSON object, like '{{\"orderId\": \"o-1\"}}'")]
    NotAnObject,
    /// Required arguments are given neither as flags nor in `--json`.
    #[error("{command}: the following required arguments were not provided: {}", missing.join(", "))]
    Missing {
        /// The subcommand.
        command: &'static str,
        /// Each missing argument as its flag (`--payment-id <ID>`), or its `--json` key.
        missing: Vec<&'static str>,
    },
}

/// A request's `args` being assembled: `--json` first, then the flags over it.
struct Fields(Map<String, Value>);

impl Fields {
    fn new(json: &JsonArg) -> Result<Fields, AdminArgsError> {
        match &json.json {
            None => Ok(Fields(Map::new())),
            Some(text) => match parse_json_arg(text)? {
                Value::Object(map) => Ok(Fields(map)),
                _ => Err(AdminArgsError::NotAnObject),
            },
        }
    }

    /// Sets `path` (dotted for a nested object: `plan.id`) when `value` is given.
    fn put(&mut self, path: &str, value: Option<Value>) -> &mut Fields {
        let Some(value) = value else {
            return self;
        };
        let mut map = &mut self.0;
        let mut parts = path.split('.').peekable();
        while let Some(part) = parts.next() {
            if parts.peek().is_none() {
                map.insert(part.to_string(), value);
                break;
            }
            let entry = map
                .entry(part.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            map = entry.as_object_mut().expect("made an object above");
        }
        self
    }

    fn has(&self, path: &str) -> bool {
        let mut value = None::<&Value>;
        let mut map = Some(&self.0);
        for part in path.split('.') {
            value = map.and_then(|m| m.get(part));
            map = value.and_then(Value::as_object);
        }
        value.is_some_and(|v| !v.is_null())
    }

    /// The object, unless one of `required` (`(path, how to give it)`) is missing.
    fn require(
        self,
        command: &'static str,
        required: &[(&str, &'static str)],
    ) -> Result<Value, AdminArgsError> {
        let missing: Vec<&'static str> = required
            .iter()
            .filter(|(path, _)| !path.split('|').any(|p| self.has(p)))
            .map(|(_, how)| *how)
            .collect();
        if missing.is_empty() {
            Ok(Value::Object(self.0))
        } else {
            Err(AdminArgsError::Missing { command, missing })
        }
    }
}

fn text(value: &Option<String>) -> Option<Value> {
    value.clone().map(Value::String)
}

fn decimal(value: &Option<Decimal>) -> Option<Value> {
    value.map(|d| Value::String(d.to_string()))
}

fn number(value: Option<impl Into<Value>>) -> Option<Value> {
    value.map(Into::into)
}

/// The wire spelling of an enumeration's value (`NEXT_PAYMENT_DATE`).
fn wire<E: ValueEnum>(value: &Option<E>) -> Option<Value> {
    value
        .as_ref()
        .and_then(ValueEnum::to_possible_value)
        .map(|v| Value::String(v.get_name().to_string()))
}

const ORDER_ID: (&str, &str) = ("orderId", "--order-id <ID>");
const CUSTOMER_ID: (&str, &str) = ("customerId", "--customer-id <ID>");
const PAYMENT_ID: (&str, &str) = ("paymentId", "--payment-id <ID>");
const AMOUNT: (&str, &str) = ("amount", "--amount <DECIMAL>");
const EFFECTIVE_AT: (&str, &str) = ("effectiveAt", "--effective-at <WHEN>");
const PLAN_ID: (&str, &str) = ("plan.id", "--plan-id <ID>");
const TEST_CLOCK_ID: (&str, &str) = ("testClockId", "--test-clock-id <ID>");
const PLAN_NAME: (&str, &str) = ("plan.name", "--plan-name <TEXT>");
const PRICING: (&str, &str) = ("pricing", "pricing (in --json)");
const PRICES: (&str, &str) = ("prices|pricing.prices", "prices (in --json)");

impl AdminCommand {
    /// The command's name on the wire (`getOrder`); `watch` is no request.
    pub fn name(&self) -> &str {
        match self {
            AdminCommand::Send(a) => &a.name,
            other => other.subcommand(),
        }
    }

    /// The subcommand's own name: the command's (`getOrder`), or `watch` or `send`.
    pub fn subcommand(&self) -> &'static str {
        match self {
            AdminCommand::CreateOrder(_) => "createOrder",
            AdminCommand::GetOrder(_) => "getOrder",
            AdminCommand::PreviewOrder(_) => "previewOrder",
            AdminCommand::Forecast(_) => "forecast",
            AdminCommand::ListOrders(_) => "listOrders",
            AdminCommand::UpdateOrder(_) => "updateOrder",
            AdminCommand::DeleteOrder(_) => "deleteOrder",
            AdminCommand::RecordPayment(_) => "recordPayment",
            AdminCommand::RecordRefund(_) => "recordRefund",
            AdminCommand::PaymentFailed(_) => "paymentFailed",
            AdminCommand::MarkAsPaid(_) => "markAsPaid",
            AdminCommand::PauseOrder(_) => "pauseOrder",
            AdminCommand::ResumeOrder(_) => "resumeOrder",
            AdminCommand::PostponeEndDate(_) => "postponeEndDate",
            AdminCommand::ChangeStartDate(_) => "changeStartDate",
            AdminCommand::CancelOrder(_) => "cancelOrder",
            AdminCommand::ChangePlan(_) => "changePlan",
            AdminCommand::CancelScheduledChange(_) => "cancelScheduledChange",
            AdminCommand::GetCustomerStats(_) => "getCustomerStats",
            AdminCommand::RecomputeCustomerStats(_) => "recomputeCustomerStats",
            AdminCommand::GetClock(_) => "getClock",
            AdminCommand::AdvanceClock(_) => "advanceClock",
            AdminCommand::Ping(_) => "ping",
            AdminCommand::GetMetrics(_) => "getMetrics",
            AdminCommand::RetryDeadWebhooks(_) => "retryDeadWebhooks",
            AdminCommand::GetWebhookEndpoints(_) => "getWebhookEndpoints",
            AdminCommand::CreateTestClock(_) => "createTestClock",
            AdminCommand::GetTestClock(_) => "getTestClock",
            AdminCommand::ListTestClocks(_) => "listTestClocks",
            AdminCommand::AdvanceTestClock(_) => "advanceTestClock",
            AdminCommand::DeleteTestClock(_) => "deleteTestClock",
            AdminCommand::Watch(_) => "watch",
            AdminCommand::Send(_) => "send",
        }
    }

    /// The request's `args`: `--json` (inline, `@FILE` or `@-`), then every flag given, with
    /// the command's required arguments checked.
    ///
    /// # Errors
    /// [`AdminArgsError`] when `--json` is not a JSON object or cannot be read, or a required
    /// argument is missing (`watch` has no arguments to send: an empty object).
    pub fn request_args(&self) -> Result<Value, AdminArgsError> {
        let name = self.subcommand();
        match self {
            AdminCommand::CreateOrder(a) => create_order_args(a, name),
            AdminCommand::UpdateOrder(a) => update_order_args(a, name),
            AdminCommand::GetOrder(a)
            | AdminCommand::DeleteOrder(a)
            | AdminCommand::MarkAsPaid(a)
            | AdminCommand::ResumeOrder(a)
            | AdminCommand::CancelScheduledChange(a) => {
                let mut f = Fields::new(&a.json)?;
                f.put("orderId", text(&a.order_id));
                f.require(name, &[ORDER_ID])
            }
            AdminCommand::ListOrders(a) => {
                let mut f = Fields::new(&a.json)?;
                f.put("customerId", text(&a.customer_id))
                    .put("status", wire(&a.status))
                    .put("limit", number(a.limit))
                    .put("cursor", text(&a.cursor))
                    .put("testClockId", text(&a.test_clock_id));
                f.require(name, &[])
            }
            AdminCommand::RecordPayment(a) => record_payment_args(a, name),
            AdminCommand::RecordRefund(a) => {
                let mut f = Fields::new(&a.json)?;
                f.put("orderId", text(&a.order_id))
                    .put("paymentId", text(&a.payment_id))
                    .put("amount", decimal(&a.amount));
                f.require(name, &[ORDER_ID, PAYMENT_ID, AMOUNT])
            }
            AdminCommand::PaymentFailed(a) => {
                let mut f = Fields::new(&a.json)?;
                f.put("orderId", text(&a.order_id))
                    .put("paymentId", text(&a.payment_id))
                    .put("reason", text(&a.reason));
                f.require(name, &[ORDER_ID, PAYMENT_ID])
            }
            AdminCommand::Forecast(a) => forecast_args(a, name),
            AdminCommand::PreviewOrder(a) => {
                let mut f = Fields::new(&a.json)?;
                f.put("orderId", text(&a.order_id))
                    .put("until", text(&a.until));
                f.require(name, &[ORDER_ID, ("until", "--until <DATE>")])
            }
            AdminCommand::PauseOrder(a) => pause_order_args(a, name),
            AdminCommand::PostponeEndDate(a) => {
                let mut f = Fields::new(&a.json)?;
                f.put("orderId", text(&a.order_id))
                    .put("endDate", text(&a.end_date));
                f.require(name, &[ORDER_ID, ("endDate", "--end-date <DATE>")])
            }
            AdminCommand::ChangeStartDate(a) => {
                let mut f = Fields::new(&a.json)?;
                f.put("orderId", text(&a.order_id))
                    .put("startDate", text(&a.start_date));
                f.require(name, &[ORDER_ID, ("startDate", "--start-date <DATE>")])
            }
            AdminCommand::CancelOrder(a) => cancel_order_args(a, name),
            AdminCommand::ChangePlan(a) => change_plan_args(a, name),
            AdminCommand::GetCustomerStats(a) | AdminCommand::RecomputeCustomerStats(a) => {
                let mut f = Fields::new(&a.json)?;
                f.put("customerId", text(&a.customer_id));
                f.require(name, &[CUSTOMER_ID])
            }
            AdminCommand::GetClock(a)
            | AdminCommand::Ping(a)
            | AdminCommand::GetWebhookEndpoints(a) => Fields::new(&a.json)?.require(name, &[]),
            AdminCommand::AdvanceClock(a) => {
                let mut f = Fields::new(&a.json)?;
                f.put("to", text(&a.to));
                f.require(name, &[("to", "--to <DATE>")])
            }
            AdminCommand::GetMetrics(a) => {
                let mut f = Fields::new(&a.json)?;
                f.put("daemonId", text(&a.daemon_id));
                f.require(name, &[])
            }
            AdminCommand::RetryDeadWebhooks(a) => {
                let mut f = Fields::new(&a.json)?;
                f.put("endpoint", text(&a.endpoint));
                f.require(name, &[])
            }
            AdminCommand::CreateTestClock(a) => {
                let mut f = Fields::new(&a.json)?;
                f.put("testClockId", text(&a.test_clock_id))
                    .put("frozenTime", text(&a.frozen_time))
                    .put("name", text(&a.name));
                f.require(name, &[("frozenTime", "--frozen-time <DATE>")])
            }
            AdminCommand::GetTestClock(a) | AdminCommand::DeleteTestClock(a) => {
                let mut f = Fields::new(&a.json)?;
                f.put("testClockId", text(&a.test_clock_id));
                f.require(name, &[TEST_CLOCK_ID])
            }
            AdminCommand::ListTestClocks(a) => {
                let mut f = Fields::new(&a.json)?;
                f.put("limit", number(a.limit))
                    .put("cursor", text(&a.cursor));
                f.require(name, &[])
            }
            AdminCommand::AdvanceTestClock(a) => {
                let mut f = Fields::new(&a.json)?;
                f.put("testClockId", text(&a.test_clock_id))
                    .put("to", text(&a.to));
                f.require(name, &[TEST_CLOCK_ID, ("to", "--to <DATE>")])
            }
            AdminCommand::Send(a) => Fields::new(&a.json)?.require(name, &[]),
            AdminCommand::Watch(_) => Ok(Value::Object(Map::new())),
        }
    }
}

/// createOrder's request arguments from its flags and `--json`.
fn create_order_args(a: &CreateOrderArgs, name: &'static str) -> Result<Value, AdminArgsError> {
    let mut f = Fields::new(&a.json)?;
    f.put("orderId", text(&a.order_id))
        .put("customerId", text(&a.customer_id))
        .put("type", wire(&a.order_type))
        .put("currency", text(&a.currency))
        .put("plan.id", text(&a.plan_id))
        .put("plan.name", text(&a.plan_name))
        .put("plan.description", text(&a.plan_description))
        .put("startDate", text(&a.start_date))
        .put("freeTrialDays", number(a.free_trial_days))
        .put("timeZone", text(&a.time_zone))
        .put("name", text(&a.name))
        .put("paid", a.paid.then_some(Value::Bool(true)))
        .put("testClockId", text(&a.test_clock_id));
    f.require(
        name,
        &[
            CUSTOMER_ID,
            ("type", "--type <TYPE>"),
            ("currency", "--currency <CODE>"),
            PLAN_ID,
            PLAN_NAME,
            PRICING,
            PRICES,
        ],
    )
}

/// updateOrder's request arguments from its flags and `--json`.
fn update_order_args(a: &UpdateOrderArgs, name: &'static str) -> Result<Value, AdminArgsError> {
    let mut f = Fields::new(&a.json)?;
    f.put("customerId", text(&a.customer_id))
        .put("id", text(&a.order_id))
        .put("name", text(&a.name))
        .put("newName", text(&a.new_name))
        .put("status", wire(&a.status))
        .put("startDate", text(&a.start_date))
        .put("endDate", text(&a.end_date))
        .put("expectedVersion", number(a.expected_version));
    f.require(
        name,
        &[CUSTOMER_ID, ("id|name", "--order-id <ID> or --name <TEXT>")],
    )
}

/// changePlan's request arguments from its flags and `--json`.
fn change_plan_args(a: &ChangePlanArgs, name: &'static str) -> Result<Value, AdminArgsError> {
    let mut f = Fields::new(&a.json)?;
    f.put("orderId", text(&a.order_id))
        .put("effectiveAt", wire(&a.effective_at))
        .put("proration", wire(&a.proration))
        .put("currency", text(&a.currency))
        .put("plan.id", text(&a.plan_id))
        .put("plan.name", text(&a.plan_name))
        .put("plan.description", text(&a.plan_description))
        .put("preview", a.preview.then_some(Value::Bool(true)));
    f.require(
        name,
        &[ORDER_ID, EFFECTIVE_AT, PLAN_ID, PLAN_NAME, PRICING, PRICES],
    )
}

/// cancelOrder's request arguments from its flags and `--json`.
fn cancel_order_args(a: &CancelOrderArgs, name: &'static str) -> Result<Value, AdminArgsError> {
    let mut f = Fields::new(&a.json)?;
    f.put("orderId", text(&a.order_id))
        .put("effectiveAt", wire(&a.effective_at))
        .put("cause", wire(&a.cause))
        .put("preview", a.preview.then_some(Value::Bool(true)));
    f.require(name, &[ORDER_ID, EFFECTIVE_AT])
}

/// recordPayment's request arguments from its flags and `--json`.
fn record_payment_args(a: &RecordPaymentArgs, name: &'static str) -> Result<Value, AdminArgsError> {
    let mut f = Fields::new(&a.json)?;
    f.put("orderId", text(&a.order_id))
        .put("paymentId", text(&a.payment_id))
        .put("amount", decimal(&a.amount))
        .put("due.cycle", number(a.due_cycle))
        .put("due.kind", wire(&a.due_kind));
    f.require(name, &[ORDER_ID, PAYMENT_ID, AMOUNT])
}

/// pauseOrder's request arguments from its flags and `--json`.
fn pause_order_args(a: &PauseOrderArgs, name: &'static str) -> Result<Value, AdminArgsError> {
    let mut f = Fields::new(&a.json)?;
    f.put("orderId", text(&a.order_id))
        .put("resumeAt", text(&a.resume_at))
        .put("preview", a.preview.then_some(Value::Bool(true)));
    f.require(name, &[ORDER_ID])
}

/// forecast's request arguments from its flags and `--json`.
fn forecast_args(a: &ForecastArgs, name: &'static str) -> Result<Value, AdminArgsError> {
    let mut f = Fields::new(&a.json)?;
    f.put("from", text(&a.from))
        .put("to", text(&a.to))
        .put("currency", text(&a.currency))
        .put("testClockId", text(&a.test_clock_id));
    f.require(name, &[("from", "--from <DATE>"), ("to", "--to <DATE>")])
}

/// Parses `--json`: inline JSON, `@path` (a file) or `@-` (stdin).
fn parse_json_arg(text: &str) -> Result<Value, AdminArgsError> {
    let Some(path) = text.strip_prefix('@') else {
        return Ok(serde_json::from_str(text)?);
    };
    let path = PathBuf::from(path);
    let read_error = |source| AdminArgsError::Read {
        path: path.clone(),
        source,
    };
    let contents = if path.as_os_str() == "-" {
        let mut contents = String::new();
        std::io::stdin()
            .read_to_string(&mut contents)
            .map_err(read_error)?;
        contents
    } else {
        std::fs::read_to_string(&path).map_err(read_error)?
    };
    serde_json::from_str(&contents).map_err(|source| AdminArgsError::JsonFile {
        path: path.clone(),
        source,
    })
}

/// An order, customer, payment, plan or daemon id, as the daemon accepts it.
fn id_arg(value: &str) -> Result<String, String> {
    check_id("id", value)
        .map(|()| value.to_string())
        .map_err(|_| format!("an id is 1 to {MAX_ID_LEN} letters, digits or _ . @ - (e.g. ord-1)"))
}

/// A decimal amount, `10.00`.
fn decimal_arg(value: &str) -> Result<Decimal, String> {
    Decimal::from_str(value.trim()).map_err(|_| {
        let hint = if value.contains(',') {
            " (the decimal separator is a dot)"
        } else {
            ""
        };
        format!("not a decimal amount: write it like 10.00{hint}")
    })
}

/// A date as the daemon wants it (RFC 3339, UTC): `2026-05-01` is midnight UTC of that day.
pub fn date_arg(value: &str) -> Result<String, String> {
    let value = value.trim();
    let day = (value.len() == 10)
        .then(|| chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").ok())
        .flatten();
    if let Some(day) = day {
        return Ok(format_instant(
            &day.and_time(chrono::NaiveTime::MIN).and_utc(),
        ));
    }
    parse_instant(value)
        .map(|t| format_instant(&t))
        .map_err(|_| {
            "not a date: write 2026-05-01 (midnight UTC) or an RFC 3339 instant such as \
             2026-05-01T09:30:00Z"
                .to_string()
        })
}

/// An ISO 4217 currency code.
fn currency_arg(value: &str) -> Result<String, String> {
    Currency::parse(value)
        .map(|_| value.to_string())
        .map_err(|_| "not an ISO 4217 currency code such as USD or EUR".to_string())
}

/// An IANA time zone name.
fn zone_arg(value: &str) -> Result<String, String> {
    Zone::parse(value)
        .map(|_| value.to_string())
        .ok_or_else(|| "not an IANA time zone name such as Europe/Paris or UTC".to_string())
}

/// `--timeout`
fn duration_arg(value: &str) -> Result<Duration, String> {
    parse_duration(value).map_err(|e| format!("{e} (e.g. 10s, 2m)"))
}
