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
use config::Config;
use pgcluster::{Cluster, Options};
use policy::{Clock, Policy};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).map_or(1000, |a| a.parse().unwrap());
    let k: usize = std::env::args().nth(2).map_or(50, |a| a.parse().unwrap());
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(Options::default())).await??;
    cluster.psql("postgres", "CREATE DATABASE app")?;
    cluster.psql(
        "app",
        "CREATE ROLE app_read NOLOGIN; CREATE ROLE app_write NOLOGIN;
         CREATE TABLE t (id int PRIMARY KEY, v int);
         INSERT INTO t SELECT i, 0 FROM generate_series(0, 9999) i;
         GRANT USAGE ON SCHEMA public TO app_read, app_write;
         GRANT SELECT ON t TO app_read; GRANT UPDATE ON t TO app_write;",
    )?;
    let dir = tempfile::tempdir()?;
    let mut text = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\napi_listen = \"127.0.0.1:9\"\nlogin_role_prefix = \"x_\"\n\
         expiry_warning = \"1s\"\nshutdown_timeout = \"1s\"\n\
         [[database]]\nname = \"app\"\nadmin_url = \"{}\"\nbaseline_roles = [\"app_read\"]\ntls = \"disable\"\n\
         [[group]]\nname = \"engineers\"\n[[group]]\nname = \"leads\"\n\
         [[user]]\nname = \"lead\"\npassword = \"pw\"\ngroups = [\"leads\"]\n\
         [[role]]\nname = \"app_write\"\ndatabase = \"app\"\nrequesters = [\"engineers\"]\nmax_duration = \"1h\"\n\
         chain = [{{ approvers = [\"leads\"], min = 1 }}]\n\
         [[rule]]\ndatabase = \"app\"\nactions = [\"write\"]\nobjects = [\"public.*\"]\nrole = \"app_write\"\n",
        cluster.url("app")
    );
    for i in 0..n {
        text.push_str(&format!(
            "[[user]]\nname = \"u{i}\"\npassword = \"pw\"\ngroups = [\"engineers\"]\n"
        ));
    }
    for i in 0..k {
        text.push_str(&format!(
            "[[user]]\nname = \"a{i}\"\npassword = \"pw\"\ngroups = [\"engineers\"]\n"
        ));
    }
    let config = Arc::new(Config::from_toml(&text)?);
    let policy = Arc::new(Policy::from_config(&config)?);
    let store = store::open(&format!("sqlite://{}", dir.path().join("s.db").display())).await?;
    let changed = Arc::new(store::Changes::default());
    let clock: Arc<dyn Clock> = Arc::new(policy::clock::SystemClock);
    let runtime = enforcer::Runtime::start(
        config.clone(),
        policy.clone(),
        store.clone(),
        clock,
        changed.clone(),
    )
    .await?;
    let addr = runtime.gateway.local_addr();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(runtime.run(async {
        let _ = stop_rx.await;
    }));

    // Approval -> next statement allowed.
    let mut approval = Vec::new();
    for i in 0..k {
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} dbname=app user=a{i} password=pw",
                addr.port()
            ),
            tokio_postgres::NoTls,
        )
        .await?;
        tokio::spawn(conn);
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
        store::service::decide(&*store, &policy, id, "lead", true, "", Utc::now()).await?;
        changed.changed(); // what the HTTP API does after a decision
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
        let user = format!("u{i}");
        let (r, _) = store::service::file(
            &*store,
            &policy,
            &user,
            "app_write",
            "app",
            "bench",
            Some(chrono::Duration::seconds(secs)),
            None,
            now,
        )
        .await?;
        let (_, g) =
            store::service::decide(&*store, &policy, r.id, "lead", true, "", Utc::now()).await?;
        let g = g.unwrap();
        by_grant.insert(format!("grant:{}", g.id), g.expires_at);
        expires.insert(format!("x_{user}"), g.expires_at);
        changed.changed();
    }
    let spread =
        expires.values().max().unwrap().timestamp() - expires.values().min().unwrap().timestamp();
    eprintln!("grants end within {spread} s of each other");

    let (admin, conn) = tokio_postgres::connect(&cluster.url("app"), tokio_postgres::NoTls).await?;
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
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} dbname=app user=u{i} password=pw",
                addr.port()
            ),
            tokio_postgres::NoTls,
        )
        .await?;
        tokio::spawn(conn);
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
    let _ = stop_tx.send(());
    let _ = serving.await;
    Ok(())
}
