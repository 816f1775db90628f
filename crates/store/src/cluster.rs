//! Replicas sharing a PostgreSQL state store: who is here, who enforces, and
//! hearing of each other's changes.
//!
//! Each replica keeps one connection of its own to the store (apart from the
//! pool), and over it:
//! - `LISTEN jitgate`: a request, grant or credential change committed by any
//!   replica wakes this one's enforcer at once ([`Changes`]); after a
//!   reconnect it wakes too, for whatever it missed. The enforcer still reads
//!   the store every second, so a lost notification costs at most that.
//! - leadership: the replica holding the session-level advisory lock
//!   [`LEADER_LOCK`] is the enforcer (GRANT, REVOKE, reconcile, webhooks,
//!   checkpoints). The lock goes with the connection: a replica killed with
//!   -9 loses it when the kernel closes its socket, and another one takes it
//!   within a second; a replica that loses its connection stops leading at
//!   once.
//! - the replica table: each replica has a small index (1..=255, encoded in
//!   the cancel keys it hands out) and the address other replicas forward
//!   cancel requests to, refreshed every second.
//!
//! With SQLite there is one process: [`Cluster::alone`] leads, has index 0,
//! and has no peers.
//!
//! Not done here: fencing. A leader cut off from the store but not from the
//! databases stops at its next heartbeat (a second); a REVOKE or GRANT it
//! started meanwhile still completes.

use crate::changes::Changes;
use crate::postgres::{Target, CHANNEL};
use crate::StoreError;
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio_postgres::AsyncMessage;

/// The advisory lock the enforcing replica holds ("jitlead").
pub const LEADER_LOCK: i64 = 0x006a_6974_6c65_6164;

/// A replica not seen for this long gives up its index.
const STALE_AFTER_SECS: i64 = 60;

const HEARTBEAT: Duration = Duration::from_secs(1);

pub struct Cluster {
    index: u8,
    address: String,
    leader: watch::Sender<bool>,
    reachable: watch::Sender<bool>,
    peers: RwLock<HashMap<u8, String>>,
}

const REPLICAS_TABLE: &str = "
CREATE TABLE IF NOT EXISTS replicas (
    idx INT PRIMARY KEY,
    address TEXT NOT NULL,
    seen_at TIMESTAMPTZ NOT NULL
);";

impl Cluster {
    /// One process, one store (SQLite): always the enforcer.
    pub fn alone() -> Arc<Cluster> {
        Arc::new(Cluster {
            index: 0,
            address: String::new(),
            leader: watch::Sender::new(true),
            reachable: watch::Sender::new(true),
            peers: RwLock::new(HashMap::new()),
        })
    }

    /// Joins the replicas of the store at `url`: takes an index, then keeps
    /// the connection (and reconnects, with backoff) in a task of its own.
    /// `address` is where the others reach this replica's listener.
    pub async fn join(
        url: &str,
        address: &str,
        changes: Arc<Changes>,
    ) -> Result<Arc<Cluster>, StoreError> {
        let target = Target::from_url(url)?;
        let (mut client, connection) = target.config.connect(target.tls.clone()).await?;
        let driver = tokio::spawn(connection);
        client.batch_execute(REPLICAS_TABLE).await?;
        let tx = client.transaction().await?;
        tx.batch_execute("LOCK TABLE replicas IN EXCLUSIVE MODE")
            .await?;
        let taken: Vec<i32> = tx
            .query(
                "SELECT idx FROM replicas WHERE seen_at > now() - make_interval(secs => $1)",
                &[&(STALE_AFTER_SECS as f64)],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let Some(index) = (1..=255u8).find(|i| !taken.contains(&i32::from(*i))) else {
            return Err(StoreError::Backend(
                "255 replicas are registered in the state store; no index is free".into(),
            ));
        };
        upsert(&tx, index, address).await?;
        tx.commit().await?;
        drop(client);
        let _ = driver.await;
        let cluster = Arc::new(Cluster {
            index,
            address: address.to_string(),
            leader: watch::Sender::new(false),
            reachable: watch::Sender::new(true),
            peers: RwLock::new(HashMap::new()),
        });
        tracing::info!(replica = index, %address, "joined the replicas of the state store");
        tokio::spawn(cluster.clone().keep(target, changes));
        Ok(cluster)
    }

    /// 0 when alone; else this replica's index among those of the store.
    pub fn index(&self) -> u8 {
        self.index
    }

    /// A name for logs, health and metrics: `replica-<index>`.
    pub fn name(&self) -> String {
        format!("replica-{}", self.index)
    }

    pub fn is_leader(&self) -> bool {
        *self.leader.borrow()
    }

    /// Changes whenever this replica starts or stops being the enforcer.
    pub fn leadership(&self) -> watch::Receiver<bool> {
        self.leader.subscribe()
    }

    /// Whether this replica's own connection to the store is up.
    pub fn store_reachable(&self) -> bool {
        *self.reachable.borrow()
    }

    /// Where replica `index` listens, if it was seen lately.
    pub fn peer(&self, index: u8) -> Option<String> {
        self.peers.read().unwrap().get(&index).cloned()
    }

    /// Reconnects forever, with backoff from 100 ms to 5 s.
    async fn keep(self: Arc<Self>, target: Target, changes: Arc<Changes>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            match self.session(&target, &changes).await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(error = %e, "state store connection of the replica failed")
                }
            }
            let was_leader = self.leader.send_replace(false);
            self.reachable.send_replace(false);
            if was_leader {
                tracing::warn!(
                    replica = self.index,
                    "no longer the enforcer: lost the state store"
                );
            }
            changes.changed();
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// One connection's life: LISTEN, then a heartbeat a second until it ends.
    async fn session(&self, target: &Target, changes: &Arc<Changes>) -> Result<(), StoreError> {
        let (client, mut connection) = target.config.connect(target.tls.clone()).await?;
        let (closed_tx, mut closed) = tokio::sync::oneshot::channel::<()>();
        let heard = changes.clone();
        tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            while let Some(m) = messages.next().await {
                match m {
                    Ok(AsyncMessage::Notification(_)) => heard.changed(),
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "state store connection ended");
                        break;
                    }
                }
            }
            let _ = closed_tx.send(());
        });
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        self.reachable.send_replace(true);
        // Whatever was announced while we were away.
        changes.changed();
        let mut tick = tokio::time::interval(HEARTBEAT);
        loop {
            tokio::select! {
                _ = &mut closed => return Ok(()),
                _ = tick.tick() => {}
            }
            if !self.is_leader() {
                let won: bool = client
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&LEADER_LOCK])
                    .await?
                    .get(0);
                if won {
                    tracing::info!(replica = self.index, "this replica is now the enforcer");
                    self.leader.send_replace(true);
                    changes.changed();
                }
            }
            upsert(&client, self.index, &self.address).await?;
            let rows = client
                .query(
                    "SELECT idx, address FROM replicas WHERE seen_at > now() - make_interval(secs => $1)",
                    &[&(STALE_AFTER_SECS as f64)],
                )
                .await?;
            *self.peers.write().unwrap() = rows
                .iter()
                .filter_map(|r| Some((u8::try_from(r.get::<_, i32>(0)).ok()?, r.get(1))))
                .collect();
        }
    }
}

async fn upsert(
    client: &impl tokio_postgres::GenericClient,
    index: u8,
    address: &str,
) -> Result<(), StoreError> {
    client
        .execute(
            "INSERT INTO replicas (idx, address, seen_at) VALUES ($1, $2, now()) \
             ON CONFLICT (idx) DO UPDATE SET address = excluded.address, seen_at = now()",
            &[&i32::from(index), &address],
        )
        .await?;
    Ok(())
}
