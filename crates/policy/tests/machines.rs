//! Request and grant state machines, rule by rule.

mod common;

use chrono::Duration;
use common::*;
use policy::*;

fn file(p: &Policy, user: &str, role: &str) -> Request {
    Request::file(p, user, role, "app", "fix prod", None, None, t0()).unwrap()
}

#[test]
fn filing_checks_requester_reason_duration_and_database() {
    let p = policy();
    let f = |user: &str, role: &str, db: &str, reason: &str, d: Option<Duration>| {
        Request::file(&p, user, role, db, reason, d, None, t0())
    };
    assert!(f("alice", "app_write", "app", "why", None).is_ok());
    assert_eq!(
        f("bob", "app_write", "app", "why", None),
        Err(FileError::NotRequester("app_write".into()))
    );
    assert_eq!(
        f("alice", "nope", "app", "why", None),
        Err(FileError::UnknownRole("nope".into()))
    );
    assert!(matches!(
        f("alice", "app_write", "other", "why", None),
        Err(FileError::WrongDatabase { .. })
    ));
    assert_eq!(
        f("alice", "app_write", "app", "  ", None),
        Err(FileError::ReasonRequired("app_write".into()))
    );
    for bad in [
        Duration::minutes(-5),
        Duration::zero(),
        Duration::hours(99999),
        Duration::minutes(61),
    ] {
        assert!(
            matches!(
                f("alice", "app_write", "app", "why", Some(bad)),
                Err(FileError::BadDuration { .. })
            ),
            "{bad}"
        );
    }
    let r = f("alice", "app_write", "app", "why", None).unwrap();
    assert_eq!(r.duration(), Duration::minutes(15), "default duration");
    assert_eq!(r.expires_at, t0() + Duration::hours(1), "request_ttl");
}

#[test]
fn one_lead_approves_and_the_grant_clock_starts_at_approval() {
    let p = policy();
    let mut r = file(&p, "alice", "app_write");
    let later = t0() + Duration::minutes(7);
    assert_eq!(
        r.decide(&p, "bob", true, "ok", later),
        Ok(Transition::Approved)
    );
    assert_eq!(r.state, RequestState::Approved);
    let g = Grant::start(&r).unwrap();
    assert_eq!(g.starts_at, later);
    assert_eq!(g.expires_at, later + Duration::minutes(15));
}

#[test]
fn requester_never_decides_even_through_a_group() {
    let p = policy();
    // frank is a lead and an engineer: he may request, and never approve his own.
    let mut r = file(&p, "frank", "app_write");
    assert_eq!(
        r.decide(&p, "frank", true, "", t0()),
        Err(DecisionError::OwnRequest)
    );
    assert_eq!(
        r.decide(&p, "frank", false, "", t0()),
        Err(DecisionError::OwnRequest)
    );
    assert_eq!(r.state, RequestState::Pending);
    assert!(r.decisions.is_empty());
}

#[test]
fn only_the_current_stage_and_its_groups() {
    let p = policy();
    let mut r = file(&p, "alice", "app_admin");
    // erin (dba) is stage 1's approver, not stage 0's.
    assert_eq!(
        r.decide(&p, "erin", true, "", t0()),
        Err(DecisionError::NotEligible { stage: 0 })
    );
    assert_eq!(
        r.decide(&p, "carol", true, "", t0()),
        Err(DecisionError::NotEligible { stage: 0 })
    );
    assert_eq!(
        r.decide(&p, "bob", true, "", t0()),
        Ok(Transition::Recorded)
    );
    assert_eq!(
        r.decide(&p, "bob", true, "", t0()),
        Err(DecisionError::AlreadyDecided)
    );
    assert_eq!(
        r.decide(&p, "dave", true, "", t0()),
        Ok(Transition::StageCompleted { stage: 0 })
    );
    // Now stage 1: leads can no longer act; and nobody counts twice.
    assert_eq!(
        r.decide(&p, "frank", true, "", t0()),
        Err(DecisionError::NotEligible { stage: 1 })
    );
    assert_eq!(
        r.decide(&p, "erin", true, "", t0()),
        Ok(Transition::Approved)
    );
    assert_eq!(
        r.decide(&p, "erin", true, "", t0()),
        Err(DecisionError::NotPending("approved"))
    );
}

#[test]
fn any_eligible_deny_ends_the_request() {
    let p = policy();
    let mut r = file(&p, "alice", "app_admin");
    r.decide(&p, "bob", true, "", t0()).unwrap();
    assert_eq!(
        r.decide(&p, "dave", false, "not now", t0()),
        Ok(Transition::Denied)
    );
    assert_eq!(r.state, RequestState::Denied);
    assert_eq!(
        r.decide(&p, "frank", true, "", t0()),
        Err(DecisionError::NotPending("denied"))
    );
    // An ineligible deny changes nothing.
    let mut r = file(&p, "alice", "app_admin");
    assert!(r.decide(&p, "carol", false, "", t0()).is_err());
    assert_eq!(r.state, RequestState::Pending);
}

#[test]
fn escalation_opens_the_stage_to_escalate_to() {
    let p = policy();
    let mut r = file(&p, "alice", "app_write");
    assert_eq!(
        r.decide(&p, "erin", true, "", t0()),
        Err(DecisionError::NotEligible { stage: 0 })
    );
    assert_eq!(r.tick(&p, t0() + Duration::minutes(9)), None);
    assert_eq!(
        r.tick(&p, t0() + Duration::minutes(10)),
        Some(Tick::Escalated { stage: 0 })
    );
    assert_eq!(
        r.tick(&p, t0() + Duration::minutes(11)),
        None,
        "escalates once"
    );
    assert_eq!(
        r.decide(&p, "erin", true, "", t0() + Duration::minutes(11)),
        Ok(Transition::Approved)
    );
}

#[test]
fn pending_requests_expire_and_cannot_then_be_decided() {
    let p = policy();
    let mut r = file(&p, "alice", "app_write");
    let late = t0() + Duration::hours(1);
    assert_eq!(
        r.decide(&p, "bob", true, "", late),
        Err(DecisionError::NotPending("expired"))
    );
    assert_eq!(r.state, RequestState::Expired);
    let mut r = file(&p, "alice", "app_write");
    assert_eq!(r.tick(&p, late), Some(Tick::Expired));
    assert_eq!(
        r.cancel("alice", late),
        Err(DecisionError::NotPending("expired"))
    );
}

#[test]
fn only_the_requester_cancels() {
    let p = policy();
    let mut r = file(&p, "alice", "app_write");
    assert_eq!(r.cancel("bob", t0()), Err(DecisionError::NotRequester));
    assert_eq!(r.cancel("alice", t0()), Ok(()));
    assert_eq!(
        r.decide(&p, "bob", true, "", t0()),
        Err(DecisionError::NotPending("cancelled"))
    );
}

#[test]
fn grants_end_once_and_extend_without_a_gap() {
    let p = policy();
    let mut r = file(&p, "alice", "app_write");
    r.decide(&p, "bob", true, "", t0()).unwrap();
    let mut g = Grant::start(&r).unwrap();
    assert!(g.is_active(t0() + Duration::minutes(14)));
    // An extension approved before the end continues it.
    let mut ext = file(&p, "alice", "app_write");
    ext.decide(&p, "dave", true, "", t0() + Duration::minutes(10))
        .unwrap();
    assert_eq!(
        g.extend(&ext, Duration::hours(4), t0() + Duration::minutes(10)),
        Ok(false)
    );
    assert_eq!(g.expires_at, t0() + Duration::minutes(30));
    // A third extension would pass max_total_duration: refused at filing,
    // and cut short if it is approved anyway.
    assert!(ext.check_extension(&p, &g).is_ok());
    let mut tight = g.clone();
    let max_total = Duration::minutes(40);
    let mut short = role("app_write", vec![stage(&["leads"], 1)]);
    short.max_total_duration = max_total;
    let p40 = Policy::new(users(), vec![short]).unwrap();
    assert!(matches!(
        ext.check_extension(&p40, &tight),
        Err(FileError::BeyondMaxTotal { left_secs: 600, .. })
    ));
    assert_eq!(
        tight.extend(&ext, max_total, t0() + Duration::minutes(11)),
        Ok(true)
    );
    assert_eq!(tight.expires_at, t0() + max_total);
    assert_eq!(
        g.end(GrantEnd::Relinquished, "bob", t0()),
        Err(GrantError::NotHolder)
    );
    g.end(
        GrantEnd::Relinquished,
        "alice",
        t0() + Duration::minutes(20),
    )
    .unwrap();
    assert_eq!(g.state, GrantState::Relinquished);
    assert_eq!(
        g.end(GrantEnd::Revoked, "bob", t0()),
        Err(GrantError::NotActive("relinquished"))
    );
    // Expiry.
    let mut g = Grant::start(&r).unwrap();
    assert!(!g.tick(t0() + Duration::minutes(14)));
    assert!(g.tick(t0() + Duration::minutes(15)));
    assert_eq!(g.state, GrantState::Expired);
    assert_eq!(
        g.extend(&ext, Duration::hours(4), t0() + Duration::minutes(16)),
        Err(GrantError::NotActive("expired"))
    );
    // A pending request starts no grant.
    assert!(Grant::start(&file(&p, "alice", "app_write")).is_err());
}

#[test]
fn unreachable_chains_are_refused() {
    // Two leads exist (bob, dave) plus frank who is also a requester.
    let too_many = role("r", vec![stage(&["leads"], 3)]);
    assert!(matches!(
        Policy::new(users(), vec![too_many]),
        Err(PolicyError::Unreachable {
            min: 3,
            eligible: 2,
            ..
        })
    ));
    // Across stages a person counts once: 2 leads then 2 leads is 4 of 3 people.
    let twice = role("r", vec![stage(&["leads"], 2), stage(&["leads"], 2)]);
    assert!(Policy::new(users(), vec![twice]).is_err());
    let fine = role("r", vec![stage(&["leads"], 2), stage(&["dba"], 1)]);
    assert!(Policy::new(users(), vec![fine]).is_ok());
}
