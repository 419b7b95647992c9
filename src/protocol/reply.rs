//! Reply terms — how results look on the wire (docs/PROTOCOL.md) — and [`ToCaller`], the way a
//! record's result reaches the caller of `ash_gen_server`.

use super::caller::Caller;
use super::error::Error;
use crate::node::Node;
use crate::node::genserver::{self, GenMessage};
use crate::record::{Host, Op, Outcome, Reply, Resource, StoreError, UpsertKind};
use crate::term::{Atom, Record, Value, atoms};
use crate::wire::etf;
use crate::wire::etf::TermWriter;
use std::sync::Arc;

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

/// An atom reply, such as `pong`.
pub fn atom(name: &'static str) -> Value {
    Value::Atom(Atom::from_static(name))
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

/// Writes `{ok, [{Key, [Record]}]}`, a partitioned query's reply.
pub fn encode_partitions(partitions: &[(Value, Vec<Record>)], w: &mut TermWriter) {
    w.tuple_header(2);
    w.atom(*atoms::OK);
    w.list(partitions, |w, (key, records)| {
        w.tuple_header(2);
        w.term(key);
        w.list(records, |w, record| w.record(record));
    });
}

/// The reply term of an outcome.
pub fn render(outcome: &Outcome) -> Value {
    match outcome {
        Outcome::Ok | Outcome::Destroyed(_) => ok(),
        Outcome::Record(record) => ok_with(record.to_value()),
        Outcome::Upserted(kind, record) => {
            Value::tuple(vec![ok(), upsert_atom(*kind), record.to_value()])
        }
        Outcome::Error(e) => Error::Store(e.clone()).to_reply(),
    }
}

/// Sends an outcome to the caller `from`.
pub fn send_outcome(svc: &dyn Host, from: &Caller, outcome: &Outcome) {
    let ok = !matches!(outcome, Outcome::Error(_));
    from.reply_with(svc.node(), ok, |out| encode_outcome(outcome, out));
}

/// Answers a call over one of the node's limits (see `wire::limits`) with
/// `{error, {bad_request, ...}}` instead of letting the caller time out; anything else is
/// dropped.
pub fn refuse_over_limit(node: &Arc<Node>, message: Value, reason: &'static str) {
    let limits = &node.config.limits;
    match genserver::classify(message) {
        GenMessage::Call(from, _) => {
            let why = match reason {
                etf::TOO_DEEP_REASON => format!(
                    "the request nests deeper than {} levels",
                    limits.max_term_depth
                ),
                etf::TOO_LONG_REASON => format!(
                    "the request holds a list, tuple or map of more than {} elements",
                    limits.max_list_length
                ),
                etf::BIGNUM_REASON => format!(
                    "the request holds an integer of more than {} bytes",
                    limits.max_bignum_bytes
                ),
                other => format!("the request exceeds a limit: {other}"),
            };
            node.reply(&from, &Error::BadRequest(why).to_reply());
        }
        _ => tracing::warn!(reason, "dropped a message over a limit"),
    }
}

/// The caller of `ash_gen_server` waiting for a record's result.
pub struct ToCaller(pub Caller);

impl Reply for ToCaller {
    fn send(self: Box<Self>, svc: &dyn Host, outcome: Outcome) {
        send_outcome(svc, &self.0, &outcome);
    }

    fn gone(self: Box<Self>, svc: &dyn Host, resource: &Arc<Resource>, op: Op) {
        match op {
            // The record went away between lookup and delivery: start the upsert over.
            Op::Upsert(args) => svc.upsert(resource, *args, Some(self)),
            _ => self.send(svc, Outcome::Error(StoreError::NotFound)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }
}
