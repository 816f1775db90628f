//! Signed checkpoints of the audit chain: anchoring it outside the store.
//!
//! The hash chain detects an edit, a deletion or an insertion in the middle,
//! but not a cut tail, nor a chain rewritten from the start by someone who
//! can write the store. A checkpoint is the chain's head (`seq`, `hash`) at a
//! time, signed with an ed25519 key kept outside the state store
//! (`[gateway] audit_key_file`). Checkpoints are delivered to webhooks and the
//! gateway's log; whoever keeps one can later check that the log still holds
//! record `seq` with that very hash ([`verify_against`]).
//!
//! The key file holds the 32-byte secret seed, base64, on one line.

use crate::audit::{self, AuditRecord, Verification};
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use policy::Time;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The last record covered (the log had this many records).
    pub seq: i64,
    /// That record's chain hash.
    pub hash: String,
    pub at: Time,
    /// The verifying key, base64.
    pub public_key: String,
    /// ed25519 over [`message`], base64.
    pub signature: String,
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the audit key file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("the audit key file {0} does not hold a base64 32-byte ed25519 seed")]
    Malformed(String),
}

/// What is signed: a fixed, versioned text.
pub fn message(seq: i64, hash: &str, at: &Time) -> String {
    format!(
        "jitgate-audit-checkpoint:v1:{seq}:{hash}:{}",
        audit::time_text(at)
    )
}

/// A new secret seed, base64 (what `jitgate audit keygen` writes).
pub fn new_key() -> (String, String) {
    let key = SigningKey::from_bytes(&rand::random::<[u8; 32]>());
    (
        B64.encode(key.to_bytes()),
        B64.encode(key.verifying_key().to_bytes()),
    )
}

/// Reads a key file.
pub fn load_key(path: &std::path::Path) -> Result<SigningKey, KeyError> {
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_key(text.trim()).ok_or_else(|| KeyError::Malformed(path.display().to_string()))
}

fn parse_key(text: &str) -> Option<SigningKey> {
    let bytes: [u8; 32] = B64.decode(text).ok()?.try_into().ok()?;
    Some(SigningKey::from_bytes(&bytes))
}

/// Signs the head (`seq`, `hash`) at `at`.
pub fn sign(key: &SigningKey, seq: i64, hash: &str, at: Time) -> Checkpoint {
    let signature = key.sign(message(seq, hash, &at).as_bytes());
    Checkpoint {
        seq,
        hash: hash.to_string(),
        at,
        public_key: B64.encode(key.verifying_key().to_bytes()),
        signature: B64.encode(signature.to_bytes()),
    }
}

impl Checkpoint {
    /// Checks the signature; with `trusted` (base64), also that it is that key's.
    pub fn check_signature(&self, trusted: Option<&str>) -> Result<(), String> {
        if let Some(t) = trusted {
            if t.trim() != self.public_key {
                return Err(format!(
                    "signed by key {}, not by the trusted key {}",
                    self.public_key,
                    t.trim()
                ));
            }
        }
        let key: [u8; 32] = B64
            .decode(&self.public_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("the checkpoint's public key is malformed")?;
        let key = VerifyingKey::from_bytes(&key).map_err(|e| format!("public key: {e}"))?;
        let sig: [u8; 64] = B64
            .decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or("the checkpoint's signature is malformed")?;
        key.verify(
            message(self.seq, &self.hash, &self.at).as_bytes(),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| "the signature does not match the checkpoint (forged or altered)".to_string())
    }
}

/// Verifies `records` (the whole log, in order) as a chain and against a
/// checkpoint: the log must still hold record `seq` with the signed hash.
/// A cut tail and a rewritten chain both fail here.
pub fn verify_against(
    records: &[AuditRecord],
    cp: &Checkpoint,
    trusted_key: Option<&str>,
) -> Verification {
    let fail = |seq: Option<i64>, problem: String| Verification {
        ok: false,
        records: records.len(),
        first_bad_seq: seq,
        problem: Some(problem),
    };
    if let Err(e) = cp.check_signature(trusted_key) {
        return fail(None, format!("checkpoint: {e}"));
    }
    let chain = audit::verify(records);
    if !chain.ok {
        return chain;
    }
    match records.iter().find(|r| r.seq == cp.seq) {
        None => fail(
            Some(cp.seq),
            format!(
                "the log ends at event {} but the checkpoint of {} covers event {}: \
                 records were cut from the tail",
                records.last().map_or(0, |r| r.seq),
                audit::time_text(&cp.at),
                cp.seq
            ),
        ),
        Some(r) if r.hash != cp.hash => fail(
            Some(cp.seq),
            format!(
                "event {} does not have the hash the checkpoint of {} signed: the chain was \
                 rewritten up to there",
                cp.seq,
                audit::time_text(&cp.at)
            ),
        ),
        Some(_) => chain,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{link, AuditEvent, GENESIS};
    use crate::Kind;
    use chrono::TimeZone;

    fn chain(n: usize, actor: &str) -> Vec<AuditRecord> {
        let t = chrono::Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        let events = (0..n)
            .map(|i| {
                AuditEvent::new(
                    t,
                    Kind::GrantStarted,
                    actor,
                    format!("grant:{i}"),
                    serde_json::json!({}),
                )
            })
            .collect();
        link(events, 0, GENESIS)
    }

    #[test]
    fn cut_tails_and_rewritten_chains_are_caught() {
        let key = parse_key(&new_key().0).unwrap();
        let log = chain(10, "alice");
        let t = chrono::Utc.with_ymd_and_hms(2026, 1, 2, 0, 0, 0).unwrap();
        let cp = sign(&key, 8, &log[7].hash, t);
        assert!(verify_against(&log, &cp, None).ok);
        assert!(verify_against(&log, &cp, Some(&cp.public_key)).ok);
        // Cut after event 5: a valid chain, but shorter than the checkpoint.
        let v = verify_against(&log[..5], &cp, None);
        assert!(!v.ok && v.problem.unwrap().contains("cut"));
        // Rewritten from the start (a valid chain with other content).
        let v = verify_against(&chain(10, "mallory"), &cp, None);
        assert!(!v.ok && v.problem.unwrap().contains("rewritten"));
        // A checkpoint altered, or signed by another key.
        let mut forged = cp.clone();
        forged.seq = 4;
        forged.hash = log[3].hash.clone();
        assert!(!verify_against(&log, &forged, None).ok);
        let other = parse_key(&new_key().0).unwrap();
        let theirs = sign(&other, 8, &log[7].hash, t);
        assert!(verify_against(&log, &theirs, None).ok);
        assert!(!verify_against(&log, &theirs, Some(&cp.public_key)).ok);
    }
}
