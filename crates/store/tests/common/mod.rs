//! What the store's suites share: a store of either backend (a SQLite file,
//! or a database of its own in the binary's PostgreSQL cluster), writing
//! behind its back, and `both!`, which runs one test against each backend.
#![allow(dead_code)]

use chrono::{TimeZone, Utc};
use policy::Time;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use store::Store;

pub fn t0() -> Time {
    Utc.with_ymd_and_hms(2026, 11, 29, 9, 0, 0).unwrap()
}

pub enum Backend {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

pub async fn open(kind: &str) -> (Arc<dyn Store>, Backend) {
    match kind {
        "sqlite" => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("state.db").display());
            (store::open(&url).await.unwrap(), Backend::Sqlite(dir))
        }
        _ => {
            static N: AtomicUsize = AtomicUsize::new(0);
            let c = pgcluster::Cluster::shared();
            let db = format!("store_{}", N.fetch_add(1, Ordering::Relaxed));
            let c2 = db.clone();
            tokio::task::spawn_blocking(move || {
                c.psql("postgres", &format!("CREATE DATABASE {c2}"))
                    .unwrap()
            })
            .await
            .unwrap();
            (
                store::open(&c.url(&db)).await.unwrap(),
                Backend::Postgres(db),
            )
        }
    }
}

/// Overwrites one column of one audit row behind the store's back.
pub async fn tamper(backend: &Backend, sql: &str) {
    match backend {
        Backend::Sqlite(dir) => {
            let conn = rusqlite::Connection::open(dir.path().join("state.db")).unwrap();
            conn.execute_batch(sql).unwrap();
        }
        Backend::Postgres(db) => {
            let (db, sql) = (db.clone(), sql.to_string());
            tokio::task::spawn_blocking(move || {
                pgcluster::Cluster::shared().psql(&db, &sql).unwrap()
            })
            .await
            .unwrap();
        }
    }
}

macro_rules! both {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread")]
            async fn sqlite() {
                super::$name("sqlite").await
            }
            #[tokio::test(flavor = "multi_thread")]
            async fn postgres() {
                super::$name("postgres").await
            }
        }
    };
}
