//! Write-ahead audit: what it adds to a privileged statement (run by
//! `bench/audit.sh`).
//!
//! One gateway, SQLite state store on disk (`synchronous = FULL`, as served).
//! Each session runs the same one-row UPDATE on two tables alternately:
//! - `w` is reserved by a rule for `app_write`, which every user holds through
//!   an active grant: the statement is privileged, and its `statement.run`
//!   record is committed before the UPDATE goes upstream;
//! - `s` is writable by the baseline role and named by no rule: the same
//!   path minus the audit record.
//!
//! The difference in latency is the write-ahead audit's cost. Run with 1
//! session (one fsync per statement) and with several (group commit: the
//! sessions' records share fsyncs).

use chrono::Utc;
use config::Config;
use pgcluster::{Cluster, Options};
use policy::{Clock, Policy};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let per_session: usize = std::env::args().nth(1).map_or(2000, |a| a.parse().unwrap());
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(Options::default())).await??;
    cluster.psql("postgres", "CREATE DATABASE app")?;
    cluster.psql(
        "app",
        "CREATE ROLE app_read NOLOGIN; CREATE ROLE app_write NOLOGIN;
         CREATE TABLE w (id int PRIMARY KEY, v int); CREATE TABLE s (id int PRIMARY KEY, v int);
         INSERT INTO w SELECT i, 0 FROM generate_series(0, 99) i;
         INSERT INTO s SELECT i, 0 FROM generate_series(0, 99) i;
         GRANT USAGE ON SCHEMA public TO app_read, app_write;
         GRANT SELECT, UPDATE ON s TO app_read; GRANT SELECT ON w TO app_read;
         GRANT UPDATE ON w TO app_write;",
    )?;
    let dir = tempfile::tempdir_in(".")?;
    let users = 8;
    let mut text = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\napi_listen = \"127.0.0.1:9\"\nlogin_role_prefix = \"ab_\"\n\
         shutdown_timeout = \"1s\"\n\
         [[database]]\nname = \"app\"\nadmin_url = \"{}\"\nbaseline_roles = [\"app_read\"]\ntls = \"disable\"\n\
         [[group]]\nname = \"engineers\"\n[[group]]\nname = \"leads\"\n\
         [[user]]\nname = \"lead\"\npassword = \"pw\"\ngroups = [\"leads\"]\n\
         [[role]]\nname = \"app_write\"\ndatabase = \"app\"\nrequesters = [\"engineers\"]\nmax_duration = \"1h\"\n\
         chain = [{{ approvers = [\"leads\"], min = 1 }}]\n\
         [[rule]]\ndatabase = \"app\"\nactions = [\"write\"]\nobjects = [\"public.w\"]\nrole = \"app_write\"\n",
        cluster.url("app")
    );
    for i in 0..users {
        text.push_str(&format!(
            "[[user]]\nname = \"u{i}\"\npassword = \"pw\"\ngroups = [\"engineers\"]\n"
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
    for i in 0..users {
        let (r, _) = store::service::file(
            &*store,
            &policy,
            &format!("u{i}"),
            "app_write",
            "app",
            "bench",
            None,
            None,
            Utc::now(),
        )
        .await?;
        store::service::decide(&*store, &policy, r.id, "lead", true, "", Utc::now()).await?;
        changed.changed();
    }
    println!("| sessions | statement | p50 | p99 | added p50 | added p99 |");
    println!("|---|---|---|---|---|---|");
    for sessions in [1, users] {
        let mut tasks = Vec::new();
        for i in 0..sessions {
            let (client, conn) = tokio_postgres::connect(
                &format!(
                    "host=127.0.0.1 port={} dbname=app user=u{i} password=pw",
                    addr.port()
                ),
                tokio_postgres::NoTls,
            )
            .await?;
            tokio::spawn(conn);
            // Wait until the grant is applied.
            let deadline = Instant::now() + Duration::from_secs(10);
            while client
                .batch_execute(&format!("UPDATE w SET v = v + 1 WHERE id = {i}"))
                .await
                .is_err()
            {
                anyhow::ensure!(Instant::now() < deadline, "grant never applied");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            tasks.push(tokio::spawn(async move {
                let (mut w, mut s) = (Vec::new(), Vec::new());
                for n in 0..per_session {
                    for (table, out) in [("w", &mut w), ("s", &mut s)] {
                        let sql = format!("UPDATE {table} SET v = v + 1 WHERE id = {i}");
                        let t = Instant::now();
                        client.batch_execute(&sql).await.unwrap();
                        if n >= 50 {
                            out.push(t.elapsed().as_secs_f64() * 1000.0);
                        }
                    }
                }
                (w, s)
            }));
        }
        let (mut w, mut s) = (Vec::new(), Vec::new());
        for t in tasks {
            let (a, b) = t.await?;
            w.extend(a);
            s.extend(b);
        }
        let (w50, w99) = (percentile(&mut w, 0.5), percentile(&mut w, 0.99));
        let (s50, s99) = (percentile(&mut s, 0.5), percentile(&mut s, 0.99));
        println!("| {sessions} | unprivileged (no record) | {s50:.2} ms | {s99:.2} ms | | |");
        println!(
            "| {sessions} | privileged (record written first) | {w50:.2} ms | {w99:.2} ms | {:.2} ms | {:.2} ms |",
            w50 - s50,
            w99 - s99
        );
    }
    let runs = store
        .audit_all()
        .await?
        .iter()
        .filter(|r| r.event.kind == "statement.run")
        .count();
    println!("\n{runs} statement.run records written (every privileged statement).");
    let _ = stop_tx.send(());
    let _ = serving.await;
    Ok(())
}
