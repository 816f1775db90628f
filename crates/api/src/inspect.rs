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
}
