//! Login roles: the per-user database role the gateway logs in as (`jit_<user>`).
//!
//! On a user's first connection (per gateway process) the role is created if
//! missing, given its password, and granted the database's baseline roles.
//!
//! Passwords ([`Credentials`]) are derived, never stored: HMAC-SHA256 of the
//! cluster secret, the epoch and the role name. Replicas sharing a state store
//! share the secret and read the epoch from the store, so each derives the
//! same password and setting it again changes nothing for the others; a
//! rotation moves every replica to the next epoch. Without a cluster secret
//! (one process, SQLite) the secret is random per process, so every start
//! sets new passwords. The password is set as a SCRAM verifier, so the plain
//! text never reaches the server's logs.
//!
//! Racing first connections: one in-process `OnceCell` per (database, user)
//! makes them share a single provisioning, and a transaction-scoped advisory
//! lock serialises gateways that share a database.
//!
//! Fail closed: an existing role with SUPERUSER, CREATEROLE, CREATEDB,
//! REPLICATION or BYPASSRLS is never used as a login role.

use crate::upstream::{Target, UpstreamError};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use tokio::sync::{Mutex as AsyncMutex, OnceCell};
use tokio_postgres::{Client, NoTls};

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("cannot connect as the admin role: {0}")]
    AdminConnect(#[from] UpstreamError),
    #[error("{0}")]
    Sql(String),
    #[error("role {role} already exists with {attrs}; jitgate will not log in as it")]
    Unsafe { role: String, attrs: String },
}

impl From<tokio_postgres::Error> for ProvisionError {
    fn from(e: tokio_postgres::Error) -> Self {
        match e.as_db_error() {
            Some(db) => ProvisionError::Sql(db.message().to_string()),
            None => ProvisionError::Sql(e.to_string()),
        }
    }
}

pub struct LoginRole {
    pub name: String,
    pub password: String,
    /// The epoch the password was derived for.
    pub epoch: i64,
}

impl std::fmt::Debug for LoginRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LoginRole({})", self.name)
    }
}

/// Admin access to one database, used for provisioning.
pub struct Admin {
    target: Target,
    config: tokio_postgres::Config,
    baseline_roles: Vec<String>,
    client: AsyncMutex<Option<Client>>,
}

impl Admin {
    pub fn new(
        target: Target,
        config: tokio_postgres::Config,
        baseline_roles: Vec<String>,
    ) -> Admin {
        Admin {
            target,
            config,
            baseline_roles,
            client: AsyncMutex::new(None),
        }
    }

    /// Runs `f` with a live admin client, reconnecting if the last one died.
    /// One client per database, used one operation at a time.
    pub async fn with_client<T>(
        &self,
        f: impl AsyncFnOnce(&mut Client) -> Result<T, ProvisionError>,
    ) -> Result<T, ProvisionError> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(|c| c.is_closed()) {
            let stream = self.target.transport().await?;
            let (client, conn) = self.config.connect_raw(stream, NoTls).await?;
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(error = %e, "admin connection ended");
                }
            });
            *guard = Some(client);
        }
        f(guard.as_mut().expect("set above")).await
    }
}

/// Where the current epoch is kept (the state store); without one, the epoch
/// is whatever [`Credentials::set_epoch`] was told last.
pub trait EpochSource: Send + Sync {
    fn current(&self) -> Pin<Box<dyn Future<Output = Result<i64, String>> + Send + '_>>;
}

/// The login roles' passwords: derived from a secret and an epoch.
pub struct Credentials {
    secret: Vec<u8>,
    epoch: AtomicI64,
    source: OnceLock<Arc<dyn EpochSource>>,
}

impl Credentials {
    /// `None`: a random secret of this process's own.
    pub fn new(secret: Option<Vec<u8>>) -> Credentials {
        Credentials {
            secret: secret.unwrap_or_else(|| rand::random::<[u8; 32]>().to_vec()),
            epoch: AtomicI64::new(0),
            source: OnceLock::new(),
        }
    }

    pub fn set_source(&self, source: Arc<dyn EpochSource>) {
        let _ = self.source.set(source);
    }

    /// The epoch last read.
    pub fn epoch(&self) -> i64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// True when it moved.
    pub fn set_epoch(&self, epoch: i64) -> bool {
        self.epoch.swap(epoch, Ordering::Relaxed) != epoch
    }

    /// The current epoch, read again from the source when there is one. A
    /// source that does not answer leaves the epoch last read: logins go on
    /// while the state store is away (only a rotation made meanwhile is
    /// missed, and followed once it is back).
    pub async fn refresh(&self) -> Result<i64, ProvisionError> {
        if let Some(source) = self.source.get() {
            match source.current().await {
                Ok(e) => {
                    self.set_epoch(e);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the credential epoch; using the last one read")
                }
            }
        }
        Ok(self.epoch())
    }

    /// The password of `role` in `epoch`: 32 bytes of HMAC, base64.
    pub fn password(&self, role: &str, epoch: i64) -> String {
        let mut m =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key length");
        m.update(b"jitgate login-role password\0");
        m.update(epoch.to_string().as_bytes());
        m.update(b"\0");
        m.update(role.as_bytes());
        B64.encode(m.finalize().into_bytes())
    }
}

/// One provisioning per (database, user), shared by racing first connections.
type Cell = Arc<OnceCell<Arc<LoginRole>>>;

pub struct LoginRoles {
    prefix: String,
    cells: Mutex<HashMap<(String, String), Cell>>,
    pub credentials: Arc<Credentials>,
}

pub use postgres_protocol::escape::escape_identifier as quote_ident;
use postgres_protocol::escape::escape_literal as quote_literal;

/// `GRANT role TO member`, quoted: the one spelling of a membership the
/// gateway gives (baseline roles here, grants in the enforcer, the EXPLAIN
/// preview's uncommitted one).
pub fn grant_sql(role: &str, member: &str) -> String {
    format!("GRANT {} TO {}", quote_ident(role), quote_ident(member))
}

/// `REVOKE role FROM member`, quoted.
pub fn revoke_sql(role: &str, member: &str) -> String {
    format!("REVOKE {} FROM {}", quote_ident(role), quote_ident(member))
}

impl LoginRoles {
    pub fn new(prefix: &str, credentials: Arc<Credentials>) -> LoginRoles {
        LoginRoles {
            prefix: prefix.to_string(),
            cells: Mutex::new(HashMap::new()),
            credentials,
        }
    }

    /// Forgets every login role: the next connections provision them again
    /// (after a rotation, with the new epoch's passwords).
    pub fn forget_all(&self) {
        self.cells.lock().unwrap().clear();
    }

    /// Whether the epoch moved past the one `role`'s password was derived for
    /// (a rotation, not someone changing the password behind our back).
    pub async fn rotated(&self, role: &LoginRole) -> bool {
        matches!(self.credentials.refresh().await, Ok(e) if e != role.epoch)
    }

    /// `<prefix><user>`, exactly: role names are case-sensitive (we always
    /// quote them), so users `Ann` and `ann` never share a login role.
    pub fn name_for(&self, user: &str) -> String {
        format!("{}{}", self.prefix, user)
    }

    /// Forgets the user's login role on this database: the next [`Self::ensure`]
    /// provisions it again, with a new password.
    pub fn forget(&self, database: &str, user: &str) {
        self.cells
            .lock()
            .unwrap()
            .remove(&(database.to_string(), user.to_string()));
    }

    /// The user's login role on this database, provisioned on first use.
    pub async fn ensure(
        &self,
        database: &str,
        admin: &Admin,
        user: &str,
    ) -> Result<Arc<LoginRole>, ProvisionError> {
        let cell = self
            .cells
            .lock()
            .unwrap()
            .entry((database.to_string(), user.to_string()))
            .or_default()
            .clone();
        cell.get_or_try_init(|| self.provision(admin, user))
            .await
            .cloned()
    }

    async fn provision(&self, admin: &Admin, user: &str) -> Result<Arc<LoginRole>, ProvisionError> {
        let name = self.name_for(user);
        let epoch = self.credentials.refresh().await?;
        let password = self.credentials.password(&name, epoch);
        let verifier = postgres_protocol::password::scram_sha_256(password.as_bytes());
        let ident = quote_ident(&name);
        admin
            .with_client(async |client| {
                let tx = client.transaction().await?;
                tx.execute(
                    "SELECT pg_advisory_xact_lock(20260, hashtext($1))",
                    &[&name],
                )
                .await?;
                let row = tx
                    .query_opt(
                        "SELECT rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls \
                         FROM pg_roles WHERE rolname = $1",
                        &[&name],
                    )
                    .await?;
                match row {
                    None => {
                        tx.batch_execute(&format!(
                            "CREATE ROLE {ident} LOGIN INHERIT NOSUPERUSER NOCREATEDB NOCREATEROLE \
                             NOREPLICATION NOBYPASSRLS PASSWORD {}; \
                             COMMENT ON ROLE {ident} IS {}",
                            quote_literal(&verifier),
                            quote_literal(&format!(
                                "jitgate login role of user {user}; only the gateway knows its password"
                            )),
                        ))
                        .await?;
                    }
                    Some(row) => {
                        let attrs: Vec<&str> = ["SUPERUSER", "CREATEROLE", "CREATEDB", "REPLICATION", "BYPASSRLS"]
                            .into_iter()
                            .enumerate()
                            .filter(|(i, _)| row.get::<_, bool>(*i))
                            .map(|(_, a)| a)
                            .collect();
                        if !attrs.is_empty() {
                            return Err(ProvisionError::Unsafe {
                                role: name.clone(),
                                attrs: attrs.join(", "),
                            });
                        }
                        tx.batch_execute(&format!(
                            "ALTER ROLE {ident} WITH LOGIN PASSWORD {}",
                            quote_literal(&verifier)
                        ))
                        .await?;
                    }
                }
                for role in &admin.baseline_roles {
                    tx.batch_execute(&grant_sql(role, &name))
                        .await
                        .map_err(|e| {
                            ProvisionError::Sql(format!(
                                "granting baseline role {role}: {}",
                                ProvisionError::from(e)
                            ))
                        })?;
                }
                tx.commit().await?;
                Ok(())
            })
            .await?;
        tracing::info!(login_role = %name, "login role ready");
        Ok(Arc::new(LoginRole {
            name,
            password,
            epoch,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_depend_on_secret_epoch_and_role() {
        let a = Credentials::new(Some(b"0123456789abcdef".to_vec()));
        let b = Credentials::new(Some(b"0123456789abcdef".to_vec()));
        assert_eq!(a.password("jit_alice", 3), b.password("jit_alice", 3));
        assert_ne!(a.password("jit_alice", 3), a.password("jit_alice", 4));
        assert_ne!(a.password("jit_alice", 3), a.password("jit_bob", 3));
        let c = Credentials::new(Some(b"0123456789abcdeF".to_vec()));
        assert_ne!(a.password("jit_alice", 3), c.password("jit_alice", 3));
        assert_ne!(
            Credentials::new(None).password("r", 0),
            Credentials::new(None).password("r", 0)
        );
        assert_eq!(a.password("r", 0).len(), 43);
    }

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
