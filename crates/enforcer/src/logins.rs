//! Login events from the wire listener, into the audit log: failed logins
//! (user name as given, peer address, reason) and the throttling that repeated
//! failures start; and a login role whose password the database refused (it
//! was changed outside the gateway), which also asks the enforcer to
//! reconcile at once.

use crate::hook::HookState;
use proxy::events::{LoginFailure, Observer};
use serde_json::json;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use store::AuditEvent;
use store::Kind;

pub struct LoginEvents(pub Arc<HookState>);

impl Observer for LoginEvents {
    fn login_failed(&self, f: &LoginFailure<'_>) {
        let st = &self.0;
        let kind = if f.throttled {
            Kind::AuthThrottled
        } else {
            Kind::AuthFailed
        };
        st.audit.send(
            AuditEvent::new(
                st.clock.now(),
                kind,
                f.user,
                format!("user:{}", f.user),
                json!({"listener": "wire", "peer": f.peer.to_string(), "reason": f.reason}),
            )
            .alert(),
        );
    }

    fn upstream_login_failed(&self, database: &str, user: &str, login_role: &str) {
        let st = &self.0;
        st.audit.send(
            AuditEvent::new(
                st.clock.now(),
                Kind::AlertLoginRolePassword,
                "jitgate",
                format!("login_role:{login_role}"),
                json!({"database": database, "user": user, "login_role": login_role,
                       "action": "new password set; reconciling"}),
            )
            .alert(),
        );
        st.reconcile_requested.store(true, Ordering::Relaxed);
        st.changed.changed();
    }
}

/// Connection secrets from the state store (`jitgate db-login`): a person
/// from an identity provider logs in with theirs while it and the sign-in it
/// came from last; their groups from that sign-in reach this process's
/// policy with it.
pub struct StoreSecrets(pub Arc<HookState>);

impl proxy::auth::Secrets for StoreSecrets {
    fn verifier<'a>(
        &'a self,
        user: &'a str,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Option<config::ScramVerifier>> + Send + 'a>,
    > {
        Box::pin(async move {
            let st = &self.0;
            match store::people::connection_verifier(&*st.store, user, st.clock.now()).await {
                Ok(Some((verifier, person))) => {
                    st.policy.vouch(user, person);
                    Some(verifier)
                }
                Ok(None) => None,
                Err(e) => {
                    tracing::warn!(user, error = %e, "cannot read connection secrets; refusing the login");
                    None
                }
            }
        })
    }
}
