//! Offline and read-only tools over a configuration:
//! - `explain --db D "SQL"`: what a statement does and what it would need;
//! - `scan --db D`: every login with standing privileged access, the
//!   "permanent keyholders" report a team runs before adopting jitgate.

use anyhow::bail;
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

/// Lists every login with standing privileged access on database `db`.
pub async fn scan(cfg: &Config, db: &str, as_json: bool) -> anyhow::Result<()> {
    let active = active_grants(cfg).await;
    let found = enforcer::inspect::scan(cfg, db, &active)
        .await
        .map_err(|e| anyhow::anyhow!(e))?;
    let (standing, just_in_time): (Vec<&Value>, Vec<&Value>) =
        found.iter().partition(|f| f["standing"] != false);
    if as_json {
        println!("{}", serde_json::to_string_pretty(&found)?);
        return Ok(());
    }
    if standing.is_empty() {
        println!("no login on `{db}` holds standing privileged access");
    } else {
        println!(
            "{} logins on `{db}` hold standing privileged access:",
            standing.len()
        );
    }
    for (i, f) in standing.iter().chain(&just_in_time).enumerate() {
        if i == standing.len() {
            println!(
                "{} logins on `{db}` hold privileged access only through active grants:",
                just_in_time.len()
            );
        }
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
    Ok(())
}

/// The store's active grants, for telling grants from standing access; none
/// (with a note) when the store cannot be read from here.
async fn active_grants(cfg: &Config) -> Vec<policy::Grant> {
    let filter = store::GrantFilter {
        user: None,
        active_only: true,
    };
    let read = async {
        let s = store::open(&cfg.gateway.state).await?;
        s.grants(&filter).await
    };
    match read.await {
        Ok(g) => g,
        Err(e) => {
            eprintln!(
                "note: the state store cannot be read ({e}): logins holding a role through \
                 an active grant are listed as standing"
            );
            Vec::new()
        }
    }
}

/// `policy check --live`: each rule against its database's privileges.
pub async fn backing(cfg: &Config) -> anyhow::Result<()> {
    let mut unbacked = 0;
    for db in &cfg.databases {
        let checked = enforcer::backing::check_live(cfg, &db.name)
            .await
            .map_err(|e| anyhow::anyhow!(e))?;
        for r in &checked {
            if r.backed() {
                println!("rule[{}] ({}): backed by `{}`", r.index, r.rule, db.name);
            } else {
                unbacked += 1;
                println!(
                    "rule[{}] ({}): NOT backed by `{}`: the baseline roles or PUBLIC can already do \
                     what it reserves, so only the gateway stands in the way:",
                    r.index, r.rule, db.name
                );
                for g in &r.gaps {
                    let how = if g.revoke.is_empty() {
                        "(it owns it: change the owner)".to_string()
                    } else {
                        g.revoke.join(" ")
                    };
                    println!(
                        "  {} can {} {}    {how}",
                        g.principal, g.privilege, g.object
                    );
                }
            }
            if !r.gateway_only.is_empty() {
                println!(
                    "  ({} is not a privilege on objects: the gateway alone enforces it)",
                    r.gateway_only.join(", ")
                );
            }
        }
    }
    if unbacked > 0 {
        anyhow::bail!(crate::client::Refused(format!(
            "{unbacked} rules are not backed by the database"
        )));
    }
    Ok(())
}

/// The web UI's window into the databases (scan, EXPLAIN previews).
pub struct DbInspector(
    pub std::sync::Arc<Config>,
    pub std::sync::Arc<dyn store::Store>,
);

#[async_trait::async_trait]
impl api::inspect::Inspector for DbInspector {
    async fn blast_radius(
        &self,
        database: &str,
        user: &str,
        role: &str,
        statement: &str,
    ) -> Result<api::inspect::BlastRadius, String> {
        let (summary, plan) =
            enforcer::inspect::blast_radius(&self.0, database, user, role, statement).await?;
        Ok(api::inspect::BlastRadius { summary, plan })
    }

    async fn scan(&self, database: &str) -> Result<Vec<Value>, String> {
        let filter = store::GrantFilter {
            user: None,
            active_only: true,
        };
        let active = self.1.grants(&filter).await.map_err(|e| e.to_string())?;
        enforcer::inspect::scan(&self.0, database, &active).await
    }

    async fn unbacked_rules(&self, database: &str) -> Result<Vec<Value>, String> {
        let checked = enforcer::backing::check_live(&self.0, database).await?;
        Ok(checked
            .iter()
            .filter(|r| !r.backed())
            .map(|r| {
                serde_json::json!({
                    "rule": format!("rule[{}] ({})", r.index, r.rule),
                    "gaps": r.gaps.iter().map(|g| format!("{} can {} {}", g.principal, g.privilege, g.object)).collect::<Vec<_>>(),
                    "revoke": r.gaps.iter().flat_map(|g| g.revoke.clone()).collect::<Vec<_>>(),
                })
            })
            .collect())
    }
}
