//! Loading real files: the DESIGN.md example, and bad ones that must name the field.

use config::{Config, ConfigError, OnMissingGrant, UpstreamTls};
use std::time::Duration;

const DESIGN_EXAMPLE: &str = r#"
[gateway]
listen = "127.0.0.1:6432"
api_listen = "127.0.0.1:8080"
state = "sqlite://jitgate.db"
on_missing_grant = "hold"
hold_timeout = "5m"
on_expiry = "cancel"

[[database]]
name = "app"
admin_url = "postgres://jitgate_admin@127.0.0.1:5432/app"
baseline_roles = ["app_read"]

[[group]]
name = "engineers"

[[group]]
name = "leads"

[[group]]
name = "dba"

[[user]]
name = "alice"
password = "alice-pw"
groups = ["engineers"]

[[role]]
name = "app_write"
database = "app"
requesters = ["engineers"]
default_duration = "15m"
max_duration = "1h"
reason_required = true
request_ttl = "1h"
chain = [ { approvers = ["leads"], min = 1, escalate_after = "10m", escalate_to = ["dba"] } ]

[[rule]]
database = "app"
actions = ["write"]
objects = ["public.*"]
role = "app_write"

[[webhook]]
url = "https://hooks.example/jitgate"
secret = "s"
events = ["request.*", "grant.*", "alert.*"]
format = "json"
"#;

#[test]
fn the_design_example_loads() {
    let cfg = Config::from_toml(DESIGN_EXAMPLE).unwrap();
    assert_eq!(cfg.gateway.on_missing_grant, OnMissingGrant::Hold);
    assert_eq!(cfg.gateway.hold_timeout, Duration::from_secs(300));
    let db = cfg.database("app").unwrap();
    assert_eq!(db.upstream_addr(), ("127.0.0.1".to_string(), 5432));
    assert_eq!(db.upstream_dbname(), "app");
    assert_eq!(db.tls, UpstreamTls::Prefer);
    let alice = cfg.user("alice").unwrap();
    assert!(alice.password.is_none(), "plain password must be dropped");
    assert!(alice.scram.is_some());
    assert_eq!(
        cfg.roles[0].chain[0].escalate_after,
        Some(Duration::from_secs(600))
    );
}

fn invalid(text: &str) -> (String, Option<usize>, String) {
    match Config::from_toml(text) {
        Err(ConfigError::Invalid {
            field,
            line,
            message,
        }) => (field, line, message),
        other => panic!("expected a validation error, got {other:?}"),
    }
}

fn with(extra: &str) -> String {
    format!("[gateway]\n[[group]]\nname = \"engineers\"\n[[database]]\nname = \"app\"\nadmin_url = \"postgres://a@127.0.0.1/app\"\n{extra}")
}

#[test]
fn unknown_group_names_field_and_line() {
    let (field, line, msg) = invalid(&with(
        "[[user]]\nname = \"bob\"\npassword = \"x\"\ngroups = [\"nobody\"]\n",
    ));
    assert_eq!(field, "user[0].groups");
    assert_eq!(line, Some(10));
    assert!(msg.contains("nobody"));
}

#[test]
fn bad_values_are_refused_with_their_field() {
    let cases = [
        ("[[user]]\nname = \"bob\"\n", "user[0].password"),
        ("[[user]]\nname = \"bob\"\npassword = \"x\"\npassword_scram = \"y\"\n", "user[0].password"),
        ("[[user]]\nname = \"bob\"\npassword_scram = \"md5abc\"\n", "user[0].password_scram"),
        ("[[user]]\nname = \"bo b\"\npassword = \"x\"\n", "user[0].name"),
        ("[[user]]\nname = \"a\"\npassword = \"x\"\n[[user]]\nname = \"a\"\npassword = \"y\"\n", "user[1].name"),
        ("[[database]]\nname = \"app\"\nadmin_url = \"postgres://a@127.0.0.1/x\"\n", "database[1].name"),
        ("[[database]]\nname = \"b\"\nadmin_url = \"postgres://127.0.0.1/x\"\n", "database[1].admin_url"),
        ("[[database]]\nname = \"b\"\nadmin_url = \"not a url at all\"\n", "database[1].admin_url"),
        ("[[database]]\nname = \"b\"\nkind = \"mysql\"\nadmin_url = \"postgres://a@h/x\"\n", "database[1].kind"),
        ("[[role]]\nname = \"w\"\ndatabase = \"nope\"\nchain = [{approvers=[\"engineers\"]}]\n", "role[0].database"),
        ("[[role]]\nname = \"w\"\ndatabase = \"app\"\nchain = []\n", "role[0].chain"),
        ("[[role]]\nname = \"w\"\ndatabase = \"app\"\ndefault_duration = \"2h\"\nmax_duration = \"1h\"\nchain = [{approvers=[\"engineers\"]}]\n", "role[0].default_duration"),
        ("[[rule]]\ndatabase = \"app\"\nactions = [\"explode\"]\nrole = \"deny\"\n", "rule[0].actions"),
        ("[[rule]]\ndatabase = \"app\"\nactions = [\"write\"]\nrole = \"ghost\"\n", "rule[0].role"),
        ("[[rule]]\ndatabase = \"app\"\nactions = [\"write\"]\napprove_each = true\n", "rule[0].role"),
        ("[[rule]]\ndatabase = \"app\"\nactions = [\"write\"]\nrole = \"deny\"\napprove_each = true\n", "rule[0].approve_each"),
        ("[[webhook]]\nurl = \"https://h/x\"\nevents = [\"*\"]\n", "webhook[0].secret"),
        ("[[webhook]]\nurl = \"https://h/x\"\nsecret = \"s\"\n", "webhook[0].events"),
        ("[[webhook]]\nurl = \"ftp://h/x\"\nsecret = \"s\"\nevents = [\"*\"]\n", "webhook[0].url"),
    ];
    for (extra, want) in cases {
        let (field, _, _) = invalid(&with(extra));
        assert_eq!(field, want, "for {extra}");
    }
}

#[test]
fn gateway_settings_are_checked() {
    for g in [
        ("require_tls = true", "gateway.require_tls", 2),
        // A missing key points at its table.
        ("tls_cert = \"/x.pem\"", "gateway.tls_key", 1),
        ("listen = \"localhost\"", "gateway.listen", 2),
        (
            "login_role_prefix = \"Robert'); DROP\"",
            "gateway.login_role_prefix",
            2,
        ),
        ("max_query_bytes = 10", "gateway.max_query_bytes", 2),
        (
            "working_hours = \"18:00-08:00\"",
            "gateway.working_hours",
            2,
        ),
        ("working_hours = \"9-5\"", "gateway.working_hours", 2),
        ("working_days = [\"monday\"]", "gateway.working_days", 2),
    ] {
        let (field, line, _) = invalid(&format!("[gateway]\n{}\n", g.0));
        assert_eq!(field, g.1);
        assert_eq!(line, Some(g.2), "{}", g.0);
    }
}

#[test]
fn a_shared_state_store_needs_a_cluster_secret() {
    // (No test here sets JITGATE_CLUSTER_SECRET, which would stand in for the file.)
    let (field, line, msg) = invalid("[gateway]\nstate = \"postgres://j@127.0.0.1/state\"\n");
    assert_eq!((field.as_str(), line), ("gateway.state", Some(2)));
    assert!(msg.contains("cluster_secret_file"), "{msg}");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("secret");
    let text = format!(
        "[gateway]\nstate = \"postgres://j@127.0.0.1/state\"\ncluster_secret_file = {:?}\n",
        file.display().to_string()
    );
    let cfg = Config::from_toml(&text).unwrap();
    std::fs::write(&file, "short\n").unwrap();
    let e = cfg.cluster_secret().unwrap_err().to_string();
    assert!(e.contains("at least 16"), "{e}");
    std::fs::write(&file, "  0123456789abcdef0123\n").unwrap();
    assert_eq!(
        cfg.cluster_secret().unwrap().as_deref(),
        Some(&b"0123456789abcdef0123"[..])
    );
}

#[test]
fn syntax_and_type_errors_carry_the_line() {
    for text in [
        "[gateway]\nlisten = \n",
        "[gateway]\nhold_timeout = \"-5m\"\n",
        "[gateway]\nhold_timeout = \"99999999h\"\n",
        "[gateway]\non_missing_grant = \"maybe\"\n",
        "[gateway]\nsurprise = 1\n",
    ] {
        match Config::from_toml(text) {
            Err(ConfigError::Parse(m)) => assert!(m.contains("line 2"), "{m}"),
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn missing_gateway_table_is_an_error() {
    assert!(matches!(Config::from_toml(""), Err(ConfigError::Parse(_))));
}

#[test]
fn identity_providers_are_checked() {
    let idp = |extra: &str| {
        format!(
            "[[identity_provider]]\nname = \"corp\"\nissuer = \"https://login.example.com\"\n\
             client_id = \"jitgate\"\nclient_secret = \"s\"\n{extra}"
        )
    };
    let ok = with(&idp("group_map = { \"db-admins\" = \"engineers\" }\n"));
    let cfg = Config::from_toml(&ok).unwrap();
    let p = cfg.identity_provider("corp").unwrap();
    assert_eq!(p.groups_claim, "groups");
    assert_eq!(p.username_claim, "email");
    assert_eq!(p.scopes, ["openid", "email", "profile"]);
    assert_eq!(p.max_session_age, Duration::from_secs(12 * 3600));
    assert!(cfg.gateway.password_login);
    let cases = [
        (idp(""), "identity_provider[0].group_map"),
        (
            idp("group_map = { \"x\" = \"nobody\" }\n"),
            "identity_provider[0].group_map",
        ),
        (
            idp("group_map = { \"x\" = \"engineers\" }\nscopes = [\"email\"]\n"),
            "identity_provider[0].scopes",
        ),
        (
            idp("group_map = { \"x\" = \"engineers\" }\n")
                .replace("https://login.example.com", "http://login.example.com"),
            "identity_provider[0].issuer",
        ),
        (
            idp("group_map = { \"x\" = \"engineers\" }\nclient_secret_file = \"/s\"\n"),
            "identity_provider[0].client_secret_file",
        ),
    ];
    for (extra, want) in cases {
        let (field, _, message) = invalid(&with(&extra));
        assert_eq!(field, want, "for {extra}: {message}");
    }
    // Loopback issuers are allowed (tests, a provider on the same host).
    let local = with(&idp("group_map = { \"x\" = \"engineers\" }\n"))
        .replace("https://login.example.com", "http://127.0.0.1:9000");
    Config::from_toml(&local).unwrap();
    // Passwords off needs a provider.
    let (field, _, _) =
        invalid(&with("").replace("[gateway]\n", "[gateway]\npassword_login = false\n"));
    assert_eq!(field, "gateway.password_login");
}
