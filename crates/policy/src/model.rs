//! The policy built from the configuration: users and their groups, managed
//! roles with their durations and approval chains.

use config::Config;
use std::collections::{BTreeMap, BTreeSet};

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
    /// user → groups
    users: BTreeMap<String, BTreeSet<String>>,
    roles: BTreeMap<String, RolePolicy>,
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
        let policy = Policy { users, roles };
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

    pub fn is_user(&self, user: &str) -> bool {
        self.users.contains_key(user)
    }

    /// Whether `user` is in any of `groups`.
    pub fn in_any(&self, user: &str, groups: &BTreeSet<String>) -> bool {
        self.users
            .get(user)
            .is_some_and(|mine| mine.iter().any(|g| groups.contains(g)))
    }

    pub fn in_group(&self, user: &str, group: &str) -> bool {
        self.users.get(user).is_some_and(|g| g.contains(group))
    }

    /// Users in any of `groups`.
    pub fn members(&self, groups: &BTreeSet<String>) -> BTreeSet<String> {
        self.users
            .iter()
            .filter(|(_, g)| g.iter().any(|x| groups.contains(x)))
            .map(|(u, _)| u.clone())
            .collect()
    }

    pub fn may_request(&self, user: &str, role: &RolePolicy) -> bool {
        self.in_any(user, &role.requesters)
    }
}
