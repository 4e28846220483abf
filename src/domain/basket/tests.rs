//! Table tests of updateOrder: one per rule and refusal, each checking the stage and code.

use std::str::FromStr;

use rust_decimal::Decimal;
use serde_json::{json, Value};

use super::*;
use crate::domain::lifecycle::test_support::{at, cmd, monthly, new_order, policy, types};
use crate::domain::lifecycle::{cycle_charge, fire};
use crate::domain::order::PaymentStatus;
use crate::domain::order::PromoCode;

const NOW: &str = "2026-01-10T09:00:00Z";

fn d(s: &str) -> Decimal {
    Decimal::from_str(s).unwrap()
}

fn now() -> Instant {
    at(NOW)
}

/// A named cart (DRAFT) of customer c1: monthly, 12 cycles at 10.00 USD.
fn cart() -> Order {
    let mut args = monthly("ONLINE", 12, "10.00", NOW);
    args["name"] = json!("weekly box");
    let o = new_order(args, now()).order;
    assert_eq!(o.status, OrderStatus::Draft);
    o
}

/// The cart purchased: ACTIVE in cycle 1.
fn active() -> Order {
    let o = new_order(monthly("ONLINE", 12, "10.00", NOW), now()).order;
    let t = cmd(
        &o,
        "recordPayment",
        json!({"paymentId": "p1", "amount": "10.00"}),
        now(),
    )
    .unwrap();
    assert_eq!(t.order.status, OrderStatus::Active);
    t.order
}

fn promo(kind: DiscountKind, value: &str, first_cycles: Option<u32>) -> Promotion {
    Promotion {
        kind,
        value: d(value),
        first_cycles,
        expires: None,
    }
}

fn rules() -> BasketRules {
    let mut r = BasketRules::default();
    r.statuses
        .allow("backoffice", OrderStatus::Active, OrderStatus::Paused);
    r.statuses
        .allow("backoffice", OrderStatus::Paused, OrderStatus::Active);
    r.statuses
        .allow("backoffice", OrderStatus::Active, OrderStatus::Canceled);
    r.statuses
        .allow("backoffice", OrderStatus::Active, OrderStatus::Ended);
    r.statuses
        .allow("backoffice", OrderStatus::Draft, OrderStatus::Canceled);
    r.promotions
        .insert("HALF3".into(), promo(DiscountKind::Percent, "50", Some(3)));
    r.promotions
        .insert("TENPCT".into(), promo(DiscountKind::Percent, "10", None));
    r.promotions
        .insert("FIVEOFF".into(), promo(DiscountKind::Fixed, "5.00", None));
    r.promotions
        .insert("BIGOFF".into(), promo(DiscountKind::Fixed, "500", None));
    r.promotions.insert(
        "GONE".into(),
        Promotion {
            expires: Some(at("2026-01-01T00:00:00Z")),
            ..promo(DiscountKind::Percent, "20", None)
        },
    );
    r.promotions.insert(
        "SOON".into(),
        Promotion {
            expires: Some(at("2026-02-01T00:00:00Z")),
            ..promo(DiscountKind::Percent, "20", None)
        },
    );
    r.promotions
        .insert("HALFCENT".into(), promo(DiscountKind::Fixed, "0.005", None));
    r
}

/// Runs updateOrder on `order` from channel `channel` with the test rules.
fn run_as(channel: &str, order: &Order, mut args: Value) -> Result<Updated, StagedError> {
    if args.get("customerId").is_none() {
        args["customerId"] = json!(order.customer_id);
    }
    if args.get("id").is_none() && args.get("name").is_none() {
        args["id"] = json!(order.id);
    }
    let req = UpdateOrder::parse(&args, channel)?;
    update(order, &req, &rules(), now(), &policy())
}

fn run(order: &Order, args: Value) -> Result<Updated, StagedError> {
    run_as("web", order, args)
}

fn ok(order: &Order, args: Value) -> Transition {
    let u = run(order, args.clone()).unwrap_or_else(|e| panic!("{args}: {e:?}"));
    u.transition
}

/// The stage and code of a refusal, and its message.
fn refusal(r: Result<Updated, StagedError>) -> (Stage, ErrorCode, String) {
    let e = r.expect_err("expected a refusal");
    (e.stage, e.code(), e.error.to_string())
}

fn parse_err(args: Value) -> (Stage, ErrorCode, String) {
    let e = UpdateOrder::parse(&args, "web").expect_err("expected a refusal");
    (e.stage, e.code(), e.error.to_string())
}

fn item(id: &str, quantity: i64, price: &str) -> Value {
    json!({"id": id, "sku": format!("sku-{id}"), "name": id, "quantity": quantity, "unitPrice": price})
}

// ---------------------------------------------------------------------------------------------
// Stages, rules, parsing

#[test]
fn stages_are_named_as_the_spec_lists_them() {
    let names: Vec<&str> = Stage::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(
        names,
        [
            "load",
            "validate",
            "fields",
            "lineItems",
            "addresses",
            "promoCodes",
            "payments",
            "pricing",
            "commit",
            "reply"
        ]
    );
}

#[test]
fn status_rules_are_per_channel_and_per_direction() {
    let r = rules();
    assert!(r
        .statuses
        .allows("backoffice", OrderStatus::Active, OrderStatus::Paused));
    assert!(!r
        .statuses
        .allows("backoffice", OrderStatus::Paused, OrderStatus::Canceled));
    assert!(!r
        .statuses
        .allows("web", OrderStatus::Active, OrderStatus::Paused));
}

#[test]
fn promotion_codes_match_exactly_then_regardless_of_case() {
    let r = rules();
    assert_eq!(r.promotion("TENPCT").map(|(c, _)| c), Some("TENPCT"));
    assert_eq!(r.promotion("tenPct").map(|(c, _)| c), Some("TENPCT"));
    assert!(r.promotion("NOPE").is_none());
}

#[test]
fn search_criteria_need_a_customer_and_exactly_one_of_id_or_name() {
    let (stage, code, msg) = parse_err(json!({"id": "o1"}));
    assert_eq!((stage, code), (Stage::Load, ErrorCode::InvalidRequest));
    assert!(msg.starts_with("customerId:"), "{msg}");

    let (stage, code, msg) = parse_err(json!({"customerId": "c1", "id": "o1", "name": "cart"}));
    assert_eq!((stage, code), (Stage::Load, ErrorCode::InvalidRequest));
    assert!(msg.contains("exactly one of id or name, not both"), "{msg}");

    let (stage, code, msg) = parse_err(json!({"customerId": "c1"}));
    assert_eq!((stage, code), (Stage::Load, ErrorCode::InvalidRequest));
    assert!(msg.contains("exactly one of id or name"), "{msg}");

    let (stage, _, msg) = parse_err(json!({"customerId": "c1", "id": "bad id"}));
    assert_eq!(stage, Stage::Load);
    assert!(msg.starts_with("id:"), "{msg}");
    let (stage, _, _) = parse_err(json!({"customerId": "c1", "name": "  "}));
    assert_eq!(stage, Stage::Load);
    let (stage, _, _) = parse_err(json!({"customerId": 7, "id": "o1"}));
    assert_eq!(stage, Stage::Load);

    let by_name =
        UpdateOrder::parse(&json!({"customerId": "c1", "name": "weekly box"}), "web").unwrap();
    assert_eq!(by_name.criteria.target, Target::Name("weekly box".into()));
}

#[test]
fn malformed_arguments_are_refused_at_validate() {
    for (args, field) in [
        (json!([1, 2]), "args"),
        (
            json!({"customerId": "c1", "id": "o1", "colour": "red"}),
            "args",
        ),
        (
            json!({"customerId": "c1", "id": "o1", "status": "FROZEN"}),
            "status",
        ),
        (
            json!({"customerId": "c1", "id": "o1", "startDate": "tomorrow"}),
            "startDate",
        ),
        (
            json!({"customerId": "c1", "id": "o1", "currency": "usd"}),
            "currency",
        ),
        (
            json!({"customerId": "c1", "id": "o1", "freeTrialDays": -1}),
            "freeTrialDays",
        ),
        (
            json!({"customerId": "c1", "id": "o1", "plan": {"id": "p 1", "name": "x"}}),
            "plan.id",
        ),
        (
            json!({"customerId": "c1", "id": "o1", "newName": ""}),
            "newName",
        ),
        (
            json!({"customerId": "c1", "id": "o1", "options": {"refresh": false}}),
            "args",
        ),
        (
            json!({"customerId": "c1", "id": "o1", "expectedVersion": "3"}),
            "args",
        ),
        (
            json!({"customerId": "c1", "id": "o1", "lineItems": {"create": [{"id": "a", "quantity": "two"}]}}),
            "lineItems",
        ),
        (
            json!({"customerId": "c1", "id": "o1", "lineItems": {"add": []}}),
            "lineItems",
        ),
        (
            json!({"customerId": "c1", "id": "o1", "addresses": [1]}),
            "addresses",
        ),
        (
            json!({"customerId": "c1", "id": "o1", "payments": {"create": [{"id": "t", "amount": 5}]}}),
            "payments",
        ),
        (
            json!({"customerId": "c1", "id": "o1", "promoCodes": {"create": [{}]}}),
            "promoCodes",
        ),
        (
            json!({"customerId": "c1", "id": "o1", "currency": "EUR", "options": {"refreshBasket": false}}),
            "currency",
        ),
    ] {
        let (stage, code, msg) = parse_err(args.clone());
        assert_eq!(
            (stage, code),
            (Stage::Validate, ErrorCode::InvalidRequest),
            "{args}"
        );
        assert!(msg.starts_with(&format!("{field}:")), "{args}: {msg}");
    }
}

#[test]
fn options_default_to_refresh_and_return_the_model() {
    let u = UpdateOrder::parse(&json!({"customerId": "c1", "id": "o1"}), "").unwrap();
    assert!(u.refresh_basket && u.return_model);
    assert_eq!(u.channel, "admin", "no channel is the admin channel");
    let u = UpdateOrder::parse(
        &json!({"customerId": "c1", "id": "o1", "options": {"refreshBasket": false, "returnModel": false}}),
        "web",
    )
    .unwrap();
    assert!(!u.refresh_basket && !u.return_model);
    assert_eq!(u.channel, "web");
}

// ---------------------------------------------------------------------------------------------
// load

#[test]
fn another_customers_order_is_not_found() {
    let o = cart();
    let (stage, code, _) = refusal(run(&o, json!({"customerId": "c2", "id": o.id})));
    assert_eq!((stage, code), (Stage::Load, ErrorCode::NotFound));
}

#[test]
fn name_finds_only_carts() {
    let o = cart();
    let t = ok(
        &o,
        json!({"name": "weekly box", "addresses": {"create": [{"id": "a1", "kind": "SHIPPING"}]}}),
    );
    assert_eq!(t.order.addresses.len(), 1);

    let (stage, code, _) = refusal(run(&o, json!({"name": "other box"})));
    assert_eq!((stage, code), (Stage::Load, ErrorCode::NotFound));

    let mut bought = o.clone();
    bought.status = OrderStatus::Active;
    let (stage, code, msg) = refusal(run(&bought, json!({"name": "weekly box"})));
    assert_eq!((stage, code), (Stage::Load, ErrorCode::InvalidRequest));
    assert!(msg.contains("name finds only carts"), "{msg}");
}

#[test]
fn a_stale_expected_version_is_a_conflict() {
    let o = cart();
    let (stage, code, msg) = refusal(run(&o, json!({"expectedVersion": o.version + 1})));
    assert_eq!((stage, code), (Stage::Load, ErrorCode::Conflict));
    assert!(msg.contains(&format!("version {}", o.version)), "{msg}");
    let t = ok(
        &o,
        json!({"expectedVersion": o.version, "lineItems": {"create": [item("a", 1, "1.00")]}}),
    );
    assert_eq!(t.order.version, o.version + 1);
}

// ---------------------------------------------------------------------------------------------
// Related items

#[test]
fn line_items_are_created_updated_and_deleted_in_one_request() {
    let o = cart();
    let t = ok(
        &o,
        json!({"lineItems": {"create": [item("a", 1, "2.00"), item("b", 2, "3.50"), item("c", 1, "1.00")]}}),
    );
    assert_eq!(types(&t.events), ["orderUpdated"]);
    assert_eq!(t.order.version, o.version + 1);
    assert_eq!(t.order.price_details.subtotal, d("20.00"), "10 + 2 + 7 + 1");

    let t2 = ok(
        &t.order,
        json!({"lineItems": {
            "create": [item("d", 3, "1.00")],
            "update": [{"id": "a", "quantity": 4}],
            "delete": ["c"]
        }}),
    );
    let ids: Vec<&str> = t2.order.line_items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(ids, ["a", "b", "d"]);
    let a = &t2.order.line_items[0];
    assert_eq!(
        (a.quantity, a.unit_price, a.sku.as_str()),
        (4, d("2.00"), "sku-a")
    );
    assert_eq!(
        t2.order.price_details.subtotal,
        d("28.00"),
        "10 + 8 + 7 + 3"
    );
    assert_eq!(t2.order.price_details.total, d("28.00"));
}

#[test]
fn an_item_created_or_updated_in_the_request_cannot_be_deleted_in_it() {
    let o = ok(
        &cart(),
        json!({"lineItems": {"create": [item("a", 1, "1.00")]}}),
    )
    .order;
    for args in [
        json!({"lineItems": {"create": [item("b", 1, "1.00")], "delete": ["b"]}}),
        json!({"lineItems": {"update": [{"id": "a", "quantity": 2}], "delete": ["a"]}}),
    ] {
        let (stage, code, msg) = refusal(run(&o, args.clone()));
        assert_eq!(
            (stage, code),
            (Stage::LineItems, ErrorCode::InvalidRequest),
            "{args}"
        );
        assert!(
            msg.contains("created or updated in the same request"),
            "{msg}"
        );
    }
    // Every other kind follows the same rule, in its own stage.
    let (stage, _, _) = refusal(run(
        &o,
        json!({"addresses": {"create": [{"id": "x", "kind": "BILLING"}], "delete": ["x"]}}),
    ));
    assert_eq!(stage, Stage::Addresses);
    let (stage, _, _) = refusal(run(
        &o,
        json!({"payments": {"create": [{"id": "t", "method": "CARD", "amount": "1.00"}], "delete": ["t"]}}),
    ));
    assert_eq!(stage, Stage::Payments);
    let (stage, _, _) = refusal(run(
        &o,
        json!({"promoCodes": {"create": [{"code": "TENPCT"}], "delete": ["TENPCT"]}}),
    ));
    assert_eq!(stage, Stage::PromoCodes);
}

#[test]
fn unknown_and_duplicate_item_ids_are_refused() {
    let o = ok(
        &cart(),
        json!({"lineItems": {"create": [item("a", 1, "1.00")]}}),
    )
    .order;
    let cases = [
        (
            json!({"lineItems": {"update": [{"id": "zz", "quantity": 1}]}}),
            ErrorCode::NotFound,
        ),
        (
            json!({"lineItems": {"delete": ["zz"]}}),
            ErrorCode::NotFound,
        ),
        (
            json!({"lineItems": {"create": [item("a", 1, "1.00")]}}),
            ErrorCode::Conflict,
        ),
        (
            json!({"lineItems": {"create": [item("b", 1, "1.00"), item("b", 2, "1.00")]}}),
            ErrorCode::InvalidRequest,
        ),
        (
            json!({"lineItems": {"create": [item("b", 1, "1.00")], "update": [{"id": "b", "quantity": 2}]}}),
            ErrorCode::InvalidRequest,
        ),
        (
            json!({"lineItems": {"delete": ["a", "a"]}}),
            ErrorCode::InvalidRequest,
        ),
        (
            json!({"lineItems": {"create": [item("no:colons", 1, "1.00")]}}),
            ErrorCode::InvalidRequest,
        ),
    ];
    for (args, expected) in cases {
        let (stage, code, _) = refusal(run(&o, args.clone()));
        assert_eq!((stage, code), (Stage::LineItems, expected), "{args}");
    }
}

#[test]
fn quantities_and_prices_are_checked() {
    let o = cart();
    for (args, field) in [
        (
            json!({"lineItems": {"create": [item("a", -1, "1.00")]}}),
            "lineItems.create[0].quantity",
        ),
        (
            json!({"lineItems": {"create": [item("a", 0, "1.00")]}}),
            "lineItems.create[0].quantity",
        ),
        (
            json!({"lineItems": {"create": [item("a", 1, "-1.00")]}}),
            "lineItems.create[0].unitPrice",
        ),
        (
            json!({"lineItems": {"create": [item("a", 1, "1.005")]}}),
            "lineItems.create[0].unitPrice",
        ),
        (
            json!({"lineItems": {"create": [{"id": "a", "unitPrice": "1.00"}]}}),
            "lineItems.create[0].quantity",
        ),
        (
            json!({"lineItems": {"create": [{"id": "a", "quantity": 1}]}}),
            "lineItems.create[0].unitPrice",
        ),
        (
            json!({"payments": {"create": [{"id": "t", "method": "CARD", "amount": "-5.00"}]}}),
            "payments.create[0].amount",
        ),
        (
            json!({"payments": {"create": [{"id": "t", "amount": "5.00"}]}}),
            "payments.create[0].method",
        ),
        (
            json!({"addresses": {"create": [{"id": "x"}]}}),
            "addresses.create[0].kind",
        ),
    ] {
        let (_, code, msg) = refusal(run(&o, args.clone()));
        assert_eq!(code, ErrorCode::InvalidRequest, "{args}");
        assert!(msg.starts_with(&format!("{field}:")), "{args}: {msg}");
    }
    let with_a = ok(&o, json!({"lineItems": {"create": [item("a", 1, "1.00")]}})).order;
    let (stage, _, msg) = refusal(run(
        &with_a,
        json!({"lineItems": {"update": [{"id": "a", "quantity": -3}]}}),
    ));
    assert_eq!(stage, Stage::LineItems);
    assert!(msg.starts_with("lineItems.update[0].quantity:"), "{msg}");
}

#[test]
fn purchased_orders_keep_their_line_items_promotions_and_tenders() {
    let o = active();
    for (args, stage) in [
        (
            json!({"lineItems": {"create": [item("a", 1, "1.00")]}}),
            Stage::LineItems,
        ),
        (
            json!({"promoCodes": {"create": [{"code": "TENPCT"}]}}),
            Stage::PromoCodes,
        ),
        (
            json!({"payments": {"create": [{"id": "t", "method": "CARD", "amount": "1.00"}]}}),
            Stage::Payments,
        ),
    ] {
        let (s, code, _) = refusal(run(&o, args.clone()));
        assert_eq!((s, code), (stage, ErrorCode::InvalidState), "{args}");
    }
    // Addresses change on any order.
    let t = ok(
        &o,
        json!({"addresses": {"create": [{"id": "home", "kind": "SHIPPING", "lines": ["1 Main St"], "city": "Springfield"}]}}),
    );
    assert_eq!(t.order.addresses[0].city.as_deref(), Some("Springfield"));
    let t = ok(
        &t.order,
        json!({"addresses": {"update": [{"id": "home", "city": "", "country": "US"}]}}),
    );
    let a = &t.order.addresses[0];
    assert_eq!(
        (a.city.as_deref(), a.country.as_deref()),
        (None, Some("US"))
    );
    assert_eq!(a.lines, ["1 Main St"], "fields not given stay");
    assert_eq!(
        t.order.price_details, o.price_details,
        "no repricing after purchase"
    );
}

#[test]
fn tender_lines_move_no_money() {
    let o = cart();
    let t = ok(
        &o,
        json!({"payments": {"create": [{"id": "t1", "method": "GIFT_CARD", "amount": "4"}, {"id": "t2", "method": "CARD", "amount": "6.00"}]}}),
    );
    assert_eq!(t.order.tender_lines.len(), 2);
    assert_eq!(t.order.tender_lines[0].amount.to_string(), "4.00");
    assert!(t.order.payments.is_empty());
    assert_eq!(t.order.status, OrderStatus::Draft);
    assert_eq!(t.order.last_payment_status, PaymentStatus::Unpaid);
    let t = ok(
        &t.order,
        json!({"payments": {"update": [{"id": "t2", "amount": "7.00"}], "delete": ["t1"]}}),
    );
    assert_eq!(t.order.tender_lines.len(), 1);
    assert_eq!(t.order.tender_lines[0].method, "CARD");
    assert_eq!(t.order.tender_lines[0].amount, d("7.00"));
}

#[test]
fn an_order_holds_a_bounded_number_of_items() {
    let o = cart();
    let many: Vec<Value> = (0..=MAX_RELATED_ITEMS)
        .map(|i| item(&format!("i{i}"), 1, "1.00"))
        .collect();
    let (stage, code, _) = refusal(run(&o, json!({"lineItems": {"create": many}})));
    assert_eq!((stage, code), (Stage::LineItems, ErrorCode::InvalidRequest));
}

// ---------------------------------------------------------------------------------------------
// Promotion codes and pricing

#[test]
fn unknown_or_expired_codes_are_refused() {
    let o = cart();
    for (code, needle) in [("NOPE", "unknown promotion code"), ("GONE", "expired")] {
        let (stage, err, msg) =
            refusal(run(&o, json!({"promoCodes": {"create": [{"code": code}]}})));
        assert_eq!((stage, err), (Stage::PromoCodes, ErrorCode::InvalidRequest));
        assert!(
            msg.starts_with("promoCodes.create[0].code:") && msg.contains(needle),
            "{msg}"
        );
    }
}

#[test]
fn codes_are_kept_in_their_configured_spelling_and_deleted_by_any_case() {
    let o = ok(
        &cart(),
        json!({"promoCodes": {"create": [{"code": "tenpct"}]}}),
    )
    .order;
    assert_eq!(
        o.promo_codes,
        [PromoCode {
            code: "TENPCT".into()
        }]
    );
    assert_eq!(o.discounts.len(), 1);
    assert_eq!(o.price_details.discount, d("1.00"));
    let (stage, code, _) = refusal(run(
        &o,
        json!({"promoCodes": {"create": [{"code": "TenPct"}]}}),
    ));
    assert_eq!((stage, code), (Stage::PromoCodes, ErrorCode::Conflict));
    let o = ok(&o, json!({"promoCodes": {"delete": ["tenPCT"]}})).order;
    assert!(o.promo_codes.is_empty() && o.discounts.is_empty());
    assert_eq!(o.price_details.total, d("10.00"));
}

#[test]
fn price_details_add_line_items_and_take_promotions_off() {
    let o = ok(
        &cart(),
        json!({
            "lineItems": {"create": [item("a", 3, "3.33")]},
            "promoCodes": {"create": [{"code": "TENPCT"}, {"code": "FIVEOFF"}]}
        }),
    )
    .order;
    let p = &o.price_details;
    // 10.00 + 9.99 = 19.99; 10% = 1.999 -> 2.00 (half-even at the cent), + 5.00 fixed.
    assert_eq!(
        (p.subtotal, p.discount, p.total),
        (d("19.99"), d("7.00"), d("12.99"))
    );
    assert_eq!(p.currency.code(), "USD");
    assert_eq!(
        cycle_charge(&o, 1),
        p.total,
        "the purchase is cycle 1's charge"
    );
    assert_eq!(cycle_charge(&o, 2), d("4.00"), "10.00 - 1.00 - 5.00");
}

#[test]
fn percentages_round_half_even_per_currency() {
    let o = cart();
    // 10.50 at 50% is 5.25 exactly; 0.05 at 50% is 0.025 -> 0.02 (half-even).
    let t = ok(
        &o,
        json!({"prices": [{"cycleFrom": 1, "amount": "0.05"}], "promoCodes": {"create": [{"code": "HALF3"}]}}),
    );
    assert_eq!(t.order.price_details.discount, d("0.02"));
    assert_eq!(t.order.price_details.total, d("0.03"));
    // JPY has no minor unit: 15 at 50% = 7.5 -> 8 (half-even), total 7.
    let t = ok(
        &o,
        json!({"currency": "JPY", "prices": [{"cycleFrom": 1, "amount": "15"}], "promoCodes": {"create": [{"code": "HALF3"}]}}),
    );
    let p = &t.order.price_details;
    assert_eq!(
        (
            p.subtotal.to_string(),
            p.discount.to_string(),
            p.total.to_string()
        ),
        ("15".into(), "8".into(), "7".into())
    );
}

#[test]
fn the_total_is_never_below_zero() {
    let o = ok(
        &cart(),
        json!({"promoCodes": {"create": [{"code": "BIGOFF"}, {"code": "TENPCT"}]}}),
    )
    .order;
    let p = &o.price_details;
    assert_eq!(
        (p.subtotal, p.discount, p.total),
        (d("10.00"), d("10.00"), d("0.00"))
    );
    assert_eq!(
        o.last_payment_status,
        PaymentStatus::NotApplicable,
        "nothing to pay"
    );
    assert_eq!(cycle_charge(&o, 5), d("0.00"));
}

#[test]
fn a_fixed_amount_the_currency_cannot_express_is_refused() {
    let (stage, code, msg) = refusal(run(
        &cart(),
        json!({"promoCodes": {"create": [{"code": "HALFCENT"}]}}),
    ));
    assert_eq!((stage, code), (Stage::Pricing, ErrorCode::InvalidRequest));
    assert!(msg.contains("cannot express"), "{msg}");
}

#[test]
fn a_promotion_covers_only_its_first_cycles() {
    let o = ok(
        &cart(),
        json!({"promoCodes": {"create": [{"code": "HALF3"}]}}),
    )
    .order;
    let charges: Vec<String> = (0..=5).map(|k| cycle_charge(&o, k).to_string()).collect();
    assert_eq!(charges, ["0.00", "5.00", "5.00", "5.00", "10.00", "10.00"]);
    assert_eq!(o.price_details.total, d("5.00"));
}

#[test]
fn later_cycles_request_the_discounted_charge_after_purchase() {
    let o = ok(
        &cart(),
        json!({"lineItems": {"create": [item("box", 1, "7.00")]}, "promoCodes": {"create": [{"code": "HALF3"}]}}),
    )
    .order;
    assert_eq!(o.price_details.total, d("8.50"), "(10 + 7) / 2");
    let paid = cmd(
        &o,
        "recordPayment",
        json!({"paymentId": "p1", "amount": "8.50"}),
        now(),
    )
    .unwrap();
    assert_eq!(paid.order.status, OrderStatus::Active);
    let mut order = paid.order;
    let mut requested = Vec::new();
    for month in 2..=5 {
        let t = fire(
            &order,
            at(&format!("2026-{month:02}-10T09:00:00Z")),
            &policy(),
        );
        order = t.order;
        let due = order.payments_due.last().expect("a charge is requested");
        requested.push((due.cycle, due.amount.to_string()));
        order = cmd(
            &order,
            "recordPayment",
            json!({"paymentId": format!("p{month}"), "amount": due.amount.to_string()}),
            at(&format!("2026-{month:02}-10T09:00:00Z")),
        )
        .unwrap()
        .order;
    }
    assert_eq!(
        requested,
        [
            (2, "5.00".to_string()),
            (3, "5.00".into()),
            (4, "10.00".into()),
            (5, "10.00".into())
        ]
    );
}

#[test]
fn after_a_trial_cycle_one_charges_the_line_items_too() {
    let o = ok(
        &cart(),
        json!({"freeTrialDays": 7, "lineItems": {"create": [item("box", 1, "7.00")]}, "promoCodes": {"create": [{"code": "HALF3"}]}}),
    )
    .order;
    assert_eq!(o.last_payment_status, PaymentStatus::NotApplicable);
    let bought = cmd(
        &o,
        "recordPayment",
        json!({"paymentId": "p0", "amount": "0"}),
        now(),
    )
    .unwrap()
    .order;
    assert!(bought.in_trial());
    let after_trial = fire(&bought, at("2026-01-17T09:00:00Z"), &policy()).order;
    let due = &after_trial.payments_due[0];
    assert_eq!((due.cycle, due.amount), (1, d("8.50")), "(10 + 7) / 2");
}

#[test]
fn refresh_basket_false_skips_pricing() {
    let o = cart();
    let t = ok(
        &o,
        json!({"lineItems": {"create": [item("a", 1, "5.00")]}, "promoCodes": {"create": [{"code": "TENPCT"}]}, "options": {"refreshBasket": false}}),
    );
    assert_eq!(t.order.line_items.len(), 1);
    assert_eq!(t.order.price_details, o.price_details, "not repriced");
    assert!(t.order.discounts.is_empty());
    let refreshed = ok(&t.order, json!({})).order;
    assert_eq!(refreshed.price_details.total, d("13.50"), "15.00 - 10%");
}

#[test]
fn pricing_refuses_a_code_that_expired_or_left_config_since_it_was_added() {
    let o = ok(
        &cart(),
        json!({"promoCodes": {"create": [{"code": "SOON"}]}}),
    )
    .order;
    let req = UpdateOrder::parse(&json!({"customerId": "c1", "id": o.id}), "web").unwrap();
    let later = at("2026-02-02T00:00:00Z");
    let e = update(&o, &req, &rules(), later, &policy()).unwrap_err();
    assert_eq!(
        (e.stage, e.code()),
        (Stage::Pricing, ErrorCode::InvalidRequest)
    );
    assert!(e.error.to_string().contains("expired"), "{e}");
    // Deleting the code in the same request fixes it.
    let req = UpdateOrder::parse(
        &json!({"customerId": "c1", "id": o.id, "promoCodes": {"delete": ["SOON"]}}),
        "web",
    )
    .unwrap();
    let u = update(&o, &req, &rules(), later, &policy()).unwrap();
    assert_eq!(u.transition.order.price_details.total, d("10.00"));

    let mut fewer = rules();
    fewer.promotions.remove("SOON");
    let req = UpdateOrder::parse(&json!({"customerId": "c1", "id": o.id}), "web").unwrap();
    let e = update(&o, &req, &fewer, now(), &policy()).unwrap_err();
    assert_eq!(e.stage, Stage::Pricing);
    assert!(e.error.to_string().contains("no longer offered"), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Fields

#[test]
fn plan_terms_change_only_on_carts() {
    let o = active();
    for args in [
        json!({"plan": {"id": "p2", "name": "Other"}}),
        json!({"prices": [{"cycleFrom": 1, "amount": "1.00"}]}),
        json!({"currency": "EUR"}),
        json!({"freeTrialDays": 7}),
        json!({"pricing": {"singlePaymentUnlimited": true}}),
        json!({"newName": "renamed"}),
    ] {
        let (stage, code, _) = refusal(run(&o, args.clone()));
        assert_eq!(
            (stage, code),
            (Stage::Fields, ErrorCode::InvalidState),
            "{args}"
        );
    }
}

#[test]
fn a_cart_changes_plan_pricing_and_trial_with_dates_recomputed() {
    let o = cart();
    assert_eq!(o.end_date, Some(at("2027-01-10T09:00:00Z")));
    let t = ok(
        &o,
        json!({
            "plan": {"id": "p2", "name": "Quarterly", "description": "every 3 months"},
            "pricing": {"subscription": {"cycleDuration": {"count": 3, "unit": "MONTH"}, "cycleCount": 4}},
            "prices": [{"cycleFrom": 1, "numberOfCycles": 1, "amount": "20.00"}, {"cycleFrom": 2, "amount": "25.00"}],
            "freeTrialDays": 10,
            "newName": "quarterly box"
        }),
    );
    let n = &t.order;
    assert_eq!(n.plan.name, "Quarterly");
    assert_eq!(n.name.as_deref(), Some("quarterly box"));
    assert_eq!(n.free_trial_days, 10);
    assert_eq!(
        n.end_date,
        Some(at("2027-01-20T09:00:00Z")),
        "anchor Jan 20 + 4 x 3 months"
    );
    assert_eq!(n.price_details.total, d("20.00"));
    assert_eq!(
        n.last_payment_status,
        PaymentStatus::NotApplicable,
        "a trial: nothing due at purchase"
    );
    assert_eq!(types(&t.events), ["orderUpdated"]);
}

#[test]
fn new_plan_terms_are_checked_like_create_order() {
    let o = cart();
    for (args, field) in [
        (
            json!({"prices": [{"cycleFrom": 2, "amount": "1.00"}]}),
            "prices[0].cycleFrom",
        ),
        (
            json!({"pricing": {"singlePaymentUnlimited": true}, "freeTrialDays": 3}),
            "freeTrialDays",
        ),
        (
            json!({"prices": [{"cycleFrom": 1, "numberOfCycles": 2, "amount": "1.00"}]}),
            "prices",
        ),
        (
            json!({"currency": "JPY", "prices": [{"cycleFrom": 1, "amount": "1.5"}]}),
            "prices[0].amount",
        ),
        (
            json!({"pricing": {"singlePaymentUnlimited": true}, "prices": [{"cycleFrom": 1, "numberOfCycles": 2, "amount": "1"}]}),
            "prices[0].numberOfCycles",
        ),
    ] {
        let (stage, code, msg) = refusal(run(&o, args.clone()));
        assert_eq!(
            (stage, code),
            (Stage::Fields, ErrorCode::InvalidRequest),
            "{args}"
        );
        assert!(msg.starts_with(&format!("{field}:")), "{args}: {msg}");
    }
    // Current line items must fit a new currency: refused in their own stage.
    let with_item = ok(&o, json!({"lineItems": {"create": [item("a", 1, "1.50")]}})).order;
    let (stage, _, msg) = refusal(run(
        &with_item,
        json!({"currency": "JPY", "prices": [{"cycleFrom": 1, "amount": "1000"}]}),
    ));
    assert_eq!(stage, Stage::LineItems);
    assert!(msg.starts_with("lineItems[a].unitPrice:"), "{msg}");
    let t = ok(
        &with_item,
        json!({"currency": "JPY", "prices": [{"cycleFrom": 1, "amount": "1000"}], "lineItems": {"update": [{"id": "a", "unitPrice": "150"}]}}),
    );
    assert_eq!(t.order.price_details.total.to_string(), "1150");
    assert_eq!(t.order.price_details.currency.code(), "JPY");
}

#[test]
fn dates_change_through_their_lifecycle_rules() {
    let o = cart();
    let t = ok(&o, json!({"startDate": "2026-02-01T00:00:00Z"}));
    assert_eq!(types(&t.events), ["orderStartDateChanged", "orderUpdated"]);
    assert_eq!(t.order.end_date, Some(at("2027-02-01T00:00:00Z")));
    let (stage, code, _) = refusal(run(&o, json!({"startDate": "2025-01-01T00:00:00Z"})));
    assert_eq!((stage, code), (Stage::Fields, ErrorCode::InvalidRequest));
    // The current value again is no change at all.
    let same = ok(&o, json!({"startDate": NOW}));
    assert!(same.is_noop());

    let a = active();
    let t = ok(&a, json!({"endDate": "2027-03-01T00:00:00Z"}));
    assert_eq!(types(&t.events), ["orderEndDatePostponed", "orderUpdated"]);
    let (stage, code, _) = refusal(run(&o, json!({"endDate": "2027-03-01T00:00:00Z"})));
    assert_eq!(
        (stage, code),
        (Stage::Fields, ErrorCode::InvalidState),
        "DRAFT end dates do not move"
    );
}

// ---------------------------------------------------------------------------------------------
// Status changes

#[test]
fn a_status_change_not_listed_for_the_channel_is_forbidden() {
    let o = active();
    let (stage, code, msg) = refusal(run_as("web", &o, json!({"status": "PAUSED"})));
    assert_eq!(
        (stage, code),
        (Stage::Fields, ErrorCode::ForbiddenStatusChange)
    );
    assert_eq!(
        msg,
        "channel web may not change status from ACTIVE to PAUSED"
    );
    let (_, code, msg) = refusal(run_as("backoffice", &o, json!({"status": "PENDING"})));
    assert_eq!(code, ErrorCode::ForbiddenStatusChange);
    assert_eq!(
        msg,
        "channel backoffice may not change status from ACTIVE to PENDING"
    );
    // Permission is checked before anything else in the request.
    let (_, code, _) = refusal(run_as(
        "web",
        &o,
        json!({"status": "PAUSED", "plan": {"id": "p2", "name": "x"}}),
    ));
    assert_eq!(code, ErrorCode::ForbiddenStatusChange);
    // The same status is no change, and needs no permission.
    assert!(ok(&o, json!({"status": "ACTIVE"})).is_noop());
}

#[test]
fn allowed_status_changes_run_the_lifecycle_commands() {
    let o = active();
    let paused = run_as("backoffice", &o, json!({"status": "PAUSED"}))
        .unwrap()
        .transition;
    assert_eq!(paused.order.status, OrderStatus::Paused);
    assert_eq!(types(&paused.events), ["orderPaused", "orderUpdated"]);
    assert_eq!(paused.order.pause_periods.len(), 1);

    let resumed = run_as("backoffice", &paused.order, json!({"status": "ACTIVE"}))
        .unwrap()
        .transition;
    assert_eq!(resumed.order.status, OrderStatus::Active);
    assert_eq!(types(&resumed.events), ["orderResumed", "orderUpdated"]);

    let canceled = run_as("backoffice", &o, json!({"status": "CANCELED"}))
        .unwrap()
        .transition;
    assert_eq!(canceled.order.status, OrderStatus::Canceled);
    assert_eq!(
        types(&canceled.events),
        ["orderCanceled", "orderEnded", "orderUpdated"]
    );
    let c = canceled.order.cancellation.as_ref().unwrap();
    assert_eq!(
        (c.effective_at, c.cause),
        (EffectiveAt::Immediately, CancelCause::OwnerAction)
    );
    assert_eq!(canceled.order.end_date, Some(now()));
}

#[test]
fn a_listed_transition_without_a_command_or_refused_by_the_lifecycle_is_invalid_state() {
    let (stage, code, msg) = refusal(run_as("backoffice", &active(), json!({"status": "ENDED"})));
    assert_eq!((stage, code), (Stage::Fields, ErrorCode::InvalidState));
    assert!(msg.contains("no lifecycle command"), "{msg}");
    let (stage, code, msg) = refusal(run_as("backoffice", &cart(), json!({"status": "CANCELED"})));
    assert_eq!((stage, code), (Stage::Fields, ErrorCode::InvalidState));
    assert!(msg.contains("delete it instead"), "{msg}");
}

#[test]
fn a_status_change_and_item_changes_are_one_change() {
    let o = active();
    let t = run_as(
        "backoffice",
        &o,
        json!({"status": "PAUSED", "addresses": {"create": [{"id": "a", "kind": "BILLING"}]}}),
    )
    .unwrap()
    .transition;
    assert_eq!(types(&t.events), ["orderPaused", "orderUpdated"]);
    assert_eq!(t.order.version, o.version + 1);
    assert_eq!(t.order.addresses.len(), 1);
    // A failure in a later stage discards the status change too.
    let e = run_as(
        "backoffice",
        &o,
        json!({"status": "PAUSED", "addresses": {"delete": ["nope"]}}),
    )
    .unwrap_err();
    assert_eq!((e.stage, e.code()), (Stage::Addresses, ErrorCode::NotFound));
}

// ---------------------------------------------------------------------------------------------
// Reply

#[test]
fn return_model_false_replies_with_id_and_version() {
    let o = cart();
    let u = run(
        &o,
        json!({"lineItems": {"create": [item("a", 1, "1.00")]}, "options": {"returnModel": false}}),
    )
    .unwrap();
    assert_eq!(u.reply, json!({"id": o.id, "version": o.version + 1}));
    let u = run(&o, json!({"lineItems": {"create": [item("a", 1, "1.00")]}})).unwrap();
    assert_eq!(u.reply["lineItems"][0]["id"], "a");
    assert_eq!(u.reply["priceDetails"]["total"], "11.00");
}

#[test]
fn a_request_that_changes_nothing_is_a_noop() {
    let o = cart();
    let u = run(&o, json!({})).unwrap();
    assert!(u.transition.is_noop());
    assert_eq!(u.transition.order, o);
    assert_eq!(u.reply["version"], o.version);
}

#[test]
fn a_carts_time_zone_changes_and_its_dates_follow_but_only_on_a_cart() {
    let o = cart();
    assert_eq!(o.end_date, Some(at("2027-01-10T09:00:00Z")));
    let t = ok(&o, json!({"timeZone": "America/New_York"}));
    assert_eq!(t.order.time_zone.name(), "America/New_York");
    // The start (10 Jan 09:00 UTC = 04:00 EST) + 12 local months: 10 Jan 2027 04:00 EST.
    assert_eq!(t.order.end_date, Some(at("2027-01-10T09:00:00Z")));
    let t = ok(&o, json!({"timeZone": "Europe/Paris"}));
    assert_eq!(t.order.time_zone.name(), "Europe/Paris");
    let (_, code, msg) = refusal(run(&active(), json!({"timeZone": "Europe/Paris"})));
    assert_eq!(code, ErrorCode::InvalidState, "{msg}");
    assert!(msg.contains("timeZone"), "{msg}");
    let (_, code, msg) =
        parse_err(json!({"customerId": "c1", "id": "o1", "timeZone": "Nowhere/Else"}));
    assert_eq!(code, ErrorCode::InvalidRequest, "{msg}");
}
