//! Customer statistics (SPEC section 2), pure: what one order contributes to its customer's
//! figures, and the figures recomputed from a set of orders.
//!
//! Stats are kept as the sum of each order's latest *contribution* (tagged with the order's
//! version). Applying a contribution replaces the order's previous one, so applying the same
//! or an older version again changes nothing: that is what makes the updates exactly-once
//! across retries and crashes. Money is integer minor units here (no float, no rounding).

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use super::money::Currency;
use super::order::{Order, OrderStatus};
use super::time::{format_instant, from_millis, to_millis};

/// One order's share of its customer's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Contribution {
    /// The order's version this contribution was taken at.
    pub v: u64,
    /// Orders (always 1).
    pub n: i64,
    /// Paid orders (1 when it has a payment above zero).
    pub p: i64,
    /// Active orders (1 when ACTIVE or PAUSED).
    pub a: i64,
    /// Money per currency: [paid, refunded] in minor units.
    pub m: BTreeMap<String, [i64; 2]>,
    /// createdDate, ms.
    pub lo: i64,
    /// Latest payment date, ms (0 = none).
    pub lp: i64,
}

impl Contribution {
    /// True when the figures (not the version) are the same.
    pub fn same_figures(&self, other: &Contribution) -> bool {
        (self.n, self.p, self.a, &self.m, self.lo, self.lp)
            == (other.n, other.p, other.a, &other.m, other.lo, other.lp)
    }
}

/// Minor units of an amount in `currency` (amounts are stored at the currency's scale).
pub fn to_minor(amount: Decimal, currency: Currency) -> i64 {
    use rust_decimal::prelude::ToPrimitive;
    (amount * Decimal::from(10i64.pow(currency.minor_units())))
        .trunc()
        .to_i64()
        .unwrap_or(i64::MAX)
}

/// What `order` contributes to its customer's statistics.
pub fn contribution(order: &Order) -> Contribution {
    let (paid, refunded) = order.money();
    let mut m = BTreeMap::new();
    if !order.payments.is_empty() {
        m.insert(
            order.currency.code().to_string(),
            [
                to_minor(paid, order.currency),
                to_minor(refunded, order.currency),
            ],
        );
    }
    Contribution {
        v: order.version,
        n: 1,
        p: i64::from(order.payments.iter().any(|p| !p.amount.is_zero())),
        a: i64::from(matches!(
            order.status,
            OrderStatus::Active | OrderStatus::Paused
        )),
        m,
        lo: to_millis(&order.created_date),
        lp: order
            .payments
            .iter()
            .map(|p| to_millis(&p.date))
            .max()
            .unwrap_or(0),
    }
}

/// A customer's figures.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Figures {
    pub orders_count: i64,
    pub paid_orders_count: i64,
    pub active_orders_count: i64,
    /// Currency → [paid, refunded] minor units.
    pub money: BTreeMap<String, [i64; 2]>,
    /// ms, 0 = none.
    pub last_order_ms: i64,
    pub last_payment_ms: i64,
}

impl Figures {
    /// Adds one contribution.
    pub fn add(&mut self, c: &Contribution) {
        self.orders_count += c.n;
        self.paid_orders_count += c.p;
        self.active_orders_count += c.a;
        for (cur, [paid, refunded]) in &c.m {
            let e = self.money.entry(cur.clone()).or_insert([0, 0]);
            e[0] += paid;
            e[1] += refunded;
        }
        self.last_order_ms = self.last_order_ms.max(c.lo);
        self.last_payment_ms = self.last_payment_ms.max(c.lp);
    }

    /// The figures of a set of orders.
    pub fn of<'a>(orders: impl IntoIterator<Item = &'a Order>) -> Figures {
        let mut f = Figures::default();
        for o in orders {
            f.add(&contribution(o));
        }
        f
    }

    /// Drops currencies whose paid and refunded are both zero (a deleted order's leftovers).
    pub fn normalized(mut self) -> Figures {
        self.money.retain(|_, v| *v != [0, 0]);
        self
    }

    /// The getCustomerStats result: money as decimal strings at each currency's scale.
    pub fn to_json(&self, customer_id: &str) -> Value {
        let money: serde_json::Map<String, Value> = self
            .money
            .iter()
            .filter(|(_, v)| **v != [0, 0])
            .map(|(cur, [paid, refunded])| {
                let scale = Currency::parse(cur).map(|c| c.minor_units()).unwrap_or(2);
                let fmt = |minor: i64| Decimal::new(minor, scale).to_string();
                (
                    cur.clone(),
                    json!({"paid": fmt(*paid), "refunded": fmt(*refunded)}),
                )
            })
            .collect();
        let date = |ms: i64| {
            if ms == 0 {
                Value::Null
            } else {
                from_millis(ms)
                    .map(|t| Value::from(format_instant(&t)))
                    .unwrap_or(Value::Null)
            }
        };
        json!({
            "customerId": customer_id,
            "money": money,
            "ordersCount": self.orders_count,
            "paidOrdersCount": self.paid_orders_count,
            "activeOrdersCount": self.active_orders_count,
            "lastOrderDate": date(self.last_order_ms),
            "lastPaymentDate": date(self.last_payment_ms),
        })
    }

    /// Field-by-field differences between kept (`self`) and recomputed figures, as
    /// `{field, stored, recomputed}` rows (the recomputeCustomerStats report).
    pub fn differences(&self, recomputed: &Figures, customer_id: &str) -> Vec<Value> {
        let a = self.clone().normalized().to_json(customer_id);
        let b = recomputed.clone().normalized().to_json(customer_id);
        let mut out = Vec::new();
        for key in [
            "ordersCount",
            "paidOrdersCount",
            "activeOrdersCount",
            "lastOrderDate",
            "lastPaymentDate",
        ] {
            if a[key] != b[key] {
                out.push(json!({"field": key, "stored": a[key], "recomputed": b[key]}));
            }
        }
        let currencies: std::collections::BTreeSet<&String> = a["money"]
            .as_object()
            .into_iter()
            .flatten()
            .chain(b["money"].as_object().into_iter().flatten())
            .map(|(k, _)| k)
            .collect();
        for cur in currencies {
            for part in ["paid", "refunded"] {
                let (x, y) = (&a["money"][cur][part], &b["money"][cur][part]);
                if x != y {
                    out.push(json!({"field": format!("money.{cur}.{part}"), "stored": x, "recomputed": y}));
                }
            }
        }
        out
    }
}

/// One outbox entry: the order's contribution (None = deleted) at a version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Delta {
    /// Customer id.
    pub c: String,
    /// Order id.
    pub o: String,
    /// Order version.
    pub v: u64,
    /// The contribution, None when the order was deleted.
    pub k: Option<Contribution>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::lifecycle::test_support::*;
    use serde_json::json;

    #[test]
    fn a_paid_order_contributes_its_money_in_minor_units() {
        let t = new_order(
            monthly("EXTERNAL", 3, "10.00", "2026-01-01T00:00:00Z"),
            at("2026-01-01T00:00:00Z"),
        );
        let c0 = contribution(&t.order);
        assert_eq!((c0.n, c0.p, c0.a), (1, 0, 1));
        assert!(c0.m.is_empty());
        let p = cmd(
            &t.order,
            "recordPayment",
            json!({"paymentId": "a", "amount": "10.25"}),
            at("2026-01-02T00:00:00Z"),
        )
        .unwrap();
        let r = cmd(
            &p.order,
            "recordRefund",
            json!({"paymentId": "a", "amount": "0.25"}),
            at("2026-01-03T00:00:00Z"),
        )
        .unwrap();
        let c = contribution(&r.order);
        assert_eq!(c.m["USD"], [1025, 25]);
        assert_eq!(c.p, 1);
        assert_eq!(c.lp, to_millis(&at("2026-01-02T00:00:00Z")));
        assert!(!c.same_figures(&c0));
    }

    #[test]
    fn figures_format_money_per_currency_scale() {
        let mut f = Figures::default();
        f.add(&Contribution {
            v: 1,
            n: 1,
            p: 1,
            a: 1,
            m: [("JPY".to_string(), [1500, 0])].into(),
            lo: 1,
            lp: 2,
        });
        f.add(&Contribution {
            v: 1,
            n: 1,
            p: 1,
            a: 0,
            m: [("KWD".to_string(), [1234, 1])].into(),
            lo: 3,
            lp: 0,
        });
        let j = f.to_json("c");
        assert_eq!(j["money"]["JPY"]["paid"], "1500");
        assert_eq!(j["money"]["KWD"]["paid"], "1.234");
        assert_eq!(j["money"]["KWD"]["refunded"], "0.001");
        assert_eq!(j["ordersCount"], 2);
        assert_eq!(j["activeOrdersCount"], 1);
        assert!(Figures::default().differences(&f, "c").len() >= 5);
        assert!(f.differences(&f, "c").is_empty());
    }

    #[test]
    fn to_minor_is_exact() {
        let usd = Currency::parse("USD").unwrap();
        assert_eq!(
            to_minor(usd.check_amount("19.99".parse().unwrap()).unwrap(), usd),
            1999
        );
        let kwd = Currency::parse("KWD").unwrap();
        assert_eq!(
            to_minor(kwd.check_amount("0.005".parse().unwrap()).unwrap(), kwd),
            5
        );
    }
}
