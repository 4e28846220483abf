//! The test clock commands (SPEC 11.5): create, get, list, advance, delete, and binding a
//! customer's orders to a clock.

use serde::Deserialize;
use serde_json::{json, Value};

use super::args::{derived_id, page_cursor, page_limit};
use super::Family;
use crate::actors::order::RequestMeta;
use crate::admin::reply::{AdminError, Outcome};
use crate::admin::AdminState;
use crate::domain::command::{check_id, parse_args, NewOrder};
use crate::domain::time::{parse_instant, Instant};
use crate::domain::DomainError;
use crate::store::test_clock::{JobKind, TestClock};
use crate::store::{Keys, StoreError};
use crate::wire::Request;

/// A test clock command, parsed and validated.
#[derive(Debug)]
pub enum TestClockCommand {
    /// createTestClock (SPEC 11.5); the id is the client's or derived from the request id.
    CreateTestClock {
        test_clock_id: String,
        frozen: Instant,
        name: Option<String>,
    },
    GetTestClock {
        test_clock_id: String,
    },
    ListTestClocks {
        limit: usize,
        after: Option<(i64, String)>,
    },
    AdvanceTestClock {
        test_clock_id: String,
        to: Instant,
    },
    DeleteTestClock {
        test_clock_id: String,
    },
}

impl Family for TestClockCommand {
    fn parse(name: &str, req: &Request) -> Option<Result<Self, AdminError>> {
        parse_test_clock_command(name, req).transpose()
    }

    /// The clock's partition; listTestClocks partition 0.
    fn routing_partition(&self, keys: &Keys) -> u16 {
        match self {
            TestClockCommand::CreateTestClock { test_clock_id, .. }
            | TestClockCommand::GetTestClock { test_clock_id }
            | TestClockCommand::AdvanceTestClock { test_clock_id, .. }
            | TestClockCommand::DeleteTestClock { test_clock_id } => keys.partition(test_clock_id),
            TestClockCommand::ListTestClocks { .. } => 0,
        }
    }

    /// Test clocks live beside the daemon's clock (SPEC 11.5): their commands never wait for
    /// its advance.
    fn waits_for_advance(&self) -> bool {
        false
    }

    async fn run(
        self,
        state: &AdminState,
        request: RequestMeta,
        _raw: &Request,
    ) -> Result<Outcome, AdminError> {
        match self {
            TestClockCommand::CreateTestClock {
                test_clock_id,
                frozen,
                name,
            } => create_test_clock(state, test_clock_id, frozen, name).await,
            TestClockCommand::GetTestClock { test_clock_id } => {
                match state.stores.test_clocks.test_clock(&test_clock_id).await? {
                    Some(c) => Ok(Outcome::Answer(c.json())),
                    None => Err(clock_not_found(&test_clock_id)),
                }
            }
            TestClockCommand::ListTestClocks { limit, after } => Ok(Outcome::Answer(
                list_test_clocks(state, after, limit).await?,
            )),
            TestClockCommand::AdvanceTestClock { test_clock_id, to } => {
                test_clock_job(state, &test_clock_id, JobKind::Advance, Some(to), &request).await
            }
            TestClockCommand::DeleteTestClock { test_clock_id } => {
                test_clock_job(state, &test_clock_id, JobKind::Delete, None, &request).await
            }
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CreateTestClockArgs {
    #[serde(default)]
    test_clock_id: Option<String>,
    frozen_time: String,
    #[serde(default)]
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct TestClockArgs {
    test_clock_id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AdvanceTestClockArgs {
    test_clock_id: String,
    to: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct PageArgs {
    #[serde(default)]
    limit: Option<i64>,
    #[serde(default)]
    cursor: Option<String>,
}

/// listTestClocks: a page of clocks, oldest first, and the cursor of the next page.
async fn list_test_clocks(
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
async fn test_clock_job(
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
async fn create_test_clock(
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
/// None when `name` is not a test-clock command.
fn parse_test_clock_command(
    name: &str,
    req: &Request,
) -> Result<Option<TestClockCommand>, AdminError> {
    Ok(Some(match name {
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
            TestClockCommand::CreateTestClock {
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
                TestClockCommand::GetTestClock { test_clock_id }
            } else {
                TestClockCommand::DeleteTestClock { test_clock_id }
            }
        }
        "advanceTestClock" => {
            let a: AdvanceTestClockArgs = parse_args(&req.args)?;
            check_id("testClockId", &a.test_clock_id)?;
            let to = parse_instant(&a.to).map_err(|e| DomainError::invalid("to", e))?;
            TestClockCommand::AdvanceTestClock {
                test_clock_id: a.test_clock_id,
                to,
            }
        }
        "listTestClocks" => {
            let a: PageArgs = parse_args(&req.args)?;
            TestClockCommand::ListTestClocks {
                limit: page_limit(a.limit)?,
                after: page_cursor(a.cursor.as_deref())?,
            }
        }
        _ => return Ok(None),
    }))
}
