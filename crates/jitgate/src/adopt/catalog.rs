//! What `jitgate init` reads from an existing cluster: roles, memberships
//! (with their grantors and ADMIN options), login verifiers where readable,
//! and per database what each role can do (write, create, own), judged by
//! PostgreSQL's own `has_*_privilege` and `pg_has_role` so that inheritance,
//! role chains and predefined roles count as the server counts them.
//! Read-only: nothing here changes the cluster.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use tokio_postgres::Client;

/// Predefined roles that let their members change data or the server.
pub const POWERFUL_PREDEFINED: &[&str] = &[
    "pg_write_all_data",
    "pg_write_server_files",
    "pg_read_server_files",
    "pg_execute_server_program",
    "pg_signal_backend",
    "pg_checkpoint",
];

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct Membership {
    pub role: String,
    pub member: String,
    pub grantor: Option<String>,
    pub admin_option: bool,
}

#[derive(Debug, Clone, Default)]
pub struct RoleInfo {
    pub name: String,
    pub login: bool,
    pub superuser: bool,
    /// CREATEROLE, CREATEDB, REPLICATION or BYPASSRLS, by name.
    pub attributes: Vec<&'static str>,
    /// `pg_authid.rolpassword` when the admin URL may read it.
    pub verifier: Option<String>,
}

/// What one role can do in one database beyond what PUBLIC can.
#[derive(Debug, Clone, Default)]
pub struct Abilities {
    /// `schema.name` it may INSERT, UPDATE, DELETE or TRUNCATE (for a
    /// sequence: UPDATE, i.e. `nextval`/`setval`), as `policy check` judges it.
    pub write: BTreeSet<String>,
    /// Schemas it may CREATE in.
    pub create: BTreeSet<String>,
    /// `schema.name` of relations whose owner's rights it has.
    pub owns: BTreeSet<String>,
    /// Powerful predefined roles it has the rights of.
    pub predefined: BTreeSet<String>,
}

#[derive(Debug, Clone, Default)]
pub struct Database {
    pub name: String,
    /// Per role (every role but predefined ones).
    pub abilities: BTreeMap<String, Abilities>,
    /// Relations (`schema.name`) per schema, for "all tables of a schema".
    pub relations: BTreeMap<String, BTreeSet<String>>,
    /// What PUBLIC may write or create in (never reserved by a rule).
    pub public_write: BTreeSet<String>,
    pub public_create: BTreeSet<String>,
    /// Roles that own objects here (schemas, relations, functions, the database).
    pub owners: BTreeSet<String>,
    /// Default privileges that will let a role write future relations:
    /// (grantee, in schema or `*`, for objects created by).
    pub default_writes: Vec<(String, String, String)>,
}

#[derive(Debug, Clone, Default)]
pub struct Catalog {
    pub server_version_num: i32,
    /// The role the admin URL logs in as.
    pub current_user: String,
    pub roles: BTreeMap<String, RoleInfo>,
    pub memberships: Vec<Membership>,
    pub databases: Vec<Database>,
    /// Whether `pg_authid` was readable (verifiers copied).
    pub verifiers_readable: bool,
    /// `pg_hba.conf` as the server read it (line, type, databases, users,
    /// address, method), when readable.
    pub hba: Option<Vec<String>>,
}

impl Catalog {
    /// Direct memberships of `member`.
    pub fn memberships_of<'a>(&'a self, member: &'a str) -> impl Iterator<Item = &'a Membership> {
        self.memberships.iter().filter(move |m| m.member == member)
    }
}

pub async fn read_cluster(client: &Client) -> Result<Catalog, tokio_postgres::Error> {
    let head = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_user::text",
            &[],
        )
        .await?;
    let mut catalog = Catalog {
        server_version_num: head.get(0),
        current_user: head.get(1),
        ..Catalog::default()
    };
    for r in client
        .query(
            "SELECT rolname::text, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, \
                    rolreplication, rolbypassrls FROM pg_roles ORDER BY 1",
            &[],
        )
        .await?
    {
        let flags = [
            (r.get::<_, bool>(3), "CREATEROLE"),
            (r.get(4), "CREATEDB"),
            (r.get(5), "REPLICATION"),
            (r.get(6), "BYPASSRLS"),
        ];
        let name: String = r.get(0);
        catalog.roles.insert(
            name.clone(),
            RoleInfo {
                name,
                login: r.get(1),
                superuser: r.get(2),
                attributes: flags.iter().filter(|f| f.0).map(|f| f.1).collect(),
                verifier: None,
            },
        );
    }
    // Readable by superusers only; without it people get new passwords.
    if let Ok(rows) = client
        .query(
            "SELECT rolname::text, rolpassword FROM pg_authid WHERE rolpassword IS NOT NULL",
            &[],
        )
        .await
    {
        catalog.verifiers_readable = true;
        for r in rows {
            if let Some(role) = catalog.roles.get_mut(r.get::<_, &str>(0)) {
                role.verifier = r.get(1);
            }
        }
    }
    if let Ok(rows) = client
        .query(
            "SELECT line_number || ': ' || type || ' ' || array_to_string(database, ',') || ' ' \
                    || array_to_string(user_name, ',') || ' ' || COALESCE(address, '') || ' ' \
                    || auth_method \
             FROM pg_hba_file_rules WHERE error IS NULL ORDER BY line_number",
            &[],
        )
        .await
    {
        catalog.hba = Some(rows.iter().map(|r| r.get(0)).collect());
    }
    for r in client
        .query(
            "SELECT r.rolname::text, m.rolname::text, g.rolname::text, am.admin_option \
             FROM pg_auth_members am JOIN pg_roles r ON r.oid = am.roleid \
             JOIN pg_roles m ON m.oid = am.member LEFT JOIN pg_roles g ON g.oid = am.grantor \
             ORDER BY 1, 2",
            &[],
        )
        .await?
    {
        catalog.memberships.push(Membership {
            role: r.get(0),
            member: r.get(1),
            grantor: r.get(2),
            admin_option: r.get(3),
        });
    }
    Ok(catalog)
}

/// Relations of user schemas, with what PUBLIC may do to them.
const RELATIONS: &str = "
SELECT n.nspname::text || '.' || c.relname::text, n.nspname::text,
       has_table_privilege('public', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY 1";

/// Per role and user relation: write beyond PUBLIC, owner's rights.
const TABLE_ABILITIES: &str = "
WITH rel AS (
  SELECT c.oid, n.nspname::text || '.' || c.relname::text AS name, c.relowner
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
    AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%')
SELECT r.rolname::text, rel.name,
       has_table_privilege(r.oid, rel.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
         AND NOT has_table_privilege('public', rel.oid, 'INSERT, UPDATE, DELETE, TRUNCATE'),
       pg_has_role(r.oid, rel.relowner, 'USAGE')
FROM pg_roles r, rel
WHERE r.rolname !~ '^pg_' AND NOT r.rolsuper
ORDER BY 1, 2";

const SCHEMA_ABILITIES: &str = "
SELECT r.rolname::text, n.nspname::text,
       has_schema_privilege(r.oid, n.oid, 'CREATE'),
       has_schema_privilege('public', n.oid, 'CREATE')
FROM pg_roles r, pg_namespace n
WHERE r.rolname !~ '^pg_' AND NOT r.rolsuper
  AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
ORDER BY 1, 2";

const PREDEFINED: &str = "
SELECT r.rolname::text, p.rolname::text
FROM pg_roles r, pg_roles p
WHERE r.rolname !~ '^pg_' AND NOT r.rolsuper AND p.rolname = ANY($1)
  AND pg_has_role(r.oid, p.oid, 'USAGE')";

/// Roles owning something in this database (a login among them: an application's account).
const OWNERS: &str = "
SELECT DISTINCT o.rolname::text FROM (
  SELECT relowner AS owner FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
  UNION SELECT nspowner FROM pg_namespace
    WHERE nspname NOT IN ('pg_catalog', 'information_schema') AND nspname NOT LIKE 'pg\\_%'
  UNION SELECT proowner FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
    WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
  UNION SELECT datdba FROM pg_database WHERE datname = current_database()
) x JOIN pg_roles o ON o.oid = x.owner
WHERE NOT o.rolsuper";

/// Default privileges (`ALTER DEFAULT PRIVILEGES`) granting a write on tables.
const DEFAULT_WRITES: &str = "
SELECT DISTINCT g.rolname::text, COALESCE(n.nspname::text, '*'), o.rolname::text
FROM pg_default_acl d
JOIN pg_roles o ON o.oid = d.defaclrole
LEFT JOIN pg_namespace n ON n.oid = d.defaclnamespace,
aclexplode(d.defaclacl) a JOIN pg_roles g ON g.oid = a.grantee
WHERE d.defaclobjtype = 'r' AND a.privilege_type IN ('INSERT', 'UPDATE', 'DELETE', 'TRUNCATE')
ORDER BY 1, 2, 3";

pub async fn read_database(client: &Client, name: &str) -> Result<Database, tokio_postgres::Error> {
    let mut db = Database {
        name: name.to_string(),
        ..Database::default()
    };
    for r in client.query(RELATIONS, &[]).await? {
        let (rel, schema, public_write): (String, String, bool) = (r.get(0), r.get(1), r.get(2));
        if public_write {
            db.public_write.insert(rel.clone());
        }
        db.relations.entry(schema).or_default().insert(rel);
    }
    for r in client.query(TABLE_ABILITIES, &[]).await? {
        let a = db.abilities.entry(r.get(0)).or_default();
        let rel: String = r.get(1);
        if r.get(2) {
            a.write.insert(rel.clone());
        }
        if r.get(3) {
            a.owns.insert(rel);
        }
    }
    for r in client.query(SCHEMA_ABILITIES, &[]).await? {
        let schema: String = r.get(1);
        if r.get(3) {
            db.public_create.insert(schema);
        } else if r.get(2) {
            db.abilities
                .entry(r.get(0))
                .or_default()
                .create
                .insert(schema);
        }
    }
    let powerful: Vec<String> = POWERFUL_PREDEFINED.iter().map(|s| s.to_string()).collect();
    for r in client.query(PREDEFINED, &[&powerful]).await? {
        db.abilities
            .entry(r.get(0))
            .or_default()
            .predefined
            .insert(r.get(1));
    }
    for r in client.query(OWNERS, &[]).await? {
        db.owners.insert(r.get(0));
    }
    for r in client.query(DEFAULT_WRITES, &[]).await? {
        db.default_writes.push((r.get(0), r.get(1), r.get(2)));
    }
    Ok(db)
}
