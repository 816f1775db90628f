//! Role and privilege management: what a statement would hand to whom, and
//! the refusals that hold whatever the rules say.
//!
//! The database checks every privilege, but it cannot know that a grant is
//! temporary: PostgreSQL lets a member of a role that owns a table `GRANT` on
//! it to anyone, and that privilege stays when the membership goes. So the
//! gateway refuses, before PostgreSQL sees them, the statements that would
//! outlive a grant or reach past the login role (see [`guard`]):
//! - creating, altering, renaming or dropping roles (a login role never has
//!   CREATEROLE; its password, settings and name are the gateway's);
//! - memberships that involve managed roles, login roles or PUBLIC;
//! - privileges granted to or revoked from managed roles;
//! - any `GRANT`, ownership change, `SECURITY DEFINER` function or
//!   `CREATE OR REPLACE FUNCTION` while a managed role is in force in the
//!   session (the objects it reaches may be the managed role's);
//! - `REASSIGN OWNED BY` a managed role, and objects or default privileges
//!   handed to one.
//!
//! Everything else (grants on the login role's own objects, as migrations
//! run them) goes to PostgreSQL, which decides.

use pg_query::protobuf::{self, RoleSpecType};
use pg_query::{NodeEnum, NodeRef};
use serde::Serialize;
use std::collections::BTreeSet;

/// A role as a statement names it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum RoleRef {
    /// A role by name (as the parser folded it).
    Named(String),
    /// `CURRENT_USER`, `CURRENT_ROLE`, `SESSION_USER`: the login role.
    Current,
    Public,
}

impl RoleRef {
    fn from_spec(r: &protobuf::RoleSpec) -> RoleRef {
        match RoleSpecType::try_from(r.roletype) {
            Ok(RoleSpecType::RolespecPublic) => RoleRef::Public,
            Ok(RoleSpecType::RolespecCstring) => RoleRef::Named(r.rolename.clone()),
            _ => RoleRef::Current,
        }
    }

    fn from_node(n: &protobuf::Node) -> Option<RoleRef> {
        match &n.node {
            Some(NodeEnum::RoleSpec(r)) => Some(RoleRef::from_spec(r)),
            Some(NodeEnum::AccessPriv(p)) => Some(RoleRef::Named(p.priv_name.clone())),
            _ => None,
        }
    }

    fn name(&self) -> &str {
        match self {
            RoleRef::Named(n) => n,
            RoleRef::Current => "CURRENT_USER",
            RoleRef::Public => "PUBLIC",
        }
    }
}

/// The role and privilege management a statement does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PrivilegeOps {
    /// `CREATE`/`ALTER`/`DROP ROLE` (`USER`, `GROUP`), `ALTER ROLE ... SET`,
    /// `ALTER ROLE ... RENAME`: the roles named.
    pub role_management: BTreeSet<RoleRef>,
    /// `GRANT role TO` / `REVOKE role FROM`: granted roles and grantees.
    pub memberships: BTreeSet<RoleRef>,
    /// Object privileges granted (also default privileges): to these roles.
    pub granted_to: BTreeSet<RoleRef>,
    /// Object privileges revoked: from these roles.
    pub revoked_from: BTreeSet<RoleRef>,
    /// Ownership is handed over (`OWNER TO`, `REASSIGN OWNED`, `CREATE SCHEMA
    /// ... AUTHORIZATION`).
    pub changes_owner: bool,
    /// `REASSIGN OWNED BY` these roles.
    pub reassigned_from: BTreeSet<RoleRef>,
    /// A function or procedure made or altered `SECURITY DEFINER`.
    pub security_definer: bool,
    /// `CREATE OR REPLACE FUNCTION/PROCEDURE`.
    pub replaces_function: bool,
}

impl PrivilegeOps {
    pub fn is_empty(&self) -> bool {
        *self == PrivilegeOps::default()
    }

    /// Adds what one parse-tree node does.
    pub fn add(&mut self, node: NodeRef<'_>) {
        let roles = |list: &[protobuf::Node]| -> Vec<RoleRef> {
            list.iter().filter_map(RoleRef::from_node).collect()
        };
        match node {
            NodeRef::CreateRoleStmt(s) => {
                self.role_management.insert(RoleRef::Named(s.role.clone()));
            }
            NodeRef::AlterRoleStmt(s) => {
                self.role_management.insert(role_or_all(&s.role));
            }
            NodeRef::AlterRoleSetStmt(s) => {
                self.role_management.insert(role_or_all(&s.role));
            }
            NodeRef::DropRoleStmt(s) => self.role_management.extend(roles(&s.roles)),
            NodeRef::RenameStmt(s) if s.rename_type == protobuf::ObjectType::ObjectRole as i32 => {
                self.role_management
                    .insert(RoleRef::Named(s.subname.clone()));
            }
            NodeRef::GrantRoleStmt(s) => {
                self.memberships.extend(roles(&s.granted_roles));
                self.memberships.extend(roles(&s.grantee_roles));
            }
            NodeRef::GrantStmt(s) => self.grant(s),
            NodeRef::AlterDefaultPrivilegesStmt(s) => {
                if let Some(g) = &s.action {
                    self.grant(g);
                }
            }
            NodeRef::AlterOwnerStmt(_) => self.changes_owner = true,
            NodeRef::CreateSchemaStmt(c) => self.changes_owner |= c.authrole.is_some(),
            NodeRef::AlterTableStmt(a) => self.changes_owner |= crate::classify::changes_owner(a),
            NodeRef::ReassignOwnedStmt(s) => {
                self.changes_owner = true;
                self.reassigned_from.extend(roles(&s.roles));
            }
            NodeRef::CreateFunctionStmt(f) => {
                self.replaces_function |= f.replace;
                self.security_definer |= definer(&f.options);
            }
            NodeRef::AlterFunctionStmt(f) => self.security_definer |= definer(&f.actions),
            _ => {}
        }
    }

    fn grant(&mut self, g: &protobuf::GrantStmt) {
        let to = g.grantees.iter().filter_map(RoleRef::from_node);
        if g.is_grant {
            self.granted_to.extend(to);
        } else {
            self.revoked_from.extend(to);
        }
    }
}

/// `ALTER ROLE ALL SET ...` names no role: it sets defaults for every role.
fn role_or_all(r: &Option<protobuf::RoleSpec>) -> RoleRef {
    r.as_ref()
        .map(RoleRef::from_spec)
        .unwrap_or(RoleRef::Named("ALL".into()))
}

/// `SECURITY DEFINER` among a function's options (`security` = true).
fn definer(options: &[protobuf::Node]) -> bool {
    options.iter().any(|o| match &o.node {
        Some(NodeEnum::DefElem(d)) if d.defname == "security" => {
            match d.arg.as_ref().and_then(|a| a.node.as_ref()) {
                Some(NodeEnum::Boolean(b)) => b.boolval,
                Some(NodeEnum::Integer(i)) => i.ival != 0,
                // Unreadable: assume the worst.
                _ => true,
            }
        }
        _ => false,
    })
}

/// What the guard knows about the session.
pub struct Session<'a> {
    /// Whether a name is a role jitgate manages on this database.
    pub is_managed: &'a dyn Fn(&str) -> bool,
    /// Whether a name is a login role (the gateway's, any user's).
    pub is_login_role: &'a dyn Fn(&str) -> bool,
    /// A managed role is in force for this session's user (an active grant).
    pub in_force: bool,
}

/// Why a statement is refused whatever the rules (`None`: PostgreSQL decides).
pub fn guard(ops: &PrivilegeOps, s: &Session<'_>) -> Option<String> {
    if ops.is_empty() {
        return None;
    }
    let managed = |r: &RoleRef| matches!(r, RoleRef::Named(n) if (s.is_managed)(n));
    let reserved = |r: &RoleRef| match r {
        RoleRef::Named(n) => (s.is_managed)(n) || (s.is_login_role)(n),
        RoleRef::Current | RoleRef::Public => true,
    };
    if let Some(r) = ops.role_management.iter().next() {
        let whose = match r {
            RoleRef::Current => "your login role".to_string(),
            RoleRef::Named(n) if (s.is_login_role)(n) => format!("login role \"{n}\""),
            other => format!("role \"{}\"", other.name()),
        };
        return Some(format!(
            "jitgate refuses creating, altering, renaming or dropping roles ({whose}): login roles \
             never have CREATEROLE, and a login role's password, settings and name belong to the \
             gateway; ask a database administrator"
        ));
    }
    if let Some(r) = ops.memberships.iter().find(|r| reserved(r)) {
        return Some(format!(
            "jitgate refuses changing memberships that involve {} (managed roles, login roles and \
             PUBLIC): they would outlive any grant",
            describe(r, s)
        ));
    }
    if let Some(r) = ops
        .granted_to
        .iter()
        .chain(&ops.revoked_from)
        .find(|r| managed(r))
    {
        return Some(format!(
            "jitgate refuses granting privileges to or revoking them from managed role \"{}\": \
             its privileges are the database administrator's to change, and would outlive grants",
            r.name()
        ));
    }
    if let Some(r) = ops.reassigned_from.iter().find(|r| managed(r)) {
        return Some(format!(
            "jitgate refuses REASSIGN OWNED BY managed role \"{}\": its objects would outlive \
             any grant",
            r.name()
        ));
    }
    if s.in_force {
        let what = if !ops.granted_to.is_empty() || !ops.memberships.is_empty() {
            Some("GRANT")
        } else if ops.changes_owner {
            Some("ownership changes")
        } else if ops.security_definer {
            Some("SECURITY DEFINER functions")
        } else if ops.replaces_function {
            Some("CREATE OR REPLACE of functions and procedures")
        } else {
            None
        };
        if let Some(what) = what {
            return Some(format!(
                "jitgate refuses {what} while a granted role is in force in this session: the \
                 objects it reaches may be the managed role's, and what it hands out would \
                 outlive the grant; run it once the grant has ended (jitgate relinquish)"
            ));
        }
    }
    None
}

fn describe(r: &RoleRef, s: &Session<'_>) -> String {
    match r {
        RoleRef::Named(n) if (s.is_managed)(n) => format!("managed role \"{n}\""),
        RoleRef::Named(n) => format!("login role \"{n}\""),
        RoleRef::Current => "your login role".into(),
        RoleRef::Public => "PUBLIC".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(sql: &str) -> PrivilegeOps {
        crate::classify::classify(sql).unwrap().privileges
    }

    fn verdict(sql: &str, in_force: bool) -> Option<String> {
        let is_managed = |n: &str| n == "app_write";
        let is_login_role = |n: &str| n.starts_with("jit_");
        guard(
            &ops(sql),
            &Session {
                is_managed: &is_managed,
                is_login_role: &is_login_role,
                in_force,
            },
        )
    }

    #[test]
    fn login_roles_are_never_altered_in_any_spelling() {
        for sql in [
            "ALTER ROLE CURRENT_USER PASSWORD 'x'",
            "ALTER USER jit_alice PASSWORD 'SCRAM-SHA-256$4096:abc'",
            "alter user \"jit_alice\" with password 'x'",
            "ALTER ROLE SESSION_USER SET search_path = evil",
            "ALTER ROLE CURRENT_ROLE CONNECTION LIMIT 1",
            "ALTER ROLE jit_alice IN DATABASE app SET work_mem = '1GB'",
            "ALTER ROLE ALL SET log_statement = 'none'",
            "ALTER ROLE jit_alice RENAME TO mine",
            "ALTER GROUP app_write ADD USER jit_alice",
            "CREATE ROLE sneaky LOGIN PASSWORD 'x'",
            "CREATE USER sneaky",
            "DROP ROLE IF EXISTS jit_bob",
            "ALTER ROLE app_write CREATEROLE",
        ] {
            let v = verdict(sql, false).unwrap_or_else(|| panic!("{sql} passed"));
            assert!(v.contains("CREATEROLE"), "{sql}: {v}");
        }
        assert!(verdict("ALTER ROLE CURRENT_USER PASSWORD 'x'", false)
            .unwrap()
            .contains("your login role"));
    }

    #[test]
    fn memberships_and_privileges_of_managed_and_login_roles_are_refused() {
        for sql in [
            "GRANT app_write TO jit_alice",
            "GRANT app_read TO CURRENT_USER",
            "GRANT app_read TO PUBLIC",
            "REVOKE app_write FROM jit_bob",
            "GRANT SELECT ON orders TO app_write",
            "REVOKE SELECT ON orders FROM app_write",
            "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO app_write",
            "REASSIGN OWNED BY app_write TO CURRENT_USER",
        ] {
            assert!(verdict(sql, false).is_some(), "{sql} passed");
        }
    }

    #[test]
    fn while_a_grant_is_in_force_nothing_is_handed_out() {
        for sql in [
            "GRANT INSERT ON app_tables.t TO jit_alice",
            "GRANT USAGE ON SCHEMA app_schema TO CURRENT_USER",
            "GRANT SELECT ON t TO PUBLIC",
            "GRANT SELECT ON t TO somebody",
            "ALTER TABLE t OWNER TO CURRENT_USER",
            "ALTER FUNCTION f() OWNER TO jit_alice",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'select 1'",
            "ALTER FUNCTION f() SECURITY DEFINER",
            "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'",
            "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC",
        ] {
            assert!(verdict(sql, true).is_some(), "{sql} passed while in force");
        }
    }

    #[test]
    fn the_login_roles_own_objects_are_postgresqls_to_judge() {
        for sql in [
            "GRANT SELECT ON my_table TO app_read",
            "GRANT SELECT ON my_table TO PUBLIC",
            "REVOKE ALL ON my_table FROM PUBLIC",
            "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO app_read",
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'",
            "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'",
            "ALTER FUNCTION f() SECURITY INVOKER",
            "ALTER TABLE t OWNER TO CURRENT_USER",
            "SELECT 1",
        ] {
            assert_eq!(verdict(sql, false), None, "{sql}");
        }
    }
}
