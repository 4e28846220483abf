//! What more than one family reads its arguments with: the ids derived from a request id, and
//! the pages of a listing (limit and cursor).

use uuid::Uuid;

use super::{LIST_DEFAULT_LIMIT, LIST_MAX_LIMIT};
use crate::domain::DomainError;

/// An id derived from the request id under `kind` (a retry makes the same one).
pub(super) fn derived_id(kind: &str, request_id: &str) -> String {
    Uuid::new_v5(
        &Uuid::NAMESPACE_OID,
        format!("{kind}:{request_id}").as_bytes(),
    )
    .to_string()
}

/// A page size: default [`LIST_DEFAULT_LIMIT`], at most [`LIST_MAX_LIMIT`].
pub(super) fn page_limit(limit: Option<i64>) -> Result<usize, DomainError> {
    match limit {
        None => Ok(LIST_DEFAULT_LIMIT),
        Some(l) if (1..=LIST_MAX_LIMIT as i64).contains(&l) => Ok(l as usize),
        Some(_) => Err(DomainError::invalid(
            "limit",
            format!("must be between 1 and {LIST_MAX_LIMIT}"),
        )),
    }
}

/// A listing's cursor, `<ms>:<id>`.
pub(super) fn page_cursor(cursor: Option<&str>) -> Result<Option<(i64, String)>, DomainError> {
    cursor
        .map(|c| {
            c.split_once(':')
                .and_then(|(ms, id)| Some((ms.parse::<i64>().ok()?, id.to_string())))
                .filter(|(_, id)| !id.is_empty())
                .ok_or_else(|| DomainError::invalid("cursor", "is not a cursor from a listing"))
        })
        .transpose()
}
