//! Records: the registry of resources, one actor per record, supervision, lifetimes.
//!
//! [`service`] is the record service a node process owns; [`registry`] maps
//! `{Resource, PrimaryKey}` to a record's actor; [`actor`] is the actor; [`supervisor`] decides
//! restarts; [`timers`] and [`expiry`] make records expire. Records reach the node only through
//! its process API (spawn, send, exit, monitor).

pub mod actor;
pub mod expiry;
pub mod registry;
pub mod service;
pub mod supervisor;
pub mod timers;

pub use actor::{Envelope, Fault, Op, Outcome, RecordActor, Reply, ReplyTo, Upsert, UpsertKind};
pub use expiry::Expiry;
pub use registry::{Identity, Key, Resource, ResourceConfig, Store, StoreError};
pub use service::RecordService;
pub use supervisor::RestartPolicy;
pub use timers::Timers;
