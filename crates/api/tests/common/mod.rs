//! The API served over real HTTP against a SQLite store, with a manual clock.
#![allow(dead_code)]

use chrono::{TimeZone, Utc};
use policy::clock::ManualClock;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::sync::Arc;

pub const CONFIG: &str = r#"
[gateway]
[[database]]
name = "app"
admin_url = "postgres://admin@127.0.0.1/app"
[[group]]
name = "engineers"
[[group]]
name = "leads"
[[group]]
name = "auditors"
[[user]]
name = "alice"
password = "alice-pw"
groups = ["engineers"]
[[user]]
name = "eve"
password = "eve-pw"
groups = ["engineers"]
[[user]]
name = "bob"
password = "bob-pw"
groups = ["leads"]
[[user]]
name = "carol"
password = "carol-pw"
groups = ["auditors"]
[[group]]
name = "admins"
[[user]]
name = "root"
password = "root-pw"
groups = ["admins"]
[[role]]
name = "app_write"
database = "app"
requesters = ["engineers"]
default_duration = "15m"
max_duration = "1h"
reason_required = true
chain = [{ approvers = ["leads"], min = 1 }]
"#;

pub struct Api {
    pub base: String,
    pub http: reqwest::Client,
    pub clock: Arc<ManualClock>,
    pub state: Arc<api::AppState>,
    _dir: tempfile::TempDir,
}

impl Api {
    pub async fn start() -> Api {
        let dir = tempfile::tempdir().unwrap();
        let config = Arc::new(config::Config::from_toml(CONFIG).unwrap());
        let policy = Arc::new(policy::Policy::from_config(&config).unwrap());
        let store = store::open(&format!("sqlite://{}", dir.path().join("s.db").display()))
            .await
            .unwrap();
        let clock = Arc::new(ManualClock::new(
            Utc.with_ymd_and_hms(2026, 11, 29, 9, 0, 0).unwrap(),
        ));
        let state = api::AppState::new(config, policy, store, clock.clone());
        let _ = rustls::crypto::ring::default_provider().install_default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(serve(listener, state.clone()));
        Api {
            base,
            http: reqwest::Client::new(),
            clock,
            state,
            _dir: dir,
        }
    }

    pub async fn login(&self, user: &str) -> String {
        let (status, body) = self
            .call(
                "POST",
                "/api/v1/login",
                None,
                Some(json!({"user": user, "password": format!("{user}-pw")})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        body["token"].as_str().unwrap().to_string()
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let resp = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
}

pub async fn serve(listener: tokio::net::TcpListener, state: Arc<api::AppState>) {
    api::serve(listener, state, std::future::pending())
        .await
        .unwrap()
}
