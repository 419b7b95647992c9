//! Filter expressions (PROTOCOL.md, "Filter expressions"): parsing an `Expr` term into an
//! [`Expr`] and evaluating it against a record ([`Expr::matches`]). The same `Expr` is the
//! `filter` of query, update, destroy and the `condition` of upsert.

pub use super::expr::CmpOp;
use super::expr::{Scope, VExpr};
use super::show;
use super::typed::{self, FieldType, Types};
use crate::term::{Atom, Record, Value, cmp_term, eq_term};
use num_bigint::BigInt;
use num_traits::FromPrimitive;
use std::collections::HashSet;
use std::sync::LazyLock;

/// Filters nested deeper than this are refused (evaluation and drop are recursive).
pub const MAX_DEPTH: usize = 256;

/// `in` lists longer than this get a hash index; shorter ones are scanned.
const HASH_THRESHOLD: usize = 8;

/// The value an absent field reads as.
static NIL: LazyLock<Value> = LazyLock::new(Value::nil);

/// Whether `a Op b` holds in term order, with direct paths for the common same-kind cases.
fn compare(op: CmpOp, a: &Value, b: &Value) -> bool {
    let equality = matches!(op, CmpOp::Eq | CmpOp::Neq);
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => op.holds(x.cmp(y)),
        // Short binaries are zero-padded, so equal values have equal arrays.
        (Value::SmallBin { len: la, data: da }, Value::SmallBin { len: lb, data: db })
            if equality =>
        {
            (la == lb && da == db) == (op == CmpOp::Eq)
        }
        (Value::Atom(x), Value::Atom(y)) if equality => (x == y) == (op == CmpOp::Eq),
        _ => op.holds(cmp_term(a, b)),
    }
}

/// A parsed filter expression.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// `true` or `false`.
    Const(bool),
    /// `{eq | neq | lt | lte | gt | gte, Field, Value}`, in Erlang term order (or the field's
    /// type's order, once bound to the resource's types).
    Compare {
        /// The operator.
        op: CmpOp,
        /// The field on the left.
        field: Atom,
        /// The value on the right.
        value: Value,
        /// The field's type, if it is typed.
        ty: Option<FieldType>,
        /// The value's comparison key under `ty`, worked out once.
        key: Option<Box<typed::Key>>,
    },
    /// `{in, Field, [Value]}`: the field `==` one of the values.
    In {
        /// The field.
        field: Atom,
        /// The values.
        set: ValueSet,
        /// The field's type, if it is typed.
        ty: Option<FieldType>,
    },
    /// `{is_nil, Field}`: the field is `nil` or absent.
    IsNil(Atom),
    /// `{contains, Field, Binary}`: the field is a binary holding these bytes.
    Contains {
        /// The field.
        field: Atom,
        /// The bytes looked for (case-sensitive).
        needle: Box<[u8]>,
    },
    /// `{'and', A, B}`.
    And(Box<Expr>, Box<Expr>),
    /// `{'or', A, B}`.
    Or(Box<Expr>, Box<Expr>),
    /// `{'not', A}`.
    Not(Box<Expr>),
    /// `{expr, VExpr}`: the value expression is `true`.
    Value(Box<VExpr>, std::sync::Arc<Types>),
}

impl Expr {
    /// Parses an `Expr` term. The error says what is wrong, for a `{bad_request, Message}`.
    pub fn parse(term: &Value) -> Result<Expr, String> {
        parse_at(term, 0)
    }

    /// The fields the expression reads, each once (what a scan should have in cache).
    pub fn fields(&self) -> Vec<Atom> {
        fn walk(e: &Expr, out: &mut Vec<Atom>) {
            match e {
                Expr::Const(_) => {}
                Expr::Compare { field, .. }
                | Expr::In { field, .. }
                | Expr::Contains { field, .. }
                | Expr::IsNil(field) => {
                    if !out.contains(field) {
                        out.push(*field);
                    }
                }
                Expr::And(a, b) | Expr::Or(a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
                Expr::Not(a) => walk(a, out),
                // Reads fields through the record itself; nothing to warm up front.
                Expr::Value(..) => {}
            }
        }
        let mut out = Vec::new();
        walk(self, &mut out);
        out
    }

    /// Whether `record` satisfies the filter (an absent field reads as `nil`).
    pub fn matches(&self, record: &Record) -> bool {
        self.matches_upsert(record, None)
    }

    /// Whether `record` satisfies the filter, with `{incoming, Field}` reading `incoming` (an
    /// upsert's condition). A value expression that fails does not hold.
    pub fn matches_upsert(&self, record: &Record, incoming: Option<&Record>) -> bool {
        let read = |field: Atom| record.get(field).unwrap_or(&NIL);
        match self {
            Expr::Const(b) => *b,
            Expr::Compare {
                op,
                field,
                value,
                ty: None,
                ..
            } => compare(*op, read(*field), value),
            Expr::Compare {
                op,
                field,
                value,
                ty: Some(ty),
                key,
            } => op.holds(typed::cmp_with_key(
                *ty,
                read(*field),
                value,
                key.as_deref(),
            )),
            Expr::In {
                field,
                set,
                ty: None,
            } => set.contains(read(*field)),
            Expr::In { field, set, ty } => {
                let v = read(*field);
                set.values().iter().any(|x| typed::cmp(*ty, v, x).is_eq())
            }
            Expr::IsNil(field) => read(*field).is_nil(),
            Expr::Contains { field, needle } => read(*field)
                .as_bytes()
                .is_some_and(|hay| contains(hay, needle)),
            Expr::And(a, b) => {
                a.matches_upsert(record, incoming) && b.matches_upsert(record, incoming)
            }
            Expr::Or(a, b) => {
                a.matches_upsert(record, incoming) || b.matches_upsert(record, incoming)
            }
            Expr::Not(a) => !a.matches_upsert(record, incoming),
            Expr::Value(expr, types) => expr
                .holds(Scope {
                    record,
                    incoming,
                    types,
                })
                .unwrap_or(false),
        }
    }

    /// The filter comparing typed fields by their type (see [`super::typed`]).
    pub fn bind(&self, types: &std::sync::Arc<Types>) -> Expr {
        if types.is_empty() {
            return self.clone();
        }
        match self {
            Expr::Compare {
                op, field, value, ..
            } => {
                let ty = types.get(*field);
                Expr::Compare {
                    op: *op,
                    field: *field,
                    value: value.clone(),
                    ty,
                    key: ty.and_then(|t| t.key(value)).map(Box::new),
                }
            }
            Expr::In { field, set, .. } => Expr::In {
                field: *field,
                set: set.clone(),
                ty: types.get(*field),
            },
            Expr::And(a, b) => Expr::And(Box::new(a.bind(types)), Box::new(b.bind(types))),
            Expr::Or(a, b) => Expr::Or(Box::new(a.bind(types)), Box::new(b.bind(types))),
            Expr::Not(a) => Expr::Not(Box::new(a.bind(types))),
            Expr::Value(expr, _) => Expr::Value(expr.clone(), types.clone()),
            other => other.clone(),
        }
    }
}

fn parse_at(term: &Value, depth: usize) -> Result<Expr, String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "filter is nested more than {MAX_DEPTH} levels deep"
        ));
    }
    let items = match term {
        Value::Atom(a) if a.as_str() == "true" => return Ok(Expr::Const(true)),
        Value::Atom(a) if a.as_str() == "false" => return Ok(Expr::Const(false)),
        Value::Tuple(items) if !items.is_empty() => items,
        _ => {
            return Err(format!(
                "a filter must be true, false or a tuple such as {{eq, Field, Value}}, got {}",
                show(term)
            ));
        }
    };
    let Some(op) = items[0].as_atom() else {
        return Err(format!(
            "a filter tuple must start with an operator atom, got {}",
            show(term)
        ));
    };
    let args = &items[1..];
    let arity = |form: &str, n: usize| -> Result<(), String> {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!(
                "{} expects the form {form}, got {}",
                op,
                show(term)
            ))
        }
    };
    let field = |v: &Value| -> Result<Atom, String> {
        v.as_atom().ok_or_else(|| {
            format!(
                "filter field must be an atom, got {} in {}",
                show(v),
                show(term)
            )
        })
    };
    let sub = |v: &Value| parse_at(v, depth + 1).map(Box::new);
    let name = op.as_str();
    if let Some(cmp) = CmpOp::from_name(name) {
        arity(&format!("{{{name}, Field, Value}}"), 2)?;
        return Ok(Expr::Compare {
            op: cmp,
            field: field(&args[0])?,
            value: args[1].clone(),
            ty: None,
            key: None,
        });
    }
    match name {
        "in" => {
            arity("{in, Field, [Value]}", 2)?;
            let values = args[1].as_list().ok_or_else(|| {
                format!(
                    "in expects a proper list of values, got {} in {}",
                    show(&args[1]),
                    show(term)
                )
            })?;
            Ok(Expr::In {
                field: field(&args[0])?,
                set: ValueSet::new(values.to_vec()),
                ty: None,
            })
        }
        "is_nil" => {
            arity("{is_nil, Field}", 1)?;
            Ok(Expr::IsNil(field(&args[0])?))
        }
        "contains" => {
            arity("{contains, Field, Binary}", 2)?;
            let needle = args[1].as_bytes().ok_or_else(|| {
                format!(
                    "contains expects a binary, got {} in {}",
                    show(&args[1]),
                    show(term)
                )
            })?;
            Ok(Expr::Contains {
                field: field(&args[0])?,
                needle: needle.into(),
            })
        }
        "and" => {
            arity("{'and', Expr, Expr}", 2)?;
            Ok(Expr::And(sub(&args[0])?, sub(&args[1])?))
        }
        "or" => {
            arity("{'or', Expr, Expr}", 2)?;
            Ok(Expr::Or(sub(&args[0])?, sub(&args[1])?))
        }
        "not" => {
            arity("{'not', Expr}", 1)?;
            Ok(Expr::Not(sub(&args[0])?))
        }
        "expr" => {
            arity("{expr, VExpr}", 1)?;
            Ok(Expr::Value(
                Box::new(VExpr::parse(&args[0])?),
                std::sync::Arc::new(Types::default()),
            ))
        }
        _ => Err(format!(
            "unknown filter operator {} in {} (expected eq, neq, lt, lte, gt, gte, in, is_nil, \
             contains, and, or, not, expr)",
            show(&items[0]),
            show(term)
        )),
    }
}

/// Whether `needle` occurs in `hay`.
fn contains(hay: &[u8], needle: &[u8]) -> bool {
    match needle.first() {
        None => true,
        Some(&first) => {
            hay.len() >= needle.len()
                && (0..=hay.len() - needle.len())
                    .any(|i| hay[i] == first && &hay[i..i + needle.len()] == needle)
        }
    }
}

/// The values of an `in`, with membership by `==` (so `1.0` is in `[1]`).
///
/// Long lists are indexed: values holding no float go in a hash set, where exact equality is
/// the same as `==`; values holding a float are compared one by one.
#[derive(Clone, Debug)]
pub struct ValueSet {
    values: Box<[Value]>,
    index: Option<Index>,
}

#[derive(Clone, Debug)]
struct Index {
    /// Values with no float anywhere in them.
    exact: HashSet<Value>,
    /// Values holding a float.
    loose: Box<[Value]>,
}

impl PartialEq for ValueSet {
    fn eq(&self, other: &Self) -> bool {
        self.values == other.values
    }
}

impl ValueSet {
    /// A set of these values.
    pub fn new(values: Vec<Value>) -> ValueSet {
        let index = (values.len() > HASH_THRESHOLD).then(|| {
            let (loose, exact): (Vec<Value>, Vec<Value>) =
                values.iter().cloned().partition(has_float);
            Index {
                exact: exact.into_iter().collect(),
                loose: loose.into_boxed_slice(),
            }
        });
        ValueSet {
            values: values.into_boxed_slice(),
            index,
        }
    }

    /// The values, as given.
    pub fn values(&self) -> &[Value] {
        &self.values
    }

    /// Whether some value `==` `v`.
    pub fn contains(&self, v: &Value) -> bool {
        let Some(index) = &self.index else {
            return self.values.iter().any(|s| eq_term(v, s));
        };
        if index.loose.iter().any(|s| eq_term(v, s)) {
            return true;
        }
        // Only float-free values are left: `v` equals one of them exactly, or (if `v` is a
        // float) by being the same integer.
        match v {
            Value::Float(f) => integral(*f).is_some_and(|i| index.exact.contains(&i)),
            _ if has_float(v) => index.exact.iter().any(|s| eq_term(v, s)),
            _ => index.exact.contains(v),
        }
    }
}

/// The integer a float is equal to, if it is a whole number.
fn integral(f: f64) -> Option<Value> {
    if f.fract() != 0.0 || !f.is_finite() {
        return None;
    }
    if f.abs() < 9.0e18 {
        Some(Value::Int(f as i64))
    } else {
        BigInt::from_f64(f).map(Value::integer)
    }
}

/// Whether a float occurs anywhere in `v`.
fn has_float(v: &Value) -> bool {
    match v {
        Value::Float(_) => true,
        Value::Tuple(items) | Value::List(items) => items.iter().any(has_float),
        Value::ImproperList(pair) => pair.0.iter().any(has_float) || has_float(&pair.1),
        Value::Map(entries) => entries.iter().any(|(k, v)| has_float(k) || has_float(v)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::tests::{rec, term};

    fn expr(text: &str) -> Expr {
        Expr::parse(&term(text)).unwrap()
    }

    fn err(text: &str) -> String {
        Expr::parse(&term(text)).unwrap_err()
    }

    /// Whether the filter holds for the record (both written in Erlang syntax).
    fn holds(filter: &str, record: &str) -> bool {
        expr(filter).matches(&rec(record))
    }

    #[test]
    fn constants() {
        assert!(holds("true", "#{id => 1}"));
        assert!(!holds("false", "#{id => 1}"));
    }

    #[test]
    fn comparison_operators() {
        let r = "#{id => 1, age => 40}";
        for (filter, want) in [
            ("{eq, age, 40}", true),
            ("{eq, age, 41}", false),
            ("{neq, age, 40}", false),
            ("{neq, age, 41}", true),
            ("{lt, age, 41}", true),
            ("{lt, age, 40}", false),
            ("{lte, age, 40}", true),
            ("{lte, age, 39}", false),
            ("{gt, age, 39}", true),
            ("{gt, age, 40}", false),
            ("{gte, age, 40}", true),
            ("{gte, age, 41}", false),
        ] {
            assert_eq!(holds(filter, r), want, "{filter}");
        }
    }

    #[test]
    fn numbers_compare_by_value_across_int_and_float() {
        assert!(holds("{eq, x, 1}", "#{x => 1.0}"));
        assert!(holds("{eq, x, 1.0}", "#{x => 1}"));
        assert!(!holds("{neq, x, 1.0}", "#{x => 1}"));
        assert!(holds("{lt, x, 1.5}", "#{x => 1}"));
        assert!(holds("{gt, x, 1}", "#{x => 1.5}"));
        assert!(holds("{lte, x, 2.0}", "#{x => 2}"));
        assert!(holds(
            "{gt, x, 9223372036854775807}",
            "#{x => 9223372036854775808}"
        ));
        assert!(holds("{lt, x, 1.0e30}", "#{x => 99999999999999999999}"));
        // Inside compound terms too: {1} == {1.0}.
        assert!(holds("{eq, x, {1, [2.0]}}", "#{x => {1.0, [2]}}"));
    }

    #[test]
    fn comparisons_follow_term_order_across_types() {
        // number < atom < tuple < map < [] < list < binary
        assert!(holds("{lt, x, a}", "#{x => 1000000}"));
        assert!(holds("{gt, x, 1000000}", "#{x => nil}"));
        assert!(holds("{lt, x, <<\"a\">>}", "#{x => zzz}"));
        assert!(holds("{gt, x, zzz}", "#{x => <<\"a\">>}"));
        assert!(holds("{lt, x, #{}}", "#{x => {a, b, c}}"));
        assert!(holds("{lt, x, []}", "#{x => #{a => 1}}"));
        assert!(holds("{lt, x, [0]}", "#{x => []}"));
        assert!(holds("{lt, x, <<\"\">>}", "#{x => [1, 2]}"));
        // Atoms by name, binaries byte-wise.
        assert!(holds("{lt, x, b}", "#{x => abc}"));
        assert!(holds("{lt, x, <<\"b\">>}", "#{x => <<\"abc\">>}"));
        assert!(!holds("{eq, x, a}", "#{x => <<\"a\">>}"));
    }

    #[test]
    fn absent_fields_read_as_nil() {
        assert!(holds("{eq, age, nil}", "#{id => 1}"));
        assert!(holds("{is_nil, age}", "#{id => 1}"));
        assert!(holds("{is_nil, age}", "#{id => 1, age => nil}"));
        assert!(!holds("{is_nil, age}", "#{id => 1, age => 3}"));
        assert!(!holds("{is_nil, age}", "#{id => 1, age => false}"));
        // nil is an atom, greater than every number.
        assert!(holds("{gt, age, 40}", "#{id => 1}"));
        assert!(holds("{gt, age, 40}", "#{id => 1, age => nil}"));
        assert!(!holds(
            "{'and', {gt, age, 40}, {'not', {is_nil, age}}}",
            "#{id => 1}"
        ));
        assert!(holds("{in, age, [1, nil]}", "#{id => 1}"));
    }

    #[test]
    fn in_with_a_short_list() {
        assert!(holds("{in, x, [1, 2, 3]}", "#{x => 2}"));
        assert!(!holds("{in, x, [1, 2, 3]}", "#{x => 4}"));
        assert!(holds("{in, x, [1.0]}", "#{x => 1}"));
        assert!(holds("{in, x, [1]}", "#{x => 1.0}"));
        assert!(holds("{in, x, [a, <<\"b\">>]}", "#{x => <<\"b\">>}"));
        assert!(!holds("{in, x, []}", "#{x => nil}"));
    }

    #[test]
    fn in_with_a_long_list_uses_equality_not_exact_match() {
        let list = "[0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10.5, 1180591620717411303424, {1}, <<\"s\">>, \
                    atom, {2.5}, [3, 4]]";
        let f = format!("{{in, x, {list}}}");
        let e = expr(&f);
        assert!(matches!(&e, Expr::In { set, .. } if set.index.is_some()));
        let yes = [
            "3",
            "3.0",
            "10.5",
            "1180591620717411303424",
            "1180591620717411303424.0",
            "{1}",
            "{1.0}",
            "<<\"s\">>",
            "atom",
            "{2.5}",
            "[3, 4.0]",
            "-0.0",
        ];
        for v in yes {
            assert!(e.matches(&rec(&format!("#{{x => {v}}}"))), "{v} in {list}");
        }
        for v in [
            "11",
            "10",
            "3.5",
            "{2}",
            "<<\"t\">>",
            "nil",
            "[3]",
            "{1, 1}",
        ] {
            let v = if v == "10" { "10.0" } else { v };
            assert!(
                !e.matches(&rec(&format!("#{{x => {v}}}"))),
                "{v} not in {list}"
            );
        }
        assert!(!e.matches(&rec("#{y => 1}")));
    }

    #[test]
    fn in_agrees_with_a_linear_scan() {
        let values: Vec<Value> = (0..40)
            .map(|i| match i % 4 {
                0 => Value::Int(i),
                1 => Value::Float(i as f64),
                2 => Value::Float(i as f64 + 0.5),
                _ => Value::tuple(vec![Value::Int(i), Value::Float(0.0)]),
            })
            .collect();
        let set = ValueSet::new(values.clone());
        assert!(set.index.is_some());
        for i in -2..45 {
            for probe in [
                Value::Int(i),
                Value::Float(i as f64),
                Value::Float(i as f64 + 0.5),
                Value::tuple(vec![Value::Float(i as f64), Value::Int(0)]),
            ] {
                let want = values.iter().any(|v| eq_term(v, &probe));
                assert_eq!(set.contains(&probe), want, "{probe:?}");
            }
        }
    }

    #[test]
    fn contains_is_a_case_sensitive_substring_of_binaries() {
        assert!(holds("{contains, s, <<\"ell\">>}", "#{s => <<\"hello\">>}"));
        assert!(holds(
            "{contains, s, <<\"hello\">>}",
            "#{s => <<\"hello\">>}"
        ));
        assert!(holds("{contains, s, <<\"\">>}", "#{s => <<\"\">>}"));
        assert!(!holds(
            "{contains, s, <<\"ELL\">>}",
            "#{s => <<\"hello\">>}"
        ));
        assert!(!holds(
            "{contains, s, <<\"hello!\">>}",
            "#{s => <<\"hello\">>}"
        ));
        let long = "#{s => <<\"a binary long enough to be stored on the heap\">>}";
        assert!(holds("{contains, s, <<\"on the heap\">>}", long));
        assert!(holds("{contains, s, <<\"a b\">>}", long));
        assert!(!holds("{contains, s, <<\"heapx\">>}", long));
        // Not a binary: false, even when the text would match.
        assert!(!holds("{contains, s, <<\"ell\">>}", "#{s => hello}"));
        assert!(!holds("{contains, s, <<\"\">>}", "#{s => [104, 101]}"));
        assert!(!holds("{contains, s, <<\"\">>}", "#{id => 1}"));
    }

    #[test]
    fn boolean_connectives() {
        let r = "#{a => 1, b => 2}";
        assert!(holds("{'and', {eq, a, 1}, {eq, b, 2}}", r));
        assert!(!holds("{'and', {eq, a, 1}, {eq, b, 3}}", r));
        assert!(holds("{'or', {eq, a, 9}, {eq, b, 2}}", r));
        assert!(!holds("{'or', {eq, a, 9}, {eq, b, 9}}", r));
        assert!(holds("{'not', {eq, a, 9}}", r));
        assert!(!holds("{'not', true}", r));
        assert!(holds(
            "{'or', false, {'and', {'not', {is_nil, a}}, {in, b, [2, 3]}}}",
            r
        ));
    }

    #[test]
    fn parse_builds_the_expected_tree() {
        assert_eq!(
            expr("{'not', {gte, age, 18}}"),
            Expr::Not(Box::new(Expr::Compare {
                op: CmpOp::Gte,
                field: crate::query::tests::a("age"),
                value: Value::Int(18),
                ty: None,
                key: None,
            }))
        );
    }

    #[test]
    fn expr_filters_and_typed_comparisons() {
        let r = "#{n => 3, s => <<\"Ann\">>}";
        assert!(holds("{expr, {gt, {ref, n}, {value, 2}}}", r));
        assert!(!holds("{expr, {gt, {ref, missing}, {value, 2}}}", r));
        assert!(!holds("{expr, {error, boom}}", r));
        let types = std::sync::Arc::new(Types::parse(&term("#{s => ci_string}")).unwrap());
        let bound = expr("{eq, s, <<\"aNN\">>}").bind(&types);
        assert!(bound.matches(&rec(r)));
        assert!(!expr("{eq, s, <<\"aNN\">>}").matches(&rec(r)));
        let bound = expr("{in, s, [<<\"x\">>, <<\"ANN\">>]}").bind(&types);
        assert!(bound.matches(&rec(r)));
        // An upsert condition reads the incoming record.
        let incoming = rec("#{n => 5}");
        let cond = expr("{expr, {gt, {incoming, n}, {ref, n}}}");
        assert!(cond.matches_upsert(&rec(r), Some(&incoming)));
        assert!(!cond.matches_upsert(&rec("#{n => 9}"), Some(&incoming)));
    }

    #[test]
    fn parse_errors_say_what_is_wrong() {
        assert_eq!(
            err("{foo, a, 1}"),
            "unknown filter operator foo in {foo,a,1} (expected eq, neq, lt, lte, gt, gte, in, \
             is_nil, contains, and, or, not, expr)"
        );
        assert_eq!(
            err("nil"),
            "a filter must be true, false or a tuple such as {eq, Field, Value}, got nil"
        );
        assert_eq!(
            err("{}"),
            "a filter must be true, false or a tuple such as {eq, Field, Value}, got {}"
        );
        assert_eq!(
            err("{<<\"eq\">>, a, 1}"),
            "a filter tuple must start with an operator atom, got {<<\"eq\">>,a,1}"
        );
        assert_eq!(
            err("{eq, <<\"a\">>, 1}"),
            "filter field must be an atom, got <<\"a\">> in {eq,<<\"a\">>,1}"
        );
        assert_eq!(
            err("{eq, a}"),
            "eq expects the form {eq, Field, Value}, got {eq,a}"
        );
        assert_eq!(
            err("{is_nil, a, b}"),
            "is_nil expects the form {is_nil, Field}, got {is_nil,a,b}"
        );
        assert_eq!(
            err("{in, a, 1}"),
            "in expects a proper list of values, got 1 in {in,a,1}"
        );
        assert_eq!(
            err("{contains, a, foo}"),
            "contains expects a binary, got foo in {contains,a,foo}"
        );
        assert_eq!(
            err("{'and', true}"),
            "and expects the form {'and', Expr, Expr}, got {'and',true}"
        );
        // Errors inside a connective are reported as they are.
        assert_eq!(
            err("{'or', true, {'not', {lt, 1, 2}}}"),
            "filter field must be an atom, got 1 in {lt,1,2}"
        );
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut deep = Value::boolean(true);
        for _ in 0..MAX_DEPTH {
            deep = Value::pair(Value::Atom(crate::query::tests::a("not")), deep);
        }
        assert!(Expr::parse(&deep).is_ok());
        let deeper = Value::pair(Value::Atom(crate::query::tests::a("not")), deep);
        assert_eq!(
            Expr::parse(&deeper).unwrap_err(),
            format!("filter is nested more than {MAX_DEPTH} levels deep")
        );
    }
}
