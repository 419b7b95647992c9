//! ash_gen_server: a hidden Erlang node written in Rust that hosts one actor per record.
//!
//! Data flows one way through these modules:
//!
//! - [`wire`]: bytes on sockets: EPMD, the distribution handshake, frames.
//! - [`node`]: the node itself: connections to peers, local processes, monitors and links,
//!   routing of incoming messages.
//! - [`protocol`]: the public request and reply terms, served by the `ash_gen_server` process.
//! - [`record`]: the records: a registry per resource, one actor per record, supervision,
//!   lifetimes and expiry.
//! - [`query`]: filter evaluation, sorting, paging and aggregates over a resource's records.
//! - [`term`]: the term representation everything above shares.
//!
//! Beside them: [`client`], a one-shot caller (`ash-gen-server call`), and [`config`], resources
//! defined at start from a JSON file.

#![warn(missing_docs)]

pub mod client;
pub mod config;
pub mod node;
pub mod protocol;
pub mod query;
pub mod record;
pub mod term;
pub mod wire;
