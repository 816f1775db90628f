//! Requests: file, list, get, approve, deny, cancel.

use super::optional_json;
use super::S;
use crate::actions;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Json;
use policy::{Request, RequestState};
use serde::Deserialize;
use serde_json::{json, Value};
use store::service;
use store::RequestFilter;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct FileBody {
    role: String,
    database: String,
    #[serde(default)]
    reason: String,
    /// Like "30m" or "1h"; the role's default when absent.
    duration: Option<String>,
    statement: Option<String>,
}

pub(super) async fn file(
    State(state): S,
    caller: Caller,
    body: Result<Json<FileBody>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(b) = body?;
    let duration = b
        .duration
        .as_deref()
        .map(|d| {
            config::parse_duration(d)
                .map_err(ApiError::bad_request)
                .and_then(|d| {
                    chrono::Duration::from_std(d).map_err(|e| ApiError::bad_request(e.to_string()))
                })
        })
        .transpose()?;
    let now = state.clock.now();
    let (request, new) = service::file(
        &*state.store,
        &state.policy,
        &caller.user,
        &b.role,
        &b.database,
        &b.reason,
        duration,
        b.statement,
        now,
    )
    .await?;
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({"request": request, "new": new}))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListQuery {
    state: Option<String>,
    /// Only the caller's own requests.
    #[serde(default)]
    mine: bool,
}

pub(super) async fn list(
    State(state): S,
    caller: Caller,
    q: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q?;
    if let Some(s) = &q.state {
        RequestState::parse(s)
            .ok_or_else(|| ApiError::bad_request(format!("unknown state `{s}`")))?;
    }
    let filter = RequestFilter {
        user: q.mine.then(|| caller.user.clone()),
        state: q.state,
    };
    let requests: Vec<Request> = state
        .store
        .requests(&filter)
        .await?
        .into_iter()
        .filter(|r| actions::request_visible(&state, &caller.user, r))
        .collect();
    Ok(Json(json!({"requests": requests})))
}

pub(super) async fn get(
    State(state): S,
    caller: Caller,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id?;
    let r = actions::load_request(&state, &caller.user, id).await?;
    Ok(Json(json!({"request": r})))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Comment {
    #[serde(default)]
    comment: String,
}

async fn decide(
    state: &AppState,
    caller: &Caller,
    id: i64,
    approve: bool,
    comment: String,
) -> Result<Json<Value>, ApiError> {
    let (r, grant) = actions::decide(state, &caller.user, id, approve, &comment).await?;
    Ok(Json(json!({"request": r, "grant": grant})))
}

pub(super) async fn approve(
    State(state): S,
    caller: Caller,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id?;
    let c: Comment = optional_json(body)?;
    decide(&state, &caller, id, true, c.comment).await
}

pub(super) async fn deny(
    State(state): S,
    caller: Caller,
    id: Result<Path<i64>, PathRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id?;
    let c: Comment = optional_json(body)?;
    decide(&state, &caller, id, false, c.comment).await
}

pub(super) async fn cancel(
    State(state): S,
    caller: Caller,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(id) = id?;
    let r = actions::cancel(&state, &caller.user, id).await?;
    Ok(Json(json!({"request": r})))
}
