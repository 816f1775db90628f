//! The product story with a real PostgreSQL: a privileged statement is refused
//! and files a request; approval lets it through in the same session, in the
//! gateway and in the database; the end of the grant takes the role away from
//! the database and from every live session, on every path.

mod common;

use common::*;
use std::time::Duration;

#[tokio::test]
async fn refused_write_files_one_request_and_approval_unlocks_the_same_session() {
    let j = Jitgate::start("").await;
    let (alice, _) = j.connect("alice").await;
    alice
        .batch_execute("SET jitgate.reason = 'fix order 1'")
        .await
        .unwrap();
    let e = alice
        .execute("DELETE FROM orders WHERE id = 1", &[])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let m = message(&e);
    let pending = j.pending().await;
    assert_eq!(pending.len(), 1);
    let r = &pending[0];
    for part in [
        "\"app_write\"",
        &format!("request {}", r.id),
        "leads (bob)",
        &format!("/ui/requests/{}", r.id),
    ] {
        assert!(m.contains(part), "{part:?} missing from: {m}");
    }
    assert_eq!(r.reason, "fix order 1");
    assert_eq!(
        r.trigger.as_deref(),
        Some("DELETE FROM orders WHERE id = 1")
    );
    // Asking again reuses the pending request.
    let e = alice
        .execute("UPDATE orders SET total = 0 WHERE id = 2", &[])
        .await
        .unwrap_err();
    assert!(message(&e).contains(&format!("is waiting on request {}", r.id)));
    assert_eq!(j.pending().await.len(), 1);
    // Reads are baseline: they keep working.
    let n: i64 = alice
        .query_one("SELECT count(*) FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1000);
    assert!(!j.member("alice"));

    let grant = j.approve(r.id, "bob").await;
    assert!(j.until(Duration::from_secs(2), || j.member("alice")).await);
    // Same session, no reconnect.
    let mut deleted = 0;
    for _ in 0..50 {
        match alice.execute("DELETE FROM orders WHERE id = 1", &[]).await {
            Ok(n) => {
                deleted = n;
                break;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
    assert_eq!(deleted, 1);
    let audit = j.audit_kinds().await;
    let run = audit
        .iter()
        .find(|(k, _, d)| k == "statement.run" && d["text"] == "DELETE FROM orders WHERE id = 1")
        .expect("statement.run audited");
    assert_eq!(run.2["grant"], grant.id);
    assert_eq!(run.2["role"], "app_write");
    assert!(run.2["fingerprint"].as_str().unwrap().len() >= 8);
    let refused: Vec<_> = audit
        .iter()
        .filter(|(k, _, _)| k == "statement.refused")
        .collect();
    assert_eq!(refused.len(), 2);
    assert!(refused.iter().all(|(_, sev, _)| sev == "alert"));
    alice
        .batch_execute("INSERT INTO orders VALUES (1, 1)")
        .await
        .unwrap();
    j.stop().await;
}

#[tokio::test]
async fn identity_changes_unreadable_text_denied_objects_and_unnamed_calls_are_refused() {
    let j = Jitgate::start("").await;
    let (alice, _) = j.connect("alice").await;
    for sql in [
        "SET ROLE app_write",
        "set role = 'app_write'",
        "SET SESSION AUTHORIZATION postgres",
        "SELECT 1; SET LOCAL ROLE app_write",
        "SELECT set_config('role', 'app_write', false)",
        "SELECT pg_catalog.SET_CONFIG('ROLE', 'app_write', true)",
        "SELECT set_config(lower('ROLE'), 'app_write', false)",
        "INSERT INTO audit_trail VALUES (1)",
        "DO $$ BEGIN DELETE FROM orders; END $$",
        "SELECT bump(1)",
        "ALTER FUNCTION bump(int) OWNER TO app_write",
        "DECLARE k CURSOR WITH HOLD FOR SELECT * FROM secrets",
        "REASSIGN OWNED BY CURRENT_USER TO app_write",
    ] {
        let e = alice.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}: {e}");
        assert!(message(&e).starts_with("jitgate"), "{sql}: {e}");
        // The session stays usable.
        let v: i32 = alice.query_one("SELECT 7", &[]).await.unwrap().get(0);
        assert_eq!(v, 7);
    }
    // Server files and programs: no rule names them, so PostgreSQL decides
    // (and refuses: the login role lacks pg_read_server_files and the like).
    for sql in [
        "SELECT pg_read_file('/etc/passwd')",
        "COPY orders TO PROGRAM 'true'",
    ] {
        let e = alice.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}: {e}");
        assert!(!message(&e).starts_with("jitgate"), "{sql}: {e}");
    }
    // Built-in functions are not calls.
    let v: String = alice
        .query_one("SELECT lower('AB') || count(*)::text FROM orders", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "ab1000");
    // Denials file nothing; the opaque statements (a DO block, a user
    // function) count as touching the one rule the database does not back
    // (`call` on as_writer), so they filed one request for its role.
    let pending = j.pending().await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    assert_eq!(pending[0].role, "app_write");
    j.stop().await;
}

/// Ends a grant of `secs` seconds for alice; returns its id after it is applied.
async fn short_grant(j: &Jitgate, secs: i64) -> i64 {
    let id = j.request("alice", chrono::Duration::seconds(secs)).await;
    let g = j.approve(id, "bob").await;
    assert!(j.until(Duration::from_secs(2), || j.member("alice")).await);
    g.id
}

#[tokio::test]
async fn at_the_end_no_session_keeps_the_role_on_any_path() {
    let j = Jitgate::start("expiry_warning = \"1s\"").await;
    let (alice, mut notices) = j.connect("alice").await;
    let (second, _) = j.connect("alice").await;
    let _g = short_grant(&j, 3).await;
    // During the grant: a prepared write, a function declared SET role, an
    // open transaction with a write in it, and writes in a second session.
    let stmt = alice
        .prepare("UPDATE orders SET total = total + 1 WHERE id = $1")
        .await
        .unwrap();
    assert_eq!(alice.execute(&stmt, &[&10]).await.unwrap(), 1);
    let who: String = alice
        .query_one("SELECT as_writer()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, "app_write");
    assert_eq!(
        second
            .execute("UPDATE orders SET total = 5 WHERE id = 11", &[])
            .await
            .unwrap(),
        1
    );
    // Reading secrets needs the grant; a WITH HOLD cursor would keep the rows.
    let n: i64 = alice
        .query_one("SELECT count(*) FROM secrets", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    let e = alice
        .batch_execute("DECLARE kept CURSOR WITH HOLD FOR SELECT * FROM secrets")
        .await
        .unwrap_err();
    assert!(
        message(&e).starts_with("jitgate refuses WITH HOLD cursors"),
        "{}",
        message(&e)
    );
    alice
        .batch_execute("BEGIN; UPDATE orders SET total = -1 WHERE id = 12")
        .await
        .unwrap();
    // A warning before the end, a notice at it.
    let warned = tokio::time::timeout(Duration::from_secs(5), notices.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(warned.contains("ends in"), "{warned}");
    let ended = tokio::time::timeout(Duration::from_secs(5), notices.recv())
        .await
        .unwrap()
        .unwrap();
    assert!(ended.contains("has expired"), "{ended}");
    assert!(!j.member("alice"), "REVOKEd in the database");
    // The open transaction cannot commit: it rolls back whole.
    let e = alice.batch_execute("COMMIT").await.unwrap_err();
    assert!(message(&e).contains("can only roll back"), "{e}");
    alice.batch_execute("ROLLBACK").await.unwrap();
    let total: i32 = alice
        .query_one("SELECT total FROM orders WHERE id = 12", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        total, 12,
        "the write in the open transaction was rolled back"
    );
    // The statement prepared during the grant: the database refuses it now,
    // and the gateway explains (the role, a request filed).
    let e = alice.execute(&stmt, &[&10]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert!(message(&e).contains("needs role \"app_write\""), "{e}");
    // SET ROLE, the function declared SET role, plain writes, the second
    // session and a new connection: all refused.
    for c in [&alice, &second] {
        for sql in [
            "SET ROLE app_write",
            "SELECT as_writer()",
            "UPDATE orders SET total = 0 WHERE id = 13",
        ] {
            let e = c.batch_execute(sql).await.unwrap_err();
            assert_eq!(sqlstate(&e), "42501", "{sql}");
        }
    }
    let (again, _) = j.connect("alice").await;
    assert!(again
        .batch_execute("UPDATE orders SET total = 0 WHERE id = 13")
        .await
        .is_err());
    // In the database itself, as the login role: no way to the role.
    let direct = cluster()
        .psql(
            "app",
            &format!(
                "SET SESSION AUTHORIZATION {}; SELECT pg_has_role('app_write', 'USAGE')::text",
                j.login_role("alice")
            ),
        )
        .unwrap();
    assert!(direct.contains("false"), "{direct}");
    let err = cluster().psql(
        "app",
        &format!(
            "SET SESSION AUTHORIZATION {}; SELECT as_writer()",
            j.login_role("alice")
        ),
    );
    assert!(
        err.is_err(),
        "SET role in a function fails without membership"
    );
    let audit = j.audit_kinds().await;
    for kind in ["grant.ending_soon", "grant.removed", "session.grant_ended"] {
        assert!(audit.iter().any(|(k, _, _)| k == kind), "{kind} audited");
    }
    j.stop().await;
}

#[tokio::test]
async fn expiry_cancels_a_running_privileged_statement_and_it_rolls_back() {
    let j = Jitgate::start("").await;
    let (alice, _) = j.connect("alice").await;
    short_grant(&j, 2).await;
    let started = std::time::Instant::now();
    let e = alice
        .batch_execute("UPDATE orders SET total = 0 WHERE id = 20 AND pg_sleep(30) IS NOT NULL")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "57014", "{e}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let total: i32 = alice
        .query_one("SELECT total FROM orders WHERE id = 20", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 20);
    j.stop().await;
}

#[tokio::test]
async fn terminate_mode_ends_the_session_that_used_the_role() {
    let j = Jitgate::start("on_expiry = \"terminate\"").await;
    let (alice, _) = j.connect("alice").await;
    let (bystander, _) = j.connect("carol").await;
    short_grant(&j, 2).await;
    alice
        .batch_execute("BEGIN; UPDATE orders SET total = -5 WHERE id = 30")
        .await
        .unwrap();
    assert!(
        j.until(Duration::from_secs(6), || alice.is_closed()).await,
        "session ended"
    );
    let total: i32 = bystander
        .query_one("SELECT total FROM orders WHERE id = 30", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 30, "its transaction rolled back");
    j.stop().await;
}

#[tokio::test]
async fn revoke_takes_effect_at_once() {
    let j = Jitgate::start("").await;
    let (alice, _) = j.connect("alice").await;
    let g = short_grant(&j, 600).await;
    alice
        .batch_execute("UPDATE orders SET total = 40 WHERE id = 40")
        .await
        .unwrap();
    j.revoke(g).await;
    assert!(j.until(Duration::from_secs(2), || !j.member("alice")).await);
    let e = alice
        .batch_execute("UPDATE orders SET total = 40 WHERE id = 40")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let audit = j.audit_kinds().await;
    assert!(audit
        .iter()
        .any(|(k, _, d)| k == "grant.removed" && d["ended"] == "revoked"));
    j.stop().await;
}

#[tokio::test]
async fn finish_statement_lets_the_running_statement_complete() {
    let j = Jitgate::start("on_expiry = \"finish_statement\"").await;
    let (alice, _) = j.connect("alice").await;
    short_grant(&j, 2).await;
    alice
        .batch_execute("UPDATE orders SET total = 0 WHERE id = 60 AND pg_sleep(3) IS NOT NULL")
        .await
        .unwrap();
    let total: i32 = alice
        .query_one("SELECT total FROM orders WHERE id = 60", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 0, "finished and committed");
    assert!(!j.member("alice"));
    let e = alice
        .batch_execute("UPDATE orders SET total = 60 WHERE id = 60")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    cluster()
        .psql("app", "UPDATE orders SET total = 60 WHERE id = 60")
        .unwrap();
    j.stop().await;
}

#[tokio::test]
async fn audit_can_redact_literals() {
    let j = Jitgate::start("redact_literals = true").await;
    let (alice, _) = j.connect("alice").await;
    alice
        .batch_execute("DELETE FROM orders WHERE total = 4242 AND 'secret-ish' <> ''")
        .await
        .unwrap_err();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let audit = j.audit_kinds().await;
    let refused = audit
        .iter()
        .find(|(k, _, _)| k == "statement.refused")
        .expect("audited");
    let text = refused.2["text"].as_str().unwrap();
    assert!(
        !text.contains("4242") && !text.contains("secret-ish"),
        "{text}"
    );
    assert!(text.contains("$1") && text.contains("$2"), "{text}");
    j.stop().await;
}

#[tokio::test]
async fn alerts_for_many_refusals_and_privileged_use_outside_working_hours() {
    // No working days at all: any privileged use is outside working hours.
    let j = Jitgate::start(
        "refusal_alert = 3\nrefusal_alert_window = \"1m\"\nworking_hours = \"09:00-17:00\"\nworking_days = []",
    )
    .await;
    let (alice, _) = j.connect("alice").await;
    for _ in 0..3 {
        alice.batch_execute("SET ROLE app_write").await.unwrap_err();
    }
    short_grant(&j, 600).await;
    alice
        .batch_execute("UPDATE orders SET total = total WHERE id = 70")
        .await
        .unwrap();
    alice
        .batch_execute("UPDATE orders SET total = total WHERE id = 71")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let audit = j.audit_kinds().await;
    let count = |kind: &str| {
        audit
            .iter()
            .filter(|(k, s, _)| k == kind && s == "alert")
            .count()
    };
    assert_eq!(count("alert.refusals"), 1);
    assert_eq!(
        count("alert.off_hours"),
        1,
        "once per grant, not per statement"
    );
    j.stop().await;
}

#[tokio::test]
async fn sql_prepared_statements_are_judged_as_what_was_prepared() {
    let j = Jitgate::start("").await;
    let (alice, _) = j.connect("alice").await;
    let run = |sql: &'static str| {
        let alice = &alice;
        async move { alice.simple_query(sql).await }
    };
    run("PREPARE r AS SELECT count(*) FROM orders")
        .await
        .unwrap();
    assert!(run("EXECUTE r").await.is_ok(), "a prepared read runs");
    let e = run("PREPARE r AS SELECT 1").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42P05");
    run("DEALLOCATE r").await.unwrap();
    run("PREPARE r AS SELECT 2").await.unwrap();
    let e = run("EXECUTE never_prepared").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    // Unknown, it counts as touching the unbacked rule (call on as_writer):
    // a request was filed. Withdraw it so the short grant below is its own.
    for r in j.pending().await {
        j.deny(r.id, "bob").await;
    }
    // A write prepared under a grant is refused by the gateway once it ends.
    short_grant(&j, 2).await;
    run("PREPARE w AS UPDATE orders SET total = total WHERE id = 95")
        .await
        .unwrap();
    run("EXECUTE w").await.unwrap();
    assert!(j.until(Duration::from_secs(5), || !j.member("alice")).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let e = run("EXECUTE w").await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert!(
        message(&e).starts_with("jitgate"),
        "refused by the gateway: {}",
        message(&e)
    );
    j.stop().await;
}
