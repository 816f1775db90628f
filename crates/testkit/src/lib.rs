//! What jitgate's test suites share, so an attack written for one crate's
//! tests is the same bytes in another's.
//!
//! - [`config`]: the configuration most end-to-end suites run (database
//!   `app`, alice, bob and carol, `app_write` approved by a lead), changed
//!   where a suite tests something else.
//! - [`raw`]: a raw protocol client that builds messages byte by byte,
//!   authenticates with SCRAM and reads whatever comes back: for pipelines,
//!   fast-path calls, hostile startup packets and anything a driver would
//!   never send.
//!
//! Test-only: no crate depends on it outside `[dev-dependencies]`.
#![forbid(unsafe_code)]

pub mod config;
pub mod raw;
