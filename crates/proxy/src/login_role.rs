//! Login roles: the per-user database role the gateway logs in as (`jit_<user>`).
//!
//! On a user's first connection (per gateway process) the role is created if
//! missing, given a fresh random password, and granted the database's baseline
//! roles. The password lives only in this process's memory: every gateway start
//! sets a new one (as a SCRAM verifier, so the plain text never reaches the
//! server's logs). Keeping it, encrypted, in the state store would let several
//! replicas share it; that needs key handling and is not done yet.
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
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
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

/// One provisioning per (database, user), shared by racing first connections.
type Cell = Arc<OnceCell<Arc<LoginRole>>>;

pub struct LoginRoles {
    prefix: String,
    cells: Mutex<HashMap<(String, String), Cell>>,
}

pub use postgres_protocol::escape::escape_identifier as quote_ident;
use postgres_protocol::escape::escape_literal as quote_literal;

impl LoginRoles {
    pub fn new(prefix: &str) -> LoginRoles {
        LoginRoles {
            prefix: prefix.to_string(),
            cells: Mutex::new(HashMap::new()),
        }
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
        let password = B64.encode(rand::random::<[u8; 24]>());
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
                    tx.batch_execute(&format!("GRANT {} TO {ident}", quote_ident(role)))
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
        Ok(Arc::new(LoginRole { name, password }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_and_literals_are_quoted() {
        assert_eq!(quote_ident("a\"b"), "\"a\"\"b\"");
        assert_eq!(quote_literal("it's"), "'it''s'");
    }
}
