//! Log in with user and password for a bearer token. Tokens are 32 random
//! bytes shown once; the store keeps only their SHA-256. A wrong password and
//! an unknown user get the same answer after the same work.

use crate::error::ApiError;
use crate::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use config::ScramVerifier;
use sha2::{Digest, Sha256};
use std::sync::Arc;
use store::AuditEvent;
use store::Kind;

pub fn token_hash(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks a password; unknown users are checked against a decoy.
pub fn check_password(state: &AppState, user: &str, password: &str) -> bool {
    match state.config.user(user).and_then(|u| u.scram.as_ref()) {
        Some(v) => v.verify_password(password),
        None => {
            let decoy = ScramVerifier {
                iterations: 4096,
                salt: state.decoy_salt.to_vec(),
                stored_key: [0; 32],
                server_key: [0; 32],
            };
            let _ = decoy.verify_password(password);
            false
        }
    }
}

/// Issues a token for `user` (password already checked) and audits the login.
pub async fn issue(state: &AppState, user: &str) -> Result<(String, policy::Time), ApiError> {
    issue_with(state, user, crate::TOKEN_TTL, serde_json::json!({})).await
}

/// Issues a token living `ttl` and audits the
/// login with `detail` (plus `expires_at`).
pub async fn issue_with(
    state: &AppState,
    user: &str,
    ttl: chrono::Duration,
    detail: serde_json::Value,
) -> Result<(String, policy::Time), ApiError> {
    let token = format!("jg_{}", B64.encode(rand::random::<[u8; 32]>()));
    let now = state.clock.now();
    let expires_at = now + ttl;
    let events = vec![
        AuditEvent::new(now, Kind::AuthLogin, user, format!("user:{user}"), detail)
            .with_detail("expires_at", serde_json::json!(expires_at)),
    ];
    state
        .store
        .insert_token(&token_hash(&token), user, expires_at, events)
        .await?;
    Ok((token, expires_at))
}

/// For people from an identity provider: what it said at their latest
/// sign-in, which may have happened on another replica (groups taken away
/// there apply here at the next request).
pub async fn refresh_person(state: &AppState, user: &str) -> Result<(), store::StoreError> {
    if state.config.identity_providers.is_empty() || state.policy.is_configured(user) {
        return Ok(());
    }
    if let Some(person) = store::people::identity(&*state.store, user, state.clock.now()).await? {
        state.policy.vouch(user, person);
    }
    Ok(())
}

/// The authenticated caller of a request.
pub struct Caller {
    pub user: String,
    pub token_hash: String,
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Caller, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .ok_or_else(|| {
                ApiError::unauthorized("missing bearer token: log in with POST /api/v1/login")
            })?;
        let token = header
            .strip_prefix("Bearer ")
            .ok_or_else(|| ApiError::unauthorized("Authorization must be `Bearer <token>`"))?;
        let hash = token_hash(token.trim());
        let row = state.store.token(&hash).await?;
        if let Some(row) = &row {
            refresh_person(state, &row.user).await?;
        }
        match row {
            Some(row)
                if !row.revoked
                    && row.expires_at > state.clock.now()
                    && state.policy.is_user(&row.user) =>
            {
                Ok(Caller {
                    user: row.user,
                    token_hash: hash,
                })
            }
            Some(row) if row.revoked => {
                Err(ApiError::unauthorized("token was revoked; log in again"))
            }
            Some(_) => Err(ApiError::unauthorized("token has expired; log in again")),
            None => Err(ApiError::unauthorized("unknown token; log in again")),
        }
    }
}

/// Failed logins per user name: after [`LOGIN_LIMIT`] failures in a minute the
/// name is throttled until that minute has passed; a success clears it.
pub type LoginAttempts = policy::throttle::Attempts;

pub const LOGIN_LIMIT: u32 = 10;

pub fn login_attempts() -> LoginAttempts {
    LoginAttempts::new(LOGIN_LIMIT, chrono::Duration::minutes(1))
}
