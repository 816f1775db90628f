//! From a validated ID token to a jitgate session: the email domain must be
//! allowed (and the email verified), the person must be in a mapped group,
//! their name (`username_claim`) must be plain and not a `[[user]]`, and one
//! name belongs to one (issuer, subject) for good. What the provider said is
//! recorded (every replica reads it) and the policy's directory updated, so
//! group changes at the provider apply from this sign-in on — to every
//! session of the person, and to their connection secret.

use super::provider::{Provider, Verified};
use crate::error::ApiError;
use crate::AppState;
use axum::http::StatusCode;
use policy::Person;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use store::{AuditEvent, Kind};

/// A refused sign-in: the reason is shown to the person and audited.
#[derive(Debug)]
pub struct Refused(pub String);

/// The user name and what the provider says of them.
pub fn person(p: &config::IdentityProvider, v: &Verified) -> Result<(String, Person), Refused> {
    let claim = |name: &str| v.claims.get(name).and_then(Value::as_str);
    let email = claim("email").map(str::to_lowercase);
    if !p.allowed_domains.is_empty() {
        let Some(email) = &email else {
            return Err(Refused(
                "the provider sent no email address, and only some email domains may sign in"
                    .into(),
            ));
        };
        let verified = v.claims.get("email_verified").and_then(Value::as_bool) == Some(true);
        let domain = email.rsplit_once('@').map(|(_, d)| d).unwrap_or_default();
        if !verified
            || !p
                .allowed_domains
                .iter()
                .any(|d| d.eq_ignore_ascii_case(domain))
        {
            return Err(Refused(format!(
                "{email} may not sign in: only verified addresses at {} may",
                p.allowed_domains.join(", ")
            )));
        }
    }
    let name = match p.username_claim.as_str() {
        "email" => email
            .as_deref()
            .and_then(|e| e.split_once('@'))
            .map(|(local, _)| local.to_string()),
        other => claim(other).map(str::to_string),
    };
    let Some(name) = name.filter(|n| plain(n)) else {
        return Err(Refused(format!(
            "the provider's `{}` claim does not give a usable user name (letters, digits, _ - . ; at most 40)",
            p.username_claim
        )));
    };
    let theirs: Vec<&str> = match v.claims.get(&p.groups_claim) {
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        Some(Value::String(s)) => s.split([' ', ',']).filter(|s| !s.is_empty()).collect(),
        _ => Vec::new(),
    };
    let groups: BTreeSet<String> = theirs
        .iter()
        .filter_map(|g| p.group_map.get(*g).cloned())
        .collect();
    Ok((
        name,
        Person {
            groups,
            provider: p.name.clone(),
            issuer: v.issuer.clone(),
            subject: v.subject.clone(),
        },
    ))
}

fn plain(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 40
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// `{"provider", "issuer", "subject"}` for audit details.
pub fn idp_detail(p: &Person) -> Value {
    json!(p.idp())
}

/// Audits a sign-in refused before anyone was identified (the token did not
/// validate, the provider failed).
pub async fn record_refusal(
    state: &AppState,
    provider: &str,
    reason: &str,
    via: &str,
) -> Result<(), store::StoreError> {
    let ev = AuditEvent::new(
        state.clock.now(),
        Kind::AuthRefused,
        "-",
        format!("provider:{provider}"),
        json!({"provider": provider, "reason": reason, "via": via}),
    )
    .alert();
    state.store.append_audit(vec![ev]).await
}

/// Records the person and issues a session token, or refuses (audited).
pub async fn complete(
    state: &AppState,
    provider: &Provider,
    verified: &Verified,
    via: &str,
) -> Result<(String, String, policy::Time), ApiError> {
    let now = state.clock.now();
    let refuse = |reason: String, user: Option<&str>| {
        let ev = AuditEvent::new(
            now,
            Kind::AuthRefused,
            user.unwrap_or("-"),
            format!("provider:{}", provider.config.name),
            json!({"provider": provider.config.name, "issuer": verified.issuer,
                   "subject": verified.subject, "reason": reason, "via": via}),
        )
        .alert();
        (ev, reason)
    };
    let (user, person) = match person(&provider.config, verified) {
        Ok(x) => x,
        Err(Refused(reason)) => {
            let (ev, reason) = refuse(reason, None);
            state.store.append_audit(vec![ev]).await?;
            return Err(ApiError::forbidden(reason));
        }
    };
    if state.policy.is_configured(&user) {
        let (ev, reason) = refuse(
            format!("`{user}` is a local account of this gateway; it cannot be taken by a provider's identity"),
            Some(&user),
        );
        state.store.append_audit(vec![ev]).await?;
        return Err(ApiError::forbidden(reason));
    }
    // One name, one subject, for good: the first to sign in claims it.
    let me = format!("{}\n{}", person.issuer, person.subject);
    let kept = now + store::people::IDENTITY_KEPT;
    if let Some(owner) = state
        .store
        .claim_record(&store::people::name_key(&user), &me, now, kept)
        .await?
    {
        if owner != me {
            // The owner's subject goes to the audit log, not to this person.
            let (issuer, subject) = owner.split_once('\n').unwrap_or((&owner, "?"));
            let (ev, _) = refuse(
                format!("the name `{user}` belongs to {subject} at {issuer}"),
                Some(&user),
            );
            state.store.append_audit(vec![ev]).await?;
            return Err(ApiError::forbidden(format!(
                "the name `{user}` belongs to another identity at the provider; \
                 ask a jitgate administrator"
            )));
        }
    }
    // Recorded even when refused below: a leaver loses their groups now,
    // in every session and replica, not when their sessions expire.
    let record = serde_json::to_string(&person).map_err(|e| ApiError::internal(e.to_string()))?;
    let key = store::people::identity_key(&user);
    state.policy.vouch(&user, person.clone());
    if person.groups.is_empty() {
        let (ev, reason) = refuse(
            format!(
                "{user} is in no provider group mapped to jitgate (group_map: {})",
                provider
                    .config
                    .group_map
                    .keys()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Some(&user),
        );
        state
            .store
            .put_record(&key, &record, now, kept, vec![ev])
            .await?;
        return Err(ApiError::forbidden(reason));
    }
    state
        .store
        .put_record(&key, &record, now, kept, vec![])
        .await?;
    let age =
        chrono::Duration::from_std(provider.config.max_session_age).unwrap_or(crate::TOKEN_TTL);
    let detail = json!({"via": via, "idp": idp_detail(&person),
                        "groups": person.groups});
    let (token, expires_at) = crate::auth::issue_with(state, &user, age, detail).await?;
    Ok((token, user, expires_at))
}

impl From<super::provider::SsoError> for ApiError {
    fn from(e: super::provider::SsoError) -> ApiError {
        use super::provider::SsoError::*;
        match e {
            Token(_) => ApiError::new(StatusCode::UNAUTHORIZED, "sso_token", e.to_string()),
            Unreachable { .. } | Provider { .. } => {
                ApiError::new(StatusCode::BAD_GATEWAY, "sso_provider", e.to_string())
            }
            Config(_) => ApiError::internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn provider() -> config::IdentityProvider {
        let text = "[gateway]\n[[group]]\nname = \"dba\"\n[[group]]\nname = \"engineers\"\n\
                    [[identity_provider]]\nname = \"corp\"\nissuer = \"https://idp.example.com\"\n\
                    client_id = \"j\"\nallowed_domains = [\"example.com\"]\n\
                    group_map = { \"db-admins\" = \"dba\", \"eng\" = \"engineers\" }\n";
        config::Config::from_toml(text).unwrap().identity_providers[0].clone()
    }

    fn token(claims: Value) -> Verified {
        Verified {
            issuer: "https://idp.example.com".into(),
            subject: "00u1".into(),
            claims: claims.as_object().unwrap().clone(),
        }
    }

    #[test]
    fn people_get_their_name_and_mapped_groups() {
        let (user, p) = person(
            &provider(),
            &token(json!({"email": "Alice@Example.com", "email_verified": true,
                          "groups": ["eng", "db-admins", "unmapped"]})),
        )
        .unwrap();
        assert_eq!(user, "alice");
        assert_eq!(p.groups, ["dba", "engineers"].map(String::from).into());
        assert_eq!(
            (p.issuer.as_str(), p.subject.as_str()),
            ("https://idp.example.com", "00u1")
        );
        // A space-separated string claim counts too; no mapped group: no groups.
        let (_, p) = person(
            &provider(),
            &token(
                json!({"email": "a@example.com", "email_verified": true, "groups": "eng other"}),
            ),
        )
        .unwrap();
        assert_eq!(p.groups, ["engineers".to_string()].into());
        let (_, p) = person(
            &provider(),
            &token(json!({"email": "a@example.com", "email_verified": true, "groups": ["other"]})),
        )
        .unwrap();
        assert!(p.groups.is_empty());
    }

    #[test]
    fn domains_must_be_allowed_and_verified_and_names_plain() {
        for claims in [
            json!({"email": "a@evil.example", "email_verified": true, "groups": ["eng"]}),
            json!({"email": "a@example.com", "email_verified": false, "groups": ["eng"]}),
            json!({"email": "a@example.com", "groups": ["eng"]}),
            json!({"email": "a@sub.example.com.evil", "email_verified": true, "groups": ["eng"]}),
            json!({"groups": ["eng"]}),
            json!({"email": "a b@example.com", "email_verified": true, "groups": ["eng"]}),
            json!({"email": "\"x:y\"@example.com", "email_verified": true, "groups": ["eng"]}),
        ] {
            assert!(
                person(&provider(), &token(claims.clone())).is_err(),
                "{claims}"
            );
        }
    }
}
