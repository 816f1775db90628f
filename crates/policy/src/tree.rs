//! Every node of a parse tree, visited generically.
//!
//! pg_query's own lists (`tables`, `functions`, `nodes()`) follow a fixed set
//! of positions and miss others: a function called in a `VALUES` list, in a
//! `DEFAULT`, in a function's `SET` clause, ... A rule can only be as sound as
//! the walk that finds what a statement touches, so this one does not choose
//! positions: it serializes the tree (pg_query's protobuf types are
//! `serde::Serialize`) and visits every object in it. Whatever the node kind
//! and wherever it sits, a function call, a relation or a setting is found.
//!
//! What it collects:
//! - every function call (`FuncCall`), with the arguments that are constants
//!   or bound parameters;
//! - every relation (`RangeVar`, recognised by its fields, since it also
//!   appears as a typed field without its node name);
//! - every `SET` (`VariableSetStmt`: statements and functions' `SET` clauses);
//! - every operator name (`A_Expr`, and `OPERATOR(schema.op)`) and every type
//!   cast to, since a user-defined operator runs a user-defined function and
//!   a cast to a user-defined type may (a domain's checks, a cast function);
//! - whether a data-modifying statement appears anywhere.

use serde_json::{Map, Value};

/// One argument of a call, as far as the text tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// A constant (string, number; a cast of one counts as the constant).
    Const(String),
    /// Bound parameter `$n`.
    Param(i32),
    /// Anything else: computed when it runs.
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Call {
    /// As written, lower case, parts joined with `.` (`pg_catalog.set_config`).
    pub name: String,
    pub args: Vec<Arg>,
}

impl Call {
    /// The name without its schema.
    pub fn base(&self) -> &str {
        self.name.rsplit('.').next().unwrap_or(&self.name)
    }

    /// Whether it names the built-in function `name` (unqualified, or in
    /// `pg_catalog`); a same-named function in another schema is not it.
    pub fn is(&self, name: &str) -> bool {
        self.name == name || self.name.strip_prefix("pg_catalog.") == Some(name)
    }
}

/// `SET name ...` in any position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    pub name: String,
    /// pg_query's `VariableSetKind` (1: a value, 2: DEFAULT, 3: FROM CURRENT, ...).
    pub kind: i64,
    pub args: Vec<Arg>,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Tree {
    pub calls: Vec<Call>,
    /// Relations as written (`schema.table` or `table`).
    pub relations: Vec<String>,
    pub settings: Vec<Setting>,
    /// Operators used, as written (`+`, `myschema.===`).
    pub operators: Vec<String>,
    /// Types cast to, as written (`pg_catalog.int4`, `mydomain`).
    pub types: Vec<String>,
    /// An INSERT, UPDATE, DELETE or MERGE appears somewhere.
    pub writes: bool,
    /// Every name in the tree (`String` nodes, `newname`): what a DDL
    /// statement may define.
    pub names: Vec<String>,
}

impl Tree {
    pub fn of(parsed: &pg_query::protobuf::ParseResult) -> Tree {
        let mut tree = Tree::default();
        // Serializing plain data cannot fail; an empty tree would be unsound,
        // so a failure is reported as a call nobody knows.
        match serde_json::to_value(parsed) {
            Ok(v) => tree.visit(&v),
            Err(_) => tree.calls.push(Call {
                name: "<unreadable tree>".into(),
                args: Vec::new(),
            }),
        }
        tree
    }

    fn visit(&mut self, v: &Value) {
        match v {
            Value::Array(items) => items.iter().for_each(|i| self.visit(i)),
            Value::Object(map) => {
                // Known by their fields: these also appear as typed fields,
                // without the node name around them (`CallStmt.funccall`,
                // `InsertStmt.relation`, `AlterRoleSetStmt.setstmt`).
                let has = |keys: &[&str]| keys.iter().all(|k| map.contains_key(*k));
                if has(&["relname", "relpersistence", "inh"]) {
                    self.relations.push(range_var(map));
                } else if has(&["funcname", "agg_star", "func_variadic"]) {
                    self.calls.push(Call {
                        name: name_of(map.get("funcname")),
                        args: args_of(map.get("args")),
                    });
                } else if has(&["name", "kind", "args", "is_local"]) {
                    self.settings.push(Setting {
                        name: str_field(map, "name").to_ascii_lowercase(),
                        kind: map.get("kind").and_then(Value::as_i64).unwrap_or(0),
                        args: args_of(map.get("args")),
                    });
                } else if has(&["arg", "type_name", "location"]) && map.len() == 3 {
                    let name = name_of(map.get("type_name").and_then(|t| t.get("names")));
                    if !name.is_empty() {
                        self.types.push(name);
                    }
                } else if has(&["kind", "name", "lexpr", "rexpr"]) {
                    let name = name_of(map.get("name"));
                    // `BETWEEN` and the like name a form, not an operator.
                    let base = name.rsplit('.').next().unwrap_or("");
                    if !base.is_empty() && !base.chars().any(|c| c.is_ascii_alphabetic()) {
                        self.operators.push(name);
                    }
                }
                if let Some(Value::Object(node)) = map.get("node") {
                    if node.keys().any(|k| {
                        matches!(
                            k.as_str(),
                            "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt"
                        )
                    }) {
                        self.writes = true;
                    }
                }
                for key in ["sval", "newname"] {
                    if let Some(Value::String(n)) = map.get(key) {
                        self.names.push(n.to_ascii_lowercase());
                    }
                }
                map.values().for_each(|v| self.visit(v));
            }
            _ => {}
        }
    }
}

fn str_field<'a>(map: &'a Map<String, Value>, key: &str) -> &'a str {
    map.get(key).and_then(Value::as_str).unwrap_or("")
}

/// A RangeVar's own fields (it is not always wrapped in a node).
fn range_var(map: &Map<String, Value>) -> String {
    let (schema, rel) = (str_field(map, "schemaname"), str_field(map, "relname"));
    if schema.is_empty() {
        rel.to_string()
    } else {
        format!("{schema}.{rel}")
    }
}

/// A list of `String` nodes joined with `.`, lower case.
fn name_of(list: Option<&Value>) -> String {
    let Some(Value::Array(parts)) = list else {
        return String::new();
    };
    parts
        .iter()
        .filter_map(|p| p.pointer("/node/String/sval").and_then(Value::as_str))
        .collect::<Vec<_>>()
        .join(".")
        .to_ascii_lowercase()
}

fn args_of(list: Option<&Value>) -> Vec<Arg> {
    let Some(Value::Array(items)) = list else {
        return Vec::new();
    };
    items.iter().map(arg).collect()
}

fn arg(v: &Value) -> Arg {
    let Some(Value::Object(node)) = v.get("node") else {
        return Arg::Other;
    };
    let Some((kind, fields)) = node.iter().next() else {
        return Arg::Other;
    };
    match kind.as_str() {
        "AConst" => match fields.get("val") {
            Some(Value::Object(val)) => match val.iter().next() {
                Some((_, Value::Object(inner))) => inner
                    .values()
                    .next()
                    .map(|x| match x {
                        Value::String(s) => Arg::Const(s.clone()),
                        Value::Number(n) => Arg::Const(n.to_string()),
                        Value::Bool(b) => Arg::Const(if *b { "on" } else { "off" }.into()),
                        _ => Arg::Other,
                    })
                    .unwrap_or(Arg::Other),
                _ => Arg::Other,
            },
            // NULL
            _ => Arg::Other,
        },
        "ParamRef" => fields
            .get("number")
            .and_then(Value::as_i64)
            .map_or(Arg::Other, |n| Arg::Param(n as i32)),
        "TypeCast" => fields.get("arg").map_or(Arg::Other, arg),
        _ => Arg::Other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(sql: &str) -> Tree {
        Tree::of(&pg_query::parse(sql, 0).unwrap().protobuf)
    }

    fn names(t: &Tree) -> Vec<&str> {
        t.calls.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn calls_are_found_in_every_position() {
        for (sql, f) in [
            ("VALUES (wipe(1))", "wipe"),
            ("INSERT INTO t VALUES (wipe(1))", "wipe"),
            ("INSERT INTO t DEFAULT VALUES RETURNING wipe(id)", "wipe"),
            ("SELECT 1 ORDER BY wipe(1)", "wipe"),
            ("SELECT 1 LIMIT wipe(1)", "wipe"),
            ("SELECT abs(wipe(1))", "wipe"),
            ("CALL p(wipe(1))", "wipe"),
            ("CREATE TABLE t (i int DEFAULT wipe(1))", "wipe"),
            ("CREATE TABLE t (i int CHECK (wipe(i) > 0))", "wipe"),
            ("CREATE INDEX ON t (wipe(i))", "wipe"),
            ("CREATE POLICY p ON t USING (wipe(1) > 0)", "wipe"),
            (
                "CREATE TRIGGER tr BEFORE INSERT ON t FOR EACH ROW WHEN (wipe(1) > 0) \
                 EXECUTE FUNCTION f()",
                "wipe",
            ),
            ("SELECT * FROM wipe(1)", "wipe"),
            ("UPDATE t SET a = 1 FROM (VALUES (s.wipe(1))) v", "s.wipe"),
        ] {
            assert!(
                names(&tree(sql)).contains(&f),
                "{sql}: {:?}",
                tree(sql).calls
            );
        }
    }

    #[test]
    fn relations_named_anywhere() {
        let t = tree("CREATE TEMP TABLE x AS SELECT s FROM public.secrets");
        assert!(t.relations.contains(&"public.secrets".to_string()), "{t:?}");
        assert!(t.relations.contains(&"x".to_string()));
        let t = tree("INSERT INTO w SELECT * FROM (VALUES (1)) v WHERE EXISTS (TABLE other.t)");
        assert!(t.relations.contains(&"w".to_string()));
        assert!(t.relations.contains(&"other.t".to_string()));
    }

    #[test]
    fn settings_and_arguments() {
        let t = tree(
            "CREATE FUNCTION f() RETURNS int LANGUAGE sql \
             SET standard_conforming_strings = off AS 'select 1'",
        );
        assert_eq!(
            t.settings,
            vec![Setting {
                name: "standard_conforming_strings".into(),
                kind: 1,
                args: vec![Arg::Const("off".into())]
            }]
        );
        let t = tree("SELECT pg_catalog.set_config($1::text, 'x'::text, false)");
        assert_eq!(
            t.calls[0].args,
            vec![
                Arg::Param(1),
                Arg::Const("x".into()),
                Arg::Const("off".into())
            ]
        );
        assert!(t.calls[0].is("set_config"));
        assert!(!tree("SELECT evil.set_config('a', 'b', true)").calls[0].is("set_config"));
        assert_eq!(tree("SELECT 1 OPERATOR(s.===) 2").operators, vec!["s.==="]);
    }
}
