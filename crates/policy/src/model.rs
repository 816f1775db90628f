//! The policy built from the configuration: users and their groups, managed
//! roles with their durations and approval chains.

use config::Config;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, RwLock};

/// A chain that can never complete, or a role nobody can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "invalid `role[{index}].chain[{stage}].min` (role `{role}`): min = {min} but only {eligible} \
         distinct people could ever approve it (approvers and escalation groups, counting each \
         person once across the chain, less one when a requester is also an approver)"
    )]
    Unreachable {
        /// Position of the role in the configuration.
        index: usize,
        role: String,
        stage: usize,
        min: u32,
        eligible: usize,
    },
}

#[derive(Debug, Clone)]
pub struct StagePolicy {
    pub approvers: BTreeSet<String>,
    pub min: u32,
    pub escalate_after: Option<chrono::Duration>,
    pub escalate_to: BTreeSet<String>,
}

#[derive(Debug, Clone)]
pub struct RolePolicy {
    pub name: String,
    pub database: String,
    pub requesters: BTreeSet<String>,
    pub default_duration: chrono::Duration,
    pub max_duration: chrono::Duration,
    /// A grant's whole life, extensions included, is at most this long.
    pub max_total_duration: chrono::Duration,
    pub reason_required: bool,
    pub request_ttl: chrono::Duration,
    pub chain: Vec<StagePolicy>,
    /// Position in the configuration, for error messages.
    pub index: usize,
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// user → groups, from `[[user]]`.
    users: BTreeMap<String, BTreeSet<String>>,
    roles: BTreeMap<String, RolePolicy>,
    /// People an identity provider vouched for (shared by clones).
    directory: Arc<Directory>,
    /// Groups an identity provider fills (`group_map` targets): how many
    /// people they hold is not known from the configuration.
    open_groups: BTreeSet<String>,
}

/// Someone an identity provider vouched for at their last sign-in.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Person {
    /// jitgate groups (mapped from the provider's); empty: no longer allowed.
    pub groups: BTreeSet<String>,
    /// `[[identity_provider]] name`.
    pub provider: String,
    pub issuer: String,
    /// The provider's `sub`: one user name belongs to one subject.
    pub subject: String,
}

/// Who someone is at their identity provider (in audit records and requests).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Idp {
    pub provider: String,
    pub issuer: String,
    pub subject: String,
}

impl Person {
    pub fn idp(&self) -> Idp {
        Idp {
            provider: self.provider.clone(),
            issuer: self.issuer.clone(),
            subject: self.subject.clone(),
        }
    }
}

/// The people identity providers vouched for: the one part of the policy
/// that changes while jitgate runs (at each sign-in, see `api::sso`).
/// `[[user]]`s take precedence: a configured name is never taken from here.
#[derive(Debug, Default)]
pub struct Directory {
    people: RwLock<BTreeMap<String, Person>>,
}

impl Directory {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<String, Person>> {
        self.people.read().unwrap_or_else(|e| e.into_inner())
    }
}

fn dur(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).expect("config durations are at most a year")
}

impl Policy {
    /// Builds the policy from a validated configuration and refuses chains that
    /// could never complete.
    pub fn from_config(cfg: &Config) -> Result<Policy, PolicyError> {
        let users = cfg
            .users
            .iter()
            .map(|u| (u.name.clone(), u.groups.iter().cloned().collect()))
            .collect();
        let roles = cfg
            .roles
            .iter()
            .enumerate()
            .map(|(index, r)| {
                let role = RolePolicy {
                    name: r.name.clone(),
                    database: r.database.clone(),
                    requesters: r.requesters.iter().cloned().collect(),
                    default_duration: dur(r.default_duration),
                    max_duration: dur(r.max_duration),
                    max_total_duration: dur(r.max_total()),
                    reason_required: r.reason_required,
                    request_ttl: dur(r.request_ttl),
                    chain: r
                        .chain
                        .iter()
                        .map(|s| StagePolicy {
                            approvers: s.approvers.iter().cloned().collect(),
                            min: s.min,
                            escalate_after: s.escalate_after.map(dur),
                            escalate_to: s.escalate_to.iter().cloned().collect(),
                        })
                        .collect(),
                    index,
                };
                (r.name.clone(), role)
            })
            .collect();
        let open_groups = cfg
            .identity_providers
            .iter()
            .flat_map(|p| p.group_map.values().cloned())
            .collect();
        let policy = Policy {
            users,
            roles,
            directory: Arc::default(),
            open_groups,
        };
        policy.check_reachable()?;
        Ok(policy)
    }

    /// Builds a policy directly (tests, and callers that hold no `Config`).
    pub fn new(
        users: BTreeMap<String, BTreeSet<String>>,
        roles: Vec<RolePolicy>,
    ) -> Result<Policy, PolicyError> {
        let policy = Policy {
            users,
            roles: roles.into_iter().map(|r| (r.name.clone(), r)).collect(),
            ..Policy::default()
        };
        policy.check_reachable()?;
        Ok(policy)
    }

    /// Every stage must be completable by distinct people, for any requester:
    /// one person counts once across the whole chain, and a requester who is
    /// also an approver cannot approve their own request.
    fn check_reachable(&self) -> Result<(), PolicyError> {
        for role in self.roles.values() {
            let requesters = self.members(&role.requesters);
            let mut pool = BTreeSet::new();
            let mut needed = 0usize;
            for (i, stage) in role.chain.iter().enumerate() {
                let open =
                    |groups: &BTreeSet<String>| groups.iter().any(|g| self.open_groups.contains(g));
                if open(&stage.approvers) || open(&stage.escalate_to) {
                    // An identity provider fills it: no count to check.
                    continue;
                }
                let stage_people: BTreeSet<String> = self
                    .members(&stage.approvers)
                    .union(&self.members(&stage.escalate_to))
                    .cloned()
                    .collect();
                pool.extend(stage_people.iter().cloned());
                needed += stage.min as usize;
                let unreachable = |eligible: usize| PolicyError::Unreachable {
                    index: role.index,
                    role: role.name.clone(),
                    stage: i,
                    min: stage.min,
                    eligible,
                };
                let stage_gap = usize::from(stage_people.iter().any(|p| requesters.contains(p)));
                let stage_eligible = stage_people.len().saturating_sub(stage_gap);
                if (stage.min as usize) > stage_eligible {
                    return Err(unreachable(stage_eligible));
                }
                let chain_gap = usize::from(pool.iter().any(|p| requesters.contains(p)));
                let left = pool
                    .len()
                    .saturating_sub(chain_gap + needed - stage.min as usize);
                if (stage.min as usize) > left {
                    return Err(unreachable(left));
                }
            }
        }
        Ok(())
    }

    pub fn role(&self, name: &str) -> Option<&RolePolicy> {
        self.roles.get(name)
    }

    pub fn roles(&self) -> impl Iterator<Item = &RolePolicy> {
        self.roles.values()
    }

    /// The groups of `user`: configured, or from their last sign-in.
    fn with_groups<T>(&self, user: &str, f: impl FnOnce(&BTreeSet<String>) -> T) -> Option<T> {
        if let Some(g) = self.users.get(user) {
            return Some(f(g));
        }
        self.directory.read().get(user).map(|p| f(&p.groups))
    }

    /// A configured user, or someone signed in through an identity provider
    /// who is (still) in a mapped group.
    pub fn is_user(&self, user: &str) -> bool {
        self.with_groups(user, |g| !g.is_empty()).unwrap_or(false)
    }

    /// Whether `user` is in any of `groups`.
    pub fn in_any(&self, user: &str, groups: &BTreeSet<String>) -> bool {
        self.with_groups(user, |mine| mine.iter().any(|g| groups.contains(g)))
            .unwrap_or(false)
    }

    pub fn in_group(&self, user: &str, group: &str) -> bool {
        self.with_groups(user, |g| g.contains(group))
            .unwrap_or(false)
    }

    /// Users in any of `groups` (people from identity providers as far as
    /// this process has seen them sign in).
    pub fn members(&self, groups: &BTreeSet<String>) -> BTreeSet<String> {
        let directory = self.directory.read();
        let people = directory
            .iter()
            .filter(|(u, _)| !self.users.contains_key(*u))
            .map(|(u, p)| (u, &p.groups));
        self.users
            .iter()
            .chain(people)
            .filter(|(_, g)| g.iter().any(|x| groups.contains(x)))
            .map(|(u, _)| u.clone())
            .collect()
    }

    /// Records what an identity provider said of `user` at sign-in (or as
    /// loaded from the state store). Configured users are never replaced.
    pub fn vouch(&self, user: &str, person: Person) {
        if self.users.contains_key(user) {
            return;
        }
        let mut people = self
            .directory
            .people
            .write()
            .unwrap_or_else(|e| e.into_inner());
        people.insert(user.to_string(), person);
    }

    /// Whether `user` is a `[[user]]` of the configuration.
    pub fn is_configured(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Who `user` is at their identity provider, if they signed in through one.
    pub fn idp(&self, user: &str) -> Option<Idp> {
        if self.users.contains_key(user) {
            return None;
        }
        self.directory.read().get(user).map(Person::idp)
    }

    /// The identity provider's word on `user`, if they signed in through one.
    pub fn person(&self, user: &str) -> Option<Person> {
        if self.users.contains_key(user) {
            return None;
        }
        self.directory.read().get(user).cloned()
    }

    pub fn may_request(&self, user: &str, role: &RolePolicy) -> bool {
        self.in_any(user, &role.requesters)
    }
}
