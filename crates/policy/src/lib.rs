//! The access model: who may request which role, who must approve it in what
//! order, and how long the resulting grant lasts.
//!
//! - [`model`]: the policy as built from the configuration (groups, roles, chains),
//!   with the checks that refuse a chain that could never complete.
//! - [`request`]: the request state machine (`pending` → `approved` | `denied` |
//!   `expired` | `cancelled`) moving through its chain's stages.
//! - [`grant`]: the grant state machine (`active` → `expired` | `revoked` |
//!   `relinquished`), including extensions.
//! - [`clock`]: time is an input, never read from the system inside this crate.
//!
//! Invariants: no I/O, no async, no global state. Every decision is a function of
//! the current state, the input and the time given. The one part that changes
//! while jitgate runs is the [`model::Directory`] of people an identity
//! provider vouched for; it is filled from outside at sign-in. Persisting a transition (and
//! making it atomic against concurrent deciders) is the store's job.
#![forbid(unsafe_code)]

mod calls;
pub mod catalog;
pub mod classify;
pub mod clock;
pub mod grant;
pub mod lexing;
pub mod model;
pub mod privilege;
pub mod request;
pub mod rules;
pub mod syntax;
pub mod throttle;
pub mod tree;

pub use clock::{Clock, Time};
pub use grant::{Grant, GrantEnd, GrantError, GrantState};
pub use model::{Idp, Person, Policy, PolicyError, RolePolicy, StagePolicy};
pub use request::{Decision, DecisionError, FileError, Request, RequestState, Tick, Transition};
