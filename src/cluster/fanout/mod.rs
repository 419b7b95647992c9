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

mod aggregate;
mod query;
mod write;

use super::answer::is_error;
use crate::protocol::cmd::update_where::Return;
use crate::protocol::error::Error;
use crate::protocol::request::Request;
use crate::query::{self as q, Aggregate as Spec, Types};
use crate::term::{Atom, Record, Value};
use aggregate::partial_exact;
use num_bigint::BigInt;
use std::sync::Arc;
use write::Write;

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
        match parsed {
            Request::Query(cmd) => self.plan_query(args, cmd),
            Request::Aggregate(cmd) if partial_exact(&cmd.query, &cmd.aggregates) => {
                self.plan_partial(args, cmd)
            }
            Request::Aggregate(cmd) => self.plan_aggregate(args, cmd),
            Request::UpdateWhere(cmd) => self.plan_update_where(request, args, cmd),
            Request::DestroyWhere(cmd) => self.plan_destroy_where(request, args, cmd),
            _ => unreachable!("is_fanout admits only the four requests"),
        }
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

    /// `Ok` when every shard answered `n` requests; otherwise the cluster's trouble.
    fn answered(&self, replies: &[Vec<Value>], n: usize) -> Result<(), Value> {
        if replies.len() == self.shards && replies.iter().all(|r| r.len() == n) {
            Ok(())
        } else {
            Err(Error::Unavailable(format!(
                "a fan-out expected {n} replies from each of {} shards",
                self.shards
            ))
            .to_reply())
        }
    }

    fn advance(&mut self, replies: Vec<Vec<Value>>) -> Result<Step, Value> {
        let own_errors = matches!(self.state, State::PerRecord { .. } | State::Touching(_));
        if !own_errors && let Some(error) = first_error(&replies) {
            return Err(error);
        }
        match std::mem::replace(&mut self.state, State::Done) {
            State::Done => Err(Error::Unavailable("the fan-out is over".into()).to_reply()),
            State::Touching(reply) => Ok(Step::Reply(reply)),
            State::Query {
                query,
                partition: None,
                touch_after,
                ..
            } => self.advance_query(&replies, query, touch_after),
            State::Query {
                query,
                partition: Some(partition),
                counted,
                touch_after,
            } => self.advance_partitioned(&replies, query, partition, counted, touch_after),
            State::Aggregate {
                query,
                aggregates,
                group_by,
            } => self.advance_aggregate(&replies, query, aggregates, group_by),
            State::Partial {
                aggregates,
                group_by,
            } => self.advance_partial(&replies, aggregates, group_by),
            State::Write { query, ret } => self.advance_write(&replies, query, ret),
            State::Candidates(write) => self.advance_candidates(&replies, write),
            State::PerRecord { write, page } => self.advance_per_record(&replies, write, page),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::reply;
    use crate::term::parse_term;

    pub(super) fn t(text: &str) -> Value {
        parse_term(text).unwrap_or_else(|e| panic!("{text}: {e}"))
    }

    pub(super) fn shape(types: &str) -> Shape {
        Shape {
            primary_key: vec![Atom::new("id").unwrap()],
            types: Arc::new(Types::parse(&t(types)).unwrap()),
            max_records: 100_000,
            lifetimes: false,
        }
    }

    /// Starts `request` over `shards` shards: the fan-out and its first step.
    pub(super) fn start(request: &str, shape: Shape, shards: usize) -> (Fanout, Step) {
        Fanout::start(&t(request), shape, shards).expect("a request to fan out")
    }

    /// The requests of an `Ask`.
    pub(super) fn asks(step: &Step) -> &Vec<Vec<Value>> {
        match step {
            Step::Ask(asks) => asks,
            Step::Reply(r) => panic!("expected an ask, got the reply {r:?}"),
        }
    }

    pub(super) fn reply(step: Step) -> Value {
        match step {
            Step::Reply(r) => r,
            Step::Ask(a) => panic!("expected a reply, got {a:?}"),
        }
    }

    /// Every shard's one reply, as text.
    pub(super) fn replies(texts: &[&str]) -> Vec<Vec<Value>> {
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
