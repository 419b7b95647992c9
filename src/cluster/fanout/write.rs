//! The write plan (`update_where`, `destroy_where`): sent as it is to every shard, or in two
//! rounds, the candidates first and then one `update` (`destroy`) per record on its shard.

use super::{
    Fanout, State, Step, atom, count_term, ok_body, pk_of, records_of, shard_query, unreadable,
};
use crate::protocol::cmd::destroy_where::DestroyWhere;
use crate::protocol::cmd::update_where::{Return, UpdateWhere};
use crate::protocol::error::Error;
use crate::protocol::reply;
use crate::query as q;
use crate::query::expr::{Atomics, Scope, eval_atomics};
use crate::record::StoreError;
use crate::term::{Atom, Record, Value};
use num_bigint::BigInt;
use rustc_hash::FxHashMap;

/// A write served in two rounds.
#[derive(Debug)]
pub(super) struct Write {
    resource: Value,
    query: q::Query,
    /// The query's filter as the client wrote it (`nil` for none).
    filter: Value,
    ret: Return,
    /// `Some((set, atomics, parsed atomics))` for an update, `None` for a destroy.
    update: Option<(Value, Value, Atomics)>,
}

impl Fanout {
    /// Plans an `update_where`: in two rounds when it has atomics or its `set` changes the
    /// order.
    pub(super) fn plan_update_where(
        &mut self,
        request: &Value,
        args: &[Value],
        cmd: UpdateWhere,
    ) -> Step {
        let resource = args[0].clone();
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

    /// Plans a `destroy_where`.
    pub(super) fn plan_destroy_where(
        &mut self,
        request: &Value,
        args: &[Value],
        cmd: DestroyWhere,
    ) -> Step {
        let resource = args[0].clone();
        let write = Write {
            resource,
            filter: get_filter(&args[1]),
            ret: cmd.ret,
            update: None,
            query: cmd.query,
        };
        self.write(request, &args[1], write, false)
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

    /// The shards' replies to a write sent as it is: the count added up, or the records
    /// changed in the query's order.
    pub(super) fn advance_write(
        &self,
        replies: &[Vec<Value>],
        query: q::Query,
        ret: Return,
    ) -> Result<Step, Value> {
        let shape = &self.shape;
        let pk = &shape.primary_key[..];
        self.answered(replies, 1)?;
        match ret {
            Return::Count => {
                let mut total = BigInt::from(0);
                for r in replies {
                    match ok_body(&r[0])? {
                        Value::Int(n) => total += *n,
                        other => return Err(unreadable(other)),
                    }
                }
                Ok(Step::Reply(reply::ok_with(Value::integer(total))))
            }
            Return::Records => {
                let mut union = Vec::new();
                for r in replies {
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

    /// The candidates of a write: paged here, their atomics tried, then one request per
    /// record to the shard that holds it.
    pub(super) fn advance_candidates(
        &mut self,
        replies: &[Vec<Value>],
        write: Write,
    ) -> Result<Step, Value> {
        let shape = &self.shape;
        let pk = &shape.primary_key[..];
        self.answered(replies, 1)?;
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

    /// The per-record replies: the records written (or their number), or the first failure
    /// in the query's order.
    pub(super) fn advance_per_record(
        &self,
        replies: &[Vec<Value>],
        write: Write,
        page: Vec<(Record, usize, usize)>,
    ) -> Result<Step, Value> {
        let mut out = Vec::with_capacity(page.len());
        for (record, shard, j) in page {
            let Some(reply) = replies.get(shard).and_then(|r| r.get(j)) else {
                return Err(
                    Error::Unavailable("a fan-out is missing a shard's reply".into()).to_reply(),
                );
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

/// The query map's `filter` term (`nil` for none).
fn get_filter(map: &Value) -> Value {
    map.map_get_atom(Atom::from_static("filter"))
        .cloned()
        .unwrap_or_else(Value::nil)
}

/// The reply of a write: the records (as terms) or their number.
fn finish_write(ret: Return, records: Vec<Value>) -> Value {
    match ret {
        Return::Records => reply::ok_list(records),
        Return::Count => reply::ok_with(count_term(records.len())),
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{asks, replies, reply, shape, start, t};

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
}
