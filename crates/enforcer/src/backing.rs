//! Does the database agree with the rules? A rule is *backed* when neither the
//! database's baseline roles nor PUBLIC can already do what it reserves: then
//! PostgreSQL itself refuses it to a login role without a grant, and the
//! gateway only predicts and explains. An unbacked rule makes the gateway the
//! only barrier; this names each one, with the objects concerned and the
//! `REVOKE`s that would back it (`jitgate policy check --live`, and the
//! gateway at start).
//!
//! What is checked, per action a rule names:
//! - `read`: SELECT on the tables, views and sequences its patterns match;
//! - `write`: INSERT, UPDATE, DELETE, TRUNCATE on those;
//! - `call`: EXECUTE on the functions its patterns match (PUBLIC has it by
//!   default);
//! - `ddl`: CREATE on the schemas its patterns name.
//!
//! Other actions (`privilege`, `admin`, `session`, ...) are not privileges on
//! objects: they are reported as checked by the gateway only.

use config::Config;
use policy::rules::object_matches;
use tokio_postgres::Client;

/// One thing a baseline role (or PUBLIC) can do that a rule reserves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// A baseline role, or `PUBLIC`.
    pub principal: String,
    pub privilege: String,
    /// `schema.name`, as PostgreSQL quotes it.
    pub object: String,
    /// The statements that would take it away (empty: the principal owns it).
    pub revoke: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleBacking {
    /// Position of the rule in the configuration.
    pub index: usize,
    /// `write on public.* -> app_write`.
    pub rule: String,
    pub gaps: Vec<Gap>,
    /// Actions of the rule that privileges cannot back.
    pub gateway_only: Vec<String>,
}

impl RuleBacking {
    pub fn backed(&self) -> bool {
        self.gaps.is_empty()
    }
}

const RELATIONS: &str = "
WITH rel AS (
  SELECT c.oid, quote_ident(n.nspname) || '.' || quote_ident(c.relname) AS object,
         n.nspname::text || '.' || c.relname::text AS name, c.relowner,
         COALESCE(c.relacl, acldefault('r', c.relowner)) AS acl
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
    AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'),
who AS (SELECT unnest($1::text[]) AS principal),
what AS (SELECT unnest($2::text[]) AS privilege)
SELECT r.object, r.name, w.principal, p.privilege,
       ARRAY(SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(g.rolname) END
             FROM aclexplode(r.acl) a LEFT JOIN pg_roles g ON g.oid = a.grantee
             WHERE a.privilege_type = p.privilege AND a.grantee <> r.relowner
               AND (a.grantee = 0 OR CASE WHEN w.principal = 'public' THEN false
                                          ELSE pg_has_role(w.principal, a.grantee, 'USAGE') END))
FROM rel r, who w, what p
WHERE has_table_privilege(w.principal, r.oid, p.privilege)
ORDER BY 2, 3, 4";

const ROUTINES: &str = "
WITH fn AS (
  SELECT p.oid, p.oid::regprocedure::text AS object,
         n.nspname::text || '.' || p.proname::text AS name, p.proowner,
         COALESCE(p.proacl, acldefault('f', p.proowner)) AS acl
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'),
who AS (SELECT unnest($1::text[]) AS principal)
SELECT f.object, f.name, w.principal, 'EXECUTE',
       ARRAY(SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(g.rolname) END
             FROM aclexplode(f.acl) a LEFT JOIN pg_roles g ON g.oid = a.grantee
             WHERE a.grantee <> f.proowner
               AND (a.grantee = 0 OR CASE WHEN w.principal = 'public' THEN false
                                          ELSE pg_has_role(w.principal, a.grantee, 'USAGE') END))
FROM fn f, who w
WHERE has_function_privilege(w.principal, f.oid, 'EXECUTE')
ORDER BY 2, 3";

const SCHEMAS: &str = "
WITH s AS (
  SELECT n.oid, quote_ident(n.nspname) AS object, n.nspname::text AS name, n.nspowner,
         COALESCE(n.nspacl, acldefault('n', n.nspowner)) AS acl
  FROM pg_namespace n
  WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'),
who AS (SELECT unnest($1::text[]) AS principal)
SELECT s.object, s.name, w.principal, 'CREATE',
       ARRAY(SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(g.rolname) END
             FROM aclexplode(s.acl) a LEFT JOIN pg_roles g ON g.oid = a.grantee
             WHERE a.privilege_type = 'CREATE' AND a.grantee <> s.nspowner
               AND (a.grantee = 0 OR CASE WHEN w.principal = 'public' THEN false
                                          ELSE pg_has_role(w.principal, a.grantee, 'USAGE') END))
FROM s, who w
WHERE has_schema_privilege(w.principal, s.oid, 'CREATE')
ORDER BY 2, 3";

/// A privilege a principal holds on an object, and the ACL entries it holds
/// it through (none: it owns the object, or holds its owner's rights).
struct Held {
    object: String,
    name: String,
    principal: String,
    privilege: String,
    via: Vec<String>,
}

async fn held(
    client: &Client,
    sql: &str,
    principals: &[String],
    privileges: Option<&[&str]>,
) -> Result<Vec<Held>, tokio_postgres::Error> {
    let rows = match privileges {
        Some(p) => {
            let p: Vec<String> = p.iter().map(|s| s.to_string()).collect();
            client.query(sql, &[&principals, &p]).await?
        }
        None => client.query(sql, &[&principals]).await?,
    };
    Ok(rows
        .iter()
        .map(|r| Held {
            object: r.get(0),
            name: r.get(1),
            principal: r.get(2),
            privilege: r.get(3),
            via: r.get(4),
        })
        .collect())
}

/// Whether a pattern of a rule covers `name` (`schema.name`); a schema
/// (`ddl`) is covered when a pattern names it or `*`.
fn covers(objects: &[String], name: &str, schema_only: bool) -> bool {
    if objects.is_empty() {
        return true;
    }
    objects.iter().any(|p| {
        if schema_only {
            p == "*"
                || p.rsplit_once('.')
                    .is_some_and(|(s, _)| s.eq_ignore_ascii_case(name))
        } else {
            object_matches(p, name)
        }
    })
}

/// Checks every rule of `database` against its catalog, as seen by `client`
/// (the admin connection).
pub async fn check(
    cfg: &Config,
    database: &str,
    client: &Client,
) -> Result<Vec<RuleBacking>, tokio_postgres::Error> {
    let Some(db) = cfg.database(database) else {
        return Ok(Vec::new());
    };
    let mut principals: Vec<String> = db.baseline_roles.clone();
    principals.push("public".into());
    let rules: Vec<(usize, &config::Rule)> = cfg
        .rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.database == database)
        .collect();
    if rules.is_empty() {
        return Ok(Vec::new());
    }
    let relations = held(
        client,
        RELATIONS,
        &principals,
        Some(&["SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE"]),
    )
    .await?;
    let routines = held(client, ROUTINES, &principals, None).await?;
    let schemas = held(client, SCHEMAS, &principals, None).await?;
    let mut out = Vec::new();
    for (index, r) in rules {
        let outcome = match (r.role.as_deref(), r.approve_each) {
            (Some("deny") | None, _) => "deny".to_string(),
            (Some(role), true) => format!("approve_each by {role}"),
            (Some(role), false) => role.to_string(),
        };
        let objects = if r.objects.is_empty() {
            "*".to_string()
        } else {
            r.objects.join(", ")
        };
        let mut backing = RuleBacking {
            index,
            rule: format!("{} on {objects} -> {outcome}", r.actions.join(", ")),
            gaps: Vec::new(),
            gateway_only: Vec::new(),
        };
        for action in &r.actions {
            let (list, privileges, schema_only): (&[Held], &[&str], bool) = match action.as_str() {
                "read" => (&relations, &["SELECT"], false),
                "write" => (
                    &relations,
                    &["INSERT", "UPDATE", "DELETE", "TRUNCATE"],
                    false,
                ),
                "call" => (&routines, &["EXECUTE"], false),
                "ddl" => (&schemas, &["CREATE"], true),
                other => {
                    backing.gateway_only.push(other.to_string());
                    continue;
                }
            };
            for h in list {
                if !privileges.contains(&h.privilege.as_str())
                    || !covers(&r.objects, &h.name, schema_only)
                {
                    continue;
                }
                let kind = match action.as_str() {
                    "call" => "FUNCTION",
                    "ddl" => "SCHEMA",
                    _ => "TABLE",
                };
                let principal = if h.principal == "public" {
                    "PUBLIC".to_string()
                } else {
                    h.principal.clone()
                };
                backing.gaps.push(Gap {
                    principal,
                    privilege: h.privilege.clone(),
                    object: h.object.clone(),
                    revoke: h
                        .via
                        .iter()
                        .map(|g| format!("REVOKE {} ON {kind} {} FROM {g};", h.privilege, h.object))
                        .collect(),
                });
            }
        }
        out.push(backing);
    }
    Ok(out)
}

/// Connects as the database's admin role and checks its rules.
pub async fn check_live(cfg: &Config, database: &str) -> Result<Vec<RuleBacking>, String> {
    let db = cfg
        .database(database)
        .ok_or_else(|| format!("no [[database]] named `{database}`"))?;
    let (config, tls) = proxy::tls::admin_connection(db).map_err(|e| e.to_string())?;
    let (client, conn) = config
        .connect(tls)
        .await
        .map_err(|e| format!("connecting to `{database}` as its admin role: {e}"))?;
    tokio::spawn(conn);
    check(cfg, database, &client)
        .await
        .map_err(|e| format!("reading privileges on `{database}`: {e}"))
}
