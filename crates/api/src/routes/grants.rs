//! Grants: list, get, revoke (approvers of the role, admins), relinquish (holder).

use super::optional_json;
use super::S;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use policy::{Grant, GrantEnd};
use serde::Deserialize;
use serde_json::{json, Value};
use store::{service, GrantFilter};

/// Approvers (any stage, escalation included) of the grant's role.
fn approves_role(state: &AppState, user: &str, role: &str) -> bool {
    state.policy.role(role).is_some_and(|r| {
        r.chain.iter().any(|s| {
            state.policy.in_any(user, &s.approvers) || state.policy.in_any(user, &s.escalate_to)
        })
    })
}

fn visible(state: &AppState, user: &str, g: &Grant) -> bool {
    g.user == user || state.is_admin(user) || approves_role(state, user, &g.role)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    #[serde(default)]
    active: bool,
}

pub(super) async fn list(
    State(state): S,
    caller: Caller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q?;
    let now = state.clock.now();
    let grants: Vec<Grant> = state
        .store
        .grants(&GrantFilter {
            user: None,
            active_only: q.active,
        })
        .await?
        .into_iter()
        .filter(|g| visible(&state, &caller.user, g) && (!q.active || g.is_active(now)))
        .collect();
    Ok(Json(json!({"grants": grants})))
}

async fn load_visible(state: &AppState, user: &str, id: i64) -> Result<Grant, ApiError> {
    match state.store.grant(id).await? {
        Some(v) if visible(state, user, &v.value) => Ok(v.value),
        _ => Err(ApiError::not_found("grant", id)),
    }
}

pub(super) async fn get(
    State(state): S,
    caller: Caller,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id?;
    Ok(Json(
        json!({"grant": load_visible(&state, &caller.user, id).await?}),
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Reason {
    #[serde(default)]
    reason: String,
}

pub(super) async fn revoke(
    State(state): S,
    caller: Caller,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id?;
    let Reason { reason } = optional_json(body)?;
    let g = load_visible(&state, &caller.user, id).await?;
    if !(state.is_admin(&caller.user) || approves_role(&state, &caller.user, &g.role)) {
        return Err(ApiError::forbidden("only approvers of this role and admins can revoke its grants; the holder can relinquish"));
    }
    let g = service::end_grant(
        &*state.store,
        id,
        GrantEnd::Revoked,
        &caller.user,
        &reason,
        state.clock.now(),
    )
    .await?;
    Ok(Json(json!({"grant": g})))
}

pub(super) async fn relinquish(
    State(state): S,
    caller: Caller,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id?;
    load_visible(&state, &caller.user, id).await?;
    let g = service::end_grant(
        &*state.store,
        id,
        GrantEnd::Relinquished,
        &caller.user,
        "",
        state.clock.now(),
    )
    .await?;
    Ok(Json(json!({"grant": g})))
}
