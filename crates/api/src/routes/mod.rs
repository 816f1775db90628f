//! Routes. One file per resource; this one has the router, login, the caller's
//! effective policy, health and metrics.

mod audit;
mod grants;
mod requests;

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use store::Kind;
use store::{AuditEvent, GrantFilter, RequestFilter};

type S = State<Arc<AppState>>;

/// An optional JSON body: empty means the defaults; anything else must parse.
fn optional_json<T: serde::de::DeserializeOwned + Default>(
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            "request body is larger than 64 KiB",
        ),
        _ => ApiError::bad_request(e.body_text()),
    })?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("malformed JSON body: {e}")))
}

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route(
            "/api/v1/openapi.json",
            get(|| async { Json(crate::openapi::document()) }),
        )
        .route("/api/v1/login", post(login))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/me", get(me))
        .route("/api/v1/requests", get(requests::list).post(requests::file))
        .route("/api/v1/requests/{id}", get(requests::get))
        .route("/api/v1/requests/{id}/approve", post(requests::approve))
        .route("/api/v1/requests/{id}/deny", post(requests::deny))
        .route("/api/v1/requests/{id}/cancel", post(requests::cancel))
        .route("/api/v1/grants", get(grants::list))
        .route("/api/v1/grants/{id}", get(grants::get))
        .route("/api/v1/grants/{id}/revoke", post(grants::revoke))
        .route("/api/v1/grants/{id}/relinquish", post(grants::relinquish))
        .route("/api/v1/audit", get(audit::list))
        .route("/api/v1/audit/verify", get(audit::verify))
        .route("/api/v1/audit/export", get(audit::export))
        .fallback(|| async {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such endpoint; see /api/v1/openapi.json",
            )
        })
}

/// 200 only when this replica should get traffic: the store answers (a
/// gateway that cannot record decisions is not healthy) and it is not
/// draining. Says which replica answered and whether it is the enforcer.
async fn healthz(State(state): S) -> (StatusCode, Json<Value>) {
    let store_ok = state.store.token("healthz").await.is_ok();
    let cluster = state.cluster();
    let status = if state.draining.is_cancelled() {
        "draining"
    } else if !store_ok {
        "store_unreachable"
    } else {
        "ok"
    };
    let code = if status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({
            "status": status,
            "replica": cluster.name(),
            "enforcer": cluster.is_leader(),
            "store": if store_ok { "reachable" } else { "unreachable" },
        })),
    )
}

async fn metrics(State(state): S) -> Result<impl IntoResponse, ApiError> {
    let all = state.store.requests(&RequestFilter::default()).await?;
    let counts: Vec<(&str, usize)> = ["pending", "approved", "denied", "expired", "cancelled"]
        .into_iter()
        .map(|st| (st, all.iter().filter(|r| r.state.as_str() == st).count()))
        .collect();
    let now = state.clock.now();
    let grants = state
        .store
        .grants(&GrantFilter {
            user: None,
            active_only: true,
        })
        .await?
        .iter()
        .filter(|g| g.is_active(now))
        .count();
    Ok((
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(&state.cluster(), &counts, grants),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Login {
    user: String,
    password: String,
}

async fn login(
    State(state): S,
    body: Result<Json<Login>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(login) = body?;
    let (token, expires_at) =
        crate::actions::password_login(&state, &login.user, &login.password).await?;
    Ok(Json(
        json!({"token": token, "user": login.user, "expires_at": expires_at}),
    ))
}

async fn logout(State(state): S, caller: Caller) -> Result<StatusCode, ApiError> {
    let now = state.clock.now();
    let ev = AuditEvent::new(
        now,
        Kind::AuthLogout,
        &caller.user,
        format!("user:{}", caller.user),
        json!({}),
    );
    state
        .store
        .revoke_token(&caller.token_hash, vec![ev])
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// What the caller may request and what they may approve.
async fn me(State(state): S, caller: Caller) -> Json<Value> {
    let p = &state.policy;
    let may_request: Vec<Value> = p
        .roles()
        .filter(|r| p.may_request(&caller.user, r))
        .map(|r| {
            json!({"role": r.name, "database": r.database, "default_duration_secs": r.default_duration.num_seconds(),
                   "max_duration_secs": r.max_duration.num_seconds(), "reason_required": r.reason_required})
        })
        .collect();
    let may_approve: Vec<Value> = p
        .roles()
        .filter_map(|r| {
            let stages: Vec<Value> = r
                .chain
                .iter()
                .enumerate()
                .filter_map(|(i, s)| {
                    let direct = p.in_any(&caller.user, &s.approvers);
                    let escalated = p.in_any(&caller.user, &s.escalate_to);
                    (direct || escalated)
                        .then(|| json!({"stage": i, "when_escalated_only": !direct}))
                })
                .collect();
            (!stages.is_empty())
                .then(|| json!({"role": r.name, "database": r.database, "stages": stages}))
        })
        .collect();
    Json(json!({
        "user": caller.user,
        "admin": state.is_admin(&caller.user),
        "auditor": state.is_auditor(&caller.user),
        "may_request": may_request,
        "may_approve": may_approve,
    }))
}
