//! Classification, case by case: the class is the most privileged thing a
//! statement can do, identity changes are flagged in every spelling, and
//! unreadable text is an error.

use policy::classify::{classify, ActionKind::*};

#[test]
fn classes_of_ordinary_statements() {
    for (sql, want) in [
        ("SELECT * FROM orders WHERE id = 1", Read),
        ("select 1", Read),
        ("INSERT INTO orders (id) VALUES (1)", Write),
        ("UPDATE public.orders SET total = 0", Write),
        ("DELETE FROM orders", Write),
        (
            "MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE",
            Write,
        ),
        ("TRUNCATE orders", Write),
        ("LOCK TABLE orders IN ACCESS EXCLUSIVE MODE", Write),
        ("CREATE TABLE x (id int)", Ddl),
        ("ALTER TABLE orders ADD COLUMN note text", Ddl),
        ("DROP TABLE orders", Ddl),
        ("CREATE INDEX ON orders (id)", Ddl),
        ("GRANT SELECT ON orders TO bob", Privilege),
        ("GRANT app_write TO jit_bob", Privilege),
        ("CREATE ROLE evil SUPERUSER", Privilege),
        ("ALTER TABLE orders OWNER TO bob", Privilege),
        ("ALTER ROLE CURRENT_USER PASSWORD 'x'", Privilege),
        (
            "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO bob",
            Privilege,
        ),
        (
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'select 1'",
            Privilege,
        ),
        ("ALTER FUNCTION f() SECURITY DEFINER", Privilege),
        (
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'",
            Ddl,
        ),
        ("VACUUM orders", Admin),
        ("ALTER SYSTEM SET work_mem = '1GB'", Admin),
        ("CREATE EXTENSION dblink", Admin),
        ("SET work_mem = '64MB'", Session),
        ("SHOW work_mem", Read),
        ("LISTEN ch", Session),
        ("BEGIN", Transaction),
        ("COMMIT", Transaction),
        ("DO $$ BEGIN PERFORM 1; END $$", Call),
        ("CALL do_things()", Call),
        ("EXECUTE some_prepared_statement", Unknown),
        ("", Session),
        ("-- just a comment", Session),
    ] {
        let a = classify(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(a.kind, want, "{sql}");
        assert!(!a.identity_change, "{sql}");
    }
}

#[test]
fn the_most_privileged_part_decides() {
    for (sql, want) in [
        (
            "WITH gone AS (DELETE FROM orders RETURNING *) SELECT count(*) FROM gone",
            Write,
        ),
        ("EXPLAIN ANALYZE DELETE FROM orders", Write),
        (
            "EXPLAIN (ANALYZE, BUFFERS) UPDATE orders SET total = 1",
            Write,
        ),
        ("EXPLAIN DELETE FROM orders", Read),
        ("SELECT * INTO copy_of_orders FROM orders", Write),
        ("CREATE TABLE t2 AS SELECT * FROM orders", Ddl),
        ("COPY orders FROM STDIN", Write),
        ("COPY orders TO STDOUT", Read),
        ("COPY (SELECT * FROM orders) TO STDOUT", Read),
        ("COPY orders TO '/tmp/orders.csv'", Admin),
        ("COPY orders FROM PROGRAM 'curl evil'", Admin),
        ("SELECT pg_read_file('/etc/passwd')", Admin),
        (
            "SELECT * FROM dblink('host=x', 'DELETE FROM t') AS t(x int)",
            Admin,
        ),
        ("SELECT pg_catalog.pg_terminate_backend(123)", Admin),
        ("SELECT 1; DELETE FROM orders", Write),
        ("BEGIN; SELECT 1; COMMIT", Read),
        ("PREPARE p AS DELETE FROM orders", Write),
        ("DECLARE c CURSOR FOR SELECT * FROM orders", Read),
    ] {
        assert_eq!(classify(sql).unwrap().kind, want, "{sql}");
    }
}

#[test]
fn identity_changes_in_any_spelling() {
    for sql in [
        "SET ROLE postgres",
        "set role postgres",
        "SET LOCAL ROLE postgres",
        "SET SESSION ROLE postgres",
        "SET SESSION AUTHORIZATION postgres",
        "SET ROLE 'none2'",
        "SET session_authorization = 'postgres'",
        "SET \"role\" TO postgres",
        "SELECT set_config('role', 'postgres', false)",
        "SELECT set_config('ROLE', 'postgres', false)",
        "SELECT pg_catalog.set_config('session_authorization', 'postgres', false)",
        "SELECT set_config(name, 'x', false) FROM (VALUES ('role')) v(name)",
        "SELECT 1; SET ROLE postgres",
        "WITH x AS (SELECT set_config('role', 'postgres', true)) SELECT * FROM x",
    ] {
        let a = classify(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert!(a.identity_change, "{sql}");
    }
    // Back to the login role: these pass.
    for sql in [
        "SELECT set_config('search_path', 'x', false)",
        "RESET ROLE",
        "SET ROLE NONE",
        "set role to 'none'",
        "RESET ALL",
        "RESET SESSION AUTHORIZATION",
        "SET SESSION AUTHORIZATION DEFAULT",
        "DISCARD ALL",
    ] {
        let a = classify(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert!(!a.identity_change, "{sql}");
    }
}

#[test]
fn objects_and_functions_as_written() {
    let a = classify(
        "SELECT o.id, lower(c.name) FROM sales.orders o JOIN customers c ON c.id = o.customer_id",
    )
    .unwrap();
    assert_eq!(
        a.objects.iter().map(String::as_str).collect::<Vec<_>>(),
        ["customers", "sales.orders"]
    );
    assert!(a.functions.contains("lower"));
}

#[test]
fn unreadable_text_is_an_error() {
    for sql in [
        "SELEC 1",
        "DELETE FROM",
        "SELECT 'unterminated",
        "SELECT 1; DELET FROM orders",
    ] {
        assert!(classify(sql).is_err(), "{sql}");
    }
}

#[test]
fn holdable_cursors_and_the_reason_setting_are_noticed() {
    let a = classify("DECLARE c CURSOR WITH HOLD FOR SELECT * FROM orders").unwrap();
    assert!(a.holdable_cursor);
    let a = classify("DECLARE c CURSOR FOR SELECT * FROM orders").unwrap();
    assert!(!a.holdable_cursor);
    let a = classify("SET jitgate.reason = 'fix order 1'").unwrap();
    assert_eq!(a.sets_reason.as_deref(), Some("fix order 1"));
    let a = classify("set JITGATE.REASON to 'ticket 7'").unwrap();
    assert_eq!(a.sets_reason.as_deref(), Some("ticket 7"));
    assert_eq!(
        classify("SET application_name = 'x'").unwrap().sets_reason,
        None
    );
}

#[test]
fn functions_that_are_not_built_in_make_a_call() {
    let builtin = policy::catalog::Builtins::with_functions(["count", "now", "lower"]);
    let kind = |sql: &str| classify(sql).unwrap().with_calls(&builtin).kind;
    assert_eq!(kind("SELECT count(*), now() FROM orders"), Read);
    assert_eq!(kind("SELECT pg_catalog.lower('A')"), Read);
    assert_eq!(kind("SELECT refresh_totals()"), Call);
    assert_eq!(kind("SELECT public.lower('A')"), Call);
    assert_eq!(kind("SELECT pg_catalog.evil()"), Call);
    // A write stays a write (Call ranks below Ddl but above Write).
    assert_eq!(kind("DELETE FROM orders WHERE id = f()"), Call);
    assert_eq!(kind("DROP TABLE x"), Ddl);
    // User-defined operators and types run user-defined functions.
    assert_eq!(kind("SELECT 1 OPERATOR(public.===) 2"), Call);
    assert_eq!(kind("SELECT 1 === 2"), Call);
    assert_eq!(kind("SELECT 1 + 2"), Read);
    assert_eq!(kind("SELECT 'x'::mydomain"), Call);
    assert_eq!(kind("SELECT '1'::int4, 'x'::pg_catalog.text"), Read);
    // A built-in's name taken by a user function is no longer built in.
    builtin.shadow("lower");
    assert_eq!(kind("SELECT lower(1)"), Call);
}

#[test]
fn statements_that_hand_objects_to_a_role_name_it() {
    for (sql, want) in [
        ("ALTER TABLE orders OWNER TO app_write", vec!["app_write"]),
        ("ALTER FUNCTION f() OWNER TO App_Write", vec!["app_write"]),
        ("ALTER FUNCTION f() OWNER TO \"Mixed\"", vec!["Mixed"]),
        (
            "REASSIGN OWNED BY jit_alice TO app_write",
            vec!["app_write"],
        ),
        ("CREATE SCHEMA s AUTHORIZATION app_write", vec!["app_write"]),
        (
            "ALTER DEFAULT PRIVILEGES FOR ROLE app_write GRANT SELECT ON TABLES TO jit_alice",
            vec!["app_write"],
        ),
        ("ALTER TABLE orders OWNER TO CURRENT_USER", vec![]),
        ("ALTER TABLE orders ADD COLUMN x int", vec![]),
    ] {
        let a = classify(sql).unwrap();
        assert_eq!(
            a.owners.iter().map(String::as_str).collect::<Vec<_>>(),
            want,
            "{sql}"
        );
    }
}

#[test]
fn objects_are_found_inside_wrapping_statements() {
    for sql in [
        "PREPARE w AS UPDATE orders SET total = 0 WHERE id = $1",
        "DECLARE c CURSOR FOR SELECT * FROM orders",
        "EXPLAIN ANALYZE DELETE FROM orders",
        "CREATE TABLE t2 AS SELECT * FROM orders",
        "COPY (SELECT * FROM orders) TO STDOUT",
        "WITH d AS (DELETE FROM orders RETURNING *) SELECT * FROM d",
        "CREATE VIEW v AS SELECT * FROM orders",
        "CREATE MATERIALIZED VIEW mv AS SELECT * FROM orders",
        "EXPLAIN SELECT * FROM orders",
        "CREATE RULE r AS ON INSERT TO t DO INSTEAD DELETE FROM orders",
        "DECLARE c CURSOR WITH HOLD FOR SELECT * FROM orders",
        "PREPARE p AS SELECT * FROM orders",
    ] {
        let a = classify(sql).unwrap();
        assert!(a.objects.contains("orders"), "{sql}: {:?}", a.objects);
    }
    // A rule's action is what the rule does: a write.
    let rule = classify("CREATE RULE r AS ON INSERT TO t DO INSTEAD DELETE FROM orders").unwrap();
    assert_eq!(rule.kind, Write.max(Ddl));
    let cursor = classify("DECLARE c CURSOR FOR SELECT pg_read_file('/etc/passwd')").unwrap();
    assert_eq!(cursor.kind, Admin);
}

#[test]
fn built_in_functions_that_change_data_are_writes() {
    for (sql, object) in [
        ("SELECT nextval('orders_id_seq')", Some("orders_id_seq")),
        (
            "SELECT setval('public.orders_id_seq'::regclass, 1)",
            Some("public.orders_id_seq"),
        ),
        ("SELECT lo_unlink(16401)", None),
        ("SELECT lowrite(0, 'x')", None),
    ] {
        let a = classify(sql).unwrap();
        assert_eq!(a.kind, Write, "{sql}");
        if let Some(o) = object {
            assert!(a.objects.contains(o), "{sql}: {:?}", a.objects);
        }
    }
    assert_eq!(classify("SELECT currval('s')").unwrap().kind, Read);
}

#[test]
fn procedures_and_do_blocks_may_commit_inside() {
    use policy::classify::may_commit_inside;
    assert!(may_commit_inside("CALL tidy()"));
    assert!(may_commit_inside("do $$ begin commit; end $$"));
    assert!(may_commit_inside("SELECT ("), "unreadable: assumed so");
    assert!(!may_commit_inside("SELECT bump(5)"));
    assert!(!may_commit_inside("UPDATE orders SET total = 1"));
}

#[test]
fn lexical_settings_in_every_spelling() {
    for (sql, value) in [
        ("SET standard_conforming_strings = off", Some("off")),
        (
            "SET LOCAL standard_conforming_strings TO false",
            Some("false"),
        ),
        ("SET SESSION standard_conforming_strings = 0", Some("0")),
        (
            "select set_config('standard_conforming_strings', 'off', false)",
            Some("off"),
        ),
        (
            "SELECT set_config('standard_conforming_strings', x, true) FROM t",
            None,
        ),
        (
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql \
             SET standard_conforming_strings = off AS 'select 1'",
            Some("off"),
        ),
        (
            "ALTER FUNCTION f() SET standard_conforming_strings TO off",
            Some("off"),
        ),
    ] {
        let a = classify(sql).unwrap();
        assert_eq!(
            a.sets_standard_strings,
            vec![value.map(str::to_string)],
            "{sql}"
        );
        assert!(a.may_change_lexing, "{sql}");
    }
    let a = classify(
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql SET client_encoding = 'SJIS' AS 'select 1'",
    )
    .unwrap();
    assert_eq!(a.sets_client_encoding, vec![Some("SJIS".to_string())]);
    // Back to the session's starting value, which the gateway checked.
    for sql in [
        "RESET standard_conforming_strings",
        "SET standard_conforming_strings TO DEFAULT",
        "RESET ALL",
    ] {
        assert!(
            classify(sql).unwrap().sets_standard_strings.is_empty(),
            "{sql}"
        );
    }
    assert!(!classify("SELECT 1").unwrap().may_change_lexing);
    // A function call may too, once the catalog says it is not built in.
    let b = policy::catalog::Builtins::with_functions(["upper"]);
    assert!(
        classify("SELECT my_function()")
            .unwrap()
            .with_calls(&b)
            .may_change_lexing
    );
    assert!(
        !classify("SELECT upper('a')")
            .unwrap()
            .with_calls(&b)
            .may_change_lexing
    );
    assert!(
        classify("DO $$ begin perform 1; end $$")
            .unwrap()
            .may_change_lexing
    );
    assert!(policy::classify::is_identity_value(
        " Standard_Conforming_Strings"
    ));
}
