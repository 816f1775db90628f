//! `hold` mode, statements approved one by one (approve_each), and the
//! reconciler.

mod common;

use common::*;
use std::time::Duration;

#[tokio::test]
async fn hold_runs_the_statement_once_approved_in_the_same_call() {
    let j = Jitgate::start("on_missing_grant = \"hold\"\nhold_timeout = \"20s\"").await;
    let (alice, mut notices) = j.connect("alice").await;
    let run = tokio::spawn(async move {
        let r = alice
            .execute("UPDATE orders SET total = 0 WHERE id = 50", &[])
            .await;
        (alice, r)
    });
    let notice = tokio::time::timeout(Duration::from_secs(5), notices.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(notice.contains("holding this statement"), "{notice}");
    let pending = j.pending().await;
    assert_eq!(pending.len(), 1);
    j.approve(pending[0].id, "bob").await;
    let (alice, r) = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r.unwrap(), 1);
    let total: i32 = alice
        .query_one("SELECT total FROM orders WHERE id = 50", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 0);
    alice
        .batch_execute("UPDATE orders SET total = 50 WHERE id = 50")
        .await
        .unwrap();
    j.stop().await;
}

#[tokio::test]
async fn hold_answers_denial_timeout_and_cancel_and_the_session_stays_usable() {
    let j = Jitgate::start("on_missing_grant = \"hold\"\nhold_timeout = \"1s\"").await;
    // Timeout: the request stays pending.
    let (alice, _) = j.connect("alice").await;
    let e = alice
        .batch_execute("UPDATE orders SET total = 0 WHERE id = 51")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "57014");
    assert!(
        message(&e).contains("not decided within hold_timeout"),
        "{e}"
    );
    assert_eq!(j.pending().await.len(), 1);
    assert_eq!(
        alice
            .query_one("SELECT 1", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        1
    );
    j.stop().await;

    let j = Jitgate::start("on_missing_grant = \"hold\"\nhold_timeout = \"30s\"").await;
    // Denied while held.
    let (alice, _) = j.connect("alice").await;
    let run = tokio::spawn(async move {
        let r = alice
            .batch_execute("UPDATE orders SET total = 0 WHERE id = 52")
            .await;
        (alice, r)
    });
    let id = loop {
        if let Some(r) = j.pending().await.first() {
            break r.id;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    j.deny(id, "bob").await;
    let (alice, r) = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap();
    let e = r.unwrap_err();
    assert!(message(&e).contains("was denied by bob"), "{e}");
    // Cancelled by the client while held (Ctrl-C in psql).
    let token = alice.cancel_token();
    let run = tokio::spawn(async move {
        let r = alice
            .batch_execute("UPDATE orders SET total = 0 WHERE id = 53")
            .await;
        (alice, r)
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    token.cancel_query(tokio_postgres::NoTls).await.unwrap();
    let (alice, r) = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .unwrap()
        .unwrap();
    let e = r.unwrap_err();
    assert_eq!(sqlstate(&e), "57014", "{e}");
    assert_eq!(
        alice
            .query_one("SELECT 2", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );
    j.stop().await;
}

#[tokio::test]
async fn approve_each_runs_exactly_the_approved_statement_once() {
    let j = Jitgate::start("").await;
    let (alice, _) = j.connect("alice").await;
    let approved = "UPDATE payments SET amount = 0 WHERE id = 5";
    let e = alice.batch_execute(approved).await.unwrap_err();
    assert!(message(&e).contains("its own approval"), "{e}");
    let pending = j.pending().await;
    assert_eq!(pending[0].statement.as_deref(), Some(approved));
    j.approve(pending[0].id, "bob").await;
    assert!(j.until(Duration::from_secs(2), || j.member("alice")).await);
    // Nothing else gains from it: another statement, even on the same table.
    let e = alice
        .batch_execute("UPDATE payments SET amount = 0 WHERE id = 6")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let e = alice
        .batch_execute("UPDATE orders SET total = 0 WHERE id = 6")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    alice.batch_execute(approved).await.unwrap();
    // Once only; and the membership goes with it.
    let e = alice.batch_execute(approved).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert!(j.until(Duration::from_secs(2), || !j.member("alice")).await);
    let amount: i32 = alice
        .query_one("SELECT amount FROM payments WHERE id = 5", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(amount, 0);
    j.stop().await;
}

#[tokio::test]
async fn an_approve_each_approval_covers_the_text_and_the_bound_values_once() {
    let j = Jitgate::start("").await;
    let (alice, _) = j.connect("alice").await;
    let sql = "UPDATE payments SET amount = $1 WHERE id = $2";
    let update = alice.prepare(sql).await.unwrap(); // parsing runs nothing
    let e = alice.execute(&update, &[&0i32, &7i32]).await.unwrap_err();
    assert!(message(&e).contains("its own approval"), "{e}");
    let pending = j.pending().await;
    let approved = pending[0].statement.clone().unwrap();
    assert!(approved.starts_with(sql), "{approved}");
    assert!(approved.contains("$2 = <binary 00000007>"), "{approved}");
    j.approve(pending[0].id, "bob").await;
    assert!(j.until(Duration::from_secs(2), || j.member("alice")).await);
    // Other values are another statement.
    let e = alice.execute(&update, &[&0i32, &8i32]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    // The approved values run, once.
    assert_eq!(alice.execute(&update, &[&0i32, &7i32]).await.unwrap(), 1);
    let e = alice.execute(&update, &[&0i32, &7i32]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    j.stop().await;
}

#[tokio::test]
async fn drift_is_revoked_before_serving_and_while_serving() {
    let text = config_text("reconcile_interval = \"200ms\"");
    let prefix = text
        .lines()
        .find_map(|l| l.strip_prefix("login_role_prefix = \""))
        .unwrap()
        .trim_end_matches('"')
        .to_string();
    let mallory = format!("{prefix}mallory");
    cluster()
        .psql(
            "app",
            &format!("CREATE ROLE {mallory} LOGIN; GRANT app_write TO {mallory}"),
        )
        .unwrap();
    let j = Jitgate::start_text(&text, None).await;
    let held = |who: &str| {
        cluster()
            .psql(
                "app",
                &format!("SELECT pg_has_role('{who}', 'app_write', 'MEMBER')::text"),
            )
            .unwrap()
            .contains("true")
    };
    assert!(!held(&mallory), "revoked before serving");
    // A DBA's manual GRANT while serving: gone within the reconcile interval.
    cluster()
        .psql("app", &format!("GRANT app_write TO {mallory}"))
        .unwrap();
    assert!(j.until(Duration::from_secs(3), || !held(&mallory)).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let drift: Vec<_> = j
        .audit_kinds()
        .await
        .into_iter()
        .filter(|(k, _, _)| k == "alert.drift")
        .collect();
    assert_eq!(drift.len(), 2, "{drift:?}");
    assert!(drift
        .iter()
        .all(|(_, sev, d)| sev == "alert" && d["login_role"] == mallory.as_str()));
    j.stop().await;
}

#[tokio::test]
async fn a_held_statement_never_runs_for_a_client_that_left() {
    let j = Jitgate::start("on_missing_grant = \"hold\"\nhold_timeout = \"30s\"").await;
    let mut psql = std::process::Command::new("psql")
        .args(["-X", "-c", "UPDATE orders SET total = 0 WHERE id = 54"])
        .arg(format!(
            "host=127.0.0.1 port={} dbname=app user=alice",
            j.addr.port()
        ))
        .env("PGPASSWORD", password("alice"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let id = loop {
        if let Some(r) = j.pending().await.first() {
            break r.id;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    psql.kill().unwrap();
    psql.wait().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    j.approve(id, "bob").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let total = cluster()
        .psql("app", "SELECT total FROM orders WHERE id = 54")
        .unwrap();
    assert_eq!(total.trim(), "54", "the held UPDATE did not run");
    j.stop().await;
}

#[tokio::test]
async fn previews_plan_as_the_requester_and_leave_nothing_behind() {
    let j = Jitgate::start("").await;
    let (alice, _) = j.connect("alice").await; // creates her login role
    drop(alice);
    cluster()
        .psql(
            "app",
            "CREATE OR REPLACE FUNCTION planner_sees() RETURNS text IMMUTABLE LANGUAGE sql \
             AS $$ SELECT current_user::text $$",
        )
        .unwrap();
    let (summary, plan) = enforcer::inspect::blast_radius(
        &j.config,
        "app",
        "alice",
        "app_write",
        "UPDATE orders SET total = 0 WHERE id = 80 AND planner_sees() <> 'x'",
    )
    .await
    .unwrap();
    assert!(
        summary.starts_with("Update on orders: about 1 row"),
        "{summary}"
    );
    // The function the planner folded ran as alice's login role, not as admin.
    let sql = "SELECT * FROM orders WHERE total::text = planner_sees()";
    let (_, plan2) = enforcer::inspect::blast_radius(&j.config, "app", "alice", "app_write", sql)
        .await
        .unwrap();
    assert!(plan2.contains(&j.login_role("alice")), "{plan2}");
    assert!(!plan2.contains("'postgres'"), "{plan2}");
    assert!(plan.contains("Index Scan"), "{plan}");
    assert!(!j.member("alice"), "the membership was never committed");
    for bad in [
        "UPDATE orders SET total = 0; DROP TABLE orders",
        "DROP TABLE orders",
        "SELEC 1",
    ] {
        assert!(
            enforcer::inspect::blast_radius(&j.config, "app", "alice", "app_write", bad)
                .await
                .is_err(),
            "{bad}"
        );
    }
    let n = cluster()
        .psql("app", "SELECT count(*) FROM orders")
        .unwrap();
    assert_eq!(n.trim(), "1000");
    j.stop().await;
}

#[tokio::test]
async fn with_the_store_down_grants_still_end_on_time_and_nothing_new_is_filed() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("state.db").display());
    let flaky = std::sync::Arc::new(common::flaky::FlakyStore {
        inner: store::open(&url).await.unwrap(),
        down: Default::default(),
    });
    let j = Jitgate::start_on(&config_text(""), flaky.clone(), dir).await;
    let (alice, _) = j.connect("alice").await;
    let id = j.request("alice", chrono::Duration::seconds(2)).await;
    j.approve(id, "bob").await;
    assert!(j.until(Duration::from_secs(2), || j.member("alice")).await);
    flaky.down.store(true, std::sync::atomic::Ordering::Relaxed);
    // A statement under the grant needs its audit record first: refused.
    let e = alice
        .batch_execute("UPDATE orders SET total = total WHERE id = 90")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "57P03");
    assert!(message(&e).contains("cannot write the audit log"), "{e}");
    // The grant ends on time: refused at the gateway, revoked in the database.
    assert!(j.until(Duration::from_secs(4), || !j.member("alice")).await);
    let e = alice
        .batch_execute("UPDATE orders SET total = total WHERE id = 90")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert!(message(&e).contains("state store unavailable"), "{e}");
    // Reads need nothing from the store.
    assert_eq!(
        alice
            .query_one("SELECT 5", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        5
    );
    flaky
        .down
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let refused_for_audit = || async {
        j.audit_kinds().await.into_iter().any(|(k, _, d)| {
            k == "statement.refused"
                && d["reason"]
                    .as_str()
                    .is_some_and(|r| r.contains("cannot write the audit log"))
        })
    };
    let mut recorded = false;
    for _ in 0..100 {
        if refused_for_audit().await {
            recorded = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(recorded, "the refusal is recorded once the store is back");
    j.stop().await;
}

/// A function whose write no rule foresees: only PostgreSQL can refuse it.
fn unforeseen_write(name: &str) {
    cluster()
        .psql(
            "app",
            &format!(
                "CREATE OR REPLACE FUNCTION {name}(i int) RETURNS int LANGUAGE plpgsql AS $$
                 BEGIN
                   RAISE NOTICE '{name} %', i;
                   UPDATE orders SET total = total + 1 WHERE id = i;
                   RETURN i;
                 END $$;"
            ),
        )
        .unwrap();
}

fn total(id: i32) -> i32 {
    cluster()
        .psql("app", &format!("SELECT total FROM orders WHERE id = {id}"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_statement_postgresql_refused_is_held_and_runs_once_approved() {
    unforeseen_write("bump_held");
    let j = Jitgate::start_text(
        &config_without_rules("on_missing_grant = \"hold\"\nhold_timeout = \"20s\""),
        None,
    )
    .await;
    let (alice, mut notices) = j.connect("alice").await;
    let alice = std::sync::Arc::new(alice);
    // Simple protocol, then extended with an unnamed statement.
    for (round, id) in [(1, 60), (2, 61)] {
        let before = total(id);
        let a = alice.clone();
        let run = tokio::spawn(async move {
            if round == 1 {
                a.simple_query(&format!("SELECT bump_held({id})"))
                    .await
                    .map(|_| ())
            } else {
                a.query_typed(
                    "SELECT bump_held($1)",
                    &[(&id, tokio_postgres::types::Type::INT4)],
                )
                .await
                .map(|rows| assert_eq!(rows[0].get::<_, i32>(0), id))
            }
        });
        // The first attempt's notice never reaches the client: it sees one
        // statement, which ran once. (Round 2 first hears round 1's grant end.)
        let mut notice = String::new();
        for _ in 0..3 {
            notice = tokio::time::timeout(Duration::from_secs(5), notices.recv())
                .await
                .unwrap()
                .unwrap();
            if !notice.contains("has revoked") {
                break;
            }
        }
        assert!(notice.contains("holding this statement"), "{notice}");
        if round == 1 {
            let pending = j.pending().await;
            assert_eq!(pending.len(), 1);
            assert_eq!(pending[0].trigger.as_deref(), Some("SELECT bump_held(60)"));
            j.approve(pending[0].id, "bob").await;
        } else {
            // The grant of round 1 was given back meanwhile (below).
            let pending = j.pending().await;
            assert_eq!(pending.len(), 1);
            j.approve(pending[0].id, "bob").await;
        }
        tokio::time::timeout(Duration::from_secs(10), run)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        let notice = notices.recv().await.unwrap();
        assert_eq!(notice, format!("bump_held {id}"));
        assert!(notices.try_recv().is_err(), "one run, one notice");
        assert_eq!(total(id), before + 1, "ran exactly once");
        // Give the grant back for the next round.
        for g in j
            .store
            .grants(&store::GrantFilter {
                user: Some("alice".into()),
                active_only: true,
            })
            .await
            .unwrap()
        {
            j.revoke(g.id).await;
        }
        assert!(j.until(Duration::from_secs(5), || !j.member("alice")).await);
    }
    // A procedure may have committed part of its work before the refusal:
    // explained at once, never run twice.
    cluster()
        .psql(
            "app",
            "CREATE TABLE IF NOT EXISTS scratch (i int);
             GRANT INSERT, SELECT ON scratch TO app_read;
             CREATE OR REPLACE PROCEDURE half_done(i int) LANGUAGE plpgsql AS $$
             BEGIN
               INSERT INTO scratch VALUES (i);
               COMMIT;
               UPDATE orders SET total = total + 1 WHERE id = i;
             END $$;",
        )
        .unwrap();
    let e = tokio::time::timeout(
        Duration::from_secs(5),
        alice.batch_execute("CALL half_done(63)"),
    )
    .await
    .expect("not held")
    .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert!(message(&e).contains("filed request"), "{e}");
    let done = cluster()
        .psql("app", "SELECT count(*) FROM scratch WHERE i = 63")
        .unwrap();
    assert_eq!(done.trim(), "1");
    let pending = j.pending().await;
    assert_eq!(pending.len(), 1);
    j.deny(pending[0].id, "bob").await;
    // Inside a transaction block the refused statement already aborted it:
    // explained at once, request filed, nothing held.
    alice.batch_execute("BEGIN").await.unwrap();
    let e = alice
        .batch_execute("SELECT bump_held(62)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert!(message(&e).contains("filed request"), "{e}");
    alice.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(j.pending().await.len(), 1);
    j.stop().await;
}
