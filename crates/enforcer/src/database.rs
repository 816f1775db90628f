//! The privilege SQL jitgate runs in a database, through its admin role.
//! This module is the only place that writes GRANT or REVOKE.

use crate::hook::Builtins;
use proxy::login_role::{quote_ident, Admin, ProvisionError};

/// One membership to add or remove: `role` for `login_role`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Membership {
    pub role: String,
    pub login_role: String,
}

pub async fn grant(admin: &Admin, m: &Membership) -> Result<(), ProvisionError> {
    let sql = format!(
        "GRANT {} TO {}",
        quote_ident(&m.role),
        quote_ident(&m.login_role)
    );
    admin
        .with_client(async |c| Ok(c.batch_execute(&sql).await?))
        .await
}

/// Revokes all of `ms` in one round trip (1,000 grants ending in the same
/// second are one batch, not 1,000 waits).
pub async fn revoke(admin: &Admin, ms: &[Membership]) -> Result<(), ProvisionError> {
    if ms.is_empty() {
        return Ok(());
    }
    let sql: String = ms
        .iter()
        .map(|m| {
            format!(
                "REVOKE {} FROM {};",
                quote_ident(&m.role),
                quote_ident(&m.login_role)
            )
        })
        .collect();
    admin
        .with_client(async |c| Ok(c.batch_execute(&sql).await?))
        .await
}

/// Memberships of any of `roles` held by roles named `<prefix>...` (login roles).
pub async fn memberships(
    admin: &Admin,
    roles: &[String],
    prefix: &str,
) -> Result<Vec<Membership>, ProvisionError> {
    let rows = admin
        .with_client(async |c| {
            Ok(c.query(
                "SELECT r.rolname::text, m.rolname::text FROM pg_auth_members am \
                 JOIN pg_roles r ON r.oid = am.roleid JOIN pg_roles m ON m.oid = am.member \
                 WHERE r.rolname = ANY($1)",
                &[&roles],
            )
            .await?)
        })
        .await?;
    Ok(rows
        .iter()
        .map(|r| Membership {
            role: r.get(0),
            login_role: r.get(1),
        })
        .filter(|m| m.login_role.starts_with(prefix))
        .collect())
}

/// The database's built-in functions (below FirstNormalObjectId, 16384).
pub async fn builtins(admin: &Admin) -> Result<Builtins, ProvisionError> {
    let rows = admin
        .with_client(async |c| {
            Ok(c.query(
                "SELECT oid::int8, proname::text FROM pg_proc WHERE oid < 16384",
                &[],
            )
            .await?)
        })
        .await?;
    let mut b = Builtins::default();
    for r in rows {
        let oid: i64 = r.get(0);
        let name: String = r.get(1);
        b.names.insert(name.to_ascii_lowercase());
        b.by_oid.insert(oid as u32, name);
    }
    Ok(b)
}
