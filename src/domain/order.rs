//! The order model of SPEC section 1: camelCase JSON, money as decimal strings, instants as
//! RFC 3339 UTC with milliseconds. Internal bookkeeping the rules need (`pausedTotal`,
//! `paymentsDue`, `sequence`) is part of the stored and returned JSON, so an order read back
//! from Redis is exactly the order that was written.

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use super::calendar::{Duration, Zone};
use super::money::Currency;
use super::time::{ts, ts_opt, Instant};

/// The plan an order buys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// How the order is paid for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderType {
    /// Paid online through recordPayment; starts as a DRAFT until paid (unless nothing is due).
    Online,
    /// Paid offline, once for the whole order (markAsPaid or `paid: true`).
    Offline,
    /// Bought elsewhere; money arrives through recordPayment.
    External,
}

/// Where an order is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    Draft,
    Pending,
    Active,
    Paused,
    Ended,
    Canceled,
}

impl OrderStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            OrderStatus::Draft => "DRAFT",
            OrderStatus::Pending => "PENDING",
            OrderStatus::Active => "ACTIVE",
            OrderStatus::Paused => "PAUSED",
            OrderStatus::Ended => "ENDED",
            OrderStatus::Canceled => "CANCELED",
        }
    }

    /// Parses the wire spelling.
    pub fn parse(s: &str) -> Option<OrderStatus> {
        [
            OrderStatus::Draft,
            OrderStatus::Pending,
            OrderStatus::Active,
            OrderStatus::Paused,
            OrderStatus::Ended,
            OrderStatus::Canceled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }

    /// ENDED and CANCELED orders have no future.
    pub fn is_final(self) -> bool {
        matches!(self, OrderStatus::Ended | OrderStatus::Canceled)
    }
}

/// The status of the latest payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PaymentStatus {
    Paid,
    Unpaid,
    /// A charge was requested and is not yet confirmed.
    Pending,
    Failed,
    Refunded,
    /// Nothing to pay (free plan, or a trial).
    NotApplicable,
}

/// The kind of pricing: exactly one of the three.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PricingKind {
    /// Recurring cycles; `cycle_count` 0 renews until canceled.
    Subscription {
        cycle_duration: Duration,
        cycle_count: u32,
    },
    /// One payment for a fixed duration.
    SinglePaymentForDuration(Duration),
    /// One payment, no end.
    SinglePaymentUnlimited,
}

/// The amount charged for a range of cycles (`number_of_cycles` None = to the end).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PriceRange {
    pub cycle_from: u32,
    #[serde(default)]
    pub number_of_cycles: Option<u32>,
    pub amount: Decimal,
}

impl PriceRange {
    fn covers(&self, cycle: u32) -> bool {
        cycle >= self.cycle_from
            && self
                .number_of_cycles
                .is_none_or(|n| u64::from(cycle) < u64::from(self.cycle_from) + u64::from(n))
    }
}

/// Pricing: the kind plus the validated `prices[]` that cover every cycle exactly once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "PricingWire", into = "PricingWire")]
pub struct Pricing {
    pub kind: PricingKind,
    pub prices: Vec<PriceRange>,
}

impl Pricing {
    /// The number of cycles (`None` = no limit); single-payment plans have exactly one.
    pub fn cycle_limit(&self) -> Option<u32> {
        match self.kind {
            PricingKind::Subscription { cycle_count: 0, .. } => None,
            PricingKind::Subscription { cycle_count, .. } => Some(cycle_count),
            PricingKind::SinglePaymentForDuration(_) | PricingKind::SinglePaymentUnlimited => {
                Some(1)
            }
        }
    }

    /// True for subscriptions (the only pricing with cycles after the first).
    pub fn is_recurring(&self) -> bool {
        matches!(self.kind, PricingKind::Subscription { .. })
    }

    /// The listed amount for cycle `k` (k >= 1); cycle 0, the trial, is free.
    pub fn amount_for_cycle(&self, k: u32) -> Decimal {
        if k == 0 {
            return Decimal::ZERO;
        }
        self.prices
            .iter()
            .find(|p| p.covers(k))
            .map(|p| p.amount)
            .unwrap_or(Decimal::ZERO)
    }

    /// A plan whose every price is 0 is free.
    pub fn is_free(&self) -> bool {
        self.prices.iter().all(|p| p.amount.is_zero())
    }
}

/// The wire shape of `pricing`: one of three keys, plus `prices`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PricingWire {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscription: Option<SubscriptionWire>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub single_payment_for_duration: Option<Duration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub single_payment_unlimited: Option<bool>,
    #[serde(default)]
    pub prices: Vec<PriceRange>,
}

/// The wire shape of `pricing.subscription`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionWire {
    pub cycle_duration: Duration,
    pub cycle_count: u32,
}

impl TryFrom<PricingWire> for Pricing {
    type Error = String;

    fn try_from(w: PricingWire) -> Result<Self, Self::Error> {
        let kind = match (w.subscription, w.single_payment_for_duration, w.single_payment_unlimited) {
            (Some(s), None, None | Some(false)) => PricingKind::Subscription {
                cycle_duration: s.cycle_duration,
                cycle_count: s.cycle_count,
            },
            (None, Some(d), None | Some(false)) => PricingKind::SinglePaymentForDuration(d),
            (None, None, Some(true)) => PricingKind::SinglePaymentUnlimited,
            _ => return Err("pricing must have exactly one of subscription, singlePaymentForDuration, singlePaymentUnlimited".into()),
        };
        Ok(Pricing {
            kind,
            prices: w.prices,
        })
    }
}

impl From<Pricing> for PricingWire {
    fn from(p: Pricing) -> Self {
        let mut w = PricingWire {
            prices: p.prices,
            ..PricingWire::default()
        };
        match p.kind {
            PricingKind::Subscription {
                cycle_duration,
                cycle_count,
            } => {
                w.subscription = Some(SubscriptionWire {
                    cycle_duration,
                    cycle_count,
                })
            }
            PricingKind::SinglePaymentForDuration(d) => w.single_payment_for_duration = Some(d),
            PricingKind::SinglePaymentUnlimited => w.single_payment_unlimited = Some(true),
        }
        w
    }
}

/// The cycle the order is in. Index 0 is the free trial; single-payment orders stay at 1.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CurrentCycle {
    pub index: u32,
    #[serde(with = "ts")]
    pub started_date: Instant,
    #[serde(with = "ts_opt")]
    pub ended_date: Option<Instant>,
    /// The part of the cycle's charge the order's creditBalance paid (SPEC 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credit_applied: Option<Decimal>,
}

/// A plan change waiting for the next payment date (changePlan NEXT_PAYMENT_DATE).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScheduledChange {
    pub plan: Plan,
    pub pricing: Pricing,
    /// The next cycle start, derived: it follows pauses and postponements.
    #[serde(with = "ts")]
    pub effective_date: Instant,
}

/// Whether a pause is still running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PauseStatus {
    Active,
    Ended,
}

/// One pause. While ACTIVE, `resumeDate` is the planned resume (if any); once ENDED, the
/// actual one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PausePeriod {
    pub status: PauseStatus,
    #[serde(with = "ts")]
    pub pause_date: Instant,
    #[serde(with = "ts_opt")]
    pub resume_date: Option<Instant>,
    /// PAYMENT_FAILURE for dunning's PAUSE final action; absent for a pauseOrder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<CancelCause>,
}

/// Why an order was canceled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CancelCause {
    OwnerAction,
    MemberAction,
    Unknown,
    /// Only recur sets this (payment grace expired).
    PaymentFailure,
}

/// When a cancellation takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EffectiveAt {
    Immediately,
    NextPaymentDate,
}

/// A requested cancellation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Cancellation {
    #[serde(with = "ts")]
    pub requested_date: Instant,
    pub cause: CancelCause,
    pub effective_at: EffectiveAt,
}

/// Money recorded against the order (recordPayment, markAsPaid, `paid: true`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    pub id: String,
    pub amount: Decimal,
    #[serde(with = "ts")]
    pub date: Instant,
    /// The cycle this payment settled.
    pub cycle: u32,
    /// How much of it has been refunded so far.
    pub refunded: Decimal,
}

/// What a due is for (SPEC 10): a cycle's charge, or a plan change's proration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DueKind {
    #[default]
    Cycle,
    Proration,
}

/// A cycle whose charge was requested and not yet paid (ONLINE orders only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentDue {
    pub cycle: u32,
    #[serde(default)]
    pub kind: DueKind,
    #[serde(with = "ts")]
    pub requested_date: Instant,
    /// When dunning's final action is taken; moved later by pauses.
    #[serde(with = "ts")]
    pub deadline: Instant,
    /// The charge requested for the cycle (its price less the promotions that cover it).
    #[serde(default)]
    pub amount: Decimal,
    /// The retry instants (SPEC 8 dunning), computed when the due was requested, strictly
    /// increasing and all before the deadline; moved later by pauses.
    #[serde(default, with = "crate::domain::time::ts_vec")]
    pub retries: Vec<Instant>,
    /// How many of `retries` have fired.
    #[serde(default)]
    pub attempts: u32,
    /// KEEP's final action was taken: no timer and no more retries; a payment still settles it.
    #[serde(default, rename = "final")]
    pub is_final: bool,
    /// Dunning restarted after a PAUSE final action was resumed: the next expiry cancels.
    #[serde(default)]
    pub restarted: bool,
}

impl PaymentDue {
    /// The next retry to fire, if any.
    pub fn next_retry(&self) -> Option<Instant> {
        if self.is_final {
            return None;
        }
        usize::try_from(self.attempts)
            .ok()
            .and_then(|i| self.retries.get(i).copied())
    }
}

/// What dunning does when a due's deadline passes unpaid (SPEC 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FinalAction {
    /// Canceled with cause PAYMENT_FAILURE (section 7's grace rule).
    #[default]
    Cancel,
    /// PAUSED with no resumeAt, cause PAYMENT_FAILURE.
    Pause,
    /// Stays ACTIVE, lastPaymentStatus FAILED.
    Keep,
}

/// An order's own dunning (createOrder `dunning`), overriding `[lifecycle.dunning]`: the retry
/// offsets from a due's requestedDate as written (config duration syntax) and the final action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dunning {
    pub retries: Vec<String>,
    pub final_action: FinalAction,
}

/// A one-time add-on of the purchase (basket line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LineItem {
    pub id: String,
    #[serde(default)]
    pub sku: String,
    #[serde(default)]
    pub name: String,
    pub quantity: u32,
    pub unit_price: Decimal,
}

/// A promotion code requested on the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PromoCode {
    pub code: String,
}

/// How a promotion's `value` is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DiscountKind {
    /// `value` percent of each charge it covers.
    Percent,
    /// `value` in the order's currency off each charge it covers.
    Fixed,
}

/// A promotion as it applied at the order's last pricing: the terms of a requested promotion
/// code, copied from config so that later cycles are charged without reading config (and a
/// code that expires or leaves config later does not change an order already priced).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Discount {
    pub code: String,
    pub kind: DiscountKind,
    pub value: Decimal,
    /// Covers cycles 1..=N only; `None` = every cycle.
    pub first_cycles: Option<u32>,
}

impl Discount {
    /// True when the promotion takes something off cycle `k`'s charge (never the trial).
    pub fn covers(&self, k: u32) -> bool {
        k >= 1 && self.first_cycles.is_none_or(|n| k <= n)
    }
}

/// A planned tender of a cart (updateOrder `payments`): how the buyer means to pay and how
/// much. It moves no money; recorded payments are [`Payment`]s.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TenderLine {
    pub id: String,
    pub method: String,
    pub amount: Decimal,
}

/// A postal or billing address on the order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Address {
    pub id: String,
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub lines: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postal_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

/// The purchase charge: cycle 1's amount + line items - promotion discount.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PriceDetails {
    pub subtotal: Decimal,
    pub discount: Decimal,
    pub total: Decimal,
    pub currency: Currency,
}

/// A subscription order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Order {
    pub id: String,
    pub customer_id: String,
    pub plan: Plan,
    #[serde(rename = "type")]
    pub order_type: OrderType,
    pub channel: String,
    pub status: OrderStatus,
    pub last_payment_status: PaymentStatus,
    pub pricing: Pricing,
    pub currency: Currency,
    /// The zone whose local calendar the cycles follow (SPEC 8); UTC by default.
    #[serde(default)]
    pub time_zone: Zone,
    /// This order's dunning, when createOrder overrode `[lifecycle.dunning]`.
    #[serde(default)]
    pub dunning: Option<Dunning>,
    #[serde(default)]
    pub free_trial_days: u32,
    #[serde(with = "ts")]
    pub start_date: Instant,
    #[serde(default, with = "ts_opt")]
    pub end_date: Option<Instant>,
    #[serde(default, with = "ts_opt")]
    pub earliest_end_date: Option<Instant>,
    #[serde(default)]
    pub current_cycle: Option<CurrentCycle>,
    #[serde(default)]
    pub pause_periods: Vec<PausePeriod>,
    #[serde(default)]
    pub auto_renew_canceled: bool,
    #[serde(default)]
    pub cancellation: Option<Cancellation>,
    #[serde(default)]
    pub line_items: Vec<LineItem>,
    #[serde(default)]
    pub promo_codes: Vec<PromoCode>,
    #[serde(default)]
    pub payments: Vec<Payment>,
    /// A cart's planned tenders (updateOrder `payments`); never money received.
    #[serde(default)]
    pub tender_lines: Vec<TenderLine>,
    #[serde(default)]
    pub addresses: Vec<Address>,
    pub price_details: PriceDetails,
    /// The promotions applied by the last pricing, with their terms.
    #[serde(default)]
    pub discounts: Vec<Discount>,
    #[serde(default)]
    pub name: Option<String>,
    pub version: u64,
    #[serde(with = "ts")]
    pub created_date: Instant,
    #[serde(with = "ts")]
    pub updated_date: Instant,
    /// Total paused time in milliseconds; every boundary after a pause moves by it.
    #[serde(default)]
    pub paused_total: i64,
    /// Requested, unpaid cycle charges, oldest first.
    #[serde(default)]
    pub payments_due: Vec<PaymentDue>,
    /// The sequence number of the order's latest event.
    pub sequence: u64,
    /// Credit from plan changes (SPEC 8): every later charge is first reduced by it. Not money:
    /// customer statistics do not count it.
    #[serde(default)]
    pub credit_balance: Decimal,
    /// A plan change that applies at the next payment date.
    #[serde(default)]
    pub scheduled_change: Option<ScheduledChange>,
    /// Set by a plan change to another cycle duration: cycle `anchor_cycle` starts at `anchor`
    /// and later cycles count from it (before any, startDate + the trial is the anchor).
    #[serde(default, with = "ts_opt")]
    pub anchor: Option<Instant>,
    #[serde(default)]
    pub anchor_cycle: u32,
    /// The test clock the order lives on (SPEC 11.5); absent for live orders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test_clock_id: Option<String>,
}

impl Order {
    /// Every instant the order holds (for the check that all of them can be written as RFC
    /// 3339 and read back).
    pub fn instants(&self) -> impl Iterator<Item = Instant> + '_ {
        let singles = [
            Some(self.start_date),
            self.end_date,
            self.earliest_end_date,
            Some(self.created_date),
            Some(self.updated_date),
            self.anchor,
            self.current_cycle.as_ref().map(|c| c.started_date),
            self.current_cycle.as_ref().and_then(|c| c.ended_date),
            self.scheduled_change.as_ref().map(|c| c.effective_date),
            self.cancellation.as_ref().map(|c| c.requested_date),
        ];
        let pauses = self
            .pause_periods
            .iter()
            .flat_map(|p| [Some(p.pause_date), p.resume_date]);
        let dues = self.payments_due.iter().flat_map(|d| {
            [Some(d.requested_date), Some(d.deadline)]
                .into_iter()
                .chain(d.retries.iter().copied().map(Some))
        });
        singles
            .into_iter()
            .chain(pauses)
            .chain(dues)
            .chain(self.payments.iter().map(|p| Some(p.date)))
            .flatten()
    }

    /// The instant cycle 1 starts before any pause: startDate + freeTrialDays local days (the
    /// calendar's origin until a plan change to another duration sets the `anchor` field).
    pub fn anchor(&self) -> Instant {
        self.time_zone
            .calendar(self.start_date, self.free_trial_days, None, 0)
            .unwrap_or_else(|| {
                crate::domain::time::saturating_add(
                    self.start_date,
                    chrono::Duration::days(i64::from(self.free_trial_days)),
                )
            })
    }

    /// True while the order is in its free trial (cycle 0).
    pub fn in_trial(&self) -> bool {
        self.current_cycle.as_ref().is_some_and(|c| c.index == 0)
    }

    /// The pause that is running, if any.
    pub fn active_pause(&self) -> Option<&PausePeriod> {
        self.pause_periods
            .iter()
            .rev()
            .find(|p| p.status == PauseStatus::Active)
    }

    /// The payment recorded under `id`, if any.
    pub fn payment(&self, id: &str) -> Option<&Payment> {
        self.payments.iter().find(|p| p.id == id)
    }

    /// Total money paid in, and total refunded, in the order's currency.
    pub fn money(&self) -> (Decimal, Decimal) {
        self.payments.iter().fold(
            (self.currency.zero(), self.currency.zero()),
            |(paid, refunded), p| (paid + p.amount, refunded + p.refunded),
        )
    }
}

/// The order's stored form (SPEC 6: "keep the stored state compact"): the same JSON as the
/// order's own, with every field at its default left out — `null`, `[]`, `false`, `0`, `""`
/// (a plan's empty description, a price range's open `numberOfCycles`). [`Order`]'s
/// `Deserialize` reads both forms (an absent field is its default). It is what the order's
/// hash holds and what a change entry carries as its `entity`: about 30 % fewer bytes per
/// commit than the full form, written once and read on every load.
///
/// # Errors
/// The serializer's error (in practice none).
pub fn compact_json(order: &Order) -> Result<String, serde_json::Error> {
    serde_json::to_string(&compact::CompactOrder::of(order))
}

mod compact {
    use super::*;

    fn is_zero_u32(v: &u32) -> bool {
        *v == 0
    }
    fn is_zero_i64(v: &i64) -> bool {
        *v == 0
    }
    fn is_false(v: &bool) -> bool {
        !*v
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct CompactPlan<'a> {
        id: &'a str,
        name: &'a str,
        #[serde(skip_serializing_if = "str::is_empty")]
        description: &'a str,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct CompactPrice<'a> {
        cycle_from: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        number_of_cycles: Option<u32>,
        amount: &'a Decimal,
    }

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct CompactPricing<'a> {
        #[serde(skip_serializing_if = "Option::is_none")]
        subscription: Option<SubscriptionWire>,
        #[serde(skip_serializing_if = "Option::is_none")]
        single_payment_for_duration: Option<Duration>,
        #[serde(skip_serializing_if = "Option::is_none")]
        single_payment_unlimited: Option<bool>,
        prices: Vec<CompactPrice<'a>>,
    }

    impl<'a> CompactPricing<'a> {
        fn of(p: &'a Pricing) -> CompactPricing<'a> {
            let (subscription, single_payment_for_duration, single_payment_unlimited) = match p.kind
            {
                PricingKind::Subscription {
                    cycle_duration,
                    cycle_count,
                } => (
                    Some(SubscriptionWire {
                        cycle_duration,
                        cycle_count,
                    }),
                    None,
                    None,
                ),
                PricingKind::SinglePaymentForDuration(d) => (None, Some(d), None),
                PricingKind::SinglePaymentUnlimited => (None, None, Some(true)),
            };
            CompactPricing {
                subscription,
                single_payment_for_duration,
                single_payment_unlimited,
                prices: p
                    .prices
                    .iter()
                    .map(|r| CompactPrice {
                        cycle_from: r.cycle_from,
                        number_of_cycles: r.number_of_cycles,
                        amount: &r.amount,
                    })
                    .collect(),
            }
        }
    }

    fn is_cycle(k: &DueKind) -> bool {
        *k == DueKind::Cycle
    }

    /// A [`PaymentDue`] with its defaults skipped (a cycle's due, no attempt yet, not final,
    /// not restarted): about 60 bytes fewer per due, in the hash and in every change entry of
    /// an ONLINE order that owes something.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct CompactDue<'a> {
        cycle: u32,
        #[serde(skip_serializing_if = "is_cycle")]
        kind: DueKind,
        #[serde(with = "ts")]
        requested_date: Instant,
        #[serde(with = "ts")]
        deadline: Instant,
        amount: &'a Decimal,
        #[serde(with = "crate::domain::time::ts_vec")]
        retries: &'a [Instant],
        #[serde(skip_serializing_if = "is_zero_u32")]
        attempts: u32,
        #[serde(rename = "final", skip_serializing_if = "is_false")]
        is_final: bool,
        #[serde(skip_serializing_if = "is_false")]
        restarted: bool,
    }

    impl<'a> CompactDue<'a> {
        fn of(d: &'a PaymentDue) -> CompactDue<'a> {
            CompactDue {
                cycle: d.cycle,
                kind: d.kind,
                requested_date: d.requested_date,
                deadline: d.deadline,
                amount: &d.amount,
                retries: &d.retries,
                attempts: d.attempts,
                is_final: d.is_final,
                restarted: d.restarted,
            }
        }
    }

    /// [`Order`]'s fields in the same order, borrowed, defaults skipped.
    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    pub(super) struct CompactOrder<'a> {
        id: &'a str,
        customer_id: &'a str,
        plan: CompactPlan<'a>,
        #[serde(rename = "type")]
        order_type: OrderType,
        channel: &'a str,
        status: OrderStatus,
        last_payment_status: PaymentStatus,
        pricing: CompactPricing<'a>,
        currency: Currency,
        #[serde(skip_serializing_if = "Zone::is_utc")]
        time_zone: Zone,
        #[serde(skip_serializing_if = "Option::is_none")]
        dunning: Option<&'a Dunning>,
        #[serde(skip_serializing_if = "is_zero_u32")]
        free_trial_days: u32,
        #[serde(with = "ts")]
        start_date: Instant,
        #[serde(with = "ts_opt", skip_serializing_if = "Option::is_none")]
        end_date: Option<Instant>,
        #[serde(with = "ts_opt", skip_serializing_if = "Option::is_none")]
        earliest_end_date: Option<Instant>,
        #[serde(skip_serializing_if = "Option::is_none")]
        current_cycle: Option<&'a CurrentCycle>,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        pause_periods: &'a [PausePeriod],
        #[serde(skip_serializing_if = "is_false")]
        auto_renew_canceled: bool,
        #[serde(skip_serializing_if = "Option::is_none")]
        cancellation: Option<&'a Cancellation>,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        line_items: &'a [LineItem],
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        promo_codes: &'a [PromoCode],
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        payments: &'a [Payment],
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        tender_lines: &'a [TenderLine],
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        addresses: &'a [Address],
        price_details: &'a PriceDetails,
        #[serde(skip_serializing_if = "<[_]>::is_empty")]
        discounts: &'a [Discount],
        #[serde(skip_serializing_if = "Option::is_none")]
        name: Option<&'a str>,
        version: u64,
        #[serde(with = "ts")]
        created_date: Instant,
        #[serde(with = "ts")]
        updated_date: Instant,
        #[serde(skip_serializing_if = "is_zero_i64")]
        paused_total: i64,
        #[serde(skip_serializing_if = "Vec::is_empty")]
        payments_due: Vec<CompactDue<'a>>,
        sequence: u64,
        // Always written: its scale is the currency's ("0.00"), which a default cannot know.
        credit_balance: &'a Decimal,
        #[serde(skip_serializing_if = "Option::is_none")]
        scheduled_change: Option<&'a ScheduledChange>,
        #[serde(with = "ts_opt", skip_serializing_if = "Option::is_none")]
        anchor: Option<Instant>,
        #[serde(skip_serializing_if = "is_zero_u32")]
        anchor_cycle: u32,
        #[serde(skip_serializing_if = "Option::is_none")]
        test_clock_id: Option<&'a str>,
    }

    impl<'a> CompactOrder<'a> {
        pub(super) fn of(o: &'a Order) -> CompactOrder<'a> {
            CompactOrder {
                id: &o.id,
                customer_id: &o.customer_id,
                plan: CompactPlan {
                    id: &o.plan.id,
                    name: &o.plan.name,
                    description: &o.plan.description,
                },
                order_type: o.order_type,
                channel: &o.channel,
                status: o.status,
                last_payment_status: o.last_payment_status,
                pricing: CompactPricing::of(&o.pricing),
                currency: o.currency,
                time_zone: o.time_zone,
                dunning: o.dunning.as_ref(),
                free_trial_days: o.free_trial_days,
                start_date: o.start_date,
                end_date: o.end_date,
                earliest_end_date: o.earliest_end_date,
                current_cycle: o.current_cycle.as_ref(),
                pause_periods: &o.pause_periods,
                auto_renew_canceled: o.auto_renew_canceled,
                cancellation: o.cancellation.as_ref(),
                line_items: &o.line_items,
                promo_codes: &o.promo_codes,
                payments: &o.payments,
                tender_lines: &o.tender_lines,
                addresses: &o.addresses,
                price_details: &o.price_details,
                discounts: &o.discounts,
                name: o.name.as_deref(),
                version: o.version,
                created_date: o.created_date,
                updated_date: o.updated_date,
                paused_total: o.paused_total,
                payments_due: o.payments_due.iter().map(CompactDue::of).collect(),
                sequence: o.sequence,
                credit_balance: &o.credit_balance,
                scheduled_change: o.scheduled_change.as_ref(),
                anchor: o.anchor,
                anchor_cycle: o.anchor_cycle,
                test_clock_id: o.test_clock_id.as_deref(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lifecycle::test_support::{at, monthly, new_order};

    #[test]
    fn a_due_leaves_out_its_defaults_and_reads_back_the_same() {
        let mut order = new_order(
            monthly("ONLINE", 12, "9.99", "2026-01-01T00:00:00Z"),
            at("2026-01-01T00:00:00Z"),
        )
        .order;
        let due = |cycle: u32| PaymentDue {
            cycle,
            kind: DueKind::Cycle,
            requested_date: at("2026-02-01T00:00:00Z"),
            deadline: at("2026-02-04T00:00:00Z"),
            amount: Decimal::new(999, 2),
            retries: vec![at("2026-02-02T00:00:00Z"), at("2026-02-03T00:00:00Z")],
            attempts: 0,
            is_final: false,
            restarted: false,
        };
        order.payments_due = vec![
            due(2),
            PaymentDue {
                kind: DueKind::Proration,
                attempts: 1,
                is_final: true,
                restarted: true,
                ..due(3)
            },
        ];
        let compact = compact_json(&order).unwrap();
        let v: serde_json::Value = serde_json::from_str(&compact).unwrap();
        assert_eq!(
            v["paymentsDue"][0],
            serde_json::json!({
                "cycle": 2,
                "requestedDate": "2026-02-01T00:00:00.000Z",
                "deadline": "2026-02-04T00:00:00.000Z",
                "amount": "9.99",
                "retries": ["2026-02-02T00:00:00.000Z", "2026-02-03T00:00:00.000Z"],
            })
        );
        assert_eq!(v["paymentsDue"][1]["kind"], "PRORATION");
        assert_eq!(v["paymentsDue"][1]["attempts"], 1);
        assert_eq!(v["paymentsDue"][1]["final"], true);
        assert_eq!(v["paymentsDue"][1]["restarted"], true);
        let back: Order = serde_json::from_str(&compact).unwrap();
        assert_eq!(back, order);
        // The full form (getOrder) still says everything.
        let full = serde_json::to_value(&order).unwrap();
        assert_eq!(full["paymentsDue"][0]["kind"], "CYCLE");
        assert_eq!(full["paymentsDue"][0]["final"], false);
    }
}
