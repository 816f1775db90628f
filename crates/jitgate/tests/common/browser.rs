//! Headless Chromium driven by chromedriver (Debian's `chromium` and
//! `chromium-driver`; nothing is downloaded). Host names other than
//! loopback do not resolve: pages that ask for fonts or scripts elsewhere
//! (an identity provider's login page) stay on this machine.

use super::{free_port, wait_for_port, Running};
use fantoccini::{Client, ClientBuilder};
use std::process::{Command, Stdio};

pub fn chromedriver() -> (Running, u16) {
    let port = free_port();
    let child = Command::new("chromedriver")
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect(
            "chromedriver is missing: scripts/install-deps installs chromium and chromium-driver",
        );
    let running = Running(child);
    wait_for_port(port);
    (running, port)
}

pub async fn browser(driver_port: u16) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        serde_json::json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1000,720", "--hide-scrollbars",
                     "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE localhost"]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{driver_port}"))
        .await
        .expect("a chromium session")
}

/// Waits (10 s at most) until the browser is on a page whose path starts
/// with `prefix`.
pub async fn wait_for_path(b: &Client, prefix: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let url = b.current_url().await.unwrap();
        if url.path().starts_with(prefix) {
            return;
        }
        if std::time::Instant::now() > deadline {
            let page = match b.find(fantoccini::Locator::Css("body")).await {
                Ok(e) => e.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            panic!("not on {prefix}: at {url}: {page}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
