//! The configuration most end-to-end suites run: one database `app`
//! (baseline role `app_read`), people in groups, the role `app_write`
//! requested by `engineers` and approved by one of `leads`, and writes on
//! `public.*` needing it. Suites change what they test and keep the rest.
//!
//! ```
//! let text = testkit::config::App::new("postgres://admin@127.0.0.1:5432/app")
//!     .gateway("login_role_prefix = \"t1_\"")
//!     .default_duration("20m")
//!     .toml();
//! assert!(text.contains("default_duration = \"20m\""));
//! ```

pub struct App {
    admin_url: String,
    gateway: Vec<String>,
    people: Vec<(String, Vec<String>)>,
    default_duration: String,
    reason_required: bool,
    extra: Vec<String>,
}

/// Every person's password in [`App`]: their name and `-pw` (`alice-pw`).
pub fn password(user: &str) -> String {
    format!("{user}-pw")
}

impl App {
    /// alice (engineers), bob (leads), carol (auditors); grants of 15 minutes.
    pub fn new(admin_url: &str) -> App {
        let person = |name: &str, group: &str| (name.to_string(), vec![group.to_string()]);
        App {
            admin_url: admin_url.to_string(),
            gateway: Vec::new(),
            people: vec![
                person("alice", "engineers"),
                person("bob", "leads"),
                person("carol", "auditors"),
            ],
            default_duration: "15m".into(),
            reason_required: false,
            extra: Vec::new(),
        }
    }

    /// A line of `[gateway]` (`key = value`).
    pub fn gateway(mut self, line: impl Into<String>) -> App {
        self.gateway.push(line.into());
        self
    }

    /// Adds a person, or changes the groups of one already there.
    pub fn person(mut self, name: &str, groups: &[&str]) -> App {
        let groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        match self.people.iter_mut().find(|(n, _)| n == name) {
            Some(p) => p.1 = groups,
            None => self.people.push((name.to_string(), groups)),
        }
        self
    }

    /// Nobody in `[[user]]` (add people back with [`App::person`]).
    pub fn no_people(mut self) -> App {
        self.people.clear();
        self
    }

    pub fn default_duration(mut self, d: &str) -> App {
        self.default_duration = d.into();
        self
    }

    /// Requests for `app_write` must say why.
    pub fn reason_required(mut self) -> App {
        self.reason_required = true;
        self
    }

    /// More tables (`[[rule]]`, `[[role]]`, `[[webhook]]`, ...), appended as written.
    pub fn extra(mut self, toml: &str) -> App {
        self.extra.push(toml.to_string());
        self
    }

    pub fn toml(&self) -> String {
        let mut groups: Vec<&str> = vec!["engineers", "leads"];
        for (_, gs) in &self.people {
            for g in gs {
                if !groups.contains(&g.as_str()) {
                    groups.push(g);
                }
            }
        }
        let mut t = format!("[gateway]\n{}\n\n", self.gateway.join("\n"));
        t += &format!(
            "[[database]]\nname = \"app\"\nadmin_url = \"{}\"\nbaseline_roles = [\"app_read\"]\n\
             tls = \"disable\"\n\n",
            self.admin_url
        );
        for g in groups {
            t += &format!("[[group]]\nname = \"{g}\"\n");
        }
        for (name, gs) in &self.people {
            let gs: Vec<String> = gs.iter().map(|g| format!("\"{g}\"")).collect();
            t += &format!(
                "\n[[user]]\nname = \"{name}\"\npassword = \"{}\"\ngroups = [{}]\n",
                password(name),
                gs.join(", ")
            );
        }
        t += &format!(
            "\n[[role]]\nname = \"app_write\"\ndatabase = \"app\"\nrequesters = [\"engineers\"]\n\
             default_duration = \"{}\"\nreason_required = {}\n\
             chain = [{{ approvers = [\"leads\"], min = 1 }}]\n\n\
             [[rule]]\ndatabase = \"app\"\nactions = [\"write\"]\nobjects = [\"public.*\"]\n\
             role = \"app_write\"\n",
            self.default_duration, self.reason_required
        );
        for e in &self.extra {
            t += "\n";
            t += e;
        }
        t
    }
}
