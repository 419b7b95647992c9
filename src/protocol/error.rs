//! Errors of the protocol, and the one place where an error becomes the `Reason` of an
//! `{error, Reason}` reply (docs/PROTOCOL.md, "Errors").

use crate::query::AggregateError;
use crate::record::StoreError;
use crate::term::{Atom, Value};

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Error {
    /// A known request with a malformed argument: what is wrong, in words.
    #[error("bad request: {0}")]
    BadRequest(String),
    /// Not a request this node knows (the whole request is attached).
    #[error("unknown request {0:?}")]
    UnknownRequest(Value),
    /// The store refused.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An aggregate could not be computed.
    #[error(transparent)]
    Aggregate(#[from] AggregateError),
    /// A `fault` request to a node started without `--enable-fault-injection`.
    #[error("fault injection is disabled on this node")]
    FaultInjectionDisabled,
    /// A cluster cannot serve the request now (no leader, no majority, a member unreachable):
    /// nothing was applied, or (after a timeout) it may have been; the text says which.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

/// A result of the protocol layer.
pub type Result<T> = std::result::Result<T, Error>;

/// A malformed request: `Err(Error::BadRequest(message))`.
pub fn bad<T>(message: impl Into<String>) -> Result<T> {
    Err(Error::BadRequest(message.into()))
}

fn atom(name: &'static str) -> Value {
    Value::Atom(Atom::from_static(name))
}

fn atoms_list(fields: &[Atom]) -> Value {
    Value::list(fields.iter().map(|f| Value::Atom(*f)).collect())
}

impl Error {
    /// The `Reason` term of the `{error, Reason}` reply.
    pub fn to_term(&self) -> Value {
        match self {
            Error::BadRequest(message) => {
                Value::pair(atom("bad_request"), Value::from(message.as_str()))
            }
            Error::UnknownRequest(request) => Value::pair(atom("unknown_request"), request.clone()),
            Error::FaultInjectionDisabled => atom("fault_injection_disabled"),
            Error::Unavailable(text) => {
                Value::pair(atom("unavailable"), Value::from(text.as_str()))
            }
            Error::Aggregate(AggregateError::NotANumber { field, value }) => Value::tuple(vec![
                atom("not_a_number"),
                Value::Atom(*field),
                value.clone(),
            ]),
            Error::Aggregate(AggregateError::FloatOverflow { field }) => {
                Value::pair(atom("float_overflow"), Value::Atom(*field))
            }
            Error::Store(e) => match e {
                StoreError::NotFound => atom("not_found"),
                StoreError::Stale => atom("stale"),
                StoreError::AlreadyExists(pk) => Value::pair(atom("already_exists"), pk.clone()),
                StoreError::IdentityConflict(name, values) => Value::tuple(vec![
                    atom("identity_conflict"),
                    name.clone(),
                    values.clone(),
                ]),
                StoreError::UnknownResource(r) => {
                    Value::pair(atom("unknown_resource"), Value::Atom(*r))
                }
                StoreError::MissingPrimaryKey(fields) => {
                    Value::pair(atom("missing_primary_key"), atoms_list(fields))
                }
                StoreError::PrimaryKeyMismatch(fields) => {
                    Value::pair(atom("primary_key_mismatch"), atoms_list(fields))
                }
                StoreError::UnknownUpsertKeys(fields) => {
                    Value::pair(atom("unknown_upsert_keys"), atoms_list(fields))
                }
                StoreError::BadRequest(message) => Error::BadRequest(message.clone()).to_term(),
                StoreError::RecordCrashed(reason) => {
                    Value::pair(atom("record_crashed"), reason.clone())
                }
                StoreError::Expr(term) => Value::pair(atom("expr_error"), term.clone()),
            },
        }
    }

    /// The whole reply: `{error, Reason}`.
    pub fn to_reply(&self) -> Value {
        Value::pair(Value::Atom(*crate::term::atoms::ERROR), self.to_term())
    }

    /// The reply of a request about many records that failed, as a whole, on its `n`th record
    /// (from 1): `{error, {record, N, Reason}}`.
    pub fn to_reply_about_record(&self, n: usize) -> Value {
        let reason = Value::tuple(vec![atom("record"), Value::Int(n as i64), self.to_term()]);
        Value::pair(Value::Atom(*crate::term::atoms::ERROR), reason)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::parse_term;

    fn shown(e: impl Into<Error>) -> String {
        format!("{:?}", e.into().to_reply())
    }

    #[test]
    fn every_error_renders_as_documented() {
        let a = |s: &str| Atom::new(s).unwrap();
        let pk = parse_term("#{id => 1}").unwrap();
        let cases: Vec<(Error, &str)> = vec![
            (StoreError::NotFound.into(), "{error,not_found}"),
            (StoreError::Stale.into(), "{error,stale}"),
            (
                StoreError::AlreadyExists(pk.clone()).into(),
                "{error,{already_exists,#{id => 1}}}",
            ),
            (
                StoreError::IdentityConflict(Value::Atom(a("email")), pk).into(),
                "{error,{identity_conflict,email,#{id => 1}}}",
            ),
            (
                StoreError::UnknownResource(a("r")).into(),
                "{error,{unknown_resource,r}}",
            ),
            (
                StoreError::MissingPrimaryKey(vec![a("id")]).into(),
                "{error,{missing_primary_key,[id]}}",
            ),
            (
                StoreError::PrimaryKeyMismatch(vec![a("id")]).into(),
                "{error,{primary_key_mismatch,[id]}}",
            ),
            (
                StoreError::UnknownUpsertKeys(vec![a("x")]).into(),
                "{error,{unknown_upsert_keys,[x]}}",
            ),
            (
                StoreError::BadRequest("no".into()).into(),
                "{error,{bad_request,<<\"no\">>}}",
            ),
            (
                StoreError::RecordCrashed(Value::Atom(a("boom"))).into(),
                "{error,{record_crashed,boom}}",
            ),
            (
                Error::BadRequest("no".into()),
                "{error,{bad_request,<<\"no\">>}}",
            ),
            (
                Error::UnknownRequest(Value::Atom(a("hello"))),
                "{error,{unknown_request,hello}}",
            ),
            (
                Error::FaultInjectionDisabled,
                "{error,fault_injection_disabled}",
            ),
            (
                StoreError::Expr(Value::Atom(a("boom"))).into(),
                "{error,{expr_error,boom}}",
            ),
            (
                AggregateError::NotANumber {
                    field: a("x"),
                    value: Value::from("2"),
                }
                .into(),
                "{error,{not_a_number,x,<<\"2\">>}}",
            ),
            (
                AggregateError::FloatOverflow { field: a("x") }.into(),
                "{error,{float_overflow,x}}",
            ),
        ];
        for (error, expected) in cases {
            assert_eq!(shown(error), expected);
        }
    }
}
