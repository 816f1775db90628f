//! Sign-in through OpenID Connect providers (`[[identity_provider]]`).
//!
//! - [`provider`]: one provider: discovery, signing keys (fetched again when
//!   a token names a key we do not have), ID token validation.
//! - [`signin`]: from a validated ID token to a jitgate user (email domain,
//!   mapped groups, one name per subject) and a session.
//! - [`web`]: the browser's authorization code flow with PKCE, `state` and
//!   `nonce` (`/ui/login/oidc/{name}` and its `/callback`).
//! - [`device`]: the CLI's device authorization grant (RFC 8628), brokered by
//!   the server so the client secret never leaves it.
//! - [`secrets`]: connection secrets for database clients (`jitgate db-login`).
//!
//! Everything a sign-in keeps between two HTTP requests is a record in the
//! state store, so any replica can answer the next one.

pub mod device;
pub mod provider;
pub mod secrets;
pub mod signin;
pub mod web;

use crate::AppState;
use axum::routing::{delete, get, post};
use axum::Router;
use provider::Provider;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::Arc;

/// The configured providers by name.
#[derive(Default)]
pub struct Providers(BTreeMap<String, Arc<Provider>>);

impl Providers {
    pub fn new(config: &config::Config) -> Providers {
        let base = config.gateway.public_url();
        Providers(
            config
                .identity_providers
                .iter()
                .map(|p| (p.name.clone(), Arc::new(Provider::new(p.clone(), &base))))
                .collect(),
        )
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Provider>> {
        self.0.get(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.0.keys().map(String::as_str)
    }
}

pub fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/login/oidc", get(list))
        .route("/ui/login/oidc/{name}", get(web::start))
        .route("/ui/login/oidc/{name}/callback", get(web::callback))
        .route("/api/v1/login/oidc/{name}/device", post(device::start))
        .route("/api/v1/login/oidc/{name}/device/token", post(device::poll))
        .route("/api/v1/login/oidc/loopback", post(web::loopback_token))
        .route(
            "/api/v1/connection-secret",
            post(secrets::issue).delete(secrets::revoke),
        )
        .route(
            "/api/v1/connection-secret/{user}",
            delete(secrets::revoke_for),
        )
}

/// What a client needs to choose how to sign in (no authentication).
async fn list(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({
        "providers": state.sso.names().collect::<Vec<_>>(),
        "password_login": state.config.gateway.password_login,
    }))
}

/// Random URL-safe text of `n` bytes of entropy.
pub(crate) fn random(n: usize) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = (0..n).map(|_| rand::random::<u8>()).collect();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Records are keyed by a hash of what the client holds, never the value.
pub(crate) fn hashed(prefix: &str, secret: &str) -> String {
    let h: String = Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("{prefix}:{h}")
}
