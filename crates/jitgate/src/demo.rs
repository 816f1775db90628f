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
default_duration = "15m"
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
    println!(
        "\njitgate demo is running: gateway on {listen}, HTTP API on http://{api_listen}, \
         PostgreSQL on 127.0.0.1:{}.\n\
         Users alice, bob and carol (password = user name) each log in as their own\n\
         login role (jit_alice, ...), which holds the baseline role app_read.\n\n\
         Try, in another terminal:\n\
         \x20 PGPASSWORD=alice psql \"host=127.0.0.1 port={} dbname=app user=alice\"\n\
         \x20   app=> SELECT current_user, count(*) FROM orders GROUP BY 1;   -- runs as jit_alice\n\
         \x20   app=> DELETE FROM orders WHERE id = 1;                         -- refused by the database: no write role\n\n\
         And the approval flow (client commands talk to the HTTP API):\n\
         \x20 export JITGATE_SERVER=http://{api_listen}\n\
         \x20 jitgate request app_write --db app --for 30m --reason 'fix order 1' --user alice --password alice\n\
         \x20 jitgate requests --user bob --password bob\n\
         \x20 jitgate approve 1 --user bob --password bob\n\
         \x20 jitgate grants --user alice --password alice\n\
         \x20 jitgate audit verify --user carol --password carol\n\n\
         The demo configuration:\n\n{}\nPress Ctrl-C to stop; the cluster is removed.",
        cluster.port(),
        listen.rsplit(':').next().unwrap_or("6432"),
        text.replace(cluster.password(), "********"),
    );
    crate::serve(config, &text, crate::shutdown_signal()).await?;
    drop(cluster);
    Ok(())
}
