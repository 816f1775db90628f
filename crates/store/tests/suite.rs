//! One suite, run against both backends: filing and de-duplication, the
//! approval flow with its audit trail, 20 concurrent approvers, extensions,
//! expiry, and tamper detection (tokens and records: `records.rs`).

use chrono::Duration;
use policy::{DecisionError, GrantEnd, GrantState, Policy, RequestState, RolePolicy, StagePolicy};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use store::service::{self, ServiceError};
use store::Kind;
use store::{AuditEvent, AuditFilter, GrantFilter, Store};

#[macro_use]
mod common;
use common::*;

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// A one-stage role of the `engineers`, approved by `min` of `approvers`.
fn role(name: &str, approvers: &str, min: u32) -> RolePolicy {
    RolePolicy {
        name: name.into(),
        database: "app".into(),
        requesters: set(&["engineers"]),
        default_duration: Duration::minutes(15),
        max_duration: Duration::hours(1),
        max_total_duration: Duration::hours(4),
        reason_required: false,
        request_ttl: Duration::hours(1),
        index: 0,
        chain: vec![StagePolicy {
            approvers: set(&[approvers]),
            min,
            escalate_after: None,
            escalate_to: BTreeSet::new(),
        }],
    }
}

/// alice requests; bob leads; approver0..19 form the "crowd".
fn policy() -> Policy {
    let mut users: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    users.insert("alice".into(), set(&["engineers"]));
    users.insert("bob".into(), set(&["leads"]));
    for i in 0..20 {
        users.insert(format!("approver{i}"), set(&["crowd"]));
    }
    Policy::new(
        users,
        vec![
            role("app_write", "leads", 1),
            role("any_one", "crowd", 1),
            role("all_twenty", "crowd", 20),
        ],
    )
    .unwrap()
}

both!(filing_reuses_the_pending_request);
async fn filing_reuses_the_pending_request(kind: &str) {
    let (s, _b) = open(kind).await;
    let p = policy();
    let (r1, new1) = service::file(
        &*s,
        &p,
        "alice",
        "app_write",
        "app",
        "fix",
        None,
        None,
        t0(),
    )
    .await
    .unwrap();
    let (r2, new2) = service::file(
        &*s,
        &p,
        "alice",
        "app_write",
        "app",
        "again",
        None,
        None,
        t0(),
    )
    .await
    .unwrap();
    assert!(new1 && !new2);
    assert_eq!(r1.id, r2.id);
    // A statement request is its own request.
    let (r3, _) = service::file(
        &*s,
        &p,
        "alice",
        "app_write",
        "app",
        "",
        None,
        Some("DELETE FROM t".into()),
        t0(),
    )
    .await
    .unwrap();
    assert_ne!(r3.id, r1.id);
    service::cancel(&*s, r1.id, "alice", t0()).await.unwrap();
    let (r4, new4) = service::file(&*s, &p, "alice", "app_write", "app", "x", None, None, t0())
        .await
        .unwrap();
    assert!(new4 && r4.id != r1.id);
    // Bad input changes nothing.
    assert!(service::file(
        &*s,
        &p,
        "alice",
        "app_write",
        "app",
        "x",
        Some(Duration::minutes(-5)),
        None,
        t0()
    )
    .await
    .is_err());
    assert!(service::file(
        &*s,
        &p,
        "alice",
        "app_write",
        "app",
        "x",
        Some(Duration::hours(99999)),
        None,
        t0()
    )
    .await
    .is_err());
    assert!(matches!(
        service::decide(&*s, &p, 999, "bob", true, "", t0()).await,
        Err(ServiceError::NotFound(..))
    ));
}

both!(approval_flow_with_audit);
async fn approval_flow_with_audit(kind: &str) {
    let (s, b) = open(kind).await;
    let p = policy();
    let (r, _) = service::file(
        &*s,
        &p,
        "alice",
        "app_write",
        "app",
        "fix prod",
        None,
        None,
        t0(),
    )
    .await
    .unwrap();
    let own = service::decide(&*s, &p, r.id, "alice", true, "", t0()).await;
    assert!(matches!(
        own,
        Err(ServiceError::Decision(DecisionError::OwnRequest))
    ));
    let at = t0() + Duration::minutes(3);
    let (r, grant) = service::decide(&*s, &p, r.id, "bob", true, "go", at)
        .await
        .unwrap();
    assert_eq!(r.state, RequestState::Approved);
    let grant = grant.unwrap();
    assert_eq!(
        (grant.starts_at, grant.expires_at),
        (at, at + Duration::minutes(15))
    );
    // A decision on a finished request changes nothing.
    assert!(service::decide(&*s, &p, r.id, "bob", false, "", at)
        .await
        .is_err());
    let grants = s
        .grants(&GrantFilter {
            user: Some("alice".into()),
            active_only: true,
        })
        .await
        .unwrap();
    assert_eq!(grants.len(), 1);

    let kinds: Vec<String> = s
        .audit_all()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event.kind)
        .collect();
    assert_eq!(
        kinds,
        [
            "request.filed",
            "decision.approve",
            "request.approved",
            "grant.started"
        ]
    );
    let v = store::audit::verify(&s.audit_all().await.unwrap());
    assert!(v.ok && v.records == 4);
    let filtered = s
        .audit(&AuditFilter {
            actor: Some("bob".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(filtered.len(), 2);

    // Edit one row by hand: verify names it.
    tamper(&b, "UPDATE audit SET actor = 'mallory' WHERE seq = 2").await;
    let v = store::audit::verify(&s.audit_all().await.unwrap());
    assert!(!v.ok);
    assert_eq!(v.first_bad_seq, Some(2));
    tamper(
        &b,
        "UPDATE audit SET actor = 'bob' WHERE seq = 2; DELETE FROM audit WHERE seq = 3",
    )
    .await;
    assert_eq!(
        store::audit::verify(&s.audit_all().await.unwrap()).first_bad_seq,
        Some(4)
    );
}

both!(twenty_concurrent_approvers_one_outcome);
async fn twenty_concurrent_approvers_one_outcome(kind: &str) {
    let (s, _b) = open(kind).await;
    let p = Arc::new(policy());
    // min = 1: exactly one approval wins, the others find it decided.
    let (r, _) = service::file(&*s, &p, "alice", "any_one", "app", "", None, None, t0())
        .await
        .unwrap();
    let results = all_twenty_approve(&s, &p, r.id).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    let stored = s.request(r.id).await.unwrap().unwrap().value;
    assert_eq!(stored.decisions.len(), 1);
    assert_eq!(s.grants(&GrantFilter::default()).await.unwrap().len(), 1);

    // min = 20: every decision counts exactly once, and the last approves.
    let (r, _) = service::file(&*s, &p, "alice", "all_twenty", "app", "", None, None, t0())
        .await
        .unwrap();
    let results = all_twenty_approve(&s, &p, r.id).await;
    assert!(
        results.iter().all(|r| r.is_ok()),
        "{:?}",
        results.iter().find(|r| r.is_err())
    );
    let stored = s.request(r.id).await.unwrap().unwrap().value;
    assert_eq!(stored.state, RequestState::Approved);
    assert_eq!(stored.decisions.len(), 20);
    assert_eq!(s.grants(&GrantFilter::default()).await.unwrap().len(), 2);
    assert!(store::audit::verify(&s.audit_all().await.unwrap()).ok);
}

/// approver0..19 approve request `id` at the same moment, each in its own task.
async fn all_twenty_approve(
    s: &Arc<dyn Store>,
    p: &Arc<Policy>,
    id: i64,
) -> Vec<Result<(policy::Request, Option<policy::Grant>), ServiceError>> {
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let (s, p) = (s.clone(), p.clone());
            tokio::spawn(async move {
                service::decide(&*s, &p, id, &format!("approver{i}"), true, "", t0()).await
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

both!(extension_continues_the_grant_and_time_ends_things);
async fn extension_continues_the_grant_and_time_ends_things(kind: &str) {
    let (s, _b) = open(kind).await;
    let p = policy();
    let (r, _) = service::file(&*s, &p, "alice", "app_write", "app", "", None, None, t0())
        .await
        .unwrap();
    let (_, g) = service::decide(&*s, &p, r.id, "bob", true, "", t0())
        .await
        .unwrap();
    let g = g.unwrap();
    // Asking again while the grant is active files an extension.
    let at = t0() + Duration::minutes(10);
    let (ext, _) = service::file(&*s, &p, "alice", "app_write", "app", "more", None, None, at)
        .await
        .unwrap();
    assert_eq!(ext.extends_grant, Some(g.id));
    let (_, extended) = service::decide(&*s, &p, ext.id, "bob", true, "", at)
        .await
        .unwrap();
    let extended = extended.unwrap();
    assert_eq!(extended.id, g.id);
    assert_eq!(extended.expires_at, t0() + Duration::minutes(30), "no gap");
    assert_eq!(s.grants(&GrantFilter::default()).await.unwrap().len(), 1);

    // Pending requests expire; grants expire.
    let (pending, _) = service::file(&*s, &p, "alice", "any_one", "app", "", None, None, t0())
        .await
        .unwrap();
    let report = service::tick(&*s, &p, t0() + Duration::hours(2))
        .await
        .unwrap();
    assert_eq!(report.requests_expired, vec![pending.id]);
    assert_eq!(report.grants_expired, vec![g.id]);
    assert!(
        service::decide(&*s, &p, pending.id, "approver1", true, "", t0())
            .await
            .is_err()
    );
    let g = s.grant(g.id).await.unwrap().unwrap().value;
    assert_eq!(g.state, GrantState::Expired);
    assert!(
        service::end_grant(&*s, g.id, GrantEnd::Revoked, "bob", "", t0())
            .await
            .is_err()
    );
}

both!(grants_end_once);
async fn grants_end_once(kind: &str) {
    let (s, _b) = open(kind).await;
    let p = policy();
    let (r, _) = service::file(&*s, &p, "alice", "app_write", "app", "", None, None, t0())
        .await
        .unwrap();
    let g = service::decide(&*s, &p, r.id, "bob", true, "", t0())
        .await
        .unwrap()
        .1
        .unwrap();
    assert!(
        service::end_grant(&*s, g.id, GrantEnd::Relinquished, "bob", "", t0())
            .await
            .is_err()
    );
    let ended = service::end_grant(&*s, g.id, GrantEnd::Relinquished, "alice", "done", t0())
        .await
        .unwrap();
    assert_eq!(ended.state, GrantState::Relinquished);
    assert!(
        service::end_grant(&*s, g.id, GrantEnd::Revoked, "bob", "", t0())
            .await
            .is_err()
    );
}

both!(tick_ends_every_grant_not_just_the_first_thousand);
async fn tick_ends_every_grant_not_just_the_first_thousand(kind: &str) {
    let (s, _b) = open(kind).await;
    // Many users of the crowd role, all approved at the same moment.
    let mut users: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    users.insert("lead".into(), set(&["leads"]));
    for i in 0..1050 {
        users.insert(format!("u{i}"), set(&["engineers"]));
    }
    let p = Policy::new(users, vec![role("app_write", "leads", 1)]).unwrap();
    for i in 0..1050 {
        let (r, _) = service::file(
            &*s,
            &p,
            &format!("u{i}"),
            "app_write",
            "app",
            "",
            None,
            None,
            t0(),
        )
        .await
        .unwrap();
        service::decide(&*s, &p, r.id, "lead", true, "", t0())
            .await
            .unwrap();
    }
    let report = service::tick(&*s, &p, t0() + Duration::minutes(15))
        .await
        .unwrap();
    assert_eq!(report.grants_expired.len(), 1050);
    assert!(s
        .grants(&GrantFilter {
            user: None,
            active_only: true
        })
        .await
        .unwrap()
        .is_empty());
}

both!(escalation_is_recorded_and_opens_the_stage);
async fn escalation_is_recorded_and_opens_the_stage(kind: &str) {
    let (s, _b) = open(kind).await;
    let mut users: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    users.insert("alice".into(), set(&["engineers"]));
    users.insert("bob".into(), set(&["leads"]));
    users.insert("erin".into(), set(&["dba"]));
    let mut r = role("app_write", "leads", 1);
    r.chain[0].escalate_after = Some(Duration::minutes(10));
    r.chain[0].escalate_to = set(&["dba"]);
    let p = Policy::new(users, vec![r]).unwrap();
    let (req, _) = service::file(&*s, &p, "alice", "app_write", "app", "", None, None, t0())
        .await
        .unwrap();
    assert!(
        service::decide(&*s, &p, req.id, "erin", true, "", t0())
            .await
            .is_err(),
        "not yet escalated"
    );
    let report = service::tick(&*s, &p, t0() + Duration::minutes(11))
        .await
        .unwrap();
    assert_eq!(report.requests_escalated, vec![req.id]);
    let (done, grant) = service::decide(
        &*s,
        &p,
        req.id,
        "erin",
        true,
        "",
        t0() + Duration::minutes(12),
    )
    .await
    .unwrap();
    assert_eq!(done.state, RequestState::Approved);
    assert!(grant.is_some());
    let kinds: Vec<String> = s
        .audit_all()
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.event.kind)
        .collect();
    assert!(
        kinds.contains(&"request.escalated".to_string()),
        "{kinds:?}"
    );
}

both!(cursors_and_reading_the_log_after_a_position);
async fn cursors_and_reading_the_log_after_a_position(kind: &str) {
    let (s, _b) = open(kind).await;
    assert_eq!(s.cursor("webhook:a").await.unwrap(), 0);
    let now = chrono::Utc::now();
    let events: Vec<AuditEvent> = (0..5)
        .map(|i| {
            AuditEvent::new(
                now,
                Kind::AuditCheckpoint,
                "x",
                format!("n:{i}"),
                serde_json::json!({}),
            )
        })
        .collect();
    s.append_audit(events).await.unwrap();
    let all = s.audit_all().await.unwrap();
    let first = all[0].seq;
    let after = s.audit_after(first, 2).await.unwrap();
    assert_eq!(
        after.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [first + 1, first + 2]
    );
    s.set_cursor("webhook:a", first + 2).await.unwrap();
    s.set_cursor("webhook:b", 1).await.unwrap();
    s.set_cursor("webhook:a", first + 3).await.unwrap();
    assert_eq!(s.cursor("webhook:a").await.unwrap(), first + 3);
    assert_eq!(s.cursor("webhook:b").await.unwrap(), 1);
    let rest = s.audit_after(first + 3, 100).await.unwrap();
    assert_eq!(rest.len(), all.len() - 4);
}

both!(credential_epochs_rotate_once_each);
async fn credential_epochs_rotate_once_each(kind: &str) {
    let (s, _b) = open(kind).await;
    let e = s.credentials().await.unwrap();
    assert_eq!((e.number, e.since), (0, None));
    let now = chrono::Utc::now();
    let ev = || {
        AuditEvent::new(
            now,
            Kind::CredentialsRotated,
            "t",
            "credentials".into(),
            serde_json::json!({}),
        )
    };
    assert_eq!(s.rotate_credentials(ev()).await.unwrap(), 1);
    assert_eq!(s.rotate_credentials(ev()).await.unwrap(), 2);
    let e = s.credentials().await.unwrap();
    assert_eq!(e.number, 2);
    assert_eq!(e.since.unwrap().timestamp(), now.timestamp());
    let logged: Vec<_> = s
        .audit_all()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.event.kind == "credentials.rotated")
        .map(|r| r.event.detail["epoch"].as_i64())
        .collect();
    assert_eq!(logged, [Some(1), Some(2)]);
}

/// Two replicas on one PostgreSQL store: distinct indexes, exactly one
/// enforcer, and a change committed through the store wakes the other.
#[tokio::test(flavor = "multi_thread")]
async fn replicas_take_indexes_one_leads_and_hear_changes() {
    let (s, b) = open("postgres").await;
    let Backend::Postgres(db) = &b else {
        unreachable!()
    };
    let url = pgcluster::Cluster::shared().url(db);
    let (ca, cb) = (
        Arc::new(store::Changes::default()),
        Arc::new(store::Changes::default()),
    );
    let a = store::Cluster::join(&url, "127.0.0.1:1001", ca.clone())
        .await
        .unwrap();
    let bb = store::Cluster::join(&url, "127.0.0.1:1002", cb.clone())
        .await
        .unwrap();
    assert_ne!(a.index(), bb.index());
    assert!(a.index() > 0 && bb.index() > 0);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while a.is_leader() == bb.is_leader() || a.peer(bb.index()).is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no single leader / peers"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(a.peer(bb.index()).as_deref(), Some("127.0.0.1:1002"));
    // Drain the wake-ups of joining, then a write must wake replica B.
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut seen = cb.subscribe();
    seen.borrow_and_update();
    let now = chrono::Utc::now();
    s.rotate_credentials(AuditEvent::new(
        now,
        Kind::CredentialsRotated,
        "t",
        "c".into(),
        serde_json::json!({}),
    ))
    .await
    .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(2), seen.changed())
        .await
        .expect("a committed change reaches the other replica through NOTIFY")
        .unwrap();
}

both!(refusal_alerts_are_counted_in_the_store_once_per_window);
async fn refusal_alerts_are_counted_in_the_store_once_per_window(kind: &str) {
    let (s, _b) = open(kind).await;
    let t0 = chrono::Utc::now();
    let refused = |user: &str, secs: i64| {
        AuditEvent::new(
            t0 + chrono::Duration::seconds(secs),
            Kind::StatementRefused,
            user,
            "session:1".into(),
            serde_json::json!({}),
        )
    };
    let alert = |user: &str, secs: i64| {
        AuditEvent::new(
            t0 + chrono::Duration::seconds(secs),
            Kind::AlertRefusals,
            user,
            format!("user:{user}"),
            serde_json::json!({}),
        )
        .alert()
    };
    let window = chrono::Duration::seconds(60);
    // Two refusals (as if on two replicas), then a third: one alert.
    s.append_audit(vec![
        refused("alice", 0),
        refused("bob", 1),
        refused("alice", 2),
    ])
    .await
    .unwrap();
    let at = |secs: i64| t0 + chrono::Duration::seconds(secs) - window;
    assert!(!s
        .alert_when(alert("alice", 2), Kind::StatementRefused, at(2), 3)
        .await
        .unwrap());
    s.append_audit(vec![refused("alice", 3)]).await.unwrap();
    assert!(s
        .alert_when(alert("alice", 3), Kind::StatementRefused, at(3), 3)
        .await
        .unwrap());
    // Counting starts over after the alert.
    s.append_audit(vec![refused("alice", 4)]).await.unwrap();
    assert!(!s
        .alert_when(alert("alice", 4), Kind::StatementRefused, at(4), 3)
        .await
        .unwrap());
    assert!(!s
        .alert_when(alert("bob", 4), Kind::StatementRefused, at(4), 3)
        .await
        .unwrap());
    // Old refusals fall out of the window.
    s.append_audit(vec![refused("bob", 100), refused("bob", 101)])
        .await
        .unwrap();
    assert!(!s
        .alert_when(alert("bob", 101), Kind::StatementRefused, at(101), 3)
        .await
        .unwrap());
    let alerts = s
        .audit_all()
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.event.kind == "alert.refusals")
        .count();
    assert_eq!(alerts, 1);
}
