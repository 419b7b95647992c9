//! Pids and references, as the node keeps them.
//!
//! Every call carries a caller pid and a reference tag, so they are first-class values here:
//! the node name is an interned [`Atom`] and each is one small allocation when boxed in a
//! [`super::Value`], instead of the several strings and vectors of their `eetf` forms.

use super::atom::{Atom, AtomTableFull};
use std::fmt;

/// A process identifier.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Pid {
    /// The node the process runs on.
    pub node: Atom,
    /// Process number, low part.
    pub id: u32,
    /// Process number, high part.
    pub serial: u32,
    /// The node incarnation.
    pub creation: u32,
}

/// A reference (also what OTP uses as a process alias).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Ref {
    /// The node that made it.
    pub node: Atom,
    /// The node incarnation.
    pub creation: u32,
    len: u8,
    words: [u32; 5],
}

impl Ref {
    /// A reference from its words (at most five are kept, as in OTP's v4 format).
    pub fn new(node: Atom, creation: u32, words: &[u32]) -> Ref {
        let mut w = [0u32; 5];
        let len = words.len().min(5);
        w[..len].copy_from_slice(&words[..len]);
        Ref {
            node,
            creation,
            len: len as u8,
            words: w,
        }
    }

    /// The reference's words, as on the wire.
    pub fn words(&self) -> &[u32] {
        &self.words[..self.len as usize]
    }
}

impl Pid {
    /// The `eetf` form, for `erl_dist` messages.
    pub fn to_eetf(&self) -> eetf::Pid {
        eetf::Pid {
            node: eetf::Atom::from(self.node.as_str()),
            id: self.id,
            serial: self.serial,
            creation: self.creation,
        }
    }

    /// From the `eetf` form.
    pub fn from_eetf(pid: &eetf::Pid) -> Result<Pid, AtomTableFull> {
        Ok(Pid {
            node: Atom::new(&pid.node.name)?,
            id: pid.id,
            serial: pid.serial,
            creation: pid.creation,
        })
    }
}

impl Ref {
    /// The `eetf` form, for `erl_dist` messages.
    pub fn to_eetf(&self) -> eetf::Reference {
        eetf::Reference {
            node: eetf::Atom::from(self.node.as_str()),
            id: self.words().to_vec(),
            creation: self.creation,
        }
    }

    /// From the `eetf` form.
    pub fn from_eetf(r: &eetf::Reference) -> Result<Ref, AtomTableFull> {
        Ok(Ref::new(Atom::new(&r.node.name)?, r.creation, &r.id))
    }
}

impl fmt::Debug for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{}.{}.{}>", self.node, self.id, self.serial)
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

impl fmt::Debug for Ref {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "#Ref<{}", self.node)?;
        for w in self.words().iter().rev() {
            write!(f, ".{w}")?;
        }
        f.write_str(">")
    }
}
