//! Three replicas of the built binary on one PostgreSQL state store, behind
//! HAProxy (TCP mode, round robin, health checks on `/healthz`), in front of
//! a real PostgreSQL: an approval on one replica's API lets the statement
//! through the balancer on every replica; a cancel request through the
//! balancer (which sends it to another replica than the session's) cancels
//! the statement; the enforcing replica killed with -9 mid-grant, the grant
//! still ends on time everywhere and its membership is revoked by the next
//! enforcer; credentials rotated while all serve raise no alert and keep new
//! sessions working; replicas restarted one by one under psql and pgbench
//! lose no statement.

mod common;

use common::*;
use pgcluster::Cluster;
use std::io::{Read, Write};
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
             INSERT INTO orders SELECT i, i FROM generate_series(1, 1000) i;
             GRANT USAGE ON SCHEMA public TO app_read, app_write;
             GRANT SELECT ON orders TO app_read;
             GRANT DELETE, UPDATE, INSERT ON orders TO app_write;",
        )
        .unwrap();
    });
    c
}

fn has_role(login_role: &str) -> bool {
    cluster()
        .psql(
            "app",
            &format!("SELECT pg_has_role('{login_role}', 'app_write', 'MEMBER')::text"),
        )
        .unwrap()
        .contains("true")
}

struct Replica {
    port: u16,
    api_port: u16,
    cfg: std::path::PathBuf,
    running: Option<Running>,
}

impl Replica {
    fn spawn(&mut self) {
        self.running = Some(Running(
            Command::new(BIN)
                .args(["serve", "--config"])
                .arg(&self.cfg)
                .env("JITGATE_LOG", "info,proxy::cancel=debug")
                .stderr(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(self.cfg.with_extension("log"))
                        .unwrap(),
                )
                .spawn()
                .unwrap(),
        ));
        wait_for_port(self.port);
        wait_for_port(self.api_port);
    }

    /// `/healthz` as JSON with its status code; `None` while it is down.
    fn healthz(&self) -> Option<(u16, serde_json::Value)> {
        let mut s = std::net::TcpStream::connect(("127.0.0.1", self.api_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        let code = text.split_whitespace().nth(1)?.parse().ok()?;
        let body = text.split("\r\n\r\n").nth(1)?;
        Some((code, serde_json::from_str(body).ok()?))
    }

    fn is_enforcer(&self) -> bool {
        self.healthz().is_some_and(|(_, h)| h["enforcer"] == true)
    }

    fn kill_9(&mut self) {
        let r = self.running.take().unwrap();
        Command::new("kill")
            .args(["-KILL", &r.0.id().to_string()])
            .status()
            .unwrap();
        drop(r);
    }

    /// SIGTERM: it drains.
    fn stop_async(&mut self) {
        sigterm(&self.running.as_ref().unwrap().0);
    }

    fn wait_stopped(&mut self) {
        let mut r = self.running.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        while r.0.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "replica did not stop");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

struct Replicas {
    replicas: Vec<Replica>,
    lb_port: u16,
    _haproxy: Running,
    _dir: tempfile::TempDir,
}

impl Drop for Replicas {
    /// Keeps the replicas' logs of a failed test where one can read them.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let keep = std::env::temp_dir().join("jitgate-replicas-logs");
            let _ = std::fs::create_dir_all(&keep);
            for i in 0..self.replicas.len() {
                let log = self._dir.path().join(format!("r{i}.log"));
                let _ = std::fs::copy(&log, keep.join(format!("r{i}.log")));
            }
            eprintln!("replica logs kept in {}", keep.display());
        }
    }
}

impl Replicas {
    /// Three replicas (login roles `<prefix><user>`, state in database
    /// `state_<prefix>`) and HAProxy in front.
    fn start(prefix: &str, duration: &str) -> Replicas {
        let c = cluster();
        let state_db = format!("state_{prefix}");
        c.psql("postgres", &format!("CREATE DATABASE {state_db}"))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let secret = write(&dir, "cluster.secret", "a-test-secret-of-32-characters!!\n");
        let mut replicas = Vec::new();
        for i in 0..3 {
            let (port, api_port) = (free_port(), free_port());
            let cfg = write(
                &dir,
                &format!("r{i}.toml"),
                &testkit::config::App::new(&c.url("app"))
                    .gateway(format!("listen = \"127.0.0.1:{port}\""))
                    .gateway(format!("api_listen = \"127.0.0.1:{api_port}\""))
                    .gateway(format!("state = \"{}?sslmode=disable\"", c.url(&state_db)))
                    .gateway(format!("cluster_secret_file = \"{}\"", secret.display()))
                    .gateway(format!("login_role_prefix = \"{prefix}\""))
                    .gateway("shutdown_timeout = \"10s\"")
                    .gateway("drain_delay = \"1s\"")
                    .gateway("reconcile_interval = \"1s\"")
                    .default_duration(duration)
                    .toml(),
            );
            let mut r = Replica {
                port,
                api_port,
                cfg,
                running: None,
            };
            r.spawn();
            replicas.push(r);
        }
        let lb_port = free_port();
        let servers: String = replicas
            .iter()
            .enumerate()
            .map(|(i, r)| {
                format!(
                    "  server r{i} 127.0.0.1:{} check port {} inter 200ms fall 1 rise 2\n",
                    r.port, r.api_port
                )
            })
            .collect();
        let haproxy_cfg = write(
            &dir,
            "haproxy.cfg",
            &format!(
                "global\n  maxconn 2000\n\
                 defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 120s\n  timeout server 120s\n\
                 \x20 retries 3\n  option redispatch\n\
                 frontend pg\n  bind 127.0.0.1:{lb_port}\n  default_backend jitgate\n\
                 backend jitgate\n  balance roundrobin\n  option httpchk GET /healthz\n\
                 \x20 http-check expect status 200\n{servers}"
            ),
        );
        let haproxy = Running(
            Command::new("haproxy")
                .args(["-db", "-f"])
                .arg(&haproxy_cfg)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("haproxy (scripts/install-deps --tests installs it)"),
        );
        wait_for_port(lb_port);
        let set = Replicas {
            replicas,
            lb_port,
            _haproxy: haproxy,
            _dir: dir,
        };
        set.wait_for_one_enforcer(Duration::from_secs(10));
        set
    }

    /// The index of the one replica that says it is the enforcer.
    fn wait_for_one_enforcer(&self, limit: Duration) -> usize {
        let deadline = Instant::now() + limit;
        loop {
            let leaders: Vec<usize> = (0..self.replicas.len())
                .filter(|i| self.replicas[*i].running.is_some() && self.replicas[*i].is_enforcer())
                .collect();
            if leaders.len() == 1 {
                return leaders[0];
            }
            assert!(
                Instant::now() < deadline,
                "expected exactly one enforcer, saw {leaders:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn cli(&self, i: usize, args: &[&str], user: &str) -> std::process::Output {
        cli(self.replicas[i].api_port, args, user)
    }

    /// Alice's grant: its id and end, as replica `i`'s API reports it.
    fn alice_grant(&self, i: usize) -> (i64, chrono::DateTime<chrono::Utc>) {
        let o = self.cli(i, &["grants", "--active", "--json"], "alice");
        assert!(o.status.success(), "{}", out(&o));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        let g = &v.as_array().expect("a list")[0];
        (
            g["id"].as_i64().unwrap(),
            g["expires_at"].as_str().unwrap().parse().unwrap(),
        )
    }
}

#[test]
fn approval_cancel_and_enforcer_failover_across_replicas() {
    let set = Replicas::start("rp_", "20s");
    // Round robin: three sessions through the balancer, one per replica.
    let mut sessions: Vec<Psql> = (0..3)
        .map(|_| Psql::connect(set.lb_port, "alice", "alice-pw"))
        .collect();
    for (i, s) in sessions.iter_mut().enumerate() {
        let o = s.run(&format!("DELETE FROM orders WHERE id = {};", i + 1));
        assert!(o.contains("request 1"), "session {i}: {o}");
    }
    // Approved on replica 1's API...
    let o = set.cli(1, &["approve", "1"], "bob");
    assert!(o.status.success(), "{}", out(&o));
    let approved = Instant::now();
    // ... allowed on every replica, through the balancer.
    for (i, s) in sessions.iter_mut().enumerate() {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let o = s.run(&format!("DELETE FROM orders WHERE id = {};", i + 1));
            if o.contains("DELETE 1") {
                break;
            }
            assert!(Instant::now() < deadline, "session {i} still refused: {o}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    eprintln!("approval reached all replicas in {:?}", approved.elapsed());

    // Cancel through the balancer: the cancel request's connection is the
    // next one after the session's, so round robin sends it to another
    // replica, which passes it on. (psql reading a script stops after
    // Ctrl-C: a new session each time.)
    drop(sessions);
    for i in 0..3 {
        let mut s = Psql::connect(set.lb_port, "alice", "alice-pw");
        s.send(&format!("SELECT pg_sleep(60) AS cancel_{i};"));
        // A cancel that arrives before the statement runs cancels nothing
        // (as directly): wait until the server runs it.
        let deadline = Instant::now() + Duration::from_secs(10);
        let running = format!(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
             AND query LIKE '%AS cancel_{i};'"
        );
        while cluster().psql("app", &running).unwrap().trim() != "1" {
            assert!(Instant::now() < deadline, "the statement never ran");
            std::thread::sleep(Duration::from_millis(20));
        }
        let started = Instant::now();
        s.interrupt();
        let o = s.wait_for("canceling statement", Duration::from_secs(5));
        assert!(
            o.contains("ERROR:  canceling statement due to user request"),
            "session {i}: {o}"
        );
        assert!(started.elapsed() < Duration::from_secs(3));
    }

    // The enforcer dies with -9 in the middle of the grant.
    let (grant, expires_at) = set.alice_grant(0);
    let leader = set.wait_for_one_enforcer(Duration::from_secs(5));
    let mut set = set;
    set.replicas[leader].kill_9();
    let killed_at = Instant::now();
    let next = set.wait_for_one_enforcer(Duration::from_secs(5));
    assert_ne!(next, leader);
    eprintln!(
        "replica {next} took over as enforcer {:?} after the kill",
        killed_at.elapsed()
    );
    let survivors: Vec<usize> = (0..3).filter(|i| *i != leader).collect();
    let mut direct: Vec<Psql> = survivors
        .iter()
        .map(|i| Psql::connect(set.replicas[*i].port, "alice", "alice-pw"))
        .collect();
    // Still allowed before the end, on both survivors...
    for s in direct.iter_mut() {
        let o = s.run("UPDATE orders SET total = total WHERE id = 10;");
        assert!(o.contains("UPDATE 1"), "grant {grant} before its end: {o}");
    }
    // ... refused from its end on, by each replica's own clock.
    let until_end = (expires_at - chrono::Utc::now())
        .to_std()
        .unwrap_or_default();
    std::thread::sleep(until_end + Duration::from_millis(300));
    for s in direct.iter_mut() {
        let o = s.run("UPDATE orders SET total = total WHERE id = 10;");
        assert!(o.contains("ERROR"), "grant {grant} after its end: {o}");
        assert!(o.contains("app_write"), "{o}");
    }
    // The new enforcer revoked the membership.
    let deadline = Instant::now() + Duration::from_secs(5);
    while has_role("rp_alice") {
        assert!(
            Instant::now() < deadline,
            "membership still there 5 s after the grant's end"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let lag = chrono::Utc::now() - expires_at;
    eprintln!("membership revoked {lag} after the grant's end");
}

#[test]
fn rotation_then_rolling_restart_under_psql_and_pgbench_loses_no_statement() {
    let mut set = Replicas::start("rr_", "5m");
    let c = cluster();

    // Credentials rotated while the three serve: the enforcer sets the new
    // passwords, every replica logs new upstream sessions in with them, and
    // nobody is alerted. (Three sessions at once per replica, so most need a
    // new upstream login rather than a pooled one.)
    let sessions = |set: &Replicas| -> Vec<Psql> {
        let mut all = Vec::new();
        for r in &set.replicas {
            for _ in 0..3 {
                all.push(Psql::connect(r.port, "alice", "alice-pw"));
            }
        }
        for (i, s) in all.iter_mut().enumerate() {
            let o = s.run("SELECT 'read-' || count(*) FROM orders WHERE id > 100;");
            assert!(o.contains("read-900"), "session {i}: {o}");
        }
        all
    };
    drop(sessions(&set));
    let verifier = || {
        c.psql(
            "app",
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'rr_alice'",
        )
        .unwrap()
    };
    let before = verifier();
    let o = Command::new(BIN)
        .args(["rotate-credentials", "--config"])
        .arg(&set.replicas[2].cfg)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    // Epoch 1 came from the enforcer's first start; this is the next one.
    let epoch: u32 = out(&o)
        .split("epoch ")
        .nth(1)
        .and_then(|t| t.split(';').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no epoch in {}", out(&o)));
    assert!(epoch >= 2, "{}", out(&o));
    let deadline = Instant::now() + Duration::from_secs(5);
    while verifier() == before {
        assert!(
            Instant::now() < deadline,
            "the enforcer set no new password"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(sessions(&set));
    let alerts = c
        .psql(
            "state_rr_",
            "SELECT count(*) FILTER (WHERE kind LIKE 'alert.%') || '/' \
             || count(*) FILTER (WHERE kind = 'credentials.rotated') FROM audit",
        )
        .unwrap();
    assert_eq!(
        alerts.trim(),
        format!("0/{epoch}"),
        "alerts / rotations in the audit log"
    );

    let url = c.url("app");
    // pgbench's own tables, readable by the baseline role.
    let o = Command::new("pgbench")
        .args(["-i", "-s", "1", "-q", &url])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", out(&o));
    c.psql(
        "app",
        "GRANT SELECT ON pgbench_accounts, pgbench_branches, pgbench_tellers TO app_read",
    )
    .unwrap();
    // A session in a transaction on replica 0 when it is told to stop: the
    // transaction finishes; the session ends at its boundary (57P01).
    let mut open_tx = Psql::connect(set.replicas[0].port, "alice", "alice-pw");
    open_tx.run("BEGIN; SELECT count(*) FROM orders;");

    // pgbench: a new connection per transaction, so the balancer places each.
    let lb = set.lb_port;
    let pgbench = std::thread::spawn(move || {
        Command::new("pgbench")
            .args(["-S", "-C", "-c", "4", "-j", "2", "-T", "14", "-n"])
            .args([
                "-h",
                "127.0.0.1",
                "-p",
                &lb.to_string(),
                "-U",
                "alice",
                "app",
            ])
            .env("PGPASSWORD", "alice-pw")
            .output()
            .unwrap()
    });
    // psql: one statement per connection, in a loop.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let psql_loop = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut ok, mut failed) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let o = Command::new("psql")
                    .args([
                        "-X",
                        "-At",
                        "-c",
                        "SELECT count(*) FROM orders WHERE id > 100",
                    ])
                    .arg(format!("host=127.0.0.1 port={lb} dbname=app user=alice"))
                    .env("PGPASSWORD", "alice-pw")
                    .output()
                    .unwrap();
                if o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == "900" {
                    ok += 1;
                } else {
                    failed.push(out(&o));
                }
            }
            (ok, failed)
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    for i in 0..3 {
        set.replicas[i].stop_async();
        // The balancer's health check fails first.
        let deadline = Instant::now() + Duration::from_secs(1);
        while set.replicas[i]
            .healthz()
            .is_none_or(|(code, h)| code != 503 || h["status"] != "draining")
        {
            assert!(Instant::now() < deadline, "replica {i} still healthy");
            std::thread::sleep(Duration::from_millis(20));
        }
        if i == 0 {
            // Still inside its transaction: it finishes.
            let o = open_tx.run("SELECT count(*) FROM orders; COMMIT;");
            assert!(o.contains("COMMIT"), "{o}");
            // After `drain_delay` the session ends at that boundary.
            std::thread::sleep(Duration::from_millis(1500));
            open_tx.send("SELECT 1;");
            let o = open_tx.wait_for("shutting down", Duration::from_secs(5));
            assert!(o.contains("FATAL"), "{o}");
        }
        set.replicas[i].wait_stopped();
        set.replicas[i].spawn();
        // Back in the balancer's rotation before the next one goes.
        let deadline = Instant::now() + Duration::from_secs(10);
        while set.replicas[i]
            .healthz()
            .is_none_or(|(code, _)| code != 200)
        {
            assert!(Instant::now() < deadline, "replica {i} not healthy again");
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(800));
    }
    let bench = pgbench.join().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = psql_loop.join().unwrap();
    let text = out(&bench);
    assert!(bench.status.success(), "{text}");
    assert!(!text.contains("aborted"), "{text}");
    let processed: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("number of transactions actually processed: "))
        .and_then(|n| n.split('/').next()?.trim().parse().ok())
        .unwrap_or(0);
    assert!(processed > 100, "{text}");
    assert!(text.contains("number of failed transactions: 0"), "{text}");
    assert!(
        failed.is_empty(),
        "{} psql runs failed: {failed:?}",
        failed.len()
    );
    assert!(ok > 10, "only {ok} psql runs");
    eprintln!("rolling restart: pgbench {processed} transactions, psql {ok} runs, none failed");
}
