//! The web UI in a real browser: headless Chromium driven by chromedriver
//! (Debian's `chromium` and `chromium-driver`; nothing is downloaded). Alice's
//! DELETE through the gateway files a request; alice cannot approve it in the
//! UI; bob logs in, sees it with its statement and blast radius, approves it,
//! and sees the grant with a live countdown.
//!
//! `JITGATE_SCREENSHOTS=1` also writes the inbox screenshot to docs/inbox.png
//! (the one the README shows).

mod common;

use common::browser::{browser, chromedriver, wait_for_path};
use common::*;
use fantoccini::{Client, Locator};
use pgcluster::Cluster;
use std::process::{Command, Stdio};
use std::time::Duration;

async fn log_in(b: &Client, base: &str, user: &str, password: &str) {
    b.goto(&format!("{base}/ui/login")).await.unwrap();
    b.find(Locator::Id("user"))
        .await
        .unwrap()
        .send_keys(user)
        .await
        .unwrap();
    b.find(Locator::Id("password"))
        .await
        .unwrap()
        .send_keys(password)
        .await
        .unwrap();
    b.find(Locator::Css("button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait()
        .for_url(&format!("{base}/ui/inbox").parse().unwrap())
        .await
        .unwrap();
}

async fn text(b: &Client) -> String {
    b.find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn bob_approves_alices_statement_in_the_browser() {
    let cluster = Cluster::shared();
    cluster.psql("postgres", "CREATE DATABASE app").unwrap();
    cluster
        .psql(
            "app",
            "CREATE ROLE app_read NOLOGIN; CREATE ROLE app_write NOLOGIN;
             CREATE TABLE orders (id int PRIMARY KEY, total int);
             INSERT INTO orders SELECT i, i FROM generate_series(1, 500) i;
             ANALYZE orders;
             GRANT USAGE ON SCHEMA public TO app_read, app_write;
             GRANT SELECT ON orders TO app_read; GRANT DELETE ON orders TO app_write;",
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (port, api_port) = (free_port(), free_port());
    let cfg = write(
        &dir,
        "jitgate.toml",
        &testkit::config::App::new(&cluster.url("app"))
            .gateway(format!("listen = \"127.0.0.1:{port}\""))
            .gateway(format!("api_listen = \"127.0.0.1:{api_port}\""))
            .gateway(format!(
                "state = \"sqlite://{}\"",
                dir.path().join("state.db").display()
            ))
            .gateway("shutdown_timeout = \"1s\"")
            .default_duration("30m")
            .toml(),
    );
    let _serve = Running(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&cfg)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(port);
    let base = format!("http://127.0.0.1:{api_port}");

    // Alice's DELETE through the gateway files request 1.
    let mut psql = Psql::connect(port, "alice", "alice-pw");
    psql.run("SET jitgate.reason = 'customer asked to remove order 42';");
    let o = psql.run("DELETE FROM orders WHERE id = 42;");
    assert!(o.contains("request 1"), "{o}");

    let (_driver, driver_port) = chromedriver();
    let b = browser(driver_port).await;

    // Alice sees her request, without a way to approve it.
    log_in(&b, &base, "alice", "alice-pw").await;
    b.goto(&format!("{base}/ui/requests/1")).await.unwrap();
    let page = text(&b).await;
    assert!(page.contains("DELETE FROM orders WHERE id = 42"), "{page}");
    assert!(b
        .find_all(Locator::Css("button.approve"))
        .await
        .unwrap()
        .is_empty());
    b.find(Locator::Css("header form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    b.wait()
        .for_url(&format!("{base}/ui/login").parse().unwrap())
        .await
        .unwrap();

    // Bob's inbox: the request, its statement, and the planner's estimate.
    log_in(&b, &base, "bob", "bob-pw").await;
    let inbox = text(&b).await;
    for part in [
        "Request 1: alice asks for app_write on app",
        "customer asked to remove order 42",
        "DELETE FROM orders WHERE id = 42",
        "Delete on orders: about 1 row",
        "Stage 1: 1 of leads",
    ] {
        assert!(inbox.contains(part), "{part:?} missing from: {inbox}");
    }
    let png = b.screenshot().await.unwrap();
    assert!(png.starts_with(b"\x89PNG"), "a PNG screenshot");
    std::fs::write(concat!(env!("CARGO_TARGET_TMPDIR"), "/inbox.png"), &png).unwrap();
    if std::env::var_os("JITGATE_SCREENSHOTS").is_some() {
        std::fs::write(
            concat!(env!("CARGO_MANIFEST_DIR"), "/../../docs/inbox.png"),
            &png,
        )
        .unwrap();
    }

    // Readable on a phone: nothing wider than the screen.
    b.set_window_size(390, 844).await.unwrap();
    let fits = b
        .execute(
            "return document.documentElement.scrollWidth <= window.innerWidth + 1",
            vec![],
        )
        .await
        .unwrap();
    assert_eq!(
        fits,
        serde_json::Value::Bool(true),
        "the inbox overflows a phone screen"
    );
    b.set_window_size(1000, 720).await.unwrap();

    // Approve; the grant appears with a countdown that ticks.
    b.find(Locator::Css("input[name=comment]"))
        .await
        .unwrap()
        .send_keys("ok, one row")
        .await
        .unwrap();
    b.find(Locator::Css("button.approve"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_path(&b, "/ui/grants").await;
    let grants = text(&b).await;
    assert!(
        grants.contains("Grant 1: alice holds app_write on app"),
        "{grants}"
    );
    let countdown = b.find(Locator::Css(".countdown")).await.unwrap();
    let before = countdown.text().await.unwrap();
    assert!(
        before.starts_with("29m") && before.ends_with("left"),
        "{before}"
    );
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let after = b
        .find(Locator::Css(".countdown"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_ne!(before, after, "the countdown ticks");

    // And alice's DELETE runs, in the same psql session.
    let o = psql.run("DELETE FROM orders WHERE id = 42;");
    assert!(o.contains("DELETE 1"), "{o}");
    b.close().await.unwrap();
}
