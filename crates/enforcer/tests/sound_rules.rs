//! Rules stricter than the database: the gateway is the only barrier, so
//! what it reads must be what PostgreSQL runs. Here the baseline role may
//! already write `orders` and `audit_trail` and read `secrets`; the rules
//! reserve those (none is backed). Each attack runs as alice, holding only
//! the baseline role, from tokio-postgres or a raw protocol client, and
//! PostgreSQL's own log (`log_statement = all`) shows that refused
//! statements never reached it.

mod common;

use common::*;
use std::sync::OnceLock;
use std::time::Duration;
use testkit::raw::{self, error_fields, msg, Raw};

/// A database more permissive than the rules, logging every statement.
fn setup() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let c = cluster();
        log_every_statement();
        c.psql(
            "app",
            "GRANT SELECT ON secrets TO app_read;
             GRANT INSERT, UPDATE, DELETE ON orders, audit_trail TO app_read;
             INSERT INTO audit_trail VALUES (1);
             CREATE SEQUENCE public.ids;
             GRANT USAGE, UPDATE ON SEQUENCE public.ids TO app_read;
             CREATE FUNCTION wipe(i int) RETURNS int LANGUAGE sql
               AS $$ DELETE FROM orders WHERE id = i RETURNING id $$;
             -- A user function taking a built-in's name, and a user operator.
             CREATE FUNCTION public.lower(i int) RETURNS int LANGUAGE sql
               AS $$ DELETE FROM orders WHERE id = i RETURNING id $$;
             CREATE FUNCTION public.wipe_pair(a int, b int) RETURNS int LANGUAGE sql
               AS $$ DELETE FROM orders WHERE id = a RETURNING id $$;
             CREATE OPERATOR public.=== (leftarg = int, rightarg = int,
               function = public.wipe_pair);
             CREATE FUNCTION scs_off() RETURNS text LANGUAGE sql
               AS $$ SELECT set_config('standard_conforming_strings', 'off', false) $$;",
        )
        .unwrap();
    });
}

fn count(sql: &str) -> String {
    cluster().psql("app", sql).unwrap().trim().to_string()
}

async fn start() -> Jitgate {
    setup();
    Jitgate::start("").await
}

#[tokio::test]
async fn lexical_settings_cannot_be_turned_off_in_any_spelling() {
    let j = start().await;
    let (alice, _) = j.connect("alice").await;
    for (i, sql) in [
        "SET standard_conforming_strings = off",
        "SET SESSION standard_conforming_strings TO false",
        "SET standard_conforming_strings = 0",
        "SELECT set_config('standard_conforming_strings', 'off', false)",
        "SELECT pg_catalog.set_config('Standard_Conforming_Strings', 'of', true)",
        "VALUES (set_config('standard_conforming_strings', 'no', false))",
        "CREATE FUNCTION f_lex() RETURNS int LANGUAGE sql \
         SET standard_conforming_strings = off AS 'select 1'",
        "SET client_encoding = 'SJIS'",
        "SET NAMES 'BIG5'",
        "SELECT set_config('client_encoding', 'GBK', false)",
    ]
    .into_iter()
    .enumerate()
    {
        let marker = format!("lex-marker-{i}");
        let e = alice
            .batch_execute(&format!("{sql} /* {marker} */"))
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "0A000", "{sql}: {e}");
        assert!(!server_saw(&marker), "{sql} reached the server");
    }
    // Inside a transaction, SET LOCAL too.
    alice.batch_execute("BEGIN").await.unwrap();
    let e = alice
        .batch_execute("SET LOCAL standard_conforming_strings = off /* lex-local */")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "0A000");
    alice.batch_execute("ROLLBACK").await.unwrap();
    // A bound setting name is judged at Bind, by its value.
    let e = alice
        .query_typed(
            "SELECT set_config($1, $2, false)",
            &[
                (
                    &"standard_conforming_strings",
                    tokio_postgres::types::Type::TEXT,
                ),
                (&"off", tokio_postgres::types::Type::TEXT),
            ],
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501", "{e}");
    // Turning it on, or back to the start value, is ordinary.
    alice
        .batch_execute("SET standard_conforming_strings = on; RESET standard_conforming_strings")
        .await
        .unwrap();
    // psql, with the setting in the statement and in PGOPTIONS.
    for (options, sql) in [
        ("", "SET standard_conforming_strings = off"),
        ("-c standard_conforming_strings=off", "SELECT 1"),
    ] {
        // psql blocks: off the runtime thread, which serves the gateway.
        let (addr, options_env, sql_arg) = (j.addr, options.to_string(), sql.to_string());
        let out = tokio::task::spawn_blocking(move || {
            std::process::Command::new("psql")
                .args(["-X", "-v", "ON_ERROR_STOP=1", "-h"])
                .arg(addr.ip().to_string())
                .args(["-p", &addr.port().to_string(), "-U", "alice", "-d", "app"])
                .args(["-c", &sql_arg])
                .env("PGPASSWORD", password("alice"))
                .env("PGOPTIONS", options_env)
                .stdin(std::process::Stdio::null())
                .output()
                .expect("psql runs")
        })
        .await
        .unwrap();
        assert!(!out.status.success(), "{options:?} {sql}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("standard_conforming_strings"), "{stderr}");
    }
    // Startup parameters and options.
    for (key, value) in [
        ("standard_conforming_strings", "off"),
        ("options", "-c standard_conforming_strings=off"),
        ("options", "--standard-conforming-strings=false"),
    ] {
        let mut raw = Raw::connect(j.addr).await;
        raw.send(&raw::startup_packet(
            &[("user", "alice"), ("database", "app"), (key, value)],
            3 << 16,
        ))
        .await;
        let (tag, body) = raw.recv().await.expect("an answer");
        assert_eq!(tag, b'E', "{key}={value}");
        let (code, message) = error_fields(&body);
        assert!(code == "0A000" || code == "42501", "{code} {message}");
        assert!(message.contains("standard_conforming_strings"), "{message}");
    }
    j.stop().await;
}

#[tokio::test]
async fn a_session_the_database_puts_under_unreadable_settings_is_ended() {
    let j = start().await;
    // Planted outside the gateway: a default on the login role.
    // carol keeps one session open (its backend is not pooled), so the
    // next one starts a new backend, under the default.
    let role = j.login_role("carol");
    let (_carol, _) = j.connect("carol").await;
    cluster()
        .psql(
            "app",
            &format!("ALTER ROLE {role} SET standard_conforming_strings = off"),
        )
        .unwrap();
    let err = tokio_postgres::connect(
        &format!(
            "host={} port={} dbname=app user=carol password={}",
            j.addr.ip(),
            j.addr.port(),
            password("carol")
        ),
        tokio_postgres::NoTls,
    )
    .await
    .err()
    .expect("refused");
    assert_eq!(sqlstate(&err), "0A000", "{err}");
    assert!(
        message(&err).contains("standard_conforming_strings"),
        "{err}"
    );
    cluster()
        .psql("app", &format!("ALTER ROLE {role} RESET ALL"))
        .unwrap();

    j.stop().await;

    // Set by a function the gateway cannot see into (a rule names it, and
    // alice holds its role): the session ends when the server says so.
    let text = format!(
        "{}\n[[rule]]\ndatabase = \"app\"\nactions = [\"call\"]\nobjects = [\"public.scs_off\"]\nrole = \"app_write\"\n",
        config_text("")
    );
    let j = Jitgate::start_text(&text, None).await;
    let id = j.request("alice", chrono::Duration::seconds(600)).await;
    j.approve(id, "bob").await;
    assert!(j.until(Duration::from_secs(2), || j.member("alice")).await);
    let (alice, _) = j.connect("alice").await;
    let e = alice.batch_execute("SELECT scs_off()").await.unwrap_err();
    assert!(message(&e).contains("jitgate ends this session"), "{e}");
    assert!(alice.is_closed() || alice.batch_execute("SELECT 1").await.is_err());

    // Pipelined behind it: a literal the server would read differently is
    // refused without being sent, whatever happens to the session.
    let (alice, _) = j.connect("alice").await;
    let before = count("SELECT count(*) FROM audit_trail");
    // One literal to a parser with the defaults; a SELECT and a DELETE to a
    // server with standard_conforming_strings off.
    let payload = r"SELECT 'a\''; DELETE FROM audit_trail; -- pipelined-marker'";
    let (first, second) = tokio::join!(
        alice.simple_query("SELECT scs_off()"),
        alice.simple_query(payload)
    );
    assert!(first.is_err() || second.is_err());
    if let Err(e) = &second {
        if let Some(db) = e.as_db_error() {
            assert_eq!(db.code().code(), "0A000", "{e}");
        }
    }
    assert_eq!(count("SELECT count(*) FROM audit_trail"), before);
    assert!(!server_saw("pipelined-marker"));
    // The audit writer is asynchronous: poll for the alert.
    let alerted = |kinds: &[(String, String, serde_json::Value)]| {
        kinds
            .iter()
            .any(|(k, s, _)| k == "alert.unreadable_session" && s == "alert")
    };
    let mut kinds = j.audit_kinds().await;
    for _ in 0..50 {
        if alerted(&kinds) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        kinds = j.audit_kinds().await;
    }
    assert!(alerted(&kinds), "{kinds:?}");
    j.stop().await;
}

#[tokio::test]
async fn calls_in_every_position_count() {
    let j = start().await;
    let (alice, _) = j.connect("alice").await;
    for (i, sql) in [
        "VALUES (wipe(101))",
        "SELECT 1 ORDER BY wipe(102)",
        "SELECT * FROM (VALUES (wipe(103))) v",
        "SELECT 1 LIMIT wipe(104)",
        // A user function taking a built-in's name, and a user operator.
        "SELECT lower(105)",
        "SELECT 106 OPERATOR(public.===) 1",
        "SELECT 107 === 1",
    ]
    .into_iter()
    .enumerate()
    {
        let marker = format!("call-marker-{i}");
        let e = alice
            .batch_execute(&format!("{sql} /* {marker} */"))
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}: {}", message(&e));
        // Opaque under unbacked rules: needs app_write, or meets the deny
        // rule on audit_trail.
        assert!(message(&e).starts_with("jitgate"), "{sql}: {}", message(&e));
        assert!(!server_saw(&marker), "{sql} reached the server");
    }
    assert_eq!(
        count("SELECT count(*) FROM orders WHERE id BETWEEN 101 AND 107"),
        "7"
    );
    // Built-ins stay transparent.
    let rows = alice
        .simple_query("SELECT upper('abc'), 1 + 2, now() IS NOT NULL")
        .await
        .unwrap();
    assert!(!rows.is_empty());
    j.stop().await;
}

#[tokio::test]
async fn built_ins_that_run_sql_or_read_by_name_are_reads() {
    let j = start().await;
    let (alice, _) = j.connect("alice").await;
    for (i, sql) in [
        "SELECT query_to_xml('select note from public.secrets', true, false, '')",
        "SELECT xpath('//note/text()', query_to_xml('select note from secrets', true, false, ''))",
        "SELECT table_to_xml('public.secrets', true, false, '')",
        "SELECT table_to_xml('secrets'::regclass, true, false, '')",
        "SELECT schema_to_xml('public', true, false, '')",
        "SELECT database_to_xml(true, false, '')",
        "SELECT * FROM ts_stat('select to_tsvector(note) from secrets')",
        "DECLARE c CURSOR FOR SELECT note FROM secrets",
    ]
    .into_iter()
    .enumerate()
    {
        let marker = format!("xml-marker-{i}");
        let r = alice.simple_query(&format!("{sql} /* {marker} */")).await;
        let e = r.err().unwrap_or_else(|| panic!("{sql} ran"));
        assert_eq!(sqlstate(&e), "42501", "{sql}: {e}");
        assert!(!server_saw(&marker), "{sql} reached the server");
    }
    j.stop().await;
}

#[tokio::test]
async fn statements_that_store_a_query_count_as_that_query() {
    let j = start().await;
    let (alice, _) = j.connect("alice").await;
    for (i, sql) in [
        "CREATE TEMP TABLE x1 AS SELECT note FROM public.secrets",
        "CREATE TEMP TABLE x2 AS TABLE public.secrets",
        "SELECT note INTO TEMP x3 FROM secrets",
        "CREATE TEMP VIEW v1 AS SELECT note FROM secrets",
        "CREATE MATERIALIZED VIEW v2 AS SELECT note FROM secrets",
        "EXPLAIN ANALYZE CREATE TEMP TABLE x4 AS SELECT note FROM secrets",
        "PREPARE p1 AS SELECT note FROM secrets",
    ]
    .into_iter()
    .enumerate()
    {
        let marker = format!("store-marker-{i}");
        let e = alice
            .batch_execute(&format!("{sql} /* {marker} */"))
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&e), "42501", "{sql}: {e}");
        assert!(!server_saw(&marker), "{sql} reached the server");
    }
    j.stop().await;
}

/// A FunctionCall message: OID, text arguments, text result.
fn function_call(oid: u32, args: &[&str]) -> Vec<u8> {
    let mut b = oid.to_be_bytes().to_vec();
    b.extend_from_slice(&1i16.to_be_bytes());
    b.extend_from_slice(&0i16.to_be_bytes());
    b.extend_from_slice(&(args.len() as i16).to_be_bytes());
    for a in args {
        b.extend_from_slice(&(a.len() as i32).to_be_bytes());
        b.extend_from_slice(a.as_bytes());
    }
    b.extend_from_slice(&0i16.to_be_bytes());
    msg(b'F', &b)
}

fn oid_of(proc: &str) -> u32 {
    count(&format!("SELECT '{proc}'::regprocedure::oid"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn fast_path_calls_are_judged_as_the_select_they_amount_to() {
    let j = start().await;
    let mut r = Raw::login(j.addr, "alice", &password("alice")).await;
    let set_config = oid_of("set_config(text,text,boolean)");
    let nextval = oid_of("nextval(regclass)");
    let before = count("SELECT last_value FROM public.ids");
    for (call, code) in [
        (
            function_call(set_config, &["role", "app_write", "false"]),
            "42501",
        ),
        (
            function_call(set_config, &["standard_conforming_strings", "off", "false"]),
            "0A000",
        ),
        (function_call(nextval, &["public.ids"]), "42501"),
    ] {
        r.send(&call).await;
        let got = r.until_ready().await;
        let e = got.iter().find(|(t, _)| *t == b'E').expect("refused");
        assert_eq!(error_fields(&e.1).0, code, "{:?}", error_fields(&e.1));
    }
    // An OID the catalog does not have names no function.
    r.send(&function_call(4_000_000_000, &[])).await;
    let got = r.until_ready().await;
    let e = got.iter().find(|(t, _)| *t == b'E').expect("refused");
    assert_eq!(error_fields(&e.1).0, "42883");
    assert_eq!(count("SELECT last_value FROM public.ids"), before);
    assert_eq!(count("SHOW standard_conforming_strings"), "on");
    // An ordinary built-in through the fast path still works.
    r.send(&function_call(oid_of("md5(text)"), &["abc"])).await;
    let got = r.until_ready().await;
    let v = got
        .iter()
        .find(|(t, _)| *t == b'V')
        .unwrap_or_else(|| panic!("a result: {got:?}"));
    assert!(
        v.1.ends_with(b"900150983cd24fb0d6963f7d28e17f72"),
        "{:?}",
        v.1
    );
    j.stop().await;
}

#[tokio::test]
async fn a_statement_prepared_under_a_grant_is_judged_again_at_each_bind() {
    let j = start().await;
    let (alice, _) = j.connect("alice").await;
    let id = j.request("alice", chrono::Duration::seconds(600)).await;
    let grant = j.approve(id, "bob").await;
    assert!(j.until(Duration::from_secs(2), || j.member("alice")).await);
    let update = alice
        .prepare("UPDATE orders SET total = total WHERE id = $1 /* bind-marker */")
        .await
        .unwrap();
    assert_eq!(alice.execute(&update, &[&9i32]).await.unwrap(), 1);
    let ran = cluster().log().matches("bind-marker").count();
    j.revoke(grant.id).await;
    assert!(j.until(Duration::from_secs(5), || !j.member("alice")).await);
    // The baseline role may write orders: only the gateway stands in the way.
    let e = alice.execute(&update, &[&9i32]).await.unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert!(message(&e).starts_with("jitgate"), "{}", message(&e));
    assert_eq!(cluster().log().matches("bind-marker").count(), ran);
    j.stop().await;
}

#[tokio::test]
async fn a_query_with_a_refused_statement_sends_none_of_it() {
    let j = start().await;
    let (alice, _) = j.connect("alice").await;
    let e = alice
        .batch_execute(
            "SELECT 'multi-marker-1'; UPDATE orders SET total = -1 WHERE id = 1; SELECT 2",
        )
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&e), "42501");
    assert!(!server_saw("multi-marker-1"));
    j.stop().await;
}
