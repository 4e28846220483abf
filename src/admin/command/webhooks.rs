//! The webhook commands (SPEC 11.2): the endpoints with their health, dead letters retried.

use serde::Deserialize;
use serde_json::{json, Value};

use super::{args_schema_of, ArgsSchema, Family};
use crate::actors::order::RequestMeta;
use crate::admin::reply::{AdminError, Outcome};
use crate::admin::AdminState;
use crate::domain::command::parse_args;
use crate::domain::DomainError;
use crate::store::StoreError;
use crate::wire::Request;

/// A webhook command, parsed and validated.
#[derive(Debug)]
pub enum WebhookCommand {
    /// Every configured webhook endpoint with what waits and what is dead-lettered.
    GetWebhookEndpoints,
    /// Deliver the dead-lettered webhooks of one endpoint (or of every one) again.
    RetryDeadWebhooks { endpoint: Option<String> },
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct RetryDeadArgs {
    #[serde(default)]
    endpoint: Option<String>,
}

/// A command without arguments (`{}`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

impl WebhookCommand {
    fn parse_named(name: &str, req: &Request) -> Result<Option<Self>, AdminError> {
        Ok(Some(match name {
            "getWebhookEndpoints" => {
                let _: NoArgs = parse_args(&req.args)?;
                WebhookCommand::GetWebhookEndpoints
            }
            "retryDeadWebhooks" => {
                let a: RetryDeadArgs = parse_args(&req.args)?;
                WebhookCommand::RetryDeadWebhooks {
                    endpoint: a.endpoint,
                }
            }
            _ => return Ok(None),
        }))
    }
}

impl Family for WebhookCommand {
    fn parse(name: &str, req: &Request) -> Option<Result<Self, AdminError>> {
        Self::parse_named(name, req).transpose()
    }

    /// Both wait, like every command that is not a read firing nothing (see
    /// [`super::AdminCommand::waits_for_advance`]).
    fn waits_for_advance(&self) -> bool {
        true
    }

    async fn run(
        self,
        state: &AdminState,
        _request: RequestMeta,
        _raw: &Request,
    ) -> Result<Outcome, AdminError> {
        match self {
            WebhookCommand::GetWebhookEndpoints => {
                Ok(Outcome::Answer(webhook_endpoints(state).await?))
            }
            WebhookCommand::RetryDeadWebhooks { endpoint } => {
                retry_dead_webhooks(state, endpoint.as_deref()).await
            }
        }
    }

    fn args_schema(name: &str) -> Option<ArgsSchema> {
        match name {
            "retryDeadWebhooks" => Some(args_schema_of::<RetryDeadArgs>()),
            _ => None,
        }
    }
}

/// getWebhookEndpoints: per configured endpoint, the change entries its cursors have not passed
/// yet (`pending`, over every partition), the events waiting for a retry (`retrying`) and the
/// dead letters (`dead`).
async fn webhook_endpoints(state: &AdminState) -> Result<Value, AdminError> {
    let ids: Vec<&str> = state
        .config
        .webhook_endpoints
        .iter()
        .map(String::as_str)
        .collect();
    let dead = state.stores.webhooks.count_dead(&ids).await?;
    let mut ends = Vec::new();
    for p in 0..state.stores.keys().partitions() {
        ends.push(state.stores.webhooks.stream_end(p).await?.added);
    }
    let mut out = Vec::new();
    for id in ids {
        let (mut pending, mut retrying) = (0u64, 0usize);
        for (p, added) in ends.iter().enumerate() {
            let partition = u16::try_from(p).unwrap_or(u16::MAX);
            let progress = state
                .stores
                .webhooks
                .webhook_progress(partition, id)
                .await?;
            let passed = progress.cursor.as_ref().map_or(*added, |(_, n)| *n);
            pending += added.saturating_sub(passed);
            retrying += progress.retrying.len();
        }
        out.push(json!({
            "id": id,
            "pending": pending,
            "retrying": retrying,
            "dead": dead.get(id).copied().unwrap_or(0),
        }));
    }
    Ok(json!({ "endpoints": out }))
}

/// retryDeadWebhooks: counts the dead letters to deliver again and records the request in
/// partition 0; every owner queues its partitions' dead letters when it sees it (SPEC 10).
async fn retry_dead_webhooks(
    state: &AdminState,
    endpoint: Option<&str>,
) -> Result<Outcome, AdminError> {
    let configured = &state.config.webhook_endpoints;
    let endpoints: Vec<&str> = match endpoint {
        Some(e) if configured.iter().any(|c| c == e) => vec![e],
        Some(e) => {
            return Err(
                DomainError::NotFound(format!("no webhook endpoint '{e}' is configured")).into(),
            )
        }
        None => configured.iter().map(String::as_str).collect(),
    };
    let counts = state.stores.webhooks.count_dead(&endpoints).await?;
    let total: u64 = counts.values().sum();
    if total > 0 {
        let token = state
            .ownership
            .token(0)
            .ok_or(StoreError::Fenced { partition: 0 })?;
        state
            .stores
            .webhooks
            .add_redeliver_request(&token, &endpoints)
            .await?;
    }
    Ok(Outcome::Answer(
        json!({"requeued": total, "endpoints": counts}),
    ))
}
