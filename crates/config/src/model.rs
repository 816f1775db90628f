//! The typed configuration. Field names are the public contract (DESIGN.md); add
//! fields with defaults, never rename.

use crate::scram::ScramVerifier;
use serde::{Deserialize, Deserializer};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub gateway: Gateway,
    #[serde(default, rename = "database")]
    pub databases: Vec<Database>,
    #[serde(default, rename = "group")]
    pub groups: Vec<Group>,
    #[serde(default, rename = "user")]
    pub users: Vec<User>,
    #[serde(default, rename = "role")]
    pub roles: Vec<Role>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<Rule>,
    #[serde(default, rename = "webhook")]
    pub webhooks: Vec<Webhook>,
    #[serde(default, rename = "identity_provider")]
    pub identity_providers: Vec<IdentityProvider>,
}

impl Config {
    pub fn database(&self, name: &str) -> Option<&Database> {
        self.databases.iter().find(|d| d.name == name)
    }

    pub fn user(&self, name: &str) -> Option<&User> {
        self.users.iter().find(|u| u.name == name)
    }

    pub fn identity_provider(&self, name: &str) -> Option<&IdentityProvider> {
        self.identity_providers.iter().find(|p| p.name == name)
    }
}

/// `[gateway]`: listeners, modes and limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// Postgres wire listener.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// HTTP API and web UI.
    #[serde(default = "default_api_listen")]
    pub api_listen: String,
    /// State store URL.
    #[serde(default = "default_state")]
    pub state: String,
    #[serde(default)]
    pub on_missing_grant: OnMissingGrant,
    #[serde(default = "d_5m", deserialize_with = "duration")]
    pub hold_timeout: Duration,
    #[serde(default)]
    pub on_expiry: OnExpiry,
    /// Sessions using a grant get a warning this long before it ends.
    #[serde(default = "d_1m", deserialize_with = "duration")]
    pub expiry_warning: Duration,
    /// An approved statement (approve_each) must run within this time.
    #[serde(default = "d_5m", deserialize_with = "duration")]
    pub statement_window: Duration,
    /// How often role memberships in the databases are checked against grants.
    #[serde(default = "d_5s", deserialize_with = "duration")]
    pub reconcile_interval: Duration,
    /// Replace literals by `$n` in statement texts written to the audit log.
    #[serde(default)]
    pub redact_literals: bool,
    /// An ed25519 key (base64 seed, from `jitgate audit keygen`) kept outside
    /// the state store: the audit chain's head is signed with it periodically.
    pub audit_key_file: Option<PathBuf>,
    /// How often a signed checkpoint of the audit chain is made.
    #[serde(default = "d_1m", deserialize_with = "duration")]
    pub audit_checkpoint_interval: Duration,
    /// Base URL for links in messages (default `http://<api_listen>`).
    pub public_url: Option<String>,
    /// Privileged use outside these hours (UTC, `"08:00-18:00"`) is an alert.
    pub working_hours: Option<String>,
    /// The days `working_hours` apply to; other days are outside them.
    #[serde(default = "default_working_days")]
    pub working_days: Vec<String>,
    /// This many refused statements by one user within `refusal_alert_window`
    /// raise one alert (0: never).
    #[serde(default = "default_refusal_alert")]
    pub refusal_alert: usize,
    #[serde(default = "d_1m", deserialize_with = "duration")]
    pub refusal_alert_window: Duration,
    /// PEM certificate chain and key for client TLS. Both or neither.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Refuse clients that do not ask for TLS.
    #[serde(default)]
    pub require_tls: bool,
    /// Login roles are named `<prefix><user>`.
    #[serde(default = "default_prefix")]
    pub login_role_prefix: String,
    /// Largest Query, Parse or FunctionCall a client may send (they are buffered
    /// whole so the statement hook can read them).
    #[serde(default = "default_max_query_bytes")]
    pub max_query_bytes: usize,
    /// Largest declared length of any other client message (streamed, not buffered).
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Time allowed for the whole startup: TLS, authentication, upstream connect.
    #[serde(default = "d_15s", deserialize_with = "duration")]
    pub startup_timeout: Duration,
    /// A client that stops sending in the middle of a message is dropped after this.
    #[serde(default = "d_30s", deserialize_with = "duration")]
    pub message_timeout: Duration,
    #[serde(default = "d_10s", deserialize_with = "duration")]
    pub upstream_connect_timeout: Duration,
    /// Idle pooled upstream connections are closed after this.
    #[serde(default = "d_5m", deserialize_with = "duration")]
    pub pool_idle_timeout: Duration,
    /// Idle upstream connections kept per (database, login role, startup parameters).
    #[serde(default = "default_pool_max_idle")]
    pub pool_max_idle: usize,
    /// On SIGTERM, sessions get this long to finish before they are closed.
    #[serde(default = "d_30s", deserialize_with = "duration")]
    pub shutdown_timeout: Duration,
    /// On SIGTERM, `/healthz` fails for this long before the listener closes,
    /// so a load balancer stops sending new sessions first (none: close at once).
    #[serde(default, deserialize_with = "opt_duration")]
    pub drain_delay: Option<Duration>,
    /// A file holding the secret replicas derive login-role passwords from
    /// (the environment variable `JITGATE_CLUSTER_SECRET` overrides it).
    /// Required with a `postgres://` state store.
    pub cluster_secret_file: Option<PathBuf>,
    /// Login-role passwords move to a new epoch this often (and on
    /// `jitgate rotate-credentials`).
    #[serde(default = "d_1d", deserialize_with = "duration")]
    pub credential_rotation: Duration,
    /// `host:port` at which the other replicas reach this one's `listen`
    /// (cancel requests are forwarded there). Default: `listen`.
    pub advertise: Option<String>,
    #[serde(default)]
    pub log_format: LogFormat,
    /// Runtime threads. 1 (the default): one event loop, like pgbouncer; on a
    /// machine shared with the database this is fastest (see docs/PERFORMANCE.md).
    /// 0: one per core, for a dedicated gateway host with many clients.
    #[serde(default = "one_usize")]
    pub worker_threads: usize,
    /// Whether `[[user]]` passwords are accepted (web UI, API and the wire).
    /// `false` with an identity provider: people sign in only through it
    /// (turn it back on for break-glass local accounts).
    #[serde(default = "yes")]
    pub password_login: bool,
    /// A connection secret (`jitgate db-login`) works this long at most, and
    /// never beyond the sign-in it was issued under.
    #[serde(default = "d_8h", deserialize_with = "duration")]
    pub connection_secret_ttl: Duration,
}

fn default_working_days() -> Vec<String> {
    ["mon", "tue", "wed", "thu", "fri"]
        .map(String::from)
        .to_vec()
}

fn default_refusal_alert() -> usize {
    5
}

/// Parses `"HH:MM-HH:MM"` into minutes after midnight (start, end).
pub fn parse_hours(s: &str) -> Option<(u32, u32)> {
    let minutes = |t: &str| -> Option<u32> {
        let (h, m) = t.trim().split_once(':')?;
        let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
        (h < 24 && m < 60).then_some(h * 60 + m)
    };
    let (a, b) = s.split_once('-')?;
    let (a, b) = (minutes(a)?, minutes(b)?);
    (a < b).then_some((a, b))
}

pub const WEEKDAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

impl Gateway {
    /// Base URL for links in messages and notifications.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None => format!("http://{}", self.api_listen),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnMissingGrant {
    #[default]
    Reject,
    Hold,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnExpiry {
    #[default]
    Cancel,
    Terminate,
    FinishStatement,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    #[default]
    Plain,
    Json,
}

/// `[[database]]`: an upstream target. Clients name it as their dbname.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    pub name: String,
    #[serde(default = "default_kind")]
    pub kind: String,
    /// Connection string of the administrative role (CREATEROLE, ADMIN on
    /// managed roles). Login roles connect to the same host, port and dbname.
    pub admin_url: String,
    #[serde(default)]
    pub baseline_roles: Vec<String>,
    /// TLS toward this database, as libpq's sslmode: disable, prefer, require, verify-full.
    #[serde(default)]
    pub tls: UpstreamTls,
    /// CA bundle (PEM) for `verify-full`; the system roots when absent.
    pub tls_ca_file: Option<PathBuf>,
    /// Whether a backend a client left cleanly serves a later client (like
    /// pgbouncer's session mode; a new connection may then see an earlier
    /// one's backend pid). `false`: every client connection gets a fresh
    /// backend, closed when the client goes.
    #[serde(default = "yes")]
    pub reuse_backends: bool,
    /// Parsed `admin_url` (filled in by validation).
    #[serde(skip)]
    pub admin: Option<tokio_postgres::Config>,
}

impl Database {
    /// The parsed admin connection settings. Present after validation.
    pub fn admin(&self) -> &tokio_postgres::Config {
        self.admin
            .as_ref()
            .expect("validated config has parsed admin_url")
    }

    /// Host and port the gateway connects to (validation guarantees a TCP host).
    pub fn upstream_addr(&self) -> (String, u16) {
        let cfg = self.admin();
        let host = match &cfg.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(h) => h.clone(),
            #[allow(unreachable_patterns)]
            _ => unreachable!("validation refuses non-TCP hosts"),
        };
        (host, cfg.get_ports().first().copied().unwrap_or(5432))
    }

    /// The database name on the server.
    pub fn upstream_dbname(&self) -> &str {
        self.admin().get_dbname().unwrap_or(&self.name)
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum UpstreamTls {
    Disable,
    #[default]
    Prefer,
    Require,
    VerifyFull,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Group {
    pub name: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    /// Plain password; turned into `scram` at load and cleared.
    #[serde(default)]
    pub password: Option<String>,
    /// Stored verifier, `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`.
    #[serde(default)]
    pub password_scram: Option<String>,
    #[serde(default)]
    pub groups: Vec<String>,
    /// The verifier used for authentication (filled in by validation).
    #[serde(skip)]
    pub scram: Option<ScramVerifier>,
}

/// `[[identity_provider]]`: an OpenID Connect provider people sign in with.
/// People it vouches for need no `[[user]]`: their name comes from
/// `username_claim`, their groups from `groups_claim` through `group_map`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentityProvider {
    /// In URLs (`/ui/login/oidc/{name}`) and on the login page.
    pub name: String,
    /// The issuer URL; `{issuer}/.well-known/openid-configuration` is read.
    pub issuer: String,
    pub client_id: String,
    /// The client secret (or `client_secret_file`).
    pub client_secret: Option<String>,
    pub client_secret_file: Option<PathBuf>,
    #[serde(default = "default_scopes")]
    pub scopes: Vec<String>,
    /// The ID token (or userinfo) claim listing the person's groups.
    #[serde(default = "default_groups_claim")]
    pub groups_claim: String,
    /// The claim naming the person: `email` (its part before `@`), or any
    /// string claim such as `preferred_username`.
    #[serde(default = "default_username_claim")]
    pub username_claim: String,
    /// `{ "idp group" = "jitgate group" }`; people in no mapped group cannot
    /// sign in.
    #[serde(default)]
    pub group_map: std::collections::BTreeMap<String, String>,
    /// Email domains accepted (empty: any); the email must be verified.
    #[serde(default)]
    pub allowed_domains: Vec<String>,
    /// A sign-in lasts at most this long; groups are read again at the next.
    #[serde(default = "d_12h", deserialize_with = "duration")]
    pub max_session_age: Duration,
}

impl IdentityProvider {
    /// The client secret, from the file when one is named.
    pub fn secret(&self) -> std::io::Result<Option<String>> {
        match &self.client_secret_file {
            Some(f) => Ok(Some(std::fs::read_to_string(f)?.trim().to_string())),
            None => Ok(self.client_secret.clone()),
        }
    }
}

fn default_scopes() -> Vec<String> {
    ["openid", "email", "profile"].map(String::from).to_vec()
}
fn default_groups_claim() -> String {
    "groups".into()
}
fn default_username_claim() -> String {
    "email".into()
}

/// `[[role]]`: a privileged database role jitgate manages.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Role {
    pub name: String,
    pub database: String,
    #[serde(default)]
    pub requesters: Vec<String>,
    #[serde(default = "d_15m", deserialize_with = "duration")]
    pub default_duration: Duration,
    #[serde(default = "d_1h", deserialize_with = "duration")]
    pub max_duration: Duration,
    /// The longest a grant of this role may live, extensions included
    /// (default: 4 × `max_duration`).
    #[serde(default, deserialize_with = "opt_duration")]
    pub max_total_duration: Option<Duration>,
    #[serde(default)]
    pub reason_required: bool,
    #[serde(default = "d_1h", deserialize_with = "duration")]
    pub request_ttl: Duration,
    #[serde(default)]
    pub chain: Vec<Stage>,
}

impl Role {
    /// `max_total_duration`, or its default: 4 × `max_duration`.
    pub fn max_total(&self) -> Duration {
        self.max_total_duration.unwrap_or(self.max_duration * 4)
    }
}

/// One stage of an approval chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stage {
    pub approvers: Vec<String>,
    #[serde(default = "one")]
    pub min: u32,
    #[serde(default, deserialize_with = "opt_duration")]
    pub escalate_after: Option<Duration>,
    #[serde(default)]
    pub escalate_to: Vec<String>,
}

/// `[[rule]]`: which role an action on objects needs.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub database: String,
    pub actions: Vec<String>,
    #[serde(default)]
    pub objects: Vec<String>,
    /// A managed role name, or `deny`.
    #[serde(default)]
    pub role: Option<String>,
    #[serde(default)]
    pub approve_each: bool,
}

/// The action kinds a rule may name (DESIGN.md "Vocabulary").
pub const ACTIONS: &[&str] = &[
    "read",
    "write",
    "ddl",
    "privilege",
    "admin",
    "session",
    "transaction",
    "call",
    "unknown",
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url: String,
    #[serde(default)]
    pub secret: Option<String>,
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default)]
    pub format: WebhookFormat,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookFormat {
    #[default]
    Json,
    Slack,
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn opt_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    duration(d).map(Some)
}

/// Parses `"15m"`, `"1h 30m"`, `"500ms"`. Refuses zero, negative and absurd
/// (over a year) durations: each is a typo, never an intent.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("`{s}` is not a duration like \"30s\", \"15m\" or \"1h\": {e}"))?;
    if d.is_zero() {
        return Err(format!("`{s}` is zero"));
    }
    if d > Duration::from_secs(366 * 24 * 3600) {
        return Err(format!("`{s}` is longer than a year"));
    }
    Ok(d)
}

fn default_listen() -> String {
    "127.0.0.1:6432".into()
}
fn default_api_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_state() -> String {
    "sqlite://jitgate.db".into()
}
fn default_prefix() -> String {
    "jit_".into()
}
fn default_kind() -> String {
    "postgres".into()
}
fn default_max_query_bytes() -> usize {
    1 << 20
}
fn default_max_message_bytes() -> usize {
    256 << 20
}
fn default_pool_max_idle() -> usize {
    64
}
fn one() -> u32 {
    1
}
fn one_usize() -> usize {
    1
}
fn d_1m() -> Duration {
    Duration::from_secs(60)
}
fn d_5s() -> Duration {
    Duration::from_secs(5)
}
fn d_10s() -> Duration {
    Duration::from_secs(10)
}
fn d_15s() -> Duration {
    Duration::from_secs(15)
}
fn d_1d() -> Duration {
    Duration::from_secs(24 * 3600)
}
fn d_30s() -> Duration {
    Duration::from_secs(30)
}
fn d_5m() -> Duration {
    Duration::from_secs(300)
}
fn d_15m() -> Duration {
    Duration::from_secs(900)
}
fn d_1h() -> Duration {
    Duration::from_secs(3600)
}
fn d_8h() -> Duration {
    Duration::from_secs(8 * 3600)
}
fn d_12h() -> Duration {
    Duration::from_secs(12 * 3600)
}

fn yes() -> bool {
    true
}
