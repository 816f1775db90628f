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

use std::time::{Duration, Instant};

mod common;

use common::percentile;

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let per_session: usize = std::env::args().nth(1).map_or(2000, |a| a.parse().unwrap());
    let users = 8;
    let b = common::start(
        "CREATE TABLE w (id int PRIMARY KEY, v int); CREATE TABLE s (id int PRIMARY KEY, v int);
             INSERT INTO w SELECT i, 0 FROM generate_series(0, 99) i;
             INSERT INTO s SELECT i, 0 FROM generate_series(0, 99) i;
             GRANT SELECT, UPDATE ON s TO app_read; GRANT SELECT ON w TO app_read;
             GRANT UPDATE ON w TO app_write;",
        "public.w",
        (0..users).map(|i| format!("u{i}")),
        "",
    )
    .await?;
    let store = b.store.clone();
    for i in 0..users {
        b.grant(&format!("u{i}"), None).await?;
    }
    println!("| sessions | statement | p50 | p99 | added p50 | added p99 |");
    println!("|---|---|---|---|---|---|");
    for sessions in [1, users] {
        let mut tasks = Vec::new();
        for i in 0..sessions {
            let client = b.connect(&format!("u{i}")).await?;
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
    b.stop().await;
    Ok(())
}
