//! Durable storage on disk (`ash-gen-server start --data-dir DIR`).
//!
//! [`journal`] is an append-only file of checksummed entries (terms), written before a change
//! is acknowledged and flushed to disk by the chosen [`FsyncPolicy`]. What the entries mean is
//! the record service's business; this module only keeps bytes safe and reads them back.

pub mod journal;

pub use journal::{FsyncPolicy, Journal, JournalError};
