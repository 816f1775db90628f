//! `jitgate init` against databases it did not make: a hand-made cluster with
//! the tricky cases (role chains, ADMIN options, a powerful predefined role,
//! default privileges, a PUBLIC grant, a service account owning the schema),
//! and the schema and roles Tryton's own migrations create (`trytond-admin
//! --all`, as its own role). Each: the starter configuration loads and every
//! rule is backed (`policy check --live`), `--apply` then `--undo` leaves the
//! privilege catalogs exactly as they were, and after `--apply` a former
//! keyholder's privileged statement is refused with a filed request and runs
//! once approved. Each test owns its cluster: they compare cluster-wide
//! catalogs.

mod common;

use common::*;
use pgcluster::{Cluster, Options};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// Everything init may touch, as sorted lines.
const SNAPSHOT: &str = "
SELECT string_agg(line, E'\\n' ORDER BY line) FROM (
  SELECT 'role ' || rolname || ' ' || rolsuper || rolinherit || rolcreaterole || rolcreatedb
         || rolcanlogin || rolreplication || rolbypassrls || ' ' || COALESCE(rolpassword, '-') AS line
    FROM pg_authid
  UNION ALL SELECT 'member ' || r.rolname || ' ' || m.rolname || ' ' || COALESCE(g.rolname, '?')
         || ' ' || am.admin_option
    FROM pg_auth_members am JOIN pg_roles r ON r.oid = am.roleid
    JOIN pg_roles m ON m.oid = am.member LEFT JOIN pg_roles g ON g.oid = am.grantor
  UNION ALL SELECT 'database ' || datname || ' ' || COALESCE(datacl::text, '-') FROM pg_database
  UNION ALL SELECT 'schema ' || nspname || ' ' || nspowner::regrole || ' '
         || COALESCE(nspacl::text, '-') FROM pg_namespace
  UNION ALL SELECT 'relation ' || oid::regclass || ' ' || relowner::regrole || ' '
         || COALESCE(relacl::text, '-') FROM pg_class WHERE relkind IN ('r','p','v','m','f','S')
  UNION ALL SELECT 'function ' || oid::regprocedure || ' ' || COALESCE(proacl::text, '-') FROM pg_proc
  UNION ALL SELECT 'default ' || defaclrole::regrole || ' ' || defaclnamespace || ' '
         || defaclobjtype::text || ' ' || defaclacl::text FROM pg_default_acl
) x";

fn snapshot(c: &Cluster, db: &str) -> String {
    c.psql(db, SNAPSHOT).unwrap()
}

fn jitgate(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("JITGATE_SERVER")
        .output()
        .unwrap()
}

fn ok(o: Output) -> String {
    let text = out(&o);
    assert!(o.status.success(), "{text}");
    text
}

/// Runs the starter configuration as a gateway on free ports.
fn serve(config_text: &str, dir: &tempfile::TempDir) -> (Running, u16, u16) {
    let (port, api_port) = (free_port(), free_port());
    let text = config_text
        .replace("127.0.0.1:6432", &format!("127.0.0.1:{port}"))
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{api_port}"))
        .replace(
            "sqlite://jitgate.db",
            &format!("sqlite://{}", dir.path().join("state.db").display()),
        );
    let cfg = write(dir, "serve.toml", &text);
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .env("JITGATE_LOG", "warn")
        .spawn()
        .unwrap();
    wait_for_port(port);
    wait_for_port(api_port);
    (Running(child), port, api_port)
}

/// Direct psql as `user` (password `<user>-pw`), one statement.
fn direct(c: &Cluster, db: &str, user: &str, sql: &str) -> Output {
    Command::new("psql")
        .args(["-X", "-At", "-c", sql])
        .arg(format!(
            "host=127.0.0.1 port={} dbname={db} user={user}",
            c.port()
        ))
        .env("PGPASSWORD", format!("{user}-pw"))
        .output()
        .unwrap()
}

/// The whole adoption: init, review, apply, check, serve, request, approve, undo.
struct Adoption<'a> {
    c: &'a Cluster,
    db: &'a str,
    dir: tempfile::TempDir,
    out: std::path::PathBuf,
}

impl<'a> Adoption<'a> {
    fn new(c: &'a Cluster, db: &'a str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("jitgate.toml");
        Adoption { c, db, dir, out }
    }

    fn init(&self, extra: &[&str]) -> (String, String) {
        let url = self.c.url(self.db);
        let mut args = vec!["init", "--admin-url", &url, "--out"];
        let out = self.out.display().to_string();
        args.push(&out);
        args.extend_from_slice(extra);
        let printed = ok(jitgate(&args));
        (printed, std::fs::read_to_string(&self.out).unwrap())
    }

    fn plan(&self) -> String {
        format!("{}.plan.json", self.out.display())
    }

    fn undo(&self) -> String {
        let url = self.c.url(self.db);
        ok(jitgate(&[
            "init",
            "--undo",
            "--admin-url",
            &url,
            "--plan",
            &self.plan(),
        ]))
    }

    fn policy_check_live(&self) -> Output {
        jitgate(&[
            "policy",
            "check",
            "--live",
            "--config",
            &self.out.display().to_string(),
        ])
    }

    /// `user`'s statement through the gateway is refused with a filed request
    /// for `role`; `approver` approves it; the same statement then runs.
    /// Returns the gateway, still running.
    fn refused_then_approved(
        &self,
        text: &str,
        user: &str,
        approver: &str,
        sql: &str,
        role: &str,
    ) -> Running {
        let (gw, port, api_port) = serve(text, &self.dir);
        let mut s = Psql::connect_db(port, self.db, user, &format!("{user}-pw"));
        let o = s.run(sql);
        assert!(
            o.contains(&format!("needs role \"{role}\"")) && o.contains("request 1"),
            "{o}"
        );
        let o = cli(api_port, &["approve", "1"], approver);
        assert!(o.status.success(), "{}", out(&o));
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let o = s.run(sql);
            if !o.contains("ERROR") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "still refused after approval: {o}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        gw
    }
}

#[test]
fn a_hand_made_cluster_with_the_tricky_cases() {
    let c = Cluster::start(Options::default()).unwrap();
    c.psql("postgres", "CREATE DATABASE app").unwrap();
    c.psql(
        "app",
        "CREATE ROLE app_read NOLOGIN; CREATE ROLE app_write NOLOGIN;
         CREATE ROLE app_admin NOLOGIN; CREATE ROLE oncall NOLOGIN;
         CREATE ROLE shop LOGIN PASSWORD 'shop-pw';
         CREATE ROLE alice LOGIN PASSWORD 'alice-pw'; CREATE ROLE bob LOGIN PASSWORD 'bob-pw';
         CREATE ROLE carol LOGIN PASSWORD 'carol-pw'; CREATE ROLE dave LOGIN PASSWORD 'dave-pw';
         CREATE SCHEMA shop AUTHORIZATION shop;
         SET ROLE shop;
         CREATE TABLE shop.orders (id int PRIMARY KEY, total int);
         CREATE TABLE shop.lines (order_id int, sku text);
         CREATE TABLE shop.audit_trail (at timestamptz, what text);
         CREATE TABLE shop.counters (n int);
         INSERT INTO shop.orders SELECT i, i FROM generate_series(1, 10) i;
         ALTER DEFAULT PRIVILEGES IN SCHEMA shop GRANT SELECT ON TABLES TO app_read;
         ALTER DEFAULT PRIVILEGES IN SCHEMA shop GRANT INSERT, UPDATE ON TABLES TO app_write;
         GRANT USAGE ON SCHEMA shop TO app_read, app_write, app_admin;
         GRANT SELECT ON ALL TABLES IN SCHEMA shop TO app_read;
         GRANT INSERT, UPDATE, DELETE ON shop.orders, shop.lines TO app_write;
         GRANT TRUNCATE ON shop.audit_trail TO app_admin;
         GRANT CREATE ON SCHEMA shop TO app_admin;
         GRANT UPDATE ON shop.counters TO PUBLIC;
         RESET ROLE;
         GRANT app_read TO app_write; GRANT app_write TO app_admin; GRANT app_admin TO oncall;
         GRANT app_write TO alice WITH ADMIN OPTION;
         GRANT app_read TO bob;
         GRANT oncall TO carol;
         GRANT pg_signal_backend TO dave; GRANT app_read TO dave;",
    )
    .unwrap();
    let before = snapshot(&c, "app");
    let a = Adoption::new(&c, "app");

    let (printed, text) = a.init(&[]);
    // Nothing changes without --apply.
    assert_eq!(snapshot(&c, "app"), before);
    assert!(
        printed.contains(r#"REVOKE "app_write" FROM "alice" GRANTED BY "postgres""#),
        "{printed}\n{text}"
    );
    let cfg = config::Config::from_toml(&text).unwrap();
    let names = |v: Vec<&str>| v.join(" ");
    assert_eq!(
        names(cfg.users.iter().map(|u| u.name.as_str()).collect()),
        "alice bob carol dave",
        "{text}"
    );
    assert_eq!(
        names(cfg.roles.iter().map(|r| r.name.as_str()).collect()),
        "app_admin app_write oncall pg_signal_backend",
        "{text}"
    );
    assert_eq!(cfg.databases[0].baseline_roles, ["app_read"], "{text}");
    // People keep their passwords: the verifier is the one in pg_authid.
    let alice = cfg.users.iter().find(|u| u.name == "alice").unwrap();
    let stored = c
        .psql(
            "app",
            "SELECT rolpassword FROM pg_authid WHERE rolname = 'alice'",
        )
        .unwrap();
    assert_eq!(alice.password_scram.as_deref(), Some(stored.trim()));
    // The narrowest role gets each object; PUBLIC's table is nobody's rule.
    let rule = |role: &str, action: &str| {
        cfg.rules
            .iter()
            .find(|r| r.role.as_deref() == Some(role) && r.actions == [action])
            .map(|r| r.objects.join(" "))
            .unwrap_or_default()
    };
    assert_eq!(
        rule("app_write", "write"),
        "shop.lines shop.orders",
        "{text}"
    );
    assert_eq!(rule("app_admin", "write"), "shop.audit_trail", "{text}");
    assert_eq!(rule("app_admin", "ddl"), "shop.*", "{text}");
    assert!(!text.contains("objects = [\"shop.counters\"]"), "{text}");
    assert!(text.contains("shop: service account"), "{text}");
    assert!(
        text.contains(
            "default privileges give app_write writes on tables shop creates in schema shop"
        ),
        "{text}"
    );
    assert!(
        text.contains("# pg_hba.conf as the server read it"),
        "{text}"
    );
    // carol held app_admin through oncall: she may request app_write too.
    let carol = cfg.users.iter().find(|u| u.name == "carol").unwrap();
    assert!(
        carol.groups.contains(&"app_write-requesters".to_string()),
        "{text}"
    );

    // Apply the reviewed plan as written: the admin role, and the standing
    // memberships gone.
    let (url, plan) = (c.url("app"), a.plan());
    let apply = || jitgate(&["init", "--apply", "--plan", &plan, "--admin-url", &url]);
    let o = ok(apply());
    assert!(o.contains("one transaction"), "{o}");
    // A plan no longer true of the cluster is not run again.
    let o = apply();
    assert!(
        !o.status.success() && out(&o).contains("the roles changed since the plan"),
        "{}",
        out(&o)
    );
    let o = direct(&c, "app", "alice", "DELETE FROM shop.orders WHERE id = 1");
    assert!(out(&o).contains("permission denied"), "{}", out(&o));
    let o = a.policy_check_live();
    assert!(o.status.success(), "unbacked rules: {}", out(&o));

    // The doctor: what is right, and what to fix, one line each.
    let config_file = a.out.display().to_string();
    let doctor = || jitgate(&["doctor", "--config", &config_file]);
    let o = doctor();
    let report = out(&o);
    assert!(
        report.contains("ok   app: admin role jitgate_admin creates login roles and grants all 5"),
        "{report}"
    );
    assert!(
        report.contains("ok   app: every rule is backed by the database (3)"),
        "{report}"
    );
    assert!(
        report.contains("ok   app: clock skew to the database"),
        "{report}"
    );
    assert!(
        report.contains("warn app: standing keyholder shop:"),
        "{report}"
    );
    // The test cluster trusts the local socket (initdb's default): a fix.
    assert!(
        report.contains("FIX  app: login roles can log in from the local socket"),
        "{report}"
    );
    assert_eq!(o.status.code(), Some(1), "{report}");
    c.psql("app", "ALTER ROLE jitgate_admin NOCREATEROLE")
        .unwrap();
    let report = out(&doctor());
    assert!(
        report.contains("FIX  app: admin role jitgate_admin lacks CREATEROLE"),
        "{report}"
    );
    c.psql("app", "ALTER ROLE jitgate_admin CREATEROLE")
        .unwrap();

    let gateway = a.refused_then_approved(
        &text,
        "alice",
        "bob",
        "DELETE FROM shop.orders WHERE id = 2;",
        "app_write",
    );
    // The scan tells alice's grant from standing access.
    let serving = a.dir.path().join("serve.toml").display().to_string();
    let o = ok(jitgate(&[
        "scan", "--db", "app", "--json", "--config", &serving,
    ]));
    let found: serde_json::Value = serde_json::from_str(&o).unwrap();
    let jit_alice = found
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["login"] == "jit_alice")
        .unwrap_or_else(|| panic!("{o}"));
    assert_eq!(jit_alice["standing"], false, "{o}");
    assert_eq!(jit_alice["grants"][0]["role"], "app_write", "{o}");
    assert_eq!(jit_alice["managed_roles"], serde_json::json!([]), "{o}");
    let o = ok(jitgate(&["scan", "--db", "app", "--config", &serving]));
    let (standing, granted) = o.split_once("only through active grants").unwrap();
    assert!(
        !standing.contains("jit_alice") && standing.contains("shop"),
        "{o}"
    );
    assert!(
        granted.contains("jit_alice") && granted.contains("through grant 1"),
        "{o}"
    );
    drop(gateway);

    // Undo restores the catalog exactly (the gateway's login roles gone too).
    let printed = a.undo();
    assert!(printed.contains("jit_alice"), "{printed}");
    assert_eq!(snapshot(&c, "app"), before);
}

#[test]
fn tryton_made_by_its_own_migrations() {
    let c = Cluster::start(Options::default()).unwrap();
    c.psql("postgres", "CREATE ROLE tryton LOGIN PASSWORD 'tryton-pw'")
        .unwrap();
    c.psql("postgres", "CREATE DATABASE tryton OWNER tryton")
        .unwrap();
    // Tryton creates its schema and data itself, connected as its own role.
    let dir = tempfile::tempdir().unwrap();
    let conf = write(
        &dir,
        "trytond.conf",
        &format!(
            "[database]\nuri = postgresql://tryton:tryton-pw@127.0.0.1:{}/\n",
            c.port()
        ),
    );
    let pass = write(&dir, "admin.pass", "tryton-admin-pw\n");
    let o = Command::new("trytond-admin")
        .arg("-c")
        .arg(&conf)
        .args(["-d", "tryton", "--all", "--email", "admin@example.com"])
        .env("TRYTONPASSFILE", &pass)
        .output()
        .expect("trytond-admin (scripts/install-deps --tests installs tryton-server)");
    assert!(o.status.success(), "{}", out(&o));
    let tables = c
        .psql(
            "tryton",
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'public' AND tableowner = 'tryton'",
        )
        .unwrap();
    assert!(tables.trim().parse::<u32>().unwrap() > 50, "{tables}");
    // People: ops holds the application's own role standing; ana reads.
    c.psql(
        "tryton",
        "CREATE ROLE ops LOGIN PASSWORD 'ops-pw'; GRANT tryton TO ops;
         CREATE ROLE reporting NOLOGIN; GRANT SELECT ON ALL TABLES IN SCHEMA public TO reporting;
         CREATE ROLE ana LOGIN PASSWORD 'ana-pw'; GRANT reporting TO ana;",
    )
    .unwrap();
    let before = snapshot(&c, "tryton");
    let a = Adoption::new(&c, "tryton");
    let (_, text) = a.init(&["--apply"]);
    let cfg = config::Config::from_toml(&text).unwrap();
    // The application's account is left alone as a user, but managed for ops.
    assert!(text.contains("tryton: service account"), "{text}");
    let users: Vec<&str> = cfg.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(users, ["ana", "ops"], "{text}");
    let roles: Vec<&str> = cfg.roles.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(roles, ["tryton"], "{text}");
    assert_eq!(cfg.databases[0].baseline_roles, ["reporting"], "{text}");
    assert!(
        cfg.rules
            .iter()
            .any(|r| r.actions == ["write"] && r.objects == ["public.*"]),
        "{text}"
    );
    let o = a.policy_check_live();
    assert!(o.status.success(), "unbacked rules: {}", out(&o));
    // The application itself still works as before, directly.
    let o = direct(
        &c,
        "tryton",
        "tryton",
        "UPDATE ir_configuration SET language = language",
    );
    assert!(o.status.success(), "{}", out(&o));
    // ops no longer writes standing; through the gateway, with approval.
    let o = direct(&c, "tryton", "ops", "DELETE FROM ir_session WHERE id < 0");
    assert!(out(&o).contains("permission denied"), "{}", out(&o));
    drop(a.refused_then_approved(
        &text,
        "ops",
        "ana",
        "DELETE FROM ir_session WHERE id < 0;",
        "tryton",
    ));

    a.undo();
    assert_eq!(snapshot(&c, "tryton"), before);
}

#[test]
fn several_databases_apply_and_undo() {
    let c = Cluster::start(Options::default()).unwrap();
    c.psql("postgres", "CREATE DATABASE app").unwrap();
    c.psql("postgres", "CREATE DATABASE billing").unwrap();
    c.psql(
        "app",
        "CREATE ROLE app_write NOLOGIN; CREATE ROLE bill_write NOLOGIN;
         CREATE ROLE alice LOGIN PASSWORD 'alice-pw'; CREATE ROLE bob LOGIN PASSWORD 'bob-pw';
         CREATE TABLE orders (id int); GRANT INSERT ON orders TO app_write;
         GRANT app_write TO alice; GRANT bill_write TO bob;",
    )
    .unwrap();
    c.psql(
        "billing",
        "CREATE TABLE invoices (id int); GRANT UPDATE ON invoices TO bill_write;",
    )
    .unwrap();
    let before = (snapshot(&c, "app"), snapshot(&c, "billing"));
    let a = Adoption::new(&c, "app");
    let (_, text) = a.init(&["--db", "app", "--db", "billing", "--apply"]);
    let cfg = config::Config::from_toml(&text).unwrap();
    let dbs: Vec<&str> = cfg.databases.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(dbs, ["app", "billing"], "{text}");
    let role_db: Vec<(&str, &str)> = cfg
        .roles
        .iter()
        .map(|r| (r.name.as_str(), r.database.as_str()))
        .collect();
    assert_eq!(
        role_db,
        [("app_write", "app"), ("bill_write", "billing")],
        "{text}"
    );
    let o = a.policy_check_live();
    assert!(o.status.success(), "unbacked rules: {}", out(&o));
    a.undo();
    assert_eq!((snapshot(&c, "app"), snapshot(&c, "billing")), before);
}

#[test]
fn doctor_names_a_state_store_that_can_lose_decisions() {
    // A PostgreSQL store that does not flush, and a SQLite store in memory.
    let c = Cluster::start(Options {
        settings: vec!["fsync = off".into(), "synchronous_commit = off".into()],
        ..Options::default()
    })
    .unwrap();
    c.psql("postgres", "CREATE DATABASE state").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let doctor = |state: &str| {
        let text = testkit::config::App::new(&c.url("postgres"))
            .gateway(format!("state = \"{state}\""))
            .toml()
            .replace("baseline_roles = [\"app_read\"]", "");
        let cfg = write(&dir, "doctor.toml", &text);
        let o = Command::new(BIN)
            .args(["doctor", "--config"])
            .arg(&cfg)
            .env("JITGATE_CLUSTER_SECRET", "a-test-secret-of-32-characters!!")
            .output()
            .unwrap();
        (o.status.code(), out(&o))
    };
    let (code, report) = doctor(&c.url("state"));
    assert_eq!(code, Some(1), "{report}");
    assert!(report.contains("FIX  state store: fsync = off"), "{report}");
    assert!(
        report.contains("FIX  state store: synchronous_commit = off"),
        "{report}"
    );
    // app_write does not exist in this cluster: named as a fix too.
    assert!(
        report.contains("FIX  app: role app_write (configured) does not exist"),
        "{report}"
    );
    let (_, report) = doctor("sqlite:///dev/shm/jitgate-doctor-test.db");
    assert!(
        report.contains("is on tmpfs: decisions and the audit log are lost at reboot"),
        "{report}"
    );
}

#[test]
fn a_database_that_accepts_only_tls() {
    let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let cert = ck.cert.pem();
    let c = Cluster::start(Options {
        tls: Some((cert.clone(), ck.signing_key.serialize_pem())),
        hba: vec!["hostnossl app all 127.0.0.1/32 reject".into()],
        settings: vec![],
    })
    .unwrap();
    c.psql("postgres", "CREATE DATABASE app").unwrap();
    c.psql(
        "app",
        "CREATE ROLE app_write NOLOGIN; CREATE TABLE orders (id int);
         GRANT INSERT ON orders TO app_write;
         CREATE ROLE alice LOGIN PASSWORD 'alice-pw'; CREATE ROLE bob LOGIN PASSWORD 'bob-pw';
         GRANT app_write TO alice;",
    )
    .unwrap();
    let a = Adoption::new(&c, "app");
    let ca = a.dir.path().join("ca.pem");
    std::fs::write(&ca, &cert).unwrap();
    // Plaintext is refused by the server, and init says why.
    let o = jitgate(&[
        "init",
        "--admin-url",
        &format!("{}?sslmode=disable", c.url("app")),
        "--out",
        &a.dir.path().join("plain.toml").display().to_string(),
    ]);
    assert!(
        !o.status.success() && out(&o).contains("no encryption"),
        "{}",
        out(&o)
    );
    // verify-full with the server's CA: read, applied; the file keeps the TLS settings.
    let url = format!(
        "{}?sslmode=verify-full&sslrootcert={}",
        c.url("app"),
        ca.display()
    );
    let o = ok(jitgate(&[
        "init",
        "--admin-url",
        &url,
        "--out",
        &a.out.display().to_string(),
        "--apply",
    ]));
    assert!(o.contains("one transaction"), "{o}");
    let text = std::fs::read_to_string(&a.out).unwrap();
    assert!(text.contains("tls = \"verify-full\""), "{text}");
    assert!(text.contains("tls_ca_file = "), "{text}");
    // policy check --live and doctor reach it the same way.
    let o = a.policy_check_live();
    assert!(o.status.success(), "{}", out(&o));
    let report = out(&jitgate(&[
        "doctor",
        "--config",
        &a.out.display().to_string(),
    ]));
    assert!(
        report.contains("ok   app: every rule is backed by the database (1)"),
        "{report}"
    );
    ok(jitgate(&[
        "init",
        "--undo",
        "--admin-url",
        &url,
        "--plan",
        &a.plan(),
    ]));
}
