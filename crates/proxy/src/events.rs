//! What the gateway reports about logins, for the audit log and alerts.
//!
//! The proxy does no auditing itself: it tells an [`Observer`] (the enforcer's
//! in `jitgate serve`), which records and alerts. Calls are synchronous and
//! must not block: queue the work.

use std::net::IpAddr;

/// A failed login on the wire listener.
#[derive(Debug, Clone, Copy)]
pub struct LoginFailure<'a> {
    /// The user name as the client gave it (it may not exist).
    pub user: &'a str,
    pub peer: IpAddr,
    pub reason: &'a str,
    /// This failure crossed a limit: the user name or the address is now
    /// throttled (repeated failures: an alert).
    pub throttled: bool,
}

pub trait Observer: Send + Sync + 'static {
    fn login_failed(&self, _failure: &LoginFailure<'_>) {}

    /// The database refused the gateway's own password for a login role:
    /// someone changed it outside the gateway. The gateway sets a new one.
    fn upstream_login_failed(&self, _database: &str, _user: &str, _login_role: &str) {}
}

/// Reports nowhere (the bare gateway, tests).
pub struct Unobserved;

impl Observer for Unobserved {}
