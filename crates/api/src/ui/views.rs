//! What the templates show, built from requests and grants. The templates
//! (in `crates/api/templates/`) are compiled into the binary by askama and
//! escape everything they print.

use crate::AppState;
use askama::Template;
use policy::{Grant, Request, RequestState, Time};

/// The frame of every page.
pub struct Chrome {
    pub user: String,
    pub csrf: String,
    pub auditor: bool,
    pub page: &'static str,
    pub notice: Option<String>,
    pub error: Option<String>,
    /// Whether the page refreshes itself when state changes.
    pub live: bool,
}

pub fn when(t: &Time) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

pub fn span(secs: i64) -> String {
    let s = secs.max(0);
    let (h, m, x) = (s / 3600, (s % 3600) / 60, s % 60);
    match (h, m) {
        (0, 0) => format!("{x}s"),
        (0, _) => format!("{m}m {x}s"),
        _ => format!("{h}h {m}m {x}s"),
    }
}

pub struct Preview {
    pub summary: String,
    pub plan: String,
}

pub struct StageView {
    pub number: usize,
    pub approvers: String,
    pub min: u32,
    pub approved_by: String,
    pub status: &'static str,
    pub class: &'static str,
    pub escalation: String,
}

pub struct DecisionView {
    pub approver: String,
    pub stage: usize,
    pub verdict: &'static str,
    pub class: &'static str,
    pub comment: String,
    pub at: String,
}

pub struct RequestView {
    pub id: i64,
    pub user: String,
    /// Who the requester is at their identity provider ("subject at issuer").
    pub identity: Option<String>,
    pub role: String,
    pub database: String,
    pub reason: String,
    pub state: &'static str,
    pub state_class: &'static str,
    pub pending: bool,
    pub duration: String,
    pub filed: String,
    pub left: String,
    pub expires_epoch: i64,
    pub statement: Option<String>,
    pub trigger: Option<String>,
    pub preview: Option<Preview>,
    pub stages: Vec<StageView>,
    pub decisions: Vec<DecisionView>,
    pub can_decide: bool,
    pub can_cancel: bool,
}

impl RequestView {
    pub fn new(state: &AppState, viewer: &str, r: &Request) -> RequestView {
        let now = state.clock.now();
        let pending = r.state == RequestState::Pending && now < r.expires_at;
        let chain = state
            .policy
            .role(&r.role)
            .map(|p| p.chain.clone())
            .unwrap_or_default();
        let stages = chain
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let approved_by: Vec<&str> = r
                    .decisions
                    .iter()
                    .filter(|d| d.stage == i && d.approve)
                    .map(|d| d.approver.as_str())
                    .collect();
                let (status, class) = if i < r.stage || r.state == RequestState::Approved {
                    ("done", "ok")
                } else if i == r.stage && pending {
                    ("deciding now", "warn")
                } else {
                    ("waiting", "")
                };
                let escalation = match s.escalate_after {
                    Some(after) if i == r.stage && pending => {
                        let to = s.escalate_to.iter().cloned().collect::<Vec<_>>().join(", ");
                        if r.escalated {
                            format!("escalated to {to}")
                        } else {
                            let left = (r.stage_started_at + after - now).num_seconds();
                            format!("escalates to {to} in {}", span(left))
                        }
                    }
                    _ => String::new(),
                };
                StageView {
                    number: i + 1,
                    approvers: s.approvers.iter().cloned().collect::<Vec<_>>().join(", "),
                    min: s.min,
                    approved_by: approved_by.join(", "),
                    status,
                    class,
                    escalation,
                }
            })
            .collect();
        let decisions = r
            .decisions
            .iter()
            .map(|d| DecisionView {
                approver: d.approver.clone(),
                stage: d.stage + 1,
                verdict: if d.approve { "approved" } else { "denied" },
                class: if d.approve { "ok" } else { "bad" },
                comment: d.comment.clone(),
                at: when(&d.at),
            })
            .collect();
        let state_class = match r.state {
            RequestState::Approved => "ok",
            RequestState::Denied => "bad",
            RequestState::Pending => "warn",
            _ => "",
        };
        RequestView {
            id: r.id,
            user: r.user.clone(),
            identity: r
                .requester_idp
                .as_ref()
                .map(|i| format!("{} at {} ({})", i.subject, i.issuer, i.provider)),
            role: r.role.clone(),
            database: r.database.clone(),
            reason: r.reason.clone(),
            state: if r.state == RequestState::Pending && !pending {
                "expired"
            } else {
                r.state.as_str()
            },
            state_class,
            pending,
            duration: span(r.duration_secs),
            filed: when(&r.created_at),
            left: span((r.expires_at - now).num_seconds()),
            expires_epoch: r.expires_at.timestamp(),
            statement: r.statement.clone(),
            trigger: r.trigger.clone(),
            preview: None,
            stages,
            decisions,
            can_decide: pending && r.check_eligible(&state.policy, viewer, now).is_ok(),
            can_cancel: pending && r.user == viewer,
        }
    }

    /// The statement whose blast radius is worth showing, if any.
    pub fn previewable(&self) -> Option<&str> {
        self.statement.as_deref().or(self.trigger.as_deref())
    }
}

pub struct GrantView {
    pub id: i64,
    pub user: String,
    pub role: String,
    pub database: String,
    pub request_id: i64,
    pub statement: Option<String>,
    pub starts: String,
    pub expires: String,
    pub expires_epoch: i64,
    pub left: String,
    pub can_revoke: bool,
    pub can_relinquish: bool,
}

impl GrantView {
    pub fn new(state: &AppState, viewer: &str, g: &Grant) -> GrantView {
        let now = state.clock.now();
        GrantView {
            id: g.id,
            user: g.user.clone(),
            role: g.role.clone(),
            database: g.database.clone(),
            request_id: g.request_id,
            statement: g.statement.clone(),
            starts: when(&g.starts_at),
            expires: when(&g.expires_at),
            expires_epoch: g.expires_at.timestamp(),
            left: format!("{} left", span((g.expires_at - now).num_seconds())),
            can_revoke: crate::actions::may_revoke(state, viewer, g),
            can_relinquish: g.user == viewer,
        }
    }
}

pub struct AuditRow {
    pub seq: i64,
    pub at: String,
    /// Who did what to which request, grant or statement (`describe::line`).
    pub line: String,
    pub kind: String,
    pub alert: bool,
    pub actor: String,
    pub subject: String,
    pub detail: String,
}

pub struct ScanDb {
    pub name: String,
    pub rows: Vec<(String, String)>,
    /// Logins holding managed roles only through active grants: (login, what until when).
    pub granted: Vec<(String, String)>,
    pub error: Option<String>,
    /// Rules the database does not back: (rule, what baseline roles or
    /// PUBLIC can do, the REVOKEs that would back it).
    pub unbacked: Vec<(String, String, String)>,
}

#[derive(Template)]
#[template(path = "inbox.html")]
pub struct InboxPage {
    pub chrome: Chrome,
    pub requests: Vec<RequestView>,
}

#[derive(Template)]
#[template(path = "requests.html")]
pub struct RequestsPage {
    pub chrome: Chrome,
    pub requests: Vec<RequestView>,
}

#[derive(Template)]
#[template(path = "request.html")]
pub struct RequestPage {
    pub chrome: Chrome,
    pub r: RequestView,
}

#[derive(Template)]
#[template(path = "grants.html")]
pub struct GrantsPage {
    pub chrome: Chrome,
    pub grants: Vec<GrantView>,
}

#[derive(Template)]
#[template(path = "audit.html")]
pub struct AuditPage {
    pub chrome: Chrome,
    pub verified: bool,
    pub verify: String,
    pub f_user: String,
    pub f_role: String,
    pub f_kind: String,
    pub f_since: String,
    pub events: Vec<AuditRow>,
}

#[derive(Template)]
#[template(path = "scan.html")]
pub struct ScanPage {
    pub chrome: Chrome,
    pub databases: Vec<ScanDb>,
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub csrf: String,
    pub error: Option<String>,
    /// `[[identity_provider]]` names: a "Sign in with" link each.
    pub providers: Vec<String>,
    /// Whether the user/password form is shown (`password_login`).
    pub passwords: bool,
}

#[derive(Template)]
#[template(path = "message.html")]
pub struct MessagePage {
    pub chrome: Chrome,
    pub heading: String,
    pub text: String,
}
