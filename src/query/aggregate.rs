//! Aggregates (PROTOCOL.md, "aggregate"): parsing `[{Name, Kind, Field | nil, Opts}]` and
//! computing each over records already filtered, sorted and paged.

use super::show;
use crate::term::{Atom, Record, Value, cmp_term};
use num_bigint::BigInt;
use num_traits::ToPrimitive;
use std::collections::HashSet;
use std::sync::LazyLock;

/// The value an absent field reads as.
static NIL: LazyLock<Value> = LazyLock::new(Value::nil);

/// What an aggregate computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Number of records, or of non-nil values of the field.
    Count,
    /// Whether there is any record (or any non-nil value of the field).
    Exists,
    /// Sum of the non-nil values.
    Sum,
    /// Mean of the non-nil values, a float.
    Avg,
    /// Least non-nil value in term order.
    Min,
    /// Greatest non-nil value in term order.
    Max,
    /// The first non-nil value in sort order.
    First,
    /// Every non-nil value in sort order.
    List,
}

impl Kind {
    fn parse(term: &Value) -> Result<Kind, String> {
        Ok(match term.as_atom().map(|a| a.as_str()) {
            Some("count") => Kind::Count,
            Some("exists") => Kind::Exists,
            Some("sum") => Kind::Sum,
            Some("avg") => Kind::Avg,
            Some("min") => Kind::Min,
            Some("max") => Kind::Max,
            Some("first") => Kind::First,
            Some("list") => Kind::List,
            _ => {
                return Err(format!(
                    "unknown aggregate kind {} (expected count, exists, sum, avg, min, max, \
                     first or list)",
                    show(term)
                ));
            }
        })
    }

    /// The value over an empty set (when no `default` is given).
    fn empty(self) -> Value {
        match self {
            Kind::Count => Value::Int(0),
            Kind::Exists => Value::boolean(false),
            Kind::List => Value::empty_list(),
            Kind::Sum | Kind::Avg | Kind::Min | Kind::Max | Kind::First => Value::nil(),
        }
    }
}

/// One parsed `{Name, Kind, Field | nil, Opts}`.
#[derive(Clone, Debug, PartialEq)]
pub struct Aggregate {
    /// The key of the result in the reply map (any term).
    pub name: Value,
    /// What to compute.
    pub kind: Kind,
    /// The field aggregated; `None` (`nil`) for `count` and `exists` over records.
    pub field: Option<Atom>,
    /// `uniq => true`: the aggregate sees each distinct value (by `=:=`) once.
    pub uniq: bool,
    /// `include_nil => true`: `first` and `list` keep nil values.
    pub include_nil: bool,
    /// `default => Value`: replaces the empty-set value.
    pub default: Option<Value>,
    /// The field's type, for `min` and `max` (see [`super::typed`]); set by [`Aggregate::bind`].
    pub ty: Option<super::typed::FieldType>,
}

/// An aggregate that cannot be computed over these records.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum AggregateError {
    /// `sum` or `avg` met a value that is not a number.
    #[error("cannot sum {value:?} of field {field}: not a number")]
    NotANumber {
        /// The field summed.
        field: Atom,
        /// The offending value.
        value: Value,
    },
    /// `sum` or `avg` of floats went past the largest float.
    #[error("the sum of field {field} overflows a float")]
    FloatOverflow {
        /// The field summed.
        field: Atom,
    },
}

impl Aggregate {
    /// Parses one `{Name, Kind, Field | nil, Opts}`.
    pub fn parse(term: &Value) -> Result<Aggregate, String> {
        let Some([name, kind, field, opts]) = term.as_tuple() else {
            return Err(format!(
                "an aggregate must be a {{Name, Kind, Field | nil, Opts}} tuple, got {}",
                show(term)
            ));
        };
        let kind = Kind::parse(kind)?;
        let field = match field {
            f if f.is_nil() => None,
            Value::Atom(a) => Some(*a),
            other => {
                return Err(format!(
                    "aggregate field must be an atom or nil, got {} in {}",
                    show(other),
                    show(term)
                ));
            }
        };
        if field.is_none() && !matches!(kind, Kind::Count | Kind::Exists) {
            return Err(format!(
                "aggregate {} needs a field (only count and exists take nil), in {}",
                show(name),
                show(term)
            ));
        }
        let mut aggregate = Aggregate {
            name: name.clone(),
            kind,
            field,
            uniq: false,
            include_nil: false,
            default: None,
            ty: None,
        };
        let entries = opts.as_map().ok_or_else(|| {
            format!(
                "aggregate options must be a map, got {} in {}",
                show(opts),
                show(term)
            )
        })?;
        for (key, value) in entries {
            let flag = || match value.as_atom().map(|a| a.as_str()) {
                Some("true") => Ok(true),
                Some("false") => Ok(false),
                _ => Err(format!(
                    "aggregate option {} must be true or false, got {}",
                    show(key),
                    show(value)
                )),
            };
            match key.as_atom().map(|a| a.as_str()) {
                Some("uniq") => aggregate.uniq = flag()?,
                Some("include_nil") => aggregate.include_nil = flag()?,
                Some("default") => aggregate.default = Some(value.clone()),
                _ => {
                    return Err(format!(
                        "unknown aggregate option {} (expected uniq, include_nil or default)",
                        show(key)
                    ));
                }
            }
        }
        Ok(aggregate)
    }

    /// Parses the list `[{Name, Kind, Field | nil, Opts}]`; names must be distinct.
    pub fn parse_list(term: &Value) -> Result<Vec<Aggregate>, String> {
        let items = term.as_list().ok_or_else(|| {
            format!(
                "aggregates must be a list of {{Name, Kind, Field | nil, Opts}}, got {}",
                show(term)
            )
        })?;
        let aggregates = items
            .iter()
            .map(Aggregate::parse)
            .collect::<Result<Vec<_>, _>>()?;
        for (i, a) in aggregates.iter().enumerate() {
            if aggregates[..i].iter().any(|b| b.name == a.name) {
                return Err(format!("duplicate aggregate name {}", show(&a.name)));
            }
        }
        Ok(aggregates)
    }

    /// The aggregate comparing its field by the resource's `types`.
    pub fn bind(&self, types: &super::typed::Types) -> Aggregate {
        Aggregate {
            ty: self.field.and_then(|f| types.get(f)),
            ..self.clone()
        }
    }

    fn cmp(&self, a: &Value, b: &Value) -> std::cmp::Ordering {
        match self.ty {
            None => cmp_term(a, b),
            ty => super::typed::cmp(ty, a, b),
        }
    }

    /// Computes the aggregate over `records`, in the order given.
    pub fn compute(&self, records: &[Record]) -> Result<Value, AggregateError> {
        let Some(field) = self.field else {
            // Over records: only count and exists get here.
            return Ok(match (self.kind, records.len()) {
                (_, 0) => self.empty(),
                (Kind::Exists, _) => Value::boolean(true),
                (_, n) => Value::Int(n as i64),
            });
        };
        let keep_nil = self.include_nil && matches!(self.kind, Kind::First | Kind::List);
        let mut values: Vec<&Value> = records
            .iter()
            .map(|r| r.get(field).unwrap_or(&NIL))
            .filter(|v| keep_nil || !v.is_nil())
            .collect();
        if self.uniq {
            let mut seen = HashSet::with_capacity(values.len());
            values.retain(|v| seen.insert(*v));
        }
        let Some(&first) = values.first() else {
            return Ok(self.empty());
        };
        Ok(match self.kind {
            Kind::Count => Value::Int(values.len() as i64),
            Kind::Exists => Value::boolean(true),
            Kind::Sum => sum(field, &values)?.into_value(field)?,
            Kind::Avg => {
                let total = sum(field, &values)?.to_f64();
                finite(field, total / values.len() as f64)?
            }
            // On ties (`1` and `1.0`) the first in order wins.
            Kind::Min => values
                .iter()
                .fold(first, |m, v| if self.cmp(v, m).is_lt() { v } else { m })
                .clone(),
            Kind::Max => values
                .iter()
                .fold(first, |m, v| if self.cmp(v, m).is_gt() { v } else { m })
                .clone(),
            Kind::First => first.clone(),
            Kind::List => Value::list(values.into_iter().cloned().collect()),
        })
    }

    fn empty(&self) -> Value {
        self.default.clone().unwrap_or_else(|| self.kind.empty())
    }
}

/// Computes every aggregate over `records`, as the reply map `#{Name => Value}`.
pub fn compute_all(aggregates: &[Aggregate], records: &[Record]) -> Result<Value, AggregateError> {
    let entries = aggregates
        .iter()
        .map(|a| Ok((a.name.clone(), a.compute(records)?)))
        .collect::<Result<Vec<_>, AggregateError>>()?;
    Ok(Value::map(entries))
}

/// A running sum, added left to right as Erlang would: exact while every value is an integer,
/// a float from the first float on.
enum Sum {
    Int(i64),
    Big(BigInt),
    Float(f64),
}

fn sum(field: Atom, values: &[&Value]) -> Result<Sum, AggregateError> {
    let mut acc = Sum::Int(0);
    for v in values {
        acc = match (acc, *v) {
            (Sum::Int(a), Value::Int(b)) => match a.checked_add(*b) {
                Some(s) => Sum::Int(s),
                None => Sum::Big(BigInt::from(a) + b),
            },
            (Sum::Int(a), Value::BigInt(b)) => Sum::Big(BigInt::from(a) + &**b),
            (Sum::Big(a), Value::Int(b)) => Sum::Big(a + b),
            (Sum::Big(a), Value::BigInt(b)) => Sum::Big(a + &**b),
            (acc, Value::Float(b)) => Sum::Float(acc.to_f64() + b),
            (Sum::Float(a), Value::Int(b)) => Sum::Float(a + *b as f64),
            (Sum::Float(a), Value::BigInt(b)) => Sum::Float(a + b.to_f64().unwrap_or(f64::NAN)),
            (_, other) => {
                return Err(AggregateError::NotANumber {
                    field,
                    value: other.clone(),
                });
            }
        };
    }
    Ok(acc)
}

impl Sum {
    fn to_f64(&self) -> f64 {
        match self {
            Sum::Int(i) => *i as f64,
            Sum::Big(b) => b.to_f64().unwrap_or(f64::NAN),
            Sum::Float(f) => *f,
        }
    }

    fn into_value(self, field: Atom) -> Result<Value, AggregateError> {
        match self {
            Sum::Int(i) => Ok(Value::Int(i)),
            Sum::Big(b) => Ok(Value::integer(b)),
            Sum::Float(f) => finite(field, f),
        }
    }
}

/// A float result; Erlang has no infinities, so overflow is an error.
fn finite(field: Atom, f: f64) -> Result<Value, AggregateError> {
    if f.is_finite() {
        Ok(Value::Float(f))
    } else {
        Err(AggregateError::FloatOverflow { field })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::tests::{a, rec, term};

    /// Records with ids 1.. and these `x` values (`absent` leaves `x` out).
    fn xs(values: &[&str]) -> Vec<Record> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| match *v {
                "absent" => rec(&format!("#{{id => {}}}", i + 1)),
                v => rec(&format!("#{{id => {}, x => {v}}}", i + 1)),
            })
            .collect()
    }

    /// Computes one aggregate written `{Name, Kind, Field, Opts}` over `x` values.
    fn agg(spec: &str, values: &[&str]) -> Result<Value, AggregateError> {
        Aggregate::parse(&term(spec)).unwrap().compute(&xs(values))
    }

    fn ok(spec: &str, values: &[&str]) -> Value {
        agg(spec, values).unwrap()
    }

    const MIXED: [&str; 7] = ["3", "nil", "1", "absent", "3", "2.0", "1.0"];

    #[test]
    fn count() {
        assert_eq!(ok("{c, count, nil, #{}}", &MIXED), Value::Int(7));
        assert_eq!(ok("{c, count, x, #{}}", &MIXED), Value::Int(5));
        // Distinct by exact equality: 1 and 1.0 are two values.
        assert_eq!(ok("{c, count, x, #{uniq => true}}", &MIXED), Value::Int(4));
        assert_eq!(ok("{c, count, nil, #{}}", &[]), Value::Int(0));
        assert_eq!(ok("{c, count, x, #{}}", &["nil", "absent"]), Value::Int(0));
        assert_eq!(
            ok("{c, count, x, #{default => none}}", &["nil"]),
            term("none")
        );
        assert_eq!(ok("{c, count, nil, #{default => -1}}", &[]), Value::Int(-1));
        assert_eq!(ok("{c, count, x, #{default => -1}}", &["5"]), Value::Int(1));
    }

    #[test]
    fn exists() {
        assert_eq!(ok("{e, exists, nil, #{}}", &["nil"]), term("true"));
        assert_eq!(ok("{e, exists, nil, #{}}", &[]), term("false"));
        assert_eq!(ok("{e, exists, x, #{}}", &["nil", "absent"]), term("false"));
        assert_eq!(ok("{e, exists, x, #{}}", &["nil", "0"]), term("true"));
        assert_eq!(
            ok("{e, exists, nil, #{default => maybe}}", &[]),
            term("maybe")
        );
    }

    #[test]
    fn sum() {
        assert_eq!(
            ok("{s, sum, x, #{}}", &["1", "nil", "2", "absent"]),
            Value::Int(3)
        );
        assert_eq!(ok("{s, sum, x, #{}}", &MIXED), Value::Float(10.0));
        assert_eq!(
            ok("{s, sum, x, #{uniq => true}}", &MIXED),
            Value::Float(7.0)
        );
        assert_eq!(ok("{s, sum, x, #{}}", &["0.5", "1"]), Value::Float(1.5));
        assert_eq!(ok("{s, sum, x, #{}}", &[]), Value::nil());
        assert_eq!(ok("{s, sum, x, #{}}", &["nil"]), Value::nil());
        assert_eq!(ok("{s, sum, x, #{default => 0}}", &["nil"]), Value::Int(0));
    }

    #[test]
    fn sum_of_integers_is_exact_past_64_bits() {
        let big = ["9223372036854775807", "9223372036854775807", "2"];
        assert_eq!(ok("{s, sum, x, #{}}", &big), term("18446744073709551616"));
        // Back into 64 bits when the bignum part cancels out.
        let back = ["9223372036854775807", "1", "-9223372036854775807"];
        assert_eq!(ok("{s, sum, x, #{}}", &back), Value::Int(1));
        let huge = [
            "123456789012345678901234567890",
            "-123456789012345678901234567889",
        ];
        assert_eq!(ok("{s, sum, x, #{}}", &huge), Value::Int(1));
        let with_float = ["123456789012345678901234567890", "0.5"];
        assert_eq!(
            ok("{s, sum, x, #{}}", &with_float),
            Value::Float(1.2345678901234568e29)
        );
    }

    #[test]
    fn sum_of_a_non_number_is_an_error() {
        let e = agg("{s, sum, x, #{}}", &["1", "<<\"2\">>", "three"]).unwrap_err();
        assert_eq!(
            e,
            AggregateError::NotANumber {
                field: a("x"),
                value: Value::from("2"),
            }
        );
        assert!(agg("{s, avg, x, #{}}", &["true"]).is_err());
        let e = agg("{s, sum, x, #{}}", &["1.0e308", "1.0e308"]).unwrap_err();
        assert_eq!(e, AggregateError::FloatOverflow { field: a("x") });
    }

    #[test]
    fn avg_is_a_float() {
        assert_eq!(
            ok("{m, avg, x, #{}}", &["1", "2", "nil"]),
            Value::Float(1.5)
        );
        assert_eq!(ok("{m, avg, x, #{}}", &["2", "2"]), Value::Float(2.0));
        assert_eq!(
            ok("{m, avg, x, #{uniq => true}}", &["2", "2", "5"]),
            Value::Float(3.5)
        );
        assert_eq!(ok("{m, avg, x, #{}}", &MIXED), Value::Float(2.0));
        assert_eq!(ok("{m, avg, x, #{}}", &["absent"]), Value::nil());
        assert_eq!(ok("{m, avg, x, #{default => 0.0}}", &[]), Value::Float(0.0));
        let big = ["18446744073709551616", "18446744073709551616"];
        assert_eq!(
            ok("{m, avg, x, #{}}", &big),
            Value::Float(18446744073709551616.0)
        );
    }

    #[test]
    fn min_and_max_in_term_order_skipping_nil() {
        let values = ["b", "nil", "3", "<<\"a\">>", "absent", "{1}"];
        assert_eq!(ok("{m, min, x, #{}}", &values), Value::Int(3));
        assert_eq!(ok("{m, max, x, #{}}", &values), Value::from("a"));
        // nil is skipped even where it would be the least or greatest.
        assert_eq!(ok("{m, max, x, #{}}", &["a", "nil", "1"]), term("a"));
        assert_eq!(ok("{m, min, x, #{}}", &["nil", "zzz", "{}"]), term("zzz"));
        // Equal numbers: the first in order wins.
        assert_eq!(
            ok("{m, min, x, #{}}", &["1.0", "1", "2"]),
            Value::Float(1.0)
        );
        assert_eq!(ok("{m, max, x, #{}}", &["2", "1", "2.0"]), Value::Int(2));
        assert_eq!(ok("{m, min, x, #{}}", &["nil"]), Value::nil());
        assert_eq!(ok("{m, max, x, #{default => 0}}", &[]), Value::Int(0));
    }

    #[test]
    fn first() {
        assert_eq!(
            ok("{f, first, x, #{}}", &["nil", "absent", "7", "8"]),
            Value::Int(7)
        );
        assert_eq!(
            ok("{f, first, x, #{include_nil => true}}", &["absent", "7"]),
            Value::nil()
        );
        assert_eq!(ok("{f, first, x, #{}}", &["nil"]), Value::nil());
        assert_eq!(
            ok("{f, first, x, #{default => none}}", &["nil"]),
            term("none")
        );
        // With include_nil the set is not empty, so the nil is the answer, not the default.
        assert_eq!(
            ok(
                "{f, first, x, #{include_nil => true, default => none}}",
                &["nil"]
            ),
            Value::nil()
        );
        assert_eq!(
            ok(
                "{f, first, x, #{include_nil => true, default => none}}",
                &[]
            ),
            term("none")
        );
    }

    #[test]
    fn list() {
        assert_eq!(ok("{l, list, x, #{}}", &MIXED), term("[3, 1, 3, 2.0, 1.0]"));
        assert_eq!(
            ok("{l, list, x, #{include_nil => true}}", &MIXED),
            term("[3, nil, 1, nil, 3, 2.0, 1.0]")
        );
        assert_eq!(
            ok("{l, list, x, #{uniq => true}}", &MIXED),
            term("[3, 1, 2.0, 1.0]")
        );
        assert_eq!(
            ok("{l, list, x, #{uniq => true, include_nil => true}}", &MIXED),
            term("[3, nil, 1, 2.0, 1.0]")
        );
        assert_eq!(ok("{l, list, x, #{}}", &["nil"]), Value::empty_list());
        assert_eq!(ok("{l, list, x, #{default => nil}}", &[]), Value::nil());
    }

    #[test]
    fn compute_all_builds_the_reply_map() {
        let specs = Aggregate::parse_list(&term(
            "[{n, count, nil, #{}}, {<<\"total\">>, sum, x, #{}}, {{t, 1}, max, x, #{}}]",
        ))
        .unwrap();
        let reply = compute_all(&specs, &xs(&["1", "2"])).unwrap();
        assert_eq!(reply, term("#{n => 2, <<\"total\">> => 3, {t, 1} => 2}"));
        assert_eq!(compute_all(&[], &xs(&["1"])).unwrap(), term("#{}"));
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        let err = |text: &str| Aggregate::parse_list(&term(text)).unwrap_err();
        assert_eq!(
            err("#{}"),
            "aggregates must be a list of {Name, Kind, Field | nil, Opts}, got #{}"
        );
        assert_eq!(
            err("[{n, count, nil}]"),
            "an aggregate must be a {Name, Kind, Field | nil, Opts} tuple, got {n,count,nil}"
        );
        assert_eq!(
            err("[{n, median, x, #{}}]"),
            "unknown aggregate kind median (expected count, exists, sum, avg, min, max, first \
             or list)"
        );
        assert_eq!(
            err("[{n, sum, nil, #{}}]"),
            "aggregate n needs a field (only count and exists take nil), in {n,sum,nil,#{}}"
        );
        assert_eq!(
            err("[{n, sum, <<\"x\">>, #{}}]"),
            "aggregate field must be an atom or nil, got <<\"x\">> in {n,sum,<<\"x\">>,#{}}"
        );
        assert_eq!(
            err("[{n, sum, x, []}]"),
            "aggregate options must be a map, got [] in {n,sum,x,[]}"
        );
        assert_eq!(
            err("[{n, list, x, #{unique => true}}]"),
            "unknown aggregate option unique (expected uniq, include_nil or default)"
        );
        assert_eq!(
            err("[{n, list, x, #{uniq => 1}}]"),
            "aggregate option uniq must be true or false, got 1"
        );
        assert_eq!(
            err("[{n, count, nil, #{}}, {n, sum, x, #{}}]"),
            "duplicate aggregate name n"
        );
    }
}
