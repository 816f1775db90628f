//! People from an identity provider: the directory next to `[[user]]`s.

use policy::{Person, Policy};
use std::collections::BTreeSet;

const CONFIG: &str = r#"
[gateway]
[[database]]
name = "app"
admin_url = "postgres://a@127.0.0.1/app"
[[group]]
name = "engineers"
[[group]]
name = "leads"
[[user]]
name = "root"
password = "x"
groups = ["engineers"]
[[role]]
name = "app_write"
database = "app"
requesters = ["engineers"]
chain = [{ approvers = ["leads"], min = 2 }]
[[identity_provider]]
name = "corp"
issuer = "https://idp.example.com"
client_id = "j"
group_map = { "dba" = "leads", "eng" = "engineers" }
"#;

fn person(subject: &str, groups: &[&str]) -> Person {
    Person {
        groups: groups.iter().map(|g| g.to_string()).collect(),
        provider: "corp".into(),
        issuer: "https://idp.example.com".into(),
        subject: subject.into(),
    }
}

#[test]
fn signed_in_people_count_with_their_latest_groups() {
    // Two approvers needed, nobody configured in `leads`: the provider fills
    // that group, so the chain is not refused as unreachable.
    let p = Policy::from_config(&config::Config::from_toml(CONFIG).unwrap()).unwrap();
    let leads: BTreeSet<String> = ["leads".to_string()].into();
    assert!(!p.is_user("bob"));
    p.vouch("bob", person("b1", &["leads"]));
    assert!(p.is_user("bob") && p.in_any("bob", &leads));
    assert_eq!(p.members(&leads), ["bob".to_string()].into());
    assert_eq!(p.person("bob").unwrap().subject, "b1");
    // Clones share the directory (the API and the enforcer hold one each).
    let clone = p.clone();
    clone.vouch("bob", person("b1", &["engineers"]));
    assert!(!p.in_any("bob", &leads));
    assert!(p.may_request("bob", p.role("app_write").unwrap()));
    // In no mapped group any more: not a user at all.
    p.vouch("bob", person("b1", &[]));
    assert!(!p.is_user("bob") && p.members(&leads).is_empty());
    // A configured user is never replaced or joined by a provider's word.
    p.vouch("root", person("r1", &["leads"]));
    assert!(!p.in_group("root", "leads") && p.person("root").is_none());
    assert!(p.is_configured("root") && !p.is_configured("bob"));
}
