//! The public protocol (docs/PROTOCOL.md is its reference): the `ash_gen_server` process and
//! the processes behind records' pids.
//!
//! [`server`] is the registered process; [`request`] tells which request a term is and [`cmd`]
//! has one module per request (its parse and how it is served); [`direct`] serves calls to a
//! record's own pid; [`service`] is the state requests are served with (it owns the record
//! service); [`args`] parses shared arguments; [`reply`] renders results and [`error`] errors.

pub mod args;
pub mod caller;
pub mod cmd;
pub mod direct;
pub mod error;
pub mod gather;
pub mod reply;
pub mod request;
pub mod server;
pub mod service;

pub use error::Error;
pub use server::{RunningServer, SERVER_NAME, Server};
pub use service::{Options, Service};
