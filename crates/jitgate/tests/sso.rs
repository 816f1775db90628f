//! Single sign-on against a real OpenID Provider: node's certified
//! `oidc-provider` (tests/oidc/provider.mjs, installed by
//! `scripts/install-deps --tests`) with its own login pages, driven by
//! headless Chromium. Nothing in the flow is mocked: discovery, the
//! authorization code flow with PKCE, the device flow, JWKS and userinfo are
//! the provider's.
//!
//! Alice signs in from the CLI with the device flow, gets a connection
//! secret and runs psql through the gateway; bob signs in through the
//! browser and approves; a replayed `state`, tampered, expired and
//! wrong-audience ID tokens are refused; a rotated signing key is accepted;
//! bob moved out of the approvers' group at the provider cannot approve after
//! signing in again; other domains and unmapped groups cannot sign in.

mod common;

use common::browser::{browser, chromedriver, wait_for_path};
use common::oidc::*;
use common::*;
use fantoccini::Locator;
use serde_json::Value;
use std::process::Command;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn people_sign_in_with_the_identity_provider() {
    let cluster = prepare();
    cluster.psql("postgres", "CREATE DATABASE app").unwrap();
    cluster
        .psql(
            "app",
            "CREATE TABLE orders (id int PRIMARY KEY, total int);
             INSERT INTO orders SELECT i, i FROM generate_series(1, 100) i;
             GRANT USAGE ON SCHEMA public TO app_read, app_write;
             GRANT SELECT ON orders TO app_read; GRANT DELETE ON orders TO app_write;",
        )
        .unwrap();
    let gw = Alone::start(
        &cluster.url("app"),
        ProviderKind::DeviceFlow,
        "login_role_prefix = \"sso1_\"",
    );
    let (port, api_port, base, op, dir) = (gw.port, gw.api_port, gw.base.clone(), gw.op(), &gw.dir);
    let (_driver, driver_port) = chromedriver();
    let b = browser(driver_port).await;

    // Alice: device flow from the CLI; she confirms the code in a browser.
    let alice = gw.home("alice");
    let login = CliSignIn::start(&alice, api_port, &["login", "--sso"]);
    assert!(login.url.starts_with(&op.issuer), "{}", login.url);
    b.goto(&login.url).await.unwrap();
    through_provider(&b, "alice", |_, body| body.contains("Success")).await;
    let rest = login.finish().await;
    assert!(rest.contains("through test as alice"), "{rest}");

    // Her connection secret goes to ~/.pgpass; psql through the gateway files
    // a request for her DELETE.
    let alice_deletes = || {
        let args = [
            "psql",
            "--db",
            "app",
            "--",
            "-c",
            "DELETE FROM orders WHERE id = 42",
        ];
        person_cli(&alice, api_port, &args).output().unwrap()
    };
    let o = alice_deletes();
    assert!(out(&o).contains("request 1"), "{}", out(&o));
    let pgpass = alice.join(".pgpass");
    let mode =
        std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&pgpass).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600);
    let entry = std::fs::read_to_string(&pgpass).unwrap();
    let secret = entry.trim().rsplit(':').next().unwrap().to_string();
    assert!(
        entry.starts_with(&format!("127.0.0.1:{port}:*:alice:jgs_")),
        "{entry}"
    );
    // Only its verifier is stored.
    for f in ["state.db", "state.db-wal"] {
        let bytes = std::fs::read(dir.path().join(f)).unwrap_or_default();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
            "secret in {f}"
        );
    }

    // Bob signs in through the browser and approves it.
    b.delete_all_cookies().await.unwrap();
    b.goto(&format!("{base}/ui/login")).await.unwrap();
    let png = b.screenshot().await.unwrap();
    std::fs::write(concat!(env!("CARGO_TARGET_TMPDIR"), "/sso-login.png"), &png).unwrap();
    let inbox = web_sign_in(&b, &base, "bob").await;
    assert!(
        inbox.contains("Request 1: alice asks for app_write on app"),
        "{inbox}"
    );
    // The approver sees who the requester is at the provider.
    assert!(
        inbox.contains(&format!("Signed in as\nalice at {} (test)", op.issuer)),
        "{inbox}"
    );
    b.find(Locator::Css("button.approve"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    wait_for_path(&b, "/ui/grants").await;
    let o = alice_deletes();
    assert!(out(&o).contains("DELETE 1"), "{}", out(&o));

    // Revoked, the secret opens nothing, and its ~/.pgpass entry is gone.
    let old = dir.path().join("old-pgpass");
    std::fs::copy(&pgpass, &old).unwrap();
    let o = person_cli(&alice, api_port, &["db-login", "--db", "app", "--revoke"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    assert!(!std::fs::read_to_string(&pgpass).unwrap().contains("alice"));
    let psql_with = |file: &std::path::Path| {
        let o = Command::new("psql")
            .arg(format!("host=127.0.0.1 port={port} dbname=app user=alice"))
            .args(["-w", "-c", "SELECT count(*) FROM orders"])
            .env("PGPASSFILE", file)
            .output()
            .unwrap();
        out(&o)
    };
    assert!(psql_with(&old).contains("password authentication failed"));

    // A new one works until alice's sign-in ends: after she logs out, psql
    // with the same ~/.pgpass entry is refused.
    let o = person_cli(&alice, api_port, &["db-login", "--db", "app"])
        .output()
        .unwrap();
    assert!(
        out(&o).contains("postgresql://alice@127.0.0.1"),
        "{}",
        out(&o)
    );
    assert!(psql_with(&pgpass).contains("99"), "{}", psql_with(&pgpass));
    let o = person_cli(&alice, api_port, &["logout"]).output().unwrap();
    assert!(out(&o).contains("token revoked"), "{}", out(&o));
    let tokens = std::fs::read_to_string(alice.join(".config/jitgate/tokens.json")).unwrap();
    assert!(!tokens.contains("jg_"), "{tokens}");
    let refused = psql_with(&pgpass);
    assert!(
        refused.contains("password authentication failed"),
        "{refused}"
    );

    // The decision names bob's subject and issuer at the provider.
    let votes = audit(&base, "decision.approve").await;
    let vote = votes
        .iter()
        .find(|e| e["actor"] == "bob")
        .unwrap_or_else(|| panic!("{votes:?}"));
    assert_eq!(vote["detail"]["idp"]["subject"], "bob", "{vote}");
    assert_eq!(
        vote["detail"]["idp"]["issuer"],
        op.issuer.as_str(),
        "{vote}"
    );
    // So do alice's request and statements, refused and run.
    for kind in ["request.filed", "statement.refused", "statement.run"] {
        let records = audit(&base, kind).await;
        let mine = records
            .iter()
            .find(|e| e["actor"] == "alice")
            .unwrap_or_else(|| panic!("{kind}: {records:?}"));
        assert_eq!(mine["detail"]["idp"]["subject"], "alice", "{mine}");
    }

    // A state works once, and only in the browser that started the sign-in.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let start = http
        .get(format!("{base}/ui/login/oidc/test"))
        .send()
        .await
        .unwrap();
    assert_eq!(start.status(), 303);
    let location = start.headers()["location"].to_str().unwrap().to_string();
    assert!(
        location.contains("code_challenge_method=S256"),
        "{location}"
    );
    let state = location
        .split(['?', '&'])
        .find_map(|kv| kv.strip_prefix("state="))
        .unwrap()
        .to_string();
    b.goto(&format!("{base}/ui/login")).await.unwrap();
    // This browser holds the state as if it had started the sign-in.
    b.execute(
        &format!("document.cookie = 'jg_sso={state}; path=/ui/login/oidc'"),
        vec![],
    )
    .await
    .unwrap();
    b.goto(&location).await.unwrap();
    let page = through_provider(&b, "bob", |url, _| {
        url.starts_with(&format!("{base}/ui/inbox"))
    })
    .await;
    assert!(page.contains("bob"), "{page}");
    let replay = http
        .get(format!(
            "{base}/ui/login/oidc/test/callback?code=again&state={state}"
        ))
        .header("cookie", format!("jg_sso={state}"))
        .send()
        .await
        .unwrap();
    assert_eq!(replay.status(), 400);
    assert!(replay.text().await.unwrap().contains("already finished"));
    let elsewhere = http
        .get(format!(
            "{base}/ui/login/oidc/test/callback?code=x&state={state}"
        ))
        .header("cookie", "jg_sso=somebody-elses")
        .send()
        .await
        .unwrap();
    assert_eq!(elsewhere.status(), 403);

    // ID tokens that must not sign anyone in: carol's, rewritten on the way.
    for (mode, why) in [
        ("tamper", "signature does not verify"),
        ("expired", "has expired"),
        ("wrong_audience", "issued to another application"),
    ] {
        b.delete_all_cookies().await.unwrap();
        op.admin(&format!("token-mode?mode={mode}")).await;
        let page = web_sign_in(&b, &base, "carol").await;
        assert!(page.contains(why), "{mode}: {page}");
        assert!(
            !b.current_url()
                .await
                .unwrap()
                .path()
                .starts_with("/ui/inbox"),
            "{mode}"
        );
    }
    let refused = audit(&base, "auth.refused").await;
    assert!(refused.len() >= 3, "{refused:?}");

    // A new signing key at the provider: jitgate fetches the keys again.
    op.admin("rotate").await;
    b.delete_all_cookies().await.unwrap();
    let page = web_sign_in(&b, &base, "carol").await;
    assert!(
        b.current_url()
            .await
            .unwrap()
            .path()
            .starts_with("/ui/inbox"),
        "{page}"
    );

    // Other domains and people in no mapped group stay out.
    b.delete_all_cookies().await.unwrap();
    let page = web_sign_in(&b, &base, "mallory").await;
    assert!(page.contains("may not sign in"), "{page}");
    b.delete_all_cookies().await.unwrap();
    let page = web_sign_in(&b, &base, "dave").await;
    assert!(page.contains("no provider group mapped"), "{page}");
    // Another subject whose email says "alice" does not become alice.
    b.delete_all_cookies().await.unwrap();
    let page = web_sign_in(&b, &base, "impostor").await;
    assert!(
        page.contains("the name `alice` belongs to another identity at the provider"),
        "{page}"
    );
    assert!(!page.contains("alice at http"), "{page}");
    let refused = audit(&base, "auth.refused").await;
    assert!(
        refused.iter().any(|e| e["detail"]["reason"]
            == format!("the name `alice` belongs to alice at {}", op.issuer)),
        "{refused:?}"
    );

    // Bob leaves the approvers' group at the provider: after signing in
    // again he cannot approve the next request (root's, a local account).
    let o = Command::new(BIN)
        .args(["request", "app_write", "--db", "app"])
        .env("JITGATE_SERVER", &base)
        .env("JITGATE_USER", "root")
        .env("JITGATE_PASSWORD", "root-pw")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    op.admin("groups?user=bob&groups=engineers").await;
    b.delete_all_cookies().await.unwrap();
    web_sign_in(&b, &base, "bob").await;
    b.goto(&format!("{base}/ui/requests/2")).await.unwrap();
    let page = b
        .find(Locator::Css("main"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    // Not an approver any more, he does not even see it (as if missing).
    assert!(page.contains("no request with id 2"), "{page}");
    assert!(
        b.find_all(Locator::Css("button.approve"))
            .await
            .unwrap()
            .is_empty(),
        "{page}"
    );
    // Nor through the API with the same session (the cookie holds an API token).
    let session = b.get_named_cookie("jg_session").await.unwrap();
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/requests/2/approve"))
        .bearer_auth(session.value())
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert!(matches!(r.status().as_u16(), 403 | 404), "{}", r.status());
    let filed = audit(&base, "request.approved").await;
    assert!(
        filed.iter().all(|e| e["subject"] != "request:2"),
        "{filed:?}"
    );
    b.close().await.unwrap();
}

/// With `password_login = false`, configured passwords open nothing: not the
/// API, not the web UI's form, not the wire.
#[tokio::test(flavor = "multi_thread")]
async fn passwords_can_be_turned_off() {
    let cluster = prepare();
    // The provider is found on first use; none needs to run for this.
    let gw = Alone::start(
        &cluster.url("postgres"),
        ProviderKind::Unreachable,
        "password_login = false\nlogin_role_prefix = \"sso2_\"",
    );
    let (port, base, cfg) = (gw.port, gw.base.clone(), &gw.cfg);
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/api/v1/login"))
        .json(&serde_json::json!({"user": "root", "password": "root-pw"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "password_login_off", "{body}");
    let page = http
        .get(format!("{base}/ui/login"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("Sign in with test"), "{page}");
    assert!(!page.contains("name=\"password\""), "{page}");
    let o = Command::new("psql")
        .arg(format!("host=127.0.0.1 port={port} dbname=app user=root"))
        .args(["-c", "SELECT 1"])
        .env("PGPASSWORD", "root-pw")
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        out(&o).contains("password authentication failed"),
        "{}",
        out(&o)
    );
    // doctor says the provider cannot be reached.
    let o = Command::new(BIN)
        .args(["doctor", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        out(&o).contains("FIX  identity provider test: cannot reach"),
        "{}",
        out(&o)
    );
}

/// Where the provider offers no device flow, `jitgate login --sso` signs in
/// through the browser and a loopback listener of its own.
#[tokio::test(flavor = "multi_thread")]
async fn the_cli_signs_in_through_the_browser_without_a_device_flow() {
    let cluster = prepare();
    let gw = Alone::start(
        &cluster.url("postgres"),
        ProviderKind::BrowserOnly,
        "login_role_prefix = \"sso3_\"",
    );
    let (api_port, base, op, cfg) = (gw.api_port, gw.base.clone(), gw.op(), &gw.cfg);
    let carol = gw.home("carol");
    let login = CliSignIn::start(&carol, api_port, &["login", "--sso", "--no-browser"]);
    assert!(
        login
            .url
            .starts_with(&format!("{base}/ui/login/oidc/test?cli_port=")),
        "{}",
        login.url
    );
    let (_driver, driver_port) = chromedriver();
    let b = browser(driver_port).await;
    b.goto(&login.url).await.unwrap();
    through_provider(&b, "carol", |_, body| body.contains("Signed in to jitgate")).await;
    let rest = login.finish().await;
    assert!(rest.contains("through test as carol"), "{rest}");
    let me: Value = reqwest::Client::new()
        .get(format!("{base}/api/v1/me"))
        .bearer_auth(saved_token(&carol))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["user"], "carol", "{me}");
    assert!(!me["may_approve"].as_array().unwrap().is_empty(), "{me}");
    // doctor: the provider answers, without a device flow.
    let o = Command::new(BIN)
        .args(["doctor", "--config"])
        .arg(cfg)
        .output()
        .unwrap();
    let report = out(&o);
    assert!(
        report.contains(&format!(
            "ok   identity provider test: {} answers discovery (1 signing keys, device flow: no",
            op.issuer
        )),
        "{report}"
    );
    b.close().await.unwrap();
}

/// Two replicas on one PostgreSQL state store, one public address (the
/// first's, as a load balancer's would be): a browser sign-in started on one
/// finishes on the other; a device sign-in started on one is polled on the
/// other; a connection secret issued by one opens the other's listener.
#[tokio::test(flavor = "multi_thread")]
async fn sign_ins_continue_on_another_replica() {
    let cluster = prepare();
    cluster
        .psql("postgres", "CREATE DATABASE state_sso")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let secret = write(&dir, "cluster.secret", "a-test-secret-of-32-characters!!\n");
    let a = Gateway::alone(&dir);
    let b = Gateway {
        public_api_port: a.api_port,
        ..Gateway::alone(&dir)
    };
    let store = format!("{}?sslmode=disable", cluster.url("state_sso"));
    let (a, b) = (
        Gateway {
            state: store.clone(),
            ..a
        },
        Gateway { state: store, ..b },
    );
    let base_a = format!("http://127.0.0.1:{}", a.api_port);
    let base_b = format!("http://127.0.0.1:{}", b.api_port);
    let op = Provider::start(&format!("{base_a}/ui/login/oidc/test/callback"), true);
    let extra = format!(
        "login_role_prefix = \"sso4_\"\ncluster_secret_file = \"{}\"",
        secret.display()
    );
    let cfg_a = sso_config(&cluster.url("postgres"), &dir, &a, &op.issuer, &extra);
    let cfg_b = sso_config(&cluster.url("postgres"), &dir, &b, &op.issuer, &extra);
    let _ra = serve(&cfg_a, a.port);
    let _rb = serve(&cfg_b, b.port);
    let (_driver, driver_port) = chromedriver();
    let br = browser(driver_port).await;

    // Started on B, back at A (the public address): A finishes B's sign-in.
    br.goto(&format!("{base_b}/ui/login")).await.unwrap();
    br.find(Locator::LinkText("Sign in with test"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let inbox = through_provider(&br, "bob", |url, _| {
        url.starts_with(&format!("{base_a}/ui/inbox"))
    })
    .await;
    assert!(inbox.contains("bob"), "{inbox}");

    // A device sign-in started on A, polled on B.
    br.delete_all_cookies().await.unwrap();
    let http = reqwest::Client::new();
    let started: Value = http
        .post(format!("{base_a}/api/v1/login/oidc/test/device"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = started["verification_uri_complete"].as_str().unwrap();
    br.goto(url).await.unwrap();
    through_provider(&br, "alice", |_, body| body.contains("Success")).await;
    let handle = started["handle"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let token = loop {
        let r = http
            .post(format!("{base_b}/api/v1/login/oidc/test/device/token"))
            .json(&serde_json::json!({"handle": handle}))
            .send()
            .await
            .unwrap();
        let body: Value = r.json().await.unwrap();
        if body["status"] == "done" {
            break body["token"].as_str().unwrap().to_string();
        }
        assert_eq!(body["status"], "pending", "{body}");
        assert!(
            Instant::now() < deadline,
            "the device sign-in never finished"
        );
        tokio::time::sleep(Duration::from_secs(body["interval"].as_u64().unwrap_or(1))).await;
    };

    // A connection secret from B opens A's listener; A knows alice's groups
    // from the store.
    let issued: Value = http
        .post(format!("{base_b}/api/v1/connection-secret"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let o = Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} dbname=app user=alice",
            a.port
        ))
        .args(["-w", "-At", "-c", "SELECT current_user"])
        .env("PGPASSWORD", issued["secret"].as_str().unwrap())
        .output()
        .unwrap();
    assert_eq!(out(&o).trim(), "sso4_alice", "{}", out(&o));
    br.close().await.unwrap();
}
