//! Partitioned queries (PROTOCOL.md, "query", `partition_by`): the records matching a query's
//! filter split by the value of one field, then each partition sorted and paged on its own — "the
//! first ten posts of each of these authors" in one request. The Ash shim loads a paginated
//! relationship for many parents at once with it (a lateral join).
//!
//! Also the grouping [`aggregate_grouped`](super::aggregate_grouped) shares: [`Groups`], records
//! grouped by a field's value with exact equality, or equality by type for a typed field.

use super::typed::{self, FieldType};
use super::{Query, run, show};
use crate::term::{Atom, Record, Value, cmp_exact};
use rustc_hash::{FxHashMap, FxHashSet};

/// `#{partition_by => Field, partitions => [{Key, [Value]}]}`, the options of a partitioned
/// `query`.
#[derive(Clone, Debug, PartialEq)]
pub struct Partition {
    /// The field whose value places a record in a partition.
    pub field: Atom,
    /// `partitions`: the partitions wanted, each a key (any term, echoed in the reply) and the
    /// values of `field` its records have; `None` for one partition per value present.
    pub partitions: Option<Vec<(Value, Vec<Value>)>>,
}

impl Partition {
    /// Parses the options map of a `query` (`partition_by`, `partitions`): `None` when it
    /// asks for no partitioning. Unknown keys are refused; the error says what is wrong.
    pub fn parse(opts: &[(Value, Value)]) -> Result<Option<Partition>, String> {
        let mut field = None;
        let mut partitions = None;
        for (key, value) in opts {
            match key.as_atom().map(|a| a.as_str()) {
                Some("partition_by") if value.is_nil() => field = None,
                Some("partition_by") => {
                    field = Some(value.as_atom().ok_or_else(|| {
                        format!(
                            "partition_by must be an atom naming a field, got {}",
                            show(value)
                        )
                    })?)
                }
                Some("partitions") if value.is_nil() => partitions = None,
                Some("partitions") => partitions = Some(parse_partitions(value)?),
                _ => {
                    return Err(format!(
                        "unknown query option {} (expected partition_by or partitions)",
                        show(key)
                    ));
                }
            }
        }
        match (field, partitions) {
            (Some(field), partitions) => Ok(Some(Partition { field, partitions })),
            (None, None) => Ok(None),
            (None, Some(_)) => Err("partitions needs partition_by => Field".to_string()),
        }
    }
}

/// `[{Key, [Value]}]`.
fn parse_partitions(value: &Value) -> Result<Vec<(Value, Vec<Value>)>, String> {
    let wrong = |what: &Value| {
        format!(
            "partitions must be a list of {{Key, [Value]}}, got {}",
            show(what)
        )
    };
    let items = value.as_list().ok_or_else(|| wrong(value))?;
    items
        .iter()
        .map(|item| match item.as_tuple() {
            Some([key, values]) => values
                .as_list()
                .map(|values| (key.clone(), values.to_vec()))
                .ok_or_else(|| {
                    format!(
                        "a partition's values must be a list, got {} in {}",
                        show(values),
                        show(item)
                    )
                }),
            _ => Err(wrong(item)),
        })
        .collect()
}

/// A group's identity: its value, compared exactly or, for a typed field, by type.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum GroupKey {
    /// An untyped value (or one without its type's shape), compared exactly.
    Exact(Value),
    /// A typed value's comparison key.
    Typed(typed::Key),
}

impl GroupKey {
    /// The group of `value`, for a field of type `ty`.
    pub fn of(value: &Value, ty: Option<FieldType>) -> GroupKey {
        match ty.and_then(|t| t.key(value)) {
            Some(k) => GroupKey::Typed(k),
            None => GroupKey::Exact(value.clone()),
        }
    }
}

/// Records grouped by their value of one field (an absent field is `nil`): exact equality (`1`
/// and `1.0` differ), or equality by type for a typed field; a group's value is its first
/// record's.
pub struct Groups {
    ty: Option<FieldType>,
    index: FxHashMap<GroupKey, usize>,
    groups: Vec<(Value, Vec<Record>)>,
}

impl Groups {
    /// Groups `records` by `field`, of type `ty`.
    pub fn new(
        records: impl IntoIterator<Item = Record>,
        field: Atom,
        ty: Option<FieldType>,
    ) -> Groups {
        let nil = Value::nil();
        let mut index: FxHashMap<GroupKey, usize> = Default::default();
        let mut groups: Vec<(Value, Vec<Record>)> = Vec::new();
        for record in records {
            let value = record.get(field).unwrap_or(&nil);
            let i = *index.entry(GroupKey::of(value, ty)).or_insert_with(|| {
                groups.push((value.clone(), Vec::new()));
                groups.len() - 1
            });
            groups[i].1.push(record);
        }
        Groups { ty, index, groups }
    }

    /// The groups, `(value, records)`, in exact term order of their values (type order for a
    /// typed field).
    pub fn into_sorted(mut self) -> Vec<(Value, Vec<Record>)> {
        match self.ty {
            None => self.groups.sort_by(|a, b| cmp_exact(&a.0, &b.0)),
            ty => self.groups.sort_by(|a, b| typed::cmp(ty, &a.0, &b.0)),
        }
        self.groups
    }

    /// The groups whose value equals one of `values`, each once, in the order of `values`.
    fn matching(&self, values: &[Value]) -> Vec<usize> {
        let mut seen = FxHashSet::default();
        values
            .iter()
            .filter_map(|value| self.index.get(&GroupKey::of(value, self.ty)).copied())
            .filter(|&i| seen.insert(i))
            .collect()
    }

    /// The records whose value equals one of `values` (each record once, groups in the order
    /// of `values`).
    fn members(&self, values: &[Value]) -> Vec<Record> {
        self.matching(values)
            .into_iter()
            .flat_map(|i| self.groups[i].1.iter().cloned())
            .collect()
    }

    /// How many records there are in all.
    fn records(&self) -> usize {
        self.groups.iter().map(|(_, members)| members.len()).sum()
    }
}

/// Runs a partitioned query over `records`: filter, then split by `partition.field` (of type
/// `ty`), then sort, offset and limit within each partition ([`run`]; `select` is left to the
/// caller). With `partitions`, one `(Key, records)` per partition asked for, in that order (a
/// record whose value is in several partitions is in each); without, one `(Value, records)`
/// per value present, in term order (type order for a typed field), as
/// [`aggregate_grouped`](super::aggregate_grouped) orders its groups.
///
/// Partitions sharing values repeat records, so what they return in all may be more than the
/// records matched: more than `max_records` of them too is an error, found before anything is
/// built.
pub fn run_partitioned(
    records: impl IntoIterator<Item = Record>,
    query: &Query,
    partition: &Partition,
    primary_key: &[Atom],
    ty: Option<FieldType>,
    max_records: usize,
) -> Result<Vec<(Value, Vec<Record>)>, String> {
    let matches = records
        .into_iter()
        .filter(|r| query.filter.as_ref().is_none_or(|e| e.matches(r)));
    let page = Query {
        filter: None,
        ..query.clone()
    };
    let groups = Groups::new(matches, partition.field, ty);
    match &partition.partitions {
        Some(partitions) => {
            let total = partitions.iter().fold(0usize, |total, (_, values)| {
                let members: usize = groups
                    .matching(values)
                    .into_iter()
                    .map(|i| groups.groups[i].1.len())
                    .sum();
                total.saturating_add(paged_len(members, &page))
            });
            check_total(total, groups.records(), max_records)?;
            Ok(partitions
                .iter()
                .map(|(key, values)| (key.clone(), run(groups.members(values), &page, primary_key)))
                .collect())
        }
        None => Ok(groups
            .into_sorted()
            .into_iter()
            .map(|(value, members)| (value, run(members, &page, primary_key)))
            .collect()),
    }
}

/// Refuses partitions that would return `total` records in all when that is more than the
/// `matched` records and than `max_records` (partitions sharing values repeat records), with
/// the message a partitioned query answers.
pub fn check_total(total: usize, matched: usize, max_records: usize) -> Result<(), String> {
    let allowed = matched.max(max_records);
    if total > allowed {
        return Err(format!(
            "the partitions would return {total} records in all, more than the {allowed} a \
             partitioned query may (the records matched, or the node's \
             --max-records-per-request when more): use fewer or smaller partitions, or a limit"
        ));
    }
    Ok(())
}

/// How many of `len` records the query's offset and limit keep.
pub fn paged_len(len: usize, query: &Query) -> usize {
    let after_offset = len.saturating_sub(query.offset);
    query
        .limit
        .map_or(after_offset, |limit| after_offset.min(limit))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{a, rec, term};
    use super::*;

    fn parse(text: &str) -> Result<Option<Partition>, String> {
        Partition::parse(term(text).as_map().unwrap())
    }

    fn query(text: &str) -> Query {
        Query::parse(&term(text)).unwrap()
    }

    /// `[{Key, [id]}]` of a result.
    fn ids(out: &[(Value, Vec<Record>)]) -> Vec<(Value, Vec<i64>)> {
        out.iter()
            .map(|(k, recs)| {
                (
                    k.clone(),
                    recs.iter()
                        .map(|r| r.get(a("id")).and_then(Value::as_int).unwrap())
                        .collect(),
                )
            })
            .collect()
    }

    fn posts() -> Vec<Record> {
        [
            "#{id => 1, author => 1, n => 5}",
            "#{id => 2, author => 2, n => 3}",
            "#{id => 3, author => 1, n => 9}",
            "#{id => 4, author => 1, n => 1}",
            "#{id => 5, author => 3, n => 7}",
            "#{id => 6, author => 2, n => 8}",
            "#{id => 7, n => 2}",
            "#{id => 8, author => 1.0, n => 4}",
        ]
        .iter()
        .map(|r| rec(r))
        .collect()
    }

    #[test]
    fn parses_options() {
        assert_eq!(parse("#{}"), Ok(None));
        assert_eq!(parse("#{partition_by => nil, partitions => nil}"), Ok(None));
        assert_eq!(
            parse("#{partition_by => author}"),
            Ok(Some(Partition {
                field: a("author"),
                partitions: None
            }))
        );
        assert_eq!(
            parse("#{partition_by => author, partitions => [{p1, [1, 2]}, {{x}, []}]}"),
            Ok(Some(Partition {
                field: a("author"),
                partitions: Some(vec![
                    (term("p1"), vec![term("1"), term("2")]),
                    (term("{x}"), vec![]),
                ])
            }))
        );
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        assert_eq!(
            parse("#{group_by => author}").unwrap_err(),
            "unknown query option group_by (expected partition_by or partitions)"
        );
        assert_eq!(
            parse("#{partition_by => <<\"author\">>}").unwrap_err(),
            "partition_by must be an atom naming a field, got <<\"author\">>"
        );
        assert_eq!(
            parse("#{partitions => [{a, [1]}]}").unwrap_err(),
            "partitions needs partition_by => Field"
        );
        assert_eq!(
            parse("#{partition_by => f, partitions => x}").unwrap_err(),
            "partitions must be a list of {Key, [Value]}, got x"
        );
        assert_eq!(
            parse("#{partition_by => f, partitions => [{a, [1]}, {b}]}").unwrap_err(),
            "partitions must be a list of {Key, [Value]}, got {b}"
        );
        assert_eq!(
            parse("#{partition_by => f, partitions => [{a, 1}]}").unwrap_err(),
            "a partition's values must be a list, got 1 in {a,1}"
        );
    }

    #[test]
    fn each_partition_is_sorted_and_paged_on_its_own() {
        let p = parse("#{partition_by => author, partitions => [{x, [1]}, {y, [2, 3]}, {z, [9]}]}")
            .unwrap()
            .unwrap();
        let q = query("#{filter => {gt, n, 1}, sort => [{n, desc}], offset => 1, limit => 2}");
        let out = run_partitioned(posts(), &q, &p, &[a("id")], None, 1000).unwrap();
        // author 1 (not 1.0: exact equality): n 9 (3), 5 (1); 1 (4) is filtered out. Offset 1,
        // limit 2. Authors 2 and 3: n 8 (6), 7 (5), 3 (2).
        assert_eq!(
            ids(&out),
            vec![
                (term("x"), vec![1]),
                (term("y"), vec![5, 2]),
                (term("z"), vec![])
            ]
        );
    }

    #[test]
    fn a_record_is_in_every_partition_holding_its_value_once_each() {
        let p = parse("#{partition_by => author, partitions => [{a, [2, 2, 3]}, {b, [3]}]}")
            .unwrap()
            .unwrap();
        let out = run_partitioned(posts(), &query("#{}"), &p, &[a("id")], None, 1000).unwrap();
        let mut got = ids(&out);
        got.iter_mut().for_each(|(_, v)| v.sort());
        assert_eq!(got, vec![(term("a"), vec![2, 5, 6]), (term("b"), vec![5])]);
    }

    #[test]
    fn without_partitions_there_is_one_per_value_in_term_order() {
        let p = parse("#{partition_by => author}").unwrap().unwrap();
        let out = run_partitioned(
            posts(),
            &query("#{sort => [{n, asc}], limit => 2}"),
            &p,
            &[a("id")],
            None,
            1000,
        )
        .unwrap();
        // 1 and 1.0 are apart (exact equality; the integer first); nil sorts as an atom.
        assert_eq!(
            ids(&out),
            vec![
                (term("1"), vec![4, 1]),
                (term("1.0"), vec![8]),
                (term("2"), vec![2, 6]),
                (term("3"), vec![5]),
                (term("nil"), vec![7])
            ]
        );
    }

    #[test]
    fn typed_partition_values_are_equal_by_type() {
        let records = vec![
            rec("#{id => 1, parent => <<\"ALPHA\">>}"),
            rec("#{id => 2, parent => <<\"alpha\">>}"),
            rec("#{id => 3, parent => <<\"Beta\">>}"),
        ];
        let p = parse("#{partition_by => parent, partitions => [{1, [<<\"Alpha\">>]}, {2, [<<\"BETA\">>, <<\"beta\">>]}]}")
            .unwrap()
            .unwrap();
        let out = run_partitioned(
            records.clone(),
            &query("#{sort => [{id, desc}]}"),
            &p,
            &[a("id")],
            Some(FieldType::CiString),
            1000,
        )
        .unwrap();
        assert_eq!(
            ids(&out),
            vec![(term("1"), vec![2, 1]), (term("2"), vec![3])]
        );
        // Untyped, nothing matches exactly.
        let out = run_partitioned(records, &query("#{}"), &p, &[a("id")], None, 1000).unwrap();
        assert_eq!(ids(&out), vec![(term("1"), vec![]), (term("2"), vec![])]);
    }

    #[test]
    fn partitions_repeating_records_past_the_limit_are_refused() {
        // 8 records; author 1 has 3. Ten partitions of author 1 return 30 > max(8, 20).
        let many = |n: usize, limit: &str| {
            let parts: Vec<String> = (0..n).map(|k| format!("{{{k}, [1]}}")).collect();
            let p = parse(&format!(
                "#{{partition_by => author, partitions => [{}]}}",
                parts.join(", ")
            ))
            .unwrap()
            .unwrap();
            run_partitioned(posts(), &query(limit), &p, &[a("id")], None, 20)
        };
        assert_eq!(
            many(10, "#{}").unwrap_err(),
            "the partitions would return 30 records in all, more than the 20 a partitioned query \
             may (the records matched, or the node's --max-records-per-request when more): use \
             fewer or smaller partitions, or a limit"
        );
        // What the pages keep counts: with a limit of 2 (or an offset of 1), 20 is allowed.
        assert_eq!(many(10, "#{limit => 2}").unwrap().len(), 10);
        assert_eq!(many(10, "#{offset => 1}").unwrap().len(), 10);
        assert!(many(10, "#{offset => 1, limit => 3}").is_ok());
        assert!(many(7, "#{}").is_err());
        assert!(many(6, "#{}").is_ok());
        // Without partitions (or with disjoint ones) nothing repeats: never refused.
        let p = parse("#{partition_by => author}").unwrap().unwrap();
        assert!(run_partitioned(posts(), &query("#{}"), &p, &[a("id")], None, 1).is_ok());
    }
}
