//! What goes wrong with records: [`StoreError`], the errors requests answer (the protocol
//! renders them), and [`TurnError`], why a record's actor crashed (rendered here, by
//! [`TurnError::to_term`], as the crash reason). Nothing here knows the registry or the actors.

use crate::term::{Atom, Value};

/// Why a registry operation failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StoreError {
    /// No record with that key.
    #[error("no such record")]
    NotFound,
    /// A condition did not hold.
    #[error("the record does not match the condition")]
    Stale,
    /// The key is taken (the primary-key map is attached).
    #[error("a record with primary key {0:?} already exists")]
    AlreadyExists(Value),
    /// An identity would be duplicated: its name and the clashing values.
    #[error("identity {0:?} is taken by {1:?}")]
    IdentityConflict(Value, Value),
    /// The resource was never defined.
    #[error("unknown resource {0}")]
    UnknownResource(Atom),
    /// Key fields are missing or nil.
    #[error("primary key fields missing: {0:?}")]
    MissingPrimaryKey(Vec<Atom>),
    /// Redefinition with another primary key while records exist.
    #[error("the resource has records with primary key {0:?}")]
    PrimaryKeyMismatch(Vec<Atom>),
    /// Upsert keys are neither the primary key nor an identity.
    #[error("upsert keys {0:?} are neither the primary key nor an identity")]
    UnknownUpsertKeys(Vec<Atom>),
    /// The request is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The record's actor failed while handling the request.
    #[error("the record's actor crashed: {0:?}")]
    RecordCrashed(Value),
    /// A value expression failed (its term is attached); nothing changed.
    #[error("an expression failed: {0:?}")]
    Expr(Value),
}

/// Why a turn failed: the record's actor crashed, and its supervisor decides what follows.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TurnError {
    /// An internal error injected on purpose (a `fault` request of kind `error`).
    #[error("fault injected by request")]
    FaultInjected,
    /// The turn panicked with this message.
    #[error("{0}")]
    Panicked(String),
}

impl TurnError {
    /// The failure as a term: the reason in `{record_crashed, Reason}` and the old pid's exit
    /// reason — `{internal_error, Message}` or `{panic, Message}`.
    pub fn to_term(&self) -> Value {
        let kind = match self {
            TurnError::FaultInjected => "internal_error",
            TurnError::Panicked(_) => "panic",
        };
        Value::pair(
            Value::Atom(Atom::from_static(kind)),
            Value::from(self.to_string().as_str()),
        )
    }
}
