//! The CLI's sign-in with the device authorization grant (RFC 8628), brokered
//! by the server: the client secret stays here, the CLI only shows the code.
//!
//! `POST /api/v1/login/oidc/{name}/device` asks the provider for a device
//! code and answers the user code and where to enter it, with a `handle`
//! (random; the record is keyed by its hash). The CLI then polls
//! `POST /api/v1/login/oidc/{name}/device/token {"handle"}`: each poll is
//! one token request to the provider (any replica can answer it); `pending`
//! until the person has approved, then the ID token is validated and a
//! jitgate token issued, once.

use super::provider::SsoError;
use super::{hashed, random, signin};
use crate::error::ApiError;
use crate::AppState;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::sync::Arc;

const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

#[derive(Serialize, Deserialize)]
struct Pending {
    provider: String,
    device_code: String,
    interval: u64,
}

fn provider<'a>(
    state: &'a AppState,
    name: &str,
) -> Result<&'a Arc<super::provider::Provider>, ApiError> {
    state.sso.get(name).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no identity provider named `{name}`"),
        )
    })
}

pub async fn start(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let p = provider(&state, &name)?;
    let m = p.metadata(false).await?;
    let Some(endpoint) = m
        .additional_metadata()
        .device_authorization_endpoint
        .clone()
    else {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "no_device_flow",
            format!(
                "{name} offers no device authorization; sign in through the browser (loopback)"
            ),
        ));
    };
    let scope = p.config.scopes.join(" ");
    let (status, body) = p
        .post_form(
            endpoint.url().as_str(),
            &[("client_id", &p.config.client_id), ("scope", &scope)],
        )
        .await?;
    let (Some(device_code), Some(user_code), Some(uri)) = (
        body["device_code"].as_str(),
        body["user_code"].as_str(),
        body["verification_uri"].as_str(),
    ) else {
        return Err(SsoError::Provider {
            provider: name,
            message: format!("device authorization answered {status}: {body}"),
        }
        .into());
    };
    let expires_in = body["expires_in"].as_i64().unwrap_or(600).clamp(30, 1800);
    let interval = body["interval"].as_u64().unwrap_or(5).clamp(1, 60);
    let handle = random(32);
    let pending = Pending {
        provider: name.clone(),
        device_code: device_code.to_string(),
        interval,
    };
    let now = state.clock.now();
    state
        .store
        .put_record(
            &hashed("sso-device", &handle),
            &serde_json::to_string(&pending).expect("serializable"),
            now,
            now + chrono::Duration::seconds(expires_in),
            vec![],
        )
        .await?;
    Ok(Json(json!({
        "handle": handle,
        "user_code": user_code,
        "verification_uri": uri,
        "verification_uri_complete": body["verification_uri_complete"],
        "expires_in": expires_in,
        "interval": interval,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Poll {
    handle: String,
}

pub async fn poll(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    body: Result<Json<Poll>, JsonRejection>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let Json(b) = body?;
    let p = provider(&state, &name)?;
    let key = hashed("sso-device", &b.handle);
    let now = state.clock.now();
    let Some(text) = state.store.record(&key, now).await? else {
        return Err(ApiError::new(
            StatusCode::GONE,
            "expired",
            "this sign-in has expired or was finished; run `jitgate login --sso` again",
        ));
    };
    let pending: Pending =
        serde_json::from_str(&text).map_err(|e| ApiError::internal(e.to_string()))?;
    if pending.provider != name {
        return Err(ApiError::bad_request(
            "this sign-in was for another provider",
        ));
    }
    let m = p.metadata(false).await?;
    let token_url = m
        .token_endpoint()
        .ok_or_else(|| ApiError::internal(format!("{name} has no token endpoint")))?;
    let (status, body) = p
        .post_form(
            token_url.url().as_str(),
            &[
                ("grant_type", DEVICE_GRANT),
                ("device_code", &pending.device_code),
                ("client_id", &p.config.client_id),
            ],
        )
        .await?;
    match body["error"].as_str() {
        Some("authorization_pending") => {
            return Ok((
                StatusCode::ACCEPTED,
                Json(json!({"status": "pending", "interval": pending.interval})),
            ))
        }
        Some("slow_down") => {
            let slower = Pending {
                interval: pending.interval + 5,
                ..pending
            };
            state
                .store
                .put_record(
                    &key,
                    &serde_json::to_string(&slower).expect("serializable"),
                    now,
                    now + chrono::Duration::minutes(10),
                    vec![],
                )
                .await?;
            return Ok((
                StatusCode::ACCEPTED,
                Json(json!({"status": "pending", "interval": slower.interval})),
            ));
        }
        Some(e) => {
            state.store.take_record(&key, now).await?;
            let why = body["error_description"].as_str().unwrap_or_default();
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "sso_refused",
                format!("{name} did not sign you in: {e} {why}"),
            ));
        }
        None if !status.is_success() => {
            return Err(SsoError::Provider {
                provider: name,
                message: format!("token endpoint answered {status}"),
            }
            .into())
        }
        None => {}
    }
    // Only one poll gets to finish the sign-in.
    if state.store.take_record(&key, now).await?.is_none() {
        return Err(ApiError::new(
            StatusCode::GONE,
            "expired",
            "this sign-in was already finished",
        ));
    }
    let raw = body["id_token"]
        .as_str()
        .ok_or_else(|| SsoError::Token("the provider sent no ID token".into()))?;
    let verified = async {
        let mut v = p.verify(raw, None).await?;
        if let Some(access) = body["access_token"].as_str() {
            p.complete_claims(&mut v, access).await?;
        }
        Ok::<_, SsoError>(v)
    }
    .await;
    let verified = match verified {
        Ok(v) => v,
        Err(e) => {
            signin::record_refusal(&state, &name, &e.to_string(), "cli-device").await?;
            return Err(e.into());
        }
    };
    let (token, user, expires_at) = signin::complete(&state, p, &verified, "cli-device").await?;
    Ok((
        StatusCode::OK,
        Json(json!({"status": "done", "token": token, "user": user, "expires_at": expires_at})),
    ))
}
