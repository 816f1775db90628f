//! node-postgres (`pg` from npm), the first driver here that is neither libpq
//! nor Rust, through the gateway with no rules: see `node/clients.js`.
//! `scripts/install-deps --tests` installs it (`npm ci` in `tests/node`).

mod common;

use common::*;
use std::process::Command;

#[tokio::test(flavor = "multi_thread")]
async fn node_postgres_through_the_gateway() {
    let j = Jitgate::start_text(&config_without_rules(""), None).await;
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/node");
    let dsn = format!(
        "postgresql://alice:{}@{}:{}/app",
        password("alice"),
        j.addr.ip(),
        j.addr.port()
    );
    let out = tokio::task::block_in_place(|| {
        Command::new("node")
            .arg("clients.js")
            .arg(&dsn)
            .current_dir(dir)
            .output()
            .expect("node runs (scripts/install-deps --tests installs it and pg)")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && text.contains("node-postgres ok"),
        "node-postgres failed (is `pg` installed? scripts/install-deps --tests): {text}"
    );
    j.stop().await;
}
