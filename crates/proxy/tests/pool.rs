//! Session-mode pooling: reuse after a clean disconnect, with session state
//! reset; no reuse of a connection that was left mid-transaction; no sharing
//! between users; idle connections time out.

mod common;

use common::*;
use std::sync::Arc;
use std::time::Duration;

async fn pid(c: &tokio_postgres::Client) -> i32 {
    c.query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0)
}

/// Waits (up to 5 s) until the pool holds `n` idle connections.
async fn pooled(gw: &TestGateway, n: usize) {
    for _ in 0..100 {
        if gw.shared.pool.idle_count() == n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(gw.shared.pool.idle_count(), n);
}

async fn settle() {
    // The gateway resets and pools the connection after the client leaves.
    tokio::time::sleep(Duration::from_millis(300)).await;
}

#[tokio::test]
async fn a_clean_disconnect_returns_a_reset_connection_to_the_pool() {
    let gw = TestGateway::start().await;
    let c = gw.alice().await;
    let first = pid(&c).await;
    c.batch_execute(
        "SET work_mem = '7MB'; CREATE TEMP TABLE mine (x int); LISTEN ch; PREPARE p AS SELECT 1",
    )
    .await
    .unwrap();
    drop(c);
    pooled(&gw, 1).await;
    let c = gw.alice().await;
    assert_eq!(pid(&c).await, first, "the pooled connection is reused");
    let wm: String = c.query_one("SHOW work_mem", &[]).await.unwrap().get(0);
    assert_eq!(wm, "4MB", "settings are reset");
    let temp = c
        .query(
            "SELECT 1 FROM pg_class WHERE relname = 'mine' AND relpersistence = 't'",
            &[],
        )
        .await
        .unwrap();
    assert!(temp.is_empty(), "temp tables are gone");
    let err = c.batch_execute("EXECUTE p").await.unwrap_err();
    assert_eq!(sqlstate(&err), "26000", "prepared statements are gone");
}

#[tokio::test]
async fn a_connection_left_mid_transaction_is_not_reused() {
    let gw = TestGateway::start().await;
    let c = gw.alice().await;
    let first = pid(&c).await;
    c.batch_execute("BEGIN; INSERT INTO scratch VALUES (424242, 'half')")
        .await
        .unwrap();
    drop(c);
    settle().await;
    assert_eq!(gw.shared.pool.idle_count(), 0);
    let c = gw.alice().await;
    assert_ne!(pid(&c).await, first);
    let n: i64 = c
        .query_one("SELECT count(*) FROM scratch WHERE id = 424242", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "the abandoned transaction rolled back");
}

#[tokio::test]
async fn users_never_share_connections_and_parameters_are_part_of_the_key() {
    let gw = TestGateway::start().await;
    let c = gw.alice().await;
    let alice_pid = pid(&c).await;
    drop(c);
    settle().await;
    let bob = gw.connect("bob", BOB_PW).await.unwrap();
    assert_ne!(pid(&bob).await, alice_pid);
    let who: String = bob
        .query_one("SELECT current_user::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(who, gw.login_role("bob"));
    // Alice with different startup parameters gets a fresh connection too.
    let cs = format!(
        "{} application_name=other",
        gw.conn_string("alice", ALICE_PW)
    );
    let (c, conn) = tokio_postgres::connect(&cs, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    assert_ne!(pid(&c).await, alice_pid);
    let app: String = c
        .query_one("SHOW application_name", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(app, "other");
}

#[tokio::test]
async fn idle_pooled_connections_time_out() {
    cluster();
    let text = config_text("pool_idle_timeout = \"1s\"", "");
    let gw = TestGateway::start_with(&text, Arc::new(proxy::AllowAll)).await;
    let c = gw.alice().await;
    let first = pid(&c).await;
    drop(c);
    pooled(&gw, 1).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let c = gw.alice().await;
    assert_ne!(
        pid(&c).await,
        first,
        "an expired idle connection is not handed out"
    );
    let gone = cluster()
        .psql(
            "app",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {first}"),
        )
        .unwrap();
    assert_eq!(gone, "0", "and it was closed");
}

#[tokio::test]
async fn a_client_gone_in_the_middle_of_a_message_does_not_return_its_connection() {
    let gw = TestGateway::start().await;
    let mut r = testkit::raw::Raw::login(gw.addr, "alice", ALICE_PW).await;
    // Half of a large Bind: it streams upstream before the client vanishes.
    let mut body = b"\0\0\0\0\0\x01".to_vec();
    body.extend_from_slice(&100_000i32.to_be_bytes());
    body.extend_from_slice(&vec![b'x'; 100_000]);
    body.extend_from_slice(&[0, 0]);
    let bind = testkit::raw::msg(b'B', &body);
    r.send(&bind[..50_000]).await;
    drop(r);
    settle().await;
    assert_eq!(gw.shared.pool.idle_count(), 0);
    // Closed at once, not kept while a reset is attempted on a half-sent message.
    let role = gw.login_role("alice");
    let left = cluster()
        .psql(
            "app",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE usename = '{role}'"),
        )
        .unwrap();
    assert_eq!(left, "0");
    let c = gw.alice().await;
    assert_eq!(
        c.query_one("SELECT 1", &[]).await.unwrap().get::<_, i32>(0),
        1
    );
}

#[tokio::test]
async fn with_reuse_off_every_client_gets_a_fresh_backend() {
    let text = config_text("", "").replace(
        "tls = \"disable\"",
        "tls = \"disable\"\nreuse_backends = false",
    );
    let gw = TestGateway::start_with(&text, Arc::new(proxy::AllowAll)).await;
    let c = gw.alice().await;
    let first = pid(&c).await;
    drop(c);
    settle().await;
    assert_eq!(gw.shared.pool.idle_count(), 0, "nothing is pooled");
    let c = gw.alice().await;
    assert_ne!(pid(&c).await, first, "a fresh backend");
    // The first backend is gone, not idle somewhere.
    let left = cluster()
        .psql(
            "app",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE pid = {first}"),
        )
        .unwrap();
    assert_eq!(left.trim(), "0");
}

#[tokio::test]
async fn a_client_that_vanishes_mid_statement_does_not_leave_it_running() {
    let gw = TestGateway::start().await;
    // A raw client: its socket closes the moment it is dropped, as with kill -9.
    let mut raw = testkit::raw::Raw::login(gw.addr, "alice", ALICE_PW).await;
    raw.send(&testkit::raw::query("SELECT pg_sleep(60) /* vanishing */"))
        .await;
    let sleeping = || {
        cluster()
            .psql(
                "app",
                "SELECT count(*) FROM pg_stat_activity \
                 WHERE state = 'active' AND query LIKE '%/* vanishing */%' \
                 AND query NOT LIKE '%pg_stat_activity%'",
            )
            .unwrap()
            .trim()
            .to_string()
    };
    for _ in 0..100 {
        if sleeping() == "1" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(sleeping(), "1");
    drop(raw);
    let mut gone = false;
    for _ in 0..100 {
        if sleeping() == "0" {
            gone = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(gone, "the statement still runs after its client vanished");
    assert_eq!(
        gw.shared.pool.idle_count(),
        0,
        "a busy backend is not pooled"
    );
}
