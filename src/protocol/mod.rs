//! The public protocol: request terms in, reply terms out (docs/PROTOCOL.md is its reference).
//!
//! [`request`] parses, [`server`] serves (it is the `ash_gen_server` process), [`reply`] renders.

pub mod reply;
pub mod request;
pub mod server;
