//! updateOrder (SPEC section 1 "Baskets", seed 001): one request finds an order (a cart by
//! name, or any order by id), changes its fields and its related items (line items, addresses,
//! promotion codes, tender lines), reprices the cart and commits, as a pipeline of named
//! stages. A failure in any stage stops the pipeline, commits nothing and names the stage.
//!
//! Pure like the rest of the domain: the status manager table and the promotion codes arrive
//! as values ([`BasketRules`]), the time as an argument. Status changes run the same lifecycle
//! commands as the dedicated admin commands, inside one [`Change`].

use std::collections::{BTreeMap, BTreeSet};

use rust_decimal::Decimal;
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};

use super::command::{
    check_id, check_text, parse_args, parse_pricing_kind, validate_prices, Command, PlanArgs,
    PriceArgs, PricingArgs, MAX_NAME_LEN, MAX_TRIAL_DAYS,
};
use super::error::{DomainError, ErrorCode};
use super::lifecycle::{Change, Policy, Transition};
use super::money::Currency;
use super::order::{
    CancelCause, DiscountKind, EffectiveAt, Order, OrderStatus, Plan, Pricing, PricingKind,
};
use super::time::{format_instant, parse_instant, Instant};

/// Most items of one kind (line items, addresses, promotion codes, tender lines) on an order.
pub const MAX_RELATED_ITEMS: usize = 100;
/// Largest line item quantity.
pub const MAX_QUANTITY: i64 = 1_000_000;
/// Longest short label (sku, address kind, tender method, promotion code).
const MAX_LABEL_LEN: usize = 64;
/// Most lines of one address.
const MAX_ADDRESS_LINES: usize = 10;

// ---------------------------------------------------------------------------------------------
// Stages and their errors

/// The named stages of updateOrder, in the order they run (SPEC section 7).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// Find the order from the search criteria; check its version.
    Load,
    /// Read the request into typed values.
    Validate,
    /// Plan, pricing, dates, name and status.
    Fields,
    LineItems,
    Addresses,
    PromoCodes,
    /// Tender lines (the request's `payments`).
    Payments,
    /// Promotions and `priceDetails` of a cart.
    Pricing,
    /// The atomic write of the change and its reply.
    Commit,
    /// The reply (the order, or `{id, version}`).
    Reply,
}

impl Stage {
    /// Every stage, in pipeline order.
    pub const ALL: [Stage; 10] = [
        Stage::Load,
        Stage::Validate,
        Stage::Fields,
        Stage::LineItems,
        Stage::Addresses,
        Stage::PromoCodes,
        Stage::Payments,
        Stage::Pricing,
        Stage::Commit,
        Stage::Reply,
    ];

    /// The name carried by a reply's `error.stage`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Load => "load",
            Stage::Validate => "validate",
            Stage::Fields => "fields",
            Stage::LineItems => "lineItems",
            Stage::Addresses => "addresses",
            Stage::PromoCodes => "promoCodes",
            Stage::Payments => "payments",
            Stage::Pricing => "pricing",
            Stage::Commit => "commit",
            Stage::Reply => "reply",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused updateOrder: the domain error and the stage that refused it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{error}")]
pub struct StagedError {
    pub stage: Stage,
    pub error: DomainError,
}

impl StagedError {
    /// The admin protocol code (from the domain error).
    pub fn code(&self) -> ErrorCode {
        self.error.code()
    }
}

/// Tags a domain result with the stage it belongs to.
pub trait AtStage<T> {
    /// The result, its error tagged with `stage`.
    ///
    /// # Errors
    /// The original error, as a [`StagedError`].
    fn at(self, stage: Stage) -> Result<T, StagedError>;
}

impl<T> AtStage<T> for Result<T, DomainError> {
    fn at(self, stage: Stage) -> Result<T, StagedError> {
        self.map_err(|error| StagedError { stage, error })
    }
}

// ---------------------------------------------------------------------------------------------
// Rules from config, as plain values

/// The status manager: which status changes each channel may make through updateOrder.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatusRules {
    by_channel: BTreeMap<String, BTreeMap<OrderStatus, BTreeSet<OrderStatus>>>,
}

impl StatusRules {
    /// Lets `channel` change a status from `from` to `to`.
    pub fn allow(&mut self, channel: &str, from: OrderStatus, to: OrderStatus) {
        self.by_channel
            .entry(channel.to_string())
            .or_default()
            .entry(from)
            .or_default()
            .insert(to);
    }

    /// True when the table lists `from` → `to` for `channel`.
    pub fn allows(&self, channel: &str, from: OrderStatus, to: OrderStatus) -> bool {
        self.by_channel
            .get(channel)
            .and_then(|t| t.get(&from))
            .is_some_and(|tos| tos.contains(&to))
    }
}

/// A promotion code's terms as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Promotion {
    pub kind: DiscountKind,
    /// A percentage (0-100) or an amount in the order's currency.
    pub value: Decimal,
    /// Covers the first N cycles' charges only; `None` = every cycle.
    pub first_cycles: Option<u32>,
    /// The code can no longer be applied from this instant on.
    pub expires: Option<Instant>,
}

impl Promotion {
    fn expired(&self, now: Instant) -> Option<Instant> {
        self.expires.filter(|t| *t <= now)
    }
}

/// Everything updateOrder needs from config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BasketRules {
    pub statuses: StatusRules,
    /// Promotion codes by their configured spelling.
    pub promotions: BTreeMap<String, Promotion>,
}

impl BasketRules {
    /// The promotion a requested code names, with its configured spelling: codes match
    /// exactly, else regardless of case.
    pub fn promotion(&self, code: &str) -> Option<(&str, &Promotion)> {
        self.promotions
            .get_key_value(code)
            .or_else(|| {
                self.promotions
                    .iter()
                    .find(|(k, _)| k.eq_ignore_ascii_case(code))
            })
            .map(|(k, p)| (k.as_str(), p))
    }
}

// ---------------------------------------------------------------------------------------------
// The request

/// How the request finds its order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Any order of the customer, by id.
    Id(String),
    /// The customer's cart (DRAFT order) of that name.
    Name(String),
}

/// `customerId` plus exactly one of `id` or `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchCriteria {
    pub customer_id: String,
    pub target: Target,
}

impl SearchCriteria {
    /// Reads the search criteria out of updateOrder's args.
    ///
    /// # Errors
    /// INVALID_REQUEST at stage `load` naming the rule broken (customerId required, exactly
    /// one of id or name); at stage `validate` when `args` is not an object.
    pub fn parse(args: &Value) -> Result<SearchCriteria, StagedError> {
        let Some(obj) = args.as_object() else {
            return Err(DomainError::invalid("args", "must be a JSON object")).at(Stage::Validate);
        };
        let text = |key: &str| match obj.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(DomainError::invalid(key, "must be a string")),
        };
        let criteria = || -> Result<SearchCriteria, DomainError> {
            let customer_id = text("customerId")?.ok_or_else(|| {
                DomainError::invalid(
                    "customerId",
                    "is required: the search criteria are customerId and exactly one of id or name",
                )
            })?;
            check_id("customerId", &customer_id)?;
            let target = match (text("id")?, text("name")?) {
                (Some(_), Some(_)) => {
                    return Err(DomainError::invalid(
                        "searchCriteria",
                        "give exactly one of id or name, not both",
                    ))
                }
                (None, None) => {
                    return Err(DomainError::invalid(
                        "searchCriteria",
                        "give exactly one of id or name (name finds a cart)",
                    ))
                }
                (Some(id), None) => {
                    check_id("id", &id)?;
                    Target::Id(id)
                }
                (None, Some(name)) => {
                    check_text("name", &name, MAX_NAME_LEN)?;
                    Target::Name(name)
                }
            };
            Ok(SearchCriteria {
                customer_id,
                target,
            })
        };
        criteria().at(Stage::Load)
    }
}

/// The create / update / delete lists of one kind of related item.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Related<T> {
    #[serde(default = "Vec::new")]
    pub create: Vec<T>,
    /// Changes the fields given; the others stay.
    #[serde(default = "Vec::new")]
    pub update: Vec<T>,
    /// Ids (codes, for promotion codes) to remove.
    #[serde(default)]
    pub delete: Vec<String>,
}

impl<T> Default for Related<T> {
    fn default() -> Self {
        Related {
            create: Vec::new(),
            update: Vec::new(),
            delete: Vec::new(),
        }
    }
}

impl<T> Related<T> {
    /// True when the request does not touch this kind.
    pub fn is_empty(&self) -> bool {
        self.create.is_empty() && self.update.is_empty() && self.delete.is_empty()
    }
}

/// A line item as it arrives (create needs quantity and unitPrice).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LineItemArgs {
    pub id: String,
    #[serde(default)]
    pub sku: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub quantity: Option<i64>,
    #[serde(default)]
    pub unit_price: Option<Decimal>,
}

/// An address as it arrives (create needs kind). An empty string clears an optional field.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddressArgs {
    pub id: String,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub lines: Option<Vec<String>>,
    #[serde(default)]
    pub city: Option<String>,
    #[serde(default)]
    pub postal_code: Option<String>,
    #[serde(default)]
    pub country: Option<String>,
}

/// A tender line as it arrives (create needs method and amount).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TenderLineArgs {
    pub id: String,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    pub amount: Option<Decimal>,
}

/// A promotion code as it arrives.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PromoCodeArgs {
    pub code: String,
}

/// The order fields a request changes (`None` = unchanged).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldChanges {
    pub plan: Option<Plan>,
    pub pricing_kind: Option<PricingKind>,
    /// From `prices`, else `pricing.prices`; checked against the order in stage `fields`.
    pub prices: Option<Vec<PriceArgs>>,
    pub currency: Option<Currency>,
    pub free_trial_days: Option<u32>,
    pub start_date: Option<Instant>,
    pub end_date: Option<Instant>,
    pub status: Option<OrderStatus>,
    /// Renames a cart (`name` is the search criterion).
    pub new_name: Option<String>,
    /// The calendar's zone (SPEC 10: on DRAFT orders only); dates are recomputed.
    pub time_zone: Option<crate::domain::calendar::Zone>,
}

impl FieldChanges {
    fn plan_terms_change(&self) -> bool {
        self.pricing_kind.is_some()
            || self.prices.is_some()
            || self.currency.is_some()
            || self.free_trial_days.is_some()
    }
}

/// A validated updateOrder request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateOrder {
    pub criteria: SearchCriteria,
    /// The calling application, checked against the status manager.
    pub channel: String,
    pub fields: FieldChanges,
    pub line_items: Related<LineItemArgs>,
    pub addresses: Related<AddressArgs>,
    /// Tender lines (the request's `payments`).
    pub payments: Related<TenderLineArgs>,
    pub promo_codes: Related<PromoCodeArgs>,
    /// `options.refreshBasket` (default true): run the pricing stage.
    pub refresh_basket: bool,
    /// `options.returnModel` (default true): reply with the order, else `{id, version}`.
    pub return_model: bool,
    pub expected_version: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct UpdateOrderArgs {
    #[allow(dead_code)]
    customer_id: String,
    #[serde(default)]
    #[allow(dead_code)]
    id: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    name: Option<String>,
    #[serde(default)]
    plan: Option<PlanArgs>,
    #[serde(default)]
    pricing: Option<PricingArgs>,
    #[serde(default)]
    prices: Option<Vec<PriceArgs>>,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    free_trial_days: Option<i64>,
    #[serde(default)]
    start_date: Option<String>,
    #[serde(default)]
    end_date: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    new_name: Option<String>,
    #[serde(default)]
    time_zone: Option<String>,
    #[serde(default)]
    line_items: Option<Value>,
    #[serde(default)]
    addresses: Option<Value>,
    #[serde(default)]
    payments: Option<Value>,
    #[serde(default)]
    promo_codes: Option<Value>,
    #[serde(default)]
    options: Option<OptionsArgs>,
    #[serde(default)]
    expected_version: Option<u64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OptionsArgs {
    #[serde(default)]
    refresh_basket: Option<bool>,
    #[serde(default)]
    return_model: Option<bool>,
}

fn related<T: DeserializeOwned>(field: &str, v: Option<Value>) -> Result<Related<T>, DomainError> {
    match v {
        None | Some(Value::Null) => Ok(Related::default()),
        Some(v) => {
            serde_json::from_value(v).map_err(|e| DomainError::invalid(field, e.to_string()))
        }
    }
}

fn instant(field: &str, s: &str) -> Result<Instant, DomainError> {
    parse_instant(s).map_err(|e| DomainError::invalid(field, e))
}

impl UpdateOrder {
    /// Validates updateOrder's args: the search criteria (stage `load`), then the shape and
    /// values of everything else (stage `validate`). Rules that need the order run later, in
    /// their own stages. A request without `channel` is channel `admin`.
    ///
    /// # Errors
    /// A [`StagedError`] naming the first offending field.
    pub fn parse(args: &Value, channel: &str) -> Result<UpdateOrder, StagedError> {
        let criteria = SearchCriteria::parse(args)?;
        Self::parse_rest(args, criteria, channel).at(Stage::Validate)
    }

    fn parse_rest(
        args: &Value,
        criteria: SearchCriteria,
        channel: &str,
    ) -> Result<UpdateOrder, DomainError> {
        let a: UpdateOrderArgs = parse_args(args)?;
        let plan = a
            .plan
            .map(|p| {
                check_id("plan.id", &p.id)?;
                check_text("plan.name", &p.name, MAX_NAME_LEN)?;
                Ok::<_, DomainError>(Plan {
                    id: p.id,
                    name: p.name,
                    description: p.description.unwrap_or_default(),
                })
            })
            .transpose()?;
        let pricing_kind = a.pricing.as_ref().map(parse_pricing_kind).transpose()?;
        let prices = a.prices.or(a.pricing.and_then(|p| p.prices));
        let currency = a
            .currency
            .as_deref()
            .map(|c| {
                Currency::parse(c).map_err(|e| DomainError::invalid("currency", e.to_string()))
            })
            .transpose()?;
        let time_zone = a
            .time_zone
            .as_deref()
            .map(|name| {
                crate::domain::calendar::Zone::parse(name).ok_or_else(|| {
                    DomainError::invalid(
                        "timeZone",
                        format!("unknown time zone '{name}' (an IANA name such as Europe/Paris)"),
                    )
                })
            })
            .transpose()?;
        let free_trial_days = a
            .free_trial_days
            .map(|d| match d {
                d if (0..=MAX_TRIAL_DAYS).contains(&d) => Ok(d as u32),
                _ => Err(DomainError::invalid(
                    "freeTrialDays",
                    format!("must be between 0 and {MAX_TRIAL_DAYS}"),
                )),
            })
            .transpose()?;
        let start_date = a
            .start_date
            .as_deref()
            .map(|s| instant("startDate", s))
            .transpose()?;
        let end_date = a
            .end_date
            .as_deref()
            .map(|s| instant("endDate", s))
            .transpose()?;
        let status = a
            .status
            .as_deref()
            .map(|s| {
                OrderStatus::parse(s).ok_or_else(|| {
                    DomainError::invalid(
                        "status",
                        format!(
                            "unknown status '{s}' (expected DRAFT, PENDING, ACTIVE, PAUSED, ENDED or CANCELED)"
                        ),
                    )
                })
            })
            .transpose()?;
        if let Some(n) = &a.new_name {
            check_text("newName", n, MAX_NAME_LEN)?;
        }
        let (refresh_basket, return_model) = a.options.map_or((true, true), |o| {
            (
                o.refresh_basket.unwrap_or(true),
                o.return_model.unwrap_or(true),
            )
        });
        if currency.is_some() && !refresh_basket {
            return Err(DomainError::invalid(
                "currency",
                "changing the currency reprices the cart: options.refreshBasket must not be false",
            ));
        }
        Ok(UpdateOrder {
            criteria,
            channel: if channel.is_empty() {
                "admin".to_string()
            } else {
                channel.to_string()
            },
            fields: FieldChanges {
                plan,
                pricing_kind,
                prices,
                currency,
                free_trial_days,
                start_date,
                end_date,
                status,
                new_name: a.new_name,
                time_zone,
            },
            line_items: related("lineItems", a.line_items)?,
            addresses: related("addresses", a.addresses)?,
            payments: related("payments", a.payments)?,
            promo_codes: related("promoCodes", a.promo_codes)?,
            refresh_basket,
            return_model,
            expected_version: a.expected_version,
        })
    }
}

// ---------------------------------------------------------------------------------------------
// The pipeline

/// A successful updateOrder: the transition to commit (a no-op when nothing changed) and the
/// reply's result.
#[derive(Debug, Clone, PartialEq)]
pub struct Updated {
    pub transition: Transition,
    pub reply: Value,
}

/// Runs updateOrder on `order`, already fired up to `now` (so the request sees the order as of
/// now): load, fields, lineItems, addresses, promoCodes, payments, pricing (unless
/// `refreshBasket` is false), then builds the change to commit and the reply. (`validate` ran
/// in [`UpdateOrder::parse`]; `commit` is the caller's write.)
///
/// # Errors
/// The first refusal, tagged with its stage; nothing is changed.
pub fn update(
    order: &Order,
    req: &UpdateOrder,
    rules: &BasketRules,
    now: Instant,
    policy: &Policy,
) -> Result<Updated, StagedError> {
    load(order, req).at(Stage::Load)?;
    let mut change = Change::begin(order, now);
    fields(&mut change, req, rules, policy).at(Stage::Fields)?;
    line_items(&mut change, &req.line_items).at(Stage::LineItems)?;
    addresses(&mut change, &req.addresses).at(Stage::Addresses)?;
    promo_codes(&mut change, &req.promo_codes, rules).at(Stage::PromoCodes)?;
    tender_lines(&mut change, &req.payments).at(Stage::Payments)?;
    if req.refresh_basket {
        pricing(&mut change, rules).at(Stage::Pricing)?;
    }
    let transition = change.finish().at(Stage::Fields)?;
    let reply = if req.return_model {
        serde_json::to_value(&transition.order).unwrap_or(Value::Null)
    } else {
        json!({"id": transition.order.id, "version": transition.order.version})
    };
    Ok(Updated { transition, reply })
}

/// The order must be the customer's, found by id, or a cart by its name; and at the expected
/// version.
fn load(order: &Order, req: &UpdateOrder) -> Result<(), DomainError> {
    let c = &req.criteria;
    if order.customer_id != c.customer_id {
        return Err(DomainError::NotFound(format!(
            "order {} not found for customer {}",
            order.id, c.customer_id
        )));
    }
    if let Target::Name(name) = &c.target {
        if order.name.as_deref() != Some(name.as_str()) {
            return Err(DomainError::NotFound(format!(
                "customer {} has no cart named '{name}'",
                c.customer_id
            )));
        }
        if order.status != OrderStatus::Draft {
            return Err(not_a_cart(order, name));
        }
    }
    match req.expected_version {
        Some(v) if v != order.version => Err(DomainError::Conflict(format!(
            "order {} is at version {}, not the expected version {v}",
            order.id, order.version
        ))),
        _ => Ok(()),
    }
}

/// The refusal of a `name` that finds a purchased order, not a cart.
pub fn not_a_cart(order: &Order, name: &str) -> DomainError {
    DomainError::invalid(
        "name",
        format!(
            "name finds only carts (DRAFT orders): order {} named '{name}' is {}; find it by id",
            order.id,
            order.status.as_str()
        ),
    )
}

fn cart_only(order: &Order, what: &str) -> Result<(), DomainError> {
    if order.status == OrderStatus::Draft {
        return Ok(());
    }
    Err(DomainError::state(format!(
        "{what} can change only on a cart (a DRAFT order); order {} is {} and its purchase is priced",
        order.id,
        order.status.as_str()
    )))
}

/// Stage `fields`: the status permission first, then plan terms and name (carts only), start
/// and end dates, and the status change, each through its lifecycle rules.
fn fields(
    change: &mut Change,
    req: &UpdateOrder,
    rules: &BasketRules,
    policy: &Policy,
) -> Result<(), DomainError> {
    let f = &req.fields;
    let from = change.order().status;
    let status_to = f.status.filter(|to| *to != from);
    if let Some(to) = status_to {
        if !rules.statuses.allows(&req.channel, from, to) {
            return Err(DomainError::ForbiddenStatusChange(format!(
                "channel {} may not change status from {} to {}",
                req.channel,
                from.as_str(),
                to.as_str()
            )));
        }
    }
    let draft_only = [
        ("plan", f.plan.is_some()),
        ("pricing", f.pricing_kind.is_some()),
        ("prices", f.prices.is_some()),
        ("currency", f.currency.is_some()),
        ("freeTrialDays", f.free_trial_days.is_some()),
        ("newName", f.new_name.is_some()),
        ("timeZone", f.time_zone.is_some()),
    ];
    if let Some((name, _)) = draft_only.iter().find(|(_, given)| *given) {
        cart_only(change.order(), name)?;
    }
    if let Some(plan) = &f.plan {
        change.order_mut().plan = plan.clone();
    }
    if let Some(name) = &f.new_name {
        change.order_mut().name = Some(name.clone());
    }
    if let Some(zone) = f.time_zone.filter(|z| *z != change.order().time_zone) {
        change.order_mut().time_zone = zone;
        change.reschedule()?;
    }
    if f.plan_terms_change() {
        plan_terms(change, f)?;
    }
    if let Some(start_date) = f.start_date.filter(|d| *d != change.order().start_date) {
        change.command(&Command::ChangeStartDate { start_date }, policy)?;
    }
    if let Some(end_date) = f.end_date.filter(|d| Some(*d) != change.order().end_date) {
        change.command(&Command::PostponeEndDate { end_date }, policy)?;
    }
    if let Some(to) = status_to {
        let cmd = status_command(change.order().status, to)?;
        change.command(&cmd, policy)?;
    }
    Ok(())
}

/// The lifecycle command that makes a status change (SPEC section 7).
fn status_command(from: OrderStatus, to: OrderStatus) -> Result<Command, DomainError> {
    match (from, to) {
        (_, OrderStatus::Paused) => Ok(Command::Pause { resume_at: None }),
        (OrderStatus::Paused, OrderStatus::Active) => Ok(Command::Resume),
        (_, OrderStatus::Canceled) => Ok(Command::Cancel {
            effective_at: EffectiveAt::Immediately,
            cause: CancelCause::OwnerAction,
        }),
        _ => Err(DomainError::state(format!(
            "no lifecycle command changes status from {} to {}",
            from.as_str(),
            to.as_str()
        ))),
    }
}

/// A cart's pricing, prices, currency or trial: checked together as createOrder checks them,
/// then the dates are recomputed.
fn plan_terms(change: &mut Change, f: &FieldChanges) -> Result<(), DomainError> {
    let o = change.order();
    let kind = f.pricing_kind.unwrap_or(o.pricing.kind);
    let currency = f.currency.unwrap_or(o.currency);
    let raw: Vec<PriceArgs> = match &f.prices {
        Some(p) => p.clone(),
        None => o
            .pricing
            .prices
            .iter()
            .map(|p| PriceArgs {
                cycle_from: i64::from(p.cycle_from),
                number_of_cycles: p.number_of_cycles.map(i64::from),
                amount: p.amount,
            })
            .collect(),
    };
    let limit = Pricing {
        kind,
        prices: Vec::new(),
    }
    .cycle_limit();
    let prices = validate_prices(&raw, limit, currency).map_err(|e| match (e, &f.prices) {
        (DomainError::InvalidArgument { field, message }, None) => DomainError::invalid(
            field,
            format!("{message} (the cart's current prices do not fit the change: give prices too)"),
        ),
        (e, _) => e,
    })?;
    let pricing = Pricing { kind, prices };
    let trial = f.free_trial_days.unwrap_or(o.free_trial_days);
    if trial > 0 && !pricing.is_recurring() {
        return Err(DomainError::invalid(
            "freeTrialDays",
            "a free trial needs a subscription plan",
        ));
    }
    let o = change.order_mut();
    o.pricing = pricing;
    o.currency = currency;
    o.free_trial_days = trial;
    change.reschedule()
}

mod related;

use related::*;

#[cfg(test)]
mod tests;
