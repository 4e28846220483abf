//! The daemon's own commands: ping, getClock, getMetrics (this daemon's figures, or a named
//! daemon's) and advanceClock (the simulated clock, SPEC 10).

use serde::Deserialize;
use serde_json::{json, Value};

use super::{args_schema_of, ArgsSchema, Family};
use crate::actors::order::RequestMeta;
use crate::admin::reply::{AdminError, Outcome};
use crate::admin::AdminState;
use crate::domain::command::{check_id, parse_args};
use crate::domain::time::{format_instant, parse_instant, Instant};
use crate::domain::DomainError;
use crate::wire::Request;

/// A daemon command, parsed and validated.
#[derive(Debug)]
pub enum DaemonCommand {
    Ping,
    GetClock,
    /// The answering daemon's figures; `daemon_id` asks a given daemon (SPEC 10).
    GetMetrics {
        daemon_id: Option<String>,
    },
    AdvanceClock {
        to: Instant,
    },
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MetricsArgs {
    #[serde(default)]
    daemon_id: Option<String>,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct AdvanceArgs {
    to: String,
}

impl DaemonCommand {
    fn parse_named(name: &str, req: &Request) -> Result<Option<Self>, AdminError> {
        Ok(Some(match name {
            "ping" => DaemonCommand::Ping,
            "getClock" => DaemonCommand::GetClock,
            "getMetrics" => {
                let a: MetricsArgs = parse_args(&req.args)?;
                if let Some(id) = &a.daemon_id {
                    check_id("daemonId", id)?;
                }
                DaemonCommand::GetMetrics {
                    daemon_id: a.daemon_id,
                }
            }
            "advanceClock" => {
                let a: AdvanceArgs = parse_args(&req.args)?;
                let to = parse_instant(&a.to).map_err(|e| DomainError::invalid("to", e))?;
                DaemonCommand::AdvanceClock { to }
            }
            _ => return Ok(None),
        }))
    }
}

impl Family for DaemonCommand {
    fn parse(name: &str, req: &Request) -> Option<Result<Self, AdminError>> {
        Self::parse_named(name, req).transpose()
    }

    /// getMetrics with `daemonId`: that daemon answers it.
    fn addressed_daemon(&self) -> Option<&str> {
        match self {
            DaemonCommand::GetMetrics { daemon_id } => daemon_id.as_deref(),
            _ => None,
        }
    }

    /// ping and getMetrics report this daemon only: answered even while no replica confirms,
    /// so an operator can still look.
    fn reports_data(&self) -> bool {
        !matches!(self, DaemonCommand::Ping | DaemonCommand::GetMetrics { .. })
    }

    /// None waits: advanceClock is the advance (its completion is what the clock follower,
    /// which holds commands back, works towards), and ping, getClock and getMetrics are reads
    /// that fire nothing, answered during an advance with what is committed so far.
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
            DaemonCommand::Ping => {
                let mut v = json!({"now": format_instant(&state.clock.now())});
                v["pong"] = json!(true);
                Ok(Outcome::Answer(v))
            }
            DaemonCommand::GetClock => Ok(Outcome::Answer(get_clock(state).await?)),
            DaemonCommand::GetMetrics { .. } => Ok(Outcome::Answer(get_metrics(state).await?)),
            DaemonCommand::AdvanceClock { to } => {
                // Kept by partition 0's owner when the advance completed.
                let reply = state
                    .scheduler
                    .advance(to, &request.id, &request.body_hash)
                    .await?;
                Ok(Outcome::Found(reply))
            }
        }
    }

    fn args_schema(name: &str) -> Option<ArgsSchema> {
        Some(match name {
            "ping" | "getClock" => {
                let empty = utoipa::openapi::ObjectBuilder::new()
                    .additional_properties(Some(
                        utoipa::openapi::schema::AdditionalProperties::FreeForm(false),
                    ))
                    .build();
                (empty.into(), Vec::new())
            }
            "getMetrics" => args_schema_of::<MetricsArgs>(),
            "advanceClock" => args_schema_of::<AdvanceArgs>(),
            _ => return None,
        })
    }
}

/// getClock: now, and during an advance its target and how far this daemon's lanes have got.
async fn get_clock(state: &AdminState) -> Result<Value, AdminError> {
    let mut reply = json!({"now": format_instant(&state.clock.now())});
    if let Some(advance) = state.stores.clock.clock_state().await?.advance {
        reply["advance"] = json!({
            "to": format_instant(&advance.target),
            "requestId": advance.request_id,
            "reached": format_instant(&state.clock.now()),
            "transitions": state.health.metrics().transitions_total(),
        });
    }
    Ok(reply)
}

/// getMetrics: the same registry /metrics renders (SPEC 10's JSON shape), with the gauges
/// read off Redis refreshed first.
async fn get_metrics(state: &AdminState) -> Result<Value, AdminError> {
    state.health.refresh().await;
    let ownership = &state.ownership;
    let ttl = u64::try_from(ownership.config().lease_ttl.as_millis()).unwrap_or(u64::MAX);
    let live = state.stores.leases.live_daemons(ttl).await?;
    Ok(json!({
        "daemonId": ownership.daemon_id(),
        "metrics": state.health.metrics().json(),
        "partitionsOwned": ownership.owned().len(),
        "partitions": ownership.partitions(),
        "liveDaemons": live.into_iter().map(|(id, _)| id).collect::<Vec<_>>(),
        "registryResident": state.actors.resident_orders(),
    }))
}
