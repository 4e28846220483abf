//! How the outcome of an admin command, or why it was not done, becomes a reply: the
//! [`AdminError`] variants and [`reply_of`], the one place error codes are chosen.

use serde_json::Value;

use crate::actors::ActorError;
use crate::clock::ClockError;
use crate::domain::basket::{Stage, StagedError};
use crate::domain::time::format_instant;
use crate::domain::{DomainError, ErrorCode};
use crate::scheduler::SchedulerError;
use crate::store::StoreError;
use crate::wire::Reply;

/// Why a command was not done. [`reply_of`] turns each into its admin error code.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Bad input or a refused change: the domain error says the code.
    #[error(transparent)]
    Refused(#[from] DomainError),
    /// updateOrder refused before its order's actor: the code and the stage.
    #[error("{}", .0.error)]
    Staged(StagedError),
    #[error("unknown command '{0}'")]
    UnknownCommand(String),
    /// Redis or an actor failed (INTERNAL, retried by the client); updateOrder names the stage.
    #[error("{source}")]
    Actor {
        #[source]
        source: ActorError,
        stage: Option<Stage>,
    },
    #[error("{source}")]
    Store {
        #[source]
        source: StoreError,
        stage: Option<Stage>,
    },
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    /// The request's channel may not run this command (`[admin.commands]`).
    #[error("{0}")]
    Forbidden(String),
}

impl From<ActorError> for AdminError {
    fn from(source: ActorError) -> Self {
        AdminError::Actor {
            source,
            stage: None,
        }
    }
}

impl From<StoreError> for AdminError {
    fn from(source: StoreError) -> Self {
        AdminError::Store {
            source,
            stage: None,
        }
    }
}

impl AdminError {
    /// The admin error code (SPEC section 4), derived here only.
    pub fn code(&self) -> ErrorCode {
        match self {
            AdminError::Refused(e) | AdminError::Scheduler(SchedulerError::Refused(e)) => e.code(),
            AdminError::Staged(e) => e.code(),
            AdminError::UnknownCommand(_) => ErrorCode::UnknownCommand,
            AdminError::Forbidden(_) => ErrorCode::Forbidden,
            AdminError::Scheduler(SchedulerError::Clock(ClockError::NotSimulated)) => {
                ErrorCode::ClockNotSimulated
            }
            AdminError::Scheduler(SchedulerError::Clock(ClockError::Backwards { .. })) => {
                ErrorCode::InvalidRequest
            }
            // Another daemon owns the partition now, or a takeover is under way: retry.
            AdminError::Actor {
                source: ActorError::NotOwner { .. },
                ..
            }
            | AdminError::Store {
                source: StoreError::Fenced { .. } | StoreError::Unconfirmed { .. },
                ..
            }
            | AdminError::Actor {
                source: ActorError::Store(StoreError::Unconfirmed { .. }),
                ..
            }
            | AdminError::Scheduler(
                SchedulerError::NotClockOwner
                | SchedulerError::AdvancePending { .. }
                | SchedulerError::Stopping { .. }
                | SchedulerError::Failed {
                    source: ActorError::NotOwner { .. },
                    ..
                },
            ) => ErrorCode::Unavailable,
            AdminError::Actor { .. } | AdminError::Store { .. } | AdminError::Scheduler(_) => {
                ErrorCode::Internal
            }
        }
    }

    fn stage(&self) -> Option<Stage> {
        match self {
            AdminError::Staged(e) => Some(e.stage),
            AdminError::Actor { stage, .. } | AdminError::Store { stage, .. } => *stage,
            _ => None,
        }
    }

    fn message(&self) -> String {
        match self {
            AdminError::Scheduler(SchedulerError::Clock(ClockError::NotSimulated)) => {
                "advanceClock needs the simulated clock (start recur with --clock simulated)"
                    .to_string()
            }
            AdminError::Scheduler(SchedulerError::Clock(ClockError::Backwards { now, to })) => {
                format!(
                    "to: {} is earlier than now ({})",
                    format_instant(to),
                    format_instant(now)
                )
            }
            other => other.to_string(),
        }
    }
}

/// What a command that was done answers.
pub enum Outcome {
    /// A reply an order's commit already kept in Redis (with the change it reports), confirmed
    /// by that commit's WAIT (`redis.wait_replicas`).
    Kept(Reply),
    /// A reply kept in Redis by other means and read back (advanceClock's, kept by whichever
    /// daemon completed the advance): confirmed before it is sent.
    Found(Reply),
    /// A result to reply with (and keep, as the server decides).
    Answer(Value),
    /// Handed to the daemon that owns the order (an updateOrder by cart name): it replies.
    Forwarded,
}

/// A reply, whether it is kept in Redis already, and whether an order commit's WAIT confirmed
/// it (`redis.wait_replicas`); no reply when the request was forwarded to the daemon that
/// answers it.
pub struct Routed {
    pub reply: Option<Reply>,
    pub kept: bool,
    pub confirmed: bool,
}

/// The one place where outcomes and errors become replies.
pub fn reply_of(request_id: &str, result: Result<Outcome, AdminError>) -> Routed {
    let id = Some(request_id.to_string());
    match result {
        Ok(Outcome::Kept(reply)) => Routed {
            reply: Some(reply),
            kept: true,
            confirmed: true,
        },
        Ok(Outcome::Found(reply)) => Routed {
            reply: Some(reply),
            kept: true,
            confirmed: false,
        },
        Ok(Outcome::Answer(v)) => Routed {
            reply: Some(Reply::ok(id, v)),
            kept: false,
            confirmed: false,
        },
        Ok(Outcome::Forwarded) => Routed {
            reply: None,
            kept: false,
            confirmed: false,
        },
        Err(e) => Routed {
            reply: Some(
                Reply::error(id, e.code(), e.message()).with_stage(e.stage().map(Stage::as_str)),
            ),
            kept: false,
            confirmed: false,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::time::parse_instant;
    use serde_json::json;

    #[test]
    fn errors_map_to_codes_in_one_place() {
        let clock = |e: ClockError| {
            reply_of("r", Err(SchedulerError::Clock(e).into()))
                .reply
                .unwrap()
        };
        let r = clock(ClockError::NotSimulated);
        assert_eq!(r.error.unwrap().code, ErrorCode::ClockNotSimulated);
        let t = parse_instant("2026-01-01T00:00:00Z").unwrap();
        let r = clock(ClockError::Backwards { now: t, to: t });
        assert_eq!(r.error.unwrap().code, ErrorCode::InvalidRequest);
        let r = reply_of("r", Err(ActorError::Contended.into()))
            .reply
            .unwrap();
        assert_eq!(r.error.unwrap().code, ErrorCode::Internal);
        // A partition lost to another daemon is UNAVAILABLE (retried), in a command or an
        // advance alike.
        let lost = || ActorError::NotOwner { partition: 3 };
        let r = reply_of("r", Err(lost().into())).reply.unwrap();
        assert_eq!(r.error.unwrap().code, ErrorCode::Unavailable);
        let failed = SchedulerError::Failed {
            failed: 2,
            source: lost(),
        };
        let r = reply_of("r", Err(failed.into())).reply.unwrap();
        assert_eq!(r.error.unwrap().code, ErrorCode::Unavailable);
        let ok = reply_of("r", Ok(Outcome::Answer(json!({"x": 1}))));
        assert!(ok.reply.unwrap().ok && !ok.kept);
    }
}
