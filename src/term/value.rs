//! The node's own compact term representation.
//!
//! Records are stored for a long time and scanned by queries, so they are kept as [`Value`]s:
//! 24 bytes each, small binaries inline, atoms interned, maps as sorted slices. Terms the node
//! never looks inside (pids, ports, references, funs, bit strings) are kept as received, boxed.
//! Equality (`==` on `Value`) is Erlang's exact equality `=:=`; term order lives in
//! [`super::order`].

use super::atom::{Atom, atoms};
use super::order::cmp_exact;
use super::pid::{Pid, Ref};
use num_bigint::BigInt;
use std::fmt;
use std::hash::{Hash, Hasher};

/// Binaries up to this many bytes are stored inside the value itself.
pub const INLINE_BIN: usize = 22;

/// An Erlang term.
#[derive(Clone, PartialEq)]
pub enum Value {
    /// An integer that fits in 64 bits.
    Int(i64),
    /// An integer that does not fit in 64 bits (never holds one that does).
    BigInt(Box<BigInt>),
    /// A float.
    Float(f64),
    /// An atom (`nil`, `true` and `false` included).
    Atom(Atom),
    /// A binary of at most [`INLINE_BIN`] bytes (never holds a longer one).
    SmallBin {
        /// Number of bytes used.
        len: u8,
        /// The bytes, zero-padded.
        data: [u8; INLINE_BIN],
    },
    /// A binary longer than [`INLINE_BIN`] bytes.
    Bin(Box<[u8]>),
    /// A tuple.
    Tuple(Box<[Value]>),
    /// A proper list; the empty one is `[]`.
    List(Box<[Value]>),
    /// An improper list: elements and the non-list tail.
    ImproperList(Box<(Box<[Value]>, Value)>),
    /// A map, entries sorted by key in map-key order, keys unique.
    Map(Box<[(Value, Value)]>),
    /// A pid.
    Pid(Box<Pid>),
    /// A reference.
    Ref(Box<Ref>),
    /// A port, fun or bit string, kept as received.
    Opaque(Box<eetf::Term>),
}

impl Eq for Value {}

impl Hash for Value {
    fn hash<H: Hasher>(&self, state: &mut H) {
        std::mem::discriminant(self).hash(state);
        match self {
            Value::Int(i) => i.hash(state),
            Value::BigInt(b) => b.hash(state),
            // `0.0 == -0.0` for `PartialEq`, so both must hash alike.
            Value::Float(f) => (if *f == 0.0 { 0.0f64 } else { *f }).to_bits().hash(state),
            Value::Atom(a) => a.hash(state),
            Value::SmallBin { len, data } => data[..*len as usize].hash(state),
            Value::Bin(b) => b.hash(state),
            Value::Tuple(items) | Value::List(items) => items.hash(state),
            Value::ImproperList(pair) => {
                pair.0.hash(state);
                pair.1.hash(state);
            }
            Value::Map(entries) => entries.hash(state),
            Value::Pid(pid) => pid.hash(state),
            Value::Ref(r) => r.hash(state),
            Value::Opaque(term) => term.hash(state),
        }
    }
}

impl Value {
    /// The atom `nil`.
    pub fn nil() -> Value {
        Value::Atom(*atoms::NIL)
    }

    /// The empty list `[]`.
    pub fn empty_list() -> Value {
        Value::List(Box::new([]))
    }

    /// An atom value.
    pub fn atom(atom: Atom) -> Value {
        Value::Atom(atom)
    }

    /// A boolean, as the atom `true` or `false`.
    pub fn boolean(b: bool) -> Value {
        Value::Atom(if b { *atoms::TRUE } else { *atoms::FALSE })
    }

    /// A binary, inline when short.
    pub fn binary(bytes: &[u8]) -> Value {
        if bytes.len() <= INLINE_BIN {
            let mut data = [0u8; INLINE_BIN];
            data[..bytes.len()].copy_from_slice(bytes);
            Value::SmallBin {
                len: bytes.len() as u8,
                data,
            }
        } else {
            Value::Bin(bytes.into())
        }
    }

    /// A binary from an owned buffer (no copy when it is long).
    pub fn binary_owned(bytes: Vec<u8>) -> Value {
        if bytes.len() <= INLINE_BIN {
            Value::binary(&bytes)
        } else {
            Value::Bin(bytes.into_boxed_slice())
        }
    }

    /// An integer of any size, kept in 64 bits when it fits.
    pub fn integer(big: BigInt) -> Value {
        match i64::try_from(&big) {
            Ok(i) => Value::Int(i),
            Err(_) => Value::BigInt(Box::new(big)),
        }
    }

    /// A tuple.
    pub fn tuple(items: Vec<Value>) -> Value {
        Value::Tuple(items.into_boxed_slice())
    }

    /// A proper list.
    pub fn list(items: Vec<Value>) -> Value {
        Value::List(items.into_boxed_slice())
    }

    /// A map from entries in any order; a later duplicate key wins.
    pub fn map(mut entries: Vec<(Value, Value)>) -> Value {
        // Stable sort keeps duplicates in input order; keep the last of each run.
        entries.sort_by(|a, b| cmp_exact(&a.0, &b.0));
        let mut out: Vec<(Value, Value)> = Vec::with_capacity(entries.len());
        for (k, v) in entries {
            match out.last_mut() {
                Some(last) if last.0 == k => last.1 = v,
                _ => out.push((k, v)),
            }
        }
        Value::Map(out.into_boxed_slice())
    }

    /// `{A, B}`.
    pub fn pair(a: Value, b: Value) -> Value {
        Value::tuple(vec![a, b])
    }

    /// The bytes of a binary.
    pub fn as_bytes(&self) -> Option<&[u8]> {
        match self {
            Value::SmallBin { len, data } => Some(&data[..*len as usize]),
            Value::Bin(b) => Some(b),
            _ => None,
        }
    }

    /// The atom, if this is one.
    pub fn as_atom(&self) -> Option<Atom> {
        match self {
            Value::Atom(a) => Some(*a),
            _ => None,
        }
    }

    /// Whether this is the atom `nil`.
    pub fn is_nil(&self) -> bool {
        matches!(self, Value::Atom(a) if *a == *atoms::NIL)
    }

    /// Whether this is the atom `true`.
    pub fn is_true(&self) -> bool {
        matches!(self, Value::Atom(a) if *a == *atoms::TRUE)
    }

    /// The elements of a tuple.
    pub fn as_tuple(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(items) => Some(items),
            _ => None,
        }
    }

    /// The elements of a proper list.
    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// The entries of a map.
    pub fn as_map(&self) -> Option<&[(Value, Value)]> {
        match self {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// Looks a key up in a map.
    pub fn map_get(&self, key: &Value) -> Option<&Value> {
        let entries = self.as_map()?;
        entries
            .binary_search_by(|(k, _)| cmp_exact(k, key))
            .ok()
            .map(|i| &entries[i].1)
    }

    /// Looks an atom key up in a map.
    pub fn map_get_atom(&self, key: Atom) -> Option<&Value> {
        self.map_get(&Value::Atom(key))
    }

    /// The integer, if this is one that fits in 64 bits.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            _ => None,
        }
    }

    /// The pid, if this is one.
    pub fn as_pid(&self) -> Option<&Pid> {
        match self {
            Value::Pid(pid) => Some(pid),
            _ => None,
        }
    }

    /// Whether this is a number.
    pub fn is_number(&self) -> bool {
        matches!(self, Value::Int(_) | Value::BigInt(_) | Value::Float(_))
    }
}

impl From<Atom> for Value {
    fn from(a: Atom) -> Self {
        Value::Atom(a)
    }
}

impl From<i64> for Value {
    fn from(i: i64) -> Self {
        Value::Int(i)
    }
}

impl From<&str> for Value {
    fn from(s: &str) -> Self {
        Value::binary(s.as_bytes())
    }
}

/// Prints terms in Erlang syntax, for logs and error messages.
impl fmt::Debug for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn seq(f: &mut fmt::Formatter<'_>, items: &[Value]) -> fmt::Result {
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    f.write_str(",")?;
                }
                write!(f, "{item:?}")?;
            }
            Ok(())
        }
        match self {
            Value::Int(i) => write!(f, "{i}"),
            Value::BigInt(b) => write!(f, "{b}"),
            Value::Float(x) => write!(f, "{x:?}"),
            Value::Atom(a) => {
                let s = a.as_str();
                const RESERVED: [&str; 29] = [
                    "after", "and", "andalso", "band", "begin", "bnot", "bor", "bsl", "bsr",
                    "bxor", "case", "catch", "cond", "div", "else", "end", "fun", "if", "let",
                    "maybe", "not", "of", "or", "orelse", "receive", "rem", "try", "when", "xor",
                ];
                let plain = s.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                    && s.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '@')
                    && !RESERVED.contains(&s);
                if plain {
                    f.write_str(s)
                } else {
                    write!(f, "'{}'", s.replace('\'', "\\'"))
                }
            }
            Value::SmallBin { .. } | Value::Bin(_) => {
                let bytes = self.as_bytes().unwrap_or_default();
                match std::str::from_utf8(bytes) {
                    Ok(s) if !s.chars().any(char::is_control) => write!(f, "<<{s:?}>>"),
                    _ => write!(f, "<<{}>>", {
                        let parts: Vec<String> = bytes.iter().map(|b| b.to_string()).collect();
                        parts.join(",")
                    }),
                }
            }
            Value::Tuple(items) => {
                f.write_str("{")?;
                seq(f, items)?;
                f.write_str("}")
            }
            Value::List(items) => {
                f.write_str("[")?;
                seq(f, items)?;
                f.write_str("]")
            }
            Value::ImproperList(pair) => {
                f.write_str("[")?;
                seq(f, &pair.0)?;
                write!(f, "|{:?}]", pair.1)
            }
            Value::Map(entries) => {
                f.write_str("#{")?;
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        f.write_str(",")?;
                    }
                    write!(f, "{k:?} => {v:?}")?;
                }
                f.write_str("}")
            }
            Value::Pid(pid) => write!(f, "{pid:?}"),
            Value::Ref(r) => write!(f, "{r:?}"),
            Value::Opaque(term) => write!(f, "{term}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn value_is_24_bytes() {
        assert_eq!(std::mem::size_of::<Value>(), 24);
    }

    #[test]
    fn short_binaries_are_inline_and_long_ones_boxed() {
        let short = Value::binary(b"hello");
        assert!(matches!(short, Value::SmallBin { len: 5, .. }));
        assert_eq!(short.as_bytes(), Some(&b"hello"[..]));
        let long = Value::binary(&[7u8; 40]);
        assert!(matches!(long, Value::Bin(_)));
        assert_eq!(long.as_bytes().map(<[u8]>::len), Some(40));
        assert_eq!(Value::binary_owned(b"hello".to_vec()), short);
    }

    #[test]
    fn map_sorts_keys_and_last_duplicate_wins() {
        let a = Atom::new("a").unwrap();
        let b = Atom::new("b").unwrap();
        let m = Value::map(vec![
            (Value::Atom(b), Value::Int(1)),
            (Value::Atom(a), Value::Int(2)),
            (Value::Atom(b), Value::Int(3)),
        ]);
        let entries = m.as_map().unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].0, Value::Atom(a));
        assert_eq!(m.map_get_atom(b), Some(&Value::Int(3)));
    }

    #[test]
    fn integer_keeps_small_values_in_64_bits() {
        assert_eq!(Value::integer(BigInt::from(5)), Value::Int(5));
        let big = BigInt::from(i64::MAX) * 4;
        assert!(matches!(Value::integer(big), Value::BigInt(_)));
    }

    #[test]
    fn debug_prints_erlang_syntax() {
        let v = Value::tuple(vec![
            Value::Atom(Atom::new("ok").unwrap()),
            Value::from("hi"),
            Value::list(vec![Value::Int(1), Value::Float(2.5)]),
            Value::Atom(Atom::new("Elixir.Foo").unwrap()),
            Value::Atom(Atom::new("and").unwrap()),
        ]);
        assert_eq!(
            format!("{v:?}"),
            "{ok,<<\"hi\">>,[1,2.5],'Elixir.Foo','and'}"
        );
    }
}
