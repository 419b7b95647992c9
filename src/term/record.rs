//! Records: maps with atom keys, stored compactly.
//!
//! A [`Record`] is a [`Shape`] (its sorted field names, shared by every record with the same
//! fields) plus one [`Value`] per field. Records are immutable: an update builds a new record,
//! which is what lets a record actor keep its last committed state while it works on the next.

use super::atom::Atom;
use super::value::Value;
use parking_lot::RwLock;
use rustc_hash::FxHashMap;
use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::{Arc, LazyLock};

/// The sorted field names of a record.
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct Shape {
    fields: Box<[Atom]>,
}

impl Shape {
    /// The fields, in term order.
    pub fn fields(&self) -> &[Atom] {
        &self.fields
    }

    /// Where `field` sits, if the shape has it.
    pub fn position(&self, field: Atom) -> Option<usize> {
        self.fields.iter().position(|f| *f == field)
    }
}

/// Shapes seen so far; past this many distinct shapes new ones are not shared.
const MAX_SHARED_SHAPES: usize = 100_000;

/// How many shapes each thread remembers before it starts over.
const MAX_THREAD_SHAPES: usize = 1024;

type ShapeTable = FxHashMap<Box<[Atom]>, &'static Shape>;

/// Every shared shape. They are never freed (at most [`MAX_SHARED_SHAPES`] of them), so a
/// record points at one without a reference count: a count shared by every record of a
/// resource would be a cache line that the cores serving requests bounce between.
static SHAPES: LazyLock<RwLock<ShapeTable>> = LazyLock::new(|| RwLock::new(FxHashMap::default()));

thread_local! {
    /// The shared shapes this thread has used, so that it finds them without the table's lock
    /// (whose read count is also written by every reader).
    static THREAD_SHAPES: RefCell<ShapeTable> = RefCell::new(FxHashMap::default());
}

/// A record's shape, in one word (a record is two: its shape and its values): a shared shape
/// (never freed, referenced without a count) or, past [`MAX_SHARED_SHAPES`], one of its own,
/// held through an `Arc` whose pointer is stored with its lowest bit set (a `Shape` is aligned
/// to 8 bytes, so that bit is otherwise always clear).
struct ShapeRef(NonNull<Shape>);

// SAFETY: a `ShapeRef` is a `&'static Shape` or an `Arc<Shape>`, both `Send` and `Sync` since
// `Shape` is.
unsafe impl Send for ShapeRef {}
// SAFETY: as above.
unsafe impl Sync for ShapeRef {}

/// The pointer bit that marks a shape held through an `Arc`.
const OWN: usize = 1;

impl ShapeRef {
    fn shared(shape: &'static Shape) -> ShapeRef {
        ShapeRef(NonNull::from(shape))
    }

    fn own(shape: Arc<Shape>) -> ShapeRef {
        let raw = Arc::into_raw(shape).cast_mut();
        debug_assert_eq!(raw.addr() & OWN, 0, "a shape is aligned");
        ShapeRef(NonNull::new(raw.map_addr(|a| a | OWN)).expect("an Arc is not null"))
    }

    fn is_own(&self) -> bool {
        self.0.as_ptr().addr() & OWN != 0
    }

    fn ptr(&self) -> *const Shape {
        self.0.as_ptr().map_addr(|a| a & !OWN).cast_const()
    }

    /// Whether both are the same shape (the same fields, as shared shapes are).
    fn same(&self, other: &ShapeRef) -> bool {
        std::ptr::eq(self.ptr(), other.ptr())
    }
}

impl std::ops::Deref for ShapeRef {
    type Target = Shape;

    fn deref(&self) -> &Shape {
        // SAFETY: the pointer is a `&'static Shape`, or comes from `Arc::into_raw` of an `Arc`
        // this `ShapeRef` holds a count of (released in `drop`).
        unsafe { &*self.ptr() }
    }
}

impl Clone for ShapeRef {
    fn clone(&self) -> ShapeRef {
        if self.is_own() {
            // SAFETY: the pointer comes from `Arc::into_raw` and this `ShapeRef` holds a count,
            // so the `Arc` is alive; the new `ShapeRef` holds the count added here.
            unsafe { Arc::increment_strong_count(self.ptr()) };
        }
        ShapeRef(self.0)
    }
}

impl Drop for ShapeRef {
    fn drop(&mut self) {
        if self.is_own() {
            // SAFETY: the pointer comes from `Arc::into_raw`, and this `ShapeRef`'s count is
            // given back exactly once, here.
            drop(unsafe { Arc::from_raw(self.ptr()) });
        }
    }
}

impl PartialEq for ShapeRef {
    fn eq(&self, other: &ShapeRef) -> bool {
        self.same(other) || **self == **other
    }
}

fn shape_for(fields: &[Atom]) -> ShapeRef {
    let mine = THREAD_SHAPES.with(|t| t.borrow().get(fields).copied());
    if let Some(shape) = mine {
        return ShapeRef::shared(shape);
    }
    let shared = SHAPES.read().get(fields).copied();
    let shape = match shared {
        Some(shape) => shape,
        None => {
            let mut shapes = SHAPES.write();
            match shapes.get(fields) {
                Some(existing) => *existing,
                None if shapes.len() < MAX_SHARED_SHAPES => {
                    let shape: &'static Shape = Box::leak(Box::new(Shape {
                        fields: fields.into(),
                    }));
                    shapes.insert(fields.into(), shape);
                    shape
                }
                None => {
                    return ShapeRef::own(Arc::new(Shape {
                        fields: fields.into(),
                    }));
                }
            }
        }
    };
    THREAD_SHAPES.with(|t| {
        let mut t = t.borrow_mut();
        if t.len() >= MAX_THREAD_SHAPES {
            t.clear();
        }
        t.insert(fields.into(), shape);
    });
    ShapeRef::shared(shape)
}

/// Why a term is not a record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RecordError {
    /// The term is not a map.
    #[error("a record must be a map with atom keys, got: {0}")]
    NotAMap(String),
    /// A key is not an atom.
    #[error("record keys must be atoms, got key: {0}")]
    KeyNotAtom(String),
}

/// A stored record. Cloning it is one reference-count increment: the values are shared, and
/// so is the shape (counted only in the rare case of a shape of its own).
#[derive(Clone, PartialEq)]
pub struct Record {
    shape: ShapeRef,
    values: Arc<[Value]>,
}

impl Record {
    /// Builds a record from a map value.
    pub fn from_map(map: &Value) -> Result<Record, RecordError> {
        let entries = map
            .as_map()
            .ok_or_else(|| RecordError::NotAMap(format!("{map:?}")))?;
        Record::from_entries(entries.iter().map(|(k, v)| (k.clone(), v.clone())))
    }

    /// Builds a record from an owned map value, without copying its values.
    pub fn from_map_owned(map: Value) -> Result<Record, RecordError> {
        match map {
            Value::Map(entries) => Record::from_entries(entries.into_vec()),
            other => Err(RecordError::NotAMap(format!("{other:?}"))),
        }
    }

    fn from_entries(
        entries: impl IntoIterator<Item = (Value, Value)>,
    ) -> Result<Record, RecordError> {
        let mut pairs: Vec<(Atom, Value)> = Vec::new();
        for (k, v) in entries {
            match k {
                Value::Atom(a) => pairs.push((a, v)),
                other => return Err(RecordError::KeyNotAtom(format!("{other:?}"))),
            }
        }
        // Map entries with atom keys are already in atom order; sort anyway for other callers.
        pairs.sort_by_key(|pair| pair.0);
        pairs.dedup_by(|later, earlier| later.0 == earlier.0);
        Ok(Record::from_sorted(pairs))
    }

    fn from_sorted(pairs: Vec<(Atom, Value)>) -> Record {
        let fields: Vec<Atom> = pairs.iter().map(|(k, _)| *k).collect();
        let values: Vec<Value> = pairs.into_iter().map(|(_, v)| v).collect();
        Record {
            shape: shape_for(&fields),
            values: values.into(),
        }
    }

    /// The record's shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The value of `field`, if the record has it.
    pub fn get(&self, field: Atom) -> Option<&Value> {
        self.shape.position(field).map(|i| &self.values[i])
    }

    /// The value at a position of the record's shape.
    pub fn value_at(&self, position: usize) -> &Value {
        &self.values[position]
    }

    /// Reads the values of `fields` and returns something derived from them: a scan calls this
    /// for a batch of records before evaluating them, so the loads of the batch overlap instead
    /// of each record's cache misses being paid one after the other.
    pub fn warm(&self, fields: &[Atom]) -> u64 {
        let mut acc = 0u64;
        for f in fields {
            acc = acc.wrapping_add(match self.shape.position(*f).map(|i| &self.values[i]) {
                Some(Value::Int(n)) => *n as u64,
                Some(Value::SmallBin { len, .. }) => *len as u64,
                Some(_) => 1,
                None => 0,
            });
        }
        acc
    }

    /// Fields and values, in field order.
    pub fn iter(&self) -> impl Iterator<Item = (Atom, &Value)> {
        self.shape.fields.iter().copied().zip(self.values.iter())
    }

    /// A new record with `changes` (a map with atom keys) merged in.
    pub fn merge(&self, changes: &Record) -> Record {
        if self.shape.same(&changes.shape) {
            return changes.clone();
        }
        let mut pairs: Vec<(Atom, Value)> = Vec::with_capacity(self.values.len());
        let (mut i, mut j) = (0, 0);
        let (a, b) = (self.shape.fields(), changes.shape.fields());
        while i < a.len() || j < b.len() {
            if j >= b.len() || (i < a.len() && a[i] < b[j]) {
                pairs.push((a[i], self.values[i].clone()));
                i += 1;
            } else if i >= a.len() || b[j] < a[i] {
                pairs.push((b[j], changes.values[j].clone()));
                j += 1;
            } else {
                pairs.push((b[j], changes.values[j].clone()));
                i += 1;
                j += 1;
            }
        }
        Record::from_sorted(pairs)
    }

    /// A new record with only `fields` kept (fields the record lacks are skipped).
    pub fn select(&self, fields: &[Atom]) -> Record {
        let pairs = self
            .iter()
            .filter(|(f, _)| fields.contains(f))
            .map(|(f, v)| (f, v.clone()))
            .collect();
        Record::from_sorted(pairs)
    }

    /// The record as a map value.
    pub fn to_value(&self) -> Value {
        // Atom keys sorted by name are already in map-key order.
        Value::Map(
            self.iter()
                .map(|(k, v)| (Value::Atom(k), v.clone()))
                .collect(),
        )
    }

    /// Approximate heap bytes the record's values use (for memory accounting).
    pub fn heap_size(&self) -> usize {
        fn value_size(v: &Value) -> usize {
            match v {
                Value::Bin(b) => b.len(),
                Value::BigInt(_) => 32,
                Value::Tuple(items) | Value::List(items) => {
                    items.len() * 24 + items.iter().map(value_size).sum::<usize>()
                }
                Value::ImproperList(pair) => {
                    24 + pair.0.len() * 24
                        + pair.0.iter().map(value_size).sum::<usize>()
                        + value_size(&pair.1)
                }
                Value::Map(entries) => {
                    entries.len() * 48
                        + entries
                            .iter()
                            .map(|(k, v)| value_size(k) + value_size(v))
                            .sum::<usize>()
                }
                Value::Opaque(_) => 64,
                _ => 0,
            }
        }
        self.values.len() * 24 + self.values.iter().map(value_size).sum::<usize>()
    }
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_value())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Atom {
        Atom::new(s).unwrap()
    }

    fn rec(pairs: &[(&str, Value)]) -> Record {
        Record::from_map(&Value::map(
            pairs
                .iter()
                .map(|(k, v)| (Value::Atom(a(k)), v.clone()))
                .collect(),
        ))
        .unwrap()
    }

    #[test]
    fn a_shape_of_its_own_is_counted_and_freed_with_its_last_record() {
        let shape = Arc::new(Shape {
            fields: vec![a("x"), a("y")].into(),
        });
        let own = ShapeRef::own(shape.clone());
        assert!(own.is_own());
        assert_eq!(own.fields(), &[a("x"), a("y")]);
        assert_eq!(Arc::strong_count(&shape), 2);
        let copy = own.clone();
        assert_eq!(Arc::strong_count(&shape), 3);
        assert!(copy.same(&own));
        drop(own);
        assert_eq!(copy.fields().len(), 2);
        drop(copy);
        assert_eq!(Arc::strong_count(&shape), 1);

        // Equal to a shared shape of the same fields, not the same one.
        let shared = shape_for(&[a("x"), a("y")]);
        assert!(!shared.is_own());
        let own = ShapeRef::own(shape.clone());
        assert!(own == shared && !own.same(&shared));
    }

    #[test]
    fn a_record_is_three_words() {
        // Every stored record is held twice (the index and its actor): a word more is 16 bytes
        // per record.
        assert_eq!(
            std::mem::size_of::<Record>(),
            3 * std::mem::size_of::<usize>()
        );
        assert_eq!(
            std::mem::size_of::<Option<Record>>(),
            std::mem::size_of::<Record>()
        );
    }

    #[test]
    fn records_with_the_same_fields_share_a_shape() {
        let r1 = rec(&[("id", Value::Int(1)), ("name", Value::from("x"))]);
        let r2 = rec(&[("name", Value::from("y")), ("id", Value::Int(2))]);
        assert!(std::ptr::eq(r1.shape(), r2.shape()));
        assert_eq!(r1.get(a("name")), Some(&Value::from("x")));
        assert_eq!(r1.get(a("missing")), None);
    }

    #[test]
    fn merge_overwrites_and_adds_fields() {
        let r = rec(&[("id", Value::Int(1)), ("name", Value::from("x"))]);
        let changes = rec(&[("name", Value::from("z")), ("age", Value::Int(3))]);
        let merged = r.merge(&changes);
        assert_eq!(merged.get(a("id")), Some(&Value::Int(1)));
        assert_eq!(merged.get(a("name")), Some(&Value::from("z")));
        assert_eq!(merged.get(a("age")), Some(&Value::Int(3)));
        assert_eq!(merged.shape().fields().len(), 3);
    }

    #[test]
    fn to_value_roundtrips() {
        let r = rec(&[("b", Value::Int(1)), ("a", Value::nil())]);
        assert_eq!(Record::from_map(&r.to_value()).unwrap(), r);
    }

    #[test]
    fn non_atom_keys_are_refused() {
        let m = Value::map(vec![(Value::from("k"), Value::Int(1))]);
        assert!(matches!(
            Record::from_map(&m),
            Err(RecordError::KeyNotAtom(_))
        ));
        assert!(matches!(
            Record::from_map(&Value::Int(1)),
            Err(RecordError::NotAMap(_))
        ));
    }
}
