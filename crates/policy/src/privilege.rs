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
//! - while a managed role is in force for the user: any membership change,
//!   and a `GRANT`, an ownership change, a `CREATE OR REPLACE` or `SECURITY
//!   DEFINER` of a function, on an object a managed role may own (the caller
//!   says which names may be; an object of a kind the guard does not read is
//!   assumed to be one);
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

/// An object a statement names, as written (lowercased; `schema.name` or
/// `name`), by kind.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum ObjectRef {
    /// A table, view, sequence or foreign table.
    Relation(String),
    Schema(String),
    /// A function or procedure.
    Routine(String),
    /// `... ON ALL TABLES / SEQUENCES / FUNCTIONS IN SCHEMA s`.
    AllInSchema(String),
    /// Any other kind (types, languages, large objects, ...).
    Other,
}

fn lower_join(parts: impl IntoIterator<Item = String>) -> String {
    parts
        .into_iter()
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(".")
        .to_lowercase()
}

fn relation(r: &protobuf::RangeVar) -> ObjectRef {
    ObjectRef::Relation(lower_join([r.schemaname.clone(), r.relname.clone()]))
}

fn strings(list: &[protobuf::Node]) -> String {
    lower_join(list.iter().filter_map(|n| match &n.node {
        Some(NodeEnum::String(s)) => Some(s.sval.clone()),
        _ => None,
    }))
}

/// The object one node names, given the kind of object the statement is about.
fn object(kind: i32, node: &protobuf::Node) -> ObjectRef {
    use protobuf::ObjectType as T;
    let kind = T::try_from(kind).unwrap_or(T::Undefined);
    match (kind, &node.node) {
        (_, Some(NodeEnum::RangeVar(r))) => relation(r),
        (T::ObjectSchema, Some(NodeEnum::String(s))) => ObjectRef::Schema(s.sval.to_lowercase()),
        (
            T::ObjectFunction | T::ObjectProcedure | T::ObjectRoutine,
            Some(NodeEnum::ObjectWithArgs(f)),
        ) => ObjectRef::Routine(strings(&f.objname)),
        (
            T::ObjectTable | T::ObjectSequence | T::ObjectView | T::ObjectMatview,
            Some(NodeEnum::List(l)),
        ) => ObjectRef::Relation(strings(&l.items)),
        _ => ObjectRef::Other,
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
    /// The objects privileges are granted on.
    pub granted_on: BTreeSet<ObjectRef>,
    /// The objects whose owner changes (`ALTER ... OWNER TO`).
    pub owner_changed: BTreeSet<ObjectRef>,
    /// Functions replaced (`CREATE OR REPLACE`) or made `SECURITY DEFINER`
    /// by `ALTER`.
    pub routines_changed: BTreeSet<ObjectRef>,
    /// `REASSIGN OWNED BY` these roles.
    pub reassigned_from: BTreeSet<RoleRef>,
    /// A function or procedure made or altered `SECURITY DEFINER`.
    pub security_definer: bool,
}

impl PrivilegeOps {
    /// No allocation or drop: this runs for every statement.
    pub fn is_empty(&self) -> bool {
        self.role_management.is_empty()
            && self.memberships.is_empty()
            && self.granted_to.is_empty()
            && self.revoked_from.is_empty()
            && self.granted_on.is_empty()
            && self.owner_changed.is_empty()
            && self.routines_changed.is_empty()
            && self.reassigned_from.is_empty()
            && !self.security_definer
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
                // Future objects of the login role (or of FOR ROLE, judged
                // by the caller): only the grantees matter.
                if let Some(g) = &s.action {
                    let to = g.grantees.iter().filter_map(RoleRef::from_node);
                    if g.is_grant {
                        self.granted_to.extend(to);
                    } else {
                        self.revoked_from.extend(to);
                    }
                }
            }
            NodeRef::AlterOwnerStmt(s) => {
                let target = match (&s.relation, &s.object) {
                    (Some(r), _) => relation(r),
                    (None, Some(o)) => object(s.object_type, o),
                    (None, None) => ObjectRef::Other,
                };
                self.owner_changed.insert(target);
            }
            NodeRef::AlterTableStmt(a) if crate::classify::changes_owner(a) => {
                let target = a
                    .relation
                    .as_ref()
                    .map(relation)
                    .unwrap_or(ObjectRef::Other);
                self.owner_changed.insert(target);
            }
            NodeRef::ReassignOwnedStmt(s) => self.reassigned_from.extend(roles(&s.roles)),
            NodeRef::CreateFunctionStmt(f) => {
                let definer = definer(&f.options);
                self.security_definer |= definer;
                if f.replace {
                    self.routines_changed
                        .insert(ObjectRef::Routine(strings(&f.funcname)));
                }
            }
            NodeRef::AlterFunctionStmt(f) if definer(&f.actions) => {
                self.security_definer = true;
                let name = f.func.as_ref().map(|o| strings(&o.objname));
                self.routines_changed
                    .insert(name.map_or(ObjectRef::Other, ObjectRef::Routine));
            }
            _ => {}
        }
    }

    fn grant(&mut self, g: &protobuf::GrantStmt) {
        let to = g.grantees.iter().filter_map(RoleRef::from_node);
        if !g.is_grant {
            self.revoked_from.extend(to);
            return;
        }
        self.granted_to.extend(to);
        let all_in_schema = g.targtype == protobuf::GrantTargetType::AclTargetAllInSchema as i32;
        for o in &g.objects {
            self.granted_on.insert(match (&o.node, all_in_schema) {
                (Some(NodeEnum::String(s)), true) => ObjectRef::AllInSchema(s.sval.to_lowercase()),
                _ => object(g.objtype, o),
            });
        }
        if g.objects.is_empty() {
            self.granted_on.insert(ObjectRef::Other);
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

/// The objects managed roles own in one database (from the catalog, kept
/// fresh by the enforcer), for [`Session::managed_may_own`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ManagedObjects {
    /// `schema.name` and `name` of relations, lowercased.
    relations: std::collections::HashSet<String>,
    /// `schema.name` and `name` of functions and procedures, lowercased.
    routines: std::collections::HashSet<String>,
    /// Schemas managed roles own.
    schemas: std::collections::HashSet<String>,
    /// Schemas holding a relation or routine a managed role owns.
    holding: std::collections::HashSet<String>,
}

impl ManagedObjects {
    /// Adds an object: `kind` is `relation`, `routine` or `schema`.
    pub fn add(&mut self, kind: &str, schema: &str, name: &str) {
        let (schema, name) = (schema.to_lowercase(), name.to_lowercase());
        let set = match kind {
            "schema" => {
                self.schemas.insert(name);
                return;
            }
            "routine" => &mut self.routines,
            _ => &mut self.relations,
        };
        set.insert(format!("{schema}.{name}"));
        set.insert(name);
        self.holding.insert(schema);
    }

    /// Whether a managed role may own `o` as written. An unqualified name may
    /// resolve to any schema, so it matches a managed object of that name in
    /// any schema.
    pub fn may_own(&self, o: &ObjectRef) -> bool {
        match o {
            ObjectRef::Relation(n) => self.relations.contains(n),
            ObjectRef::Routine(n) => self.routines.contains(n),
            ObjectRef::Schema(n) => self.schemas.contains(n),
            ObjectRef::AllInSchema(n) => self.holding.contains(n) || self.schemas.contains(n),
            ObjectRef::Other => true,
        }
    }
}

/// What the guard knows about the session.
pub struct Session<'a> {
    /// Whether a name is a role jitgate manages on this database.
    pub is_managed: &'a dyn Fn(&str) -> bool,
    /// Whether a name is a login role (the gateway's, any user's).
    pub is_login_role: &'a dyn Fn(&str) -> bool,
    /// A managed role may be in force for this session's user (an active
    /// grant, one being granted, or one that ended less than a minute ago).
    pub in_force: bool,
    /// Whether a managed role may own this object (`Other`: assume so).
    pub managed_may_own: &'a dyn Fn(&ObjectRef) -> bool,
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
    if !s.in_force {
        return None;
    }
    if !ops.memberships.is_empty() {
        return Some(
            "jitgate refuses changing role memberships while a granted role is in force: an \
             ADMIN option it lends would make the change outlive the grant; run it once the \
             grant has ended (jitgate relinquish) and a minute has passed"
                .into(),
        );
    }
    let managed_object =
        |set: &BTreeSet<ObjectRef>| set.iter().find(|o| (s.managed_may_own)(o)).cloned();
    let found = [
        ("GRANT on", &ops.granted_on),
        ("changing the owner of", &ops.owner_changed),
        (
            "replacing or making SECURITY DEFINER",
            &ops.routines_changed,
        ),
    ]
    .into_iter()
    .find_map(|(what, set)| managed_object(set).map(|o| (what, o)));
    let (what, object) = found?;
    let name = match &object {
        ObjectRef::Relation(n) | ObjectRef::Schema(n) | ObjectRef::Routine(n) => format!("\"{n}\""),
        ObjectRef::AllInSchema(n) => format!("the objects of schema \"{n}\""),
        ObjectRef::Other => "an object of a kind jitgate cannot place".into(),
    };
    Some(format!(
        "jitgate refuses {what} {name} while a granted role is in force: a managed role owns \
         (or may own) it, and what this hands out would outlive the grant; run it once the \
         grant has ended (jitgate relinquish) and a minute has passed, or ask a database \
         administrator"
    ))
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

    /// app_write owns schema app_schema and everything in it, and table `t`.
    fn verdict(sql: &str, in_force: bool) -> Option<String> {
        let is_managed = |n: &str| n == "app_write";
        let is_login_role = |n: &str| n.starts_with("jit_");
        let managed_may_own = |o: &ObjectRef| match o {
            ObjectRef::Relation(n) | ObjectRef::Routine(n) => {
                n.starts_with("app_schema.") || n == "t" || n == "public.t" || n == "f"
            }
            ObjectRef::Schema(n) | ObjectRef::AllInSchema(n) => n == "app_schema",
            ObjectRef::Other => true,
        };
        guard(
            &ops(sql),
            &Session {
                is_managed: &is_managed,
                is_login_role: &is_login_role,
                in_force,
                managed_may_own: &managed_may_own,
            },
        )
    }

    #[test]
    fn managed_objects_match_qualified_and_unqualified_names() {
        let mut m = ManagedObjects::default();
        m.add("relation", "W_Schema", "Kept");
        m.add("routine", "public", "f");
        m.add("schema", "", "w_schema");
        for (o, owned) in [
            (ObjectRef::Relation("w_schema.kept".into()), true),
            (ObjectRef::Relation("kept".into()), true),
            (ObjectRef::Relation("public.kept".into()), false),
            (ObjectRef::Routine("f".into()), true),
            (ObjectRef::Routine("other.f".into()), false),
            (ObjectRef::Schema("w_schema".into()), true),
            (ObjectRef::AllInSchema("public".into()), true),
            (ObjectRef::AllInSchema("empty".into()), false),
            (ObjectRef::Other, true),
        ] {
            assert_eq!(m.may_own(&o), owned, "{o:?}");
        }
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
            "GRANT INSERT ON app_schema.x TO jit_alice",
            "GRANT INSERT ON APP_SCHEMA.X TO jit_alice",
            "GRANT USAGE ON SCHEMA app_schema TO CURRENT_USER",
            "GRANT SELECT ON t TO PUBLIC",
            "GRANT SELECT ON mine, t TO somebody",
            "GRANT SELECT ON ALL TABLES IN SCHEMA app_schema TO somebody",
            "GRANT EXECUTE ON FUNCTION app_schema.g(int) TO somebody",
            "GRANT USAGE ON TYPE some_type TO somebody",
            "GRANT app_read TO somebody",
            "ALTER TABLE t OWNER TO CURRENT_USER",
            "ALTER FUNCTION f() OWNER TO jit_alice",
            "ALTER FUNCTION f() SECURITY DEFINER",
            "CREATE OR REPLACE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'",
            "CREATE OR REPLACE PROCEDURE app_schema.p() LANGUAGE sql AS 'select 1'",
        ] {
            assert!(verdict(sql, true).is_some(), "{sql} passed while in force");
        }
        // The login role's own objects stay PostgreSQL's to judge.
        for sql in [
            "GRANT SELECT ON mine TO app_read",
            "GRANT SELECT ON ALL TABLES IN SCHEMA public TO app_read",
            "CREATE FUNCTION g() RETURNS int LANGUAGE sql SECURITY DEFINER AS 'select 1'",
            "CREATE OR REPLACE FUNCTION mine() RETURNS int LANGUAGE sql AS 'select 1'",
            "ALTER TABLE mine OWNER TO app_read",
            "ALTER DEFAULT PRIVILEGES GRANT SELECT ON TABLES TO PUBLIC",
        ] {
            assert_eq!(verdict(sql, true), None, "{sql}");
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
