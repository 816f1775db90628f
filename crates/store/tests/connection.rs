//! The PostgreSQL state store's connection: TLS per `sslmode`, and a server
//! that goes away and comes back (calls fail at once while it is away, and
//! the pool and the replica's own connection recover by themselves). This
//! binary owns its clusters because it stops one.

use pgcluster::{Cluster, Options};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f).await.unwrap()
}

/// Polls `f` every 50 ms until it holds, failing after `secs`.
async fn until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn sslmode_is_honoured() {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let cert = ck.cert.pem();
    let options = Options {
        tls: Some((cert.clone(), ck.signing_key.serialize_pem())),
        // The store's database only over TLS: a plaintext connection is refused.
        hba: vec!["hostnossl state all 127.0.0.1/32 reject".into()],
        settings: vec![],
    };
    let c = blocking(move || {
        let c = Cluster::start(options).unwrap();
        c.psql("postgres", "CREATE DATABASE state").unwrap();
        c
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &cert).unwrap();
    let other = dir.path().join("other.pem");
    let stranger = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    std::fs::write(&other, stranger.cert.pem()).unwrap();
    let base = c.url("state");
    let with = |q: &str| format!("{base}?{q}");

    // Plaintext is refused by the server: the error names the cause.
    let e = store::open(&with("sslmode=disable")).await.err().unwrap();
    assert!(e.to_string().contains("no encryption"), "{e}");

    // require: encrypted, certificate not checked.
    let s = store::open(&with("sslmode=require")).await.unwrap();
    assert_eq!(s.credentials().await.unwrap().number, 0);

    // verify-full with the server's CA: works; with another CA: refused.
    let s = store::open(&with(&format!(
        "sslmode=verify-full&sslrootcert={}",
        ca.display()
    )))
    .await
    .unwrap();
    s.credentials().await.unwrap();
    let e = store::open(&with(&format!(
        "sslmode=verify-full&sslrootcert={}",
        other.display()
    )))
    .await
    .err()
    .unwrap();
    assert!(e.to_string().to_lowercase().contains("certificate"), "{e}");

    // The replicas' own connection takes the same mode.
    let joined = store::Cluster::join(
        &with(&format!("sslmode=verify-full&sslrootcert={}", ca.display())),
        "127.0.0.1:1",
        Arc::new(store::Changes::default()),
    )
    .await
    .unwrap();
    until(10, "the only replica leads", || joined.is_leader()).await;

    // The server says the store's connections are encrypted.
    let encrypted = blocking(move || {
        c.psql(
            "postgres",
            "SELECT count(*) FILTER (WHERE NOT ssl) || '/' || count(*) FROM pg_stat_ssl \
             JOIN pg_stat_activity USING (pid) WHERE datname = 'state'",
        )
        .unwrap()
    })
    .await;
    let (plain, all) = encrypted.trim().split_once('/').unwrap();
    assert_eq!(plain, "0", "a plaintext connection to the store");
    assert!(all.parse::<u32>().unwrap() >= 2, "{encrypted}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_goes_away_and_comes_back() {
    let c = blocking(|| {
        let c = Cluster::start(Options::default()).unwrap();
        c.psql("postgres", "CREATE DATABASE state").unwrap();
        c
    })
    .await;
    let url = c.url("state");
    let s = store::open(&url).await.unwrap();
    let changes = Arc::new(store::Changes::default());
    let replica = store::Cluster::join(&url, "127.0.0.1:1", changes)
        .await
        .unwrap();
    until(10, "the replica leads", || replica.is_leader()).await;
    s.credentials().await.unwrap();

    let c = Arc::new(std::sync::Mutex::new(c));
    let c2 = c.clone();
    blocking(move || c2.lock().unwrap().stop_server().unwrap()).await;

    // Away: calls fail, promptly (no hang), and the replica stops leading.
    let t = Instant::now();
    let e = s.credentials().await.expect_err("the store is down");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert!(e.to_string().contains("state store"), "{e}");
    until(10, "leadership is given up", || {
        !replica.is_leader() && !replica.store_reachable()
    })
    .await;

    let c2 = c.clone();
    blocking(move || c2.lock().unwrap().start_server().unwrap()).await;

    // Back: the pool reconnects on the next call, the replica leads again.
    let deadline = Instant::now() + Duration::from_secs(15);
    while s.credentials().await.is_err() {
        assert!(Instant::now() < deadline, "the pool did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    until(15, "the replica leads again", || {
        replica.is_leader() && replica.store_reachable()
    })
    .await;
}
