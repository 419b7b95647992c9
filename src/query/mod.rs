//! Queries over a resource's records (PROTOCOL.md, "query" and "aggregate"): parsing the query
//! map, then filter, sort, offset and limit ([`run`]), projection of `select` ([`project`]) and
//! aggregates over the result ([`aggregate()`]).
//!
//! - [`filter`]: filter expressions, also used by the `filter` of update, destroy and upsert.
//! - [`sort`]: sort directions and the record comparator.
//! - [`aggregate`](mod@aggregate): aggregate kinds and their computation.
//! - [`partition`]: partitioned queries, each partition sorted and paged on its own.

pub mod aggregate;
pub mod expr;
pub mod filter;
pub mod partition;
pub mod sort;
pub mod typed;

pub use aggregate::{Aggregate, AggregateError};
pub use expr::{ExprError, VExpr};
pub use filter::Expr;
pub use partition::{Partition, run_partitioned};
pub use sort::{Dir, Sort};
pub use typed::Types;

use crate::term::{Atom, Record, Value};
use num_bigint::Sign;

/// A parsed query map: `#{filter, sort, offset, limit, select}`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Query {
    /// `filter => Expr`; `None` for `nil` (every record).
    pub filter: Option<Expr>,
    /// `sort => [{Field, Dir}]`; empty for an unspecified order.
    pub sort: Sort,
    /// `offset => N`: records skipped after sorting.
    pub offset: usize,
    /// `limit => N`: most records returned; `None` for `nil` (no limit).
    pub limit: Option<usize>,
    /// `select => [Field]`: fields kept in replies (plus the primary key); `None` for all.
    pub select: Option<Vec<Atom>>,
}

impl Query {
    /// The query comparing typed fields by their type (filter and sort).
    pub fn bind(&self, types: &std::sync::Arc<Types>) -> Query {
        if types.is_empty() {
            return self.clone();
        }
        Query {
            filter: self.filter.as_ref().map(|f| f.bind(types)),
            sort: self.sort.bind(types),
            ..self.clone()
        }
    }

    /// Parses the query map. Unknown keys are refused; the error says what is wrong.
    pub fn parse(term: &Value) -> Result<Query, String> {
        let entries = term
            .as_map()
            .ok_or_else(|| format!("a query must be a map, got {}", show(term)))?;
        let mut query = Query::default();
        for (key, value) in entries {
            match key.as_atom().map(|a| a.as_str()) {
                Some("filter") if value.is_nil() => query.filter = None,
                Some("filter") => query.filter = Some(Expr::parse(value)?),
                Some("sort") => query.sort = Sort::parse(value)?,
                Some("offset") => query.offset = count("offset", value)?,
                Some("limit") if value.is_nil() => query.limit = None,
                Some("limit") => query.limit = Some(count("limit", value)?),
                Some("select") if value.is_nil() => query.select = None,
                Some("select") => query.select = Some(fields("select", value)?),
                _ => {
                    return Err(format!(
                        "unknown query option {} (expected filter, sort, offset, limit or select)",
                        show(key)
                    ));
                }
            }
        }
        Ok(query)
    }
}

/// A non-negative integer option; one too large for memory is as good as infinite.
fn count(option: &str, value: &Value) -> Result<usize, String> {
    match value {
        Value::Int(i) if *i >= 0 => Ok(usize::try_from(*i).unwrap_or(usize::MAX)),
        Value::BigInt(b) if b.sign() == Sign::Plus => Ok(usize::MAX),
        _ => Err(format!(
            "{option} must be a non-negative integer, got {}",
            show(value)
        )),
    }
}

/// A list of atoms.
fn fields(option: &str, value: &Value) -> Result<Vec<Atom>, String> {
    let items = value
        .as_list()
        .ok_or_else(|| format!("{option} must be a list of fields, got {}", show(value)))?;
    items
        .iter()
        .map(|item| {
            item.as_atom().ok_or_else(|| {
                format!(
                    "{option} fields must be atoms, got {} in {}",
                    show(item),
                    show(value)
                )
            })
        })
        .collect()
}

/// Runs `query` over `records`: filter, then sort, then offset, then limit.
///
/// Ties on the sort fields are broken by `primary_key`. With no sort the order is unspecified,
/// except that a query with an offset or a limit is ordered by primary key so that pages are
/// stable. When only the first `offset + limit` records are wanted, only those are sorted.
pub fn run(
    records: impl IntoIterator<Item = Record>,
    query: &Query,
    primary_key: &[Atom],
) -> Vec<Record> {
    if query.limit == Some(0) {
        return Vec::new();
    }
    let matches: Vec<Record> = match &query.filter {
        None => records.into_iter().collect(),
        Some(expr) => records.into_iter().filter(|r| expr.matches(r)).collect(),
    };
    let paged = query.offset > 0 || query.limit.is_some();
    if query.sort.is_empty() && !paged {
        return matches;
    }
    if query.sort.is_typed() {
        return run_keyed(matches, query, primary_key);
    }
    page(matches, query, |a, b| query.sort.compare(a, b, primary_key))
}

/// Sorts `items` with `compare` and keeps the query's page (offset, limit). When only the first
/// `offset + limit` are wanted, only those are sorted.
fn page<T>(
    mut items: Vec<T>,
    query: &Query,
    compare: impl Fn(&T, &T) -> std::cmp::Ordering,
) -> Vec<T> {
    let wanted = query
        .limit
        .map_or(usize::MAX, |limit| query.offset.saturating_add(limit));
    if wanted < items.len() {
        // Partition around the last wanted item, then sort only those.
        items.select_nth_unstable_by(wanted - 1, &compare);
        items.truncate(wanted);
    }
    items.sort_unstable_by(&compare);
    items.drain(..query.offset.min(items.len()));
    items
}

/// [`run`]'s sort and page when a sort field is typed: each record's keys are worked out once.
fn run_keyed(matches: Vec<Record>, query: &Query, primary_key: &[Atom]) -> Vec<Record> {
    let sort = &query.sort;
    let keyed: Vec<(Vec<Option<typed::Key>>, Record)> =
        matches.into_iter().map(|r| (sort.keys_of(&r), r)).collect();
    page(keyed, query, |x, y| {
        sort.compare_keyed((&x.1, &x.0), (&y.1, &y.0), primary_key)
    })
    .into_iter()
    .map(|(_, record)| record)
    .collect()
}

/// The record with only the `select`ed fields and the primary key.
pub fn project(record: &Record, select: &[Atom], primary_key: &[Atom]) -> Record {
    let keep: Vec<Atom> = select.iter().chain(primary_key).copied().collect();
    record.select(&keep)
}

/// Runs `query` over `records` (filter, sort, offset, limit; `select` is ignored) and computes
/// `aggregates` over the result, as the reply map `#{Name => Value}`.
pub fn aggregate(
    records: impl IntoIterator<Item = Record>,
    query: &Query,
    aggregates: &[Aggregate],
    primary_key: &[Atom],
) -> Result<Value, AggregateError> {
    let records = run(records, query, primary_key);
    aggregate::compute_all(aggregates, &records)
}

/// Like [`aggregate()`], per group of records with the same `group_by` value (exact equality,
/// or equality by type for a typed field, `ty`; an absent field is `nil`):
/// `[{GroupValue, #{Name => Value}}]`, groups in term order (type order for a typed field; a
/// group's value is its first record's). The query's sort, offset and limit apply within each
/// group. Groups without records are absent.
pub fn aggregate_grouped(
    records: impl IntoIterator<Item = Record>,
    query: &Query,
    aggregates: &[Aggregate],
    primary_key: &[Atom],
    group_by: Atom,
    ty: Option<typed::FieldType>,
) -> Result<Value, AggregateError> {
    let groups = partition::Groups::new(records, group_by, ty).into_sorted();
    let mut out = Vec::with_capacity(groups.len());
    for (key, members) in groups {
        let members = run(members, query, primary_key);
        out.push(Value::pair(
            key,
            aggregate::compute_all(aggregates, &members)?,
        ));
    }
    Ok(Value::list(out))
}

/// A term for an error message, cut short when long.
fn show(value: &Value) -> String {
    const MAX: usize = 200;
    let mut text = format!("{value:?}");
    if text.len() > MAX {
        let mut end = MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push_str("...");
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::Atom;

    /// An atom.
    pub(super) fn a(name: &str) -> Atom {
        Atom::new(name).unwrap()
    }

    /// Parses a term written in Erlang syntax (atoms, quoted atoms, integers, floats,
    /// `<<"text">>`, tuples, lists, `#{K => V}` maps), for readable tests.
    pub(super) fn term(text: &str) -> Value {
        let mut p = TermParser {
            s: text.as_bytes(),
            i: 0,
        };
        let v = p.value();
        p.ws();
        assert_eq!(p.i, p.s.len(), "trailing input in {text}");
        v
    }

    /// A record from a map written in Erlang syntax.
    pub(super) fn rec(text: &str) -> Record {
        Record::from_map(&term(text)).unwrap()
    }

    struct TermParser<'s> {
        s: &'s [u8],
        i: usize,
    }

    impl TermParser<'_> {
        fn ws(&mut self) {
            while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
                self.i += 1;
            }
        }

        fn peek(&mut self) -> u8 {
            self.ws();
            self.s[self.i]
        }

        fn eat(&mut self, token: &str) -> bool {
            self.ws();
            let found = self.s[self.i..].starts_with(token.as_bytes());
            if found {
                self.i += token.len();
            }
            found
        }

        fn seq(&mut self, close: &str) -> Vec<Value> {
            let mut items = Vec::new();
            while !self.eat(close) {
                items.push(self.value());
                self.eat(",");
            }
            items
        }

        fn value(&mut self) -> Value {
            let c = self.peek();
            if self.eat("<<\"") {
                let start = self.i;
                while self.s[self.i] != b'"' {
                    self.i += 1;
                }
                let v = Value::binary(&self.s[start..self.i]);
                self.i += 1;
                assert!(self.eat(">>"));
                v
            } else if self.eat("#{") {
                let mut entries = Vec::new();
                while !self.eat("}") {
                    let k = self.value();
                    assert!(self.eat("=>"));
                    entries.push((k, self.value()));
                    self.eat(",");
                }
                Value::map(entries)
            } else if self.eat("{") {
                Value::tuple(self.seq("}"))
            } else if self.eat("[") {
                Value::list(self.seq("]"))
            } else if c == b'\'' {
                self.i += 1;
                let start = self.i;
                while self.s[self.i] != b'\'' {
                    self.i += 1;
                }
                self.i += 1;
                Value::Atom(a(std::str::from_utf8(&self.s[start..self.i - 1]).unwrap()))
            } else if c.is_ascii_lowercase() {
                let start = self.i;
                while self.i < self.s.len()
                    && (self.s[self.i].is_ascii_alphanumeric() || self.s[self.i] == b'_')
                {
                    self.i += 1;
                }
                Value::Atom(a(std::str::from_utf8(&self.s[start..self.i]).unwrap()))
            } else {
                let start = self.i;
                while self.i < self.s.len()
                    && (self.s[self.i].is_ascii_digit() || b"-+.e".contains(&self.s[self.i]))
                {
                    self.i += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.i]).unwrap();
                if text.contains(['.', 'e']) {
                    Value::Float(text.parse().unwrap())
                } else {
                    Value::integer(text.parse().unwrap())
                }
            }
        }
    }

    fn ids(records: &[Record]) -> Vec<i64> {
        records
            .iter()
            .map(|r| r.get(a("id")).and_then(Value::as_int).unwrap())
            .collect()
    }

    fn people() -> Vec<Record> {
        [
            "#{id => 1, age => 30, team => <<\"a\">>}",
            "#{id => 2, age => 50, team => <<\"b\">>}",
            "#{id => 3, age => 50, team => <<\"a\">>}",
            "#{id => 4, team => <<\"a\">>}",
            "#{id => 5, age => 20, team => <<\"b\">>}",
            "#{id => 6, age => 41.5, team => <<\"a\">>}",
        ]
        .iter()
        .map(|r| rec(r))
        .collect()
    }

    fn query(text: &str) -> Query {
        Query::parse(&term(text)).unwrap()
    }

    fn parse_err(text: &str) -> String {
        Query::parse(&term(text)).unwrap_err()
    }

    #[test]
    fn the_term_parser_reads_erlang_syntax() {
        let v = term(
            "{'Elixir.A', [1, -2.5, <<\"x y\">>], #{k => nil}, 123456789012345678901234567890}",
        );
        assert_eq!(
            format!("{v:?}"),
            "{'Elixir.A',[1,-2.5,<<\"x y\">>],#{k => nil},123456789012345678901234567890}"
        );
    }

    #[test]
    fn query_defaults() {
        let q = query("#{}");
        assert_eq!(q, Query::default());
        assert_eq!(q.filter, None);
        assert!(q.sort.is_empty());
        assert_eq!((q.offset, q.limit, q.select), (0, None, None));
    }

    #[test]
    fn query_parses_every_option_and_nil() {
        let q = query(
            "#{filter => {gt, age, 40}, sort => [{age, desc}], offset => 2, limit => 10, \
             select => [name, age]}",
        );
        assert!(matches!(q.filter, Some(Expr::Compare { .. })));
        assert_eq!(q.sort.keys, vec![(a("age"), Dir::Desc)]);
        assert_eq!((q.offset, q.limit), (2, Some(10)));
        assert_eq!(q.select, Some(vec![a("name"), a("age")]));
        let q = query("#{filter => nil, limit => nil, select => nil}");
        assert_eq!(q, Query::default());
        let huge = query("#{offset => 123456789012345678901234567890}");
        assert_eq!(huge.offset, usize::MAX);
    }

    #[test]
    fn query_parse_errors_say_what_is_wrong() {
        assert_eq!(
            parse_err("#{filtr => true}"),
            "unknown query option filtr (expected filter, sort, offset, limit or select)"
        );
        assert_eq!(parse_err("[]"), "a query must be a map, got []");
        assert_eq!(
            parse_err("#{offset => -1}"),
            "offset must be a non-negative integer, got -1"
        );
        assert_eq!(
            parse_err("#{limit => 1.0}"),
            "limit must be a non-negative integer, got 1.0"
        );
        assert_eq!(
            parse_err("#{select => [a, <<\"b\">>]}"),
            "select fields must be atoms, got <<\"b\">> in [a,<<\"b\">>]"
        );
        assert_eq!(
            parse_err("#{filter => {foo, a, 1}}"),
            "unknown filter operator foo in {foo,a,1} (expected eq, neq, lt, lte, gt, gte, in, \
             is_nil, contains, and, or, not, expr)"
        );
        assert!(parse_err("#{sort => [{age, up}]}").starts_with("unknown sort direction up"));
    }

    #[test]
    fn run_filters_sorts_and_pages() {
        let q = query(
            "#{filter => {'not', {is_nil, age}}, sort => [{age, desc}], offset => 1, limit => 2}",
        );
        // ages desc: 50 (2), 50 (3), 41.5 (6), 30 (1), 20 (5); ties by id.
        assert_eq!(ids(&run(people(), &q, &[a("id")])), vec![3, 6]);
        let q = query("#{filter => {eq, team, <<\"a\">>}, sort => [{age, asc_nils_first}]}");
        assert_eq!(ids(&run(people(), &q, &[a("id")])), vec![4, 1, 6, 3]);
    }

    #[test]
    fn run_without_sort_keeps_input_order_unless_paged() {
        let mut records = people();
        records.reverse();
        assert_eq!(
            ids(&run(records.clone(), &query("#{}"), &[a("id")])),
            vec![6, 5, 4, 3, 2, 1]
        );
        // Paging orders by primary key, so pages are stable.
        assert_eq!(
            ids(&run(records.clone(), &query("#{limit => 2}"), &[a("id")])),
            vec![1, 2]
        );
        assert_eq!(
            ids(&run(records, &query("#{offset => 4}"), &[a("id")])),
            vec![5, 6]
        );
    }

    #[test]
    fn offset_and_limit_edge_cases() {
        let pk = [a("id")];
        let sorted = "sort => [{id, asc}]";
        let page = |opts: &str| {
            ids(&run(
                people(),
                &query(&format!("#{{{sorted}, {opts}}}")),
                &pk,
            ))
        };
        assert_eq!(page("offset => 6"), Vec::<i64>::new());
        assert_eq!(page("offset => 100, limit => 3"), Vec::<i64>::new());
        assert_eq!(page("limit => 0"), Vec::<i64>::new());
        assert_eq!(page("offset => 0, limit => 0"), Vec::<i64>::new());
        assert_eq!(page("limit => 100"), vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(page("offset => 5, limit => 100"), vec![6]);
        assert_eq!(page("offset => 4, limit => 1"), vec![5]);
        assert_eq!(
            page(
                "offset => 123456789012345678901234567890, limit => 123456789012345678901234567890"
            ),
            Vec::<i64>::new()
        );
        assert_eq!(
            page("offset => 2, limit => 123456789012345678901234567890"),
            vec![3, 4, 5, 6]
        );
    }

    #[test]
    fn partial_sort_agrees_with_full_sort() {
        let records: Vec<Record> = (0..300)
            .map(|n| rec(&format!("#{{id => {n}, k => {}}}", (n * 37) % 11)))
            .collect();
        let pk = [a("id")];
        let full = run(records.clone(), &query("#{sort => [{k, desc}]}"), &pk);
        for (offset, limit) in [
            (0, 1),
            (0, 10),
            (5, 10),
            (290, 5),
            (295, 10),
            (0, 299),
            (1, 299),
        ] {
            let q = query(&format!(
                "#{{sort => [{{k, desc}}], offset => {offset}, limit => {limit}}}"
            ));
            let page = run(records.clone(), &q, &pk);
            let end = (offset + limit).min(full.len());
            assert_eq!(
                ids(&page),
                ids(&full[offset..end]),
                "offset {offset} limit {limit}"
            );
        }
    }

    #[test]
    fn project_keeps_selected_fields_and_the_primary_key() {
        let r = rec("#{id => 1, age => 30, team => <<\"a\">>, name => <<\"x\">>}");
        let p = project(&r, &[a("age"), a("missing")], &[a("id")]);
        assert_eq!(p.to_value(), term("#{id => 1, age => 30}"));
    }

    #[test]
    fn aggregate_runs_the_query_first() {
        let q = query(
            "#{filter => {eq, team, <<\"a\">>}, sort => [{age, desc_nils_last}], limit => 3}",
        );
        let specs = Aggregate::parse_list(&term(
            "[{n, count, nil, #{}}, {ages, list, age, #{include_nil => true}}, \
             {oldest, first, age, #{}}, {total, sum, age, #{}}]",
        ))
        .unwrap();
        let result = aggregate(people(), &q, &specs, &[a("id")]).unwrap();
        assert_eq!(
            result,
            term("#{n => 3, ages => [50, 41.5, 30], oldest => 50, total => 121.5}")
        );
        let bad = Aggregate::parse_list(&term("[{s, sum, team, #{}}]")).unwrap();
        let err = aggregate(people(), &query("#{}"), &bad, &[a("id")]).unwrap_err();
        assert_eq!(
            err,
            AggregateError::NotANumber {
                field: a("team"),
                value: Value::from("a"),
            }
        );
    }

    /// `cargo test --release --lib query -- --ignored --nocapture`
    #[test]
    #[ignore]
    fn bench_filter_scan() {
        let records: Vec<Record> = (0..100_000i64)
            .map(|n| {
                Record::from_map(&Value::map(vec![
                    (Value::Atom(a("id")), Value::Int(n)),
                    (Value::Atom(a("age")), Value::Int(n % 80)),
                    (
                        Value::Atom(a("team")),
                        Value::from(format!("team-{}", n % 100).as_str()),
                    ),
                    (
                        Value::Atom(a("name")),
                        Value::from(format!("a person called number {n}").as_str()),
                    ),
                ]))
                .unwrap()
            })
            .collect();
        let pk = [a("id")];
        let time = |label: &str, q: &Query, expect: usize| {
            let mut best = f64::MAX;
            for _ in 0..20 {
                let start = std::time::Instant::now();
                let out = run(records.iter().cloned(), q, &pk);
                let ns = start.elapsed().as_nanos() as f64 / records.len() as f64;
                assert_eq!(out.len(), expect);
                best = best.min(ns);
            }
            println!(
                "{label}: {best:.1} ns/record ({:.2} ms per scan)",
                best * 0.1
            );
        };
        let filter = "{'and', {gt, age, 40}, {eq, team, <<\"team-7\">>}}";
        time(
            "filter age > 40 and team == \"team-7\"",
            &query(&format!("#{{filter => {filter}}}")),
            500,
        );
        time(
            "no filter, sort by name, limit 10",
            &query("#{sort => [{name, asc}], limit => 10}"),
            10,
        );
        time(
            "no filter, sort by age desc (full sort)",
            &query("#{sort => [{age, desc}]}"),
            100_000,
        );
    }

    #[test]
    fn aggregates_per_group() {
        let records = vec![
            rec("#{id => 1, author => a, n => 1}"),
            rec("#{id => 2, author => b, n => 10}"),
            rec("#{id => 3, author => a, n => 2}"),
            rec("#{id => 4, n => 100}"),
        ];
        let specs = Aggregate::parse_list(&term(
            "[{c, count, nil, #{}}, {s, sum, n, #{}}, {f, first, n, #{}}]",
        ))
        .unwrap();
        let q = Query::parse(&term("#{sort => [{n, desc}]}")).unwrap();
        let out = aggregate_grouped(
            records,
            &q,
            &specs,
            &[Atom::new("id").unwrap()],
            Atom::new("author").unwrap(),
            None,
        )
        .unwrap();
        assert_eq!(
            out,
            term(
                "[{a, #{c => 2, s => 3, f => 2}}, {b, #{c => 1, s => 10, f => 10}}, {nil, #{c => 1, s => 100, f => 100}}]"
            )
        );
    }

    #[test]
    fn typed_groups_are_equal_by_type() {
        let records = vec![
            rec("#{id => 1, email => <<\"Ann\">>}"),
            rec("#{id => 2, email => <<\"ann\">>}"),
            rec("#{id => 3, email => <<\"Bob\">>}"),
        ];
        let specs = Aggregate::parse_list(&term("[{c, count, nil, #{}}]")).unwrap();
        let out = aggregate_grouped(
            records,
            &Query::default(),
            &specs,
            &[Atom::new("id").unwrap()],
            Atom::new("email").unwrap(),
            Some(typed::FieldType::CiString),
        )
        .unwrap();
        assert_eq!(
            out,
            term("[{<<\"Ann\">>, #{c => 2}}, {<<\"Bob\">>, #{c => 1}}]")
        );
    }

    #[test]
    fn typed_sorts_with_keys_worked_out_once_match_the_plain_comparator() {
        let types =
            std::sync::Arc::new(Types::parse(&term("#{on => date, price => decimal}")).unwrap());
        let date = |d: i64| {
            format!(
                "#{{'__struct__' => 'Elixir.Date', year => {}, month => {}, day => {}}}",
                2000 + d % 7,
                1 + d % 12,
                1 + d % 28
            )
        };
        let records: Vec<Record> = (0..200)
            .map(|i| {
                let on = if i % 9 == 0 { "nil".to_string() } else { date(i * 37 % 101) };
                rec(&format!(
                    "#{{id => {i}, on => {on}, price => #{{'__struct__' => 'Elixir.Decimal', sign => 1, coef => {}, exp => -1}}}}",
                    i % 13
                ))
            })
            .collect();
        for spec in [
            "#{sort => [{on, desc}], offset => 5, limit => 20}",
            "#{sort => [{on, asc_nils_first}, {price, desc}]}",
            "#{sort => [{price, desc_nils_last}, {on, asc}], limit => 7}",
        ] {
            let q = Query::parse(&term(spec)).unwrap().bind(&types);
            assert!(q.sort.is_typed());
            let got = run(records.clone(), &q, &[a("id")]);
            let mut all = records.clone();
            all.sort_by(|x, y| q.sort.compare(x, y, &[a("id")]));
            let want: Vec<Record> = all
                .into_iter()
                .skip(q.offset)
                .take(q.limit.unwrap_or(usize::MAX))
                .collect();
            assert_eq!(got, want, "{spec}");
        }
    }
}
