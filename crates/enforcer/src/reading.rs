//! Steps of the policy hook about reading a statement as the server will:
//! a Bind judged again with its values, a text pipelined behind a possible
//! change of lexical settings, a fast-path call of an unknown function, and
//! statements setting those lexical settings.

use crate::hook::PolicyHook;
use crate::texts::statement_text;
use policy::classify::{is_identity_value, Action};
use proxy::{Bound, Check, Session, Statement};
use std::sync::Arc;
use wire::backend::ErrorFields;
use wire::encoding::ClientEncoding;

const LEXING_UNSURE: &str = "jitgate cannot yet tell how PostgreSQL will read this statement: it \
     was sent behind one that may change standard_conforming_strings or client_encoding (a \
     function, a SET), and it has non-ASCII text or backslashes in a plain string literal, which \
     those settings read differently";

pub(crate) const IDENTITY_REFUSAL: &str =
    "the statement could change the session's identity (SET ROLE and the like)";

impl PolicyHook {
    /// A Bind the hook asked to see (see `Session::check_binds`): the
    /// statement judged again, with its values and the grants in force now.
    pub(crate) fn check_bind(
        &self,
        session: &Arc<Session>,
        text: &str,
        values: &[Bound<'_>],
    ) -> Check {
        let st = &self.state;
        let statement = Statement::Bind { text, values };
        let classified = st.classify(&session.database, Statement::Parse(text));
        let Ok(action) = &*classified else {
            let err = st.refusal("jitgate: the statement bound cannot be read");
            return Check::Refuse(err);
        };
        // `set_config($1, ...)`: the value of the name decides.
        let identity = action
            .identity_params
            .iter()
            .any(|&n| match values.get((n - 1) as usize) {
                Some(Bound::Text(v)) => is_identity_value(v),
                Some(Bound::Bytes(b)) => std::str::from_utf8(b).is_ok_and(is_identity_value),
                _ => false,
            });
        if identity {
            let text = statement_text(statement, None);
            let err = st.refusal(format!("jitgate: {IDENTITY_REFUSAL}"));
            return Check::Refuse(st.refuse(session, &text, "session", None, err, true));
        }
        self.verdict(session, statement, action)
    }

    /// A statement the gateway cannot read as the server will: pipelined
    /// behind one that may change lexing, or a fast-path call of a function
    /// the catalog does not have.
    pub(crate) fn unreadable(
        &self,
        session: &Arc<Session>,
        statement: Statement<'_>,
    ) -> Option<Check> {
        let st = &self.state;
        // Pipelined behind a statement that may change how the server lexes
        // (a function may set standard_conforming_strings): only a text that
        // reads the same under every setting can be judged now.
        if session.lexing_unsure() {
            if let Some(text) = statement
                .text()
                .filter(|t| !policy::lexing::reads_the_same(t))
            {
                let err = ErrorFields::error("0A000", LEXING_UNSURE).with_hint(
                    "send it once the statement before it has answered, or write its \
                     literals without backslashes (E'...' strings are read the same either way)",
                );
                return Some(Check::Refuse(
                    st.refuse(session, text, "unknown", None, err, false),
                ));
            }
        }
        if let Statement::FunctionCall(oid, _) = statement {
            // A fast-path call names its function by OID: one the catalog
            // (as of the last snapshot) does not have is refused.
            let known = st
                .builtins(&session.database)
                .is_some_and(|b| b.by_oid.contains_key(&oid) || b.user_functions.contains(&oid));
            if !known {
                return Some(Check::Refuse(ErrorFields::error(
                    "42883",
                    format!("function with OID {oid} does not exist"),
                )));
            }
        }
        None
    }

    /// Settings that change how statements are lexed, set to a value the
    /// gateway could not read statements under: refused.
    pub(crate) fn lexical_settings(
        &self,
        session: &Arc<Session>,
        statement: Statement<'_>,
        action: &Action,
    ) -> Option<Check> {
        let st = &self.state;
        if let Some(value) = action.sets_client_encoding.iter().find(|v| {
            v.as_deref()
                .is_none_or(|e| ClientEncoding::of(e) == ClientEncoding::Unsafe)
        }) {
            // The gateway could not read the session's statements afterwards.
            return Some(Check::Refuse(
                ErrorFields::error(
                    "0A000",
                    format!(
                        "jitgate refuses client_encoding {}: its characters may contain quote or \
                         backslash bytes, which no parser outside the server can lex safely",
                        value.as_deref().unwrap_or("set from a value it cannot see")
                    ),
                )
                .with_hint("use UTF8, or a single-byte or EUC encoding such as LATIN9"),
            ));
        }
        if action.sets_standard_strings.iter().any(|v| {
            !v.as_deref()
                .is_some_and(policy::lexing::standard_strings_on)
        }) {
            let text = statement_text(statement, Some(action));
            let err = ErrorFields::error("0A000", proxy::startup::STANDARD_STRINGS_OFF)
                .with_hint("leave standard_conforming_strings on; write E'...' for escapes");
            return Some(Check::Refuse(
                st.refuse(session, &text, "session", None, err, true),
            ));
        }
        None
    }
}
