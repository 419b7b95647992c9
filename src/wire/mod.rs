//! The wire: everything between a socket and a decoded distribution message.
//!
//! [`epmd`] finds nodes, [`tls`] wraps a connection in TLS when the cluster runs
//! `inet_tls_dist`, [`handshake`] authenticates a new connection, [`frame`] cuts the
//! connected stream into frames, [`atom_cache`] reads and writes their distribution headers,
//! [`dist`] turns them into distribution operations (and back), [`etf`] is the term codec, and
//! [`etf_guard`] checks term bytes that go to `eetf`. [`limits`] bounds what a peer can make the
//! node allocate.

pub mod atom_cache;
pub mod dist;
pub mod epmd;
pub mod etf;
pub mod etf_guard;
pub mod frame;
pub mod handshake;
pub mod limits;
pub mod tls;

pub use limits::Limits;
