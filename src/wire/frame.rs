//! Frames of a connected distribution channel.
//!
//! After the handshake every frame is a 4-byte big-endian length followed by that many bytes;
//! length 0 is a tick. Every other frame is a pass-through message (the byte 112, then the
//! terms [`super::dist`] decodes) or, with the atom cache, a normal distribution header
//! (`131, 68`) and then the terms. This module owns cutting the byte stream into frames, within
//! the node's [`Limits`]: a frame is never given more memory than the bytes that arrived for it
//! (the buffer grows with them, up to the frame limit).

use super::atom_cache::InCache;
pub use super::dist::Frame;
use super::limits::Limits;
use crate::term::Atom;

/// The largest frame accepted by default (see [`Limits::max_frame_bytes`]).
pub const MAX_FRAME: usize = Limits::DEFAULT_MAX_FRAME_BYTES;

const PASS_THROUGH: u8 = 112;

/// An error that leaves the stream unusable.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The peer closed the connection.
    #[error("connection closed")]
    Closed,
    /// A read failed.
    #[error("read failed: {0}")]
    Io(#[from] std::io::Error),
    /// The length prefix is implausible: the stream is not a distribution channel.
    #[error("frame of {0} bytes exceeds the limit")]
    TooLarge(usize),
    /// The frame is neither pass-through nor a normal distribution header.
    #[error("unexpected frame tag {0} (fragments were not negotiated)")]
    BadTag(u8),
    /// A distribution header could not be read.
    #[error("bad distribution header: {0}")]
    BadHeader(String),
}

/// Accumulates bytes read from a socket and cuts whole frames out of them.
pub struct FrameReader {
    limits: Limits,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    /// The atoms the peer cached with us (when the atom cache was negotiated).
    cache: InCache,
    /// The current frame's atom cache references.
    refs: Vec<Atom>,
}

/// Bytes read from the socket at a time, at least.
const READ_CHUNK: usize = 64 * 1024;

/// An emptied buffer keeps at most this much capacity: one large frame (a query's reply of
/// thousands of records, a big bulk create) must not stay allocated for the connection's life.
pub const RETAIN_BYTES: usize = 256 * 1024;

/// Gives an empty `buf`'s memory back when it holds more than [`RETAIN_BYTES`].
pub fn release_if_large(buf: &mut Vec<u8>) {
    if buf.is_empty() && buf.capacity() > RETAIN_BYTES {
        *buf = Vec::new();
    }
}

impl Default for FrameReader {
    fn default() -> Self {
        FrameReader::with_limits(Limits::default())
    }
}

impl FrameReader {
    /// An empty reader with the default [`Limits`].
    pub fn new() -> FrameReader {
        FrameReader::default()
    }

    /// An empty reader enforcing `limits`.
    pub fn with_limits(limits: Limits) -> FrameReader {
        FrameReader {
            limits,
            buf: Vec::new(),
            start: 0,
            end: 0,
            cache: InCache::with_limit(limits.max_atom_cache_entries),
            refs: Vec::new(),
        }
    }

    /// Bytes buffered (read but not yet cut into frames).
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The next whole frame already buffered, if any.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let avail = &self.buf[self.start..self.end];
        if avail.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([avail[0], avail[1], avail[2], avail[3]]) as usize;
        if len > self.limits.max_frame_bytes {
            return Err(FrameError::TooLarge(len));
        }
        if avail.len() < 4 + len {
            return Ok(None);
        }
        let frame = if len == 0 {
            Frame::Tick
        } else {
            decode(
                &avail[4..4 + len],
                &mut self.cache,
                &mut self.refs,
                &self.limits,
            )?
        };
        self.start += 4 + len;
        if self.start == self.end {
            self.start = 0;
            self.end = 0;
        }
        Ok(Some(frame))
    }

    /// Free space to read into: room for the rest of the frame being received, but never more
    /// than the bytes already buffered (the buffer at most doubles per read), so a length prefix
    /// alone cannot make the reader allocate what the peer does not send.
    pub fn read_space(&mut self) -> &mut [u8] {
        if self.start > 0 && (self.start == self.end || self.start > self.buf.len() / 2) {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == 0 && self.buf.len() > RETAIN_BYTES {
            self.buf = Vec::new();
        }
        let pending = &self.buf[self.start..self.end];
        let want = if pending.len() >= 4 {
            let len = u32::from_be_bytes([pending[0], pending[1], pending[2], pending[3]]) as usize;
            (4 + len.min(self.limits.max_frame_bytes))
                .saturating_sub(pending.len())
                .min(pending.len().max(READ_CHUNK))
                .max(READ_CHUNK)
        } else {
            READ_CHUNK
        };
        if self.buf.len() - self.end < want {
            self.buf.resize(self.end + want, 0);
        }
        &mut self.buf[self.end..]
    }

    /// Marks `n` bytes of [`Self::read_space`] as filled.
    pub fn filled(&mut self, n: usize) {
        self.end += n;
    }
}

/// Decodes the bytes of one non-tick frame: pass-through (`112`), or a normal distribution
/// header (`131, 68`) with atom cache references.
fn decode(
    bytes: &[u8],
    cache: &mut InCache,
    refs: &mut Vec<Atom>,
    limits: &Limits,
) -> Result<Frame, FrameError> {
    let (body, refs) = match bytes {
        [PASS_THROUGH, rest @ ..] => (rest, None),
        [131, 68, rest @ ..] => match cache.read_header(rest, refs) {
            Ok(used) => (&rest[used..], Some(refs.as_slice())),
            // A header we cannot read leaves the cache out of step with the peer's.
            Err(e) => return Err(FrameError::BadHeader(e.to_string())),
        },
        [131, tag, ..] => return Err(FrameError::BadTag(*tag)),
        [tag, ..] => return Err(FrameError::BadTag(*tag)),
        [] => return Ok(Frame::Tick),
    };
    match super::dist::decode_limited(body, refs, false, limits) {
        Ok(control) => Ok(Frame::Control(Box::new(control))),
        Err(e) if super::etf::is_limit(&e.reason) => {
            let reason = [
                super::etf::TOO_DEEP_REASON,
                super::etf::TOO_LONG_REASON,
                super::etf::BIGNUM_REASON,
            ]
            .into_iter()
            .find(|r| *r == e.reason)
            .unwrap_or(super::etf::TOO_DEEP_REASON);
            match super::dist::decode_limited(body, refs, true, limits) {
                Ok(control) => Ok(Frame::OverLimit(Box::new(control), reason)),
                Err(e) => Ok(Frame::Undecodable(e.to_string())),
            }
        }
        Err(e) => Ok(Frame::Undecodable(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::term::{Atom, Pid, Value};
    use crate::wire::dist::{Control, FrameWriter};

    fn feed(reader: &mut FrameReader, bytes: &[u8]) {
        let space = reader.read_space();
        space[..bytes.len()].copy_from_slice(bytes);
        reader.filled(bytes.len());
    }

    #[test]
    fn a_large_frame_does_not_stay_allocated() {
        let to = Pid {
            node: Atom::new("a@127.0.0.1").unwrap(),
            id: 1,
            serial: 2,
            creation: 3,
        };
        let len = 1 << 20;
        let mut writer = FrameWriter::new(false);
        writer.send(&to, |w| w.term(&Value::binary_owned(vec![7; len])));
        let frame = writer.buf.clone();
        let mut reader = FrameReader::new();
        let mut sent = 0;
        while sent < frame.len() {
            let space = reader.read_space();
            let n = space.len().min(frame.len() - sent);
            space[..n].copy_from_slice(&frame[sent..sent + n]);
            reader.filled(n);
            sent += n;
        }
        assert!(reader.buf.capacity() > len);
        assert!(matches!(reader.next_frame(), Ok(Some(Frame::Control(_)))));
        assert_eq!(reader.buffered(), 0);
        assert!(reader.read_space().len() >= READ_CHUNK);
        assert!(
            reader.buf.capacity() <= RETAIN_BYTES,
            "{}",
            reader.buf.capacity()
        );

        let mut out = vec![0u8; 2 * RETAIN_BYTES];
        out.clear();
        release_if_large(&mut out);
        assert_eq!(out.capacity(), 0);
        let mut small = Vec::with_capacity(1024);
        release_if_large(&mut small);
        assert_eq!(small.capacity(), 1024);
    }

    #[test]
    fn frame_reader_cuts_frames_across_reads() {
        let to = Pid {
            node: Atom::new("a@127.0.0.1").unwrap(),
            id: 1,
            serial: 2,
            creation: 3,
        };
        let hello = Value::Atom(Atom::new("hello").unwrap());
        let expected = Control::Send {
            from: None,
            to,
            message: hello.clone(),
        };
        // With and without the atom cache (the second message reuses cached atoms).
        for atom_cache in [false, true] {
            let mut writer = FrameWriter::new(atom_cache);
            writer.send(&to, |w| w.term(&hello));
            writer.tick();
            writer.send(&to, |w| w.term(&hello));
            assert_eq!(writer.buf[4] == 131, atom_cache);
            // Feed the bytes three at a time.
            let mut reader = FrameReader::new();
            let mut frames = Vec::new();
            for chunk in writer.buf.chunks(3) {
                feed(&mut reader, chunk);
                while let Some(frame) = reader.next_frame().unwrap() {
                    frames.push(frame);
                }
            }
            assert_eq!(frames.len(), 3);
            assert!(matches!(&frames[0], Frame::Control(c) if **c == expected));
            assert!(matches!(frames[1], Frame::Tick));
            assert!(matches!(&frames[2], Frame::Control(c) if **c == expected));
        }
    }

    #[test]
    fn a_header_naming_an_unknown_cache_slot_is_an_error() {
        let mut reader = FrameReader::new();
        // 131, 68, one reference, not new, segment 0, slot 7: never filled.
        feed(&mut reader, &[0, 0, 0, 6, 131, 68, 1, 0, 7, 106]);
        assert!(matches!(reader.next_frame(), Err(FrameError::BadHeader(_))));
    }

    #[test]
    fn garbage_is_rejected_without_panicking() {
        // An absurd length.
        let mut reader = FrameReader::new();
        feed(&mut reader, &[0xff, 0xff, 0xff, 0xff, 1, 2]);
        assert!(matches!(reader.next_frame(), Err(FrameError::TooLarge(_))));
        // A wrong tag.
        let mut reader = FrameReader::new();
        feed(&mut reader, &[0, 0, 0, 2, 200, 1]);
        assert!(matches!(reader.next_frame(), Err(FrameError::BadTag(200))));
        // A pass-through frame whose term is garbage stays a frame.
        let mut reader = FrameReader::new();
        feed(&mut reader, &[0, 0, 0, 4, 112, 131, 255, 0]);
        assert!(matches!(
            reader.next_frame(),
            Ok(Some(Frame::Undecodable(_)))
        ));
        // A truncated frame waits for more bytes.
        let mut reader = FrameReader::new();
        feed(&mut reader, &[0, 0, 0, 9, 112]);
        assert!(matches!(reader.next_frame(), Ok(None)));
    }
}
