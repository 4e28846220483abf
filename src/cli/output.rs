//! How `recur admin` prints: the reply as JSON (the default, for scripts and `jq`), or its
//! result as a table for reading by eye (`--output table`).

use rust_decimal::Decimal;
use serde_json::Value;

use recur::wire::Reply;

use super::commands::Output;

/// The reply as `output` asks, without a trailing newline.
pub fn render_reply(reply: &Reply, output: Output) -> String {
    match output {
        Output::Json => serde_json::to_string_pretty(reply).unwrap_or_else(|e| e.to_string()),
        Output::Table => match (&reply.error, &reply.result) {
            (Some(error), _) => {
                let stage = error
                    .stage
                    .as_deref()
                    .map(|s| format!(" (stage {s})"))
                    .unwrap_or_default();
                format!("error {}: {}{stage}", error.code, error.message)
            }
            (None, Some(result)) => render_result(result),
            (None, None) => String::new(),
        },
    }
}

/// One event of `recur admin watch` as `output` asks: the JSON line, or `time type order #seq`.
pub fn render_event(event: &Value, output: Output) -> String {
    match output {
        Output::Json => event.to_string(),
        Output::Table => format!(
            "{:<24}  {:<28}  {}  #{}",
            cell(&event["eventTime"]),
            cell(&event["type"]),
            cell(&event["entityId"]),
            cell(&event["sequence"]),
        ),
    }
}

/// A result as a table: listOrders' orders one per row (then the next cursor), anything else
/// as `key  value` rows, nested keys dotted (`plan.id`, `payments[0].amount`).
fn render_result(result: &Value) -> String {
    if let Some(months) = result.get("months").and_then(Value::as_array) {
        return render_forecast(months);
    }
    if let Some(orders) = result.get("orders").and_then(Value::as_array) {
        let columns = [
            ("ID", "/id"),
            ("CUSTOMER", "/customerId"),
            ("STATUS", "/status"),
            ("PAYMENT", "/lastPaymentStatus"),
            ("PLAN", "/plan/id"),
            ("CYCLE", "/currentCycle/index"),
            ("CREATED", "/createdDate"),
        ];
        let header = columns.iter().map(|(h, _)| h.to_string()).collect();
        let mut rows: Vec<Vec<String>> = vec![header];
        for order in orders {
            rows.push(
                columns
                    .iter()
                    .map(|(_, p)| cell(order.pointer(p).unwrap_or(&Value::Null)))
                    .collect(),
            );
        }
        let mut out = align(&rows);
        if let Some(cursor) = result.get("nextCursor").and_then(Value::as_str) {
            out.push_str(&format!("\nnext page: --cursor {cursor}"));
        }
        return out;
    }
    let mut rows = Vec::new();
    flatten("", result, &mut rows);
    align(&rows)
}

/// The currencies a forecast's months charge in, sorted.
fn currencies(months: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = months
        .iter()
        .filter_map(|m| m["charges"].as_object())
        .flat_map(|c| c.keys().cloned())
        .collect();
    out.sort();
    out.dedup();
    out
}

/// A forecast as one row per month: cycle starts, ends, cancellations and the charges per
/// currency.
fn render_forecast(months: &[Value]) -> String {
    let codes = currencies(months);
    let mut header: Vec<String> = ["MONTH", "CYCLE STARTS", "ENDS", "CANCELLATIONS"]
        .iter()
        .map(|h| (*h).to_string())
        .collect();
    header.extend(codes.iter().cloned());
    let mut rows = vec![header];
    for m in months {
        let mut row = vec![
            cell(&m["month"]),
            cell(&m["cycleStarts"]),
            cell(&m["ends"]),
            cell(&m["cancellations"]),
        ];
        for c in &codes {
            row.push(m["charges"].get(c).map_or_else(|| "0".to_string(), cell));
        }
        rows.push(row);
    }
    align(&rows)
}

/// A forecast's charges as a bar chart in the terminal, one bar per month and currency, scaled
/// to `width` characters for the largest month.
pub fn forecast_chart(result: &Value, width: usize) -> String {
    let Some(months) = result.get("months").and_then(Value::as_array) else {
        return String::new();
    };
    let mut out = String::new();
    for code in currencies(months) {
        let amounts: Vec<(String, Decimal, String)> = months
            .iter()
            .map(|m| {
                let text = m["charges"]
                    .get(&code)
                    .and_then(Value::as_str)
                    .unwrap_or("0");
                (
                    cell(&m["month"]),
                    text.parse().unwrap_or_default(),
                    text.to_string(),
                )
            })
            .collect();
        let max = amounts.iter().map(|a| a.1).max().unwrap_or_default();
        out.push_str(&format!("charges in {code}\n"));
        for (month, amount, text) in amounts {
            let len = if max.is_zero() {
                0
            } else {
                (amount * Decimal::from(width) / max)
                    .round()
                    .to_string()
                    .parse()
                    .unwrap_or(0)
            };
            out.push_str(&format!("{month}  {:<width$}  {text}\n", "█".repeat(len)));
        }
    }
    let starts: Vec<(String, u64)> = months
        .iter()
        .map(|m| (cell(&m["month"]), m["cycleStarts"].as_u64().unwrap_or(0)))
        .collect();
    let max = starts.iter().map(|s| s.1).max().unwrap_or(0);
    out.push_str("cycle starts\n");
    for (month, n) in starts {
        let len = (n * width as u64)
            .checked_div(max)
            .map_or(0, |l| usize::try_from(l).unwrap_or(width));
        out.push_str(&format!("{month}  {:<width$}  {n}\n", "█".repeat(len)));
    }
    out.trim_end().to_string()
}

/// `value`'s leaves as `[path, value]` rows.
fn flatten(path: &str, value: &Value, rows: &mut Vec<Vec<String>>) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (key, v) in map {
                flatten(&join(key), v, rows);
            }
        }
        Value::Array(items) if items.iter().any(|v| v.is_object() || v.is_array()) => {
            for (i, v) in items.iter().enumerate() {
                flatten(&format!("{path}[{i}]"), v, rows);
            }
        }
        Value::Array(items) if !items.is_empty() => {
            let list: Vec<String> = items.iter().map(cell).collect();
            rows.push(vec![path.to_string(), list.join(", ")]);
        }
        leaf => rows.push(vec![path.to_string(), cell(leaf)]),
    }
}

/// A value in a cell: strings bare, null as `-`, empty collections as `[]` / `{}`.
fn cell(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Rows with their columns aligned (two spaces apart), no trailing spaces.
fn align(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .filter_map(|r| r.get(c))
                .map(|s| s.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let lines: Vec<String> = rows
        .iter()
        .map(|row| {
            let mut line = String::new();
            for (c, s) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(s);
                } else {
                    line.push_str(&format!("{s:<w$}  ", w = widths[c]));
                }
            }
            line.trim_end().to_string()
        })
        .collect();
    lines.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ok(result: Value) -> Reply {
        Reply::ok(Some("r1".into()), result)
    }

    #[test]
    fn json_is_the_reply_object() {
        let out = render_reply(&ok(json!({"pong": true})), Output::Json);
        let back: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(
            back,
            json!({"id": "r1", "ok": true, "result": {"pong": true}})
        );
    }

    #[test]
    fn a_table_flattens_nested_keys_and_aligns_them() {
        let result = json!({
            "id": "ord-1",
            "plan": {"id": "basic", "name": "Basic"},
            "payments": [{"id": "pay-1", "amount": "10.00"}],
            "tags": ["a", "b"],
            "endDate": null,
        });
        let out = render_reply(&ok(result), Output::Table);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines.contains(&"id                  ord-1"), "{out}");
        assert!(lines.contains(&"plan.name           Basic"), "{out}");
        assert!(lines.contains(&"payments[0].amount  10.00"), "{out}");
        assert!(lines.contains(&"tags                a, b"), "{out}");
        assert!(lines.contains(&"endDate             -"), "{out}");
    }

    #[test]
    fn orders_are_one_row_each_with_the_next_page() {
        let result = json!({"orders": [
            {"id": "ord-1", "customerId": "cus-1", "status": "ACTIVE", "plan": {"id": "basic"},
             "currentCycle": {"index": 2}, "lastPaymentStatus": "PAID",
             "createdDate": "2026-01-01T00:00:00.000Z"},
        ], "nextCursor": "1767225600000:ord-1"});
        let out = render_reply(&ok(result), Output::Table);
        let lines: Vec<&str> = out.lines().collect();
        assert!(lines[0].starts_with("ID     CUSTOMER  STATUS"), "{out}");
        assert!(lines[1].starts_with("ord-1  cus-1     ACTIVE"), "{out}");
        assert_eq!(lines[2], "next page: --cursor 1767225600000:ord-1");
    }

    #[test]
    fn an_error_reply_is_one_line() {
        let reply: Reply = serde_json::from_value(json!({"id": "r1", "ok": false,
            "error": {"code": "NOT_FOUND", "message": "no order 'x'"}}))
        .unwrap();
        assert_eq!(
            render_reply(&reply, Output::Table),
            "error NOT_FOUND: no order 'x'"
        );
    }
}
