//! The audit log: list with filters, verify the chain, export JSON lines.
//! Readable by the `auditors` and `admins` groups only.

use super::S;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use store::AuditFilter;

fn require_auditor(state: &AppState, caller: &Caller) -> Result<(), ApiError> {
    if state.is_auditor(&caller.user) {
        Ok(())
    } else {
        Err(ApiError::forbidden(
            "the audit log is readable by the auditors and admins groups",
        ))
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    actor: Option<String>,
    /// Kind prefix, e.g. `request.` or `grant.revoked`.
    kind: Option<String>,
    /// RFC 3339 time.
    since: Option<String>,
    limit: Option<i64>,
}

pub(super) async fn list(
    State(state): S,
    caller: Caller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    require_auditor(&state, &caller)?;
    let Query(q) = q?;
    let since = q
        .since
        .map(|s| {
            chrono::DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&chrono::Utc))
                .map_err(|e| ApiError::bad_request(format!("since: {e}")))
        })
        .transpose()?;
    if q.limit.is_some_and(|l| !(1..=10_000).contains(&l)) {
        return Err(ApiError::bad_request("limit must be between 1 and 10000"));
    }
    let events = state
        .store
        .audit(&AuditFilter {
            actor: q.actor,
            kind_prefix: q.kind,
            since,
            limit: q.limit,
        })
        .await?;
    Ok(Json(json!({"events": events})))
}

pub(super) async fn verify(State(state): S, caller: Caller) -> Result<Json<Value>, ApiError> {
    require_auditor(&state, &caller)?;
    let v = store::audit::verify(&state.store.audit_all().await?);
    Ok(Json(json!(v)))
}

pub(super) async fn export(State(state): S, caller: Caller) -> Result<impl IntoResponse, ApiError> {
    require_auditor(&state, &caller)?;
    let mut out = String::new();
    for r in state.store.audit_all().await? {
        out.push_str(&serde_json::to_string(&r).map_err(|e| ApiError::bad_request(e.to_string()))?);
        out.push('\n');
    }
    Ok((
        [(axum::http::header::CONTENT_TYPE, "application/x-ndjson")],
        out,
    ))
}
