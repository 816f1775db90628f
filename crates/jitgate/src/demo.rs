//! `jitgate demo`: everything needed to try the gateway on one machine.

use anyhow::Context;
use pgcluster::{Cluster, Options};

const SCHEMA: &str = r#"
CREATE ROLE app_read NOLOGIN;
CREATE ROLE app_write NOLOGIN;
CREATE TABLE customers (id serial PRIMARY KEY, name text NOT NULL, email text NOT NULL);
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int REFERENCES customers, total numeric(10,2), placed_at timestamptz DEFAULT now());
INSERT INTO customers (name, email) SELECT 'customer ' || i, 'c' || i || '@example.com' FROM generate_series(1, 50) i;
INSERT INTO orders (customer_id, total) SELECT 1 + i % 50, (i * 7.5)::numeric(10,2) FROM generate_series(1, 500) i;
GRANT USAGE ON SCHEMA public TO app_read, app_write;
GRANT SELECT ON ALL TABLES IN SCHEMA public TO app_read;
GRANT INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO app_write;
GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO app_write;
"#;

fn demo_config(admin_url: &str, listen: &str, api_listen: &str, state: &str) -> String {
    format!(
        r#"[gateway]
listen = "{listen}"
api_listen = "{api_listen}"
state = "{state}"
# Short, so the demo shows the end of a grant: a warning 30 s before, then the role is gone.
expiry_warning = "30s"

[[database]]
name = "app"
admin_url = "{admin_url}"
baseline_roles = ["app_read"]
tls = "disable"

[[group]]
name = "engineers"

[[group]]
name = "leads"

[[group]]
name = "auditors"

[[user]]
name = "alice"
password = "alice"
groups = ["engineers"]

[[user]]
name = "bob"
password = "bob"
groups = ["leads"]

[[user]]
name = "carol"
password = "carol"
groups = ["engineers", "auditors"]

[[role]]
name = "app_write"
database = "app"
requesters = ["engineers"]
default_duration = "2m"
max_duration = "1h"
reason_required = true
chain = [{{ approvers = ["leads"], min = 1 }}]

[[rule]]
database = "app"
actions = ["write"]
objects = ["public.*"]
role = "app_write"
"#
    )
}

pub async fn run(listen: String, api_listen: String) -> anyhow::Result<()> {
    println!("Starting a throwaway PostgreSQL cluster...");
    let cluster = tokio::task::spawn_blocking(|| Cluster::start(Options::default()))
        .await?
        .context("starting PostgreSQL (is the server installed? apt-get install postgresql)")?;
    cluster.psql("postgres", "CREATE DATABASE app")?;
    cluster.psql("app", SCHEMA)?;
    let state_dir = tempfile::tempdir()?;
    let state = format!("sqlite://{}", state_dir.path().join("jitgate.db").display());
    let text = demo_config(&cluster.url("app"), &listen, &api_listen, &state);
    let config = config::Config::from_toml(&text).context("demo configuration")?;
    let port = listen.rsplit(':').next().unwrap_or("6432");
    println!(
        "\njitgate demo is running: gateway on {listen}, HTTP API on http://{api_listen}, \
         PostgreSQL on 127.0.0.1:{}.\n\
         Users alice, bob and carol (password = user name) each log in as their own\n\
         login role (jit_alice, ...), which holds the baseline role app_read.\n\n\
         The story, in two terminals:\n\n\
         1. alice, in psql:\n\
         \x20  PGPASSWORD=alice psql \"host=127.0.0.1 port={port} dbname=app user=alice\"\n\
         \x20  app=> SELECT current_user, count(*) FROM orders GROUP BY 1;  -- a baseline read, as jit_alice\n\
         \x20  app=> SET jitgate.reason = 'fix order 1';\n\
         \x20  app=> DELETE FROM orders WHERE id = 1;   -- refused: jitgate files request 1 for app_write\n\n\
         2. bob approves it, in a browser at http://{api_listen}/ (log in as bob / bob),\n\
         \x20  or with the CLI (client commands talk to the HTTP API):\n\
         \x20  export JITGATE_SERVER=http://{api_listen}\n\
         \x20  jitgate requests --user bob --password bob\n\
         \x20  jitgate approve 1 --user bob --password bob\n\n\
         3. alice, in the same psql session:\n\
         \x20  app=> DELETE FROM orders WHERE id = 1;   -- DELETE 1: app_write is granted for 2 minutes\n\
         \x20  ... a WARNING 30 s before the end; after it:\n\
         \x20  app=> DELETE FROM orders WHERE id = 2;   -- refused again (request 2)\n\n\
         4. the record: jitgate audit verify --user carol --password carol\n\
         \x20  (set on_missing_grant = \"hold\" to have the DELETE wait for the approval instead)\n\n\
         The demo configuration:\n\n{}\nPress Ctrl-C to stop; the cluster is removed.",
        cluster.port(),
        text.replace(cluster.password(), "********"),
    );
    crate::serve(config, &text, crate::shutdown_signal()).await?;
    drop(cluster);
    Ok(())
}
