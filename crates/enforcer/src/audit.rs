//! Statement audit: every statement run under a grant and every refused
//! attempt, written to the store's hash-chained log by one writer task.
//!
//! Events go into an unbounded queue and the writer appends them in batches
//! (one transaction per batch), so a busy gateway costs one fsync per batch,
//! not per statement. Nothing is dropped: if the store fails, the batch is
//! retried until it succeeds, and on shutdown the queue is drained before the
//! writer returns.
//!
//! Write-ahead for privileged statements: [`AuditSink::durable`] answers once
//! the event's batch is committed, and the hook lets a statement run under a
//! grant only then. This is group commit: every event queued while one batch
//! is being written goes into the next, so concurrent privileged statements
//! share one fsync. Refused and unprivileged statements never wait.

use policy::Time;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use store::Kind;
use store::{AuditEvent, Store};
use tokio::sync::mpsc;

const BATCH: usize = 500;

#[derive(Clone)]
pub struct AuditSink {
    tx: mpsc::UnboundedSender<Msg>,
}

enum Msg {
    Event(AuditEvent),
    /// Answered `true` once this event is in the store, `false` if the store
    /// failed (the event is then recorded as a refusal).
    Durable(AuditEvent, tokio::sync::oneshot::Sender<bool>),
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
    /// The user at their identity provider, if they signed in through one.
    pub idp: Option<serde_json::Value>,
}

impl AuditSink {
    /// The sink and its writer (run it as a task; it ends when every sink is dropped).
    pub fn new(
        store: Arc<dyn Store>,
        refusals: Option<RefusalAlert>,
    ) -> (AuditSink, impl std::future::Future<Output = ()>) {
        let (tx, rx) = mpsc::unbounded_channel();
        (AuditSink { tx }, writer(store, rx, refusals))
    }

    pub fn send(&self, event: AuditEvent) {
        if self.tx.send(Msg::Event(event)).is_err() {
            tracing::error!("audit writer is gone; event not recorded");
        }
    }

    /// Queues `event`; the answer comes once it is committed to the store
    /// (`true`), or at the store's first failure (`false`).
    pub fn durable(&self, event: AuditEvent) -> tokio::sync::oneshot::Receiver<bool> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Durable(event, tx)).is_err() {
            tracing::error!("audit writer is gone; event not recorded");
        }
        rx
    }

    /// Waits until every event queued so far is stored (at shutdown).
    pub async fn flush(&self) {
        let (tx, rx) = tokio::sync::oneshot::channel();
        if self.tx.send(Msg::Flush(tx)).is_ok() {
            let _ = rx.await;
        }
    }

    /// `statement.refused` (with `why`), queued.
    pub fn refused(
        &self,
        now: Time,
        s: &StatementRecord<'_>,
        why: &str,
        alert: bool,
        redact: bool,
    ) {
        self.send(statement_event(now, s, Some(why), alert, redact));
    }

    /// `statement.run` (under a grant), written ahead: the answer comes once
    /// the record is durable.
    pub fn ran(
        &self,
        now: Time,
        s: &StatementRecord<'_>,
        redact: bool,
    ) -> tokio::sync::oneshot::Receiver<bool> {
        self.durable(statement_event(now, s, None, false, redact))
    }
}

/// `statement.run` (under a grant) or `statement.refused` (with `why`).
fn statement_event(
    now: Time,
    s: &StatementRecord<'_>,
    refused: Option<&str>,
    alert: bool,
    redact: bool,
) -> AuditEvent {
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
    if let Some(idp) = &s.idp {
        detail["idp"] = idp.clone();
    }
    let kind = match refused {
        Some(why) => {
            detail["reason"] = json!(why);
            Kind::StatementRefused
        }
        None => Kind::StatementRun,
    };
    let ev = AuditEvent::new(now, kind, s.user, format!("session:{}", s.session), detail);
    if alert {
        ev.alert()
    } else {
        ev
    }
}

/// `threshold` refused statements by one user within `window` raise one
/// `alert.refusals`. Counted in the store, after the refusals are written:
/// replicas sharing a store count together.
#[derive(Clone, Copy)]
pub struct RefusalAlert {
    pub threshold: i64,
    pub window: chrono::Duration,
}

/// After a batch with refusals: one count in the store per user refused.
async fn alert_refusals(store: &dyn Store, rule: RefusalAlert, batch: &[AuditEvent]) {
    let mut last: std::collections::BTreeMap<&str, &AuditEvent> = Default::default();
    for e in batch.iter().filter(|e| e.is(Kind::StatementRefused)) {
        last.insert(&e.actor, e);
    }
    for (user, e) in last {
        let alert = AuditEvent::new(
            e.at,
            Kind::AlertRefusals,
            user,
            format!("user:{user}"),
            json!({"refused": rule.threshold, "within_secs": rule.window.num_seconds(),
                   "database": e.detail["database"], "session": e.detail["session"]}),
        )
        .alert();
        if let Err(err) = store
            .alert_when(
                alert,
                Kind::StatementRefused,
                e.at - rule.window,
                rule.threshold,
            )
            .await
        {
            tracing::warn!(error = %err, %user, "cannot count refusals for an alert");
        }
    }
}

async fn writer(
    store: Arc<dyn Store>,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    refusals: Option<RefusalAlert>,
) {
    let mut msgs = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut msgs, BATCH).await > 0 {
        let mut flushes = Vec::new();
        // Written-ahead events: their position in the batch and their answer.
        let mut waiting = Vec::new();
        let mut batch: Vec<AuditEvent> = Vec::with_capacity(msgs.len());
        for m in msgs.drain(..) {
            match m {
                Msg::Event(e) => batch.push(e),
                Msg::Durable(e, ack) => {
                    waiting.push((batch.len(), ack));
                    batch.push(e);
                }
                Msg::Flush(f) => flushes.push(f),
            }
        }
        let mut delay = Duration::from_millis(50);
        while !batch.is_empty() {
            match store.append_audit(batch.clone()).await {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!(error = %e, events = batch.len(), "audit append failed; retrying");
                    // Statements waiting for their record are refused now
                    // (fail closed): their events become refusals, written
                    // with the rest once the store is back.
                    for (i, ack) in waiting.drain(..) {
                        refused_for_audit(&mut batch[i]);
                        let _ = ack.send(false);
                    }
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
        for (_, ack) in waiting {
            let _ = ack.send(true);
        }
        if let Some(rule) = refusals {
            alert_refusals(&*store, rule, &batch).await;
        }
        for f in flushes {
            let _ = f.send(());
        }
    }
}

/// The message a statement gets when its audit record cannot be written.
pub const UNRECORDED: &str = "jitgate cannot write the audit log right now; a statement run under \
                              a grant is recorded before it runs, so this one did not run";

/// A `statement.run` that was never let through: recorded as refused.
fn refused_for_audit(e: &mut AuditEvent) {
    if e.is(Kind::StatementRun) {
        e.kind = Kind::StatementRefused.as_str().into();
        e.detail["reason"] = json!(UNRECORDED);
    }
}
