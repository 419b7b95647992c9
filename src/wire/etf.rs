//! The External Term Format, straight to and from [`Value`]s.
//!
//! This is the data plane's codec: every call's request and reply goes through it, so it
//! allocates only what the resulting value keeps (no intermediate `eetf::Term` tree, no
//! per-atom strings: atoms are interned as they are read). The rare term kinds the node never
//! looks into — ports, funs, bit strings — are handed to `eetf` as a slice. Decoding checks every
//! length against the bytes actually present and limits nesting, so hostile input gets an error,
//! never an allocation it cannot back or a stack overflow.

use super::atom_cache::AtomRefs;
use super::limits::Limits;
use crate::term::{Atom, Pid, Ref, Value};
use num_bigint::{BigInt, Sign};

/// Deepest nesting accepted by default (see [`Limits::max_term_depth`]).
pub const MAX_DEPTH: usize = Limits::DEFAULT_MAX_TERM_DEPTH;

/// The most characters an atom may have (as on the BEAM): atoms are never freed, so a peer must
/// not be able to make long ones.
pub const MAX_ATOM_CHARS: usize = 255;

const VERSION: u8 = 131;

/// The error reason of a term nested deeper than [`Limits::max_term_depth`].
pub const TOO_DEEP_REASON: &str = "term nests too deeply";
/// The error reason of a list, tuple or map longer than [`Limits::max_list_length`].
pub const TOO_LONG_REASON: &str = "a list, tuple or map is longer than the limit";
/// The error reason of a bignum larger than [`Limits::max_bignum_bytes`].
pub const BIGNUM_REASON: &str = "a bignum is larger than the limit";

/// Whether a decode error is a limit violation (the term is well-formed but over a limit), as
/// opposed to malformed bytes: such a message can still be read with the offending parts cut
/// off ([`decode_limited`] with `truncate`), to answer its sender.
pub fn is_limit(reason: &str) -> bool {
    [TOO_DEEP_REASON, TOO_LONG_REASON, BIGNUM_REASON].contains(&reason)
}

/// Why bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed term at byte {offset}: {reason}")]
pub struct DecodeError {
    /// Where.
    pub offset: usize,
    /// What is wrong.
    pub reason: String,
}

struct Decoder<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Replace terms nested too deeply by [`TOO_DEEP`] instead of failing.
    truncate: bool,
    /// The atoms `ATOM_CACHE_REF` indexes into (the message's distribution header).
    refs: &'a [Atom],
    limits: Limits,
}

/// The atom that stands for a term cut off by [`decode_truncated`].
pub const TOO_DEEP: &str = "$too_deep";

type Result<T> = std::result::Result<T, DecodeError>;

/// Decodes one term starting with the version byte, within the default [`Limits`]; returns it
/// and the bytes used.
pub fn decode(bytes: &[u8]) -> Result<(Value, usize)> {
    decode_limited(bytes, None, false, &Limits::default())
}

/// Like [`decode`], but terms over a limit (nested deeper than [`MAX_DEPTH`], say) become the
/// atom [`TOO_DEEP`]: enough to read who sent a message too deep to serve, and answer them.
pub fn decode_truncated(bytes: &[u8]) -> Result<(Value, usize)> {
    decode_limited(bytes, None, true, &Limits::default())
}

/// Decodes one term that follows a distribution header: no version byte, and atoms may be
/// `ATOM_CACHE_REF`s into `refs` (the header's list).
pub fn decode_body(bytes: &[u8], refs: &[Atom], truncate: bool) -> Result<(Value, usize)> {
    decode_limited(bytes, Some(refs), truncate, &Limits::default())
}

/// Decodes one term within `limits`: with the version byte when `refs` is `None`, else a term
/// after a distribution header (no version byte, atoms may index `refs`). With `truncate`,
/// terms over a limit become the atom [`TOO_DEEP`] instead of failing (never allocated: their
/// extent is found without decoding them). Returns the term and the bytes used.
pub fn decode_limited(
    bytes: &[u8],
    refs: Option<&[Atom]>,
    truncate: bool,
    limits: &Limits,
) -> Result<(Value, usize)> {
    let (body, skip, refs) = match refs {
        Some(refs) => (bytes, 0, refs),
        None => {
            if bytes.first() != Some(&VERSION) {
                return Err(DecodeError {
                    offset: 0,
                    reason: "missing version byte 131".into(),
                });
            }
            (&bytes[1..], 1, &[][..])
        }
    };
    let mut d = Decoder {
        bytes: body,
        pos: 0,
        truncate,
        refs,
        limits: *limits,
    };
    let value = d.term(0).map_err(|e| DecodeError {
        offset: e.offset + skip,
        reason: e.reason,
    })?;
    Ok((value, d.pos + skip))
}

/// Reads a control message `{Op, FromPid, Unused, ToName}` (`REG_SEND` when `op` is 6) the
/// way [`decode_limited`] would (same `refs` convention), without building it as a term: the
/// sender, the name and the bytes used. `None` when the bytes are anything else, malformed
/// ones included; the general decoder then reads them (and says what is wrong).
pub fn name_send_control(
    bytes: &[u8],
    refs: Option<&[Atom]>,
    op: u8,
) -> Option<(Pid, Atom, usize)> {
    let (body, skip, refs) = match refs {
        Some(refs) => (bytes, 0, refs),
        None if bytes.first() == Some(&VERSION) => (&bytes[1..], 1, &[][..]),
        None => return None,
    };
    let mut d = Decoder {
        bytes: body,
        pos: 0,
        truncate: false,
        refs,
        limits: Limits::default(),
    };
    if d.take(4).ok()? != [104, 4, 97, op] {
        return None;
    }
    let from = match d.u8().ok()? {
        tag @ (88 | 103) => d.pid_body(tag).ok()?,
        _ => return None,
    };
    d.atom().ok()?;
    let to = d.atom().ok()?;
    Some((from, to, d.pos + skip))
}

/// Appends `value`, with the version byte, to `out` (atoms spelled out).
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    out.push(VERSION);
    TermWriter::plain(out).term(value);
}

impl<'a> Decoder<'a> {
    fn fail<T>(&self, reason: impl Into<String>) -> Result<T> {
        Err(DecodeError {
            offset: self.pos,
            reason: reason.into(),
        })
    }

    fn fail_at<T>(&self, offset: usize, reason: impl Into<String>) -> Result<T> {
        Err(DecodeError {
            offset,
            reason: reason.into(),
        })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        if n > self.bytes.len() - self.pos {
            return self.fail("length exceeds the bytes present");
        }
        let s = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<usize> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]) as usize)
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A count of items that each take at least `min` bytes must fit in what is left.
    fn count(&mut self, n: usize, min: usize) -> Result<usize> {
        if n.saturating_mul(min) > self.bytes.len() - self.pos {
            return self.fail("element count exceeds the bytes present");
        }
        Ok(n)
    }

    fn atom_text(&mut self, len: usize, latin1: bool) -> Result<Atom> {
        let raw = self.take(len)?;
        // Latin-1 bytes are one character each; UTF-8 has at least one byte per character.
        if raw.len() > MAX_ATOM_CHARS
            && (latin1
                || std::str::from_utf8(raw).map_or(true, |s| s.chars().count() > MAX_ATOM_CHARS))
        {
            return self.fail("atom longer than 255 characters");
        }
        let text: std::borrow::Cow<str> = if latin1 {
            if raw.is_ascii() {
                std::borrow::Cow::Borrowed(std::str::from_utf8(raw).unwrap_or_default())
            } else {
                std::borrow::Cow::Owned(raw.iter().map(|&b| b as char).collect())
            }
        } else {
            match std::str::from_utf8(raw) {
                Ok(s) => std::borrow::Cow::Borrowed(s),
                Err(_) => return self.fail("atom is not valid UTF-8"),
            }
        };
        Atom::new(&text).or_else(|e| self.fail(e.to_string()))
    }

    fn atom(&mut self) -> Result<Atom> {
        match self.u8()? {
            119 => {
                let n = self.u8()? as usize;
                self.atom_text(n, false)
            }
            118 => {
                let n = self.u16()?;
                self.atom_text(n, false)
            }
            115 => {
                let n = self.u8()? as usize;
                self.atom_text(n, true)
            }
            100 => {
                let n = self.u16()?;
                self.atom_text(n, true)
            }
            82 => {
                let i = self.u8()? as usize;
                match self.refs.get(i) {
                    Some(atom) => Ok(*atom),
                    None => self.fail("atom cache reference outside the header's list"),
                }
            }
            _ => self.fail("expected an atom"),
        }
    }

    /// A term at `start` exceeds a limit: an error, or when truncating, the atom [`TOO_DEEP`]
    /// in its place (its extent found without decoding it).
    #[inline(never)]
    fn over_limit(&mut self, start: usize, reason: &'static str) -> Result<Value> {
        if !self.truncate {
            self.pos = start;
            return self.fail(reason);
        }
        let len = super::etf_guard::skip_term(&self.bytes[start..]).map_err(|e| DecodeError {
            offset: start + e.offset,
            reason: e.reason.to_string(),
        })?;
        self.pos = start + len;
        Atom::new(TOO_DEEP)
            .map(Value::Atom)
            .or_else(|e| self.fail(e.to_string()))
    }

    #[inline(never)]
    fn compound(&mut self, tag: u8, depth: usize, start: usize) -> Result<Value> {
        match tag {
            104 | 105 => {
                let n = if tag == 104 {
                    self.u8()? as usize
                } else {
                    self.u32()? as usize
                };
                if n > self.limits.max_list_length {
                    return self.over_limit(start, TOO_LONG_REASON);
                }
                let n = self.count(n, 1)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.term(depth + 1)?);
                }
                Ok(Value::tuple(items))
            }
            108 => {
                let n = self.u32()? as usize;
                if n > self.limits.max_list_length {
                    return self.over_limit(start, TOO_LONG_REASON);
                }
                let n = self.count(n, 1)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.term(depth + 1)?);
                }
                Ok(match self.term(depth + 1)? {
                    Value::List(tail) if tail.is_empty() => Value::list(items),
                    Value::List(tail) => {
                        items.extend(tail.into_vec());
                        Value::list(items)
                    }
                    tail => Value::ImproperList(Box::new((items.into_boxed_slice(), tail))),
                })
            }
            _ => {
                let n = self.u32()? as usize;
                if n > self.limits.max_list_length {
                    return self.over_limit(start, TOO_LONG_REASON);
                }
                let n = self.count(n, 2)?;
                let mut entries = Vec::with_capacity(n);
                for _ in 0..n {
                    let k = self.term(depth + 1)?;
                    let v = self.term(depth + 1)?;
                    entries.push((k, v));
                }
                Ok(Value::map(entries))
            }
        }
    }

    #[inline(never)]
    fn opaque(&mut self, start: usize) -> Result<Value> {
        // Find the term's extent first, so only its own bytes are copied.
        let (len, cache_refs) = super::etf_guard::check_body_with_refs(
            &self.bytes[start..],
            self.limits.max_term_depth,
        )
        .map_err(|e| DecodeError {
            offset: start + e.offset,
            reason: e.reason.to_string(),
        })?;
        let body = &self.bytes[start..start + len];
        let mut with_version = Vec::with_capacity(len + 1);
        with_version.push(VERSION);
        // `eetf` knows no atom cache: each `ATOM_CACHE_REF` becomes the atom it stands for.
        let mut copied = 0;
        for at in cache_refs {
            with_version.extend_from_slice(&body[copied..at]);
            let atom = match self.refs.get(body[at + 1] as usize) {
                Some(atom) => atom.as_str(),
                None => {
                    return self
                        .fail_at(start + at, "atom cache reference outside the header's list");
                }
            };
            with_version.push(118); // ATOM_UTF8_EXT
            with_version.extend_from_slice(&(atom.len() as u16).to_be_bytes());
            with_version.extend_from_slice(atom.as_bytes());
            copied = at + 2;
        }
        with_version.extend_from_slice(&body[copied..]);
        // The guard above rules out what `eetf` would panic on; should a case slip through, a
        // panic still becomes a malformed-term error rather than the end of the connection.
        let decoded = std::panic::catch_unwind(|| eetf::Term::decode(&with_version[..]));
        let term = match decoded {
            Ok(Ok(term)) => term,
            Ok(Err(e)) => return self.fail_at(start, e.to_string()),
            Err(_) => return self.fail_at(start, "term the decoder cannot read"),
        };
        self.pos = start + len;
        Ok(Value::Opaque(Box::new(term)))
    }

    /// A pid after its tag (`NEW_PID_EXT` 88 or `PID_EXT` 103).
    fn pid_body(&mut self, tag: u8) -> Result<Pid> {
        let node = self.atom()?;
        let id = self.u32()?;
        let serial = self.u32()?;
        let creation = if tag == 88 {
            self.u32()?
        } else {
            self.u8()? as u32
        };
        Ok(Pid {
            node,
            id,
            serial,
            creation,
        })
    }

    fn term(&mut self, depth: usize) -> Result<Value> {
        if depth > self.limits.max_term_depth {
            return self.over_limit(self.pos, TOO_DEEP_REASON);
        }
        let start = self.pos;
        let tag = self.u8()?;
        Ok(match tag {
            97 => Value::Int(self.u8()? as i64),
            98 => Value::Int(self.u32()? as i32 as i64),
            70 => {
                let b = self.take(8)?;
                Value::Float(f64::from_be_bytes(b.try_into().unwrap_or_default()))
            }
            99 => {
                let b = self.take(31)?;
                let text = String::from_utf8_lossy(b);
                match text.trim_end_matches('\0').trim().parse::<f64>() {
                    Ok(f) => Value::Float(f),
                    Err(_) => return self.fail("bad FLOAT_EXT"),
                }
            }
            119 | 118 | 115 | 100 | 82 => {
                self.pos = start;
                Value::Atom(self.atom()?)
            }
            109 => {
                let n = self.u32()? as usize;
                Value::binary(self.take(n)?)
            }
            106 => Value::empty_list(),
            107 => {
                let n = self.u16()?;
                if n > self.limits.max_list_length {
                    return self.over_limit(start, TOO_LONG_REASON);
                }
                Value::list(
                    self.take(n)?
                        .iter()
                        .map(|&b| Value::Int(b as i64))
                        .collect(),
                )
            }
            104 | 105 | 108 | 116 => self.compound(tag, depth, start)?,
            110 | 111 => {
                let n = if tag == 110 {
                    self.u8()? as usize
                } else {
                    self.u32()? as usize
                };
                if n > self.limits.max_bignum_bytes {
                    return self.over_limit(start, BIGNUM_REASON);
                }
                let sign = if self.u8()? == 0 {
                    Sign::Plus
                } else {
                    Sign::Minus
                };
                Value::integer(BigInt::from_bytes_le(sign, self.take(n)?))
            }
            88 | 103 => Value::Pid(Box::new(self.pid_body(tag)?)),
            90 | 114 => {
                let n = self.u16()?;
                if n > 5 {
                    return self.fail("reference with too many words");
                }
                let node = self.atom()?;
                let creation = if tag == 90 {
                    self.u32()?
                } else {
                    self.u8()? as u32
                };
                let mut words = [0u32; 5];
                for w in words.iter_mut().take(n) {
                    *w = self.u32()?;
                }
                Value::Ref(Box::new(Ref::new(node, creation, &words[..n])))
            }
            101 => {
                let node = self.atom()?;
                let id = self.u32()?;
                let creation = self.u8()? as u32;
                Value::Ref(Box::new(Ref::new(node, creation, &[id])))
            }
            // Ports, funs, bit strings: find the term's extent, let eetf decode the slice.
            // Ports and external funs are read here, so cached node and module atoms resolve.
            89 | 102 | 120 => {
                let node = self.atom()?;
                let id = match tag {
                    120 => {
                        let b = self.take(8)?;
                        u64::from_be_bytes(b.try_into().unwrap_or_default())
                    }
                    _ => self.u32()? as u64,
                };
                let creation = if tag == 102 {
                    self.u8()? as u32
                } else {
                    self.u32()?
                };
                Value::Opaque(Box::new(eetf::Term::Port(eetf::Port {
                    node: eetf::Atom::from(node.as_str()),
                    id,
                    creation,
                })))
            }
            113 => {
                let module = self.atom()?;
                let function = self.atom()?;
                let arity = match self.term(depth + 1)? {
                    Value::Int(n) if (0..=255).contains(&n) => n as u8,
                    _ => return self.fail("bad arity in EXPORT_EXT"),
                };
                Value::Opaque(Box::new(eetf::Term::ExternalFun(Box::new(
                    eetf::ExternalFun {
                        module: eetf::Atom::from(module.as_str()),
                        function: eetf::Atom::from(function.as_str()),
                        arity,
                    },
                ))))
            }
            112 | 117 | 77 => self.opaque(start)?,
            80 => return self.fail("compressed terms are not accepted"),
            _ => return self.fail(format!("unknown term tag {tag}")),
        })
    }
}

fn put_u16(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u16).to_be_bytes());
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&(n as u32).to_be_bytes());
}

/// Writes terms (without version byte) into a buffer; atoms go through the distribution
/// header's atom cache when the message has one (see [`super::atom_cache`]).
pub struct TermWriter<'a, 'c> {
    /// Where the bytes go.
    pub out: &'a mut Vec<u8>,
    atoms: Option<&'a mut AtomRefs<'c>>,
}

impl<'a, 'c> TermWriter<'a, 'c> {
    /// A writer that spells every atom out.
    pub fn plain(out: &'a mut Vec<u8>) -> TermWriter<'a, 'c> {
        TermWriter { out, atoms: None }
    }

    /// A writer that refers to atoms through a message's atom cache references.
    pub fn cached(out: &'a mut Vec<u8>, atoms: &'a mut AtomRefs<'c>) -> TermWriter<'a, 'c> {
        TermWriter {
            out,
            atoms: Some(atoms),
        }
    }

    /// An atom.
    pub fn atom(&mut self, atom: Atom) {
        if let Some(index) = self.atoms.as_mut().and_then(|refs| refs.index(atom)) {
            self.out.push(82);
            self.out.push(index);
            return;
        }
        let s = atom.as_str().as_bytes();
        if s.len() <= 255 {
            self.out.push(119);
            self.out.push(s.len() as u8);
        } else {
            self.out.push(118);
            put_u16(self.out, s.len());
        }
        self.out.extend_from_slice(s);
    }

    /// A pid.
    pub fn pid(&mut self, pid: &Pid) {
        self.out.push(88);
        self.atom(pid.node);
        self.out.extend_from_slice(&pid.id.to_be_bytes());
        self.out.extend_from_slice(&pid.serial.to_be_bytes());
        self.out.extend_from_slice(&pid.creation.to_be_bytes());
    }

    /// A reference.
    pub fn reference(&mut self, r: &Ref) {
        self.out.push(90);
        put_u16(self.out, r.words().len());
        self.atom(r.node);
        self.out.extend_from_slice(&r.creation.to_be_bytes());
        for w in r.words() {
            self.out.extend_from_slice(&w.to_be_bytes());
        }
    }

    /// An integer, in its smallest encoding.
    pub fn int(&mut self, i: i64) {
        let out = &mut *self.out;
        if (0..=255).contains(&i) {
            out.push(97);
            out.push(i as u8);
        } else if let Ok(small) = i32::try_from(i) {
            out.push(98);
            out.extend_from_slice(&small.to_be_bytes());
        } else {
            let magnitude = i.unsigned_abs().to_le_bytes();
            let n = 8 - magnitude.iter().rev().take_while(|&&b| b == 0).count();
            out.push(110);
            out.push(n as u8);
            out.push(u8::from(i < 0));
            out.extend_from_slice(&magnitude[..n]);
        }
    }

    /// The header of a tuple of `arity` elements (the elements follow).
    pub fn tuple_header(&mut self, arity: usize) {
        if arity <= 255 {
            self.out.push(104);
            self.out.push(arity as u8);
        } else {
            self.out.push(105);
            put_u32(self.out, arity);
        }
    }

    /// A proper list of `items`, each written by `item`.
    pub fn list<T>(&mut self, items: &[T], mut item: impl FnMut(&mut Self, &T)) {
        if !items.is_empty() {
            self.out.push(108);
            put_u32(self.out, items.len());
            for i in items {
                item(self, i);
            }
        }
        self.out.push(106);
    }

    /// A record-shaped map (atom keys), without building a map value first.
    pub fn record(&mut self, record: &crate::term::Record) {
        self.out.push(116);
        put_u32(self.out, record.shape().fields().len());
        for (field, value) in record.iter() {
            self.atom(field);
            self.term(value);
        }
    }

    /// Any term.
    pub fn term(&mut self, value: &Value) {
        match value {
            Value::Int(i) => self.int(*i),
            Value::BigInt(b) => {
                let (sign, bytes) = b.to_bytes_le();
                if bytes.len() <= 255 {
                    self.out.push(110);
                    self.out.push(bytes.len() as u8);
                } else {
                    self.out.push(111);
                    put_u32(self.out, bytes.len());
                }
                self.out.push(u8::from(sign == Sign::Minus));
                self.out.extend_from_slice(&bytes);
            }
            Value::Float(f) => {
                self.out.push(70);
                self.out.extend_from_slice(&f.to_be_bytes());
            }
            Value::Atom(a) => self.atom(*a),
            Value::SmallBin { .. } | Value::Bin(_) => {
                let bytes = value.as_bytes().unwrap_or_default();
                self.out.push(109);
                put_u32(self.out, bytes.len());
                self.out.extend_from_slice(bytes);
            }
            Value::Tuple(items) => {
                self.tuple_header(items.len());
                for item in items.iter() {
                    self.term(item);
                }
            }
            Value::List(items) => self.list(items, |w, item| w.term(item)),
            Value::ImproperList(pair) => {
                self.out.push(108);
                put_u32(self.out, pair.0.len());
                for item in pair.0.iter() {
                    self.term(item);
                }
                self.term(&pair.1);
            }
            Value::Map(entries) => {
                self.out.push(116);
                put_u32(self.out, entries.len());
                for (k, v) in entries.iter() {
                    self.term(k);
                    self.term(v);
                }
            }
            Value::Pid(pid) => self.pid(pid),
            Value::Ref(r) => self.reference(r),
            Value::Opaque(term) => {
                let mut buf = Vec::new();
                if term.encode(&mut buf).is_ok() && buf.len() > 1 {
                    self.out.extend_from_slice(&buf[1..]);
                } else {
                    // eetf cannot encode it (it never fails for terms it decoded); keep the
                    // frame well-formed with a recognisable placeholder.
                    self.atom(Atom::from_static("undefined"));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::{from_term, parse_term};

    /// Terms encoded by OTP 25's term_to_binary/1.
    const SAMPLES: &[&[u8]] = &[
        // #{a => 1, b => <<"x">>, c => [1.5, nil, {t}], d => 123456789012345678901234567890}
        &[
            131, 116, 0, 0, 0, 4, 100, 0, 1, 97, 97, 1, 100, 0, 1, 98, 109, 0, 0, 0, 1, 120, 100,
            0, 1, 99, 108, 0, 0, 0, 3, 70, 63, 248, 0, 0, 0, 0, 0, 0, 100, 0, 3, 110, 105, 108,
            104, 1, 100, 0, 1, 116, 106, 100, 0, 1, 100, 110, 13, 0, 210, 10, 63, 78, 238, 224,
            115, 195, 246, 15, 233, 142, 1,
        ],
        &[131, 107, 0, 3, 97, 98, 99],
        &[131, 108, 0, 0, 0, 1, 97, 1, 97, 2],
        &[131, 98, 255, 255, 255, 251],
        &[131, 98, 0, 1, 17, 112],
        &[131, 110, 5, 1, 0, 26, 113, 24, 2],
    ];

    #[test]
    fn decodes_like_eetf_and_roundtrips() {
        for bytes in SAMPLES {
            let (ours, used) = decode(bytes).unwrap();
            assert_eq!(used, bytes.len());
            let theirs = from_term(eetf::Term::decode(*bytes).unwrap()).unwrap();
            assert_eq!(ours, theirs);
            let mut again = Vec::new();
            encode(&ours, &mut again);
            let reread = from_term(eetf::Term::decode(&again[..]).unwrap()).unwrap();
            assert_eq!(reread, ours);
        }
    }

    #[test]
    fn encodes_what_eetf_reads_back() {
        let v = parse_term(
            "{ok, 'Elixir.User', -12, 300, -70000, 9000000000, -9000000000, 3.5, <<\"hi\">>, [1, 2 | 3], [], #{id => [a]}, 123456789012345678901234567890123}",
        )
        .unwrap();
        let mut bytes = Vec::new();
        encode(&v, &mut bytes);
        let via_eetf = from_term(eetf::Term::decode(&bytes[..]).unwrap()).unwrap();
        assert_eq!(via_eetf, v);
        assert_eq!(decode(&bytes).unwrap().0, v);
    }

    #[test]
    fn bit_binaries_with_impossible_bit_counts_are_refused() {
        // <<255, 4:3>> is 77, length 2, 3 bits: a valid bit binary.
        assert!(decode(&[131, 77, 0, 0, 0, 2, 3, 255, 128]).is_ok());
        for (len, bits) in [(2u8, 0u8), (2, 9), (2, 255), (0, 3), (0, 0)] {
            let mut bytes = vec![131, 77, 0, 0, 0, len, bits];
            bytes.extend(std::iter::repeat_n(7u8, len as usize));
            let e = decode(&bytes).unwrap_err();
            assert!(
                e.reason.contains("bit count"),
                "{len} bytes, {bits} bits: {e}"
            );
        }
    }

    #[test]
    fn opaque_terms_may_use_the_atom_cache() {
        // A fun as a peer using the atom cache sends it: its module atom is ATOM_CACHE_REF 0.
        let fun = eetf::Term::from(eetf::InternalFun::New {
            module: eetf::Atom::from("my_mod"),
            arity: 1,
            pid: eetf::Pid::new("a@h", 70, 1, 99),
            free_vars: vec![eetf::Term::from(eetf::Atom::from("x"))],
            index: 2,
            uniq: [7; 16],
            old_index: 3,
            old_uniq: 4,
        });
        let mut plain = Vec::new();
        fun.encode(&mut plain).unwrap();
        let module = [&[119u8, 6][..], b"my_mod"].concat();
        let at = plain
            .windows(module.len())
            .position(|w| w == module)
            .unwrap();
        let mut cached = plain[1..at].to_vec();
        cached.extend_from_slice(&[82, 0]);
        cached.extend_from_slice(&plain[at + module.len()..]);
        // NEW_FUN_EXT's Size counts the bytes as sent: the reference is shorter than the atom.
        let size = u32::from_be_bytes(cached[1..5].try_into().unwrap()) - (module.len() as u32 - 2);
        cached[1..5].copy_from_slice(&size.to_be_bytes());
        let refs = [Atom::new("my_mod").unwrap()];
        let (v, used) = decode_body(&cached, &refs, false).unwrap();
        assert_eq!(used, cached.len());
        assert_eq!(v, from_term(fun).unwrap());
        // A reference outside the header's list is an error, not a panic.
        assert!(decode_body(&cached, &[], false).is_err());
    }

    #[test]
    fn pids_refs_and_opaque_terms_roundtrip() {
        let pid = eetf::Term::from(eetf::Pid::new("a@h", 70, 1, 99));
        let r = eetf::Term::from(eetf::Reference::from(("a@h", vec![1, 2, 3])));
        let port = eetf::Term::from(eetf::Port::from(("a@h", 5)));
        let bits = eetf::Term::from(eetf::BitBinary::from((vec![255, 4], 3)));
        let term = eetf::Term::from(eetf::Tuple::from(vec![pid, r, port, bits]));
        let mut bytes = Vec::new();
        term.encode(&mut bytes).unwrap();
        let (v, used) = decode(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        let items = v.as_tuple().unwrap();
        assert!(matches!(items[0], Value::Pid(_)));
        assert!(matches!(items[1], Value::Ref(_)));
        assert!(matches!(items[2], Value::Opaque(_)));
        assert_eq!(v, from_term(term).unwrap());
        let mut again = Vec::new();
        encode(&v, &mut again);
        assert_eq!(decode(&again).unwrap().0, v);
    }

    #[test]
    fn hostile_bytes_are_errors() {
        assert!(decode(&[131, 108, 0xff, 0xff, 0xff, 0xff, 106]).is_err());
        assert!(decode(&[131, 116, 0, 1, 0, 0, 97, 1]).is_err());
        assert!(decode(&[131, 109, 0, 0, 1, 0, 1]).is_err());
        assert!(decode(&[131, 104, 2, 97]).is_err());
        assert!(decode(&[131, 80, 0, 0, 0, 1]).is_err());
        assert!(decode(&[131, 200]).is_err());
        assert!(decode(&[130, 106]).is_err());
        assert!(decode(&[131, 119, 2, 0xff, 0xfe]).is_err());
    }

    /// Nesting at the limit decodes, one level more is refused: on the node's 8 MiB worker
    /// stacks (see main.rs), even in a debug build.
    #[test]
    fn nesting_is_limited() {
        let nested = |levels: usize| {
            let mut bytes = vec![131u8];
            for _ in 0..levels {
                bytes.extend_from_slice(&[104, 1]);
            }
            bytes.push(106);
            bytes
        };
        std::thread::Builder::new()
            .stack_size(8 * 1024 * 1024)
            .spawn(move || {
                assert!(decode(&nested(MAX_DEPTH)).is_ok());
                assert!(decode(&nested(MAX_DEPTH + 1)).is_err());
                assert!(decode(&nested(100_000)).is_err());
                // Truncated: the deep part becomes '$too_deep', the rest is read.
                let mut two = nested(100_000);
                two.extend_from_slice(&[131, 97, 7]);
                let (_, used) = decode_truncated(&two).unwrap();
                assert_eq!(decode(&two[used..]).unwrap().0, Value::Int(7));
            })
            .unwrap()
            .join()
            .unwrap();
    }

    #[test]
    fn latin1_atoms_are_read_as_characters() {
        // 'é' as ATOM_EXT (latin-1 byte 233).
        let (v, _) = decode(&[131, 100, 0, 1, 233]).unwrap();
        assert_eq!(v.as_atom().unwrap().as_str(), "é");
    }

    #[test]
    fn integers_use_minimal_encodings() {
        for i in [
            0i64,
            255,
            256,
            -1,
            i32::MAX as i64,
            i32::MIN as i64,
            1 << 40,
            -(1 << 40),
            i64::MIN,
            i64::MAX,
        ] {
            let mut bytes = Vec::new();
            encode(&Value::Int(i), &mut bytes);
            let back = from_term(eetf::Term::decode(&bytes[..]).unwrap()).unwrap();
            assert_eq!(back, Value::Int(i), "{i}");
        }
    }
}
