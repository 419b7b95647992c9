//! Durable storage on disk (`ash-gen-server start --data-dir DIR`).
//!
//! [`journal`] is an append-only file of checksummed entries (terms), written before a change
//! is acknowledged and flushed to disk by the chosen [`FsyncPolicy`]. What the entries mean is
//! the record service's business; this module only keeps bytes safe and reads them back.
//! [`replace`] writes a file whole or not at all (the journal's rewrite, the cluster's snapshot).

pub mod journal;
pub mod replace;

pub use journal::{FsyncPolicy, Journal, JournalError};
