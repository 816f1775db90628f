//! `jitgate init`: adopt an existing PostgreSQL. Reads the cluster
//! (`catalog`), derives a starter configuration (`starter`, written out as
//! TOML by `render`) and the SQL that makes it true (`plan`), writes both,
//! prints the plan, and runs it only with `--apply`. `jitgate init --undo`
//! restores the catalog from the plan.

pub mod catalog;
pub mod plan;
pub mod render;
pub mod starter;

use anyhow::{bail, Context};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use tokio_postgres::{Client, Config};

pub struct InitArgs {
    pub admin_url: String,
    pub databases: Vec<String>,
    pub out: PathBuf,
    pub force: bool,
    pub apply: bool,
    pub admin_role: String,
    pub login_role_prefix: String,
    pub humans: Vec<String>,
    pub services: Vec<String>,
}

/// A connection to `config` with TLS as the admin URL's `sslmode` asks.
async fn connect(target: &Target) -> anyhow::Result<Client> {
    let (config, tls) = target;
    let (client, conn) = config.connect(tls.clone()).await.with_context(|| {
        format!(
            "connecting to database {:?} as {:?}",
            config.get_dbname().unwrap_or_default(),
            config.get_user().unwrap_or_default()
        )
    })?;
    tokio::spawn(conn);
    Ok(client)
}

type Target = (Config, pgtls::MakeRustlsConnect);

fn parse_url(url: &str) -> anyhow::Result<Target> {
    pgtls::postgres(url).with_context(|| format!("--admin-url {url:?}"))
}

/// The same target, another database.
fn in_database(target: &Target, db: &str) -> Target {
    let mut t = target.clone();
    t.0.dbname(db);
    t
}

fn random_password() -> String {
    rand::random::<[u8; 16]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn plan_path(out: &Path) -> PathBuf {
    let mut p = out.as_os_str().to_owned();
    p.push(".plan.json");
    PathBuf::from(p)
}

/// Writes `text` readable by its owner only (it holds a password).
fn write_private(path: &Path, text: &str, force: bool) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).mode(0o600);
    if force {
        options.create(true).truncate(true);
    } else {
        options.create_new(true);
    }
    let mut f = options.open(path).with_context(|| {
        format!(
            "writing {} (it exists? pass --force to replace it)",
            path.display()
        )
    })?;
    f.write_all(text.as_bytes())?;
    Ok(())
}

pub async fn init(args: InitArgs) -> anyhow::Result<()> {
    let base = parse_url(&args.admin_url)?;
    let main_db = base
        .0
        .get_dbname()
        .map(String::from)
        .or_else(|| base.0.get_user().map(String::from))
        .unwrap_or_else(|| "postgres".into());
    let databases = if args.databases.is_empty() {
        vec![main_db]
    } else {
        args.databases.clone()
    };
    let client = connect(&base).await?;
    let mut catalog = catalog::read_cluster(&client).await?;
    for db in &databases {
        let db_client = connect(&in_database(&base, db)).await?;
        catalog
            .databases
            .push(catalog::read_database(&db_client, db).await?);
    }

    let admin_password = random_password();
    let (host, port) = tcp_target(&base.0);
    // A new admin role gets the generated password; an existing one keeps
    // its own, which the file leaves for the operator to add.
    let secret = if catalog.roles.contains_key(&args.admin_role) {
        String::new()
    } else {
        format!(":{admin_password}")
    };
    let admin_role = args.admin_role.clone();
    // The gateway reaches the database as init did: the same sslmode.
    let split = pgtls::split_url(&args.admin_url)?;
    let mut tls_lines = match split.mode {
        config::UpstreamTls::Disable => "tls = \"disable\"\n".to_string(),
        config::UpstreamTls::Prefer => String::new(),
        config::UpstreamTls::Require => "tls = \"require\"\n".to_string(),
        config::UpstreamTls::VerifyFull => "tls = \"verify-full\"\n".to_string(),
    };
    if let (config::UpstreamTls::VerifyFull, Some(ca)) = (split.mode, &split.root_cert) {
        let ca = std::fs::canonicalize(ca).unwrap_or_else(|_| ca.clone());
        tls_lines += &format!("tls_ca_file = {}\n", render::q(&ca.display().to_string()));
    }
    let options = starter::Options {
        tls_lines,
        admin_role: args.admin_role.clone(),
        login_role_prefix: args.login_role_prefix.clone(),
        humans: args.humans.clone(),
        services: args.services.clone(),
        admin_url: Box::new(move |db| {
            format!("postgres://{admin_role}{secret}@{host}:{port}/{db}")
        }),
        source: format!(
            "{}@{}:{} (databases {})",
            base.0.get_user().unwrap_or_default(),
            tcp_target(&base.0).0,
            tcp_target(&base.0).1,
            databases.join(", ")
        ),
    };
    let derived = starter::derive(&catalog, &options);
    // Generated passwords, as verifiers for the file and in clear for the person.
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    let mut verifiers: BTreeMap<String, String> = BTreeMap::new();
    let mut names: Vec<String> = derived
        .people
        .iter()
        .filter(|p| p.verifier.is_none())
        .map(|p| p.name.clone())
        .collect();
    if derived.local_approver {
        names.push(starter::LOCAL_APPROVER.to_string());
    }
    for n in names {
        let pw = random_password();
        verifiers.insert(
            n.clone(),
            postgres_protocol::password::scram_sha_256(pw.as_bytes()),
        );
        shown.insert(n, pw);
    }
    let text = render::render(&derived, &catalog, &options, &verifiers);
    // Never write what jitgate would not load.
    config::Config::from_toml(&text)
        .map_err(|e| anyhow::anyhow!("the starter configuration does not load (a bug): {e}"))?;
    let admin_verifier = postgres_protocol::password::scram_sha_256(admin_password.as_bytes());
    let plan = plan::make(
        &catalog,
        &derived,
        &args.admin_role,
        &admin_verifier,
        &args.login_role_prefix,
    );
    let plan_file = plan_path(&args.out);
    for f in [&args.out, &plan_file] {
        if f.exists() && !args.force {
            bail!("{} exists; pass --force to replace it", f.display());
        }
    }
    write_private(&args.out, &text, args.force)?;
    write_private(
        &plan_file,
        &serde_json::to_string_pretty(&plan)?,
        args.force,
    )?;

    println!(
        "Read {} roles and {} memberships; in {}: {} people, {} managed roles, {} rules.",
        catalog.roles.len(),
        catalog.memberships.len(),
        databases.join(", "),
        derived.people.len(),
        derived.managed.len(),
        derived.rules.len()
    );
    if !catalog.verifiers_readable {
        println!(
            "pg_authid is not readable by {}: people get new passwords (below).",
            catalog.current_user
        );
    }
    println!(
        "Wrote {} (the configuration) and {} (the plan).",
        args.out.display(),
        plan_file.display()
    );
    if !shown.is_empty() {
        println!("\nNew gateway passwords, shown once (the file holds only their verifiers):");
        for (n, pw) in &shown {
            println!("  {n}: {pw}");
        }
    }
    println!(
        "\nThe adoption plan{}:",
        if args.apply {
            ""
        } else {
            " (run it with --apply, in one transaction)"
        }
    );
    for s in &plan.apply {
        println!("  {s};");
    }
    if args.apply {
        run_plan(client, &plan, &plan_file).await?;
    } else {
        println!(
            "\nTo run this plan as written: jitgate init --apply --plan {} --admin-url URL",
            plan_file.display()
        );
    }
    println!(
        "\nNext: jitgate policy check --live --config {0}; then jitgate serve --config {0}",
        args.out.display()
    );
    Ok(())
}

/// Runs a plan's statements in one transaction.
async fn run_plan(mut client: Client, plan: &plan::Plan, file: &Path) -> anyhow::Result<()> {
    let tx = client.transaction().await?;
    for s in &plan.apply {
        tx.batch_execute(s)
            .await
            .with_context(|| format!("applying the plan: {s}"))?;
    }
    tx.commit().await.context("committing the plan")?;
    println!(
        "\nApplied ({} statements, one transaction). Undo: jitgate init --undo --plan {} --admin-url URL",
        plan.apply.len(),
        file.display()
    );
    Ok(())
}

fn read_plan(file: &Path) -> anyhow::Result<plan::Plan> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("reading the plan {}", file.display()))?;
    let plan: plan::Plan = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a plan written by jitgate init", file.display()))?;
    if plan.version != 1 {
        bail!(
            "plan version {} is not one this jitgate reads",
            plan.version
        );
    }
    Ok(plan)
}

/// `init --apply --plan F`: the reviewed plan, as written, if the cluster is
/// still as it was read (the same roles, the memberships it revokes still
/// there); else it says to run `init` again.
pub async fn apply(admin_url: &str, file: &Path) -> anyhow::Result<()> {
    let plan = read_plan(file)?;
    let client = connect(&parse_url(admin_url)?).await?;
    let catalog = catalog::read_cluster(&client).await?;
    let now: std::collections::BTreeSet<String> = catalog.roles.keys().cloned().collect();
    if now != plan.roles_before {
        let added: Vec<_> = now.difference(&plan.roles_before).collect();
        let gone: Vec<_> = plan.roles_before.difference(&now).collect();
        bail!(
            "the roles changed since the plan was written (new: {added:?}, gone: {gone:?}); \
             run jitgate init again and review the new plan"
        );
    }
    for m in &plan.revoked {
        if !catalog.memberships.contains(m) {
            bail!(
                "{} no longer holds {} as the plan read it; run jitgate init again",
                m.member,
                m.role
            );
        }
    }
    run_plan(client, &plan, file).await
}

/// Host and port for the generated `admin_url` (the gateway needs TCP).
fn tcp_target(c: &Config) -> (String, u16) {
    let host = c
        .get_hosts()
        .iter()
        .find_map(|h| match h {
            tokio_postgres::config::Host::Tcp(h) => Some(h.clone()),
            #[allow(unreachable_patterns)]
            _ => None,
        })
        .unwrap_or_else(|| "127.0.0.1".into());
    (host, c.get_ports().first().copied().unwrap_or(5432))
}

pub async fn undo(admin_url: &str, plan_file: &Path) -> anyhow::Result<()> {
    let plan = read_plan(plan_file)?;
    let base = parse_url(admin_url)?;
    let mut client = connect(&base).await?;
    // Login roles the gateway made since: dropped with what they hold.
    let now: Vec<String> = client
        .query("SELECT rolname::text FROM pg_roles", &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    let made: Vec<String> = now
        .into_iter()
        .filter(|r| r.starts_with(&plan.login_role_prefix) && !plan.roles_before.contains(r))
        .collect();
    let mut owners: Vec<String> = made.clone();
    if plan.admin_created {
        owners.push(plan.admin_role.clone());
    }
    let owners_sql: Vec<String> = owners
        .iter()
        .map(|r| postgres_protocol::escape::escape_identifier(r))
        .collect();
    if !owners.is_empty() {
        for db in &plan.databases {
            connect(&in_database(&base, db))
                .await?
                .batch_execute(&format!("DROP OWNED BY {}", owners_sql.join(", ")))
                .await
                .with_context(|| format!("DROP OWNED in {db}"))?;
        }
    }
    let tx = client.transaction().await?;
    for r in &made {
        tx.batch_execute(&format!(
            "DROP ROLE {}",
            postgres_protocol::escape::escape_identifier(r)
        ))
        .await
        .with_context(|| format!("dropping the gateway's login role {r}"))?;
    }
    for s in &plan.undo {
        tx.batch_execute(s)
            .await
            .with_context(|| format!("undoing the plan: {s}"))?;
    }
    tx.commit().await?;
    println!(
        "Undone: {} statements; {} login roles of the gateway dropped{}.",
        plan.undo.len(),
        made.len(),
        if made.is_empty() {
            String::new()
        } else {
            format!(" ({})", made.join(", "))
        }
    );
    Ok(())
}
