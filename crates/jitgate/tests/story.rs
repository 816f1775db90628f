//! The whole product story, end to end, with the built binary, a real psql
//! session and the CLI: a refused DELETE files a request, bob approves it with
//! `jitgate approve`, the DELETE runs in the same psql session, the grant
//! expires with warnings, and the DELETE is refused again — in `reject` and
//! in `hold` mode. And a gateway killed with -9 leaves no role behind once it
//! is back, and loses no record of a privileged statement that reached
//! PostgreSQL.

mod common;

use common::*;
use pgcluster::Cluster;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn cluster() -> &'static Cluster {
    static READY: OnceLock<()> = OnceLock::new();
    let c = Cluster::shared();
    READY.get_or_init(|| {
        c.psql("postgres", "CREATE DATABASE app").unwrap();
        c.psql(
            "app",
            "CREATE ROLE app_read NOLOGIN; CREATE ROLE app_write NOLOGIN;
             CREATE TABLE orders (id int PRIMARY KEY, total int);
             INSERT INTO orders SELECT i, i FROM generate_series(1, 100) i;
             GRANT USAGE ON SCHEMA public TO app_read, app_write;
             GRANT SELECT ON orders TO app_read;
             GRANT DELETE, UPDATE, INSERT ON orders TO app_write;
             CREATE TABLE marks (n int);
             GRANT INSERT ON marks TO app_write;",
        )
        .unwrap();
        // PostgreSQL's own record of every statement it received.
        c.psql("app", "ALTER SYSTEM SET log_statement = 'all'")
            .unwrap();
        c.psql("app", "SELECT pg_reload_conf()").unwrap();
    });
    c
}

struct Serve {
    port: u16,
    api_port: u16,
    cfg: std::path::PathBuf,
    running: Option<Running>,
    _dir: tempfile::TempDir,
}

impl Serve {
    fn start(prefix: &str, gateway_extra: &str, duration: &str) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let (port, api_port) = (free_port(), free_port());
        let cfg = write(
            &dir,
            "jitgate.toml",
            &testkit::config::App::new(&cluster().url("app"))
                .gateway(format!("listen = \"127.0.0.1:{port}\""))
                .gateway(format!("api_listen = \"127.0.0.1:{api_port}\""))
                .gateway(format!(
                    "state = \"sqlite://{}\"",
                    dir.path().join("state.db").display()
                ))
                .gateway(format!("login_role_prefix = \"{prefix}\""))
                .gateway("shutdown_timeout = \"1s\"")
                .gateway(gateway_extra)
                .default_duration(duration)
                .reason_required()
                .toml(),
        );
        let mut s = Serve {
            port,
            api_port,
            cfg,
            running: None,
            _dir: dir,
        };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        self.running = Some(Running(
            Command::new(BIN)
                .args(["serve", "--config"])
                .arg(&self.cfg)
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ));
        wait_for_port(self.port);
    }

    fn kill_9(&mut self) {
        let r = self.running.take().unwrap();
        Command::new("kill")
            .args(["-KILL", &r.0.id().to_string()])
            .status()
            .unwrap();
        drop(r);
    }

    fn cli(&self, args: &[&str], user: &str) -> std::process::Output {
        cli(self.api_port, args, user)
    }

    /// Alice requests app_write (`extra` arguments), bob approves request 1,
    /// and the membership is in the database.
    fn grant_alice(&self, prefix: &str, extra: &[&str]) {
        let mut args = vec!["request", "app_write", "--db", "app", "--reason", "r"];
        args.extend_from_slice(extra);
        let o = self.cli(&args, "alice");
        assert!(o.status.success(), "{}", out(&o));
        let o = self.cli(&["approve", "1"], "bob");
        assert!(o.status.success(), "{}", out(&o));
        let deadline = Instant::now() + Duration::from_secs(5);
        while !member(&format!("{prefix}alice")) {
            assert!(Instant::now() < deadline, "never granted");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `audit verify --checkpoint FILE --public-key KEY` as carol.
    fn verify_checkpoint(&self, file: &str, key: &str) -> std::process::Output {
        self.cli(
            &["audit", "verify", "--checkpoint", file, "--public-key", key],
            "carol",
        )
    }
}

fn member(login_role: &str) -> bool {
    cluster()
        .psql(
            "app",
            &format!("SELECT pg_has_role('{login_role}', 'app_write', 'MEMBER')::text"),
        )
        .unwrap()
        .contains("true")
}

#[test]
fn story_in_reject_mode() {
    let s = Serve::start("r_", "expiry_warning = \"3s\"", "5s");
    let mut alice = Psql::connect(s.port, "alice", "alice-pw");
    let o = alice.run("DELETE FROM orders WHERE id = 1;");
    assert!(o.contains("SET jitgate.reason"), "{o}");
    alice.run("SET jitgate.reason = 'fix order 1';");
    let o = alice.run("DELETE FROM orders WHERE id = 1;");
    for part in [
        "ERROR",
        "\"app_write\"",
        "request 1",
        "leads (bob)",
        "jitgate approve 1",
    ] {
        assert!(o.contains(part), "{part:?} missing from: {o}");
    }
    let o = s.cli(&["approve", "1", "--comment", "go"], "bob");
    assert!(o.status.success(), "{}", out(&o));
    let approved_at = Instant::now();
    // The same psql session, no reconnect.
    let o = alice.run("DELETE FROM orders WHERE id = 1;");
    assert!(o.contains("DELETE 1"), "{o}");
    assert!(member("r_alice"));
    // Expiry: a warning before, a notice at the end, and refused again.
    std::thread::sleep(Duration::from_secs(6).saturating_sub(approved_at.elapsed()));
    let o = alice.run("DELETE FROM orders WHERE id = 2;");
    assert!(o.contains("ends in"), "{o}");
    assert!(o.contains("has expired"), "{o}");
    assert!(o.contains("request 2"), "{o}");
    assert!(!member("r_alice"), "revoked in the database");
    let o = s.cli(&["audit", "verify"], "carol");
    assert!(o.status.success(), "{}", out(&o));
    let o = s.cli(&["audit", "export"], "carol");
    let events: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let kinds: Vec<&str> = events.iter().map(|e| e["kind"].as_str().unwrap()).collect();
    for k in [
        "request.filed",
        "statement.refused",
        "request.approved",
        "grant.started",
        "grant.applied",
        "statement.run",
        "grant.removed",
    ] {
        assert!(kinds.contains(&k), "{k} missing from {kinds:?}");
    }
}

#[test]
fn story_in_hold_mode() {
    let s = Serve::start(
        "h_",
        "on_missing_grant = \"hold\"\nhold_timeout = \"30s\"",
        "1m",
    );
    let mut alice = Psql::connect(s.port, "alice", "alice-pw");
    alice.run("SET jitgate.reason = 'fix order 3';");
    let marker = alice.send("DELETE FROM orders WHERE id = 3;");
    // The statement is held; bob finds the request and approves it.
    let deadline = Instant::now() + Duration::from_secs(10);
    let id = loop {
        let o = s.cli(&["requests", "--state", "pending", "--json"], "bob");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
        if let Some(id) = v.get(0).and_then(|r| r["id"].as_i64()) {
            break id;
        }
        assert!(Instant::now() < deadline, "no request filed: {}", out(&o));
        std::thread::sleep(Duration::from_millis(100));
    };
    let o = s.cli(&["approve", &id.to_string()], "bob");
    assert!(o.status.success(), "{}", out(&o));
    let o = alice.wait(&marker, Duration::from_secs(10));
    assert!(o.contains("holding this statement"), "{o}");
    assert!(o.contains("DELETE 1"), "{o}");
    let o = alice.run("SELECT count(*) FROM orders WHERE id = 3;");
    assert!(o.contains(" 0\n"), "{o}");
}

#[test]
fn killed_gateway_leaves_no_role_behind_after_restart() {
    let mut s = Serve::start("k_", "", "2s");
    s.grant_alice("k_", &["--for", "2s"]);
    s.kill_9();
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        member("k_alice"),
        "nobody revoked while the gateway was down"
    );
    s.spawn();
    let serving = Instant::now();
    while member("k_alice") {
        assert!(
            serving.elapsed() < Duration::from_secs(1),
            "still a member 1 s after serving again"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The numbers `n` of `INSERT INTO marks VALUES (n) /* wal */` that the
/// server's log says it received.
fn marks_in_server_log() -> std::collections::BTreeSet<i64> {
    let log = cluster().log();
    log.lines()
        .filter_map(|l| l.split("INSERT INTO marks VALUES (").nth(1))
        .filter(|rest| rest.contains(") /* wal */"))
        .filter_map(|rest| rest.split(')').next()?.parse().ok())
        .collect()
}

#[test]
fn killed_gateway_loses_no_record_of_a_privileged_statement() {
    let mut s = Serve::start("wal_", "", "10m");
    s.grant_alice("wal_", &[]);
    // Four sessions write as fast as they can; the gateway dies mid-stream.
    let port = s.port;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let writers: Vec<_> = (0..4)
        .map(|w| {
            rt.spawn(async move {
                let (client, conn) = tokio_postgres::connect(
                    &format!("host=127.0.0.1 port={port} dbname=app user=alice password=alice-pw"),
                    tokio_postgres::NoTls,
                )
                .await
                .unwrap();
                tokio::spawn(conn);
                let mut sent = 0;
                for i in 0..100_000i64 {
                    let n = w * 1_000_000 + i;
                    let sql = format!("INSERT INTO marks VALUES ({n}) /* wal */");
                    if client.batch_execute(&sql).await.is_err() {
                        break;
                    }
                    sent += 1;
                }
                sent
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(1500));
    s.kill_9();
    let ran: i64 = writers.into_iter().map(|w| rt.block_on(w).unwrap()).sum();
    assert!(ran > 20, "the writers got going ({ran} statements)");
    s.spawn();
    let reached = marks_in_server_log();
    assert!(reached.len() as i64 >= ran, "{} < {ran}", reached.len());
    let db = s._dir.path().join("state.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mut stmt = conn
        .prepare("SELECT detail FROM audit WHERE kind = 'statement.run'")
        .unwrap();
    let recorded: std::collections::BTreeSet<i64> = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .filter_map(|d| {
            let d: serde_json::Value = serde_json::from_str(&d.unwrap()).ok()?;
            let text = d["text"].as_str()?.to_string();
            text.split("INSERT INTO marks VALUES (")
                .nth(1)?
                .split(')')
                .next()?
                .parse()
                .ok()
        })
        .collect();
    let lost: Vec<_> = reached.difference(&recorded).collect();
    assert!(
        lost.is_empty(),
        "{} statements reached PostgreSQL without an audit record: {lost:?}",
        lost.len()
    );
}

#[test]
fn signed_checkpoints_catch_a_cut_tail() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("audit.key");
    let keygen = || {
        Command::new(BIN)
            .args(["audit", "keygen", "--out"])
            .arg(&key)
            .output()
            .unwrap()
    };
    let o = keygen();
    assert!(o.status.success(), "{}", out(&o));
    let public = String::from_utf8_lossy(&o.stdout).trim().to_string();
    assert_eq!(public.len(), 44, "a base64 ed25519 key: {public}");
    assert!(!keygen().status.success(), "never overwrites a key");
    let s = Serve::start(
        "ck_",
        &format!(
            "audit_key_file = \"{}\"\naudit_checkpoint_interval = \"1s\"",
            key.display()
        ),
        "1m",
    );
    let o = s.cli(
        &["request", "app_write", "--db", "app", "--reason", "r"],
        "alice",
    );
    assert!(o.status.success(), "{}", out(&o));
    // A checkpoint covering the request arrives in the log.
    let deadline = Instant::now() + Duration::from_secs(10);
    let checkpoint = loop {
        let o = s.cli(&["audit", "export"], "carol");
        let events: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        let filed = events
            .iter()
            .find(|e| e["kind"] == "request.filed")
            .and_then(|e| e["seq"].as_i64())
            .expect("the request is in the log");
        let found = events
            .into_iter()
            .filter(|e| e["kind"] == "audit.checkpoint")
            .find(|e| e["detail"]["seq"].as_i64().unwrap_or(0) >= filed);
        if let Some(e) = found {
            break e;
        }
        assert!(Instant::now() < deadline, "no checkpoint");
        std::thread::sleep(Duration::from_millis(200));
    };
    let seq = checkpoint["detail"]["seq"].as_i64().unwrap();
    let file = s._dir.path().join("checkpoint.json");
    std::fs::write(&file, checkpoint.to_string()).unwrap();
    let file = file.to_str().unwrap();
    let o = s.verify_checkpoint(file, &public);
    assert!(o.status.success(), "{}", out(&o));
    assert!(out(&o).contains("checkpoint ok"), "{}", out(&o));
    // The checkpoint's JSON works inline too; another key is refused.
    let detail = checkpoint["detail"].to_string();
    let o = s.cli(&["audit", "verify", "--checkpoint", &detail], "carol");
    assert!(o.status.success(), "{}", out(&o));
    let other = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let o = s.verify_checkpoint(file, other);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));

    // Someone with write access to the store cuts the tail: the chain that
    // is left is intact, but the checkpoint catches it.
    let conn = rusqlite::Connection::open(s._dir.path().join("state.db")).unwrap();
    conn.execute("DELETE FROM audit WHERE seq >= ?1", [seq])
        .unwrap();
    drop(conn);
    let o = s.cli(&["audit", "verify"], "carol");
    assert!(
        o.status.success(),
        "a cut tail leaves a valid chain: {}",
        out(&o)
    );
    let o = s.verify_checkpoint(file, &public);
    assert_eq!(o.status.code(), Some(1), "{}", out(&o));
    let said = out(&o);
    assert!(
        said.contains("cut from the tail") || said.contains("rewritten"),
        "{said}"
    );
    assert!(said.contains(&format!("event {seq}")), "{said}");
}
