//! Every kind of audit event, as one type: the name stored in the log
//! (`request.filed`, ...) is spelled here once, and a new kind is a new
//! variant, which every `match` over kinds must then handle.

macro_rules! kinds {
    ($($(#[$doc:meta])* $variant:ident = $name:literal,)*) => {
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Kind {
            $($(#[$doc])* $variant,)*
        }

        impl Kind {
            pub const ALL: &'static [Kind] = &[$(Kind::$variant,)*];

            /// The name stored in the audit log.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Kind::$variant => $name,)*
                }
            }

            /// The kind a stored name spells (none: a name this version does not know).
            pub fn parse(name: &str) -> Option<Kind> {
                match name {
                    $($name => Some(Kind::$variant),)*
                    _ => None,
                }
            }
        }
    };
}

kinds! {
    /// A request was filed (by hand or by a refused statement).
    RequestFiled = "request.filed",
    RequestStageCompleted = "request.stage_completed",
    RequestApproved = "request.approved",
    RequestDenied = "request.denied",
    RequestCancelled = "request.cancelled",
    RequestExpired = "request.expired",
    RequestEscalated = "request.escalated",
    /// One approver's vote (the request's outcome is `request.*`).
    DecisionApprove = "decision.approve",
    DecisionDeny = "decision.deny",
    /// A vote that was not counted (own request, not an approver, ...).
    DecisionRefused = "decision.refused",
    GrantStarted = "grant.started",
    /// The enforcer ran `GRANT role TO login_role`.
    GrantApplied = "grant.applied",
    GrantExtended = "grant.extended",
    GrantEndingSoon = "grant.ending_soon",
    GrantExpired = "grant.expired",
    GrantRevoked = "grant.revoked",
    GrantRelinquished = "grant.relinquished",
    /// The enforcer ran `REVOKE role FROM login_role`.
    GrantRemoved = "grant.removed",
    /// A live session lost a role at a grant's end.
    SessionGrantEnded = "session.grant_ended",
    StatementRun = "statement.run",
    StatementRefused = "statement.refused",
    AuthLogin = "auth.login",
    AuthLogout = "auth.logout",
    AuthFailed = "auth.failed",
    AuthThrottled = "auth.throttled",
    /// An identity provider's sign-in that jitgate refused (token, domain, groups).
    AuthRefused = "auth.refused",
    /// A connection secret was issued (`jitgate db-login`).
    AuthConnectionSecret = "auth.connection_secret",
    AuthConnectionSecretRevoked = "auth.connection_secret_revoked",
    CredentialsRotated = "credentials.rotated",
    /// The gateway started with a configuration (first time, or unchanged).
    PolicyLoaded = "policy.loaded",
    /// The gateway started with a configuration unlike the last one.
    PolicyChanged = "policy.changed",
    AuditCheckpoint = "audit.checkpoint",
    AlertDrift = "alert.drift",
    AlertOffHours = "alert.off_hours",
    AlertRefusals = "alert.refusals",
    AlertUnbackedRule = "alert.unbacked_rule",
    AlertUnreadableSession = "alert.unreadable_session",
    AlertLoginRolePassword = "alert.login_role_password",
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::Kind;

    #[test]
    fn every_name_parses_back_and_is_unique() {
        let mut seen = std::collections::HashSet::new();
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.as_str()), Some(*k));
            assert!(seen.insert(k.as_str()), "{k} twice");
        }
        assert_eq!(Kind::parse("request.unknown"), None);
    }
}
