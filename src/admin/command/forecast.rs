//! forecast and forecastPartition (SPEC 11.6): the answering daemon computes its own
//! partitions, asks each other partition's owner for its part, and adds the parts up.

use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::test_clocks::clock_not_found;
use super::{Family, FORECAST_PARTITION};
use crate::actors::order::RequestMeta;
use crate::admin::reply::{AdminError, Outcome};
use crate::admin::AdminState;
use crate::domain::command::{check_id, parse_args};
use crate::domain::time::{format_instant, parse_instant, Instant};
use crate::domain::{DomainError, Order};
use crate::store::{Keys, StoreError};
use crate::wire::Request;

/// A forecast command, parsed and validated.
#[derive(Debug)]
pub enum ForecastCommand {
    /// forecast: the book's figures per month (UTC) and currency (of one test clock's orders,
    /// from its time, when `test_clock` names one).
    Forecast {
        from: Instant,
        to: Instant,
        currency: Option<String>,
        test_clock: Option<String>,
    },
    /// forecastPartition: one partition's part of a forecast, computed by its owner.
    ForecastPartition {
        partition: u16,
        query: ForecastQuery,
    },
}

/// What one forecast computes, the same for every partition (and every daemon computing some
/// of them): the orders as of `now`, counted from `start` (`from`, or now when later) to `to`.
#[derive(Debug, Clone)]
pub struct ForecastQuery {
    now: Instant,
    start: Instant,
    to: Instant,
    currency: Option<String>,
    test_clock: Option<String>,
}

impl Family for ForecastCommand {
    fn parse(name: &str, req: &Request) -> Option<Result<Self, AdminError>> {
        match name {
            "forecast" => Some(parse_forecast(&req.args)),
            FORECAST_PARTITION => Some(parse_forecast_partition(&req.args)),
            _ => None,
        }
    }

    /// forecast: partition 0's owner answers (and asks the others for their parts);
    /// forecastPartition: the partition's owner, partition 0's when it is out of range (which
    /// refuses it).
    fn routing_partition(&self, keys: &Keys) -> u16 {
        match self {
            ForecastCommand::Forecast { .. } => 0,
            ForecastCommand::ForecastPartition { partition, .. } => {
                if *partition < keys.partitions() {
                    *partition
                } else {
                    0
                }
            }
        }
    }

    /// A forecast waits, but not one of a test clock's orders (test clocks live beside the
    /// daemon's clock, SPEC 11.5). A forecastPartition does not: the forecast that asked for
    /// it waited (on its daemon); the part is a read from a `now` it was given, which an
    /// advance does not change (a walk from now is the same whether the timers up to now
    /// fired already or not).
    fn waits_for_advance(&self) -> bool {
        match self {
            ForecastCommand::Forecast { test_clock, .. } => test_clock.is_none(),
            ForecastCommand::ForecastPartition { .. } => false,
        }
    }

    async fn run(
        self,
        state: &AdminState,
        _request: RequestMeta,
        raw: &Request,
    ) -> Result<Outcome, AdminError> {
        match self {
            ForecastCommand::Forecast {
                from,
                to,
                currency,
                test_clock,
            } => Ok(Outcome::Answer(
                forecast(
                    state,
                    from,
                    to,
                    currency.as_deref(),
                    test_clock.as_deref(),
                    &raw.channel,
                )
                .await?,
            )),
            ForecastCommand::ForecastPartition { partition, query } => {
                forecast_partition(state, partition, &query).await
            }
        }
    }
}

/// forecastPartition: one partition's figures, refused when there is no such partition.
async fn forecast_partition(
    state: &AdminState,
    partition: u16,
    query: &ForecastQuery,
) -> Result<Outcome, AdminError> {
    use crate::domain::lifecycle::forecast::month_of;
    if partition >= state.stores.keys().partitions() {
        return Err(DomainError::invalid(
            "partition",
            format!("there are {} partitions", state.stores.keys().partitions()),
        )
        .into());
    }
    let part = forecast_partitions(state, &[partition], query).await?;
    Ok(Outcome::Answer(part.to_json(
        month_of(&query.start),
        month_of(&query.to),
        query.currency.as_deref(),
    )))
}

/// forecast's arguments.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ForecastArgs {
    from: String,
    to: String,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    test_clock_id: Option<String>,
}

/// forecastPartition's arguments (a daemon's own request, see [`FORECAST_PARTITION`]).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ForecastPartitionArgs {
    partition: u16,
    now: String,
    start: String,
    to: String,
    #[serde(default)]
    currency: Option<String>,
    #[serde(default)]
    test_clock_id: Option<String>,
}

/// How many orders a forecast reads and computes at a time.
const FORECAST_CHUNK: usize = 2_000;

/// How long the daemon answering a forecast waits for another daemon's part of it (the
/// request is published again every [`super::FORWARD_ATTEMPT`] meanwhile, so a new
/// owner answers it after a takeover) before computing that partition itself.
const FORECAST_PART_TOTAL: std::time::Duration = std::time::Duration::from_secs(300);

/// forecast: every order of every partition walked forward from now (each due paid), counted
/// per month. Each partition is computed by its owner (SPEC 11.6): this daemon computes its
/// own and asks the owners of the others for theirs (`forecastPartition` on
/// `<prefix>:forward`, all at once), and adds them up. A part that does not come (its owner
/// gone and nobody taking over in time, or a refusal) is computed here: a forecast only
/// reads, any daemon can.
async fn forecast(
    state: &AdminState,
    from: Instant,
    to: Instant,
    currency: Option<&str>,
    test_clock: Option<&str>,
    channel: &str,
) -> Result<Value, AdminError> {
    use crate::domain::lifecycle::forecast::month_of;
    // A test clock's orders are walked from the clock's time.
    let now = match test_clock {
        None => state.clock.now(),
        Some(c) => match state.stores.test_clocks.test_clock(c).await? {
            Some(tc) => tc.frozen,
            None => return Err(clock_not_found(c)),
        },
    };
    // As written to the owners (milliseconds), so that every part starts from the same now.
    let now = parse_instant(&format_instant(&now)).unwrap_or(now);
    let query = ForecastQuery {
        now,
        start: from.max(now),
        to,
        currency: currency.map(str::to_string),
        test_clock: test_clock.map(str::to_string),
    };
    let (mine, theirs): (Vec<u16>, Vec<u16>) =
        (0..state.stores.keys().partitions()).partition(|p| state.ownership.owns(*p));
    let asked = futures_util::future::join_all(
        theirs
            .iter()
            .map(|p| forecast_part_of_owner(state, *p, &query, channel)),
    );
    let (total, parts) = tokio::join!(forecast_partitions(state, &mine, &query), asked);
    let mut total = total?;
    let mut missing = Vec::new();
    for (p, part) in theirs.into_iter().zip(parts) {
        match part {
            Some(part) => total.merge(&part),
            None => missing.push(p),
        }
    }
    if !missing.is_empty() {
        total.merge(&forecast_partitions(state, &missing, &query).await?);
    }
    Ok(total.to_json(month_of(&from), month_of(&to), currency))
}

/// Partition `partition`'s part of a forecast, from its owner: None when it did not come (no
/// answer in [`FORECAST_PART_TOTAL`], a refusal, a reply that cannot be read), logged.
async fn forecast_part_of_owner(
    state: &AdminState,
    partition: u16,
    query: &ForecastQuery,
    channel: &str,
) -> Option<crate::domain::lifecycle::forecast::Forecast> {
    use crate::domain::lifecycle::forecast::Forecast;
    let forwarder = state.forwarder.get()?;
    let options = crate::admin::client::RequestOptions {
        id: Some(format!("forecast-{}-{partition}", Uuid::new_v4())),
        channel: channel.to_string(),
        attempt_timeout: super::FORWARD_ATTEMPT,
        total_timeout: FORECAST_PART_TOTAL,
    };
    let args = json!({
        "partition": partition,
        "now": format_instant(&query.now),
        "start": format_instant(&query.start),
        "to": format_instant(&query.to),
        "currency": query.currency,
        "testClockId": query.test_clock,
    });
    let why = match forwarder
        .request_with(options, FORECAST_PARTITION, args)
        .await
    {
        Ok(reply) if reply.ok => match reply.result.as_ref().and_then(Forecast::from_json) {
            Some(part) => return Some(part),
            None => "its reply cannot be read".to_string(),
        },
        Ok(reply) => format!(
            "refused: {}",
            reply.error.map_or_else(String::new, |e| e.message)
        ),
        Err(e) => e.to_string(),
    };
    tracing::warn!(partition, reason = %why, "no forecast part from the partition's owner; computing it here");
    None
}

/// The forecast of `partitions`' orders, computed here: their ids are read a chunk at a time
/// and each chunk's orders are parsed and walked on the blocking thread pool, as many chunks
/// at once as the daemon's forecast slots allow (one per core, and one being read), shared by
/// every forecast it computes; the daemon's own thread only reads and merges.
async fn forecast_partitions(
    state: &AdminState,
    partitions: &[u16],
    query: &ForecastQuery,
) -> Result<crate::domain::lifecycle::forecast::Forecast, AdminError> {
    use crate::domain::lifecycle::forecast::Forecast;
    use std::collections::VecDeque;
    type Part = (Forecast, Vec<(String, String)>);
    let policy = std::sync::Arc::new(state.actors.policy().clone());
    let shared = std::sync::Arc::new(query.clone());
    let mut running: VecDeque<tokio::task::JoinHandle<Part>> = VecDeque::new();
    let mut total = Forecast::default();
    let take = |total: &mut Forecast, part: Result<Part, tokio::task::JoinError>| {
        let (f, unreadable) =
            part.map_err(|e| StoreError::Corrupt(format!("forecast worker: {e}")))?;
        for (id, e) in unreadable {
            state.stores.orders.unreadable(&id, &e);
        }
        total.merge(&f);
        Ok::<_, AdminError>(())
    };
    for &p in partitions {
        let mut rank = 0;
        loop {
            let ids = state
                .stores
                .orders
                .partition_order_ids(p, query.test_clock.as_deref(), rank, FORECAST_CHUNK)
                .await?;
            rank += ids.len();
            let last = ids.len() < FORECAST_CHUNK;
            // A slot for the chunk, from its read to the end of its computing; while none is
            // free, the oldest chunk of this forecast is merged first.
            let slot = loop {
                match std::sync::Arc::clone(&state.forecast_slots).try_acquire_owned() {
                    Ok(slot) => break slot,
                    Err(_) => match running.pop_front() {
                        Some(oldest) => take(&mut total, oldest.await)?,
                        None => {
                            break std::sync::Arc::clone(&state.forecast_slots)
                                .acquire_owned()
                                .await
                                .map_err(|e| StoreError::Corrupt(format!("forecast slots: {e}")))?
                        }
                    },
                }
            };
            let rows = state.stores.orders.order_rows(&ids).await?;
            let (policy, query) = (
                std::sync::Arc::clone(&policy),
                std::sync::Arc::clone(&shared),
            );
            running.push_back(tokio::task::spawn_blocking(move || {
                let part = forecast_rows(&ids, rows, &query, &policy);
                drop(slot);
                part
            }));
            if last {
                break;
            }
        }
    }
    while let Some(next) = running.pop_front() {
        take(&mut total, next.await)?;
    }
    Ok(total)
}

/// One chunk's orders parsed and walked (on the blocking pool); the ids whose JSON cannot be
/// read, with why, are handed back to be logged and counted.
fn forecast_rows(
    ids: &[String],
    rows: Vec<Option<String>>,
    query: &ForecastQuery,
    policy: &crate::domain::lifecycle::Policy,
) -> (
    crate::domain::lifecycle::forecast::Forecast,
    Vec<(String, String)>,
) {
    use crate::domain::lifecycle::forecast::{add_owned_order, Forecast};
    let mut f = Forecast::default();
    let mut unreadable = Vec::new();
    if query.start > query.to {
        return (f, unreadable);
    }
    for (id, row) in ids.iter().zip(rows) {
        let Some(json) = row else { continue };
        let o: Order = match serde_json::from_str(&json) {
            Ok(o) => o,
            Err(e) => {
                unreadable.push((id.clone(), e.to_string()));
                continue;
            }
        };
        if query
            .currency
            .as_deref()
            .is_some_and(|c| c != o.currency.code())
        {
            continue;
        }
        let now = query.now.max(o.updated_date);
        add_owned_order(&mut f, o, now, query.start, query.to, policy);
    }
    (f, unreadable)
}

/// forecast's arguments: at most [`MAX_MONTHS`] calendar months, a known currency.
///
/// [`MAX_MONTHS`]: crate::domain::lifecycle::forecast::MAX_MONTHS
fn parse_forecast(args: &Value) -> Result<ForecastCommand, AdminError> {
    use crate::domain::lifecycle::forecast::{month_of, MAX_MONTHS};
    let a: ForecastArgs = parse_args(args)?;
    let from = parse_instant(&a.from).map_err(|e| DomainError::invalid("from", e))?;
    let to = parse_instant(&a.to).map_err(|e| DomainError::invalid("to", e))?;
    if to < from {
        return Err(DomainError::invalid("to", "must not be before from").into());
    }
    let months = month_of(&to) - month_of(&from) + 1;
    if usize::try_from(months).unwrap_or(usize::MAX) > MAX_MONTHS {
        return Err(DomainError::invalid(
            "to",
            format!("a forecast covers at most {MAX_MONTHS} months ({months} asked)"),
        )
        .into());
    }
    let currency = a
        .currency
        .map(|c| {
            crate::domain::money::Currency::parse(&c)
                .map(|_| c)
                .map_err(|e| DomainError::invalid("currency", e.to_string()))
        })
        .transpose()?;
    if let Some(c) = &a.test_clock_id {
        check_id("testClockId", c)?;
    }
    Ok(ForecastCommand::Forecast {
        from,
        to,
        currency,
        test_clock: a.test_clock_id,
    })
}

/// forecastPartition's arguments (a part of a forecast, forwarded to a partition's owner).
fn parse_forecast_partition(args: &Value) -> Result<ForecastCommand, AdminError> {
    let a: ForecastPartitionArgs = parse_args(args)?;
    let instant = |field: &'static str, text: &str| {
        parse_instant(text).map_err(|e| DomainError::invalid(field, e))
    };
    if let Some(c) = &a.test_clock_id {
        check_id("testClockId", c)?;
    }
    Ok(ForecastCommand::ForecastPartition {
        partition: a.partition,
        query: ForecastQuery {
            now: instant("now", &a.now)?,
            start: instant("start", &a.start)?,
            to: instant("to", &a.to)?,
            currency: a.currency,
            test_clock: a.test_clock_id,
        },
    })
}
