//! Webhooks against a real receiver on loopback: payloads, HMAC signatures,
//! patterns, Slack format, retries after a failing receiver, and delivery of
//! what happened while the gateway was down.

mod common;

use axum::http::{HeaderMap, StatusCode as AxStatus};
use common::*;
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Receiver {
    got: Mutex<Vec<(HeaderMap, Vec<u8>)>>,
    /// Answer 500 to this many requests first.
    fail_first: Mutex<usize>,
}

async fn receiver(fail_first: usize) -> (String, Arc<Receiver>) {
    let r = Arc::new(Receiver {
        fail_first: Mutex::new(fail_first),
        ..Default::default()
    });
    let shared = r.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let r = shared.clone();
            async move {
                r.got.lock().unwrap().push((headers, body.to_vec()));
                let mut fail = r.fail_first.lock().unwrap();
                if *fail > 0 {
                    *fail -= 1;
                    return AxStatus::INTERNAL_SERVER_ERROR;
                }
                AxStatus::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, r)
}

impl Receiver {
    /// Deliveries answered 2xx or not, as (event, attempt, body).
    fn events(&self) -> Vec<(String, u32, Value, HeaderMap)> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(h, b)| {
                (
                    h["x-jitgate-event"].to_str().unwrap().to_string(),
                    h["x-jitgate-attempt"].to_str().unwrap().parse().unwrap(),
                    serde_json::from_slice(b).unwrap(),
                    h.clone(),
                )
            })
            .collect()
    }

    async fn wait_for(&self, n: usize) {
        for _ in 0..200 {
            if self.got.lock().unwrap().len() >= n {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("expected {n} deliveries, got {:?}", self.events());
    }
}

fn hooks(json_url: &str, slack_url: &str) -> Vec<config::Webhook> {
    let text = format!(
        "[gateway]\n[[webhook]]\nurl = \"{json_url}\"\nsecret = \"s3cret\"\nevents = [\"request.*\", \"alert.*\"]\n\
         [[webhook]]\nurl = \"{slack_url}\"\nevents = [\"grant.*\"]\nformat = \"slack\"\n"
    );
    config::Config::from_toml(&text).unwrap().webhooks
}

async fn start(api: &Api, hooks: Vec<config::Webhook>) -> Vec<tokio::task::JoinHandle<()>> {
    api::webhooks::start(
        api.state.store.clone(),
        hooks,
        "https://jitgate.example".into(),
        api.state.changed.clone(),
        api.state.cluster().leadership(),
    )
    .await
}

#[tokio::test]
async fn payloads_signatures_patterns_and_slack() {
    let api = Api::start().await;
    let (json_url, json_rx) = receiver(0).await;
    let (slack_url, slack_rx) = receiver(0).await;
    let _tasks = start(&api, hooks(&json_url, &slack_url)).await;
    let alice = api.login("alice").await;
    let bob = api.login("bob").await;
    let (_, b) = api
        .call(
            "POST",
            "/api/v1/requests",
            Some(&alice),
            Some(json!({"role": "app_write", "database": "app", "reason": "fix order 7"})),
        )
        .await;
    let id = b["request"]["id"].as_i64().unwrap();
    api.call(
        "POST",
        &format!("/api/v1/requests/{id}/approve"),
        Some(&bob),
        None,
    )
    .await;
    // A wrong password: an alert.
    api.call(
        "POST",
        "/api/v1/login",
        None,
        Some(json!({"user": "bob", "password": "x"})),
    )
    .await;
    json_rx.wait_for(3).await;
    slack_rx.wait_for(1).await;
    let got = json_rx.events();
    let names: Vec<&str> = got.iter().map(|(e, ..)| e.as_str()).collect();
    assert_eq!(
        names,
        ["request.filed", "request.approved", "alert.auth_failed"]
    );
    let (_, attempt, body, headers) = &got[0];
    assert_eq!(*attempt, 1);
    assert_eq!(
        body["link"],
        format!("https://jitgate.example/ui/requests/{id}")
    );
    assert_eq!(body["actor"], "alice");
    assert_eq!(body["detail"]["reason"], "fix order 7");
    assert!(body["text"]
        .as_str()
        .unwrap()
        .contains("alice asks for app_write"));
    // The signature is the HMAC of the exact body with the webhook's secret.
    let raw = &json_rx.got.lock().unwrap()[0].1.clone();
    assert_eq!(
        headers["x-jitgate-signature"].to_str().unwrap(),
        api::webhooks::signature("s3cret", raw)
    );
    assert_ne!(
        headers["x-jitgate-signature"].to_str().unwrap(),
        api::webhooks::signature("other", raw)
    );
    // grant.* went to the Slack webhook only, as Slack text, unsigned.
    let slack = slack_rx.events();
    assert_eq!(slack[0].0, "grant.started");
    assert!(slack[0].2["text"]
        .as_str()
        .unwrap()
        .contains("alice now holds app_write"));
    assert!(slack[0].2["text"]
        .as_str()
        .unwrap()
        .contains("|open in jitgate>"));
    assert!(!slack[0].3.contains_key("x-jitgate-signature"));
    assert!(!names.contains(&"grant.started"));
}

#[tokio::test]
async fn a_failing_receiver_gets_retries_and_nothing_is_lost_across_a_restart() {
    let api = Api::start().await;
    let (url, rx) = receiver(2).await;
    let (slack_url, _slack) = receiver(0).await;
    let tasks = start(&api, hooks(&url, &slack_url)).await;
    let alice = api.login("alice").await;
    let file = |reason: &'static str| {
        let body = json!({"role": "app_write", "database": "app", "reason": reason});
        let alice = alice.clone();
        let api = &api;
        async move {
            let (_, b) = api
                .call("POST", "/api/v1/requests", Some(&alice), Some(body))
                .await;
            b["request"]["id"].as_i64().unwrap()
        }
    };
    let first = file("one").await;
    rx.wait_for(3).await;
    let got = rx.events();
    assert_eq!(
        got.iter()
            .map(|(e, a, ..)| (e.as_str(), *a))
            .collect::<Vec<_>>(),
        [
            ("request.filed", 1),
            ("request.filed", 2),
            ("request.filed", 3)
        ],
        "two failures, then delivered"
    );
    assert!(got
        .iter()
        .all(|(_, _, b, _)| b["subject"] == format!("request:{first}")));
    // The receiver's answer is in; the cursor is stored just after it. A
    // gateway killed in between sends the event again (at least once, by
    // design): go down only once the cursor has moved past it.
    let delivered = got[2].2["id"].as_i64().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while api
        .state
        .store
        .cursor(&format!("webhook:{url}"))
        .await
        .unwrap()
        <= delivered
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the cursor never moved"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The gateway goes down; meanwhile a request is cancelled and another filed.
    for t in tasks {
        t.abort();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    api.call(
        "POST",
        &format!("/api/v1/requests/{first}/cancel"),
        Some(&alice),
        None,
    )
    .await;
    let eve = api.login("eve").await;
    let (_, b) = api
        .call(
            "POST",
            "/api/v1/requests",
            Some(&eve),
            Some(json!({"role": "app_write", "database": "app", "reason": "two"})),
        )
        .await;
    let second = b["request"]["id"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rx.events().len(), 3, "nothing delivered while down");
    // Back up: both events arrive, in order, and the first is not sent again.
    let _tasks = start(&api, hooks(&url, &slack_url)).await;
    rx.wait_for(5).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got = rx.events();
    let tail: Vec<(String, String)> = got[3..]
        .iter()
        .map(|(e, _, b, _)| (e.clone(), b["subject"].as_str().unwrap().to_string()))
        .collect();
    assert_eq!(
        tail,
        [
            ("request.cancelled".to_string(), format!("request:{first}")),
            ("request.filed".to_string(), format!("request:{second}")),
        ]
    );
}
