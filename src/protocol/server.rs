//! The `ash_gen_server` process: serves every request of docs/PROTOCOL.md.
//!
//! A call arrives from [`crate::node::dispatch`], is parsed by [`super::request`], and is served
//! here: record operations go to the record's actor, which replies when its turn is done;
//! creates, queries and aggregates are served on the spot. Messages sent to a record's own pid
//! also come through here ([`handle_record`]) to be parsed.

use super::reply;
use super::request::{self, DirectRequest, Request, RequestError, UpsertOpts};
use crate::node::Node;
use crate::node::genserver::{self, From, GenMessage};
use crate::query::{self, Aggregate, Query};
use crate::record::{
    self, Envelope, Op, Outcome, RecordActor, Reply, Resource, StoreError, Upsert,
};
use crate::term::{Atom, Record, Value};
use parking_lot::Mutex;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Handles a message sent to `ash_gen_server`.
pub fn handle(node: &Arc<Node>, message: Value) {
    match genserver::classify(message) {
        GenMessage::Call(from, request) => match parse(request) {
            Ok(request) => call(node, from, request),
            Err(reason) => node.reply(&from, &reply::error(reason)),
        },
        GenMessage::Cast(request) => match parse(request) {
            Ok(request) => cast(node, request),
            Err(reason) => tracing::warn!(?reason, "ignored a malformed cast"),
        },
        GenMessage::Info(message) => {
            tracing::warn!(
                ?message,
                "ash_gen_server ignored a message that is neither a call nor a cast"
            );
        }
    }
}

/// Handles a message sent to a record's pid.
pub fn handle_record(node: &Arc<Node>, actor: &Arc<RecordActor>, message: Value) {
    match genserver::classify(message) {
        GenMessage::Call(from, request) => match request::parse_direct(&request) {
            Ok(parsed) => actor.deliver(
                node,
                Envelope::Call(Some(Box::new(DirectReply(from))), direct_op(parsed)),
            ),
            Err(e) => node.reply(&from, &reply::error(request_error(e, &request))),
        },
        GenMessage::Cast(request) => {
            if let Ok(DirectRequest::KeepAlive) = request::parse_direct(&request) {
                actor.deliver(node, Envelope::Call(None, Op::KeepAlive));
            }
        }
        GenMessage::Info(message) => {
            tracing::debug!(?message, "a record process ignored a plain message");
        }
    }
}

fn direct_op(request: DirectRequest) -> Op {
    match request {
        DirectRequest::Get => Op::Get,
        DirectRequest::Update(changes, filter) => Op::Update { changes, filter },
        DirectRequest::Destroy => Op::Destroy { filter: None },
        DirectRequest::KeepAlive => Op::KeepAlive,
    }
}

fn parse(value: Value) -> Result<Request, Value> {
    request::parse(&value).map_err(|e| request_error(e, &value))
}

fn request_error(e: RequestError, request: &Value) -> Value {
    match e {
        RequestError::Bad(message) => reply::bad_request(&message),
        RequestError::Unknown => reply::unknown_request(request),
    }
}

fn cast(node: &Arc<Node>, request: Request) {
    match request {
        Request::KeepAlive(resource, pk) => {
            if let Ok(actor) = find(node, resource, &pk) {
                actor.deliver(node, Envelope::Call(None, Op::KeepAlive));
            }
        }
        other => tracing::warn!(request = ?other, "ignored a cast that only makes sense as a call"),
    }
}

fn resource(node: &Node, name: Atom) -> Result<Arc<Resource>, StoreError> {
    node.store.get(name)
}

fn find(node: &Node, name: Atom, pk: &Value) -> Result<Arc<RecordActor>, StoreError> {
    let resource = resource(node, name)?;
    let key = resource.key_from_pk(pk)?;
    resource.lookup(&key).ok_or(StoreError::NotFound)
}

fn outcome_of(result: Result<Outcome, StoreError>) -> Outcome {
    result.unwrap_or_else(Outcome::Error)
}

/// Sends an operation to a record's actor; the actor replies.
fn to_record(node: &Arc<Node>, from: From, name: Atom, pk: &Value, op: Op) {
    match find(node, name, pk) {
        Ok(actor) => actor.deliver(node, Envelope::Call(Some(Box::new(ServerReply(from))), op)),
        Err(e) => send_outcome(node, &from, &Outcome::Error(e)),
    }
}

fn send_outcome(node: &Node, from: &From, outcome: &Outcome) {
    node.reply_with(from, |out| reply::encode_outcome(outcome, out));
}

fn call(node: &Arc<Node>, from: From, request: Request) {
    let answer: Value = match request {
        Request::Get(name, pk) => return to_record(node, from, name, &pk, Op::Get),
        Request::Update(name, pk, changes, filter) => {
            return to_record(node, from, name, &pk, Op::Update { changes, filter });
        }
        Request::Destroy(name, pk, filter) => {
            return to_record(node, from, name, &pk, Op::Destroy { filter });
        }
        Request::KeepAlive(name, pk) => return to_record(node, from, name, &pk, Op::KeepAlive),
        Request::Fault(name, pk, fault) => {
            if !node.config.fault_injection {
                reply::error(reply_atom("fault_injection_disabled"))
            } else {
                return to_record(node, from, name, &pk, Op::Fault(fault));
            }
        }
        Request::Create(name, rec) => {
            let outcome = outcome_of(
                resource(node, name)
                    .and_then(|r| record::create(node, &r, rec))
                    .map(Outcome::Record),
            );
            return send_outcome(node, &from, &outcome);
        }
        Request::Upsert(name, rec, opts) => match resource(node, name) {
            Ok(r) => match upsert_args(&r, rec, &opts) {
                Ok(args) => {
                    return record::upsert(node, &r, args, Some(Box::new(ServerReply(from))));
                }
                Err(e) => reply::render(&Outcome::Error(e)),
            },
            Err(e) => reply::render(&Outcome::Error(e)),
        },
        Request::BulkCreate(name, records, upsert) => {
            return bulk_create(node, from, name, records, upsert);
        }
        Request::Query(name, q) => match resource(node, name) {
            Ok(r) => {
                let records = run_query(node, &r, &q);
                return node.reply_with(&from, |out| reply::encode_records(&records, out));
            }
            Err(e) => reply::render(&Outcome::Error(e)),
        },
        Request::Aggregate(name, q, aggregates, group_by) => match resource(node, name) {
            Ok(r) => aggregate(&r, &q, &aggregates, group_by),
            Err(e) => reply::render(&Outcome::Error(e)),
        },
        Request::Whereis(name, pk) => match find(node, name, &pk) {
            Ok(actor) => match actor.pid(node) {
                Some(pid) => {
                    actor.touch(node);
                    reply::ok_with(Value::Pid(Box::new(pid)))
                }
                None => reply::render(&Outcome::Error(StoreError::NotFound)),
            },
            Err(e) => reply::render(&Outcome::Error(e)),
        },
        Request::Define(name, config) => match node.store.define(name, config) {
            Ok(()) => reply::ok(),
            Err(e) => reply::render(&Outcome::Error(e)),
        },
        Request::Subscribe(Some(resources)) if resources.is_empty() => {
            // Handling no resource is not handling: the same as unsubscribing.
            node.expiry.unsubscribe(node, &from.pid);
            reply::ok()
        }
        Request::Subscribe(resources) => {
            node.expiry.subscribe(node, from.pid, resources);
            reply::ok()
        }
        Request::Unsubscribe => {
            node.expiry.unsubscribe(node, &from.pid);
            reply::ok()
        }
        Request::Info(name) => match resource(node, name) {
            Ok(r) => reply::ok_with(info(&r)),
            Err(e) => reply::render(&Outcome::Error(e)),
        },
        Request::Resources => {
            reply::ok_list(node.store.names().into_iter().map(Value::Atom).collect())
        }
        Request::Clear(name) => match resource(node, name) {
            Ok(r) => {
                let actors = r.take_all();
                let n = actors.len();
                let reason = Value::pair(
                    Value::Atom(crate::term::atoms::SHUTDOWN.to_owned()),
                    reply_atom("cleared"),
                );
                for actor in actors {
                    actor.deliver(node, Envelope::Stop(reason.clone()));
                }
                reply::ok_with(Value::Int(n as i64))
            }
            Err(e) => reply::render(&Outcome::Error(e)),
        },
        Request::Ping => reply_atom("pong"),
        Request::Stats => reply::ok_with(stats(node)),
    };
    node.reply(&from, &answer);
}

fn reply_atom(name: &'static str) -> Value {
    Value::Atom(Atom::from_static(name))
}

/// Builds the upsert for `record` from the request's options.
fn upsert_args(
    resource: &Resource,
    record: Record,
    opts: &UpsertOpts,
) -> Result<Upsert, StoreError> {
    let keys = opts
        .keys
        .clone()
        .unwrap_or_else(|| resource.config().primary_key.clone());
    let set = match (&opts.set, &opts.fields) {
        (Some(set), _) => set.clone(),
        (None, Some(fields)) => record.select(fields),
        (None, None) => {
            // Everything but the keys, and never the primary key: an upsert on an identity
            // updates the record it finds, it does not move it to the new record's key.
            let primary_key = resource.config().primary_key.clone();
            let rest: Vec<Atom> = record
                .iter()
                .map(|(f, _)| f)
                .filter(|f| !keys.contains(f) && !primary_key.contains(f))
                .collect();
            record.select(&rest)
        }
    };
    Ok(Upsert {
        record,
        keys,
        set,
        condition: opts.condition.clone(),
    })
}

fn bulk_create(
    node: &Arc<Node>,
    from: From,
    name: Atom,
    records: Vec<Record>,
    upsert: Option<UpsertOpts>,
) {
    let resource = match resource(node, name) {
        Ok(r) => r,
        Err(e) => return node.reply(&from, &reply::render(&Outcome::Error(e))),
    };
    if records.is_empty() {
        return node.reply(&from, &reply::ok_list(Vec::new()));
    }
    let collector = Collector::new(from, records.len());
    for (i, rec) in records.into_iter().enumerate() {
        let slot = Box::new(SlotReply(collector.clone(), i));
        match &upsert {
            None => slot.send(
                node,
                outcome_of(record::create(node, &resource, rec).map(Outcome::Record)),
            ),
            Some(opts) => match upsert_args(&resource, rec, opts) {
                Ok(args) => record::upsert(node, &resource, args, Some(slot)),
                Err(e) => slot.send(node, Outcome::Error(e)),
            },
        }
    }
}

/// Filter during the scan, then sort and page the matches; the returned records are touched.
fn run_query(node: &Node, resource: &Arc<Resource>, q: &Query) -> Vec<Record> {
    let matched = resource.select(q.filter.as_ref());
    let config = resource.config();
    let page = Query {
        filter: None,
        ..q.clone()
    };
    let mut result = query::run(matched, &page, &config.primary_key);
    if config.has_lifetimes() {
        for rec in &result {
            if let Some(actor) = resource.key_of(rec).ok().and_then(|k| resource.lookup(&k)) {
                actor.touch(node);
            }
        }
    }
    if let Some(select) = &q.select {
        result = result
            .into_iter()
            .map(|rec| query::project(&rec, select, &config.primary_key))
            .collect();
    }
    result
}

fn aggregate(
    resource: &Arc<Resource>,
    q: &Query,
    aggregates: &[Aggregate],
    group_by: Option<Atom>,
) -> Value {
    let matched = resource.select(q.filter.as_ref());
    let page = Query {
        filter: None,
        ..q.clone()
    };
    let pk = &resource.config().primary_key;
    let result = match group_by {
        None => query::aggregate(matched, &page, aggregates, pk),
        Some(field) => query::aggregate_grouped(matched, &page, aggregates, pk, field),
    };
    match result {
        Ok(values) => reply::ok_with(values),
        Err(e) => reply::error(e.reason()),
    }
}

fn stats(node: &Node) -> Value {
    let int = |n: usize| Value::Int(n as i64);
    Value::map(vec![
        (reply_atom("records"), int(node.store.total_records())),
        (reply_atom("resources"), int(node.store.names().len())),
        (reply_atom("connections"), int(node.peers().len())),
        (reply_atom("record_pids"), int(node.processes.count())),
        (reply_atom("pending_timers"), int(node.timers.pending())),
        (reply_atom("expiry_handlers"), int(node.expiry.count())),
        (
            reply_atom("uptime_ms"),
            Value::Int(node.timers.now() as i64),
        ),
        (
            reply_atom("instance_id"),
            Value::from(node.instance.hyphenated().to_string().as_str()),
        ),
        (
            reply_atom("rss_bytes"),
            crate::node::rss_bytes().map_or_else(|| reply_atom("undefined"), int),
        ),
    ])
}

fn info(resource: &Resource) -> Value {
    let config = resource.config();
    let ms = |v: Option<u64>| match v {
        Some(n) => Value::Int(n as i64),
        None => reply_atom("infinity"),
    };
    let atoms = |fields: &[Atom]| Value::list(fields.iter().map(|f| Value::Atom(*f)).collect());
    Value::map(vec![
        (reply_atom("primary_key"), atoms(&config.primary_key)),
        (reply_atom("count"), Value::Int(resource.len() as i64)),
        (
            reply_atom("inactivity_timeout"),
            ms(config.inactivity_timeout),
        ),
        (reply_atom("maximum_lifetime"), ms(config.maximum_lifetime)),
        (
            reply_atom("identities"),
            Value::list(
                config
                    .identities
                    .iter()
                    .map(|id| Value::pair(id.name.clone(), atoms(&id.fields)))
                    .collect(),
            ),
        ),
        (
            reply_atom("max_restarts"),
            Value::Int(config.restart.max_restarts as i64),
        ),
        (
            reply_atom("max_seconds"),
            Value::Int(config.restart.max_seconds as i64),
        ),
        (
            reply_atom("expiry_grace"),
            Value::Int(config.expiry_grace as i64),
        ),
    ])
}

/// Replies to a caller of `ash_gen_server`.
struct ServerReply(From);

impl Reply for ServerReply {
    fn send(self: Box<Self>, node: &Node, outcome: Outcome) {
        send_outcome(node, &self.0, &outcome);
    }

    fn gone(self: Box<Self>, node: &Node, resource: &Arc<Resource>, op: Op) {
        match op {
            // The record went away between lookup and delivery: start the upsert over.
            Op::Upsert(args) => record::upsert(node, resource, *args, Some(self)),
            _ => self.send(node, Outcome::Error(StoreError::NotFound)),
        }
    }
}

/// Replies to a caller of a record's own pid. If the record is gone the caller's monitor
/// reports it (`noproc`), exactly as for any dead process, so nothing is sent.
struct DirectReply(From);

impl Reply for DirectReply {
    fn send(self: Box<Self>, node: &Node, outcome: Outcome) {
        send_outcome(node, &self.0, &outcome);
    }

    fn gone(self: Box<Self>, _node: &Node, _resource: &Arc<Resource>, _op: Op) {}
}

/// Gathers the results of a bulk request and replies once all are in.
struct Collector {
    from: From,
    results: Mutex<Vec<Value>>,
    remaining: AtomicUsize,
}

impl Collector {
    fn new(from: From, n: usize) -> Arc<Collector> {
        Arc::new(Collector {
            from,
            results: Mutex::new(vec![Value::nil(); n]),
            remaining: AtomicUsize::new(n),
        })
    }

    fn put(&self, node: &Node, i: usize, value: Value) {
        self.results.lock()[i] = value;
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let results = std::mem::take(&mut *self.results.lock());
            node.reply(&self.from, &reply::ok_list(results));
        }
    }
}

/// One position of a bulk reply.
struct SlotReply(Arc<Collector>, usize);

impl Reply for SlotReply {
    fn send(self: Box<Self>, node: &Node, outcome: Outcome) {
        self.0.put(node, self.1, reply::render(&outcome));
    }

    fn gone(self: Box<Self>, node: &Node, resource: &Arc<Resource>, op: Op) {
        match op {
            Op::Upsert(args) => record::upsert(node, resource, *args, Some(self)),
            _ => self.send(node, Outcome::Error(StoreError::NotFound)),
        }
    }
}
