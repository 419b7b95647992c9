//! The aggregate plan: combined from the shards' own partial aggregates when they add up
//! exactly, otherwise computed here over the union of the shards' records (read without
//! touching them).

use super::{
    Fanout, State, Step, atom, count_term, ok_body, partitioned_records_of, records_of,
    shard_query, unreadable,
};
use crate::protocol::cmd::aggregate::Aggregate;
use crate::protocol::error::Error;
use crate::protocol::reply;
use crate::query::aggregate::Kind;
use crate::query::partition::GroupKey;
use crate::query::{self as q, Aggregate as Spec, AggregateError};
use crate::term::{Atom, Value, cmp_exact};
use num_bigint::BigInt;
use rustc_hash::FxHashMap;

impl Fanout {
    /// Plans an aggregate combined from the shards' own: every shard computes the same
    /// aggregates (an `avg` as a `sum` and a `count`, no `default`).
    pub(super) fn plan_partial(&mut self, args: &[Value], cmd: Aggregate) -> Step {
        let resource = args[0].clone();
        let tuple = |items: Vec<Value>| Value::tuple(items);
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

    /// Plans an aggregate over the union: every shard is asked for its records, untouched.
    pub(super) fn plan_aggregate(&mut self, args: &[Value], cmd: Aggregate) -> Step {
        let resource = args[0].clone();
        let tuple = |items: Vec<Value>| Value::tuple(items);
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

    /// The shards' records: the aggregates computed over their union.
    pub(super) fn advance_aggregate(
        &self,
        replies: &[Vec<Value>],
        query: q::Query,
        aggregates: Vec<Spec>,
        group_by: Option<Atom>,
    ) -> Result<Step, Value> {
        let shape = &self.shape;
        let pk = &shape.primary_key[..];
        self.answered(replies, 1)?;
        let mut union = Vec::new();
        for r in replies {
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
        let aggregates: Vec<Spec> = aggregates.iter().map(|a| a.bind(&shape.types)).collect();
        let values = match group_by {
            None => q::aggregate(union, &page, &aggregates, pk),
            Some(field) => {
                q::aggregate_grouped(union, &page, &aggregates, pk, field, shape.types.get(field))
            }
        };
        match values {
            Ok(v) => Ok(Step::Reply(reply::ok_with(v))),
            Err(e) => Err(Error::Aggregate(e).to_reply()),
        }
    }

    /// The shards' partial aggregates: combined (per group with `group_by`).
    pub(super) fn advance_partial(
        &self,
        replies: &[Vec<Value>],
        aggregates: Vec<Spec>,
        group_by: Option<Atom>,
    ) -> Result<Step, Value> {
        let shape = &self.shape;
        self.answered(replies, 1)?;
        let aggregates: Vec<Spec> = aggregates.iter().map(|a| a.bind(&shape.types)).collect();
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
        for r in replies {
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
}

/// Whether `aggregates` over `query` can be combined from the shards' own aggregates exactly:
/// no offset or limit (each shard's page would be its own), only `count`, `exists`, `sum`,
/// `avg`, `min` and `max` and none of them `uniq` (a value on two shards would count twice),
/// and `min`/`max` only without a sort (with one, a tie such as `1` and `1.0` goes to the first
/// record in the sort order, which only the records tell).
pub(super) fn partial_exact(query: &q::Query, aggregates: &[Spec]) -> bool {
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

#[cfg(test)]
mod tests {
    use super::super::tests::{asks, replies, reply, shape, start, t};

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
}
