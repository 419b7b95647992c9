//! Fan-out: serving a multi-record request (`query`, a partitioned `query`, `aggregate`,
//! `update_where`, `destroy_where`; docs/PROTOCOL.md) over a resource whose records are split
//! among shards, each with its own record service, so that the client gets exactly the reply a
//! single node holding every record would give.
//!
//! Pure: no processes, no networking. A coordinator starts a [`Fanout`] for the request (the term
//! as the client sent it, without its `{request_id, Id, _}` wrapper), sends each shard the
//! requests of [`Step::Ask`], gives the shards' replies back to [`Fanout::next`], and repeats
//! until [`Step::Reply`], the reply for the client:
//!
//! - `query`: every shard is asked for the first `offset + limit` records of the query (no
//!   offset, no `select`); the union is sorted and paged again by the node's own engine
//!   ([`crate::query::run`]) and projected at the end, so ties, typed sorts and pages are the
//!   single node's. A partitioned query asks each shard for one partition per distinct value
//!   asked for (so no shard refuses what the single node would accept, and no record comes
//!   twice) and runs [`crate::query::run_partitioned`] over the union; when partitions share
//!   values the node's `--max-records-per-request` check needs the matches' counts, asked in the
//!   same round with a grouped `count` (which, as an `aggregate`, touches nothing). A query
//!   returns (and so touches) a page: when the shards would return more than their part of it
//!   and the resource has lifetimes ([`Shape::lifetimes`]), they are asked `touch => false` and
//!   the page's records get a `keep_alive` each in a second round, on the shard that holds it.
//! - `aggregate` of `count`, `exists`, `sum`, `avg`, `min`, `max` (not `uniq`; `min`/`max`
//!   without a sort) with no offset or limit: every shard computes the same aggregates (an
//!   `avg` as a `sum` and a `count`, no `default`) and they are combined here, per group with
//!   `group_by`. Any other `aggregate`: every shard is asked for the records with
//!   `{query, R, Q, #{touch => false}}` (first `offset + limit`; per value of `group_by`,
//!   partitioned, when grouped), which returns them without resetting their inactivity timers,
//!   as an `aggregate` does not; the aggregates are then computed over the union by
//!   [`crate::query::aggregate()`] or [`crate::query::aggregate_grouped`].
//! - `update_where` / `destroy_where` without offset, limit or atomics: every shard gets the
//!   request as it is and the union of the changed records is put in the query's order. With an
//!   offset or a limit (no shard can page on its own), with atomics (a failing expression must
//!   change nothing anywhere), or with a sort that the `set` changes (the order is the records'
//!   before the change): two rounds, first the candidates with a non-touching query, paged and
//!   checked here, then one `update` (`destroy`) per record with the query's filter, in the
//!   query's order, to the shard that holds it.
//!
//! A shard answering `{error, Reason}` makes that the reply (the lowest shard's, whatever the
//! others said), except in the per-record round of a write, where the first error in the
//! query's order is, as on a single node.
//!
//! Where a single node's answer depends on its unspecified scan order, so does the fan-out's,
//! on the shards' order: records without a sort (and no offset or limit), the value a typed
//! `group_by` group or partition is named by (its first record's), a `min`/`max` tie between
//! `1` and `1.0`, the last bits of a float `sum` or `avg`, and which of several failing records
//! a one-round write reports. Between the two rounds of a write other requests may change the
//! records, as they may between a single node's scan and each record's turn: the filter is
//! checked again in the record's turn, and a destroyed record is answered as it was scanned.

use super::answer::is_error;
use crate::protocol::cmd::update_where::Return;
use crate::protocol::error::Error;
use crate::protocol::reply;
use crate::protocol::request::Request;
use crate::query::aggregate::Kind;
use crate::query::expr::{Atomics, Scope, eval_atomics};
use crate::query::partition::{GroupKey, check_total, paged_len};
use crate::query::{self as q, Aggregate as Spec, AggregateError, Types};
use crate::record::StoreError;
use crate::term::{Atom, Record, Value, cmp_exact};
use num_bigint::BigInt;
use rustc_hash::{FxHashMap, FxHashSet};
use std::sync::Arc;

/// What the coordinator must know of the resource, from its own definition.
#[derive(Clone, Debug)]
pub struct Shape {
    /// The primary key's fields.
    pub primary_key: Vec<Atom>,
    /// The typed fields (`define`'s `types`).
    pub types: Arc<Types>,
    /// The node's `--max-records-per-request` (partitioned queries and requests' parsing).
    pub max_records: usize,
    /// Whether the resource has an inactivity timeout or a maximum lifetime
    /// (`ResourceConfig::has_lifetimes`): then which records a query returns, and so resets
    /// the timers of, matters, and a paged query touches its page only, in a second round.
    pub lifetimes: bool,
}

/// What the coordinator does next.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Send shard `i` the requests `asks[i]` (in order; maybe none) and give every reply, in
    /// the same places, to [`Fanout::next`].
    Ask(Vec<Vec<Value>>),
    /// The reply for the client; the fan-out is over.
    Reply(Value),
}

/// One multi-record request being served over shards (see the module's documentation).
#[derive(Debug)]
pub struct Fanout {
    shape: Shape,
    shards: usize,
    /// The request's `Resource` term (maybe `{Resource, Tenant}`).
    resource: Value,
    state: State,
}

#[derive(Debug)]
enum State {
    Query {
        query: q::Query,
        partition: Option<q::Partition>,
        /// Whether each shard was also asked for its matches' counts per value.
        counted: bool,
        /// Whether the shards were asked not to touch the records, so that the coordinator
        /// touches those of the reply only.
        touch_after: bool,
    },
    /// A query's reply, once its records are touched.
    Touching(Value),
    Aggregate {
        query: q::Query,
        aggregates: Vec<Spec>,
        group_by: Option<Atom>,
    },
    /// An aggregate combined from the shards' own partial aggregates.
    Partial {
        aggregates: Vec<Spec>,
        group_by: Option<Atom>,
    },
    /// A write sent as it is to every shard.
    Write {
        query: q::Query,
        ret: Return,
    },
    /// A write's first round: the candidates.
    Candidates(Write),
    /// A write's second round: one request per record.
    PerRecord {
        write: Write,
        /// The records as scanned, in the query's order, each with its shard and the place of
        /// its request among that shard's.
        page: Vec<(Record, usize, usize)>,
    },
    Done,
}

/// A write served in two rounds.
#[derive(Debug)]
struct Write {
    resource: Value,
    query: q::Query,
    /// The query's filter as the client wrote it (`nil` for none).
    filter: Value,
    ret: Return,
    /// `Some((set, atomics, parsed atomics))` for an update, `None` for a destroy.
    update: Option<(Value, Value, Atomics)>,
}

fn atom(name: &'static str) -> Value {
    Value::Atom(Atom::from_static(name))
}

/// A non-negative count as a term (a bignum past `i64`).
fn count_term(n: usize) -> Value {
    match i64::try_from(n) {
        Ok(n) => Value::Int(n),
        Err(_) => Value::integer(BigInt::from(n)),
    }
}

/// The query map for a shard: the client's, without `offset` and `select`, its limit
/// `offset + limit` (at least `min_limit`; none stays none).
fn shard_query(map: &Value, query: &q::Query, min_limit: usize) -> Value {
    let mut entries: Vec<(Value, Value)> = map
        .as_map()
        .unwrap_or_default()
        .iter()
        .filter(|(k, _)| {
            !matches!(
                k.as_atom().map(|a| a.as_str()),
                Some("offset" | "limit" | "select")
            )
        })
        .cloned()
        .collect();
    if let Some(limit) = query.limit {
        let wanted = query.offset.saturating_add(limit).max(min_limit);
        entries.push((atom("limit"), count_term(wanted)));
    }
    Value::map(entries)
}

/// `#{filter => F}` of the client's query map (`#{}` without a filter).
fn filter_only(map: &Value) -> Value {
    let filter = map.map_get_atom(Atom::from_static("filter"));
    Value::map(
        filter
            .map(|f| vec![(atom("filter"), f.clone())])
            .unwrap_or_default(),
    )
}

/// A reply the fan-out cannot read: answered as the cluster's trouble, not the client's.
fn unreadable(what: &Value) -> Value {
    Error::Unavailable(format!(
        "a shard answered what a fan-out cannot read: {what:?}"
    ))
    .to_reply()
}

/// The first `{error, _}` among the replies, the lowest shard's first.
fn first_error(replies: &[Vec<Value>]) -> Option<Value> {
    replies.iter().flatten().find(|r| is_error(r)).cloned()
}

/// `X` of `{ok, X}`.
fn ok_body(reply: &Value) -> Result<&Value, Value> {
    super::answer::ok_body(reply).ok_or_else(|| unreadable(reply))
}

/// The records of `{ok, [Record]}`.
fn records_of(reply: &Value) -> Result<Vec<Record>, Value> {
    let body = ok_body(reply)?;
    let list = body.as_list().ok_or_else(|| unreadable(reply))?;
    list.iter()
        .map(|m| Record::from_map(m).map_err(|_| unreadable(reply)))
        .collect()
}

/// The records of every partition of `{ok, [{Key, [Record]}]}`.
fn partitioned_records_of(reply: &Value) -> Result<Vec<Record>, Value> {
    let body = ok_body(reply)?;
    let list = body.as_list().ok_or_else(|| unreadable(reply))?;
    let mut out = Vec::new();
    for part in list {
        match part.as_tuple() {
            Some([_, records]) => {
                for m in records.as_list().ok_or_else(|| unreadable(reply))? {
                    out.push(Record::from_map(m).map_err(|_| unreadable(reply))?);
                }
            }
            _ => return Err(unreadable(reply)),
        }
    }
    Ok(out)
}

/// The primary key map of `record`.
fn pk_of(record: &Record, primary_key: &[Atom]) -> Value {
    Value::map(
        primary_key
            .iter()
            .map(|f| {
                let v = record.get(*f).cloned().unwrap_or_else(Value::nil);
                (Value::Atom(*f), v)
            })
            .collect(),
    )
}

/// Whether `request` is one a coordinator fans out to every shard (a `query`, `aggregate`,
/// `update_where` or `destroy_where`, well formed or not); others go to one record's shard.
pub fn is_fanout(request: &Value) -> bool {
    matches!(
        request.as_tuple(),
        Some([Value::Atom(tag), ..])
            if matches!(tag.as_str(), "query" | "aggregate" | "update_where" | "destroy_where")
    )
}

impl Fanout {
    /// Starts serving `request` over `shards` shards (> 0): `None` when it is not a request to
    /// fan out ([`is_fanout`]). A request that does not parse is answered at once with the
    /// single node's `{error, {bad_request, Message}}`.
    pub fn start(request: &Value, shape: Shape, shards: usize) -> Option<(Fanout, Step)> {
        if !is_fanout(request) {
            return None;
        }
        let mut fanout = Fanout {
            shape,
            shards: shards.max(1),
            resource: request
                .as_tuple()
                .and_then(|t| t.get(1))
                .cloned()
                .unwrap_or_else(Value::nil),
            state: State::Done,
        };
        let step = match Request::parse_with(request, fanout.shape.max_records) {
            Err(e) => Step::Reply(e.to_reply()),
            Ok(parsed) => fanout.plan(request, parsed),
        };
        Some((fanout, step))
    }

    /// Every shard asked the same requests.
    fn everyone(&self, asks: Vec<Value>) -> Step {
        Step::Ask(vec![asks; self.shards])
    }

    fn plan(&mut self, request: &Value, parsed: Request) -> Step {
        let args = &request.as_tuple().expect("a parsed request is a tuple")[1..];
        let resource = args[0].clone();
        let tuple = |items: Vec<Value>| Value::tuple(items);
        match parsed {
            Request::Query(cmd) => {
                // A shard returning more than its part of the page would touch more records
                // than the single node: then the shards touch nothing and the page is touched
                // in a second round.
                let offset = cmd.query.offset;
                let touch_after = cmd.touch
                    && self.shape.lifetimes
                    && (offset > 0 || (cmd.query.limit.is_some() && self.shards > 1));
                let touch = Value::boolean(cmd.touch && !touch_after);
                let Some(partition) = cmd.partition else {
                    let mut ask = vec![
                        atom("query"),
                        resource,
                        shard_query(&args[1], &cmd.query, 0),
                    ];
                    if touch_after {
                        let mut opts: Vec<(Value, Value)> = args
                            .get(2)
                            .and_then(Value::as_map)
                            .unwrap_or_default()
                            .iter()
                            .filter(|(k, _)| k.as_atom().is_none_or(|a| a.as_str() != "touch"))
                            .cloned()
                            .collect();
                        opts.push((atom("touch"), touch));
                        ask.push(Value::map(opts));
                    } else {
                        ask.extend(args.get(2).cloned());
                    }
                    self.state = State::Query {
                        query: cmd.query,
                        partition: None,
                        counted: false,
                        touch_after,
                    };
                    return self.everyone(vec![tuple(ask)]);
                };
                let mut opts = vec![
                    (atom("partition_by"), Value::Atom(partition.field)),
                    (atom("touch"), touch),
                ];
                let mut counted = false;
                if let Some(parts) = &partition.partitions {
                    let ty = self.shape.types.get(partition.field);
                    // One partition per distinct value: no record twice, nothing refused.
                    let mut distinct: FxHashMap<GroupKey, usize> = FxHashMap::default();
                    let mut values = Vec::new();
                    let mut shared = false;
                    for (_, vals) in parts {
                        let mut mine = FxHashSet::default();
                        for v in vals {
                            let key = GroupKey::of(v, ty);
                            if !mine.insert(key.clone()) {
                                continue;
                            }
                            let n = distinct.entry(key).or_insert_with(|| {
                                values.push(v.clone());
                                0
                            });
                            *n += 1;
                            shared |= *n > 1;
                        }
                    }
                    let bounded = cmd
                        .query
                        .limit
                        .is_some_and(|l| parts.len().saturating_mul(l) <= self.shape.max_records);
                    counted = shared && !bounded;
                    let parts: Vec<Value> = values
                        .into_iter()
                        .enumerate()
                        .map(|(i, v)| Value::pair(count_term(i), Value::list(vec![v])))
                        .collect();
                    opts.push((atom("partitions"), Value::list(parts)));
                }
                let mut asks = vec![tuple(vec![
                    atom("query"),
                    resource.clone(),
                    shard_query(&args[1], &cmd.query, 1),
                    Value::map(opts),
                ])];
                if counted {
                    asks.push(tuple(vec![
                        atom("aggregate"),
                        resource,
                        filter_only(&args[1]),
                        Value::list(vec![Value::tuple(vec![
                            atom("n"),
                            atom("count"),
                            Value::nil(),
                            Value::map(Vec::new()),
                        ])]),
                        Value::map(vec![(atom("group_by"), Value::Atom(partition.field))]),
                    ]));
                }
                self.state = State::Query {
                    query: cmd.query,
                    partition: Some(partition),
                    counted,
                    touch_after,
                };
                self.everyone(asks)
            }
            Request::Aggregate(cmd) if partial_exact(&cmd.query, &cmd.aggregates) => {
                let mut specs = Vec::new();
                for (i, a) in cmd.aggregates.iter().enumerate() {
                    let spec = |name: Value, kind: &'static str| {
                        Value::tuple(vec![
                            name,
                            atom(kind),
                            a.field.map_or_else(Value::nil, Value::Atom),
                            Value::map(Vec::new()),
                        ])
                    };
                    let i = count_term(i);
                    match a.kind {
                        Kind::Avg => {
                            specs.push(spec(Value::pair(i.clone(), atom("sum")), "sum"));
                            specs.push(spec(Value::pair(i, atom("count")), "count"));
                        }
                        kind => specs.push(spec(i, kind_name(kind))),
                    }
                }
                let mut ask = vec![atom("aggregate"), resource, args[1].clone()];
                ask.push(Value::list(specs));
                ask.extend(args.get(3).cloned());
                self.state = State::Partial {
                    aggregates: cmd.aggregates,
                    group_by: cmd.group_by,
                };
                self.everyone(vec![tuple(ask)])
            }
            Request::Aggregate(cmd) => {
                let mut opts = vec![(atom("touch"), Value::boolean(false))];
                let min_limit = match cmd.group_by {
                    // A group whose page keeps nothing is still listed: every group must come.
                    Some(field) => {
                        opts.push((atom("partition_by"), Value::Atom(field)));
                        1
                    }
                    None => 0,
                };
                let ask = tuple(vec![
                    atom("query"),
                    resource,
                    shard_query(&args[1], &cmd.query, min_limit),
                    Value::map(opts),
                ]);
                self.state = State::Aggregate {
                    query: cmd.query,
                    aggregates: cmd.aggregates,
                    group_by: cmd.group_by,
                };
                self.everyone(vec![ask])
            }
            Request::UpdateWhere(cmd) => {
                let changes_order = !cmd.query.sort.is_empty()
                    && cmd.set.iter().any(|(f, _)| {
                        self.shape.primary_key.contains(&f)
                            || cmd.query.sort.keys.iter().any(|(k, _)| *k == f)
                    });
                let opts = &args[2];
                let get = |name: &'static str, default: Value| {
                    opts.map_get_atom(Atom::from_static(name))
                        .cloned()
                        .unwrap_or(default)
                };
                let write = Write {
                    resource,
                    filter: get_filter(&args[1]),
                    ret: cmd.ret,
                    update: Some((
                        get("set", Value::map(Vec::new())),
                        get("atomics", Value::empty_list()),
                        cmd.atomics,
                    )),
                    query: cmd.query,
                };
                let has_atomics = write.update.as_ref().is_some_and(|u| !u.2.is_empty());
                self.write(request, &args[1], write, changes_order || has_atomics)
            }
            Request::DestroyWhere(cmd) => {
                let write = Write {
                    resource,
                    filter: get_filter(&args[1]),
                    ret: cmd.ret,
                    update: None,
                    query: cmd.query,
                };
                self.write(request, &args[1], write, false)
            }
            _ => unreachable!("is_fanout admits only the four requests"),
        }
    }

    /// Plans a write: as it is to every shard, or (paged, or `per_record`) in two rounds.
    fn write(&mut self, request: &Value, map: &Value, write: Write, per_record: bool) -> Step {
        if !per_record && write.query.offset == 0 && write.query.limit.is_none() {
            self.state = State::Write {
                query: write.query,
                ret: write.ret,
            };
            return self.everyone(vec![request.clone()]);
        }
        let ask = Value::tuple(vec![
            atom("query"),
            write.resource.clone(),
            shard_query(map, &write.query, 0),
            Value::map(vec![(atom("touch"), Value::boolean(false))]),
        ]);
        self.state = State::Candidates(write);
        self.everyone(vec![ask])
    }

    /// `reply`, after a round of `keep_alive` calls touching the `returned` records, each on
    /// the shard that returned it (in `replies`), when `touch_after`.
    fn touched(
        &mut self,
        touch_after: bool,
        replies: &[Vec<Value>],
        returned: &[Record],
        reply: Value,
    ) -> Step {
        if !touch_after || returned.is_empty() {
            return Step::Reply(reply);
        }
        let pk = &self.shape.primary_key;
        let mut home: FxHashMap<Value, usize> = FxHashMap::default();
        for (shard, r) in replies.iter().enumerate() {
            let records = records_of(&r[0]).or_else(|_| partitioned_records_of(&r[0]));
            for record in records.unwrap_or_default() {
                home.insert(pk_of(&record, pk), shard);
            }
        }
        let resource = self.resource.clone();
        let mut asks: Vec<Vec<Value>> = vec![Vec::new(); self.shards];
        let mut seen = FxHashSet::default();
        for record in returned {
            let key = pk_of(record, pk);
            if let Some(&shard) = home.get(&key)
                && seen.insert(key.clone())
            {
                asks[shard].push(Value::tuple(vec![
                    atom("keep_alive"),
                    resource.clone(),
                    key,
                ]));
            }
        }
        self.state = State::Touching(reply);
        Step::Ask(asks)
    }

    /// The shards' replies to the last [`Step::Ask`] (`replies[i][j]` answering `asks[i][j]`):
    /// what to do next.
    pub fn next(&mut self, replies: Vec<Vec<Value>>) -> Step {
        match self.advance(replies) {
            Ok(step) => step,
            Err(reply) => {
                self.state = State::Done;
                Step::Reply(reply)
            }
        }
    }

    fn advance(&mut self, replies: Vec<Vec<Value>>) -> Result<Step, Value> {
        let own_errors = matches!(self.state, State::PerRecord { .. } | State::Touching(_));
        if !own_errors && let Some(error) = first_error(&replies) {
            return Err(error);
        }
        let shape = &self.shape;
        let pk = &shape.primary_key[..];
        let answered = |n: usize| {
            if replies.len() == self.shards && replies.iter().all(|r| r.len() == n) {
                Ok(())
            } else {
                Err(Error::Unavailable(format!(
                    "a fan-out expected {n} replies from each of {} shards",
                    self.shards
                ))
                .to_reply())
            }
        };
        match std::mem::replace(&mut self.state, State::Done) {
            State::Done => Err(Error::Unavailable("the fan-out is over".into()).to_reply()),
            State::Touching(reply) => Ok(Step::Reply(reply)),
            State::Query {
                query,
                partition: None,
                touch_after,
                ..
            } => {
                answered(1)?;
                let mut union = Vec::new();
                for r in &replies {
                    union.extend(records_of(&r[0])?);
                }
                let query = query.bind(&shape.types);
                let page = q::Query {
                    filter: None,
                    ..query.clone()
                };
                let records = q::run(union, &page, pk);
                let reply = reply::ok_list(
                    records
                        .iter()
                        .map(|r| project(r, &query, pk).to_value())
                        .collect(),
                );
                Ok(self.touched(touch_after, &replies, &records, reply))
            }
            State::Query {
                query,
                partition: Some(partition),
                counted,
                touch_after,
            } => {
                answered(if counted { 2 } else { 1 })?;
                let ty = shape.types.get(partition.field);
                let query = query.bind(&shape.types);
                let page = q::Query {
                    filter: None,
                    ..query.clone()
                };
                if counted {
                    check_counts(&replies, &partition, &page, ty, shape.max_records)?;
                }
                let mut union = Vec::new();
                for r in &replies {
                    union.extend(partitioned_records_of(&r[0])?);
                }
                let parts = q::run_partitioned(union, &page, &partition, pk, ty, usize::MAX)
                    .map_err(|e| Error::BadRequest(e).to_reply())?;
                let reply = reply::ok_list(
                    parts
                        .iter()
                        .map(|(key, records)| {
                            let records = records
                                .iter()
                                .map(|r| project(r, &query, pk).to_value())
                                .collect();
                            Value::pair(key.clone(), Value::list(records))
                        })
                        .collect(),
                );
                let returned: Vec<Record> = parts.into_iter().flat_map(|(_, r)| r).collect();
                Ok(self.touched(touch_after, &replies, &returned, reply))
            }
            State::Aggregate {
                query,
                aggregates,
                group_by,
            } => {
                answered(1)?;
                let mut union = Vec::new();
                for r in &replies {
                    match group_by {
                        Some(_) => union.extend(partitioned_records_of(&r[0])?),
                        None => union.extend(records_of(&r[0])?),
                    }
                }
                let query = query.bind(&shape.types);
                let page = q::Query {
                    filter: None,
                    ..query
                };
                let aggregates: Vec<Spec> =
                    aggregates.iter().map(|a| a.bind(&shape.types)).collect();
                let values = match group_by {
                    None => q::aggregate(union, &page, &aggregates, pk),
                    Some(field) => q::aggregate_grouped(
                        union,
                        &page,
                        &aggregates,
                        pk,
                        field,
                        shape.types.get(field),
                    ),
                };
                match values {
                    Ok(v) => Ok(Step::Reply(reply::ok_with(v))),
                    Err(e) => Err(Error::Aggregate(e).to_reply()),
                }
            }
            State::Partial {
                aggregates,
                group_by,
            } => {
                answered(1)?;
                let aggregates: Vec<Spec> =
                    aggregates.iter().map(|a| a.bind(&shape.types)).collect();
                let Some(field) = group_by else {
                    let partials: Vec<&Value> = replies
                        .iter()
                        .map(|r| ok_body(&r[0]))
                        .collect::<Result<_, _>>()?;
                    return Ok(Step::Reply(reply::ok_with(combine(
                        &aggregates,
                        &partials,
                    )?)));
                };
                // Groups by value (by type for a typed field), each combined over the shards.
                let ty = shape.types.get(field);
                let mut index: FxHashMap<GroupKey, usize> = FxHashMap::default();
                let mut groups: Vec<(Value, Vec<&Value>)> = Vec::new();
                for r in &replies {
                    let body = ok_body(&r[0])?;
                    for group in body.as_list().ok_or_else(|| unreadable(&r[0]))? {
                        let Some([value, partial]) = group.as_tuple() else {
                            return Err(unreadable(&r[0]));
                        };
                        let i = *index.entry(GroupKey::of(value, ty)).or_insert_with(|| {
                            groups.push((value.clone(), Vec::new()));
                            groups.len() - 1
                        });
                        groups[i].1.push(partial);
                    }
                }
                match ty {
                    None => groups.sort_by(|a, b| cmp_exact(&a.0, &b.0)),
                    ty => groups.sort_by(|a, b| q::typed::cmp(ty, &a.0, &b.0)),
                }
                let mut out = Vec::with_capacity(groups.len());
                for (value, partials) in groups {
                    out.push(Value::pair(value, combine(&aggregates, &partials)?));
                }
                Ok(Step::Reply(reply::ok_list(out)))
            }
            State::Write { query, ret } => {
                answered(1)?;
                match ret {
                    Return::Count => {
                        let mut total = BigInt::from(0);
                        for r in &replies {
                            match ok_body(&r[0])? {
                                Value::Int(n) => total += *n,
                                other => return Err(unreadable(other)),
                            }
                        }
                        Ok(Step::Reply(reply::ok_with(Value::integer(total))))
                    }
                    Return::Records => {
                        let mut union = Vec::new();
                        for r in &replies {
                            union.extend(records_of(&r[0])?);
                        }
                        let page = q::Query {
                            filter: None,
                            ..query.bind(&shape.types)
                        };
                        let records = q::run(union, &page, pk);
                        Ok(Step::Reply(reply::ok_list(
                            records.iter().map(Record::to_value).collect(),
                        )))
                    }
                }
            }
            State::Candidates(write) => {
                answered(1)?;
                let mut union = Vec::new();
                let mut home: FxHashMap<Value, usize> = FxHashMap::default();
                for (shard, r) in replies.iter().enumerate() {
                    for record in records_of(&r[0])? {
                        home.insert(pk_of(&record, pk), shard);
                        union.push(record);
                    }
                }
                let page = q::Query {
                    filter: None,
                    ..write.query.bind(&shape.types)
                };
                let records = q::run(union, &page, pk);
                if let Some((_, _, atomics)) = &write.update
                    && !atomics.is_empty()
                {
                    for record in &records {
                        let scope = Scope {
                            record,
                            incoming: None,
                            types: &shape.types,
                        };
                        if let Err(e) = eval_atomics(atomics, scope) {
                            return Err(Error::Store(StoreError::Expr(e.0)).to_reply());
                        }
                    }
                }
                let mut asks: Vec<Vec<Value>> = vec![Vec::new(); self.shards];
                let mut placed = Vec::with_capacity(records.len());
                for record in records {
                    let key = pk_of(&record, pk);
                    let shard = home[&key];
                    let opts = vec![(atom("filter"), write.filter.clone())];
                    let ask = match &write.update {
                        Some((set, atomics, _)) => {
                            let mut opts = opts;
                            opts.push((atom("atomics"), atomics.clone()));
                            Value::tuple(vec![
                                atom("update"),
                                write.resource.clone(),
                                key,
                                set.clone(),
                                Value::map(opts),
                            ])
                        }
                        None => Value::tuple(vec![
                            atom("destroy"),
                            write.resource.clone(),
                            key,
                            Value::map(opts),
                        ]),
                    };
                    placed.push((record, shard, asks[shard].len()));
                    asks[shard].push(ask);
                }
                if placed.is_empty() {
                    return Ok(Step::Reply(finish_write(write.ret, Vec::new())));
                }
                self.state = State::PerRecord {
                    write,
                    page: placed,
                };
                Ok(Step::Ask(asks))
            }
            State::PerRecord { write, page } => {
                let mut out = Vec::with_capacity(page.len());
                for (record, shard, j) in page {
                    let Some(reply) = replies.get(shard).and_then(|r| r.get(j)) else {
                        return Err(Error::Unavailable(
                            "a fan-out is missing a shard's reply".into(),
                        )
                        .to_reply());
                    };
                    if let Some([Value::Atom(tag), reason]) = reply.as_tuple()
                        && tag.as_str() == "error"
                    {
                        // Left alone, as the single node leaves a record that no longer
                        // matches (or is gone); any other failure is the reply.
                        match reason.as_atom().map(|a| a.as_str()) {
                            Some("stale" | "not_found") => continue,
                            _ => return Err(reply.clone()),
                        }
                    }
                    match &write.update {
                        Some(_) => out.push(ok_body(reply)?.clone()),
                        None if reply.as_atom().is_some_and(|a| a.as_str() == "ok") => {
                            out.push(record.to_value())
                        }
                        None => return Err(unreadable(reply)),
                    }
                }
                Ok(Step::Reply(finish_write(write.ret, out)))
            }
        }
    }
}

/// Whether `aggregates` over `query` can be combined from the shards' own aggregates exactly:
/// no offset or limit (each shard's page would be its own), only `count`, `exists`, `sum`,
/// `avg`, `min` and `max` and none of them `uniq` (a value on two shards would count twice),
/// and `min`/`max` only without a sort (with one, a tie such as `1` and `1.0` goes to the first
/// record in the sort order, which only the records tell).
fn partial_exact(query: &q::Query, aggregates: &[Spec]) -> bool {
    query.offset == 0
        && query.limit.is_none()
        && aggregates.iter().all(|a| {
            !a.uniq
                && match a.kind {
                    Kind::Count | Kind::Exists | Kind::Sum | Kind::Avg => true,
                    Kind::Min | Kind::Max => query.sort.is_empty(),
                    Kind::First | Kind::List => false,
                }
        })
}

fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Count => "count",
        Kind::Exists => "exists",
        Kind::Sum => "sum",
        Kind::Avg => "avg",
        Kind::Min => "min",
        Kind::Max => "max",
        Kind::First => "first",
        Kind::List => "list",
    }
}

/// `a + b` as Erlang adds numbers (exact integers; a float from the first float on); `None`
/// when one is not a number.
fn add(a: &Value, b: &Value) -> Option<Value> {
    let big = |v: &Value| match v {
        Value::Int(i) => Some(BigInt::from(*i)),
        Value::BigInt(b) => Some((**b).clone()),
        _ => None,
    };
    let float = |v: &Value| match v {
        Value::Float(f) => Some(*f),
        Value::Int(i) => Some(*i as f64),
        Value::BigInt(b) => num_traits::ToPrimitive::to_f64(&**b),
        _ => None,
    };
    match (big(a), big(b)) {
        (Some(x), Some(y)) => Some(Value::integer(x + y)),
        _ => Some(Value::Float(float(a)? + float(b)?)),
    }
}

/// The reply map `#{Name => Value}` of `aggregates` (bound to the types) from each shard's
/// partial map (`#{Index => Value}`, `avg`s as `#{{Index, sum}, {Index, count}}`).
///
/// Counts add up and `exists` is or-ed exactly; integer sums are exact, but float sums (and
/// so `avg`) may differ from a single node's in the last bits, as the order in which values
/// are added differs (a single node's own order is unspecified). A tie in `min`/`max` (`1` and
/// `1.0`, or two spellings of a `ci_string`) goes to the lowest shard's, as a single node's goes
/// to the first in its unspecified scan order.
fn combine(aggregates: &[Spec], partials: &[&Value]) -> Result<Value, Value> {
    let mut entries = Vec::with_capacity(aggregates.len());
    for (i, a) in aggregates.iter().enumerate() {
        let index = count_term(i);
        let get = |name: &Value| -> Result<Vec<&Value>, Value> {
            partials
                .iter()
                .map(|p| p.map_get(name).ok_or_else(|| unreadable(p)))
                .collect()
        };
        let field = a.field.unwrap_or(Atom::from_static("nil"));
        let overflow = || Error::Aggregate(AggregateError::FloatOverflow { field }).to_reply();
        let sum = |values: Vec<&Value>| -> Result<Option<Value>, Value> {
            let mut total: Option<Value> = None;
            for v in values.into_iter().filter(|v| !v.is_nil()) {
                total = Some(match total {
                    None => v.clone(),
                    Some(t) => add(&t, v).ok_or_else(|| unreadable(v))?,
                });
            }
            match total {
                Some(Value::Float(f)) if !f.is_finite() => Err(overflow()),
                t => Ok(t),
            }
        };
        let value = match a.kind {
            Kind::Count => {
                let mut n = BigInt::from(0);
                for v in get(&index)? {
                    match v {
                        Value::Int(c) => n += *c,
                        other => return Err(unreadable(other)),
                    }
                }
                (n != BigInt::from(0)).then(|| Value::integer(n))
            }
            Kind::Exists => get(&index)?
                .iter()
                .any(|v| v.is_true())
                .then(|| Value::boolean(true)),
            Kind::Sum => sum(get(&index)?)?,
            Kind::Avg => {
                let total = sum(get(&Value::pair(index.clone(), atom("sum")))?)?;
                let mut n = 0i64;
                for v in get(&Value::pair(index, atom("count")))? {
                    n += v.as_int().ok_or_else(|| unreadable(v))?;
                }
                match total {
                    Some(total) if n > 0 => {
                        let total = match total {
                            Value::Float(f) => f,
                            Value::Int(i) => i as f64,
                            Value::BigInt(b) => {
                                num_traits::ToPrimitive::to_f64(&*b).unwrap_or(f64::NAN)
                            }
                            other => return Err(unreadable(&other)),
                        };
                        let mean = total / n as f64;
                        if !mean.is_finite() {
                            return Err(overflow());
                        }
                        Some(Value::Float(mean))
                    }
                    _ => None,
                }
            }
            Kind::Min | Kind::Max => {
                let want = if a.kind == Kind::Min {
                    std::cmp::Ordering::Less
                } else {
                    std::cmp::Ordering::Greater
                };
                let mut best: Option<&Value> = None;
                for v in get(&index)?.into_iter().filter(|v| !v.is_nil()) {
                    if best.is_none_or(|b| q::typed::cmp(a.ty, v, b) == want) {
                        best = Some(v);
                    }
                }
                best.cloned()
            }
            Kind::First | Kind::List => unreachable!("partial_exact admits neither"),
        };
        let value = value.unwrap_or_else(|| {
            a.default.clone().unwrap_or_else(|| match a.kind {
                Kind::Count => Value::Int(0),
                Kind::Exists => Value::boolean(false),
                _ => Value::nil(),
            })
        });
        entries.push((a.name.clone(), value));
    }
    Ok(Value::map(entries))
}

/// The query map's `filter` term (`nil` for none).
fn get_filter(map: &Value) -> Value {
    map.map_get_atom(Atom::from_static("filter"))
        .cloned()
        .unwrap_or_else(Value::nil)
}

/// A record with only the query's `select`ed fields (and the primary key).
fn project(record: &Record, query: &q::Query, primary_key: &[Atom]) -> Record {
    match &query.select {
        Some(select) => q::project(record, select, primary_key),
        None => record.clone(),
    }
}

/// The reply of a write: the records (as terms) or their number.
fn finish_write(ret: Return, records: Vec<Value>) -> Value {
    match ret {
        Return::Records => reply::ok_list(records),
        Return::Count => reply::ok_with(count_term(records.len())),
    }
}

/// The single node's refusal of partitions that share values, worked out from every shard's
/// count of its matches per value (`replies[i][1]`, `{ok, [{Value, #{n => N}}]}`).
fn check_counts(
    replies: &[Vec<Value>],
    partition: &q::Partition,
    page: &q::Query,
    ty: Option<q::typed::FieldType>,
    max_records: usize,
) -> Result<(), Value> {
    let mut sizes: FxHashMap<GroupKey, usize> = FxHashMap::default();
    let mut matched = 0usize;
    let n = Value::Atom(Atom::from_static("n"));
    for r in replies {
        let body = ok_body(&r[1])?;
        for group in body.as_list().ok_or_else(|| unreadable(&r[1]))? {
            let (value, count) = match group.as_tuple() {
                Some([value, counts]) => match counts.map_get(&n).and_then(Value::as_int) {
                    Some(c) => (value, c as usize),
                    None => return Err(unreadable(&r[1])),
                },
                _ => return Err(unreadable(&r[1])),
            };
            *sizes.entry(GroupKey::of(value, ty)).or_default() += count;
            matched = matched.saturating_add(count);
        }
    }
    let parts = partition.partitions.as_deref().unwrap_or_default();
    let mut total = 0usize;
    for (_, values) in parts {
        let mut seen = FxHashSet::default();
        let members: usize = values
            .iter()
            .map(|v| GroupKey::of(v, ty))
            .filter(|k| seen.insert(k.clone()))
            .map(|k| sizes.get(&k).copied().unwrap_or(0))
            .sum();
        total = total.saturating_add(paged_len(members, page));
    }
    check_total(total, matched, max_records).map_err(|e| Error::BadRequest(e).to_reply())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::parse_term;

    fn t(text: &str) -> Value {
        parse_term(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    fn shape(types: &str) -> Shape {
        Shape {
            primary_key: vec![Atom::new("id").unwrap()],
            types: Arc::new(Types::parse(&t(types)).unwrap()),
            max_records: 100_000,
            lifetimes: false,
        }
    }

    /// Starts `request` over `shards` shards: the fan-out and its first step.
    fn start(request: &str, shape: Shape, shards: usize) -> (Fanout, Step) {
        Fanout::start(&t(request), shape, shards).expect("a request to fan out")
    }

    /// The requests of an `Ask`.
    fn asks(step: &Step) -> &Vec<Vec<Value>> {
        match step {
            Step::Ask(asks) => asks,
            Step::Reply(r) => panic!("expected an ask, got the reply {r:?}"),
        }
    }

    fn reply(step: Step) -> Value {
        match step {
            Step::Reply(r) => r,
            Step::Ask(a) => panic!("expected a reply, got {a:?}"),
        }
    }

    /// Every shard's one reply, as text.
    fn replies(texts: &[&str]) -> Vec<Vec<Value>> {
        texts.iter().map(|s| vec![t(s)]).collect()
    }

    #[test]
    fn only_the_four_multi_record_requests_fan_out() {
        for r in [
            "{get, r, #{id => 1}}",
            "ping",
            "{create, r, #{id => 1}}",
            "{info, r}",
        ] {
            assert!(!is_fanout(&t(r)), "{r}");
            assert!(Fanout::start(&t(r), shape("#{}"), 2).is_none(), "{r}");
        }
        // A malformed request is answered at once, with the single node's words.
        for bad in [
            "{query}",
            "{query, r, #{offset => -1}}",
            "{query, r, #{}, #{partitions => []}}",
            "{query, r, #{}, #{touch => maybe}}",
            "{aggregate, r, #{}, [{c, cnt, nil, #{}}]}",
            "{update_where, r, #{}, #{sett => #{}}}",
            "{destroy_where, r, #{limit => x}}",
        ] {
            let single = match Request::parse(&t(bad)) {
                Err(e) => e.to_reply(),
                Ok(_) => panic!("{bad} parses"),
            };
            let (_, step) = start(bad, shape("#{}"), 3);
            assert_eq!(reply(step), single, "{bad}");
        }
    }

    #[test]
    fn a_query_asks_each_shard_for_the_first_offset_plus_limit_unprojected() {
        let (_, step) = start(
            "{query, {r, t1}, #{filter => {gt, a, 1}, sort => [{a, desc}], offset => 2, limit => 3, select => [a]}}",
            shape("#{}"),
            2,
        );
        let want = t("{query, {r, t1}, #{filter => {gt, a, 1}, sort => [{a, desc}], limit => 5}}");
        assert_eq!(asks(&step), &vec![vec![want.clone()], vec![want]]);
        // No limit stays none; the options travel along.
        let (_, step) = start(
            "{query, r, #{offset => 2}, #{touch => false}}",
            shape("#{}"),
            1,
        );
        assert_eq!(
            asks(&step),
            &vec![vec![t("{query, r, #{}, #{touch => false}}")]]
        );
    }

    #[test]
    fn query_ties_break_on_the_primary_key_across_shards_then_page_and_select() {
        let (mut f, _) = start(
            "{query, r, #{sort => [{a, desc}], offset => 1, limit => 3, select => [b]}}",
            shape("#{}"),
            3,
        );
        let got = f.next(replies(&[
            "{ok, [#{id => 5, a => 2, b => x, c => 1}, #{id => 2, a => 1, b => y}]}",
            "{ok, [#{id => 4, a => 2, b => z}, #{id => 1, a => 1}]}",
            "{ok, [#{id => 3, a => 2}, #{id => 7, a => nil}]}",
        ]));
        // a desc (nil is an atom: above numbers), ties by id: 7, 3, 4, 5, 1, 2.
        assert_eq!(
            reply(got),
            t("{ok, [#{id => 3}, #{id => 4, b => z}, #{id => 5, b => x}]}")
        );
    }

    #[test]
    fn offsets_past_the_end_and_limit_zero_give_nothing() {
        let shards = ["{ok, [#{id => 1}]}", "{ok, [#{id => 2}]}"];
        for q in [
            "{query, r, #{offset => 2}}",
            "{query, r, #{offset => 5, limit => 1}}",
            "{query, r, #{limit => 0}}",
        ] {
            let (mut f, _) = start(q, shape("#{}"), 2);
            assert_eq!(reply(f.next(replies(&shards))), t("{ok, []}"), "{q}");
        }
        let (mut f, _) = start("{query, r, #{offset => 1}}", shape("#{}"), 2);
        assert_eq!(reply(f.next(replies(&shards))), t("{ok, [#{id => 2}]}"));
    }

    #[test]
    fn typed_sorts_compare_by_type_across_shards() {
        let (mut f, _) = start(
            "{query, r, #{sort => [{name, asc}, {price, desc}]}}",
            shape("#{name => ci_string, price => decimal}"),
            2,
        );
        let dec = |coef: i64, exp: i64| {
            format!(
                "#{{'__struct__' => 'Elixir.Decimal', sign => 1, coef => {coef}, exp => {exp}}}"
            )
        };
        let got = f.next(vec![
            vec![t(&format!(
                "{{ok, [#{{id => 1, name => <<\"b\">>, price => {}}}, #{{id => 2, name => <<\"B\">>, price => {}}}]}}",
                dec(10, -1),
                dec(2, 0)
            ))],
            vec![t(&format!(
                "{{ok, [#{{id => 3, name => <<\"a\">>, price => {}}}, #{{id => 0, name => <<\"b\">>, price => {}}}]}}",
                dec(1, 0),
                dec(100, -2)
            ))],
        ]);
        // "a" < "b" = "B" (case-insensitive); among the b's price desc: 2 (id 2), then 1.0
        // and 1.00, equal, by id: 0, 1. Term order would have put "B" first.
        let ids: Vec<Value> = ok_body(&reply(got))
            .unwrap()
            .as_list()
            .unwrap()
            .iter()
            .map(|r| r.map_get_atom(Atom::new("id").unwrap()).unwrap().clone())
            .collect();
        assert_eq!(ids, vec![t("3"), t("2"), t("0"), t("1")]);
    }

    #[test]
    fn a_paged_query_touches_its_page_only_in_a_second_round() {
        let mut lives = shape("#{}");
        lives.lifetimes = true;
        let (mut f, step) = start(
            "{query, {r, t}, #{sort => [{id, asc}], offset => 1, limit => 2}, #{}}",
            lives.clone(),
            2,
        );
        let want = t("{query, {r, t}, #{sort => [{id, asc}], limit => 3}, #{touch => false}}");
        assert_eq!(asks(&step), &vec![vec![want.clone()], vec![want]]);
        let step = f.next(replies(&[
            "{ok, [#{id => 1}, #{id => 3}]}",
            "{ok, [#{id => 2}, #{id => 4}, #{id => 5}]}",
        ]));
        assert_eq!(
            asks(&step),
            &vec![
                vec![t("{keep_alive, {r, t}, #{id => 3}}")],
                vec![t("{keep_alive, {r, t}, #{id => 2}}")],
            ]
        );
        // A record gone meanwhile does not change the reply.
        let got = f.next(vec![vec![t("ok")], vec![t("{error, not_found}")]]);
        assert_eq!(reply(got), t("{ok, [#{id => 2}, #{id => 3}]}"));
        // A partition's page too, each record once.
        let (mut f, step) = start(
            "{query, r, #{limit => 1}, #{partition_by => a, partitions => [{x, [1]}, {y, [1]}]}}",
            lives.clone(),
            2,
        );
        assert_eq!(
            asks(&step)[0][0],
            t(
                "{query, r, #{limit => 1}, #{partition_by => a, touch => false, partitions => [{0, [1]}]}}"
            )
        );
        let step = f.next(replies(&[
            "{ok, [{0, [#{id => 2, a => 1}]}]}",
            "{ok, [{0, [#{id => 1, a => 1}]}]}",
        ]));
        assert_eq!(
            asks(&step),
            &vec![vec![], vec![t("{keep_alive, r, #{id => 1}}")]]
        );
        assert_eq!(
            reply(f.next(vec![vec![], vec![t("ok")]])),
            t("{ok, [{x, [#{id => 1, a => 1}]}, {y, [#{id => 1, a => 1}]}]}")
        );
        // Unpaged, or paged on one shard from the start, or asked not to touch: the shards'
        // own touches are the single node's.
        for (q, shards) in [
            ("{query, r, #{sort => [{id, asc}]}}", 2),
            ("{query, r, #{limit => 2}}", 1),
            ("{query, r, #{limit => 2}, #{touch => false}}", 2),
        ] {
            let (mut f, step) = start(q, lives.clone(), shards);
            let ask = &asks(&step)[0][0];
            let opts = ask.as_tuple().unwrap().get(3);
            assert!(
                opts.is_none() || q.contains("touch => false"),
                "{q}: {ask:?}"
            );
            let step = f.next(vec![vec![t("{ok, [#{id => 1}]}")]; shards]);
            assert!(matches!(step, Step::Reply(_)), "{q}");
        }
        // Without lifetimes a touch changes nothing: one round.
        let (_, step) = start("{query, r, #{offset => 1}}", shape("#{}"), 2);
        assert_eq!(asks(&step)[0][0], t("{query, r, #{}}"));
    }

    #[test]
    fn a_partitioned_query_asks_for_each_distinct_value_once_and_lists_every_partition() {
        let (mut f, step) = start(
            "{query, r, #{sort => [{n, asc}], limit => 1}, #{partition_by => author, partitions => [{p, [1, 2, 1]}, {q, [2]}, {e, [9]}]}}",
            shape("#{}"),
            2,
        );
        // Values 1, 2 and 9 once each; with a limit, partitions x limit is under the node's
        // limit: no counts needed.
        let want = t(
            "{query, r, #{sort => [{n, asc}], limit => 1}, #{partition_by => author, touch => true, partitions => [{0, [1]}, {1, [2]}, {2, [9]}]}}",
        );
        assert_eq!(asks(&step), &vec![vec![want.clone()], vec![want]]);
        let got = f.next(replies(&[
            "{ok, [{0, [#{id => 1, author => 1, n => 5}]}, {1, [#{id => 2, author => 2, n => 3}]}, {2, []}]}",
            "{ok, [{0, [#{id => 3, author => 1, n => 4}]}, {1, []}, {2, []}]}",
        ]));
        assert_eq!(
            reply(got),
            t(
                "{ok, [{p, [#{id => 2, author => 2, n => 3}]}, {q, [#{id => 2, author => 2, n => 3}]}, {e, []}]}"
            )
        );
    }

    #[test]
    fn partitions_sharing_values_are_refused_as_the_single_node_would() {
        let mut small = shape("#{}");
        small.max_records = 4;
        let request = "{query, r, #{filter => {gt, n, 0}}, #{partition_by => a, partitions => [{x, [1]}, {y, [1]}, {z, [1, 2]}]}}";
        let (mut f, step) = start(request, small.clone(), 2);
        let count =
            t("{aggregate, r, #{filter => {gt, n, 0}}, [{n, count, nil, #{}}], #{group_by => a}}");
        assert_eq!(asks(&step)[1][1], count);
        let records =
            "{ok, [{0, [#{id => 1, a => 1, n => 1}]}, {1, [#{id => 3, a => 2, n => 1}]}]}";
        // Value 1: 2 records, value 2: 1, value 3: 2 (5 matched). Partitions return 2 + 2 + 3 = 7
        // > max(5, 4).
        let too_many = f.next(vec![
            vec![t(records), t("{ok, [{1, #{n => 1}}, {2, #{n => 1}}]}")],
            vec![
                t("{ok, [{0, [#{id => 2, a => 1, n => 1}]}, {1, []}]}"),
                t("{ok, [{1, #{n => 1}}, {3, #{n => 2}}]}"),
            ],
        ]);
        let expected = q::partition::check_total(7, 5, 4).unwrap_err();
        assert_eq!(reply(too_many), Error::BadRequest(expected).to_reply());
        // With two more records matched (value 3), 7 records are allowed.
        let (mut f, _) = start(request, small, 2);
        let fine = f.next(vec![
            vec![t(records), t("{ok, [{1, #{n => 1}}, {2, #{n => 1}}]}")],
            vec![
                t("{ok, [{0, [#{id => 2, a => 1, n => 1}]}, {1, []}]}"),
                t("{ok, [{1, #{n => 1}}, {3, #{n => 4}}]}"),
            ],
        ]);
        let parts = ok_body(&reply(fine)).unwrap().as_list().unwrap().len();
        assert_eq!(parts, 3);
    }

    #[test]
    fn partitions_without_a_list_come_in_term_order_and_each_pages_alone() {
        let (mut f, step) = start(
            "{query, r, #{sort => [{id, asc}], offset => 1, limit => 1, select => []}, #{partition_by => a}}",
            shape("#{}"),
            2,
        );
        assert_eq!(
            asks(&step)[0][0],
            t(
                "{query, r, #{sort => [{id, asc}], limit => 2}, #{partition_by => a, touch => true}}"
            )
        );
        let got = f.next(replies(&[
            "{ok, [{1, [#{id => 1, a => 1}, #{id => 4, a => 1}]}, {nil, [#{id => 5}]}]}",
            "{ok, [{1, [#{id => 2, a => 1}]}, {2, [#{id => 3, a => 2}]}]}",
        ]));
        assert_eq!(
            reply(got),
            t("{ok, [{1, [#{id => 2}]}, {2, []}, {nil, []}]}")
        );
        // With limit 0 every value present is still a partition: each shard sends one record
        // of each.
        let (mut f, step) = start(
            "{query, r, #{limit => 0}, #{partition_by => a}}",
            shape("#{}"),
            2,
        );
        assert_eq!(
            asks(&step)[1][0],
            t("{query, r, #{limit => 1}, #{partition_by => a, touch => true}}")
        );
        let got = f.next(replies(&[
            "{ok, [{2, [#{id => 1, a => 2}]}]}",
            "{ok, [{1, [#{id => 2, a => 1}]}]}",
        ]));
        assert_eq!(reply(got), t("{ok, [{1, []}, {2, []}]}"));
    }

    #[test]
    fn an_aggregate_reads_records_without_touching_them() {
        let (mut f, step) = start(
            "{aggregate, r, #{sort => [{n, desc}], offset => 1, limit => 2}, [{c, count, nil, #{}}, {s, sum, n, #{}}, {l, list, n, #{}}, {m, max, n, #{default => 0}}]}",
            shape("#{}"),
            2,
        );
        assert_eq!(
            asks(&step)[1][0],
            t("{query, r, #{sort => [{n, desc}], limit => 3}, #{touch => false}}")
        );
        let got = f.next(replies(&[
            "{ok, [#{id => 1, n => 9}, #{id => 2, n => 4}]}",
            "{ok, [#{id => 3, n => 7}, #{id => 4, n => 1}]}",
        ]));
        assert_eq!(
            reply(got),
            t("{ok, #{c => 2, s => 11, l => [7, 4], m => 7}}")
        );
    }

    #[test]
    fn grouped_aggregates_list_groups_their_offset_empties() {
        let (mut f, step) = start(
            "{aggregate, r, #{offset => 1, limit => 0}, [{c, count, nil, #{}}, {f, first, n, #{default => none}}], #{group_by => g}}",
            shape("#{}"),
            2,
        );
        // Every group must come, with one record at least.
        assert_eq!(
            asks(&step)[0][0],
            t("{query, r, #{limit => 1}, #{touch => false, partition_by => g}}")
        );
        let got = f.next(replies(&[
            "{ok, [{a, [#{id => 1, g => a, n => 1}]}]}",
            "{ok, [{b, [#{id => 2, g => b, n => 2}]}, {a, [#{id => 3, g => a}]}]}",
        ]));
        assert_eq!(
            reply(got),
            t("{ok, [{a, #{c => 0, f => none}}, {b, #{c => 0, f => none}}]}")
        );
        let (mut f, _) = start(
            "{aggregate, r, #{sort => [{n, asc}]}, [{c, count, nil, #{}}, {f, first, n, #{}}, {u, list, g, #{uniq => true}}], #{group_by => g}}",
            shape("#{}"),
            2,
        );
        let got = f.next(replies(&[
            "{ok, [{a, [#{id => 1, g => a, n => 5}]}, {b, [#{id => 4, g => b, n => 1}]}]}",
            "{ok, [{a, [#{id => 2, g => a, n => 3}, #{id => 3, g => a}]}]}",
        ]));
        assert_eq!(
            reply(got),
            t("{ok, [{a, #{c => 3, f => 3, u => [a]}}, {b, #{c => 1, f => 1, u => [b]}}]}")
        );
    }

    #[test]
    fn aggregates_that_add_up_are_combined_from_the_shards_own() {
        let (mut f, step) = start(
            "{aggregate, r, #{filter => {gt, n, 0}, sort => [{n, asc}]}, [{c, count, nil, #{default => none}}, {e, exists, a, #{}}, {s, sum, n, #{}}, {v, avg, n, #{}}, {z, sum, a, #{default => 0}}]}",
            shape("#{}"),
            2,
        );
        // Defaults are applied here: a shard cannot tell its empty set from the whole's.
        let want = t(
            "{aggregate, r, #{filter => {gt, n, 0}, sort => [{n, asc}]}, [{0, count, nil, #{}}, {1, exists, a, #{}}, {2, sum, n, #{}}, {{3, sum}, sum, n, #{}}, {{3, count}, count, n, #{}}, {4, sum, a, #{}}]}",
        );
        assert_eq!(asks(&step), &vec![vec![want.clone()], vec![want]]);
        let got = f.next(replies(&[
            "{ok, #{0 => 2, 1 => false, 2 => 3, {3, sum} => 3, {3, count} => 2, 4 => nil}}",
            "{ok, #{0 => 1, 1 => true, 2 => 1.5, {3, sum} => 1.5, {3, count} => 1, 4 => nil}}",
        ]));
        assert_eq!(
            reply(got),
            t("{ok, #{c => 3, e => true, s => 4.5, v => 1.5, z => 0}}")
        );
        // Empty everywhere: the empty-set values, or the defaults.
        let (mut f, _) = start(
            "{aggregate, r, #{}, [{c, count, nil, #{default => none}}, {e, exists, nil, #{}}, {v, avg, n, #{}}, {m, max, n, #{default => 0}}]}",
            shape("#{}"),
            2,
        );
        let empty = "{ok, #{0 => 0, 1 => false, {2, sum} => nil, {2, count} => 0, 3 => nil}}";
        assert_eq!(
            reply(f.next(replies(&[empty, empty]))),
            t("{ok, #{c => none, e => false, v => nil, m => 0}}")
        );
        // min/max compare by type.
        let (mut f, step) = start(
            "{aggregate, r, #{}, [{lo, min, name, #{}}, {hi, max, name, #{}}]}",
            shape("#{name => ci_string}"),
            2,
        );
        assert_eq!(asks(&step)[0][0].as_tuple().unwrap()[0], t("aggregate"));
        let got = f.next(replies(&[
            "{ok, #{0 => <<\"b\">>, 1 => <<\"b\">>}}",
            "{ok, #{0 => <<\"A\">>, 1 => <<\"C\">>}}",
        ]));
        assert_eq!(reply(got), t("{ok, #{lo => <<\"A\">>, hi => <<\"C\">>}}"));
        // Grouped: groups merged by value (by type), in order.
        let (mut f, _) = start(
            "{aggregate, r, #{}, [{c, count, nil, #{}}], #{group_by => g}}",
            shape("#{g => ci_string}"),
            2,
        );
        let got = f.next(replies(&[
            "{ok, [{<<\"B\">>, #{0 => 1}}, {nil, #{0 => 2}}]}",
            "{ok, [{<<\"a\">>, #{0 => 4}}, {<<\"b\">>, #{0 => 1}}]}",
        ]));
        assert_eq!(
            reply(got),
            t("{ok, [{nil, #{c => 2}}, {<<\"a\">>, #{c => 4}}, {<<\"B\">>, #{c => 2}}]}")
        );
        // Not with a page, uniq values, first or list, or min/max under a sort: the records.
        for q in [
            "{aggregate, r, #{limit => 5}, [{c, count, nil, #{}}]}",
            "{aggregate, r, #{offset => 1}, [{c, count, nil, #{}}]}",
            "{aggregate, r, #{}, [{c, count, a, #{uniq => true}}]}",
            "{aggregate, r, #{}, [{c, count, nil, #{}}, {f, first, a, #{}}]}",
            "{aggregate, r, #{sort => [{a, asc}]}, [{m, min, a, #{}}]}",
        ] {
            let (_, step) = start(q, shape("#{}"), 2);
            assert_eq!(asks(&step)[0][0].as_tuple().unwrap()[0], t("query"), "{q}");
        }
    }

    #[test]
    fn aggregate_errors_are_the_single_nodes() {
        let (mut f, _) = start(
            "{aggregate, r, #{}, [{l, list, n, #{}}, {s, sum, n, #{}}]}",
            shape("#{}"),
            2,
        );
        let got = f.next(replies(&[
            "{ok, [#{id => 1, n => 1}]}",
            "{ok, [#{id => 2, n => <<\"x\">>}]}",
        ]));
        assert_eq!(reply(got), t("{error, {not_a_number, n, <<\"x\">>}}"));
    }

    #[test]
    fn the_lowest_shards_error_wins() {
        let (mut f, _) = start("{query, r, #{}}", shape("#{}"), 3);
        let got = f.next(replies(&[
            "{ok, []}",
            "{error, {unknown_resource, r}}",
            "{error, {unavailable, <<\"no leader\">>}}",
        ]));
        assert_eq!(reply(got), t("{error, {unknown_resource, r}}"));
        let (mut f, _) = start(
            "{destroy_where, r, #{}, #{return => count}}",
            shape("#{}"),
            2,
        );
        let got = f.next(replies(&["{error, x}", "{ok, 3}"]));
        assert_eq!(reply(got), t("{error, x}"));
        // Shards that answer what no shard would are the cluster's trouble.
        let (mut f, _) = start("{query, r, #{}}", shape("#{}"), 2);
        let got = reply(f.next(replies(&["{ok, []}", "{ok, 1}"])));
        assert!(
            matches!(got.as_tuple(), Some([_, reason]) if reason.as_tuple().is_some_and(|r| r[0] == t("unavailable"))),
            "{got:?}"
        );
        let (mut f, _) = start("{query, r, #{}}", shape("#{}"), 2);
        let got = reply(f.next(replies(&["{ok, []}"])));
        assert!(format!("{got:?}").contains("unavailable"), "{got:?}");
    }

    #[test]
    fn unpaged_writes_go_as_they_are_and_come_back_in_the_querys_order() {
        let req = "{destroy_where, r, #{filter => {gt, n, 1}, sort => [{n, asc}]}}";
        let (mut f, step) = start(req, shape("#{}"), 2);
        assert_eq!(asks(&step), &vec![vec![t(req)], vec![t(req)]]);
        let got = f.next(replies(&[
            "{ok, [#{id => 1, n => 3}, #{id => 2, n => 5}]}",
            "{ok, [#{id => 3, n => 4}]}",
        ]));
        assert_eq!(
            reply(got),
            t("{ok, [#{id => 1, n => 3}, #{id => 3, n => 4}, #{id => 2, n => 5}]}")
        );
        let req = "{update_where, r, #{sort => [{n, asc}]}, #{set => #{m => 1}, return => count}}";
        let (mut f, step) = start(req, shape("#{}"), 2);
        assert_eq!(asks(&step)[1], vec![t(req)]);
        assert_eq!(
            reply(f.next(replies(&["{ok, 2}", "{ok, 0}"]))),
            t("{ok, 2}")
        );
    }

    #[test]
    fn a_paged_write_fetches_candidates_then_writes_each_on_its_shard_in_order() {
        let (mut f, step) = start(
            "{update_where, r, #{filter => {gt, n, 0}, sort => [{n, desc}], offset => 1, limit => 3}, #{set => #{done => true}}}",
            shape("#{}"),
            2,
        );
        assert_eq!(
            asks(&step)[0],
            vec![t(
                "{query, r, #{filter => {gt, n, 0}, sort => [{n, desc}], limit => 4}, #{touch => false}}"
            )]
        );
        let step = f.next(replies(&[
            "{ok, [#{id => 1, n => 9}, #{id => 2, n => 5}, #{id => 5, n => 2}]}",
            "{ok, [#{id => 3, n => 7}, #{id => 4, n => 5}]}",
        ]));
        // Order: 1 (9), 3 (7), 2 (5), 4 (5), 5 (2); the page: 3, 2, 4.
        let update = |id: i64| {
            t(&format!(
                "{{update, r, #{{id => {id}}}, #{{done => true}}, #{{filter => {{gt, n, 0}}, atomics => []}}}}"
            ))
        };
        assert_eq!(
            asks(&step),
            &vec![vec![update(2)], vec![update(3), update(4)]]
        );
        // Record 3 changed meanwhile and no longer matches: left out, as on a single node.
        let got = f.next(vec![
            vec![t("{ok, #{id => 2, n => 5, done => true}}")],
            vec![
                t("{error, stale}"),
                t("{ok, #{id => 4, n => 5, done => true}}"),
            ],
        ]);
        assert_eq!(
            reply(got),
            t("{ok, [#{id => 2, n => 5, done => true}, #{id => 4, n => 5, done => true}]}")
        );
    }

    #[test]
    fn a_paged_destroy_answers_the_records_destroyed_or_the_first_failure_in_order() {
        let start_destroy = |ret: &str| {
            let (mut f, _) = start(
                &format!(
                    "{{destroy_where, r, #{{sort => [{{id, asc}}], limit => 2}}, #{{return => {ret}}}}}"
                ),
                shape("#{}"),
                2,
            );
            let step = f.next(replies(&[
                "{ok, [#{id => 2, x => b}]}",
                "{ok, [#{id => 1, x => a}, #{id => 3}]}",
            ]));
            assert_eq!(
                asks(&step),
                &vec![
                    vec![t("{destroy, r, #{id => 2}, #{filter => nil}}")],
                    vec![t("{destroy, r, #{id => 1}, #{filter => nil}}")],
                ]
            );
            f
        };
        let mut f = start_destroy("records");
        let got = f.next(vec![vec![t("ok")], vec![t("ok")]]);
        assert_eq!(
            reply(got),
            t("{ok, [#{id => 1, x => a}, #{id => 2, x => b}]}")
        );
        let mut f = start_destroy("count");
        let got = f.next(vec![vec![t("ok")], vec![t("{error, not_found}")]]);
        assert_eq!(reply(got), t("{ok, 1}"));
        // The first failure in the query's order (id 1, on shard 1), not shard 0's.
        let mut f = start_destroy("records");
        let got = f.next(vec![
            vec![t("{error, {record_crashed, b}}")],
            vec![t("{error, {record_crashed, a}}")],
        ]);
        assert_eq!(reply(got), t("{error, {record_crashed, a}}"));
    }

    #[test]
    fn atomics_are_tried_on_every_candidate_before_anything_changes() {
        let req = "{update_where, r, #{}, #{atomics => [{q, {'/', {value, 1}, {ref, n}}}]}}";
        let (mut f, step) = start(req, shape("#{}"), 2);
        assert!(matches!(&asks(&step)[0][0], v if v.as_tuple().unwrap()[0] == t("query")));
        let got = f.next(replies(&[
            "{ok, [#{id => 1, n => 2}]}",
            "{ok, [#{id => 2, n => 0}]}",
        ]));
        assert_eq!(
            reply(got),
            t("{error, {expr_error, {arithmetic, '/', 1, 0}}}")
        );
        // Nothing matched: nothing to do.
        let (mut f, _) = start(req, shape("#{}"), 2);
        assert_eq!(
            reply(f.next(replies(&["{ok, []}", "{ok, []}"]))),
            t("{ok, []}")
        );
    }

    #[test]
    fn an_update_that_changes_the_sort_keeps_the_order_before_it() {
        let req = "{update_where, r, #{sort => [{n, asc}]}, #{set => #{n => 0}}}";
        let (mut f, step) = start(req, shape("#{}"), 2);
        assert_eq!(
            asks(&step)[0][0],
            t("{query, r, #{sort => [{n, asc}]}, #{touch => false}}")
        );
        let step = f.next(replies(&[
            "{ok, [#{id => 2, n => 1}]}",
            "{ok, [#{id => 1, n => 2}]}",
        ]));
        assert_eq!(asks(&step)[0].len() + asks(&step)[1].len(), 2);
        let got = f.next(vec![
            vec![t("{ok, #{id => 2, n => 0}}")],
            vec![t("{ok, #{id => 1, n => 0}}")],
        ]);
        // By n before the update (2 first), not after (a tie, then id 1 first).
        assert_eq!(
            reply(got),
            t("{ok, [#{id => 2, n => 0}, #{id => 1, n => 0}]}")
        );
    }

    /// Random records, split over 1 to 5 record services (as shards would hold them, or at
    /// random), and a random request: what the fan-out makes of the parts' replies is what one
    /// node holding every record answers, and after a write the parts hold what it holds.
    mod against_one_node {
        use super::*;
        use crate::cluster::placement::shard_of;
        use crate::embedded::Embedded;
        use proptest::prelude::*;
        use proptest::test_runner::{Config, TestRunner};

        const DEC: [&str; 4] = ["{1, 0}", "{10, -1}", "{2, 0}", "{-5, -1}"];

        fn dec(i: usize) -> String {
            let (coef, exp) = match DEC[i] {
                "{1, 0}" => (1, 0),
                "{10, -1}" => (10, -1),
                "{2, 0}" => (2, 0),
                _ => (5, -1),
            };
            let sign = if i == 3 { -1 } else { 1 };
            format!(
                "#{{'__struct__' => 'Elixir.Decimal', sign => {sign}, coef => {coef}, exp => {exp}}}"
            )
        }

        /// One field's text (`None`: absent) from a pool.
        fn field(pool: &'static [&'static str]) -> impl Strategy<Value = Option<String>> {
            prop_oneof![
                1 => Just(None),
                4 => prop::sample::select(pool).prop_map(|v| Some(v.to_string())),
            ]
        }

        const A: &[&str] = &["nil", "-1", "0", "1", "2"];
        const B: &[&str] = &["<<\"x\">>", "<<\"y\">>", "<<\"X\">>"];
        const C: &[&str] = &["nil", "<<\"a\">>", "<<\"B\">>", "<<\"c\">>"];
        const N: &[&str] = &["nil", "0.5", "1.25", "-2.0", "3.0"];

        fn record() -> impl Strategy<Value = String> {
            (
                field(A),
                field(B),
                field(C),
                prop::option::of(0..4usize),
                field(N),
            )
                .prop_map(|(a, b, c, d, n)| {
                    let mut fields = Vec::new();
                    for (name, v) in [("a", a), ("b", b), ("c", c), ("d", d.map(dec)), ("n", n)] {
                        if let Some(v) = v {
                            fields.push(format!("{name} => {v}"));
                        }
                    }
                    fields.join(", ")
                })
        }

        const FILTERS: &[&str] = &[
            "{gt, a, 0}",
            "{eq, b, <<\"x\">>}",
            "{is_nil, a}",
            "{'not', {is_nil, c}}",
            "{in, a, [0, 2]}",
            "{lte, c, <<\"b\">>}",
            "{'or', {is_nil, n}, {gt, n, 1}}",
            "{lt, d, #{'__struct__' => 'Elixir.Decimal', sign => 1, coef => 15, exp => -1}}",
        ];
        const SORT_FIELDS: &[&str] = &["a", "b", "c", "d", "n", "id"];
        const DIRS: &[&str] = &[
            "asc",
            "desc",
            "asc_nils_first",
            "asc_nils_last",
            "desc_nils_first",
            "desc_nils_last",
        ];

        /// A query map's entries (without select), and whether its order is specified.
        fn query() -> impl Strategy<Value = (Vec<String>, bool)> {
            (
                prop::option::of(prop::sample::select(FILTERS)),
                prop::collection::vec(
                    (
                        prop::sample::select(SORT_FIELDS),
                        prop::sample::select(DIRS),
                    ),
                    0..3,
                ),
                prop_oneof![3 => Just(None), 1 => Just(Some(0)), 3 => (1..6usize).prop_map(Some)],
                prop_oneof![3 => Just(None), 1 => Just(Some(0)), 3 => (1..7usize).prop_map(Some)],
            )
                .prop_map(|(filter, sort, offset, limit)| {
                    let mut entries = Vec::new();
                    if let Some(f) = filter {
                        entries.push(format!("filter => {f}"));
                    }
                    let ordered =
                        !sort.is_empty() || offset.is_some_and(|o| o > 0) || limit.is_some();
                    if !sort.is_empty() {
                        let keys: Vec<String> =
                            sort.iter().map(|(f, d)| format!("{{{f}, {d}}}")).collect();
                        entries.push(format!("sort => [{}]", keys.join(", ")));
                    }
                    if let Some(n) = offset {
                        entries.push(format!("offset => {n}"));
                    }
                    if let Some(n) = limit {
                        entries.push(format!("limit => {n}"));
                    }
                    (entries, ordered)
                })
        }

        const AGGREGATES: &[&str] = &[
            "{count, nil, #{}}",
            "{count, a, #{default => none}}",
            "{count, b, #{uniq => true}}",
            "{exists, nil, #{}}",
            "{sum, n, #{}}",
            "{sum, a, #{default => 0}}",
            "{avg, n, #{}}",
            "{avg, a, #{default => 0.0}}",
            "{max, a, #{default => -100}}",
            "{exists, c, #{default => maybe}}",
            "{min, a, #{}}",
            "{max, c, #{}}",
            "{min, c, #{default => none}}",
            "{first, a, #{}}",
            "{first, n, #{include_nil => true}}",
            "{list, b, #{}}",
            "{list, a, #{uniq => true, include_nil => true}}",
        ];

        /// The request (with `RES` for the resource) and whether its reply's records come in
        /// a specified order.
        fn request() -> impl Strategy<Value = (String, bool)> {
            let select = prop::option::of(prop::sample::select(&["[a]", "[b, n]", "[]"][..]));
            let values = |f: &str| -> &'static [&'static str] {
                match f {
                    "a" => A,
                    "b" => B,
                    _ => &["nil", "<<\"a\">>", "<<\"A\">>", "<<\"B\">>", "<<\"c\">>"],
                }
            };
            let partitions = prop::sample::select(&["a", "b", "c"][..]).prop_flat_map(move |f| {
                let pool = values(f);
                (
                    Just(f),
                    prop::option::of(prop::collection::vec(
                        prop::collection::vec(prop::sample::select(pool), 0..3),
                        1..4,
                    )),
                )
            });
            prop_oneof![
                2 => (query(), select.clone()).prop_map(|((mut q, ordered), select)| {
                    if let Some(s) = select {
                        q.push(format!("select => {s}"));
                    }
                    (format!("{{query, RES, #{{{}}}}}", q.join(", ")), ordered)
                }),
                2 => (query(), select, partitions).prop_map(|((mut q, ordered), select, (f, parts))| {
                    if let Some(s) = select {
                        q.push(format!("select => {s}"));
                    }
                    let mut opts = format!("partition_by => {f}");
                    if let Some(parts) = parts {
                        let parts: Vec<String> = parts
                            .iter()
                            .enumerate()
                            .map(|(i, vals)| format!("{{p{i}, [{}]}}", vals.join(", ")))
                            .collect();
                        opts.push_str(&format!(", partitions => [{}]", parts.join(", ")));
                    }
                    (
                        format!("{{query, RES, #{{{}}}, #{{{opts}}}}}", q.join(", ")),
                        ordered,
                    )
                }),
                3 => (
                    query(),
                    prop::collection::vec(prop::sample::select(AGGREGATES), 1..5),
                    prop::option::of(prop::sample::select(&["a", "b", "c"][..])),
                )
                    .prop_map(|((q, ordered), aggs, group_by)| {
                        // Without an order, first and list have no single answer.
                        let aggs: Vec<String> = aggs
                            .iter()
                            .filter(|a| ordered || !(a.starts_with("{first") || a.starts_with("{list")))
                            .enumerate()
                            .map(|(i, a)| format!("{{g{i}, {}", &a[1..]))
                            .collect();
                        let aggs = if aggs.is_empty() {
                            "[{g, count, nil, #{}}]".to_string()
                        } else {
                            format!("[{}]", aggs.join(", "))
                        };
                        let opts = group_by
                            .map(|g| format!(", #{{group_by => {g}}}"))
                            .unwrap_or_default();
                        (format!("{{aggregate, RES, #{{{}}}, {aggs}{opts}}}", q.join(", ")), true)
                    }),
                3 => (
                    query(),
                    prop::sample::select(
                        &["#{}", "#{b => <<\"z\">>}", "#{a => 9}", "#{n => 0.5}", "#{c => nil}"][..]
                    ),
                    prop::sample::select(
                        &[
                            "[]",
                            "[]",
                            "[{a, {'+', {ref, a}, {value, 1}}}]",
                            "[{q, {'/', {value, 1}, {ref, a}}}]",
                        ][..]
                    ),
                    prop::sample::select(&["records", "count"][..]),
                )
                    .prop_map(|((q, ordered), set, atomics, ret)| {
                        (
                            format!(
                                "{{update_where, RES, #{{{}}}, #{{set => {set}, atomics => {atomics}, return => {ret}}}}}",
                                q.join(", ")
                            ),
                            ordered,
                        )
                    }),
                2 => (query(), prop::sample::select(&["records", "count"][..])).prop_map(
                    |((q, ordered), ret)| {
                        (
                            format!(
                                "{{destroy_where, RES, #{{{}}}, #{{return => {ret}}}}}",
                                q.join(", ")
                            ),
                            ordered,
                        )
                    }
                ),
            ]
        }

        #[derive(Debug, Clone)]
        struct Case {
            records: Vec<String>,
            /// `None`: placed by `shard_of`; otherwise each record's part (mod the parts).
            split: Option<Vec<usize>>,
            parts: usize,
            request: (String, bool),
            /// Whether the resource has an inactivity timeout (never reached in a case).
            lifetimes: bool,
        }

        fn case() -> impl Strategy<Value = Case> {
            (
                prop::collection::vec(record(), 0..25),
                prop::option::of(prop::collection::vec(0..5usize, 25)),
                1..=5usize,
                request(),
                any::<bool>(),
            )
                .prop_map(|(records, split, parts, request, lifetimes)| Case {
                    records,
                    split,
                    parts,
                    request,
                    lifetimes,
                })
        }

        /// `v` with every list of records (maps) in a canonical order, for replies whose
        /// order is unspecified.
        fn canonical(v: &Value) -> Value {
            match v {
                Value::Tuple(items) => Value::tuple(items.iter().map(canonical).collect()),
                Value::List(items) if items.iter().all(|i| i.as_map().is_some()) => {
                    let mut items: Vec<Value> = items.to_vec();
                    items.sort_by_key(|i| format!("{i:?}"));
                    Value::list(items)
                }
                Value::List(items) => Value::list(items.iter().map(canonical).collect()),
                other => other.clone(),
            }
        }

        struct Nodes {
            single: Embedded,
            parts: Vec<Embedded>,
        }

        async fn call(node: &Embedded, request: &Value) -> Value {
            node.call(request.clone()).await.unwrap()
        }

        /// Serves `request` over `parts` through a fan-out.
        async fn fan_out(request: &Value, shape: &Shape, parts: &[Embedded]) -> Value {
            let (mut fanout, mut step) =
                Fanout::start(request, shape.clone(), parts.len()).expect("fans out");
            loop {
                match step {
                    Step::Reply(reply) => return reply,
                    Step::Ask(asks) => {
                        assert_eq!(asks.len(), parts.len());
                        let mut replies = Vec::new();
                        for (node, asks) in parts.iter().zip(asks) {
                            let mut mine = Vec::new();
                            for ask in &asks {
                                mine.push(call(node, ask).await);
                            }
                            replies.push(mine);
                        }
                        step = fanout.next(replies);
                    }
                }
            }
        }

        async fn check(nodes: &Nodes, case: Case, n: usize) -> Result<(), TestCaseError> {
            let resource = format!("fan_res_{n}");
            let res = Atom::new(&resource).unwrap();
            let parts = &nodes.parts[..case.parts];
            let timeout = if case.lifetimes { "600000" } else { "infinity" };
            let define = t(&format!(
                "{{define, {resource}, #{{primary_key => [id], inactivity_timeout => {timeout}, types => #{{c => ci_string, d => decimal}}}}}}"
            ));
            let records: Vec<Value> = case
                .records
                .iter()
                .enumerate()
                .map(|(id, fields)| {
                    let sep = if fields.is_empty() { "" } else { ", " };
                    t(&format!("#{{id => {id}{sep}{fields}}}"))
                })
                .collect();
            let mut split: Vec<Vec<Value>> = vec![Vec::new(); parts.len()];
            for (i, record) in records.iter().enumerate() {
                let part = match &case.split {
                    None => {
                        let pk = t(&format!("#{{id => {i}}}"));
                        shard_of(res, &pk, parts.len() as u32) as usize
                    }
                    Some(split) => split[i] % parts.len(),
                };
                split[part].push(record.clone());
            }
            let bulk = |records: Vec<Value>| {
                Value::tuple(vec![
                    atom("bulk_create"),
                    Value::Atom(res),
                    Value::list(records),
                    Value::map(Vec::new()),
                ])
            };
            for node in std::iter::once(&nodes.single).chain(parts) {
                prop_assert_eq!(call(node, &define).await, t("ok"));
            }
            call(&nodes.single, &bulk(records)).await;
            for (node, mine) in parts.iter().zip(split) {
                call(node, &bulk(mine)).await;
            }
            let shape = Shape {
                primary_key: vec![Atom::new("id").unwrap()],
                types: Arc::new(Types::parse(&t("#{c => ci_string, d => decimal}")).unwrap()),
                max_records: crate::wire::Limits::DEFAULT_MAX_RECORDS_PER_REQUEST,
                lifetimes: case.lifetimes,
            };
            let (text, ordered) = &case.request;
            let request = t(&text.replace("RES", &resource));
            let want = call(&nodes.single, &request).await;
            let got = fan_out(&request, &shape, parts).await;
            if *ordered {
                prop_assert_eq!(&got, &want, "{}", text);
            } else {
                prop_assert_eq!(canonical(&got), canonical(&want), "{}", text);
            }
            // What is left is the same.
            let everything = t(&format!(
                "{{query, {resource}, #{{}}, #{{touch => false}}}}"
            ));
            let left = call(&nodes.single, &everything).await;
            let mut union = Vec::new();
            for node in parts {
                let reply = call(node, &everything).await;
                union.extend(ok_body(&reply).unwrap().as_list().unwrap().to_vec());
            }
            prop_assert_eq!(
                canonical(&reply::ok_list(union)),
                canonical(&left),
                "records left after {}",
                text
            );
            Ok(())
        }

        #[test]
        fn merged_replies_are_the_single_nodes() {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            let nodes = rt.block_on(async {
                Nodes {
                    single: Embedded::local("fanout_single@127.0.0.1").unwrap(),
                    parts: (0..5)
                        .map(|i| Embedded::local(&format!("fanout_part{i}@127.0.0.1")).unwrap())
                        .collect(),
                }
            });
            let cases = std::env::var("FANOUT_CASES")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(500);
            let mut runner = TestRunner::new(Config {
                cases,
                failure_persistence: None,
                ..Config::default()
            });
            let counter = std::sync::atomic::AtomicUsize::new(0);
            let result = runner.run(&case(), |case| {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                rt.block_on(check(&nodes, case, n))
            });
            if let Err(e) = result {
                panic!("{e}");
            }
        }
    }
}
