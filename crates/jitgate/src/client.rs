//! The client commands: they talk to a running gateway's HTTP API.
//!
//! Credentials: `--user`/`--password` (or `JITGATE_USER`/`JITGATE_PASSWORD`)
//! log in for this one command; otherwise the token saved by `jitgate login`
//! (in `$XDG_CONFIG_HOME/jitgate/tokens.json`, readable by the owner only) is
//! used. Exit codes: 0 ok, 1 refused or failed.

use anyhow::{anyhow, bail, Context};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::path::PathBuf;

pub struct Client {
    server: String,
    http: reqwest::Client,
    token: Option<String>,
    /// Logged in with --user/--password for this one command.
    one_shot: bool,
}

/// An API refusal: the message is the API's, the exit code 1.
#[derive(Debug)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

fn tokens_path() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))?;
    Some(base.join("jitgate").join("tokens.json"))
}

fn saved_tokens() -> BTreeMap<String, String> {
    tokens_path()
        .and_then(|p| std::fs::read_to_string(p).ok())
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}

/// Saves `token` as `server`'s, or forgets `server`'s (None).
fn save_token(server: &str, token: Option<&str>) -> anyhow::Result<PathBuf> {
    use std::os::unix::fs::OpenOptionsExt;
    let path =
        tokens_path().ok_or_else(|| anyhow!("no HOME or XDG_CONFIG_HOME to save the token in"))?;
    std::fs::create_dir_all(path.parent().unwrap())?;
    let mut all = saved_tokens();
    match token {
        Some(t) => all.insert(server.to_string(), t.to_string()),
        None => all.remove(server),
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("saving the token in {}", path.display()))?;
    std::io::Write::write_all(&mut f, serde_json::to_string_pretty(&all)?.as_bytes())?;
    Ok(path)
}

impl Client {
    /// A client for `server`, logged in with the given credentials or the saved token.
    pub async fn connect(
        server: &str,
        user: Option<&str>,
        password: Option<&str>,
    ) -> anyhow::Result<Client> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut c = Client {
            server: server.trim_end_matches('/').to_string(),
            http: reqwest::Client::builder()
                .timeout(std::time::Duration::from_secs(30))
                .build()?,
            token: None,
            one_shot: user.is_some(),
        };
        c.token = match (user, password) {
            (Some(u), Some(p)) => Some(c.login(u, p).await?.0),
            (Some(_), None) | (None, Some(_)) => bail!(
                "give both --user and --password (or neither, to use `jitgate login`'s token)"
            ),
            (None, None) => saved_tokens().get(&c.server).cloned(),
        };
        Ok(c)
    }

    pub fn server(&self) -> &str {
        &self.server
    }

    /// Saves `token` as this server's (`jitgate login`).
    pub fn save(&self, token: &str) -> anyhow::Result<PathBuf> {
        save_token(&self.server, Some(token))
    }

    /// `jitgate logout`: the saved token is revoked and forgotten.
    pub async fn logout_and_forget(&self) -> anyhow::Result<String> {
        if self.token.is_none() {
            return Ok(format!("not logged in to {}", self.server));
        }
        // Forgotten even if the server says it was already revoked.
        let revoked = self.call("POST", "/api/v1/logout", None).await;
        let path = save_token(&self.server, None)?;
        revoked?;
        Ok(format!(
            "logged out of {}; token revoked and removed from {}",
            self.server,
            path.display()
        ))
    }

    /// Ends a one-command login, so `--user`/`--password` calls leave no live token.
    pub async fn finish(self) {
        if self.one_shot {
            let _ = self.call("POST", "/api/v1/logout", None).await;
        }
    }

    async fn login(&self, user: &str, password: &str) -> anyhow::Result<(String, Value)> {
        let body = self
            .call(
                "POST",
                "/api/v1/login",
                Some(json!({"user": user, "password": password})),
            )
            .await?;
        let token = body["token"]
            .as_str()
            .ok_or_else(|| anyhow!("no token in the login answer"))?
            .to_string();
        Ok((token, body))
    }

    /// `jitgate login`: logs in and saves the token for this server.
    pub async fn login_and_save(&self, user: &str, password: &str) -> anyhow::Result<String> {
        let (token, body) = self.login(user, password).await?;
        let path = save_token(&self.server, Some(&token))?;
        Ok(format!(
            "logged in to {} as {user} until {}; token saved in {}",
            self.server,
            body["expires_at"].as_str().unwrap_or("?"),
            path.display()
        ))
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let url = format!("{}{path}", self.server);
        let mut req = self.http.request(method.parse()?, &url);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| {
            format!(
                "cannot reach {} (is `jitgate serve` running? --server / JITGATE_SERVER)",
                self.server
            )
        })?;
        let status = resp.status();
        let text = resp.text().await?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status.is_success() {
            return Ok(value);
        }
        let message = value["error"]["message"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| value.to_string());
        let hint = if status == reqwest::StatusCode::UNAUTHORIZED && path != "/api/v1/login" {
            " (run `jitgate login`, or pass --user and --password)"
        } else {
            ""
        };
        Err(Refused(format!("{message}{hint}")).into())
    }
}
