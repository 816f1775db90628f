//! Rules applied to classified statements.

use policy::catalog::Builtins;
use policy::classify::{classify, ActionKind};
use policy::rules::{object_matches, Outcome, Rule, Rules, Verdict};
use std::collections::BTreeSet;

fn rule(actions: &[ActionKind], objects: &[&str], outcome: Outcome) -> Rule {
    Rule {
        database: "app".into(),
        actions: actions.iter().copied().collect(),
        objects: objects.iter().map(|s| s.to_string()).collect(),
        outcome,
    }
}

fn rules() -> Rules {
    use ActionKind::*;
    Rules::new(vec![
        rule(&[Write], &["public.*"], Outcome::Role("app_write".into())),
        rule(
            &[Write],
            &["billing.invoices"],
            Outcome::Role("billing_write".into()),
        ),
        rule(&[Ddl], &[], Outcome::ApproveEach("app_ddl".into())),
        rule(&[Privilege, Admin], &[], Outcome::Deny),
        rule(
            &[Call],
            &["public.safe_fn"],
            Outcome::Role("app_write".into()),
        ),
    ])
}

fn decide(sql: &str, roles: &[&str]) -> Verdict {
    let roles: BTreeSet<String> = roles.iter().map(|s| s.to_string()).collect();
    rules().decide("app", &classify(sql).unwrap(), &roles)
}

#[test]
fn patterns() {
    assert!(object_matches("public.*", "public.orders"));
    assert!(
        object_matches("public.*", "orders"),
        "unqualified may be in any schema"
    );
    assert!(object_matches("public.orders", "ORDERS"));
    assert!(object_matches("orders", "sales.orders"));
    assert!(!object_matches("public.*", "sales.orders"));
    assert!(!object_matches("public.orders", "public.order_lines"));
    assert!(object_matches("*", "anything.at_all"));
}

#[test]
fn verdicts() {
    let needs = |r: &str| Verdict::NeedsRole(r.into());
    assert_eq!(decide("SELECT * FROM orders", &[]), Verdict::Allow);
    assert_eq!(decide("DELETE FROM orders", &[]), needs("app_write"));
    assert_eq!(
        decide("DELETE FROM public.orders", &["app_write"]),
        Verdict::Allow
    );
    // search_path cannot dodge: unqualified matches every schema's rules.
    assert_eq!(
        decide("DELETE FROM invoices", &["app_write"]),
        needs("billing_write")
    );
    assert_eq!(
        decide("DELETE FROM sales.orders", &[]),
        Verdict::Allow,
        "no rule: the database decides"
    );
    assert_eq!(
        decide(
            "WITH d AS (DELETE FROM orders RETURNING 1) SELECT * FROM d",
            &[]
        ),
        needs("app_write")
    );
    assert_eq!(
        decide("CREATE TABLE t (id int)", &["app_write"]),
        Verdict::ApproveEach("app_ddl".into())
    );
    assert!(matches!(
        decide("GRANT app_write TO jit_alice", &["app_write"]),
        Verdict::Deny(_)
    ));
    assert!(matches!(
        decide("COPY orders TO '/tmp/x'", &["app_write"]),
        Verdict::Deny(_)
    ));
    assert!(matches!(
        decide("SET ROLE postgres", &["app_write"]),
        Verdict::Deny(_)
    ));
    assert!(
        matches!(
            decide("DO $$ BEGIN DELETE FROM orders; END $$", &["app_write"]),
            Verdict::Deny(_)
        ),
        "DO needs a rule"
    );
    assert_eq!(decide("CALL public.safe_fn()", &[]), needs("app_write"));
    assert_eq!(
        decide("CALL public.safe_fn()", &["app_write"]),
        Verdict::Allow
    );
    assert!(
        matches!(decide("EXECUTE p", &["app_write"]), Verdict::Deny(_)),
        "unknown needs a rule"
    );
    assert_eq!(decide("BEGIN", &[]), Verdict::Allow);
}

#[test]
fn opaque_statements_touch_what_the_rules_cover_and_nothing_without_rules() {
    use ActionKind::*;
    let none = BTreeSet::new();
    let held: BTreeSet<String> = ["app_write".to_string()].into();
    let verdict = |rules: &Rules, sql: &str, roles: &BTreeSet<String>| {
        let builtin = Builtins::with_functions(["pg_terminate_backend", "pg_read_file"]);
        rules.decide("app", &classify(sql).unwrap().with_calls(&builtin), roles)
    };
    // No rules at all: the database decides everything.
    let empty = Rules::new(vec![]);
    for sql in [
        "SELECT bump(1)",
        "DO $$ BEGIN RAISE NOTICE 'hi'; END $$",
        "CALL do_things()",
        "EXECUTE some_prepared_statement",
        "SELECT pg_terminate_backend(42)",
        "SELECT pg_read_file('/etc/passwd')",
    ] {
        assert_eq!(verdict(&empty, sql, &none), Verdict::Allow, "{sql}");
    }
    // A rule reserves writes: a call may write, so it needs that role.
    let writes = Rules::new(vec![rule(
        &[Write],
        &["public.orders"],
        Outcome::Role("app_write".into()),
    )]);
    assert_eq!(
        verdict(&writes, "SELECT bump(1)", &none),
        Verdict::NeedsRole("app_write".into())
    );
    assert_eq!(verdict(&writes, "SELECT bump(1)", &held), Verdict::Allow);
    assert_eq!(
        verdict(&writes, "DO $$ BEGIN PERFORM 1; END $$", &none),
        Verdict::NeedsRole("app_write".into())
    );
    // Built-in admin functions touch no object: the database decides.
    assert_eq!(
        verdict(&writes, "SELECT pg_terminate_backend(42)", &none),
        Verdict::Allow
    );
    // A rule naming the function decides for it alone.
    let named = Rules::new(vec![
        rule(
            &[Write],
            &["public.orders"],
            Outcome::Role("app_write".into()),
        ),
        rule(&[Call], &["public.bump"], Outcome::Role("other".into())),
    ]);
    assert_eq!(
        verdict(&named, "SELECT public.bump(1)", &held),
        Verdict::NeedsRole("other".into())
    );
}

#[test]
fn a_user_function_beside_an_admin_call_stays_opaque() {
    use ActionKind::*;
    let writes = Rules::new(vec![rule(
        &[Write],
        &["public.orders"],
        Outcome::Role("app_write".into()),
    )]);
    let a = classify("SELECT pg_terminate_backend(42), bump(1)")
        .unwrap()
        .with_calls(&Builtins::with_functions(["pg_terminate_backend"]));
    assert_eq!(a.kind, Admin);
    assert!(a.opaque);
    assert_eq!(
        writes.decide("app", &a, &BTreeSet::new()),
        Verdict::NeedsRole("app_write".into())
    );
}
