//! Toward the database: TLS modes, the server's authentication methods, and a
//! server that restarts under live sessions. This binary owns its cluster
//! (with TLS on and per-database pg_hba rules) because it restarts it.

mod common;

use common::*;
use pgcluster::{Cluster, Options};
use std::sync::Arc;
use std::time::Duration;

struct Setup {
    cluster: Cluster,
    ca_pem: String,
    _dir: tempfile::TempDir,
    ca_path: std::path::PathBuf,
}

fn start() -> Setup {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let cert = ck.cert.pem();
    let key = ck.signing_key.serialize_pem();
    let options = Options {
        tls: Some((cert.clone(), key)),
        hba: vec![
            // Per-database authentication methods for the login roles.
            "hostnossl app_tls all 127.0.0.1/32 reject".into(),
            "host app_password all 127.0.0.1/32 password".into(),
            "host app_trust all 127.0.0.1/32 trust".into(),
        ],
        settings: vec![],
    };
    let cluster = Cluster::start(options).unwrap();
    setup_app(&cluster);
    for db in ["app_tls", "app_password", "app_trust"] {
        cluster
            .psql("postgres", &format!("CREATE DATABASE {db} TEMPLATE app"))
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let ca_path = dir.path().join("ca.pem");
    std::fs::write(&ca_path, &cert).unwrap();
    Setup {
        cluster,
        ca_pem: cert,
        _dir: dir,
        ca_path,
    }
}

/// A gateway whose `app` entry points at `dbname` with the given TLS lines.
async fn gateway(s: &Setup, dbname: &str, tls_lines: &str) -> TestGateway {
    let text = config_for(&s.cluster.url(dbname), "", "").replace("tls = \"disable\"", tls_lines);
    TestGateway::start_with(&text, Arc::new(proxy::AllowAll)).await
}

async fn ssl_in_use(gw: &TestGateway) -> Result<bool, tokio_postgres::Error> {
    let c = gw.connect("alice", ALICE_PW).await?;
    Ok(c.query_one(
        "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
        &[],
    )
    .await?
    .get(0))
}

#[tokio::test(flavor = "multi_thread")]
async fn upstream_tls_modes_and_auth_methods() {
    let s = start();
    assert!(!s.ca_pem.is_empty());
    // prefer and require: encrypted, certificate not checked (as libpq).
    for mode in ["prefer", "require"] {
        let gw = gateway(&s, "app", &format!("tls = \"{mode}\"")).await;
        assert!(ssl_in_use(&gw).await.unwrap(), "{mode}");
    }
    // verify-full with the right CA and a matching host name.
    let lines = format!(
        "tls = \"verify-full\"\ntls_ca_file = \"{}\"",
        s.ca_path.display()
    );
    let gw = gateway(&s, "app", &lines).await;
    assert!(ssl_in_use(&gw).await.unwrap());
    // verify-full with the system roots: our self-signed certificate is refused.
    let gw = gateway(&s, "app", "tls = \"verify-full\"").await;
    let err = ssl_in_use(&gw).await.unwrap_err();
    assert_eq!(sqlstate(&err), "08006");
    assert!(err.as_db_error().unwrap().message().contains("TLS"));
    // disable against a database that rejects non-TLS connections: a clear error.
    let gw = gateway(&s, "app_tls", "tls = \"disable\"").await;
    let err = ssl_in_use(&gw).await.unwrap_err();
    assert!(err.as_db_error().is_some(), "{err}");
    let gw = gateway(&s, "app_tls", "tls = \"require\"").await;
    assert!(ssl_in_use(&gw).await.unwrap());
    // Cleartext password and trust (SCRAM is the default everywhere else).
    for db in ["app_password", "app_trust"] {
        let gw = gateway(&s, db, "tls = \"disable\"").await;
        assert!(!ssl_in_use(&gw).await.unwrap(), "{db}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_restarting_database_gives_a_clean_error_and_the_pool_recovers() {
    let mut s = start();
    let gw = gateway(&s, "app", "tls = \"disable\"").await;
    let live = gw.alice().await;
    live.query_one("SELECT 1", &[]).await.unwrap();
    // A pooled idle connection too.
    drop(gw.alice().await);
    for _ in 0..100 {
        if gw.shared.pool.idle_count() >= 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gw.shared.pool.idle_count() >= 1);

    tokio::task::block_in_place(|| s.cluster.stop_server()).unwrap();
    let err = live.query_one("SELECT 1", &[]).await.unwrap_err();
    // The server's own FATAL (57P01, admin shutdown) is relayed, or the closed connection reported.
    if let Some(db) = err.as_db_error() {
        assert!(["57P01", "08006"].contains(&db.code().code()), "{db:?}");
    } else {
        assert!(live.is_closed(), "{err}");
    }
    // While it is down, new clients get a clear error instead of a hang.
    let err = gw.connect("alice", ALICE_PW).await.unwrap_err();
    assert_eq!(sqlstate(&err), "08006");

    tokio::task::block_in_place(|| s.cluster.start_server()).unwrap();
    let c = gw.alice().await;
    assert_eq!(
        c.query_one("SELECT 5", &[]).await.unwrap().get::<_, i32>(0),
        5
    );
}
