//! The `jitgate` binary: command line, configuration loading and wiring.
//!
//! - `serve --config F`: the gateway (Postgres wire) and the HTTP API.
//! - `demo`: a throwaway PostgreSQL, sample data, users, and `serve` in front.
//! - `policy check --config F`: validate a configuration file.
//! - client commands (`login`, `request`, `requests`, `approve`, `deny`,
//!   `cancel`, `grants`, `revoke`, `relinquish`, `audit verify|export`): talk to
//!   a running gateway's HTTP API (see `client.rs`).
//!
//! Exit codes: 0 ok, 1 refused or failed, 2 usage or configuration error.
#![forbid(unsafe_code)]

mod adopt;
mod client;
mod commands;
mod demo;
mod doctor;
mod inspect;
mod sso;

use anyhow::Context;
use clap::{Parser, Subcommand};
use config::{Config, LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use store::Kind;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "jitgate",
    version,
    about = "Just-in-time privileged access for PostgreSQL"
)]
struct Cli {
    /// HTTP API of a running gateway (client commands).
    #[arg(
        long,
        global = true,
        env = "JITGATE_SERVER",
        default_value = "http://127.0.0.1:8080"
    )]
    server: String,
    /// Log in as this user for this command (else the token saved by `jitgate login`).
    #[arg(long, global = true, env = "JITGATE_USER")]
    user: Option<String>,
    /// Password for --user (prefer JITGATE_PASSWORD: arguments show in `ps`).
    #[arg(long, global = true, env = "JITGATE_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway and its HTTP API.
    Serve {
        #[arg(long, short, env = "JITGATE_CONFIG")]
        config: PathBuf,
    },
    /// Move the login roles' passwords to a new epoch. The enforcing replica
    /// sets them within `reconcile_interval`; every replica follows.
    RotateCredentials {
        #[arg(long, short, env = "JITGATE_CONFIG")]
        config: PathBuf,
    },
    /// Adopt an existing PostgreSQL: read its roles and privileges, write a
    /// starter configuration (--out) and the adoption plan beside it
    /// (<out>.plan.json), print the plan; run it with --apply (one
    /// transaction). --undo --plan F restores the catalog.
    Init {
        /// A superuser (or a role that may read the catalog and grant roles).
        #[arg(long, env = "JITGATE_ADMIN_URL", hide_env_values = true)]
        admin_url: String,
        /// Databases to read (default: the admin URL's).
        #[arg(long = "db")]
        databases: Vec<String>,
        #[arg(long, default_value = "jitgate.toml")]
        out: PathBuf,
        /// Replace --out and its plan if they exist.
        #[arg(long)]
        force: bool,
        /// Run the plan (one transaction): the one in --plan as written
        /// (after review), or else a new one after writing it.
        #[arg(long)]
        apply: bool,
        /// Undo an applied plan (--plan): restore the memberships, drop the
        /// admin role it created and the gateway's login roles.
        #[arg(long, requires = "plan", conflicts_with_all = ["apply", "force", "databases"])]
        undo: bool,
        #[arg(long)]
        plan: Option<PathBuf>,
        /// The gateway's admin role (created by the plan if missing).
        #[arg(long, default_value = "jitgate_admin")]
        admin_role: String,
        #[arg(long, default_value = "jit_")]
        login_role_prefix: String,
        /// A login role that is a person even if it owns objects.
        #[arg(long = "human")]
        humans: Vec<String>,
        /// A login role that is an application's account: left alone.
        #[arg(long = "service")]
        services: Vec<String>,
    },
    /// Check a deployment end to end and say what to fix, one line each:
    /// admin rights, unbacked rules, pg_hba, standing keyholders, clock
    /// skew, state store durability. Exit 1 if something must be fixed.
    Doctor {
        #[arg(long, short, env = "JITGATE_CONFIG")]
        config: PathBuf,
    },
    /// Start a throwaway PostgreSQL with sample data and the gateway in front of it.
    Demo {
        /// Wire listener for the demo gateway.
        #[arg(long, default_value = "127.0.0.1:6432")]
        listen: String,
        /// HTTP API listener for the demo gateway.
        #[arg(long, default_value = "127.0.0.1:8080")]
        api_listen: String,
    },
    /// What a statement does, and the role and approvals it would need.
    Explain {
        #[arg(long, short, env = "JITGATE_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        db: String,
        sql: String,
        #[arg(long)]
        json: bool,
    },
    /// Every login with standing privileged access (the permanent keyholders).
    Scan {
        #[arg(long, short, env = "JITGATE_CONFIG")]
        config: PathBuf,
        #[arg(long)]
        db: String,
        #[arg(long)]
        json: bool,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Log in (--user, --password, or --sso) and save the token for later commands.
    Login {
        /// Sign in through the gateway's identity provider: the device flow
        /// (open the printed address, enter the code), or the browser.
        #[arg(long)]
        sso: bool,
        /// Which `[[identity_provider]]` (when the gateway has several).
        #[arg(long, requires = "sso")]
        provider: Option<String>,
        /// Print the address only (loopback sign-in), do not open a browser.
        #[arg(long, requires = "sso")]
        no_browser: bool,
    },
    /// Revoke the saved token (and the connection secret issued under it).
    Logout,
    /// A connection secret for database clients (after `login --sso`): written
    /// to ~/.pgpass (or PGPASSFILE), with a connection string to use.
    DbLogin {
        #[arg(long)]
        db: String,
        /// Revoke your connection secret instead (and drop its pgpass entry).
        #[arg(long)]
        revoke: bool,
    },
    /// `db-login`, then psql through the gateway; arguments after `--` go to psql.
    Psql {
        #[arg(long)]
        db: String,
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Ask for a role; prints the request id on its own line.
    Request {
        role: String,
        #[arg(long)]
        db: String,
        /// How long, e.g. 30m (the role's default when absent).
        #[arg(long = "for")]
        duration: Option<String>,
        #[arg(long, default_value = "")]
        reason: String,
        /// Ask for one statement instead of the role for a time.
        #[arg(long)]
        statement: Option<String>,
    },
    /// Requests you filed or can decide.
    Requests {
        #[arg(long)]
        state: Option<String>,
        /// Only your own.
        #[arg(long)]
        mine: bool,
        #[arg(long)]
        json: bool,
    },
    /// Approve the current stage of a request.
    Approve {
        id: i64,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Deny a request (ends it).
    Deny {
        id: i64,
        #[arg(long)]
        reason: String,
    },
    /// Withdraw your pending request.
    Cancel { id: i64 },
    /// Grants you hold or can revoke.
    Grants {
        /// Only active grants.
        #[arg(long)]
        active: bool,
        #[arg(long)]
        json: bool,
    },
    /// End someone's grant (approvers of the role, admins).
    Revoke {
        grant_id: i64,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Give up your own grant early.
    Relinquish { grant_id: i64 },
    /// The audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Load and validate a configuration file; print a summary.
    Check {
        #[arg(long, short, env = "JITGATE_CONFIG")]
        config: PathBuf,
        /// Also compare each rule with the databases (admin_url): name the
        /// rules the database does not back, with the REVOKEs that would
        /// back them; exit 1 if any.
        #[arg(long)]
        live: bool,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Verify the hash chain; exit 1 naming the first bad event. With
    /// --checkpoint, also that the log still holds the signed head (a cut
    /// tail or a rewritten chain fails).
    Verify {
        /// A signed checkpoint: its JSON, or a file holding it (or holding
        /// the `audit.checkpoint` event a webhook delivered).
        #[arg(long)]
        checkpoint: Option<String>,
        /// The key you trust (base64, printed by `audit keygen`); without it
        /// the checkpoint's own key is used and printed.
        #[arg(long)]
        public_key: Option<String>,
    },
    /// Write a new audit signing key to FILE (for `[gateway] audit_key_file`);
    /// print its public key.
    Keygen {
        #[arg(long)]
        out: PathBuf,
    },
    /// All events as JSON lines (for a SIEM).
    Export,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            let text = std::fs::read_to_string(&config).unwrap_or_default();
            init_logging(cfg.gateway.log_format);
            run_with(cfg.gateway.worker_threads, async move {
                serve(cfg, &text, shutdown_signal()).await
            })
        }
        Command::Audit {
            command: AuditCommand::Keygen { out },
        } => match commands::audit_keygen(&out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("jitgate: {e:#}");
                ExitCode::from(1)
            }
        },
        Command::RotateCredentials { config } => match load(&config) {
            Ok(cfg) => run(async move { commands::rotate_credentials(&cfg).await }),
            Err(code) => code,
        },
        Command::Init {
            admin_url,
            databases,
            out,
            force,
            apply,
            undo,
            plan,
            admin_role,
            login_role_prefix,
            humans,
            services,
        } => {
            if undo {
                let plan = plan.expect("clap requires --plan with --undo");
                return run(async move { adopt::undo(&admin_url, &plan).await });
            }
            if let (true, Some(plan)) = (apply, plan) {
                return run(async move { adopt::apply(&admin_url, &plan).await });
            }
            run(adopt::init(adopt::InitArgs {
                admin_url,
                databases,
                out,
                force,
                apply,
                admin_role,
                login_role_prefix,
                humans,
                services,
            }))
        }
        Command::Doctor { config } => match load(&config) {
            Ok(cfg) => run(async move { doctor::run(&cfg).await }),
            Err(code) => code,
        },
        Command::Demo { listen, api_listen } => {
            init_logging(LogFormat::Plain);
            run(demo::run(listen, api_listen))
        }
        Command::Explain {
            config,
            db,
            sql,
            json,
        } => match load(&config) {
            Ok(cfg) => run(async move { inspect::explain(&cfg, &db, &sql, json) }),
            Err(code) => code,
        },
        Command::Scan { config, db, json } => match load(&config) {
            Ok(cfg) => run(async move { inspect::scan(&cfg, &db, json).await }),
            Err(code) => code,
        },
        Command::Policy {
            command: PolicyCommand::Check { config, live },
        } => match load(&config) {
            Ok(cfg) if live => run(async move { inspect::backing(&cfg).await }),
            Ok(cfg) => {
                println!(
                    "{}: ok ({} databases, {} users, {} groups, {} roles, {} rules)",
                    config.display(),
                    cfg.databases.len(),
                    cfg.users.len(),
                    cfg.groups.len(),
                    cfg.roles.len(),
                    cfg.rules.len()
                );
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        command => {
            let (server, user, password) = (cli.server, cli.user, cli.password);
            run(async move {
                client_command(command, &server, user.as_deref(), password.as_deref()).await
            })
        }
    }
}

async fn client_command(
    command: Command,
    server: &str,
    user: Option<&str>,
    password: Option<&str>,
) -> anyhow::Result<()> {
    if let Command::Login {
        sso: true,
        provider,
        no_browser,
    } = &command
    {
        let c = client::Client::connect(server, None, None).await?;
        eprintln!(
            "{}",
            sso::login(&c, provider.as_deref(), !no_browser).await?
        );
        return Ok(());
    }
    if let Command::Login { .. } = command {
        let (Some(u), Some(p)) = (user, password) else {
            anyhow::bail!(
                "jitgate login needs --user and --password (or JITGATE_USER and JITGATE_PASSWORD), or --sso to sign in through the identity provider"
            );
        };
        let c = client::Client::connect(server, None, None).await?;
        eprintln!("{}", c.login_and_save(u, p).await?);
        return Ok(());
    }
    let c = client::Client::connect(server, user, password).await?;
    let result = match command {
        Command::Request {
            role,
            db,
            duration,
            reason,
            statement,
        } => {
            commands::request(
                &c,
                &role,
                &db,
                duration.as_deref(),
                &reason,
                statement.as_deref(),
            )
            .await
        }
        Command::Requests { state, mine, json } => {
            commands::requests(&c, state.as_deref(), mine, json).await
        }
        Command::Approve { id, comment } => commands::decide(&c, id, true, &comment).await,
        Command::Deny { id, reason } => commands::decide(&c, id, false, &reason).await,
        Command::Cancel { id } => commands::cancel(&c, id).await,
        Command::Grants { active, json } => commands::grants(&c, active, json).await,
        Command::Revoke { grant_id, reason } => {
            commands::end_grant(&c, grant_id, true, &reason).await
        }
        Command::Relinquish { grant_id } => commands::end_grant(&c, grant_id, false, "").await,
        Command::Audit {
            command:
                AuditCommand::Verify {
                    checkpoint,
                    public_key,
                },
        } => commands::audit_verify(&c, checkpoint.as_deref(), public_key.as_deref()).await,
        Command::Audit {
            command: AuditCommand::Export,
        } => commands::audit_export(&c).await,
        Command::Logout => c.logout_and_forget().await.map(|r| eprintln!("{r}")),
        Command::DbLogin {
            db: _,
            revoke: true,
        } => sso::revoke(&c).await.map(|r| eprintln!("{r}")),
        Command::DbLogin { db, revoke: false } => sso::db_login(&c, &db)
            .await
            .map(|l| eprintln!("{}", l.report)),
        Command::Psql { db, args } => {
            let code = sso::psql(&c, &db, &args).await?;
            c.finish().await;
            std::process::exit(code);
        }
        Command::Serve { .. }
        | Command::RotateCredentials { .. }
        | Command::Audit {
            command: AuditCommand::Keygen { .. },
        }
        | Command::Demo { .. }
        | Command::Init { .. }
        | Command::Doctor { .. }
        | Command::Policy { .. }
        | Command::Explain { .. }
        | Command::Scan { .. }
        | Command::Login { .. } => {
            unreachable!("handled in main")
        }
    };
    c.finish().await;
    result
}

/// Loads the file and checks that the access policy it describes can work
/// (e.g. every approval chain can complete).
fn load(path: &std::path::Path) -> Result<Config, ExitCode> {
    let fail = |e: &dyn std::fmt::Display| {
        eprintln!("jitgate: configuration error: {e}");
        ExitCode::from(2)
    };
    let cfg = Config::load(path).map_err(|e| fail(&e))?;
    policy::Policy::from_config(&cfg).map_err(|e| fail(&e))?;
    Ok(cfg)
}

fn run(work: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    run_with(0, work)
}

/// `threads`: 0 = one worker per core, 1 = a single-threaded runtime.
fn run_with(
    threads: usize,
    work: impl std::future::Future<Output = anyhow::Result<()>>,
) -> ExitCode {
    let rt = match threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build(),
        0 => tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build(),
        n => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(n)
            .enable_all()
            .build(),
    }
    .expect("tokio runtime");
    match rt.block_on(work) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("jitgate: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("JITGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Plain => builder.init(),
    }
}

/// The gateway and the HTTP API, until `stop`; both stop together.
/// `config_text` is the file as read (its hash goes into the audit log).
pub(crate) async fn serve(
    cfg: Config,
    config_text: &str,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let config = Arc::new(cfg);
    let policy = Arc::new(policy::Policy::from_config(&config)?);
    let store = store::open(&config.gateway.state)
        .await
        .with_context(|| format!("opening the state store {}", config.gateway.state))?;
    let api_listener = tokio::net::TcpListener::bind(&config.gateway.api_listen)
        .await
        .with_context(|| {
            format!(
                "cannot listen on {} (api_listen)",
                config.gateway.api_listen
            )
        })?;
    audit_policy(&*store, &config, config_text).await?;
    let clock: Arc<dyn policy::Clock> = Arc::new(policy::clock::SystemClock);
    // People from identity providers, as of their last sign-in.
    for (user, person) in store::people::identities(&*store, clock.now()).await? {
        policy.vouch(&user, person);
    }
    let state = api::AppState::new(config.clone(), policy.clone(), store.clone(), clock.clone());
    let cluster = join_cluster(&config, state.changed.clone()).await?;
    let _ = state.cluster.set(cluster.clone());
    let runtime = enforcer::Runtime::start(
        config.clone(),
        policy,
        store,
        clock,
        state.changed.clone(),
        cluster.clone(),
    )
    .await?;
    tracing::info!(listen = %runtime.gateway.local_addr(), api = %api_listener.local_addr()?, "jitgate serving");
    let _ = state.inspector.set(Arc::new(inspect::DbInspector(
        config.clone(),
        state.store.clone(),
    )));
    let webhooks = api::webhooks::start(
        state.store.clone(),
        config.webhooks.clone(),
        config.gateway.public_url(),
        state.changed.clone(),
        cluster.leadership(),
    )
    .await;
    let stopping = CancellationToken::new();
    let api_stop = stopping.clone();
    let draining = state.draining.clone();
    let api = tokio::spawn(api::serve(api_listener, state, async move {
        api_stop.cancelled().await
    }));
    let signal = stopping.clone();
    let drain_delay = config.gateway.drain_delay;
    runtime
        .run(async move {
            stop.await;
            // Health checks fail first; the listener closes after the delay.
            draining.cancel();
            if let Some(d) = drain_delay {
                tracing::info!(delay = ?d, "draining: /healthz fails; still accepting");
                tokio::time::sleep(d).await;
            }
            signal.cancel();
        })
        .await;
    stopping.cancel();
    api.await?.context("HTTP API")?;
    for w in webhooks {
        w.abort();
    }
    tracing::info!("jitgate stopped");
    Ok(())
}

/// This replica among those sharing a PostgreSQL state store; alone with SQLite.
async fn join_cluster(
    config: &Config,
    changes: Arc<store::Changes>,
) -> anyhow::Result<Arc<store::Cluster>> {
    let g = &config.gateway;
    if !config::shared_state(&g.state) {
        return Ok(store::Cluster::alone());
    }
    let address = match &g.advertise {
        Some(a) => a.clone(),
        None => {
            let listen: std::net::SocketAddr = g.listen.parse().with_context(|| {
                format!("[gateway] listen = {:?}: set [gateway] advertise to the host:port other replicas reach it at", g.listen)
            })?;
            anyhow::ensure!(
                !listen.ip().is_unspecified(),
                "[gateway] listen = {:?} is every address: set [gateway] advertise to the host:port \
                 other replicas reach this one at (cancel requests are forwarded there)",
                g.listen
            );
            g.listen.clone()
        }
    };
    store::Cluster::join(&g.state, &address, changes)
        .await
        .context("joining the replicas of the state store")
}

/// Records the policy in force at start: `policy.loaded`, or `policy.changed`
/// when the configuration differs from the last start. The file itself holds
/// passwords, so only its SHA-256 and a summary are recorded.
async fn audit_policy(store: &dyn store::Store, config: &Config, text: &str) -> anyhow::Result<()> {
    use sha2::{Digest, Sha256};
    let digest: String = Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let last = store
        .audit(&store::AuditFilter {
            kind_prefix: Some("policy.".into()),
            limit: Some(1),
            ..Default::default()
        })
        .await?;
    let previous = last
        .first()
        .and_then(|r| r.event.detail["config_sha256"].as_str().map(str::to_string));
    let kind = match &previous {
        Some(p) if *p != digest => Kind::PolicyChanged,
        _ => Kind::PolicyLoaded,
    };
    let detail = serde_json::json!({
        "config_sha256": digest,
        "previous_sha256": previous,
        "databases": config.databases.iter().map(|d| &d.name).collect::<Vec<_>>(),
        "users": config.users.iter().map(|u| &u.name).collect::<Vec<_>>(),
        "roles": config.roles.iter().map(|r| &r.name).collect::<Vec<_>>(),
        "rules": config.rules.len(),
    });
    let now = chrono::Utc::now();
    store
        .append_audit(vec![store::AuditEvent::new(
            now,
            kind,
            "jitgate",
            "policy".into(),
            detail,
        )])
        .await?;
    Ok(())
}

/// SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupt received"),
    }
}
