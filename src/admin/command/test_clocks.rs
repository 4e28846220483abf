//! The test clock commands (SPEC 11.5): create, get, list, advance, delete, and binding a
//! customer's orders to a clock.

use serde::Deserialize;
use serde_json::{json, Value};

use super::*;
use crate::actors::order::RequestMeta;
use crate::admin::reply::{AdminError, Outcome};
use crate::admin::AdminState;
use crate::domain::command::{check_id, parse_args, NewOrder};
use crate::domain::time::{parse_instant, Instant};
use crate::domain::DomainError;
use crate::store::test_clock::{JobKind, TestClock};
use crate::store::StoreError;
use crate::wire::Request;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct CreateTestClockArgs {
    #[serde(default)]
    pub(super) test_clock_id: Option<String>,
    pub(super) frozen_time: String,
    #[serde(default)]
    pub(super) name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct TestClockArgs {
    pub(super) test_clock_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(super) struct AdvanceTestClockArgs {
    pub(super) test_clock_id: String,
    pub(super) to: String,
}

/// listTestClocks: a page of clocks, oldest first, and the cursor of the next page.
pub(super) async fn list_test_clocks(
    state: &AdminState,
    after: Option<(i64, String)>,
    limit: usize,
) -> Result<Value, AdminError> {
    let (clocks, next) = state
        .stores
        .test_clocks
        .list_test_clocks(after.as_ref(), limit)
        .await?;
    let next = next.map_or(Value::Null, |(ms, id)| json!(format!("{ms}:{id}")));
    Ok(json!({
        "testClocks": clocks.iter().map(TestClock::json).collect::<Vec<_>>(),
        "nextCursor": next,
    }))
}

/// advanceTestClock, deleteTestClock: a job on the clock every owner does (its reply kept).
pub(super) async fn test_clock_job(
    state: &AdminState,
    test_clock_id: &str,
    kind: JobKind,
    to: Option<Instant>,
    request: &RequestMeta,
) -> Result<Outcome, AdminError> {
    let reply = state
        .scheduler
        .test_clock_job(test_clock_id, kind, to, &request.id, &request.body_hash)
        .await?;
    Ok(Outcome::Kept(reply))
}

pub(super) fn clock_not_found(id: &str) -> AdminError {
    DomainError::NotFound(format!("test clock {id} not found")).into()
}

/// createTestClock: the clock, READY at `frozen` (CONFLICT when the id exists).
pub(super) async fn create_test_clock(
    state: &AdminState,
    id: String,
    frozen: Instant,
    name: Option<String>,
) -> Result<Outcome, AdminError> {
    let p = state.stores.keys().partition(&id);
    let token = state
        .ownership
        .token(p)
        .ok_or(StoreError::Fenced { partition: p })?;
    let clock = TestClock {
        id,
        name,
        frozen,
        created: state.clock.now(),
        job: None,
    };
    if !state
        .stores
        .test_clocks
        .create_test_clock(&token, &clock)
        .await?
    {
        return Err(
            DomainError::Conflict(format!("test clock {} already exists", clock.id)).into(),
        );
    }
    Ok(Outcome::Answer(clock.json()))
}

/// A customer belongs to the test clock of its first order (SPEC 11.5): an order on another
/// clock, or on none, is refused, and so is a test-clock order for a customer with live
/// orders (INVALID_STATE). A test-clock order binds its customer to the clock.
pub(super) async fn check_customer_clock(
    state: &AdminState,
    new: &NewOrder,
) -> Result<(), AdminError> {
    let customer = &new.customer_id;
    match &new.test_clock_id {
        None => match state.stores.test_clocks.customer_clock(customer).await? {
            None => Ok(()),
            Some(clock) => Err(DomainError::InvalidState(format!(
                "customer {customer} belongs to test clock {clock}: its orders live on that clock"
            ))
            .into()),
        },
        Some(clock) => {
            if state.stores.test_clocks.test_clock(clock).await?.is_none() {
                return Err(clock_not_found(clock));
            }
            match state.stores.test_clocks.bind_customer_clock(customer, clock).await? {
                None => Ok(()),
                Some(live) if live == "LIVE" => Err(DomainError::InvalidState(format!(
                    "customer {customer} has live orders: a test clock's customers have orders on that clock only"
                ))
                .into()),
                Some(other) => Err(DomainError::InvalidState(format!(
                    "customer {customer} belongs to test clock {other}"
                ))
                .into()),
            }
        }
    }
}

/// The test-clock commands' arguments (SPEC 11.5).
pub(super) fn parse_test_clock_command(req: &Request) -> Result<AdminCommand, AdminError> {
    let name = req.command.as_str();
    Ok(match name {
        "createTestClock" => {
            let a: CreateTestClockArgs = parse_args(&req.args)?;
            let test_clock_id = a
                .test_clock_id
                .unwrap_or_else(|| derived_id("recur-test-clock", &req.id));
            check_id("testClockId", &test_clock_id)?;
            let frozen =
                parse_instant(&a.frozen_time).map_err(|e| DomainError::invalid("frozenTime", e))?;
            if let Some(name) = &a.name {
                crate::domain::command::check_text("name", name, 200)?;
            }
            AdminCommand::CreateTestClock {
                test_clock_id,
                frozen,
                name: a.name,
            }
        }
        "getTestClock" | "deleteTestClock" => {
            let a: TestClockArgs = parse_args(&req.args)?;
            check_id("testClockId", &a.test_clock_id)?;
            let test_clock_id = a.test_clock_id;
            if name == "getTestClock" {
                AdminCommand::GetTestClock { test_clock_id }
            } else {
                AdminCommand::DeleteTestClock { test_clock_id }
            }
        }
        "advanceTestClock" => {
            let a: AdvanceTestClockArgs = parse_args(&req.args)?;
            check_id("testClockId", &a.test_clock_id)?;
            let to = parse_instant(&a.to).map_err(|e| DomainError::invalid("to", e))?;
            AdminCommand::AdvanceTestClock {
                test_clock_id: a.test_clock_id,
                to,
            }
        }
        "listTestClocks" => {
            let a: PageArgs = parse_args(&req.args)?;
            AdminCommand::ListTestClocks {
                limit: page_limit(a.limit)?,
                after: page_cursor(a.cursor.as_deref())?,
            }
        }
        other => return Err(AdminError::UnknownCommand(other.to_string())),
    })
}
