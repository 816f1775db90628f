//! Enforcement: the part of jitgate that makes grants real.
//!
//! - [`hook`]: the [`hook::PolicyHook`] the gateway asks about every statement
//!   (classification cached by text, rules, the in-memory grant table).
//! - [`filing`]: a statement that needs a grant files (or reuses) a request,
//!   then is refused (`reject`) or held until the decision (`hold`).
//! - [`grants`]: the grants the gateway honours now, checked against the clock
//!   on every lookup, so a grant stops counting at its end to the instant.
//! - [`enforcer`]: the loop that GRANTs and REVOKEs in the databases, ends
//!   roles in live sessions (`on_expiry`), warns before expiry, and reconciles
//!   drift.
//! - [`denied`]: a permission error from PostgreSQL explained, with a request filed.
//! - [`database`]: the privilege SQL itself; the only code that issues it.
//! - [`audit`]: statements run under a grant and refused attempts, batched
//!   into the store's hash chain.
//! - [`alerts`]: privileged use outside working hours, many refusals by one user.
//! - [`backing`]: whether the database backs each rule (`policy check --live`).
//! - [`logins`]: failed wire logins and refused login-role passwords, audited.
//! - [`cache`]: the bounded classification cache.
//! - [`checkpoints`]: the audit chain's head, signed periodically (`audit_key_file`).
//! - [`inspect`]: read-only looks (the scan report, EXPLAIN previews).
//! - [`runtime`]: the assembly `jitgate serve` and the tests start.
//!
//! Invariants:
//! - A grant is published to the gateway only after its GRANT succeeded, and
//!   withdrawn before its REVOKE is sent.
//! - Only [`database`] writes GRANT/REVOKE; the hook never touches a database.
//! - Doubt means refuse: unreadable text, an unknown function while the
//!   database's built-ins are unknown, a store that cannot file a request.
#![forbid(unsafe_code)]

pub mod alerts;
pub mod audit;
pub mod backing;
pub mod cache;
pub mod checkpoints;
pub mod database;
pub mod denied;
pub mod enforcer;
pub mod filing;
pub mod grants;
pub mod hook;
pub mod inspect;
pub mod logins;
mod reading;
pub mod runtime;
mod texts;

pub use audit::AuditSink;
pub use enforcer::{EnforceError, Enforcer};
pub use grants::GrantTable;
pub use hook::{HookState, PolicyHook};
pub use runtime::{Runtime, StartError};
