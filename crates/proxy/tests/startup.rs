//! Startup and client authentication: SCRAM, identity-changing parameters,
//! login-role provisioning (including 50 racing first connections), TLS,
//! protocol negotiation.

mod common;

use common::*;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::raw::{self, error_fields, tags, Raw};

#[tokio::test]
async fn right_password_logs_in_as_the_login_role_with_baseline_roles() {
    let gw = TestGateway::start().await;
    let c = gw.alice().await;
    let role = gw.login_role("alice");
    let row = c
        .query_one(
            "SELECT current_user::text, pg_has_role(current_user, 'app_read', 'USAGE')",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), role);
    assert!(row.get::<_, bool>(1));
    let attrs = cluster()
        .psql(
            "app",
            &format!("SELECT rolsuper, rolcreaterole, rolcanlogin FROM pg_roles WHERE rolname = '{role}'"),
        )
        .unwrap();
    assert_eq!(attrs, "f|f|t");
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_error() {
    let gw = TestGateway::start().await;
    for (user, pw) in [("alice", "nope"), ("mallory", "nope"), ("bob", ALICE_PW)] {
        let err = gw.connect(user, pw).await.unwrap_err();
        let db = err.as_db_error().expect("a server error");
        assert_eq!(db.code().code(), "28P01");
        assert_eq!(
            db.message(),
            format!("password authentication failed for user \"{user}\"")
        );
    }
}

#[tokio::test]
async fn unknown_user_takes_no_measurably_different_time() {
    let gw = TestGateway::start().await;
    async fn attempt(gw: &TestGateway, user: &str) -> Duration {
        let t = Instant::now();
        assert!(gw.connect(user, "wrong").await.is_err());
        t.elapsed()
    }
    let (mut known, mut unknown) = (Vec::new(), Vec::new());
    for _ in 0..21 {
        known.push(attempt(&gw, "alice").await);
        unknown.push(attempt(&gw, "nobody_here").await);
    }
    known.sort();
    unknown.sort();
    let (k, u) = (known[10], unknown[10]);
    let diff = k.abs_diff(u);
    assert!(
        diff < Duration::from_millis(10).max(k / 3),
        "median known {k:?} vs unknown {u:?}"
    );
}

#[tokio::test]
async fn identity_changing_startup_parameters_are_refused() {
    let gw = TestGateway::start().await;
    for options in [
        "-c role=postgres",
        "-c session_authorization=postgres",
        "--role=postgres",
    ] {
        let cs = format!("{} options='{options}'", gw.conn_string("alice", ALICE_PW));
        let err = tokio_postgres::connect(&cs, tokio_postgres::NoTls)
            .await
            .err()
            .expect("refused");
        assert_eq!(sqlstate(&err), "42501", "{options}");
    }
    for (k, v) in [("replication", "database"), ("role", "postgres")] {
        let mut r = Raw::connect(gw.addr).await;
        r.send(&raw::startup_packet(
            &[("user", "alice"), ("database", "app"), (k, v)],
            3 << 16,
        ))
        .await;
        let got = r.until_closed().await;
        assert_eq!(tags(&got), "E", "{k}");
        assert_eq!(error_fields(&got[0].1).0, "42501");
    }
    // Harmless options pass upstream.
    let cs = format!(
        "{} options='-c search_path=pg_catalog'",
        gw.conn_string("alice", ALICE_PW)
    );
    let (c, conn) = tokio_postgres::connect(&cs, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let sp: String = c.query_one("SHOW search_path", &[]).await.unwrap().get(0);
    assert_eq!(sp, "pg_catalog");
}

#[tokio::test]
async fn unknown_database_is_refused_after_authentication() {
    let gw = TestGateway::start().await;
    let cs = format!(
        "host=127.0.0.1 port={} dbname=postgres user=alice password={ALICE_PW}",
        gw.addr.port()
    );
    let err = tokio_postgres::connect(&cs, tokio_postgres::NoTls)
        .await
        .err()
        .unwrap();
    assert_eq!(sqlstate(&err), "3D000");
    assert!(err
        .as_db_error()
        .unwrap()
        .message()
        .contains("not configured"));
}

#[tokio::test]
async fn fifty_racing_first_connections_make_one_login_role() {
    let gw = TestGateway::start().await;
    let attempts = (0..50).map(|_| gw.connect("bob", BOB_PW));
    let clients = futures_util::future::join_all(attempts).await;
    let ok = clients.iter().filter(|c| c.is_ok()).count();
    assert_eq!(
        ok,
        50,
        "{:?}",
        clients.iter().find_map(|c| c.as_ref().err())
    );
    let role = gw.login_role("bob");
    let n = cluster()
        .psql(
            "app",
            &format!("SELECT count(*) FROM pg_roles WHERE rolname = '{role}'"),
        )
        .unwrap();
    assert_eq!(n, "1");
}

#[tokio::test]
async fn an_existing_privileged_role_is_never_used_as_a_login_role() {
    cluster();
    let text = config_text("", "[[user]]\nname = \"mallory\"\npassword = \"m-pw\"\n");
    let gw = TestGateway::start_with(&text, Arc::new(proxy::AllowAll)).await;
    let role = gw.login_role("mallory");
    cluster()
        .psql("app", &format!("CREATE ROLE {role} LOGIN SUPERUSER"))
        .unwrap();
    let err = gw.connect("mallory", "m-pw").await.unwrap_err();
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "28000");
    assert!(db.message().contains("SUPERUSER"), "{}", db.message());
    cluster().psql("app", &format!("DROP ROLE {role}")).unwrap();
}

#[tokio::test]
async fn a_missing_baseline_role_is_a_clear_error() {
    cluster();
    let text = config_text("", "").replace(
        "baseline_roles = [\"app_read\"]",
        "baseline_roles = [\"no_such_role\"]",
    );
    let gw = TestGateway::start_with(&text, Arc::new(proxy::AllowAll)).await;
    let err = gw.connect("alice", ALICE_PW).await.unwrap_err();
    let msg = err.as_db_error().unwrap().message().to_string();
    assert!(msg.contains("no_such_role"), "{msg}");
}

#[tokio::test]
async fn newer_protocol_and_unknown_options_get_negotiate_protocol_version() {
    let gw = TestGateway::start().await;
    let mut r = Raw::connect(gw.addr).await;
    r.send(&raw::startup_packet(
        &[
            ("user", "alice"),
            ("database", "app"),
            ("_pq_.future_thing", "1"),
        ],
        3 << 16 | 2,
    ))
    .await;
    let (tag, body) = r.recv().await.unwrap();
    assert_eq!(tag, b'v');
    assert_eq!(&body[..4], &(3i32 << 16).to_be_bytes(), "we speak 3.0");
    assert_eq!(&body[4..8], &1i32.to_be_bytes());
    assert_eq!(&body[8..], b"_pq_.future_thing\0");
    r.authenticate(ALICE_PW).await;
    r.send(&raw::query("SELECT 1")).await;
    assert_eq!(tags(&r.until_ready().await), "TDCZ");
}

#[tokio::test]
async fn gssenc_and_ssl_requests_without_tls_are_answered_n() {
    let gw = TestGateway::start().await;
    let mut r = Raw::connect(gw.addr).await;
    for code in [wire::startup::GSSENC_REQUEST, wire::startup::SSL_REQUEST] {
        r.send(&raw::with_len(&code.to_be_bytes())).await;
        let mut b = [0u8; 1];
        tokio::io::AsyncReadExt::read_exact(&mut r.stream, &mut b)
            .await
            .unwrap();
        assert_eq!(&b, b"N");
    }
    r.send(&raw::startup_packet(
        &[("user", "alice"), ("database", "app")],
        3 << 16,
    ))
    .await;
    r.authenticate(ALICE_PW).await;
}

fn write_cert(dir: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

fn psql(gw: &TestGateway, sslmode: &str, sql: &str) -> std::process::Output {
    Command::new("psql")
        .args(["-X", "-A", "-t", "-c", sql])
        .arg(format!(
            "host=127.0.0.1 port={} dbname=app user=alice sslmode={sslmode}",
            gw.addr.port()
        ))
        .env("PGPASSWORD", ALICE_PW)
        .output()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn tls_with_psql_and_require_tls() {
    cluster();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = write_cert(dir.path());
    let extra = format!(
        "tls_cert = \"{}\"\ntls_key = \"{}\"\nrequire_tls = true",
        cert.display(),
        key.display()
    );
    let gw = TestGateway::start_with(&config_text(&extra, ""), Arc::new(proxy::AllowAll)).await;
    let out = tokio::task::block_in_place(|| {
        psql(
            &gw,
            "require",
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        )
    });
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The gateway's TLS is to the client; toward this database it is plain (tls = disable).
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "f");
    let out = tokio::task::block_in_place(|| psql(&gw, "disable", "SELECT 1"));
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("requires TLS"), "{err}");
}

#[tokio::test]
async fn a_stored_scram_verifier_authenticates() {
    cluster();
    let verifier = postgres_protocol::password::scram_sha_256(b"from-a-verifier");
    let extra = format!("[[user]]\nname = \"carol\"\npassword_scram = \"{verifier}\"\n");
    let gw = TestGateway::start_with(&config_text("", &extra), Arc::new(proxy::AllowAll)).await;
    let c = gw.connect("carol", "from-a-verifier").await.unwrap();
    let who: String = c
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, gw.login_role("carol"));
    assert_eq!(
        sqlstate(&gw.connect("carol", "from-a-verifie").await.unwrap_err()),
        "28P01"
    );
}

#[tokio::test]
async fn the_client_sees_the_servers_parameter_status_then_key_then_ready() {
    let gw = TestGateway::start().await;
    let mut r = Raw::connect(gw.addr).await;
    r.send(&raw::startup_packet(
        &[
            ("user", "alice"),
            ("database", "app"),
            ("application_name", "probe"),
        ],
        3 << 16,
    ))
    .await;
    let msgs = r.authenticate(ALICE_PW).await;
    let params: Vec<(String, String)> = msgs
        .iter()
        .filter(|(t, _)| *t == b'S')
        .map(|(_, b)| {
            let mut parts = b
                .split(|&c| c == 0)
                .map(|p| String::from_utf8_lossy(p).to_string());
            (parts.next().unwrap(), parts.next().unwrap())
        })
        .collect();
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let server_version = cluster().psql("app", "SHOW server_version").unwrap();
    assert_eq!(get("server_version"), Some(server_version));
    assert_eq!(get("application_name").as_deref(), Some("probe"));
    assert_eq!(get("session_authorization"), Some(gw.login_role("alice")));
    let order: String = tags(&msgs).chars().filter(|c| *c != 'S').collect();
    assert_eq!(
        order, "KZ",
        "BackendKeyData, then ReadyForQuery, after the parameters"
    );
}
