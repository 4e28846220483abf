//! Commands and their arguments: raw JSON args are validated here into typed values, and every
//! refusal names the field. The admin layer only picks the command by name.

use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::Value;

use super::calendar::{Duration, Unit, Zone};
use super::error::DomainError;
use super::money::Currency;
use super::order::{
    CancelCause, DueKind, Dunning, EffectiveAt, FinalAction, OrderType, Plan, PriceRange, Pricing,
    PricingKind,
};
use super::time::{parse_instant, Instant};

/// Longest id accepted for orders, customers, payments and plans.
pub const MAX_ID_LEN: usize = 128;
/// Longest free trial accepted, in days.
pub const MAX_TRIAL_DAYS: i64 = 3650;

/// Checks an identifier: 1 to 128 characters of `A-Z a-z 0-9 _ . @ -`. Ids become parts of
/// Redis keys, so anything else (spaces, colons, braces, control characters) is refused.
///
/// # Errors
/// [`DomainError::InvalidArgument`] naming `field`.
pub fn check_id(field: &str, id: &str) -> Result<(), DomainError> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(DomainError::invalid(
            field,
            format!("must be 1 to {MAX_ID_LEN} characters"),
        ));
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-'))
    {
        return Err(DomainError::invalid(
            field,
            "may contain only letters, digits and _ . @ -",
        ));
    }
    Ok(())
}

/// Deserializes `args` into `T`, turning serde's message into an INVALID_REQUEST.
///
/// # Errors
/// [`DomainError::InvalidArgument`] on `args` when the JSON does not fit.
pub fn parse_args<T: DeserializeOwned>(args: &Value) -> Result<T, DomainError> {
    let args = if args.is_null() {
        Value::Object(Default::default())
    } else {
        args.clone()
    };
    serde_json::from_value(args).map_err(|e| DomainError::invalid("args", e.to_string()))
}

/// Longest plan name and cart name accepted.
pub const MAX_NAME_LEN: usize = 256;

/// Checks a free-text value: not blank, at most `max` bytes.
///
/// # Errors
/// [`DomainError::InvalidArgument`] naming `field`.
pub fn check_text(field: &str, text: &str, max: usize) -> Result<(), DomainError> {
    if text.trim().is_empty() || text.len() > max {
        return Err(DomainError::invalid(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
    Ok(())
}

fn instant(field: &str, s: &str) -> Result<Instant, DomainError> {
    parse_instant(s).map_err(|e| DomainError::invalid(field, e))
}

/// createOrder's arguments as they arrive.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateOrderArgs {
    pub customer_id: String,
    pub plan: PlanArgs,
    #[serde(rename = "type")]
    pub order_type: String,
    pub pricing: PricingArgs,
    #[serde(default)]
    pub prices: Option<Vec<PriceArgs>>,
    pub currency: String,
    #[serde(default)]
    pub free_trial_days: Option<i64>,
    #[serde(default)]
    pub start_date: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub paid: Option<bool>,
    #[serde(default)]
    pub order_id: Option<String>,
    /// The IANA time zone of the order's calendar (SPEC 8), default "UTC".
    #[serde(default)]
    pub time_zone: Option<String>,
    /// This order's dunning (SPEC 8), overriding `[lifecycle.dunning]`.
    #[serde(default)]
    pub dunning: Option<DunningArgs>,
    /// The test clock the order lives on (SPEC 11.5).
    #[serde(default)]
    pub test_clock_id: Option<String>,
}

/// `dunning` as it arrives: both parts optional (the defaults fill in).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DunningArgs {
    #[serde(default)]
    pub retries: Option<Vec<String>>,
    #[serde(default)]
    pub final_action: Option<String>,
}

/// `plan` as it arrives.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PlanArgs {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

/// `pricing` as it arrives (exactly one of the three is checked later).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PricingArgs {
    #[serde(default)]
    pub subscription: Option<SubscriptionArgs>,
    #[serde(default)]
    pub single_payment_for_duration: Option<DurationArgs>,
    #[serde(default)]
    pub single_payment_unlimited: Option<bool>,
    /// Accepted here too, as in the order's own `pricing`; top-level `prices` wins.
    #[serde(default)]
    pub prices: Option<Vec<PriceArgs>>,
}

/// `pricing.subscription` as it arrives.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SubscriptionArgs {
    pub cycle_duration: DurationArgs,
    pub cycle_count: i64,
}

/// A duration as it arrives.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DurationArgs {
    pub count: i64,
    pub unit: String,
}

/// One `prices[]` entry as it arrives.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PriceArgs {
    pub cycle_from: i64,
    #[serde(default)]
    pub number_of_cycles: Option<i64>,
    #[schema(value_type = String, example = "9.99")]
    pub amount: Decimal,
}

/// A validated createOrder: everything [`super::lifecycle::create`] needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    pub id: String,
    pub channel: String,
    pub customer_id: String,
    pub plan: Plan,
    pub order_type: OrderType,
    pub pricing: Pricing,
    pub currency: Currency,
    pub free_trial_days: u32,
    pub start_date: Option<Instant>,
    pub name: Option<String>,
    pub paid: bool,
    pub time_zone: Zone,
    /// The order's own dunning; retries left out are the defaults' (`["1d", "2d"]`).
    pub dunning: Option<Dunning>,
    /// The test clock the order lives on (SPEC 11.5): its time, and its timers fire only
    /// when that clock advances.
    pub test_clock_id: Option<String>,
}

/// createOrder's `type`.
fn parse_order_type(name: &str) -> Result<OrderType, DomainError> {
    match name {
        "ONLINE" => Ok(OrderType::Online),
        "OFFLINE" => Ok(OrderType::Offline),
        "EXTERNAL" => Ok(OrderType::External),
        other => Err(DomainError::invalid(
            "type",
            format!("unknown type '{other}' (expected ONLINE, OFFLINE or EXTERNAL)"),
        )),
    }
}

/// createOrder's `timeZone` (UTC when absent).
fn parse_time_zone(name: Option<&str>) -> Result<Zone, DomainError> {
    match name {
        None => Ok(Zone::UTC),
        Some(name) => Zone::parse(name).ok_or_else(|| {
            DomainError::invalid(
                "timeZone",
                format!("unknown time zone '{name}' (an IANA name such as Europe/Paris)"),
            )
        }),
    }
}

/// createOrder's `dunning` (retries 1d, 2d and CANCEL unless given).
fn parse_dunning(d: DunningArgs) -> Result<Dunning, DomainError> {
    let final_action = match d.final_action.as_deref() {
        None | Some("CANCEL") => FinalAction::Cancel,
        Some("PAUSE") => FinalAction::Pause,
        Some("KEEP") => FinalAction::Keep,
        Some(other) => {
            return Err(DomainError::invalid(
                "dunning.finalAction",
                format!("unknown final action '{other}' (expected CANCEL, PAUSE or KEEP)"),
            ))
        }
    };
    Ok(Dunning {
        retries: d
            .retries
            .unwrap_or_else(|| vec!["1d".to_string(), "2d".to_string()]),
        final_action,
    })
}

impl NewOrder {
    /// Validates createOrder's arguments. `id` is the order id the caller settled on (the
    /// client's `orderId`, or one derived from the request id); `channel` is the request's.
    ///
    /// # Errors
    /// [`DomainError::InvalidArgument`] naming the first offending field.
    pub fn parse(
        args: CreateOrderArgs,
        id: String,
        channel: String,
    ) -> Result<NewOrder, DomainError> {
        check_id("orderId", &id)?;
        check_id("customerId", &args.customer_id)?;
        check_id("plan.id", &args.plan.id)?;
        check_text("plan.name", &args.plan.name, MAX_NAME_LEN)?;
        let order_type = parse_order_type(&args.order_type)?;
        let currency = Currency::parse(&args.currency)
            .map_err(|e| DomainError::invalid("currency", e.to_string()))?;
        let kind = parse_pricing_kind(&args.pricing)?;
        let raw_prices = args
            .prices
            .or(args.pricing.prices)
            .ok_or_else(|| DomainError::invalid("prices", "is required"))?;
        let pricing = Pricing {
            kind,
            prices: Vec::new(),
        };
        let prices = validate_prices(&raw_prices, pricing.cycle_limit(), currency)?;
        let pricing = Pricing { prices, ..pricing };

        let free_trial_days = match args.free_trial_days.unwrap_or(0) {
            d if !(0..=MAX_TRIAL_DAYS).contains(&d) => {
                return Err(DomainError::invalid(
                    "freeTrialDays",
                    format!("must be between 0 and {MAX_TRIAL_DAYS}"),
                ))
            }
            d => d as u32,
        };
        if free_trial_days > 0 && !pricing.is_recurring() {
            return Err(DomainError::invalid(
                "freeTrialDays",
                "a free trial needs a subscription plan",
            ));
        }
        let start_date = args
            .start_date
            .as_deref()
            .map(|s| instant("startDate", s))
            .transpose()?;
        if let Some(name) = &args.name {
            if order_type != OrderType::Online {
                return Err(DomainError::invalid(
                    "name",
                    "only ONLINE orders can be named carts",
                ));
            }
            check_text("name", name, MAX_NAME_LEN)?;
        }
        let time_zone = parse_time_zone(args.time_zone.as_deref())?;
        let dunning = args.dunning.map(parse_dunning).transpose()?;
        if let Some(clock) = &args.test_clock_id {
            check_id("testClockId", clock)?;
        }
        let paid = args.paid.unwrap_or(false);
        if paid && order_type != OrderType::Offline {
            return Err(DomainError::invalid(
                "paid",
                "only OFFLINE orders can be created paid",
            ));
        }
        Ok(NewOrder {
            id,
            channel,
            customer_id: args.customer_id,
            plan: Plan {
                id: args.plan.id,
                name: args.plan.name,
                description: args.plan.description.unwrap_or_default(),
            },
            order_type,
            pricing,
            currency,
            free_trial_days,
            start_date,
            name: args.name,
            paid,
            time_zone,
            dunning,
            test_clock_id: args.test_clock_id,
        })
    }
}

fn parse_duration(field: &str, d: &DurationArgs) -> Result<Duration, DomainError> {
    let unit = Unit::parse(&d.unit).ok_or_else(|| {
        DomainError::invalid(
            format!("{field}.unit"),
            format!(
                "unknown unit '{}' (expected DAY, WEEK, MONTH or YEAR)",
                d.unit
            ),
        )
    })?;
    if d.count < 1 || d.count > 100_000 {
        return Err(DomainError::invalid(
            format!("{field}.count"),
            "must be between 1 and 100000",
        ));
    }
    Ok(Duration {
        count: d.count as u32,
        unit,
    })
}

/// Reads which of the three pricing kinds `pricing` asks for (its `prices` are checked by
/// [`validate_prices`]).
///
/// # Errors
/// [`DomainError::InvalidArgument`] naming the offending `pricing` field.
pub fn parse_pricing_kind(p: &PricingArgs) -> Result<PricingKind, DomainError> {
    let given = usize::from(p.subscription.is_some())
        + usize::from(p.single_payment_for_duration.is_some())
        + usize::from(p.single_payment_unlimited.is_some());
    if given != 1 {
        return Err(DomainError::invalid(
            "pricing",
            "must have exactly one of subscription, singlePaymentForDuration, singlePaymentUnlimited",
        ));
    }
    if let Some(s) = &p.subscription {
        let cycle_duration =
            parse_duration("pricing.subscription.cycleDuration", &s.cycle_duration)?;
        if s.cycle_count < 0 || s.cycle_count > 100_000 {
            return Err(DomainError::invalid(
                "pricing.subscription.cycleCount",
                "must be between 0 (renews until canceled) and 100000",
            ));
        }
        return Ok(PricingKind::Subscription {
            cycle_duration,
            cycle_count: s.cycle_count as u32,
        });
    }
    if let Some(d) = &p.single_payment_for_duration {
        return Ok(PricingKind::SinglePaymentForDuration(parse_duration(
            "pricing.singlePaymentForDuration",
            d,
        )?));
    }
    if p.single_payment_unlimited != Some(true) {
        return Err(DomainError::invalid(
            "pricing.singlePaymentUnlimited",
            "must be true when given",
        ));
    }
    Ok(PricingKind::SinglePaymentUnlimited)
}

/// Checks that `prices` cover cycles 1..=limit (1.. to infinity when `limit` is None) exactly
/// once, with valid amounts, and returns them sorted by `cycleFrom` with the currency's scale.
///
/// # Errors
/// [`DomainError::InvalidArgument`] naming the offending `prices[i]` field.
pub fn validate_prices(
    prices: &[PriceArgs],
    limit: Option<u32>,
    currency: Currency,
) -> Result<Vec<PriceRange>, DomainError> {
    if prices.is_empty() {
        return Err(DomainError::invalid(
            "prices",
            "must list at least one price",
        ));
    }
    let mut indexed: Vec<(usize, &PriceArgs)> = prices.iter().enumerate().collect();
    indexed.sort_by_key(|(_, p)| p.cycle_from);
    let mut out = Vec::with_capacity(prices.len());
    let mut expected: u64 = 1;
    let last = indexed.len() - 1;
    for (pos, (i, p)) in indexed.iter().enumerate() {
        let field = |name: &str| format!("prices[{i}].{name}");
        if p.cycle_from < 1 {
            return Err(DomainError::invalid(
                field("cycleFrom"),
                "must be 1 or more",
            ));
        }
        let from = p.cycle_from as u64;
        if from > expected {
            return Err(DomainError::invalid(
                field("cycleFrom"),
                format!("cycles {expected} to {} have no price (gap)", from - 1),
            ));
        }
        if from < expected {
            return Err(DomainError::invalid(
                field("cycleFrom"),
                format!("cycle {from} already has a price (overlap)"),
            ));
        }
        if let Some(limit) = limit {
            if from > u64::from(limit) {
                return Err(DomainError::invalid(
                    field("cycleFrom"),
                    format!("the plan has only {limit} cycle(s)"),
                ));
            }
        }
        let amount = currency
            .check_amount(p.amount)
            .map_err(|e| DomainError::invalid(field("amount"), e.to_string()))?;
        let number_of_cycles =
            match p.number_of_cycles {
                None if pos != last => {
                    return Err(DomainError::invalid(
                        field("numberOfCycles"),
                        "only the last range may be open-ended (overlap)",
                    ))
                }
                None => None,
                Some(n) if n < 1 => {
                    return Err(DomainError::invalid(
                        field("numberOfCycles"),
                        "must be 1 or more",
                    ))
                }
                Some(n) => {
                    expected = from + n as u64;
                    if let Some(limit) = limit {
                        if expected - 1 > u64::from(limit) {
                            return Err(DomainError::invalid(
                                field("numberOfCycles"),
                                format!("covers cycles beyond the plan's {limit}"),
                            ));
                        }
                    }
                    Some(u32::try_from(n).map_err(|_| {
                        DomainError::invalid(field("numberOfCycles"), "is too large")
                    })?)
                }
            };
        out.push(PriceRange {
            cycle_from: from as u32,
            number_of_cycles,
            amount,
        });
    }
    let open_ended = out.last().is_some_and(|p| p.number_of_cycles.is_none());
    match limit {
        None if !open_ended => Err(DomainError::invalid(
            "prices",
            format!("a plan that renews until canceled needs an open-ended last range (cycles from {expected} have no price)"),
        )),
        Some(limit) if !open_ended && expected - 1 < u64::from(limit) => Err(DomainError::invalid(
            "prices",
            format!("cycles {expected} to {limit} have no price (gap)"),
        )),
        _ => Ok(out),
    }
}

/// A command on an existing order, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    RecordPayment {
        payment_id: String,
        amount: Decimal,
        /// `due {cycle, kind}`: the due this payment pays first (SPEC 10).
        due: Option<(u32, DueKind)>,
    },
    PaymentFailed {
        payment_id: String,
        reason: String,
    },
    RecordRefund {
        payment_id: String,
        amount: Decimal,
    },
    MarkAsPaid,
    Pause {
        resume_at: Option<Instant>,
    },
    Resume,
    PostponeEndDate {
        end_date: Instant,
    },
    ChangeStartDate {
        start_date: Instant,
    },
    Cancel {
        effective_at: EffectiveAt,
        cause: CancelCause,
    },
    Delete,
    /// changePlan (SPEC 8); prices are checked against the order's currency and cycle.
    ChangePlan {
        plan: Plan,
        pricing_kind: PricingKind,
        prices: Vec<PriceArgs>,
        currency: Option<Currency>,
        effective_at: EffectiveAt,
        prorate: bool,
    },
    CancelScheduledChange,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct ChangePlanArgs {
    order_id: String,
    plan: PlanArgs,
    pricing: PricingArgs,
    #[serde(default)]
    prices: Option<Vec<PriceArgs>>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    effective_at: Option<String>,
    #[serde(default)]
    proration: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PaymentArgs {
    order_id: String,
    payment_id: String,
    #[schema(value_type = String, example = "9.99")]
    amount: Decimal,
    #[serde(default)]
    due: Option<DueArgs>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct DueArgs {
    cycle: u32,
    #[serde(default)]
    #[schema(value_type = Option<String>, example = "CYCLE")]
    kind: DueKind,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct FailureArgs {
    order_id: String,
    payment_id: String,
    #[serde(default)]
    reason: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct OrderOnlyArgs {
    order_id: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct PauseArgs {
    order_id: String,
    #[serde(default)]
    resume_at: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct EndDateArgs {
    order_id: String,
    end_date: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct StartDateArgs {
    order_id: String,
    start_date: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct CancelArgs {
    order_id: String,
    #[serde(default)]
    effective_at: Option<String>,
    #[serde(default)]
    cause: Option<String>,
}

/// `effectiveAt` (cancelOrder, changePlan): required, IMMEDIATELY or NEXT_PAYMENT_DATE.
fn effective_at(given: Option<&str>) -> Result<EffectiveAt, DomainError> {
    match given {
        None => Err(DomainError::invalid(
            "effectiveAt",
            "is required (IMMEDIATELY or NEXT_PAYMENT_DATE)",
        )),
        Some("IMMEDIATELY") => Ok(EffectiveAt::Immediately),
        Some("NEXT_PAYMENT_DATE") => Ok(EffectiveAt::NextPaymentDate),
        Some(other) => Err(DomainError::invalid(
            "effectiveAt",
            format!("unknown value '{other}' (expected IMMEDIATELY or NEXT_PAYMENT_DATE)"),
        )),
    }
}

impl Command {
    /// Names of the admin commands that [`Command::parse`] handles.
    pub const NAMES: [&'static str; 12] = [
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

    /// Parses the args of the order command `name` into `(orderId, command)`; `None` when
    /// `name` is not one of [`Command::NAMES`].
    ///
    /// # Errors
    /// [`DomainError::InvalidArgument`] for missing, mistyped or invalid arguments.
    pub fn parse(name: &str, args: &Value) -> Option<Result<(String, Command), DomainError>> {
        let parsed = match name {
            "recordPayment" | "recordRefund" => parse_args::<PaymentArgs>(args).and_then(|a| {
                check_id("paymentId", &a.payment_id)?;
                let cmd = if name == "recordPayment" {
                    let due = a.due.map(|d| (d.cycle, d.kind));
                    Command::RecordPayment { payment_id: a.payment_id, amount: a.amount, due }
                } else {
                    if a.due.is_some() {
                        return Err(DomainError::invalid("due", "only recordPayment names a due"));
                    }
                    Command::RecordRefund { payment_id: a.payment_id, amount: a.amount }
                };
                Ok((a.order_id, cmd))
            }),
            "paymentFailed" => parse_args::<FailureArgs>(args).and_then(|a| {
                check_id("paymentId", &a.payment_id)?;
                let reason = a.reason.unwrap_or_default();
                if reason.len() > 1024 {
                    return Err(DomainError::invalid("reason", "must be at most 1024 characters"));
                }
                Ok((a.order_id, Command::PaymentFailed { payment_id: a.payment_id, reason }))
            }),
            "markAsPaid" | "resumeOrder" | "deleteOrder" | "cancelScheduledChange" => parse_args::<OrderOnlyArgs>(args).map(|a| {
                let cmd = match name {
                    "markAsPaid" => Command::MarkAsPaid,
                    "resumeOrder" => Command::Resume,
                    "cancelScheduledChange" => Command::CancelScheduledChange,
                    _ => Command::Delete,
                };
                (a.order_id, cmd)
            }),
            "changePlan" => parse_args::<ChangePlanArgs>(args).and_then(|a| {
                check_id("plan.id", &a.plan.id)?;
                check_text("plan.name", &a.plan.name, MAX_NAME_LEN)?;
                let pricing_kind = parse_pricing_kind(&a.pricing)?;
                if !matches!(pricing_kind, PricingKind::Subscription { .. }) {
                    return Err(DomainError::invalid("pricing", "a plan change moves to a subscription plan"));
                }
                let prices = a
                    .prices
                    .or(a.pricing.prices)
                    .ok_or_else(|| DomainError::invalid("prices", "is required"))?;
                let currency = a
                    .currency
                    .as_deref()
                    .map(|c| Currency::parse(c).map_err(|e| DomainError::invalid("currency", e.to_string())))
                    .transpose()?;
                let effective_at = effective_at(a.effective_at.as_deref())?;
                let prorate = match a.proration.as_deref() {
                    None | Some("PRORATE") => true,
                    Some("NONE") => false,
                    Some(other) => {
                        return Err(DomainError::invalid(
                            "proration",
                            format!("unknown value '{other}' (expected PRORATE or NONE)"),
                        ))
                    }
                };
                let plan = Plan {
                    id: a.plan.id,
                    name: a.plan.name,
                    description: a.plan.description.unwrap_or_default(),
                };
                Ok((a.order_id, Command::ChangePlan { plan, pricing_kind, prices, currency, effective_at, prorate }))
            }),
            "pauseOrder" => parse_args::<PauseArgs>(args).and_then(|a| {
                let resume_at = a.resume_at.as_deref().map(|s| instant("resumeAt", s)).transpose()?;
                Ok((a.order_id, Command::Pause { resume_at }))
            }),
            "postponeEndDate" => parse_args::<EndDateArgs>(args).and_then(|a| {
                let end_date = instant("endDate", &a.end_date)?;
                Ok((a.order_id, Command::PostponeEndDate { end_date }))
            }),
            "changeStartDate" => parse_args::<StartDateArgs>(args).and_then(|a| {
                let start_date = instant("startDate", &a.start_date)?;
                Ok((a.order_id, Command::ChangeStartDate { start_date }))
            }),
            "cancelOrder" => parse_args::<CancelArgs>(args).and_then(|a| {
                let effective_at = effective_at(a.effective_at.as_deref())?;
                let cause = match a.cause.as_deref() {
                    None | Some("OWNER_ACTION") => CancelCause::OwnerAction,
                    Some("MEMBER_ACTION") => CancelCause::MemberAction,
                    Some("UNKNOWN") => CancelCause::Unknown,
                    Some("PAYMENT_FAILURE") => {
                        return Err(DomainError::invalid("cause", "PAYMENT_FAILURE is set only by recur"))
                    }
                    Some(other) => {
                        return Err(DomainError::invalid(
                            "cause",
                            format!("unknown cause '{other}' (expected OWNER_ACTION, MEMBER_ACTION or UNKNOWN)"),
                        ))
                    }
                };
                Ok((a.order_id, Command::Cancel { effective_at, cause }))
            }),
            _ => return None,
        };
        Some(parsed.and_then(|(order_id, cmd)| {
            check_id("orderId", &order_id)?;
            Ok((order_id, cmd))
        }))
    }
}
