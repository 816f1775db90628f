//! psycopg 3, sync and async, with psycopg_pool, through the gateway with no
//! rules: see `python/clients.py`. `scripts/install-deps --tests` installs them.

mod common;

use common::*;
use std::process::Command;

#[tokio::test(flavor = "multi_thread")]
async fn psycopg_sync_async_and_pools_through_the_gateway() {
    let j = Jitgate::start_text(&config_without_rules(""), None).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python/clients.py");
    let dsn = format!(
        "host={} port={} dbname=app user=alice password={}",
        j.addr.ip(),
        j.addr.port(),
        password("alice")
    );
    let out = tokio::task::block_in_place(|| {
        Command::new("python3")
            .arg(script)
            .arg(&dsn)
            .output()
            .expect("python3 runs")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("psycopg ok"),
        "psycopg failed (psycopg and psycopg_pool: scripts/install-deps --tests): {text}"
    );
    j.stop().await;
}
