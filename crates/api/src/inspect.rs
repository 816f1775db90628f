//! Looking into a database for the web UI: the planner's estimate for a
//! statement awaiting approval, and the report of standing privileged access.
//! The API does no database I/O itself; `jitgate serve` plugs in the
//! enforcer's implementation (`enforcer::inspect`).

use serde_json::Value;

/// What the planner expects a statement to do (EXPLAIN, never ANALYZE).
#[derive(Debug, Clone)]
pub struct BlastRadius {
    /// One line for people, e.g. "Delete on orders: about 1 row".
    pub summary: String,
    /// The plan, as EXPLAIN prints it.
    pub plan: String,
}

#[async_trait::async_trait]
pub trait Inspector: Send + Sync {
    /// Plans `statement` as `user`'s login role holding `role` (what the
    /// request would grant), so nothing the planner evaluates runs with more.
    async fn blast_radius(
        &self,
        database: &str,
        user: &str,
        role: &str,
        statement: &str,
    ) -> Result<BlastRadius, String>;
    /// Logins with standing privileged access: `{"login", "why": [...]}` objects.
    async fn scan(&self, database: &str) -> Result<Vec<Value>, String>;
    /// Rules the database does not back: `{"rule", "gaps": [...], "revoke":
    /// [...]}` objects (see `jitgate policy check --live`).
    async fn unbacked_rules(&self, _database: &str) -> Result<Vec<Value>, String> {
        Ok(Vec::new())
    }
}

/// Recent previews by request id (a minute each, at most 1,000).
#[derive(Default)]
pub struct PreviewCache {
    map: std::sync::Mutex<std::collections::HashMap<i64, (std::time::Instant, BlastRadius)>>,
}

impl PreviewCache {
    const TTL: std::time::Duration = std::time::Duration::from_secs(60);

    pub fn get(&self, request: i64) -> Option<BlastRadius> {
        let map = self.map.lock().unwrap();
        map.get(&request)
            .filter(|(at, _)| at.elapsed() < Self::TTL)
            .map(|(_, b)| b.clone())
    }

    pub fn put(&self, request: i64, b: BlastRadius) {
        let mut map = self.map.lock().unwrap();
        if map.len() >= 1000 {
            map.retain(|_, (at, _)| at.elapsed() < Self::TTL);
            if map.len() >= 1000 {
                map.clear();
            }
        }
        map.insert(request, (std::time::Instant::now(), b));
    }
}
