//! What the enforcement benches share: a throwaway PostgreSQL with an `app`
//! database, and jitgate assembled as `serve` assembles it (SQLite store on
//! disk), with a lead who approves and engineers who request `app_write`.
#![allow(dead_code)]

use config::Config;
use pgcluster::{Cluster, Options};
use policy::{Clock, Policy};
use std::net::SocketAddr;
use std::sync::Arc;

pub struct Bench {
    pub cluster: Cluster,
    pub addr: SocketAddr,
    pub store: Arc<dyn store::Store>,
    pub policy: Arc<Policy>,
    pub changed: Arc<store::Changes>,
    stop: tokio::sync::oneshot::Sender<()>,
    serving: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

/// Starts it: `setup` runs in `app` after the roles `app_read` (baseline) and
/// `app_write` (managed, needed for writes on `rule_objects`) exist; `users`
/// are engineers with password `pw`; `gateway` adds `[gateway]` lines.
pub async fn start(
    setup: &str,
    rule_objects: &str,
    users: impl IntoIterator<Item = String>,
    gateway: &str,
) -> anyhow::Result<Bench> {
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(Options::default())).await??;
    cluster.psql("postgres", "CREATE DATABASE app")?;
    cluster.psql(
        "app",
        &format!(
            "CREATE ROLE app_read NOLOGIN; CREATE ROLE app_write NOLOGIN;
             GRANT USAGE ON SCHEMA public TO app_read, app_write; {setup}"
        ),
    )?;
    // On disk, as served (the system temp dir may be a RAM disk).
    let dir = tempfile::tempdir_in(".")?;
    let mut text = format!(
        "[gateway]\nlisten = \"127.0.0.1:0\"\napi_listen = \"127.0.0.1:9\"\nlogin_role_prefix = \"x_\"\n\
         shutdown_timeout = \"1s\"\n{gateway}\n\
         [[database]]\nname = \"app\"\nadmin_url = \"{}\"\nbaseline_roles = [\"app_read\"]\ntls = \"disable\"\n\
         [[group]]\nname = \"engineers\"\n[[group]]\nname = \"leads\"\n\
         [[user]]\nname = \"lead\"\npassword = \"pw\"\ngroups = [\"leads\"]\n\
         [[role]]\nname = \"app_write\"\ndatabase = \"app\"\nrequesters = [\"engineers\"]\nmax_duration = \"1h\"\n\
         chain = [{{ approvers = [\"leads\"], min = 1 }}]\n\
         [[rule]]\ndatabase = \"app\"\nactions = [\"write\"]\nobjects = [\"{rule_objects}\"]\nrole = \"app_write\"\n",
        cluster.url("app")
    );
    for u in users {
        text.push_str(&format!(
            "[[user]]\nname = \"{u}\"\npassword = \"pw\"\ngroups = [\"engineers\"]\n"
        ));
    }
    let config = Arc::new(Config::from_toml(&text)?);
    let policy = Arc::new(Policy::from_config(&config)?);
    let store = store::open(&format!("sqlite://{}", dir.path().join("s.db").display())).await?;
    let changed = Arc::new(store::Changes::default());
    let clock: Arc<dyn Clock> = Arc::new(policy::clock::SystemClock);
    let runtime = enforcer::Runtime::start(
        config.clone(),
        policy.clone(),
        store.clone(),
        clock,
        changed.clone(),
        store::Cluster::alone(),
    )
    .await?;
    let addr = runtime.gateway.local_addr();
    let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(runtime.run(async {
        let _ = stop_rx.await;
    }));
    Ok(Bench {
        cluster,
        addr,
        store,
        policy,
        changed,
        stop,
        serving,
        _dir: dir,
    })
}

impl Bench {
    /// A session of `user` through the gateway.
    pub async fn connect(&self, user: &str) -> anyhow::Result<tokio_postgres::Client> {
        let (client, conn) = tokio_postgres::connect(
            &format!(
                "host=127.0.0.1 port={} dbname=app user={user} password=pw",
                self.addr.port()
            ),
            tokio_postgres::NoTls,
        )
        .await?;
        tokio::spawn(conn);
        Ok(client)
    }

    /// `user` files a request for app_write (`secs` long, or the default),
    /// and the lead approves it; returns the grant.
    pub async fn grant(&self, user: &str, secs: Option<i64>) -> anyhow::Result<policy::Grant> {
        let now = chrono::Utc::now();
        let (r, _) = store::service::file(
            &*self.store,
            &self.policy,
            user,
            "app_write",
            "app",
            "bench",
            secs.map(chrono::Duration::seconds),
            None,
            now,
        )
        .await?;
        self.approve(r.id).await
    }

    /// The lead approves request `id` (and tells the enforcer, as the API does).
    pub async fn approve(&self, id: i64) -> anyhow::Result<policy::Grant> {
        let (_, g) = store::service::decide(
            &*self.store,
            &self.policy,
            id,
            "lead",
            true,
            "",
            chrono::Utc::now(),
        )
        .await?;
        self.changed.changed();
        g.ok_or_else(|| anyhow::anyhow!("request {id} was not approved"))
    }

    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.serving.await;
    }
}

pub fn percentile(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}
