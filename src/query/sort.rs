//! Sorting (PROTOCOL.md, "query": `sort => [{Field, Dir}]`): parsing the sort list and the
//! comparator over records, which breaks ties on the primary key so every order is total.

use super::show;
use super::typed::{self, FieldType, Types};
use crate::term::{Atom, Record, Value, cmp_exact, cmp_term};
use std::cmp::Ordering;
use std::sync::LazyLock;

/// The value an absent field reads as.
static NIL: LazyLock<Value> = LazyLock::new(Value::nil);

/// A sort direction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// Ascending term order (`nil` is an atom like any other).
    Asc,
    /// Descending term order.
    Desc,
    /// `nil` and absent first, the rest ascending.
    AscNilsFirst,
    /// `nil` and absent last, the rest ascending.
    AscNilsLast,
    /// `nil` and absent first, the rest descending.
    DescNilsFirst,
    /// `nil` and absent last, the rest descending.
    DescNilsLast,
}

impl Dir {
    /// Parses `asc`, `desc`, `asc_nils_first`, `asc_nils_last`, `desc_nils_first` or
    /// `desc_nils_last`.
    pub fn parse(term: &Value) -> Result<Dir, String> {
        let dir = match term.as_atom().map(|a| a.as_str()) {
            Some("asc") => Dir::Asc,
            Some("desc") => Dir::Desc,
            Some("asc_nils_first") => Dir::AscNilsFirst,
            Some("asc_nils_last") => Dir::AscNilsLast,
            Some("desc_nils_first") => Dir::DescNilsFirst,
            Some("desc_nils_last") => Dir::DescNilsLast,
            _ => {
                return Err(format!(
                    "unknown sort direction {} (expected asc, desc, asc_nils_first, \
                     asc_nils_last, desc_nils_first or desc_nils_last)",
                    show(term)
                ));
            }
        };
        Ok(dir)
    }

    /// Compares two field values in this direction.
    pub fn compare(self, a: &Value, b: &Value) -> Ordering {
        self.compare_typed(None, a, b)
    }

    /// Compares two values of a field of type `ty` in this direction.
    pub fn compare_typed(self, ty: Option<FieldType>, a: &Value, b: &Value) -> Ordering {
        let cmp_term = |a: &Value, b: &Value| match ty {
            None => cmp_term(a, b),
            ty => typed::cmp(ty, a, b),
        };
        let nils_first = match self {
            Dir::Asc => return cmp_term(a, b),
            Dir::Desc => return cmp_term(b, a),
            Dir::AscNilsFirst | Dir::DescNilsFirst => true,
            Dir::AscNilsLast | Dir::DescNilsLast => false,
        };
        let nil_order = match (a.is_nil(), b.is_nil()) {
            (true, true) => return Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => {
                return match self {
                    Dir::AscNilsFirst | Dir::AscNilsLast => cmp_term(a, b),
                    _ => cmp_term(b, a),
                };
            }
        };
        if nils_first {
            nil_order
        } else {
            nil_order.reverse()
        }
    }
}

/// A record's field; absent reads as `nil`.
fn read(record: &Record, field: Atom) -> &Value {
    record.get(field).unwrap_or(&NIL)
}

/// A parsed sort: fields compared in turn, each in its direction.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Sort {
    /// The sort fields, most significant first.
    pub keys: Vec<(Atom, Dir)>,
    /// The sort fields' types, when bound to typed fields ([`Sort::bind`]); empty otherwise.
    pub types: Vec<Option<FieldType>>,
}

impl Sort {
    /// Parses `[{Field, Dir}]`.
    pub fn parse(term: &Value) -> Result<Sort, String> {
        let items = term.as_list().ok_or_else(|| {
            format!(
                "sort must be a list of {{Field, Dir}} tuples, got {}",
                show(term)
            )
        })?;
        let keys = items
            .iter()
            .map(|item| match item.as_tuple() {
                Some([field, dir]) => {
                    let field = field.as_atom().ok_or_else(|| {
                        format!(
                            "sort field must be an atom, got {} in {}",
                            show(field),
                            show(item)
                        )
                    })?;
                    Ok((field, Dir::parse(dir)?))
                }
                _ => Err(format!(
                    "each sort entry must be a {{Field, Dir}} tuple, got {}",
                    show(item)
                )),
            })
            .collect::<Result<_, String>>()?;
        Ok(Sort {
            keys,
            types: Vec::new(),
        })
    }

    /// The sort comparing typed fields by their type.
    pub fn bind(&self, types: &Types) -> Sort {
        if types.is_empty() {
            return self.clone();
        }
        Sort {
            keys: self.keys.clone(),
            types: self.keys.iter().map(|(f, _)| types.get(*f)).collect(),
        }
    }

    /// Whether there is no sort field.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Compares two records: on each sort field in turn, then on the primary key fields
    /// ascending (in term order, then integers before equal floats), so the order is total
    /// over records with distinct primary keys. An absent field reads as `nil`.
    pub fn compare(&self, a: &Record, b: &Record, primary_key: &[Atom]) -> Ordering {
        for (i, (field, dir)) in self.keys.iter().enumerate() {
            let ty = self.types.get(i).copied().flatten();
            let o = dir.compare_typed(ty, read(a, *field), read(b, *field));
            if o.is_ne() {
                return o;
            }
        }
        for field in primary_key {
            let o = cmp_exact(read(a, *field), read(b, *field));
            if o.is_ne() {
                return o;
            }
        }
        Ordering::Equal
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::tests::{a, rec, term};

    fn sort(text: &str) -> Sort {
        Sort::parse(&term(text)).unwrap()
    }

    /// The ids of the records after sorting by `spec` (ties by `id`).
    fn order(spec: &str, records: &[&str]) -> Vec<i64> {
        let s = sort(spec);
        let mut rs: Vec<Record> = records.iter().map(|r| rec(r)).collect();
        rs.sort_by(|x, y| s.compare(x, y, &[a("id")]));
        rs.iter()
            .map(|r| r.get(a("id")).and_then(Value::as_int).unwrap())
            .collect()
    }

    /// Records with ids 1.. and these `x` values (`absent` leaves `x` out).
    fn xs(values: &[&str]) -> Vec<String> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| match *v {
                "absent" => format!("#{{id => {}}}", i + 1),
                v => format!("#{{id => {}, x => {v}}}", i + 1),
            })
            .collect()
    }

    fn order_x(dir: &str, values: &[&str]) -> Vec<i64> {
        let records = xs(values);
        let refs: Vec<&str> = records.iter().map(String::as_str).collect();
        order(&format!("[{{x, {dir}}}]"), &refs)
    }

    #[test]
    fn asc_and_desc_are_plain_term_order() {
        //            1        2      3    4    5        6    7         8
        let values = [
            "<<\"b\">>",
            "nil",
            "2.5",
            "1",
            "a",
            "{1}",
            "absent",
            "<<\"a\">>",
        ];
        // 1 < 2.5 < a < nil (both absent and nil) < {1} < <<"a">> < <<"b">>
        assert_eq!(order_x("asc", &values), vec![4, 3, 5, 2, 7, 6, 8, 1]);
        assert_eq!(order_x("desc", &values), vec![1, 8, 6, 2, 7, 5, 3, 4]);
    }

    #[test]
    fn nils_first_and_last() {
        let values = ["3", "nil", "1", "absent", "2", "zzz"];
        assert_eq!(order_x("asc_nils_first", &values), vec![2, 4, 3, 5, 1, 6]);
        assert_eq!(order_x("asc_nils_last", &values), vec![3, 5, 1, 6, 2, 4]);
        assert_eq!(order_x("desc_nils_first", &values), vec![2, 4, 6, 1, 5, 3]);
        assert_eq!(order_x("desc_nils_last", &values), vec![6, 1, 5, 3, 2, 4]);
    }

    #[test]
    fn ints_and_equal_floats_tie_and_fall_through_to_the_primary_key() {
        assert_eq!(order_x("asc", &["1.0", "1", "0.5"]), vec![3, 1, 2]);
        assert_eq!(order_x("desc", &["1", "1.0", "2"]), vec![3, 1, 2]);
    }

    #[test]
    fn ties_go_to_the_next_field_then_the_primary_key() {
        let records = [
            "#{id => 4, team => b, age => 30}",
            "#{id => 2, team => a, age => 30}",
            "#{id => 3, team => a, age => 20}",
            "#{id => 1, team => a, age => 30}",
            "#{id => 5, team => b, age => 30}",
        ];
        assert_eq!(
            order("[{team, asc}, {age, desc}]", &records),
            vec![1, 2, 3, 4, 5]
        );
        assert_eq!(order("[{team, desc}]", &records), vec![4, 5, 1, 2, 3]);
        assert_eq!(order("[]", &records), vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn composite_primary_keys_break_ties_in_order() {
        let s = sort("[]");
        let r1 = rec("#{org => 1, n => 2}");
        let r2 = rec("#{org => 2, n => 1}");
        let pk = [a("org"), a("n")];
        assert_eq!(s.compare(&r1, &r2, &pk), Ordering::Less);
        let pk = [a("n"), a("org")];
        assert_eq!(s.compare(&r1, &r2, &pk), Ordering::Greater);
        // A primary key of 1 and one of 1.0 are different records: still ordered.
        let r3 = rec("#{org => 1.0, n => 2}");
        assert_eq!(s.compare(&r1, &r3, &[a("org")]), Ordering::Less);
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let err = |text: &str| Sort::parse(&term(text)).unwrap_err();
        assert_eq!(
            err("{age, asc}"),
            "sort must be a list of {Field, Dir} tuples, got {age,asc}"
        );
        assert_eq!(
            err("[age]"),
            "each sort entry must be a {Field, Dir} tuple, got age"
        );
        assert_eq!(
            err("[{<<\"age\">>, asc}]"),
            "sort field must be an atom, got <<\"age\">> in {<<\"age\">>,asc}"
        );
        assert_eq!(
            err("[{age, ascending}]"),
            "unknown sort direction ascending (expected asc, desc, asc_nils_first, \
             asc_nils_last, desc_nils_first or desc_nils_last)"
        );
        assert_eq!(
            sort("[{a, asc}, {b, desc_nils_last}]").keys,
            vec![(a("a"), Dir::Asc), (a("b"), Dir::DescNilsLast)]
        );
    }
}
