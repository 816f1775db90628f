//! The adoption plan: the SQL that makes a starter configuration true (the
//! gateway's admin role with exactly the ADMIN options it needs; people's
//! standing memberships in managed roles revoked), and the SQL that undoes
//! it. Written beside the configuration as JSON, printed for review, run
//! only with `--apply`, in one transaction.

use super::catalog::{Catalog, Membership};
use super::starter::Starter;
use postgres_protocol::escape::{escape_identifier as ident, escape_literal as literal};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Debug, Serialize, Deserialize)]
pub struct Plan {
    pub version: u32,
    pub written_at: String,
    pub server_version_num: i32,
    pub admin_role: String,
    /// Whether the plan creates the admin role (then undo drops it).
    pub admin_created: bool,
    pub login_role_prefix: String,
    pub databases: Vec<String>,
    /// Every role before the plan: undo drops login roles the gateway made.
    pub roles_before: BTreeSet<String>,
    /// People's memberships the plan revokes, as they were.
    pub revoked: Vec<Membership>,
    /// Statements, in order, run in one transaction.
    pub apply: Vec<String>,
    /// What restores the catalog, in order (after the gateway's own login
    /// roles are dropped).
    pub undo: Vec<String>,
}

pub fn make(
    c: &Catalog,
    s: &Starter,
    admin_role: &str,
    admin_verifier: &str,
    prefix: &str,
) -> Plan {
    let admin = ident(admin_role);
    let admin_created = !c.roles.contains_key(admin_role);
    let mut apply = Vec::new();
    let mut undo = Vec::new();
    if admin_created {
        apply.push(format!(
            "CREATE ROLE {admin} LOGIN CREATEROLE PASSWORD {}",
            literal(admin_verifier)
        ));
        // So that `scan` and `doctor` can tell who may log in from where
        // (superusers only by default). Undone by DROP OWNED.
        apply.push(format!(
            "GRANT SELECT ON pg_catalog.pg_hba_file_rules TO {admin}"
        ));
        apply.push(format!(
            "GRANT EXECUTE ON FUNCTION pg_catalog.pg_hba_file_rules() TO {admin}"
        ));
    }
    // ADMIN on every role it grants: managed roles and baseline roles.
    let needed: BTreeSet<&str> = s
        .managed
        .iter()
        .map(|m| m.name.as_str())
        .chain(s.baseline.values().flatten().map(String::as_str))
        .collect();
    for role in needed {
        let had = c.memberships_of(admin_role).find(|m| m.role == role);
        match had {
            Some(m) if m.admin_option => {}
            Some(_) => {
                apply.push(format!(
                    "GRANT {} TO {admin} WITH ADMIN OPTION",
                    ident(role)
                ));
                undo.push(format!(
                    "REVOKE ADMIN OPTION FOR {} FROM {admin}",
                    ident(role)
                ));
            }
            None => {
                apply.push(format!(
                    "GRANT {} TO {admin} WITH ADMIN OPTION",
                    ident(role)
                ));
                if !admin_created {
                    undo.push(format!("REVOKE {} FROM {admin}", ident(role)));
                }
            }
        }
    }
    let mut revoked = Vec::new();
    for p in &s.people {
        for m in &p.holds {
            // GRANTED BY the grantor the catalog names: from PostgreSQL 16 a
            // membership is one row per grantor, and a plain REVOKE removes
            // only the current user's.
            let by = m
                .grantor
                .as_ref()
                .map(|g| format!(" GRANTED BY {}", ident(g)))
                .unwrap_or_default();
            apply.push(format!(
                "REVOKE {} FROM {}{by}",
                ident(&m.role),
                ident(&m.member)
            ));
            let mut back = format!("GRANT {} TO {}", ident(&m.role), ident(&m.member));
            if m.admin_option {
                back.push_str(" WITH ADMIN OPTION");
            }
            back.push_str(&by);
            undo.push(back);
            revoked.push(m.clone());
        }
    }
    if admin_created {
        undo.push(format!("DROP ROLE {admin}"));
    }
    Plan {
        version: 1,
        written_at: chrono::Utc::now().to_rfc3339(),
        server_version_num: c.server_version_num,
        admin_role: admin_role.to_string(),
        admin_created,
        login_role_prefix: prefix.to_string(),
        databases: c.databases.iter().map(|d| d.name.clone()).collect(),
        roles_before: c.roles.keys().cloned().collect(),
        revoked,
        apply,
        undo,
    }
}
