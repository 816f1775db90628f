//! From what the catalog says to a starter configuration: who is a person
//! and who an application, which roles are privileged (managed, just in
//! time) and which read-only (baseline), and rules the database backs from
//! the start. Pure: the same catalog gives the same file.
//!
//! - A **service account** is a login role that owns objects in a scanned
//!   database (or is named with `--service`); it is left alone.
//! - A **person** is any other login role that is neither a superuser, the
//!   admin URL's own role, the gateway's admin role nor a gateway login role
//!   (or is named with `--human`).
//! - A role is **privileged** when, beyond what PUBLIC may, it may write a
//!   relation, create in a schema, has an owner's rights, or has the rights
//!   of a powerful predefined role (`pg_write_all_data`, ...). Privileged
//!   roles without LOGIN, and privileged login roles a person holds, become
//!   managed `[[role]]`s; people's other memberships become baseline roles.
//! - Rules: each relation a managed role may write, each schema it may create
//!   in, goes to the *narrowest* such role (fewest such abilities), so no
//!   statement needs two roles at once; nothing PUBLIC may already do is
//!   reserved (the rule would not be backed). A rule covers `schema.*` when
//!   its role was given every relation of the schema.

use super::catalog::{Catalog, Database, Membership};
use std::collections::{BTreeMap, BTreeSet};

pub struct Options {
    pub admin_role: String,
    pub login_role_prefix: String,
    pub humans: Vec<String>,
    pub services: Vec<String>,
    /// The `[[database]] admin_url` for a database name.
    pub admin_url: Box<dyn Fn(&str) -> String>,
    /// Where it came from, for the file's header.
    pub source: String,
    /// `[[database]]` lines for TLS, as the admin URL's `sslmode` asked
    /// (`tls = "require"`, ...); empty for libpq's default.
    pub tls_lines: String,
}

pub struct Person {
    pub name: String,
    pub verifier: Option<String>,
    /// Managed roles held directly (revoked by the plan).
    pub holds: Vec<Membership>,
    pub groups: BTreeSet<String>,
}

pub struct Managed {
    pub name: String,
    pub database: String,
    pub why: Vec<String>,
    pub requesters: BTreeSet<String>,
}

pub struct Rule {
    pub database: String,
    pub action: &'static str,
    pub objects: Vec<String>,
    pub role: String,
    pub also: BTreeSet<String>,
}

/// Everything derived; `render` turns it into TOML.
pub struct Starter {
    pub people: Vec<Person>,
    pub managed: Vec<Managed>,
    pub baseline: BTreeMap<String, BTreeSet<String>>,
    pub rules: Vec<Rule>,
    /// What was left alone, and why (comments at the end of the file).
    pub left_alone: Vec<String>,
    /// A local approver added because fewer than two people were found.
    pub local_approver: bool,
}

pub const APPROVERS: &str = "approvers";
pub const LOCAL_APPROVER: &str = "approver";

pub fn requesters_group(role: &str) -> String {
    format!("{role}-requesters")
}

fn privileged(db: &Database, role: &str) -> Vec<String> {
    let Some(a) = db.abilities.get(role) else {
        return Vec::new();
    };
    let mut why = Vec::new();
    let some = |set: &BTreeSet<String>| {
        let list: Vec<&str> = set.iter().take(3).map(String::as_str).collect();
        let more = set.len().saturating_sub(3);
        format!(
            "{}{}",
            list.join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )
    };
    if !a.write.is_empty() {
        why.push(format!("can write {}", some(&a.write)));
    }
    if !a.create.is_empty() {
        why.push(format!("can create in schema {}", some(&a.create)));
    }
    if !a.owns.is_empty() {
        why.push(format!("has the owner's rights on {}", some(&a.owns)));
    }
    if !a.predefined.is_empty() {
        why.push(format!("has the rights of {}", some(&a.predefined)));
    }
    why
}

pub fn derive(c: &Catalog, o: &Options) -> Starter {
    let services: BTreeSet<&str> = c
        .databases
        .iter()
        .flat_map(|d| d.owners.iter().map(String::as_str))
        .filter(|r| c.roles.get(*r).is_some_and(|r| r.login))
        .chain(o.services.iter().map(String::as_str))
        .filter(|s| !o.humans.iter().any(|h| h == s))
        .collect();
    let mut left_alone = Vec::new();
    let mut people: Vec<Person> = Vec::new();
    for r in c.roles.values().filter(|r| r.login) {
        let gateway_own = r.name == o.admin_role || r.name.starts_with(&o.login_role_prefix);
        if r.name.starts_with("pg_") || gateway_own {
            continue;
        }
        if r.name == c.current_user {
            left_alone.push(format!(
                "{}: the role `jitgate init` ran as (superuser: {})",
                r.name, r.superuser
            ));
        } else if r.superuser {
            left_alone.push(format!(
                "{}: superuser; no membership can give or take that: remove SUPERUSER \
                 and give the person a managed role instead",
                r.name
            ));
        } else if services.contains(r.name.as_str()) {
            left_alone.push(format!(
                "{}: service account (owns objects; an application's login): not a user, \
                 its rights unchanged",
                r.name
            ));
        } else if !config_name(&r.name) {
            left_alone.push(format!(
                "{}: a person, but the name is not one jitgate takes (letters, digits, _ - .)",
                r.name
            ));
        } else {
            let verifier = r
                .verifier
                .clone()
                .filter(|v| v.starts_with("SCRAM-SHA-256$"));
            people.push(Person {
                name: r.name.clone(),
                verifier,
                holds: Vec::new(),
                groups: BTreeSet::from([APPROVERS.to_string()]),
            });
        }
        if !r.attributes.is_empty() && !r.superuser {
            left_alone.push(format!(
                "{}: has {} (attributes stay with the login role; not managed)",
                r.name,
                r.attributes.join(", ")
            ));
        }
    }
    let person_names: BTreeSet<String> = people.iter().map(|p| p.name.clone()).collect();

    // Managed roles: privileged in some database, not a person, and either
    // NOLOGIN or held by a person. A role goes to the first database where it
    // is privileged (a [[role]] belongs to one database).
    let mut managed: BTreeMap<String, Managed> = BTreeMap::new();
    for db in &c.databases {
        for r in c.roles.values() {
            let powerful_predefined =
                super::catalog::POWERFUL_PREDEFINED.contains(&r.name.as_str());
            if person_names.contains(&r.name)
                || r.superuser
                || r.name == o.admin_role
                || r.name.starts_with(&o.login_role_prefix)
                || (r.name.starts_with("pg_") && !powerful_predefined)
                || managed.contains_key(&r.name)
            {
                continue;
            }
            let mut why = if powerful_predefined {
                vec![format!("predefined role {}", r.name)]
            } else {
                privileged(db, &r.name)
            };
            if db.owners.contains(&r.name) {
                why.push(
                    "owns objects: the gateway's reconcile revokes what PUBLIC and login roles \
                     were granted on them (it would outlive a grant)"
                        .into(),
                );
            }
            if why.is_empty() {
                continue;
            }
            let held_by_person = c
                .memberships
                .iter()
                .any(|m| m.role == r.name && person_names.contains(&m.member));
            if (r.login || powerful_predefined) && !held_by_person {
                continue;
            }
            managed.insert(
                r.name.clone(),
                Managed {
                    name: r.name.clone(),
                    database: db.name.clone(),
                    why,
                    requesters: BTreeSet::new(),
                },
            );
        }
    }

    // People's direct memberships: managed ones are revoked (they come just
    // in time); the others become baseline roles of every database.
    let mut baseline: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for p in people.iter_mut() {
        for m in c.memberships_of(&p.name) {
            if let Some(role) = managed.get_mut(&m.role) {
                p.holds.push(m.clone());
                role.requesters.insert(p.name.clone());
            } else if !c.roles.get(&m.role).is_some_and(|r| r.superuser) {
                for db in &c.databases {
                    baseline
                        .entry(db.name.clone())
                        .or_default()
                        .insert(m.role.clone());
                }
            } else {
                left_alone.push(format!(
                    "{}: member of superuser role {}: left as it is",
                    p.name, m.role
                ));
            }
        }
    }

    let mut rules = Vec::new();
    for db in &c.databases {
        let in_db: Vec<&Managed> = managed.values().filter(|m| m.database == db.name).collect();
        let abilities = |m: &Managed| db.abilities.get(&m.name).cloned().unwrap_or_default();
        // (action, object) -> the roles that may do it.
        let mut who: BTreeMap<(&'static str, String), Vec<(usize, String)>> = BTreeMap::new();
        for m in &in_db {
            let a = abilities(m);
            let width = a.write.len() + a.create.len();
            for rel in a.write.iter().filter(|r| !db.public_write.contains(*r)) {
                who.entry(("write", rel.clone()))
                    .or_default()
                    .push((width, m.name.clone()));
            }
            for s in a.create.iter().filter(|s| !db.public_create.contains(*s)) {
                who.entry(("ddl", format!("{s}.*")))
                    .or_default()
                    .push((width, m.name.clone()));
            }
        }
        // The narrowest role gets each; the holders of the others may request it.
        // (action, role) -> (its objects, the other roles that could do them)
        type Given = BTreeMap<(&'static str, String), (Vec<String>, BTreeSet<String>)>;
        let mut given = Given::new();
        for ((action, object), mut roles) in who {
            roles.sort();
            let chosen = roles[0].1.clone();
            let entry = given.entry((action, chosen.clone())).or_default();
            entry.0.push(object);
            for (_, other) in &roles[1..] {
                entry.1.insert(other.clone());
            }
        }
        for ((action, role), (objects, also)) in given {
            let objects = if action == "write" {
                collapse(db, objects)
            } else {
                objects
            };
            let holders_of_others: Vec<String> = also
                .iter()
                .filter_map(|r| managed.get(r))
                .flat_map(|m| m.requesters.iter().cloned())
                .collect();
            if let Some(m) = managed.get_mut(&role) {
                m.requesters.extend(holders_of_others);
            }
            rules.push(Rule {
                database: db.name.clone(),
                action,
                objects,
                role,
                also,
            });
        }
        for (grantee, schema, creator) in &db.default_writes {
            if managed.contains_key(grantee) {
                left_alone.push(format!(
                    "{}: default privileges give {grantee} writes on tables {creator} creates \
                     in {}: rules name today's tables; cover new ones (e.g. `{schema}.*`) \
                     when they come",
                    db.name,
                    if schema == "*" {
                        "any schema".to_string()
                    } else {
                        format!("schema {schema}")
                    }
                ));
            }
        }
        for rel in &db.public_write {
            left_alone.push(format!(
                "{}.{rel}: PUBLIC may write it, so no rule can reserve it \
                 (REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON {rel} FROM PUBLIC would)",
                db.name
            ));
        }
        for s in &db.public_create {
            left_alone.push(format!(
                "{}: PUBLIC may create in schema {s}, so no ddl rule can reserve it \
                 (REVOKE CREATE ON SCHEMA {s} FROM PUBLIC would)",
                db.name
            ));
        }
    }
    for p in people.iter_mut() {
        for m in managed.values() {
            if m.requesters.contains(&p.name) {
                p.groups.insert(requesters_group(&m.name));
            }
        }
    }
    let local_approver = people.len() < 2;
    Starter {
        people,
        managed: managed.into_values().collect(),
        baseline,
        rules,
        left_alone,
        local_approver,
    }
}

/// `schema.*` for the schemas whose every relation is in `objects`.
fn collapse(db: &Database, objects: Vec<String>) -> Vec<String> {
    let set: BTreeSet<&String> = objects.iter().collect();
    let mut out = Vec::new();
    let mut whole = BTreeSet::new();
    for (schema, rels) in &db.relations {
        if !rels.is_empty() && rels.iter().all(|r| set.contains(r)) {
            whole.insert(schema.clone());
            out.push(format!("{schema}.*"));
        }
    }
    for o in objects {
        let schema = o.split('.').next().unwrap_or_default();
        if !whole.contains(schema) {
            out.push(o);
        }
    }
    out
}

/// What `[[user]] name` accepts.
fn config_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 48
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}
