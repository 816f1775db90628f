//! Offline and read-only tools over a configuration:
//! - `explain --db D "SQL"`: what a statement does and what it would need;
//! - `scan --db D`: every login with standing privileged access, the
//!   "permanent keyholders" report a team runs before adopting jitgate.

use anyhow::{bail, Context};
use config::Config;
use policy::classify::classify;
use policy::rules::{Rules, Verdict};
use policy::Policy;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// Classifies `sql` and applies the rules of database `db`, for a user holding no grant.
pub fn explain(cfg: &Config, db: &str, sql: &str, as_json: bool) -> anyhow::Result<()> {
    if cfg.database(db).is_none() {
        bail!("no [[database]] named `{db}` in the configuration");
    }
    let policy = Policy::from_config(cfg)?;
    let action = classify(sql)
        .map_err(|e| anyhow::anyhow!("{e}; jitgate refuses statements it cannot read"))?;
    let verdict = Rules::from_config(cfg).decide(db, &action, &BTreeSet::new());
    let chain: Vec<Value> = match &verdict {
        Verdict::NeedsRole(role) | Verdict::ApproveEach(role) => policy
            .role(role)
            .map(|r| {
                r.chain
                    .iter()
                    .map(|s| {
                        json!({"approvers": s.approvers, "min": s.min,
                               "escalate_after_secs": s.escalate_after.map(|d| d.num_seconds()),
                               "escalate_to": s.escalate_to})
                    })
                    .collect()
            })
            .unwrap_or_default(),
        _ => vec![],
    };
    let verdict_text = match &verdict {
        Verdict::Allow => {
            "allowed (the database still checks the login role's own privileges)".to_string()
        }
        Verdict::NeedsRole(r) => format!("needs role {r} (an approved grant)"),
        Verdict::ApproveEach(role) => {
            format!("needs its own approval (approve_each, by the chain of {role})")
        }
        Verdict::Deny(why) => format!("denied: {why}"),
    };
    if as_json {
        let out = json!({"action": action.kind.as_str(), "objects": action.objects, "functions": action.functions,
                         "identity_change": action.identity_change, "verdict": verdict_text, "chain": chain});
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    let list = |s: &BTreeSet<String>| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.iter().cloned().collect::<Vec<_>>().join(", ")
        }
    };
    println!("action:    {}", action.kind.as_str());
    println!("objects:   {}", list(&action.objects));
    println!("functions: {}", list(&action.functions));
    println!("verdict:   {verdict_text}");
    for (i, s) in chain.iter().enumerate() {
        println!(
            "stage {}:   {} of {}{}",
            i + 1,
            s["min"],
            s["approvers"],
            match s["escalate_after_secs"].as_i64() {
                Some(secs) => format!(", escalating after {secs}s to {}", s["escalate_to"]),
                None => String::new(),
            }
        );
    }
    Ok(())
}

const SCAN: &str = "
SELECT l.rolname::text,
       l.rolsuper, l.rolcreaterole, l.rolreplication, l.rolbypassrls,
       ARRAY(SELECT r.rolname::text FROM pg_roles r
             WHERE r.oid <> l.oid AND r.rolname = ANY($1) AND pg_has_role(l.oid, r.oid, 'MEMBER')
             ORDER BY 1) AS managed,
       EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
               WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                 AND n.nspname NOT LIKE 'pg\\_%'
                 AND has_table_privilege(l.oid, c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')) AS can_write,
       EXISTS (SELECT 1 FROM pg_namespace n
               WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
                 AND has_schema_privilege(l.oid, n.oid, 'CREATE')) AS can_ddl
FROM pg_roles l
WHERE l.rolcanlogin
ORDER BY 1";

/// Lists every login with standing privileged access on database `db`.
pub async fn scan(cfg: &Config, db: &str, as_json: bool) -> anyhow::Result<()> {
    let database = cfg
        .database(db)
        .with_context(|| format!("no [[database]] named `{db}` in the configuration"))?;
    let managed: Vec<String> = cfg
        .roles
        .iter()
        .filter(|r| r.database == db)
        .map(|r| r.name.clone())
        .collect();
    let (client, conn) = database
        .admin()
        .connect(tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to `{db}` as its admin role"))?;
    tokio::spawn(conn);
    let rows = client
        .query(SCAN, &[&managed])
        .await
        .context("reading roles")?;
    let mut found = Vec::new();
    for r in rows {
        let (name, sup, cr, repl, bypass): (String, bool, bool, bool, bool) =
            (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4));
        let managed: Vec<String> = r.get(5);
        let (write, ddl): (bool, bool) = (r.get(6), r.get(7));
        let mut why = Vec::new();
        for (flag, label) in [
            (sup, "superuser"),
            (cr, "createrole"),
            (repl, "replication"),
            (bypass, "bypassrls"),
        ] {
            if flag {
                why.push(label.to_string());
            }
        }
        why.extend(
            managed
                .iter()
                .map(|m| format!("member of managed role {m}")),
        );
        if write {
            why.push("can write tables".into());
        }
        if ddl {
            why.push("can create in a schema".into());
        }
        if !why.is_empty() {
            found.push(
                json!({"login": name, "superuser": sup, "createrole": cr, "replication": repl,
                              "bypassrls": bypass, "managed_roles": managed, "can_write": write,
                              "can_ddl": ddl, "why": why}),
            );
        }
    }
    if as_json {
        println!("{}", serde_json::to_string_pretty(&found)?);
    } else if found.is_empty() {
        println!("no login on `{db}` holds standing privileged access");
    } else {
        println!(
            "{} logins on `{db}` hold standing privileged access:",
            found.len()
        );
        for f in &found {
            let why: Vec<&str> = f["why"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(Value::as_str)
                .collect();
            println!(
                "  {:<24} {}",
                f["login"].as_str().unwrap_or("?"),
                why.join(", ")
            );
        }
    }
    Ok(())
}
