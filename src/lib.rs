//! ash_gen_server: a hidden Erlang node written in Rust that hosts one actor per record.
//!
//! Data flows one way through these layers; each uses only the ones below it:
//!
//! - [`cluster`]: the cluster of nodes (`start --cluster`): Raft membership and the replicated
//!   log, applied to each member's record service through the protocol's requests.
//! - [`protocol`]: the public request and reply terms (docs/PROTOCOL.md), served by the
//!   `ash_gen_server` process, which owns the record service; one module per request.
//! - [`record`]: the record service: a registry per resource, one actor per record,
//!   supervision, lifetimes and expiry. It reaches the node only through its process API.
//! - [`storage`]: the journal on disk (`--data-dir`) that the registry writes records' changes
//!   to and the protocol restores them from; it only keeps terms safe, knowing no records.
//! - [`node`]: the node as a platform for processes: connections to peers, the [`node::Process`]
//!   behaviour, registered names, monitors and links, `gen_server` call/cast/reply. It knows
//!   nothing of the protocol or of records.
//! - [`wire`]: bytes on sockets: EPMD, the distribution handshake, frames, the term codec.
//! - [`query`]: filter evaluation, sorting, paging and aggregates over records.
//! - [`term`]: the term representation everything above shares.
//!
//! `main.rs` wires them: it starts a [`node::Node`], then [`protocol::Server::start`] registers
//! the record service's process on it, and with `--cluster` [`cluster::Cluster::start`] makes
//! it a member; [`embedded`] does the same (without a cluster) inside any Rust program and
//! offers a typed API over it. Beside them: [`client`], a one-shot caller
//! (`ash-gen-server call`), and [`config`], resources defined at start from a JSON file.

#![warn(missing_docs)]

pub mod client;
pub mod cluster;
pub mod config;
pub mod control;
pub mod embedded;
pub mod metrics;
pub mod node;
pub mod protocol;
pub mod query;
pub mod record;
pub mod settings;
pub mod status;
pub mod storage;
pub mod term;
pub mod wire;
