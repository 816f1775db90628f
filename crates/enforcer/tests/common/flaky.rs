//! A store that can be made to fail on demand (everything else delegates to a
//! real SQLite store): what the gateway does while its state store is down.

use policy::{Grant, Request, Time};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use store::Kind;
use store::*;

pub struct FlakyStore {
    pub inner: Arc<dyn Store>,
    pub down: AtomicBool,
}

impl FlakyStore {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::Relaxed) {
            return Err(StoreError::Backend("the test took the store down".into()));
        }
        Ok(())
    }
}

#[async_trait::async_trait]
impl Store for FlakyStore {
    async fn insert_request(&self, r: Request) -> Result<(Versioned<Request>, bool), StoreError> {
        self.check()?;
        self.inner.insert_request(r).await
    }
    async fn request(&self, id: i64) -> Result<Option<Versioned<Request>>, StoreError> {
        self.check()?;
        self.inner.request(id).await
    }
    async fn requests(&self, f: &RequestFilter) -> Result<Vec<Request>, StoreError> {
        self.check()?;
        self.inner.requests(f).await
    }
    async fn update_request(
        &self,
        r: &Request,
        expected: i64,
        g: Option<GrantWrite>,
        a: Vec<AuditEvent>,
    ) -> Result<Option<Option<Grant>>, StoreError> {
        self.check()?;
        self.inner.update_request(r, expected, g, a).await
    }
    async fn grant(&self, id: i64) -> Result<Option<Versioned<Grant>>, StoreError> {
        self.check()?;
        self.inner.grant(id).await
    }
    async fn grants(&self, f: &GrantFilter) -> Result<Vec<Grant>, StoreError> {
        self.check()?;
        self.inner.grants(f).await
    }
    async fn update_grant(
        &self,
        g: &Grant,
        e: i64,
        a: Vec<AuditEvent>,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.update_grant(g, e, a).await
    }
    async fn append_audit(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        self.check()?;
        self.inner.append_audit(events).await
    }
    async fn audit(&self, f: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        self.check()?;
        self.inner.audit(f).await
    }
    async fn audit_all(&self) -> Result<Vec<AuditRecord>, StoreError> {
        self.check()?;
        self.inner.audit_all().await
    }
    async fn audit_after(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        self.check()?;
        self.inner.audit_after(after, limit).await
    }
    async fn audit_head(&self) -> Result<(i64, String), StoreError> {
        self.check()?;
        self.inner.audit_head().await
    }
    async fn cursor(&self, name: &str) -> Result<i64, StoreError> {
        self.check()?;
        self.inner.cursor(name).await
    }
    async fn set_cursor(&self, name: &str, value: i64) -> Result<(), StoreError> {
        self.check()?;
        self.inner.set_cursor(name, value).await
    }
    async fn alert_when(
        &self,
        alert: AuditEvent,
        counted: Kind,
        since: Time,
        threshold: i64,
    ) -> Result<bool, StoreError> {
        self.check()?;
        self.inner
            .alert_when(alert, counted, since, threshold)
            .await
    }
    async fn credentials(&self) -> Result<store::Epoch, StoreError> {
        self.check()?;
        self.inner.credentials().await
    }
    async fn rotate_credentials(&self, event: AuditEvent) -> Result<i64, StoreError> {
        self.check()?;
        self.inner.rotate_credentials(event).await
    }
    async fn insert_token(
        &self,
        hash: &str,
        user: &str,
        expires_at: Time,
        a: Vec<AuditEvent>,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.insert_token(hash, user, expires_at, a).await
    }
    async fn token(&self, hash: &str) -> Result<Option<TokenRow>, StoreError> {
        self.check()?;
        self.inner.token(hash).await
    }
    async fn revoke_token(&self, hash: &str, a: Vec<AuditEvent>) -> Result<bool, StoreError> {
        self.check()?;
        self.inner.revoke_token(hash, a).await
    }
    async fn put_record(
        &self,
        key: &str,
        value: &str,
        now: Time,
        expires_at: Time,
        a: Vec<AuditEvent>,
    ) -> Result<(), StoreError> {
        self.check()?;
        self.inner.put_record(key, value, now, expires_at, a).await
    }
    async fn claim_record(
        &self,
        key: &str,
        value: &str,
        now: Time,
        expires_at: Time,
    ) -> Result<Option<String>, StoreError> {
        self.check()?;
        self.inner.claim_record(key, value, now, expires_at).await
    }
    async fn record(&self, key: &str, now: Time) -> Result<Option<String>, StoreError> {
        self.check()?;
        self.inner.record(key, now).await
    }
    async fn take_record(&self, key: &str, now: Time) -> Result<Option<String>, StoreError> {
        self.check()?;
        self.inner.take_record(key, now).await
    }
    async fn records(&self, prefix: &str, now: Time) -> Result<Vec<(String, String)>, StoreError> {
        self.check()?;
        self.inner.records(prefix, now).await
    }
}
