//! Records: the registry of resources, one actor per record, supervision, lifetimes.
//!
//! Each module uses only the ones after it in this list:
//!
//! - [`service`]: the record service a node process owns, host of the actors: creating and
//!   upserting records, the background tasks, the expiry handlers' subscriptions.
//! - [`actor`]: a record's actor: its mailbox, turns, lifetimes and failures.
//! - [`registry`]: maps `{Resource, PrimaryKey}` to a record's actor (of any type: it knows none).
//! - [`timers`] and [`expiry`]: the deadlines and the expiry handlers that make records expire.
//! - [`op`], [`error`] and [`supervisor`]: what a record is asked and answers, what goes wrong,
//!   and when a failed actor restarts.
//!
//! Records reach the node only through its process API (spawn, send, exit, monitor).

pub mod actor;
pub mod error;
pub mod expiry;
pub mod op;
pub mod registry;
pub mod service;
pub mod supervisor;
pub mod timers;

pub use actor::{Envelope, Host, RecordActor, Reply, ReplyTo, Resource, Store};
pub use error::{StoreError, TurnError};
pub use expiry::Expiry;
pub use op::{Fault, Op, Outcome, Upsert, UpsertKind};
pub use registry::{Identity, Key, ResourceConfig};
pub use service::RecordService;
pub use supervisor::RestartPolicy;
pub use timers::Timers;
