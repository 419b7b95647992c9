//! The External Term Format, straight to and from [`Value`]s.
//!
//! This is the data plane's codec: every call's request and reply goes through it, so it
//! allocates only what the resulting value keeps (no intermediate `eetf::Term` tree, no
//! per-atom strings: atoms are interned as they are read). The rare term kinds the node never
//! looks into — ports, funs, bit strings — are handed to `eetf` as a slice. Decoding checks every
//! length against the bytes actually present and limits nesting, so hostile input gets an error,
//! never an allocation it cannot back or a stack overflow.

use crate::term::{Atom, Pid, Ref, Value};
use num_bigint::{BigInt, Sign};

/// Deepest nesting accepted: room for a filter of the protocol's 256 levels inside the
/// `{'$gen_call', From, {query, R, #{filter => ...}}}` around it.
pub const MAX_DEPTH: usize = 300;

const VERSION: u8 = 131;

/// The error reason of a term nested deeper than [`MAX_DEPTH`].
pub const TOO_DEEP_REASON: &str = "term nests too deeply";

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
}

/// The atom that stands for a term cut off by [`decode_truncated`].
pub const TOO_DEEP: &str = "$too_deep";

type Result<T> = std::result::Result<T, DecodeError>;

/// Decodes one term starting with the version byte; returns it and the bytes used.
pub fn decode(bytes: &[u8]) -> Result<(Value, usize)> {
    decode_with(bytes, false)
}

/// Like [`decode`], but terms nested deeper than [`MAX_DEPTH`] become the atom [`TOO_DEEP`]:
/// enough to read who sent a message too deep to serve, and answer them.
pub fn decode_truncated(bytes: &[u8]) -> Result<(Value, usize)> {
    decode_with(bytes, true)
}

fn decode_with(bytes: &[u8], truncate: bool) -> Result<(Value, usize)> {
    let mut d = Decoder {
        bytes,
        pos: 0,
        truncate,
    };
    if d.u8()? != VERSION {
        return d.fail("missing version byte 131");
    }
    let value = d.term(0)?;
    Ok((value, d.pos))
}

/// Appends `value`, with the version byte, to `out`.
pub fn encode(value: &Value, out: &mut Vec<u8>) {
    out.push(VERSION);
    encode_term(value, out);
}

impl<'a> Decoder<'a> {
    fn fail<T>(&self, reason: impl Into<String>) -> Result<T> {
        Err(DecodeError {
            offset: self.pos,
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
            _ => self.fail("expected an atom"),
        }
    }

    #[inline(never)]
    fn compound(&mut self, tag: u8, depth: usize) -> Result<Value> {
        match tag {
            104 | 105 => {
                let n = if tag == 104 {
                    self.u8()? as usize
                } else {
                    self.u32()? as usize
                };
                let n = self.count(n, 1)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.term(depth + 1)?);
                }
                Ok(Value::tuple(items))
            }
            108 => {
                let n = self.u32()? as usize;
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
        let mut with_version = Vec::with_capacity(self.bytes.len() - start + 1);
        with_version.push(VERSION);
        with_version.extend_from_slice(&self.bytes[start..]);
        let used = super::etf_guard::check_term(&with_version).map_err(|e| DecodeError {
            offset: start + e.offset.saturating_sub(1),
            reason: e.reason.to_string(),
        })?;
        let term = eetf::Term::decode(&with_version[..used]).map_err(|e| DecodeError {
            offset: start,
            reason: e.to_string(),
        })?;
        self.pos = start + used - 1;
        Ok(Value::Opaque(Box::new(term)))
    }

    fn term(&mut self, depth: usize) -> Result<Value> {
        if depth > MAX_DEPTH {
            if !self.truncate {
                return self.fail(TOO_DEEP_REASON);
            }
            let len =
                super::etf_guard::skip_term(&self.bytes[self.pos..]).map_err(|e| DecodeError {
                    offset: self.pos + e.offset,
                    reason: e.reason.to_string(),
                })?;
            self.pos += len;
            return Atom::new(TOO_DEEP)
                .map(Value::Atom)
                .or_else(|e| self.fail(e.to_string()));
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
            119 | 118 | 115 | 100 => {
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
                Value::list(
                    self.take(n)?
                        .iter()
                        .map(|&b| Value::Int(b as i64))
                        .collect(),
                )
            }
            104 | 105 | 108 | 116 => self.compound(tag, depth)?,
            110 | 111 => {
                let n = if tag == 110 {
                    self.u8()? as usize
                } else {
                    self.u32()? as usize
                };
                let sign = if self.u8()? == 0 {
                    Sign::Plus
                } else {
                    Sign::Minus
                };
                Value::integer(BigInt::from_bytes_le(sign, self.take(n)?))
            }
            88 | 103 => {
                let node = self.atom()?;
                let id = self.u32()?;
                let serial = self.u32()?;
                let creation = if tag == 88 {
                    self.u32()?
                } else {
                    self.u8()? as u32
                };
                Value::Pid(Box::new(Pid {
                    node,
                    id,
                    serial,
                    creation,
                }))
            }
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
            89 | 102 | 120 | 113 | 112 | 117 | 77 => self.opaque(start)?,
            80 => return self.fail("compressed terms are not accepted"),
            82 => return self.fail("atom cache references were not negotiated"),
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

/// Appends an atom.
pub fn encode_atom(atom: Atom, out: &mut Vec<u8>) {
    let s = atom.as_str().as_bytes();
    if s.len() <= 255 {
        out.push(119);
        out.push(s.len() as u8);
    } else {
        out.push(118);
        put_u16(out, s.len());
    }
    out.extend_from_slice(s);
}

/// Appends a pid.
pub fn encode_pid(pid: &Pid, out: &mut Vec<u8>) {
    out.push(88);
    encode_atom(pid.node, out);
    out.extend_from_slice(&pid.id.to_be_bytes());
    out.extend_from_slice(&pid.serial.to_be_bytes());
    out.extend_from_slice(&pid.creation.to_be_bytes());
}

/// Appends a small integer.
pub fn encode_int(i: i64, out: &mut Vec<u8>) {
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

/// Appends a tuple header of `arity` elements.
pub fn encode_tuple_header(arity: usize, out: &mut Vec<u8>) {
    if arity <= 255 {
        out.push(104);
        out.push(arity as u8);
    } else {
        out.push(105);
        put_u32(out, arity);
    }
}

/// Appends a term (no version byte).
pub fn encode_term(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Int(i) => encode_int(*i, out),
        Value::BigInt(b) => {
            let (sign, bytes) = b.to_bytes_le();
            if bytes.len() <= 255 {
                out.push(110);
                out.push(bytes.len() as u8);
            } else {
                out.push(111);
                put_u32(out, bytes.len());
            }
            out.push(u8::from(sign == Sign::Minus));
            out.extend_from_slice(&bytes);
        }
        Value::Float(f) => {
            out.push(70);
            out.extend_from_slice(&f.to_be_bytes());
        }
        Value::Atom(a) => encode_atom(*a, out),
        Value::SmallBin { .. } | Value::Bin(_) => {
            let bytes = value.as_bytes().unwrap_or_default();
            out.push(109);
            put_u32(out, bytes.len());
            out.extend_from_slice(bytes);
        }
        Value::Tuple(items) => {
            encode_tuple_header(items.len(), out);
            for item in items.iter() {
                encode_term(item, out);
            }
        }
        Value::List(items) => {
            if !items.is_empty() {
                out.push(108);
                put_u32(out, items.len());
                for item in items.iter() {
                    encode_term(item, out);
                }
            }
            out.push(106);
        }
        Value::ImproperList(pair) => {
            out.push(108);
            put_u32(out, pair.0.len());
            for item in pair.0.iter() {
                encode_term(item, out);
            }
            encode_term(&pair.1, out);
        }
        Value::Map(entries) => {
            out.push(116);
            put_u32(out, entries.len());
            for (k, v) in entries.iter() {
                encode_term(k, out);
                encode_term(v, out);
            }
        }
        Value::Pid(pid) => encode_pid(pid, out),
        Value::Ref(r) => {
            out.push(90);
            put_u16(out, r.words().len());
            encode_atom(r.node, out);
            out.extend_from_slice(&r.creation.to_be_bytes());
            for w in r.words() {
                out.extend_from_slice(&w.to_be_bytes());
            }
        }
        Value::Opaque(term) => {
            let mut buf = Vec::new();
            if term.encode(&mut buf).is_ok() && buf.len() > 1 {
                out.extend_from_slice(&buf[1..]);
            } else {
                // eetf cannot encode it (it never fails for terms it decoded); keep the frame
                // well-formed with a recognisable placeholder.
                encode_atom(Atom::from_static("undefined"), out);
            }
        }
    }
}

/// Appends a record-shaped map (atom keys) without building an intermediate map value.
pub fn encode_record(record: &crate::term::Record, out: &mut Vec<u8>) {
    out.push(116);
    put_u32(out, record.shape().fields().len());
    for (field, value) in record.iter() {
        encode_atom(field, out);
        encode_term(value, out);
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
