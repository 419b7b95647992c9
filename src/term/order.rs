//! Erlang term order.
//!
//! `number < atom < reference < fun < port < pid < tuple < map < [] < list < bit string`.
//! [`cmp_term`] is the order of `<` and `==` (so `1 == 1.0`); [`cmp_exact`] refines it into the
//! total order of map keys, where an integer sorts before the float with the same value, so it
//! agrees with exact equality (`=:=`, the `Eq` of [`Value`]).

use super::value::Value;
use num_bigint::BigInt;
use num_traits::ToPrimitive;
use std::cmp::Ordering;

fn class(v: &Value) -> u8 {
    match v {
        Value::Int(_) | Value::BigInt(_) | Value::Float(_) => 0,
        Value::Atom(_) => 1,
        Value::Ref(_) => 2,
        Value::Pid(_) => 5,
        Value::Opaque(term) => match **term {
            eetf::Term::ExternalFun(_) | eetf::Term::InternalFun(_) => 3,
            eetf::Term::Port(_) => 4,
            _ => 10,
        },
        Value::Tuple(_) => 6,
        Value::Map(_) => 7,
        Value::List(items) if items.is_empty() => 8,
        Value::List(_) | Value::ImproperList(_) => 9,
        Value::SmallBin { .. } | Value::Bin(_) => 10,
    }
}

/// Compares in term order, numbers by value (`1` and `1.0` are equal).
pub fn cmp_term(a: &Value, b: &Value) -> Ordering {
    cmp(a, b, false)
}

/// Compares in map-key order: term order, with an integer before an equal float.
pub fn cmp_exact(a: &Value, b: &Value) -> Ordering {
    cmp(a, b, true)
}

/// `a == b` in Erlang's arithmetic equality.
pub fn eq_term(a: &Value, b: &Value) -> bool {
    cmp_term(a, b) == Ordering::Equal
}

fn cmp(a: &Value, b: &Value, exact: bool) -> Ordering {
    let (ca, cb) = (class(a), class(b));
    if ca != cb {
        return ca.cmp(&cb);
    }
    match (a, b) {
        (Value::Atom(x), Value::Atom(y)) => x.cmp(y),
        (Value::Tuple(x), Value::Tuple(y)) => {
            x.len().cmp(&y.len()).then_with(|| cmp_seq(x, y, exact))
        }
        (Value::Map(x), Value::Map(y)) => x.len().cmp(&y.len()).then_with(|| {
            // Keys in key order first, then values in that order.
            x.iter()
                .zip(y.iter())
                .map(|((kx, _), (ky, _))| cmp_exact(kx, ky))
                .find(|o| o.is_ne())
                .unwrap_or(Ordering::Equal)
                .then_with(|| {
                    x.iter()
                        .zip(y.iter())
                        .map(|((_, vx), (_, vy))| cmp(vx, vy, exact))
                        .find(|o| o.is_ne())
                        .unwrap_or(Ordering::Equal)
                })
        }),
        _ if ca == 0 => cmp_numbers(a, b, exact),
        _ if ca == 8 || ca == 9 => cmp_lists(a, b, exact),
        _ if ca == 10 => cmp_bits(a, b),
        (Value::Pid(x), Value::Pid(y)) => {
            (x.node, x.serial, x.id, x.creation).cmp(&(y.node, y.serial, y.id, y.creation))
        }
        (Value::Ref(x), Value::Ref(y)) => x
            .node
            .cmp(&y.node)
            .then_with(|| x.words().iter().rev().cmp(y.words().iter().rev()))
            .then(x.creation.cmp(&y.creation)),
        (Value::Opaque(x), Value::Opaque(y)) => cmp_opaque(x, y),
        _ => Ordering::Equal,
    }
}

fn cmp_seq(x: &[Value], y: &[Value], exact: bool) -> Ordering {
    for (a, b) in x.iter().zip(y.iter()) {
        let o = cmp(a, b, exact);
        if o.is_ne() {
            return o;
        }
    }
    x.len().cmp(&y.len())
}

fn list_parts(v: &Value) -> (&[Value], Option<&Value>) {
    match v {
        Value::List(items) => (items, None),
        Value::ImproperList(pair) => (&pair.0, Some(&pair.1)),
        _ => (&[], None),
    }
}

/// Lists compare head by head; a list that ends first compares by its tail (`[]` or the
/// improper tail) against the other's remaining list.
fn cmp_lists(a: &Value, b: &Value, exact: bool) -> Ordering {
    let (xa, ta) = list_parts(a);
    let (xb, tb) = list_parts(b);
    for (p, q) in xa.iter().zip(xb.iter()) {
        let o = cmp(p, q, exact);
        if o.is_ne() {
            return o;
        }
    }
    let n = xa.len().min(xb.len());
    let rest = |items: &[Value], tail: Option<&Value>| -> Value {
        if items.len() > n {
            match tail {
                None => Value::List(items[n..].into()),
                Some(t) => Value::ImproperList(Box::new((items[n..].into(), t.clone()))),
            }
        } else {
            tail.cloned().unwrap_or_else(Value::empty_list)
        }
    };
    if xa.len() == n && xb.len() == n && ta.is_none() && tb.is_none() {
        return Ordering::Equal;
    }
    cmp(&rest(xa, ta), &rest(xb, tb), exact)
}

fn cmp_bits(a: &Value, b: &Value) -> Ordering {
    fn parts(v: &Value) -> (&[u8], u8) {
        match v {
            Value::Opaque(t) => match &**t {
                eetf::Term::BitBinary(bb) => (&bb.bytes, bb.tail_bits_size),
                eetf::Term::Binary(b) => (&b.bytes, 8),
                _ => (&[], 8),
            },
            other => (other.as_bytes().unwrap_or_default(), 8),
        }
    }
    let (ba, bits_a) = parts(a);
    let (bb, bits_b) = parts(b);
    ba.cmp(bb).then(bits_a.cmp(&bits_b))
}

fn number_kind(v: &Value) -> u8 {
    match v {
        Value::Float(_) => 1,
        _ => 0,
    }
}

fn cmp_numbers(a: &Value, b: &Value, exact: bool) -> Ordering {
    let o = match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y).unwrap_or(Ordering::Equal),
        (Value::Int(x), Value::Float(y)) => cmp_int_float(*x, *y),
        (Value::Float(x), Value::Int(y)) => cmp_int_float(*y, *x).reverse(),
        (Value::BigInt(x), Value::BigInt(y)) => x.cmp(y),
        (Value::BigInt(x), Value::Int(y)) => (**x).cmp(&BigInt::from(*y)),
        (Value::Int(x), Value::BigInt(y)) => BigInt::from(*x).cmp(y),
        (Value::BigInt(x), Value::Float(y)) => cmp_big_float(x, *y),
        (Value::Float(x), Value::BigInt(y)) => cmp_big_float(y, *x).reverse(),
        _ => Ordering::Equal,
    };
    if o.is_eq() && exact {
        number_kind(a).cmp(&number_kind(b))
    } else {
        o
    }
}

/// Exact comparison of an integer with a float (no rounding of the integer).
fn cmp_int_float(i: i64, f: f64) -> Ordering {
    const TWO_63: f64 = 9_223_372_036_854_775_808.0;
    if f >= TWO_63 {
        return Ordering::Less;
    }
    if f < -TWO_63 {
        return Ordering::Greater;
    }
    let whole = f.trunc();
    let wi = whole as i64;
    match i.cmp(&wi) {
        Ordering::Equal => 0.0f64.partial_cmp(&(f - whole)).unwrap_or(Ordering::Equal),
        o => o,
    }
}

fn cmp_big_float(b: &BigInt, f: f64) -> Ordering {
    match b.to_f64() {
        Some(x) if x != f => x.partial_cmp(&f).unwrap_or(Ordering::Equal),
        // Same magnitude as a float: compare the float's integer part exactly.
        _ => match num_bigint::BigInt::from_f64_lossless(f) {
            Some(fb) => b.cmp(&fb),
            None => Ordering::Equal,
        },
    }
}

trait FromF64Lossless: Sized {
    fn from_f64_lossless(f: f64) -> Option<Self>;
}

impl FromF64Lossless for BigInt {
    fn from_f64_lossless(f: f64) -> Option<Self> {
        num_traits::FromPrimitive::from_f64(f.trunc())
    }
}

fn cmp_opaque(x: &eetf::Term, y: &eetf::Term) -> Ordering {
    use eetf::Term;
    match (x, y) {
        (Term::Port(a), Term::Port(b)) => {
            (a.node.name.as_str(), a.id, a.creation).cmp(&(b.node.name.as_str(), b.id, b.creation))
        }
        _ => x.to_string().cmp(&y.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::Atom;

    fn atom(s: &str) -> Value {
        Value::Atom(Atom::new(s).unwrap())
    }

    #[test]
    fn classes_follow_erlang_term_order() {
        let ordered = [
            Value::Int(1_000_000),
            atom("a"),
            Value::tuple(vec![]),
            Value::map(vec![]),
            Value::empty_list(),
            Value::list(vec![Value::Int(1)]),
            Value::from("a"),
        ];
        for w in ordered.windows(2) {
            assert_eq!(
                cmp_term(&w[0], &w[1]),
                Ordering::Less,
                "{:?} < {:?}",
                w[0],
                w[1]
            );
        }
    }

    #[test]
    fn numbers_compare_by_value_and_exactly_for_keys() {
        assert_eq!(
            cmp_term(&Value::Int(1), &Value::Float(1.0)),
            Ordering::Equal
        );
        assert_eq!(
            cmp_exact(&Value::Int(1), &Value::Float(1.0)),
            Ordering::Less
        );
        assert_eq!(
            cmp_term(&Value::Int(2), &Value::Float(1.5)),
            Ordering::Greater
        );
        assert_eq!(
            cmp_term(&Value::Int(-2), &Value::Float(-1.5)),
            Ordering::Less
        );
        assert_eq!(
            cmp_term(&Value::Int(i64::MAX), &Value::Float(1e300)),
            Ordering::Less
        );
        let big = Value::integer(BigInt::from(i64::MAX) * 10);
        assert_eq!(cmp_term(&big, &Value::Int(i64::MAX)), Ordering::Greater);
        assert_eq!(cmp_term(&big, &Value::Float(1e10)), Ordering::Greater);
        assert_eq!(cmp_term(&Value::Int(5), &atom("nil")), Ordering::Less);
    }

    #[test]
    fn tuples_compare_by_size_first() {
        let small = Value::tuple(vec![Value::Int(9)]);
        let big = Value::tuple(vec![Value::Int(1), Value::Int(1)]);
        assert_eq!(cmp_term(&small, &big), Ordering::Less);
    }

    #[test]
    fn lists_compare_element_wise() {
        let l = |xs: &[i64]| Value::list(xs.iter().map(|x| Value::Int(*x)).collect());
        assert_eq!(cmp_term(&l(&[1, 2]), &l(&[1, 3])), Ordering::Less);
        assert_eq!(cmp_term(&l(&[1, 2]), &l(&[1, 2, 0])), Ordering::Less);
        assert_eq!(cmp_term(&l(&[2]), &l(&[1, 9, 9])), Ordering::Greater);
        let improper = Value::ImproperList(Box::new((vec![Value::Int(1)].into(), Value::Int(2))));
        assert_eq!(cmp_term(&improper, &l(&[1, 2])), Ordering::Less);
    }

    #[test]
    fn binaries_compare_bytewise() {
        assert_eq!(
            cmp_term(&Value::from("abc"), &Value::from("abd")),
            Ordering::Less
        );
        assert_eq!(
            cmp_term(&Value::from("ab"), &Value::from("abc")),
            Ordering::Less
        );
        let long = Value::binary(&[b'z'; 30]);
        assert_eq!(cmp_term(&Value::from("a"), &long), Ordering::Less);
    }

    #[test]
    fn maps_compare_by_size_then_keys_then_values() {
        let m = |pairs: &[(&str, i64)]| {
            Value::map(
                pairs
                    .iter()
                    .map(|(k, v)| (atom(k), Value::Int(*v)))
                    .collect(),
            )
        };
        assert_eq!(
            cmp_term(&m(&[("z", 1)]), &m(&[("a", 1), ("b", 1)])),
            Ordering::Less
        );
        assert_eq!(cmp_term(&m(&[("a", 1)]), &m(&[("b", 0)])), Ordering::Less);
        assert_eq!(cmp_term(&m(&[("a", 1)]), &m(&[("a", 2)])), Ordering::Less);
    }
}
