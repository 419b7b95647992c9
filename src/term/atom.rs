//! Interned atoms.
//!
//! An [`Atom`] is a pointer to a name that lives for the rest of the process, so copying and
//! comparing atoms for equality is a pointer operation and reading the name takes no lock. Like
//! the BEAM's atom table, names are never freed; the table refuses new atoms past
//! [`MAX_ATOMS`] so a hostile peer cannot grow it without bound.

use parking_lot::RwLock;
use rustc_hash::FxHashMap;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::LazyLock;

/// The most atoms the table will hold (the BEAM's default limit is 1,048,576).
pub const MAX_ATOMS: usize = 1 << 20;

/// An interned atom.
#[derive(Clone, Copy)]
pub struct Atom(&'static str);

static TABLE: LazyLock<RwLock<FxHashMap<&'static str, Atom>>> = LazyLock::new(|| {
    RwLock::new(FxHashMap::with_capacity_and_hasher(
        1024,
        Default::default(),
    ))
});

/// The table is full: no new atom can be made.
#[derive(Debug, Clone, thiserror::Error)]
#[error("atom table is full ({MAX_ATOMS} atoms)")]
pub struct AtomTableFull;

impl Atom {
    /// Interns `name`, returning the one atom with that name.
    pub fn new(name: &str) -> Result<Atom, AtomTableFull> {
        if let Some(atom) = TABLE.read().get(name) {
            return Ok(*atom);
        }
        let mut table = TABLE.write();
        if let Some(atom) = table.get(name) {
            return Ok(*atom);
        }
        if table.len() >= MAX_ATOMS {
            return Err(AtomTableFull);
        }
        let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
        let atom = Atom(leaked);
        table.insert(leaked, atom);
        Ok(atom)
    }

    /// Interns a name known to be one of the node's own fixed atoms.
    ///
    /// Panics only if the table is full, which cannot happen for the handful of atoms the node
    /// makes itself before it accepts any connection.
    pub fn from_static(name: &'static str) -> Atom {
        Atom::new(name).expect("atom table full while interning a built-in atom")
    }

    /// The atom's name.
    pub fn as_str(&self) -> &'static str {
        self.0
    }
}

impl PartialEq for Atom {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.0.as_ptr(), other.0.as_ptr())
    }
}

impl Eq for Atom {}

impl Hash for Atom {
    fn hash<H: Hasher>(&self, state: &mut H) {
        (self.0.as_ptr() as usize).hash(state)
    }
}

impl PartialOrd for Atom {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Atoms order by name, as in Erlang's term order.
impl Ord for Atom {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        if self == other {
            std::cmp::Ordering::Equal
        } else {
            self.0.cmp(other.0)
        }
    }
}

impl fmt::Debug for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl fmt::Display for Atom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

/// Atoms the node uses itself, interned once.
pub mod atoms {
    use super::Atom;
    use std::sync::LazyLock;

    macro_rules! atoms {
        ($($name:ident = $text:literal),* $(,)?) => {
            $(
                #[allow(missing_docs)]
                pub static $name: LazyLock<Atom> = LazyLock::new(|| Atom::from_static($text));
            )*
        };
    }

    atoms! {
        NIL = "nil",
        TRUE = "true",
        FALSE = "false",
        OK = "ok",
        ERROR = "error",
        UNDEFINED = "undefined",
        INFINITY = "infinity",
        NORMAL = "normal",
        KILL = "kill",
        KILLED = "killed",
        SHUTDOWN = "shutdown",
        NOPROC = "noproc",
        NOCONNECTION = "noconnection",
        ALIAS = "alias",
        GEN_CALL = "$gen_call",
        GEN_CAST = "$gen_cast",
        EMPTY = "",
    }
}
