//! The jitgate gateway: a PostgreSQL-protocol listener that authenticates users
//! itself and talks to the database as each user's own login role.
//!
//! A connection's path through the code:
//!
//! 1. [`startup`] — SSLRequest (rustls), GSSENCRequest ('N'), CancelRequest, the
//!    startup packet; identity-changing parameters are refused here.
//! 2. [`auth`] + [`scram`] — SCRAM-SHA-256 against the configured users.
//! 3. [`login_role`] — the user's `jit_<user>` role exists, with its baseline roles.
//! 4. [`pool`] / [`upstream`] — a pooled or new connection as that role (TLS per
//!    `sslmode`, any server auth method).
//! 5. [`relay`] — bytes both ways; every statement passes the [`hook`].
//! 6. [`cancel`] — cancel requests mapped from the gateway's key to the server's.
//!
//! [`session`] strings these together; [`Gateway`] owns the listener and shutdown.
//!
//! Invariants:
//! - The relay never decides: whether a statement runs is the hook's answer.
//! - Results are never re-encoded: server bytes reach the client as they came,
//!   apart from an error the hook asked for.
//! - A malformed, oversized or stalled client ends its own session only.
//! - No secret (passwords, SCRAM keys, cancel secrets) is ever logged.
#![forbid(unsafe_code)]

pub mod auth;
pub mod cancel;
pub mod events;
pub mod hook;
pub mod login_role;
pub mod pool;
pub mod relay;
pub mod rerun;
pub mod scram;
pub mod session;
pub mod sessions;
pub mod split;
pub mod startup;
pub mod stream;
pub use pgtls as tls;
pub mod upstream;

pub use hook::{
    AllowAll, Bound, Check, Denied, Explained, Statement, StatementHook, Verdict, VerdictFuture,
};
pub use sessions::{Notes, Session, Sessions};

use cancel::CancelRegistry;
use config::Config;
use login_role::{Admin, LoginRoles};
use pool::Pool;
use relay::Limits;
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use upstream::Target;

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cluster secret: {0}")]
    Secret(config::ConfigError),
    #[error("TLS setup for {what}: {source}")]
    Tls {
        what: String,
        source: tls::TlsSetupError,
    },
}

/// One configured database at run time.
pub struct DatabaseRuntime {
    pub target: Target,
    pub admin: Admin,
}

impl DatabaseRuntime {
    pub fn target_addr(&self) -> (String, u16) {
        (self.target.host.clone(), self.target.port)
    }
}

/// Everything sessions share.
pub struct Shared {
    pub config: Arc<Config>,
    pub tls: Option<TlsAcceptor>,
    pub databases: HashMap<String, DatabaseRuntime>,
    pub login_roles: LoginRoles,
    pub pool: Pool,
    pub cancels: Arc<CancelRegistry>,
    /// Live sessions, for the enforcer (notices, cancels, poisoning).
    pub sessions: Arc<Sessions>,
    pub hook: Arc<dyn StatementHook>,
    pub limits: Limits,
    /// Random per process: decoy SCRAM salts for unknown users.
    pub scram_secret: [u8; 32],
    pub next_session: AtomicU64,
    /// Cancelled when shutdown's grace time is over: sessions close.
    pub closing: CancellationToken,
    /// Cancelled when shutdown starts: sessions close at their next
    /// transaction boundary.
    pub draining: CancellationToken,
    /// Told of failed logins and refused login-role passwords.
    pub observer: Arc<dyn events::Observer>,
    /// Failed logins per user name and per peer address.
    pub logins: Logins,
    /// Connection secrets of people from an identity provider (set by the
    /// enforcer; without it only `[[user]]`s log in).
    pub secrets: std::sync::OnceLock<Arc<dyn auth::Secrets>>,
}

/// Wire-login throttling: per user name, and per peer address (several
/// people behind one address fail more often, so its limit is higher).
pub struct Logins {
    pub by_user: policy::throttle::Attempts,
    pub by_peer: policy::throttle::Attempts,
}

impl Default for Logins {
    fn default() -> Self {
        let minute = chrono::Duration::minutes(1);
        Logins {
            by_user: policy::throttle::Attempts::new(10, minute),
            by_peer: policy::throttle::Attempts::new(30, minute),
        }
    }
}

pub struct Gateway {
    shared: Arc<Shared>,
    listener: TcpListener,
}

impl Gateway {
    /// Prepares TLS and databases and binds the listener (nothing is served yet).
    pub async fn bind(
        config: Arc<Config>,
        hook: Arc<dyn StatementHook>,
    ) -> Result<Gateway, GatewayError> {
        Self::bind_observed(config, hook, Arc::new(events::Unobserved)).await
    }

    /// [`Gateway::bind`], reporting logins to `observer`.
    pub async fn bind_observed(
        config: Arc<Config>,
        hook: Arc<dyn StatementHook>,
        observer: Arc<dyn events::Observer>,
    ) -> Result<Gateway, GatewayError> {
        let g = &config.gateway;
        let tls = match (&g.tls_cert, &g.tls_key) {
            (Some(cert), Some(key)) => Some(TlsAcceptor::from(
                tls::server_config(cert, key).map_err(|source| GatewayError::Tls {
                    what: "the listener".into(),
                    source,
                })?,
            )),
            _ => None,
        };
        let mut databases = HashMap::new();
        for db in &config.databases {
            let tls_err = |source| GatewayError::Tls {
                what: format!("database {}", db.name),
                source,
            };
            let (host, port) = db.upstream_addr();
            let client_tls =
                tls::client_config(db.tls, db.tls_ca_file.as_deref()).map_err(tls_err)?;
            let server_name = match client_tls {
                Some(_) => Some(tls::server_name(&host).map_err(tls_err)?),
                None => None,
            };
            let target = Target {
                host,
                port,
                dbname: db.upstream_dbname().to_string(),
                tls_mode: db.tls,
                tls: client_tls,
                server_name,
            };
            let admin = Admin::new(
                target.clone(),
                db.admin().clone(),
                db.baseline_roles.clone(),
            );
            databases.insert(db.name.clone(), DatabaseRuntime { target, admin });
        }
        let secret = config.cluster_secret().map_err(GatewayError::Secret)?;
        let credentials = Arc::new(login_role::Credentials::new(secret));
        let listener =
            TcpListener::bind(&g.listen)
                .await
                .map_err(|source| GatewayError::Listen {
                    addr: g.listen.clone(),
                    source,
                })?;
        let shared = Arc::new(Shared {
            tls,
            databases,
            login_roles: LoginRoles::new(&g.login_role_prefix, credentials),
            pool: Pool::new(g.pool_max_idle, g.pool_idle_timeout),
            cancels: Arc::new(CancelRegistry::default()),
            sessions: Arc::new(Sessions::default()),
            hook,
            limits: Limits {
                max_query_bytes: g.max_query_bytes,
                max_message_bytes: g.max_message_bytes,
                message_timeout: g.message_timeout,
            },
            scram_secret: rand::random(),
            next_session: AtomicU64::new(1),
            closing: CancellationToken::new(),
            draining: CancellationToken::new(),
            observer,
            logins: Logins::default(),
            secrets: std::sync::OnceLock::new(),
            config: config.clone(),
        });
        Ok(Gateway { shared, listener })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("bound listener has an address")
    }

    pub fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Serves until `stop` completes; then stops accepting, closes each
    /// session at its next transaction boundary, gives those in a transaction
    /// `shutdown_timeout` to finish, and closes the rest with a FATAL.
    pub async fn run(self, stop: impl Future<Output = ()>) {
        let tracker = TaskTracker::new();
        let reaper = {
            let shared = self.shared.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    shared.pool.reap().await;
                }
            })
        };
        tokio::pin!(stop);
        loop {
            tokio::select! {
                accepted = self.listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        tracker.spawn(session::serve(tcp, peer, self.shared.clone()));
                    }
                    Err(e) => {
                        // Out of file descriptors and the like: back off, keep serving.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = &mut stop => break,
            }
        }
        drop(self.listener);
        self.shared.draining.cancel();
        tracker.close();
        let open = tracker.len();
        tracing::info!(
            open_sessions = open,
            "stopped accepting; waiting for sessions"
        );
        let grace = self.shared.config.gateway.shutdown_timeout;
        if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
            tracing::info!(
                open_sessions = tracker.len(),
                "grace time over; closing sessions"
            );
            self.shared.closing.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(5), tracker.wait()).await;
        }
        reaper.abort();
        self.shared.pool.clear();
    }
}
