//! Grants: list, get, revoke (approvers of the role, admins), relinquish (holder).

use super::optional_json;
use super::S;
use crate::actions;
use crate::auth::Caller;
use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use policy::Grant;
use serde::Deserialize;
use serde_json::{json, Value};
use store::GrantFilter;

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
        .filter(|g| {
            actions::grant_visible(&state, &caller.user, g) && (!q.active || g.is_active(now))
        })
        .collect();
    Ok(Json(json!({"grants": grants})))
}

pub(super) async fn get(
    State(state): S,
    caller: Caller,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id?;
    Ok(Json(
        json!({"grant": actions::load_grant(&state, &caller.user, id).await?}),
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
    let g = actions::revoke(&state, &caller.user, id, &reason).await?;
    Ok(Json(json!({"grant": g})))
}

pub(super) async fn relinquish(
    State(state): S,
    caller: Caller,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id?;
    let g = actions::relinquish(&state, &caller.user, id).await?;
    Ok(Json(json!({"grant": g})))
}
