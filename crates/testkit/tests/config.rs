//! The shared test configuration is one jitgate loads, with what it says.

use testkit::config::{password, App};

#[test]
fn the_app_configuration_loads_as_described() {
    let text = App::new("postgres://admin@127.0.0.1:5432/app")
        .gateway("login_role_prefix = \"t_\"")
        .person("carol", &["engineers", "auditors"])
        .person("dave", &["ops"])
        .default_duration("20m")
        .reason_required()
        .extra("[[rule]]\ndatabase = \"app\"\nactions = [\"ddl\"]\nrole = \"deny\"\n")
        .toml();
    let cfg = config::Config::from_toml(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let people: Vec<(&str, Vec<&str>)> = cfg
        .users
        .iter()
        .map(|u| {
            (
                u.name.as_str(),
                u.groups.iter().map(String::as_str).collect(),
            )
        })
        .collect();
    assert_eq!(
        people,
        [
            ("alice", vec!["engineers"]),
            ("bob", vec!["leads"]),
            ("carol", vec!["engineers", "auditors"]),
            ("dave", vec!["ops"]),
        ]
    );
    assert_eq!(cfg.gateway.login_role_prefix, "t_");
    assert_eq!(
        cfg.roles[0].default_duration,
        std::time::Duration::from_secs(1200)
    );
    assert!(cfg.roles[0].reason_required);
    assert_eq!(cfg.rules.len(), 2);
    assert_eq!(password("bob"), "bob-pw");
}
