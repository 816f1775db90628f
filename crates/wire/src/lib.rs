//! PostgreSQL v3 wire protocol: framing and the few messages jitgate looks inside.
//!
//! The gateway relays almost every byte untouched. This crate knows just enough to
//! find message boundaries, read the startup packet, read the SQL text of `Query`
//! and `Parse`, run the server side of authentication, and write the messages the
//! gateway itself answers with (errors, authentication, `ReadyForQuery`, ...).
//!
//! Layout:
//! - [`frame`]: message headers and length limits, shared by both directions.
//! - [`startup`]: the untagged first packet (startup, SSL/GSS requests, cancel).
//! - [`frontend`]: reading the client messages the gateway inspects.
//! - [`backend`]: writing the server messages the gateway sends itself, and reading
//!   the fields of a server `ErrorResponse`.
//!
//! Invariant: no I/O, no async, no allocation on the header path. Every parser takes
//! a byte slice and returns a typed error on malformed input; nothing here panics on
//! hostile bytes (see the tests at the bottom of each module).
#![forbid(unsafe_code)]

pub mod backend;
pub mod encoding;
pub mod frame;
pub mod frontend;
pub mod startup;

pub use frame::{Header, WireError};

/// Message tags the gateway cares about, named as in the PostgreSQL documentation.
pub mod tag {
    // Frontend (client → server).
    pub const QUERY: u8 = b'Q';
    pub const PARSE: u8 = b'P';
    pub const SYNC: u8 = b'S';
    pub const FUNCTION_CALL: u8 = b'F';
    pub const TERMINATE: u8 = b'X';
    pub const PASSWORD: u8 = b'p';
    pub const DESCRIBE: u8 = b'D';
    pub const BIND: u8 = b'B';
    pub const EXECUTE: u8 = b'E';
    // Backend (server → client).
    pub const AUTHENTICATION: u8 = b'R';
    pub const BACKEND_KEY_DATA: u8 = b'K';
    pub const ERROR_RESPONSE: u8 = b'E';
    pub const NOTICE_RESPONSE: u8 = b'N';
    pub const PARAMETER_STATUS: u8 = b'S';
    pub const READY_FOR_QUERY: u8 = b'Z';
    pub const NEGOTIATE_PROTOCOL_VERSION: u8 = b'v';
    pub const COPY_IN_RESPONSE: u8 = b'G';
    pub const COPY_OUT_RESPONSE: u8 = b'H';
    pub const COPY_BOTH_RESPONSE: u8 = b'W';
}
