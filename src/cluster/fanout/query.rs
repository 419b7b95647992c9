//! The query plan: a `query`, plain or partitioned, over the shards, its union sorted, paged
//! and projected here as the single node would, and its page touched in a second round when the
//! shards would return (and so touch) more than their part of it.

use super::{
    Fanout, State, Step, atom, count_term, ok_body, partitioned_records_of, pk_of, records_of,
    shard_query, unreadable,
};
use crate::protocol::cmd::query::Query;
use crate::protocol::error::Error;
use crate::protocol::reply;
use crate::query as q;
use crate::query::partition::{GroupKey, check_total, paged_len};
use crate::term::{Atom, Record, Value};
use rustc_hash::{FxHashMap, FxHashSet};

impl Fanout {
    /// Plans a `query`: one request to every shard (plus a grouped `count` when partitions
    /// share values and the node's limit may be passed).
    pub(super) fn plan_query(&mut self, args: &[Value], cmd: Query) -> Step {
        let resource = args[0].clone();
        let tuple = |items: Vec<Value>| Value::tuple(items);
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

    /// The shards' replies to a plain query: the union, sorted, paged and projected.
    pub(super) fn advance_query(
        &mut self,
        replies: &[Vec<Value>],
        query: q::Query,
        touch_after: bool,
    ) -> Result<Step, Value> {
        let shape = &self.shape;
        let pk = &shape.primary_key[..];
        self.answered(replies, 1)?;
        let mut union = Vec::new();
        for r in replies {
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
        Ok(self.touched(touch_after, replies, &records, reply))
    }

    /// The shards' replies to a partitioned query (and their counts, when `counted`): the
    /// union's partitions, each sorted, paged and projected.
    pub(super) fn advance_partitioned(
        &mut self,
        replies: &[Vec<Value>],
        query: q::Query,
        partition: q::Partition,
        counted: bool,
        touch_after: bool,
    ) -> Result<Step, Value> {
        let shape = &self.shape;
        let pk = &shape.primary_key[..];
        self.answered(replies, if counted { 2 } else { 1 })?;
        let ty = shape.types.get(partition.field);
        let query = query.bind(&shape.types);
        let page = q::Query {
            filter: None,
            ..query.clone()
        };
        if counted {
            check_counts(replies, &partition, &page, ty, shape.max_records)?;
        }
        let mut union = Vec::new();
        for r in replies {
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
        Ok(self.touched(touch_after, replies, &returned, reply))
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

/// A record with only the query's `select`ed fields (and the primary key).
fn project(record: &Record, query: &q::Query, primary_key: &[Atom]) -> Record {
    match &query.select {
        Some(select) => q::project(record, select, primary_key),
        None => record.clone(),
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
    use super::super::tests::{asks, replies, reply, shape, start, t};
    use super::*;

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
}
