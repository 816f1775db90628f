//! Assembly: the gateway with the policy hook, the enforcer and the audit
//! writer, ready to serve. `jitgate serve` and the tests start jitgate this
//! one way.

use crate::{AuditSink, Enforcer, GrantTable, HookState, PolicyHook};
use config::Config;
use policy::{Clock, Policy};
use std::sync::Arc;
use store::Store;

pub struct Runtime {
    pub gateway: proxy::Gateway,
    pub enforcer: Enforcer,
    pub hook: Arc<HookState>,
    pub audit: AuditSink,
    pub cluster: Arc<store::Cluster>,
    audit_writer: tokio::task::JoinHandle<()>,
    checkpointer: Option<crate::checkpoints::Checkpointer>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Gateway(#[from] proxy::GatewayError),
    #[error("preparing the databases (is admin_url reachable, with CREATEROLE?): {0}")]
    Prepare(#[from] crate::EnforceError),
    #[error(transparent)]
    AuditKey(#[from] store::checkpoint::KeyError),
}

impl Runtime {
    /// Binds the listener and prepares every database (built-in functions,
    /// active grants applied, drift revoked) before anything is served.
    pub async fn start(
        config: Arc<Config>,
        policy: Arc<Policy>,
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        changed: Arc<store::Changes>,
        cluster: Arc<store::Cluster>,
    ) -> Result<Runtime, StartError> {
        let key = match &config.gateway.audit_key_file {
            Some(path) => Some(store::checkpoint::load_key(path)?),
            None => None,
        };
        let g = &config.gateway;
        let refusals = (g.refusal_alert > 0).then(|| crate::audit::RefusalAlert {
            threshold: g.refusal_alert as i64,
            window: chrono::Duration::from_std(g.refusal_alert_window)
                .unwrap_or(chrono::Duration::minutes(1)),
        });
        let (audit, writer) = AuditSink::new(store.clone(), refusals);
        let audit_writer = tokio::spawn(writer);
        let checkpointer = key.map(|key| crate::checkpoints::Checkpointer {
            key,
            store: store.clone(),
            audit: audit.clone(),
            clock: clock.clone(),
            every: config.gateway.audit_checkpoint_interval,
            leadership: cluster.leadership(),
        });
        let hook = Arc::new(HookState::new(
            config.clone(),
            policy,
            store,
            clock,
            Arc::new(GrantTable::default()),
            audit.clone(),
            changed,
        ));
        let gateway = proxy::Gateway::bind_observed(
            config,
            Arc::new(PolicyHook {
                state: hook.clone(),
            }),
            Arc::new(crate::logins::LoginEvents(hook.clone())),
        )
        .await?;
        let _ = hook.gateway.set(Arc::downgrade(gateway.shared()));
        let shared = gateway.shared();
        if !hook.config.identity_providers.is_empty() {
            let _ = shared
                .secrets
                .set(Arc::new(crate::logins::StoreSecrets(hook.clone())));
        }
        shared
            .login_roles
            .credentials
            .set_source(Arc::new(StoreEpoch(hook.store.clone())));
        if cluster.index() != 0 {
            shared
                .cancels
                .set_peers(Arc::new(ClusterPeers(cluster.clone())));
        }
        let mut enforcer = Enforcer::new(hook.clone(), shared.clone(), cluster.clone());
        enforcer.prepare().await?;
        Ok(Runtime {
            gateway,
            enforcer,
            hook,
            audit,
            cluster,
            audit_writer,
            checkpointer,
        })
    }

    /// Serves until `stop`; then drains the audit queue.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        let stopping = tokio_util::sync::CancellationToken::new();
        let enforcer_stop = stopping.clone();
        let enforcing = tokio::spawn(
            self.enforcer
                .run(async move { enforcer_stop.cancelled().await }),
        );
        let checkpointing = self.checkpointer.map(|c| {
            let stop = stopping.clone();
            tokio::spawn(c.run(async move { stop.cancelled().await }))
        });
        self.gateway.run(stop).await;
        stopping.cancel();
        let _ = enforcing.await;
        if let Some(c) = checkpointing {
            let _ = c.await;
        }
        self.audit.flush().await;
        self.audit_writer.abort();
    }
}

/// The login-role password epoch, read from the state store.
struct StoreEpoch(Arc<dyn Store>);

impl proxy::login_role::EpochSource for StoreEpoch {
    fn current(
        &self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<i64, String>> + Send + '_>> {
        Box::pin(async move {
            self.0
                .credentials()
                .await
                .map(|e| e.number)
                .map_err(|e| e.to_string())
        })
    }
}

/// The other replicas, for cancel requests.
struct ClusterPeers(Arc<store::Cluster>);

impl proxy::cancel::Peers for ClusterPeers {
    fn index(&self) -> u8 {
        self.0.index()
    }
    fn address(&self, index: u8) -> Option<String> {
        self.0.peer(index)
    }
}
