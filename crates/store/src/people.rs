//! What the state store keeps of people who sign in through an identity
//! provider, as records (see [`Store::put_record`]): their identity (so every
//! replica knows their groups, and one name stays bound to one subject) and
//! their connection secret (`jitgate db-login`), which the wire gateway
//! checks. Written by the API, read by the API and the gateway; the record
//! formats live here only.

use crate::{Store, StoreError};
use config::ScramVerifier;
use policy::{Person, Time};
use serde::{Deserialize, Serialize};

/// Identities are kept for good (a record's expiry must be a time): a name,
/// once bound to a subject, is never handed to another.
pub const IDENTITY_KEPT: chrono::Duration = chrono::Duration::days(100 * 365);

pub fn identity_key(user: &str) -> String {
    format!("identity:{user}")
}

/// Which (issuer, subject) a name belongs to: claimed once, kept for good.
pub fn name_key(user: &str) -> String {
    format!("name:{user}")
}

pub fn secret_key(user: &str) -> String {
    format!("connection-secret:{user}")
}

/// A connection secret, kept only as its SCRAM verifier. It works while the
/// sign-in it was issued under (`token_hash`) does, and until `expires_at`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConnectionSecret {
    /// `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
    pub verifier: String,
    pub token_hash: String,
    pub expires_at: Time,
}

/// The identity provider's word on `user` as last recorded.
pub async fn identity(
    store: &dyn Store,
    user: &str,
    now: Time,
) -> Result<Option<Person>, StoreError> {
    match store.record(&identity_key(user), now).await? {
        Some(v) => Ok(Some(serde_json::from_str(&v)?)),
        None => Ok(None),
    }
}

/// Every recorded identity (to fill a starting process's directory).
pub async fn identities(store: &dyn Store, now: Time) -> Result<Vec<(String, Person)>, StoreError> {
    let prefix = identity_key("");
    store
        .records(&prefix, now)
        .await?
        .into_iter()
        .map(|(k, v)| Ok((k[prefix.len()..].to_string(), serde_json::from_str(&v)?)))
        .collect()
}

/// The verifier `user` may log in to the gateway with, with their identity:
/// none unless the secret is unexpired, its sign-in is neither revoked nor
/// expired, and the identity is still in a mapped group.
pub async fn connection_verifier(
    store: &dyn Store,
    user: &str,
    now: Time,
) -> Result<Option<(ScramVerifier, Person)>, StoreError> {
    let Some(text) = store.record(&secret_key(user), now).await? else {
        return Ok(None);
    };
    let secret: ConnectionSecret = serde_json::from_str(&text)?;
    if secret.expires_at <= now {
        return Ok(None);
    }
    match store.token(&secret.token_hash).await? {
        Some(t) if !t.revoked && t.expires_at > now && t.user == user => {}
        _ => return Ok(None),
    }
    let Some(person) = identity(store, user, now).await? else {
        return Ok(None);
    };
    if person.groups.is_empty() {
        return Ok(None);
    }
    let verifier = ScramVerifier::parse(&secret.verifier).map_err(StoreError::Corrupt)?;
    Ok(Some((verifier, person)))
}
