//! The grant state machine: `active` → `expired` | `revoked` | `relinquished`.
//!
//! The clock starts at final approval. An approved extension continues an
//! active grant without a gap: the new end is the old end plus the extension.

use crate::clock::Time;
use crate::request::{Request, RequestState};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantState {
    Active,
    Expired,
    Revoked,
    Relinquished,
}

impl GrantState {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantState::Active => "active",
            GrantState::Expired => "expired",
            GrantState::Revoked => "revoked",
            GrantState::Relinquished => "relinquished",
        }
    }

    pub fn parse(s: &str) -> Option<GrantState> {
        [
            GrantState::Active,
            GrantState::Expired,
            GrantState::Revoked,
            GrantState::Relinquished,
        ]
        .into_iter()
        .find(|st| st.as_str() == s)
    }
}

/// How a grant ends before its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GrantEnd {
    Revoked,
    Relinquished,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("grant is {0}, not active")]
    NotActive(&'static str),
    #[error("only the grant's holder can relinquish it")]
    NotHolder,
    #[error("request {0} is not approved")]
    NotApproved(i64),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: i64,
    pub user: String,
    pub role: String,
    pub database: String,
    pub request_id: i64,
    /// A statement grant (approve_each): only this exact text, once.
    #[serde(default)]
    pub statement: Option<String>,
    pub starts_at: Time,
    pub expires_at: Time,
    pub state: GrantState,
    pub ended_at: Option<Time>,
    pub ended_by: Option<String>,
}

impl Grant {
    /// The grant of an approved request; its clock starts at approval.
    pub fn start(request: &Request) -> Result<Grant, GrantError> {
        let approved_at = match (request.state, request.decided_at) {
            (RequestState::Approved, Some(t)) => t,
            _ => return Err(GrantError::NotApproved(request.id)),
        };
        Ok(Grant {
            id: 0,
            user: request.user.clone(),
            role: request.role.clone(),
            database: request.database.clone(),
            request_id: request.id,
            statement: request.statement.clone(),
            starts_at: approved_at,
            expires_at: approved_at + request.duration(),
            state: GrantState::Active,
            ended_at: None,
            ended_by: None,
        })
    }

    /// Continues this grant with an approved extension request, without a gap,
    /// never past `starts_at + max_total` (the role's `max_total_duration`).
    /// Returns whether the extension was cut short by that bound.
    pub fn extend(
        &mut self,
        extension: &Request,
        max_total: chrono::Duration,
        now: Time,
    ) -> Result<bool, GrantError> {
        if extension.state != RequestState::Approved {
            return Err(GrantError::NotApproved(extension.id));
        }
        self.tick(now);
        if self.state != GrantState::Active {
            return Err(GrantError::NotActive(self.state.as_str()));
        }
        let limit = self.starts_at + max_total;
        let wanted = self.expires_at + extension.duration();
        self.expires_at = wanted.min(limit).max(self.expires_at);
        Ok(wanted > limit)
    }

    pub fn is_active(&self, now: Time) -> bool {
        self.state == GrantState::Active && now < self.expires_at
    }

    /// Marks the grant expired once its time is up. Returns true on that change.
    pub fn tick(&mut self, now: Time) -> bool {
        if self.state == GrantState::Active && now >= self.expires_at {
            self.state = GrantState::Expired;
            self.ended_at = Some(self.expires_at);
            return true;
        }
        false
    }

    /// Revoke (by an approver or admin; the caller checks who) or relinquish (holder).
    pub fn end(&mut self, how: GrantEnd, by: &str, now: Time) -> Result<(), GrantError> {
        self.tick(now);
        if self.state != GrantState::Active {
            return Err(GrantError::NotActive(self.state.as_str()));
        }
        if how == GrantEnd::Relinquished && by != self.user {
            return Err(GrantError::NotHolder);
        }
        self.state = match how {
            GrantEnd::Revoked => GrantState::Revoked,
            GrantEnd::Relinquished => GrantState::Relinquished,
        };
        self.ended_at = Some(now);
        self.ended_by = Some(by.to_string());
        Ok(())
    }
}
