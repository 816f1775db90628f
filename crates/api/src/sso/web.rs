//! The browser's sign-in: authorization code flow with PKCE (S256), `state`
//! and `nonce`.
//!
//! `GET /ui/login/oidc/{name}` keeps the PKCE verifier and nonce in a record
//! keyed by a hash of `state` (any replica can finish the sign-in), sets the
//! `state` in a cookie for this browser only, and redirects to the provider.
//! `GET /ui/login/oidc/{name}/callback` requires the cookie to match `state`
//! (a sign-in started elsewhere cannot be finished here), takes the record
//! (a `state` works once), exchanges the code with the verifier, validates
//! the ID token with the nonce, and signs the person in.
//!
//! The CLI's loopback sign-in (`jitgate login --sso` where the provider has
//! no device flow) starts here too, with `cli_port` and a PKCE-style
//! `cli_challenge`: the callback then hands a one-time code to
//! `http://127.0.0.1:{cli_port}/` instead of setting a cookie, and the CLI
//! trades it, with its verifier, for a token at `/api/v1/login/oidc/loopback`.

use super::{hashed, random, signin};
use crate::error::ApiError;
use crate::ui::session::{same, set_cookie, SESSION_COOKIE};
use crate::AppState;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::Json;
use openidconnect::core::CoreAuthenticationFlow;
use openidconnect::{
    AuthorizationCode, CsrfToken, Nonce, OAuth2TokenResponse, PkceCodeChallenge, PkceCodeVerifier,
    Scope,
};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::sync::Arc;

/// The cookie holding `state` between the redirect and the callback
/// (`SameSite=Lax`: it must come back on the provider's redirect).
const STATE_COOKIE: &str = "jg_sso";
/// A sign-in must be finished within this time.
const PENDING_TTL: chrono::Duration = chrono::Duration::minutes(10);
const LOOPBACK_TTL: chrono::Duration = chrono::Duration::minutes(2);

#[derive(Serialize, Deserialize)]
struct Pending {
    provider: String,
    nonce: String,
    pkce_verifier: String,
    cli_port: Option<u16>,
    cli_challenge: Option<String>,
}

#[derive(Deserialize)]
pub struct StartQuery {
    cli_port: Option<u16>,
    cli_challenge: Option<String>,
}

fn failed(state: &AppState, status: StatusCode, message: impl Into<String>) -> Response {
    crate::ui::login_form(state, Some(message.into()), status)
}

pub async fn start(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    Query(q): Query<StartQuery>,
) -> Response {
    let Some(p) = state.sso.get(&name) else {
        return failed(
            &state,
            StatusCode::NOT_FOUND,
            format!("no identity provider named `{name}`"),
        );
    };
    if q.cli_port.is_some() != q.cli_challenge.is_some() {
        return failed(
            &state,
            StatusCode::BAD_REQUEST,
            "cli_port and cli_challenge go together",
        );
    }
    let client = match p.metadata(false).await.and_then(|m| p.client(m)) {
        Ok(c) => c,
        Err(e) => return failed(&state, StatusCode::BAD_GATEWAY, e.to_string()),
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let mut request = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .set_pkce_challenge(challenge);
    for s in p.config.scopes.iter().filter(|s| *s != "openid") {
        request = request.add_scope(Scope::new(s.clone()));
    }
    let (url, csrf, nonce) = request.url();
    let pending = Pending {
        provider: name.clone(),
        nonce: nonce.secret().clone(),
        pkce_verifier: verifier.secret().clone(),
        cli_port: q.cli_port,
        cli_challenge: q.cli_challenge,
    };
    let record = serde_json::to_string(&pending).expect("serializable");
    let key = hashed("sso-state", csrf.secret());
    if let Err(e) = keep(&state, &key, &record, PENDING_TTL).await {
        return e;
    }
    let mut resp = Redirect::to(url.as_str()).into_response();
    resp.headers_mut()
        .append(header::SET_COOKIE, state_cookie(&state, csrf.secret(), 600));
    resp
}

/// Keeps what the next request of a sign-in needs, for `ttl`.
async fn keep(
    state: &AppState,
    key: &str,
    value: &str,
    ttl: chrono::Duration,
) -> Result<(), Response> {
    let now = state.clock.now();
    state
        .store
        .put_record(key, value, now, now + ttl, vec![])
        .await
        .map_err(|e| ApiError::from(e).into_response())
}

fn state_cookie(state: &AppState, value: &str, max_age: i64) -> HeaderValue {
    let secure = if state.config.gateway.public_url().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{STATE_COOKIE}={value}; HttpOnly; SameSite=Lax; Path=/ui/login/oidc; Max-Age={max_age}{secure}"
    ))
    .expect("cookie values are ASCII")
}

#[derive(Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

pub async fn callback(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(q): Query<CallbackQuery>,
) -> Response {
    let Some(p) = state.sso.get(&name) else {
        return failed(
            &state,
            StatusCode::NOT_FOUND,
            format!("no identity provider named `{name}`"),
        );
    };
    if let Some(e) = q.error {
        let why = q.error_description.unwrap_or_default();
        return failed(
            &state,
            StatusCode::UNAUTHORIZED,
            format!("{name} did not sign you in: {e} {why}"),
        );
    }
    let (Some(code), Some(given)) = (q.code, q.state) else {
        return failed(
            &state,
            StatusCode::BAD_REQUEST,
            "the provider's answer has no code or state",
        );
    };
    let cookie = crate::ui::session::cookie(&headers, STATE_COOKIE).unwrap_or_default();
    if cookie.is_empty() || !same(&cookie, &given) {
        return failed(
            &state,
            StatusCode::FORBIDDEN,
            "this sign-in was not started in this browser (state does not match); sign in again",
        );
    }
    let now = state.clock.now();
    let pending = match state.store.take_record(&hashed("sso-state", &given), now).await {
        Ok(Some(text)) => match serde_json::from_str::<Pending>(&text) {
            Ok(p) if p.provider == name => p,
            _ => return failed(&state, StatusCode::BAD_REQUEST, "this sign-in was for another provider"),
        },
        Ok(None) => {
            return failed(
                &state,
                StatusCode::BAD_REQUEST,
                "this sign-in was already finished or has expired (each one works once, for 10 minutes); sign in again",
            )
        }
        Err(e) => return ApiError::from(e).into_response(),
    };
    let signed = async {
        let client = p.client(p.metadata(false).await?)?;
        let exchange = client
            .exchange_code(AuthorizationCode::new(code))
            .map_err(|e| super::provider::SsoError::Config(e.to_string()))?
            .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier.clone()));
        let tokens = exchange.request_async(&p.http()).await.map_err(|e| {
            super::provider::SsoError::Provider {
                provider: name.clone(),
                message: format!("the code exchange failed: {}", store::described(&e)),
            }
        })?;
        let raw = openidconnect::TokenResponse::id_token(&tokens)
            .ok_or_else(|| {
                super::provider::SsoError::Token("the provider sent no ID token".into())
            })?
            .to_string();
        let mut verified = p
            .verify(&raw, Some(&Nonce::new(pending.nonce.clone())))
            .await?;
        p.complete_claims(&mut verified, tokens.access_token().secret())
            .await?;
        Ok::<_, super::provider::SsoError>(verified)
    }
    .await;
    let verified = match signed {
        Ok(v) => v,
        Err(e) => {
            let _ = signin::record_refusal(&state, &name, &e.to_string(), "web").await;
            let resp = ApiError::from(e);
            return failed(&state, resp.status, resp.message);
        }
    };
    let via = if pending.cli_port.is_some() {
        "cli-loopback"
    } else {
        "web"
    };
    let (token, user, expires_at) = match signin::complete(&state, p, &verified, via).await {
        Ok(x) => x,
        Err(e) => return failed(&state, e.status, e.message),
    };
    if let (Some(port), Some(challenge)) = (pending.cli_port, pending.cli_challenge) {
        let one_time = random(32);
        let record = json!({"token": token, "user": user, "expires_at": expires_at,
                            "challenge": challenge})
        .to_string();
        let key = hashed("sso-loopback", &one_time);
        if let Err(e) = keep(&state, &key, &record, LOOPBACK_TTL).await {
            return e;
        }
        return Redirect::to(&format!("http://127.0.0.1:{port}/callback?code={one_time}"))
            .into_response();
    }
    let max_age = (expires_at - now).num_seconds().max(0);
    // A page, not a redirect: the session cookie is SameSite=Strict, and a
    // redirect chain that began at the provider would not carry it.
    let mut resp = Html(format!(
        "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=\"0;url=/ui/inbox\">\
         <title>Signed in · jitgate</title><p>Signed in as {}. <a href=\"/ui/inbox\">Continue</a></p>",
        html_escape(&user)
    ))
    .into_response();
    let h = resp.headers_mut();
    h.append(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, &token, max_age),
    );
    h.append(header::SET_COOKIE, state_cookie(&state, "", 0));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    resp
}

fn html_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoopbackToken {
    code: String,
    verifier: String,
}

/// The CLI trades the one-time code from its loopback redirect, with the
/// verifier whose SHA-256 it sent at the start, for its token.
pub async fn loopback_token(
    State(state): State<Arc<AppState>>,
    body: Result<Json<LoopbackToken>, axum::extract::rejection::JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    let Json(b) = body?;
    let now = state.clock.now();
    let Some(text) = state
        .store
        .take_record(&hashed("sso-loopback", &b.code), now)
        .await?
    else {
        return Err(ApiError::unauthorized(
            "unknown or used sign-in code; sign in again",
        ));
    };
    let v: Value = serde_json::from_str(&text).map_err(|e| ApiError::internal(e.to_string()))?;
    let challenge = {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(b.verifier.as_bytes()))
    };
    if !same(v["challenge"].as_str().unwrap_or_default(), &challenge) {
        return Err(ApiError::unauthorized(
            "the verifier does not match this sign-in's challenge",
        ));
    }
    Ok(Json(
        json!({"token": v["token"], "user": v["user"], "expires_at": v["expires_at"]}),
    ))
}
