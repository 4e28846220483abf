//! The related items of updateOrder: line items, addresses, promotion codes and tender lines,
//! each kind's create / update / delete lists applied all or nothing, and the cart repriced.

use std::collections::HashSet;

use rust_decimal::Decimal;

use super::*;
use crate::domain::error::DomainError;
use crate::domain::lifecycle::Change;
use crate::domain::money::Currency;
use crate::domain::order::{
    Address, Discount, DiscountKind, LineItem, OrderStatus, PromoCode, TenderLine,
};

/// Items that [`edit_related`] can find by id.
pub(super) trait Keyed {
    fn key(&self) -> &str;
}

macro_rules! keyed {
    ($($t:ty => $f:ident),* $(,)?) => {
        $(impl Keyed for $t {
            fn key(&self) -> &str {
                &self.$f
            }
        })*
    };
}

keyed!(
    LineItem => id, LineItemArgs => id,
    Address => id, AddressArgs => id,
    TenderLine => id, TenderLineArgs => id,
    PromoCode => code, PromoCodeArgs => code,
);

/// Applies one kind's create / update / delete lists to `items`, all or nothing: ids are
/// checked (`check_key`) and unique within the request; an item created or updated in this
/// request cannot be deleted in it; update and delete need an existing id, create a new one.
#[allow(clippy::too_many_arguments)]
pub(super) fn edit_related<A: Keyed, M: Keyed>(
    kind: &str,
    noun: &str,
    order_id: &str,
    items: &mut Vec<M>,
    r: &Related<A>,
    check_key: impl Fn(&str, &str) -> Result<(), DomainError>,
    mut create: impl FnMut(&A, &str) -> Result<M, DomainError>,
    mut update: impl FnMut(&mut M, &A, &str) -> Result<(), DomainError>,
) -> Result<(), DomainError> {
    let not_found =
        |id: &str| DomainError::NotFound(format!("{noun} {id} not found on order {order_id}"));
    let mut touched: HashSet<&str> = HashSet::new();
    for (list, args) in [("create", &r.create), ("update", &r.update)] {
        for (i, a) in args.iter().enumerate() {
            let field = format!("{kind}.{list}[{i}]");
            check_key(&field, a.key())?;
            if !touched.insert(a.key()) {
                return Err(DomainError::invalid(
                    field,
                    format!("{noun} {} appears more than once in this request", a.key()),
                ));
            }
        }
    }
    let mut deleting: HashSet<&str> = HashSet::new();
    for (i, id) in r.delete.iter().enumerate() {
        let field = format!("{kind}.delete[{i}]");
        check_key(&field, id)?;
        if touched.contains(id.as_str()) {
            return Err(DomainError::invalid(
                field,
                format!("cannot delete {noun} {id}: it is created or updated in the same request"),
            ));
        }
        if !deleting.insert(id.as_str()) {
            return Err(DomainError::invalid(
                field,
                format!("{noun} {id} appears more than once in this request"),
            ));
        }
        if !items.iter().any(|m| m.key() == id) {
            return Err(not_found(id));
        }
    }
    for (i, a) in r.update.iter().enumerate() {
        let item = items
            .iter_mut()
            .find(|m| m.key() == a.key())
            .ok_or_else(|| not_found(a.key()))?;
        update(item, a, &format!("{kind}.update[{i}]"))?;
    }
    items.retain(|m| !deleting.contains(m.key()));
    for (i, a) in r.create.iter().enumerate() {
        if items.iter().any(|m| m.key() == a.key()) {
            return Err(DomainError::Conflict(format!(
                "{noun} {} already exists on order {order_id}",
                a.key()
            )));
        }
        items.push(create(a, &format!("{kind}.create[{i}]"))?);
    }
    if items.len() > MAX_RELATED_ITEMS {
        return Err(DomainError::invalid(
            kind,
            format!("an order holds at most {MAX_RELATED_ITEMS} {noun}s"),
        ));
    }
    Ok(())
}

pub(super) fn required<T: Clone>(field: &str, name: &str, v: &Option<T>) -> Result<T, DomainError> {
    v.clone()
        .ok_or_else(|| DomainError::invalid(format!("{field}.{name}"), "is required"))
}

pub(super) fn money(
    field: String,
    currency: Currency,
    amount: Decimal,
) -> Result<Decimal, DomainError> {
    currency
        .check_amount(amount)
        .map_err(|e| DomainError::invalid(field, e.to_string()))
}

pub(super) fn quantity(field: &str, q: i64) -> Result<u32, DomainError> {
    let field = format!("{field}.quantity");
    match q {
        q if q < 0 => Err(DomainError::invalid(field, "must not be negative")),
        0 => Err(DomainError::invalid(
            field,
            "must be at least 1 (delete the item instead)",
        )),
        q if q > MAX_QUANTITY => Err(DomainError::invalid(
            field,
            format!("must be at most {MAX_QUANTITY}"),
        )),
        q => Ok(q as u32),
    }
}

/// An optional label: absent stays absent; given, it must be 1 to `max` characters.
pub(super) fn label(
    field: &str,
    name: &str,
    v: &Option<String>,
    max: usize,
) -> Result<Option<String>, DomainError> {
    v.as_ref()
        .map(|s| check_text(&format!("{field}.{name}"), s, max).map(|_| s.clone()))
        .transpose()
}

/// Stage `lineItems` (carts only): one-time add-ons of the purchase.
pub(super) fn line_items(
    change: &mut Change,
    r: &Related<LineItemArgs>,
) -> Result<(), DomainError> {
    if !r.is_empty() {
        cart_only(change.order(), "line items")?;
    }
    let o = change.order_mut();
    let currency = o.currency;
    edit_related(
        "lineItems",
        "line item",
        &o.id.clone(),
        &mut o.line_items,
        r,
        |field, id| check_id(&format!("{field}.id"), id),
        |a, field| {
            Ok(LineItem {
                id: a.id.clone(),
                sku: label(field, "sku", &a.sku, MAX_LABEL_LEN)?.unwrap_or_default(),
                name: label(field, "name", &a.name, MAX_NAME_LEN)?.unwrap_or_default(),
                quantity: quantity(field, required(field, "quantity", &a.quantity)?)?,
                unit_price: money(
                    format!("{field}.unitPrice"),
                    currency,
                    required(field, "unitPrice", &a.unit_price)?,
                )?,
            })
        },
        |item, a, field| {
            if let Some(sku) = label(field, "sku", &a.sku, MAX_LABEL_LEN)? {
                item.sku = sku;
            }
            if let Some(name) = label(field, "name", &a.name, MAX_NAME_LEN)? {
                item.name = name;
            }
            if let Some(q) = a.quantity {
                item.quantity = quantity(field, q)?;
            }
            if let Some(p) = a.unit_price {
                item.unit_price = money(format!("{field}.unitPrice"), currency, p)?;
            }
            Ok(())
        },
    )?;
    // A currency changed in stage `fields` must still express every price.
    for item in &mut o.line_items {
        item.unit_price = money(
            format!("lineItems[{}].unitPrice", item.id),
            currency,
            item.unit_price,
        )?;
    }
    Ok(())
}

pub(super) fn address_lines(field: &str, lines: &[String]) -> Result<Vec<String>, DomainError> {
    if lines.len() > MAX_ADDRESS_LINES {
        return Err(DomainError::invalid(
            format!("{field}.lines"),
            format!("at most {MAX_ADDRESS_LINES} lines"),
        ));
    }
    for (i, l) in lines.iter().enumerate() {
        check_text(&format!("{field}.lines[{i}]"), l, MAX_NAME_LEN)?;
    }
    Ok(lines.to_vec())
}

/// An optional address field: empty clears it, else 1 to 256 characters.
pub(super) fn clearable(
    field: &str,
    name: &str,
    v: &Option<String>,
) -> Result<Option<Option<String>>, DomainError> {
    match v.as_deref() {
        None => Ok(None),
        Some("") => Ok(Some(None)),
        Some(s) => check_text(&format!("{field}.{name}"), s, MAX_NAME_LEN)
            .map(|_| Some(Some(s.to_string()))),
    }
}

/// Stage `addresses`: any order's addresses may change.
pub(super) fn addresses(change: &mut Change, r: &Related<AddressArgs>) -> Result<(), DomainError> {
    if r.is_empty() {
        return Ok(());
    }
    let o = change.order_mut();
    edit_related(
        "addresses",
        "address",
        &o.id.clone(),
        &mut o.addresses,
        r,
        |field, id| check_id(&format!("{field}.id"), id),
        |a, field| {
            Ok(Address {
                id: a.id.clone(),
                kind: label(field, "kind", &a.kind, MAX_LABEL_LEN)?
                    .ok_or_else(|| DomainError::invalid(format!("{field}.kind"), "is required"))?,
                lines: address_lines(field, a.lines.as_deref().unwrap_or_default())?,
                city: clearable(field, "city", &a.city)?.flatten(),
                postal_code: clearable(field, "postalCode", &a.postal_code)?.flatten(),
                country: clearable(field, "country", &a.country)?.flatten(),
            })
        },
        |addr, a, field| {
            if let Some(kind) = label(field, "kind", &a.kind, MAX_LABEL_LEN)? {
                addr.kind = kind;
            }
            if let Some(lines) = &a.lines {
                addr.lines = address_lines(field, lines)?;
            }
            if let Some(v) = clearable(field, "city", &a.city)? {
                addr.city = v;
            }
            if let Some(v) = clearable(field, "postalCode", &a.postal_code)? {
                addr.postal_code = v;
            }
            if let Some(v) = clearable(field, "country", &a.country)? {
                addr.country = v;
            }
            Ok(())
        },
    )
}

/// Stage `promoCodes` (carts only): requested codes must be configured and not expired; they
/// are kept in their configured spelling (codes match regardless of case).
pub(super) fn promo_codes(
    change: &mut Change,
    r: &Related<PromoCodeArgs>,
    rules: &BasketRules,
) -> Result<(), DomainError> {
    if r.is_empty() {
        return Ok(());
    }
    cart_only(change.order(), "promotion codes")?;
    let now = change.now();
    let resolve = |list: &str, items: &[PromoCodeArgs]| {
        items
            .iter()
            .enumerate()
            .map(|(i, a)| {
                let field = format!("promoCodes.{list}[{i}].code");
                let (code, promo) = rules.promotion(&a.code).ok_or_else(|| {
                    DomainError::invalid(&field, format!("unknown promotion code '{}'", a.code))
                })?;
                if let Some(t) = promo.expired(now) {
                    return Err(DomainError::invalid(
                        &field,
                        format!("promotion code {code} expired at {}", format_instant(&t)),
                    ));
                }
                Ok(PromoCodeArgs {
                    code: code.to_string(),
                })
            })
            .collect::<Result<Vec<_>, DomainError>>()
    };
    let o = change.order();
    let resolved = Related {
        create: resolve("create", &r.create)?,
        update: resolve("update", &r.update)?,
        delete: r
            .delete
            .iter()
            .map(|c| {
                o.promo_codes
                    .iter()
                    .find(|p| p.code.eq_ignore_ascii_case(c))
                    .map_or_else(|| c.clone(), |p| p.code.clone())
            })
            .collect(),
    };
    let o = change.order_mut();
    edit_related(
        "promoCodes",
        "promotion code",
        &o.id.clone(),
        &mut o.promo_codes,
        &resolved,
        |field, code| check_text(field, code, MAX_LABEL_LEN),
        |a, _| {
            Ok(PromoCode {
                code: a.code.clone(),
            })
        },
        |_, _, _| Ok(()),
    )
}

/// Stage `payments` (carts only): tender lines, the buyer's planned means of payment. They
/// move no money.
pub(super) fn tender_lines(
    change: &mut Change,
    r: &Related<TenderLineArgs>,
) -> Result<(), DomainError> {
    if !r.is_empty() {
        cart_only(change.order(), "payments (tender lines)")?;
    }
    let o = change.order_mut();
    let currency = o.currency;
    edit_related(
        "payments",
        "payment",
        &o.id.clone(),
        &mut o.tender_lines,
        r,
        |field, id| check_id(&format!("{field}.id"), id),
        |a, field| {
            Ok(TenderLine {
                id: a.id.clone(),
                method: label(field, "method", &a.method, MAX_LABEL_LEN)?.ok_or_else(|| {
                    DomainError::invalid(format!("{field}.method"), "is required")
                })?,
                amount: money(
                    format!("{field}.amount"),
                    currency,
                    required(field, "amount", &a.amount)?,
                )?,
            })
        },
        |t, a, field| {
            if let Some(m) = label(field, "method", &a.method, MAX_LABEL_LEN)? {
                t.method = m;
            }
            if let Some(amount) = a.amount {
                t.amount = money(format!("{field}.amount"), currency, amount)?;
            }
            Ok(())
        },
    )?;
    for t in &mut o.tender_lines {
        t.amount = money(format!("payments[{}].amount", t.id), currency, t.amount)?;
    }
    Ok(())
}

/// Stage `pricing` (carts only; a purchased order keeps the pricing it was bought with): the
/// promotions of the requested codes, with their terms from config, then `priceDetails`.
pub(super) fn pricing(change: &mut Change, rules: &BasketRules) -> Result<(), DomainError> {
    let o = change.order();
    if o.status != OrderStatus::Draft {
        return Ok(());
    }
    let now = change.now();
    let mut discounts = Vec::with_capacity(o.promo_codes.len());
    for p in &o.promo_codes {
        let (code, promo) = rules.promotion(&p.code).ok_or_else(|| {
            DomainError::invalid(
                "promoCodes",
                format!(
                    "promotion code {} is no longer offered; delete it from the cart",
                    p.code
                ),
            )
        })?;
        if let Some(t) = promo.expired(now) {
            return Err(DomainError::invalid(
                "promoCodes",
                format!(
                    "promotion code {code} expired at {}; delete it from the cart",
                    format_instant(&t)
                ),
            ));
        }
        let value = match promo.kind {
            DiscountKind::Percent => promo.value,
            DiscountKind::Fixed => o.currency.check_amount(promo.value).map_err(|_| {
                DomainError::invalid(
                    "promoCodes",
                    format!(
                        "promotion code {code} takes {} off, which {} cannot express",
                        promo.value, o.currency
                    ),
                )
            })?,
        };
        discounts.push(Discount {
            code: code.to_string(),
            kind: promo.kind,
            value,
            first_cycles: promo.first_cycles,
        });
    }
    change.order_mut().discounts = discounts;
    change.reprice();
    Ok(())
}
