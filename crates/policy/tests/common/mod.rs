#![allow(dead_code)]
//! A small organisation for the state-machine tests.

use chrono::{Duration, TimeZone, Utc};
use policy::{Policy, RolePolicy, StagePolicy, Time};
use std::collections::{BTreeMap, BTreeSet};

pub fn t0() -> Time {
    Utc.with_ymd_and_hms(2026, 11, 29, 9, 0, 0).unwrap()
}

pub fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// alice, carol: engineers; bob, dave: leads; erin: dba; frank: lead and engineer.
pub fn users() -> BTreeMap<String, BTreeSet<String>> {
    [
        ("alice", &["engineers"][..]),
        ("carol", &["engineers"]),
        ("bob", &["leads"]),
        ("dave", &["leads"]),
        ("erin", &["dba"]),
        ("frank", &["leads", "engineers"]),
    ]
    .into_iter()
    .map(|(u, g)| (u.to_string(), set(g)))
    .collect()
}

pub fn stage(approvers: &[&str], min: u32) -> StagePolicy {
    StagePolicy {
        approvers: set(approvers),
        min,
        escalate_after: None,
        escalate_to: BTreeSet::new(),
    }
}

pub fn role(name: &str, chain: Vec<StagePolicy>) -> RolePolicy {
    RolePolicy {
        name: name.into(),
        database: "app".into(),
        requesters: set(&["engineers"]),
        default_duration: Duration::minutes(15),
        max_duration: Duration::hours(1),
        max_total_duration: Duration::hours(4),
        reason_required: true,
        request_ttl: Duration::hours(1),
        index: 0,
        chain,
    }
}

/// app_write: one lead, escalating to dba after 10 minutes.
/// app_admin: two leads, then one dba.
pub fn policy() -> Policy {
    let mut write = role("app_write", vec![stage(&["leads"], 1)]);
    write.chain[0].escalate_after = Some(Duration::minutes(10));
    write.chain[0].escalate_to = set(&["dba"]);
    let admin = role("app_admin", vec![stage(&["leads"], 2), stage(&["dba"], 1)]);
    Policy::new(users(), vec![write, admin]).unwrap()
}
