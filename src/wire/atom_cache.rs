//! The distribution header's atom cache.
//!
//! When both nodes offer `DFLAG_DIST_HDR_ATOM_CACHE`, every message starts with a distribution
//! header (`131, 68, ...`) listing the atoms its terms use; an atom is sent as text once, into
//! one of the 2,048 slots (8 segments of 256) of a per-connection, per-direction cache, and
//! afterwards only as a slot number. Inside the terms each atom is `ATOM_CACHE_REF` (82) and an
//! index into the header's list. This saves both ends from hashing atom text on every message:
//! record field names, `ok`, node names in pids.
//!
//! [`InCache`] is what the peer has put in our cache; [`OutCache`] what we have put in theirs,
//! with [`AtomRefs`] collecting the atoms of one outgoing message.

use super::etf::DecodeError;
use crate::term::Atom;
use rustc_hash::FxHasher;
use std::hash::{Hash, Hasher};

/// Slots in one direction's cache.
pub const SLOTS: usize = 2048;
/// Most atoms one header can list.
pub const MAX_REFS: usize = 255;

fn fail<T>(offset: usize, reason: &str) -> Result<T, DecodeError> {
    Err(DecodeError {
        offset,
        reason: reason.to_string(),
    })
}

/// The atoms a peer has cached with us.
pub struct InCache {
    slots: Box<[Option<Atom>]>,
    /// Most references one header may list (see [`super::Limits::max_atom_cache_entries`]).
    max_refs: usize,
}

impl Default for InCache {
    fn default() -> Self {
        InCache::with_limit(MAX_REFS)
    }
}

impl InCache {
    /// An empty cache whose headers may list at most `max_refs` atoms (at most 255).
    pub fn with_limit(max_refs: usize) -> InCache {
        InCache {
            slots: vec![None; SLOTS].into_boxed_slice(),
            max_refs: max_refs.min(MAX_REFS),
        }
    }

    /// Reads a normal distribution header (after `131, 68`) into `refs`, updating the cache;
    /// returns the header's length.
    pub fn read_header(
        &mut self,
        bytes: &[u8],
        refs: &mut Vec<Atom>,
    ) -> Result<usize, DecodeError> {
        refs.clear();
        let n = match bytes.first() {
            Some(&n) => n as usize,
            None => return fail(0, "truncated distribution header"),
        };
        if n == 0 {
            return Ok(1);
        }
        if n > self.max_refs {
            return fail(0, "distribution header lists more atoms than the limit");
        }
        let flags_len = n / 2 + 1;
        let Some(flags) = bytes.get(1..1 + flags_len) else {
            return fail(1, "truncated atom cache flags");
        };
        let nibble = |i: usize| (flags[i / 2] >> (4 * (i % 2))) & 0x0f;
        let long_atoms = nibble(n) & 1 == 1;
        let mut pos = 1 + flags_len;
        for i in 0..n {
            let flag = nibble(i);
            let segment = (flag & 0x07) as usize;
            let Some(&internal) = bytes.get(pos) else {
                return fail(pos, "truncated atom cache reference");
            };
            pos += 1;
            let slot = segment * 256 + internal as usize;
            if flag & 0x08 != 0 {
                let len = if long_atoms {
                    let Some(b) = bytes.get(pos..pos + 2) else {
                        return fail(pos, "truncated atom length");
                    };
                    pos += 2;
                    u16::from_be_bytes([b[0], b[1]]) as usize
                } else {
                    let Some(&b) = bytes.get(pos) else {
                        return fail(pos, "truncated atom length");
                    };
                    pos += 1;
                    b as usize
                };
                let Some(text) = bytes.get(pos..pos + len) else {
                    return fail(pos, "truncated atom text");
                };
                pos += len;
                let Ok(text) = std::str::from_utf8(text) else {
                    return fail(pos, "cached atom is not valid UTF-8");
                };
                if text.chars().count() > super::etf::MAX_ATOM_CHARS {
                    return fail(pos, "cached atom longer than 255 characters");
                }
                let atom = match Atom::new(text) {
                    Ok(atom) => atom,
                    Err(e) => return fail(pos, &e.to_string()),
                };
                self.slots[slot] = Some(atom);
                refs.push(atom);
            } else {
                match self.slots[slot] {
                    Some(atom) => refs.push(atom),
                    None => return fail(pos, "reference to an empty atom cache slot"),
                }
            }
        }
        Ok(pos)
    }
}

/// The atoms we have cached with a peer.
pub struct OutCache {
    slots: Box<[Option<Atom>]>,
    /// The atoms of the message being written (see [`AtomRefs`]), kept to reuse its memory.
    refs: Vec<(Atom, u16, bool)>,
    /// Which message last listed an atom in each slot, and at which header index: finds an
    /// atom already listed without searching the list.
    listed: Box<[(u32, u8)]>,
    /// The number of the message being written.
    message: u32,
}

impl Default for OutCache {
    fn default() -> Self {
        OutCache {
            slots: vec![None; SLOTS].into_boxed_slice(),
            refs: Vec::new(),
            listed: vec![(0, 0); SLOTS].into_boxed_slice(),
            message: 0,
        }
    }
}

impl OutCache {
    /// Starts collecting the atoms of one message.
    pub fn message(&mut self) -> AtomRefs<'_> {
        self.refs.clear();
        self.message = self.message.wrapping_add(1);
        if self.message == 0 {
            // Numbers start over: forget which message listed what.
            self.listed.fill((0, 0));
            self.message = 1;
        }
        AtomRefs { cache: self }
    }
}

/// The atoms of one outgoing message, in header order: (atom, cache slot, whether the slot is
/// new for the peer).
pub struct AtomRefs<'a> {
    cache: &'a mut OutCache,
}

/// The cache slot an atom goes in. Any fixed choice works (the header says which slot each
/// atom is in); this one hashes the atom's identity, not its text, and takes the hash's top
/// bits (the low ones of a multiplicative hash of an aligned address vary little).
fn slot_of(atom: Atom) -> u16 {
    let mut hasher = FxHasher::default();
    atom.hash(&mut hasher);
    (hasher.finish() >> (64 - SLOTS.trailing_zeros())) as u16
}

impl AtomRefs<'_> {
    /// The header index for `atom`, adding it (and caching it) if needed; `None` when the header
    /// is full, in which case the atom is written as text.
    pub fn index(&mut self, atom: Atom) -> Option<u8> {
        let cache = &mut *self.cache;
        let slot = slot_of(atom);
        let (message, at) = cache.listed[slot as usize];
        if message == cache.message {
            if cache.refs[at as usize].0 == atom {
                return Some(at);
            }
            // Another atom of this message took the slot after this one, or this one is new.
            if let Some(i) = cache.refs.iter().position(|r| r.0 == atom) {
                return Some(i as u8);
            }
        }
        if cache.refs.len() >= MAX_REFS {
            return None;
        }
        let new = cache.slots[slot as usize] != Some(atom);
        if new {
            cache.slots[slot as usize] = Some(atom);
        }
        let at = cache.refs.len() as u8;
        cache.refs.push((atom, slot, new));
        cache.listed[slot as usize] = (cache.message, at);
        Some(at)
    }

    /// Writes the header: `131, 68, NumberOfAtomCacheRefs, Flags, AtomCacheRefs`.
    pub fn write_header(&self, out: &mut Vec<u8>) {
        let n = self.cache.refs.len();
        out.extend_from_slice(&[131, 68, n as u8]);
        if n == 0 {
            return;
        }
        let long_atoms = self
            .cache
            .refs
            .iter()
            .any(|(a, _, new)| *new && a.as_str().len() > 255);
        let flags_at = out.len();
        out.resize(flags_at + n / 2 + 1, 0);
        let set_nibble = |out: &mut Vec<u8>, i: usize, v: u8| {
            out[flags_at + i / 2] |= (v & 0x0f) << (4 * (i % 2));
        };
        for (i, (_, slot, new)) in self.cache.refs.iter().enumerate() {
            set_nibble(out, i, (u8::from(*new) << 3) | (slot / 256) as u8);
        }
        set_nibble(out, n, u8::from(long_atoms));
        for (atom, slot, new) in &self.cache.refs {
            out.push((slot % 256) as u8);
            if *new {
                let text = atom.as_str().as_bytes();
                if long_atoms {
                    out.extend_from_slice(&(text.len() as u16).to_be_bytes());
                } else {
                    out.push(text.len() as u8);
                }
                out.extend_from_slice(text);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> Atom {
        Atom::new(s).unwrap()
    }

    #[test]
    fn headers_roundtrip_and_reuse_the_cache() {
        let mut out = OutCache::default();
        let mut incoming = InCache::default();
        let mut refs = Vec::new();

        let mut first = out.message();
        assert_eq!(first.index(a("ok")), Some(0));
        assert_eq!(first.index(a("name")), Some(1));
        assert_eq!(first.index(a("ok")), Some(0));
        let mut bytes = Vec::new();
        first.write_header(&mut bytes);
        assert_eq!(&bytes[..3], &[131, 68, 2]);
        let used = incoming.read_header(&bytes[2..], &mut refs).unwrap();
        assert_eq!(used, bytes.len() - 2);
        assert_eq!(refs, vec![a("ok"), a("name")]);

        // The second message only names the slots: no text.
        let mut second = out.message();
        second.index(a("name"));
        second.index(a("ok"));
        let mut bytes2 = Vec::new();
        second.write_header(&mut bytes2);
        assert!(!bytes2.windows(4).any(|w| w == b"name"));
        incoming.read_header(&bytes2[2..], &mut refs).unwrap();
        assert_eq!(refs, vec![a("name"), a("ok")]);
    }

    #[test]
    fn atoms_sharing_a_slot_in_one_message() {
        // Two atoms with the same slot: each keeps its own header index, and the peer reads
        // them right (the later one takes the slot).
        let mut seen = std::collections::HashMap::new();
        let (first, second) = (0..)
            .find_map(|i| {
                let atom = a(&format!("slot_probe_{i}"));
                seen.insert(slot_of(atom), atom)
                    .filter(|other| *other != atom)
                    .map(|other| (other, atom))
            })
            .unwrap();
        let mut out = OutCache::default();
        let mut incoming = InCache::default();
        let mut refs = Vec::new();
        let mut m = out.message();
        assert_eq!(m.index(first), Some(0));
        assert_eq!(m.index(second), Some(1));
        assert_eq!(m.index(first), Some(0));
        assert_eq!(m.index(second), Some(1));
        let mut bytes = Vec::new();
        m.write_header(&mut bytes);
        incoming.read_header(&bytes[2..], &mut refs).unwrap();
        assert_eq!(refs, vec![first, second]);
        // The next message: the slot holds the second, so the first is sent as text again.
        let mut m = out.message();
        assert_eq!(m.index(second), Some(0));
        assert_eq!(m.index(first), Some(1));
        let mut bytes = Vec::new();
        m.write_header(&mut bytes);
        assert!(
            bytes
                .windows(first.as_str().len())
                .any(|w| w == first.as_str().as_bytes())
        );
        incoming.read_header(&bytes[2..], &mut refs).unwrap();
        assert_eq!(refs, vec![second, first]);
    }

    #[test]
    fn odd_counts_long_atoms_and_empty_headers() {
        let mut out = OutCache::default();
        let mut incoming = InCache::default();
        let mut refs = Vec::new();
        // Longer than 255 bytes (so the long-atoms flag is set), 200 characters.
        let long = "é".repeat(200);
        let mut m = out.message();
        m.index(a("one"));
        m.index(a(&long));
        m.index(a("three"));
        let mut bytes = Vec::new();
        m.write_header(&mut bytes);
        incoming.read_header(&bytes[2..], &mut refs).unwrap();
        assert_eq!(refs, vec![a("one"), a(&long), a("three")]);

        let m = out.message();
        let mut empty = Vec::new();
        m.write_header(&mut empty);
        assert_eq!(empty, vec![131, 68, 0]);
        assert_eq!(incoming.read_header(&empty[2..], &mut refs).unwrap(), 1);
        assert!(refs.is_empty());
    }

    #[test]
    fn reads_the_header_of_the_otp_documentation_example() {
        // From erl_ext_dist: 5 refs, two already cached (segment 4 index 10, segment 0 index
        // 5), then 'reg', 'call' and 'set_get_state' new.
        let mut incoming = InCache::default();
        incoming.slots[4 * 256 + 10] = Some(a("node_a@host"));
        incoming.slots[5] = Some(a("node_b@host"));
        let bytes = [
            5, 4, 137, 9, 10, 5, 236, 3, 114, 101, 103, 9, 4, 99, 97, 108, 108, 238, 13, 115, 101,
            116, 95, 103, 101, 116, 95, 115, 116, 97, 116, 101,
        ];
        let mut refs = Vec::new();
        assert_eq!(
            incoming.read_header(&bytes, &mut refs).unwrap(),
            bytes.len()
        );
        assert_eq!(
            refs,
            vec![
                a("node_a@host"),
                a("node_b@host"),
                a("reg"),
                a("call"),
                a("set_get_state")
            ]
        );
    }

    #[test]
    fn bad_headers_are_errors() {
        let mut incoming = InCache::default();
        let mut refs = Vec::new();
        // A reference to a slot nobody filled.
        assert!(incoming.read_header(&[1, 0, 7], &mut refs).is_err());
        // Truncated text.
        assert!(
            incoming
                .read_header(&[1, 8, 7, 5, b'a'], &mut refs)
                .is_err()
        );
        assert!(incoming.read_header(&[], &mut refs).is_err());
    }
}
