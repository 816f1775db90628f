//! The embedded backend: one SQLite file in WAL mode, `synchronous = FULL` (a
//! committed decision survives a crash), writers serialised by `BEGIN IMMEDIATE`.
//! rusqlite is synchronous, so each call runs on tokio's blocking pool.

use crate::audit::{self, AuditEvent, AuditRecord, Severity, GENESIS};
use crate::Kind;
use crate::{
    AuditFilter, GrantFilter, GrantWrite, RequestFilter, Store, StoreError, TokenRow, Versioned,
    MIGRATION_1,
};
use policy::{Grant, Request, Time};
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};
use std::sync::{Arc, Mutex};

pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

fn parse_time(s: &str) -> Result<Time, StoreError> {
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| StoreError::Corrupt(format!("time {s:?}: {e}")))
}

impl SqliteStore {
    pub fn open(path: &str) -> Result<SqliteStore, StoreError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(MIGRATION_1)?;
        Ok(SqliteStore {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || f(&mut conn.lock().unwrap()))
            .await
            .map_err(|e| StoreError::Backend(format!("store task failed: {e}")))?
    }
}

fn write_tx(conn: &mut Connection) -> Result<Transaction<'_>, StoreError> {
    Ok(conn.transaction_with_behavior(TransactionBehavior::Immediate)?)
}

fn append(tx: &Transaction<'_>, events: Vec<AuditEvent>) -> Result<(), StoreError> {
    if events.is_empty() {
        return Ok(());
    }
    let last: Option<(i64, String)> = tx
        .query_row(
            "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let (seq, hash) = last.unwrap_or((0, GENESIS.to_string()));
    let mut stmt = tx.prepare_cached(
        "INSERT INTO audit (seq, at, kind, severity, actor, subject, detail, prev_hash, hash) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
    )?;
    for r in audit::link(events, seq, &hash) {
        stmt.execute(params![
            r.seq,
            audit::time_text(&r.event.at),
            r.event.kind,
            r.event.severity.as_str(),
            r.event.actor,
            r.event.subject,
            r.event.detail.to_string(),
            r.prev_hash,
            r.hash
        ])?;
    }
    Ok(())
}

/// One row's JSON body and version, from `requests` or `grants`.
fn load_versioned<T: serde::de::DeserializeOwned>(
    conn: &Connection,
    table: &str,
    id: i64,
) -> Result<Option<Versioned<T>>, StoreError> {
    let row: Option<(i64, String)> = conn
        .query_row(
            &format!("SELECT version, body FROM {table} WHERE id = ?1"),
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    row.map(|(version, body)| {
        Ok(Versioned {
            value: serde_json::from_str(&body)?,
            version,
        })
    })
    .transpose()
}

fn next_id(tx: &Transaction<'_>, table: &str) -> Result<i64, StoreError> {
    Ok(tx.query_row(
        &format!("SELECT COALESCE(MAX(id), 0) + 1 FROM {table}"),
        [],
        |r| r.get(0),
    )?)
}

fn insert_grant(tx: &Transaction<'_>, mut grant: Grant) -> Result<Grant, StoreError> {
    grant.id = next_id(tx, "grants")?;
    tx.execute(
        "INSERT INTO grants (id, username, role, dbname, state, version, body) VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)",
        params![grant.id, grant.user, grant.role, grant.database, grant.state.as_str(), serde_json::to_string(&grant)?],
    )?;
    Ok(grant)
}

fn cas_grant(tx: &Transaction<'_>, grant: &Grant, expected: i64) -> Result<bool, StoreError> {
    let n = tx.execute(
        "UPDATE grants SET state = ?1, body = ?2, version = version + 1 WHERE id = ?3 AND version = ?4",
        params![grant.state.as_str(), serde_json::to_string(grant)?, grant.id, expected],
    )?;
    Ok(n == 1)
}

/// An audit row as stored: seq, at, kind, severity, actor, subject, detail,
/// prev_hash, hash.
type RawAudit = (
    i64,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
    String,
);

fn audit_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<RawAudit> {
    Ok((
        r.get(0)?,
        r.get(1)?,
        r.get(2)?,
        r.get(3)?,
        r.get(4)?,
        r.get(5)?,
        r.get(6)?,
        r.get(7)?,
        r.get(8)?,
    ))
}

fn to_record(raw: RawAudit) -> Result<AuditRecord, StoreError> {
    let (seq, at, kind, severity, actor, subject, detail, prev_hash, hash) = raw;
    Ok(AuditRecord {
        seq,
        event: AuditEvent {
            at: parse_time(&at)?,
            kind,
            severity: if severity == "alert" {
                Severity::Alert
            } else {
                Severity::Info
            },
            actor,
            subject,
            detail: serde_json::from_str(&detail)?,
        },
        prev_hash,
        hash,
    })
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn insert_request(
        &self,
        request: Request,
    ) -> Result<(Versioned<Request>, bool), StoreError> {
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let now = request.created_at;
            let pending: Vec<(i64, String)> = tx
                .prepare(
                    "SELECT version, body FROM requests WHERE username = ?1 AND role = ?2 AND dbname = ?3 \
                     AND state = 'pending' AND statement IS ?4",
                )?
                .query_map(params![request.user, request.role, request.database, request.statement], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<Result<_, _>>()?;
            for (version, body) in pending {
                let existing: Request = serde_json::from_str(&body)?;
                if existing.expires_at > now {
                    return Ok((Versioned { value: existing, version }, false));
                }
            }
            let mut request = request;
            let grants: Vec<String> = tx
                .prepare("SELECT body FROM grants WHERE username = ?1 AND role = ?2 AND dbname = ?3 AND state = 'active'")?
                .query_map(params![request.user, request.role, request.database], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            for body in grants {
                let g: Grant = serde_json::from_str(&body)?;
                if g.is_active(now) && request.statement.is_none() {
                    request.extends_grant = Some(g.id);
                }
            }
            request.id = next_id(&tx, "requests")?;
            tx.execute(
                "INSERT INTO requests (id, username, role, dbname, state, statement, version, body) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, 1, ?7)",
                params![
                    request.id,
                    request.user,
                    request.role,
                    request.database,
                    request.state.as_str(),
                    request.statement,
                    serde_json::to_string(&request)?
                ],
            )?;
            append(&tx, vec![crate::service::filed_event(&request)])?;
            tx.commit()?;
            Ok((Versioned { value: request, version: 1 }, true))
        })
        .await
    }

    async fn request(&self, id: i64) -> Result<Option<Versioned<Request>>, StoreError> {
        self.run(move |conn| load_versioned(conn, "requests", id))
            .await
    }

    async fn requests(&self, filter: &RequestFilter) -> Result<Vec<Request>, StoreError> {
        let f = filter.clone();
        self.run(move |conn| {
            let bodies: Vec<String> = conn
                .prepare(
                    "SELECT body FROM requests WHERE (?1 IS NULL OR username = ?1) AND (?2 IS NULL OR state = ?2) \
                     ORDER BY id DESC",
                )?
                .query_map(params![f.user, f.state], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            bodies.iter().map(|b| Ok(serde_json::from_str(b)?)).collect()
        })
        .await
    }

    async fn update_request(
        &self,
        request: &Request,
        expected: i64,
        grant: Option<GrantWrite>,
        audit: Vec<AuditEvent>,
    ) -> Result<Option<Option<Grant>>, StoreError> {
        let request = request.clone();
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let n = tx.execute(
                "UPDATE requests SET state = ?1, body = ?2, version = version + 1 WHERE id = ?3 AND version = ?4",
                params![request.state.as_str(), serde_json::to_string(&request)?, request.id, expected],
            )?;
            if n != 1 {
                return Ok(None);
            }
            let mut events = audit;
            let written = match grant {
                None => None,
                Some(GrantWrite::Insert(g)) => {
                    let g = insert_grant(&tx, g)?;
                    events.push(crate::service::grant_started_event(&g));
                    Some(g)
                }
                Some(GrantWrite::Update(v)) => {
                    if !cas_grant(&tx, &v.value, v.version)? {
                        return Ok(None);
                    }
                    Some(v.value)
                }
            };
            append(&tx, events)?;
            tx.commit()?;
            Ok(Some(written))
        })
        .await
    }

    async fn grant(&self, id: i64) -> Result<Option<Versioned<Grant>>, StoreError> {
        self.run(move |conn| load_versioned(conn, "grants", id))
            .await
    }

    async fn grants(&self, filter: &GrantFilter) -> Result<Vec<Grant>, StoreError> {
        let f = filter.clone();
        self.run(move |conn| {
            let bodies: Vec<String> = conn
                .prepare(
                    "SELECT body FROM grants WHERE (?1 IS NULL OR username = ?1) AND (?2 = 0 OR state = 'active') \
                     ORDER BY id DESC",
                )?
                .query_map(params![f.user, f.active_only as i64], |r| r.get(0))?
                .collect::<Result<_, _>>()?;
            bodies.iter().map(|b| Ok(serde_json::from_str(b)?)).collect()
        })
        .await
    }

    async fn update_grant(
        &self,
        grant: &Grant,
        expected: i64,
        audit: Vec<AuditEvent>,
    ) -> Result<bool, StoreError> {
        let grant = grant.clone();
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            if !cas_grant(&tx, &grant, expected)? {
                return Ok(false);
            }
            append(&tx, audit)?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn append_audit(&self, events: Vec<AuditEvent>) -> Result<(), StoreError> {
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            append(&tx, events)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn audit(&self, filter: &AuditFilter) -> Result<Vec<AuditRecord>, StoreError> {
        let f = filter.clone();
        self.run(move |conn| {
            let rows: Vec<RawAudit> = conn
                .prepare(
                    "SELECT seq, at, kind, severity, actor, subject, detail, prev_hash, hash FROM audit \
                     WHERE (?1 IS NULL OR actor = ?1) AND (?2 IS NULL OR kind LIKE ?2 || '%') \
                     AND (?3 IS NULL OR at >= ?3) ORDER BY seq DESC LIMIT ?4",
                )?
                .query_map(
                    params![f.actor, f.kind_prefix, f.since.as_ref().map(audit::time_text), f.limit.unwrap_or(500)],
                    audit_row,
                )?
                .collect::<Result<_, _>>()?;
            rows.into_iter().map(to_record).collect()
        })
        .await
    }

    async fn audit_after(&self, after: i64, limit: i64) -> Result<Vec<AuditRecord>, StoreError> {
        self.run(move |conn| {
            let rows: Vec<RawAudit> = conn
                .prepare("SELECT seq, at, kind, severity, actor, subject, detail, prev_hash, hash FROM audit WHERE seq > ?1 ORDER BY seq LIMIT ?2")?
                .query_map(params![after, limit], audit_row)?
                .collect::<Result<_, _>>()?;
            rows.into_iter().map(to_record).collect()
        })
        .await
    }

    async fn audit_head(&self) -> Result<(i64, String), StoreError> {
        self.run(move |conn| {
            let last: Option<(i64, String)> = conn
                .query_row(
                    "SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            Ok(last.unwrap_or((0, GENESIS.to_string())))
        })
        .await
    }

    async fn cursor(&self, name: &str) -> Result<i64, StoreError> {
        let name = format!("cursor:{name}");
        self.run(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT value FROM counters WHERE name = ?1",
                    params![name],
                    |r| r.get(0),
                )
                .optional()?
                .unwrap_or(0))
        })
        .await
    }

    async fn set_cursor(&self, name: &str, value: i64) -> Result<(), StoreError> {
        let name = format!("cursor:{name}");
        self.run(move |conn| {
            conn.execute(
                "INSERT INTO counters (name, value) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![name, value],
            )?;
            Ok(())
        })
        .await
    }

    async fn alert_when(
        &self,
        alert: AuditEvent,
        counted: Kind,
        since: Time,
        threshold: i64,
    ) -> Result<bool, StoreError> {
        let counted = counted.as_str();
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let n: i64 = tx.query_row(
                "SELECT count(*) FROM audit WHERE kind = ?1 AND actor = ?2 AND at >= ?3 \
                 AND seq > COALESCE((SELECT max(seq) FROM audit WHERE kind = ?4 AND actor = ?2), 0)",
                params![counted, alert.actor, audit::time_text(&since), alert.kind],
                |r| r.get(0),
            )?;
            if n < threshold {
                return Ok(false);
            }
            append(&tx, vec![alert])?;
            tx.commit()?;
            Ok(true)
        })
        .await
    }

    async fn credentials(&self) -> Result<crate::Epoch, StoreError> {
        self.run(move |conn| {
            let get = |name: &str| -> Result<Option<i64>, StoreError> {
                Ok(conn
                    .query_row(
                        "SELECT value FROM counters WHERE name = ?1",
                        params![name],
                        |r| r.get(0),
                    )
                    .optional()?)
            };
            crate::Epoch::from_counters(get(crate::EPOCH)?, get(crate::EPOCH_SINCE)?)
        })
        .await
    }

    async fn rotate_credentials(&self, event: AuditEvent) -> Result<i64, StoreError> {
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let since = event.at.timestamp();
            let epoch: i64 = tx.query_row(
                "INSERT INTO counters (name, value) VALUES (?1, 1) \
                 ON CONFLICT (name) DO UPDATE SET value = value + 1 RETURNING value",
                params![crate::EPOCH],
                |r| r.get(0),
            )?;
            tx.execute(
                "INSERT INTO counters (name, value) VALUES (?1, ?2) \
                 ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                params![crate::EPOCH_SINCE, since],
            )?;
            append(&tx, vec![event.with_detail("epoch", epoch)])?;
            tx.commit()?;
            Ok(epoch)
        })
        .await
    }

    async fn audit_all(&self) -> Result<Vec<AuditRecord>, StoreError> {
        self.run(move |conn| {
            let rows: Vec<RawAudit> = conn
                .prepare("SELECT seq, at, kind, severity, actor, subject, detail, prev_hash, hash FROM audit ORDER BY seq")?
                .query_map([], audit_row)?
                .collect::<Result<_, _>>()?;
            rows.into_iter().map(to_record).collect()
        })
        .await
    }

    async fn insert_token(
        &self,
        hash: &str,
        user: &str,
        expires_at: Time,
        audit: Vec<AuditEvent>,
    ) -> Result<(), StoreError> {
        let (hash, user) = (hash.to_string(), user.to_string());
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            tx.execute(
                "INSERT INTO tokens (hash, username, expires_at, revoked) VALUES (?1, ?2, ?3, 0)",
                params![hash, user, audit::time_text(&expires_at)],
            )?;
            append(&tx, audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn token(&self, hash: &str) -> Result<Option<TokenRow>, StoreError> {
        let hash = hash.to_string();
        self.run(move |conn| {
            let row: Option<(String, String, bool)> = conn
                .query_row(
                    "SELECT username, expires_at, revoked FROM tokens WHERE hash = ?1",
                    [hash],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                )
                .optional()?;
            row.map(|(user, exp, revoked)| {
                Ok(TokenRow {
                    user,
                    expires_at: parse_time(&exp)?,
                    revoked,
                })
            })
            .transpose()
        })
        .await
    }

    async fn revoke_token(&self, hash: &str, audit: Vec<AuditEvent>) -> Result<bool, StoreError> {
        let hash = hash.to_string();
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let n = tx.execute(
                "UPDATE tokens SET revoked = 1 WHERE hash = ?1 AND NOT revoked",
                [hash],
            )?;
            if n == 1 {
                append(&tx, audit)?;
            }
            tx.commit()?;
            Ok(n == 1)
        })
        .await
    }

    async fn put_record(
        &self,
        key: &str,
        value: &str,
        now: Time,
        expires_at: Time,
        audit: Vec<AuditEvent>,
    ) -> Result<(), StoreError> {
        let (key, value) = (key.to_string(), value.to_string());
        let now = audit::time_text(&now);
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            tx.execute("DELETE FROM records WHERE expires_at < ?1", [now])?;
            tx.execute(
                "INSERT INTO records (key, value, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                params![key, value, audit::time_text(&expires_at)],
            )?;
            append(&tx, audit)?;
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn claim_record(
        &self,
        key: &str,
        value: &str,
        now: Time,
        expires_at: Time,
    ) -> Result<Option<String>, StoreError> {
        let (key, value) = (key.to_string(), value.to_string());
        let (now, expires_at) = (audit::time_text(&now), audit::time_text(&expires_at));
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let held: Option<String> = tx
                .query_row(
                    "SELECT value FROM records WHERE key = ?1 AND expires_at > ?2",
                    [&key, &now],
                    |r| r.get(0),
                )
                .optional()?;
            if held.is_none() {
                tx.execute(
                    "INSERT INTO records (key, value, expires_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
                    params![key, value, expires_at],
                )?;
            }
            tx.commit()?;
            Ok(held)
        })
        .await
    }

    async fn record(&self, key: &str, now: Time) -> Result<Option<String>, StoreError> {
        let (key, now) = (key.to_string(), audit::time_text(&now));
        self.run(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT value FROM records WHERE key = ?1 AND expires_at > ?2",
                    [key, now],
                    |r| r.get(0),
                )
                .optional()?)
        })
        .await
    }

    async fn take_record(&self, key: &str, now: Time) -> Result<Option<String>, StoreError> {
        let (key, now) = (key.to_string(), audit::time_text(&now));
        self.run(move |conn| {
            let tx = write_tx(conn)?;
            let value: Option<(String, String)> = tx
                .query_row(
                    "DELETE FROM records WHERE key = ?1 RETURNING value, expires_at",
                    [key],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            tx.commit()?;
            Ok(value.filter(|(_, exp)| *exp > now).map(|(v, _)| v))
        })
        .await
    }

    async fn records(&self, prefix: &str, now: Time) -> Result<Vec<(String, String)>, StoreError> {
        let (prefix, now) = (prefix.to_string(), audit::time_text(&now));
        self.run(move |conn| {
            let rows = conn
                .prepare(
                    "SELECT key, value FROM records WHERE substr(key, 1, length(?1)) = ?1 \
                     AND expires_at > ?2 ORDER BY key",
                )?
                .query_map([prefix, now], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()?;
            Ok(rows)
        })
        .await
    }
}
