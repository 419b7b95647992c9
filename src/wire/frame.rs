//! Frames of a connected distribution channel.
//!
//! After the handshake every frame is a 4-byte big-endian length followed by that many bytes;
//! length 0 is a tick. This node negotiates neither the atom cache nor fragments, so every other
//! frame is a pass-through message: the byte 112, a control tuple, and for message-carrying
//! operations a payload term. Decoding the control message and payload is `erl_dist`'s, after
//! [`super::etf_guard`] has checked the bytes; this module owns the framing and its limits.

use erl_dist::message::Message;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest frame accepted (a guard against garbage lengths).
pub const MAX_FRAME: usize = 256 * 1024 * 1024;

const PASS_THROUGH: u8 = 112;

/// One incoming frame.
#[derive(Debug)]
pub enum Frame {
    /// A keep-alive tick.
    Tick,
    /// A decoded distribution message.
    Message(Box<Message>),
    /// A well-framed message this node could not decode; the connection stays usable.
    Undecodable(String),
}

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
    /// The frame does not start with the pass-through tag.
    #[error("unexpected frame tag {0} (no atom cache or fragments were negotiated)")]
    BadTag(u8),
}

/// Reads one frame, reusing `buf` for its bytes.
pub async fn read_frame<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
) -> Result<Frame, FrameError> {
    let len = match reader.read_u32().await {
        Ok(n) => n as usize,
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    };
    if len == 0 {
        return Ok(Frame::Tick);
    }
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge(len));
    }
    buf.clear();
    buf.resize(len, 0);
    reader.read_exact(buf).await?;
    decode(buf)
}

/// Decodes the bytes of one non-tick frame.
pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
    match bytes.first() {
        Some(&PASS_THROUGH) => {}
        Some(&tag) => return Err(FrameError::BadTag(tag)),
        None => return Ok(Frame::Tick),
    }
    if let Err(e) = super::etf_guard::check_terms(&bytes[1..]) {
        return Ok(Frame::Undecodable(e.to_string()));
    }
    let mut rest = &bytes[1..];
    match Message::read_from(&mut rest) {
        Ok(message) => Ok(Frame::Message(Box::new(message))),
        Err(e) => Ok(Frame::Undecodable(e.to_string())),
    }
}

/// Appends one framed message to `out`.
pub fn encode(message: Message, out: &mut Vec<u8>) -> Result<(), String> {
    if matches!(message, Message::Tick) {
        out.extend_from_slice(&[0, 0, 0, 0]);
        return Ok(());
    }
    let start = out.len();
    out.extend_from_slice(&[0, 0, 0, 0, PASS_THROUGH]);
    if let Err(e) = message.write_into(out) {
        out.truncate(start);
        return Err(e.to_string());
    }
    let len = (out.len() - start - 4) as u32;
    out[start..start + 4].copy_from_slice(&len.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use eetf::{Atom, Pid, Term};

    #[tokio::test]
    async fn messages_roundtrip_through_frames() {
        let pid = Pid::new("a@127.0.0.1", 1, 2, 3);
        let msg = Message::reg_send(pid.clone(), Atom::from("srv"), Term::from(Atom::from("hi")));
        let mut bytes = Vec::new();
        encode(Message::Tick, &mut bytes).unwrap();
        encode(msg.clone(), &mut bytes).unwrap();
        let mut reader = &bytes[..];
        let mut buf = Vec::new();
        assert!(matches!(
            read_frame(&mut reader, &mut buf).await,
            Ok(Frame::Tick)
        ));
        match read_frame(&mut reader, &mut buf).await {
            Ok(Frame::Message(m)) => assert_eq!(*m, msg),
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            read_frame(&mut reader, &mut buf).await,
            Err(FrameError::Closed)
        ));
    }

    #[tokio::test]
    async fn garbage_is_rejected_without_panicking() {
        // An absurd length.
        let mut reader = &[0xffu8, 0xff, 0xff, 0xff, 1, 2][..];
        let mut buf = Vec::new();
        assert!(matches!(
            read_frame(&mut reader, &mut buf).await,
            Err(FrameError::TooLarge(_))
        ));
        // A wrong tag.
        let mut reader = &[0u8, 0, 0, 2, 200, 1][..];
        assert!(matches!(
            read_frame(&mut reader, &mut buf).await,
            Err(FrameError::BadTag(200))
        ));
        // A pass-through frame whose term is garbage stays a frame.
        let mut reader = &[0u8, 0, 0, 4, 112, 131, 255, 0][..];
        assert!(matches!(
            read_frame(&mut reader, &mut buf).await,
            Ok(Frame::Undecodable(_))
        ));
        // A truncated frame is an I/O error, not a panic.
        let mut reader = &[0u8, 0, 0, 9, 112][..];
        assert!(read_frame(&mut reader, &mut buf).await.is_err());
    }
}
