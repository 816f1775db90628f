//! The approvers' web UI, served on `api_listen` next to the JSON API.
//!
//! Server-rendered pages (askama templates compiled into the binary, one
//! stylesheet and one small script from `crates/api/static/`, nothing from a
//! CDN). Every action is a plain HTML form, so the UI works without
//! JavaScript; with it, countdowns tick and pages refresh when state changes
//! (server-sent events from `/ui/events`).
//!
//! - [`session`]: cookie sessions and CSRF tokens.
//! - [`pages`]: inbox, request, my requests, grants, audit, scan, and the forms.
//! - [`views`]: what the templates show.

pub mod pages;
pub mod session;
pub mod views;

use crate::AppState;
use axum::extract::{Form, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use futures_util::StreamExt;
use serde::Deserialize;
use session::{set_cookie, UiUser, LOGIN_COOKIE, SESSION_COOKIE};
use std::sync::Arc;
use store::Kind;
use views::LoginPage;

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui/inbox") }))
        .route("/ui", get(|| async { Redirect::to("/ui/inbox") }))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/inbox", get(pages::inbox))
        .route("/ui/requests", get(pages::mine))
        .route("/ui/requests/{id}", get(pages::request))
        .route("/ui/requests/{id}/decide", post(pages::decide))
        .route("/ui/requests/{id}/cancel", post(pages::cancel))
        .route("/ui/grants", get(pages::grants))
        .route("/ui/grants/{id}/revoke", post(pages::revoke))
        .route("/ui/grants/{id}/relinquish", post(pages::relinquish))
        .route("/ui/audit", get(pages::audit))
        .route("/ui/scan", get(pages::scan))
        .route("/ui/events", get(events))
        .route("/ui/static/app.css", get(css))
        .route("/ui/static/app.js", get(js))
}

async fn css() -> Response {
    static_file(
        "text/css; charset=utf-8",
        include_str!("../../static/app.css"),
    )
}

async fn js() -> Response {
    static_file(
        "text/javascript; charset=utf-8",
        include_str!("../../static/app.js"),
    )
}

fn static_file(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// The login form, with a fresh double-submit CSRF value.
async fn login_page(State(state): State<Arc<AppState>>) -> Response {
    login_form(&state, None, StatusCode::OK)
}

/// The login page with `error` shown (also used by the sign-in callbacks).
pub(crate) fn login_form(state: &AppState, error: Option<String>, status: StatusCode) -> Response {
    let csrf = B64.encode(rand::random::<[u8; 24]>());
    let mut resp = pages::render(LoginPage {
        csrf: csrf.clone(),
        error,
        providers: state.sso.names().map(str::to_string).collect(),
        passwords: state.config.gateway.password_login,
    });
    *resp.status_mut() = status;
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(state, LOGIN_COOKIE, &csrf, 600),
    );
    resp
}

#[derive(Deserialize)]
struct LoginForm {
    user: String,
    password: String,
    csrf: String,
}

async fn login(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let expected = session::cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    if expected.is_empty() || !session::same(&expected, &f.csrf) {
        return login_form(
            &state,
            Some("The login form expired or did not come from this site; try again.".into()),
            StatusCode::FORBIDDEN,
        );
    }
    match crate::actions::password_login(&state, &f.user, &f.password).await {
        Ok((token, expires_at)) => {
            let max_age = (expires_at - state.clock.now()).num_seconds().max(0);
            let mut resp = Redirect::to("/ui/inbox").into_response();
            // Always a new token: a cookie planted before login never becomes a session.
            let h = resp.headers_mut();
            h.append(
                header::SET_COOKIE,
                set_cookie(&state, SESSION_COOKIE, &token, max_age),
            );
            h.append(header::SET_COOKIE, set_cookie(&state, LOGIN_COOKIE, "", 0));
            resp
        }
        Err(e) => login_form(&state, Some(e.message), e.status),
    }
}

#[derive(Deserialize)]
struct CsrfOnly {
    csrf: String,
}

async fn logout(
    State(state): State<Arc<AppState>>,
    u: UiUser,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Some(r) = u.check_csrf(&f.csrf) {
        return r;
    }
    let ev = store::AuditEvent::new(
        state.clock.now(),
        Kind::AuthLogout,
        &u.user,
        format!("user:{}", u.user),
        serde_json::json!({"via": "web"}),
    );
    if let Err(e) = state.store.revoke_token(&u.token_hash, vec![ev]).await {
        return crate::error::ApiError::from(e).into_response();
    }
    let mut resp = Redirect::to("/ui/login").into_response();
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(&state, SESSION_COOKIE, "", 0),
    );
    resp
}

/// Server-sent events: `changed` whenever requests or grants may have changed
/// (the current version first, on connect).
async fn events(State(state): State<Arc<AppState>>, _u: UiUser) -> Response {
    let stream = tokio_stream::wrappers::WatchStream::new(state.changed.subscribe())
        .map(|v| {
            Ok::<_, std::convert::Infallible>(Event::default().event("changed").data(v.to_string()))
        })
        .take_until(state.closing.clone().cancelled_owned());
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}
