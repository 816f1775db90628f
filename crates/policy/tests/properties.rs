//! Random sequences of decisions by random people at random times never break
//! the rules of the request state machine.

mod common;

use chrono::Duration;
use common::*;
use policy::*;
use proptest::prelude::*;

const PEOPLE: &[&str] = &["alice", "carol", "bob", "dave", "erin", "frank"];

#[derive(Debug, Clone)]
enum Step {
    Decide {
        who: usize,
        approve: bool,
        after_min: i64,
    },
    Tick {
        after_min: i64,
    },
    Cancel {
        who: usize,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        6 => (0..PEOPLE.len(), prop::bool::weighted(0.8), 0i64..25).prop_map(|(who, approve, after_min)| Step::Decide { who, approve, after_min }),
        2 => (0i64..40).prop_map(|after_min| Step::Tick { after_min }),
        1 => (0..PEOPLE.len()).prop_map(|who| Step::Cancel { who }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn decisions_never_break_the_rules(
        role in prop::sample::select(vec!["app_write", "app_admin"]),
        requester in prop::sample::select(vec!["alice", "carol", "frank"]),
        steps in prop::collection::vec(step(), 1..25),
    ) {
        let p = policy();
        let rp = p.role(role).unwrap().clone();
        let mut r = Request::file(&p, requester, role, "app", "why", None, None, t0()).unwrap();
        let mut now = t0();
        for s in steps {
            let before = r.clone();
            match s {
                Step::Decide { who, approve, after_min } => {
                    now += Duration::minutes(after_min);
                    let who = PEOPLE[who];
                    // Judge eligibility as the rules state it, independently of the code.
                    let stage = rp.chain.get(before.stage);
                    let eligible = before.state == RequestState::Pending
                        && now < before.expires_at
                        && who != requester
                        && !before.decisions.iter().any(|d| d.approver == who)
                        && stage.is_some_and(|st| p.in_any(who, &st.approvers) || (before.escalated && p.in_any(who, &st.escalate_to)));
                    let result = r.decide(&p, who, approve, "", now);
                    prop_assert_eq!(result.is_ok(), eligible, "{} deciding {:?}: {:?}", who, before, result);
                    if result.is_err() {
                        // A refused decision records nothing (expiry may be noted).
                        prop_assert_eq!(&r.decisions, &before.decisions);
                        prop_assert!(r.state == before.state || r.state == RequestState::Expired);
                    }
                }
                Step::Tick { after_min } => {
                    now += Duration::minutes(after_min);
                    r.tick(&p, now);
                }
                Step::Cancel { who } => {
                    let ok = r.cancel(PEOPLE[who], now).is_ok();
                    prop_assert_eq!(ok, before.state == RequestState::Pending && PEOPLE[who] == requester);
                }
            }
            // Invariants after every step.
            let approvers: Vec<&str> = r.decisions.iter().map(|d| d.approver.as_str()).collect();
            let mut unique = approvers.clone();
            unique.sort();
            unique.dedup();
            prop_assert_eq!(unique.len(), approvers.len(), "someone counted twice");
            prop_assert!(!approvers.contains(&requester), "requester decided");
            prop_assert!(r.decisions.iter().all(|d| d.at < r.expires_at), "decision after expiry");
            for (i, st) in rp.chain.iter().enumerate() {
                let n = r.decisions.iter().filter(|d| d.stage == i && d.approve).count();
                if i < r.stage {
                    prop_assert!(n >= st.min as usize, "stage {} passed with {} approvals", i, n);
                } else if i == r.stage && r.state == RequestState::Pending {
                    prop_assert!(n < st.min as usize);
                }
                prop_assert!(i <= r.stage || n == 0, "decision on a future stage");
            }
            match r.state {
                RequestState::Approved => {
                    prop_assert_eq!(r.stage, rp.chain.len());
                    let g = Grant::start(&r).unwrap();
                    prop_assert_eq!(g.starts_at, r.decisions.last().unwrap().at);
                    prop_assert!(g.expires_at - g.starts_at <= rp.max_duration);
                }
                RequestState::Denied => prop_assert!(!r.decisions.last().unwrap().approve),
                _ => prop_assert!(r.decisions.iter().all(|d| d.approve)),
            }
            // Terminal states are final.
            if before.state != RequestState::Pending {
                prop_assert_eq!(&r, &before);
            }
        }
    }
}
