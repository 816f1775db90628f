//! Rules: which role an action on objects needs, or `deny`, or `approve_each`.
//!
//! Matching is conservative:
//! - a rule matches when its database and one of its actions match and, if it
//!   names objects, one of the statement's objects or functions matches one
//!   of its patterns; a `read` rule also matches what any statement reads (a
//!   `CREATE TABLE AS`, a view's query, a subquery of a write, a table a
//!   built-in reads by name);
//! - patterns are `schema.table`, `schema.*`, `table` (any schema) or `*`,
//!   compared without regard to case;
//! - an unqualified object may resolve to any schema on the search_path, so it
//!   matches a pattern of every schema. Changing search_path cannot dodge a rule.
//!
//! Among matching rules, `deny` beats `approve_each`, which beats roles; every
//! role a matching rule requires must be held. With no matching rule the
//! statement goes to the database, which enforces the login role's own
//! privileges (the enforcement model: the database is the boundary).
//!
//! A statement whose effect the gateway cannot see — a call of a function that
//! is not built in, `DO`, `CALL`, `EXECUTE` of an unknown prepared statement,
//! a statement the classifier does not know (kinds `call` and `unknown`) — is
//! *opaque*: unless a rule names it (a `call` rule on that function, an
//! `unknown` rule), it counts as touching every object every rule of the
//! database covers that the database does not back (`set_backed`; unknown:
//! not backed). Under backed rules, and with no rules at all, it goes to the
//! database, which refuses what it must (and the gateway explains).

use crate::classify::{Action, ActionKind};
use config::Config;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Role(String),
    Deny,
    /// Each statement needs its own approval, by this role's chain.
    ApproveEach(String),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub database: String,
    pub actions: BTreeSet<ActionKind>,
    pub objects: Vec<String>,
    pub outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    /// The statement needs this role, which the user does not hold now.
    NeedsRole(String),
    /// This exact statement needs its own approval (by this role's chain).
    ApproveEach(String),
    Deny(String),
}

#[derive(Debug, Clone, Default)]
pub struct Rules {
    rules: Vec<Rule>,
    /// Per rule: whether the database backs it (see `enforcer::backing`).
    /// Unknown until checked: not backed.
    backed: Arc<[AtomicBool]>,
}

fn kind_of(name: &str) -> Option<ActionKind> {
    use ActionKind::*;
    [
        Read,
        Write,
        Ddl,
        Privilege,
        Admin,
        Session,
        Transaction,
        Call,
        Unknown,
    ]
    .into_iter()
    .find(|k| k.as_str() == name)
}

/// Whether `object` (as written) may be what `pattern` names.
pub fn object_matches(pattern: &str, object: &str) -> bool {
    // Without allocating: this runs on the statement path.
    if pattern == "*" {
        return true;
    }
    let (ps, pn) = schema_and_name(pattern);
    let (os, on) = schema_and_name(object);
    let schema_ok = match (ps, os) {
        (Some(a), Some(b)) => a.eq_ignore_ascii_case(b),
        // Unqualified on either side: any schema.
        _ => true,
    };
    schema_ok && (pn == "*" || pn.eq_ignore_ascii_case(on))
}

/// `schema.name` → `(Some(schema), name)`; `name` → `(None, name)`.
fn schema_and_name(s: &str) -> (Option<&str>, &str) {
    match s.rsplit_once('.') {
        Some((schema, name)) => (Some(schema), name),
        None => (None, s),
    }
}

impl Rules {
    /// The rules of a validated configuration (unknown action names were refused there).
    pub fn from_config(cfg: &Config) -> Rules {
        let rules = cfg
            .rules
            .iter()
            .map(|r| Rule {
                database: r.database.clone(),
                actions: r.actions.iter().filter_map(|a| kind_of(a)).collect(),
                objects: r.objects.clone(),
                outcome: match (r.role.as_deref(), r.approve_each) {
                    (Some("deny"), _) | (None, _) => Outcome::Deny,
                    (Some(role), true) => Outcome::ApproveEach(role.to_string()),
                    (Some(role), false) => Outcome::Role(role.to_string()),
                },
            })
            .collect();
        Rules::new(rules)
    }

    pub fn new(rules: Vec<Rule>) -> Rules {
        let backed = rules.iter().map(|_| AtomicBool::new(false)).collect();
        Rules { rules, backed }
    }

    /// Whether the database backs rule `index` (the baseline roles and
    /// PUBLIC cannot already do what it reserves, and it reserves only
    /// privileges the database checks). Only unbacked rules count against
    /// statements whose effect the gateway cannot see.
    pub fn set_backed(&self, index: usize, backed: bool) {
        if let Some(b) = self.backed.get(index) {
            b.store(backed, Relaxed);
        }
    }

    /// Forget what was known about `database`'s rules (privileges changed):
    /// none is backed until checked again.
    pub fn unback(&self, database: &str) {
        for (r, b) in self.rules.iter().zip(self.backed.iter()) {
            if r.database == database {
                b.store(false, Relaxed);
            }
        }
    }

    pub fn is_backed(&self, index: usize) -> bool {
        self.backed.get(index).is_some_and(|b| b.load(Relaxed))
    }

    fn matching<'a>(
        &'a self,
        database: &'a str,
        action: &'a Action,
    ) -> impl Iterator<Item = &'a Rule> + 'a {
        let names = move |r: &Rule| {
            r.database == database
                && ((r.actions.contains(&action.kind)
                    && covers(r, action.objects.iter().chain(&action.functions)))
                    // Whatever the statement's kind, what it reads is read.
                    || (r.actions.contains(&ActionKind::Read)
                        && !action.reads.is_empty()
                        && covers(r, action.reads.iter())))
        };
        // Opaque and named by no rule: it may touch anything any rule covers
        // that the database does not enforce itself (under a backed rule,
        // PostgreSQL refuses what the gateway cannot see).
        let everything = is_opaque(action) && !self.rules.iter().any(names);
        self.rules
            .iter()
            .zip(self.backed.iter())
            .filter(move |(r, backed)| {
                if everything {
                    r.database == database && !backed.load(Relaxed)
                } else {
                    names(r)
                }
            })
            .map(|(r, _)| r)
    }

    /// The roles rules require for `action` (what a grant lends it).
    pub fn roles_needed<'a>(&'a self, database: &'a str, action: &'a Action) -> Vec<&'a str> {
        self.matching(database, action)
            .filter_map(|r| match &r.outcome {
                Outcome::Role(role) => Some(role.as_str()),
                _ => None,
            })
            .collect()
    }

    /// The verdict for `action` on `database`, for a user holding `active_roles`.
    /// (One pass over the matching rules, no allocation on the way to Allow:
    /// this runs for every statement.)
    pub fn decide(
        &self,
        database: &str,
        action: &Action,
        active_roles: &BTreeSet<String>,
    ) -> Verdict {
        if action.identity_change {
            return Verdict::Deny(
                "the statement could change the session's identity (SET ROLE and the like)".into(),
            );
        }
        let opaque = is_opaque(action);
        let mut approve_each: Option<&String> = None;
        let mut missing: Option<&String> = None;
        for r in self.matching(database, action) {
            match &r.outcome {
                Outcome::Deny if opaque => {
                    return Verdict::Deny(format!(
                        "{} statements run code the gateway cannot see into, so they count as \
                         touching every object the rules cover, and a rule denies some of them; \
                         a rule naming this function (actions = [\"{}\"]) can allow it",
                        action.kind.as_str(),
                        action.kind.as_str()
                    ))
                }
                Outcome::Deny => {
                    return Verdict::Deny(format!(
                        "{} statements on these objects are denied by policy",
                        action.kind.as_str()
                    ))
                }
                Outcome::ApproveEach(role) => approve_each = approve_each.or(Some(role)),
                Outcome::Role(role) => {
                    if missing.is_none() && !active_roles.contains(role) {
                        missing = Some(role);
                    }
                }
            }
        }
        if let Some(role) = approve_each {
            return Verdict::ApproveEach(role.clone());
        }
        if let Some(role) = missing {
            return Verdict::NeedsRole(role.clone());
        }
        Verdict::Allow
    }
}

/// Whether `r` names no objects, or one of `objects`.
fn covers<'a>(r: &Rule, mut objects: impl Iterator<Item = &'a String>) -> bool {
    r.objects.is_empty() || objects.any(|o| r.objects.iter().any(|p| object_matches(p, o)))
}

/// Whether the gateway cannot see what `action` does (see the module doc).
fn is_opaque(action: &Action) -> bool {
    action.opaque || matches!(action.kind, ActionKind::Call | ActionKind::Unknown)
}
