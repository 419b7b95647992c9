//! Reply terms: how results and errors look on the wire (see docs/PROTOCOL.md).

use crate::record::{Outcome, StoreError, UpsertKind};
use crate::term::{Atom, Record, Value, atoms};
use crate::wire::etf::TermWriter;

fn atom(name: &'static str) -> Value {
    Value::Atom(Atom::from_static(name))
}

/// `ok`.
pub fn ok() -> Value {
    Value::Atom(*atoms::OK)
}

/// `{ok, Value}`.
pub fn ok_with(value: Value) -> Value {
    Value::pair(ok(), value)
}

/// `{ok, [Items]}`.
pub fn ok_list(items: Vec<Value>) -> Value {
    ok_with(Value::list(items))
}

/// `{error, Reason}`.
pub fn error(reason: Value) -> Value {
    Value::pair(Value::Atom(*atoms::ERROR), reason)
}

/// The reason of a malformed request: `{bad_request, <<"what is wrong">>}`.
pub fn bad_request(message: &str) -> Value {
    Value::pair(atom("bad_request"), Value::from(message))
}

/// The reason of a request this node does not know.
pub fn unknown_request(request: &Value) -> Value {
    Value::pair(atom("unknown_request"), request.clone())
}

fn atoms_list(fields: &[Atom]) -> Value {
    Value::list(fields.iter().map(|f| Value::Atom(*f)).collect())
}

/// The reason term of a store error.
pub fn reason(e: &StoreError) -> Value {
    match e {
        StoreError::NotFound => atom("not_found"),
        StoreError::Stale => atom("stale"),
        StoreError::AlreadyExists(pk) => Value::pair(atom("already_exists"), pk.clone()),
        StoreError::IdentityConflict(name, values) => Value::tuple(vec![
            atom("identity_conflict"),
            name.clone(),
            values.clone(),
        ]),
        StoreError::UnknownResource(r) => Value::pair(atom("unknown_resource"), Value::Atom(*r)),
        StoreError::MissingPrimaryKey(fields) => {
            Value::pair(atom("missing_primary_key"), atoms_list(fields))
        }
        StoreError::PrimaryKeyMismatch(fields) => {
            Value::pair(atom("primary_key_mismatch"), atoms_list(fields))
        }
        StoreError::UnknownUpsertKeys(fields) => {
            Value::pair(atom("unknown_upsert_keys"), atoms_list(fields))
        }
        StoreError::BadRequest(message) => bad_request(message),
        StoreError::RecordCrashed(reason) => Value::pair(atom("record_crashed"), reason.clone()),
        StoreError::NotANumber(field, value) => Value::tuple(vec![
            atom("not_a_number"),
            Value::Atom(*field),
            value.clone(),
        ]),
    }
}

fn upsert_atom(kind: UpsertKind) -> Value {
    atom(match kind {
        UpsertKind::Created => "created",
        UpsertKind::Updated => "updated",
        UpsertKind::Skipped => "skipped",
    })
}

/// Writes the reply term of an outcome, without building it first.
pub fn encode_outcome(outcome: &Outcome, w: &mut TermWriter) {
    match outcome {
        Outcome::Record(record) => {
            w.tuple_header(2);
            w.atom(*atoms::OK);
            w.record(record);
        }
        Outcome::Upserted(kind, record) => {
            w.tuple_header(3);
            w.atom(*atoms::OK);
            w.term(&upsert_atom(*kind));
            w.record(record);
        }
        other => w.term(&render(other)),
    }
}

/// Writes `{ok, [Record]}`.
pub fn encode_records(records: &[Record], w: &mut TermWriter) {
    w.tuple_header(2);
    w.atom(*atoms::OK);
    w.list(records, |w, record| w.record(record));
}

/// The reply term of an outcome.
pub fn render(outcome: &Outcome) -> Value {
    match outcome {
        Outcome::Ok => ok(),
        Outcome::Record(record) => ok_with(record.to_value()),
        Outcome::Upserted(kind, record) => {
            Value::tuple(vec![ok(), upsert_atom(*kind), record.to_value()])
        }
        Outcome::Error(e) => error(reason(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::Record;

    #[test]
    fn outcomes_render_as_documented() {
        assert_eq!(format!("{:?}", render(&Outcome::Ok)), "ok");
        let record = Record::from_map(&Value::map(vec![(atom("id"), Value::Int(1))])).unwrap();
        assert_eq!(
            format!("{:?}", render(&Outcome::Record(record.clone()))),
            "{ok,#{id => 1}}"
        );
        assert_eq!(
            format!(
                "{:?}",
                render(&Outcome::Upserted(UpsertKind::Skipped, record))
            ),
            "{ok,skipped,#{id => 1}}"
        );
        assert_eq!(
            format!("{:?}", render(&Outcome::Error(StoreError::NotFound))),
            "{error,not_found}"
        );
        let pk = Value::map(vec![(atom("id"), Value::Int(1))]);
        assert_eq!(
            format!(
                "{:?}",
                render(&Outcome::Error(StoreError::AlreadyExists(pk)))
            ),
            "{error,{already_exists,#{id => 1}}}"
        );
        assert_eq!(
            format!("{:?}", error(bad_request("no"))),
            "{error,{bad_request,<<\"no\">>}}"
        );
    }
}
