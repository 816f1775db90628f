//! The CLI side of single sign-on.
//!
//! - `jitgate login --sso`: the device authorization grant, brokered by the
//!   server (the person opens the printed address and enters the code); if
//!   the provider has no device flow, a loopback sign-in: the browser goes
//!   through the web sign-in and comes back to `http://127.0.0.1:{port}/`
//!   with a one-time code, which only this process (holding the verifier
//!   whose hash it sent) can trade for the token. The token is saved per
//!   server, as `jitgate login` does.
//! - `jitgate db-login --db NAME`: a connection secret for database clients,
//!   written to the pgpass file (libpq reads it; nothing goes on a command
//!   line), with a connection string and a service entry printed.
//! - `jitgate psql --db NAME [-- psql args]`: db-login, then psql.

use crate::client::{Client, Refused};
use anyhow::{anyhow, bail, Context};
use base64::Engine;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::Duration;

/// The provider to use: the one named, or the server's only one.
async fn provider(c: &Client, name: Option<&str>) -> anyhow::Result<String> {
    let list = c.call("GET", "/api/v1/login/oidc", None).await?;
    let names: Vec<String> = list["providers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    match name {
        Some(n) if names.iter().any(|x| x == n) => Ok(n.to_string()),
        Some(n) => bail!(
            "the server has no identity provider `{n}` (it has: {})",
            names.join(", ")
        ),
        None if names.len() == 1 => Ok(names[0].clone()),
        None if names.is_empty() => {
            bail!("the server has no [[identity_provider]]; log in with --user and --password")
        }
        None => bail!(
            "the server has several identity providers; choose one with --provider ({})",
            names.join(", ")
        ),
    }
}

/// `jitgate login --sso`: returns the line to print.
pub async fn login(c: &Client, name: Option<&str>, open_browser: bool) -> anyhow::Result<String> {
    let name = provider(c, name).await?;
    let path = format!("/api/v1/login/oidc/{name}/device");
    let answer = match c.call("POST", &path, None).await {
        Ok(started) => device(c, &name, &started).await?,
        Err(e) if e.to_string().contains("no device authorization") => {
            loopback(c, &name, open_browser).await?
        }
        Err(e) => return Err(e),
    };
    let token = answer["token"]
        .as_str()
        .ok_or_else(|| anyhow!("no token in the answer"))?;
    let saved = c.save(token)?;
    Ok(format!(
        "signed in to {} through {name} as {} until {}; token saved in {}",
        c.server(),
        answer["user"].as_str().unwrap_or("?"),
        answer["expires_at"].as_str().unwrap_or("?"),
        saved.display()
    ))
}

async fn device(c: &Client, name: &str, started: &Value) -> anyhow::Result<Value> {
    let code = started["user_code"].as_str().unwrap_or("?");
    let uri = started["verification_uri"].as_str().unwrap_or("?");
    match started["verification_uri_complete"].as_str() {
        Some(full) => {
            eprintln!("To sign in, open {full}\n(or open {uri} and enter the code {code})")
        }
        None => eprintln!("To sign in, open {uri} and enter the code {code}"),
    }
    let handle = started["handle"]
        .as_str()
        .ok_or_else(|| anyhow!("no handle in the answer"))?;
    let mut interval = started["interval"].as_u64().unwrap_or(5);
    let path = format!("/api/v1/login/oidc/{name}/device/token");
    loop {
        tokio::time::sleep(Duration::from_secs(interval)).await;
        let answer = c
            .call("POST", &path, Some(json!({"handle": handle})))
            .await?;
        if answer["status"] == "done" {
            return Ok(answer);
        }
        interval = answer["interval"].as_u64().unwrap_or(interval);
    }
}

async fn loopback(c: &Client, name: &str, open_browser: bool) -> anyhow::Result<Value> {
    let verifier =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
    let challenge = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(Sha256::digest(verifier.as_bytes()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let url = format!(
        "{}/ui/login/oidc/{name}?cli_port={port}&cli_challenge={challenge}",
        c.server()
    );
    eprintln!("To sign in, open {url}");
    if open_browser {
        let _ = std::process::Command::new("xdg-open")
            .arg(&url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(1);
    #[derive(serde::Deserialize)]
    struct Back {
        code: String,
    }
    let app = axum::Router::new().route(
        "/callback",
        axum::routing::get(move |axum::extract::Query(b): axum::extract::Query<Back>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(b.code).await;
                "Signed in to jitgate. You can close this tab."
            }
        }),
    );
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let code = tokio::time::timeout(Duration::from_secs(600), rx.recv())
        .await
        .map_err(|_| anyhow!("no sign-in within 10 minutes"))?
        .ok_or_else(|| anyhow!("the loopback listener stopped"))?;
    server.abort();
    c.call(
        "POST",
        "/api/v1/login/oidc/loopback",
        Some(json!({"code": code, "verifier": verifier})),
    )
    .await
}

/// Where libpq looks for passwords: `PGPASSFILE`, else `~/.pgpass`.
fn pgpass_path() -> anyhow::Result<PathBuf> {
    if let Some(p) = std::env::var_os("PGPASSFILE") {
        return Ok(PathBuf::from(p));
    }
    let home = std::env::var_os("HOME")
        .ok_or_else(|| anyhow!("no HOME for ~/.pgpass (set PGPASSFILE)"))?;
    Ok(PathBuf::from(home).join(".pgpass"))
}

/// A pgpass field: `:` and `\` escaped.
fn pgpass_field(s: &str) -> String {
    s.replace('\\', "\\\\").replace(':', "\\:")
}

/// Writes `host:port:*:user:secret` (or, without a secret, nothing),
/// replacing this gateway's earlier entry for the user; other lines are kept.
/// The file stays 0600 (libpq ignores it otherwise).
fn write_pgpass(
    path: &PathBuf,
    host: &str,
    port: u16,
    user: &str,
    secret: Option<&str>,
) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let prefix = format!("{}:{port}:*:{}:", pgpass_field(host), pgpass_field(user));
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let mut lines: Vec<String> = old
        .lines()
        .filter(|l| !l.starts_with(&prefix))
        .map(str::to_string)
        .collect();
    if let Some(secret) = secret {
        lines.insert(0, format!("{prefix}{}", pgpass_field(secret)));
    }
    let tmp = path.with_extension("jitgate-tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::io::Write::write_all(&mut f, (lines.join("\n") + "\n").as_bytes())?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// What `db-login` set up: the libpq connection string (no secret in it).
pub struct DbLogin {
    pub conninfo: String,
    pub report: String,
}

pub async fn db_login(c: &Client, db: &str) -> anyhow::Result<DbLogin> {
    let answer = c.call("POST", "/api/v1/connection-secret", None).await?;
    let known = answer["databases"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|d| d == db);
    if !known {
        return Err(Refused(format!("the gateway has no database `{db}`")).into());
    }
    let (user, secret, host) = (
        answer["user"].as_str().unwrap_or_default(),
        answer["secret"].as_str().unwrap_or_default(),
        answer["host"].as_str().unwrap_or("127.0.0.1"),
    );
    let port = answer["port"].as_u64().unwrap_or(5432) as u16;
    let path = pgpass_path()?;
    write_pgpass(&path, host, port, user, Some(secret))?;
    let conninfo = format!("host={host} port={port} dbname={db} user={user}");
    let report = format!(
        "connection secret for {user} until {} written to {}\n\
         connect with:  psql \"postgresql://{user}@{host}:{port}/{db}\"\n\
         or add to ~/.pg_service.conf:\n[jitgate-{db}]\nhost={host}\nport={port}\ndbname={db}\nuser={user}",
        answer["expires_at"].as_str().unwrap_or("?"),
        path.display(),
    );
    Ok(DbLogin { conninfo, report })
}

/// `jitgate db-login --revoke`: the secret stops working at the gateway, and
/// its pgpass entry goes.
pub async fn revoke(c: &Client) -> anyhow::Result<String> {
    let me = c.call("DELETE", "/api/v1/connection-secret", None).await?;
    let (host, port, user) = (
        me["host"].as_str().unwrap_or_default(),
        me["port"].as_u64().unwrap_or(5432) as u16,
        me["user"].as_str().unwrap_or_default(),
    );
    let path = pgpass_path()?;
    write_pgpass(&path, host, port, user, None)?;
    Ok(format!(
        "connection secret of {user} revoked; its entry removed from {}",
        path.display()
    ))
}

/// `jitgate psql`: a fresh connection secret, then psql with `args`; returns
/// psql's exit code.
pub async fn psql(c: &Client, db: &str, args: &[String]) -> anyhow::Result<i32> {
    let login = db_login(c, db).await?;
    let status = tokio::process::Command::new("psql")
        .arg(&login.conninfo)
        .args(args)
        .status()
        .await
        .context("running psql (is it installed?)")?;
    Ok(status.code().unwrap_or(1))
}
