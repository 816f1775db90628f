//! What jitgate's test suites share, so an attack written for one crate's
//! tests is the same bytes in another's.
//!
//! - [`raw`]: a raw protocol client that builds messages byte by byte,
//!   authenticates with SCRAM and reads whatever comes back: for pipelines,
//!   fast-path calls, hostile startup packets and anything a driver would
//!   never send.
//!
//! Test-only: no crate depends on it outside `[dev-dependencies]`.
#![forbid(unsafe_code)]

pub mod raw;
