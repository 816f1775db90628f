//! The pages (GET) and the forms they post (POST). Every form checks the
//! session's CSRF token; every action goes through [`crate::actions`], the
//! same code the JSON API runs.

use super::session::UiUser;
use super::views::*;
use crate::actions;
use crate::error::ApiError;
use crate::AppState;
use askama::Template;
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use std::sync::Arc;
use store::{AuditFilter, GrantFilter, RequestFilter};

type S = State<Arc<AppState>>;

/// `?notice=` / `?error=` after a form, shown once as a banner.
#[derive(Deserialize, Default)]
pub struct Flash {
    notice: Option<String>,
    error: Option<String>,
}

pub fn chrome(state: &AppState, u: &UiUser, page: &'static str, flash: Flash) -> Chrome {
    Chrome {
        user: u.user.clone(),
        csrf: u.csrf.clone(),
        auditor: state.is_auditor(&u.user),
        page,
        notice: flash.notice,
        error: flash.error,
        live: true,
    }
}

pub fn render(t: impl Template) -> Response {
    match t.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "rendering a page");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "page could not be rendered",
            )
                .into_response()
        }
    }
}

/// An error as a page: 404 and 403 keep their status; others too.
fn error_page(state: &AppState, u: &UiUser, e: ApiError) -> Response {
    let status = e.status;
    let mut c = chrome(state, u, "", Flash::default());
    c.live = false;
    let page = MessagePage {
        chrome: c,
        heading: status.canonical_reason().unwrap_or("Error").to_string(),
        text: e.message,
    };
    (status, render(page)).into_response()
}

fn back(to: &str, key: &str, message: &str) -> Response {
    let q: String = url_escape(message);
    Redirect::to(&format!("{to}?{key}={q}")).into_response()
}

fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Adds the planner's estimate to a request that carries a statement. Kept
/// for a minute per request: pages reload on every change, and each preview
/// is a database round trip.
async fn with_preview(state: &AppState, mut v: RequestView) -> RequestView {
    let (Some(inspector), Some(sql)) = (state.inspector.get(), v.previewable()) else {
        return v;
    };
    if let Some(p) = state.previews.get(v.id) {
        v.preview = Some(Preview {
            summary: p.summary,
            plan: p.plan,
        });
        return v;
    }
    let sql = sql.to_string();
    let result = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        inspector.blast_radius(&v.database, &v.user, &v.role, &sql),
    )
    .await
    .unwrap_or_else(|_| Err("the preview timed out".into()));
    v.preview = Some(match result {
        Ok(b) => {
            state.previews.put(v.id, b.clone());
            Preview {
                summary: b.summary,
                plan: b.plan,
            }
        }
        Err(e) => Preview {
            summary: format!("no preview: {e}"),
            plan: String::new(),
        },
    });
    v
}

pub async fn inbox(State(state): S, u: UiUser, Query(flash): Query<Flash>) -> Response {
    let filter = RequestFilter {
        user: None,
        state: Some("pending".into()),
    };
    let pending = match state.store.requests(&filter).await {
        Ok(r) => r,
        Err(e) => return error_page(&state, &u, e.into()),
    };
    let now = state.clock.now();
    let mut requests = Vec::new();
    for r in pending
        .iter()
        .filter(|r| r.check_eligible(&state.policy, &u.user, now).is_ok())
    {
        requests.push(with_preview(&state, RequestView::new(&state, &u.user, r)).await);
    }
    render(InboxPage {
        chrome: chrome(&state, &u, "inbox", flash),
        requests,
    })
}

pub async fn mine(State(state): S, u: UiUser, Query(flash): Query<Flash>) -> Response {
    let filter = RequestFilter {
        user: Some(u.user.clone()),
        state: None,
    };
    match state.store.requests(&filter).await {
        Ok(mut rs) => {
            rs.sort_by_key(|r| std::cmp::Reverse(r.id));
            let requests = rs
                .iter()
                .take(100)
                .map(|r| RequestView::new(&state, &u.user, r))
                .collect();
            render(RequestsPage {
                chrome: chrome(&state, &u, "requests", flash),
                requests,
            })
        }
        Err(e) => error_page(&state, &u, e.into()),
    }
}

pub async fn request(
    State(state): S,
    u: UiUser,
    Path(id): Path<i64>,
    Query(flash): Query<Flash>,
) -> Response {
    match actions::load_request(&state, &u.user, id).await {
        Ok(r) => {
            let v = with_preview(&state, RequestView::new(&state, &u.user, &r)).await;
            render(RequestPage {
                chrome: chrome(&state, &u, "", flash),
                r: v,
            })
        }
        Err(e) => error_page(&state, &u, e),
    }
}

#[derive(Deserialize)]
pub struct DecideForm {
    csrf: String,
    decision: String,
    #[serde(default)]
    comment: String,
}

pub async fn decide(
    State(state): S,
    u: UiUser,
    Path(id): Path<i64>,
    Form(f): Form<DecideForm>,
) -> Response {
    if let Some(r) = u.check_csrf(&f.csrf) {
        return r;
    }
    let approve = match f.decision.as_str() {
        "approve" => true,
        "deny" => false,
        _ => return back("/ui/inbox", "error", "choose approve or deny"),
    };
    let here = format!("/ui/requests/{id}");
    match actions::decide(&state, &u.user, id, approve, &f.comment).await {
        Ok((r, grant)) => {
            let msg = match (&grant, r.state) {
                (Some(g), _) => format!(
                    "Request {id} approved: grant {} for {} is active until {}",
                    g.id,
                    g.user,
                    when(&g.expires_at)
                ),
                (None, policy::RequestState::Denied) => format!("Request {id} denied"),
                _ => format!("Your approval of request {id} is recorded; the next stage decides"),
            };
            let to = if grant.is_some() {
                "/ui/grants"
            } else {
                "/ui/inbox"
            };
            back(to, "notice", &msg)
        }
        Err(e) if e.status == StatusCode::NOT_FOUND => error_page(&state, &u, e),
        Err(e) => back(&here, "error", &e.message),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
    #[serde(default)]
    reason: String,
}

/// A form that does one thing: CSRF first, then `action`; back to `to` with
/// `done` or the error (someone else's id is a 404 page, as in the API).
async fn form_action<T>(
    state: &AppState,
    u: &UiUser,
    csrf: &str,
    to: &str,
    done: String,
    action: impl std::future::Future<Output = Result<T, ApiError>>,
) -> Response {
    if let Some(r) = u.check_csrf(csrf) {
        return r;
    }
    match action.await {
        Ok(_) => back(to, "notice", &done),
        Err(e) if e.status == StatusCode::NOT_FOUND => error_page(state, u, e),
        Err(e) => back(to, "error", &e.message),
    }
}

pub async fn cancel(
    State(state): S,
    u: UiUser,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let action = actions::cancel(&state, &u.user, id);
    let done = format!("Request {id} withdrawn");
    form_action(&state, &u, &f.csrf, "/ui/requests", done, action).await
}

pub async fn revoke(
    State(state): S,
    u: UiUser,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let action = actions::revoke(&state, &u.user, id, &f.reason);
    let done = format!("Grant {id} revoked");
    form_action(&state, &u, &f.csrf, "/ui/grants", done, action).await
}

pub async fn relinquish(
    State(state): S,
    u: UiUser,
    Path(id): Path<i64>,
    Form(f): Form<CsrfForm>,
) -> Response {
    let action = actions::relinquish(&state, &u.user, id);
    let done = format!("Grant {id} relinquished");
    form_action(&state, &u, &f.csrf, "/ui/grants", done, action).await
}

pub async fn grants(State(state): S, u: UiUser, Query(flash): Query<Flash>) -> Response {
    let filter = GrantFilter {
        user: None,
        active_only: true,
    };
    let now = state.clock.now();
    match state.store.grants(&filter).await {
        Ok(gs) => {
            let grants = gs
                .iter()
                .filter(|g| g.is_active(now) && actions::grant_visible(&state, &u.user, g))
                .map(|g| GrantView::new(&state, &u.user, g))
                .collect();
            render(GrantsPage {
                chrome: chrome(&state, &u, "grants", flash),
                grants,
            })
        }
        Err(e) => error_page(&state, &u, e.into()),
    }
}

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    user: String,
    #[serde(default)]
    role: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    since: String,
}

fn forbidden(state: &AppState, u: &UiUser, what: &str) -> Response {
    error_page(
        state,
        u,
        ApiError::forbidden(format!("{what} is for the auditors and admins groups")),
    )
}

pub async fn audit(State(state): S, u: UiUser, Query(q): Query<AuditQuery>) -> Response {
    if !state.is_auditor(&u.user) {
        return forbidden(&state, &u, "the audit log");
    }
    let since = if q.since.trim().is_empty() {
        None
    } else {
        match chrono::DateTime::parse_from_rfc3339(q.since.trim()) {
            Ok(t) => Some(t.with_timezone(&chrono::Utc)),
            Err(_) => {
                return back(
                    "/ui/audit",
                    "error",
                    "since: use a time like 2026-11-29T08:00:00Z",
                )
            }
        }
    };
    let filter = AuditFilter {
        actor: Some(q.user.trim().to_string()).filter(|s| !s.is_empty()),
        kind_prefix: Some(q.kind.trim().to_string()).filter(|s| !s.is_empty()),
        since,
        limit: Some(500),
    };
    let (records, all) = match (
        state.store.audit(&filter).await,
        state.store.audit_all().await,
    ) {
        (Ok(r), Ok(a)) => (r, a),
        (Err(e), _) | (_, Err(e)) => return error_page(&state, &u, e.into()),
    };
    let v = store::audit::verify(&all);
    let verify = match (v.ok, v.first_bad_seq) {
        (true, _) => format!("Hash chain intact: {} events verified", v.records),
        (false, Some(seq)) => format!(
            "Hash chain BROKEN at event {seq}: {}",
            v.problem.unwrap_or_default()
        ),
        (false, None) => "Hash chain BROKEN".to_string(),
    };
    let role = q.role.trim();
    let events = records
        .into_iter()
        .filter(|r| role.is_empty() || r.event.detail["role"].as_str() == Some(role))
        .map(|r| AuditRow {
            seq: r.seq,
            at: when(&r.event.at),
            line: crate::describe::line(&r),
            alert: r.event.severity == store::Severity::Alert,
            kind: r.event.kind,
            actor: r.event.actor,
            subject: r.event.subject,
            detail: serde_json::to_string_pretty(&r.event.detail).unwrap_or_default(),
        })
        .collect();
    let mut c = chrome(&state, &u, "audit", Flash::default());
    c.live = false;
    render(AuditPage {
        chrome: c,
        verified: v.ok,
        verify,
        f_user: q.user,
        f_role: q.role,
        f_kind: q.kind,
        f_since: q.since,
        events,
    })
}

pub async fn scan(State(state): S, u: UiUser) -> Response {
    if !state.is_auditor(&u.user) {
        return forbidden(&state, &u, "the scan report");
    }
    let mut databases = Vec::new();
    for db in &state.config.databases {
        let result = match state.inspector.get() {
            Some(i) => i.scan(&db.name).await,
            None => Err("not available in this process".into()),
        };
        let (rows, granted, error) = match result {
            Ok(rows) => {
                let (standing, granted): (Vec<_>, Vec<_>) =
                    rows.iter().partition(|r| r["standing"] != false);
                let line = |r: &&serde_json::Value| {
                    let why: Vec<&str> = r["why"]
                        .as_array()
                        .map(|a| a.iter().filter_map(|w| w.as_str()).collect())
                        .unwrap_or_default();
                    (
                        r["login"].as_str().unwrap_or("?").to_string(),
                        why.join(", "),
                    )
                };
                (
                    standing.iter().map(line).collect(),
                    granted.iter().map(line).collect(),
                    None,
                )
            }
            Err(e) => (Vec::new(), Vec::new(), Some(e)),
        };
        let strings = |v: &serde_json::Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        };
        let unbacked = match state.inspector.get() {
            Some(i) => i.unbacked_rules(&db.name).await.unwrap_or_default(),
            None => Vec::new(),
        }
        .iter()
        .map(|r| {
            (
                r["rule"].as_str().unwrap_or("?").to_string(),
                strings(&r["gaps"]).join("; "),
                strings(&r["revoke"]).join(" "),
            )
        })
        .collect();
        databases.push(ScanDb {
            name: db.name.clone(),
            unbacked,
            rows,
            granted,
            error,
        });
    }
    let mut c = chrome(&state, &u, "scan", Flash::default());
    c.live = false;
    render(ScanPage {
        chrome: c,
        databases,
    })
}
