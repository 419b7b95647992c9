//! The wire: everything between a socket and a decoded distribution message.
//!
//! [`epmd`] finds nodes, [`handshake`] authenticates a new connection, [`frame`] cuts the
//! connected stream into messages, and [`etf_guard`] checks untrusted term bytes first.

pub mod atom_cache;
pub mod dist;
pub mod epmd;
pub mod etf;
pub mod etf_guard;
pub mod frame;
pub mod handshake;
