//! The web UI over real HTTP, as a browser without JavaScript uses it: cookie
//! sessions, forms with CSRF tokens, redirects. Security: CSRF, session
//! fixation, someone else's request ids, pages for auditors only.

mod common;

use common::*;
use reqwest::header::{COOKIE, LOCATION, SET_COOKIE};
use reqwest::StatusCode;
use serde_json::json;

struct Page {
    status: StatusCode,
    location: String,
    cookies: Vec<String>,
    body: String,
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn send(req: reqwest::RequestBuilder) -> Page {
    let resp = req.send().await.unwrap();
    let location = resp
        .headers()
        .get(LOCATION)
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let cookies = resp
        .headers()
        .get_all(SET_COOKIE)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    let status = resp.status();
    Page {
        status,
        location,
        cookies,
        body: resp.text().await.unwrap(),
    }
}

/// The value a `Set-Cookie` gives cookie `name`.
fn set(p: &Page, name: &str) -> Option<String> {
    p.cookies.iter().find_map(|c| {
        c.strip_prefix(&format!("{name}="))
            .map(|rest| rest.split(';').next().unwrap().to_string())
    })
}

fn csrf_in(body: &str) -> String {
    let at = body
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    body[at..at + body[at..].find('"').unwrap()].to_string()
}

async fn get(api: &Api, path: &str, session: &str) -> Page {
    send(
        browser()
            .get(format!("{}{path}", api.base))
            .header(COOKIE, format!("jg_session={session}")),
    )
    .await
}

async fn post(api: &Api, path: &str, session: &str, form: &[(&str, &str)]) -> Page {
    send(
        browser()
            .post(format!("{}{path}", api.base))
            .header(COOKIE, format!("jg_session={session}"))
            .form(form),
    )
    .await
}

/// Logs in through the form (with `extra_cookie` sent along); returns the session.
async fn ui_login_with(api: &Api, user: &str, extra_cookie: &str) -> Option<String> {
    let form = send(browser().get(format!("{}/ui/login", api.base))).await;
    let login_cookie = set(&form, "jg_login").expect("login CSRF cookie");
    let done = send(
        browser()
            .post(format!("{}/ui/login", api.base))
            .header(COOKIE, format!("jg_login={login_cookie}; {extra_cookie}"))
            .form(&[
                ("user", user),
                ("password", &format!("{user}-pw")),
                ("csrf", &csrf_in(&form.body)),
            ]),
    )
    .await;
    (done.status == StatusCode::SEE_OTHER).then(|| set(&done, "jg_session").unwrap())
}

async fn ui_login(api: &Api, user: &str) -> String {
    ui_login_with(api, user, "").await.expect("logged in")
}

/// Alice files a request through the API; its id.
async fn alice_request(api: &Api) -> i64 {
    let alice = api.login("alice").await;
    let (s, b) = api
        .call(
            "POST",
            "/api/v1/requests",
            Some(&alice),
            Some(
                json!({"role": "app_write", "database": "app", "reason": "fix order 7",
                        "statement": "DELETE FROM orders WHERE id = 7"}),
            ),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    b["request"]["id"].as_i64().unwrap()
}

#[tokio::test]
async fn bob_approves_from_the_inbox_and_sees_the_grant() {
    let api = Api::start().await;
    let id = alice_request(&api).await;
    let bob = ui_login(&api, "bob").await;
    let inbox = get(&api, "/ui/inbox", &bob).await;
    assert_eq!(inbox.status, StatusCode::OK);
    for part in [
        &format!("Request {id}"),
        "alice asks for",
        "fix order 7",
        "DELETE FROM orders WHERE id = 7",
        "Approve",
    ] {
        assert!(inbox.body.contains(part), "{part} missing from the inbox");
    }
    let csrf = csrf_in(&inbox.body);
    let done = post(
        &api,
        &format!("/ui/requests/{id}/decide"),
        &bob,
        &[("csrf", &csrf), ("decision", "approve"), ("comment", "go")],
    )
    .await;
    assert_eq!(done.status, StatusCode::SEE_OTHER);
    assert!(
        done.location.starts_with("/ui/grants?notice="),
        "{}",
        done.location
    );
    let grants = get(&api, &done.location, &bob).await;
    assert!(
        grants.body.contains("Grant 1: alice holds"),
        "{}",
        grants.body
    );
    assert!(grants.body.contains("data-expires="));
    assert!(grants.body.contains("approved: grant 1"));
    // The decision is in the inbox no more.
    let inbox = get(&api, "/ui/inbox", &bob).await;
    assert!(inbox.body.contains("Nothing waits for you"));
}

#[tokio::test]
async fn alice_cannot_approve_her_own_request() {
    let api = Api::start().await;
    let id = alice_request(&api).await;
    let alice = ui_login(&api, "alice").await;
    let page = get(&api, &format!("/ui/requests/{id}"), &alice).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        !page.body.contains(">Approve<"),
        "no approve button for her"
    );
    assert!(page.body.contains("Withdraw request"));
    // A forged form, with her own valid CSRF token, is refused and audited.
    let done = post(
        &api,
        &format!("/ui/requests/{id}/decide"),
        &alice,
        &[("csrf", &csrf_in(&page.body)), ("decision", "approve")],
    )
    .await;
    assert!(done.location.contains("error="), "{}", done.location);
    let r = api.state.store.request(id).await.unwrap().unwrap();
    assert_eq!(r.value.state.as_str(), "pending");
    let audit = api.state.store.audit_all().await.unwrap();
    assert!(audit
        .iter()
        .any(|e| e.event.kind == "decision.refused" && e.event.severity.as_str() == "alert"));
}

#[tokio::test]
async fn forms_without_this_sessions_csrf_token_are_refused() {
    let api = Api::start().await;
    let id = alice_request(&api).await;
    let bob = ui_login(&api, "bob").await;
    let carol = ui_login(&api, "carol").await;
    let carols = csrf_in(&get(&api, "/ui/inbox", &carol).await.body);
    for form in [
        vec![("decision", "approve")],
        vec![("csrf", "0000"), ("decision", "approve")],
        vec![("csrf", carols.as_str()), ("decision", "approve")],
    ] {
        let done = post(&api, &format!("/ui/requests/{id}/decide"), &bob, &form).await;
        assert!(
            done.status == StatusCode::FORBIDDEN || done.status == StatusCode::UNPROCESSABLE_ENTITY,
            "{form:?}: {}",
            done.status
        );
    }
    let r = api.state.store.request(id).await.unwrap().unwrap();
    assert_eq!(r.value.state.as_str(), "pending", "nothing changed");
    // The login form needs its own cookie back.
    let bare = send(browser().post(format!("{}/ui/login", api.base)).form(&[
        ("user", "bob"),
        ("password", "bob-pw"),
        ("csrf", "x"),
    ]))
    .await;
    assert_eq!(bare.status, StatusCode::FORBIDDEN);
    assert!(set(&bare, "jg_session").is_none());
}

#[tokio::test]
async fn a_planted_session_cookie_never_becomes_a_session() {
    let api = Api::start().await;
    let planted = "jg_attacker_chosen_value";
    let page = get(&api, "/ui/inbox", planted).await;
    assert_eq!(page.status, StatusCode::SEE_OTHER);
    assert_eq!(page.location, "/ui/login");
    let session = ui_login_with(&api, "bob", &format!("jg_session={planted}"))
        .await
        .unwrap();
    assert_ne!(session, planted);
    assert_eq!(
        get(&api, "/ui/inbox", &session).await.status,
        StatusCode::OK
    );
    assert_eq!(
        get(&api, "/ui/inbox", planted).await.status,
        StatusCode::SEE_OTHER
    );
    // A wrong password gets no session at all.
    let form = send(browser().get(format!("{}/ui/login", api.base))).await;
    let bad = send(
        browser()
            .post(format!("{}/ui/login", api.base))
            .header(
                COOKIE,
                format!("jg_login={}", set(&form, "jg_login").unwrap()),
            )
            .form(&[
                ("user", "bob"),
                ("password", "nope"),
                ("csrf", &csrf_in(&form.body)),
            ]),
    )
    .await;
    assert_eq!(bad.status, StatusCode::UNAUTHORIZED);
    assert!(set(&bad, "jg_session").is_none());
    // Logging out ends the session for good.
    let inbox = get(&api, "/ui/inbox", &session).await;
    let out = post(
        &api,
        "/ui/logout",
        &session,
        &[("csrf", &csrf_in(&inbox.body))],
    )
    .await;
    assert_eq!(out.location, "/ui/login");
    assert_eq!(
        get(&api, "/ui/inbox", &session).await.status,
        StatusCode::SEE_OTHER
    );
}

#[tokio::test]
async fn someone_elses_request_ids_look_missing() {
    let api = Api::start().await;
    let id = alice_request(&api).await;
    let eve = ui_login(&api, "eve").await;
    let page = get(&api, &format!("/ui/requests/{id}"), &eve).await;
    assert_eq!(page.status, StatusCode::NOT_FOUND);
    assert!(!page.body.contains("fix order 7"));
    let csrf = csrf_in(&page.body);
    for action in ["cancel", "decide"] {
        let done = post(
            &api,
            &format!("/ui/requests/{id}/{action}"),
            &eve,
            &[("csrf", &csrf), ("decision", "deny")],
        )
        .await;
        assert_eq!(done.status, StatusCode::NOT_FOUND, "{action}");
    }
    let missing = get(&api, "/ui/requests/999", &eve).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
    let r = api.state.store.request(id).await.unwrap().unwrap();
    assert_eq!(r.value.state.as_str(), "pending");
}

#[tokio::test]
async fn audit_and_scan_are_for_auditors_and_the_audit_page_verifies() {
    let api = Api::start().await;
    alice_request(&api).await;
    let alice = ui_login(&api, "alice").await;
    assert_eq!(
        get(&api, "/ui/audit", &alice).await.status,
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        get(&api, "/ui/scan", &alice).await.status,
        StatusCode::FORBIDDEN
    );
    let carol = ui_login(&api, "carol").await;
    let page = get(&api, "/ui/audit?kind=request.&user=alice", &carol).await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(page.body.contains("Hash chain intact"), "{}", page.body);
    assert!(page.body.contains("request.filed"));
    assert!(!page.body.contains("auth.login<"), "filtered by kind");
    // One readable line per event; the JSON detail one click away.
    assert!(
        page.body
            .contains("alice asks for app_write on app (request 1)"),
        "{}",
        page.body
    );
    assert!(page
        .body
        .contains("<details><summary><code>request.filed</code>"));
    assert!(page.body.contains("<td class=\"when\">"));
    let scan = get(&api, "/ui/scan", &carol).await;
    assert!(scan.body.contains("not available in this process"));
}

#[tokio::test]
async fn pages_hear_about_changes_through_server_sent_events() {
    let api = Api::start().await;
    let bob = ui_login(&api, "bob").await;
    let mut resp = browser()
        .get(format!("{}/ui/events", api.base))
        .header(COOKIE, format!("jg_session={bob}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.headers()["content-type"].to_str().unwrap(),
        "text/event-stream"
    );
    let first = String::from_utf8(resp.chunk().await.unwrap().unwrap().to_vec()).unwrap();
    assert!(first.contains("event: changed"), "{first}");
    alice_request(&api).await;
    let next = tokio::time::timeout(std::time::Duration::from_secs(5), resp.chunk())
        .await
        .expect("an event after the change")
        .unwrap()
        .unwrap();
    assert!(String::from_utf8_lossy(&next).contains("event: changed"));
    // Without a session: no stream.
    let anon = send(browser().get(format!("{}/ui/events", api.base))).await;
    assert_eq!(anon.status, StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn revoke_and_relinquish_from_the_grants_page() {
    let api = Api::start().await;
    let bob_token = api.login("bob").await;
    let id = alice_request(&api).await;
    let (_, b) = api
        .call(
            "POST",
            &format!("/api/v1/requests/{id}/approve"),
            Some(&bob_token),
            None,
        )
        .await;
    let g = b["grant"]["id"].as_i64().unwrap();
    let alice = ui_login(&api, "alice").await;
    let page = get(&api, "/ui/grants", &alice).await;
    assert!(page.body.contains("Relinquish"));
    assert!(
        !page.body.contains(">Revoke<"),
        "the holder relinquishes, approvers revoke"
    );
    let eve = ui_login(&api, "eve").await;
    let eves = csrf_in(&get(&api, "/ui/inbox", &eve).await.body);
    let done = post(
        &api,
        &format!("/ui/grants/{g}/revoke"),
        &eve,
        &[("csrf", &eves)],
    )
    .await;
    assert_eq!(
        done.status,
        StatusCode::NOT_FOUND,
        "eve cannot see alice's grant"
    );
    let done = post(
        &api,
        &format!("/ui/grants/{g}/relinquish"),
        &eve,
        &[("csrf", &eves)],
    )
    .await;
    assert_eq!(done.status, StatusCode::NOT_FOUND);
    let bob = ui_login(&api, "bob").await;
    let page = get(&api, "/ui/grants", &bob).await;
    assert!(page.body.contains(">Revoke<"));
    let done = post(
        &api,
        &format!("/ui/grants/{g}/revoke"),
        &bob,
        &[("csrf", &csrf_in(&page.body)), ("reason", "done for today")],
    )
    .await;
    assert!(
        done.location.starts_with("/ui/grants?notice="),
        "{}",
        done.location
    );
    let ended = api.state.store.grant(g).await.unwrap().unwrap().value;
    assert_eq!(ended.state.as_str(), "revoked");
    assert_eq!(ended.ended_by.as_deref(), Some("bob"));
    // Relinquishing an ended grant says why, without a change.
    let page = get(&api, "/ui/grants", &alice).await;
    let done = post(
        &api,
        &format!("/ui/grants/{g}/relinquish"),
        &alice,
        &[("csrf", &csrf_in(&page.body))],
    )
    .await;
    assert!(done.location.contains("error="), "{}", done.location);
}

#[tokio::test]
async fn an_open_event_stream_never_holds_up_a_shutdown() {
    let api = Api::start().await;
    let bob = ui_login(&api, "bob").await;
    // A second server on the same state, which this test stops.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(api::serve(listener, api.state.clone(), async {
        let _ = stopped.await;
    }));
    let mut events = browser()
        .get(format!("{base}/ui/events"))
        .header(COOKIE, format!("jg_session={bob}"))
        .send()
        .await
        .unwrap();
    assert!(
        events.chunk().await.unwrap().is_some(),
        "the stream is open"
    );
    stop.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("the server stopped with a browser still listening")
        .unwrap()
        .unwrap();
}

/// An inspector with one database whose rule[0] PUBLIC can already do.
struct OneUnbackedRule;

#[async_trait::async_trait]
impl api::inspect::Inspector for OneUnbackedRule {
    async fn blast_radius(
        &self,
        _: &str,
        _: &str,
        _: &str,
        _: &str,
    ) -> Result<api::inspect::BlastRadius, String> {
        Err("not here".into())
    }
    async fn scan(&self, _: &str) -> Result<Vec<serde_json::Value>, String> {
        Ok(Vec::new())
    }
    async fn unbacked_rules(&self, _: &str) -> Result<Vec<serde_json::Value>, String> {
        Ok(vec![json!({
            "rule": "rule[0] (write on public.* -> app_write)",
            "gaps": ["PUBLIC can UPDATE public.notes"],
            "revoke": ["REVOKE UPDATE ON TABLE public.notes FROM PUBLIC;"],
        })])
    }
}

#[tokio::test]
async fn the_scan_page_shows_rules_the_database_does_not_back() {
    let api = Api::start().await;
    let _ = api
        .state
        .inspector
        .set(std::sync::Arc::new(OneUnbackedRule));
    let carol = ui_login(&api, "carol").await;
    let scan = get(&api, "/ui/scan", &carol).await;
    assert_eq!(scan.status, StatusCode::OK);
    for part in [
        "Rules the database does not back",
        "rule[0] (write on public.* -&#62; app_write)",
        "PUBLIC can UPDATE public.notes",
        "REVOKE UPDATE ON TABLE public.notes FROM PUBLIC;",
    ] {
        assert!(scan.body.contains(part), "{part} missing: {}", scan.body);
    }
}
