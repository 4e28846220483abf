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
