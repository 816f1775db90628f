//! The privilege SQL jitgate runs in a database, through its admin role.
//! This module is the only place that writes GRANT or REVOKE.

use policy::catalog::Builtins;
use proxy::login_role::{grant_sql, quote_ident, revoke_sql, Admin, ProvisionError};

/// One membership to add or remove: `role` for `login_role`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Membership {
    pub role: String,
    pub login_role: String,
}

/// Runs `sql` (one or more statements) as the admin role.
async fn execute(admin: &Admin, sql: &str) -> Result<(), ProvisionError> {
    admin
        .with_client(async |c| Ok(c.batch_execute(sql).await?))
        .await
}

pub async fn grant(admin: &Admin, m: &Membership) -> Result<(), ProvisionError> {
    execute(admin, &grant_sql(&m.role, &m.login_role)).await
}

/// Revokes all of `ms` in one round trip (1,000 grants ending in the same
/// second are one batch, not 1,000 waits).
pub async fn revoke(admin: &Admin, ms: &[Membership]) -> Result<(), ProvisionError> {
    if ms.is_empty() {
        return Ok(());
    }
    let sql: String = ms
        .iter()
        .map(|m| revoke_sql(&m.role, &m.login_role) + ";")
        .collect();
    execute(admin, &sql).await
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
    // Built-in (below FirstNormalObjectId) functions, operators and types,
    // and the names user-defined ones take (which then are not built in).
    let rows = admin
        .with_client(async |c| {
            Ok(c.query(
                "SELECT 'f', oid::int8, proname::text FROM pg_proc
                 UNION ALL SELECT 'o', oid::int8, oprname::text FROM pg_operator
                 UNION ALL SELECT 't', oid::int8, typname::text FROM pg_type",
                &[],
            )
            .await?)
        })
        .await?;
    let mut b = Builtins::default();
    let mut user = std::collections::HashSet::new();
    for r in rows {
        let kind: &str = r.get(0);
        let oid: i64 = r.get(1);
        let name: String = r.get(2);
        let lower = name.to_ascii_lowercase();
        if oid >= 16384 {
            if kind == "f" {
                b.user_functions.insert(oid as u32);
            }
            user.insert(lower);
            continue;
        }
        match kind {
            "f" => {
                b.by_oid.insert(oid as u32, name);
                b.functions.insert(lower);
            }
            "o" => {
                b.operators.insert(lower);
            }
            _ => {
                b.types.insert(lower);
            }
        }
    }
    for name in &user {
        b.functions.remove(name);
        b.operators.remove(name);
        b.types.remove(name);
    }
    Ok(b)
}

/// A privilege a login role (or PUBLIC) holds directly on an object a managed
/// role owns: granted while the login role held the owner, it would outlive
/// the grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirectPrivilege {
    /// `TABLE`, `SEQUENCE`, `SCHEMA` or `ROUTINE`.
    pub object_kind: String,
    /// The object, quoted as PostgreSQL prints it (`public.t`, `f(integer)`).
    pub object: String,
    pub owner: String,
    /// A login role, or `PUBLIC`.
    pub grantee: String,
}

/// Privileges held by login roles (`prefix...`) or PUBLIC on objects owned by
/// any of `roles`. PUBLIC's privileges on routines are left alone: EXECUTE
/// for PUBLIC is PostgreSQL's default there, not a grant.
pub async fn direct_privileges(
    admin: &Admin,
    roles: &[String],
    prefix: &str,
) -> Result<Vec<DirectPrivilege>, ProvisionError> {
    let rows = admin
        .with_client(async |c| {
            Ok(c.query(
                "WITH owners AS (SELECT oid, rolname FROM pg_roles WHERE rolname = ANY($1)), \
                 acl AS ( \
                   SELECT CASE c.relkind WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END AS kind, \
                          c.oid::regclass::text AS object, o.rolname AS owner, a.grantee \
                   FROM pg_class c JOIN owners o ON o.oid = c.relowner, aclexplode(c.relacl) a \
                   UNION ALL \
                   SELECT 'SCHEMA', quote_ident(n.nspname), o.rolname, a.grantee \
                   FROM pg_namespace n JOIN owners o ON o.oid = n.nspowner, aclexplode(n.nspacl) a \
                   UNION ALL \
                   SELECT 'ROUTINE', p.oid::regprocedure::text, o.rolname, a.grantee \
                   FROM pg_proc p JOIN owners o ON o.oid = p.proowner, aclexplode(p.proacl) a \
                   WHERE a.grantee <> 0) \
                 SELECT DISTINCT acl.kind, acl.object, acl.owner::text, \
                        COALESCE(r.rolname::text, 'PUBLIC') \
                 FROM acl LEFT JOIN pg_roles r ON r.oid = acl.grantee \
                 WHERE acl.grantee = 0 OR starts_with(r.rolname::text, $2) \
                 ORDER BY 1, 2, 4",
                &[&roles, &prefix],
            )
            .await?)
        })
        .await?;
    Ok(rows
        .iter()
        .map(|r| DirectPrivilege {
            object_kind: r.get(0),
            object: r.get(1),
            owner: r.get(2),
            grantee: r.get(3),
        })
        .collect())
}

/// Revokes each privilege (with what was granted on from it: CASCADE), one
/// statement per privilege so that one failure does not hide the others.
pub async fn revoke_direct(
    admin: &Admin,
    ps: &[DirectPrivilege],
) -> Vec<(DirectPrivilege, Result<(), ProvisionError>)> {
    let mut out = Vec::with_capacity(ps.len());
    for p in ps {
        let grantee = if p.grantee == "PUBLIC" {
            "PUBLIC".to_string()
        } else {
            quote_ident(&p.grantee)
        };
        // `object` is PostgreSQL's own quoted rendering (regclass, regprocedure).
        let sql = format!(
            "REVOKE ALL ON {} {} FROM {grantee} CASCADE",
            p.object_kind, p.object
        );
        let r = execute(admin, &sql).await;
        out.push((p.clone(), r));
    }
    out
}

/// Per-role (and per-role-and-database) defaults set on login roles
/// (`ALTER ROLE ... SET`): the gateway sets none, so each one is drift.
/// Returns (login role, database or `None` for all databases).
pub async fn login_role_settings(
    admin: &Admin,
    prefix: &str,
) -> Result<Vec<(String, Option<String>)>, ProvisionError> {
    let rows = admin
        .with_client(async |c| {
            Ok(c.query(
                "SELECT r.rolname::text, d.datname::text FROM pg_db_role_setting s \
                 JOIN pg_roles r ON r.oid = s.setrole \
                 LEFT JOIN pg_database d ON d.oid = s.setdatabase \
                 WHERE starts_with(r.rolname::text, $1) ORDER BY 1, 2",
                &[&prefix],
            )
            .await?)
        })
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// `ALTER ROLE r [IN DATABASE d] RESET ALL`.
pub async fn reset_settings(
    admin: &Admin,
    login_role: &str,
    database: Option<&str>,
) -> Result<(), ProvisionError> {
    let sql = match database {
        Some(d) => format!(
            "ALTER ROLE {} IN DATABASE {} RESET ALL",
            quote_ident(login_role),
            quote_ident(d)
        ),
        None => format!("ALTER ROLE {} RESET ALL", quote_ident(login_role)),
    };
    execute(admin, &sql).await
}

/// Login roles (`prefix...`) that exist in the cluster.
pub async fn login_roles(admin: &Admin, prefix: &str) -> Result<Vec<String>, ProvisionError> {
    let rows = admin
        .with_client(async |c| {
            Ok(c.query(
                "SELECT rolname::text FROM pg_roles WHERE starts_with(rolname::text, $1) ORDER BY 1",
                &[&prefix],
            )
            .await?)
        })
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Takes the password of a login role whose user the gateway no longer
/// serves: nobody can log in as it.
pub async fn disable_password(admin: &Admin, login_role: &str) -> Result<(), ProvisionError> {
    let sql = format!("ALTER ROLE {} PASSWORD NULL", quote_ident(login_role));
    execute(admin, &sql).await
}

/// The relations, routines and schemas that any of `roles` owns.
pub async fn managed_objects(
    admin: &Admin,
    roles: &[String],
) -> Result<policy::privilege::ManagedObjects, ProvisionError> {
    let rows = admin
        .with_client(async |c| {
            Ok(c.query(
                "WITH owners AS (SELECT oid FROM pg_roles WHERE rolname = ANY($1)) \
                 SELECT 'relation', n.nspname::text, c.relname::text FROM pg_class c \
                   JOIN pg_namespace n ON n.oid = c.relnamespace \
                   WHERE c.relowner IN (SELECT oid FROM owners) \
                   AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S') \
                 UNION ALL \
                 SELECT 'routine', n.nspname::text, p.proname::text FROM pg_proc p \
                   JOIN pg_namespace n ON n.oid = p.pronamespace \
                   WHERE p.proowner IN (SELECT oid FROM owners) \
                 UNION ALL \
                 SELECT 'schema', '', n.nspname::text FROM pg_namespace n \
                   WHERE n.nspowner IN (SELECT oid FROM owners)",
                &[&roles],
            )
            .await?)
        })
        .await?;
    let mut m = policy::privilege::ManagedObjects::default();
    for r in rows {
        m.add(r.get(0), r.get(1), r.get(2));
    }
    Ok(m)
}

/// Defaults for every role (`ALTER DATABASE d SET role = ...`, `ALTER ROLE
/// ALL SET ...`) of `role` or `session_authorization`: they would make
/// `RESET ROLE` or `RESET ALL` land on another identity. Returns (database
/// or `None` for all, setting name).
pub async fn identity_defaults(
    admin: &Admin,
) -> Result<Vec<(Option<String>, String)>, ProvisionError> {
    let rows = admin
        .with_client(async |c| {
            Ok(c.query(
                "SELECT d.datname::text, split_part(cfg, '=', 1) FROM pg_db_role_setting s \
                 LEFT JOIN pg_database d ON d.oid = s.setdatabase, unnest(s.setconfig) cfg \
                 WHERE s.setrole = 0 \
                 AND lower(split_part(cfg, '=', 1)) IN ('role', 'session_authorization')",
                &[],
            )
            .await?)
        })
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// `ALTER DATABASE d RESET name`, or `ALTER ROLE ALL RESET name`.
pub async fn reset_identity_default(
    admin: &Admin,
    database: Option<&str>,
    name: &str,
) -> Result<(), ProvisionError> {
    let sql = match database {
        Some(d) => format!(
            "ALTER DATABASE {} RESET {}",
            quote_ident(d),
            quote_ident(name)
        ),
        None => format!("ALTER ROLE ALL RESET {}", quote_ident(name)),
    };
    execute(admin, &sql).await
}
