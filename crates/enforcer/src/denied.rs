//! When PostgreSQL refuses what the gateway let through: a write inside a
//! function no rule foresaw, a table no rule names. The database enforced;
//! the gateway explains, as it does for a refusal it predicted: it finds the
//! managed roles that hold privileges on the object the login role lacks,
//! files (or reuses) a request for the first the user may request, and
//! answers with the same actionable refusal instead of the bare
//! "permission denied".
//!
//! One look at a time (the admin connection also carries GRANT and REVOKE);
//! a permission error arriving meanwhile goes to the client as the server
//! wrote it.
//!
//! Only the English messages of `aclcheck_error` are read ("permission denied
//! for table orders"); with another `lc_messages`, or for anything else, the
//! server's error goes to the client unchanged.

use crate::hook::HookState;
use proxy::Session;
use std::sync::Arc;
use wire::backend::ErrorFields;

/// What a permission error names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Denied {
    Relation(String),
    Routine(String),
    Schema(String),
}

/// The object of `permission denied for <kind> <name>`.
pub fn object_of(message: &str) -> Option<Denied> {
    let rest = message.strip_prefix("permission denied for ")?;
    for (kind, make) in [
        ("table ", Denied::Relation as fn(String) -> Denied),
        ("view ", Denied::Relation),
        ("materialized view ", Denied::Relation),
        ("sequence ", Denied::Relation),
        ("foreign table ", Denied::Relation),
        ("function ", Denied::Routine),
        ("procedure ", Denied::Routine),
        ("schema ", Denied::Schema),
    ] {
        if let Some(name) = rest.strip_prefix(kind) {
            return Some(make(name.trim().to_string()));
        }
    }
    None
}

/// Managed roles of the session's database with a privilege on `object` that
/// the login role lacks (any object of that name: the message does not say
/// which schema).
const ROLES_FOR_RELATION: &str = "
SELECT r.name FROM unnest($1::text[]) WITH ORDINALITY r(name, i)
WHERE EXISTS (
  SELECT 1 FROM pg_class c, unnest(ARRAY['SELECT','INSERT','UPDATE','DELETE','TRUNCATE']) p(priv)
  WHERE c.relname = $3
    AND has_table_privilege(r.name, c.oid, p.priv)
    AND NOT has_table_privilege($2, c.oid, p.priv))
ORDER BY r.i";

const ROLES_FOR_ROUTINE: &str = "
SELECT r.name FROM unnest($1::text[]) WITH ORDINALITY r(name, i)
WHERE EXISTS (
  SELECT 1 FROM pg_proc f WHERE f.proname = $3
    AND has_function_privilege(r.name, f.oid, 'EXECUTE')
    AND NOT has_function_privilege($2, f.oid, 'EXECUTE'))
ORDER BY r.i";

const ROLES_FOR_SCHEMA: &str = "
SELECT r.name FROM unnest($1::text[]) WITH ORDINALITY r(name, i)
WHERE EXISTS (
  SELECT 1 FROM pg_namespace n, unnest(ARRAY['USAGE','CREATE']) p(priv)
  WHERE n.nspname = $3
    AND has_schema_privilege(r.name, n.oid, p.priv)
    AND NOT has_schema_privilege($2, n.oid, p.priv))
ORDER BY r.i";

/// The gateway's own refusal for a permission error, with a request filed;
/// `None` when no managed role the user may request would allow it.
pub async fn explain(st: Arc<HookState>, s: Arc<Session>, message: String) -> Option<ErrorFields> {
    let object = object_of(&message)?;
    let _one = st.explaining.try_acquire().ok()?;
    let gateway = st.gateway()?;
    let db = gateway.databases.get(&s.database)?;
    let candidates: Vec<String> = st
        .policy
        .roles()
        .filter(|r| r.database == s.database && st.policy.may_request(&s.user, r))
        .map(|r| r.name.clone())
        .collect();
    if candidates.is_empty() {
        return None;
    }
    let (sql, name) = match &object {
        Denied::Relation(n) => (ROLES_FOR_RELATION, n.clone()),
        Denied::Routine(n) => (ROLES_FOR_ROUTINE, n.clone()),
        Denied::Schema(n) => (ROLES_FOR_SCHEMA, n.clone()),
    };
    let login_role = s.login_role.clone();
    let roles: Vec<String> = db
        .admin
        .with_client(async |c| {
            Ok(c.query(sql, &[&candidates, &login_role, &name])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
        .await
        .ok()?;
    let role = roles.into_iter().next()?;
    let text = format!("<refused by PostgreSQL: {message}>");
    Some(crate::filing::explain_refusal(&st, &s, &text, &role).await)
}
