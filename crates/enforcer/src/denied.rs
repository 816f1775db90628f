//! When PostgreSQL refuses what the gateway let through: a write inside a
//! function no rule foresaw, a table no rule names. The database enforced;
//! the gateway explains, as it does for a refusal it predicted: it finds the
//! managed roles that hold privileges on the object the login role lacks,
//! files (or reuses) a request for the first the user may request, and
//! answers with the same actionable refusal instead of the bare
//! "permission denied".
//!
//! In `hold` mode, a statement the relay can run again (one statement sent
//! while idle outside a transaction block, see `proxy::rerun`) is held until
//! the request is decided and, once approved, runs again in the same call.
//! Inside a transaction block the failed statement has already aborted it:
//! the client gets the refusal, as in `reject` mode.
//!
//! One look at a time (the admin connection also carries GRANT and REVOKE);
//! a permission error arriving meanwhile goes to the client as the server
//! wrote it. What a look finds is cached until DDL passes the gateway, the
//! next reconcile, or a minute.
//!
//! Only the English messages of `aclcheck_error` are read ("permission denied
//! for table orders"); with another `lc_messages`, or for anything else, the
//! server's error goes to the client unchanged.

use crate::hook::HookState;
use config::OnMissingGrant;
use proxy::{Explained, Session, Verdict};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What a permission error names.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
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

/// What PostgreSQL refused, as the relay reported it.
pub struct Refused {
    pub message: String,
    pub statement: Option<String>,
    pub rerunnable: bool,
}

/// The gateway's own answer for a permission error, with a request filed;
/// in `hold` mode, for a statement the relay can run again, the held
/// statement's outcome. `None` when no managed role the user may request
/// would allow it.
pub async fn explain(st: Arc<HookState>, s: Arc<Session>, refused: Refused) -> Option<Explained> {
    let object = object_of(&refused.message)?;
    let role = look(&st, &s, object).await?;
    let text = refused
        .statement
        .clone()
        .unwrap_or_else(|| format!("<refused by PostgreSQL: {}>", refused.message));
    // A procedure or DO block may have committed part of its work: running
    // it again could do that part twice.
    let rerunnable = refused.rerunnable
        && refused
            .statement
            .as_deref()
            .is_some_and(|t| !policy::classify::may_commit_inside(t));
    if rerunnable && st.config.gateway.on_missing_grant == OnMissingGrant::Hold {
        return Some(
            match crate::filing::hold_refused(&st, &s, &text, &role).await {
                Verdict::Allow => Explained::RunAgain,
                Verdict::Refuse(e) => Explained::Refuse(e),
            },
        );
    }
    let err = crate::filing::explain_refusal(&st, &s, &text, &role).await;
    Some(Explained::Refuse(err))
}

/// The first managed role the user may request that would allow what was
/// refused: from the cache, or one bounded look into the catalog.
async fn look(st: &HookState, s: &Session, object: Denied) -> Option<String> {
    let key = (s.database.clone(), s.login_role.clone(), object);
    let roles = match st.looks.get(&key) {
        Some(roles) => roles,
        None => {
            let _one = st.explaining.try_acquire().ok()?;
            let roles = tokio::time::timeout(LOOK_WAIT, catalog(st, &key))
                .await
                .ok()??;
            st.looks.put(key, roles.clone());
            roles
        }
    };
    roles.into_iter().find(|r| {
        st.policy
            .role(r)
            .is_some_and(|r| st.policy.may_request(&s.user, r))
    })
}

/// How long one look into the catalog may take.
const LOOK_WAIT: Duration = Duration::from_secs(2);

/// Managed roles of the database that have a privilege on the object the
/// login role lacks, in the order of the configuration.
async fn catalog(st: &HookState, (database, login_role, object): &LookKey) -> Option<Vec<String>> {
    let gateway = st.gateway()?;
    let db = gateway.databases.get(database)?;
    let managed: Vec<String> = st
        .policy
        .roles()
        .filter(|r| &r.database == database)
        .map(|r| r.name.clone())
        .collect();
    if managed.is_empty() {
        return Some(Vec::new());
    }
    let (sql, name) = match object {
        Denied::Relation(n) => (ROLES_FOR_RELATION, n),
        Denied::Routine(n) => (ROLES_FOR_ROUTINE, n),
        Denied::Schema(n) => (ROLES_FOR_SCHEMA, n),
    };
    db.admin
        .with_client(async |c| {
            Ok(c.query(sql, &[&managed, login_role, name])
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect())
        })
        .await
        .ok()
}

type LookKey = (String, String, Denied);

/// What earlier looks found, until DDL passes the gateway, a reconcile runs
/// (which also sees DDL made elsewhere) or [`LOOK_TTL`] passes.
#[derive(Default)]
pub struct Looks {
    generation: AtomicU64,
    entries: Mutex<HashMap<LookKey, Look>>,
}

/// When a look was made, in which generation, and the roles it found.
type Look = (Instant, u64, Vec<String>);

/// How long a look is trusted at most.
const LOOK_TTL: Duration = Duration::from_secs(60);
/// Beyond this many entries, the cache starts over.
const LOOK_ENTRIES: usize = 1024;

impl Looks {
    /// Everything looked up so far may be stale (DDL, privileges changed).
    pub fn invalidate(&self) {
        self.generation.fetch_add(1, Relaxed);
    }

    fn get(&self, key: &LookKey) -> Option<Vec<String>> {
        let generation = self.generation.load(Relaxed);
        let entries = self.entries.lock().unwrap();
        let (at, g, roles) = entries.get(key)?;
        (*g == generation && at.elapsed() < LOOK_TTL).then(|| roles.clone())
    }

    fn put(&self, key: LookKey, roles: Vec<String>) {
        let generation = self.generation.load(Relaxed);
        let mut entries = self.entries.lock().unwrap();
        if entries.len() >= LOOK_ENTRIES {
            entries.clear();
        }
        entries.insert(key, (Instant::now(), generation, roles));
    }

    /// How many looks are cached (for tests).
    pub fn len(&self) -> usize {
        self.entries.lock().unwrap().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_look_is_reused_until_ddl_or_a_reconcile() {
        let looks = Looks::default();
        let key = (
            "app".into(),
            "jit_alice".into(),
            Denied::Relation("orders".into()),
        );
        assert_eq!(looks.get(&key), None);
        looks.put(key.clone(), vec!["app_write".into()]);
        assert_eq!(looks.get(&key), Some(vec!["app_write".into()]));
        let other = (
            "app".into(),
            "jit_bob".into(),
            Denied::Relation("orders".into()),
        );
        assert_eq!(looks.get(&other), None, "per login role");
        looks.invalidate();
        assert_eq!(looks.get(&key), None, "stale after DDL");
    }

    #[test]
    fn permission_messages_name_their_object() {
        assert_eq!(
            object_of("permission denied for table orders"),
            Some(Denied::Relation("orders".into()))
        );
        assert_eq!(
            object_of("permission denied for function bump"),
            Some(Denied::Routine("bump".into()))
        );
        assert_eq!(object_of("permission denied to create role"), None);
    }
}
