//! What live sessions hear from the enforcer: a warning before a grant
//! ends, and at its end a notice, with the work that used the role stopped
//! per `on_expiry` (poisoned, cancelled, or the connection terminated).

use super::Enforcer;
use crate::grants::ActiveGrant;
use config::OnExpiry;
use policy::Time;
use proxy::Session;
use serde_json::json;
use std::sync::Arc;
use store::{AuditEvent, Kind};
use wire::backend::{ErrorFields, Severity};

impl Enforcer {
    /// Every session of the grant's holder hears of the end; those whose open
    /// work used the role lose it per `on_expiry`.
    pub(super) fn end_in_sessions(&self, g: &ActiveGrant, how: &str) {
        let mode = self.hook.config.gateway.on_expiry;
        for s in self.gateway.sessions.of(&g.user, &g.database) {
            s.notice(&ErrorFields::new(
                Severity::Warning,
                "01000",
                format!(
                    "jitgate: grant {} for role \"{}\" has {how}; statements that need it are refused from now on",
                    g.id, g.role
                ),
            ));
            let in_use = {
                let mut notes = s.notes.lock().unwrap();
                notes.roles_used.remove(&g.role);
                notes.roles_in_transaction.contains(&g.role)
            };
            if in_use && (s.in_transaction() || s.is_busy()) {
                self.stop_work(&s, g, how, mode);
            }
        }
    }

    fn stop_work(&self, s: &Arc<Session>, g: &ActiveGrant, how: &str, mode: OnExpiry) {
        let message = format!(
            "jitgate: grant {} for role \"{}\" {how} while this transaction was using it; \
             the transaction can only roll back",
            g.id, g.role
        );
        let poison = ErrorFields::error("42501", message)
            .with_hint("run ROLLBACK, then request the role again");
        let action = match mode {
            OnExpiry::Cancel => {
                s.poison(poison);
                if s.is_busy() {
                    let s = s.clone();
                    tokio::spawn(async move { s.cancel_statement().await });
                }
                "cancelled"
            }
            OnExpiry::Terminate => {
                let s2 = s.clone();
                tokio::spawn(async move { s2.cancel_statement().await });
                s.terminate(ErrorFields::fatal(
                    "57P01",
                    format!(
                        "terminating connection: jitgate grant {} for role \"{}\" {how} (on_expiry = terminate)",
                        g.id, g.role
                    ),
                ));
                "terminated"
            }
            OnExpiry::FinishStatement => {
                s.poison(poison);
                "finishing statement"
            }
        };
        self.audit(AuditEvent::new(
            self.hook.clock.now(),
            Kind::SessionGrantEnded,
            &s.user,
            format!("session:{}", s.id),
            json!({"grant": g.id, "role": g.role, "action": action, "backend_pid": s.backend_pid}),
        ));
    }

    pub(super) fn warn(&mut self, now: Time) {
        let lead =
            chrono::Duration::from_std(self.hook.config.gateway.expiry_warning).unwrap_or_default();
        let due: Vec<ActiveGrant> = self
            .applied
            .values()
            .filter(|g| g.statement.is_none() && !self.warned.contains(&g.id))
            .filter(|g| g.expires_at - lead <= now && now < g.expires_at)
            .cloned()
            .collect();
        for g in due {
            self.warned.insert(g.id);
            let left = (g.expires_at - now).num_seconds().max(0);
            if self.cluster.is_leader() {
                self.audit(AuditEvent::new(
                    now,
                    Kind::GrantEndingSoon,
                    &g.user,
                    format!("grant:{}", g.id),
                    json!({"role": g.role, "database": g.database, "expires_at": g.expires_at}),
                ));
            }
            for s in self.gateway.sessions.of(&g.user, &g.database) {
                s.notice(&ErrorFields::new(
                    Severity::Warning,
                    "01000",
                    format!(
                        "jitgate: grant {} for role \"{}\" ends in {left}s (at {}); \
                         request an extension with: jitgate request {} --db {}",
                        g.id,
                        g.role,
                        g.expires_at
                            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
                        g.role,
                        g.database
                    ),
                ));
            }
        }
    }
}
