//! Transparent for ordinary work: with no rule reserving anything, statements
//! reach PostgreSQL unchanged and get PostgreSQL's own answer; with rules, a
//! statement whose effect the gateway cannot see counts as touching what the
//! rules cover.

mod common;

use common::*;
use std::time::Duration;

#[tokio::test]
async fn without_rules_functions_do_blocks_and_signals_reach_the_database() {
    let j = Jitgate::start_text(&config_without_rules(""), None).await;
    let (alice, mut notices) = j.connect("alice").await;
    let (sibling, _) = j.connect("alice").await;
    // A user function, a DO block that only raises a notice, CALL-like work.
    let v: i32 = alice
        .query_one("SELECT bump(41)", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, 42);
    alice
        .batch_execute("DO $$ BEGIN RAISE NOTICE 'hello from DO'; END $$")
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), notices.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(n, "hello from DO");
    // Terminating a sibling backend of the same role: PostgreSQL allows it.
    let pid: i32 = sibling
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let done: bool = alice
        .query_one("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap()
        .get(0);
    assert!(done);
    assert!(
        j.until(Duration::from_secs(5), || sibling.is_closed())
            .await
    );
    // The database still enforces the login role's own privileges, and the
    // gateway explains which role would allow it.
    let e = alice
        .batch_execute("DELETE FROM orders WHERE id = 1")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert!(message(&e).contains("needs role \"app_write\""), "{e}");
    assert_eq!(j.pending().await.len(), 1);
    j.stop().await;
}

#[tokio::test]
async fn an_unseen_call_needs_the_roles_of_the_rules_the_database_does_not_back() {
    cluster()
        .psql(
            "app",
            "CREATE SCHEMA IF NOT EXISTS wild;
             CREATE TABLE IF NOT EXISTS wild.t (i int);
             GRANT USAGE ON SCHEMA wild TO app_read;
             GRANT INSERT ON wild.t TO app_read;",
        )
        .unwrap();
    let text = config_text("");
    let rules_start = text.find("[[rule]]").unwrap();
    let write_rule_end = text[rules_start..].find("\n\n").unwrap() + rules_start;
    // Writes on public.* need app_write, and the baseline role cannot write
    // there: the database backs the rule. A user function may write, but
    // PostgreSQL would refuse it: the call goes through.
    let j = Jitgate::start_text(&text[..write_rule_end], None).await;
    let (alice, _) = j.connect("alice").await;
    let v: i32 = alice.query_one("SELECT bump(1)", &[]).await.unwrap().get(0);
    assert_eq!(v, 2);
    assert!(j.pending().await.is_empty());
    j.stop().await;
    // The same rule over wild.*, which the baseline role may already write:
    // only the gateway stands in the way, so the call needs app_write.
    let unbacked =
        text[..write_rule_end].replace("objects = [\"public.*\"]", "objects = [\"wild.*\"]");
    let j = Jitgate::start_text(&unbacked, None).await;
    let (alice, _) = j.connect("alice").await;
    alice
        .batch_execute("SET jitgate.reason = 'bump'")
        .await
        .unwrap();
    let e = alice.query_one("SELECT bump(1)", &[]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert!(message(&e).contains("needs role \"app_write\""), "{e}");
    assert_eq!(j.pending().await.len(), 1, "a request was filed");
    // A built-in admin function touches no object: PostgreSQL decides.
    let ok: bool = alice
        .query_one("SELECT pg_cancel_backend(pg_backend_pid() + 1000000)", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!ok);
    j.stop().await;
}

#[tokio::test]
async fn returning_to_the_login_role_passes() {
    let j = Jitgate::start_text(&config_without_rules("reconcile_interval = \"1s\""), None).await;
    let (alice, _) = j.connect("alice").await;
    let me = j.login_role("alice");
    for sql in [
        "RESET ROLE",
        "SET ROLE NONE",
        "RESET ALL",
        "RESET SESSION AUTHORIZATION",
        "SET SESSION AUTHORIZATION DEFAULT",
        "DISCARD ALL",
    ] {
        alice
            .batch_execute(sql)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"));
        let who: String = alice
            .query_one("SELECT current_user::text", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(who, me, "{sql}");
    }
    let e = alice.batch_execute("SET ROLE app_read").await.unwrap_err();
    assert!(message(&e).starts_with("jitgate"), "{e}");
    j.stop().await;
}

#[tokio::test]
async fn syntax_errors_are_postgresqls_own() {
    let j = Jitgate::start("").await;
    let (alice, _) = j.connect("alice").await;
    let (direct, conn) = tokio_postgres::connect(&cluster().url("app"), tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let answer = |e: tokio_postgres::Error| {
        let db = e.as_db_error().expect("a server error").clone();
        let position = match db.position() {
            Some(tokio_postgres::error::ErrorPosition::Original(p)) => Some(*p),
            _ => None,
        };
        (
            db.code().code().to_string(),
            db.message().to_string(),
            position,
        )
    };
    for sql in [
        "SELEC 1",
        "SELECT 1 FROM FROM orders",
        "SELECT (",
        "SELECT 'é', 'ü' FROM FROM orders",
        "select 'unterminated",
        "SELECT 1; SELECT 2 FROM FROM orders",
        "UPDATE orders SET WHERE id = 1",
    ] {
        let want = answer(direct.batch_execute(sql).await.unwrap_err());
        let got = answer(alice.batch_execute(sql).await.unwrap_err());
        assert_eq!(got, want, "{sql}");
        assert_eq!(got.0, "42601", "{sql}");
    }
    // Extended protocol too (Parse).
    let want = answer(
        direct
            .prepare("SELECT 1 FROM FROM orders")
            .await
            .unwrap_err(),
    );
    let got = answer(
        alice
            .prepare("SELECT 1 FROM FROM orders")
            .await
            .unwrap_err(),
    );
    assert_eq!(got, want);
    // The session goes on, and a syntax error is nobody's alert.
    let v: i32 = alice.query_one("SELECT 7", &[]).await.unwrap().get(0);
    assert_eq!(v, 7);
    assert!(!j
        .audit_kinds()
        .await
        .iter()
        .any(|(k, _, _)| k == "statement.refused"));
    j.stop().await;
}

#[tokio::test]
async fn switching_to_an_encoding_no_parser_can_lex_is_refused() {
    let j = Jitgate::start("").await;
    let (alice, _) = j.connect("alice").await;
    for sql in [
        "SET client_encoding = 'SJIS'",
        "SET NAMES 'big5'",
        "SET client_encoding TO 'Shift_JIS'",
        "SELECT set_config('client_encoding', 'GBK', false)",
        "SELECT 1; SET LOCAL client_encoding = 'UHC'",
    ] {
        let e = alice.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "0A000", "{sql}: {e}");
        assert!(message(&e).contains("lex"), "{sql}: {e}");
    }
    let enc: String = alice
        .query_one("SHOW client_encoding", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(enc, "UTF8");
    j.stop().await;
}

#[tokio::test]
async fn the_gateway_says_at_start_which_rules_the_database_does_not_back() {
    // The test database backs the write and read rules (app_read may only
    // read, and not secrets), but PUBLIC may EXECUTE public.as_writer().
    let j = Jitgate::start("").await;
    let mut unbacked = Vec::new();
    for _ in 0..100 {
        unbacked = j
            .audit_kinds()
            .await
            .into_iter()
            .filter(|(k, _, _)| k == "alert.unbacked_rule")
            .map(|(_, _, d)| d)
            .collect();
        if !unbacked.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(unbacked.len(), 1, "{unbacked:?}");
    let d = &unbacked[0];
    assert!(
        d["rule"]
            .as_str()
            .unwrap()
            .starts_with("call on public.as_writer"),
        "{d}"
    );
    assert!(
        d["revoke"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r == "REVOKE EXECUTE ON FUNCTION as_writer() FROM PUBLIC;"),
        "{d}"
    );
    j.stop().await;
}

#[tokio::test]
async fn a_refusal_by_postgresql_is_explained_and_files_a_request() {
    // No rule foresees the write inside this function: PostgreSQL refuses it.
    cluster()
        .psql(
            "app",
            "CREATE OR REPLACE FUNCTION bump_order(i int) RETURNS void LANGUAGE plpgsql
             AS $$ BEGIN UPDATE orders SET total = total + 1 WHERE id = i; END $$;",
        )
        .unwrap();
    let j = Jitgate::start_text(&config_without_rules(""), None).await;
    let (alice, _) = j.connect("alice").await;
    alice
        .batch_execute("SET jitgate.reason = 'fix order 5'")
        .await
        .unwrap();
    let e = alice
        .batch_execute("SELECT bump_order(5)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    let m = message(&e);
    let pending = j.pending().await;
    assert_eq!(pending.len(), 1, "a request was filed: {m}");
    let r = &pending[0];
    assert_eq!(r.role, "app_write");
    assert_eq!(r.reason, "fix order 5");
    assert!(
        m.contains("\"app_write\"") && m.contains(&format!("request {}", r.id)),
        "{m}"
    );
    // The session goes on; once approved, the same statement runs.
    j.approve(r.id, "bob").await;
    assert!(j.until(Duration::from_secs(2), || j.member("alice")).await);
    alice.batch_execute("SELECT bump_order(5)").await.unwrap();
    let total: i32 = alice
        .query_one("SELECT total FROM orders WHERE id = 5", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 6);
    cluster()
        .psql("app", "UPDATE orders SET total = 5 WHERE id = 5")
        .unwrap();
    // A permission error no managed role would lift stays PostgreSQL's own.
    let e = alice
        .batch_execute("SELECT * FROM pg_authid")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert!(message(&e).starts_with("permission denied"), "{e}");
    j.stop().await;
}

#[tokio::test]
async fn set_config_with_bound_parameters_is_decided_by_the_values() {
    let j = Jitgate::start("").await;
    let (alice, _) = j.connect("alice").await;
    let me = j.login_role("alice");
    let set = "SELECT set_config($1::text, $2, false)";
    let v: String = alice
        .query_one(set, &[&"default_transaction_isolation", &"serializable"])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "serializable");
    // The same prepared statement with an identity setting: refused at Bind.
    let stmt = alice.prepare(set).await.unwrap();
    for name in ["role", "ROLE", " session_authorization "] {
        let e = alice
            .query_one(&stmt, &[&name, &"app_write"])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{name}: {e}");
        assert!(message(&e).contains("identity"), "{e}");
    }
    // And the statement stays usable for ordinary settings.
    let v: String = alice
        .query_one(&stmt, &[&"work_mem", &"8MB"])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "8MB");
    let who: String = alice
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, me);
    // A parameter name in a simple query, or inside PREPARE, has no Bind.
    let e = alice
        .batch_execute("PREPARE s(text) AS SELECT set_config($1, 'x', false)")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    j.stop().await;
}
