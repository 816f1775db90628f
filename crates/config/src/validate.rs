//! Cross-field validation: everything serde cannot check on its own. Each error
//! names the field as `table[index].key` and, where it can, the line.

use crate::locate::line_of;
use crate::model::*;
use crate::scram::ScramVerifier;
use crate::ConfigError;
use std::collections::HashSet;

struct Checker<'a> {
    text: &'a str,
}

impl Checker<'_> {
    /// Every name in `list` is a declared `[[group]]`.
    fn known_groups(
        &self,
        groups: &HashSet<&str>,
        list: &[String],
        table: &str,
        i: usize,
        key: &str,
    ) -> Result<(), ConfigError> {
        match list.iter().find(|n| !groups.contains(n.as_str())) {
            Some(name) => Err(self.err(
                table,
                Some(i),
                key,
                format!("unknown group `{name}` (declare it with [[group]])"),
            )),
            None => Ok(()),
        }
    }

    fn err(&self, table: &str, index: Option<usize>, key: &str, message: String) -> ConfigError {
        let field = match index {
            Some(i) => format!("{table}[{i}].{key}"),
            None => format!("{table}.{key}"),
        };
        ConfigError::Invalid {
            field,
            message,
            line: line_of(self.text, table, index.unwrap_or(0), Some(key))
                .or_else(|| line_of(self.text, table, index.unwrap_or(0), None)),
        }
    }
}

/// Names that become part of SQL identifiers: keep them boring.
fn is_plain_name(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-' || b == b'.')
}

/// Overrides `[gateway] cluster_secret_file`.
pub const CLUSTER_SECRET_ENV: &str = "JITGATE_CLUSTER_SECRET";

/// Whether `state` names a store several replicas share.
pub fn shared_state(state: &str) -> bool {
    state.starts_with("postgres://") || state.starts_with("postgresql://")
}

pub(crate) fn validate(mut cfg: Config, text: &str) -> Result<Config, ConfigError> {
    let c = Checker { text };
    gateway(&c, &cfg.gateway)?;
    let groups = groups(&c, &cfg.groups)?;
    let dbs = databases(&c, &mut cfg.databases)?;
    users(&c, &mut cfg.users, &groups)?;
    let roles = roles(&c, &cfg.roles, &dbs, &groups)?;
    rules(&c, &cfg.rules, &dbs, &roles)?;
    webhooks(&c, &cfg.webhooks)?;
    identity_providers(&c, &cfg, &groups)?;
    Ok(cfg)
}

/// `[gateway]`: hours and days, TLS, the shared store's secret, limits, addresses.
fn gateway(c: &Checker, g: &Gateway) -> Result<(), ConfigError> {
    if let Some(h) = &g.working_hours {
        if parse_hours(h).is_none() {
            return Err(c.err(
                "gateway",
                None,
                "working_hours",
                format!("`{h}` is not a range like \"08:00-18:00\" (UTC, start before end)"),
            ));
        }
    }
    if let Some(d) = g
        .working_days
        .iter()
        .find(|d| !WEEKDAYS.contains(&d.as_str()))
    {
        return Err(c.err(
            "gateway",
            None,
            "working_days",
            format!("unknown day `{d}` (use {})", WEEKDAYS.join(", ")),
        ));
    }
    if g.tls_cert.is_some() != g.tls_key.is_some() {
        return Err(c.err(
            "gateway",
            None,
            if g.tls_cert.is_some() {
                "tls_key"
            } else {
                "tls_cert"
            },
            "tls_cert and tls_key must be given together".into(),
        ));
    }
    if shared_state(&g.state)
        && g.cluster_secret_file.is_none()
        && std::env::var_os(CLUSTER_SECRET_ENV).is_none()
    {
        return Err(c.err(
            "gateway",
            None,
            "state",
            format!(
                "a postgres state store is shared by replicas, which derive the login roles' \
                 passwords from one secret: set cluster_secret_file (or {CLUSTER_SECRET_ENV})"
            ),
        ));
    }
    if g.require_tls && g.tls_cert.is_none() {
        return Err(c.err(
            "gateway",
            None,
            "require_tls",
            "require_tls needs tls_cert and tls_key".into(),
        ));
    }
    if !g.login_role_prefix.is_empty()
        && !g
            .login_role_prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        || g.login_role_prefix.is_empty()
        || g.login_role_prefix.len() > 16
    {
        return Err(c.err(
            "gateway",
            None,
            "login_role_prefix",
            "use 1 to 16 characters of a-z, 0-9 and _ (it starts every login role name)".into(),
        ));
    }
    if g.max_query_bytes < 1024 || g.max_query_bytes > (1 << 30) {
        return Err(c.err(
            "gateway",
            None,
            "max_query_bytes",
            "must be between 1024 and 1073741824".into(),
        ));
    }
    if g.max_message_bytes < 1024 || g.max_message_bytes > (1 << 30) {
        return Err(c.err(
            "gateway",
            None,
            "max_message_bytes",
            "must be between 1024 and 1073741824".into(),
        ));
    }
    for (key, addr) in [("listen", &g.listen), ("api_listen", &g.api_listen)] {
        if addr.parse::<std::net::SocketAddr>().is_err() {
            return Err(c.err(
                "gateway",
                None,
                key,
                format!("`{addr}` is not an address like 127.0.0.1:6432"),
            ));
        }
    }
    Ok(())
}

/// `[[group]]`: plain names, each once. Returns the names.
fn groups<'a>(c: &Checker, list: &'a [Group]) -> Result<HashSet<&'a str>, ConfigError> {
    let mut groups = HashSet::new();
    for (i, grp) in list.iter().enumerate() {
        if !is_plain_name(&grp.name, 63) || !groups.insert(grp.name.as_str()) {
            return Err(c.err(
                "group",
                Some(i),
                "name",
                format!(
                    "`{}` is empty, not a plain name, or declared twice",
                    grp.name
                ),
            ));
        }
    }
    Ok(groups)
}

/// `[[database]]`: names, kind, the admin URL (parsed into `admin`), TLS files.
fn databases(c: &Checker, list: &mut [Database]) -> Result<HashSet<String>, ConfigError> {
    let mut dbs = HashSet::new();
    for (i, db) in list.iter_mut().enumerate() {
        if !is_plain_name(&db.name, 63) || !dbs.insert(db.name.clone()) {
            return Err(c.err(
                "database",
                Some(i),
                "name",
                format!(
                    "`{}` is empty, not a plain name, or declared twice",
                    db.name
                ),
            ));
        }
        if db.kind != "postgres" {
            return Err(c.err(
                "database",
                Some(i),
                "kind",
                format!("`{}` is not supported (only \"postgres\")", db.kind),
            ));
        }
        let admin: tokio_postgres::Config = db.admin_url.parse().map_err(|e| {
            c.err(
                "database",
                Some(i),
                "admin_url",
                format!("not a postgres:// connection string: {e}"),
            )
        })?;
        let tcp = matches!(admin.get_hosts(), [tokio_postgres::config::Host::Tcp(_)]);
        if !tcp || admin.get_ports().len() > 1 {
            return Err(c.err(
                "database",
                Some(i),
                "admin_url",
                "needs exactly one TCP host (and at most one port)".into(),
            ));
        }
        if admin.get_user().is_none() {
            return Err(c.err(
                "database",
                Some(i),
                "admin_url",
                "needs a user (the administrative role)".into(),
            ));
        }
        if db.tls != UpstreamTls::VerifyFull && db.tls_ca_file.is_some() {
            return Err(c.err(
                "database",
                Some(i),
                "tls_ca_file",
                "only used with tls = \"verify-full\"".into(),
            ));
        }
        db.admin = Some(admin);
    }
    Ok(dbs)
}

/// `[[user]]`: names, one password form (kept as a SCRAM verifier), groups.
fn users(c: &Checker, list: &mut [User], groups: &HashSet<&str>) -> Result<(), ConfigError> {
    let mut users = HashSet::new();
    for (i, u) in list.iter_mut().enumerate() {
        if !is_plain_name(&u.name, 47) || !users.insert(u.name.clone()) {
            return Err(c.err(
                "user",
                Some(i),
                "name",
                format!(
                    "`{}` is empty, longer than 47 characters, not a plain name \
                     (a-z, A-Z, 0-9, _ - .), or declared twice",
                    u.name
                ),
            ));
        }
        u.scram = Some(match (u.password.take(), &u.password_scram) {
            (Some(p), None) if !p.is_empty() => ScramVerifier::from_password(&p),
            (None, Some(v)) => {
                ScramVerifier::parse(v).map_err(|m| c.err("user", Some(i), "password_scram", m))?
            }
            (Some(_), Some(_)) => {
                return Err(c.err(
                    "user",
                    Some(i),
                    "password",
                    "give either password or password_scram, not both".into(),
                ))
            }
            _ => {
                return Err(c.err(
                    "user",
                    Some(i),
                    "password",
                    "a non-empty password or password_scram is required".into(),
                ))
            }
        });
        c.known_groups(groups, &u.groups, "user", i, "groups")?;
    }
    Ok(())
}

/// `[[role]]`: names, database, requesters, durations, a chain that can be walked.
fn roles<'a>(
    c: &Checker,
    list: &'a [Role],
    dbs: &HashSet<String>,
    groups: &HashSet<&str>,
) -> Result<HashSet<&'a str>, ConfigError> {
    let mut roles = HashSet::new();
    for (i, r) in list.iter().enumerate() {
        if !is_plain_name(&r.name, 63) || r.name == "deny" || !roles.insert(r.name.as_str()) {
            return Err(c.err(
                "role",
                Some(i),
                "name",
                format!(
                    "`{}` is not a plain name, is reserved, or is declared twice",
                    r.name
                ),
            ));
        }
        if !dbs.contains(&r.database) {
            return Err(c.err(
                "role",
                Some(i),
                "database",
                format!("unknown database `{}`", r.database),
            ));
        }
        c.known_groups(groups, &r.requesters, "role", i, "requesters")?;
        if r.default_duration > r.max_duration {
            return Err(c.err(
                "role",
                Some(i),
                "default_duration",
                "is longer than max_duration".into(),
            ));
        }
        if r.max_total_duration.is_some_and(|t| t < r.max_duration) {
            return Err(c.err(
                "role",
                Some(i),
                "max_total_duration",
                "is shorter than max_duration".into(),
            ));
        }
        if r.chain.is_empty() {
            return Err(c.err("role", Some(i), "chain", "needs at least one stage".into()));
        }
        for stage in &r.chain {
            c.known_groups(groups, &stage.approvers, "role", i, "chain")?;
            c.known_groups(groups, &stage.escalate_to, "role", i, "chain")?;
            if stage.min == 0 || stage.approvers.is_empty() {
                return Err(c.err(
                    "role",
                    Some(i),
                    "chain",
                    "every stage needs approvers and min >= 1".into(),
                ));
            }
        }
    }
    Ok(roles)
}

/// `[[rule]]`: database, actions, and one outcome (a role, deny, approve_each).
fn rules(
    c: &Checker,
    list: &[Rule],
    dbs: &HashSet<String>,
    roles: &HashSet<&str>,
) -> Result<(), ConfigError> {
    for (i, rule) in list.iter().enumerate() {
        if !dbs.contains(&rule.database) {
            return Err(c.err(
                "rule",
                Some(i),
                "database",
                format!("unknown database `{}`", rule.database),
            ));
        }
        for a in &rule.actions {
            if !ACTIONS.contains(&a.as_str()) {
                return Err(c.err(
                    "rule",
                    Some(i),
                    "actions",
                    format!("unknown action `{a}` (one of {})", ACTIONS.join(", ")),
                ));
            }
        }
        match (&rule.role, rule.approve_each) {
            (Some(role), _) if role != "deny" && !roles.contains(role.as_str()) => {
                return Err(c.err(
                    "rule",
                    Some(i),
                    "role",
                    format!("unknown role `{role}` (declare it with [[role]], or use \"deny\")"),
                ))
            }
            (None, false) => {
                return Err(c.err(
                    "rule",
                    Some(i),
                    "role",
                    "a rule needs role = \"<role>\" or \"deny\", or approve_each = true".into(),
                ))
            }
            (None, true) => {
                return Err(c.err(
                    "rule",
                    Some(i),
                    "role",
                    "approve_each needs role = \"<role>\": that role's requesters and chain \
                     approve each statement, which then runs under it"
                        .into(),
                ))
            }
            (Some(role), true) if role == "deny" => {
                return Err(c.err(
                    "rule",
                    Some(i),
                    "approve_each",
                    "a rule cannot both deny and approve each statement".into(),
                ))
            }
            _ => {}
        }
    }
    Ok(())
}

/// `[[webhook]]`: URL, a secret for signed JSON, events.
fn webhooks(c: &Checker, list: &[Webhook]) -> Result<(), ConfigError> {
    for (i, w) in list.iter().enumerate() {
        if !(w.url.starts_with("https://") || w.url.starts_with("http://")) {
            return Err(c.err(
                "webhook",
                Some(i),
                "url",
                "must be an http:// or https:// URL".into(),
            ));
        }
        if w.format == WebhookFormat::Json && w.secret.as_deref().unwrap_or("").is_empty() {
            return Err(c.err(
                "webhook",
                Some(i),
                "secret",
                "a JSON webhook needs a secret: receivers check the X-Jitgate-Signature \
                 HMAC with it (only format = \"slack\" goes unsigned)"
                    .into(),
            ));
        }
        if w.events.is_empty() {
            return Err(c.err(
                "webhook",
                Some(i),
                "events",
                "name the events to send, e.g. [\"request.*\", \"grant.*\", \"alert.*\"]".into(),
            ));
        }
    }
    Ok(())
}

/// `[[identity_provider]]`: names, issuer URLs, a secret, mapped groups; and
/// someone must be able to sign in when passwords are off.
fn identity_providers(
    c: &Checker,
    cfg: &Config,
    groups: &HashSet<&str>,
) -> Result<(), ConfigError> {
    let mut names = HashSet::new();
    for (i, p) in cfg.identity_providers.iter().enumerate() {
        let err = |key: &str, message: String| c.err("identity_provider", Some(i), key, message);
        if !is_plain_name(&p.name, 40) || !names.insert(p.name.as_str()) {
            return Err(err(
                "name",
                format!(
                    "`{}` must be unique and plain (letters, digits, _ - .)",
                    p.name
                ),
            ));
        }
        let loopback = [
            "http://127.",
            "http://localhost:",
            "http://localhost/",
            "http://[::1]",
        ]
        .iter()
        .any(|l| p.issuer.starts_with(l));
        if !(p.issuer.starts_with("https://") || loopback) {
            return Err(err(
                "issuer",
                format!(
                    "`{}` must be an https:// URL (http:// only on loopback, for tests)",
                    p.issuer
                ),
            ));
        }
        if p.client_id.is_empty() {
            return Err(err("client_id", "must not be empty".into()));
        }
        if p.client_secret.is_some() && p.client_secret_file.is_some() {
            return Err(err(
                "client_secret_file",
                "give client_secret or client_secret_file, not both".into(),
            ));
        }
        if !p.scopes.iter().any(|s| s == "openid") {
            return Err(err(
                "scopes",
                "must include \"openid\" (an ID token is what signs people in)".into(),
            ));
        }
        if p.group_map.is_empty() {
            return Err(err(
                "group_map",
                "map at least one provider group to a jitgate group, e.g. { \"db-admins\" = \"dba\" }: \
                 people in no mapped group cannot sign in"
                    .into(),
            ));
        }
        if let Some(g) = p.group_map.values().find(|g| !groups.contains(g.as_str())) {
            return Err(err(
                "group_map",
                format!("unknown group `{g}` (declare it with [[group]])"),
            ));
        }
        if p.groups_claim.is_empty() || p.username_claim.is_empty() {
            return Err(err(
                "groups_claim",
                "groups_claim and username_claim must name claims".into(),
            ));
        }
    }
    if !cfg.gateway.password_login && cfg.identity_providers.is_empty() {
        return Err(c.err(
            "gateway",
            None,
            "password_login",
            "with password_login = false people sign in only through an \
             [[identity_provider]]; configure one, or keep passwords on"
                .into(),
        ));
    }
    Ok(())
}
