//! The HTTP face of jitgate (axum): the JSON API under `/api/v1/` with
//! `/healthz` and `/metrics`, the approvers' web UI under `/ui/`, and webhooks.
//!
//! - [`actions`]: what a person can do, written once for the API and the UI.
//! - [`auth`]: login with user and password for a bearer token (stored hashed,
//!   with expiry, revocable); the [`auth::Caller`] extractor.
//! - [`error`]: every error is JSON `{"error": {"code", "message"}}` with a
//!   stable code and the right status.
//! - [`routes`]: requests, decisions, grants, audit, the caller's effective policy.
//! - [`openapi`]: the OpenAPI document at `/api/v1/openapi.json`.
//! - [`metrics`]: Prometheus text at `/metrics`.
//! - [`ui`]: server-rendered pages, cookie sessions, CSRF, server-sent events.
//! - [`webhooks`]: events from the audit log to receivers, signed, retried.
//! - [`sso`]: sign-in through OpenID Connect providers (browser, CLI device
//!   flow) and connection secrets for database clients.
//! - [`inspect`]: the database look-ups the UI needs (plugged in by `serve`).
//!
//! Authorization: requesters see their own requests and grants; approvers see
//! what they can act on (and what they decided); the `admins` group sees all;
//! the `auditors` group reads the audit log. The API decides nothing itself:
//! every transition goes through `store::service` and the pure `policy` rules.
#![forbid(unsafe_code)]

pub mod actions;
pub mod auth;
pub mod describe;
pub mod error;
pub mod inspect;
pub mod metrics;
pub mod openapi;
pub mod routes;
pub mod sso;
pub mod ui;
pub mod webhooks;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use config::Config;
use policy::{Clock, Policy};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use store::Store;

/// Requests and responses are small; anything bigger is refused with 413.
pub const BODY_LIMIT: usize = 64 * 1024;
/// Bearer tokens live this long.
pub const TOKEN_TTL: chrono::Duration = chrono::Duration::hours(12);

pub struct AppState {
    pub config: Arc<Config>,
    pub policy: Arc<Policy>,
    pub store: Arc<dyn Store>,
    pub clock: Arc<dyn Clock>,
    pub metrics: metrics::Metrics,
    pub login_attempts: auth::LoginAttempts,
    /// Random per process: decoy password checks for unknown users.
    pub decoy_salt: [u8; 16],
    /// Notified after every change made through the API or the lifecycle
    /// tick (the enforcer listens, so an approval reaches the gateway at once).
    pub changed: Arc<store::Changes>,
    /// Database look-ups for the web UI (set by `jitgate serve`; absent in
    /// tests of the API alone, where the pages say so).
    pub inspector: std::sync::OnceLock<Arc<dyn inspect::Inspector>>,
    pub previews: inspect::PreviewCache,
    /// Cancelled when the server stops: endless responses (server-sent
    /// events) end, so a browser left open never holds up a shutdown.
    pub closing: tokio_util::sync::CancellationToken,
    /// Cancelled on SIGTERM: `/healthz` fails so load balancers move on first.
    pub draining: tokio_util::sync::CancellationToken,
    /// This replica among those of the state store (set by `jitgate serve`;
    /// alone otherwise).
    pub cluster: std::sync::OnceLock<Arc<store::Cluster>>,
    /// `[[identity_provider]]`s, discovered on first use.
    pub sso: sso::Providers,
}

impl AppState {
    pub fn new(
        config: Arc<Config>,
        policy: Arc<Policy>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
    ) -> Arc<AppState> {
        Arc::new(AppState {
            config: config.clone(),
            policy,
            store,
            clock,
            metrics: metrics::Metrics::default(),
            login_attempts: auth::login_attempts(),
            decoy_salt: rand::random(),
            changed: Arc::new(store::Changes::default()),
            inspector: std::sync::OnceLock::new(),
            previews: inspect::PreviewCache::default(),
            closing: tokio_util::sync::CancellationToken::new(),
            draining: tokio_util::sync::CancellationToken::new(),
            cluster: std::sync::OnceLock::new(),
            sso: sso::Providers::new(&config),
        })
    }

    pub fn cluster(&self) -> Arc<store::Cluster> {
        self.cluster.get_or_init(store::Cluster::alone).clone()
    }

    pub fn is_admin(&self, user: &str) -> bool {
        self.policy.in_group(user, "admins")
    }

    pub fn is_auditor(&self, user: &str) -> bool {
        self.policy.in_group(user, "auditors") || self.is_admin(user)
    }
}

pub fn router(state: Arc<AppState>) -> Router {
    routes::router()
        .merge(ui::router())
        .merge(sso::router())
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            notify_changes,
        ))
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(state)
}

/// Every request that may change state pokes [`AppState::changed`] once answered.
async fn notify_changes(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let mutating = request.method() != axum::http::Method::GET;
    let response = next.run(request).await;
    // Forms answer 303 (see other) on success; errors are 4xx/5xx.
    if mutating && (response.status().is_success() || response.status().is_redirection()) {
        state.changed.changed();
    }
    response
}

/// Serves the API on `listener` until `stop`, ticking request and grant
/// lifecycles (expiry, escalation) every second meanwhile.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let ticker = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(1));
            loop {
                every.tick().await;
                let now = state.clock.now();
                match store::service::tick(&*state.store, &state.policy, now).await {
                    Ok(report) if report != Default::default() => {
                        tracing::info!(?report, "lifecycle tick");
                        state.changed.changed();
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "lifecycle tick failed"),
                }
            }
        })
    };
    let closing = state.closing.clone();
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            stop.await;
            closing.cancel();
        })
        .await;
    ticker.abort();
    result
}
