//! The one place every statement passes before it reaches the database.
//!
//! The relay calls [`StatementHook::check`] for every statement of a simple
//! `Query`, every `Parse`, and every `FunctionCall`. Classification and policy
//! (later issues) plug in here; the relay itself never decides.
//!
//! A refusal does not write to the client directly: the relay swaps the refused
//! message for one that makes the *server* fail at the same point, so the error
//! arrives in order, the transaction is aborted as PostgreSQL would abort it, and
//! in a pipeline everything up to `Sync` is skipped by the server itself (see
//! `relay.rs`).

use wire::backend::ErrorFields;

/// Who is asking, as the hook sees it.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub id: u64,
    pub user: String,
    pub database: String,
    pub login_role: String,
}

/// One statement, or one fast-path function call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statement<'a> {
    /// A statement of a simple `Query` (one of possibly several).
    Simple(&'a str),
    /// The text of a `Parse` message (extended protocol).
    Parse(&'a str),
    /// A `FunctionCall` message, by function OID.
    FunctionCall(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refuse with this error; the session stays usable.
    Refuse(ErrorFields),
}

pub trait StatementHook: Send + Sync + 'static {
    fn check(&self, session: &SessionInfo, statement: Statement<'_>) -> Verdict;
}

/// The hook of the bare gateway: everything goes to the database, which still
/// enforces the login role's own privileges.
pub struct AllowAll;

impl StatementHook for AllowAll {
    fn check(&self, _: &SessionInfo, _: Statement<'_>) -> Verdict {
        Verdict::Allow
    }
}
