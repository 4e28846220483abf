use serde_json::{json, Value};

use super::*;
use crate::admin::reply::reply_of;
use crate::domain::command::Command;
use crate::domain::time::format_instant;
use crate::domain::ErrorCode;

fn req(command: &str, args: Value) -> Request {
    Request {
        id: "r1".into(),
        reply_to: None,
        channel: String::new(),
        command: command.into(),
        args,
        resolved_order_id: None,
    }
}

fn code(command: &str, args: Value) -> ErrorCode {
    AdminCommand::parse(&req(command, args)).unwrap_err().code()
}

#[test]
fn requests_parse_into_typed_commands() {
    assert!(matches!(
        AdminCommand::parse(&req("ping", json!({}))).unwrap(),
        AdminCommand::Daemon(DaemonCommand::Ping)
    ));
    let c = AdminCommand::parse(&req(
        "advanceClock",
        json!({"to": "2026-01-01T00:00:00+01:00"}),
    ))
    .unwrap();
    assert!(!c.waits_for_advance());
    assert!(
        matches!(c, AdminCommand::Daemon(DaemonCommand::AdvanceClock { to }) if format_instant(&to) == "2025-12-31T23:00:00.000Z")
    );
    let c = AdminCommand::parse(&req("pauseOrder", json!({"orderId": "o1"}))).unwrap();
    assert!(
        matches!(c, AdminCommand::Orders(OrderCommand::Lifecycle { ref order_id, .. }) if order_id == "o1")
    );
    assert!(c.waits_for_advance());
    let cursor = json!({"limit": 5, "cursor": "1767225600000:o:7"});
    let c = AdminCommand::parse(&req("listOrders", cursor)).unwrap();
    let AdminCommand::Orders(OrderCommand::ListOrders(q)) = c else {
        panic!("listOrders")
    };
    let after = Some((1_767_225_600_000, "o:7".to_string()));
    assert_eq!((q.limit, q.after, q.status), (5, after, None));
}

#[test]
fn every_listed_command_is_known_and_every_order_command_listed() {
    for name in COMMAND_NAMES {
        if let Err(e) = AdminCommand::parse(&req(name, json!({}))) {
            assert_ne!(e.code(), ErrorCode::UnknownCommand, "{name}");
        }
    }
    for name in Command::NAMES {
        assert!(COMMAND_NAMES.contains(&name), "{name} is not listed");
    }
}

#[test]
fn bad_requests_get_their_codes() {
    assert_eq!(code("nope", json!({})), ErrorCode::UnknownCommand);
    assert_eq!(
        code("advanceClock", json!({"to": "tomorrow"})),
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        code("getOrder", json!({"orderId": ""})),
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        code("listOrders", json!({"limit": 501})),
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        code("listOrders", json!({"status": "NOPE"})),
        ErrorCode::InvalidRequest
    );
    assert_eq!(
        code("getCustomerStats", json!({"customer": "c1"})),
        ErrorCode::InvalidRequest
    );
    // updateOrder refusals name their stage: no search criteria is a `load` refusal.
    let e = AdminCommand::parse(&req("updateOrder", json!({"id": "o1"}))).unwrap_err();
    let e = reply_of("r1", Err(e)).reply.unwrap().error.unwrap();
    assert_eq!(
        (e.code, e.stage.as_deref()),
        (ErrorCode::InvalidRequest, Some("load"))
    );
}

#[test]
fn a_retried_create_derives_the_same_order_id() {
    let args = crate::domain::lifecycle::test_support::monthly(
        "OFFLINE",
        3,
        "1.00",
        "2026-01-01T00:00:00Z",
    );
    let id = |r: &str| match AdminCommand::parse(&Request {
        id: r.into(),
        ..req("createOrder", args.clone())
    }) {
        Ok(AdminCommand::Orders(OrderCommand::CreateOrder(new))) => new.id,
        other => panic!("{other:?}"),
    };
    assert_eq!(id("a"), id("a"));
    assert_ne!(id("a"), id("b"));
}

/// What the server asks of each command (routing partition, order id, addressed daemon,
/// whether it reports data and waits for an advance), one request per command or flag.
#[test]
fn every_command_keeps_its_routing_and_flags() {
    let keys = crate::store::Keys::new("recur", 16);
    let p = |id: &str| keys.partition(id);
    let t = "2026-01-01T00:00:00Z";
    let create = crate::domain::lifecycle::test_support::monthly("OFFLINE", 3, "1.00", t);
    let mut create_o1 = create.clone();
    create_o1["orderId"] = json!("o1");
    let mut create_on_clock = create;
    create_on_clock["orderId"] = json!("o2");
    create_on_clock["testClockId"] = json!("tc1");
    let (o1, c1, tc1) = (
        || json!({"orderId": "o1"}),
        || json!({"customerId": "c1"}),
        || json!({"testClockId": "tc1"}),
    );
    let part = |n: u16| json!({"partition": n, "now": t, "start": t, "to": t});
    let (y, n, o) = (true, false, Some("o1"));
    // (command, args, partition, order id, addressed daemon, reports data, waits)
    type Row = (
        &'static str,
        Value,
        u16,
        Option<&'static str>,
        Option<&'static str>,
        bool,
        bool,
    );
    #[rustfmt::skip]
    let rows: Vec<Row> = vec![
        ("ping", json!({}), 0, None, None, n, n),
        ("getClock", json!({}), 0, None, None, y, n),
        ("getMetrics", json!({}), 0, None, None, n, n),
        ("getMetrics", json!({"daemonId": "d2"}), 0, None, Some("d2"), n, n),
        ("advanceClock", json!({"to": t}), 0, None, None, y, n),
        ("createOrder", create_o1, p("o1"), o, None, y, y),
        ("createOrder", create_on_clock, p("o2"), Some("o2"), None, y, n),
        ("getOrder", o1(), p("o1"), o, None, y, y),
        ("markAsPaid", o1(), p("o1"), o, None, y, y),
        ("pauseOrder", o1(), p("o1"), o, None, y, y),
        ("pauseOrder", json!({"orderId": "o1", "preview": true}), p("o1"), o, None, y, y),
        ("cancelOrder", json!({"orderId": "o1", "preview": false, "effectiveAt": "IMMEDIATELY"}),
            p("o1"), o, None, y, y),
        ("previewOrder", json!({"orderId": "o1", "until": t}), p("o1"), o, None, y, y),
        ("updateOrder", json!({"customerId": "c1", "id": "o1"}), p("o1"), o, None, y, y),
        ("updateOrder", json!({"customerId": "c1", "name": "box"}), p("c1"), None, None, y, y),
        ("listOrders", json!({}), 0, None, None, y, n),
        ("listOrders", c1(), p("c1"), None, None, y, n),
        ("getCustomerStats", c1(), p("c1"), None, None, y, n),
        ("recomputeCustomerStats", c1(), p("c1"), None, None, y, y),
        ("forecast", json!({"from": t, "to": t}), 0, None, None, y, y),
        ("forecast", json!({"from": t, "to": t, "testClockId": "tc1"}), 0, None, None, y, n),
        (FORECAST_PARTITION, part(5), 5, None, None, y, n),
        (FORECAST_PARTITION, part(16), 0, None, None, y, n),
        ("getWebhookEndpoints", json!({}), 0, None, None, y, y),
        ("retryDeadWebhooks", json!({}), 0, None, None, y, y),
        ("createTestClock", json!({"testClockId": "tc1", "frozenTime": t}), p("tc1"), None, None, y, n),
        ("getTestClock", tc1(), p("tc1"), None, None, y, n),
        ("listTestClocks", json!({}), 0, None, None, y, n),
        ("advanceTestClock", json!({"testClockId": "tc1", "to": t}), p("tc1"), None, None, y, n),
        ("deleteTestClock", tc1(), p("tc1"), None, None, y, n),
    ];
    for (name, args, partition, order_id, daemon, reports, waits) in rows {
        let c = AdminCommand::parse(&req(name, args.clone()))
            .unwrap_or_else(|e| panic!("{name} {args}: {e:?}"));
        let got = (
            c.routing_partition(&keys),
            c.order_id(),
            c.addressed_daemon(),
            c.reports_data(),
            c.waits_for_advance(),
        );
        let want = (partition, order_id, daemon, reports, waits);
        assert_eq!(got, want, "{name} {args}");
    }
}
