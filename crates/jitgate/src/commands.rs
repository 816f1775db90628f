//! What each client command sends and prints. Listings print a table, or the
//! API's JSON with `--json`.

use crate::client::Client;
use anyhow::{bail, Context};
use serde_json::{json, Value};
use store::Kind;

fn table(rows: &[Vec<String>], header: &[&str]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (w, c) in widths.iter_mut().zip(r) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    let mut out = vec![line(header.iter().map(|h| h.to_string()).collect())];
    out.extend(rows.iter().map(|r| line(r.clone())));
    out.join("\n")
}

fn s(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

/// `jitgate request`: prints the request id alone on stdout.
pub async fn request(
    c: &Client,
    role: &str,
    db: &str,
    duration: Option<&str>,
    reason: &str,
    statement: Option<&str>,
) -> anyhow::Result<()> {
    let mut body = json!({"role": role, "database": db, "reason": reason});
    if let Some(d) = duration {
        body["duration"] = json!(d);
    }
    if let Some(st) = statement {
        body["statement"] = json!(st);
    }
    let v = c.call("POST", "/api/v1/requests", Some(body)).await?;
    let r = &v["request"];
    println!("{}", r["id"]);
    eprintln!(
        "{} request {} for {} on {}{}",
        if v["new"] == true {
            "filed"
        } else {
            "already pending:"
        },
        r["id"],
        s(&r["role"]),
        s(&r["database"]),
        if r["extends_grant"].is_null() {
            String::new()
        } else {
            format!(" (extends grant {})", r["extends_grant"])
        }
    );
    Ok(())
}

pub async fn requests(
    c: &Client,
    state: Option<&str>,
    mine: bool,
    as_json: bool,
) -> anyhow::Result<()> {
    let mut q = vec![];
    if let Some(st) = state {
        q.push(format!("state={st}"));
    }
    if mine {
        q.push("mine=true".into());
    }
    let v = c
        .call("GET", &format!("/api/v1/requests?{}", q.join("&")), None)
        .await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v["requests"])?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v["requests"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            vec![
                s(&r["id"]),
                s(&r["state"]),
                s(&r["user"]),
                s(&r["role"]),
                s(&r["database"]),
                s(&r["stage"]),
                format!("{}s", r["duration_secs"]),
                s(&r["created_at"]),
                s(&r["reason"]),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &rows,
            &["ID", "STATE", "USER", "ROLE", "DATABASE", "STAGE", "DURATION", "FILED", "REASON"]
        )
    );
    Ok(())
}

pub async fn decide(c: &Client, id: i64, approve: bool, comment: &str) -> anyhow::Result<()> {
    let verb = if approve { "approve" } else { "deny" };
    let v = c
        .call(
            "POST",
            &format!("/api/v1/requests/{id}/{verb}"),
            Some(json!({"comment": comment})),
        )
        .await?;
    let r = &v["request"];
    match (s(&r["state"]).as_str(), &v["grant"]) {
        ("approved", g) if !g.is_null() => println!(
            "request {id} approved; grant {} active until {}",
            g["id"],
            s(&g["expires_at"])
        ),
        (state, _) => println!(
            "request {id}: decision recorded; request is {state} (stage {})",
            r["stage"]
        ),
    }
    Ok(())
}

pub async fn cancel(c: &Client, id: i64) -> anyhow::Result<()> {
    c.call("POST", &format!("/api/v1/requests/{id}/cancel"), None)
        .await?;
    println!("request {id} cancelled");
    Ok(())
}

pub async fn grants(c: &Client, active: bool, as_json: bool) -> anyhow::Result<()> {
    let v = c
        .call("GET", &format!("/api/v1/grants?active={active}"), None)
        .await?;
    if as_json {
        println!("{}", serde_json::to_string_pretty(&v["grants"])?);
        return Ok(());
    }
    let rows: Vec<Vec<String>> = v["grants"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            vec![
                s(&g["id"]),
                s(&g["state"]),
                s(&g["user"]),
                s(&g["role"]),
                s(&g["database"]),
                s(&g["starts_at"]),
                s(&g["expires_at"]),
                s(&g["request_id"]),
            ]
        })
        .collect();
    println!(
        "{}",
        table(
            &rows,
            &["ID", "STATE", "USER", "ROLE", "DATABASE", "STARTS", "EXPIRES", "REQUEST"]
        )
    );
    Ok(())
}

pub async fn end_grant(c: &Client, id: i64, revoke: bool, reason: &str) -> anyhow::Result<()> {
    let verb = if revoke { "revoke" } else { "relinquish" };
    let body = revoke.then(|| json!({"reason": reason}));
    let v = c
        .call("POST", &format!("/api/v1/grants/{id}/{verb}"), body)
        .await?;
    println!("grant {id} {}", s(&v["grant"]["state"]));
    Ok(())
}

pub async fn audit_verify(
    c: &Client,
    checkpoint: Option<&str>,
    public_key: Option<&str>,
) -> anyhow::Result<()> {
    let Some(checkpoint) = checkpoint else {
        let v = c.call("GET", "/api/v1/audit/verify", None).await?;
        return verdict(&v);
    };
    // Checked here, not by the server: the export is read and verified locally.
    let cp = read_checkpoint(checkpoint)?;
    let lines = match c.call("GET", "/api/v1/audit/export", None).await? {
        Value::String(lines) => lines,
        other => bail!("unexpected export: {other}"),
    };
    let records = lines
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(serde_json::from_str::<store::AuditRecord>)
        .collect::<Result<Vec<_>, _>>()?;
    let v = store::checkpoint::verify_against(&records, &cp, public_key);
    let v = serde_json::to_value(&v)?;
    verdict(&v)?;
    println!(
        "checkpoint ok: event {} of {} has the hash signed at {} by key {}",
        cp.seq,
        s(&v["records"]),
        cp.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        cp.public_key
    );
    Ok(())
}

fn verdict(v: &Value) -> anyhow::Result<()> {
    if v["ok"] == true {
        println!("audit log ok: {} events, hash chain intact", v["records"]);
        Ok(())
    } else {
        bail!(crate::client::Refused(format!(
            "audit log FAILED verification at event {}: {}",
            v["first_bad_seq"],
            s(&v["problem"])
        )))
    }
}

/// A checkpoint given as JSON or as a file; either the checkpoint itself or
/// the `audit.checkpoint` event carrying it in `detail`.
fn read_checkpoint(arg: &str) -> anyhow::Result<store::checkpoint::Checkpoint> {
    let text = if arg.trim_start().starts_with('{') {
        arg.to_string()
    } else {
        std::fs::read_to_string(arg).with_context(|| format!("reading {arg}"))?
    };
    let v: Value = serde_json::from_str(text.trim()).context("the checkpoint is not JSON")?;
    let v = if v.get("signature").is_some() {
        v
    } else {
        v["detail"].clone()
    };
    serde_json::from_value(v).context("not a jitgate audit checkpoint")
}

/// Writes a new signing key (mode 0600) and prints its public key.
pub fn audit_keygen(out: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let (secret, public) = store::checkpoint::new_key();
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .with_context(|| format!("creating {} (it must not exist yet)", out.display()))?;
    writeln!(f, "{secret}")?;
    println!("{public}");
    eprintln!(
        "wrote {}; set [gateway] audit_key_file to it, keep a copy of the public key above \
         for `jitgate audit verify --checkpoint ... --public-key ...`",
        out.display()
    );
    Ok(())
}

pub async fn audit_export(c: &Client) -> anyhow::Result<()> {
    // The export endpoint answers JSON lines; print them as they are.
    let v = c.call("GET", "/api/v1/audit/export", None).await?;
    match v {
        Value::String(lines) => print!("{lines}"),
        other => println!("{other}"),
    }
    Ok(())
}

/// `jitgate rotate-credentials`: the next epoch, in the state store. The
/// enforcing replica sets the new passwords at its next reconcile; a replica
/// that meets an old password meanwhile reads the epoch again and follows.
pub async fn rotate_credentials(config: &config::Config) -> anyhow::Result<()> {
    let store = store::open(&config.gateway.state)
        .await
        .with_context(|| format!("opening the state store {}", config.gateway.state))?;
    let actor = std::env::var("USER").unwrap_or_else(|_| "cli".into());
    let event = store::AuditEvent::new(
        chrono::Utc::now(),
        Kind::CredentialsRotated,
        &actor,
        "credentials".into(),
        json!({"why": "rotate-credentials"}),
    );
    let epoch = store.rotate_credentials(event).await?;
    println!(
        "login-role passwords moved to epoch {epoch}; the enforcing replica sets them within {:?}",
        config.gateway.reconcile_interval
    );
    Ok(())
}
