//! Connection secrets: what database clients (psql, drivers, GUIs) give the
//! gateway instead of a password, for people who sign in through an identity
//! provider. Random, shown once, kept only as a SCRAM verifier, working until
//! `connection_secret_ttl` or the end of the sign-in it was issued under,
//! whichever is first; one per person (a new one replaces the old); revoked
//! by the person (`DELETE /api/v1/connection-secret`) or an admin
//! (`DELETE /api/v1/connection-secret/{user}`). Sessions already connected
//! keep running, as with a changed password in PostgreSQL.

use crate::auth::Caller;
use crate::error::ApiError;
use crate::AppState;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};
use std::sync::Arc;
use store::people::{secret_key, ConnectionSecret};
use store::{AuditEvent, Kind};

pub async fn issue(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    let Some(person) = state.policy.person(&caller.user) else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "local_user",
            format!(
                "{} is a local account: connect with its password; connection secrets are for people \
                 who sign in through an identity provider",
                caller.user
            ),
        ));
    };
    let now = state.clock.now();
    let token = state
        .store
        .token(&caller.token_hash)
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown token; log in again"))?;
    let ttl = chrono::Duration::from_std(state.config.gateway.connection_secret_ttl)
        .unwrap_or(chrono::Duration::hours(8));
    let expires_at = (now + ttl).min(token.expires_at);
    let secret = format!("jgs_{}", super::random(24));
    let stored = ConnectionSecret {
        verifier: config::ScramVerifier::from_password(&secret).encoded(),
        token_hash: caller.token_hash.clone(),
        expires_at,
    };
    let ev = AuditEvent::new(
        now,
        Kind::AuthConnectionSecret,
        &caller.user,
        format!("user:{}", caller.user),
        json!({"expires_at": expires_at, "idp": super::signin::idp_detail(&person)}),
    );
    state
        .store
        .put_record(
            &secret_key(&caller.user),
            &serde_json::to_string(&stored).expect("serializable"),
            now,
            expires_at,
            vec![ev],
        )
        .await?;
    let (host, port) = gateway_address(&state);
    Ok(Json(json!({
        "user": caller.user,
        "secret": secret,
        "expires_at": expires_at,
        "host": host,
        "port": port,
        "databases": state.config.databases.iter().map(|d| &d.name).collect::<Vec<_>>(),
    })))
}

/// Where clients reach the wire listener: `listen`'s port, and its host
/// unless it listens on every address (then `public_url`'s host).
fn gateway_address(state: &AppState) -> (String, u16) {
    let listen = &state.config.gateway.listen;
    let (host, port) = listen.rsplit_once(':').unwrap_or((listen, "5432"));
    let port = port.parse().unwrap_or(5432);
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host == "0.0.0.0" || host == "::" || host.is_empty() {
        let public = state.config.gateway.public_url();
        let rest = public.split_once("://").map(|(_, r)| r).unwrap_or(&public);
        let authority = rest.split('/').next().unwrap_or(rest);
        let h = authority
            .rsplit_once(':')
            .map(|(h, _)| h)
            .unwrap_or(authority);
        return (h.to_string(), port);
    }
    (host.to_string(), port)
}

async fn take(state: &AppState, actor: &str, user: &str) -> Result<Json<Value>, ApiError> {
    let now = state.clock.now();
    let existed = state
        .store
        .take_record(&secret_key(user), now)
        .await?
        .is_some();
    if !existed {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{user} has no connection secret"),
        ));
    }
    let ev = AuditEvent::new(
        now,
        Kind::AuthConnectionSecretRevoked,
        actor,
        format!("user:{user}"),
        json!({}),
    );
    state.store.append_audit(vec![ev]).await?;
    let (host, port) = gateway_address(state);
    // Where the secret was used: clients drop their pgpass entry for it.
    Ok(Json(
        json!({"user": user, "revoked": true, "host": host, "port": port}),
    ))
}

pub async fn revoke(
    State(state): State<Arc<AppState>>,
    caller: Caller,
) -> Result<Json<Value>, ApiError> {
    take(&state, &caller.user, &caller.user).await
}

pub async fn revoke_for(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Path(user): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if caller.user != user && !state.is_admin(&caller.user) {
        return Err(ApiError::forbidden(
            "only admins revoke other people's connection secrets",
        ));
    }
    take(&state, &caller.user, &user).await
}
