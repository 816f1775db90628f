//! End to end with the built binary: `policy check` exit codes, `serve` with
//! JSON logs and a graceful SIGTERM, and `demo` answering psql.

mod common;

use common::*;
use pgcluster::Cluster;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn policy_check_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let good = write(
        &dir,
        "good.toml",
        "[gateway]\n[[database]]\nname = \"app\"\nadmin_url = \"postgres://a@127.0.0.1/app\"\n",
    );
    let out = Command::new(BIN)
        .args(["policy", "check", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok (1 databases"));

    let bad = write(
        &dir,
        "bad.toml",
        "[gateway]\n\n[[user]]\nname = \"bob\"\npassword = \"x\"\ngroups = [\"ghosts\"]\n",
    );
    let out = Command::new(BIN)
        .args(["policy", "check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 6") && err.contains("user[0].groups") && err.contains("ghosts"),
        "{err}"
    );

    let out = Command::new(BIN)
        .args(["policy", "check", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["serve", "--bogus"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "usage errors exit 2");
}

#[tokio::test(flavor = "multi_thread")]
async fn serve_logs_json_and_shuts_down_gracefully_on_sigterm() {
    let cluster = Cluster::shared();
    cluster
        .psql("postgres", "CREATE ROLE app_read NOLOGIN")
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let cfg = write(
        &dir,
        "jitgate.toml",
        &format!(
            "[gateway]\nlisten = \"127.0.0.1:{port}\"\napi_listen = \"127.0.0.1:{}\"\nstate = \"sqlite://{}\"\n\
             log_format = \"json\"\nshutdown_timeout = \"2s\"\n\
             [[database]]\nname = \"postgres\"\nadmin_url = \"{}\"\nbaseline_roles = [\"app_read\"]\ntls = \"disable\"\n\
             [[user]]\nname = \"alice\"\npassword = \"pw\"\n",
            free_port(),
            dir.path().join("state.db").display(),
            cluster.url("postgres")
        ),
    );
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let log = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<_>>()
    });
    let running = Running(child);
    wait_for_port(port);

    let cs = format!("host=127.0.0.1 port={port} dbname=postgres user=alice password=pw");
    let (client, conn) = tokio_postgres::connect(&cs, tokio_postgres::NoTls)
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    client.batch_execute("BEGIN").await.unwrap();

    sigterm(&running.0);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // No new sessions...
    assert!(tokio_postgres::connect(&cs, tokio_postgres::NoTls)
        .await
        .is_err());
    // ...but the open one finishes its work during the grace time.
    let v: i32 = client.query_one("SELECT 41 + 1", &[]).await.unwrap().get(0);
    assert_eq!(v, 42);
    // After shutdown_timeout the session is closed with a FATAL, and the process exits 0.
    let err = conn.await.unwrap().unwrap_err();
    let db = err.as_db_error().expect("a FATAL from the gateway");
    assert_eq!(db.code().code(), "57P01");
    let mut running = running;
    let status = tokio::task::block_in_place(|| running.0.wait()).unwrap();
    assert!(status.success(), "{status}");
    let lines = log.join().unwrap();
    assert!(!lines.is_empty());
    for l in &lines {
        assert!(l.starts_with('{') && l.ends_with('}'), "not JSON: {l}");
        assert!(!l.contains("pw\""), "a password in the log: {l}");
    }
    assert!(lines.iter().any(|l| l.contains("session started")));
}

#[test]
fn demo_serves_psql_as_the_login_role() {
    let port = free_port();
    let api_port = free_port();
    let mut child = Command::new(BIN)
        .args([
            "demo",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--api-listen",
            &format!("127.0.0.1:{api_port}"),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let running = Running(child);
    let mut lines = BufReader::new(stdout).lines();
    let banner = lines
        .by_ref()
        .map_while(Result::ok)
        .find(|l| l.contains("jitgate demo is running"))
        .expect("demo banner");
    assert!(banner.contains(&port.to_string()));
    wait_for_port(port);
    let out = Command::new("psql")
        .args([
            "-X",
            "-A",
            "-t",
            "-c",
            "SELECT current_user, count(*) FROM orders GROUP BY 1",
        ])
        .arg(format!("host=127.0.0.1 port={port} dbname=app user=alice"))
        .env("PGPASSWORD", "alice")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "jit_alice|500");
    // The story: refused with a request, approved by bob, then it runs.
    let mut alice = Psql::connect(port, "alice", "alice");
    alice.run("SET jitgate.reason = 'fix order 1';");
    let o = alice.run("DELETE FROM orders WHERE id = 1;");
    assert!(o.contains("request 1"), "{o}");
    let approve = Command::new(BIN)
        .args(["approve", "1", "--user", "bob", "--password", "bob"])
        .args(["--server", &format!("http://127.0.0.1:{api_port}")])
        .output()
        .unwrap();
    assert!(approve.status.success(), "{}", common::out(&approve));
    let o = alice.run("DELETE FROM orders WHERE id = 1;");
    assert!(o.contains("DELETE 1"), "{o}");
    drop(alice); // an open session would get shutdown_timeout (30 s) to finish
    sigterm(&running.0);
    let mut running = running;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = running.0.try_wait().unwrap() {
            assert!(status.success());
            break;
        }
        assert!(Instant::now() < deadline, "demo did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The access-model story through the CLI and a real `jitgate serve`.
#[test]
fn cli_request_approve_grant_and_audit_verify() {
    let cluster = Cluster::shared();
    let dir = tempfile::tempdir().unwrap();
    let (port, api_port) = (free_port(), free_port());
    let db_path = dir.path().join("state.db");
    let cfg = write(
        &dir,
        "jitgate.toml",
        &format!(
            "[gateway]\nlisten = \"127.0.0.1:{port}\"\napi_listen = \"127.0.0.1:{api_port}\"\nstate = \"sqlite://{}\"\n\
             [[database]]\nname = \"postgres\"\nadmin_url = \"{}\"\ntls = \"disable\"\n\
             [[group]]\nname = \"engineers\"\n[[group]]\nname = \"leads\"\n[[group]]\nname = \"auditors\"\n\
             [[user]]\nname = \"alice\"\npassword = \"alice-pw\"\ngroups = [\"engineers\"]\n\
             [[user]]\nname = \"bob\"\npassword = \"bob-pw\"\ngroups = [\"leads\"]\n\
             [[user]]\nname = \"carol\"\npassword = \"carol-pw\"\ngroups = [\"auditors\"]\n\
             [[role]]\nname = \"app_write\"\ndatabase = \"postgres\"\nrequesters = [\"engineers\"]\n\
             reason_required = true\nchain = [{{ approvers = [\"leads\"], min = 1 }}]\n",
            db_path.display(),
            cluster.url("postgres")
        ),
    );
    let running = Running(
        Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&cfg)
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_for_port(api_port);

    let o = cli(
        api_port,
        &[
            "request",
            "app_write",
            "--db",
            "postgres",
            "--for",
            "30m",
            "--reason",
            "fix order 7",
        ],
        "alice",
    );
    assert!(o.status.success(), "{}", out(&o));
    let id = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(id, "1", "the request id alone on stdout");

    let o = cli(api_port, &["approve", &id], "alice");
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains("your own request"), "{}", out(&o));

    let o = cli(api_port, &["requests", "--state", "pending"], "bob");
    assert!(
        out(&o).contains("app_write") && out(&o).contains("fix order 7"),
        "{}",
        out(&o)
    );
    let o = cli(api_port, &["approve", &id, "--comment", "go"], "bob");
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("approved"));

    let o = cli(api_port, &["grants", "--active", "--json"], "alice");
    let grants: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(grants[0]["state"], "active");
    assert_eq!(grants[0]["role"], "app_write");

    let o = cli(api_port, &["audit", "verify"], "carol");
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("hash chain intact"));
    let o = cli(api_port, &["audit", "verify"], "alice");
    assert_eq!(o.status.code(), Some(1), "alice is no auditor");

    // Edit one audit row by hand: verification fails and names it.
    let conn = rusqlite::Connection::open(&db_path).unwrap();
    conn.execute("UPDATE audit SET actor = 'mallory' WHERE seq = 3", [])
        .unwrap();
    drop(conn);
    let o = cli(api_port, &["audit", "verify"], "carol");
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains("event 3"), "{}", out(&o));
    // `jitgate login` saves a token that later commands use.
    let home = tempfile::tempdir().unwrap();
    let saved = |args: &[&str]| {
        Command::new(BIN)
            .args(args)
            .args(["--server", &format!("http://127.0.0.1:{api_port}")])
            .env("XDG_CONFIG_HOME", home.path())
            .env_remove("JITGATE_USER")
            .env_remove("JITGATE_PASSWORD")
            .output()
            .unwrap()
    };
    assert_eq!(saved(&["grants"]).status.code(), Some(1), "no token yet");
    let o = saved(&["login", "--user", "alice", "--password", "alice-pw"]);
    assert!(o.status.success(), "{}", out(&o));
    let o = saved(&["grants", "--json"]);
    assert!(o.status.success(), "{}", out(&o));
    // Deny, cancel, revoke and relinquish from the command line.
    let id2 = String::from_utf8_lossy(
        &cli(
            api_port,
            &[
                "request",
                "app_write",
                "--db",
                "postgres",
                "--reason",
                "second",
            ],
            "alice",
        )
        .stdout,
    )
    .trim()
    .to_string();
    let o = cli(api_port, &["deny", &id2, "--reason", "not today"], "bob");
    assert!(out(&o).contains("request is denied"), "{}", out(&o));
    let id3 = String::from_utf8_lossy(
        &cli(
            api_port,
            &[
                "request",
                "app_write",
                "--db",
                "postgres",
                "--reason",
                "third",
            ],
            "alice",
        )
        .stdout,
    )
    .trim()
    .to_string();
    let o = cli(api_port, &["cancel", &id3], "alice");
    assert!(out(&o).contains("cancelled"), "{}", out(&o));
    let grant_id = grants[0]["id"].to_string();
    let o = cli(api_port, &["relinquish", &grant_id], "bob");
    assert_eq!(o.status.code(), Some(1), "only the holder relinquishes");
    let o = cli(api_port, &["revoke", &grant_id, "--reason", "done"], "bob");
    assert!(out(&o).contains("revoked"), "{}", out(&o));
    let o = cli(api_port, &["requests", "--json"], "alice");
    let states: Vec<String> = serde_json::from_slice::<serde_json::Value>(&o.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["state"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(states, ["cancelled", "denied", "approved"]);

    // One-command logins leave no live token behind; `jitgate login`'s stays.
    let conn = rusqlite::Connection::open(&db_path).unwrap();
    let live: i64 = conn
        .query_row("SELECT count(*) FROM tokens WHERE NOT revoked", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(live, 1);
    drop(conn);
    let o = cli(api_port, &["audit", "export"], "carol");
    assert!(String::from_utf8_lossy(&o.stdout).lines().count() >= 5);
    drop(running);
}

#[test]
fn explain_and_scan() {
    let cluster = Cluster::shared();
    cluster
        .psql("postgres", "CREATE DATABASE scan_app; ")
        .unwrap();
    cluster
        .psql(
            "scan_app",
            "CREATE TABLE orders (id int); CREATE ROLE app_write NOLOGIN; GRANT DELETE ON orders TO app_write; \
             CREATE ROLE keyholder LOGIN; GRANT app_write TO keyholder; \
             CREATE ROLE boss LOGIN SUPERUSER; CREATE ROLE reader LOGIN; GRANT SELECT ON orders TO reader;",
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        &dir,
        "jitgate.toml",
        &format!(
            "[gateway]\n[[database]]\nname = \"app\"\nadmin_url = \"{}\"\n\
             [[group]]\nname = \"engineers\"\n[[group]]\nname = \"leads\"\n\
             [[user]]\nname = \"alice\"\npassword = \"x\"\ngroups = [\"engineers\"]\n\
             [[user]]\nname = \"bob\"\npassword = \"x\"\ngroups = [\"leads\"]\n\
             [[role]]\nname = \"app_write\"\ndatabase = \"app\"\nrequesters = [\"engineers\"]\n\
             chain = [{{ approvers = [\"leads\"], min = 1, escalate_after = \"10m\", escalate_to = [\"leads\"] }}]\n\
             [[rule]]\ndatabase = \"app\"\nactions = [\"write\"]\nobjects = [\"public.*\"]\nrole = \"app_write\"\n",
            cluster.url("scan_app")
        ),
    );
    let explain = |sql: &str| {
        Command::new(BIN)
            .args(["explain", "--db", "app", sql, "--config"])
            .arg(&cfg)
            .output()
            .unwrap()
    };
    let o = explain("DELETE FROM orders WHERE id = 1");
    let text = out(&o);
    assert!(o.status.success(), "{text}");
    assert!(
        text.contains("action:    write") && text.contains("needs role app_write"),
        "{text}"
    );
    assert!(
        text.contains("stage 1:   1 of [\"leads\"], escalating after 600s"),
        "{text}"
    );
    let o = explain("SET ROLE postgres");
    assert!(
        out(&o).contains("denied") && out(&o).contains("identity"),
        "{}",
        out(&o)
    );
    let o = explain("SELEC 1");
    assert_eq!(o.status.code(), Some(1));
    assert!(out(&o).contains("cannot be read"), "{}", out(&o));

    let o = Command::new(BIN)
        .args(["scan", "--db", "app", "--json", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    let found: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let by = |login: &str| {
        found
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["login"] == login)
            .cloned()
    };
    assert_eq!(by("keyholder").unwrap()["managed_roles"][0], "app_write");
    assert_eq!(by("keyholder").unwrap()["can_write"], true);
    assert_eq!(by("boss").unwrap()["superuser"], true);
    assert!(
        by("reader").is_none(),
        "a read-only login holds nothing privileged"
    );
    // The test cluster lets every role in over the local socket (initdb's
    // default): login roles could be used without the gateway.
    let reach = by("jit_* (jitgate login roles)").expect("login-role reach reported");
    let why = reach["why"].to_string();
    assert!(
        why.contains("the local socket") && why.contains("pg_hba.conf line"),
        "{why}"
    );
    let o = Command::new(BIN)
        .args(["scan", "--db", "app", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out(&o).contains("keyholder") && out(&o).contains("member of managed role app_write"),
        "{}",
        out(&o)
    );
}

#[test]
fn policy_check_live_names_unbacked_rules_and_their_revokes() {
    let cluster = Cluster::shared();
    cluster
        .psql("postgres", "CREATE DATABASE live_app")
        .unwrap();
    cluster
        .psql(
            "live_app",
            "CREATE ROLE lb_read NOLOGIN; CREATE ROLE lb_write NOLOGIN;
             CREATE TABLE orders (id int); CREATE TABLE notes (id int);
             GRANT SELECT ON orders, notes TO lb_read;
             GRANT INSERT, UPDATE, DELETE ON orders, notes TO lb_write;",
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let cfg = write(
        &dir,
        "jitgate.toml",
        &format!(
            "[gateway]\n[[database]]\nname = \"app\"\nadmin_url = \"{}\"\nbaseline_roles = [\"lb_read\"]\n\
             [[group]]\nname = \"engineers\"\n[[group]]\nname = \"leads\"\n\
             [[user]]\nname = \"alice\"\npassword = \"x\"\ngroups = [\"engineers\"]\n\
             [[user]]\nname = \"bob\"\npassword = \"x\"\ngroups = [\"leads\"]\n\
             [[role]]\nname = \"lb_write\"\ndatabase = \"app\"\nrequesters = [\"engineers\"]\n\
             chain = [{{ approvers = [\"leads\"], min = 1 }}]\n\
             [[rule]]\ndatabase = \"app\"\nactions = [\"write\"]\nobjects = [\"public.*\"]\nrole = \"lb_write\"\n\
             [[rule]]\ndatabase = \"app\"\nactions = [\"admin\"]\nrole = \"deny\"\n",
            cluster.url("live_app")
        ),
    );
    let live = || {
        Command::new(BIN)
            .args(["policy", "check", "--live", "--config"])
            .arg(&cfg)
            .output()
            .unwrap()
    };
    // The database backs the write rule: only lb_write can write.
    let o = live();
    assert!(o.status.success(), "{}", out(&o));
    assert!(
        out(&o).contains("rule[0] (write on public.* -> lb_write): backed"),
        "{}",
        out(&o)
    );
    assert!(out(&o).contains("gateway alone enforces"), "{}", out(&o));
    // Someone lets the baseline role and PUBLIC write: no longer backed.
    cluster
        .psql(
            "live_app",
            "GRANT DELETE ON orders TO lb_read; GRANT UPDATE ON notes TO PUBLIC;",
        )
        .unwrap();
    let o = live();
    let text = out(&o);
    assert_eq!(o.status.code(), Some(1), "{text}");
    assert!(
        text.contains("rule[0] (write on public.* -> lb_write): NOT backed"),
        "{text}"
    );
    let revokes: Vec<&str> = text
        .lines()
        .filter_map(|l| l.find("REVOKE").map(|i| &l[i..]))
        .collect();
    assert!(
        revokes.contains(&"REVOKE DELETE ON TABLE public.orders FROM lb_read;"),
        "{text}"
    );
    assert!(
        revokes.contains(&"REVOKE UPDATE ON TABLE public.notes FROM PUBLIC;"),
        "{text}"
    );
    // Running what it printed backs the rule again.
    cluster.psql("live_app", &revokes.join("\n")).unwrap();
    let o = live();
    assert!(o.status.success(), "{}", out(&o));
}
