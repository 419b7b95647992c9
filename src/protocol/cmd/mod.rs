//! One module per request of docs/PROTOCOL.md: its type, how it is parsed from the request's
//! arguments, and how it is served.

pub mod aggregate;
pub mod bulk_create;
pub mod clear;
pub mod cluster;
pub mod create;
pub mod define;
pub mod destroy;
pub mod destroy_where;
pub mod fault;
pub mod get;
pub mod info;
pub mod keep_alive;
pub mod ping;
pub mod query;
pub mod resources;
pub mod stats;
pub mod subscribe;
pub mod update;
pub mod update_where;
pub mod upsert;
pub mod whereis;
