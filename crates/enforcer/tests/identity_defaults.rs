//! A default for every role that sets the identity (`ALTER DATABASE ... SET
//! role`) would make `RESET ROLE` land elsewhere: the reconciler removes it
//! and raises `alert.drift`. In a test binary of its own: every gateway
//! reconciles the whole cluster, so one started by another test in the same
//! cluster could remove it first and audit it in its own store.

mod common;

use common::*;
use std::time::Duration;

#[tokio::test]
async fn identity_defaults_for_every_role_are_removed() {
    let j = Jitgate::start_text(&config_without_rules("reconcile_interval = \"1s\""), None).await;
    // A default for every role that sets the identity would make RESET ROLE
    // land elsewhere: the reconciler removes it.
    cluster()
        .psql("postgres", "CREATE DATABASE idtest")
        .unwrap();
    cluster()
        .psql("postgres", "ALTER DATABASE idtest SET role = 'app_read'")
        .unwrap();
    let left = || {
        cluster()
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_db_role_setting s JOIN pg_database d \
                 ON d.oid = s.setdatabase WHERE d.datname = 'idtest'",
            )
            .unwrap()
            .trim()
            .to_string()
    };
    assert_eq!(left(), "1");
    assert!(j.until(Duration::from_secs(5), || left() == "0").await);
    // The audit writer is asynchronous: poll for the record.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !j
        .audit_kinds()
        .await
        .iter()
        .any(|(k, _, d)| k == "alert.drift" && d["drift"] == "identity_default")
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no alert.drift for the identity default"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    j.stop().await;
}
