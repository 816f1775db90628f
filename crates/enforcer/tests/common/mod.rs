//! Harness: the per-binary PostgreSQL cluster with the `app` schema, and
//! jitgate assembled as `jitgate serve` assembles it (gateway, policy hook,
//! enforcer, SQLite store) — minus the HTTP API: tests decide requests through
//! `store::service`, exactly what the API calls.
#![allow(dead_code)]

pub mod flaky;

use config::Config;
use enforcer::Runtime;
use pgcluster::Cluster;
use policy::{Clock, Policy};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use store::Store;
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

pub use testkit::config::password;

pub fn cluster() -> &'static Cluster {
    static READY: OnceLock<()> = OnceLock::new();
    let c = Cluster::shared();
    READY.get_or_init(|| {
        c.psql("postgres", "CREATE DATABASE app").unwrap();
        c.psql(
            "app",
            "CREATE ROLE app_read NOLOGIN;
             CREATE ROLE app_write NOLOGIN;
             CREATE TABLE orders (id int PRIMARY KEY, total int NOT NULL);
             INSERT INTO orders SELECT i, i FROM generate_series(1, 1000) i;
             CREATE TABLE payments (id int PRIMARY KEY, amount int NOT NULL);
             INSERT INTO payments SELECT i, i FROM generate_series(1, 100) i;
             CREATE TABLE audit_trail (id int);
             CREATE TABLE secrets (id int, note text);
             INSERT INTO secrets VALUES (1, 'the launch code');
             GRANT USAGE ON SCHEMA public TO app_read, app_write;
             GRANT SELECT ON ALL TABLES IN SCHEMA public TO app_read;
             REVOKE SELECT ON secrets FROM app_read;
             GRANT SELECT ON secrets TO app_write;
             GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app_write;
             CREATE FUNCTION as_writer() RETURNS text LANGUAGE sql SET role = app_write
                 AS $$ SELECT current_user::text $$;
             CREATE FUNCTION bump(i int) RETURNS int LANGUAGE sql AS $$ SELECT i + 1 $$;",
        )
        .unwrap();
    });
    c
}

/// Makes the server log every statement it receives (`log_statement = all`),
/// so a test can check that a refused statement never reached it; returns
/// once a new session sees the setting.
pub fn log_every_statement() {
    let c = cluster();
    c.psql("app", "ALTER SYSTEM SET log_statement = 'all'")
        .unwrap();
    c.psql("app", "SELECT pg_reload_conf()").unwrap();
    // The reload is asynchronous: wait until a new session sees it.
    for _ in 0..100 {
        if c.psql("app", "SHOW log_statement").unwrap().contains("all") {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    panic!("log_statement did not take effect");
}

/// Whether the server ever received a statement containing `marker` (after
/// [`log_every_statement`]).
pub fn server_saw(marker: &str) -> bool {
    cluster().log().contains(marker)
}

/// The shared test configuration (`testkit::config::App`) with carol an
/// engineer too: role app_write approved by one lead, writes on public needing
/// it, payments needing approval of each statement, audit_trail denied.
pub fn config_text(extra_gateway: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let prefix = format!("e{}_{}_", std::process::id() % 10000, n);
    testkit::config::App::new(&cluster().url("app"))
        .gateway("listen = \"127.0.0.1:0\"")
        .gateway("api_listen = \"127.0.0.1:9\"")
        .gateway(format!("login_role_prefix = \"{prefix}\""))
        .gateway("shutdown_timeout = \"1s\"")
        .gateway(extra_gateway)
        .person("carol", &["engineers"])
        .extra(
            r#"[[rule]]
database = "app"
actions = ["write"]
objects = ["payments"]
role = "app_write"
approve_each = true

[[rule]]
database = "app"
actions = ["write"]
objects = ["audit_trail"]
role = "deny"

[[rule]]
database = "app"
actions = ["read"]
objects = ["secrets"]
role = "app_write"

[[rule]]
database = "app"
actions = ["call"]
objects = ["public.as_writer"]
role = "app_write"
"#,
        )
        .toml()
}

/// [`config_text`] without any `[[rule]]`: the database decides everything.
pub fn config_without_rules(extra_gateway: &str) -> String {
    let text = config_text(extra_gateway);
    let cut = text.find("[[rule]]").expect("the test config has rules");
    text[..cut].to_string()
}

pub struct Jitgate {
    pub addr: SocketAddr,
    pub prefix: String,
    pub config: Arc<Config>,
    pub policy: Arc<Policy>,
    pub store: Arc<dyn Store>,
    pub changed: Arc<store::Changes>,
    pub shared: Arc<proxy::Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

impl Jitgate {
    pub async fn start(extra_gateway: &str) -> Jitgate {
        Self::start_text(&config_text(extra_gateway), None).await
    }

    /// Starts on `text`, with the store at `dir` (a fresh one if `None`).
    pub async fn start_text(text: &str, dir: Option<tempfile::TempDir>) -> Jitgate {
        let dir = dir.unwrap_or_else(|| tempfile::tempdir().unwrap());
        let url = format!("sqlite://{}", dir.path().join("state.db").display());
        let store = store::open(&url).await.expect("store");
        Self::start_on(text, store, dir).await
    }

    /// Starts on `text` with `store` (kept in `dir`).
    pub async fn start_on(text: &str, store: Arc<dyn Store>, dir: tempfile::TempDir) -> Jitgate {
        init_tracing();
        let config = Arc::new(Config::from_toml(text).expect("test config"));
        let policy = Arc::new(Policy::from_config(&config).expect("policy"));
        let changed = Arc::new(store::Changes::default());
        let clock: Arc<dyn Clock> = Arc::new(policy::clock::SystemClock);
        let runtime = Runtime::start(
            config.clone(),
            policy.clone(),
            store.clone(),
            clock,
            changed.clone(),
            store::Cluster::alone(),
        )
        .await
        .expect("jitgate starts");
        let addr = runtime.gateway.local_addr();
        let shared = runtime.gateway.shared().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(runtime.run(async {
            let _ = rx.await;
        }));
        Jitgate {
            addr,
            prefix: config.gateway.login_role_prefix.clone(),
            config,
            policy,
            store,
            changed,
            shared,
            stop: Some(tx),
            done: Some(done),
            _dir: dir,
        }
    }

    pub fn login_role(&self, user: &str) -> String {
        format!("{}{user}", self.prefix)
    }

    /// A session of `user`, and the notices the gateway sends it.
    pub async fn connect(&self, user: &str) -> (Client, mpsc::UnboundedReceiver<String>) {
        let (client, mut conn) = tokio_postgres::connect(
            &format!(
                "host={} port={} dbname=app user={user} password={}",
                self.addr.ip(),
                self.addr.port(),
                password(user)
            ),
            NoTls,
        )
        .await
        .expect("connects");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut stream = futures_util::stream::poll_fn(move |cx| conn.poll_message(cx));
            use futures_util::StreamExt;
            while let Some(Ok(msg)) = stream.next().await {
                if let AsyncMessage::Notice(n) = msg {
                    let _ = tx.send(n.message().to_string());
                }
            }
        });
        (client, rx)
    }

    /// Files a request for app_write as `user` (as the CLI would).
    pub async fn request(&self, user: &str, duration: chrono::Duration) -> i64 {
        let (r, _) = store::service::file(
            &*self.store,
            &self.policy,
            user,
            "app_write",
            "app",
            "test",
            Some(duration),
            None,
            chrono::Utc::now(),
        )
        .await
        .expect("files");
        r.id
    }

    /// `approver` approves request `id` (as the API would), and tells the enforcer.
    pub async fn approve(&self, id: i64, approver: &str) -> policy::Grant {
        let (_, grant) = store::service::decide(
            &*self.store,
            &self.policy,
            id,
            approver,
            true,
            "ok",
            chrono::Utc::now(),
        )
        .await
        .expect("decides");
        self.changed.changed();
        grant.expect("approved")
    }

    pub async fn deny(&self, id: i64, approver: &str) {
        store::service::decide(
            &*self.store,
            &self.policy,
            id,
            approver,
            false,
            "no",
            chrono::Utc::now(),
        )
        .await
        .expect("decides");
        self.changed.changed();
    }

    pub async fn revoke(&self, grant: i64) {
        store::service::end_grant(
            &*self.store,
            grant,
            policy::GrantEnd::Revoked,
            "bob",
            "test",
            chrono::Utc::now(),
        )
        .await
        .expect("revokes");
        self.changed.changed();
    }

    pub async fn pending(&self) -> Vec<policy::Request> {
        self.store
            .requests(&store::RequestFilter {
                user: None,
                state: Some("pending".into()),
            })
            .await
            .unwrap()
    }

    /// Whether the login role of `user` is a member of app_write in the database.
    pub fn member(&self, user: &str) -> bool {
        cluster()
            .psql(
                "app",
                &format!(
                    "SELECT count(*) FROM pg_auth_members am JOIN pg_roles r ON r.oid = am.roleid \
                     JOIN pg_roles m ON m.oid = am.member WHERE r.rolname = 'app_write' \
                     AND m.rolname = '{}'",
                    self.login_role(user)
                ),
            )
            .unwrap()
            .trim()
            == "1"
    }

    /// Waits (up to `limit`) until `f` holds.
    pub async fn until(&self, limit: Duration, mut f: impl FnMut() -> bool) -> bool {
        let end = tokio::time::Instant::now() + limit;
        while tokio::time::Instant::now() < end {
            if f() {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        f()
    }

    pub async fn audit_kinds(&self) -> Vec<(String, String, serde_json::Value)> {
        self.store
            .audit_all()
            .await
            .unwrap()
            .into_iter()
            .map(|r| {
                (
                    r.event.kind,
                    r.event.severity.as_str().to_string(),
                    r.event.detail,
                )
            })
            .collect()
    }

    pub async fn stop(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.done.take().unwrap().await.unwrap();
    }
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("JITGATE_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .unwrap_or_else(|| panic!("expected a server error, got {e}"))
        .code()
        .code()
        .to_string()
}

pub fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .unwrap_or_else(|| panic!("expected a server error, got {e}"))
        .message()
        .to_string()
}
