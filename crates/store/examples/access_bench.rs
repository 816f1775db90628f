//! Access-model speed: audit appends per second on SQLite, and the latency from
//! an approval to the grant being visible to the enforcement path.
//!
//!   cargo run --release -p store --example access_bench [postgres://...]
//!
//! Prints one line per measurement; bench/access.sh wraps it.

use chrono::Duration;
use policy::{Policy, RolePolicy, StagePolicy};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;
use store::Kind;
use store::{service, AuditEvent, GrantFilter, Store};

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn policy(n: usize) -> Policy {
    let mut users: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for i in 0..n {
        users.insert(format!("user{i}"), set(&["engineers"]));
    }
    users.insert("lead".into(), set(&["leads"]));
    let role = RolePolicy {
        name: "app_write".into(),
        database: "app".into(),
        requesters: set(&["engineers"]),
        default_duration: Duration::minutes(15),
        max_duration: Duration::hours(1),
        max_total_duration: Duration::hours(4),
        reason_required: false,
        request_ttl: Duration::hours(1),
        index: 0,
        chain: vec![StagePolicy {
            approvers: set(&["leads"]),
            min: 1,
            escalate_after: None,
            escalate_to: BTreeSet::new(),
        }],
    };
    Policy::new(users, vec![role]).unwrap()
}

fn event(i: usize) -> AuditEvent {
    AuditEvent::new(
        chrono::Utc::now(),
        Kind::StatementRun,
        "alice",
        format!("session:{i}"),
        serde_json::json!({"role": "app_write", "fingerprint": "0123456789abcdef", "text": "UPDATE orders SET total = $1 WHERE id = $2"}),
    )
}

async fn audit_rate(s: &dyn Store, batch: usize, total: usize) -> f64 {
    let t = Instant::now();
    let mut i = 0;
    while i < total {
        s.append_audit((i..i + batch).map(event).collect())
            .await
            .unwrap();
        i += batch;
    }
    total as f64 / t.elapsed().as_secs_f64()
}

async fn approval_latency(s: &dyn Store, n: usize) -> (f64, f64, f64) {
    let p = policy(n);
    let mut samples = Vec::with_capacity(n);
    for i in 0..n {
        let user = format!("user{i}");
        let now = chrono::Utc::now();
        let (r, _) = service::file(s, &p, &user, "app_write", "app", "", None, None, now)
            .await
            .unwrap();
        let t = Instant::now();
        service::decide(s, &p, r.id, "lead", true, "", now)
            .await
            .unwrap();
        // What the enforcement path asks: the user's active grants.
        let visible = s
            .grants(&GrantFilter {
                user: Some(user.clone()),
                active_only: true,
            })
            .await
            .unwrap()
            .iter()
            .any(|g| g.request_id == r.id);
        assert!(visible);
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let pct = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (pct(0.5), pct(0.99), samples[samples.len() - 1])
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = store::open(&format!(
        "sqlite://{}",
        dir.path().join("bench.db").display()
    ))
    .await
    .unwrap();
    println!(
        "sqlite audit append, 1 event per transaction (fsync each): {:.0} events/s",
        audit_rate(&*sqlite, 1, 2_000).await
    );
    println!(
        "sqlite audit append, 100 events per transaction: {:.0} events/s",
        audit_rate(&*sqlite, 100, 100_000).await
    );
    let (p50, p99, max) = approval_latency(&*sqlite, 300).await;
    println!("sqlite approval -> grant visible: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms (300 approvals)");
    if let Some(url) = std::env::args().nth(1) {
        let pg = store::open(&url).await.unwrap();
        println!(
            "postgres audit append, 100 events per transaction: {:.0} events/s",
            audit_rate(&*pg, 100, 20_000).await
        );
        let (p50, p99, max) = approval_latency(&*pg, 300).await;
        println!("postgres approval -> grant visible: p50 {p50:.2} ms, p99 {p99:.2} ms, max {max:.2} ms (300 approvals)");
    }
}
