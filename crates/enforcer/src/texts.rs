//! Statements as the audit log and requests show them: a text as sent, a
//! bound statement with its values, a fast-path call as the `SELECT` it
//! amounts to.

use policy::classify::Action;
use proxy::{Bound, Statement};

pub(crate) fn statement_text(statement: Statement<'_>, action: Option<&Action>) -> String {
    match statement {
        Statement::Simple(t) | Statement::Parse(t) => t.to_string(),
        Statement::FunctionCall(oid, _) => {
            let name = action
                .and_then(|a| a.functions.iter().next().cloned())
                .unwrap_or_else(|| "a function that is not built in".into());
            format!("<fast-path call of {name}, oid {oid}>")
        }
        Statement::Bind { text, values } => bound_text(text, values),
    }
}

/// A bound statement as one text: the statement, then its values, rendered
/// the same way every time (an `approve_each` approval is for these).
fn bound_text(text: &str, values: &[Bound<'_>]) -> String {
    use postgres_protocol::escape::escape_literal;
    if values.is_empty() {
        return text.to_string();
    }
    let rendered: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let v = match v {
                Bound::Null => "NULL".to_string(),
                Bound::Text(t) => escape_literal(t),
                Bound::Bytes(b) => {
                    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
                    format!("<binary {hex}>")
                }
            };
            format!("${} = {v}", i + 1)
        })
        .collect();
    format!("{text}\n-- bound: {}", rendered.join(", "))
}

/// The SQL a fast-path call amounts to: text arguments as literals, binary
/// ones as parameters (their values unseen, as with a Bind the gateway does
/// not read), NULL as NULL.
pub(crate) fn fast_path_sql(name: &str, args: &[wire::frontend::Value<'_>]) -> String {
    use postgres_protocol::escape::{escape_identifier, escape_literal};
    use wire::frontend::Value;
    let args: Vec<String> = args
        .iter()
        .enumerate()
        .map(|(i, a)| match a {
            Value::Null => "NULL".to_string(),
            Value::Text(v) => match std::str::from_utf8(v) {
                Ok(t) if !t.contains('\0') => escape_literal(t),
                _ => format!("${}", i + 1),
            },
            Value::Binary(_) => format!("${}", i + 1),
        })
        .collect();
    format!(
        "SELECT pg_catalog.{}({})",
        escape_identifier(name),
        args.join(", ")
    )
}
