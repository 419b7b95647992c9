//! The cluster of Rust nodes (work in progress): where each record lives.
//!
//! [`placement`] maps a record to one of a fixed number of shards by a hash that is the same
//! on every build and version, and a shard to the Rust nodes that hold it by rendezvous
//! hashing, so adding or removing a node moves only that node's share. Replication of each
//! shard (a Raft group per shard), forwarding and handoff build on it.

pub mod placement;
