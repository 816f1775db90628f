//! The `jitgate` binary: command line, configuration loading and wiring.
//!
//! - `serve --config F`: run the gateway.
//! - `demo`: a throwaway PostgreSQL, a sample schema, users alice/bob/carol, and
//!   the gateway in front, with the psql lines to try.
//! - `policy check --config F`: validate a configuration file.
//!
//! Exit codes: 0 ok, 1 failed, 2 usage or configuration error.
#![forbid(unsafe_code)]

mod demo;

use clap::{Parser, Subcommand};
use config::{Config, LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

#[derive(Parser)]
#[command(
    name = "jitgate",
    version,
    about = "Just-in-time privileged access for PostgreSQL"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long, short, env = "JITGATE_CONFIG")]
        config: PathBuf,
    },
    /// Start a throwaway PostgreSQL with sample data and the gateway in front of it.
    Demo {
        /// Wire listener for the demo gateway.
        #[arg(long, default_value = "127.0.0.1:6432")]
        listen: String,
    },
    /// Policy tools.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
}

#[derive(Subcommand)]
enum PolicyCommand {
    /// Load and validate a configuration file; print a summary.
    Check {
        #[arg(long, short, env = "JITGATE_CONFIG")]
        config: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => {
            let cfg = match load(&config) {
                Ok(c) => c,
                Err(code) => return code,
            };
            init_logging(cfg.gateway.log_format);
            run_with(cfg.gateway.worker_threads, serve(cfg))
        }
        Command::Demo { listen } => {
            init_logging(LogFormat::Plain);
            run(demo::run(listen))
        }
        Command::Policy {
            command: PolicyCommand::Check { config },
        } => match load(&config) {
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
    }
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

async fn serve(cfg: Config) -> anyhow::Result<()> {
    let gateway = proxy::Gateway::bind(Arc::new(cfg), Arc::new(proxy::AllowAll)).await?;
    tracing::info!(listen = %gateway.local_addr(), "jitgate serving");
    gateway.run(shutdown_signal()).await;
    tracing::info!("jitgate stopped");
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
