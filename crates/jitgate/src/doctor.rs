//! `jitgate doctor`: checks a deployment end to end and says what to fix,
//! one line each — the admin role's rights, rules the database does not
//! back, login roles reachable other than through the gateway (pg_hba),
//! standing keyholders left, clock skew to the database, the state
//! store's durability, and that identity providers answer. Read-only. Exit 1 when something must be fixed.

use config::Config;
use serde_json::Value;
use std::fmt;
use std::time::Instant;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    Warn,
    Fix,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fix => "FIX ",
        })
    }
}

pub struct Finding {
    pub level: Level,
    pub text: String,
}

fn say(out: &mut Vec<Finding>, level: Level, text: impl Into<String>) {
    out.push(Finding {
        level,
        text: text.into(),
    });
}

pub async fn run(cfg: &Config) -> anyhow::Result<()> {
    let findings = check(cfg).await;
    for f in &findings {
        println!("{} {}", f.level, f.text);
    }
    let fixes = findings.iter().filter(|f| f.level == Level::Fix).count();
    if fixes > 0 {
        anyhow::bail!(crate::client::Refused(format!("{fixes} things to fix")));
    }
    Ok(())
}

pub async fn check(cfg: &Config) -> Vec<Finding> {
    let mut out = Vec::new();
    for db in &cfg.databases {
        database(cfg, &db.name, &mut out).await;
    }
    state_store(cfg, &mut out).await;
    identity_providers(cfg, &mut out).await;
    out
}

/// Each `[[identity_provider]]` answers discovery with signing keys, and the
/// redirect URI people will be sent back to is a real address.
async fn identity_providers(cfg: &Config, out: &mut Vec<Finding>) {
    if cfg.identity_providers.is_empty() {
        return;
    }
    if cfg.gateway.public_url.is_none() {
        say(
            out,
            Level::Warn,
            format!(
                "public_url is not set: providers send people back to {}/ui/login/oidc/<name>/callback; \
                 set [gateway] public_url to the address people reach jitgate at",
                cfg.gateway.public_url()
            ),
        );
    }
    for p in &cfg.identity_providers {
        if let Err(e) = p.secret() {
            say(
                out,
                Level::Fix,
                format!(
                    "identity provider {}: cannot read client_secret_file: {e}",
                    p.name
                ),
            );
            continue;
        }
        let provider = api::sso::provider::Provider::new(p.clone(), &cfg.gateway.public_url());
        match provider.metadata(false).await {
            Ok(m) => say(
                out,
                Level::Ok,
                format!(
                    "identity provider {}: {} answers discovery ({} signing keys, device flow: {}); \
                     register the redirect URI {}",
                    p.name,
                    p.issuer,
                    m.jwks().keys().len(),
                    if m.additional_metadata().device_authorization_endpoint.is_some() { "yes" } else { "no, the CLI signs in through the browser" },
                    provider.redirect_uri
                ),
            ),
            Err(e) => say(out, Level::Fix, format!("identity provider {}: {e}", p.name)),
        }
    }
}

async fn database(cfg: &Config, name: &str, out: &mut Vec<Finding>) {
    let Some(db) = cfg.database(name) else {
        return;
    };
    let (config, tls) = match pgtls::admin_connection(db) {
        Ok(x) => x,
        Err(e) => return say(out, Level::Fix, format!("{name}: TLS settings: {e}")),
    };
    let client = match config.connect(tls).await {
        Ok((client, conn)) => {
            tokio::spawn(conn);
            client
        }
        Err(e) => {
            say(
                out,
                Level::Fix,
                format!("{name}: cannot connect as its admin role: {}", reason(&e)),
            );
            return;
        }
    };
    admin_rights(cfg, name, &client, out).await;
    clock_skew(name, &client, out).await;
    match enforcer::backing::check_live(cfg, name).await {
        Ok(rules) => {
            let unbacked: Vec<_> = rules.iter().filter(|r| !r.backed()).collect();
            if unbacked.is_empty() {
                say(
                    out,
                    Level::Ok,
                    format!(
                        "{name}: every rule is backed by the database ({})",
                        rules.len()
                    ),
                );
            }
            for r in unbacked {
                let revokes: Vec<String> = r.gaps.iter().flat_map(|g| g.revoke.clone()).collect();
                say(
                    out,
                    Level::Fix,
                    format!(
                        "{name}: rule[{}] ({}) is not backed: {}; to back it: {}",
                        r.index,
                        r.rule,
                        r.gaps
                            .iter()
                            .map(|g| format!("{} can {} {}", g.principal, g.privilege, g.object))
                            .collect::<Vec<_>>()
                            .join(", "),
                        if revokes.is_empty() {
                            "change the owner".into()
                        } else {
                            revokes.join(" ")
                        }
                    ),
                );
            }
        }
        Err(e) => say(
            out,
            Level::Fix,
            format!("{name}: cannot check the rules: {e}"),
        ),
    }
    // No grants: a grant's membership would show as standing here, so the
    // report says which logins to look at, not how they got there.
    match enforcer::inspect::scan(cfg, name, &[]).await {
        Ok(found) => keyholders(cfg, name, &found, out),
        Err(e) => say(out, Level::Fix, format!("{name}: cannot scan: {e}")),
    }
}

fn reason(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(d) => d.message().to_string(),
        None => store::described(e),
    }
}

/// CREATEROLE (login roles) and the right to grant every managed and
/// baseline role (ADMIN option; CREATEROLE suffices before PostgreSQL 16).
async fn admin_rights(
    cfg: &Config,
    name: &str,
    c: &tokio_postgres::Client,
    out: &mut Vec<Finding>,
) {
    let db = cfg.database(name).expect("checked");
    let roles: Vec<String> = cfg
        .roles
        .iter()
        .filter(|r| r.database == name)
        .map(|r| r.name.clone())
        .chain(db.baseline_roles.iter().cloned())
        .collect();
    let row = match c
        .query_one(
            "SELECT current_user::text, rolsuper, rolcreaterole, \
                    current_setting('server_version_num')::int \
             FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
    {
        Ok(r) => r,
        Err(e) => return say(out, Level::Fix, format!("{name}: {}", reason(&e))),
    };
    let (me, sup, createrole, version): (String, bool, bool, i32) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    if !sup && !createrole {
        say(
            out,
            Level::Fix,
            format!("{name}: admin role {me} lacks CREATEROLE (it creates the login roles): ALTER ROLE {me} CREATEROLE"),
        );
    }
    let mut missing = Vec::new();
    let mut cannot = Vec::new();
    for role in &roles {
        let r = c
            .query_opt(
                "SELECT pg_has_role(current_user, oid, 'MEMBER WITH ADMIN OPTION') \
                 FROM pg_roles WHERE rolname = $1",
                &[role],
            )
            .await;
        match r {
            Ok(None) => missing.push(role.clone()),
            Ok(Some(row)) => {
                let admin: bool = row.get(0);
                if !(sup || admin || (createrole && version < 160000)) {
                    cannot.push(role.clone());
                }
            }
            Err(e) => return say(out, Level::Fix, format!("{name}: {}", reason(&e))),
        }
    }
    for role in &missing {
        say(
            out,
            Level::Fix,
            format!("{name}: role {role} (configured) does not exist in the database"),
        );
    }
    for role in &cannot {
        say(
            out,
            Level::Fix,
            format!("{name}: admin role {me} cannot grant {role}: GRANT {role} TO {me} WITH ADMIN OPTION"),
        );
    }
    if missing.is_empty() && cannot.is_empty() && (sup || createrole) {
        say(
            out,
            Level::Ok,
            format!(
                "{name}: admin role {me} creates login roles and grants all {} configured roles{}",
                roles.len(),
                if sup {
                    " (it is a superuser: more than it needs)"
                } else {
                    ""
                }
            ),
        );
    }
}

/// The database's clock against ours, net of the round trip.
async fn clock_skew(name: &str, c: &tokio_postgres::Client, out: &mut Vec<Finding>) {
    let sent = Instant::now();
    let local_before = chrono::Utc::now();
    let Ok(row) = c.query_one("SELECT now()::timestamptz::text", &[]).await else {
        return;
    };
    let rtt = sent.elapsed();
    let theirs: String = row.get(0);
    let Ok(theirs) = chrono::DateTime::parse_from_str(&theirs, "%Y-%m-%d %H:%M:%S%.f%#z") else {
        return;
    };
    let ours = local_before + chrono::Duration::from_std(rtt / 2).unwrap_or_default();
    let skew = (theirs.with_timezone(&chrono::Utc) - ours)
        .num_milliseconds()
        .abs();
    let level = if skew > 1000 { Level::Fix } else { Level::Ok };
    say(
        out,
        level,
        format!(
            "{name}: clock skew to the database {skew} ms{}",
            if level == Level::Fix {
                " (grants end by the gateway's clock: sync both with NTP)"
            } else {
                ""
            }
        ),
    );
}

fn keyholders(cfg: &Config, name: &str, found: &[Value], out: &mut Vec<Finding>) {
    let reach = format!("{}* (jitgate login roles)", cfg.gateway.login_role_prefix);
    let mut standing = 0;
    for f in found {
        let login = f["login"].as_str().unwrap_or("?");
        let why: Vec<&str> = f["why"]
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if login == reach {
            for w in why {
                say(out, Level::Fix, format!("{name}: {w}"));
            }
            continue;
        }
        let admin = cfg.database(name).and_then(|d| d.admin().get_user());
        if login.starts_with(&cfg.gateway.login_role_prefix) || Some(login) == admin {
            continue;
        }
        standing += 1;
        say(
            out,
            Level::Warn,
            format!(
                "{name}: standing keyholder {login}: {} (if it is a person, let jitgate grant it)",
                why.join(", ")
            ),
        );
    }
    if !found.iter().any(|f| f["login"] == reach.as_str()) {
        say(
            out,
            Level::Ok,
            format!("{name}: login roles can log in only through the gateway (pg_hba.conf)"),
        );
    }
    if standing == 0 {
        say(out, Level::Ok, format!("{name}: no standing keyholder"));
    }
}

async fn state_store(cfg: &Config, out: &mut Vec<Finding>) {
    let url = &cfg.gateway.state;
    if let Some(path) = url.strip_prefix("sqlite://") {
        let dir = std::path::Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(std::path::Path::new("."));
        match filesystem_of(dir) {
            Some(fs) if fs == "tmpfs" || fs == "ramfs" => say(
                out,
                Level::Fix,
                format!("state store {path} is on {fs}: decisions and the audit log are lost at reboot"),
            ),
            _ => say(
                out,
                Level::Ok,
                format!("state store {path}: SQLite, WAL, synchronous = FULL (every decision on disk before it is acknowledged)"),
            ),
        }
        return;
    }
    let store_url = url.split('?').next().unwrap_or(url);
    let (client, conn) = match pgtls::postgres(url) {
        Ok((c, tls)) => match c.connect(tls).await {
            Ok(x) => x,
            Err(e) => {
                return say(
                    out,
                    Level::Fix,
                    format!("state store {store_url}: cannot connect: {}", reason(&e)),
                )
            }
        },
        Err(e) => return say(out, Level::Fix, format!("state store {store_url}: {e}")),
    };
    tokio::spawn(conn);
    for (setting, bad) in [
        ("fsync", "off"),
        ("synchronous_commit", "off"),
        ("full_page_writes", "off"),
    ] {
        if let Ok(row) = client.query_one(&format!("SHOW {setting}"), &[]).await {
            let v: String = row.get(0);
            if v == bad {
                say(
                    out,
                    Level::Fix,
                    format!(
                        "state store: {setting} = {v}: a crash can lose approvals and audit events"
                    ),
                );
            }
        }
    }
    say(
        out,
        Level::Ok,
        "state store: PostgreSQL answers".to_string(),
    );
}

/// The filesystem type `path` is on, from /proc/mounts (longest mount point).
fn filesystem_of(path: &std::path::Path) -> Option<String> {
    let path = std::fs::canonicalize(path).ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, at, fs) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(at).then(|| (at.len(), fs.to_string()))
        })
        .max_by_key(|(n, _)| *n)
        .map(|(_, fs)| fs)
}
