//! The HTTP API over real HTTP against a SQLite store: the approval story,
//! authorization, and bad input (each a clear 4xx, nothing changed).

mod common;

use chrono::Duration;
use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

fn code(body: &Value) -> &str {
    body["error"]["code"]
        .as_str()
        .unwrap_or_else(|| panic!("not an API error: {body}"))
}

#[tokio::test]
async fn the_approval_story() {
    let api = Api::start().await;
    let alice = api.login("alice").await;
    let bob = api.login("bob").await;
    let carol = api.login("carol").await;

    let (s, b) = api.call("POST", "/api/v1/requests", Some(&alice), Some(json!({"role": "app_write", "database": "app", "reason": "fix order 7", "duration": "30m"}))).await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let id = b["request"]["id"].as_i64().unwrap();
    // Asking again returns the pending request.
    let (s, b) = api
        .call(
            "POST",
            "/api/v1/requests",
            Some(&alice),
            Some(json!({"role": "app_write", "database": "app", "reason": "again"})),
        )
        .await;
    assert_eq!((s, b["request"]["id"].as_i64()), (StatusCode::OK, Some(id)));

    let (s, b) = api
        .call(
            "POST",
            &format!("/api/v1/requests/{id}/approve"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::FORBIDDEN, "forbidden"));
    assert!(b["error"]["message"]
        .as_str()
        .unwrap()
        .contains("your own request"));

    let (_, me) = api.call("GET", "/api/v1/me", Some(&bob), None).await;
    assert_eq!(me["may_approve"][0]["role"], "app_write");
    let (_, list) = api
        .call("GET", "/api/v1/requests?state=pending", Some(&bob), None)
        .await;
    assert_eq!(
        list["requests"].as_array().unwrap().len(),
        1,
        "bob sees what he can act on"
    );

    api.clock.advance(Duration::minutes(2));
    let (s, b) = api
        .call(
            "POST",
            &format!("/api/v1/requests/{id}/approve"),
            Some(&bob),
            Some(json!({"comment": "ok"})),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(b["request"]["state"], "approved");
    assert_eq!(b["grant"]["state"], "active");
    let grant_id = b["grant"]["id"].as_i64().unwrap();
    // Deciding a finished request: 409, nothing changes.
    let (s, b) = api
        .call(
            "POST",
            &format!("/api/v1/requests/{id}/deny"),
            Some(&bob),
            None,
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::CONFLICT, "request_closed"));

    let (_, grants) = api
        .call("GET", "/api/v1/grants?active=true", Some(&alice), None)
        .await;
    assert_eq!(grants["grants"][0]["id"].as_i64(), Some(grant_id));

    // The audit log: auditors only; the chain verifies.
    let (s, b) = api.call("GET", "/api/v1/audit", Some(&alice), None).await;
    assert_eq!((s, code(&b)), (StatusCode::FORBIDDEN, "forbidden"));
    let (_, ev) = api
        .call("GET", "/api/v1/audit?kind=request.", Some(&carol), None)
        .await;
    let kinds: Vec<&str> = ev["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["request.approved", "request.filed"]);
    let (_, ev) = api
        .call(
            "GET",
            "/api/v1/audit?kind=decision.refused&actor=alice",
            Some(&carol),
            None,
        )
        .await;
    assert_eq!(ev["events"][0]["actor"], "alice");
    assert_eq!(
        ev["events"][0]["severity"], "alert",
        "self-approval is an alert"
    );
    let (_, v) = api
        .call("GET", "/api/v1/audit/verify", Some(&carol), None)
        .await;
    assert_eq!(v["ok"], true);
    let export = api
        .http
        .get(format!("{}/api/v1/audit/export", api.base))
        .bearer_auth(&carol)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(export
        .lines()
        .all(|l| serde_json::from_str::<Value>(l).is_ok()));
    assert!(
        !export.contains("-pw") && !export.contains(&alice),
        "no secrets in the audit log"
    );

    // Relinquish by the holder; revoke of an ended grant is a conflict.
    let (s, _) = api
        .call(
            "POST",
            &format!("/api/v1/grants/{grant_id}/revoke"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "holders relinquish, they do not revoke"
    );
    let (s, b) = api
        .call(
            "POST",
            &format!("/api/v1/grants/{grant_id}/relinquish"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(
        (s, b["grant"]["state"].as_str()),
        (StatusCode::OK, Some("relinquished"))
    );
    let (s, b) = api
        .call(
            "POST",
            &format!("/api/v1/grants/{grant_id}/revoke"),
            Some(&bob),
            Some(json!({"reason": "x"})),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::CONFLICT, "grant_closed"));

    let (s, h) = api.call("GET", "/healthz", None, None).await;
    assert_eq!((s, h["status"].as_str()), (StatusCode::OK, Some("ok")));
    assert_eq!(h["enforcer"], true, "alone, this process enforces: {h}");
    assert_eq!(h["store"], "reachable");
    let metrics = api
        .http
        .get(format!("{}/metrics", api.base))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("jitgate_requests{replica=\"replica-0\",state=\"approved\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("jitgate_decision_seconds_count{replica=\"replica-0\"} 1"));
    assert!(metrics.contains("jitgate_grants_active{replica=\"replica-0\"} 0"));
}

#[tokio::test]
async fn other_users_requests_are_invisible() {
    let api = Api::start().await;
    let alice = api.login("alice").await;
    let eve = api.login("eve").await;
    let (_, b) = api
        .call(
            "POST",
            "/api/v1/requests",
            Some(&alice),
            Some(json!({"role": "app_write", "database": "app", "reason": "r"})),
        )
        .await;
    let id = b["request"]["id"].as_i64().unwrap();
    for (m, path) in [
        ("GET", format!("/api/v1/requests/{id}")),
        ("POST", format!("/api/v1/requests/{id}/cancel")),
        ("POST", format!("/api/v1/requests/{id}/approve")),
    ] {
        let (s, b) = api.call(m, &path, Some(&eve), None).await;
        assert_eq!(
            (s, code(&b)),
            (StatusCode::NOT_FOUND, "not_found"),
            "{m} {path}"
        );
    }
    let (_, list) = api.call("GET", "/api/v1/requests", Some(&eve), None).await;
    assert!(list["requests"].as_array().unwrap().is_empty());
    let (s, _) = api
        .call(
            "POST",
            &format!("/api/v1/requests/{id}/cancel"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
}

#[tokio::test]
async fn bad_input_gets_clear_errors_and_changes_nothing() {
    let api = Api::start().await;
    let alice = api.login("alice").await;
    let file = |body: Value| api.call("POST", "/api/v1/requests", Some(&alice), Some(body));
    for (body, want) in [
        (
            json!({"role": "app_write", "database": "app", "reason": "r", "duration": "-5m"}),
            "bad_request",
        ),
        (
            json!({"role": "app_write", "database": "app", "reason": "r", "duration": "99999h"}),
            "bad_request",
        ),
        (
            json!({"role": "app_write", "database": "app", "reason": "r", "duration": "2h"}),
            "bad_request",
        ),
        (
            json!({"role": "app_write", "database": "app"}),
            "bad_request",
        ),
        (
            json!({"role": "app_write", "database": "app", "reason": "r", "surprise": 1}),
            "bad_request",
        ),
        (
            json!({"role": "nope", "database": "app", "reason": "r"}),
            "bad_request",
        ),
        (json!({"role": 5}), "bad_request"),
    ] {
        let (s, b) = file(body.clone()).await;
        assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, want), "{body}");
    }
    let (s, b) = api
        .raw("POST", "/api/v1/requests", &alice, b"{not json".to_vec())
        .await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "bad_request"));
    let big = format!("{{\"role\": \"{}\"}}", "x".repeat(100_000));
    let (s, b) = api
        .raw("POST", "/api/v1/requests", &alice, big.into_bytes())
        .await;
    assert_eq!((s, code(&b)), (StatusCode::PAYLOAD_TOO_LARGE, "too_large"));
    let (s, b) = api
        .raw(
            "POST",
            "/api/v1/requests/1/approve",
            &alice,
            b"[1,2".to_vec(),
        )
        .await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "bad_request"));
    for path in ["/api/v1/requests/999", "/api/v1/grants/999"] {
        let (s, b) = api.call("GET", path, Some(&alice), None).await;
        assert_eq!((s, code(&b)), (StatusCode::NOT_FOUND, "not_found"));
    }
    let (s, b) = api
        .call("GET", "/api/v1/requests/abc", Some(&alice), None)
        .await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "bad_request"));
    let (s, b) = api
        .call("GET", "/api/v1/requests?state=weird", Some(&alice), None)
        .await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "bad_request"));
    // Nothing was filed by any of that.
    let (_, list) = api
        .call("GET", "/api/v1/requests", Some(&alice), None)
        .await;
    assert!(list["requests"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn tokens_wrong_forged_expired_revoked() {
    let api = Api::start().await;
    for (user, pw) in [("alice", "nope"), ("nobody", "nope")] {
        let (s, b) = api
            .call(
                "POST",
                "/api/v1/login",
                None,
                Some(json!({"user": user, "password": pw})),
            )
            .await;
        assert_eq!((s, code(&b)), (StatusCode::UNAUTHORIZED, "unauthorized"));
        assert_eq!(b["error"]["message"], "wrong user name or password");
    }
    let (s, b) = api.call("GET", "/api/v1/me", None, None).await;
    assert_eq!((s, code(&b)), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let (s, _) = api.call("GET", "/api/v1/me", Some("jg_forged"), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let t = api.login("alice").await;
    let (s, _) = api.call("GET", "/api/v1/me", Some(&t), None).await;
    assert_eq!(s, StatusCode::OK);
    api.clock.advance(Duration::hours(13));
    let (s, b) = api.call("GET", "/api/v1/me", Some(&t), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(b["error"]["message"].as_str().unwrap().contains("expired"));
    let t = api.login("alice").await;
    let (s, _) = api.call("POST", "/api/v1/logout", Some(&t), None).await;
    assert_eq!(s, StatusCode::NO_CONTENT);
    let (s, b) = api.call("GET", "/api/v1/me", Some(&t), None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(b["error"]["message"].as_str().unwrap().contains("revoked"));
    // Failed logins are audited as alerts, tokens never appear.
    let all = api.state.store.audit_all().await.unwrap();
    assert!(all
        .iter()
        .any(|r| r.event.kind == "auth.failed" && r.event.severity == store::Severity::Alert));
    let text = serde_json::to_string(&all).unwrap();
    assert!(!text.contains(&t));
}

#[tokio::test]
async fn openapi_lists_every_route_and_every_listed_route_answers() {
    let api = Api::start().await;
    let (s, doc) = api.call("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(s, StatusCode::OK);
    let paths = doc["paths"].as_object().unwrap();
    for (path, item) in paths {
        for method in ["get", "post"] {
            if item.get(method).is_none() {
                continue;
            }
            let concrete = path.replace("{id}", "1");
            let (s, b) = api
                .call(&method.to_uppercase(), &concrete, None, None)
                .await;
            assert!(
                !(s == StatusCode::NOT_FOUND
                    && b["error"]["message"]
                        .as_str()
                        .is_some_and(|m| m.contains("no such endpoint"))),
                "{method} {path} is documented but not routed"
            );
        }
    }
    let (s, b) = api.call("GET", "/api/v1/nothing-here", None, None).await;
    assert_eq!((s, code(&b)), (StatusCode::NOT_FOUND, "not_found"));
}

#[tokio::test]
async fn repeated_failed_logins_are_throttled() {
    let api = Api::start().await;
    let attempt = |pw: &'static str| {
        api.call(
            "POST",
            "/api/v1/login",
            None,
            Some(json!({"user": "alice", "password": pw})),
        )
    };
    for _ in 0..api::auth::LOGIN_LIMIT {
        assert_eq!(attempt("guess").await.0, StatusCode::UNAUTHORIZED);
    }
    // Throttled: even the right password is not checked now.
    let (s, b) = attempt("alice-pw").await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::TOO_MANY_REQUESTS, "too_many_attempts")
    );
    // Other users are not affected.
    assert_eq!(
        api.call(
            "POST",
            "/api/v1/login",
            None,
            Some(json!({"user": "bob", "password": "bob-pw"}))
        )
        .await
        .0,
        StatusCode::OK
    );
    api.clock.advance(Duration::seconds(61));
    assert_eq!(attempt("alice-pw").await.0, StatusCode::OK);
    let all = api.state.store.audit_all().await.unwrap();
    let failed = all.iter().filter(|r| r.event.kind == "auth.failed").count();
    let throttled = all
        .iter()
        .filter(|r| r.event.kind == "auth.throttled")
        .count();
    assert_eq!(
        (failed, throttled),
        (9, 1),
        "one event per checked attempt, none while throttled"
    );
}

#[tokio::test]
async fn admins_see_and_revoke_everything_and_tokens_are_stored_hashed() {
    let api = Api::start().await;
    let alice = api.login("alice").await;
    let bob = api.login("bob").await;
    let root = api.login("root").await;
    assert!(
        api.state.store.token(&alice).await.unwrap().is_none(),
        "the raw token is not stored"
    );
    assert!(api
        .state
        .store
        .token(&api::auth::token_hash(&alice))
        .await
        .unwrap()
        .is_some());
    let (_, b) = api
        .call(
            "POST",
            "/api/v1/requests",
            Some(&alice),
            Some(json!({"role": "app_write", "database": "app", "reason": "r"})),
        )
        .await;
    let id = b["request"]["id"].as_i64().unwrap();
    let (s, _) = api
        .call("GET", &format!("/api/v1/requests/{id}"), Some(&root), None)
        .await;
    assert_eq!(s, StatusCode::OK, "admins see every request");
    let (s, _) = api
        .call(
            "POST",
            &format!("/api/v1/requests/{id}/approve"),
            Some(&root),
            None,
        )
        .await;
    assert_eq!(
        s,
        StatusCode::FORBIDDEN,
        "seeing is not approving: root is not in the chain"
    );
    let (_, b) = api
        .call(
            "POST",
            &format!("/api/v1/requests/{id}/approve"),
            Some(&bob),
            None,
        )
        .await;
    let grant = b["grant"]["id"].as_i64().unwrap();
    let (_, list) = api.call("GET", "/api/v1/grants", Some(&root), None).await;
    assert_eq!(list["grants"].as_array().unwrap().len(), 1);
    let (s, b) = api
        .call(
            "POST",
            &format!("/api/v1/grants/{grant}/revoke"),
            Some(&root),
            Some(json!({"reason": "incident"})),
        )
        .await;
    assert_eq!(
        (s, b["grant"]["state"].as_str()),
        (StatusCode::OK, Some("revoked"))
    );
    let (_, ev) = api
        .call("GET", "/api/v1/audit?kind=grant.revoked", Some(&root), None)
        .await;
    assert_eq!(
        ev["events"][0]["actor"], "root",
        "admins read the audit log too"
    );
    assert_eq!(ev["events"][0]["detail"]["reason"], "incident");
}
