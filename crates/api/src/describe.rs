//! One readable line per audit event — who did what to which request, grant
//! or statement — for the web UI's audit page and the text of webhook
//! deliveries. The JSON detail stays one click away; this never replaces it.

use serde_json::Value;
use store::{AuditRecord, Kind};

/// `request:3` → `request 3`.
fn subject(s: &str) -> String {
    match s.split_once(':') {
        Some((what, id)) => format!("{what} {id}"),
        None => s.to_string(),
    }
}

/// A statement's text on one line, cut at 120 characters.
fn short(text: &str) -> String {
    let one: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one.char_indices().nth(120) {
        Some((i, _)) => format!("{}…", &one[..i]),
        None => one,
    }
}

pub fn line(r: &AuditRecord) -> String {
    let e = &r.event;
    let d = &e.detail;
    let s = |k: &str| match &d[k] {
        Value::String(v) => v.clone(),
        Value::Null => "?".to_string(),
        other => other.to_string(),
    };
    let has = |k: &str| !d[k].is_null() && d[k] != "";
    // People from an identity provider: their subject there, next to the name.
    let who = &match (&d["idp"]["subject"], &d["idp"]["issuer"]) {
        (Value::String(sub), Value::String(iss)) => format!("{} ({sub} at {iss})", e.actor),
        _ => e.actor.clone(),
    };
    let on = subject(&e.subject);
    let why = |k: &str| {
        if has(k) {
            format!(": {}", s(k))
        } else {
            String::new()
        }
    };
    let Some(kind) = Kind::parse(&e.kind) else {
        return format!("{}: {who} on {on}", e.kind);
    };
    match kind {
        Kind::RequestFiled => format!(
            "{who} asks for {} on {} ({on}){}",
            s("role"),
            s("database"),
            why("reason")
        ),
        Kind::RequestStageCompleted => format!("{on}: stage {} complete, by {who}", s("stage")),
        Kind::RequestApproved => format!("{on} approved by {who}"),
        Kind::RequestDenied => format!("{on} denied by {who}"),
        Kind::RequestCancelled => format!("{on} cancelled by {who}"),
        Kind::RequestExpired => format!("{on} expired: nobody decided in time"),
        Kind::RequestEscalated => format!("{on} escalated: nobody decided in time"),
        Kind::DecisionApprove => format!("{who} approves {on}{}", why("comment")),
        Kind::DecisionDeny => format!("{who} denies {on}{}", why("comment")),
        Kind::DecisionRefused => format!("{who}'s vote on {on} not counted{}", why("reason")),
        Kind::GrantStarted => format!("{who} now holds {} on {} ({on})", s("role"), s("database")),
        Kind::GrantApplied => format!(
            "GRANT {} TO {} on {} ({on})",
            s("role"),
            s("login_role"),
            s("database")
        ),
        Kind::GrantExtended => format!("{on} extended until {}", s("expires_at")),
        Kind::GrantEndingSoon => format!("{on} ({}) for {who} ends soon", s("role")),
        Kind::GrantExpired => format!("{on} ended at its time"),
        Kind::GrantRevoked => format!("{on} revoked by {who}{}", why("reason")),
        Kind::GrantRelinquished => format!("{on} given up by {who}"),
        Kind::GrantRemoved => format!("REVOKE {} on {} ({on})", s("role"), s("database")),
        Kind::SessionGrantEnded => format!(
            "{on} of {who} lost {} (grant {}): {}",
            s("role"),
            s("grant"),
            s("action")
        ),
        Kind::StatementRun => format!(
            "{who} ran a {} statement with {} (grant {}): {}",
            s("action"),
            s("role"),
            s("grant"),
            short(&s("text"))
        ),
        Kind::StatementRefused => format!(
            "{who}'s {} statement refused{}: {}",
            s("action"),
            why("reason"),
            short(&s("text"))
        ),
        Kind::AuthLogin => format!("{who} signed in"),
        Kind::AuthLogout => format!("{who} signed out"),
        Kind::AuthFailed => format!("failed sign-in as {who}{}", why("reason")),
        Kind::AuthThrottled => format!("sign-ins as {who} throttled after repeated failures"),
        Kind::AuthRefused => format!("sign-in through {} refused{}", s("provider"), why("reason")),
        Kind::AuthConnectionSecret => {
            format!("{who} got a connection secret until {}", s("expires_at"))
        }
        Kind::AuthConnectionSecretRevoked => format!("{who}'s connection secret revoked"),
        Kind::CredentialsRotated => {
            format!("login-role passwords moved to a new epoch{}", why("why"))
        }
        Kind::PolicyLoaded => "the gateway started with its configuration".to_string(),
        Kind::PolicyChanged => "the gateway started with a changed configuration".to_string(),
        Kind::AuditCheckpoint => "audit log checkpoint signed".to_string(),
        Kind::AlertDrift => {
            let what = if has("drift") {
                s("drift")
            } else {
                "membership".into()
            };
            let holder = if has("login_role") {
                format!(" of {}", s("login_role"))
            } else {
                String::new()
            };
            format!("ALERT drift ({what}{holder}) on {on}, undone by the gateway")
        }
        Kind::AlertOffHours => format!(
            "ALERT off hours: {who} used {} on {}",
            s("role"),
            s("database")
        ),
        Kind::AlertRefusals => format!(
            "ALERT {who}: {} refused statements in a short time",
            s("refused")
        ),
        Kind::AlertUnbackedRule => {
            format!("ALERT rule not backed by {}: {}", s("database"), s("rule"))
        }
        Kind::AlertUnreadableSession => {
            format!("ALERT {on} of {who} ended: its text could not be read safely")
        }
        Kind::AlertLoginRolePassword => format!(
            "ALERT the database refused the password of {} (user {who})",
            s("login_role")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use store::AuditEvent;

    fn record(kind: Kind, actor: &str, subject: &str, detail: Value) -> AuditRecord {
        AuditRecord {
            seq: 1,
            event: AuditEvent::new(chrono::Utc::now(), kind, actor, subject.into(), detail),
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn lines_say_who_did_what_to_which() {
        let r = record(
            Kind::RequestFiled,
            "alice",
            "request:3",
            serde_json::json!({"role": "app_write", "database": "app", "reason": "fix 7"}),
        );
        assert_eq!(
            line(&r),
            "alice asks for app_write on app (request 3): fix 7"
        );
        let long = "SELECT ".to_string() + &"x, ".repeat(100) + "\n  y";
        let r = record(
            Kind::StatementRefused,
            "bob",
            "session:9",
            serde_json::json!({"action": "write", "reason": "needs app_write", "text": long}),
        );
        let l = line(&r);
        assert!(
            l.starts_with("bob's write statement refused: needs app_write: SELECT x, x,"),
            "{l}"
        );
        assert!(l.ends_with('…') && !l.contains('\n'), "{l}");
    }

    #[test]
    fn people_from_a_provider_are_named_with_their_subject() {
        let r = record(
            Kind::DecisionApprove,
            "bob",
            "request:3",
            serde_json::json!({"stage": 0, "comment": "ok",
                "idp": {"provider": "corp", "issuer": "https://idp.example.com", "subject": "00u7"}}),
        );
        assert_eq!(
            line(&r),
            "bob (00u7 at https://idp.example.com) approves request 3: ok"
        );
        let r = record(
            Kind::AuthRefused,
            "-",
            "provider:corp",
            serde_json::json!({"provider": "corp", "reason": "the ID token was refused: it has expired"}),
        );
        assert_eq!(
            line(&r),
            "sign-in through corp refused: the ID token was refused: it has expired"
        );
    }

    #[test]
    fn every_kind_has_a_line_without_placeholders_for_its_own_fields() {
        for k in Kind::ALL {
            let r = record(*k, "carol", "grant:2", serde_json::json!({}));
            let l = line(&r);
            assert!(!l.is_empty() && !l.contains('{'), "{k}: {l}");
        }
    }
}
