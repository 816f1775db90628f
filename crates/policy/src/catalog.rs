//! What a database has built in, read from its live catalog.
//!
//! A call of a built-in function is transparent to the classifier (it knows
//! what `lower` or `nextval` does); anything else may run code its owner
//! wrote. Names alone do not say which is which: `lower(1)` resolves to a
//! user's `public.lower(int)` if there is one, since `pg_catalog` has no
//! `lower(int)`. So a name counts as built in only when the database has a
//! built-in object of that name (OID below 16384, FirstNormalObjectId) and
//! no user-defined one shares it. The same holds for operators (each runs a
//! function) and types (a cast to a domain runs its checks, a user cast its
//! function).
//!
//! The snapshot is taken at start and at every reconcile; objects created
//! through the gateway in between are noted at once ([`Builtins::shadow`]).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::RwLock;

/// A statement's memo of [`crate::classify::Action::runs_user_code`], valid
/// for one catalog snapshot (a stamp the caller chooses, never 0): classified
/// statements are cached and shared, so the look into the built-ins is made
/// once per snapshot, not for every statement.
#[derive(Debug, Default)]
pub struct Memo(AtomicU64);

impl Memo {
    pub fn get(&self, stamp: u64) -> Option<bool> {
        let v = self.0.load(Relaxed);
        (v >> 1 == stamp).then_some(v & 1 == 1)
    }

    pub fn set(&self, stamp: u64, runs_user_code: bool) {
        self.0.store(stamp << 1 | runs_user_code as u64, Relaxed);
    }
}

impl Clone for Memo {
    fn clone(&self) -> Memo {
        Memo(AtomicU64::new(self.0.load(Relaxed)))
    }
}

/// A memo is not part of what a statement does.
impl PartialEq for Memo {
    fn eq(&self, _: &Memo) -> bool {
        true
    }
}

impl Eq for Memo {}

#[derive(Debug, Default)]
pub struct Builtins {
    /// Names (lower case) of built-in functions no user function shares.
    pub functions: HashSet<String>,
    /// The same for operators and types.
    pub operators: HashSet<String>,
    pub types: HashSet<String>,
    /// Built-in functions by OID, for `FunctionCall`.
    pub by_oid: HashMap<u32, String>,
    /// OIDs of the user-defined functions (a `FunctionCall` of any other
    /// OID names no function).
    pub user_functions: HashSet<u32>,
    /// Names created through the gateway since the snapshot.
    shadowed: RwLock<HashSet<String>>,
    any_shadowed: AtomicBool,
}

impl Builtins {
    /// Built-ins with just these functions, and the common operators and
    /// types (for tests and tools without a database).
    pub fn with_functions<'a>(names: impl IntoIterator<Item = &'a str>) -> Builtins {
        Builtins {
            functions: names.into_iter().map(str::to_string).collect(),
            operators: [
                "=", "<>", "<", ">", "<=", ">=", "+", "-", "*", "/", "||", "~~",
            ]
            .map(String::from)
            .into(),
            types: [
                "int4", "int8", "text", "bool", "numeric", "regclass", "varchar",
            ]
            .map(String::from)
            .into(),
            ..Default::default()
        }
    }

    /// Whether `name` (as written: `f` or `pg_catalog.f`) is a built-in
    /// function; a name qualified with another schema never is.
    pub fn function(&self, name: &str) -> bool {
        self.known(&self.functions, name)
    }

    pub fn operator(&self, name: &str) -> bool {
        self.known(&self.operators, name)
    }

    pub fn type_(&self, name: &str) -> bool {
        self.known(&self.types, name)
    }

    /// `name` as the classifier reports it (lower case). No allocation: this
    /// runs for every statement that calls a function or uses an operator.
    fn known(&self, set: &HashSet<String>, name: &str) -> bool {
        let base = match name.rsplit_once('.') {
            Some((schema, base)) if schema.eq_ignore_ascii_case("pg_catalog") => base,
            Some(_) => return false,
            None => name,
        };
        set.contains(base)
            && !(self.any_shadowed.load(Relaxed) && self.shadowed.read().unwrap().contains(base))
    }

    /// A user-defined function, operator or type named `name` now exists
    /// (created through the gateway): the name no longer counts as built in.
    pub fn shadow(&self, name: &str) {
        let lower = name.to_ascii_lowercase();
        let base = lower.rsplit('.').next().unwrap_or(&lower).to_string();
        if self.functions.contains(&base)
            || self.operators.contains(&base)
            || self.types.contains(&base)
        {
            self.shadowed.write().unwrap().insert(base);
            self.any_shadowed.store(true, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_unshadowed_built_in_names_count() {
        let b = Builtins {
            functions: ["lower", "nextval"].map(String::from).into(),
            ..Default::default()
        };
        assert!(b.function("lower"));
        assert!(b.function("PG_CATALOG.lower"));
        assert!(
            !b.function("LOWER"),
            "names come lower case from the classifier"
        );
        assert!(!b.function("public.lower"));
        assert!(!b.function("wipe"));
        b.shadow("public.lower");
        assert!(
            !b.function("lower"),
            "a user lower(int) may be the one called"
        );
        assert!(b.function("nextval"));
    }
}
