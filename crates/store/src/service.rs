//! The operations of the access model, written once over [`Store`]: load, apply
//! the pure state machine, write back with a compare-and-set, retry on conflict.
//! Concurrent deciders therefore never double-count: the loser of a race
//! re-reads the request and decides again on the new state.

use crate::audit::AuditEvent;
use crate::Kind;
use crate::{GrantFilter, GrantWrite, RequestFilter, Store, StoreError, Versioned};
use policy::{
    DecisionError, FileError, Grant, GrantEnd, GrantError, GrantState, Policy, Request,
    RequestState, Tick, Time, Transition,
};
use serde_json::json;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    File(#[from] FileError),
    #[error(transparent)]
    Decision(#[from] DecisionError),
    #[error(transparent)]
    Grant(#[from] GrantError),
    #[error("no {0} with id {1}")]
    NotFound(&'static str, i64),
    #[error("the state changed too often while deciding; try again")]
    Contended,
}

/// How often a compare-and-set is retried before giving up.
const RETRIES: usize = 64;

pub fn filed_event(r: &Request) -> AuditEvent {
    AuditEvent::new(
        r.created_at,
        Kind::RequestFiled,
        &r.user,
        format!("request:{}", r.id),
        json!({
            "role": r.role, "database": r.database, "reason": r.reason,
            "duration_secs": r.duration_secs, "statement": r.statement,
            "extends_grant": r.extends_grant,
        }),
    )
    .with_idp(r.requester_idp.as_ref())
}

pub fn grant_started_event(g: &Grant) -> AuditEvent {
    AuditEvent::new(
        g.starts_at,
        Kind::GrantStarted,
        &g.user,
        format!("grant:{}", g.id),
        json!({"role": g.role, "database": g.database, "request": g.request_id,
               "starts_at": g.starts_at, "expires_at": g.expires_at}),
    )
}

/// Files a request (or returns the pending one for the same user, role and database).
#[allow(clippy::too_many_arguments)]
pub async fn file(
    store: &dyn Store,
    policy: &Policy,
    user: &str,
    role: &str,
    database: &str,
    reason: &str,
    duration: Option<chrono::Duration>,
    statement: Option<String>,
    now: Time,
) -> Result<(Request, bool), ServiceError> {
    let request = Request::file(
        policy, user, role, database, reason, duration, statement, now,
    )?;
    if request.statement.is_none() {
        // The store makes a request filed while a grant is active its
        // extension: refuse now one that would outlive max_total_duration.
        let mine = GrantFilter {
            user: Some(user.to_string()),
            active_only: true,
        };
        for g in store.grants(&mine).await? {
            if g.role == role && g.database == database && g.statement.is_none() && g.is_active(now)
            {
                request.check_extension(policy, &g)?;
            }
        }
    }
    let (stored, new) = store.insert_request(request).await?;
    Ok((stored.value, new))
}

async fn load(store: &dyn Store, id: i64) -> Result<Versioned<Request>, ServiceError> {
    store
        .request(id)
        .await?
        .ok_or(ServiceError::NotFound("request", id))
}

/// One approver's decision; returns the request and, once approved, its grant.
pub async fn decide(
    store: &dyn Store,
    policy: &Policy,
    id: i64,
    who: &str,
    approve: bool,
    comment: &str,
    now: Time,
) -> Result<(Request, Option<Grant>), ServiceError> {
    for _ in 0..RETRIES {
        let v = load(store, id).await?;
        let mut r = v.value.clone();
        let transition = match r.decide(policy, who, approve, comment, now) {
            Ok(t) => t,
            Err(e) => {
                if r.state != v.value.state {
                    // The attempt found it expired: record that, then refuse.
                    let ev = AuditEvent::new(
                        now,
                        Kind::RequestExpired,
                        "jitgate",
                        format!("request:{id}"),
                        json!({}),
                    );
                    store.update_request(&r, v.version, None, vec![ev]).await?;
                }
                return Err(e.into());
            }
        };
        let subject = format!("request:{id}");
        let mut events = vec![AuditEvent::new(
            now,
            if approve {
                Kind::DecisionApprove
            } else {
                Kind::DecisionDeny
            },
            who,
            subject.clone(),
            json!({"stage": v.value.stage, "comment": comment}),
        )];
        // Distinct people are distinct subjects at their provider.
        events[0] = events[0].clone().with_idp(policy.idp(who).as_ref());
        let mut grant = None;
        match transition {
            Transition::Recorded => {}
            Transition::StageCompleted { stage } => events.push(AuditEvent::new(
                now,
                Kind::RequestStageCompleted,
                who,
                subject,
                json!({"stage": stage}),
            )),
            Transition::Denied => events.push(AuditEvent::new(
                now,
                Kind::RequestDenied,
                who,
                subject,
                json!({}),
            )),
            Transition::Approved => {
                events.push(AuditEvent::new(
                    now,
                    Kind::RequestApproved,
                    who,
                    subject,
                    json!({}),
                ));
                grant = Some(grant_for(store, policy, &r, now, &mut events).await?);
            }
        }
        if let Some(written) = store.update_request(&r, v.version, grant, events).await? {
            return Ok((r, written));
        }
    }
    Err(ServiceError::Contended)
}

/// A new grant, or the extension of the active grant the request continues.
async fn grant_for(
    store: &dyn Store,
    policy: &Policy,
    r: &Request,
    now: Time,
    events: &mut Vec<AuditEvent>,
) -> Result<GrantWrite, ServiceError> {
    if let Some(gid) = r.extends_grant {
        let max_total = policy
            .role(&r.role)
            .map(|rp| rp.max_total_duration)
            .unwrap_or_else(|| r.duration());
        if let Some(mut g) = store.grant(gid).await? {
            if let Ok(capped) = g.value.extend(r, max_total, now) {
                events.push(AuditEvent::new(
                    now,
                    Kind::GrantExtended,
                    &r.user,
                    format!("grant:{gid}"),
                    json!({"request": r.id, "expires_at": g.value.expires_at,
                           "capped_at_max_total": capped}),
                ));
                return Ok(GrantWrite::Update(g));
            }
        }
    }
    Ok(GrantWrite::Insert(Grant::start(r)?))
}

/// The requester withdraws a pending request.
pub async fn cancel(
    store: &dyn Store,
    id: i64,
    who: &str,
    now: Time,
) -> Result<Request, ServiceError> {
    for _ in 0..RETRIES {
        let v = load(store, id).await?;
        let mut r = v.value.clone();
        r.cancel(who, now)?;
        let ev = AuditEvent::new(
            now,
            Kind::RequestCancelled,
            who,
            format!("request:{id}"),
            json!({}),
        );
        if store
            .update_request(&r, v.version, None, vec![ev])
            .await?
            .is_some()
        {
            return Ok(r);
        }
    }
    Err(ServiceError::Contended)
}

/// Revokes or relinquishes an active grant. Who may revoke is the caller's check.
pub async fn end_grant(
    store: &dyn Store,
    id: i64,
    how: GrantEnd,
    by: &str,
    reason: &str,
    now: Time,
) -> Result<Grant, ServiceError> {
    for _ in 0..RETRIES {
        let v = store
            .grant(id)
            .await?
            .ok_or(ServiceError::NotFound("grant", id))?;
        let mut g = v.value.clone();
        g.end(how, by, now)?;
        let kind = match how {
            GrantEnd::Revoked => Kind::GrantRevoked,
            GrantEnd::Relinquished => Kind::GrantRelinquished,
        };
        let ev = AuditEvent::new(
            now,
            kind,
            by,
            format!("grant:{id}"),
            json!({"reason": reason, "role": g.role}),
        );
        if store.update_grant(&g, v.version, vec![ev]).await? {
            return Ok(g);
        }
    }
    Err(ServiceError::Contended)
}

/// What a tick changed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TickReport {
    pub requests_expired: Vec<i64>,
    pub requests_escalated: Vec<i64>,
    pub grants_expired: Vec<i64>,
}

/// Expires and escalates pending requests and expires grants whose time is up.
pub async fn tick(
    store: &dyn Store,
    policy: &Policy,
    now: Time,
) -> Result<TickReport, ServiceError> {
    let mut report = TickReport::default();
    let pending = store
        .requests(&RequestFilter {
            state: Some(RequestState::Pending.as_str().into()),
            ..RequestFilter::default()
        })
        .await?;
    for r in pending {
        let Some(v) = store.request(r.id).await? else {
            continue;
        };
        let mut changed = v.value.clone();
        let (kind, list) = match changed.tick(policy, now) {
            Some(Tick::Expired) => (Kind::RequestExpired, &mut report.requests_expired),
            Some(Tick::Escalated { .. }) => {
                (Kind::RequestEscalated, &mut report.requests_escalated)
            }
            None => continue,
        };
        let ev = AuditEvent::new(
            now,
            kind,
            "jitgate",
            format!("request:{}", r.id),
            json!({"stage": changed.stage}),
        );
        if store
            .update_request(&changed, v.version, None, vec![ev])
            .await?
            .is_some()
        {
            list.push(r.id);
        }
    }
    let active = store
        .grants(&GrantFilter {
            user: None,
            active_only: true,
        })
        .await?;
    for g in active
        .into_iter()
        .filter(|g| g.state == GrantState::Active && now >= g.expires_at)
    {
        let Some(mut v) = store.grant(g.id).await? else {
            continue;
        };
        let version = v.version;
        if v.value.tick(now) {
            let ev = AuditEvent::new(
                now,
                Kind::GrantExpired,
                "jitgate",
                format!("grant:{}", g.id),
                json!({"role": g.role}),
            );
            if store.update_grant(&v.value, version, vec![ev]).await? {
                report.grants_expired.push(g.id);
            }
        }
    }
    Ok(report)
}
