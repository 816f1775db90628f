//! What built-in calls and `SET`s do, as the classifier reads them: writes
//! through sequences and large objects, SQL text or relations read by name,
//! identity changes, and settings given a value.

use crate::tree::{Arg, Call, Setting};
use pg_query::protobuf::a_const::Val;
use pg_query::NodeEnum;

/// Built-in functions that change data: sequences and large objects.
const WRITE_FUNCTIONS: &[&str] = &[
    "nextval",
    "setval",
    "lo_create",
    "lo_creat",
    "lo_unlink",
    "lowrite",
    "lo_put",
    "lo_truncate",
    "lo_truncate64",
    "lo_from_bytea",
];

/// If `call` writes (a sequence or a large object): the sequence it names,
/// when that is a constant (`nextval('public.orders_id_seq')`).
pub(crate) fn writes_through(call: &Call) -> Option<Option<String>> {
    let name = WRITE_FUNCTIONS.iter().find(|f| call.is(f))?;
    Some(match call.args.first() {
        Some(Arg::Const(s)) if name.ends_with("val") => Some(relation_name(s)),
        _ => None,
    })
}

/// What a built-in that runs SQL text or reads a relation by name reads.
pub(crate) enum Inner {
    Query(String),
    Relation(String),
    /// Not known from the text: a computed argument, or a whole schema.
    Unseen,
}

/// `query_to_xml('select ...')`, `table_to_xml('t')`, `ts_stat('select ...')`
/// and the like (`cursor_to_xml` reads a cursor, judged at `DECLARE`).
pub(crate) fn runs_sql(call: &Call) -> Option<Inner> {
    let (arg, query) = match call.base() {
        "query_to_xml" | "query_to_xmlschema" | "query_to_xml_and_xmlschema" | "ts_stat" => {
            (0, true)
        }
        "ts_rewrite" if call.args.len() == 2 => (1, true),
        "table_to_xml" | "table_to_xmlschema" | "table_to_xml_and_xmlschema" => (0, false),
        "schema_to_xml"
        | "schema_to_xmlschema"
        | "schema_to_xml_and_xmlschema"
        | "database_to_xml"
        | "database_to_xmlschema"
        | "database_to_xml_and_xmlschema" => return Some(Inner::Unseen),
        _ => return None,
    };
    if call.name.contains('.') && !call.name.starts_with("pg_catalog.") {
        // Not the built-in: a user function, opaque anyway.
        return None;
    }
    Some(match call.args.get(arg) {
        Some(Arg::Const(text)) if query => Inner::Query(text.clone()),
        Some(Arg::Const(name)) => Inner::Relation(relation_name(name)),
        _ => Inner::Unseen,
    })
}

/// A relation name given as text (`'Public."Odd"'`), as the parser writes
/// names: unquoted parts lower case.
pub(crate) fn relation_name(text: &str) -> String {
    match pg_query::parse(&format!("SELECT 1 FROM {text}"), 0) {
        Ok(p) => p
            .tables
            .first()
            .map_or_else(|| text.to_ascii_lowercase(), |(t, _)| t.clone()),
        Err(_) => text.to_ascii_lowercase(),
    }
}

/// `set_config('role' | 'session_authorization', ...)`, or a `set_config` whose
/// first argument is not a constant (we cannot tell: assume the worst).
pub(crate) fn sets_identity(call: &Call) -> Identity {
    if call.base() != "set_config" {
        return Identity::No;
    }
    match call.args.first() {
        Some(Arg::Const(s)) if !is_identity_setting(s) => Identity::No,
        // Known only at Bind: the value of this parameter decides.
        Some(Arg::Param(n)) if *n > 0 => Identity::Param(*n),
        _ => Identity::Yes,
    }
}

/// Whether a `set_config` call names an identity setting.
pub(crate) enum Identity {
    No,
    Yes,
    /// The setting's name is bound parameter `$n`.
    Param(i32),
}

/// Whether the value of a bound `set_config` name is refused: a setting that
/// changes identity (`role`, `session_authorization`), or one that changes
/// how statements are lexed (`client_encoding`, `standard_conforming_strings`:
/// their values are not seen; `SET` of them is), in any case and spacing.
pub fn is_identity_value(value: &str) -> bool {
    let v = value.trim();
    is_identity_setting(v)
        || v.eq_ignore_ascii_case("client_encoding")
        || v.eq_ignore_ascii_case("standard_conforming_strings")
}

/// `SET ROLE r`, `SET SESSION AUTHORIZATION r` and the like. The forms that
/// return to the login role pass: `RESET ROLE`, `SET ROLE NONE`, `RESET
/// SESSION AUTHORIZATION`, `SET SESSION AUTHORIZATION DEFAULT`, `RESET ALL`
/// (the defaults they return to are the login role's own: the gateway refuses
/// identity startup parameters, and its reconciler removes role defaults that
/// set `role` or `session_authorization`).
pub(crate) fn changes_identity(v: &pg_query::protobuf::VariableSetStmt) -> bool {
    use pg_query::protobuf::VariableSetKind as K;
    if !is_identity_setting(&v.name) {
        return false;
    }
    match K::try_from(v.kind) {
        Ok(K::VarReset | K::VarResetAll | K::VarSetDefault) => false,
        Ok(K::VarSetValue) if v.name.eq_ignore_ascii_case("role") => {
            // `SET ROLE NONE` (also `TO 'none'`) is the login role itself.
            !matches!(v.args.as_slice(), [one] if matches!(&one.node,
                Some(NodeEnum::AConst(c)) if matches!(&c.val,
                    Some(Val::Sval(s)) if s.sval.eq_ignore_ascii_case("none"))))
        }
        _ => true,
    }
}

/// `SET setting ...` (any form that gives it a value): `Some(value)`, the
/// value `None` when not a single constant. `RESET`, `SET ... TO DEFAULT` and
/// `FROM CURRENT` keep or return to a value the gateway has checked.
pub(crate) fn set_value(v: &Setting, setting: &str) -> Option<Option<String>> {
    // `SET NAMES 'x'` is `client_encoding`.
    let names_it = v.name == setting || (setting == "client_encoding" && v.name == "names");
    // pg_query's VariableSetKind: 1 is VAR_SET_VALUE.
    if !names_it || v.kind != 1 {
        return None;
    }
    Some(match v.args.as_slice() {
        [Arg::Const(c)] => Some(c.clone()),
        _ => None,
    })
}

/// `set_config(setting, value, ...)` naming `setting`: `Some(value)`, the
/// value `None` when not a constant. Any function called `set_config`
/// counts: a user's may call the built-in.
pub(crate) fn sets_setting(call: &Call, setting: &str) -> Option<Option<String>> {
    if call.base() != "set_config" {
        return None;
    }
    let value = match call.args.get(1) {
        Some(Arg::Const(v)) => Some(v.clone()),
        _ => None,
    };
    // A name that is not a constant is refused as a possible identity change
    // (see `sets_identity`), a bound one checked at Bind.
    match call.args.first() {
        Some(Arg::Const(name)) if name.trim().eq_ignore_ascii_case(setting) => Some(value),
        _ => None,
    }
}

pub(crate) fn is_identity_setting(name: &str) -> bool {
    let n = name.trim().to_ascii_lowercase();
    n == "role" || n == "session_authorization"
}
