//! Statement audit: every statement run under a grant and every refused
//! attempt, written to the store's hash-chained log by one writer task.
//!
//! Sessions never wait for the store here: events go into an unbounded queue
//! and the writer appends them in batches (one transaction per batch), so a
//! busy gateway costs one fsync per batch, not per statement. Nothing is
//! dropped: if the store fails, the batch is retried until it succeeds, and on
//! shutdown the queue is drained before the writer returns.

use policy::Time;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use store::{AuditEvent, Store};
use tokio::sync::mpsc;

const BATCH: usize = 500;

#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::UnboundedSender<Msg>,
}

enum Msg {
    Event(AuditEvent),
    /// Answered once everything queued before it is in the store.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// A statement as the audit log records it.
pub struct StatementRecord<'a> {
    pub session: u64,
    pub user: &'a str,
    pub database: &'a str,
    pub text: &'a str,
    pub role: Option<&'a str>,
    pub grant: Option<i64>,
    pub kind: &'a str,
}

impl AuditSink {
    /// The sink and its writer (run it as a task; it ends when every sink is dropped).
    pub fn new(store: Arc<dyn Store>) -> (AuditSink, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (AuditSink { tx }, writer(store, rx))
    }

    pub fn send(&self, event: AuditEvent) {
        if self.tx.send(Msg::Event(event)).is_err() {
            tracing::error!("audit writer is gone; event not recorded");
        }
    }

    /// Waits until every event queued so far is stored (at shutdown).
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// `statement.run` (under a grant) or `statement.refused` (with `why`).
    pub fn statement(
        &self,
        now: Time,
        s: &StatementRecord<'_>,
        refused: Option<&str>,
        alert: bool,
        redact: bool,
    ) {
        let text = if redact {
            pg_query::normalize(s.text).unwrap_or_else(|_| "<unreadable statement>".into())
        } else {
            s.text.to_string()
        };
        let fingerprint = pg_query::fingerprint(s.text, 0, 0)
            .map(|f| f.hex)
            .unwrap_or_default();
        let mut detail = json!({
            "session": s.session, "database": s.database, "role": s.role,
            "grant": s.grant, "action": s.kind, "fingerprint": fingerprint, "text": text,
        });
        let kind = match refused {
            Some(why) => {
                detail["reason"] = json!(why);
                "statement.refused"
            }
            None => "statement.run",
        };
        let mut ev = AuditEvent::new(now, kind, s.user, format!("session:{}", s.session), detail);
        if alert {
            ev = ev.alert();
        }
        self.send(ev);
    }
}

async fn writer(store: Arc<dyn Store>, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut msgs = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut msgs, BATCH).await > 0 {
        let mut flushes = Vec::new();
        let batch: Vec<AuditEvent> = msgs
            .drain(..)
            .filter_map(|m| match m {
                Msg::Event(e) => Some(e),
                Msg::Flush(f) => {
                    flushes.push(f);
                    None
                }
            })
            .collect();
        let mut delay = Duration::from_millis(50);
        while !batch.is_empty() {
            match store.append_audit(batch.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(error = %e, events = batch.len(), "audit append failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}
