//! Audit events and the hash chain.
//!
//! Each record's hash is SHA-256 over the previous record's hash and the
//! record's canonical content (JSON with sorted keys). Editing, deleting,
//! inserting or reordering any record breaks the chain at that record, which
//! [`verify`] names.

use crate::Kind;
use chrono::SecondsFormat;
use policy::Time;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub const GENESIS: &str = "0000000000000000000000000000000000000000000000000000000000000000";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    Info,
    Alert,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Alert => "alert",
        }
    }
}

/// An event to append: what happened, who did it, to what.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub at: Time,
    /// Dotted kind, e.g. `request.filed`, `decision.approve`, `grant.started`.
    pub kind: String,
    pub severity: Severity,
    pub actor: String,
    /// What it is about, e.g. `request:12`, `grant:3`, `user:alice`.
    pub subject: String,
    /// Details; never secrets.
    pub detail: serde_json::Value,
}

impl AuditEvent {
    pub fn new(
        at: Time,
        kind: Kind,
        actor: &str,
        subject: String,
        detail: serde_json::Value,
    ) -> Self {
        AuditEvent {
            at,
            kind: kind.as_str().to_string(),
            severity: Severity::Info,
            actor: actor.to_string(),
            subject,
            detail,
        }
    }

    /// Whether this is an event of `kind`.
    pub fn is(&self, kind: Kind) -> bool {
        self.kind == kind.as_str()
    }

    /// The same event with severity `alert`.
    pub fn alert(mut self) -> Self {
        self.severity = Severity::Alert;
        self
    }

    /// Adds `idp` (who the actor is at their identity provider), if any.
    pub fn with_idp(self, idp: Option<&policy::Idp>) -> Self {
        match idp {
            Some(i) => self.with_detail("idp", serde_json::to_value(i).expect("serializable")),
            None => self,
        }
    }

    /// Adds `key` to an object `detail`.
    pub fn with_detail(mut self, key: &str, value: impl Into<serde_json::Value>) -> Self {
        if let Some(map) = self.detail.as_object_mut() {
            map.insert(key.to_string(), value.into());
        }
        self
    }
}

/// A stored event with its place in the chain.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    pub seq: i64,
    #[serde(flatten)]
    pub event: AuditEvent,
    pub prev_hash: String,
    pub hash: String,
}

/// The timestamp as stored (fixed format, so the hash is reproducible).
pub fn time_text(t: &Time) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The hash of record `seq` holding `event`, following `prev_hash`.
pub fn chain_hash(seq: i64, event: &AuditEvent, prev_hash: &str) -> String {
    // serde_json's map keeps keys sorted: this is the canonical form.
    let canonical = serde_json::json!({
        "seq": seq,
        "at": time_text(&event.at),
        "kind": event.kind,
        "severity": event.severity.as_str(),
        "actor": event.actor,
        "subject": event.subject,
        "detail": event.detail,
    });
    let mut h = Sha256::new();
    h.update(prev_hash.as_bytes());
    h.update(b"\n");
    h.update(canonical.to_string().as_bytes());
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Links `events` after the record (`last_seq`, `last_hash`).
pub fn link(events: Vec<AuditEvent>, last_seq: i64, last_hash: &str) -> Vec<AuditRecord> {
    let mut prev = last_hash.to_string();
    events
        .into_iter()
        .enumerate()
        .map(|(i, event)| {
            let seq = last_seq + 1 + i as i64;
            let hash = chain_hash(seq, &event, &prev);
            let record = AuditRecord {
                seq,
                event,
                prev_hash: prev.clone(),
                hash: hash.clone(),
            };
            prev = hash;
            record
        })
        .collect()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    pub ok: bool,
    pub records: usize,
    /// The first record that does not fit the chain.
    pub first_bad_seq: Option<i64>,
    pub problem: Option<String>,
}

/// Walks the chain in order and names the first record that does not fit.
pub fn verify(records: &[AuditRecord]) -> Verification {
    let mut prev_hash = GENESIS.to_string();
    let mut prev_seq = 0i64;
    for r in records {
        let problem = if r.seq != prev_seq + 1 {
            Some(format!(
                "sequence jumps from {prev_seq} to {} (a record was deleted or inserted)",
                r.seq
            ))
        } else if r.prev_hash != prev_hash {
            Some("does not follow the previous record (deleted, inserted or reordered)".to_string())
        } else if chain_hash(r.seq, &r.event, &r.prev_hash) != r.hash {
            Some("content does not match its hash (edited)".to_string())
        } else {
            None
        };
        if let Some(problem) = problem {
            return Verification {
                ok: false,
                records: records.len(),
                first_bad_seq: Some(r.seq),
                problem: Some(problem),
            };
        }
        prev_hash = r.hash.clone();
        prev_seq = r.seq;
    }
    Verification {
        ok: true,
        records: records.len(),
        first_bad_seq: None,
        problem: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn events(n: usize) -> Vec<AuditEvent> {
        let t = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        (0..n)
            .map(|i| {
                AuditEvent::new(
                    t,
                    Kind::RequestFiled,
                    "alice",
                    format!("request:{i}"),
                    serde_json::json!({"i": i}),
                )
            })
            .collect()
    }

    #[test]
    fn an_intact_chain_verifies() {
        let chain = link(events(5), 0, GENESIS);
        assert!(verify(&chain).ok);
        let more = link(events(2), 5, &chain[4].hash);
        let all: Vec<_> = chain.into_iter().chain(more).collect();
        assert!(verify(&all).ok);
    }

    #[test]
    fn edits_deletions_insertions_and_reorders_are_named() {
        let chain = link(events(5), 0, GENESIS);
        let mut edited = chain.clone();
        edited[2].event.actor = "mallory".into();
        assert_eq!(verify(&edited).first_bad_seq, Some(3));
        let mut deleted = chain.clone();
        deleted.remove(1);
        assert_eq!(verify(&deleted).first_bad_seq, Some(3));
        let mut reordered = chain.clone();
        reordered.swap(3, 4);
        assert_eq!(verify(&reordered).first_bad_seq, Some(5));
        // An insertion with a consistent sequence still breaks the link.
        let mut inserted = chain.clone();
        let mut forged = chain[1].clone();
        forged.event.subject = "request:forged".into();
        forged.hash = chain_hash(forged.seq, &forged.event, &forged.prev_hash);
        inserted[1] = forged;
        assert_eq!(verify(&inserted).first_bad_seq, Some(3));
    }
}
