//! The login role stays the gateway's, and nothing granted during a window
//! outlives it: attacks from a user session, checked in PostgreSQL's own log
//! (`log_statement = all`) to have never reached the server; drift planted
//! by an administrator, taken back by the reconciler; wire logins audited and
//! throttled.

mod common;

use common::*;
use std::sync::OnceLock;
use std::time::Duration;

/// Logs every statement the server receives; objects owned by app_write.
fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let c = cluster();
        log_every_statement();
        c.psql(
            "app",
            "CREATE SCHEMA w_schema AUTHORIZATION app_write;
             CREATE TABLE w_schema.kept (id int);
             ALTER TABLE w_schema.kept OWNER TO app_write;
             CREATE FUNCTION w_schema.owned_fn() RETURNS int LANGUAGE sql AS 'select 1';
             ALTER FUNCTION w_schema.owned_fn() OWNER TO app_write;",
        )
        .unwrap();
    });
}

async fn grant_for_alice(j: &Jitgate) -> i64 {
    let id = j.request("alice", chrono::Duration::seconds(600)).await;
    let g = j.approve(id, "bob").await;
    assert!(j.until(Duration::from_secs(2), || j.member("alice")).await);
    g.id
}

/// A direct login to PostgreSQL as `role` with `password` (bypassing the gateway).
async fn direct_login(role: &str, password: &str) -> Result<(), tokio_postgres::Error> {
    let (client, conn) = tokio_postgres::connect(
        &format!(
            "host=127.0.0.1 port={} dbname=app user={role} password={password}",
            cluster().port()
        ),
        tokio_postgres::NoTls,
    )
    .await?;
    tokio::spawn(conn);
    client.simple_query("SELECT 1").await.map(|_| ())
}

fn psql_one(sql: &str) -> String {
    cluster().psql("app", sql).unwrap().trim().to_string()
}

#[tokio::test]
async fn the_login_role_cannot_be_altered_in_any_spelling() {
    setup();
    let j = Jitgate::start("").await;
    let (alice, _) = j.connect("alice").await;
    let me = j.login_role("alice");
    let scram = postgres_protocol::password::scram_sha_256(b"pw_marker_scram");
    let attempts = [
        "ALTER ROLE CURRENT_USER PASSWORD 'pw_marker_1'".to_string(),
        format!("ALTER USER {me} PASSWORD '{scram}'"),
        format!("alter user \"{me}\" with password 'pw_marker_2'"),
        "ALTER ROLE SESSION_USER PASSWORD 'pw_marker_3'".to_string(),
        "ALTER ROLE CURRENT_ROLE PASSWORD 'pw_marker_4'".to_string(),
        "ALTER ROLE CURRENT_USER SET search_path = 'pw_marker_5'".to_string(),
        format!("ALTER ROLE {me} IN DATABASE app SET work_mem = '64MB' /* pw_marker_6 */"),
        format!("ALTER ROLE {me} RENAME TO pw_marker_7"),
        "CREATE ROLE pw_marker_8 LOGIN".to_string(),
        "ALTER ROLE CURRENT_USER PASSWORD 'pw_marker_10' garbage".to_string(),
        format!("ALTER ROLE {me} CREATEROLE /* pw_marker_9 */"),
    ];
    for sql in &attempts {
        let e = alice.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}: {e}");
        let m = message(&e);
        assert!(
            m.contains("CREATEROLE") || m.contains("cannot read"),
            "{sql}: {m}"
        );
    }
    for i in 1..=10 {
        assert!(
            !server_saw(&format!("pw_marker_{i}")),
            "attempt {i} reached PostgreSQL"
        );
    }
    assert!(!server_saw(&scram));
    // None of the passwords logs in, and the audit log holds none of them.
    for pw in ["pw_marker_1", "pw_marker_scram", "pw_marker_2"] {
        assert!(direct_login(&me, pw).await.is_err(), "{pw} logs in");
    }
    let audit = j.audit_kinds().await;
    let refused: Vec<_> = audit
        .iter()
        .filter(|(k, _, _)| k == "statement.refused")
        .collect();
    assert_eq!(refused.len(), attempts.len());
    for (_, severity, d) in refused {
        assert_eq!(severity, "alert");
        let text = d["text"].as_str().unwrap();
        assert!(
            !text.contains("pw_marker_1") && !text.contains("SCRAM-SHA-256$"),
            "{text}"
        );
    }
    assert_eq!(
        psql_one(&format!(
            "SELECT count(*) FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole \
             WHERE r.rolname = '{me}'"
        )),
        "0"
    );
    j.stop().await;
}

#[tokio::test]
async fn privileges_taken_during_a_window_do_not_outlive_it() {
    setup();
    let j = Jitgate::start("").await;
    let (alice, _) = j.connect("alice").await;
    let me = j.login_role("alice");
    // Before any grant: the login role's own objects are PostgreSQL's to judge.
    cluster()
        .psql(
            "app",
            &format!(
                "CREATE TABLE alice_own_{me} (id int); ALTER TABLE alice_own_{me} OWNER TO {me}"
            ),
        )
        .unwrap();
    alice
        .batch_execute(&format!("GRANT SELECT ON alice_own_{me} TO app_read"))
        .await
        .expect("a grant on the login role's own table passes");
    let e = alice
        .batch_execute("GRANT SELECT ON orders TO app_write /* gr_marker_0 */")
        .await
        .unwrap_err();
    assert!(message(&e).contains("managed role \"app_write\""), "{e}");

    let grant = grant_for_alice(&j).await;
    let attempts = [
        format!("GRANT INSERT ON w_schema.kept TO {me} /* gr_marker_1 */"),
        "GRANT USAGE ON SCHEMA w_schema TO CURRENT_USER /* gr_marker_2 */".to_string(),
        "GRANT SELECT ON w_schema.kept TO PUBLIC /* gr_marker_3 */".to_string(),
        "GRANT app_write TO CURRENT_USER /* gr_marker_4 */".to_string(),
        "GRANT SELECT ON ALL TABLES IN SCHEMA w_schema TO PUBLIC /* gr_marker_5 */".to_string(),
        format!("ALTER TABLE w_schema.kept OWNER TO {me} /* gr_marker_6 */"),
        "CREATE OR REPLACE FUNCTION w_schema.owned_fn() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'select 2' /* gr_marker_7 */".to_string(),
        "REASSIGN OWNED BY app_write TO CURRENT_USER /* gr_marker_8 */".to_string(),
        "ALTER FUNCTION w_schema.owned_fn() SECURITY DEFINER /* gr_marker_9 */".to_string(),
        "GRANT SELECT ON kept TO PUBLIC /* gr_marker_10 */".to_string(),
    ];
    for sql in &attempts {
        let e = alice.batch_execute(sql).await.unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}: {e}");
        assert!(message(&e).starts_with("jitgate refuses"), "{sql}: {e}");
    }
    for i in 0..=10 {
        assert!(
            !server_saw(&format!("gr_marker_{i} ")),
            "attempt {i} reached PostgreSQL"
        );
    }
    // The grant itself works (the table is app_write's).
    alice
        .batch_execute("INSERT INTO w_schema.kept VALUES (1) /* gr_marker_ran */")
        .await
        .unwrap();
    assert!(
        server_saw("gr_marker_ran"),
        "the server log records statements"
    );
    // A migration on the login role's own objects runs while the grant is in
    // force: PostgreSQL decides.
    alice
        .batch_execute(&format!(
            "GRANT SELECT ON alice_own_{me} TO app_read; \
             CREATE FUNCTION w_schema.mine_{me}() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'select 1'; \
             CREATE OR REPLACE FUNCTION w_schema.mine_{me}() RETURNS int LANGUAGE sql AS 'select 2'"
        ))
        .await
        .expect("the login role's own objects are PostgreSQL's to judge");
    j.revoke(grant).await;
    assert!(j.until(Duration::from_secs(2), || !j.member("alice")).await);
    assert_eq!(
        psql_one(&format!(
            "SELECT has_table_privilege('{me}', 'w_schema.kept', 'INSERT')::text || \
             has_schema_privilege('{me}', 'w_schema', 'USAGE')::text"
        )),
        "falsefalse"
    );
    // Just after the end (the membership is gone here, but a REVOKE can lag
    // — another replica's, the reconciler's) the guard still judges alice as
    // holding the role: nothing it guards is sent.
    let e = alice
        .batch_execute(&format!(
            "GRANT INSERT ON w_schema.kept TO {me} /* gr_marker_after */"
        ))
        .await
        .unwrap_err();
    assert!(message(&e).starts_with("jitgate refuses"), "{e}");
    assert!(!server_saw("gr_marker_after "));
    j.stop().await;
}

#[tokio::test]
async fn the_reconciler_takes_back_direct_privileges_and_role_defaults() {
    setup();
    let j = Jitgate::start("reconcile_interval = \"1s\"").await;
    let (_alice, _) = j.connect("alice").await;
    let me = j.login_role("alice");
    // An administrator (or a session before this version) left these behind.
    cluster()
        .psql(
            "app",
            &format!(
                "GRANT SELECT, INSERT ON w_schema.kept TO {me} WITH GRANT OPTION;
                 GRANT USAGE ON SCHEMA w_schema TO {me};
                 GRANT SELECT ON w_schema.kept TO PUBLIC;
                 ALTER ROLE {me} SET work_mem = '64MB';
                 ALTER ROLE {me} IN DATABASE app SET search_path = evil;"
            ),
        )
        .unwrap();
    let check = format!(
        "SELECT (has_table_privilege('{me}', 'w_schema.kept', 'SELECT') OR \
                 has_table_privilege('{me}', 'w_schema.kept', 'INSERT') OR \
                 has_schema_privilege('{me}', 'w_schema', 'USAGE') OR \
                 EXISTS (SELECT 1 FROM pg_class c, aclexplode(c.relacl) a \
                         WHERE c.oid = 'w_schema.kept'::regclass AND a.grantee = 0) OR \
                 EXISTS (SELECT 1 FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole \
                         WHERE r.rolname = '{me}'))::text"
    );
    assert_eq!(psql_one(&check), "true");
    assert!(
        j.until(Duration::from_secs(5), || psql_one(&check) == "false")
            .await,
        "the reconciler took everything back"
    );
    // The audit writer is asynchronous: poll for the records.
    // Counted for this login role: PUBLIC's SELECT is taken back too (the
    // check above), but the gateways of this binary's other tests reconcile
    // the same cluster, and the first to see it records it.
    let drift = |audit: &[(String, String, serde_json::Value)], what: &str| {
        audit
            .iter()
            .filter(|(k, s, d)| k == "alert.drift" && s == "alert" && d["drift"] == what)
            .filter(|(_, _, d)| d["grantee"] == me.as_str() || d["login_role"] == me.as_str())
            .count()
    };
    let mut audit = Vec::new();
    for _ in 0..50 {
        audit = j.audit_kinds().await;
        if drift(&audit, "privilege") >= 2 && drift(&audit, "role_setting") >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(drift(&audit, "privilege") >= 2, "{audit:?}");
    assert!(drift(&audit, "role_setting") >= 2, "{audit:?}");
    j.stop().await;
}

#[tokio::test]
async fn a_password_set_outside_the_gateway_is_replaced() {
    setup();
    let text = config_text("");
    let j = Jitgate::start_text(&text, None).await;
    let (alice, _) = j.connect("alice").await;
    let me = j.login_role("alice");
    cluster()
        .psql("app", &format!("ALTER ROLE {me} PASSWORD 'stolen_1'"))
        .unwrap();
    assert!(direct_login(&me, "stolen_1").await.is_ok());
    // The next new upstream login fails with the gateway's password: alert,
    // a fresh password, and the user is let in anyway.
    let (again, _) = j.connect("alice").await;
    again.simple_query("SELECT 1").await.unwrap();
    assert!(direct_login(&me, "stolen_1").await.is_err());
    let audit = j.audit_kinds().await;
    assert!(audit
        .iter()
        .any(|(k, s, _)| k == "alert.login_role_password" && s == "alert"));
    drop((alice, again));
    let prefix = j.prefix.clone();
    j.stop().await;

    // Every start sets a fresh password, before anyone connects.
    cluster()
        .psql("app", &format!("ALTER ROLE {me} PASSWORD 'stolen_2'"))
        .unwrap();
    assert!(direct_login(&me, "stolen_2").await.is_ok());
    let j = Jitgate::start_text(&text, None).await;
    assert_eq!(j.prefix, prefix);
    assert!(direct_login(&me, "stolen_2").await.is_err());
    j.stop().await;
}

#[tokio::test]
async fn failed_wire_logins_are_audited_and_throttled() {
    setup();
    let j = Jitgate::start("").await;
    let connect = |user: &str, password: &str| {
        format!(
            "host={} port={} dbname=app user={user} password={password}",
            j.addr.ip(),
            j.addr.port()
        )
    };
    for _ in 0..10 {
        let e = tokio_postgres::connect(&connect("alice", "wrong"), tokio_postgres::NoTls)
            .await
            .err()
            .expect("refused");
        assert_eq!(sqlstate(&e), "28P01");
    }
    // Throttled now, even with the right password.
    let e = tokio_postgres::connect(&connect("alice", &password("alice")), tokio_postgres::NoTls)
        .await
        .err()
        .expect("throttled");
    assert_eq!(sqlstate(&e), "28000");
    assert!(message(&e).contains("too many failed logins"), "{e}");
    // Another user from the same address is not (yet) affected.
    j.connect("carol").await;
    // Unknown user names are audited the same way.
    assert!(
        tokio_postgres::connect(&connect("mallory", "x"), tokio_postgres::NoTls)
            .await
            .is_err()
    );
    let j2 = &j;
    let audited = || async move {
        j2.audit_kinds()
            .await
            .into_iter()
            .filter(|(k, _, _)| k.starts_with("auth."))
            .collect::<Vec<_>>()
    };
    let mut events = audited().await;
    for _ in 0..50 {
        if events.len() >= 11 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        events = audited().await;
    }
    assert_eq!(events.len(), 11, "{events:?}");
    assert_eq!(
        events
            .iter()
            .filter(|(k, _, _)| k == "auth.throttled")
            .count(),
        1
    );
    for (_, severity, d) in &events {
        assert_eq!(severity, "alert");
        assert_eq!(d["peer"], "127.0.0.1");
        assert_eq!(d["listener"], "wire");
    }
    let records = j.store.audit_all().await.unwrap();
    assert!(records
        .iter()
        .any(|r| r.event.kind == "auth.failed" && r.event.actor == "mallory"));
    j.stop().await;
}
