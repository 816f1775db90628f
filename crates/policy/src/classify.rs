//! What a statement does, read with the real PostgreSQL parser (pg_query).
//!
//! A statement's class is the most privileged thing it can do: a write inside a
//! CTE, `EXPLAIN ANALYZE` of a write, `SELECT INTO` and `COPY ... FROM` are
//! writes; server files, programs and calls that open another session are
//! `admin`. Statements that could change the session's identity (`SET ROLE`,
//! `SET SESSION AUTHORIZATION`, `RESET ROLE`, `RESET ALL`, `set_config('role', ...)`
//! in any spelling) are flagged, and so is anything whose effect cannot be read
//! from the text (`EXECUTE` of a named prepared statement). Text the parser
//! cannot read is an error: the caller refuses it.
//!
//! Objects are reported as written (`schema.table`, or just `table`). An
//! unqualified name may resolve to any schema on the search_path, so rules
//! match it against every schema (see `rules.rs`): changing search_path can
//! never dodge a rule.

pub use crate::calls::is_identity_value;
use crate::calls::{
    changes_identity, runs_sql, set_value, sets_identity, sets_setting, writes_through, Identity,
    Inner,
};
use crate::catalog::Builtins;
use crate::privilege::PrivilegeOps;
use crate::tree::Tree;
use pg_query::protobuf::a_const::Val;
use pg_query::protobuf::AlterTableType;
use pg_query::{NodeEnum, NodeRef};
use serde::Serialize;
use std::collections::BTreeSet;

/// Action kinds, least to most privileged (the order is the `max` used to
/// combine statements).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ActionKind {
    Transaction,
    Session,
    Read,
    Write,
    Call,
    Ddl,
    Privilege,
    Unknown,
    Admin,
}

impl ActionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ActionKind::Transaction => "transaction",
            ActionKind::Session => "session",
            ActionKind::Read => "read",
            ActionKind::Write => "write",
            ActionKind::Call => "call",
            ActionKind::Ddl => "ddl",
            ActionKind::Privilege => "privilege",
            ActionKind::Unknown => "unknown",
            ActionKind::Admin => "admin",
        }
    }
}

/// The classification of one piece of SQL (one or several statements).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Action {
    pub kind: ActionKind,
    /// Tables written to or read from, as written.
    pub objects: BTreeSet<String>,
    /// Functions called, as written, lower case (functions a statement
    /// creates, alters or drops are among its objects).
    pub functions: BTreeSet<String>,
    /// Relations the statement reads, wherever they appear (a query stored
    /// by `CREATE TABLE AS` or `CREATE VIEW`, a subquery of a write, a table
    /// a built-in reads by name): `read` rules match these, whatever the
    /// statement's kind.
    pub reads: BTreeSet<String>,
    /// Operators used, and types cast to, as written: user-defined ones run
    /// user-defined functions (see [`Action::with_calls`]).
    pub operators: BTreeSet<String>,
    pub types: BTreeSet<String>,
    /// For DDL: every name in it, any of which it may give a new function,
    /// operator or type (see [`crate::catalog::Builtins::shadow`]).
    pub defines: BTreeSet<String>,
    /// Whether it runs user code, as of a catalog snapshot (the hook's memo).
    #[serde(skip)]
    pub user_code: crate::catalog::Memo,
    /// Could change who the session is: always refused.
    pub identity_change: bool,
    /// `DECLARE ... WITH HOLD`: its rows outlive the transaction (and a grant).
    pub holdable_cursor: bool,
    /// `SET jitgate.reason = '...'`: the reason for requests this session files.
    pub sets_reason: Option<String>,
    /// `set_config($n, ...)`: bound parameters whose values, at Bind, must not
    /// name an identity setting (the relay checks them; see `proxy::relay`).
    pub identity_params: Vec<i32>,
    /// `SET client_encoding`, `SET NAMES`, `set_config('client_encoding', ...)`,
    /// a function's `SET` clause: the values set (`None` inside: not a
    /// constant, or `SET ... FROM CURRENT`).
    pub sets_client_encoding: Vec<Option<String>>,
    /// The same for `standard_conforming_strings` (see [`crate::lexing`]).
    pub sets_standard_strings: Vec<Option<String>>,
    /// Could change how PostgreSQL lexes the session's next statements: it
    /// sets a lexical setting, or runs code the gateway cannot see into.
    pub may_change_lexing: bool,
    /// Roles the statement hands objects or default privileges to (`ALTER ...
    /// OWNER TO r`, `REASSIGN OWNED ... TO r`, `CREATE SCHEMA ...
    /// AUTHORIZATION r`, `ALTER DEFAULT PRIVILEGES FOR ROLE r`).
    pub owners: BTreeSet<String>,
    /// What a lone statement does to SQL-level prepared statements.
    pub prepared: Option<PreparedOp>,
    /// Role and privilege management (judged by [`crate::privilege::guard`]).
    pub privileges: PrivilegeOps,
    /// Runs code the gateway cannot see into: a function that is not built
    /// in, `DO`, `CALL`, `EXECUTE` of a prepared statement, a statement the
    /// classifier does not know (see `rules.rs`).
    pub opaque: bool,
}

/// `PREPARE`, `EXECUTE`, `DEALLOCATE` (and `DISCARD ALL`), by name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum PreparedOp {
    Prepare(String),
    Execute(String),
    /// `None`: all of them.
    Deallocate(Option<String>),
}

impl Action {
    fn empty(kind: ActionKind) -> Action {
        Action {
            kind,
            objects: BTreeSet::new(),
            functions: BTreeSet::new(),
            reads: BTreeSet::new(),
            operators: BTreeSet::new(),
            types: BTreeSet::new(),
            defines: BTreeSet::new(),
            user_code: Default::default(),
            identity_change: false,
            holdable_cursor: false,
            sets_reason: None,
            sets_client_encoding: Vec::new(),
            sets_standard_strings: Vec::new(),
            may_change_lexing: matches!(kind, ActionKind::Call | ActionKind::Unknown),
            identity_params: Vec::new(),
            owners: BTreeSet::new(),
            prepared: None,
            privileges: PrivilegeOps::default(),
            opaque: matches!(kind, ActionKind::Call | ActionKind::Unknown),
        }
    }

    /// A fast-path `FunctionCall` of the function named `name` (`None`: not
    /// a built-in function, or unknown): admin functions are `admin`, other
    /// built-ins `read`, anything else a `call` that needs a rule.
    pub fn function_call(name: Option<&str>) -> Action {
        let mut a = Action::empty(ActionKind::Call);
        if let Some(name) = name {
            a.opaque = false;
            a.kind = if is_admin_function(name) {
                ActionKind::Admin
            } else {
                ActionKind::Read
            };
            a.functions.insert(name.to_string());
        }
        a
    }

    /// Whether the statement may run code the gateway cannot see: a
    /// function, operator or type the database does not have built in.
    pub fn runs_user_code(&self, b: &Builtins) -> bool {
        self.functions.iter().any(|f| !b.function(f))
            || self.operators.iter().any(|o| !b.operator(o))
            || self.types.iter().any(|t| !b.type_(t))
    }

    /// Marks the statement opaque and raises its kind to `call` if it may run
    /// code its owner wrote (see [`Action::runs_user_code`]).
    pub fn with_calls(mut self, b: &Builtins) -> Action {
        if self.runs_user_code(b) {
            self.kind = self.kind.max(ActionKind::Call);
            self.opaque = true;
            self.may_change_lexing = true;
        }
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the statement cannot be read: {message}")]
pub struct ClassifyError {
    pub message: String,
    /// A syntax error, located as PostgreSQL would report it.
    pub syntax: Option<crate::syntax::SyntaxError>,
}

impl ClassifyError {
    fn other(message: String) -> ClassifyError {
        ClassifyError {
            message,
            syntax: None,
        }
    }
}

/// Functions that reach server files or programs, open other sessions, or
/// control the server: `admin`, whatever statement they appear in.
const ADMIN_FUNCTIONS: &[&str] = &[
    "pg_read_file",
    "pg_read_binary_file",
    "pg_ls_dir",
    "pg_stat_file",
    "pg_ls_logdir",
    "pg_ls_waldir",
    "pg_ls_tmpdir",
    "pg_ls_archive_statusdir",
    "pg_file_write",
    "pg_file_rename",
    "pg_file_unlink",
    "lo_import",
    "lo_export",
    "pg_terminate_backend",
    "pg_cancel_backend",
    "pg_reload_conf",
    "pg_rotate_logfile",
    "pg_promote",
    "pg_switch_wal",
    "pg_create_restore_point",
    "pg_backup_start",
    "pg_backup_stop",
    "pg_create_logical_replication_slot",
    "pg_create_physical_replication_slot",
];

fn is_admin_function(name: &str) -> bool {
    let base = name.rsplit('.').next().unwrap_or(name).to_ascii_lowercase();
    ADMIN_FUNCTIONS.contains(&base.as_str()) || base.starts_with("dblink")
}

/// Classifies `sql` (all its statements).
pub fn classify(sql: &str) -> Result<Action, ClassifyError> {
    let parsed = pg_query::parse(sql, 0).map_err(|e| match e {
        pg_query::Error::Parse(m) => ClassifyError {
            syntax: crate::syntax::locate(sql, &m),
            message: m,
        },
        other => ClassifyError::other(other.to_string()),
    })?;
    if parsed.protobuf.stmts.is_empty() {
        // Empty or comment-only text: PostgreSQL answers EmptyQueryResponse.
        return Ok(Action::empty(ActionKind::Session));
    }
    let mut kind = ActionKind::Transaction;
    let mut identity_change = false;
    let mut holdable_cursor = false;
    let mut sets_reason = None;
    let mut sets_client_encoding = Vec::new();
    let mut identity_params = Vec::new();
    let mut opaque = false;
    for raw in &parsed.protobuf.stmts {
        let node = raw.stmt.as_ref().and_then(|s| s.node.as_ref());
        let (k, id) = statement_kind(node);
        kind = kind.max(k);
        opaque |= matches!(k, ActionKind::Call | ActionKind::Unknown);
        identity_change |= id;
        match node {
            // CURSOR_OPT_HOLD = 0x20 (PostgreSQL's parsenodes.h).
            Some(NodeEnum::DeclareCursorStmt(d)) => holdable_cursor |= d.options & 0x20 != 0,
            Some(NodeEnum::VariableSetStmt(v)) if v.name.eq_ignore_ascii_case(REASON_SETTING) => {
                sets_reason = v.args.first().and_then(|a| match &a.node {
                    Some(NodeEnum::AConst(c)) => match &c.val {
                        Some(Val::Sval(s)) => Some(s.sval.clone()),
                        _ => None,
                    },
                    _ => None,
                });
            }
            _ => {}
        }
    }
    // Every call, relation and setting, wherever it sits in the tree.
    let tree = Tree::of(&parsed.protobuf);
    let mut functions: BTreeSet<String> = tree.calls.iter().map(|c| c.name.clone()).collect();
    let mut objects: BTreeSet<String> = parsed.tables.iter().map(|(t, _)| t.clone()).collect();
    // Functions created, altered or dropped are objects.
    objects.extend(
        parsed
            .functions
            .iter()
            .filter(|(_, c)| *c != pg_query::Context::Call)
            .map(|(f, _)| f.clone()),
    );
    // Read: what the parser saw read, and whatever it did not place.
    let mut reads: BTreeSet<String> = parsed
        .tables
        .iter()
        .filter(|(_, c)| *c == pg_query::Context::Select)
        .map(|(t, _)| t.clone())
        .collect();
    for r in &tree.relations {
        if !parsed.tables.iter().any(|(t, _)| t == r) {
            reads.insert(r.clone());
        }
        objects.insert(r.clone());
    }
    if kind == ActionKind::Read {
        reads.extend(objects.iter().cloned());
    }
    let mut operators: BTreeSet<String> = tree.operators.iter().cloned().collect();
    let mut types: BTreeSet<String> = tree.types.iter().cloned().collect();
    let mut sets_standard_strings = Vec::new();
    // `SET`, `SET LOCAL`, and a function's `SET` clause alike.
    for setting in &tree.settings {
        if let Some(value) = set_value(setting, "client_encoding") {
            sets_client_encoding.push(value);
        }
        if let Some(value) = set_value(setting, "standard_conforming_strings") {
            sets_standard_strings.push(value);
        }
    }
    // Queries a statement carries: their classifications are merged in.
    let mut inners = Vec::new();
    for call in &tree.calls {
        match sets_identity(call) {
            Identity::No => {}
            Identity::Yes => identity_change = true,
            Identity::Param(n) => identity_params.push(n),
        }
        if let Some(value) = sets_setting(call, "client_encoding") {
            sets_client_encoding.push(value);
        }
        if let Some(value) = sets_setting(call, "standard_conforming_strings") {
            sets_standard_strings.push(value);
        }
        if let Some(written) = writes_through(call) {
            kind = kind.max(ActionKind::Write);
            match written {
                Some(sequence) => {
                    objects.insert(sequence);
                }
                // `nextval($1)`, `nextval(some_column)`: any sequence.
                None if call.base().ends_with("val") => opaque = true,
                None => {}
            }
        }
        // Built-ins that run SQL text or read a relation by name.
        match runs_sql(call) {
            None => {}
            Some(Inner::Query(q)) => match classify(&q) {
                // It runs, and reads what it touches.
                Ok(mut inner) => {
                    inner.kind = inner.kind.max(ActionKind::Read);
                    inner.reads.extend(inner.objects.iter().cloned());
                    inners.push(inner);
                }
                Err(_) => opaque = true,
            },
            Some(Inner::Relation(r)) => {
                reads.insert(r.clone());
                objects.insert(r);
            }
            Some(Inner::Unseen) => opaque = true,
        }
    }
    let mut owners = BTreeSet::new();
    let mut privileges = PrivilegeOps::default();
    for (node, _, _, _) in parsed.protobuf.nodes() {
        privileges.add(node);
        new_owners(node, &mut owners);
    }
    // The queries of PREPARE, DECLARE CURSOR and CREATE RULE, read on their
    // own (deparsed): a statement that wraps a query does what it does.
    for raw in &parsed.protobuf.stmts {
        let node = raw.stmt.as_ref().and_then(|s| s.node.as_ref());
        for query in wrapped_queries(node) {
            inners.push(wrapped_query(parsed.protobuf.version, query)?);
        }
    }
    for inner in inners {
        kind = kind.max(inner.kind);
        objects.extend(inner.objects);
        reads.extend(inner.reads);
        functions.extend(inner.functions);
        operators.extend(inner.operators);
        types.extend(inner.types);
        owners.extend(inner.owners);
        // No Bind follows an inner query: its parameters are unknown.
        identity_change |= inner.identity_change || !inner.identity_params.is_empty();
        holdable_cursor |= inner.holdable_cursor;
        opaque |= inner.opaque;
    }
    if functions.iter().any(|f| is_admin_function(f)) {
        kind = kind.max(ActionKind::Admin);
    }
    if privileges.security_definer {
        kind = kind.max(ActionKind::Privilege);
    }
    let opaque = matches!(kind, ActionKind::Call | ActionKind::Unknown) || opaque;
    let may_change_lexing = opaque
        || !sets_client_encoding.is_empty()
        || !sets_standard_strings.is_empty()
        || !identity_params.is_empty();
    Ok(Action {
        kind,
        objects,
        functions,
        reads,
        operators,
        types,
        user_code: Default::default(),
        defines: if kind >= ActionKind::Ddl {
            tree.names.iter().cloned().collect()
        } else {
            BTreeSet::new()
        },
        identity_change,
        holdable_cursor,
        sets_reason,
        sets_client_encoding,
        sets_standard_strings,
        may_change_lexing,
        identity_params,
        owners,
        privileges,
        opaque,
        prepared: match parsed.protobuf.stmts.as_slice() {
            [one] => prepared_op(one.stmt.as_ref().and_then(|s| s.node.as_ref())),
            _ => None,
        },
    })
}

/// Queries a statement carries inside it that the parser's lists skip.
fn wrapped_queries(node: Option<&NodeEnum>) -> Vec<&pg_query::protobuf::Node> {
    match node {
        Some(NodeEnum::PrepareStmt(p)) => p.query.as_deref().into_iter().collect(),
        Some(NodeEnum::DeclareCursorStmt(d)) => d.query.as_deref().into_iter().collect(),
        Some(NodeEnum::RuleStmt(r)) => r.actions.iter().collect(),
        _ => Vec::new(),
    }
}

/// The classification of a wrapped query (unreadable: an error, refused).
fn wrapped_query(version: i32, query: &pg_query::protobuf::Node) -> Result<Action, ClassifyError> {
    let result = pg_query::protobuf::ParseResult {
        version,
        stmts: vec![pg_query::protobuf::RawStmt {
            stmt: Some(Box::new(query.clone())),
            stmt_location: 0,
            stmt_len: 0,
        }],
    };
    let sql = pg_query::deparse(&result, Default::default())
        .map_err(|e| ClassifyError::other(format!("a wrapped query cannot be read: {e}")))?;
    classify(&sql)
}

fn prepared_op(node: Option<&NodeEnum>) -> Option<PreparedOp> {
    use pg_query::protobuf::DiscardMode;
    match node? {
        NodeEnum::PrepareStmt(p) => Some(PreparedOp::Prepare(p.name.clone())),
        NodeEnum::ExecuteStmt(e) => Some(PreparedOp::Execute(e.name.clone())),
        NodeEnum::DeallocateStmt(d) if d.isall || d.name.is_empty() => {
            Some(PreparedOp::Deallocate(None))
        }
        NodeEnum::DeallocateStmt(d) => Some(PreparedOp::Deallocate(Some(d.name.clone()))),
        NodeEnum::DiscardStmt(d) if d.target == DiscardMode::DiscardAll as i32 => {
            Some(PreparedOp::Deallocate(None))
        }
        _ => None,
    }
}

/// The roles a node hands ownership or default privileges to (named roles
/// only: CURRENT_USER and the like are the session's own login role).
fn new_owners(node: NodeRef<'_>, out: &mut BTreeSet<String>) {
    let mut add = |r: &Option<pg_query::protobuf::RoleSpec>| {
        if let Some(r) = r.as_ref().filter(|r| !r.rolename.is_empty()) {
            out.insert(r.rolename.clone());
        }
    };
    match node {
        NodeRef::AlterOwnerStmt(s) => add(&s.newowner),
        NodeRef::AlterTableStmt(a) => {
            for c in &a.cmds {
                if let Some(NodeEnum::AlterTableCmd(c)) = &c.node {
                    if c.subtype == AlterTableType::AtChangeOwner as i32 {
                        add(&c.newowner);
                    }
                }
            }
        }
        NodeRef::ReassignOwnedStmt(s) => add(&s.newrole),
        NodeRef::CreateSchemaStmt(s) => add(&s.authrole),
        NodeRef::AlterDefaultPrivilegesStmt(s) => {
            for opt in &s.options {
                let Some(NodeEnum::DefElem(d)) = &opt.node else {
                    continue;
                };
                if d.defname != "roles" {
                    continue;
                }
                if let Some(NodeEnum::List(l)) = d.arg.as_ref().and_then(|a| a.node.as_ref()) {
                    for item in &l.items {
                        if let Some(NodeEnum::RoleSpec(r)) = &item.node {
                            add(&Some(r.clone()));
                        }
                    }
                }
            }
        }
        _ => {}
    }
}

/// The session setting whose value becomes the reason of auto-filed requests.
pub const REASON_SETTING: &str = "jitgate.reason";

/// Whether `sql` may commit part of its work before failing: `CALL` and `DO`
/// may run `COMMIT` inside when called outside a transaction block, so their
/// failure does not mean nothing happened. Unreadable text: assumed so.
pub fn may_commit_inside(sql: &str) -> bool {
    let Ok(parsed) = pg_query::parse(sql, 0) else {
        return true;
    };
    parsed.protobuf.stmts.iter().any(|raw| {
        matches!(
            raw.stmt.as_ref().and_then(|s| s.node.as_ref()),
            Some(NodeEnum::DoStmt(_) | NodeEnum::CallStmt(_)) | None
        )
    })
}

/// Whether a statement contains an INSERT, UPDATE, DELETE or MERGE anywhere
/// (a data-modifying CTE), by the whole-tree walk.
fn modifies(node: &NodeEnum) -> bool {
    let result = pg_query::protobuf::ParseResult {
        version: 0,
        stmts: vec![pg_query::protobuf::RawStmt {
            stmt: Some(Box::new(pg_query::protobuf::Node {
                node: Some(node.clone()),
            })),
            stmt_location: 0,
            stmt_len: 0,
        }],
    };
    Tree::of(&result).writes
}

/// `ALTER TABLE ... OWNER TO`: hands all privileges on the table to someone.
pub(crate) fn changes_owner(a: &pg_query::protobuf::AlterTableStmt) -> bool {
    a.cmds.iter().any(|c| {
        matches!(&c.node, Some(NodeEnum::AlterTableCmd(cmd)) if cmd.subtype == AlterTableType::AtChangeOwner as i32)
    })
}

/// The kind of one statement, and whether it could change identity.
fn statement_kind(node: Option<&NodeEnum>) -> (ActionKind, bool) {
    use ActionKind::*;
    let Some(node) = node else {
        return (Unknown, false);
    };
    let inner = |q: &Option<Box<pg_query::protobuf::Node>>| {
        statement_kind(q.as_ref().and_then(|n| n.node.as_ref()))
    };
    match node {
        NodeEnum::SelectStmt(s) if s.into_clause.is_some() => (Write, false),
        // A data-modifying CTE makes a SELECT a write.
        NodeEnum::SelectStmt(_) if modifies(node) => (Write, false),
        NodeEnum::SelectStmt(_) => (Read, false),
        NodeEnum::InsertStmt(_)
        | NodeEnum::UpdateStmt(_)
        | NodeEnum::DeleteStmt(_)
        | NodeEnum::MergeStmt(_) => (Write, false),
        NodeEnum::TruncateStmt(_) | NodeEnum::LockStmt(_) => (Write, false),
        NodeEnum::CopyStmt(c) if c.is_program || !c.filename.is_empty() => (Admin, false),
        NodeEnum::CopyStmt(c) if c.is_from => (Write, false),
        NodeEnum::CopyStmt(c) => match &c.query {
            Some(_) => {
                let (k, id) = inner(&c.query);
                (k.max(Read), id)
            }
            None => (Read, false),
        },
        NodeEnum::ExplainStmt(e) => {
            let analyze = e.options.iter().any(|o| {
                matches!(&o.node, Some(NodeEnum::DefElem(d)) if d.defname.eq_ignore_ascii_case("analyze"))
            });
            if analyze {
                inner(&e.query)
            } else {
                (Read, false)
            }
        }
        NodeEnum::PrepareStmt(p) => inner(&p.query),
        NodeEnum::DeclareCursorStmt(d) => inner(&d.query),
        NodeEnum::CreateTableAsStmt(c) => {
            let (k, id) = inner(&c.query);
            (k.max(Ddl), id)
        }
        NodeEnum::FetchStmt(_) | NodeEnum::ClosePortalStmt(_) | NodeEnum::VariableShowStmt(_) => {
            (Read, false)
        }
        NodeEnum::VariableSetStmt(v) => (Session, changes_identity(v)),
        NodeEnum::DiscardStmt(_)
        | NodeEnum::ListenStmt(_)
        | NodeEnum::UnlistenStmt(_)
        | NodeEnum::NotifyStmt(_)
        | NodeEnum::DeallocateStmt(_)
        | NodeEnum::ConstraintsSetStmt(_) => (Session, false),
        NodeEnum::TransactionStmt(_) => (Transaction, false),
        NodeEnum::DoStmt(_) | NodeEnum::CallStmt(_) => (Call, false),
        NodeEnum::ExecuteStmt(_) => (Unknown, false),
        NodeEnum::GrantStmt(_)
        | NodeEnum::GrantRoleStmt(_)
        | NodeEnum::AlterDefaultPrivilegesStmt(_)
        | NodeEnum::CreateRoleStmt(_)
        | NodeEnum::AlterRoleStmt(_)
        | NodeEnum::AlterRoleSetStmt(_)
        | NodeEnum::DropRoleStmt(_)
        | NodeEnum::ReassignOwnedStmt(_)
        | NodeEnum::DropOwnedStmt(_)
        | NodeEnum::AlterOwnerStmt(_)
        | NodeEnum::CreatePolicyStmt(_)
        | NodeEnum::AlterPolicyStmt(_) => (Privilege, false),
        NodeEnum::VacuumStmt(_)
        | NodeEnum::ClusterStmt(_)
        | NodeEnum::ReindexStmt(_)
        | NodeEnum::CheckPointStmt(_)
        | NodeEnum::LoadStmt(_)
        | NodeEnum::AlterSystemStmt(_)
        | NodeEnum::CreatedbStmt(_)
        | NodeEnum::DropdbStmt(_)
        | NodeEnum::AlterDatabaseStmt(_)
        | NodeEnum::AlterDatabaseSetStmt(_)
        | NodeEnum::CreateTableSpaceStmt(_)
        | NodeEnum::DropTableSpaceStmt(_)
        | NodeEnum::CreateExtensionStmt(_)
        | NodeEnum::AlterExtensionStmt(_)
        | NodeEnum::CreateSubscriptionStmt(_)
        | NodeEnum::AlterSubscriptionStmt(_)
        | NodeEnum::CreateFdwStmt(_)
        | NodeEnum::CreateForeignServerStmt(_)
        | NodeEnum::CreateUserMappingStmt(_)
        | NodeEnum::ImportForeignSchemaStmt(_)
        | NodeEnum::CreateEventTrigStmt(_) => (Admin, false),
        NodeEnum::AlterTableStmt(a) if changes_owner(a) => (Privilege, false),
        NodeEnum::CreateStmt(_)
        | NodeEnum::AlterTableStmt(_)
        | NodeEnum::DropStmt(_)
        | NodeEnum::IndexStmt(_)
        | NodeEnum::ViewStmt(_)
        | NodeEnum::CreateSchemaStmt(_)
        | NodeEnum::CreateSeqStmt(_)
        | NodeEnum::AlterSeqStmt(_)
        | NodeEnum::CreateFunctionStmt(_)
        | NodeEnum::AlterFunctionStmt(_)
        | NodeEnum::CreateTrigStmt(_)
        | NodeEnum::RenameStmt(_)
        | NodeEnum::CommentStmt(_)
        | NodeEnum::DefineStmt(_)
        | NodeEnum::CompositeTypeStmt(_)
        | NodeEnum::CreateEnumStmt(_)
        | NodeEnum::AlterEnumStmt(_)
        | NodeEnum::CreateDomainStmt(_)
        | NodeEnum::RuleStmt(_)
        | NodeEnum::AlterObjectSchemaStmt(_)
        | NodeEnum::RefreshMatViewStmt(_)
        | NodeEnum::CreateStatsStmt(_) => (Ddl, false),
        _ => (Unknown, false),
    }
}
