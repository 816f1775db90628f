//! Shared test harness: the per-binary PostgreSQL cluster and an in-process
//! gateway (the raw protocol client is `testkit::raw`).
#![allow(dead_code)]

use config::Config;
use pgcluster::Cluster;
use proxy::{Check, Gateway, Session, Statement, StatementHook, Verdict};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio_postgres::{Client, NoTls};
use wire::backend::ErrorFields;

pub const ALICE_PW: &str = "alice-secret";
pub const BOB_PW: &str = "bob-secret";

/// The cluster of this test binary, with the `app` database set up once.
pub fn cluster() -> &'static Cluster {
    static READY: OnceLock<()> = OnceLock::new();
    let c = Cluster::shared();
    READY.get_or_init(|| setup_app(c));
    c
}

/// Creates the `app` database: tables, and the baseline role `app_read`.
pub fn setup_app(c: &Cluster) {
    c.psql("postgres", "CREATE DATABASE app").unwrap();
    c.psql(
        "app",
        "CREATE ROLE app_read NOLOGIN;
             CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);
             INSERT INTO items SELECT i, 'item ' || i FROM generate_series(1, 100) i;
             CREATE TABLE scratch (id int, body text);
             CREATE TABLE forbidden_table (id int);
             GRANT USAGE ON SCHEMA public TO app_read;
             GRANT SELECT ON items, forbidden_table TO app_read;
             GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON scratch TO app_read;",
    )
    .unwrap();
}

/// A config for a gateway on a random port. Each gateway gets its own login
/// role prefix: gateways re-set login-role passwords, and tests run in parallel.
pub fn config_text(extra_gateway: &str, extra: &str) -> String {
    config_for(&cluster().url("app"), extra_gateway, extra)
}

/// Like `config_text`, for a database at `url`.
pub fn config_for(url: &str, extra_gateway: &str, extra: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let prefix = format!("t{}_{}_", std::process::id() % 10000, n);
    format!(
        r#"[gateway]
listen = "127.0.0.1:0"
login_role_prefix = "{prefix}"
{extra_gateway}

[[database]]
name = "app"
admin_url = "{url}"
baseline_roles = ["app_read"]
tls = "disable"

[[group]]
name = "engineers"

[[user]]
name = "alice"
password = "{ALICE_PW}"
groups = ["engineers"]

[[user]]
name = "bob"
password = "{BOB_PW}"
{extra}
"#
    )
}

pub struct TestGateway {
    pub addr: SocketAddr,
    pub prefix: String,
    pub shared: Arc<proxy::Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl TestGateway {
    pub async fn start() -> TestGateway {
        Self::start_with(&config_text("", ""), Arc::new(proxy::AllowAll)).await
    }

    pub async fn start_with(text: &str, hook: Arc<dyn StatementHook>) -> TestGateway {
        init_tracing();
        let config = Arc::new(Config::from_toml(text).expect("test config"));
        let prefix = config.gateway.login_role_prefix.clone();
        let gateway = Gateway::bind(config, hook).await.expect("bind gateway");
        let addr = gateway.local_addr();
        let shared = gateway.shared().clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let done = tokio::spawn(gateway.run(async {
            let _ = rx.await;
        }));
        TestGateway {
            addr,
            prefix,
            shared,
            stop: Some(tx),
            done: Some(done),
        }
    }

    pub fn login_role(&self, user: &str) -> String {
        format!("{}{user}", self.prefix)
    }

    pub fn conn_string(&self, user: &str, password: &str) -> String {
        format!(
            "host={} port={} dbname=app user={user} password={password}",
            self.addr.ip(),
            self.addr.port()
        )
    }

    pub async fn connect(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        let (client, conn) =
            tokio_postgres::connect(&self.conn_string(user, password), NoTls).await?;
        tokio::spawn(conn);
        Ok(client)
    }

    pub async fn alice(&self) -> Client {
        self.connect("alice", ALICE_PW)
            .await
            .expect("alice connects")
    }

    /// Stops accepting and waits for the gateway's shutdown to complete.
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

/// The SQLSTATE of a driver error (panics if it is not a server error).
pub fn sqlstate(e: &tokio_postgres::Error) -> String {
    e.as_db_error()
        .unwrap_or_else(|| panic!("expected a server error, got {e}"))
        .code()
        .code()
        .to_string()
}

/// A statement hook for tests: refuses any statement that mentions `forbidden`,
/// and FunctionCalls of one function. Statements mentioning `slow_` are decided
/// after 100 ms (`slow_no` refused, others allowed), like a held statement.
pub struct RefuseForbidden {
    pub refused_function: u32,
}

impl StatementHook for RefuseForbidden {
    fn check(&self, _: &Arc<Session>, statement: Statement<'_>) -> Check {
        if let Some(text) = statement.text().filter(|t| t.contains("slow_")) {
            let refuse = text.contains("slow_no");
            return Check::Wait(Box::pin(async move {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                if refuse {
                    Verdict::Refuse(ErrorFields::error(
                        "42501",
                        "refused later by the test policy",
                    ))
                } else {
                    Verdict::Allow
                }
            }));
        }
        let refuse = match statement {
            Statement::Simple(s) | Statement::Parse(s) => s.to_lowercase().contains("forbidden"),
            Statement::FunctionCall(oid, _) => oid == self.refused_function,
            Statement::Bind { .. } => false,
        };
        if refuse {
            Check::Refuse(
                ErrorFields::error("42501", "refused by the test policy")
                    .with_hint("do not do that"),
            )
        } else {
            Check::Allow
        }
    }
}
