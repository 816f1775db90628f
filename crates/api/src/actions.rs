//! What a person can do, written once for both faces of the API: the JSON
//! routes and the web UI call these, so authorization and auditing cannot
//! drift apart between them.

use crate::auth;
use crate::error::ApiError;
use crate::AppState;
use axum::http::StatusCode;
use policy::{Grant, GrantEnd, Request};
use serde_json::json;
use store::Kind;
use store::{service, AuditEvent};

/// Who may see a request: its requester, whoever can decide it now or did
/// decide it, and admins.
pub fn request_visible(state: &AppState, user: &str, r: &Request) -> bool {
    r.user == user
        || state.is_admin(user)
        || r.decisions.iter().any(|d| d.approver == user)
        || r.check_eligible(&state.policy, user, state.clock.now())
            .is_ok()
}

/// A request `user` may see; someone else's looks exactly like a missing one.
pub async fn load_request(state: &AppState, user: &str, id: i64) -> Result<Request, ApiError> {
    match state.store.request(id).await? {
        Some(v) if request_visible(state, user, &v.value) => Ok(v.value),
        _ => Err(ApiError::not_found("request", id)),
    }
}

/// One decision by `user`; refused decisions are audited too (deciding one's
/// own request is an alert).
pub async fn decide(
    state: &AppState,
    user: &str,
    id: i64,
    approve: bool,
    comment: &str,
) -> Result<(Request, Option<Grant>), ApiError> {
    load_request(state, user, id).await?;
    let now = state.clock.now();
    let result = service::decide(
        &*state.store,
        &state.policy,
        id,
        user,
        approve,
        comment,
        now,
    )
    .await;
    if let Err(service::ServiceError::Decision(e)) = &result {
        let mut ev = AuditEvent::new(
            now,
            Kind::DecisionRefused,
            user,
            format!("request:{id}"),
            json!({"approve": approve, "reason": e.to_string()}),
        );
        if *e == policy::DecisionError::OwnRequest {
            ev.severity = store::Severity::Alert;
        }
        state.store.append_audit(vec![ev]).await?;
    }
    let (r, grant) = result?;
    if let Some(decided) = r.decided_at {
        state
            .metrics
            .observe_decision((decided - r.created_at).num_milliseconds() as f64 / 1000.0);
    }
    Ok((r, grant))
}

pub async fn cancel(state: &AppState, user: &str, id: i64) -> Result<Request, ApiError> {
    load_request(state, user, id).await?;
    Ok(service::cancel(&*state.store, id, user, state.clock.now()).await?)
}

/// Approvers (any stage, escalation included) of a role.
pub fn approves_role(state: &AppState, user: &str, role: &str) -> bool {
    state.policy.role(role).is_some_and(|r| {
        r.chain.iter().any(|s| {
            state.policy.in_any(user, &s.approvers) || state.policy.in_any(user, &s.escalate_to)
        })
    })
}

pub fn grant_visible(state: &AppState, user: &str, g: &Grant) -> bool {
    g.user == user || state.is_admin(user) || approves_role(state, user, &g.role)
}

pub fn may_revoke(state: &AppState, user: &str, g: &Grant) -> bool {
    state.is_admin(user) || approves_role(state, user, &g.role)
}

pub async fn load_grant(state: &AppState, user: &str, id: i64) -> Result<Grant, ApiError> {
    match state.store.grant(id).await? {
        Some(v) if grant_visible(state, user, &v.value) => Ok(v.value),
        _ => Err(ApiError::not_found("grant", id)),
    }
}

pub async fn revoke(
    state: &AppState,
    user: &str,
    id: i64,
    reason: &str,
) -> Result<Grant, ApiError> {
    let g = load_grant(state, user, id).await?;
    if !may_revoke(state, user, &g) {
        return Err(ApiError::forbidden(
            "only approvers of this role and admins can revoke its grants; the holder can relinquish",
        ));
    }
    let now = state.clock.now();
    Ok(service::end_grant(&*state.store, id, GrantEnd::Revoked, user, reason, now).await?)
}

pub async fn relinquish(state: &AppState, user: &str, id: i64) -> Result<Grant, ApiError> {
    load_grant(state, user, id).await?;
    let now = state.clock.now();
    Ok(service::end_grant(&*state.store, id, GrantEnd::Relinquished, user, "", now).await?)
}

/// Checks a password (throttled per user name, failures audited as alerts)
/// and issues a token.
pub async fn password_login(
    state: &AppState,
    user: &str,
    password: &str,
) -> Result<(String, policy::Time), ApiError> {
    let now = state.clock.now();
    if !state.config.gateway.password_login {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "password_login_off",
            "password login is turned off on this gateway: sign in with your identity provider \
             (web UI, or `jitgate login --sso`)",
        ));
    }
    if state.login_attempts.throttled(user, now) {
        // Not even checked: guessing stops, and the audit log is not flooded.
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_attempts",
            "too many failed logins for this user; wait a minute",
        ));
    }
    if !auth::check_password(state, user, password) {
        let first_throttled = state.login_attempts.failed(user, now);
        let kind = if first_throttled {
            Kind::AuthThrottled
        } else {
            Kind::AuthFailed
        };
        let ev = AuditEvent::new(now, kind, user, format!("user:{user}"), json!({})).alert();
        state.store.append_audit(vec![ev]).await?;
        return Err(ApiError::unauthorized("wrong user name or password"));
    }
    state.login_attempts.succeeded(user);
    auth::issue(state, user).await
}
