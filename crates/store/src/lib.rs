//! State and audit behind one trait, [`Store`], with two backends: SQLite (the
//! embedded default) and PostgreSQL (for several gateway replicas).
//!
//! - [`audit`]: audit events and the SHA-256 hash chain (append, verify).
//! - [`sqlite`], [`postgres`]: the backends; the same migration, the same tests.
//! - [`cluster`]: replicas on one PostgreSQL store: the enforcer's lock,
//!   change notifications, replica indexes.
//! - [`service`]: the operations (file, decide, cancel, end a grant, tick) written
//!   once over the trait: load, apply the pure state machine from `policy`,
//!   write back with a compare-and-set on the row's version, retry on conflict.
//! - [`people`]: identities from identity providers and connection secrets,
//!   kept as expiring records.
//!
//! Invariants: every transition is one transaction together with its audit
//! events, so a decision is acknowledged only once its audit event is committed;
//! a write whose version no longer matches changes nothing; no secret is stored
//! in the clear (tokens are kept as SHA-256 hashes) or written to the audit log.
#![forbid(unsafe_code)]

pub mod audit;
pub mod changes;
pub mod checkpoint;
pub mod cluster;
pub mod kind;
pub mod people;
pub mod postgres;
pub mod service;
pub mod sqlite;

pub use audit::{AuditEvent, AuditRecord, Severity, Verification};
pub use changes::Changes;
pub use cluster::Cluster;
pub use kind::Kind;
use policy::{Grant, Request, Time};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("state store: {0}")]
    Backend(String),
    #[error("stored data is not readable: {0}")]
    Corrupt(String),
    #[error("unsupported state URL `{0}` (use sqlite://PATH or postgres://...)")]
    BadUrl(String),
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(e.to_string())
    }
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        StoreError::Backend(described(&e))
    }
}

/// An error and its causes, as one line: `tokio_postgres` and `deadpool`
/// print only their own layer ("db error"), the reason is in the sources.
pub fn described(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let part = c.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        cause = c.source();
    }
    text
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// A row and the version a compare-and-set must match.
#[derive(Debug, Clone)]
pub struct Versioned<T> {
    pub value: T,
    pub version: i64,
}

/// A grant to insert or update together with a request transition.
#[derive(Debug, Clone)]
pub enum GrantWrite {
    Insert(Grant),
    Update(Versioned<Grant>),
}

#[derive(Debug, Clone, Default)]
pub struct RequestFilter {
    pub user: Option<String>,
    pub state: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct GrantFilter {
    pub user: Option<String>,
    pub active_only: bool,
}

#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    pub actor: Option<String>,
    pub kind_prefix: Option<String>,
    pub since: Option<Time>,
    pub limit: Option<i64>,
}

#[derive(Debug, Clone)]
pub struct TokenRow {
    pub user: String,
    pub expires_at: Time,
    pub revoked: bool,
}

/// The generation of the login roles' passwords: replicas derive each
/// password from the cluster secret and this number (see DEPLOYMENT.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epoch {
    pub number: i64,
    /// When it was rotated to (none before the first rotation).
    pub since: Option<Time>,
}

pub(crate) const EPOCH: &str = "credentials:epoch";
pub(crate) const EPOCH_SINCE: &str = "credentials:since";

impl Epoch {
    pub(crate) fn from_counters(
        number: Option<i64>,
        since: Option<i64>,
    ) -> Result<Epoch, StoreError> {
        let since = since
            .map(|s| {
                chrono::DateTime::from_timestamp(s, 0)
                    .ok_or_else(|| StoreError::Corrupt(format!("epoch time {s}")))
            })
            .transpose()?;
        Ok(Epoch {
            number: number.unwrap_or(0),
            since,
        })
    }
}

/// What the backends provide. Every method is one transaction.
#[async_trait::async_trait]
pub trait Store: Send + Sync {
    /// Inserts a request unless the same user already has a pending request for
    /// the same role and database (and statement); returns the stored request
    /// and whether it is new. Links it to an active grant as an extension and
    /// appends its `request.filed` event.
    async fn insert_request(
        &self,
        request: Request,
    ) -> Result<(Versioned<Request>, bool), StoreError>;
    async fn request(&self, id: i64) -> Result<Option<Versioned<Request>>, StoreError>;
    async fn requests(&self, filter: &RequestFilter) -> Result<Vec<Request>, StoreError>;
    /// Writes `request` if its stored version is still `expected`, with the
    /// grant change and audit events, atomically (an inserted grant gets its
    /// `grant.started` event). Ok(None) on a version conflict: nothing written.
    async fn update_request(
        &self,
        request: &Request,
        expected: i64,
        grant: Option<GrantWrite>,
        audit: Vec<AuditEvent>,
    ) -> Result<Option<Option<Grant>>, StoreError>;
    async fn grant(&self, id: i64) -> Result<Option<Versioned<Grant>>, StoreError>;
    async fn grants(&self, filter: &GrantFilter) -> Result<Vec<Grant>, StoreError>;
    /// Compare-and-set on a grant; false on conflict.
    async fn update_grant(
        &self,
        grant: &Grant,
        expected: i64,
        audit: Vec<AuditEvent>,
    ) -> Result<bool, StoreError>;
    async fn append_audit(&self, events: Vec<AuditEvent>) -> Result<(), StoreError>;
    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError>;
    /// Every audit record in order (for verify and export).
    async fn audit_all(&self) -> Result<Vec<AuditRecord>, StoreError>;
    /// Audit records after sequence number `after`, oldest first, at most `limit`.
    async fn audit_after(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError>;
    /// The chain's head: the last record's (seq, hash); (0, genesis) if empty.
    async fn audit_head(&self) -> Result<(i64, String), StoreError>;
    /// A named, durable position (e.g. how far a webhook has delivered); 0 if unset.
    async fn cursor(&self, name: &str) -> Result<i64, StoreError>;
    async fn set_cursor(&self, name: &str, value: i64) -> Result<(), StoreError>;
    /// Appends `alert` when at least `threshold` events of kind `counted` by
    /// the alert's actor were recorded at or after `since`, counting only
    /// those after the actor's last event of the alert's kind. One
    /// transaction under the writers' lock, so replicas sharing the store
    /// count together and raise one alert per window. True if appended.
    async fn alert_when(
        &self,
        alert: AuditEvent,
        counted: Kind,
        since: Time,
        threshold: i64,
    ) -> Result<bool, StoreError>;
    /// Wakes the other replicas (`NOTIFY`; nothing to do for one process):
    /// the enforcer says a GRANT is in the database, which they wait for
    /// before publishing the grant.
    async fn announce(&self, _what: &str) -> Result<(), StoreError> {
        Ok(())
    }
    /// The login-role password epoch (0 before the first rotation).
    async fn credentials(&self) -> Result<Epoch, StoreError>;
    /// Moves to the next epoch, appending `event` (with the new number), and
    /// tells the other replicas. Returns the new epoch.
    async fn rotate_credentials(&self, event: AuditEvent) -> Result<i64, StoreError>;
    async fn insert_token(
        &self,
        hash: &str,
        user: &str,
        expires_at: Time,
        audit: Vec<AuditEvent>,
    ) -> Result<(), StoreError>;
    async fn token(&self, hash: &str) -> Result<Option<TokenRow>, StoreError>;
    async fn revoke_token(&self, hash: &str, audit: Vec<AuditEvent>) -> Result<bool, StoreError>;
    /// Records: small named values with an expiry, for what sign-in keeps
    /// between requests (pending sign-ins, identities, connection secrets)
    /// so that any replica can continue it. Writes (or replaces) `key` with
    /// `audit`, and drops records expired by `now`, in one transaction.
    async fn put_record(
        &self,
        key: &str,
        value: &str,
        now: Time,
        expires_at: Time,
        audit: Vec<AuditEvent>,
    ) -> Result<(), StoreError>;
    /// Writes `key` only if it holds nothing unexpired at `now`; returns what
    /// it held instead (of two callers claiming the same key, one wins).
    async fn claim_record(
        &self,
        key: &str,
        value: &str,
        now: Time,
        expires_at: Time,
    ) -> Result<Option<String>, StoreError>;
    /// The value of `key` unless it has expired by `now`.
    async fn record(&self, key: &str, now: Time) -> Result<Option<String>, StoreError>;
    /// Deletes `key`, returning its value if it had not expired by `now`:
    /// of two callers taking the same key, one gets it.
    async fn take_record(&self, key: &str, now: Time) -> Result<Option<String>, StoreError>;
    /// Every unexpired record whose key starts with `prefix`, as (key, value).
    async fn records(&self, prefix: &str, now: Time) -> Result<Vec<(String, String)>, StoreError>;
}

/// Opens the store named by `[gateway] state`.
pub async fn open(url: &str) -> Result<std::sync::Arc<dyn Store>, StoreError> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        Ok(std::sync::Arc::new(sqlite::SqliteStore::open(path)?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(std::sync::Arc::new(postgres::PgStore::connect(url).await?))
    } else {
        Err(StoreError::BadUrl(url.to_string()))
    }
}

/// The shared schema. Requests and grants keep their full state as JSON next to
/// the columns that are queried; `version` is the compare-and-set token.
pub(crate) const MIGRATION_1: &str = "
CREATE TABLE IF NOT EXISTS requests (
    id BIGINT PRIMARY KEY,
    username TEXT NOT NULL,
    role TEXT NOT NULL,
    dbname TEXT NOT NULL,
    state TEXT NOT NULL,
    statement TEXT,
    version BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_pending ON requests (username, role, dbname, state);
CREATE TABLE IF NOT EXISTS grants (
    id BIGINT PRIMARY KEY,
    username TEXT NOT NULL,
    role TEXT NOT NULL,
    dbname TEXT NOT NULL,
    state TEXT NOT NULL,
    version BIGINT NOT NULL,
    body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS grants_active ON grants (username, role, dbname, state);
CREATE TABLE IF NOT EXISTS audit (
    seq BIGINT PRIMARY KEY,
    at TEXT NOT NULL,
    kind TEXT NOT NULL,
    severity TEXT NOT NULL,
    actor TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_by_actor ON audit (actor, kind, seq);
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,
    username TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    revoked BOOLEAN NOT NULL
);
CREATE TABLE IF NOT EXISTS records (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    expires_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
";
