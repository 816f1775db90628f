//! Browser sessions: a cookie holding an API token (the same tokens, stored
//! hashed, expiring, revocable), and CSRF protection for every form.
//!
//! - The session cookie is `HttpOnly; SameSite=Strict; Path=/` (and `Secure`
//!   when `public_url` is https). Logging in always issues a fresh token, so a
//!   cookie planted before login is never promoted to a session (fixation).
//! - Every form carries a CSRF token derived from the session (SHA-256 of
//!   the token's hash with a label: unguessable without the cookie); the login
//!   form, before there is a session, uses a random double-submit cookie.

use crate::auth::token_hash;
use crate::AppState;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use sha2::{Digest, Sha256};
use std::sync::Arc;
use subtle::ConstantTimeEq;

pub const SESSION_COOKIE: &str = "jg_session";
pub const LOGIN_COOKIE: &str = "jg_login";

/// The value of cookie `name`, if the request carries it.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn csrf_for(token_hash: &str) -> String {
    hex(&Sha256::digest(
        format!("jitgate-csrf:{token_hash}").as_bytes(),
    ))
}

pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A `Set-Cookie` value; `max_age` 0 deletes the cookie.
pub fn set_cookie(state: &AppState, name: &str, value: &str, max_age: i64) -> HeaderValue {
    let secure = if state.config.gateway.public_url().starts_with("https://") {
        "; Secure"
    } else {
        ""
    };
    HeaderValue::from_str(&format!(
        "{name}={value}; HttpOnly; SameSite=Strict; Path=/; Max-Age={max_age}{secure}"
    ))
    .expect("cookie values are ASCII")
}

/// The person behind a browser request.
pub struct UiUser {
    pub user: String,
    pub token_hash: String,
    pub csrf: String,
}

impl UiUser {
    /// The refusal of a form whose CSRF token is not this session's.
    pub fn check_csrf(&self, given: &str) -> Option<Response> {
        if same(&self.csrf, given) {
            None
        } else {
            Some((
                StatusCode::FORBIDDEN,
                "This form is not from your jitgate session (CSRF check failed). Reload the page and try again.",
            )
                .into_response())
        }
    }
}

impl FromRequestParts<Arc<AppState>> for UiUser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<UiUser, Response> {
        let to_login = || Redirect::to("/ui/login").into_response();
        let token = cookie(&parts.headers, SESSION_COOKIE).ok_or_else(to_login)?;
        let hash = token_hash(&token);
        let row = state
            .store
            .token(&hash)
            .await
            .map_err(|e| crate::error::ApiError::from(e).into_response())?;
        if let Some(r) = &row {
            crate::auth::refresh_person(state, &r.user)
                .await
                .map_err(|e| crate::error::ApiError::from(e).into_response())?;
        }
        match row {
            Some(r)
                if !r.revoked
                    && r.expires_at > state.clock.now()
                    && state.policy.is_user(&r.user) =>
            {
                Ok(UiUser {
                    user: r.user,
                    csrf: csrf_for(&hash),
                    token_hash: hash,
                })
            }
            _ => Err(to_login()),
        }
    }
}
