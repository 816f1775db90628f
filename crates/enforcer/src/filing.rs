//! A statement that needs a grant it does not have: file (or reuse) the
//! request, then answer per `on_missing_grant` — `reject` refuses at once with
//! everything needed to follow up, `hold` keeps the statement until the
//! request is decided, `hold_timeout` passes, or the client cancels.

use crate::hook::{written_ahead, HookState};
use config::OnMissingGrant;
use policy::classify::ActionKind;
use policy::{GrantEnd, Request, RequestState};
use proxy::{Check, Session, Verdict};
use std::sync::Arc;
use std::time::Duration;
use wire::backend::{ErrorFields, Severity};

/// What was filed for a refused statement.
struct Filed {
    request: Request,
    new: bool,
    approvers: String,
}

/// The deferred answer for a statement that needs `role` (or, with
/// `each`, its own approval by `role`'s chain).
pub fn missing_grant(
    st: Arc<HookState>,
    session: Arc<Session>,
    text: String,
    kind: ActionKind,
    role: String,
    each: bool,
) -> Check {
    Check::Wait(Box::pin(async move {
        if !each && approved_but_not_applied(&st, &session, &role).await {
            if let Some(g) =
                st.grants
                    .role_grant(&session.user, &session.database, &role, st.clock.now())
            {
                let recorded = st.ran_under_grant(&session, &text, kind.as_str(), &role, g);
                return written_ahead(vec![recorded]).await;
            }
        }
        let filed = match file(&st, &session, &text, &role, each).await {
            Ok(f) => f,
            Err(err) => {
                let err = st.refuse(&session, &text, kind.as_str(), Some(&role), err, true);
                return Verdict::Refuse(err);
            }
        };
        match st.config.gateway.on_missing_grant {
            OnMissingGrant::Reject => {
                let err = rejection(&st, &filed, &session, &role, each);
                Verdict::Refuse(st.refuse(&session, &text, kind.as_str(), Some(&role), err, true))
            }
            OnMissingGrant::Hold => hold(&st, &session, &text, kind, &role, each, &filed).await,
        }
    }))
}

/// The refusal for a statement PostgreSQL refused (see [`crate::denied`]):
/// the request for `role` filed or reused, and the same message as a refusal
/// the gateway predicted (in `hold` mode too, when the statement cannot run
/// again: see [`hold_refused`]).
pub async fn explain_refusal(st: &HookState, s: &Session, text: &str, role: &str) -> ErrorFields {
    let err = match file(st, s, text, role, false).await {
        Ok(filed) => rejection(st, &filed, s, role, false),
        Err(err) => err,
    };
    st.refuse(s, text, "unknown", Some(role), err, true)
}

/// `hold` mode for a statement PostgreSQL refused that the relay can run
/// again: the request filed or reused, then held as a predicted refusal is.
pub async fn hold_refused(
    st: &Arc<HookState>,
    s: &Arc<Session>,
    text: &str,
    role: &str,
) -> Verdict {
    match file(st, s, text, role, false).await {
        Ok(filed) => hold(st, s, text, ActionKind::Unknown, role, false, &filed).await,
        Err(err) => Verdict::Refuse(st.refuse(s, text, "unknown", Some(role), err, true)),
    }
}

/// An approval lands in the store a moment before the enforcer has granted
/// the role in the database: a statement arriving in that moment waits for
/// it (briefly) instead of filing a second request. True once it is applied.
async fn approved_but_not_applied(st: &HookState, s: &Session, role: &str) -> bool {
    let filter = store::GrantFilter {
        user: Some(s.user.clone()),
        active_only: true,
    };
    let now = st.clock.now();
    let in_store = match st.store.grants(&filter).await {
        Ok(gs) => gs.iter().any(|g| {
            g.role == role && g.database == s.database && g.statement.is_none() && g.is_active(now)
        }),
        Err(_) => false,
    };
    if !in_store {
        return false;
    }
    st.changed.changed();
    let mut changes = st.grants.subscribe();
    let deadline = tokio::time::Instant::now() + APPLY_WAIT;
    loop {
        if st
            .grants
            .role_grant(&s.user, &s.database, role, st.clock.now())
            .is_some()
        {
            return true;
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep_until(deadline) => return false,
        }
    }
}

/// How long a statement waits for an approved grant to be applied.
const APPLY_WAIT: Duration = Duration::from_secs(5);

async fn file(
    st: &HookState,
    s: &Session,
    text: &str,
    role: &str,
    each: bool,
) -> Result<Filed, ErrorFields> {
    let reason = s.notes.lock().unwrap().reason.clone().unwrap_or_default();
    let now = st.clock.now();
    let window = if each {
        let max = st.policy.role(role).map(|r| r.max_duration);
        let w = chrono::Duration::from_std(st.config.gateway.statement_window)
            .unwrap_or(chrono::Duration::minutes(5));
        Some(max.map_or(w, |m| w.min(m)))
    } else {
        None
    };
    let statement = each.then(|| text.to_string());
    let mut request = Request::file(
        &st.policy,
        &s.user,
        role,
        &s.database,
        &reason,
        window,
        statement,
        now,
    )
    .map_err(|e| {
        let hint = match e {
            policy::FileError::ReasonRequired(_) => {
                "give the reason first: SET jitgate.reason = '...'; then run the statement again"
            }
            _ => "ask an administrator for access to this role",
        };
        st.refusal(format!(
            "jitgate: this statement needs role \"{role}\", and no request could be filed: {e}"
        ))
        .with_hint(hint)
    })?;
    if !each {
        request.trigger = Some(text.to_string());
    }
    let (stored, new) = st.store.insert_request(request).await.map_err(|e| {
        tracing::error!(error = %e, "filing a request failed");
        st.refusal(format!(
            "jitgate: this statement needs role \"{role}\", and the request could not be filed \
             (state store unavailable); try again"
        ))
    })?;
    if new {
        st.changed.changed();
    }
    let approvers = approvers(st, &stored.value);
    Ok(Filed {
        request: stored.value,
        new,
        approvers,
    })
}

/// "leads (bob, dave)": who can decide the request's current stage.
fn approvers(st: &HookState, r: &Request) -> String {
    let Some(stage) = st.policy.role(&r.role).and_then(|p| p.chain.get(r.stage)) else {
        return "nobody (the role has no chain)".into();
    };
    let mut people = st.policy.members(&stage.approvers);
    people.remove(&r.user);
    let groups: Vec<&str> = stage.approvers.iter().map(String::as_str).collect();
    let people: Vec<&str> = people.iter().map(String::as_str).collect();
    format!("{} ({})", groups.join(", "), people.join(", "))
}

fn follow_up(st: &HookState, id: i64) -> String {
    format!(
        "jitgate requests --user <you>, or {}/ui/requests/{id}",
        st.config.gateway.public_url()
    )
}

fn rejection(st: &HookState, f: &Filed, s: &Session, role: &str, each: bool) -> ErrorFields {
    let id = f.request.id;
    let what = if each {
        format!("its own approval (approve_each, chain of role \"{role}\")")
    } else {
        format!("role \"{role}\"")
    };
    let filed = if f.new { "filed" } else { "is waiting on" };
    st.refusal(format!(
        "jitgate: this statement needs {what}; jitgate {filed} request {id}, to be approved by {}; \
         follow it with: {}",
        f.approvers,
        follow_up(st, id),
    ))
    .with_detail(format!(
        "user {} on database {}; reason: {}",
        s.user,
        s.database,
        if f.request.reason.is_empty() {
            "(none; set one with SET jitgate.reason = '...')"
        } else {
            &f.request.reason
        }
    ))
    .with_hint(format!(
        "run the statement again once request {id} is approved (an approver runs: jitgate approve {id})"
    ))
}

#[allow(clippy::too_many_arguments)]
async fn hold(
    st: &Arc<HookState>,
    s: &Arc<Session>,
    text: &str,
    kind: ActionKind,
    role: &str,
    each: bool,
    f: &Filed,
) -> Verdict {
    let id = f.request.id;
    let timeout = st.config.gateway.hold_timeout;
    s.notice(&ErrorFields::new(
        Severity::Warning,
        "01000",
        format!(
            "jitgate: holding this statement until request {id} for role \"{role}\" is decided \
             by {}; waiting up to {}s (cancel to stop waiting); follow it with: {}",
            f.approvers,
            timeout.as_secs(),
            follow_up(st, id)
        ),
    ));
    let mut changes = st.grants.subscribe();
    let deadline = tokio::time::Instant::now() + timeout;
    let cancelled = s.cancel_requested();
    tokio::pin!(cancelled);
    let refuse = |err: ErrorFields| {
        Verdict::Refuse(st.refuse(s, text, kind.as_str(), Some(role), err, true))
    };
    loop {
        let now = st.clock.now();
        if each {
            if let Some(g) = st.grants.take_statement(&s.user, &s.database, text, now) {
                let recorded = st.ran_under_grant(s, text, kind.as_str(), role, g.id);
                end_statement_grant_when_idle(st.clone(), s.clone(), g.id);
                return written_ahead(vec![recorded]).await;
            }
        } else if let Some(g) = st.grants.role_grant(&s.user, &s.database, role, now) {
            let recorded = st.ran_under_grant(s, text, kind.as_str(), role, g);
            return written_ahead(vec![recorded]).await;
        }
        match st.store.request(id).await {
            Ok(Some(r))
                if !matches!(
                    r.value.state,
                    RequestState::Pending | RequestState::Approved
                ) =>
            {
                let by = r
                    .value
                    .decisions
                    .iter()
                    .rev()
                    .find(|d| !d.approve)
                    .map(|d| format!(" by {}", d.approver))
                    .unwrap_or_default();
                return refuse(st.refusal(format!(
                    "jitgate: request {id} for role \"{role}\" was {}{by}; the statement did not run",
                    r.value.state.as_str()
                )));
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, request = id, "reading a held request"),
        }
        tokio::select! {
            _ = changes.changed() => {}
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = tokio::time::sleep_until(deadline) => {
                return refuse(ErrorFields::error("57014", format!(
                    "jitgate: request {id} for role \"{role}\" was not decided within hold_timeout \
                     ({}s); it stays pending, run the statement again once it is approved",
                    timeout.as_secs()
                )));
            }
            _ = &mut cancelled => {
                return refuse(ErrorFields::error(
                    "57014",
                    format!("canceling statement due to user request (request {id} stays pending)"),
                ));
            }
        }
    }
}

/// A statement grant is used once: it ends (and its role is revoked) as soon
/// as the session has run the statement.
pub fn end_statement_grant_when_idle(st: Arc<HookState>, s: Arc<Session>, grant: i64) {
    tokio::spawn(async move {
        s.idle_after_next_ready().await;
        let now = st.clock.now();
        match store::service::end_grant(
            &*st.store,
            grant,
            GrantEnd::Relinquished,
            &s.user,
            "the approved statement ran",
            now,
        )
        .await
        {
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, grant, "ending a used statement grant"),
        }
        st.changed.changed();
    });
}
