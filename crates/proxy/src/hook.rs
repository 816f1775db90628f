//! The one place every statement passes before it reaches the database.
//!
//! The relay calls [`StatementHook::check`] for every statement of a simple
//! `Query`, every `Parse`, and every `FunctionCall`. The hook (the enforcer's
//! policy hook in `jitgate serve`) decides; the relay itself never does.
//!
//! Most answers are immediate ([`Check::Allow`], [`Check::Refuse`]), so the hot
//! path allocates nothing. An answer that needs I/O — filing a request, holding
//! a statement until its request is decided — is a [`Check::Wait`]: the relay
//! awaits it while results keep flowing to the client.
//!
//! A refusal does not write to the client directly: the relay swaps the refused
//! message for one that makes the *server* fail at the same point, so the error
//! arrives in order, the transaction is aborted as PostgreSQL would abort it, and
//! in a pipeline everything up to `Sync` is skipped by the server itself (see
//! `relay/`).

use crate::sessions::Session;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use wire::backend::ErrorFields;

/// One statement, or one fast-path function call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Statement<'a> {
    /// A statement of a simple `Query` (one of possibly several).
    Simple(&'a str),
    /// The text of a `Parse` message (extended protocol).
    Parse(&'a str),
    /// A `FunctionCall` message: the function's OID and its arguments.
    FunctionCall(u32, &'a [wire::frontend::Value<'a>]),
    /// A `Bind` of a statement the hook asked to judge again at each Bind
    /// (see [`crate::Session::check_binds`]): its text and bound values.
    Bind {
        text: &'a str,
        values: &'a [Bound<'a>],
    },
}

impl Statement<'_> {
    pub fn text(&self) -> Option<&str> {
        match self {
            Statement::Simple(t) | Statement::Parse(t) => Some(t),
            Statement::FunctionCall(..) | Statement::Bind { .. } => None,
        }
    }
}

/// One bound parameter value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bound<'a> {
    Null,
    /// Text format, in the session's encoding, decoded.
    Text(&'a str),
    /// Binary format, or text the session's encoding cannot read.
    Bytes(&'a [u8]),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// Refuse with this error; the session stays usable.
    Refuse(ErrorFields),
}

pub type VerdictFuture = Pin<Box<dyn Future<Output = Verdict> + Send + 'static>>;

/// The hook's answer.
pub enum Check {
    Allow,
    Refuse(ErrorFields),
    /// Decided later (I/O, or a statement held until its request is decided).
    Wait(VerdictFuture),
}

impl From<Verdict> for Check {
    fn from(v: Verdict) -> Check {
        match v {
            Verdict::Allow => Check::Allow,
            Verdict::Refuse(e) => Check::Refuse(e),
        }
    }
}

/// A permission error (SQLSTATE 42501) PostgreSQL sent for a statement the
/// hook let through.
#[derive(Debug, Clone, Copy)]
pub struct Denied<'a> {
    /// The message as the server wrote it.
    pub message: &'a str,
    /// The statement's text, when the relay kept it.
    pub statement: Option<&'a str>,
    /// The failed attempt left nothing behind and the client saw nothing of
    /// it: the relay can run it again (see `rerun.rs`).
    pub rerunnable: bool,
}

/// The hook's answer to a [`Denied`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Explained {
    /// Its own error in place of the server's.
    Refuse(ErrorFields),
    /// Now allowed (a request was approved while the statement was held):
    /// the relay runs it again. Only for a `rerunnable` one.
    RunAgain,
}

/// The hook's answer to a [`Denied`], once it has looked.
pub type ExplainFuture = Pin<Box<dyn Future<Output = Option<Explained>> + Send + 'static>>;

pub trait StatementHook: Send + Sync + 'static {
    fn check(&self, session: &Arc<Session>, statement: Statement<'_>) -> Check;

    /// PostgreSQL refused a statement the hook let through for lack of a
    /// privilege. The hook may look (the catalog, filing a request) and
    /// answer with its own error in its place, or, for a `rerunnable` one,
    /// hold it until it may run again; `None`, or no answer within a few
    /// seconds (when not rerunnable): the server's error goes to the client
    /// as it is. The database enforced either way.
    fn explain_denied(
        &self,
        _session: &Arc<Session>,
        _denied: Denied<'_>,
    ) -> Option<ExplainFuture> {
        None
    }

    /// Whether the relay should keep each statement a session sends while
    /// idle, to run it again after a [`Explained::RunAgain`] (costs a copy
    /// of the statement; only worth it when the hook holds statements).
    fn runs_again(&self, _session: &Arc<Session>) -> bool {
        false
    }

    /// The server reports a setting under which the gateway cannot read the
    /// session's statements as the server will (`standard_conforming_strings
    /// = off`, a client encoding no outside parser can lex): set outside the
    /// gateway (a role default, a function). The relay ends the session; the
    /// hook records it.
    fn unreadable_session(&self, _session: &Arc<Session>, _setting: &str, _value: &str) {}
}

/// The hook of the bare gateway: everything goes to the database, which still
/// enforces the login role's own privileges.
pub struct AllowAll;

impl StatementHook for AllowAll {
    fn check(&self, _: &Arc<Session>, _: Statement<'_>) -> Check {
        Check::Allow
    }
}
