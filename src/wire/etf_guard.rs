//! A structural check of External Term Format bytes before they reach the decoder.
//!
//! `eetf` trusts the lengths and counts inside a term: a 20-byte frame claiming a list of four
//! billion elements makes it try to reserve hundreds of gigabytes, which aborts the process, and
//! a term nested a million levels deep overflows the stack. This guard walks the bytes without
//! allocating or recursing and rejects any term whose declared sizes exceed the bytes that are
//! actually there, that nests deeper than [`MAX_DEPTH`], or that uses encodings a distribution
//! channel never carries (compressed terms, `LOCAL_EXT`).

/// Deepest nesting of tuples, lists and maps accepted.
pub const MAX_DEPTH: usize = super::etf::MAX_DEPTH;

/// Why bytes are not an acceptable term.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed term at byte {offset}: {reason}")]
pub struct TermError {
    /// Where the problem is.
    pub offset: usize,
    /// What is wrong.
    pub reason: &'static str,
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    /// Where each `ATOM_CACHE_REF` tag is (see [`check_body_with_refs`]).
    cache_refs: Vec<usize>,
}

impl Cursor<'_> {
    fn fail<T>(&self, reason: &'static str) -> Result<T, TermError> {
        Err(TermError {
            offset: self.pos,
            reason,
        })
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn skip(&mut self, n: usize) -> Result<(), TermError> {
        if n > self.remaining() {
            return self.fail("length exceeds the bytes present");
        }
        self.pos += n;
        Ok(())
    }

    fn u8(&mut self) -> Result<u8, TermError> {
        let b = *self.bytes.get(self.pos).ok_or(TermError {
            offset: self.pos,
            reason: "truncated term",
        })?;
        self.pos += 1;
        Ok(b)
    }

    fn u16(&mut self) -> Result<usize, TermError> {
        Ok(((self.u8()? as usize) << 8) | self.u8()? as usize)
    }

    fn u32(&mut self) -> Result<usize, TermError> {
        Ok((self.u16()? << 16) | self.u16()?)
    }

    /// Checks that `count` items of at least `min_size` bytes each could fit.
    fn plausible(&self, count: usize, min_size: usize) -> Result<(), TermError> {
        if count.saturating_mul(min_size) > self.remaining() {
            return self.fail("element count exceeds the bytes present");
        }
        Ok(())
    }
}

/// Checks one term that starts with the version byte 131; returns how many bytes it used.
pub fn check_term(bytes: &[u8]) -> Result<usize, TermError> {
    let mut c = Cursor {
        bytes,
        pos: 0,
        cache_refs: Vec::new(),
    };
    if c.u8()? != 131 {
        return c.fail("missing version byte 131");
    }
    walk(&mut c, MAX_DEPTH)?;
    Ok(c.pos)
}

/// Checks one term without version byte, nested at most `max_depth` levels; returns its length.
pub fn check_body(bytes: &[u8], max_depth: usize) -> Result<usize, TermError> {
    check_body_with_refs(bytes, max_depth).map(|(len, _)| len)
}

/// Like [`check_body`], and also returns the offset of every `ATOM_CACHE_REF` tag in the term,
/// so a caller can replace them by the atoms they stand for before handing the bytes on.
pub fn check_body_with_refs(
    bytes: &[u8],
    max_depth: usize,
) -> Result<(usize, Vec<usize>), TermError> {
    let mut c = Cursor {
        bytes,
        pos: 0,
        cache_refs: Vec::new(),
    };
    walk(&mut c, max_depth)?;
    Ok((c.pos, c.cache_refs))
}

/// Finds the end of one term (no version byte) however deep it nests; returns its length.
pub fn skip_term(bytes: &[u8]) -> Result<usize, TermError> {
    let mut c = Cursor {
        bytes,
        pos: 0,
        cache_refs: Vec::new(),
    };
    walk(&mut c, usize::MAX)?;
    Ok(c.pos)
}

fn walk(c: &mut Cursor<'_>, max_depth: usize) -> Result<(), TermError> {
    // Each entry is how many more terms remain to be read at that nesting level.
    let mut pending: Vec<usize> = vec![1];
    while let Some(top) = pending.last_mut() {
        if *top == 0 {
            pending.pop();
            continue;
        }
        *top -= 1;
        let children = element(c)?;
        if children > 0 {
            if pending.len() >= max_depth {
                return c.fail("term nests too deeply");
            }
            pending.push(children);
        }
    }
    Ok(())
}

/// Checks a sequence of whole terms (a control message and its payload) filling `bytes`.
pub fn check_terms(bytes: &[u8]) -> Result<(), TermError> {
    let mut offset = 0;
    while offset < bytes.len() {
        offset += check_term(&bytes[offset..]).map_err(|e| TermError {
            offset: offset + e.offset,
            reason: e.reason,
        })?;
    }
    Ok(())
}

/// Reads one element's header and fixed-size body; returns how many nested terms follow.
fn element(c: &mut Cursor<'_>) -> Result<usize, TermError> {
    let tag = c.u8()?;
    Ok(match tag {
        97 => c.skip(1).map(|_| 0)?,  // SMALL_INTEGER_EXT
        98 => c.skip(4).map(|_| 0)?,  // INTEGER_EXT
        70 => c.skip(8).map(|_| 0)?,  // NEW_FLOAT_EXT
        99 => c.skip(31).map(|_| 0)?, // FLOAT_EXT
        106 => 0,                     // NIL_EXT
        100 | 118 => {
            // ATOM_EXT, ATOM_UTF8_EXT
            let n = c.u16()?;
            c.skip(n)?;
            0
        }
        115 | 119 => {
            // SMALL_ATOM_EXT, SMALL_ATOM_UTF8_EXT
            let n = c.u8()? as usize;
            c.skip(n)?;
            0
        }
        107 => {
            // STRING_EXT
            let n = c.u16()?;
            c.skip(n)?;
            0
        }
        109 => {
            // BINARY_EXT
            let n = c.u32()?;
            c.skip(n)?;
            0
        }
        77 => {
            // BIT_BINARY_EXT: the last byte holds 1 to 8 bits, so there is at least one byte.
            let n = c.u32()?;
            let bits = c.u8()?;
            if n == 0 || !(1..=8).contains(&bits) {
                return c.fail("bit binary with an impossible bit count");
            }
            c.skip(n)?;
            0
        }
        110 => {
            // SMALL_BIG_EXT
            let n = c.u8()? as usize;
            c.skip(1 + n)?;
            0
        }
        111 => {
            // LARGE_BIG_EXT
            let n = c.u32()?;
            c.skip(1 + n)?;
            0
        }
        104 => {
            // SMALL_TUPLE_EXT
            let n = c.u8()? as usize;
            c.plausible(n, 1)?;
            n
        }
        105 => {
            // LARGE_TUPLE_EXT
            let n = c.u32()?;
            c.plausible(n, 1)?;
            n
        }
        108 => {
            // LIST_EXT: elements then the tail.
            let n = c.u32()?;
            c.plausible(n.saturating_add(1), 1)?;
            n + 1
        }
        116 => {
            // MAP_EXT
            let n = c.u32()?;
            c.plausible(n, 2)?;
            n * 2
        }
        88 => {
            // NEW_PID_EXT: node atom, then id, serial, creation.
            atom_inline(c)?;
            c.skip(12)?;
            0
        }
        103 => {
            // PID_EXT
            atom_inline(c)?;
            c.skip(9)?;
            0
        }
        89 => {
            // NEW_PORT_EXT
            atom_inline(c)?;
            c.skip(8)?;
            0
        }
        120 => {
            // V4_PORT_EXT
            atom_inline(c)?;
            c.skip(12)?;
            0
        }
        102 => {
            // PORT_EXT
            atom_inline(c)?;
            c.skip(5)?;
            0
        }
        90 | 114 => {
            // NEWER_REFERENCE_EXT / NEW_REFERENCE_EXT
            let words = c.u16()?;
            if words > 5 {
                return c.fail("reference with too many words");
            }
            atom_inline(c)?;
            c.skip(if tag == 90 { 4 } else { 1 })?;
            c.skip(words * 4)?;
            0
        }
        101 => {
            // REFERENCE_EXT
            atom_inline(c)?;
            c.skip(5)?;
            0
        }
        113 => {
            // EXPORT_EXT: module, function, arity.
            3
        }
        112 => {
            // NEW_FUN_EXT: Size covers the whole encoding; its parts are then checked.
            let size = c.u32()?;
            if size < 4 {
                return c.fail("fun size too small");
            }
            c.plausible(size - 4, 1)?;
            // Arity(1) Uniq(16) Index(4) NumFree(4), then Module, OldIndex, OldUniq, Pid, free vars.
            c.skip(1 + 16 + 4)?;
            let num_free = c.u32()?;
            c.plausible(num_free, 1)?;
            4 + num_free
        }
        117 => {
            // FUN_EXT (old): NumFree, Pid, Module, Index, Uniq, free vars.
            let num_free = c.u32()?;
            c.plausible(num_free, 1)?;
            4 + num_free
        }
        80 => return c.fail("compressed terms are not accepted on a distribution channel"),
        82 => {
            // ATOM_CACHE_REF (after a distribution header)
            c.cache_refs.push(c.pos - 1);
            c.skip(1).map(|_| 0)?
        }
        121 => return c.fail("LOCAL_EXT terms are not accepted"),
        _ => return c.fail("unknown term tag"),
    })
}

/// The node-name atom inside a pid, port or reference.
fn atom_inline(c: &mut Cursor<'_>) -> Result<(), TermError> {
    match c.u8()? {
        100 | 118 => {
            let n = c.u16()?;
            c.skip(n)
        }
        115 | 119 => {
            let n = c.u8()? as usize;
            c.skip(n)
        }
        82 => {
            c.cache_refs.push(c.pos - 1);
            c.skip(1)
        }
        _ => c.fail("expected an atom for a node name"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_real_terms() {
        // term_to_binary(#{a => 1, b => <<"x">>, c => [1.5, nil, {t}], d => 123456789012345678901234567890})
        let bytes = [
            131u8, 116, 0, 0, 0, 4, 100, 0, 1, 97, 97, 1, 100, 0, 1, 98, 109, 0, 0, 0, 1, 120, 100,
            0, 1, 99, 108, 0, 0, 0, 3, 70, 63, 248, 0, 0, 0, 0, 0, 0, 100, 0, 3, 110, 105, 108,
            104, 1, 100, 0, 1, 116, 106, 100, 0, 1, 100, 110, 13, 0, 210, 10, 63, 78, 238, 224,
            115, 195, 246, 15, 233, 142, 1,
        ];
        assert_eq!(check_term(&bytes), Ok(bytes.len()));
        // Two terms back to back, as in a frame with a payload.
        let mut two = bytes.to_vec();
        two.extend_from_slice(&[131, 106]);
        assert_eq!(check_terms(&two), Ok(()));
    }

    #[test]
    fn rejects_lying_lengths() {
        // A list claiming 4 billion elements in a handful of bytes.
        let e = check_term(&[131, 108, 0xff, 0xff, 0xff, 0xff, 106]).unwrap_err();
        assert_eq!(e.reason, "element count exceeds the bytes present");
        // A binary longer than the frame.
        assert!(check_term(&[131, 109, 0, 0, 1, 0, 1, 2]).is_err());
        // A map claiming many pairs.
        assert!(check_term(&[131, 116, 0, 1, 0, 0, 97, 1]).is_err());
        // Truncated.
        assert!(check_term(&[131, 104, 2, 97]).is_err());
        assert!(check_term(&[131]).is_err());
    }

    #[test]
    fn rejects_deep_nesting_and_foreign_encodings() {
        let mut deep = vec![131u8];
        for _ in 0..(MAX_DEPTH + 5) {
            deep.extend_from_slice(&[104, 1]);
        }
        deep.push(106);
        assert_eq!(
            check_term(&deep).unwrap_err().reason,
            "term nests too deeply"
        );
        assert!(check_term(&[131, 80, 0, 0, 0, 1, 0]).is_err());
        assert!(check_term(&[131, 7]).is_err());
    }
}
