//! Conversion between `eetf` terms (what the wire decodes to) and [`Value`]s (what the node
//! stores). Both directions are lossless: a term converted to a value and back is the same term.

use super::atom::{Atom, AtomTableFull};
use super::pid::{Pid, Ref};
use super::value::Value;
use eetf::Term;

/// Converts a decoded term, taking ownership so binaries are not copied.
pub fn from_term(term: Term) -> Result<Value, AtomTableFull> {
    Ok(match term {
        Term::Atom(a) => Value::Atom(Atom::new(&a.name)?),
        Term::FixInteger(i) => Value::Int(i.value as i64),
        Term::BigInteger(b) => Value::integer(b.value),
        Term::Float(f) => Value::Float(f.value),
        Term::Binary(b) => Value::binary_owned(b.bytes),
        Term::ByteList(bl) => {
            Value::list(bl.bytes.into_iter().map(|b| Value::Int(b as i64)).collect())
        }
        Term::List(l) => Value::list(
            l.elements
                .into_iter()
                .map(from_term)
                .collect::<Result<_, _>>()?,
        ),
        Term::ImproperList(l) => {
            let items: Vec<Value> = l
                .elements
                .into_iter()
                .map(from_term)
                .collect::<Result<_, _>>()?;
            let tail = from_term(*l.last)?;
            Value::ImproperList(Box::new((items.into_boxed_slice(), tail)))
        }
        Term::Tuple(t) => Value::tuple(
            t.elements
                .into_iter()
                .map(from_term)
                .collect::<Result<_, _>>()?,
        ),
        Term::Map(m) => {
            let mut entries = Vec::with_capacity(m.map.len());
            for (k, v) in m.map {
                entries.push((from_term(k)?, from_term(v)?));
            }
            Value::map(entries)
        }
        Term::Pid(pid) => Value::Pid(Box::new(Pid::from_eetf(&pid)?)),
        Term::Reference(r) => Value::Ref(Box::new(Ref::from_eetf(&r)?)),
        other @ (Term::Port(_)
        | Term::ExternalFun(_)
        | Term::InternalFun(_)
        | Term::BitBinary(_)) => Value::Opaque(Box::new(other)),
    })
}

/// Converts a value to a term for encoding.
pub fn to_term(value: &Value) -> Term {
    match value {
        Value::Int(i) => int_term(*i),
        Value::BigInt(b) => Term::BigInteger(eetf::BigInteger {
            value: (**b).clone(),
        }),
        Value::Float(f) => Term::Float(eetf::Float { value: *f }),
        Value::Atom(a) => Term::Atom(eetf::Atom::from(a.as_str())),
        Value::SmallBin { .. } | Value::Bin(_) => Term::Binary(eetf::Binary {
            bytes: value.as_bytes().unwrap_or_default().to_vec(),
        }),
        Value::Tuple(items) => Term::Tuple(eetf::Tuple {
            elements: items.iter().map(to_term).collect(),
        }),
        Value::List(items) => Term::List(eetf::List {
            elements: items.iter().map(to_term).collect(),
        }),
        Value::ImproperList(pair) => Term::ImproperList(eetf::ImproperList {
            elements: pair.0.iter().map(to_term).collect(),
            last: Box::new(to_term(&pair.1)),
        }),
        Value::Map(entries) => Term::Map(eetf::Map {
            map: entries
                .iter()
                .map(|(k, v)| (to_term(k), to_term(v)))
                .collect(),
        }),
        Value::Pid(pid) => Term::Pid(pid.to_eetf()),
        Value::Ref(r) => Term::Reference(Box::new(r.to_eetf())),
        Value::Opaque(term) => (**term).clone(),
    }
}

/// An integer term, small when it fits in 32 bits.
pub fn int_term(i: i64) -> Term {
    match i32::try_from(i) {
        Ok(small) => Term::FixInteger(eetf::FixInteger { value: small }),
        Err(_) => Term::BigInteger(eetf::BigInteger::from(i)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(bytes: &[u8]) {
        let term = Term::decode(bytes).expect("decodes");
        let value = from_term(term).expect("converts");
        let mut encoded = Vec::new();
        to_term(&value).encode(&mut encoded).unwrap();
        let again = from_term(Term::decode(&encoded[..]).unwrap()).unwrap();
        assert_eq!(again, value);
    }

    #[test]
    fn every_kind_of_term_roundtrips() {
        // Encoded by OTP 25 with term_to_binary/1 (see the comment beside each).
        // #{a => 1, b => <<"x">>, c => [1.5, nil, {t}], d => 123456789012345678901234567890}
        roundtrip(&[
            131, 116, 0, 0, 0, 4, 100, 0, 1, 97, 97, 1, 100, 0, 1, 98, 109, 0, 0, 0, 1, 120, 100,
            0, 1, 99, 108, 0, 0, 0, 3, 70, 63, 248, 0, 0, 0, 0, 0, 0, 100, 0, 3, 110, 105, 108,
            104, 1, 100, 0, 1, 116, 106, 100, 0, 1, 100, 110, 13, 0, 210, 10, 63, 78, 238, 224,
            115, 195, 246, 15, 233, 142, 1,
        ]);
        // "abc" (a string: STRING_EXT)
        roundtrip(&[131, 107, 0, 3, 97, 98, 99]);
        // [1|2]
        roundtrip(&[131, 108, 0, 0, 0, 1, 97, 1, 97, 2]);
        // -5, 70000, -9000000000
        roundtrip(&[131, 98, 255, 255, 255, 251]);
        roundtrip(&[131, 98, 0, 1, 17, 112]);
        roundtrip(&[131, 110, 5, 1, 0, 26, 113, 24, 2]);
    }

    #[test]
    fn strings_become_lists_of_integers() {
        let v = from_term(Term::decode(&[131u8, 107, 0, 2, 104, 105][..]).unwrap()).unwrap();
        assert_eq!(v, Value::list(vec![Value::Int(104), Value::Int(105)]));
    }

    #[test]
    fn int_term_uses_small_encoding_when_it_fits() {
        assert!(matches!(int_term(7), Term::FixInteger(_)));
        assert!(matches!(int_term(1 << 40), Term::BigInteger(_)));
    }
}
