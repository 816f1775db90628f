//! The request state machine.
//!
//! A request moves through its role's chain one stage at a time. Rules:
//! - only the current stage can be decided, only by someone in its approver
//!   groups (or its escalation groups once escalated);
//! - never by the requester (not even through a group);
//! - one person counts once per request, across all stages;
//! - any eligible deny ends the request; a stage completes at `min` distinct
//!   approvers; the last stage completing approves the request;
//! - a pending request expires after the role's `request_ttl`; an expired or
//!   decided request cannot be decided.

use crate::clock::Time;
use crate::model::{Policy, RolePolicy};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    Pending,
    Approved,
    Denied,
    Expired,
    Cancelled,
}

impl RequestState {
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Denied => "denied",
            RequestState::Expired => "expired",
            RequestState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<RequestState> {
        [
            RequestState::Pending,
            RequestState::Approved,
            RequestState::Denied,
            RequestState::Expired,
            RequestState::Cancelled,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// One approver's approve/deny on one stage.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub approver: String,
    pub stage: usize,
    pub approve: bool,
    pub comment: String,
    pub at: Time,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub id: i64,
    pub user: String,
    pub role: String,
    pub database: String,
    pub reason: String,
    /// Length of the grant once approved, in seconds.
    pub duration_secs: i64,
    /// For a statement request (approve_each): the exact statement.
    pub statement: Option<String>,
    /// For a request filed by a refused statement: that statement.
    #[serde(default)]
    pub trigger: Option<String>,
    /// For an extension: the active grant it continues.
    pub extends_grant: Option<i64>,
    pub created_at: Time,
    /// Pending requests expire at this time.
    pub expires_at: Time,
    pub state: RequestState,
    /// Index of the current stage (== chain length once approved).
    pub stage: usize,
    pub stage_started_at: Time,
    pub escalated: bool,
    pub decisions: Vec<Decision>,
    pub decided_at: Option<Time>,
    /// The requester at their identity provider, if they signed in through one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requester_idp: Option<crate::model::Idp>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FileError {
    #[error("no managed role `{0}`")]
    UnknownRole(String),
    #[error("role `{role}` is managed on database `{expected}`, not `{got}`")]
    WrongDatabase {
        role: String,
        expected: String,
        got: String,
    },
    #[error("you are not among the requesters of role `{0}`")]
    NotRequester(String),
    #[error("role `{0}` requires a reason")]
    ReasonRequired(String),
    #[error("duration must be positive and at most {max_secs}s for role `{role}`")]
    BadDuration { role: String, max_secs: i64 },
    #[error(
        "extending grant {grant} by {asked_secs}s would make it last longer than role `{role}`'s \
         max_total_duration ({max_total_secs}s); at most {left_secs}s can still be added: \
         ask for less, or request the role anew after the grant ends"
    )]
    BeyondMaxTotal {
        grant: i64,
        role: String,
        asked_secs: i64,
        max_total_secs: i64,
        left_secs: i64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionError {
    #[error("request is {0}, not pending")]
    NotPending(&'static str),
    #[error("request has expired")]
    Expired,
    #[error("you cannot decide your own request")]
    OwnRequest,
    #[error("you already decided on this request")]
    AlreadyDecided,
    #[error("you are not an approver of the current stage ({stage})")]
    NotEligible { stage: usize },
    #[error("only the requester can cancel a request")]
    NotRequester,
}

/// What a decision did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    /// Counted; the stage is still open.
    Recorded,
    /// A stage completed and the next one opened.
    StageCompleted {
        stage: usize,
    },
    /// The last stage completed: the grant starts now.
    Approved,
    Denied,
}

/// Events from the passage of time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    Expired,
    Escalated { stage: usize },
}

impl Request {
    /// Refuses an extension of `grant` (the active grant this request would
    /// continue) that would outlive the role's `max_total_duration`.
    pub fn check_extension(&self, policy: &Policy, grant: &crate::Grant) -> Result<(), FileError> {
        let Some(rp) = policy.role(&self.role) else {
            return Err(FileError::UnknownRole(self.role.clone()));
        };
        let limit = grant.starts_at + rp.max_total_duration;
        if grant.expires_at + self.duration() > limit {
            return Err(FileError::BeyondMaxTotal {
                grant: grant.id,
                role: self.role.clone(),
                asked_secs: self.duration_secs,
                max_total_secs: rp.max_total_duration.num_seconds(),
                left_secs: (limit - grant.expires_at).num_seconds().max(0),
            });
        }
        Ok(())
    }

    /// A new pending request. `id` is assigned by the store (0 until then).
    #[allow(clippy::too_many_arguments)]
    pub fn file(
        policy: &Policy,
        user: &str,
        role: &str,
        database: &str,
        reason: &str,
        duration: Option<chrono::Duration>,
        statement: Option<String>,
        now: Time,
    ) -> Result<Request, FileError> {
        let rp = policy
            .role(role)
            .ok_or_else(|| FileError::UnknownRole(role.to_string()))?;
        if rp.database != database {
            return Err(FileError::WrongDatabase {
                role: role.to_string(),
                expected: rp.database.clone(),
                got: database.to_string(),
            });
        }
        if !policy.may_request(user, rp) {
            return Err(FileError::NotRequester(role.to_string()));
        }
        if rp.reason_required && reason.trim().is_empty() {
            return Err(FileError::ReasonRequired(role.to_string()));
        }
        let duration = duration.unwrap_or(rp.default_duration);
        if duration <= chrono::Duration::zero() || duration > rp.max_duration {
            return Err(FileError::BadDuration {
                role: role.to_string(),
                max_secs: rp.max_duration.num_seconds(),
            });
        }
        Ok(Request {
            id: 0,
            user: user.to_string(),
            role: role.to_string(),
            database: database.to_string(),
            reason: reason.trim().to_string(),
            duration_secs: duration.num_seconds(),
            statement,
            trigger: None,
            extends_grant: None,
            created_at: now,
            expires_at: now + rp.request_ttl,
            state: RequestState::Pending,
            stage: 0,
            stage_started_at: now,
            escalated: false,
            decisions: Vec::new(),
            decided_at: None,
            requester_idp: policy.idp(user),
        })
    }

    pub fn duration(&self) -> chrono::Duration {
        chrono::Duration::seconds(self.duration_secs)
    }

    fn role<'p>(&self, policy: &'p Policy) -> Option<&'p RolePolicy> {
        policy.role(&self.role)
    }

    /// Whether `who` may decide the current stage right now (no state change).
    pub fn check_eligible(
        &self,
        policy: &Policy,
        who: &str,
        now: Time,
    ) -> Result<(), DecisionError> {
        if self.state != RequestState::Pending {
            return Err(DecisionError::NotPending(self.state.as_str()));
        }
        if now >= self.expires_at {
            return Err(DecisionError::Expired);
        }
        if who == self.user {
            return Err(DecisionError::OwnRequest);
        }
        if self.decisions.iter().any(|d| d.approver == who) {
            return Err(DecisionError::AlreadyDecided);
        }
        let stage = self
            .role(policy)
            .and_then(|r| r.chain.get(self.stage))
            .ok_or(DecisionError::NotEligible { stage: self.stage })?;
        let eligible = policy.in_any(who, &stage.approvers)
            || (self.escalated && policy.in_any(who, &stage.escalate_to));
        if !eligible {
            return Err(DecisionError::NotEligible { stage: self.stage });
        }
        Ok(())
    }

    /// Applies one approver's decision on the current stage.
    pub fn decide(
        &mut self,
        policy: &Policy,
        who: &str,
        approve: bool,
        comment: &str,
        now: Time,
    ) -> Result<Transition, DecisionError> {
        if self.state == RequestState::Pending && now >= self.expires_at {
            self.state = RequestState::Expired;
            self.decided_at = Some(self.expires_at);
        }
        self.check_eligible(policy, who, now)?;
        self.decisions.push(Decision {
            approver: who.to_string(),
            stage: self.stage,
            approve,
            comment: comment.to_string(),
            at: now,
        });
        if !approve {
            self.state = RequestState::Denied;
            self.decided_at = Some(now);
            return Ok(Transition::Denied);
        }
        let chain = &self.role(policy).expect("checked above").chain;
        let approvals = self
            .decisions
            .iter()
            .filter(|d| d.stage == self.stage && d.approve)
            .count();
        if approvals < chain[self.stage].min as usize {
            return Ok(Transition::Recorded);
        }
        let completed = self.stage;
        self.stage += 1;
        self.stage_started_at = now;
        self.escalated = false;
        if self.stage == chain.len() {
            self.state = RequestState::Approved;
            self.decided_at = Some(now);
            Ok(Transition::Approved)
        } else {
            Ok(Transition::StageCompleted { stage: completed })
        }
    }

    /// The requester withdraws a pending request.
    pub fn cancel(&mut self, who: &str, now: Time) -> Result<(), DecisionError> {
        if self.state != RequestState::Pending {
            return Err(DecisionError::NotPending(self.state.as_str()));
        }
        if who != self.user {
            return Err(DecisionError::NotRequester);
        }
        self.state = RequestState::Cancelled;
        self.decided_at = Some(now);
        Ok(())
    }

    /// Expiry and escalation as time passes. At most one event per call.
    pub fn tick(&mut self, policy: &Policy, now: Time) -> Option<Tick> {
        if self.state != RequestState::Pending {
            return None;
        }
        if now >= self.expires_at {
            self.state = RequestState::Expired;
            self.decided_at = Some(self.expires_at);
            return Some(Tick::Expired);
        }
        let stage = self.role(policy)?.chain.get(self.stage)?;
        match stage.escalate_after {
            Some(after)
                if !self.escalated
                    && !stage.escalate_to.is_empty()
                    && now - self.stage_started_at >= after =>
            {
                self.escalated = true;
                Some(Tick::Escalated { stage: self.stage })
            }
            _ => None,
        }
    }
}
