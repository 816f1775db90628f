//! Rules applied to classified statements.

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
