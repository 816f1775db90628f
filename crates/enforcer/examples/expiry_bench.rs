//! Expiry speed: how soon after `expires_at` the gateway refuses, and how soon
//! the membership is gone from the database, with N grants ending in the same
//! second (run by `bench/expiry.sh`).
//!
//! - N users each get an approved grant of app_write, all ending within the
//!   same second;
//! - K of them keep a session writing under the grant in a loop: the first
//!   refusal after `expires_at` is the gateway's latency;
//! - a separate connection polls pg_auth_members every 5 ms: each
//!   membership's disappearance after its grant's `expires_at` is the
//!   database's latency. It is stamped with the bench's clock (the system
//!   clock, which the gateway's enforcer also uses) when the first poll that
//!   misses the membership *returns*: an upper bound. (Stamping before the
//!   poll, as an earlier version did, made a REVOKE that committed during
//!   the poll look earlier than the grant's end.)
//! - a grant must last its whole window: the enforcer's `grant.removed`
//!   audit events (written before the REVOKE is sent) must all be at or after
//!   their grant's `expires_at`; the bench counts any that are not.
//!
//! First, K other users each have a write refused, get it approved, and retry
//! until it runs: approval -> the user's next statement allowed (GRANT in the
//! database and the gateway's grant table included).

use chrono::{SubsecRound, Utc};

use std::collections::HashMap;
use std::time::Duration;

mod common;

use common::percentile;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).map_or(1000, |a| a.parse().unwrap());
    let k: usize = std::env::args().nth(2).map_or(50, |a| a.parse().unwrap());
    let b = common::start(
        "CREATE TABLE t (id int PRIMARY KEY, v int);
             INSERT INTO t SELECT i, 0 FROM generate_series(0, 9999) i;
             GRANT SELECT ON t TO app_read; GRANT UPDATE ON t TO app_write;",
        "public.*",
        (0..n)
            .map(|i| format!("u{i}"))
            .chain((0..k).map(|i| format!("a{i}"))),
        "expiry_warning = \"1s\"",
    )
    .await?;
    let store = b.store.clone();

    // Approval -> next statement allowed.
    let mut approval = Vec::new();
    for i in 0..k {
        let client = b.connect(&format!("a{i}")).await?;
        let sql = format!("UPDATE t SET v = 1 WHERE id = {}", 5000 + i);
        anyhow::ensure!(
            client.batch_execute(&sql).await.is_err(),
            "allowed before approval"
        );
        let id = store
            .requests(&store::RequestFilter {
                user: Some(format!("a{i}")),
                state: None,
            })
            .await?[0]
            .id;
        let start = std::time::Instant::now();
        b.approve(id).await?;
        while let Err(e) = client.batch_execute(&sql).await {
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(10),
                "still refused: {e}"
            );
        }
        approval.push(start.elapsed().as_secs_f64() * 1000.0);
    }

    // N grants ending in the same second, T.
    let setup = Duration::from_secs(30 + (n as u64) / 25);
    let target = Utc::now() + chrono::Duration::from_std(setup)?;
    eprintln!("filing and approving {n} requests; they end at {target}");
    let mut expires = HashMap::new();
    let mut by_grant = HashMap::new();
    for i in 0..n {
        let now = Utc::now();
        let secs = (target - now).num_milliseconds().div_euclid(1000) + 1;
        let g = b.grant(&format!("u{i}"), Some(secs)).await?;
        by_grant.insert(format!("grant:{}", g.id), g.expires_at);
        expires.insert(format!("x_u{i}"), g.expires_at);
    }
    let spread =
        expires.values().max().unwrap().timestamp() - expires.values().min().unwrap().timestamp();
    eprintln!("grants end within {spread} s of each other");

    let (admin, conn) =
        tokio_postgres::connect(&b.cluster.url("app"), tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let members = async || -> anyhow::Result<Vec<String>> {
        Ok(admin
            .query(
                "SELECT m.rolname::text FROM pg_auth_members am JOIN pg_roles r ON r.oid = am.roleid \
                 JOIN pg_roles m ON m.oid = am.member WHERE r.rolname = 'app_write'",
                &[],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect())
    };
    while members().await?.len() < n {
        anyhow::ensure!(
            Utc::now() < target,
            "grants not all applied before they end; raise the setup time"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    eprintln!("all {n} memberships applied; {k} sessions write until refused");

    let mut writers = Vec::new();
    for i in 0..k.min(n) {
        let client = b.connect(&format!("u{i}")).await?;
        let ends = expires[&format!("x_u{i}")];
        writers.push(tokio::spawn(async move {
            loop {
                let sql = format!("UPDATE t SET v = v + 1 WHERE id = {i}");
                if client.batch_execute(&sql).await.is_err() {
                    return (Utc::now() - ends).num_microseconds().unwrap() as f64 / 1000.0;
                }
            }
        }));
    }
    let mut gone: HashMap<String, chrono::DateTime<Utc>> = HashMap::new();
    while gone.len() < n {
        let present: std::collections::HashSet<String> = members().await?.into_iter().collect();
        let now = Utc::now(); // after the poll returns: see the header
        for m in expires.keys() {
            if !present.contains(m) {
                gone.entry(m.clone()).or_insert(now);
            }
        }
        anyhow::ensure!(
            now < target + chrono::Duration::seconds(60),
            "memberships still present a minute after the end"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut gateway = Vec::new();
    for w in writers {
        gateway.push(w.await?);
    }
    let mut database: Vec<f64> = gone
        .iter()
        .map(|(m, t)| (*t - expires[m]).num_microseconds().unwrap() as f64 / 1000.0)
        .collect();
    // Did the enforcer take any grant before its end? Its own record says.
    let mut removed = 0;
    let mut early = 0;
    for r in store.audit_all().await? {
        if r.event.kind == "grant.removed" {
            if let Some(end) = by_grant.get(&r.event.subject) {
                removed += 1;
                // The audit log keeps microseconds.
                if r.event.at < end.trunc_subsecs(6) {
                    early += 1;
                }
            }
        }
    }
    anyhow::ensure!(removed == n, "{removed} of {n} grants audited as removed");
    println!("| measurement | p50 | p99 | max | goal |");
    println!("|---|---|---|---|---|");
    println!(
        "| approval -> next statement allowed ({} users, one at a time) | {:.1} ms | {:.1} ms | {:.1} ms | p99 <= 50 ms |",
        approval.len(),
        percentile(&mut approval, 0.5),
        percentile(&mut approval, 0.99),
        percentile(&mut approval, 1.0)
    );
    println!(
        "| expiry -> gateway refuses ({n} grants ending in one second, {} sessions writing) | {:.1} ms | {:.1} ms | {:.1} ms | p99 <= 100 ms |",
        gateway.len(),
        percentile(&mut gateway, 0.5),
        percentile(&mut gateway, 0.99),
        percentile(&mut gateway, 1.0)
    );
    println!(
        "| expiry -> membership revoked in the database ({n} grants) | {:.0} ms | {:.0} ms | {:.0} ms | p99 <= 1 s |",
        percentile(&mut database, 0.5),
        percentile(&mut database, 0.99),
        percentile(&mut database, 1.0)
    );
    println!(
        "\nClock: the system clock of this machine, shared by the bench and the gateway; \
         database latencies are stamped when the poll that misses a membership returns."
    );
    if early > 0 {
        println!("(!) {early} grants were removed by the enforcer before their end");
    } else {
        println!("No grant was removed before its end ({removed} checked in the audit log).");
    }
    let negative = database.iter().filter(|d| **d < 0.0).count();
    if negative > 0 {
        println!("(!) {negative} memberships were seen gone before their grant ended");
    }
    b.stop().await;
    Ok(())
}
