//! The grants the gateway honours right now, in memory, for the hot path.
//!
//! The store is the source of truth; the [`crate::Enforcer`] publishes here
//! only grants whose role it has already granted in the database (so a
//! statement let through never fails for lack of the membership), and removes
//! them *before* it revokes. Every lookup also compares `expires_at` with the
//! clock, so a grant stops letting statements through at its end to the
//! instant, without waiting for the enforcer to wake up.

use policy::Time;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, RwLock};
use tokio::sync::watch;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActiveGrant {
    pub id: i64,
    pub user: String,
    pub database: String,
    pub role: String,
    pub expires_at: Time,
    /// A statement grant: only this text, once.
    pub statement: Option<String>,
}

impl From<&policy::Grant> for ActiveGrant {
    fn from(g: &policy::Grant) -> Self {
        ActiveGrant {
            id: g.id,
            user: g.user.clone(),
            database: g.database.clone(),
            role: g.role.clone(),
            expires_at: g.expires_at,
            statement: g.statement.clone(),
        }
    }
}

pub type Key = (String, String);

pub struct GrantTable {
    by_user: RwLock<HashMap<Key, Vec<ActiveGrant>>>,
    /// (user, database) whose login role may hold a managed role in the
    /// database: wider than `by_user` at both edges of a grant — from before
    /// its GRANT until a while after its REVOKE — for the privilege guard.
    guarded: RwLock<HashSet<Key>>,
    /// Statement grants already used (each runs once).
    used: Mutex<HashSet<i64>>,
    /// Bumped on every publish; held statements wait on it.
    version: watch::Sender<u64>,
}

impl Default for GrantTable {
    fn default() -> Self {
        GrantTable {
            by_user: RwLock::new(HashMap::new()),
            guarded: RwLock::new(HashSet::new()),
            used: Mutex::new(HashSet::new()),
            version: watch::Sender::new(0),
        }
    }
}

impl GrantTable {
    /// Replaces the whole set (the enforcer's view after applying changes).
    pub fn publish(&self, grants: impl IntoIterator<Item = ActiveGrant>) {
        let mut map: HashMap<Key, Vec<ActiveGrant>> = HashMap::new();
        for g in grants {
            map.entry((g.user.clone(), g.database.clone()))
                .or_default()
                .push(g);
        }
        *self.by_user.write().unwrap() = map;
        self.version.send_modify(|v| *v += 1);
    }

    /// Wakes held statements without changing anything (a request was decided).
    pub fn touch(&self) {
        self.version.send_modify(|v| *v += 1);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    /// Roles `user` holds on `database` through role grants active at `now`.
    pub fn roles(&self, user: &str, database: &str, now: Time) -> BTreeSet<String> {
        let map = self.by_user.read().unwrap();
        let Some(list) = map.get(&(user.to_string(), database.to_string())) else {
            return BTreeSet::new();
        };
        list.iter()
            .filter(|g| g.statement.is_none() && now < g.expires_at)
            .map(|g| g.role.clone())
            .collect()
    }

    /// Sets who may hold a managed role in the database (see `guarded`).
    pub fn set_guarded(&self, keys: HashSet<Key>) {
        *self.guarded.write().unwrap() = keys;
    }

    /// Whether a managed role may be in force for `user` on `database`: a
    /// published grant, or one being granted or just revoked. The privilege
    /// guard judges by this, so that nothing slips through while the
    /// database's membership and the published grants differ.
    pub fn may_hold(&self, user: &str, database: &str) -> bool {
        if self.has_any(user, database) {
            return true;
        }
        let guarded = self.guarded.read().unwrap();
        !guarded.is_empty() && guarded.contains(&(user.to_string(), database.to_string()))
    }

    /// Whether `user` has any grant on `database` (cheap pre-check).
    pub fn has_any(&self, user: &str, database: &str) -> bool {
        let map = self.by_user.read().unwrap();
        !map.is_empty() && map.contains_key(&(user.to_string(), database.to_string()))
    }

    /// The active role grant for `role`, if any.
    pub fn role_grant(&self, user: &str, database: &str, role: &str, now: Time) -> Option<i64> {
        let map = self.by_user.read().unwrap();
        map.get(&(user.to_string(), database.to_string()))?
            .iter()
            .find(|g| g.statement.is_none() && g.role == role && now < g.expires_at)
            .map(|g| g.id)
    }

    /// Takes the unused statement grant for exactly `text`, marking it used.
    pub fn take_statement(
        &self,
        user: &str,
        database: &str,
        text: &str,
        now: Time,
    ) -> Option<ActiveGrant> {
        let map = self.by_user.read().unwrap();
        let g = map
            .get(&(user.to_string(), database.to_string()))?
            .iter()
            .find(|g| g.statement.as_deref() == Some(text) && now < g.expires_at)?;
        if !self.used.lock().unwrap().insert(g.id) {
            return None;
        }
        Some(g.clone())
    }

    pub fn is_used(&self, grant: i64) -> bool {
        self.used.lock().unwrap().contains(&grant)
    }

    /// Every published grant.
    pub fn all(&self) -> Vec<ActiveGrant> {
        self.by_user
            .read()
            .unwrap()
            .values()
            .flatten()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn g(id: i64, role: &str, secs: i64, statement: Option<&str>) -> ActiveGrant {
        ActiveGrant {
            id,
            user: "alice".into(),
            database: "app".into(),
            role: role.into(),
            expires_at: chrono::DateTime::from_timestamp(1000 + secs, 0).unwrap(),
            statement: statement.map(Into::into),
        }
    }

    #[test]
    fn grants_stop_counting_at_their_end_without_a_publish() {
        let t = GrantTable::default();
        t.publish([g(1, "app_write", 10, None), g(2, "app_ddl", 20, None)]);
        let at = |s: i64| chrono::DateTime::from_timestamp(1000 + s, 0).unwrap();
        assert_eq!(t.roles("alice", "app", at(5)).len(), 2);
        assert_eq!(
            t.roles("alice", "app", at(10))
                .into_iter()
                .collect::<Vec<_>>(),
            ["app_ddl"]
        );
        assert!(t.roles("alice", "app", at(20)).is_empty());
        assert!(t.roles("bob", "app", at(5)).is_empty());
        assert_eq!(t.role_grant("alice", "app", "app_write", at(9)), Some(1));
        assert_eq!(t.role_grant("alice", "app", "app_write", at(10)), None);
    }

    #[test]
    fn a_statement_grant_runs_its_text_once_and_lends_nothing_else() {
        let t = GrantTable::default();
        t.publish([g(
            3,
            "app_write",
            60,
            Some("DELETE FROM orders WHERE id = 5"),
        )]);
        let now = chrono::DateTime::from_timestamp(1001, 0).unwrap();
        assert!(t.roles("alice", "app", now).is_empty());
        assert!(t
            .take_statement("alice", "app", "DELETE FROM orders WHERE id = 6", now)
            .is_none());
        assert!(t
            .take_statement("alice", "app", "DELETE FROM orders WHERE id = 5", now)
            .is_some());
        assert!(t
            .take_statement("alice", "app", "DELETE FROM orders WHERE id = 5", now)
            .is_none());
    }
}
