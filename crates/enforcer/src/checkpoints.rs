//! Signed checkpoints of the audit chain (see `store::checkpoint`): every
//! `audit_checkpoint_interval`, the head of the chain is signed with the key
//! in `audit_key_file` and delivered as an `audit.checkpoint` event (so
//! webhooks carry it away from the store) and to the gateway's log.
//!
//! A checkpoint covers what was queued before it: the audit sink is flushed
//! first. Nothing new since the last checkpoint: no new one.

use crate::audit::AuditSink;
use ed25519_dalek::SigningKey;
use policy::Clock;
use std::sync::Arc;
use std::time::Duration;
use store::Kind;
use store::{AuditEvent, Store};

pub struct Checkpointer {
    pub key: SigningKey,
    pub store: Arc<dyn Store>,
    pub audit: AuditSink,
    pub clock: Arc<dyn Clock>,
    pub every: Duration,
    /// Only the enforcing replica signs checkpoints.
    pub leadership: tokio::sync::watch::Receiver<bool>,
}

impl Checkpointer {
    /// Runs until `stop`; makes one last checkpoint on the way out.
    pub async fn run(self, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut last = None;
        loop {
            tokio::select! {
                _ = &mut stop => {
                    self.once(&mut last).await;
                    return;
                }
                _ = tokio::time::sleep(self.every) => self.once(&mut last).await,
            }
        }
    }

    /// Signs the head unless it is the previous checkpoint's own event (or
    /// another replica is the enforcer).
    /// `last`: the sequence number of that event.
    pub async fn once(&self, last: &mut Option<i64>) {
        if !*self.leadership.borrow() {
            return;
        }
        self.audit.flush().await;
        let (seq, hash) = match self.store.audit_head().await {
            Ok(h) => h,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the audit head for a checkpoint");
                return;
            }
        };
        if seq == 0 || Some(seq) == *last {
            return;
        }
        let cp = store::checkpoint::sign(&self.key, seq, &hash, self.clock.now());
        let detail = serde_json::to_value(&cp).expect("a checkpoint is JSON");
        tracing::info!(checkpoint = %detail, "audit checkpoint");
        self.audit.send(AuditEvent::new(
            cp.at,
            Kind::AuditCheckpoint,
            "jitgate",
            format!("audit:{seq}"),
            detail,
        ));
        self.audit.flush().await;
        *last = Some(seq + 1);
    }
}
