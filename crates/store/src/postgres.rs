//! The PostgreSQL backend, for several gateway replicas sharing state.
//!
//! - A pool of connections (deadpool): a connection that died is replaced at
//!   the next call, so the store recovers by itself; while the server is away
//!   every call fails fast (callers fail closed).
//! - TLS per the URL's `sslmode` (libpq's values, see `pgtls`).
//! - Writers are serialised by a transaction-scoped advisory lock (the audit
//!   chain needs a single order anyway); rows still carry the compare-and-set
//!   version.
//! - Writes that change requests, grants or credentials `NOTIFY jitgate` in
//!   their transaction: the other replicas hear of them at commit
//!   ([`crate::cluster`] listens).

use crate::audit::{self, AuditEvent, AuditRecord, Severity, GENESIS};
use crate::Kind;
use crate::{
    AuditFilter, GrantFilter, GrantWrite, RequestFilter, Store, StoreError, TokenRow, Versioned,
    MIGRATION_1,
};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use policy::{Grant, Request, Time};
use std::time::Duration;
use tokio_postgres::{Client, GenericClient, Transaction};
use tokio_postgres_rustls::MakeRustlsConnect;

const WRITE_LOCK: i64 = 0x6a69_7467_6174; // "jitgat"

/// The channel replicas hear changes on.
pub(crate) const CHANNEL: &str = "jitgate";

/// How long a call waits for a connection (or to make one) before failing.
const CONNECT_WAIT: Duration = Duration::from_secs(3);

/// Where the store is and how to reach it.
#[derive(Clone)]
pub(crate) struct Target {
    pub config: tokio_postgres::Config,
    pub tls: MakeRustlsConnect,
}

impl Target {
    pub fn from_url(url: &str) -> Result<Target, StoreError> {
        let bad = |e: String| StoreError::BadUrl(format!("{url}: {e}"));
        let (mut config, tls) = pgtls::postgres(url).map_err(|e| bad(e.to_string()))?;
        config.connect_timeout(CONNECT_WAIT);
        // A server that vanished without closing the connection (a network
        // partition) is noticed within about half a minute.
        config.keepalives(true);
        config.keepalives_idle(Duration::from_secs(10));
        if config.get_application_name().is_none() {
            config.application_name("jitgate");
        }
        Ok(Target { config, tls })
    }
}

pub struct PgStore {
    pool: Pool,
}

impl PgStore {
    pub async fn connect(url: &str) -> Result<PgStore, StoreError> {
        let target = Target::from_url(url)?;
        let manager = Manager::from_config(
            target.config,
            target.tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(8)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .wait_timeout(Some(CONNECT_WAIT))
            .create_timeout(Some(CONNECT_WAIT))
            .recycle_timeout(Some(CONNECT_WAIT))
            .build()
            .map_err(|e| StoreError::Backend(e.to_string()))?;
        let store = PgStore { pool };
        store.client().await?.batch_execute(MIGRATION_1).await?;
        Ok(store)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| {
            StoreError::Backend(format!(
                "no connection to the state store: {}",
                crate::described(&e)
            ))
        })
    }
}

/// How many `$1` events by `$2` since `$3`, after `$2`'s last `$4`.
const ALERT_COUNT: &str = "SELECT count(*) FROM audit WHERE kind = $1 AND actor = $2 AND at >= $3 \
     AND seq > COALESCE((SELECT max(seq) FROM audit WHERE kind = $4 AND actor = $2), 0)";

/// Tells the other replicas that requests, grants or credentials changed (in
/// a transaction: at its commit).
async fn announce(db: &impl GenericClient, what: &str) -> Result<(), StoreError> {
    db.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &what])
        .await?;
    Ok(())
}

async fn write_tx(client: &mut Client) -> Result<Transaction<'_>, StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&WRITE_LOCK])
        .await?;
    Ok(tx)
}

async fn append(tx: &Transaction<'_>, events: Vec<AuditEvent>) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let last = tx
        .query_opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])
        .await?;
    let (seq, hash) = last
        .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)))
        .unwrap_or((0, GENESIS.to_string()));
    let stmt = tx
        .prepare(
            "INSERT INTO audit (seq, at, kind, severity, actor, subject, detail, prev_hash, hash) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .await?;
    for r in audit::link(events, seq, &hash) {
        tx.execute(
            &stmt,
            &[
                &r.seq,
                &audit::time_text(&r.event.at),
                &r.event.kind,
                &r.event.severity.as_str(),
                &r.event.actor,
                &r.event.subject,
                &r.event.detail.to_string(),
                &r.prev_hash,
                &r.hash,
            ],
        )
        .await?;
    }
    Ok(())
}

async fn next_id(tx: &Transaction<'_>, table: &str) -> Result<i64, StoreError> {
    Ok(tx
        .query_one(
            &format!("SELECT COALESCE(MAX(id), 0) + 1 FROM {table}"),
            &[],
        )
        .await?
        .get(0))
}

async fn cas_grant(tx: &Transaction<'_>, grant: &Grant, expected: i64) -> Result<bool, StoreError> {
    let n = tx
        .execute(
            "UPDATE grants SET state = $1, body = $2, version = version + 1 WHERE id = $3 AND version = $4",
            &[&grant.state.as_str(), &serde_json::to_string(grant)?, &grant.id, &expected],
        )
        .await?;
    Ok(n == 1)
}

fn parse_time(s: &str) -> Result<Time, StoreError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| StoreError::Corrupt(format!("time {s:?}: {e}")))
}

fn to_record(r: &tokio_postgres::Row) -> Result<AuditRecord, StoreError> {
    Ok(AuditRecord {
        seq: r.get(0),
        event: AuditEvent {
            at: parse_time(r.get(1))?,
            kind: r.get(2),
            severity: if r.get::<_, &str>(3) == "alert" {
                Severity::Alert
            } else {
                Severity::Info
            },
            actor: r.get(4),
            subject: r.get(5),
            detail: serde_json::from_str(r.get(6))?,
        },
        prev_hash: r.get(7),
        hash: r.get(8),
    })
}

fn versioned<T: serde::de::DeserializeOwned>(
    row: Option<tokio_postgres::Row>,
) -> Result<Option<Versioned<T>>, StoreError> {
    row.map(|r| {
        Ok(Versioned {
            version: r.get(0),
            value: serde_json::from_str(r.get::<_, &str>(1))?,
        })
    })
    .transpose()
}

#[async_trait::async_trait]
impl Store for PgStore {
    async fn insert_request(
        &self,
        request: Request,
    ) -> Result<(Versioned<Request>, bool), StoreError> {
        let mut client = self.client().await?;
        let tx = write_tx(&mut client).await?;
        let now = request.created_at;
        let pending = tx
            .query(
                "SELECT version, body FROM requests WHERE username = $1 AND role = $2 AND dbname = $3 \
                 AND state = 'pending' AND statement IS NOT DISTINCT FROM $4",
                &[&request.user, &request.role, &request.database, &request.statement],
            )
            .await?;
        for row in pending {
            let existing: Request = serde_json::from_str(row.get::<_, &str>(1))?;
            if existing.expires_at > now {
                return Ok((
                    Versioned {
                        value: existing,
                        version: row.get(0),
                    },
                    false,
                ));
            }
        }
        let mut request = request;
        let grants = tx
            .query(
                "SELECT body FROM grants WHERE username = $1 AND role = $2 AND dbname = $3 AND state = 'active'",
                &[&request.user, &request.role, &request.database],
            )
            .await?;
        for row in grants {
            let g: Grant = serde_json::from_str(row.get::<_, &str>(0))?;
            if g.is_active(now) && request.statement.is_none() {
                request.extends_grant = Some(g.id);
            }
        }
        request.id = next_id(&tx, "requests").await?;
        tx.execute(
            "INSERT INTO requests (id, username, role, dbname, state, statement, version, body) \
             VALUES ($1, $2, $3, $4, $5, $6, 1, $7)",
            &[
                &request.id,
                &request.user,
                &request.role,
                &request.database,
                &request.state.as_str(),
                &request.statement,
                &serde_json::to_string(&request)?,
            ],
        )
        .await?;
        append(&tx, vec![crate::service::filed_event(&request)]).await?;
        announce(&tx, "request").await?;
        tx.commit().await?;
        Ok((
            Versioned {
                value: request,
                version: 1,
            },
            true,
        ))
    }

    async fn request(&self, id: i64) -> Result<Option<Versioned<Request>>, StoreError> {
        let client = self.client().await?;
        versioned(
            client
                .query_opt("SELECT version, body FROM requests WHERE id = $1", &[&id])
                .await?,
        )
    }

    async fn requests(&self, filter: &RequestFilter) -> Result<Vec<Request>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT body FROM requests WHERE ($1::text IS NULL OR username = $1) AND ($2::text IS NULL OR state = $2) \
                 ORDER BY id DESC",
                &[&filter.user, &filter.state],
            )
            .await?;
        rows.iter()
            .map(|r| Ok(serde_json::from_str(r.get::<_, &str>(0))?))
            .collect()
    }

    async fn update_request(
        &self,
        request: &Request,
        expected: i64,
        grant: Option<GrantWrite>,
        audit: Vec<AuditEvent>,
    ) -> Result<Option<Option<Grant>>, StoreError> {
        let mut client = self.client().await?;
        let tx = write_tx(&mut client).await?;
        let n = tx
            .execute(
                "UPDATE requests SET state = $1, body = $2, version = version + 1 WHERE id = $3 AND version = $4",
                &[&request.state.as_str(), &serde_json::to_string(request)?, &request.id, &expected],
            )
            .await?;
        if n != 1 {
            return Ok(None);
        }
        let mut events = audit;
        let written = match grant {
            None => None,
            Some(GrantWrite::Insert(mut g)) => {
                g.id = next_id(&tx, "grants").await?;
                tx.execute(
                    "INSERT INTO grants (id, username, role, dbname, state, version, body) VALUES ($1, $2, $3, $4, $5, 1, $6)",
                    &[&g.id, &g.user, &g.role, &g.database, &g.state.as_str(), &serde_json::to_string(&g)?],
                )
                .await?;
                events.push(crate::service::grant_started_event(&g));
                Some(g)
            }
            Some(GrantWrite::Update(v)) => {
                if !cas_grant(&tx, &v.value, v.version).await? {
                    return Ok(None);
                }
                Some(v.value)
            }
        };
        append(&tx, events).await?;
        announce(&tx, "request").await?;
        tx.commit().await?;
        Ok(Some(written))
    }

    async fn grant(&self, id: i64) -> Result<Option<Versioned<Grant>>, StoreError> {
        let client = self.client().await?;
        versioned(
            client
                .query_opt("SELECT version, body FROM grants WHERE id = $1", &[&id])
                .await?,
        )
    }

    async fn grants(&self, filter: &GrantFilter) -> Result<Vec<Grant>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT body FROM grants WHERE ($1::text IS NULL OR username = $1) AND (NOT $2 OR state = 'active') \
                 ORDER BY id DESC",
                &[&filter.user, &filter.active_only],
            )
            .await?;
        rows.iter()
            .map(|r| Ok(serde_json::from_str(r.get::<_, &str>(0))?))
            .collect()
    }

    async fn update_grant(
        &self,
        grant: &Grant,
        expected: i64,
        audit: Vec<AuditEvent>,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = write_tx(&mut client).await?;
        if !cas_grant(&tx, grant, expected).await? {
            return Ok(false);
        }
        append(&tx, audit).await?;
        announce(&tx, "grant").await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn append_audit(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = write_tx(&mut client).await?;
        append(&tx, events).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let client = self.client().await?;
        let since = filter.since.as_ref().map(audit::time_text);
        let rows = client
            .query(
                "SELECT seq, at, kind, severity, actor, subject, detail, prev_hash, hash FROM audit \
                 WHERE ($1::text IS NULL OR actor = $1) AND ($2::text IS NULL OR kind LIKE $2 || '%') \
                 AND ($3::text IS NULL OR at >= $3) ORDER BY seq DESC LIMIT $4",
                &[&filter.actor, &filter.kind_prefix, &since, &filter.limit.unwrap_or(500)],
            )
            .await?;
        rows.iter().map(to_record).collect()
    }

    async fn audit_after(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT seq, at, kind, severity, actor, subject, detail, prev_hash, hash FROM audit \
                 WHERE seq > $1 ORDER BY seq LIMIT $2",
                &[&after, &limit],
            )
            .await?;
        rows.iter().map(to_record).collect()
    }

    async fn audit_head(&self) -> Result<(i64, String), StoreError> {
        let client = self.client().await?;
        let last = client
            .query_opt("SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1", &[])
            .await?;
        Ok(last
            .map(|r| (r.get::<_, i64>(0), r.get::<_, String>(1)))
            .unwrap_or((0, crate::audit::GENESIS.to_string())))
    }

    async fn cursor(&self, name: &str) -> Result<i64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT value FROM counters WHERE name = $1",
                &[&format!("cursor:{name}")],
            )
            .await?;
        Ok(row.map_or(0, |r| r.get(0)))
    }

    async fn set_cursor(&self, name: &str, value: i64) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO counters (name, value) VALUES ($1, $2) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                &[&format!("cursor:{name}"), &value],
            )
            .await?;
        Ok(())
    }

    async fn audit_all(&self) -> Result<Vec<AuditRecord>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query("SELECT seq, at, kind, severity, actor, subject, detail, prev_hash, hash FROM audit ORDER BY seq", &[])
            .await?;
        rows.iter().map(to_record).collect()
    }

    async fn alert_when(
        &self,
        alert: AuditEvent,
        counted: Kind,
        since: Time,
        threshold: i64,
    ) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = write_tx(&mut client).await?;
        let n: i64 = tx
            .query_one(
                ALERT_COUNT,
                &[
                    &counted.as_str(),
                    &alert.actor,
                    &audit::time_text(&since),
                    &alert.kind,
                ],
            )
            .await?
            .get(0);
        if n < threshold {
            return Ok(false);
        }
        append(&tx, vec![alert]).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn announce(&self, what: &str) -> Result<(), StoreError> {
        announce(&**self.client().await?, what).await
    }

    async fn credentials(&self) -> Result<crate::Epoch, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT name, value FROM counters WHERE name IN ($1, $2)",
                &[&crate::EPOCH, &crate::EPOCH_SINCE],
            )
            .await?;
        let get = |name: &str| {
            rows.iter()
                .find(|r| r.get::<_, &str>(0) == name)
                .map(|r| r.get::<_, i64>(1))
        };
        crate::Epoch::from_counters(get(crate::EPOCH), get(crate::EPOCH_SINCE))
    }

    async fn rotate_credentials(&self, event: AuditEvent) -> Result<i64, StoreError> {
        let mut client = self.client().await?;
        let tx = write_tx(&mut client).await?;
        let epoch: i64 = tx
            .query_one(
                "INSERT INTO counters (name, value) VALUES ($1, 1) \
                 ON CONFLICT (name) DO UPDATE SET value = counters.value + 1 RETURNING value",
                &[&crate::EPOCH],
            )
            .await?
            .get(0);
        tx.execute(
            "INSERT INTO counters (name, value) VALUES ($1, $2) \
             ON CONFLICT (name) DO UPDATE SET value = excluded.value",
            &[&crate::EPOCH_SINCE, &event.at.timestamp()],
        )
        .await?;
        append(&tx, vec![event.with_detail("epoch", epoch)]).await?;
        announce(&tx, "credentials").await?;
        tx.commit().await?;
        Ok(epoch)
    }

    async fn insert_token(
        &self,
        hash: &str,
        user: &str,
        expires_at: Time,
        audit: Vec<AuditEvent>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = write_tx(&mut client).await?;
        tx.execute(
            "INSERT INTO tokens (hash, username, expires_at, revoked) VALUES ($1, $2, $3, false)",
            &[&hash, &user, &audit::time_text(&expires_at)],
        )
        .await?;
        append(&tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn token(&self, hash: &str) -> Result<Option<TokenRow>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT username, expires_at, revoked FROM tokens WHERE hash = $1",
                &[&hash],
            )
            .await?;
        row.map(|r| {
            Ok(TokenRow {
                user: r.get(0),
                expires_at: parse_time(r.get(1))?,
                revoked: r.get(2),
            })
        })
        .transpose()
    }

    async fn revoke_token(&self, hash: &str, audit: Vec<AuditEvent>) -> Result<bool, StoreError> {
        let mut client = self.client().await?;
        let tx = write_tx(&mut client).await?;
        let n = tx
            .execute(
                "UPDATE tokens SET revoked = true WHERE hash = $1 AND NOT revoked",
                &[&hash],
            )
            .await?;
        if n == 1 {
            append(&tx, audit).await?;
        }
        tx.commit().await?;
        Ok(n == 1)
    }

    async fn put_record(
        &self,
        key: &str,
        value: &str,
        now: Time,
        expires_at: Time,
        audit: Vec<AuditEvent>,
    ) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = write_tx(&mut client).await?;
        let now = audit::time_text(&now);
        tx.execute("DELETE FROM records WHERE expires_at < $1", &[&now])
            .await?;
        tx.execute(
            "INSERT INTO records (key, value, expires_at) VALUES ($1, $2, $3)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
            &[&key, &value, &audit::time_text(&expires_at)],
        )
        .await?;
        append(&tx, audit).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn claim_record(
        &self,
        key: &str,
        value: &str,
        now: Time,
        expires_at: Time,
    ) -> Result<Option<String>, StoreError> {
        let mut client = self.client().await?;
        // Writers hold the advisory lock: the read and the write are one step.
        let tx = write_tx(&mut client).await?;
        let held = tx
            .query_opt(
                "SELECT value FROM records WHERE key = $1 AND expires_at > $2",
                &[&key, &audit::time_text(&now)],
            )
            .await?
            .map(|r| r.get::<_, String>(0));
        if held.is_none() {
            tx.execute(
                "INSERT INTO records (key, value, expires_at) VALUES ($1, $2, $3)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                &[&key, &value, &audit::time_text(&expires_at)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(held)
    }

    async fn record(&self, key: &str, now: Time) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT value FROM records WHERE key = $1 AND expires_at > $2",
                &[&key, &audit::time_text(&now)],
            )
            .await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn take_record(&self, key: &str, now: Time) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "DELETE FROM records WHERE key = $1 RETURNING value, expires_at",
                &[&key],
            )
            .await?;
        let now = audit::time_text(&now);
        Ok(row
            .filter(|r| r.get::<_, String>(1) > now)
            .map(|r| r.get(0)))
    }

    async fn records(&self, prefix: &str, now: Time) -> Result<Vec<(String, String)>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT key, value FROM records WHERE starts_with(key, $1) AND expires_at > $2 \
                 ORDER BY key",
                &[&prefix, &audit::time_text(&now)],
            )
            .await?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}
