//! Domain errors and the admin error code each one maps to (the one place that mapping lives).

use serde::{Deserialize, Serialize};

/// The error codes of the admin protocol (SPEC section 4, 7 and 11).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    InvalidRequest,
    UnknownCommand,
    NotFound,
    InvalidState,
    ForbiddenStatusChange,
    Conflict,
    ClockNotSimulated,
    Unavailable,
    Internal,
    /// No credentials, or unknown ones (the HTTP API's bearer token, SPEC 11.3).
    Unauthenticated,
    /// The caller may not run this command: a token's scope, a channel's allow-list
    /// (`[admin.commands]`), or a body naming another channel than its own (SPEC 11.3, 11.4).
    Forbidden,
}

impl ErrorCode {
    /// The wire spelling (`INVALID_REQUEST`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::InvalidRequest => "INVALID_REQUEST",
            ErrorCode::UnknownCommand => "UNKNOWN_COMMAND",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::InvalidState => "INVALID_STATE",
            ErrorCode::ForbiddenStatusChange => "FORBIDDEN_STATUS_CHANGE",
            ErrorCode::Conflict => "CONFLICT",
            ErrorCode::ClockNotSimulated => "CLOCK_NOT_SIMULATED",
            ErrorCode::Unavailable => "UNAVAILABLE",
            ErrorCode::Internal => "INTERNAL",
            ErrorCode::Unauthenticated => "UNAUTHENTICATED",
            ErrorCode::Forbidden => "FORBIDDEN",
        }
    }

    /// Replies with these codes are transient and never kept for idempotency.
    pub fn is_transient(self) -> bool {
        matches!(self, ErrorCode::Unavailable | ErrorCode::Internal)
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why the domain refused an operation. A refusal never changes the order.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// An argument is missing, malformed or out of range; `field` names it (`prices[1].amount`).
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    /// The order's current state forbids the operation.
    #[error("{0}")]
    InvalidState(String),
    /// Something the request names does not exist (an order, a payment on it).
    #[error("{0}")]
    NotFound(String),
    /// The request contradicts an earlier one (a payment id reused with another amount, ...).
    #[error("{0}")]
    Conflict(String),
    /// The calling channel may not make this status change (updateOrder's status manager).
    #[error("{0}")]
    ForbiddenStatusChange(String),
}

impl DomainError {
    /// Shorthand for an [`DomainError::InvalidArgument`].
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        DomainError::InvalidArgument {
            field: field.into(),
            message: message.into(),
        }
    }

    /// Shorthand for an [`DomainError::InvalidState`].
    pub fn state(message: impl Into<String>) -> Self {
        DomainError::InvalidState(message.into())
    }

    /// The admin protocol code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            DomainError::InvalidArgument { .. } => ErrorCode::InvalidRequest,
            DomainError::InvalidState(_) => ErrorCode::InvalidState,
            DomainError::NotFound(_) => ErrorCode::NotFound,
            DomainError::Conflict(_) => ErrorCode::Conflict,
            DomainError::ForbiddenStatusChange(_) => ErrorCode::ForbiddenStatusChange,
        }
    }
}
