//! Value expressions (PROTOCOL.md, "Value expressions"): what `atomics` compute and what a
//! filter's `{expr, VExpr}` tests, evaluated against a record in its actor's turn.
//!
//! `nil` propagates as in SQL and Ash: arithmetic, comparisons and `concat` with a `nil`
//! operand give `nil`, `and`/`or`/`not` use three-valued logic, and a condition that is not
//! `true` takes the other branch.

use super::show;
use super::typed::Types;
use crate::term::{Atom, Record, Value, atoms};
use num_bigint::BigInt;
use num_traits::{ToPrimitive, Zero};
use std::cmp::Ordering;

/// Expressions nested deeper than this are refused (evaluation is recursive).
pub const MAX_DEPTH: usize = 256;

/// An arithmetic operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arith {
    /// `'+'`.
    Add,
    /// `'-'`.
    Sub,
    /// `'*'`.
    Mul,
    /// `'/'` (a float).
    Div,
}

impl Arith {
    fn name(self) -> &'static str {
        match self {
            Arith::Add => "+",
            Arith::Sub => "-",
            Arith::Mul => "*",
            Arith::Div => "/",
        }
    }
}

/// A comparison operator: of filters' `{Op, Field, Value}` and of value expressions' `{Op, A, B}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `eq`: `==` (so `1 == 1.0`).
    Eq,
    /// `neq`: `/=`.
    Neq,
    /// `lt`: `<`.
    Lt,
    /// `lte`: `=<`.
    Lte,
    /// `gt`: `>`.
    Gt,
    /// `gte`: `>=`.
    Gte,
}

impl CmpOp {
    /// The operator named `eq`, `neq`, `lt`, `lte`, `gt` or `gte`.
    pub fn from_name(name: &str) -> Option<CmpOp> {
        Some(match name {
            "eq" => CmpOp::Eq,
            "neq" => CmpOp::Neq,
            "lt" => CmpOp::Lt,
            "lte" => CmpOp::Lte,
            "gt" => CmpOp::Gt,
            "gte" => CmpOp::Gte,
            _ => return None,
        })
    }

    /// Whether `field_value Op value` holds, given `cmp_term(field_value, value)`.
    pub fn holds(self, order: Ordering) -> bool {
        match self {
            CmpOp::Eq => order.is_eq(),
            CmpOp::Neq => order.is_ne(),
            CmpOp::Lt => order.is_lt(),
            CmpOp::Lte => order.is_le(),
            CmpOp::Gt => order.is_gt(),
            CmpOp::Gte => order.is_ge(),
        }
    }
}

/// A parsed value expression.
#[derive(Clone, Debug, PartialEq)]
pub enum VExpr {
    /// `{value, Term}`.
    Value(Value),
    /// `{ref, Field}`: the record's value.
    Ref(Atom),
    /// `{incoming, Field}`: the upserted record's value.
    Incoming(Atom),
    /// `{'+' | '-' | '*' | '/', A, B}`.
    Arith(Arith, Box<VExpr>, Box<VExpr>),
    /// `{eq | neq | lt | lte | gt | gte, A, B}`.
    Compare(CmpOp, Box<VExpr>, Box<VExpr>),
    /// `{'and', A, B}`.
    And(Box<VExpr>, Box<VExpr>),
    /// `{'or', A, B}`.
    Or(Box<VExpr>, Box<VExpr>),
    /// `{'not', A}`.
    Not(Box<VExpr>),
    /// `{is_nil, A}`.
    IsNil(Box<VExpr>),
    /// `{'if', Cond, Then, Else}`.
    If(Box<VExpr>, Box<VExpr>, Box<VExpr>),
    /// `{'cond', [{Cond, Value}], Default}`.
    Cond(Vec<(VExpr, VExpr)>, Box<VExpr>),
    /// `{concat, [A]}`.
    Concat(Vec<VExpr>),
    /// `{error, Term}`.
    Error(Value),
}

/// Why an expression could not be evaluated: the `Term` of `{expr_error, Term}`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("expression failed: {0:?}")]
pub struct ExprError(pub Value);

/// What an expression reads: the record, and for upserts the incoming record.
#[derive(Clone, Copy)]
pub struct Scope<'a> {
    /// The record as it is.
    pub record: &'a Record,
    /// The record being upserted, if any.
    pub incoming: Option<&'a Record>,
    /// How typed fields compare.
    pub types: &'a Types,
}

fn atom(name: &'static str) -> Value {
    Value::Atom(Atom::from_static(name))
}

fn nil() -> Value {
    Value::Atom(*atoms::NIL)
}

impl VExpr {
    /// Parses a `VExpr` term; the error says what is wrong.
    pub fn parse(term: &Value) -> Result<VExpr, String> {
        parse_at(term, 0)
    }

    /// Evaluates the expression in `scope`.
    pub fn eval(&self, scope: Scope) -> Result<Value, ExprError> {
        let read = |record: Option<&Record>, field: Atom| {
            record
                .and_then(|r| r.get(field))
                .cloned()
                .unwrap_or_else(nil)
        };
        Ok(match self {
            VExpr::Value(v) => v.clone(),
            VExpr::Ref(field) => read(Some(scope.record), *field),
            VExpr::Incoming(field) => read(scope.incoming, *field),
            VExpr::Arith(op, a, b) => arith(*op, a.eval(scope)?, b.eval(scope)?)?,
            VExpr::Compare(op, a, b) => {
                let (x, y) = (a.eval(scope)?, b.eval(scope)?);
                if x.is_nil() || y.is_nil() {
                    nil()
                } else {
                    let ty = a.field().or(b.field()).and_then(|f| scope.types.get(f));
                    Value::boolean(op.holds(super::typed::cmp(ty, &x, &y)))
                }
            }
            VExpr::And(a, b) => match truth(&a.eval(scope)?) {
                Some(false) => Value::boolean(false),
                left => match (left, truth(&b.eval(scope)?)) {
                    (_, Some(false)) => Value::boolean(false),
                    (Some(true), Some(true)) => Value::boolean(true),
                    _ => nil(),
                },
            },
            VExpr::Or(a, b) => match truth(&a.eval(scope)?) {
                Some(true) => Value::boolean(true),
                left => match (left, truth(&b.eval(scope)?)) {
                    (_, Some(true)) => Value::boolean(true),
                    (Some(false), Some(false)) => Value::boolean(false),
                    _ => nil(),
                },
            },
            VExpr::Not(a) => match truth(&a.eval(scope)?) {
                Some(b) => Value::boolean(!b),
                None => nil(),
            },
            VExpr::IsNil(a) => Value::boolean(a.eval(scope)?.is_nil()),
            VExpr::If(c, then, otherwise) => {
                if c.eval(scope)?.is_true() {
                    then.eval(scope)?
                } else {
                    otherwise.eval(scope)?
                }
            }
            VExpr::Cond(clauses, default) => {
                for (c, v) in clauses {
                    if c.eval(scope)?.is_true() {
                        return v.eval(scope);
                    }
                }
                default.eval(scope)?
            }
            VExpr::Concat(parts) => {
                let mut out = Vec::new();
                for part in parts {
                    let v = part.eval(scope)?;
                    if v.is_nil() {
                        return Ok(nil());
                    }
                    match v.as_bytes() {
                        Some(bytes) => out.extend_from_slice(bytes),
                        None => {
                            return Err(ExprError(Value::pair(atom("not_a_binary"), v)));
                        }
                    }
                }
                Value::binary_owned(out)
            }
            VExpr::Error(term) => return Err(ExprError(term.clone())),
        })
    }

    /// Whether the expression holds (evaluates to `true`).
    pub fn holds(&self, scope: Scope) -> Result<bool, ExprError> {
        Ok(self.eval(scope)?.is_true())
    }

    /// The field a `ref` or `incoming` reads, for typed comparisons.
    fn field(&self) -> Option<Atom> {
        match self {
            VExpr::Ref(f) | VExpr::Incoming(f) => Some(*f),
            _ => None,
        }
    }

    /// Whether the expression reads the incoming record.
    pub fn reads_incoming(&self) -> bool {
        match self {
            VExpr::Incoming(_) => true,
            VExpr::Value(_) | VExpr::Ref(_) | VExpr::Error(_) => false,
            VExpr::Arith(_, a, b)
            | VExpr::Compare(_, a, b)
            | VExpr::And(a, b)
            | VExpr::Or(a, b) => a.reads_incoming() || b.reads_incoming(),
            VExpr::Not(a) | VExpr::IsNil(a) => a.reads_incoming(),
            VExpr::If(a, b, c) => a.reads_incoming() || b.reads_incoming() || c.reads_incoming(),
            VExpr::Cond(clauses, d) => {
                d.reads_incoming()
                    || clauses
                        .iter()
                        .any(|(c, v)| c.reads_incoming() || v.reads_incoming())
            }
            VExpr::Concat(parts) => parts.iter().any(VExpr::reads_incoming),
        }
    }
}

/// `[{Field, VExpr}]`: the `atomics` of update, upsert and update_where.
pub type Atomics = Vec<(Atom, VExpr)>;

/// Parses `[{Field, VExpr}]`, the `atomics` of update, upsert and update_where.
pub fn parse_atomics(term: &Value) -> Result<Atomics, String> {
    let items = term.as_list().ok_or_else(|| {
        format!(
            "atomics must be a list of {{Field, VExpr}}, got {}",
            show(term)
        )
    })?;
    items
        .iter()
        .map(|item| match item.as_tuple() {
            Some([Value::Atom(field), expr]) => Ok((*field, VExpr::parse(expr)?)),
            _ => Err(format!(
                "an atomic must be {{Field, VExpr}}, got {}",
                show(item)
            )),
        })
        .collect()
}

/// Evaluates `atomics` in `scope` into the changes they make.
pub fn eval_atomics(atomics: &[(Atom, VExpr)], scope: Scope) -> Result<Record, ExprError> {
    let mut entries = Vec::with_capacity(atomics.len());
    for (field, expr) in atomics {
        entries.push((Value::Atom(*field), expr.eval(scope)?));
    }
    Ok(Record::from_map_owned(Value::map(entries)).expect("atom keys make a record"))
}

/// `true`, `false`, or neither (`nil` and anything else).
fn truth(v: &Value) -> Option<bool> {
    match v {
        Value::Atom(a) if *a == *atoms::TRUE => Some(true),
        Value::Atom(a) if *a == *atoms::FALSE => Some(false),
        _ => None,
    }
}

fn big(v: &Value) -> Option<BigInt> {
    match v {
        Value::Int(i) => Some(BigInt::from(*i)),
        Value::BigInt(b) => Some((**b).clone()),
        _ => None,
    }
}

fn float(v: &Value) -> Option<f64> {
    match v {
        Value::Int(i) => Some(*i as f64),
        Value::BigInt(b) => b.to_f64(),
        Value::Float(f) => Some(*f),
        _ => None,
    }
}

fn arith(op: Arith, a: Value, b: Value) -> Result<Value, ExprError> {
    if a.is_nil() || b.is_nil() {
        return Ok(nil());
    }
    let fail = |a: Value, b: Value| {
        Err(ExprError(Value::tuple(vec![
            atom("arithmetic"),
            Value::Atom(Atom::from_static(op.name())),
            a,
            b,
        ])))
    };
    if op != Arith::Div
        && let (Some(x), Some(y)) = (big(&a), big(&b))
    {
        return Ok(Value::integer(match op {
            Arith::Add => x + y,
            Arith::Sub => x - y,
            _ => x * y,
        }));
    }
    let (Some(x), Some(y)) = (float(&a), float(&b)) else {
        return fail(a, b);
    };
    let result = match op {
        Arith::Add => x + y,
        Arith::Sub => x - y,
        Arith::Mul => x * y,
        Arith::Div => {
            if y == 0.0 || big(&b).is_some_and(|n| n.is_zero()) {
                return fail(a, b);
            }
            x / y
        }
    };
    if result.is_finite() {
        Ok(Value::Float(result))
    } else {
        fail(a, b)
    }
}

fn parse_at(term: &Value, depth: usize) -> Result<VExpr, String> {
    if depth > MAX_DEPTH {
        return Err(format!(
            "value expression is nested more than {MAX_DEPTH} levels deep"
        ));
    }
    let Some([Value::Atom(op), args @ ..]) = term.as_tuple() else {
        return Err(format!(
            "a value expression must be a tuple such as {{value, Term}} or {{ref, Field}}, got {}",
            show(term)
        ));
    };
    let name = op.as_str();
    let arity = |n: usize, form: &str| -> Result<(), String> {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!(
                "{name} expects the form {form}, got {}",
                show(term)
            ))
        }
    };
    let sub = |v: &Value| parse_at(v, depth + 1).map(Box::new);
    let field = |v: &Value| {
        v.as_atom()
            .ok_or_else(|| format!("{name} expects a field atom, got {}", show(term)))
    };
    let cmp = CmpOp::from_name(name);
    if let Some(cmp) = cmp {
        arity(2, &format!("{{{name}, VExpr, VExpr}}"))?;
        return Ok(VExpr::Compare(cmp, sub(&args[0])?, sub(&args[1])?));
    }
    let arith = match name {
        "+" => Some(Arith::Add),
        "-" => Some(Arith::Sub),
        "*" => Some(Arith::Mul),
        "/" => Some(Arith::Div),
        _ => None,
    };
    if let Some(op) = arith {
        arity(2, &format!("{{'{name}', VExpr, VExpr}}"))?;
        return Ok(VExpr::Arith(op, sub(&args[0])?, sub(&args[1])?));
    }
    Ok(match name {
        "value" => {
            arity(1, "{value, Term}")?;
            VExpr::Value(args[0].clone())
        }
        "ref" => {
            arity(1, "{ref, Field}")?;
            VExpr::Ref(field(&args[0])?)
        }
        "incoming" => {
            arity(1, "{incoming, Field}")?;
            VExpr::Incoming(field(&args[0])?)
        }
        "and" => {
            arity(2, "{'and', VExpr, VExpr}")?;
            VExpr::And(sub(&args[0])?, sub(&args[1])?)
        }
        "or" => {
            arity(2, "{'or', VExpr, VExpr}")?;
            VExpr::Or(sub(&args[0])?, sub(&args[1])?)
        }
        "not" => {
            arity(1, "{'not', VExpr}")?;
            VExpr::Not(sub(&args[0])?)
        }
        "is_nil" => {
            arity(1, "{is_nil, VExpr}")?;
            VExpr::IsNil(sub(&args[0])?)
        }
        "if" => {
            arity(3, "{'if', VExpr, VExpr, VExpr}")?;
            VExpr::If(sub(&args[0])?, sub(&args[1])?, sub(&args[2])?)
        }
        "cond" => {
            arity(2, "{'cond', [{VExpr, VExpr}], VExpr}")?;
            let clauses = args[0]
                .as_list()
                .ok_or_else(|| format!("cond expects a list of clauses, got {}", show(term)))?
                .iter()
                .map(|clause| match clause.as_tuple() {
                    Some([c, v]) => Ok((parse_at(c, depth + 1)?, parse_at(v, depth + 1)?)),
                    _ => Err(format!(
                        "a cond clause must be {{VExpr, VExpr}}, got {}",
                        show(clause)
                    )),
                })
                .collect::<Result<Vec<_>, String>>()?;
            VExpr::Cond(clauses, sub(&args[1])?)
        }
        "concat" => {
            arity(1, "{concat, [VExpr]}")?;
            let parts = args[0]
                .as_list()
                .ok_or_else(|| format!("concat expects a list, got {}", show(term)))?
                .iter()
                .map(|p| parse_at(p, depth + 1))
                .collect::<Result<Vec<_>, String>>()?;
            VExpr::Concat(parts)
        }
        "error" => {
            arity(1, "{error, Term}")?;
            VExpr::Error(args[0].clone())
        }
        _ => {
            return Err(format!(
                "unknown value expression {} (expected value, ref, incoming, '+', '-', '*', '/', \
                 eq, neq, lt, lte, gt, gte, 'and', 'or', 'not', is_nil, 'if', 'cond', concat, \
                 error)",
                show(term)
            ));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::parse_term;

    fn t(s: &str) -> Value {
        parse_term(s).unwrap()
    }

    fn eval(expr: &str, record: &str) -> Result<Value, ExprError> {
        let record = Record::from_map(&t(record)).unwrap();
        let incoming = Record::from_map(&t("#{n => 100, s => <<\"in\">>}")).unwrap();
        let types = Types::default();
        VExpr::parse(&t(expr)).unwrap().eval(Scope {
            record: &record,
            incoming: Some(&incoming),
            types: &types,
        })
    }

    #[test]
    fn arithmetic_is_exact_and_nil_propagates() {
        assert_eq!(
            eval("{'+', {ref, n}, {value, 1}}", "#{n => 41}"),
            Ok(t("42"))
        );
        assert_eq!(
            eval(
                "{'*', {ref, n}, {value, 10}}",
                "#{n => 9223372036854775807}"
            ),
            Ok(t("92233720368547758070"))
        );
        assert_eq!(
            eval("{'-', {ref, n}, {value, 0.5}}", "#{n => 2}"),
            Ok(t("1.5"))
        );
        assert_eq!(
            eval("{'/', {ref, n}, {value, 4}}", "#{n => 2}"),
            Ok(t("0.5"))
        );
        assert_eq!(
            eval("{'+', {ref, missing}, {value, 1}}", "#{n => 2}"),
            Ok(t("nil"))
        );
        assert_eq!(
            eval("{'/', {ref, n}, {value, 0}}", "#{n => 2}"),
            Err(ExprError(t("{arithmetic, '/', 2, 0}")))
        );
        assert_eq!(
            eval("{'+', {ref, n}, {value, <<\"x\">>}}", "#{n => 2}"),
            Err(ExprError(t("{arithmetic, '+', 2, <<\"x\">>}")))
        );
        assert_eq!(
            eval("{'+', {incoming, n}, {ref, n}}", "#{n => 2}"),
            Ok(t("102"))
        );
    }

    #[test]
    fn logic_is_three_valued_and_branches_pick_true_only() {
        assert_eq!(
            eval("{'and', {ref, x}, {value, false}}", "#{}"),
            Ok(t("false"))
        );
        assert_eq!(
            eval("{'and', {ref, x}, {value, true}}", "#{}"),
            Ok(t("nil"))
        );
        assert_eq!(
            eval("{'or', {ref, x}, {value, true}}", "#{}"),
            Ok(t("true"))
        );
        assert_eq!(eval("{'not', {ref, x}}", "#{}"), Ok(t("nil")));
        assert_eq!(
            eval("{gt, {ref, n}, {value, 1}}", "#{n => 2}"),
            Ok(t("true"))
        );
        assert_eq!(
            eval("{gt, {ref, x}, {value, 1}}", "#{n => 2}"),
            Ok(t("nil"))
        );
        assert_eq!(eval("{is_nil, {ref, x}}", "#{}"), Ok(t("true")));
        assert_eq!(
            eval(
                "{'if', {gt, {ref, n}, {value, 5}}, {value, big}, {value, small}}",
                "#{n => 9}"
            ),
            Ok(t("big"))
        );
        assert_eq!(
            eval("{'if', {ref, x}, {value, yes}, {value, no}}", "#{}"),
            Ok(t("no"))
        );
        assert_eq!(
            eval(
                "{'cond', [{{lt, {ref, n}, {value, 0}}, {value, neg}}, {{eq, {ref, n}, {value, 0}}, {value, zero}}], {value, pos}}",
                "#{n => 0}"
            ),
            Ok(t("zero"))
        );
    }

    #[test]
    fn concat_and_error() {
        assert_eq!(
            eval(
                "{concat, [{ref, s}, {value, <<\"-\">>}, {incoming, s}]}",
                "#{s => <<\"a\">>}"
            ),
            Ok(t("<<\"a-in\">>"))
        );
        assert_eq!(
            eval("{concat, [{ref, s}, {ref, x}]}", "#{s => <<\"a\">>}"),
            Ok(t("nil"))
        );
        assert_eq!(
            eval(
                "{'if', {gt, {ref, n}, {value, 3}}, {error, too_big}, {ref, n}}",
                "#{n => 4}"
            ),
            Err(ExprError(t("too_big")))
        );
    }

    #[test]
    fn malformed_expressions_say_what_is_wrong() {
        let err = |s: &str| VExpr::parse(&t(s)).unwrap_err();
        assert!(err("{ref, 1}").contains("field"));
        assert!(err("{frob, 1}").contains("unknown value expression"));
        assert!(err("{'+', {value, 1}}").contains("expects the form"));
        assert!(err("42").contains("must be a tuple"));
        assert!(parse_atomics(&t("[{n, {value, 1}}]")).is_ok());
        assert!(parse_atomics(&t("[{<<\"n\">>, {value, 1}}]")).is_err());
    }
}
